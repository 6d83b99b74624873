//! The `compress` filter: answers compressed with zstd, brotli or gzip for
//! clients that accept it, streamed (async-compression's encoders over the
//! answer's body). Levels are those of the anchors' defaults for dynamic
//! content: gzip 1 (nginx's `gzip_comp_level`), brotli 4, zstd 3.

use std::pin::Pin;
use std::task::{Context, Poll};

use async_compression::Level;
use async_compression::tokio::bufread::{BrotliEncoder, GzipEncoder, ZstdEncoder};
use bytes::Bytes;
use futures_util::TryStreamExt as _;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt as _;
use tokio::io::AsyncRead;
use tokio_util::io::{ReaderStream, StreamReader};

use crate::config::CompressConfig;
use crate::proxy::{Encoding, ProxyBody};

/// A `compress` filter, compiled.
pub struct Compress {
    /// In the operator's order of preference.
    encodings: Vec<Encoding>,
    min_bytes: u64,
    /// Lowercase; `text/` for `text/*`.
    types: Vec<String>,
}

impl Compress {
    /// The filter of `config` (validated at load: unknown names are
    /// skipped).
    pub fn new(config: &CompressConfig) -> Self {
        Self {
            encodings: config
                .algorithms
                .iter()
                .filter_map(|a| Encoding::of(a))
                .collect(),
            min_bytes: config.min_bytes,
            types: config
                .content_types
                .iter()
                .map(|t| t.trim_end_matches('*').to_ascii_lowercase())
                .collect(),
        }
    }

    /// The encoding for a request that sent `accept` (its
    /// `Accept-Encoding`): of the encodings the client accepts with the
    /// highest `q` (explicitly or through `*`), the one the operator
    /// prefers; none when it accepts none of them (RFC 9110 §12.5.3).
    pub fn negotiate(&self, accept: &HeaderMap) -> Option<Encoding> {
        let mut best: Option<(Encoding, u16)> = None;
        for encoding in &self.encodings {
            let q = quality(accept, encoding.token());
            if q > 0 && best.is_none_or(|(_, b)| q > b) {
                best = Some((*encoding, q));
            }
        }
        best.map(|(e, _)| e)
    }

    /// Compresses `response` with `encoding` (`None`: the client accepts
    /// none) when it qualifies, and says `Vary: Accept-Encoding` on every
    /// answer that would have been compressed for another client.
    pub fn apply(
        &self,
        response: &mut Response<ProxyBody>,
        method: &Method,
        encoding: Option<Encoding>,
    ) {
        if !self.qualifies(response, method) {
            return;
        }
        let headers = response.headers_mut();
        headers.append(header::VARY, HeaderValue::from_static("accept-encoding"));
        let Some(encoding) = encoding else {
            return;
        };
        headers.remove(header::CONTENT_LENGTH);
        headers.remove(header::ACCEPT_RANGES);
        headers.insert(
            header::CONTENT_ENCODING,
            HeaderValue::from_static(encoding.token()),
        );
        // The encoded bytes are not the entity's: a strong validator
        // becomes weak (as nginx does).
        if let Some(etag) = headers.get(header::ETAG)
            && !etag.as_bytes().starts_with(b"W/")
            && let Ok(weak) = HeaderValue::from_bytes(&[b"W/", etag.as_bytes()].concat())
        {
            headers.insert(header::ETAG, weak);
        }
        let body = std::mem::replace(response.body_mut(), ProxyBody::Local(Default::default()));
        *response.body_mut() = ProxyBody::Encoded(Box::pin(Encoded::new(body, encoding)));
    }

