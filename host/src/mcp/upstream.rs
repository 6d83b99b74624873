//! The gateway as an MCP client of its targets: one POST, GET or DELETE to
//! one instance of a target's pool over the pool's pooled connections,
//! booked on the instance like any other attempt (balancer feedback,
//! outlier detection, breaker), its answer read as JSON or as an SSE stream.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Either, Full};
use serde_json::Value;
use tokio::sync::OwnedSemaphorePermit;

use super::session::Pinned;
use crate::balance::{Affinity, EndpointId, InFlight};
use crate::proxy::AttemptError;
use crate::proxy::Pool;
use crate::proxy::PooledBody;
use crate::sse;

/// `Mcp-Session-Id`.
pub static SESSION_ID: HeaderName = HeaderName::from_static("mcp-session-id");
/// `MCP-Protocol-Version`.
pub static PROTOCOL_VERSION: HeaderName = HeaderName::from_static("mcp-protocol-version");
/// `Mcp-Method` (2026-07-28): the JSON-RPC method of a POST.
pub static MCP_METHOD: HeaderName = HeaderName::from_static("mcp-method");
/// `Mcp-Name` (2026-07-28): the tool, prompt or resource a POST is about.
pub static MCP_NAME: HeaderName = HeaderName::from_static("mcp-name");
/// `Last-Event-ID`.
pub static LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");

/// A target of an MCP route at run time.
pub struct Target {
    /// Its name (the prefix of its names).
    pub name: String,
    /// Its pool.
    pub pool: Arc<Pool>,
    /// The endpoint's path, when fixed (else the client's).
    pub path: Option<PathAndQuery>,
    /// Its own headers.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// Which instance a call goes to.
#[derive(Clone, Copy)]
pub enum Via<'a> {
    /// The one holding this session.
    Pinned(&'a Pinned),
    /// This one.
    Instance(EndpointId),
    /// The one the pool's balancer picks, passing over `tried`.
    Any,
}

/// Why a call to a target failed.
#[derive(Debug, Clone)]
pub enum CallError {
    /// No instance could take it (nothing was sent).
    NoInstance(String),
    /// The instance could not be reached (nothing was sent).
    Unreachable(String),
    /// The instance that holds the session is gone, or no longer knows it:
    /// the client must initialize again.
    Gone(String),
    /// It failed after it was sent (it may have run).
    Failed(String),
    /// The instance answered with this HTTP error status (it may have run).
    Status(u16, String),
    /// No answer, or no next event, in time (it may have run).
    TimedOut(String),
    /// The pool's bulkhead shed it (nothing was sent; the pool is full, so
    /// it is not tried again).
    Shed(String),
}

impl CallError {
    /// A word for metrics: `no_instance`, `unreachable`, `session_gone`,
    /// `failed`, `timeout`, `shed`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NoInstance(_) => "no_instance",
            Self::Unreachable(_) => "unreachable",
            Self::Gone(_) => "session_gone",
            Self::Failed(_) | Self::Status(..) => "failed",
            Self::TimedOut(_) => "timeout",
            Self::Shed(_) => "shed",
        }
    }

    /// Whether nothing was sent (a retry elsewhere replays nothing).
    pub fn nothing_sent(&self) -> bool {
        matches!(self, Self::NoInstance(_) | Self::Unreachable(_))
    }

    /// The failure's kind, as the engines classify it (for the failover
    /// policy).
    pub fn outcome(&self) -> crate::policy::AttemptOutcome {
        use crate::policy::AttemptOutcome;
        match self {
            Self::Status(status, _) => AttemptOutcome::Answered(*status),
            Self::TimedOut(_) => AttemptOutcome::Timeout,
            Self::NoInstance(_) | Self::Unreachable(_) | Self::Shed(_) => {
                AttemptOutcome::ConnectFailure
            }
            Self::Gone(_) | Self::Failed(_) => AttemptOutcome::Reset,
        }
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NoInstance(why)
            | Self::Unreachable(why)
            | Self::Gone(why)
            | Self::Failed(why)
            | Self::Status(_, why)
            | Self::TimedOut(why)
            | Self::Shed(why) => f.write_str(why),
        }
    }
}

