//! The MCP health check (`kind = "mcp"`): the instance is asked, at the
//! check's `path`, what an MCP client would ask over the streamable HTTP
//! transport — `initialize` (revision [`PROTOCOL_VERSION`]), the
//! `notifications/initialized` notification, then `ping` — and passes
//! when `ping` answers a result. A server of the 2026-07-28 revision,
//! which has no `initialize`, is asked `server/discover` instead. The
//! session the check opened is ended with `DELETE`. Answers may be JSON
//! or an SSE stream (its event carrying the response to the request's id
//! counts; the stream is not read further).

use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::{Value, json};

use crate::balance::Endpoint;
use switchyard_net::dial::Connected;

/// The MCP revision the check asks for.
pub const PROTOCOL_VERSION: &str = "2025-06-18";

/// Most bytes of one answer the check reads.
const MAX_ANSWER: usize = 64 * 1024;

/// JSON-RPC's "method not found".
const METHOD_NOT_FOUND: i64 = -32601;

static SESSION: http::HeaderName = http::HeaderName::from_static("mcp-session-id");
static VERSION: http::HeaderName = http::HeaderName::from_static("mcp-protocol-version");

/// Probes the MCP server at `path` of `endpoint` over `conn`.
///
/// # Errors
/// Why it is not a working MCP server: an HTTP status other than 2xx, an
/// answer that is not JSON-RPC, a JSON-RPC error, a failed exchange.
pub async fn probe(
    conn: &mut Connected<Full<Bytes>>,
    endpoint: &Endpoint,
    path: &str,
) -> Result<(), String> {
    let mut session = Session {
        conn,
        endpoint,
        path,
        id: None,
    };
    let params = json!({
        "protocolVersion": PROTOCOL_VERSION,
        "capabilities": {},
        "clientInfo": { "name": "switchyard-health-check", "version": env!("CARGO_PKG_VERSION") },
    });
    match session.call(1, "initialize", params).await {
        Ok(_) => {
            session
                .send(json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }))
                .await?;
        }
        Err(Failed::Rpc(code, _)) if code == METHOD_NOT_FOUND => {
            session
                .call(1, "server/discover", json!({}))
                .await
                .map_err(String::from)?;
        }
        Err(failed) => return Err(failed.into()),
    }
    let pinged = session
        .call(2, "ping", json!({}))
        .await
        .map_err(String::from);
    session.end().await;
    pinged.map(drop)
}

/// Why a call failed.
enum Failed {
    /// The server answered a JSON-RPC error: code, message.
    Rpc(i64, String),
    /// Anything else.
    Other(String),
}

impl From<Failed> for String {
    fn from(failed: Failed) -> Self {
        match failed {
            Failed::Rpc(code, message) => format!("JSON-RPC error {code}: {message}"),
            Failed::Other(reason) => reason,
        }
    }
}

/// The check's exchanges with one server: its session id once issued.
struct Session<'a> {
    conn: &'a mut Connected<Full<Bytes>>,
    endpoint: &'a Endpoint,
    path: &'a str,
    id: Option<HeaderValue>,
}

impl Session<'_> {
    /// A request to the server (with the session's id once it has one).
    fn request(&self, method: Method, body: Bytes) -> Result<Request<Full<Bytes>>, String> {
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = method;
        *request.uri_mut() = self
            .path
            .parse()
            .map_err(|e| format!("bad check path: {e}"))?;
        let headers = request.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/json, text/event-stream"),
        );
        if let Ok(host) = HeaderValue::try_from(self.endpoint.authority.as_str()) {
            headers.insert(header::HOST, host);
        }
        if let Some(id) = &self.id {
            headers.insert(SESSION.clone(), id.clone());
            headers.insert(VERSION.clone(), HeaderValue::from_static(PROTOCOL_VERSION));
        }
        Ok(request)
    }

    /// Sends `message` (a notification) and checks it was accepted.
    async fn send(&mut self, message: Value) -> Result<(), String> {
        let request = self.request(Method::POST, Bytes::from(message.to_string()))?;
        let response = self.exchange(request).await?;
        if !response.status().is_success() {
            return Err(format!("notification: HTTP status {}", response.status()));
        }
        Ok(())
    }

    /// Calls `method` as request `id`; its result.
    async fn call(&mut self, id: u64, method: &str, params: Value) -> Result<Value, Failed> {
        let message = json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params });
        let request = self
            .request(Method::POST, Bytes::from(message.to_string()))
            .map_err(Failed::Other)?;
        let response = self.exchange(request).await.map_err(Failed::Other)?;
        let status = response.status();
        if status != StatusCode::OK {
            return Err(Failed::Other(format!("{method}: HTTP status {status}")));
        }
        if let Some(session) = response.headers().get(&SESSION) {
            self.id = Some(session.clone());
        }
        let answer = answer(response, id)
            .await
            .map_err(|e| Failed::Other(format!("{method}: {e}")))?;
        if let Some(error) = answer.get("error") {
            let code = error.get("code").and_then(Value::as_i64).unwrap_or(0);
            let message = error.get("message").and_then(Value::as_str).unwrap_or("");
            return Err(Failed::Rpc(code, format!("{method}: {message}")));
        }
        answer
            .get("result")
            .cloned()
            .ok_or_else(|| Failed::Other(format!("{method}: neither result nor error")))
    }

    async fn exchange(
        &mut self,
        request: Request<Full<Bytes>>,
    ) -> Result<Response<Incoming>, String> {
        self.conn
            .send(self.endpoint.address(), request)
            .await
            .map_err(|e| format!("request failed: {e}"))
    }

    /// Ends the session the server issued (its answer does not count).
    async fn end(&mut self) {
        if self.id.is_some()
            && let Ok(request) = self.request(Method::DELETE, Bytes::new())
        {
            let _ = self.exchange(request).await;
        }
    }
}

/// The JSON-RPC response to request `id` in `response`: its JSON body, or
/// the SSE event that carries it.
async fn answer(response: Response<Incoming>, id: u64) -> Result<Value, String> {
    let sse = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    let mut body = response.into_body();
    let mut read = BytesMut::new();
    let mut events = switchyard_net::sse::Parser::default();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("answer broke: {e}"))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if !sse {
            read.extend_from_slice(&data);
            if read.len() > MAX_ANSWER {
                return Err(format!("answer over {MAX_ANSWER} bytes"));
            }
            continue;
        }
        events.push(&data);
        while let Some(event) = events.next_event() {
            if let Some(found) = serde_json::from_str::<Value>(&event.data)
                .ok()
                .filter(|m| m.get("id").and_then(Value::as_u64) == Some(id))
            {
                return Ok(found);
            }
        }
        if events.pending() > MAX_ANSWER {
            return Err(format!("an event over {MAX_ANSWER} bytes"));
        }
    }
    if sse {
        return Err("the event stream ended without the response".into());
    }
    serde_json::from_slice(&read).map_err(|_| "not a JSON-RPC answer".into())
}
