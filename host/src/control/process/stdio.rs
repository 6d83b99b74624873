//! stdio MCP servers over HTTP: a replica of a pool with `transport =
//! "stdio"` is Switchyard itself listening on the replica's port, speaking
//! MCP's streamable HTTP transport, and framing each JSON-RPC message as one
//! line on a server process's stdin and reading its answers, one a line, on
//! its stdout (MCP's stdio transport).
//!
//! With `stdio_sessions = "per-session"` an `initialize` starts a process
//! for the new session (at most `max_processes` at once) and `DELETE` stops
//! it; with `"shared"` one process serves every session, and request ids
//! are renumbered so that sessions cannot collide. A request is answered as
//! an SSE stream: what the server sends meanwhile (notifications, its own
//! requests to the client), then the response. `GET` streams what the
//! server sends outside requests. A session whose process exited gets 404
//! with a JSON-RPC error telling the client to initialize again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{ChildStdin, ChildStdout};
use tokio::sync::{broadcast, oneshot};

use super::child::{Lines, Process, stop_signal};
use crate::config::{ProcessConfig, StdioSessions};
use crate::sse;

/// `Mcp-Session-Id`.
const SESSION: &str = "mcp-session-id";

/// One stdio server process and the requests waiting for its answers.
struct Server {
    stdin: tokio::sync::Mutex<ChildStdin>,
    /// By the id sent to the server: the sender of its answer, and the
    /// client's own id to put back.
    pending: Mutex<HashMap<String, (oneshot::Sender<Value>, Value)>>,
    /// What the server sends that answers no request.
    messages: broadcast::Sender<Value>,
    alive: AtomicBool,
    process: tokio::sync::Mutex<Process>,
}

impl Server {
    /// Starts one server process and its stdout reader.
    fn start(
        pool: &str,
        replica: u32,
        port: u16,
        config: &ProcessConfig,
        lines: &Arc<Lines>,
    ) -> std::io::Result<Arc<Self>> {
        let mut process = Process::start(pool, replica, port, config, lines, true)?;
        let (stdin, stdout) = process
            .take_stdio()
            .ok_or_else(|| std::io::Error::other("no stdin/stdout"))?;
        let server = Arc::new(Self {
            stdin: tokio::sync::Mutex::new(stdin),
            pending: Mutex::default(),
            messages: broadcast::channel(256).0,
            alive: AtomicBool::new(true),
            process: tokio::sync::Mutex::new(process),
        });
        tokio::spawn(Arc::clone(&server).read(stdout));
        Ok(server)
    }

    /// Reads the server's messages until its stdout closes.
    async fn read(self: Arc<Self>, stdout: ChildStdout) {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let Ok(message) = serde_json::from_str::<Value>(&line) else {
                tracing::debug!(line, "a stdio MCP server wrote a line that is not JSON");
                continue;
            };
            let answers = message.get("method").is_none();
            let waiting = answers
                .then(|| message.get("id").map(Value::to_string))
                .flatten()
                .and_then(|id| self.lock().remove(&id));
            match waiting {
                Some((tx, client_id)) => {
                    let mut message = message;
                    message["id"] = client_id;
                    let _ = tx.send(message);
                }
                None => {
                    let _ = self.messages.send(message);
                }
            }
        }
        self.alive.store(false, Ordering::Release);
        // Requests still waiting get their senders dropped: an error each.
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (oneshot::Sender<Value>, Value)>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes one message as a line.
    async fn send(&self, message: &Value) -> std::io::Result<()> {
        let mut line = message.to_string();
        line.push('\n');
        let mut stdin = self.stdin.lock().await;
        stdin.write_all(line.as_bytes()).await?;
        stdin.flush().await
    }

    async fn stop(&self, config: &ProcessConfig) {
        self.process
            .lock()
            .await
            .stop(
                stop_signal(&config.stop_signal),
                Duration::from_millis(config.stop_timeout_ms),
            )
            .await;
    }
}

/// A replica of a stdio pool: the HTTP side and its server processes.
pub struct Bridge {
    state: Arc<BridgeState>,
    task: tokio::task::JoinHandle<()>,
}

