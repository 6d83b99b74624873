//! A small client of etcd's v3 API over its HTTP/JSON gateway (the gRPC
//! gateway every etcd ≥ 3.4 serves on its client URLs: `/v3/kv/range`,
//! `/v3/kv/txn`, `/v3/watch`, `/v3/auth/authenticate`; documented at
//! <https://etcd.io/docs/v3.5/dev-guide/api_grpc_gateway/>).
//!
//! Why not a gRPC client crate: `etcd-client` compiles etcd's protobufs at
//! build time and would make `protoc` a requirement of everyone building
//! Switchyard; the gateway is the same API, encoded as JSON (keys and values
//! base64, 64-bit integers as strings). Each unary call opens its own
//! HTTP/1.1 connection (plain or TLS, [`UpstreamTls`]) — calls are rare
//! (config writes, resyncs) — and a watch holds one open for its stream.
//! Endpoints are tried in order from the last one that answered, so a dead
//! member of a cluster costs one failed connect, not every call.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use serde_json::{Value, json};
use tokio::net::TcpStream;

use crate::tls::UpstreamTls;

/// Why a call to etcd failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EtcdError {
    /// No endpoint answered (connect, TLS, timeout or I/O failure): the
    /// last endpoint's reason.
    #[error("etcd is unreachable: {0}")]
    Unreachable(String),
    /// etcd answered with an error (bad credentials, request too large, …).
    #[error("etcd refused the request: {0}")]
    Refused(String),
}

/// One key-value pair as etcd returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kv {
    /// The key.
    pub key: Vec<u8>,
    /// The value.
    pub value: Vec<u8>,
    /// The revision of the key's last change.
    pub mod_revision: i64,
}

/// What a watch reports: the keys changed at one revision, or that the
/// revision it started from was compacted away (read again, then watch
/// from there).
#[derive(Debug)]
pub enum WatchEvent {
    /// Puts (`Some` value) and deletes (`None`) in revision order, and the
    /// store's revision after them.
    Changed(Vec<(Vec<u8>, Option<Kv>)>, i64),
    /// The start revision is older than etcd's compaction (`compact_revision`).
    Compacted(i64),
}

/// An etcd client.
pub struct Etcd {
    endpoints: Vec<Endpoint>,
    /// The endpoint that answered last: tried first.
    preferred: AtomicUsize,
    /// TLS to `https://` endpoints (set whenever there is one).
    tls: Option<Arc<UpstreamTls>>,
    credentials: Option<(String, String)>,
    /// The auth token, replaced when etcd says it expired.
    token: std::sync::Mutex<Option<String>>,
    timeout: Duration,
}

/// One client URL of etcd.
#[derive(Debug, Clone)]
struct Endpoint {
    https: bool,
    /// The host to connect to (an IPv6 address without brackets).
    host: String,
    /// `host:port` as the Host header says it.
    authority: String,
    port: u16,
    url: String,
}

/// An HTTP/1.1 client connection over `io`, driven by its own task.
async fn handshake<IO>(
    io: IO,
) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>, String>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (send, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(send)
}

/// `bytes` as base64, as the gateway wants keys and values.
pub fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// The end of the range of every key that starts with `prefix` (`prefix`
/// with its last byte incremented, as etcd's `WithPrefix`).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte 0xff: to the end of the keyspace.
    vec![0]
}

