//! An MCP route: its targets, tools and catalog, the client request it
//! serves (a session opened, a message dispatched by method), and what it
//! records.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::join_all;
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode, header};
use serde_json::{Value, json};

use super::guard::{Guards, Refused, guard_call};
use super::merge::{Entry, ListKind};
use super::rpc::{
    HEADER_MISMATCH, INTERNAL_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, empty, now_ms, parse,
    result_of, rpc_error, rpc_error_data, rpc_result, session_gone,
};
use super::session::{Pinned, SessionState, Sessions, UpstreamSession};
use super::upstream::{Call, CallError, Caller, Target, Via, subject};
use crate::config::{FailureMode, McpConfig, PrefixMode, RouteMatch};
use crate::events::{EventKind, HealthEvent, Severity};
use crate::fusion::Builtin;
use crate::gateway::auth::Principal;
use crate::proxy::{
    Inbound, Pool, ProxyBody, ProxyError, Received, Reporting, StartError, prepare_request,
    read_whole,
};

/// Request headers passed on to targets (the rest are the client's
/// business with the gateway: its credentials above all).
pub(super) const PASSED_ON: [&str; 5] = [
    "x-forwarded-for",
    "x-forwarded-proto",
    "traceparent",
    "tracestate",
    "x-request-id",
];

/// The operator's settings of one tool.
pub(super) struct ToolSettings {
    pub(super) idempotent: Option<bool>,
    pub(super) fuse: Option<(usize, Builtin)>,
}

/// What the route learned from the targets' lists: who owns each name.
#[derive(Default)]
pub(super) struct Catalog {
    /// By list and exposed name.
    pub(super) entries: HashMap<(ListKind, String), Entry>,
    /// By list and name at the target: the targets seen listing it.
    pub(super) listed_by: HashMap<(ListKind, String), Vec<usize>>,
    /// By list, target and name at the target: the exposed name.
    pub(super) exposed: HashMap<(ListKind, usize, String), String>,
    /// The lists read in full (every page of every target) at least once.
    pub(super) learned: Vec<ListKind>,
}

/// An MCP route at run time.
pub struct McpRoute {
    pub(super) index: usize,
    pub(super) targets: Vec<Target>,
    pub(super) names: Vec<String>,
    pub(super) prefix: PrefixMode,
    pub(super) separator: String,
    pub(super) failure_mode: FailureMode,
    pub(super) call_timeout: Duration,
    pub(super) idle_timeout: Duration,
    pub(super) fan_out_timeout: Duration,
    pub(super) session_idle: Duration,
    pub(super) session_max_age: Duration,
    pub(super) max_message: usize,
    pub(super) tools: BTreeMap<String, ToolSettings>,
    /// Shared with the same route built after a change (see `build`).
    pub(super) catalog: Arc<RwLock<Catalog>>,
    /// The route's match, `HOST PATH_PREFIX`: the sessions it issues say so.
    pub(super) key: Arc<str>,
    pub(super) reporting: Arc<Reporting>,
    pub(super) sessions: Arc<Sessions>,
}

/// One client request being served.
pub(super) struct Client<'a> {
    pub(super) caller: Caller<'a>,
    /// The session, when the request has one.
    pub(super) session: Option<SessionState>,
    /// The client's `MCP-Protocol-Version`.
    pub(super) protocol: Option<String>,
    /// The route's filter plugins that see calls or results.
    pub(super) guards: Guards,
}