struct BridgeState {
    pool: String,
    replica: u32,
    port: u16,
    config: ProcessConfig,
    lines: Arc<Lines>,
    /// Session id → its server (the shared one, in shared mode).
    sessions: Mutex<HashMap<String, Arc<Server>>>,
    shared: Option<Arc<Server>>,
    next_id: AtomicU64,
}

impl Bridge {
    /// Listens on `port` of 127.0.0.1 for replica `replica` of `pool`; in
    /// shared mode, starts the shared server process.
    ///
    /// # Errors
    /// The port cannot be bound, or the shared process cannot start.
    pub async fn start(
        pool: &str,
        replica: u32,
        port: u16,
        config: &ProcessConfig,
        lines: &Arc<Lines>,
    ) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let shared = match config.stdio_sessions {
            StdioSessions::Shared => Some(Server::start(pool, replica, port, config, lines)?),
            StdioSessions::PerSession => None,
        };
        let state = Arc::new(BridgeState {
            pool: pool.to_string(),
            replica,
            port,
            config: config.clone(),
            lines: Arc::clone(lines),
            sessions: Mutex::default(),
            shared,
            next_id: AtomicU64::new(1),
        });
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&state));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { state, task })
    }

    /// The shared process's id (none per session).
    pub async fn pid(&self) -> Option<u32> {
        match &self.state.shared {
            Some(server) => Some(server.process.lock().await.pid),
            None => None,
        }
    }

    /// Waits until the shared process exits (never, per session); how it
    /// ended.
    pub async fn wait(&self) -> String {
        match &self.state.shared {
            Some(server) => {
                let mut process = server.process.lock().await;
                match process.wait().await {
                    Ok(status) => status.to_string(),
                    Err(e) => format!("wait failed: {e}"),
                }
            }
            None => std::future::pending().await,
        }
    }

    /// Stops listening and stops every server process.
    pub async fn stop(&self) {
        self.task.abort();
        let servers: Vec<Arc<Server>> = {
            let sessions = self
                .state
                .sessions
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            sessions.values().cloned().collect()
        };
        for server in servers.iter().chain(self.state.shared.iter()) {
            server.stop(&self.state.config).await;
        }
    }
}

impl BridgeState {
    fn session(&self, id: &str) -> Option<Arc<Server>> {
        self.sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .cloned()
    }
}

/// One request of the streamable HTTP transport.
async fn handle(
    State(state): State<Arc<BridgeState>>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let session = headers
        .get(SESSION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    match method {
        Method::POST => post(&state, session, &body).await,
        Method::GET => match session.and_then(|s| state.session(&s)) {
            Some(server) => stream(&server, None, None),
            None => gone(&Value::Null, "unknown session"),
        },
        Method::DELETE => {
            let Some(id) = session else {
                return error(
                    StatusCode::BAD_REQUEST,
                    &Value::Null,
                    -32600,
                    "DELETE needs an Mcp-Session-Id",
                );
            };
            let removed = state
                .sessions
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&id);
            if let Some(server) = removed.filter(|_| state.shared.is_none()) {
                server.stop(&state.config).await;
            }
            StatusCode::OK.into_response()
        }
        _ => StatusCode::METHOD_NOT_ALLOWED.into_response(),
    }
}

