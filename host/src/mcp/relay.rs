//! Calls to one target: a request relayed with the failover step of its
//! pool, asked of every target at once, a notification broadcast, and
//! the client's answer to a server's request.

use std::sync::Arc;
use std::time::Instant;

use futures_util::future::join_all;
use http::{Response, StatusCode};
use serde_json::{Value, json};

use super::guard::ResultGuard;
use super::merge::ListKind;
use super::route::{Client, McpRoute};
use super::rpc::{
    INTERNAL_ERROR, INVALID_PARAMS, INVALID_REQUEST, empty, inbound, json_response, result_of,
    rpc_error, rpc_error_data, rpc_result, session_gone,
};
use super::stream::hold;
use super::upstream::{Call, CallError, Caller, Reply, Sent, Via};
use crate::balance::EndpointId;
use crate::failover::AttemptFacts;
use crate::policy::RequestContext;
use crate::proxy::{AfterFailure, FailedAttempt, ProxyBody};

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

impl McpRoute {
    /// The answer to a request fanned out for its side effect only.
    pub(super) fn fanned_out(
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
    pub(super) async fn fan_out(
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
    pub(super) async fn ask_session(
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
    pub(super) async fn ask(
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
    pub(super) async fn routed(
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
        // Judged as the client asked it (its name as listed to it).
        let guard = ResultGuard::of(client, message);
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
                .fused(client, owner.target, id, &message, *count, resolver, guard)
                .await;
        }
        self.relay(client, owner.target, id, &message, idempotent, guard)
            .await
    }

    /// Relays a request to target `t` and its answer (JSON or a stream)
    /// back, its result judged by `guard`; an `idempotent` one is retried
    /// (module docs).
    pub(super) async fn relay(
        &self,
        client: &Client<'_>,
        t: usize,
        id: &Value,
        message: &Value,
        idempotent: bool,
        guard: Option<Arc<ResultGuard>>,
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
                            Reply::Message(mut answer) => {
                                self.record(t, method, None, started);
                                self.record_tool(t, message, None);
                                if let Some(guard) = &guard {
                                    guard.apply(&mut answer);
                                }
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
                        return self.stream_back(t, held, stream, Some(id.clone()), guard);
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
    pub(super) async fn broadcast(
        &self,
        client: &Client<'_>,
        message: &Value,
    ) -> Response<ProxyBody> {
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
    pub(super) async fn answer_server(
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
}
