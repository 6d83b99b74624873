//! Forwarding one request: route, rank, attempt, stream the answer back.
//!
//! The route picks a pool — its fallback pool instead while the primary has no
//! fit instance (priority failover). The pool's bulkhead admits the request
//! or sheds it (503 + `Retry-After`). The request is then attempted on the
//! first acceptable instance of the ranking; a failed attempt is retried on
//! the next acceptable instance when the pool's [`RetryPolicy`] says the
//! failure is retryable, the request can be sent again — its body is empty
//! or was buffered (up to `replay_limit_bytes`) — and the retry budget has
//! room. The first retry goes at once; later ones after a jittered backoff.
//! When every attempt failed, a route's static fallback answers, or the
//! client gets a JSON error (502, 504). A connect failure also keeps the
//! instance out of rotation for the pool's `fail_timeout_ms`.
//!
//! [`RetryPolicy`]: crate::failover::RetryPolicy

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use http::uri::{PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, Uri, Version, header};
use http_body::Body as _;
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::Incoming;
use smallvec::SmallVec;

use super::body::ProxyBody;
use super::pool::{Attempt, Pool, UpstreamBody};
use super::router::{Fallback, PoolRoute, Target};
use super::{ProxyError, RequestRecord, Router, headers};
use crate::balance::{EndpointId, RequestContext, Sticky};
use crate::failover::{Failure, StaleCache};
use crate::plugin::{AttemptFacts, Decision};
use tokio::sync::OwnedSemaphorePermit;

/// Serves one client request; errors become JSON responses.
pub async fn handle(
    router: &Router,
    request: Request<Incoming>,
    peer: SocketAddr,
) -> Response<ProxyBody> {
    match forward(router, request, peer).await {
        Ok(response) => response,
        Err(error) => {
            tracing::debug!(%peer, %error, "request failed");
            error.into_response().map(ProxyBody::Local)
        }
    }
}