impl<'a> Client<'a> {
    /// A POST of `message` to target `name` in the session: to the instance
    /// that holds the target's session, with its session id and revision
    /// (else to any instance, with the client's revision). `Err` when the
    /// session exists but the target is not part of it.
    pub(super) fn post<'m>(
        &'m self,
        name: &str,
        message: &'m Value,
    ) -> Result<(Call<'m>, Via<'m>), ()> {
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
    pub(super) fn upstream(&self, name: &str) -> Result<Option<&UpstreamSession>, ()> {
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
    pub(crate) async fn serve(
        &self,
        request: Inbound<'_>,
        body: Received,
        guards: Guards,
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
            text(&super::upstream::SESSION_ID),
            text(&super::upstream::PROTOCOL_VERSION),
            text(&super::upstream::LAST_EVENT_ID),
        );
        let session = match &token {
            Some(token) => {
                match self.open_session(token, principal_of(&parts.extensions).as_deref()) {
                    Ok(state) => Some(state),
                    Err(why) => return Ok(session_gone(&Value::Null, &why)),
                }
            }
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
        let name = message.as_ref().and_then(subject).map(str::to_owned);
        if let Some(why) = header_mismatch(&parts.headers, method.as_deref(), name.as_deref()) {
            let id = message
                .as_ref()
                .and_then(|m| m.get("id"))
                .unwrap_or(&Value::Null);
            return Ok(rpc_error(
                StatusCode::BAD_REQUEST,
                id,
                HEADER_MISMATCH,
                &why,
            ));
        }
        if let Some(m) = method
            .as_deref()
            .and_then(|m| HeaderValue::from_str(m).ok())
        {
            parts.headers.insert(super::upstream::MCP_METHOD.clone(), m);
        }
        if let Some(n) = name.as_deref().and_then(|n| HeaderValue::from_str(n).ok()) {
            parts.headers.insert(super::upstream::MCP_NAME.clone(), n);
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
            guards,
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

    /// The session sealed in `token`, if this Switchyard may serve it to
    /// `principal` (`METHOD:ID`; none without authentication): it opens
    /// with an accepted key, was opened by the same principal, is younger
    /// than `session_max_age_ms`, was not ended, and was used within
    /// `session_idle_timeout_ms` as far as this Switchyard saw.
    pub(super) fn open_session(
        &self,
        token: &str,
        principal: Option<&str>,
    ) -> Result<SessionState, String> {
        let Some(state) = self.sessions.keys.open(token) else {
            return Err("unknown session".into());
        };
        if *state.route != *self.key {
            return Err("a session of another route".into());
        }
        if state.principal.as_deref() != principal {
            return Err("a session of another principal".into());
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
    pub(super) async fn post(&self, client: &Client<'_>, message: Value) -> Response<ProxyBody> {
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
    pub(super) async fn request(
        &self,
        client: &Client<'_>,
        method: &str,
        id: &Value,
        message: &Value,
    ) -> Response<ProxyBody> {
        let rewritten;
        let message = match method {
            "ping" => message,
            _ if client.guards.see_calls() => match guard_call(client, method, message) {
                Ok(None) => message,
                Ok(Some(m)) => {
                    rewritten = m;
                    &rewritten
                }
                Err(Refused { refusal, challenge }) => {
                    // A scope challenge is the HTTP answer's (RFC 6750
                    // §3.1: 403 `insufficient_scope`), so that a client
                    // can ask for the scopes and try again.
                    let status = match challenge {
                        Some(_) => StatusCode::FORBIDDEN,
                        None => StatusCode::OK,
                    };
                    let mut response =
                        rpc_error(status, id, i64::from(refusal.code), &refusal.message);
                    if let Some(value) = challenge.and_then(|c| HeaderValue::try_from(c).ok()) {
                        response
                            .headers_mut()
                            .insert(header::WWW_AUTHENTICATE, value);
                    }
                    return response;
                }
            },
            _ => message,
        };
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
            _ if self.targets.len() == 1 => self.relay(client, 0, id, message, false, None).await,
            _ => rpc_error(
                StatusCode::OK,
                id,
                METHOD_NOT_FOUND,
                &format!("`{method}` is not federated by this gateway"),
            ),
        }
    }

    /// The targets a fan-out asks: those of the session (every one without).
    pub(super) fn session_targets(&self, client: &Client<'_>) -> Vec<usize> {
        (0..self.targets.len())
            .filter(|&t| client.upstream(&self.names[t]).is_ok())
            .collect()
    }

    /// `initialize` or `server/discover`: every target asked, the results
    /// merged, and for `initialize` a new sealed session.
    pub(super) async fn initialize(
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
        let merged = super::merge::merge_initialize(&results, &failed, &self.names);
        let mut response = rpc_result(id, merged.clone());
        if method == "initialize" {
            let state = SessionState {
                principal: principal_of(&client.caller.parts.extensions),
                route: self.key.to_string(),
                issued_ms: now_ms(),
                protocol: merged
                    .get("protocolVersion")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                upstreams,
                client: message.pointer("/params/clientInfo").and_then(|info| {
                    let text = |key| info.get(key).and_then(Value::as_str);
                    Some((text("name")?.to_owned(), text("version")?.to_owned()))
                }),
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
                    .insert(super::upstream::SESSION_ID.clone(), v);
            }
        }
        response
    }

    /// In `failure_mode = "closed"` (or when no target answered), the error
    /// that refuses a fanned-out request; otherwise each failing target is
    /// published as an event and `None` returned.
    pub(super) fn refuse(
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

    /// DELETE: every upstream session ended, and the gateway's.
    pub(super) async fn end(
        &self,
        client: &Client<'_>,
        token: Option<&str>,
    ) -> Response<ProxyBody> {
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
    pub(super) fn record(
        &self,
        t: usize,
        method: &str,
        error: Option<&CallError>,
        started: Instant,
    ) {
        self.reporting.metrics.mcp_call(
            self.index,
            &self.names[t],
            method,
            error.map_or("ok", CallError::kind),
            started.elapsed().as_secs_f64(),
        );
    }

    /// Counts a `tools/call` by tool.
    pub(super) fn record_tool(&self, t: usize, message: &Value, error: Option<&CallError>) {
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

/// Why the `Mcp-Method` or `Mcp-Name` header a client sent (2026-07-28)
/// does not say what its message's `method` and name do, if it does not:
/// policy that reads the headers (a filter, a plugin, a proxy in front)
/// must judge what the servers will be asked.
fn header_mismatch(
    headers: &HeaderMap,
    method: Option<&str>,
    name: Option<&str>,
) -> Option<String> {
    [
        (&super::upstream::MCP_METHOD, "Mcp-Method", method, "method"),
        (&super::upstream::MCP_NAME, "Mcp-Name", name, "name"),
    ]
    .into_iter()
    .find_map(|(header, label, body, what)| {
        let sent = headers.get(header)?;
        (Some(sent.as_bytes()) != body.map(str::as_bytes)).then(|| {
            format!(
                "`{label}: {}` is not the message's {what} ({})",
                String::from_utf8_lossy(sent.as_bytes()),
                body.unwrap_or("none")
            )
        })
    })
}

/// The principal a request acts as, as a session records it: `METHOD:ID`
/// (an API key's `ann` is not a JWT's `ann`).
fn principal_of(extensions: &http::Extensions) -> Option<String> {
    extensions
        .get::<Arc<Principal>>()
        .map(|p| format!("{}:{}", p.method, p.id))
}
