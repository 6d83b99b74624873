//! One request served: its head checked and normalized, its route
//! matched, its filters applied, its target asked, the answer recorded.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{HeaderValue, Method, Request, Response, Uri, Version, header};
use http_body_util::BodyExt;
use hyper::body::{Body, Incoming};

use super::filter::{Answer, RequestFacts, Routed};
use super::rate_limit::{ConcurrencySlots, RateLimitFields};
use super::{Router, Target};
use crate::proxy::{
    Inbound, ListenerRules, PathRules, ProxyBody, ProxyError, Received, RequestRecord, Served,
    forward_client_cert, normalize,
};
use crate::tls::ClientTls;

/// Serves one client request under the listener's `limits`, from a
/// connection over `tls` when it came over TLS: routes it, passes it
/// through the route's filters, serves it, and records it (metrics,
/// request log). Errors become JSON responses.
pub async fn handle(
    router: &Router,
    request: Request<Incoming>,
    peer: SocketAddr,
    limits: &ListenerRules,
    tls: Option<&ClientTls>,
) -> Response<ProxyBody> {
    let (mut parts, body) = request.into_parts();
    let mut body = Received::new(body);
    if parts.version == Version::HTTP_11 && !parts.headers.contains_key(header::HOST) {
        let error = ProxyError::BadRequest(
            "an HTTP/1.1 request needs a Host header (RFC 9112 §3.2)".into(),
        );
        return refuse(peer, error, discard(&mut body, &parts).await);
    }
    if let Err(error) = normalize_path(&mut parts.uri, &limits.paths) {
        return refuse(peer, error, discard(&mut body, &parts).await);
    }
    let authority: Option<HeaderValue> = parts.headers.get(header::HOST).cloned().or_else(|| {
        parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    let addressed = authority.as_ref().and_then(|v| v.to_str().ok());
    let host = addressed.map_or("", strip_port);
    let identity = tls.and_then(|t| t.identity.as_deref());
    if let Some(document) = router.resource_metadata(parts.uri.path())
        && matches!(parts.method, Method::GET | Method::HEAD)
    {
        return resource_metadata(document);
    }
    let Some(route) = router.route(host, parts.uri.path(), identity) else {
        let error = ProxyError::NoRoute {
            host: host.to_string(),
            path: parts.uri.path().to_string(),
        };
        return refuse(peer, error, discard(&mut body, &parts).await);
    };
    forward_client_cert(&mut parts.headers, identity);
    let started = Instant::now();
    let recent = &router.reporting().recent;
    // Only with a request log: copies of the method and the path as the
    // client sent them (cheap clones of shared bytes).
    let logged = recent
        .enabled()
        .then(|| (parts.method.clone(), parts.uri.path_and_query().cloned()));
    // The route's filters, when it has any.
    let mut routed = None;
    let route_limits;
    let mut limits = limits;
    let result = if route.chain.is_empty() {
        Ok(())
    } else {
        let facts = RequestFacts {
            peer,
            host,
            port: addressed.and_then(|a| a.get(host.len() + 1..)?.parse().ok()),
            tls: tls.is_some(),
            route: route.index,
            identity,
        };
        routed = route.chain.routed(&parts, facts);
        let filtered = route
            .chain
            .on_request(&mut parts, &facts, routed.as_mut(), &mut body, limits)
            .await;
        // The route's bounds on the body, and how it is decoded.
        let decode = filtered
            .is_ok()
            .then(|| route.chain.decode(&mut parts.headers))
            .flatten();
        if decode.is_some() || route.chain.body_limit().is_some() {
            route_limits = ListenerRules {
                max_body_bytes: route.chain.body_limit(),
                decode,
                ..*limits
            };
            limits = &route_limits;
        }
        filtered
    };
    // A filter's own answer: the body goes nowhere.
    let keep_alive = result.is_ok() || discard(&mut body, &parts).await;
    // Counts of concurrency limits, held until the answer's body is sent;
    // the RateLimit fields of an admitted request's answer.
    let held = parts.extensions.remove::<ConcurrencySlots>();
    let fields = parts.extensions.remove::<RateLimitFields>();
    let result = match result {
        Ok(()) => {
            let request = Inbound {
                parts,
                host,
                peer,
                authority: authority.as_ref(),
                limits,
                tls: tls.is_some(),
            };
            serve(router, &route.target, request, body, routed.as_ref()).await
        }
        Err(Answer::Made(response)) => Ok(response.map(ProxyBody::Local)),
        Err(Answer::Error(error)) => Err(error),
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
    let mut response = result.unwrap_or_else(|error| {
        tracing::debug!(%peer, %error, "request failed");
        error.into_response().map(ProxyBody::Local)
    });
    if let Some(routed) = &routed {
        route.chain.on_response(&mut response, routed).await;
    }
    if !keep_alive {
        close_after(&mut response);
    }
    if let Some(fields) = fields {
        let headers = response.headers_mut();
        headers.insert("ratelimit-policy", fields.policy);
        headers.insert("ratelimit", fields.state);
    }
    match held {
        Some(held) => response.map(|body| ProxyBody::Held(Box::new(body), held)),
        None => response,
    }
}

/// The most of a request's body [`discard`] reads, bytes.
const DISCARD_BYTES: usize = 1024 * 1024;

/// How long [`discard`] waits for a request's body.
const DISCARD_TIME: Duration = Duration::from_secs(5);

/// Reads and drops the rest of the HTTP/1 request body of a request
/// answered without it (a refusal, a filter's own answer), as nginx
/// discards the body of a request it answers itself: whether the
/// connection may then serve the client's next request. Without it, the
/// connection would close with the body's late bytes unread, and the
/// reset that makes the client's kernel send may drop the answer before
/// the client reads it. At most [`DISCARD_BYTES`] within
/// [`DISCARD_TIME`]; a longer or slower body, a broken one, or one the
/// client waits to be asked for (`Expect: 100-continue`, RFC 9110
/// §10.1.1) is not read and the connection closes after the answer.
async fn discard(body: &mut Received, parts: &http::request::Parts) -> bool {
    if body.is_end_stream() || !matches!(parts.version, Version::HTTP_10 | Version::HTTP_11) {
        return true;
    }
    if parts.headers.contains_key(header::EXPECT) {
        return false;
    }
    let drain = async {
        let mut read = 0;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { return false };
            read += frame.data_ref().map_or(0, Bytes::len);
            if read > DISCARD_BYTES {
                return false;
            }
        }
        true
    };
    tokio::time::timeout(DISCARD_TIME, drain)
        .await
        .unwrap_or(false)
}

/// Marks `response` as the connection's last (HTTP/1: `Connection:
/// close`, which hyper honours by closing after it).
fn close_after(response: &mut Response<ProxyBody>) {
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
}

/// A protected resource's metadata document (RFC 9728 §3.2): public, so
/// any origin may read it (browser-based MCP clients discover with it).
fn resource_metadata(document: &bytes::Bytes) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::Local(http_body_util::Full::new(
        document.clone(),
    )));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=300"),
    );
    response
}

/// The answer to a request refused before it had a route; the last of
/// its connection unless its body was read to the end ([`discard`]).
fn refuse(peer: SocketAddr, error: ProxyError, keep_alive: bool) -> Response<ProxyBody> {
    tracing::debug!(%peer, %error, "request refused");
    let mut response = error.into_response().map(ProxyBody::Local);
    if !keep_alive {
        close_after(&mut response);
    }
    response
}

/// Asks the route's target for the answer; an MCP route asks the filter
/// plugins that saw the request as `routed` about its calls and results.
async fn serve(
    router: &Router,
    target: &Target,
    request: Inbound<'_>,
    body: Received,
    routed: Option<&Routed<'_>>,
) -> Result<Response<ProxyBody>, ProxyError> {
    match target {
        Target::FanOut(fan_out) => fan_out.serve(request, body).await,
        Target::Mcp(mcp) => {
            let guards = routed.map(Routed::mcp_guards).unwrap_or_default();
            mcp.serve(request, body, guards).await
        }
        Target::Pool(pool_route) => {
            pool_route
                .serve(router.pools(), router.reporting(), request, body)
                .await
        }
    }
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