async fn forward(
    router: &Router,
    request: Request<Incoming>,
    peer: SocketAddr,
) -> Result<Response<ProxyBody>, ProxyError> {
    let (mut parts, body) = request.into_parts();
    let authority: Option<HeaderValue> = parts.headers.get(header::HOST).cloned().or_else(|| {
        parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    let host = authority
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .map_or("", strip_port);
    let Some(route) = router.route(host, parts.uri.path()) else {
        return Err(ProxyError::NoRoute {
            host: host.to_string(),
            path: parts.uri.path().to_string(),
        });
    };
    let started = Instant::now();
    let recent = &router.reporting().recent;
    // Only with a request log: copies of the method and the path (cheap
    // clones of shared bytes).
    let logged = recent
        .enabled()
        .then(|| (parts.method.clone(), parts.uri.path_and_query().cloned()));
    let result = async {
        let route = match &route.target {
            Target::Pool(route) => route,
            Target::FanOut(fan_out) => {
                return fan_out
                    .serve(parts, body, peer, host, authority.as_ref())
                    .await;
            }
        };
        let mut pool: &Pool = match &route.fallback {
            Some(Fallback::Pool(secondary)) if !route.pool.has_fit() => secondary,
            _ => &route.pool,
        };
        let _request = pool.budget.request();
        let mut slot = match &pool.bulkhead {
            Some(bulkhead) => Some(bulkhead.enter().await.map_err(|shed| ProxyError::Shed {
                pool: pool.name.clone(),
                why: shed,
                retry_after_s: bulkhead.retry_after_secs(),
            })?),
            None => None,
        };
        let path_and_query = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let affinity = pool
            .sticky
            .as_ref()
            .map(|sticky| sticky.lookup(&parts.headers))
            .unwrap_or_default();
        let mut ranking = rank(pool, &parts, host, &path_and_query, peer, &affinity);
        headers::prepare_request(&mut parts.headers, peer.ip(), authority.as_ref());

        let started_at = Instant::now();
        let max_attempts = pool.retry.max_attempts();
        let mut body = RequestBody::prepare(body, &parts.headers, &pool.retry, max_attempts).await?;
        let mut tried: SmallVec<[EndpointId; 4]> = SmallVec::new();
        let mut failure: Option<ProxyError> = None;
        let mut _retry_slot = None;
        let mut delay = None;
        for attempt in 1..=max_attempts {
            if attempt > 1 {
                let wait = delay
                    .take()
                    .unwrap_or_else(|| pool.retry.backoff(attempt as u32 - 1));
                tokio::time::sleep(wait).await;
            }
            let Some((id, admission)) = pool.next(&ranking, &tried, affinity.bound) else {
                break;
            };
            tried.push(id);
            let Some(endpoint) = pool.members.get(id) else {
                break;
            };
            let last = attempt == max_attempts || !body.replayable();
            let mut upstream = Request::new(body.for_attempt());
            *upstream.method_mut() = parts.method.clone();
            *upstream.uri_mut() = upstream_uri(endpoint.authority.clone(), path_and_query.clone());
            *upstream.version_mut() = Version::HTTP_11;
            *upstream.headers_mut() = if last {
                std::mem::take(&mut parts.headers)
            } else {
                parts.headers.clone()
            };

            let in_flight = endpoint.start_request();
            let started = Instant::now();
            let timeout = pool.retry.per_try_timeout(pool.request_timeout);
            let outcome = tokio::time::timeout(timeout, pool.client.request(upstream)).await;
            let latency_us = started.elapsed().as_micros() as u64;
            // A failed status is held while the decision is made: if no retry
            // happens, it is still the best answer the client can get.
            let (failed, held) = match outcome {
                Ok(Ok(response)) => {
                    let status = response.status().as_u16();
                    let success = status < 500;
                    pool.record_attempt(
                        endpoint,
                        admission,
                        Attempt::Answered {
                            status,
                            headers: response.headers(),
                        },
                        latency_us,
                    );
                    // A failover plugin judges every 4xx and 5xx; the built-in
                    // policy only 5xx and the listed statuses.
                    let is_failure = !success
                        || pool.retry.status_retryable(status)
                        || (pool.failover_plugin.is_some() && status >= 400);
                    if !is_failure || last {
                        return Ok(deliver(
                            route,
                            pool,
                            &affinity,
                            id,
                            &parts.method,
                            host,
                            &path_and_query,
                            response,
                            in_flight,
                            slot.take(),
                        ));
                    }
                    failure = Some(ProxyError::NoUpstream {
                        pool: pool.name.clone(),
                        reason: format!("{}: status {status}", endpoint.url),
                    });
                    (Failure::Status(status), Some((response, in_flight)))
                }
                Ok(Err(error)) => {
                    drop(in_flight);
                    let connect = error.is_connect();
                    let booked = if connect {
                        Attempt::ConnectFailed
                    } else {
                        Attempt::Failed
                    };
                    pool.record_attempt(endpoint, admission, booked, latency_us);
                    let reason = format!("{}: {}", endpoint.url, error_chain(&error));
                    tracing::warn!(pool = %pool.name, attempt, %reason, "upstream attempt failed");
                    failure = Some(ProxyError::NoUpstream {
                        pool: pool.name.clone(),
                        reason,
                    });
                    (
                        if connect {
                            Failure::ConnectFailure
                        } else {
                            Failure::Reset
                        },
                        None,
                    )
                }
                Err(_elapsed) => {
                    drop(in_flight);
                    pool.record_attempt(endpoint, admission, Attempt::Failed, latency_us);
                    tracing::warn!(pool = %pool.name, attempt, instance = %endpoint.url, "upstream timed out");
                    failure = Some(ProxyError::Timeout {
                        pool: pool.name.clone(),
                        instance: endpoint.url.clone(),
                        timeout_ms: timeout.as_millis() as u64,
                    });
                    (Failure::Timeout, None)
                }
            };
            if last {
                if !body.replayable() && attempt < max_attempts {
                    tracing::info!(pool = %pool.name, "not retried: the request body is over replay_limit_bytes or of unknown length");
                }
                break;
            }
            let facts = Facts {
                parts: &parts,
                host,
                path: path_and_query.as_str(),
                peer,
                endpoint: id,
                failure: failed,
                attempt,
                started_at,
                tried: &tried,
                replayable: body.replayable(),
            };
            let go_on = match decide(router, pool, &facts) {
                Next::Retry {
                    wait,
                    same_endpoint,
                } => {
                    // A held answer is only given up for a retry that can happen.
                    let possible =
                        held.is_none() || same_endpoint || pool.has_candidate(&ranking, &tried, affinity.bound);
                    match pool.budget.try_retry().filter(|_| possible) {
                        Some(retry) => {
                            _retry_slot = Some(retry);
                            pool.retries_total.inc();
                            delay = wait;
                            if same_endpoint {
                                tried.pop();
                            }
                            true
                        }
                        None => {
                            if held.is_none() {
                                tracing::warn!(pool = %pool.name, "retry budget exhausted; not retrying");
                            }
                            false
                        }
                    }
                }
                Next::Respond(r) => return Ok(r.map(ProxyBody::Local)),
                Next::Fallback(other) => {
                    pool = other;
                    ranking = rank(pool, &parts, host, &path_and_query, peer, &affinity);
                    tried.clear();
                    true
                }
                Next::Stop => false,
            };
            if !go_on {
                // No retry: a held failed answer is still the best the client can get.
                if let Some((response, in_flight)) = held {
                    return Ok(deliver(
                        route,
                        pool,
                        &affinity,
                        id,
                        &parts.method,
                        host,
                        &path_and_query,
                        response,
                        in_flight,
                        slot.take(),
                    ));
                }
                break;
            }
        }
        if let Some(stale) = &route.stale
            && parts.method == http::Method::GET
            && let Some(response) = stale.serve(&StaleCache::key(host, path_and_query.as_str()))
        {
            tracing::info!(pool = %pool.name, path = %path_and_query, "every attempt failed; serving the last good answer (stale-if-error)");
            return Ok(response.map(ProxyBody::Local));
        }
        if let Some(Fallback::Static(response)) = &route.fallback {
            return Ok(response.to_response().map(ProxyBody::Local));
        }
        Err(failure.unwrap_or_else(|| ProxyError::NoUpstream {
            pool: pool.name.clone(),
            reason: "no instance available".into(),
        }))
    }
    .await;
    let status = match &result {
        Ok(response) => response.status(),
        Err(error) => error.status(),
    };
    let elapsed = started.elapsed();
    route.metrics.record(status.as_u16(), elapsed.as_secs_f64());
    if let Some((method, path)) = logged {
        recent.record(RequestRecord {
            at_ms: 0,
            method: method.to_string(),
            host: host.to_string(),
            path: path.map_or_else(|| "/".to_string(), |p| p.to_string()),
            route: route.index,
            status: status.as_u16(),
            duration_us: elapsed.as_micros() as u64,
            client: peer.ip(),
        });
    }
    result
}

/// Sends an upstream answer on: binds the session, strips hop-by-hop
/// headers, and copies a GET answer for stale-if-error.
#[allow(
    clippy::too_many_arguments,
    reason = "the pieces of one request, borrowed"
)]
fn deliver(
    route: &PoolRoute,
    pool: &Pool,
    affinity: &crate::balance::Affinity,
    id: EndpointId,
    method: &http::Method,
    host: &str,
    path_and_query: &PathAndQuery,
    mut response: Response<Incoming>,
    in_flight: crate::balance::InFlight,
    slot: Option<OwnedSemaphorePermit>,
) -> Response<ProxyBody> {
    if let Some(sticky) = &pool.sticky {
        let status = response.status();
        sticky.bind(affinity, id, status, response.headers_mut());
    }
    headers::strip_hop_by_hop(response.headers_mut());
    let recorder = match &route.stale {
        Some(stale) if method == http::Method::GET => stale
            .record(
                StaleCache::key(host, path_and_query.as_str()),
                response.status(),
                response.headers(),
                response.body().size_hint().exact(),
            )
            .map(Box::new),
        _ => None,
    };
    response.map(|body| ProxyBody::Upstream {
        body,
        _in_flight: in_flight,
        recorder,
        _slot: slot,
    })
}

