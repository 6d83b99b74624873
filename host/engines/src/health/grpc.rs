//! The gRPC health-checking protocol (`grpc.health.v1.Health/Check`, from
//! grpc/grpc's `doc/health-checking.md`), as much of it as a probe needs:
//! the request message and the answer's serving status, encoded by hand
//! (two protobuf fields) rather than with a code generator.

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Method, Request, header};

/// The RPC's path.
pub const CHECK_PATH: &str = "/grpc.health.v1.Health/Check";

/// `HealthCheckResponse.ServingStatus.SERVING`.
const SERVING: u64 = 1;

/// A `Check` request for `service` (`""`: the server as a whole), framed
/// for gRPC over HTTP/2 (a 5-byte prefix: not compressed, then the
/// length), to `authority`.
pub fn check_request(service: &str, authority: &str) -> Request<http_body_util::Full<Bytes>> {
    // HealthCheckRequest { string service = 1; }
    let mut message = BytesMut::new();
    if !service.is_empty() {
        message.put_u8(0x0a);
        put_varint(&mut message, service.len() as u64);
        message.put_slice(service.as_bytes());
    }
    let mut framed = BytesMut::with_capacity(5 + message.len());
    framed.put_u8(0);
    framed.put_u32(message.len() as u32);
    framed.put_slice(&message);
    let mut request = Request::new(http_body_util::Full::new(framed.freeze()));
    *request.method_mut() = Method::POST;
    *request.uri_mut() = http::Uri::from_static(CHECK_PATH);
    let headers = request.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert(header::TE, HeaderValue::from_static("trailers"));
    if let Ok(host) = HeaderValue::try_from(authority) {
        headers.insert(header::HOST, host);
    }
    request
}

/// Judges a `Check` answer: its HTTP status, its headers and trailers
/// (`grpc-status` is in the trailers, or in the headers of a
/// trailers-only answer) and its body (one framed `HealthCheckResponse`).
///
/// # Errors
/// Why the instance is not serving: an HTTP status other than 200, a
/// `grpc-status` other than 0 (with its `grpc-message`), a status other
/// than `SERVING`, or an answer that cannot be read.
pub fn judge(
    status: http::StatusCode,
    headers: &HeaderMap,
    trailers: Option<&HeaderMap>,
    body: &[u8],
) -> Result<(), String> {
    if status != http::StatusCode::OK {
        return Err(format!("HTTP status {status}"));
    }
    let field = |name: &str| {
        trailers
            .and_then(|t| t.get(name))
            .or_else(|| headers.get(name))
            .and_then(|v| v.to_str().ok())
    };
    match field("grpc-status") {
        Some("0") => {}
        Some(code) => {
            return Err(format!(
                "grpc-status {code}: {}",
                field("grpc-message").unwrap_or("")
            ));
        }
        None => return Err("no grpc-status in the answer".into()),
    }
    let message = body
        .get(5..)
        .filter(|_| body[0] == 0)
        .ok_or("no uncompressed message in the answer")?;
    // HealthCheckResponse { ServingStatus status = 1; } (a varint; absent = 0).
    let serving = match message {
        [] => 0,
        [0x08, rest @ ..] => varint(rest).ok_or("a malformed HealthCheckResponse")?,
        _ => return Err("a malformed HealthCheckResponse".into()),
    };
    match serving {
        SERVING => Ok(()),
        0 => Err("status UNKNOWN".into()),
        2 => Err("status NOT_SERVING".into()),
        3 => Err("status SERVICE_UNKNOWN".into()),
        other => Err(format!("status {other}")),
    }
}

fn put_varint(out: &mut BytesMut, mut value: u64) {
    while value >= 0x80 {
        out.put_u8((value as u8) | 0x80);
        value >>= 7;
    }
    out.put_u8(value as u8);
}

fn varint(bytes: &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for (i, byte) in bytes.iter().take(10).enumerate() {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;
    use http_body_util::BodyExt;

    fn ok_trailers() -> HeaderMap {
        let mut t = HeaderMap::new();
        t.insert("grpc-status", HeaderValue::from_static("0"));
        t
    }

    #[tokio::test]
    async fn the_request_frames_the_service_name() {
        let body = check_request("pkg.Svc", "a:1")
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes();
        assert_eq!(&body[..], b"\0\0\0\0\x09\x0a\x07pkg.Svc");
        let empty = check_request("", "a:1")
            .into_body()
            .collect()
            .await
            .unwrap();
        assert_eq!(&empty.to_bytes()[..], b"\0\0\0\0\0");
    }

    #[test]
    fn serving_passes_and_everything_else_says_why() {
        let h = HeaderMap::new();
        let t = ok_trailers();
        assert_eq!(
            judge(StatusCode::OK, &h, Some(&t), b"\0\0\0\0\x02\x08\x01"),
            Ok(())
        );
        assert_eq!(
            judge(StatusCode::OK, &h, Some(&t), b"\0\0\0\0\x02\x08\x02"),
            Err("status NOT_SERVING".into())
        );
        assert_eq!(
            judge(StatusCode::OK, &h, Some(&t), b"\0\0\0\0\0"),
            Err("status UNKNOWN".into())
        );
        let mut only = HeaderMap::new();
        only.insert("grpc-status", HeaderValue::from_static("5"));
        only.insert("grpc-message", HeaderValue::from_static("unknown service"));
        assert_eq!(
            judge(StatusCode::OK, &only, None, b""),
            Err("grpc-status 5: unknown service".into())
        );
        assert!(judge(StatusCode::NOT_FOUND, &h, Some(&t), b"").is_err());
        assert!(judge(StatusCode::OK, &h, Some(&t), b"\0\0\0\0\x02\x08").is_err());
    }
}
