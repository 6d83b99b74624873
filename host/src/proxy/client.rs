//! The client's side of a request: its body as sent upstream, bounded in
//! time between frames, and the record of a failure that was the client's.
//!
//! A failure caused by the client — a body whose framing is invalid, a
//! client that goes away before its body is complete, a body that stalls
//! longer than `body_read_timeout_ms` — is answered as the client's error
//! (400, 499, 408) and never counts against an instance: the attempt is
//! not booked (no outlier detection, breaker, EWMA or plugin `observe`),
//! not retried and not handed to the failover policy. nginx answers the
//! same cases 400, 499 (logged) and 408 (`client_body_timeout`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use super::ProxyError;
use super::ahead::{AheadError, ReadAhead};
use super::coding::{Decode, Encoding};
use super::path::PathRules;
use crate::config::ListenerConfig;

/// What a listener holds its clients to, read at start from its config.
#[derive(Debug, Clone, Copy)]
pub struct ListenerRules {
    /// Longest wait for the next piece of a request body
    /// (`body_read_timeout_ms`, default 60 s as nginx's
    /// `client_body_timeout`).
    pub body_read_timeout: Duration,
    /// How request paths are normalized before routing.
    pub paths: PathRules,
    /// The largest request body, bytes: none from the listener; a route's
    /// `body-limit` filter sets it for the route's requests (413 past it).
    pub max_body_bytes: Option<u64>,
    /// How the request body is decoded on its way upstream: none from the
    /// listener; a route's `decompress` filter sets it for a request whose
    /// `Content-Encoding` it decodes (`max_body_bytes` then bounds the
    /// bytes as sent, this the bytes decoded).
    pub decode: Option<Decode>,
}

impl From<&ListenerConfig> for ListenerRules {
    fn from(config: &ListenerConfig) -> Self {
        Self {
            body_read_timeout: Duration::from_millis(config.body_read_timeout_ms),
            paths: PathRules {
                normalize: config.normalize_path,
                merge_slashes: config.merge_slashes,
                escaped_slashes: config.escaped_slashes,
            },
            max_body_bytes: None,
            decode: None,
        }
    }
}

/// How a client's request body failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ClientFault {
    /// Invalid framing (a bad chunk size, more bytes than declared): 400.
    Framing = 1,
    /// The client closed the connection before its body was complete: 499.
    Gone = 2,
    /// No body bytes for `body_read_timeout_ms`: 408.
    Stalled = 3,
    /// More bytes than the route's `body-limit`: 413.
    TooLarge = 4,
    /// A body that does not decode as its `Content-Encoding` says: 400.
    BadEncoding = 5,
    /// A body that decodes to more than the `decompress` filter's
    /// `max_decoded_bytes`: 413.
    DecodedTooLarge = 6,
}

impl ClientFault {
    /// The fault behind a failed read of `Incoming`.
    fn of(error: &hyper::Error) -> Self {
        if error.is_incomplete_message() || error.is_closed() || error.is_canceled() {
            ClientFault::Gone
        } else {
            ClientFault::Framing
        }
    }

    fn from_u8(value: u8) -> Option<Self> {
        match value {
            1 => Some(ClientFault::Framing),
            2 => Some(ClientFault::Gone),
            3 => Some(ClientFault::Stalled),
            4 => Some(ClientFault::TooLarge),
            5 => Some(ClientFault::BadEncoding),
            6 => Some(ClientFault::DecodedTooLarge),
            _ => None,
        }
    }

    /// The error answered (or, for a client gone, logged) for this fault.
    pub fn error(self, limits: &ListenerRules) -> ProxyError {
        match self {
            ClientFault::Framing => {
                ProxyError::BadRequest("the request body's framing is invalid".into())
            }
            ClientFault::Gone => ProxyError::ClientGone,
            ClientFault::Stalled => ProxyError::ClientTimeout {
                timeout_ms: limits.body_read_timeout.as_millis() as u64,
            },
            ClientFault::TooLarge => ProxyError::PayloadTooLarge {
                limit_bytes: limits.max_body_bytes.unwrap_or(u64::MAX),
            },
            ClientFault::BadEncoding => ProxyError::BadRequest(format!(
                "the request body is not valid {}",
                limits.decode.map_or("", |d| d.encoding.token())
            )),
            ClientFault::DecodedTooLarge => ProxyError::PayloadTooLarge {
                limit_bytes: limits.decode.map_or(u64::MAX, |d| d.max_decoded_bytes),
            },
        }
    }
}