/// What an instance answered.
pub enum Reply {
    /// One JSON-RPC message.
    Message(Value),
    /// An event stream.
    Stream(Stream),
    /// 202 Accepted: nothing to say (a notification or a response).
    Accepted,
}

/// An answer, and who gave it.
pub struct Sent {
    /// What the instance answered.
    pub reply: Reply,
    /// The instance's URL.
    pub instance: String,
    /// The `Mcp-Session-Id` it gave, if any.
    pub session: Option<String>,
}

/// An answer's event stream, read event by event.
pub struct Stream {
    body: PooledBody,
    parser: sse::Parser,
    idle: Option<Duration>,
    deadline: Option<tokio::time::Instant>,
    max_event: usize,
    /// The instance's in-flight count, held while the stream is read.
    _in_flight: InFlight,
    /// The pool's bulkhead slot, held while the stream is read.
    _slot: Option<OwnedSemaphorePermit>,
}

impl Stream {
    /// The next event; `None` when the stream ended.
    ///
    /// # Errors
    /// [`CallError::TimedOut`] past the idle timeout or the call's
    /// deadline, [`CallError::Failed`] when the stream broke or an event is
    /// over the message limit.
    pub async fn next(&mut self) -> Result<Option<sse::Event>, CallError> {
        loop {
            if let Some(event) = self.parser.next_event() {
                return Ok(Some(event));
            }
            if self.parser.pending() > self.max_event {
                return Err(CallError::Failed(format!(
                    "an event over max_message_bytes ({})",
                    self.max_event
                )));
            }
            let frame = self.body.frame();
            let frame = match (self.idle, self.deadline) {
                (Some(idle), Some(deadline)) => {
                    let until = deadline.min(tokio::time::Instant::now() + idle);
                    tokio::time::timeout_at(until, frame).await.map_err(|_| {
                        CallError::TimedOut("no event within the idle timeout or the call's".into())
                    })?
                }
                _ => frame.await,
            };
            match frame {
                None => return Ok(None),
                Some(Err(e)) => return Err(CallError::Failed(format!("the stream broke: {e}"))),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.parser.push(&data);
                    }
                }
            }
        }
    }

    /// The JSON-RPC response to `id` in the stream (other messages are
    /// passed to `other`).
    ///
    /// # Errors
    /// As [`next`](Self::next); [`CallError::Failed`] when the stream ends
    /// without it.
    pub async fn response_to(
        &mut self,
        id: &Value,
        mut other: impl FnMut(Value),
    ) -> Result<Value, CallError> {
        while let Some(event) = self.next().await? {
            let Ok(message) = serde_json::from_str::<Value>(&event.data) else {
                continue;
            };
            if message.get("method").is_none() && message.get("id") == Some(id) {
                return Ok(message);
            }
            other(message);
        }
        Err(CallError::Failed(
            "the event stream ended without the response".into(),
        ))
    }
}

/// What every call of one client request shares: the request facts the
/// balancers rank by, and the call's bounds.
pub struct Caller<'a> {
    /// The client's request head (with `Mcp-Method`/`Mcp-Name` set), for
    /// the balancers (plugins see those headers).
    pub parts: &'a http::request::Parts,
    /// Host the client addressed.
    pub host: &'a str,
    /// The client's path (a target without its own path is asked there).
    pub path_and_query: &'a PathAndQuery,
    /// The client's address.
    pub peer: SocketAddr,
    /// Headers passed on to every target (`X-Forwarded-*`, trace context).
    pub forwarded: HeaderMap,
    /// The wait for an answer's head, and between events.
    pub idle: Duration,
    /// When the client's request arrived.
    pub started: Instant,
    /// When the whole call must be over.
    pub deadline: tokio::time::Instant,
    /// Largest message read.
    pub max_message: usize,
}

