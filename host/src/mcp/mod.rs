//! MCP routes: Switchyard as an MCP gateway over the streamable HTTP
//! transport (MCP revisions 2025-03-26 and 2025-06-18, with sessions; and
//! the 2026-07-28 revision's `server/discover`, session-less requests and
//! `Mcp-Method`/`Mcp-Name` headers).
//!
//! The gateway is an MCP server to its clients and an MCP client of its
//! targets (pools; any strategy, health check and breaker, and their
//! bulkhead: see **Calls**). What each JSON-RPC message does:
//!
//! | client sends | the gateway |
//! |---|---|
//! | `initialize` | asks every target (a balancer-chosen instance each), merges the results ([`merge::merge_initialize`]) and issues a sealed session id (`session`) that records, per target, the instance and the session it issued |
//! | `server/discover` | asks every target, merges as above; no session |
//! | `ping` | answers itself |
//! | `tools/list`, `prompts/list`, `resources/list`, `resources/templates/list` | asks every target (the targets named in a composite cursor, for a next page) and merges the pages ([`merge::merge_list`]): names prefixed per `prefix`, `nextCursor` combined |
//! | `tools/call`, `prompts/get`, `completion/complete` (prompt refs) | the one target that owns the name, the prefix removed |
//! | `resources/read`, `resources/subscribe`, `resources/unsubscribe`, `completion/complete` (resource refs) | the target that listed the URI (or a template it starts with) |
//! | `logging/setLevel` and notifications | every target of the session |
//! | a response (to a server's request) | the target whose request it answers (the gateway's id for it says which) |
//! | anything else | the target, with one; "method not found" with several |
//!
//! GET opens the session's notification stream: the targets' GET streams
//! merged into one (a target that offers none is left out; event ids are
//! `TARGET.ID`, so `Last-Event-ID` resumes the right target's stream).
//! DELETE ends every upstream session and the gateway's.
//!
//! A target's answer may be JSON or an SSE stream; a stream is relayed as
//! it comes, each server-to-client request (sampling, elicitation, roots)
//! given an id `TARGET:ID` that routes the client's answer back.
//!
//! **Sessions.** A request of a session goes to the instance that holds
//! the target's session. When that instance has left its pool, cannot be
//! reached, or answers 404, the client gets HTTP 404 with a JSON-RPC
//! error saying to initialize again — never a silent move to an instance
//! that does not know the session (the MCP spec's "session expired").
//!
//! **Calls.** A `tools/call` is sent once, unless the tool is idempotent
//! (its annotations say `readOnlyHint` or `idempotentHint`, or the route's
//! `tools` table says so): then a failure may be retried, on another
//! instance when the target keeps no session (a call of a session pinned
//! to one instance has no other: only a failover plugin that allows the
//! same instance retries it). The failover step is a pool route's (`Pool::after_failure`): the
//! target pool's failover policy decides — the built-in retries the
//! failures its `retry.retry_on` lists, a failover plugin keeps its own
//! schedule (it sees `Mcp-Method`/`Mcp-Name`) — within the pool's attempt
//! cap (`retry.retries`, default 1), retry budget, backoff and the call's
//! deadline. The idempotence is the policy's input: a call that is not
//! idempotent is not replayable, so no policy can send it twice.
//! A call that never reached an instance (no connection) may be tried on
//! another either way, as an attempt of its own. A tool with `fuse` is asked of `count` instances
//! at once and their results resolved by the built-in resolver
//! ([`crate::fusion`]), with provenance in the result's `_meta`. A call is
//! bounded by `idle_timeout_ms` between events (and to the answer's head)
//! and by `call_timeout_ms` in all, not by the pool's `request_timeout_ms`.
//! Every POST and DELETE to a target (lists, calls, fused calls, session
//! set-up) holds a slot of the target pool's bulkhead until its answer is
//! read or its stream ends, as a request of a pool route does; one shed is
//! answered with the same reason (`pool … is at capacity: …`) and is not
//! retried. The session's standing GET stream takes no slot.

mod fuse;
mod lists;
pub mod merge;
mod session;
mod stream;
mod upstream;

pub use session::{KEYS_ENV, SessionKeys, Sessions, SessionsSeen};

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::future::join_all;
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use serde_json::{Value, json};

use self::merge::{Entry, ListKind};
use self::session::{Pinned, SessionState, UpstreamSession};
use self::stream::hold;
use self::upstream::{Call, CallError, Caller, Reply, Sent, Target, Via, subject};
use crate::balance::EndpointId;
use crate::config::{FailureMode, McpConfig, PrefixMode, RouteMatch};
use crate::events::{EventKind, HealthEvent, Severity};
use crate::failover::AttemptFacts;
use crate::fusion::Builtin;
use crate::policy::RequestContext;
use crate::proxy::{
    AfterFailure, FailedAttempt, Inbound, Pool, ProxyBody, ProxyError, Reporting, StartError,
    prepare_request, read_whole,
};

