//! Forwarding one request: route, rank, attempt, stream the answer back.
//!
//! Attempts: the first acceptable instance of the ranking gets the request.
//! One more attempt goes to the next acceptable instance when the request can
//! be sent again unchanged — its body is empty — and either the connection
//! could not be made (the request never left) or the method is idempotent
//! (RFC 9110 §9.2.2) and the failure was a transport error or timeout
//! (nginx's `proxy_next_upstream error timeout`). A request with a body is
//! streamed and never replayed. A connect failure also keeps the instance out
//! of rotation for the pool's `fail_timeout_ms`.

use std::net::SocketAddr;
use std::time::Instant;

use http::uri::{PathAndQuery, Scheme};
use http::{HeaderValue, Method, Request, Response, Uri, Version, header};
use http_body::Body as _;
use http_body_util::{Either, Empty};
use hyper::body::Incoming;
use smallvec::SmallVec;

use super::body::ProxyBody;
use super::{ProxyError, Router, headers};
use crate::balance::{EndpointId, RequestContext, Sticky};
use crate::health::outlier::AttemptOutcome;

/// Attempts per request: the first, plus one failover attempt.
pub const MAX_ATTEMPTS: usize = 2;

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
    let Some(pool) = router.route(host, parts.uri.path()) else {
        return Err(ProxyError::NoRoute {
            host: host.to_string(),
            path: parts.uri.path().to_string(),
        });
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
    let mut ranking = pool.balancer.rank(
        &RequestContext {
            method: &parts.method,
            authority: host,
            path: path_and_query.as_str(),
            headers: &parts.headers,
            client_addr: peer,
        },
        &pool.endpoints,
    );
    Sticky::prefer(&affinity, &mut ranking);
    headers::prepare_request(&mut parts.headers, peer.ip(), authority.as_ref());

    let empty_body = body.is_end_stream();
    let idempotent = is_idempotent(&parts.method);
    let mut client_body = Some(body);
    let mut tried: SmallVec<[EndpointId; MAX_ATTEMPTS]> = SmallVec::new();
    let mut failure: Option<ProxyError> = None;
    for attempt in 1..=MAX_ATTEMPTS {
        let Some(id) = pool.next(&ranking, &tried) else {
            break;
        };
        tried.push(id);
        let endpoint = &pool.endpoints[id as usize];
        let last = attempt == MAX_ATTEMPTS || !empty_body;
        let mut upstream = Request::new(match client_body.take() {
            Some(b) => Either::Left(b),
            None => Either::Right(Empty::new()),
        });
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
        let outcome =
            tokio::time::timeout(pool.request_timeout, pool.client.request(upstream)).await;
        let latency_us = started.elapsed().as_micros() as u64;
        let retry_allowed = match outcome {
            Ok(Ok(mut response)) => {
                endpoint.mark_reachable();
                if let Some(load) = pool
                    .load_header
                    .as_ref()
                    .and_then(|h| response.headers().get(h))
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<f32>().ok())
                {
                    endpoint.report_load(load);
                }
                let success = !response.status().is_server_error();
                pool.balancer.observe(endpoint, success, latency_us);
                pool.record_outcome(
                    endpoint,
                    if success {
                        AttemptOutcome::Success
                    } else {
                        AttemptOutcome::ServerError
                    },
                );
                if let Some(sticky) = &pool.sticky {
                    sticky.bind(&affinity, id, response.headers_mut());
                }
                headers::strip_hop_by_hop(response.headers_mut());
                return Ok(response.map(|body| ProxyBody::Upstream {
                    body,
                    _in_flight: in_flight,
                }));
            }
            Ok(Err(error)) => {
                drop(in_flight);
                pool.balancer.observe(endpoint, false, latency_us);
                pool.record_outcome(endpoint, AttemptOutcome::GatewayError);
                let connect = error.is_connect();
                if connect {
                    let until = pool.now_ms() + pool.fail_timeout.as_millis() as u64;
                    endpoint.mark_unreachable(until);
                }
                let reason = format!("{}: {}", endpoint.url, error_chain(&error));
                tracing::warn!(pool = %pool.name, attempt, %reason, "upstream attempt failed");
                failure = Some(ProxyError::NoUpstream {
                    pool: pool.name.clone(),
                    reason,
                });
                connect || idempotent
            }
            Err(_elapsed) => {
                drop(in_flight);
                pool.balancer.observe(endpoint, false, latency_us);
                pool.record_outcome(endpoint, AttemptOutcome::GatewayError);
                tracing::warn!(pool = %pool.name, attempt, instance = %endpoint.url, "upstream timed out");
                failure = Some(ProxyError::Timeout {
                    pool: pool.name.clone(),
                    instance: endpoint.url.clone(),
                    timeout_ms: pool.request_timeout.as_millis() as u64,
                });
                idempotent
            }
        };
        if last || !retry_allowed {
            break;
        }
    }
    Err(failure.unwrap_or_else(|| ProxyError::NoUpstream {
        pool: pool.name.clone(),
        reason: "no instance available".into(),
    }))
}

fn upstream_uri(authority: http::uri::Authority, path_and_query: PathAndQuery) -> Uri {
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(Scheme::HTTP);
    parts.authority = Some(authority);
    parts.path_and_query = Some(path_and_query);
    // Scheme, authority and path are all present, so this cannot fail.
    Uri::from_parts(parts).unwrap_or_default()
}

/// Safe to repeat (RFC 9110 §9.2.2).
fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// `host` without a `:port` suffix (IPv6 literals keep their brackets).
fn strip_port(host: &str) -> &str {
    match host.rfind(':') {
        Some(i) if !host[i..].contains(']') => &host[..i],
        _ => host,
    }
}

/// The error and its sources, `: `-joined (hyper's own Display is terse).
fn error_chain(error: &dyn std::error::Error) -> String {
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