/// Where a [`ClientBody`] records how it ended, shared with the exchange
/// that sent it (the body itself moves into the upstream request).
#[derive(Debug, Default)]
pub struct FaultCell {
    fault: AtomicU8,
    /// The body is waiting for bytes from the client (not for the
    /// upstream to read what it has).
    waiting: AtomicBool,
}

impl FaultCell {
    /// The recorded fault, if any.
    pub fn get(&self) -> Option<ClientFault> {
        ClientFault::from_u8(self.fault.load(Ordering::Acquire))
    }

    /// Whether the body is waiting for the client's next bytes: an attempt
    /// that times out then waited on the client, not on the instance (an
    /// instance that stops reading a body leaves it not waiting).
    pub fn waiting_on_client(&self) -> bool {
        self.waiting.load(Ordering::Acquire)
    }

    fn set(&self, fault: ClientFault) {
        self.fault.store(fault as u8, Ordering::Release);
    }
}

/// A client's request body as the listener received it: `Incoming`, its
/// first bytes possibly read ahead for a filter plugin
/// (`read_ahead`).
pub type Received = ReadAhead<Incoming>;

/// Reads at least `bytes` of `body`'s first bytes ahead (or all of a
/// shorter body), each frame awaited at most the listener's
/// `body_read_timeout_ms`.
///
/// # Errors
/// The client's fault (400, 408, 499).
pub async fn read_ahead(
    body: &mut Received,
    bytes: usize,
    limits: &ListenerRules,
) -> Result<(), ProxyError> {
    body.read(bytes, Some(limits.body_read_timeout))
        .await
        .map_err(|error| {
            match error {
                AheadError::Body(error) => ClientFault::of(error),
                AheadError::Stalled => ClientFault::Stalled,
            }
            .error(limits)
        })
}

/// Reads the whole of `body`, at most `limit_bytes` (and the route's
/// `max_body_bytes`), each frame awaited at most the listener's
/// `body_read_timeout_ms`.
///
/// # Errors
/// 413 past either limit; otherwise the client's fault (400, 408, 499).
pub async fn read_whole(
    body: Received,
    limits: &ListenerRules,
    limit_bytes: u64,
) -> Result<Bytes, ProxyError> {
    let (body, fault) = ClientBody::new(body, limits);
    let limit = usize::try_from(limit_bytes).unwrap_or(usize::MAX);
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<LengthLimitError>() => Err(ProxyError::PayloadTooLarge { limit_bytes }),
        Err(_) => Err(fault.get().unwrap_or(ClientFault::Framing).error(limits)),
    }
}

/// The error a [`ClientBody`] yields: the client's fault.
#[derive(Debug, thiserror::Error)]
#[error("the client's request body failed: {0:?}")]
pub struct ClientBodyError(pub ClientFault);

/// A client's request body: `Incoming` with a deadline between frames and
/// the route's size limit, decoded when the route's `decompress` filter
/// said so ([`ListenerRules::decode`]); a failure is recorded in the shared
/// [`FaultCell`].
pub struct ClientBody(Source);

/// Where a [`ClientBody`]'s bytes come from.
enum Source {
    /// The client's bytes as sent.
    Raw(RawBody),
    /// Those bytes decoded, at most `allowance` more of them.
    Decoded {
        stream: Pin<Box<dyn futures_util::Stream<Item = std::io::Result<Bytes>> + Send>>,
        allowance: u64,
        fault: Arc<FaultCell>,
    },
}

/// The client's bytes as sent, bounded in time and size.
struct RawBody {
    body: Received,
    timeout: Duration,
    /// Bytes the body may still bring (the route's `max_body_bytes`).
    allowance: u64,
    /// Armed while a frame is awaited.
    stall: Option<Pin<Box<Sleep>>>,
    fault: Arc<FaultCell>,
}