/// JSON-RPC: the message is not JSON.
const PARSE_ERROR: i64 = -32700;
/// JSON-RPC: not a valid request.
const INVALID_REQUEST: i64 = -32600;
/// JSON-RPC: no such method.
const METHOD_NOT_FOUND: i64 = -32601;
/// JSON-RPC: bad parameters (an unknown tool, a bad cursor).
const INVALID_PARAMS: i64 = -32602;
/// JSON-RPC: the gateway could not get an answer.
const INTERNAL_ERROR: i64 = -32603;
/// The session is unknown, expired or broken: initialize again.
const SESSION_GONE: i64 = -32001;

/// A failed MCP call, as [`McpRoute::after_failure`] takes it.
struct FailedCall<'c> {
    /// How it failed.
    error: &'c CallError,
    /// 1 for the first attempt.
    attempt: usize,
    /// Whether the call may be sent again once it may have run.
    idempotent: bool,
    /// The session is pinned to the instance that failed: no other can
    /// take the call.
    pinned: bool,
    /// Instances tried so far, the failed one last.
    tried: &'c [EndpointId],
}

/// Request headers passed on to targets (the rest are the client's
/// business with the gateway: its credentials above all).
const PASSED_ON: [&str; 5] = [
    "x-forwarded-for",
    "x-forwarded-proto",
    "traceparent",
    "tracestate",
    "x-request-id",
];

/// The operator's settings of one tool.
struct ToolSettings {
    idempotent: Option<bool>,
    fuse: Option<(usize, Builtin)>,
}

/// What the route learned from the targets' lists: who owns each name.
#[derive(Default)]
struct Catalog {
    /// By list and exposed name.
    entries: HashMap<(ListKind, String), Entry>,
    /// By list and name at the target: the targets seen listing it.
    listed_by: HashMap<(ListKind, String), Vec<usize>>,
    /// By list, target and name at the target: the exposed name.
    exposed: HashMap<(ListKind, usize, String), String>,
    /// The lists read in full (every page of every target) at least once.
    learned: Vec<ListKind>,
}

/// An MCP route at run time.
pub struct McpRoute {
    index: usize,
    targets: Vec<Target>,
    names: Vec<String>,
    prefix: PrefixMode,
    separator: String,
    failure_mode: FailureMode,
    call_timeout: Duration,
    idle_timeout: Duration,
    fan_out_timeout: Duration,
    session_idle: Duration,
    session_max_age: Duration,
    max_message: usize,
    tools: BTreeMap<String, ToolSettings>,
    /// Shared with the same route built after a change (see `build`).
    catalog: Arc<RwLock<Catalog>>,
    /// The route's match, `HOST PATH_PREFIX`: the sessions it issues say so.
    key: Arc<str>,
    reporting: Arc<Reporting>,
    sessions: Arc<Sessions>,
}

/// One client request being served.
struct Client<'a> {
    caller: Caller<'a>,
    /// The session, when the request has one.
    session: Option<SessionState>,
    /// The client's `MCP-Protocol-Version`.
    protocol: Option<String>,
}

impl<'a> Client<'a> {
    /// A POST of `message` to target `name` in the session: to the instance
    /// that holds the target's session, with its session id and revision
    /// (else to any instance, with the client's revision). `Err` when the
    /// session exists but the target is not part of it.
    fn post<'m>(&'m self, name: &str, message: &'m Value) -> Result<(Call<'m>, Via<'m>), ()> {
        let upstream = self.upstream(name)?;
        let pinned = upstream.and_then(|u| u.pinned.as_ref());
        let call = Call {
            session: pinned.map(|p| p.session.as_str()),
            protocol: upstream
                .map(|u| u.protocol.as_str())
                .or(self.protocol.as_deref()),
            ..Call::post(message)
        };
        Ok((call, pinned.map_or(Via::Any, Via::Pinned)))
    }

    /// Target `t`'s side of the session: `Err` when the session exists but
    /// the target is not part of it (it joined the route later).
    fn upstream(&self, name: &str) -> Result<Option<&UpstreamSession>, ()> {
        match &self.session {
            None => Ok(None),
            Some(s) => s
                .upstreams
                .iter()
                .find(|u| u.target == name)
                .map(Some)
                .ok_or(()),
        }
    }
}