/// One request to a target.
pub struct Call<'a> {
    /// GET, POST or DELETE.
    pub method: Method,
    /// The JSON-RPC message of a POST.
    pub body: Bytes,
    /// The upstream session, and the protocol revision to state.
    pub session: Option<&'a str>,
    /// The revision in `MCP-Protocol-Version`, when known.
    pub protocol: Option<&'a str>,
    /// `Mcp-Method` and `Mcp-Name`.
    pub mcp_method: Option<&'a str>,
    /// `Mcp-Name`.
    pub mcp_name: Option<&'a str>,
    /// `Last-Event-ID` of a GET that resumes.
    pub last_event_id: Option<&'a str>,
}

impl<'a> Call<'a> {
    /// A `method` request with `body` and no MCP headers.
    pub fn new(method: Method, body: Bytes) -> Self {
        Self {
            method,
            body,
            session: None,
            protocol: None,
            mcp_method: None,
            mcp_name: None,
            last_event_id: None,
        }
    }

    /// A POST of `message`, with `Mcp-Method` and `Mcp-Name` from it.
    pub fn post(message: &'a Value) -> Self {
        Self {
            mcp_method: message.get("method").and_then(Value::as_str),
            mcp_name: subject(message),
            ..Self::new(Method::POST, Bytes::from(message.to_string()))
        }
    }
}

/// The tool, prompt or resource a message is about (`Mcp-Name`).
pub fn subject(message: &Value) -> Option<&str> {
    let params = message.get("params")?;
    params
        .get("name")
        .or_else(|| params.get("uri"))
        .and_then(Value::as_str)
}

