//! Header rewriting between client and upstream.
//!
//! Hop-by-hop headers (RFC 9110 §7.6.1: `Connection` and every header it
//! names, plus `Keep-Alive`, `Proxy-Connection`, `Proxy-Authenticate`,
//! `Proxy-Authorization`, `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`)
//! belong to one connection and are removed in both directions, but for an
//! upgrade (`Connection: upgrade` + `Upgrade`), which is kept. Requests get
//! `X-Forwarded-For` (the client IP appended to any list the client sent, as
//! nginx's `$proxy_add_x_forwarded_for`) and `X-Forwarded-Proto` (`https` from
//! a TLS listener), and `X-Forwarded-Client-Cert` only from a verified client
//! certificate (any the client sent is removed). The client's
//! `Host` is kept (as Envoy does); an HTTP/2 request, which carries its host in
//! `:authority`, gets it as `Host` so HTTP/1.1 upstreams see it.

use std::net::IpAddr;

use http::Version;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::tls::{ClientIdentity, FORWARDED_CLIENT_CERT};

const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// Removes hop-by-hop headers, including those `Connection` names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove(header::UPGRADE);
}

/// The protocol an HTTP/1.1 request asks to switch to: its `Upgrade`
/// header, when `upgrade` is one of its `Connection` tokens (RFC 9110
/// §7.8; a WebSocket handshake, RFC 6455 §4.1).
pub fn upgrade(version: Version, headers: &HeaderMap) -> Option<HeaderValue> {
    let asks = version == Version::HTTP_11
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    asks.then(|| headers.get(header::UPGRADE).cloned())
        .flatten()
}

/// Turns an HTTP/2 extended CONNECT (RFC 8441: `CONNECT` with a
/// `:protocol`, a WebSocket over HTTP/2) into the HTTP/1.1 upgrade an
/// instance expects (RFC 8441 §5): the method becomes `GET`, and a
/// WebSocket gets the `Sec-WebSocket-Key` HTTP/2 clients do not send.
/// Returns the protocol to ask the instance for, or `None` (nothing
/// changed) when the request is not one.
pub fn extended_connect(parts: &mut http::request::Parts) -> Option<HeaderValue> {
    if parts.method != http::Method::CONNECT {
        return None;
    }
    let protocol = parts.extensions.get::<hyper::ext::Protocol>()?;
    let value = HeaderValue::from_str(protocol.as_str()).ok()?;
    if protocol.as_str().eq_ignore_ascii_case("websocket")
        && !parts.headers.contains_key(header::SEC_WEBSOCKET_KEY)
    {
        use base64::Engine as _;
        let nonce: [u8; 16] = std::array::from_fn(|_| fastrand::u8(..));
        let key = base64::engine::general_purpose::STANDARD.encode(nonce);
        if let Ok(key) = HeaderValue::from_str(&key) {
            parts.headers.insert(header::SEC_WEBSOCKET_KEY, key);
        }
    }
    parts.method = http::Method::GET;
    Some(value)
}

/// The answer an HTTP/2 client gets when the instance accepted its
/// extended CONNECT with a 101: `200 OK` (RFC 8441 §5) without the
/// HTTP/1.1 handshake's `Sec-WebSocket-Accept`.
pub fn connect_accepted(response: &mut http::response::Parts) {
    response.status = http::StatusCode::OK;
    response.headers.remove(header::SEC_WEBSOCKET_ACCEPT);
    response.headers.remove(header::CONNECTION);
    response.headers.remove(header::UPGRADE);
}

/// Puts `Connection: upgrade` and `Upgrade: protocol` back after the
/// hop-by-hop headers were stripped: an upgrade is asked of, and granted
/// by, the next hop.
pub fn keep_upgrade(headers: &mut HeaderMap, protocol: HeaderValue) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, protocol);
}

/// Removes any `X-Forwarded-Client-Cert` the client sent and sets it from
/// `identity`, the client certificate the listener verified (Envoy's
/// `SANITIZE_SET`): done before balancing, so plugins that ask for the
/// header read only what Switchyard verified.
pub fn forward_client_cert(headers: &mut HeaderMap, identity: Option<&ClientIdentity>) {
    headers.remove(&FORWARDED_CLIENT_CERT);
    if let Some(identity) = identity {
        headers.insert(FORWARDED_CLIENT_CERT, identity.forwarded.clone());
    }
}

/// Prepares a client's request headers for an upstream: strips hop-by-hop
/// headers (but `TE: trailers`, which gRPC needs), sets `X-Forwarded-For` and `X-Forwarded-Proto` (`https` when the
/// client came over TLS), and sets `Host` from `authority` when the request
/// has none (HTTP/2).
pub fn prepare_request(
    headers: &mut HeaderMap,
    client_ip: IpAddr,
    authority: Option<&HeaderValue>,
    tls: bool,
) {
    let trailers = headers
        .get_all(header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("trailers"));
    strip_hop_by_hop(headers);
    if trailers {
        // The one TE HTTP/2 allows, which gRPC requires (RFC 9113 §8.2.2).
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    let forwarded = match headers.get_all(&X_FORWARDED_FOR).iter().count() {
        0 => HeaderValue::from_str(&client_ip.to_string()),
        _ => {
            let mut list = headers
                .get_all(&X_FORWARDED_FOR)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect::<Vec<_>>()
                .join(", ");
            list.push_str(", ");
            list.push_str(&client_ip.to_string());
            HeaderValue::from_str(&list)
        }
    };
    if let Ok(value) = forwarded {
        headers.insert(X_FORWARDED_FOR.clone(), value);
    }
    let proto = if tls { "https" } else { "http" };
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
    if let (false, Some(host)) = (headers.contains_key(header::HOST), authority) {
        headers.insert(header::HOST, host.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_listed_and_connection_named_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert("x-kept", HeaderValue::from_static("yes"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-kept"], "yes");
    }

    #[test]
    fn appends_client_to_forwarded_for() {
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        h.append("x-forwarded-for", HeaderValue::from_static("10.0.0.2"));
        prepare_request(&mut h, "127.0.0.9".parse().unwrap(), None, false);
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 10.0.0.2, 127.0.0.9");
        assert_eq!(h["x-forwarded-proto"], "http");
    }

    #[test]
    fn sets_host_only_when_missing() {
        let mut h = HeaderMap::new();
        let authority = HeaderValue::from_static("example.test");
        prepare_request(&mut h, "127.0.0.1".parse().unwrap(), Some(&authority), true);
        assert_eq!(h[header::HOST], "example.test");
        assert_eq!(h["x-forwarded-proto"], "https");
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("client.test"));
        prepare_request(&mut h, "127.0.0.1".parse().unwrap(), Some(&authority), true);
        assert_eq!(h[header::HOST], "client.test");
    }
}