impl McpRoute {
    /// Builds route number `index`, matching `matches`, from `config`
    /// (validated) over `pools`. `previous`, the same route as built before
    /// a change, hands on the catalog it learned (the targets are the same).
    ///
    /// # Errors
    /// [`StartError::Route`] for a target whose pool does not exist or a
    /// fused tool whose resolver is not built in.
    pub fn build(
        index: usize,
        matches: &RouteMatch,
        config: &McpConfig,
        pools: &BTreeMap<String, Arc<Pool>>,
        (reporting, sessions): (&Arc<Reporting>, &Arc<Sessions>),
        previous: Option<&McpRoute>,
    ) -> Result<Self, StartError> {
        let mut targets = Vec::with_capacity(config.targets.len());
        for t in &config.targets {
            let pool = pools
                .get(t.pool())
                .cloned()
                .ok_or_else(|| StartError::Route(format!("unknown pool `{}`", t.pool())))?;
            targets.push(Target {
                name: t.name().to_string(),
                pool,
                path: t.path().and_then(|p| p.parse().ok()),
                headers: t
                    .headers()
                    .map(crate::config::header_pairs)
                    .unwrap_or_default(),
            });
        }
        let mut tools = BTreeMap::new();
        for (name, tool) in &config.tools {
            let fuse = match &tool.fuse {
                Some(f) => Some((
                    f.count as usize,
                    Builtin::new(&f.resolver).ok_or_else(|| {
                        StartError::Route(format!(
                            "routes[{index}].mcp.tools.{name}.fuse.resolver: not a built-in resolver"
                        ))
                    })?,
                )),
                None => None,
            };
            tools.insert(
                name.clone(),
                ToolSettings {
                    idempotent: tool.idempotent,
                    fuse,
                },
            );
        }
        let key = format!(
            "{} {}",
            matches.host.as_deref().unwrap_or("*"),
            matches.path_prefix.as_deref().unwrap_or("/")
        );
        Ok(Self {
            index,
            names: targets.iter().map(|t| t.name.clone()).collect(),
            targets,
            prefix: config.prefix,
            separator: config.separator.clone(),
            failure_mode: config.failure_mode,
            call_timeout: Duration::from_millis(config.call_timeout_ms),
            idle_timeout: Duration::from_millis(config.idle_timeout_ms),
            fan_out_timeout: Duration::from_millis(config.fan_out_timeout_ms),
            session_idle: Duration::from_millis(config.session_idle_timeout_ms),
            session_max_age: Duration::from_millis(config.session_max_age_ms),
            max_message: usize::try_from(config.max_message_bytes).unwrap_or(usize::MAX),
            tools,
            catalog: previous.map_or_else(Arc::default, |p| Arc::clone(&p.catalog)),
            key: Arc::from(key),
            reporting: Arc::clone(reporting),
            sessions: Arc::clone(sessions),
        })
    }

    /// What the status API shows: the targets (name, pool), the sessions
    /// this Switchyard saw in use within `session_idle_timeout_ms`, and the
    /// tools learned (exposed name, target, name at the target).
    pub fn status(&self) -> Value {
        let targets: Vec<Value> = self
            .targets
            .iter()
            .map(|t| json!({ "name": t.name, "pool": t.pool.name() }))
            .collect();
        let sessions = self.sessions.seen.active(&self.key, self.session_idle);
        let catalog = self.catalog.read().unwrap_or_else(|p| p.into_inner());
        let mut tools: Vec<Value> = catalog
            .entries
            .iter()
            .filter(|((kind, _), _)| *kind == ListKind::Tools)
            .map(|((_, exposed), e)| {
                json!({ "name": exposed, "target": self.names[e.target], "original": e.original,
                        "idempotent": e.idempotent })
            })
            .collect();
        tools.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
        json!({ "route": self.index, "targets": targets, "sessions": sessions, "tools": tools })
    }

    /// Serves one request of the transport: POST a message, GET the
    /// notification stream, DELETE the session.
    pub(super) async fn serve(
        &self,
        request: Inbound<'_>,
        body: Incoming,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let Inbound {
            mut parts,
            host,
            peer,
            limits,
            tls,
            ..
        } = request;
        let mut forwarded = parts.headers.clone();
        prepare_request(&mut forwarded, peer.ip(), None, tls);
        let forwarded: HeaderMap = forwarded
            .into_iter()
            .filter_map(|(name, value)| {
                let name = name?;
                PASSED_ON.contains(&name.as_str()).then_some((name, value))
            })
            .collect();
        let text = |name: &HeaderName| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let (token, protocol, last_event_id) = (
            text(&upstream::SESSION_ID),
            text(&upstream::PROTOCOL_VERSION),
            text(&upstream::LAST_EVENT_ID),
        );
        let session = match &token {
            Some(token) => match self.open_session(token) {
                Ok(state) => Some(state),
                Err(why) => return Ok(session_gone(&Value::Null, &why)),
            },
            None => None,
        };
        let message = if parts.method == Method::POST {
            let body = read_whole(body, limits, self.max_message as u64).await?;
            match parse(&body) {
                Ok(message) => Some(message),
                Err((code, why)) => {
                    return Ok(rpc_error(StatusCode::BAD_REQUEST, &Value::Null, code, &why));
                }
            }
        } else {
            None
        };
        let method = message
            .as_ref()
            .and_then(|m| m.get("method"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        if let Some(m) = method
            .as_deref()
            .and_then(|m| HeaderValue::from_str(m).ok())
        {
            parts.headers.insert(upstream::MCP_METHOD.clone(), m);
        }
        let name = message.as_ref().and_then(subject).map(str::to_owned);
        if let Some(n) = name.as_deref().and_then(|n| HeaderValue::from_str(n).ok()) {
            parts.headers.insert(upstream::MCP_NAME.clone(), n);
        }
        let fans_out = method.as_deref().is_some_and(|m| {
            m == "initialize" || m == "server/discover" || ListKind::of(m).is_some()
        });
        let path_and_query = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let within = if fans_out {
            self.fan_out_timeout
        } else {
            self.call_timeout
        };
        let client = Client {
            caller: Caller {
                parts: &parts,
                host,
                path_and_query: &path_and_query,
                peer,
                forwarded,
                idle: self.idle_timeout,
                started: Instant::now(),
                deadline: tokio::time::Instant::now() + within,
                max_message: self.max_message,
            },
            session,
            protocol,
        };
        Ok(match (&parts.method, message) {
            (&Method::POST, Some(message)) => self.post(&client, message).await,
            (&Method::GET, _) => self.notifications(&client, last_event_id.as_deref()).await,
            (&Method::DELETE, _) => self.end(&client, token.as_deref()).await,
            _ => {
                let mut response = rpc_error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    &Value::Null,
                    INVALID_REQUEST,
                    "the MCP transport takes POST, GET and DELETE",
                );
                response
                    .headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("GET, POST, DELETE"));
                response
            }
        })
    }