/// A 64-bit integer of the gateway's JSON (a string, or absent for 0).
fn int(value: &Value) -> i64 {
    match value {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}

fn bytes_of(value: &Value) -> Vec<u8> {
    value
        .as_str()
        .and_then(|s| STANDARD.decode(s).ok())
        .unwrap_or_default()
}

fn kv_of(kv: &Value) -> Kv {
    Kv {
        key: bytes_of(&kv["key"]),
        value: bytes_of(&kv["value"]),
        mod_revision: int(&kv["mod_revision"]),
    }
}

impl Etcd {
    /// A client of `endpoints` (`http://host:port` or `https://…`, at least
    /// one), verifying TLS with `tls`, authenticating as `credentials`
    /// (user, password) when given, each call bounded by `timeout`.
    ///
    /// # Errors
    /// An endpoint that is not `http(s)://host:port`.
    pub fn new(
        endpoints: &[String],
        tls: Option<Arc<UpstreamTls>>,
        credentials: Option<(String, String)>,
        timeout: Duration,
    ) -> Result<Self, String> {
        let endpoints = endpoints
            .iter()
            .map(|url| {
                let uri: http::Uri = url.parse().map_err(|e| format!("endpoint `{url}`: {e}"))?;
                let https = match uri.scheme_str() {
                    Some("http") => false,
                    Some("https") => true,
                    _ => {
                        return Err(format!(
                            "endpoint `{url}`: use http://host:port or https://…"
                        ));
                    }
                };
                let host = uri
                    .host()
                    .ok_or_else(|| format!("endpoint `{url}`: no host"))?
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_string();
                let port = uri.port_u16().unwrap_or(2379);
                let authority = match uri.port_u16() {
                    Some(_) => uri.authority().map(ToString::to_string).unwrap_or_default(),
                    None => format!("{}:{port}", uri.host().unwrap_or_default()),
                };
                Ok(Endpoint {
                    https,
                    host,
                    port,
                    authority,
                    url: url.trim_end_matches('/').to_string(),
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        if endpoints.is_empty() {
            return Err("give at least one endpoint".into());
        }
        // `https://` without TLS settings: Mozilla's roots, built once.
        let tls = match tls {
            None if endpoints.iter().any(|e| e.https) => Some(Arc::new(
                UpstreamTls::load(None, Vec::new()).map_err(|(_, e)| e)?,
            )),
            tls => tls,
        };
        Ok(Self {
            endpoints,
            preferred: AtomicUsize::new(0),
            tls,
            credentials,
            token: std::sync::Mutex::default(),
            timeout,
        })
    }

    fn token_slot(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.token
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Opens an HTTP/1.1 connection to `endpoint`.
    async fn connect(
        &self,
        endpoint: &Endpoint,
    ) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>, String> {
        let tcp = TcpStream::connect((endpoint.host.as_str(), endpoint.port))
            .await
            .map_err(|e| e.to_string())?;
        let _ = tcp.set_nodelay(true);
        match (&self.tls, endpoint.https) {
            (Some(tls), true) => {
                let tls = tls
                    .connect(&endpoint.host, tcp)
                    .await
                    .map_err(|e| e.to_string())?;
                handshake(tls).await
            }
            _ => handshake(tcp).await,
        }
    }

    /// POSTs `body` to `path` on `endpoint`; the response's head.
    async fn post(
        &self,
        endpoint: &Endpoint,
        path: &str,
        body: &str,
        token: Option<&str>,
    ) -> Result<http::Response<Incoming>, String> {
        let mut send = self.connect(endpoint).await?;
        let mut request = http::Request::post(path)
            .header(http::header::HOST, &endpoint.authority)
            .header(http::header::CONTENT_TYPE, "application/json");
        if let Some(token) = token {
            request = request.header(http::header::AUTHORIZATION, token);
        }
        let request = request
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| e.to_string())?;
        send.send_request(request).await.map_err(|e| e.to_string())
    }

    /// [`post`](Self::post), and the whole answer read: status and body.
    async fn post_and_read(
        &self,
        endpoint: &Endpoint,
        path: &str,
        body: &str,
        token: Option<&str>,
    ) -> Result<(http::StatusCode, Bytes), String> {
        let response = self.post(endpoint, path, body, token).await?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, bytes))
    }

    /// `attempt` on the endpoints in turn, from the one that answered
    /// last, each bounded by the call timeout: the first answer (its
    /// endpoint is preferred from then on).
    async fn on_some_endpoint<'a, T, F, Fut>(&'a self, attempt: F) -> Result<T, EtcdError>
    where
        F: Fn(&'a Endpoint) -> Fut,
        Fut: std::future::Future<Output = Result<T, String>>,
    {
        let mut last = String::from("no endpoint");
        let start = self.preferred.load(Ordering::Relaxed);
        for n in 0..self.endpoints.len() {
            let index = (start + n) % self.endpoints.len();
            let endpoint = &self.endpoints[index];
            match tokio::time::timeout(self.timeout, attempt(endpoint)).await {
                Ok(Ok(answer)) => {
                    self.preferred.store(index, Ordering::Relaxed);
                    return Ok(answer);
                }
                Ok(Err(why)) => last = format!("{}: {why}", endpoint.url),
                Err(_) => {
                    last = format!(
                        "{}: no answer within {} ms",
                        endpoint.url,
                        self.timeout.as_millis()
                    );
                }
            }
        }
        Err(EtcdError::Unreachable(last))
    }

    /// A unary call: `body` POSTed to `path` on the endpoints in turn;
    /// etcd's JSON answer.
    async fn call(&self, path: &str, body: &Value) -> Result<Value, EtcdError> {
        let body = body.to_string();
        let (status, value) = self
            .on_some_endpoint(|endpoint| async {
                let token = self.token_for(endpoint).await?;
                let (status, bytes) = self
                    .post_and_read(endpoint, path, &body, token.as_deref())
                    .await?;
                let value: Value = serde_json::from_slice(&bytes)
                    .map_err(|_| format!("HTTP {status}: {}", String::from_utf8_lossy(&bytes)))?;
                Ok((status, value))
            })
            .await?;
        if status.is_success() {
            return Ok(value);
        }
        let message = value["message"]
            .as_str()
            .or(value["error"].as_str())
            .unwrap_or("no message");
        if message.contains("invalid auth token") {
            // Expired: authenticate again at the next call.
            *self.token_slot() = None;
        }
        Err(EtcdError::Refused(format!("HTTP {status}: {message}")))
    }

    /// The auth token to send to `endpoint` (authenticating first when
    /// credentials are configured and no token is held).
    async fn token_for(&self, endpoint: &Endpoint) -> Result<Option<String>, String> {
        let Some((name, password)) = &self.credentials else {
            return Ok(None);
        };
        if let Some(token) = self.token_slot().clone() {
            return Ok(Some(token));
        }
        let body = json!({ "name": name, "password": password }).to_string();
        let (status, bytes) = self
            .post_and_read(endpoint, "/v3/auth/authenticate", &body, None)
            .await?;
        let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let token = value["token"]
            .as_str()
            .filter(|_| status.is_success())
            .ok_or_else(|| {
                let text = String::from_utf8_lossy(&bytes);
                let why = value["message"].as_str().or(value["error"].as_str());
                format!(
                    "authentication as `{name}` failed: HTTP {status}: {}",
                    why.unwrap_or(text.trim())
                )
            })?
            .to_string();
        *self.token_slot() = Some(token.clone());
        Ok(Some(token))
    }

    /// The pairs of keys in `[key, range_end)` (`range_end` `None`: `key`
    /// alone), and the store's revision.
    ///
    /// # Errors
    /// [`EtcdError`].
    pub async fn range(
        &self,
        key: &[u8],
        range_end: Option<&[u8]>,
    ) -> Result<(Vec<Kv>, i64), EtcdError> {
        let mut body = json!({ "key": b64(key) });
        if let Some(end) = range_end {
            body["range_end"] = json!(b64(end));
        }
        let answer = self.call("/v3/kv/range", &body).await?;
        let kvs = answer["kvs"]
            .as_array()
            .into_iter()
            .flatten()
            .map(kv_of)
            .collect();
        Ok((kvs, int(&answer["header"]["revision"])))
    }

    /// A transaction: when every `compare` holds, the `success` operations,
    /// else `failure`'s (etcd's JSON shapes: `{"key", "target": "MOD",
    /// "result": "EQUAL", "mod_revision"}`, `{"request_put": {…}}`).
    /// Whether the comparisons held, the answers of the operations run and
    /// the revision after.
    ///
    /// # Errors
    /// [`EtcdError`].
    pub async fn txn(
        &self,
        compare: Vec<Value>,
        success: Vec<Value>,
        failure: Vec<Value>,
    ) -> Result<(bool, Vec<Value>, i64), EtcdError> {
        let answer = self
            .call(
                "/v3/kv/txn",
                &json!({ "compare": compare, "success": success, "failure": failure }),
            )
            .await?;
        let responses = answer["responses"].as_array().cloned().unwrap_or_default();
        Ok((
            answer["succeeded"].as_bool().unwrap_or(false),
            responses,
            int(&answer["header"]["revision"]),
        ))
    }

    /// The pairs a `request_range` of a transaction returned.
    pub fn kvs_of(response: &Value) -> Vec<Kv> {
        response["response_range"]["kvs"]
            .as_array()
            .into_iter()
            .flatten()
            .map(kv_of)
            .collect()
    }

    /// Watches `[key, range_end)` from `start_revision`: events are sent to
    /// `events` until the stream ends (etcd gone, the receiver dropped).
    ///
    /// # Errors
    /// [`EtcdError`]: no endpoint would open the watch, or the stream broke
    /// (the reason); `Ok` when the receiver was dropped.
    pub async fn watch(
        &self,
        key: &[u8],
        range_end: &[u8],
        start_revision: i64,
        events: &tokio::sync::mpsc::Sender<WatchEvent>,
    ) -> Result<(), EtcdError> {
        let body = json!({ "create_request": {
            "key": b64(key), "range_end": b64(range_end),
            "start_revision": start_revision.to_string(),
        }})
        .to_string();
        let response = self
            .on_some_endpoint(|endpoint| async {
                let token = self.token_for(endpoint).await?;
                self.post(endpoint, "/v3/watch", &body, token.as_deref())
                    .await
            })
            .await?;
        if !response.status().is_success() {
            return Err(EtcdError::Refused(format!(
                "watch: HTTP {}",
                response.status()
            )));
        }
        let mut body = response.into_body();
        let mut pending = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| EtcdError::Unreachable(format!("watch: {e}")))?;
            let Some(data) = frame.data_ref() else {
                continue;
            };
            pending.extend_from_slice(data);
            while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                let Ok(message) = serde_json::from_slice::<Value>(&line) else {
                    continue;
                };
                if let Some(error) = message.get("error") {
                    // Perhaps an expired token: authenticate again next time.
                    *self.token_slot() = None;
                    return Err(EtcdError::Refused(format!("watch: {error}")));
                }
                let result = &message["result"];
                let compacted = int(&result["compact_revision"]);
                let event = if compacted > 0 {
                    WatchEvent::Compacted(compacted)
                } else if result["canceled"].as_bool() == Some(true) {
                    return Err(EtcdError::Refused(format!(
                        "watch canceled: {}",
                        result["cancel_reason"].as_str().unwrap_or("no reason")
                    )));
                } else {
                    let changes: Vec<(Vec<u8>, Option<Kv>)> = result["events"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|event| {
                            let kv = kv_of(&event["kv"]);
                            let deleted = event["type"].as_str() == Some("DELETE");
                            (kv.key.clone(), (!deleted).then_some(kv))
                        })
                        .collect();
                    if changes.is_empty() {
                        continue;
                    }
                    WatchEvent::Changed(changes, int(&result["header"]["revision"]))
                };
                let stop = matches!(event, WatchEvent::Compacted(_));
                if events.send(event).await.is_err() || stop {
                    return Ok(());
                }
            }
        }
        Err(EtcdError::Unreachable("the watch stream ended".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_is_the_next_key_after_every_key_with_the_prefix() {
        assert_eq!(prefix_end(b"/sy/"), b"/sy0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff"), vec![0]);
    }

    #[test]
    fn integers_of_the_gateway_are_strings_or_absent() {
        assert_eq!(int(&json!("42")), 42);
        assert_eq!(int(&json!(7)), 7);
        assert_eq!(int(&Value::Null), 0);
        let kv = kv_of(&json!({ "key": b64(b"k"), "value": b64(b"v"), "mod_revision": "9" }));
        assert_eq!(
            kv,
            Kv {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
                mod_revision: 9
            }
        );
    }

    #[test]
    fn endpoints_must_be_http_urls() {
        let client = |e: &str| Etcd::new(&[e.to_string()], None, None, Duration::from_secs(1));
        assert!(client("http://127.0.0.1:2379").is_ok());
        assert!(client("https://etcd.internal").is_ok());
        assert!(client("ftp://x").err().unwrap().contains("ftp://x"));
        assert!(Etcd::new(&[], None, None, Duration::from_secs(1)).is_err());
    }
}
