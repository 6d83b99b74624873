//! Bounds on client connections: how many may be open (in all and per
//! client IP address), how long one may sit idle, the process's
//! file-descriptor limit, and a warning that cannot storm the log.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// File descriptors kept for everything but client connections (upstream
/// connections are counted as one per client connection besides).
const RESERVED_FDS: u64 = 256;

/// Raises the soft limit on open files to the hard limit (as nginx's
/// `worker_rlimit_nofile` lets operators do), once per process, and
/// returns the soft limit then in force (`None` where it cannot be read).
pub fn raise_nofile_limit() -> Option<u64> {
    static RAISED: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *RAISED.get_or_init(|| match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => {
            tracing::debug!(limit, "open-file limit");
            Some(limit)
        }
        Err(error) => {
            tracing::warn!(%error, "cannot raise the open-file limit");
            None
        }
    })
}

/// The client connections a listener may hold: `configured` (default
/// [`ListenerConfig::MAX_CONNECTIONS`](crate::config::ListenerConfig::MAX_CONNECTIONS)),
/// within what `nofile`, the process's open-file limit, allows: each client
/// connection may also hold an upstream one, and `RESERVED_FDS` are kept
/// for the rest.
pub fn connection_cap(configured: Option<u32>, nofile: Option<u64>) -> usize {
    let configured = configured.unwrap_or(crate::config::ListenerConfig::MAX_CONNECTIONS) as usize;
    match nofile {
        Some(limit) => {
            let fit = (limit.saturating_sub(RESERVED_FDS) / 2).max(1);
            configured.min(usize::try_from(fit).unwrap_or(usize::MAX))
        }
        None => configured,
    }
}

/// A log line that is written at most once per interval; the times it was
/// held back are counted and reported with the next one.
#[derive(Debug)]
pub struct Throttle {
    every: Duration,
    last: Mutex<Option<Instant>>,
    held: AtomicU64,
}

impl Throttle {
    /// At most one line per `every`.
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            last: Mutex::new(None),
            held: AtomicU64::new(0),
        }
    }

    /// `Some(n)` when a line may be written now (`n` lines were held back
    /// since the last one); `None` when it is held back.
    pub fn pass(&self) -> Option<u64> {
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        if last.is_some_and(|at| now.duration_since(at) < self.every) {
            self.held.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *last = Some(now);
        Some(self.held.swap(0, Ordering::Relaxed))
    }
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The listener holds `max_connections`.
    Total,
    /// The client's address holds `max_connections_per_ip`.
    PerIp,
}

/// The open client connections of one listener and their caps.
#[derive(Debug)]
pub struct Connections {
    max: usize,
    /// 0 = no per-address cap.
    per_ip: usize,
    open: AtomicUsize,
    by_ip: Mutex<HashMap<IpAddr, usize>>,
    refused: AtomicU64,
    warning: Throttle,
}

impl Connections {
    /// At most `max` open connections, `per_ip` per client address (0 =
    /// no per-address cap).
    pub fn new(max: usize, per_ip: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            per_ip,
            open: AtomicUsize::new(0),
            by_ip: Mutex::new(HashMap::new()),
            refused: AtomicU64::new(0),
            warning: Throttle::new(Duration::from_secs(10)),
        })
    }

    /// Connections refused since start.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// A slot for a connection from `ip`, held while it is open.
    ///
    /// # Errors
    /// A [`Refusal`] when a cap is reached (counted, and warned about at
    /// most every 10 s).
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<ConnectionSlot, Refusal> {
        let refused = |why: Refusal| {
            self.refused.fetch_add(1, Ordering::Relaxed);
            if let Some(held) = self.warning.pass() {
                tracing::warn!(
                    ?why,
                    max_connections = self.max,
                    max_connections_per_ip = self.per_ip,
                    refused_since_last_warning = held + 1,
                    "connection limit reached; refusing new connections"
                );
            }
            Err(why)
        };
        if self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .is_err()
        {
            return refused(Refusal::Total);
        }
        let mut slot = ConnectionSlot {
            connections: Arc::clone(self),
            ip: None,
        };
        if self.per_ip > 0 {
            let mut by_ip = self.by_ip.lock().unwrap_or_else(PoisonError::into_inner);
            let count = by_ip.entry(ip).or_insert(0);
            if *count >= self.per_ip {
                drop(by_ip);
                return refused(Refusal::PerIp);
            }
            *count += 1;
            slot.ip = Some(ip);
        }
        Ok(slot)
    }
}