    /// The session sealed in `token`, if this Switchyard may serve it: it
    /// opens with an accepted key, is younger than `session_max_age_ms`,
    /// was not ended, and was used within `session_idle_timeout_ms` as far
    /// as this Switchyard saw.
    fn open_session(&self, token: &str) -> Result<SessionState, String> {
        let Some(state) = self.sessions.keys.open(token) else {
            return Err("unknown session".into());
        };
        if *state.route != *self.key {
            return Err("a session of another route".into());
        }
        let age = now_ms().saturating_sub(state.issued_ms);
        if age > self.session_max_age.as_millis() as u64 {
            return Err("the session is older than session_max_age_ms".into());
        }
        self.sessions
            .seen
            .touch(token, &self.key, self.session_idle)?;
        Ok(state)
    }

    /// A POSTed message: a request, a notification or a response.
    async fn post(&self, client: &Client<'_>, message: Value) -> Response<ProxyBody> {
        let id = message.get("id").cloned();
        let method = message.get("method").and_then(Value::as_str);
        match (method, id) {
            (Some(method), Some(id)) => self.request(client, method, &id, &message).await,
            (Some(_), None) => self.broadcast(client, &message).await,
            (None, Some(id))
                if message.get("result").is_some() || message.get("error").is_some() =>
            {
                self.answer_server(client, &id, message).await
            }
            _ => rpc_error(
                StatusCode::BAD_REQUEST,
                &Value::Null,
                INVALID_REQUEST,
                "neither a request, a notification nor a response",
            ),
        }
    }