impl ClientBody {
    /// `body`, each frame awaited at most `limits.body_read_timeout`, at
    /// most `limits.max_body_bytes` in all, decoded as `limits.decode`
    /// says (at most its `max_decoded_bytes`).
    pub fn new(body: Received, limits: &ListenerRules) -> (Self, Arc<FaultCell>) {
        let fault = Arc::new(FaultCell::default());
        let raw = RawBody {
            body,
            timeout: limits.body_read_timeout,
            allowance: limits.max_body_bytes.unwrap_or(u64::MAX),
            stall: None,
            fault: Arc::clone(&fault),
        };
        let source = match limits.decode {
            None => Source::Raw(raw),
            Some(decode) => Source::Decoded {
                stream: decoded(raw, decode.encoding),
                allowance: decode.max_decoded_bytes,
                fault: Arc::clone(&fault),
            },
        };
        (Self(source), fault)
    }
}

/// The bytes of `raw` decoded from `encoding`, streamed (a gzip body may
/// have several members, RFC 1952 §2.2).
fn decoded(
    raw: RawBody,
    encoding: Encoding,
) -> Pin<Box<dyn futures_util::Stream<Item = std::io::Result<Bytes>> + Send>> {
    use async_compression::tokio::bufread::{BrotliDecoder, GzipDecoder, ZstdDecoder};
    use futures_util::TryStreamExt as _;
    use tokio_util::io::{ReaderStream, StreamReader};
    let reader =
        StreamReader::new(http_body_util::BodyDataStream::new(raw).map_err(std::io::Error::other));
    match encoding {
        Encoding::Gzip => {
            let mut decoder = GzipDecoder::new(reader);
            decoder.multiple_members(true);
            Box::pin(ReaderStream::new(decoder))
        }
        Encoding::Brotli => Box::pin(ReaderStream::new(BrotliDecoder::new(reader))),
        Encoding::Zstd => Box::pin(ReaderStream::new(ZstdDecoder::new(reader))),
    }
}

impl RawBody {
    fn fail(&mut self, fault: ClientFault) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        self.fault.set(fault);
        Poll::Ready(Some(Err(ClientBodyError(fault))))
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = ClientBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        match &mut self.get_mut().0 {
            Source::Raw(raw) => Pin::new(raw).poll_frame(cx),
            Source::Decoded {
                stream,
                allowance,
                fault,
            } => match stream.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(data))) => match allowance.checked_sub(data.len() as u64) {
                    Some(left) => {
                        *allowance = left;
                        Poll::Ready(Some(Ok(Frame::data(data))))
                    }
                    None => {
                        fault.set(ClientFault::DecodedTooLarge);
                        Poll::Ready(Some(Err(ClientBodyError(ClientFault::DecodedTooLarge))))
                    }
                },
                Poll::Ready(Some(Err(_))) => {
                    // The client's own fault (recorded by the raw body), or
                    // bytes that do not decode.
                    let failed = fault.get().unwrap_or(ClientFault::BadEncoding);
                    fault.set(failed);
                    Poll::Ready(Some(Err(ClientBodyError(failed))))
                }
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Source::Raw(raw) => raw.is_end_stream(),
            Source::Decoded { .. } => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Source::Raw(raw) => raw.size_hint(),
            Source::Decoded { .. } => SizeHint::default(),
        }
    }
}

impl Body for RawBody {
    type Data = Bytes;
    type Error = ClientBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.stall = None;
                this.fault.waiting.store(false, Ordering::Release);
                let length = frame.data_ref().map_or(0, |d| d.len() as u64);
                match this.allowance.checked_sub(length) {
                    Some(left) => this.allowance = left,
                    None => return this.fail(ClientFault::TooLarge),
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => this.fail(ClientFault::of(&error)),
            Poll::Ready(None) => {
                this.fault.waiting.store(false, Ordering::Release);
                Poll::Ready(None)
            }
            Poll::Pending => {
                this.fault.waiting.store(true, Ordering::Release);
                let timeout = this.timeout;
                let stall = this.stall.get_or_insert_with(|| {
                    Box::pin(tokio::time::sleep_until(Instant::now() + timeout))
                });
                match stall.as_mut().poll(cx) {
                    Poll::Ready(()) => this.fail(ClientFault::Stalled),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