/// Ranks `pool` for the request, the sticky instance first.
pub(super) fn rank(
    pool: &Pool,
    parts: &http::request::Parts,
    host: &str,
    path_and_query: &PathAndQuery,
    peer: SocketAddr,
    affinity: &crate::balance::Affinity,
) -> crate::balance::Ranking {
    let mut ranking = pool.balancer.rank(
        &RequestContext {
            method: &parts.method,
            authority: host,
            path: path_and_query.as_str(),
            headers: &parts.headers,
            client_addr: peer,
        },
        pool.members.as_slice(),
    );
    Sticky::prefer(affinity, &mut ranking);
    ranking
}

/// The facts of a failed attempt.
struct Facts<'a> {
    parts: &'a http::request::Parts,
    host: &'a str,
    path: &'a str,
    peer: SocketAddr,
    endpoint: EndpointId,
    failure: Failure,
    attempt: usize,
    started_at: Instant,
    tried: &'a [EndpointId],
    replayable: bool,
}

/// What to do after a failed attempt.
enum Next<'a> {
    /// Try again: after `wait` (else the policy's backoff), on the same
    /// instance only if `same_endpoint`.
    Retry {
        wait: Option<std::time::Duration>,
        same_endpoint: bool,
    },
    /// Answer with this response.
    Respond(Response<Full<Bytes>>),
    /// Continue in another pool.
    Fallback(&'a Pool),
    /// Give up.
    Stop,
}