    /// A JSON-RPC request.
    async fn request(
        &self,
        client: &Client<'_>,
        method: &str,
        id: &Value,
        message: &Value,
    ) -> Response<ProxyBody> {
        match method {
            "initialize" | "server/discover" => self.initialize(client, method, id, message).await,
            "ping" => rpc_result(id, json!({})),
            "logging/setLevel" => {
                let targets = self.session_targets(client);
                let (_, failed, gone) = self.fan_out(client, &targets, |_| message.clone()).await;
                match gone {
                    Some(why) => session_gone(id, &why),
                    None => self.fanned_out(id, &failed, json!({})),
                }
            }
            m if ListKind::of(m).is_some() => {
                let kind = ListKind::of(m).expect("a list");
                self.list(client, kind, id, message).await
            }
            "tools/call" | "prompts/get" => {
                let kind = if method == "tools/call" {
                    ListKind::Tools
                } else {
                    ListKind::Prompts
                };
                let name = message
                    .pointer("/params/name")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                self.routed(client, kind, name, "/params/name", id, message)
                    .await
            }
            "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
                let uri = message
                    .pointer("/params/uri")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                self.routed(client, ListKind::Resources, uri, "/params/uri", id, message)
                    .await
            }
            "completion/complete" => {
                let reference = message.pointer("/params/ref");
                let kind = match reference
                    .and_then(|r| r.get("type"))
                    .and_then(Value::as_str)
                {
                    Some("ref/prompt") => (ListKind::Prompts, "/params/ref/name"),
                    _ => (ListKind::Resources, "/params/ref/uri"),
                };
                let name = message
                    .pointer(kind.1)
                    .and_then(Value::as_str)
                    .unwrap_or("");
                self.routed(client, kind.0, name, kind.1, id, message).await
            }
            _ if self.targets.len() == 1 => self.relay(client, 0, id, message, false).await,
            _ => rpc_error(
                StatusCode::OK,
                id,
                METHOD_NOT_FOUND,
                &format!("`{method}` is not federated by this gateway"),
            ),
        }
    }

    /// The targets a fan-out asks: those of the session (every one without).
    fn session_targets(&self, client: &Client<'_>) -> Vec<usize> {
        (0..self.targets.len())
            .filter(|&t| client.upstream(&self.names[t]).is_ok())
            .collect()
    }

    /// `initialize` or `server/discover`: every target asked, the results
    /// merged, and for `initialize` a new sealed session.
    async fn initialize(
        &self,
        client: &Client<'_>,
        method: &str,
        id: &Value,
        message: &Value,
    ) -> Response<ProxyBody> {
        let all: Vec<usize> = (0..self.targets.len()).collect();
        let body = Bytes::from(message.to_string());
        let asks = all.iter().map(|&t| {
            let body = body.clone();
            async move {
                let started = Instant::now();
                let call = Call {
                    protocol: client.protocol.as_deref(),
                    mcp_method: Some(method),
                    ..Call::new(Method::POST, body)
                };
                let answered = self.ask(client, t, Via::Any, &call, id).await;
                self.record(t, method, answered.as_ref().err(), started);
                (t, answered)
            }
        });
        let mut results = Vec::new();
        let mut failed = Vec::new();
        let mut upstreams = Vec::new();
        for (t, answered) in join_all(asks).await {
            match answered.and_then(|(response, sent)| Ok((result_of(response)?, sent))) {
                Ok((result, sent)) => {
                    let protocol = result
                        .get("protocolVersion")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string();
                    upstreams.push(UpstreamSession {
                        target: self.names[t].clone(),
                        pinned: sent.session.map(|session| Pinned {
                            instance: sent.instance,
                            session,
                        }),
                        protocol,
                    });
                    results.push((t, result));
                }
                Err(e) => failed.push((t, e.to_string())),
            }
        }
        if let Some(response) = self.refuse(id, &failed, results.is_empty()) {
            return response;
        }
        let merged = merge::merge_initialize(&results, &failed, &self.names);
        let mut response = rpc_result(id, merged.clone());
        if method == "initialize" {
            let state = SessionState {
                route: self.key.to_string(),
                issued_ms: now_ms(),
                protocol: merged
                    .get("protocolVersion")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                upstreams,
            };
            let token = self.sessions.keys.seal(&state);
            // Freshly issued: cannot be ended nor idle.
            let _ = self
                .sessions
                .seen
                .touch(&token, &self.key, self.session_idle);
            if let Ok(v) = HeaderValue::from_str(&token) {
                response
                    .headers_mut()
                    .insert(upstream::SESSION_ID.clone(), v);
            }
        }
        response
    }

    /// In `failure_mode = "closed"` (or when no target answered), the error
    /// that refuses a fanned-out request; otherwise each failing target is
    /// published as an event and `None` returned.
    fn refuse(
        &self,
        id: &Value,
        failed: &[(usize, String)],
        none_answered: bool,
    ) -> Option<Response<ProxyBody>> {
        if failed.is_empty() {
            return None;
        }
        let named: Vec<String> = failed
            .iter()
            .map(|(t, why)| format!("target `{}`: {why}", self.names[*t]))
            .collect();
        if self.failure_mode == FailureMode::Closed || none_answered {
            let data = json!({ "targets": failed.iter().map(|(t, _)| &self.names[*t]).collect::<Vec<_>>() });
            return Some(rpc_error_data(
                StatusCode::OK,
                id,
                INTERNAL_ERROR,
                &named.join("; "),
                Some(data),
            ));
        }
        for (t, why) in failed {
            self.reporting.events.publish(HealthEvent::new(
                self.targets[*t].pool.name(),
                None,
                EventKind::McpTargetFailed,
                Severity::Warning,
                format!(
                    "route {}: MCP target `{}` left out of an answer: {why}",
                    self.index, self.names[*t]
                ),
            ));
        }
        None
    }

    /// The answer to a request fanned out for its side effect only.
    fn fanned_out(
        &self,
        id: &Value,
        failed: &[(usize, String)],
        result: Value,
    ) -> Response<ProxyBody> {
        self.refuse(id, failed, false)
            .unwrap_or_else(|| rpc_result(id, result))
    }

    /// Asks `targets` the message `message_for(t)` at once; the results of
    /// those that answered one, the failures of the others, and whether a
    /// session turned out gone.
    async fn fan_out(
        &self,
        client: &Client<'_>,
        targets: &[usize],
        message_for: impl Fn(usize) -> Value,
    ) -> (Vec<(usize, Value)>, Vec<(usize, String)>, Option<String>) {
        let asks = targets.iter().map(|&t| {
            let message = message_for(t);
            async move {
                let started = Instant::now();
                let method = message.get("method").and_then(Value::as_str).unwrap_or("");
                let id = message.get("id").cloned().unwrap_or(Value::Null);
                let answered = self.ask_session(client, t, &message, &id).await;
                self.record(t, method, answered.as_ref().err(), started);
                (t, answered.and_then(result_of))
            }
        });
        let mut results = Vec::new();
        let mut failed = Vec::new();
        let mut gone = None;
        for (t, answered) in join_all(asks).await {
            match answered {
                Ok(result) => results.push((t, result)),
                Err(CallError::Gone(why)) => {
                    gone = Some(format!("target `{}`: {why}", self.names[t]));
                }
                Err(e) => failed.push((t, e.to_string())),
            }
        }
        (results, failed, gone)
    }

    /// Sends `message` (a request) to target `t` within the client's
    /// session; the JSON-RPC response.
    async fn ask_session(
        &self,
        client: &Client<'_>,
        t: usize,
        message: &Value,
        id: &Value,
    ) -> Result<Value, CallError> {
        let (call, via) = client
            .post(&self.names[t], message)
            .map_err(|()| CallError::Failed("not part of this session".into()))?;
        self.ask(client, t, via, &call, id).await.map(|(r, _)| r)
    }

    /// Sends `call` (a request `id`) to target `t` via `via`, trying another
    /// instance while nothing was sent (`Via::Any` only); the JSON-RPC
    /// response (read out of a stream if need be) and who gave it.
    async fn ask(
        &self,
        client: &Client<'_>,
        t: usize,
        via: Via<'_>,
        call: &Call<'_>,
        id: &Value,
    ) -> Result<(Value, Sent), CallError> {
        let target = &self.targets[t];
        let mut tried = Vec::new();
        loop {
            let sent = match client.caller.send(target, via, call, &mut tried).await {
                Err(e)
                    if e.nothing_sent()
                        && matches!(via, Via::Any)
                        && !matches!(e, CallError::NoInstance(_) | CallError::Shed(_)) =>
                {
                    continue;
                }
                other => other?,
            };
            let Sent {
                reply,
                instance,
                session,
            } = sent;
            let response = match reply {
                Reply::Message(message) => message,
                Reply::Accepted => {
                    return Err(CallError::Failed("202 Accepted for a request".into()));
                }
                Reply::Stream(mut stream) => stream.response_to(id, drop).await?,
            };
            // Who answered (the reply itself is the response, read).
            let who = Sent {
                reply: Reply::Accepted,
                instance,
                session,
            };
            return Ok((response, who));
        }
    }

    /// A request for one name's owner: the name put back as the target
    /// knows it (at `pointer`), then relayed (or fused).
    async fn routed(
        &self,
        client: &Client<'_>,
        kind: ListKind,
        name: &str,
        pointer: &str,
        id: &Value,
        message: &Value,
    ) -> Response<ProxyBody> {
        let Some(owner) = self.owner(client, kind, name).await else {
            let what = match kind {
                ListKind::Tools => "tool",
                ListKind::Prompts => "prompt",
                _ => "resource",
            };
            return rpc_error(
                StatusCode::OK,
                id,
                INVALID_PARAMS,
                &format!("unknown {what} `{name}`"),
            );
        };
        let mut message = message.clone();
        if let Some(slot) = message.pointer_mut(pointer) {
            *slot = Value::String(owner.original.clone());
        }
        let settings = (kind == ListKind::Tools)
            .then(|| self.tools.get(name))
            .flatten();
        let idempotent = kind == ListKind::Tools
            && settings
                .and_then(|s| s.idempotent)
                .unwrap_or(owner.idempotent);
        if let (true, Some((count, resolver))) =
            (idempotent, settings.and_then(|s| s.fuse.as_ref()))
        {
            return self
                .fused(client, owner.target, id, &message, *count, resolver)
                .await;
        }
        self.relay(client, owner.target, id, &message, idempotent)
            .await
    }

    /// Relays a request to target `t` and its answer (JSON or a stream)
    /// back; an `idempotent` one is retried (module docs).
    async fn relay(
        &self,
        client: &Client<'_>,
        t: usize,
        id: &Value,
        message: &Value,
        idempotent: bool,
    ) -> Response<ProxyBody> {
        let Ok((call, via)) = client.post(&self.names[t], message) else {
            return session_gone(
                id,
                &format!("target `{}` joined after this session began", self.names[t]),
            );
        };
        let pinned = matches!(via, Via::Pinned(_));
        let method = message.get("method").and_then(Value::as_str).unwrap_or("");
        let pool = &self.targets[t].pool;
        let max_attempts = pool.failover().retry().max_attempts();
        // Counted by the pool's retry budget, as a pool route's request is.
        let _request = pool.budget().request();
        let mut _retry = None;
        let mut tried = Vec::new();
        let mut attempt = 0;
        let started = Instant::now();
        let error = 'calls: loop {
            if pinned {
                tried.clear();
            }
            attempt += 1;
            let failed = 'attempt: {
                match client
                    .caller
                    .send(&self.targets[t], via, &call, &mut tried)
                    .await
                {
                    Ok(sent) => {
                        let (held, stream) = match sent.reply {
                            Reply::Message(answer) => {
                                self.record(t, method, None, started);
                                self.record_tool(t, message, None);
                                return json_response(StatusCode::OK, &answer);
                            }
                            Reply::Accepted => return empty(StatusCode::ACCEPTED),
                            // A retry is still possible: the stream is held
                            // until its answer (or a request to the client).
                            Reply::Stream(stream) if idempotent && attempt < max_attempts => {
                                match hold(stream, id).await {
                                    Ok(held) => held,
                                    Err(e) => break 'attempt e,
                                }
                            }
                            Reply::Stream(stream) => (Vec::new(), Some(stream)),
                        };
                        self.record(t, method, None, started);
                        self.record_tool(t, message, None);
                        return self.stream_back(t, held, stream, Some(id.clone()));
                    }
                    Err(CallError::Gone(why)) => {
                        return session_gone(id, &format!("target `{}`: {why}", self.names[t]));
                    }
                    Err(e @ (CallError::NoInstance(_) | CallError::Shed(_))) => break 'calls e,
                    Err(e) => e,
                }
            };
            let facts = FailedCall {
                error: &failed,
                attempt,
                idempotent,
                pinned,
                tried: &tried,
            };
            match self.after_failure(&client.caller, t, facts) {
                AfterFailure::Retry {
                    wait,
                    same_endpoint,
                    budget,
                } => {
                    _retry = budget;
                    if same_endpoint {
                        tried.pop();
                    }
                    tracing::debug!(target = %self.names[t], error = %failed, wait_ms = wait.as_millis() as u64, "the call failed; retrying");
                    if !wait.is_zero() {
                        tokio::time::sleep(wait).await;
                    }
                }
                AfterFailure::Fallback(other) => {
                    tracing::info!(target = %self.names[t], fallback = %other, "the failover policy named a fallback pool, which MCP routes do not use; the call fails");
                    break failed;
                }
                AfterFailure::Respond { .. } | AfterFailure::Stop => break failed,
            }
        };
        self.record(t, method, Some(&error), started);
        self.record_tool(t, message, Some(&error));
        let data = json!({ "target": self.names[t], "attempts": attempt });
        let text = format!("target `{}`: {error}", self.names[t]);
        rpc_error_data(StatusCode::OK, id, INTERNAL_ERROR, &text, Some(data))
    }

    /// The failover step after the failed call `failed` to target `t`:
    /// the target pool's [`Pool::after_failure`], as a pool route's
    /// request takes it. The call is replayable only when idempotent (a
    /// connect failure, which sent nothing, is retried either way), within
    /// the pool's attempt cap, retry budget, backoff and the call's
    /// deadline; a failover plugin sees the client's request head,
    /// `Mcp-Method` and `Mcp-Name` among its headers. A plugin's
    /// `fallback` pool or answer of its own is not used on MCP routes: the
    /// call fails.
    fn after_failure(
        &self,
        caller: &Caller<'_>,
        t: usize,
        failed: FailedCall<'_>,
    ) -> AfterFailure<'_> {
        let pool = &self.targets[t].pool;
        let Some(&endpoint) = failed.tried.last() else {
            return AfterFailure::Stop;
        };
        let untried = if failed.pinned {
            0
        } else {
            let ranking = crate::proxy::rank(
                pool,
                caller.parts,
                caller.host,
                caller.path_and_query,
                caller.peer,
                &crate::balance::Affinity::default(),
            );
            pool.untried(&ranking, failed.tried, None) as u32
        };
        let facts = AttemptFacts {
            request: RequestContext {
                method: &caller.parts.method,
                authority: caller.host,
                path: caller.path_and_query.as_str(),
                headers: &caller.parts.headers,
                client_addr: caller.peer,
            },
            endpoint,
            failure: failed.error.outcome(),
            attempt: failed.attempt as u32,
            elapsed_ms: caller.started.elapsed().as_millis() as u64,
            tried: failed.tried,
            replayable: failed.idempotent,
            idempotent: failed.idempotent,
            retries_left: 0,
            untried,
        };
        pool.after_failure(
            FailedAttempt {
                facts,
                last: failed.attempt >= pool.failover().retry().max_attempts(),
                deadline: caller.deadline.into_std(),
                holding: false,
            },
            || true,
        )
    }

    /// A notification: passed to every target of the session.
    async fn broadcast(&self, client: &Client<'_>, message: &Value) -> Response<ProxyBody> {
        let sends = self
            .session_targets(client)
            .into_iter()
            .map(|t| async move {
                let (call, via) = client
                    .post(&self.names[t], message)
                    .map_err(|()| CallError::Failed("not part of this session".into()))?;
                client
                    .caller
                    .send(&self.targets[t], via, &call, &mut Vec::new())
                    .await
            });
        let results = join_all(sends).await;
        if let Some(Err(CallError::Gone(why))) = results
            .iter()
            .find(|r| matches!(r, Err(CallError::Gone(_))))
        {
            return session_gone(&Value::Null, why);
        }
        empty(StatusCode::ACCEPTED)
    }

    /// The client's response to a server's request: to the target whose
    /// request it answers, with the target's id.
    async fn answer_server(
        &self,
        client: &Client<'_>,
        id: &Value,
        mut message: Value,
    ) -> Response<ProxyBody> {
        let Some((t, original)) = inbound(id).filter(|(t, _)| *t < self.targets.len()) else {
            return rpc_error(
                StatusCode::BAD_REQUEST,
                &Value::Null,
                INVALID_REQUEST,
                "a response to no request of the gateway's",
            );
        };
        message["id"] = original;
        let Ok((call, via)) = client.post(&self.names[t], &message) else {
            return session_gone(
                &Value::Null,
                &format!("target `{}` is not part of this session", self.names[t]),
            );
        };
        match client
            .caller
            .send(&self.targets[t], via, &call, &mut Vec::new())
            .await
        {
            Ok(_) => empty(StatusCode::ACCEPTED),
            Err(CallError::Gone(why)) => session_gone(&Value::Null, &why),
            Err(e) => rpc_error(
                StatusCode::BAD_GATEWAY,
                &Value::Null,
                INTERNAL_ERROR,
                &format!("target `{}`: {e}", self.names[t]),
            ),
        }
    }

    /// DELETE: every upstream session ended, and the gateway's.
    async fn end(&self, client: &Client<'_>, token: Option<&str>) -> Response<ProxyBody> {
        let (Some(session), Some(token)) = (&client.session, token) else {
            return rpc_error(
                StatusCode::BAD_REQUEST,
                &Value::Null,
                INVALID_REQUEST,
                "DELETE needs an Mcp-Session-Id",
            );
        };
        let ends = session.upstreams.iter().filter_map(|u| {
            let t = self.names.iter().position(|n| *n == u.target)?;
            let pinned = u.pinned.as_ref()?;
            Some(async move {
                let call = Call {
                    session: Some(&pinned.session),
                    protocol: Some(&u.protocol),
                    ..Call::new(Method::DELETE, Bytes::new())
                };
                let _ = client
                    .caller
                    .send(
                        &self.targets[t],
                        Via::Pinned(pinned),
                        &call,
                        &mut Vec::new(),
                    )
                    .await;
            })
        });
        join_all(ends).await;
        self.sessions.seen.end(token);
        empty(StatusCode::OK)
    }

    /// Counts a call to target `t` in the metrics.
    fn record(&self, t: usize, method: &str, error: Option<&CallError>, started: Instant) {
        self.reporting.metrics.mcp_call(
            self.index,
            &self.names[t],
            method,
            error.map_or("ok", CallError::kind),
            started.elapsed().as_secs_f64(),
        );
    }

    /// Counts a `tools/call` by tool.
    fn record_tool(&self, t: usize, message: &Value, error: Option<&CallError>) {
        if message.get("method").and_then(Value::as_str) == Some("tools/call") {
            let tool = subject(message).unwrap_or("");
            self.reporting.metrics.mcp_tool_call(
                self.index,
                &self.names[t],
                tool,
                error.map_or("ok", CallError::kind),
            );
        }
    }
}