/// One open connection's place under its listener's caps; given back when
/// dropped.
#[derive(Debug)]
pub struct ConnectionSlot {
    connections: Arc<Connections>,
    /// Counted per address too.
    ip: Option<IpAddr>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        if let Some(ip) = self.ip {
            let mut by_ip = self
                .connections
                .by_ip
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(count) = by_ip.get_mut(&ip) {
                *count -= 1;
                if *count == 0 {
                    by_ip.remove(&ip);
                }
            }
        }
        self.connections.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What a connection last did, for its idle timeout: when a byte last
/// went either way, and how many requests wait for their answer's head.
#[derive(Debug)]
pub struct Activity {
    epoch: Instant,
    /// Milliseconds from `epoch` to the last byte read or written.
    last_ms: AtomicU64,
    waiting: AtomicUsize,
}

impl Activity {
    /// A connection that just opened.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            epoch: Instant::now(),
            last_ms: AtomicU64::new(0),
            waiting: AtomicUsize::new(0),
        })
    }

    fn touch(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.epoch + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    /// Counts a request as waiting for its answer until the guard drops.
    pub fn waiting(self: &Arc<Self>) -> Waiting {
        self.waiting.fetch_add(1, Ordering::AcqRel);
        Waiting(Arc::clone(self))
    }

    /// Completes once the connection has had no byte either way for
    /// `timeout` and no request waits for its answer.
    pub async fn idle(&self, timeout: Duration) {
        let mut due = self.last() + timeout;
        loop {
            tokio::time::sleep_until(due).await;
            let now = Instant::now();
            if self.waiting.load(Ordering::Acquire) > 0 {
                due = now + timeout;
                continue;
            }
            let idle_until = self.last() + timeout;
            if idle_until <= now {
                return;
            }
            due = idle_until;
        }
    }
}

/// A request waiting for its answer (see [`Activity::waiting`]).
#[derive(Debug)]
pub struct Waiting(Arc<Activity>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.touch();
        self.0.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A connection's socket that records its [`Activity`].
#[derive(Debug)]
pub struct IdleIo<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T> IdleIo<T> {
    /// `inner`, recording into `activity`.
    pub fn new(inner: T, activity: Arc<Activity>) -> Self {
        Self { inner, activity }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for IdleIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.touch();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for IdleIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_room_for_upstream_connections_and_the_rest() {
        assert_eq!(connection_cap(Some(10_000), Some(1024)), 384);
        assert_eq!(connection_cap(Some(10_000), Some(1_048_576)), 10_000);
        assert_eq!(connection_cap(Some(10_000), None), 10_000);
        assert_eq!(connection_cap(Some(10_000), Some(10)), 1);
        assert_eq!(connection_cap(None, Some(20_000)), 9_872);
        assert_eq!(connection_cap(None, Some(1 << 30)), 1_000_000);
    }

    #[tokio::test]
    async fn caps_count_in_all_and_per_address_and_free_on_drop() {
        let connections = Connections::new(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = connections.admit(a).unwrap();
        let _a2 = connections.admit(a).unwrap();
        assert_eq!(connections.admit(a).unwrap_err(), Refusal::PerIp);
        let _b1 = connections.admit(b).unwrap();
        assert_eq!(connections.admit(b).unwrap_err(), Refusal::Total);
        drop(a1);
        let _a3 = connections.admit(a).unwrap();
        assert_eq!(connections.refused(), 2);
    }

    #[test]
    fn a_throttled_line_passes_once_per_interval_and_counts_the_rest() {
        let throttle = Throttle::new(Duration::from_secs(3600));
        assert_eq!(throttle.pass(), Some(0));
        assert_eq!(throttle.pass(), None);
        assert_eq!(throttle.pass(), None);
        assert_eq!(throttle.held.load(Ordering::Relaxed), 2);
    }
}