async fn post(state: &BridgeState, session: Option<String>, body: &[u8]) -> Response {
    let Ok(mut message) = serde_json::from_slice::<Value>(body) else {
        return error(StatusCode::BAD_REQUEST, &Value::Null, -32700, "not JSON");
    };
    let id = message.get("id").cloned();
    let is_initialize = message.get("method").and_then(Value::as_str) == Some("initialize");
    let (server, new_session) = match (session, is_initialize) {
        (None, true) => {
            let server = match &state.shared {
                Some(shared) => Arc::clone(shared),
                None => {
                    let running = state
                        .sessions
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .len();
                    if running >= state.config.max_processes as usize {
                        return error(
                            StatusCode::SERVICE_UNAVAILABLE,
                            id.as_ref().unwrap_or(&Value::Null),
                            -32603,
                            &format!(
                                "at most {} sessions (max_processes)",
                                state.config.max_processes
                            ),
                        );
                    }
                    match Server::start(
                        &state.pool,
                        state.replica,
                        state.port,
                        &state.config,
                        &state.lines,
                    ) {
                        Ok(server) => server,
                        Err(e) => {
                            return error(
                                StatusCode::BAD_GATEWAY,
                                id.as_ref().unwrap_or(&Value::Null),
                                -32603,
                                &format!("the stdio server did not start: {e}"),
                            );
                        }
                    }
                }
            };
            let mut token = [0u8; 16];
            let _ = getrandom::fill(&mut token);
            let token: String = token.iter().map(|b| format!("{b:02x}")).collect();
            state
                .sessions
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(token.clone(), Arc::clone(&server));
            (server, Some(token))
        }
        (Some(token), _) => match state.session(&token) {
            Some(server) => (server, None),
            None => return gone(id.as_ref().unwrap_or(&Value::Null), "unknown session"),
        },
        (None, false) => match &state.shared {
            Some(shared) => (Arc::clone(shared), None),
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    &Value::Null,
                    -32600,
                    "an Mcp-Session-Id is required",
                );
            }
        },
    };
    if !server.alive.load(Ordering::Acquire) {
        // Its session is over: it no longer counts against max_processes.
        if state.shared.is_none() {
            state
                .sessions
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .retain(|_, s| !Arc::ptr_eq(s, &server));
        }
        return gone(
            id.as_ref().unwrap_or(&Value::Null),
            "the stdio MCP server of this session exited",
        );
    }
    let is_request = message.get("method").is_some() && id.is_some();
    let waiting = match (is_request, id) {
        (true, Some(client_id)) => {
            // Renumbered: ids of every session share one server.
            let ours = format!("sy-{}", state.next_id.fetch_add(1, Ordering::Relaxed));
            message["id"] = Value::String(ours.clone());
            let (tx, rx) = oneshot::channel();
            server
                .lock()
                .insert(Value::String(ours).to_string(), (tx, client_id.clone()));
            Some((rx, client_id))
        }
        _ => None,
    };
    if let Err(e) = server.send(&message).await {
        return gone(&Value::Null, &format!("the stdio MCP server exited: {e}"));
    }
    match waiting {
        Some((rx, client_id)) => {
            let mut response = stream(&server, Some(rx), Some(client_id));
            if let Some(token) = new_session.and_then(|t| HeaderValue::from_str(&t).ok()) {
                response.headers_mut().insert(SESSION, token);
            }
            response
        }
        None => StatusCode::ACCEPTED.into_response(),
    }
}

/// An SSE stream of what `server` sends, until `answer` (when given)
/// arrives; the server's exit ends it with an error for `id`.
fn stream(
    server: &Arc<Server>,
    answer: Option<oneshot::Receiver<Value>>,
    id: Option<Value>,
) -> Response {
    let mut messages = server.messages.subscribe();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::convert::Infallible>>(16);
    tokio::spawn(async move {
        let send = |message: &Value| Bytes::from(sse::encode(None, &message.to_string()));
        let Some(mut answer) = answer else {
            while let Ok(message) = messages.recv().await {
                if tx.send(Ok(send(&message))).await.is_err() {
                    return;
                }
            }
            return;
        };
        loop {
            tokio::select! {
                answered = &mut answer => {
                    let message = answered.unwrap_or_else(|_| json!({
                        "jsonrpc": "2.0", "id": id,
                        "error": { "code": -32001, "message": "the stdio MCP server exited; initialize a new session" },
                    }));
                    let _ = tx.send(Ok(send(&message))).await;
                    return;
                }
                message = messages.recv() => match message {
                    Ok(message) => if tx.send(Ok(send(&message))).await.is_err() { return },
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    });
    let body = Body::from_stream(tokio_stream_from(rx));
    let mut response = Response::new(body);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    response
}

/// A stream of the channel's items.
fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::convert::Infallible>>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::convert::Infallible>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

fn error(status: StatusCode, id: &Value, code: i64, message: &str) -> Response {
    let body = json!({ "jsonrpc": "2.0", "id": id, "error": { "code": code, "message": message } });
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// 404: the session is unknown or its process is gone; initialize again.
fn gone(id: &Value, why: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        id,
        -32001,
        &format!("{why}; initialize a new session"),
    )
}