/// A server's message bound for the client: a request's id becomes `T:ID`
/// (so that the client's response finds target `t`).
fn outbound(t: usize, mut message: Value) -> Value {
    if message.get("method").is_some()
        && let Some(id) = message.get_mut("id")
    {
        *id = Value::String(format!("{t}:{id}"));
    }
    message
}

/// The target and original id of a gateway id `T:ID`.
fn inbound(id: &Value) -> Option<(usize, Value)> {
    let (t, original) = id.as_str()?.split_once(':')?;
    Some((t.parse().ok()?, serde_json::from_str(original).ok()?))
}

/// The `result` of a JSON-RPC response; its `error` as a failure.
fn result_of(response: Value) -> Result<Value, CallError> {
    if let Some(result) = response.get("result") {
        return Ok(result.clone());
    }
    let error = response.get("error").cloned().unwrap_or(Value::Null);
    let code = error.get("code").and_then(Value::as_i64).unwrap_or(0);
    let message = error.get("message").and_then(Value::as_str).unwrap_or("");
    Err(CallError::Failed(format!(
        "JSON-RPC error {code}: {message}"
    )))
}

/// A POST body as one JSON-RPC message; else the JSON-RPC error code and
/// why (answered 400).
fn parse(body: &[u8]) -> Result<Value, (i64, String)> {
    let message: Value =
        serde_json::from_slice(body).map_err(|e| (PARSE_ERROR, format!("not JSON: {e}")))?;
    if message.is_array() {
        return Err((
            INVALID_REQUEST,
            "JSON-RPC batches are not supported (MCP 2025-06-18 removed them)".into(),
        ));
    }
    if message.get("jsonrpc") != Some(&json!("2.0")) {
        return Err((INVALID_REQUEST, "not JSON-RPC 2.0".into()));
    }
    Ok(message)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn json_response(status: StatusCode, value: &Value) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::Local(Full::new(Bytes::from(value.to_string()))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn rpc_result(id: &Value, result: Value) -> Response<ProxyBody> {
    json_response(
        StatusCode::OK,
        &json!({ "jsonrpc": "2.0", "id": id, "result": result }),
    )
}

/// A JSON-RPC error answer, with `data` when given.
fn rpc_error_data(
    status: StatusCode,
    id: &Value,
    code: i64,
    message: &str,
    data: Option<Value>,
) -> Response<ProxyBody> {
    let mut error = json!({ "code": code, "message": message });
    if let Some(data) = data {
        error["data"] = data;
    }
    json_response(
        status,
        &json!({ "jsonrpc": "2.0", "id": id, "error": error }),
    )
}

fn rpc_error(status: StatusCode, id: &Value, code: i64, message: &str) -> Response<ProxyBody> {
    rpc_error_data(status, id, code, message, None)
}

/// 404 with a JSON-RPC error: the client must initialize a new session.
fn session_gone(id: &Value, why: &str) -> Response<ProxyBody> {
    rpc_error(
        StatusCode::NOT_FOUND,
        id,
        SESSION_GONE,
        &format!("session expired ({why}); initialize a new session"),
    )
}

fn empty(status: StatusCode) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::Local(Full::new(Bytes::new())));
    *response.status_mut() = status;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_request_id_goes_out_and_comes_back() {
        let out = outbound(
            2,
            json!({ "jsonrpc": "2.0", "id": "x:1", "method": "sampling/createMessage" }),
        );
        assert_eq!(out["id"], json!("2:\"x:1\""));
        assert_eq!(inbound(&out["id"]), Some((2, json!("x:1"))));
        let numeric = outbound(
            0,
            json!({ "jsonrpc": "2.0", "id": 7, "method": "roots/list" }),
        );
        assert_eq!(inbound(&numeric["id"]), Some((0, json!(7))));
        // Responses and notifications keep their ids.
        let response = outbound(1, json!({ "jsonrpc": "2.0", "id": 3, "result": {} }));
        assert_eq!(response["id"], json!(3));
        assert_eq!(inbound(&json!(5)), None);
    }
}
