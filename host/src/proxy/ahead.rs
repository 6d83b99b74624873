//! Bodies read ahead: the first bytes of a request or of an answer, read
//! for a filter plugin that asked to see them (`request-body-bytes`,
//! `response-body-bytes`), then sent on unchanged — the frames read ahead
//! first, the rest streamed as it comes. Envoy's ext_authz
//! `with_request_body` buffers a request's first bytes the same way.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;

/// A body whose first frames may have been read ahead
/// ([`read`](Self::read)); as a [`Body`], those frames and then the rest.
pub struct ReadAhead<B: Body> {
    /// The frames read ahead, yielded first.
    read: VecDeque<Frame<Bytes>>,
    /// Data bytes in `read`.
    buffered: usize,
    /// Whether the body ended while being read ahead.
    ended: bool,
    /// The error the body failed with while being read ahead, yielded
    /// after `read`.
    failed: Option<B::Error>,
    rest: B,
}

/// How reading ahead failed.
#[derive(Debug)]
pub enum AheadError<E> {
    /// The body failed.
    Body(E),
    /// No frame came within the timeout.
    Stalled,
}

impl<B> ReadAhead<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    /// `body`, nothing read ahead yet.
    pub fn new(body: B) -> Self {
        Self {
            read: VecDeque::new(),
            buffered: 0,
            ended: false,
            failed: None,
            rest: body,
        }
    }

    /// Reads frames until at least `bytes` data bytes are held or the body
    /// ends, each frame awaited at most `frame_timeout` when given. Bytes
    /// already held count: a second call reads only what is missing.
    ///
    /// # Errors
    /// The body's error (kept, and yielded again after the frames read
    /// ahead when the body is streamed), or [`AheadError::Stalled`].
    pub async fn read(
        &mut self,
        bytes: usize,
        frame_timeout: Option<Duration>,
    ) -> Result<(), AheadError<&B::Error>> {
        while self.buffered < bytes && !self.ended && self.failed.is_none() {
            let next = self.rest.frame();
            let frame = match frame_timeout {
                Some(timeout) => tokio::time::timeout(timeout, next)
                    .await
                    .map_err(|_| AheadError::Stalled)?,
                None => next.await,
            };
            match frame {
                Some(Ok(frame)) => {
                    self.buffered += frame.data_ref().map_or(0, Bytes::len);
                    self.read.push_back(frame);
                    self.ended = self.rest.is_end_stream();
                }
                Some(Err(error)) => return Err(AheadError::Body(self.failed.insert(error))),
                None => self.ended = true,
            }
        }
        Ok(())
    }

    /// At most the first `bytes` data bytes read ahead, and whether they
    /// are the whole body.
    pub fn prefix(&self, bytes: usize) -> (Vec<u8>, bool) {
        let mut out = Vec::with_capacity(bytes.min(self.buffered));
        for data in self.read.iter().filter_map(Frame::data_ref) {
            let take = data.len().min(bytes - out.len());
            out.extend_from_slice(&data[..take]);
            if out.len() == bytes {
                break;
            }
        }
        (out, self.ended && self.buffered <= bytes)
    }
}

impl<B> Body for ReadAhead<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        if let Some(frame) = this.read.pop_front() {
            this.buffered -= frame.data_ref().map_or(0, Bytes::len);
            return Poll::Ready(Some(Ok(frame)));
        }
        if let Some(error) = this.failed.take() {
            this.ended = true;
            return Poll::Ready(Some(Err(error)));
        }
        if this.ended {
            return Poll::Ready(None);
        }
        Pin::new(&mut this.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.read.is_empty() && self.failed.is_none() && (self.ended || self.rest.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        if self.ended && self.failed.is_none() {
            return SizeHint::with_exact(self.buffered as u64);
        }
        let rest = self.rest.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower() + self.buffered as u64);
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + self.buffered as u64);
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    type Frames = StreamBody<
        futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, std::io::Error>>>,
    >;

    fn body(chunks: &[&'static [u8]]) -> Frames {
        let frames: Vec<_> = chunks
            .iter()
            .map(|c| Ok(Frame::data(Bytes::from_static(c))))
            .collect();
        StreamBody::new(futures_util::stream::iter(frames))
    }

    #[tokio::test]
    async fn the_prefix_is_cut_and_the_whole_body_replayed() {
        let mut ahead = ReadAhead::new(body(&[b"abc", b"def", b"ghi"]));
        ahead.read(4, None).await.unwrap();
        assert_eq!(ahead.prefix(4), (b"abcd".to_vec(), false));
        assert_eq!(ahead.prefix(2), (b"ab".to_vec(), false));
        let all = ahead.collect().await.unwrap().to_bytes();
        assert_eq!(&all[..], b"abcdefghi");
    }

    #[tokio::test]
    async fn a_body_shorter_than_asked_is_complete() {
        let mut ahead = ReadAhead::new(body(&[b"abc", b"de"]));
        ahead.read(100, None).await.unwrap();
        assert_eq!(ahead.prefix(100), (b"abcde".to_vec(), true));
        assert_eq!(
            ahead.prefix(3),
            (b"abc".to_vec(), false),
            "complete only for a reader that asked for the whole of it"
        );
        assert!(ahead.size_hint().exact() == Some(5));
        let all = ahead.collect().await.unwrap().to_bytes();
        assert_eq!(&all[..], b"abcde");
    }

    #[tokio::test]
    async fn a_second_read_reads_only_what_is_missing() {
        let mut ahead = ReadAhead::new(body(&[b"ab", b"cd", b"ef"]));
        ahead.read(2, None).await.unwrap();
        assert_eq!(ahead.prefix(10), (b"ab".to_vec(), false));
        ahead.read(3, None).await.unwrap();
        assert_eq!(ahead.prefix(10), (b"abcd".to_vec(), false));
        let all = ahead.collect().await.unwrap().to_bytes();
        assert_eq!(&all[..], b"abcdef");
    }

    #[tokio::test]
    async fn a_failure_is_reported_and_yielded_after_the_bytes_read() {
        let frames: Vec<Result<Frame<Bytes>, std::io::Error>> = vec![
            Ok(Frame::data(Bytes::from_static(b"ab"))),
            Err(std::io::Error::other("reset")),
        ];
        let mut ahead = ReadAhead::new(StreamBody::new(futures_util::stream::iter(frames)));
        let read = ahead.read(10, None).await;
        assert!(matches!(read, Err(AheadError::Body(e)) if e.to_string() == "reset"));
        assert_eq!(ahead.prefix(10), (b"ab".to_vec(), false));
        let first = ahead.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), Bytes::from_static(b"ab"));
        assert!(ahead.frame().await.unwrap().is_err());
        assert!(ahead.frame().await.is_none());
    }

    #[tokio::test]
    async fn a_body_that_stalls_is_reported() {
        let stalled = StreamBody::new(futures_util::stream::pending::<
            Result<Frame<Bytes>, std::io::Error>,
        >());
        let mut ahead = ReadAhead::new(stalled);
        let read = ahead.read(1, Some(Duration::from_millis(10))).await;
        assert!(matches!(read, Err(AheadError::Stalled)));
    }
}
