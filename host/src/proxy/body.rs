//! The response body type: an upstream's streamed body, or Switchyard's own.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;

use super::ahead::ReadAhead;
use super::upstream::PooledBody;
use crate::balance::InFlight;
use tokio::sync::OwnedSemaphorePermit;

use crate::failover::Recorder;
use crate::gateway::rate_limit::ConcurrencySlots;

/// A body sent to a client.
pub enum ProxyBody {
    /// An upstream's body, streamed; the instance counts the request as in
    /// flight until the body ends or the client goes away.
    Upstream {
        /// The upstream body.
        body: PooledBody,
        /// Held for the body's lifetime.
        _in_flight: InFlight,
        /// Copies the body for stale-if-error, when the route has it.
        recorder: Option<Box<Recorder>>,
        /// The pool's bulkhead slot, held until the body ends.
        _slot: Option<OwnedSemaphorePermit>,
    },
    /// A body Switchyard made (errors).
    Local(Full<Bytes>),
    /// A body Switchyard writes as it goes (an MCP route's event stream):
    /// chunks until the sender is dropped.
    Channel(tokio::sync::mpsc::Receiver<Bytes>),
    /// A body a route's filter transformed (compressed) as it streams.
    Encoded(Pin<Box<dyn Body<Data = Bytes, Error = hyper::Error> + Send>>),
    /// A body whose first bytes a route's filter plugin read ahead.
    Ahead(Box<ReadAhead<ProxyBody>>),
    /// A body whose request counts against concurrency limits until it
    /// ends (or the client goes away).
    Held(Box<ProxyBody>, ConcurrencySlots),
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ProxyBody::Upstream { body, recorder, .. } => {
                let polled = Pin::new(&mut *body).poll_frame(cx);
                if recorder.is_some() {
                    match &polled {
                        Poll::Ready(Some(Ok(frame))) => {
                            let keep = frame
                                .data_ref()
                                .is_none_or(|data| recorder.as_mut().is_some_and(|r| r.push(data)));
                            if !keep {
                                *recorder = None;
                            } else if body.is_end_stream() {
                                // hyper stops polling once the body says it ended.
                                if let Some(r) = recorder.take() {
                                    r.finish();
                                }
                            }
                        }
                        Poll::Ready(None) => {
                            if let Some(r) = recorder.take() {
                                r.finish();
                            }
                        }
                        Poll::Ready(Some(Err(_))) => *recorder = None,
                        Poll::Pending => {}
                    }
                }
                polled
            }
            ProxyBody::Local(full) => Pin::new(full)
                .poll_frame(cx)
                .map_err(|never| match never {}),
            ProxyBody::Channel(rx) => rx
                .poll_recv(cx)
                .map(|chunk| chunk.map(|c| Ok(Frame::data(c)))),
            ProxyBody::Encoded(body) => body.as_mut().poll_frame(cx),
            ProxyBody::Ahead(body) => Pin::new(body.as_mut()).poll_frame(cx),
            ProxyBody::Held(body, _) => Pin::new(body.as_mut()).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Upstream { body, .. } => body.is_end_stream(),
            ProxyBody::Local(full) => full.is_end_stream(),
            ProxyBody::Channel(_) => false,
            ProxyBody::Encoded(body) => body.is_end_stream(),
            ProxyBody::Ahead(body) => body.is_end_stream(),
            ProxyBody::Held(body, _) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Upstream { body, .. } => body.size_hint(),
            ProxyBody::Local(full) => full.size_hint(),
            ProxyBody::Channel(_) => SizeHint::default(),
            ProxyBody::Encoded(body) => body.size_hint(),
            ProxyBody::Ahead(body) => body.size_hint(),
            ProxyBody::Held(body, _) => body.size_hint(),
        }
    }
}
