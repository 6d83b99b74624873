//! A real upstream HTTP server on its own thread and runtime.
//!
//! `/ws` is a WebSocket echo (every message back as it came). It answers
//! every other request with its name as the body (and the request's
//! headers as `x-seen-*` response headers, its path and query as
//! `x-upstream-path`, the HTTP version it was asked in as
//! `x-upstream-version`), counts hits, can be made slow or failing, can
//! hold requests until released, and can be killed: its runtime is
//! dropped, which closes the listener and every connection at once, as
//! when a process dies. It speaks HTTP/1.1 and HTTP/2 (prior knowledge,
//! or ALPN over TLS).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, Response, StatusCode};
use axum::serve::ListenerExt as _;
use tokio::sync::oneshot;

/// Behaviour shared between the test and the server.
#[derive(Debug, Default)]
struct Behaviour {
    hits: AtomicU64,
    connections: AtomicU64,
    delay_ms: AtomicU64,
    status: AtomicU16,
    extra_header: Mutex<Option<(HeaderName, HeaderValue)>>,
    body: Mutex<Option<String>>,
    fail_every: AtomicU64,
    sessions: AtomicBool,
    issued: Mutex<HashSet<String>>,
    held: AtomicBool,
    released: tokio::sync::Notify,
}

/// A running upstream; killed when dropped.
pub struct Upstream {
    /// The server's name, returned as the response body.
    pub name: String,
    scheme: &'static str,
    addr: SocketAddr,
    behaviour: Arc<Behaviour>,
    kill: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Upstream {
    /// Starts an upstream named `name` on `127.0.0.1:0`.
    ///
    /// # Panics
    /// When the thread, runtime or socket cannot be created (test set-up).
    pub fn start(name: &str) -> Self {
        Self::start_with(name, None)
    }

    /// Starts an upstream named `name` on `127.0.0.1:0` that speaks TLS
    /// (HTTP/1.1 and HTTP/2 by ALPN) with `cert`; its [`url`](Self::url) is
    /// `https://127.0.0.1:PORT`, so `cert` should name `127.0.0.1`.
    ///
    /// # Panics
    /// As [`start`](Self::start), and when `cert` cannot be read.
    pub fn start_tls(name: &str, cert: &crate::pki::Issued) -> Self {
        Self::start_with(name, Some(server_config(cert, None)))
    }

    /// As [`start_tls`](Self::start_tls), and a client must show a
    /// certificate that `clients` (a CA's PEM file) signed.
    ///
    /// # Panics
    /// As [`start_tls`](Self::start_tls), and when `clients` cannot be read.
    pub fn start_mtls(name: &str, cert: &crate::pki::Issued, clients: &std::path::Path) -> Self {
        Self::start_with(name, Some(server_config(cert, Some(clients))))
    }

    fn start_with(name: &str, tls: Option<Arc<rustls::ServerConfig>>) -> Self {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let behaviour = Arc::new(Behaviour::default());
        behaviour.status.store(200, Ordering::Relaxed);
        let (kill_tx, kill_rx) = oneshot::channel::<()>();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let shared = Arc::clone(&behaviour);
        let server_name = name.to_string();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("upstream runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind upstream");
                addr_tx
                    .send(listener.local_addr().expect("addr"))
                    .expect("send addr");
                let counted = Arc::clone(&shared);
                let app = axum::Router::new()
                    .route("/ws", axum::routing::get(echo))
                    .fallback(move |req: Request| {
                        let shared = Arc::clone(&shared);
                        let name = server_name.clone();
                        async move { respond(&name, &shared, req).await }
                    });
                match tls {
                    None => {
                        let listener = listener.tap_io(move |_| {
                            counted.connections.fetch_add(1, Ordering::Relaxed);
                        });
                        tokio::select! {
                            _ = axum::serve(listener, app) => {},
                            _ = kill_rx => {},
                        }
                    }
                    Some(tls) => tokio::select! {
                        () = serve_tls(listener, tls, app, counted) => {},
                        _ = kill_rx => {},
                    },
                }
            });
            // Dropping the runtime here aborts every connection task.
        });
        let addr = addr_rx.recv().expect("upstream address");
        Self {
            name: name.to_string(),
            scheme,
            addr,
            behaviour,
            kill: Some(kill_tx),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT` (`https://` for [`start_tls`](Self::start_tls)).
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    /// Requests served so far.
    pub fn hits(&self) -> u64 {
        self.behaviour.hits.load(Ordering::Relaxed)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.behaviour.connections.load(Ordering::Relaxed)
    }

    /// Delays every response by `delay`.
    pub fn set_delay(&self, delay: Duration) {
        self.behaviour
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::Relaxed);
    }

    /// Answers every request with `status`.
    pub fn set_status(&self, status: u16) {
        self.behaviour.status.store(status, Ordering::Relaxed);
    }

    /// Holds every request that arrives (counted in [`hits`](Self::hits))
    /// without an answer until [`release`](Self::release): a test knows
    /// how many are in flight at once.
    pub fn hold(&self) {
        self.behaviour.held.store(true, Ordering::SeqCst);
    }

    /// Lets the held requests (and those to come) be answered.
    pub fn release(&self) {
        self.behaviour.held.store(false, Ordering::SeqCst);
        self.behaviour.released.notify_waiters();
    }

    /// Answers every `n`-th request with 503 (0: never), whatever `set_status` says.
    pub fn set_fail_every(&self, n: u64) {
        self.behaviour.fail_every.store(n, Ordering::Relaxed);
    }

    /// Adds `name: value` to every response (e.g. a load report).
    ///
    /// # Panics
    /// When `name` or `value` is not a valid header (test set-up).
    pub fn set_response_header(&self, name: &str, value: &str) {
        let header = (
            HeaderName::try_from(name).expect("header name"),
            HeaderValue::try_from(value).expect("header value"),
        );
        *self.behaviour.extra_header.lock().expect("lock") = Some(header);
    }

    /// Answers every request with `body` instead of the name (e.g. a JSON
    /// health report).
    ///
    /// # Panics
    /// When the lock is poisoned (a test thread panicked).
    pub fn set_body(&self, body: &str) {
        *self.behaviour.body.lock().expect("lock") = Some(body.to_string());
    }

    /// Keeps sessions as a stateful MCP server does: a request without an
    /// `mcp-session-id` is given a new id (`NAME-N`, in the response's
    /// `mcp-session-id`); a request with an id this server did not issue is
    /// answered 404, as the MCP transport spec requires.
    pub fn set_sessions(&self, on: bool) {
        self.behaviour.sessions.store(on, Ordering::Relaxed);
    }

    /// Kills the server: listener and connections close at once.
    pub fn kill(&mut self) {
        if let Some(kill) = self.kill.take() {
            let _ = kill.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn respond(name: &str, behaviour: &Behaviour, request: Request) -> Response<Body> {
    let hit = behaviour.hits.fetch_add(1, Ordering::Relaxed) + 1;
    loop {
        // Registered before the flag is read: a release in between wakes it.
        let released = behaviour.released.notified();
        tokio::pin!(released);
        released.as_mut().enable();
        if !behaviour.held.load(Ordering::SeqCst) {
            break;
        }
        released.await;
    }
    let every = behaviour.fail_every.load(Ordering::Relaxed);
    let forced_failure = every > 0 && hit.is_multiple_of(every);
    let delay = behaviour.delay_ms.load(Ordering::Relaxed);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let (parts, body) = request.into_parts();
    let received = http_body_util::BodyExt::collect(body)
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let status = if forced_failure {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::from_u16(behaviour.status.load(Ordering::Relaxed))
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    };
    // A request with a body is echoed back; otherwise the body is the name.
    let fixed = behaviour.body.lock().map(|b| b.clone()).unwrap_or_default();
    let body = match (fixed, received.is_empty()) {
        (Some(fixed), _) => Body::from(fixed),
        (None, true) => Body::from(name.to_string()),
        (None, false) => Body::from(received),
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    if behaviour.sessions.load(Ordering::Relaxed) {
        let mut issued = behaviour.issued.lock().expect("lock");
        match parts
            .headers
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
        {
            Some(id) if !issued.contains(id) => {
                *response.status_mut() = StatusCode::NOT_FOUND;
                *response.body_mut() = Body::from(format!("{name}: unknown session {id}"));
            }
            Some(_) => {}
            None => {
                let id = format!("{name}-{hit}");
                response.headers_mut().insert(
                    "mcp-session-id",
                    HeaderValue::from_str(&id).expect("session id"),
                );
                issued.insert(id);
            }
        }
    }
    for (key, value) in &parts.headers {
        if let Ok(seen) = HeaderName::try_from(format!("x-seen-{key}")) {
            response.headers_mut().append(seen, value.clone());
        }
    }
    let extra = behaviour
        .extra_header
        .lock()
        .map(|h| h.clone())
        .unwrap_or_default();
    if let Some((name, value)) = extra {
        response.headers_mut().insert(name, value);
    }
    response.headers_mut().insert(
        "x-upstream",
        HeaderValue::from_str(name).unwrap_or(HeaderValue::from_static("?")),
    );
    if let Some(path) = parts.uri.path_and_query()
        && let Ok(value) = HeaderValue::from_str(path.as_str())
    {
        response.headers_mut().insert("x-upstream-path", value);
    }
    if let Ok(value) = HeaderValue::from_str(&format!("{:?}", parts.version)) {
        response.headers_mut().insert("x-upstream-version", value);
    }
    response
}

/// A TLS server config with `cert`, ALPN `h2` and `http/1.1`, asking for
/// client certificates signed by the CA in `clients` when given.
fn server_config(
    cert: &crate::pki::Issued,
    clients: Option<&std::path::Path>,
) -> Arc<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_file_iter(&cert.cert_file)
        .expect("certificate file")
        .collect::<Result<Vec<_>, _>>()
        .expect("certificates");
    let key = PrivateKeyDer::from_pem_file(&cert.key_file).expect("key");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .expect("versions");
    let builder = match clients {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(ca).expect("client CA file") {
                roots.add(cert.expect("client CA")).expect("a CA");
            }
            builder.with_client_cert_verifier(
                rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .expect("client verifier"),
            )
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key).expect("server config");
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

/// Serves `app` over TLS on `listener`, counting connections.
async fn serve_tls(
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: axum::Router,
    behaviour: Arc<Behaviour>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        behaviour.connections.fetch_add(1, Ordering::Relaxed);
        let (acceptor, app) = (acceptor.clone(), app.clone());
        tokio::spawn(async move {
            let Ok(stream) = acceptor.accept(tcp).await else {
                return;
            };
            let service = hyper_util::service::TowerToHyperService::new(app);
            let _ =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
        });
    }
}

/// A WebSocket that sends every message back until it is closed.
async fn echo(upgrade: axum::extract::ws::WebSocketUpgrade) -> axum::response::Response {
    upgrade.on_upgrade(|mut socket| async move {
        while let Some(Ok(message)) = socket.recv().await {
            if matches!(message, axum::extract::ws::Message::Close(_))
                || socket.send(message).await.is_err()
            {
                break;
            }
        }
    })
}

/// A bare instance on `127.0.0.1:0`, served on the caller's runtime, that
/// reads what a connection sends first and writes `answer`, then closes:
/// for instances no HTTP library would mimic (an HTTP/1.0-only server, one
/// that does not speak HTTP/2). Returns its `http://` URL.
///
/// # Panics
/// When the socket cannot be bound (test set-up).
pub async fn fixed_answer(answer: &'static [u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = [0u8; 4096];
                let _ = conn.read(&mut head).await;
                let _ = conn.write_all(answer).await;
            });
        }
    });
    url
}