/// The pool's failover plugin decides, or — without one, or when it faults —
/// the built-in retry policy. The host's limits hold either way: a retry
/// needs a replayable request (unless nothing was sent), the attempt cap and
/// the budget (checked by the caller); a plugin's delay is capped at
/// `backoff_max_ms`.
fn decide<'a>(router: &'a Router, pool: &Pool, facts: &Facts<'_>) -> Next<'a> {
    let method = &facts.parts.method;
    let may_resend = facts.failure == Failure::ConnectFailure || facts.replayable;
    let builtin = || {
        if may_resend && pool.retry.retryable(facts.failure, method) {
            Next::Retry {
                wait: None,
                same_endpoint: false,
            }
        } else {
            Next::Stop
        }
    };
    let Some(plugin) = &pool.failover_plugin else {
        return builtin();
    };
    let plugin_facts = AttemptFacts {
        method: method.as_str(),
        authority: facts.host,
        path: facts.path,
        client_addr: facts.peer.to_string(),
        endpoint: facts.endpoint,
        failure: facts.failure,
        attempt: facts.attempt as u32,
        elapsed_ms: facts.started_at.elapsed().as_millis() as u64,
        tried: facts.tried,
        replayable: facts.replayable,
        retries_left: (pool.retry.max_attempts().saturating_sub(facts.attempt))
            .min(pool.budget.room()) as u32,
    };
    match plugin.on_failure(&plugin_facts) {
        Err(_fault) => builtin(),
        Ok(Decision::Retry {
            delay_ms,
            same_endpoint,
        }) if may_resend => Next::Retry {
            wait: Some(pool.retry.cap_delay(u64::from(delay_ms))),
            same_endpoint,
        },
        Ok(Decision::Retry { .. } | Decision::Fail) => Next::Stop,
        Ok(Decision::Fallback(name)) => match router.pool_named(&name) {
            Some(other) if other.name != pool.name => Next::Fallback(other),
            _ => {
                tracing::warn!(pool = %pool.name, fallback = %name, "failover plugin named an unknown pool; giving up");
                Next::Stop
            }
        },
        Ok(Decision::Respond {
            status,
            headers,
            body,
        }) => {
            let headers: std::collections::BTreeMap<String, String> = headers.into_iter().collect();
            let text = String::from_utf8_lossy(&body);
            Next::Respond(super::router::StaticResponse::new(status, &text, &headers).to_response())
        }
    }
}

/// A request body across attempts: replayable bytes, or a one-shot stream.
enum RequestBody {
    /// Empty, or buffered within the replay limit: every attempt sends a copy.
    Replay(Bytes),
    /// Streamed: only the first attempt can send it.
    Stream(Option<Incoming>),
}

impl RequestBody {
    /// Buffers `body` when it may need replaying (more than one attempt) and
    /// its declared length is within the limit; otherwise keeps the stream.
    async fn prepare(
        body: Incoming,
        headers: &http::HeaderMap,
        retry: &crate::failover::RetryPolicy,
        max_attempts: usize,
    ) -> Result<Self, ProxyError> {
        if body.is_end_stream() {
            return Ok(RequestBody::Replay(Bytes::new()));
        }
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        match declared {
            Some(length) if max_attempts > 1 && length <= retry.replay_limit() => {
                let collected = Limited::new(body, retry.replay_limit() as usize)
                    .collect()
                    .await
                    .map_err(|e| {
                        ProxyError::BadRequest(format!("reading the request body: {e}"))
                    })?;
                Ok(RequestBody::Replay(collected.to_bytes()))
            }
            _ => Ok(RequestBody::Stream(Some(body))),
        }
    }

    fn replayable(&self) -> bool {
        matches!(self, RequestBody::Replay(_))
    }

    fn for_attempt(&mut self) -> UpstreamBody {
        match self {
            RequestBody::Replay(bytes) => Either::Right(Full::new(bytes.clone())),
            RequestBody::Stream(stream) => match stream.take() {
                Some(body) => Either::Left(body),
                None => Either::Right(Full::new(Bytes::new())),
            },
        }
    }
}

pub(super) fn upstream_uri(authority: http::uri::Authority, path_and_query: PathAndQuery) -> Uri {
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(Scheme::HTTP);
    parts.authority = Some(authority);
    parts.path_and_query = Some(path_and_query);
    // Scheme, authority and path are all present, so this cannot fail.
    Uri::from_parts(parts).unwrap_or_default()
}

/// `host` without a `:port` suffix (IPv6 literals keep their brackets).
fn strip_port(host: &str) -> &str {
    match host.rfind(':') {
        Some(i) if !host[i..].contains(']') => &host[..i],
        _ => host,
    }
}

/// The error and its sources, `: `-joined (hyper's own Display is terse).
pub(super) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_ports() {
        assert_eq!(strip_port("example.com:8080"), "example.com");
        assert_eq!(strip_port("example.com"), "example.com");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
    }
}