    /// Whether an answer may be compressed: a status with a body (not
    /// 1xx, 204, 206, 304) to a request other than HEAD, not encoded yet,
    /// not a range, without `Cache-Control: no-transform`, of a listed
    /// type, at least `min_bytes` when its length is known.
    fn qualifies(&self, response: &Response<ProxyBody>, method: &Method) -> bool {
        let status = response.status();
        let headers = response.headers();
        let has = |name: header::HeaderName, needle: &str| {
            headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .any(|v| v.to_ascii_lowercase().contains(needle))
        };
        let media = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_ascii_lowercase()
            });
        let length = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        method != Method::HEAD
            && !status.is_informational()
            && ![
                StatusCode::NO_CONTENT,
                StatusCode::PARTIAL_CONTENT,
                StatusCode::NOT_MODIFIED,
            ]
            .contains(&status)
            && headers
                .get(header::CONTENT_ENCODING)
                .is_none_or(|e| e.as_bytes().eq_ignore_ascii_case(b"identity"))
            && !headers.contains_key(header::CONTENT_RANGE)
            && !has(header::CACHE_CONTROL, "no-transform")
            && media.is_some_and(|m| {
                self.types.iter().any(|t| {
                    if t.ends_with('/') {
                        m.starts_with(t.as_str())
                    } else {
                        m == *t
                    }
                })
            })
            && length.is_none_or(|l| l >= self.min_bytes)
    }
}

/// The `q` (0..=1000) `accept` gives `token`, explicitly or through `*`;
/// 0 when it names neither.
fn quality(accept: &HeaderMap, token: &str) -> u16 {
    let mut wildcard = None;
    for item in accept
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
    {
        let mut parts = item.split(';');
        let name = parts.next().unwrap_or_default().trim();
        let q = parts
            .filter_map(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .or_else(|| p.trim().strip_prefix("Q="))
            })
            .find_map(|q| q.trim().parse::<f32>().ok())
            .map_or(1000, |q| (q.clamp(0.0, 1.0) * 1000.0) as u16);
        if name.eq_ignore_ascii_case(token) {
            return q;
        }
        if name == "*" {
            wildcard = Some(q);
        }
    }
    wildcard.unwrap_or(0)
}

/// An answer's body, compressed as it streams. An error of the answer's
/// own body is passed on as it came; the encoder itself cannot fail on
/// bytes in memory.
pub struct Encoded {
    stream: ReaderStream<Pin<Box<dyn AsyncRead + Send>>>,
}

impl Encoded {
    fn new(body: ProxyBody, encoding: Encoding) -> Self {
        let data = body.into_data_stream().map_err(std::io::Error::other);
        let reader = StreamReader::new(data);
        let encoder: Pin<Box<dyn AsyncRead + Send>> = match encoding {
            Encoding::Gzip => Box::pin(GzipEncoder::with_quality(reader, Level::Fastest)),
            Encoding::Brotli => Box::pin(BrotliEncoder::with_quality(reader, Level::Precise(4))),
            Encoding::Zstd => Box::pin(ZstdEncoder::with_quality(reader, Level::Precise(3))),
        };
        Self {
            stream: ReaderStream::new(encoder),
        }
    }
}

impl Body for Encoded {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        use futures_util::Stream as _;
        match Pin::new(&mut self.get_mut().stream).poll_next(cx) {
            Poll::Ready(Some(Ok(bytes))) => Poll::Ready(Some(Ok(Frame::data(bytes)))),
            Poll::Ready(Some(Err(error))) => {
                match error.into_inner().map(|e| e.downcast::<hyper::Error>()) {
                    Some(Ok(upstream)) => Poll::Ready(Some(Err(*upstream))),
                    Some(Err(other)) => {
                        tracing::warn!(error = %other, "compressing an answer failed; it ends here");
                        Poll::Ready(None)
                    }
                    None => Poll::Ready(None),
                }
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn the_highest_q_wins_then_the_operators_order() {
        let compress = Compress::new(&CompressConfig::default());
        assert_eq!(
            compress.negotiate(&accept("gzip, br")),
            Some(Encoding::Brotli)
        );
        assert_eq!(
            compress.negotiate(&accept("gzip;q=1, br;q=0.5")),
            Some(Encoding::Gzip)
        );
        assert_eq!(compress.negotiate(&accept("*")), Some(Encoding::Zstd));
        assert_eq!(
            compress.negotiate(&accept("*, zstd;q=0")),
            Some(Encoding::Brotli)
        );
        assert_eq!(compress.negotiate(&accept("identity")), None);
        assert_eq!(compress.negotiate(&HeaderMap::new()), None);
    }
}