impl Caller<'_> {
    /// Sends `call` to `target` on the instance `via` says, skipping
    /// `tried` (the instance used is added to it); a GET's stream has no
    /// idle timeout nor deadline once its head arrived. A POST or DELETE
    /// holds a slot of the pool's bulkhead until its answer is read (a
    /// stream: until it ends); a GET, the session's standing stream, does
    /// not.
    ///
    /// # Errors
    /// [`CallError`], booked on the instance; [`CallError::Shed`] when the
    /// bulkhead sheds it (nothing sent, nothing booked).
    pub async fn send(
        &self,
        target: &Target,
        via: Via<'_>,
        call: &Call<'_>,
        tried: &mut Vec<EndpointId>,
    ) -> Result<Sent, CallError> {
        let pool = &target.pool;
        let slot = if call.method == Method::GET {
            None
        } else {
            pool.enter_bulkhead()
                .await
                .map_err(|shed| CallError::Shed(shed.to_string()))?
        };
        let (id, admission) = match via {
            Via::Pinned(pinned) => {
                let Some(endpoint) = pool
                    .members()
                    .as_slice()
                    .iter()
                    .find(|e| e.url == pinned.instance && !e.is_retired())
                else {
                    return Err(CallError::Gone(format!(
                        "instance {} left pool `{}`",
                        pinned.instance,
                        pool.name()
                    )));
                };
                (endpoint.id, Default::default())
            }
            Via::Instance(id) => (id, Default::default()),
            Via::Any => {
                let ranking = crate::proxy::rank(
                    pool,
                    self.parts,
                    self.host,
                    self.path_and_query,
                    self.peer,
                    &Affinity::default(),
                );
                pool.next(&ranking, tried, None).ok_or_else(|| {
                    CallError::NoInstance(format!(
                        "pool `{}` has no instance available",
                        pool.name()
                    ))
                })?
            }
        };
        tried.push(id);
        let Some(endpoint) = pool.members().get(id) else {
            return Err(CallError::NoInstance(format!(
                "instance {id} left pool `{}`",
                pool.name()
            )));
        };
        let timeout = self
            .deadline
            .min(tokio::time::Instant::now() + self.idle)
            .saturating_duration_since(tokio::time::Instant::now());
        let sent = pool
            .send(endpoint, timeout, false, |_| self.request(target, call))
            .await;
        pool.book(endpoint, admission, &sent);
        let (response, in_flight) = match sent.result {
            Ok(answered) => answered,
            Err(AttemptError::TimedOut(_)) => {
                return Err(CallError::TimedOut(format!(
                    "{} did not answer in time",
                    endpoint.url
                )));
            }
            Err(error @ AttemptError::Connect(_)) => {
                let why = error.reason(endpoint);
                return Err(match via {
                    Via::Pinned(_) => CallError::Gone(why),
                    _ => CallError::Unreachable(why),
                });
            }
            Err(error) => return Err(CallError::Failed(error.reason(endpoint))),
        };
        let status = response.status();
        let url = endpoint.url.clone();
        let session = response
            .headers()
            .get(&SESSION_ID)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let reply = self
            .read(response, (in_flight, slot), call.method == Method::GET)
            .await
            .map_err(|e| match e {
                CallError::Status(_, why)
                    if status == StatusCode::NOT_FOUND && call.session.is_some() =>
                {
                    CallError::Gone(format!("{url} no longer knows the session ({why})"))
                }
                other => other,
            })?;
        Ok(Sent {
            reply,
            instance: url,
            session,
        })
    }

    /// The HTTP request of `call` to `target`.
    fn request(&self, target: &Target, call: &Call<'_>) -> Request<crate::proxy::UpstreamBody> {
        let mut request = Request::new(Either::Right(Full::new(call.body.clone())));
        *request.method_mut() = call.method.clone();
        *request.uri_mut() = Uri::from(
            target
                .path
                .clone()
                .unwrap_or_else(|| self.path_and_query.clone()),
        );
        let headers = request.headers_mut();
        headers.clone_from(&self.forwarded);
        let accept = if call.method == Method::GET {
            "text/event-stream"
        } else {
            "application/json, text/event-stream"
        };
        headers.insert(http::header::ACCEPT, HeaderValue::from_static(accept));
        if call.method == Method::POST {
            headers.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
        let mut set = |name: &HeaderName, value: Option<&str>| {
            if let Some(v) = value.and_then(|v| HeaderValue::from_str(v).ok()) {
                headers.insert(name.clone(), v);
            }
        };
        set(&SESSION_ID, call.session);
        set(&PROTOCOL_VERSION, call.protocol);
        set(&MCP_METHOD, call.mcp_method);
        set(&MCP_NAME, call.mcp_name);
        set(&LAST_EVENT_ID, call.last_event_id);
        for (name, value) in &target.headers {
            headers.insert(name.clone(), value.clone());
        }
        request
    }

    /// Reads an instance's answer: JSON, an event stream, or 202; what it
    /// `holds` (the instance's in-flight count, the bulkhead slot) is let go
    /// once it is read, or when its stream ends.
    async fn read(
        &self,
        response: Response<PooledBody>,
        (in_flight, slot): (InFlight, Option<OwnedSemaphorePermit>),
        get: bool,
    ) -> Result<Reply, CallError> {
        let status = response.status();
        let sse = response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        if status == StatusCode::ACCEPTED {
            return Ok(Reply::Accepted);
        }
        if status.is_success() && sse {
            return Ok(Reply::Stream(Stream {
                body: response.into_body(),
                parser: sse::Parser::default(),
                idle: (!get).then_some(self.idle),
                deadline: (!get).then_some(self.deadline),
                max_event: self.max_message,
                _in_flight: in_flight,
                _slot: slot,
            }));
        }
        let limited = http_body_util::Limited::new(response.into_body(), self.max_message);
        let body = tokio::time::timeout_at(self.deadline, limited.collect())
            .await
            .map_err(|_| CallError::TimedOut("the answer's body did not arrive in time".into()))?
            .map_err(|e| CallError::Failed(format!("reading the answer: {e}")))?
            .to_bytes();
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
            return Err(CallError::Status(
                status.as_u16(),
                format!("HTTP status {status}: {text}"),
            ));
        }
        if body.is_empty() {
            return Ok(Reply::Accepted);
        }
        serde_json::from_slice(&body)
            .map(Reply::Message)
            .map_err(|_| CallError::Failed("the answer is not JSON".into()))
    }
}
