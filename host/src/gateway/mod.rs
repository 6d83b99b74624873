//! The request path: a client's request is matched against the routes in
//! order ([`Router`]), then served by its route's target — one pool with
//! failover ([`crate::proxy`]), a fan-out over several sources
//! ([`crate::proxy::FanOut`]), or the MCP gateway ([`crate::mcp`]) — and
//! recorded (route metrics, the request log).
//!
//! This module sits above the route kinds it dispatches to: [`crate::proxy`]
//! and [`crate::mcp`] never import it. The listeners and their accept loop
//! are [`crate::server`]'s; this module serves one request ([`handle`]).

mod router;

use std::borrow::Cow;
use std::net::SocketAddr;
use std::time::Instant;

use http::uri::PathAndQuery;
use http::{HeaderValue, Request, Response, Uri, Version, header};
use hyper::body::Incoming;

pub use router::{Route, Router, Target};

use crate::proxy::{
    Inbound, ListenerRules, PathRules, ProxyBody, ProxyError, RequestRecord, Served,
    forward_client_cert, normalize,
};
use crate::tls::ClientTls;

/// Serves one client request under the listener's `limits`, from a
/// connection over `tls` when it came over TLS; errors become JSON
/// responses.
pub async fn handle(
    router: &Router,
    request: Request<Incoming>,
    peer: SocketAddr,
    limits: &ListenerRules,
    tls: Option<&ClientTls>,
) -> Response<ProxyBody> {
    match forward(router, request, peer, limits, tls).await {
        Ok(response) => response,
        Err(error) => {
            tracing::debug!(%peer, %error, "request failed");
            error.into_response().map(ProxyBody::Local)
        }
    }
}

/// Routes the request, serves it, and records it (metrics, request log).
async fn forward(
    router: &Router,
    request: Request<Incoming>,
    peer: SocketAddr,
    limits: &ListenerRules,
    tls: Option<&ClientTls>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let (mut parts, body) = request.into_parts();
    if parts.version == Version::HTTP_11 && !parts.headers.contains_key(header::HOST) {
        return Err(ProxyError::BadRequest(
            "an HTTP/1.1 request needs a Host header (RFC 9112 §3.2)".into(),
        ));
    }
    normalize_path(&mut parts.uri, &limits.paths)?;
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
    let identity = tls.and_then(|t| t.identity.as_deref());
    let Some(route) = router.route(host, parts.uri.path(), identity) else {
        return Err(ProxyError::NoRoute {
            host: host.to_string(),
            path: parts.uri.path().to_string(),
        });
    };
    forward_client_cert(&mut parts.headers, identity);
    let started = Instant::now();
    let recent = &router.reporting().recent;
    // Only with a request log: copies of the method and the path (cheap
    // clones of shared bytes).
    let logged = recent
        .enabled()
        .then(|| (parts.method.clone(), parts.uri.path_and_query().cloned()));
    let request = Inbound {
        parts,
        host,
        peer,
        authority: authority.as_ref(),
        limits,
        tls: tls.is_some(),
    };
    let result = match &route.target {
        Target::FanOut(fan_out) => fan_out.serve(request, body).await,
        Target::Mcp(mcp) => mcp.serve(request, body).await,
        Target::Pool(pool_route) => {
            pool_route
                .serve(router.pools(), router.reporting(), request, body)
                .await
        }
    };
    let status = match &result {
        Ok(response) => response.status(),
        Err(error) => error.status(),
    };
    let elapsed = started.elapsed();
    route.metrics.record(status.as_u16(), elapsed.as_secs_f64());
    if let Some((method, path)) = logged {
        let served = result
            .as_ref()
            .ok()
            .and_then(|r| r.extensions().get::<Served>().cloned());
        let pool = match (&served, &result) {
            (Some(s), _) => Some(s.pool.clone()),
            (None, Err(ProxyError::NoUpstream { pool, .. } | ProxyError::Timeout { pool, .. })) => {
                Some(pool.clone())
            }
            _ => None,
        };
        recent.record(RequestRecord {
            at_ms: 0,
            method: method.to_string(),
            host: host.to_string(),
            path: path.map_or_else(|| "/".to_string(), |p| p.to_string()),
            route: route.index,
            status: status.as_u16(),
            duration_us: elapsed.as_micros() as u64,
            client: peer.ip(),
            attempts: served.as_ref().map_or(0, |s| s.attempts),
            instance: served.map(|s| s.instance),
            pool,
        });
    }
    result
}

/// Replaces the path of `uri` with its normal form (see [`normalize`]); the
/// query stays as it is.
///
/// # Errors
/// 400 for a path the rules refuse.
fn normalize_path(uri: &mut Uri, rules: &PathRules) -> Result<(), ProxyError> {
    let normal = match normalize(uri.path(), rules) {
        Ok(Cow::Borrowed(_)) => return Ok(()),
        Ok(Cow::Owned(normal)) => normal,
        Err(refused) => return Err(ProxyError::BadRequest(refused.to_string())),
    };
    let path_and_query = match uri.query() {
        Some(query) => format!("{normal}?{query}"),
        None => normal,
    };
    let mut parts = std::mem::take(uri).into_parts();
    parts.path_and_query = Some(
        PathAndQuery::try_from(path_and_query)
            .map_err(|e| ProxyError::BadRequest(format!("the normalized path is invalid: {e}")))?,
    );
    *uri = Uri::from_parts(parts)
        .map_err(|e| ProxyError::BadRequest(format!("the normalized URI is invalid: {e}")))?;
    Ok(())
}

/// `host` without a `:port` suffix (IPv6 literals keep their brackets).
fn strip_port(host: &str) -> &str {
    match host.rfind(':') {
        Some(i) if !host[i..].contains(']') => &host[..i],
        _ => host,
    }
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
