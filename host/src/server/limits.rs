//! Bounds on client connections: how many may be open (in all and per
//! client IP address), how long one may sit idle, the process's
//! file-descriptor limit, and a warning that cannot storm the log.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
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
///
/// # At the cap: eviction before refusal
///
/// When `max` connections are open, a new one does not simply lose to
/// whoever came first — a client holding many connections that never
/// finish a request head (slowloris) would lock everyone else out until
/// `header_read_timeout_ms`. Instead the cheapest connection to lose is
/// closed and the new one admitted: first the one that has waited longest
/// without completing a request head, then the keep-alive connection idle
/// longest; a connection with a request in flight, or upgraded (a
/// WebSocket, a CONNECT tunnel), is never evicted. Only when every one is
/// busy is the new connection refused. Envoy's overload manager and
/// HAProxy likewise close idle connections first under pressure.
/// Evictions are counted and logged (at most one line per 10 s). The
/// choice scans the open connections: it costs O(open) per eviction, paid
/// only at the cap.
#[derive(Debug)]
pub struct Connections {
    max: usize,
    /// 0 = no per-address cap.
    per_ip: usize,
    open: AtomicUsize,
    by_ip: Mutex<HashMap<IpAddr, usize>>,
    /// Every open connection's activity, by a number of its own.
    registry: Mutex<HashMap<u64, Arc<Activity>>>,
    next_id: AtomicU64,
    refused: Counter,
    evicted: Counter,
    warning: Throttle,
    eviction_warning: Throttle,
}

impl Connections {
    /// At most `max` open connections, `per_ip` per client address (0 =
    /// no per-address cap); refusals and evictions are counted in
    /// `(refused, evicted)` (the listener's metrics).
    pub fn new(max: usize, per_ip: usize, (refused, evicted): (Counter, Counter)) -> Arc<Self> {
        Arc::new(Self {
            max,
            per_ip,
            open: AtomicUsize::new(0),
            by_ip: Mutex::new(HashMap::new()),
            registry: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            refused,
            evicted,
            warning: Throttle::new(Duration::from_secs(10)),
            eviction_warning: Throttle::new(Duration::from_secs(10)),
        })
    }

    /// Connections refused since start.
    pub fn refused(&self) -> u64 {
        self.refused.get()
    }

    /// Connections evicted to make room since start.
    pub fn evicted(&self) -> u64 {
        self.evicted.get()
    }

    /// A slot for a connection from `ip` whose activity is `activity`, held
    /// while it is open. At the listener's cap another connection is
    /// evicted to make room when one can be (see [`Connections`]).
    ///
    /// # Errors
    /// A [`Refusal`] when a cap is reached and nothing can be evicted
    /// (counted, and warned about at most every 10 s).
    pub fn admit(
        self: &Arc<Self>,
        ip: IpAddr,
        activity: &Arc<Activity>,
    ) -> Result<ConnectionSlot, Refusal> {
        let refused = |why: Refusal| {
            self.refused.inc();
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
            if !self.evict_one() {
                return refused(Refusal::Total);
            }
            // The evicted connection gives its place back as it closes.
            self.open.fetch_add(1, Ordering::AcqRel);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.registry
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, Arc::clone(activity));
        let mut slot = ConnectionSlot {
            connections: Arc::clone(self),
            id,
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

    /// Closes the open connection that is cheapest to lose, if any is
    /// evictable: the one waiting longest for a request head, else the one
    /// idle longest.
    fn evict_one(&self) -> bool {
        let victim = {
            let registry = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
            registry
                .values()
                .filter(|a| a.is_evictable())
                .min_by_key(|a| a.eviction_rank())
                .map(Arc::clone)
        };
        let Some(victim) = victim else {
            return false;
        };
        let unfinished = !victim.served.load(Ordering::Relaxed);
        victim.evict();
        let evicted = self.evicted.inc() + 1;
        if let Some(held) = self.eviction_warning.pass() {
            tracing::warn!(
                max_connections = self.max,
                evicted_since_last_warning = held + 1,
                evicted_since_start = evicted,
                closed = if unfinished {
                    "the connection waiting longest for a request head"
                } else {
                    "the longest-idle keep-alive connection"
                },
                "connection limit reached; closed a connection to admit a new one"
            );
        }
        true
    }
}

/// One open connection's place under its listener's caps; given back when
/// dropped.
#[derive(Debug)]
pub struct ConnectionSlot {
    connections: Arc<Connections>,
    /// Its number in the registry.
    id: u64,
    /// Counted per address too.
    ip: Option<IpAddr>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.connections
            .registry
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
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

/// What a connection last did, for its idle timeout and for eviction at
/// the cap: when a byte last went either way, how many requests wait for
/// their answer's head, whether a request head ever arrived, whether it
/// was upgraded, and whether it was told to close.
#[derive(Debug)]
pub struct Activity {
    /// When it opened.
    epoch: Instant,
    /// Milliseconds from `epoch` to the last byte read or written.
    last_ms: AtomicU64,
    waiting: AtomicUsize,
    /// A request head was complete at least once.
    served: AtomicBool,
    /// Upgraded (101) or tunnelling (CONNECT): never evicted.
    upgraded: AtomicBool,
    /// Chosen for eviction.
    evicted: AtomicBool,
    evict: Notify,
}

impl Activity {
    /// A connection that just opened.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            epoch: Instant::now(),
            last_ms: AtomicU64::new(0),
            waiting: AtomicUsize::new(0),
            served: AtomicBool::new(false),
            upgraded: AtomicBool::new(false),
            evicted: AtomicBool::new(false),
            evict: Notify::new(),
        })
    }

    /// Marks the connection upgraded (a WebSocket, a tunnel): it is never
    /// evicted.
    pub fn upgrade(&self) {
        self.upgraded.store(true, Ordering::Relaxed);
    }

    /// Completes once the connection is chosen for eviction at the cap.
    pub async fn evicted(&self) {
        self.evict.notified().await;
    }

    fn evict(&self) {
        self.evicted.store(true, Ordering::Relaxed);
        self.evict.notify_one();
    }

    fn is_evictable(&self) -> bool {
        self.waiting.load(Ordering::Acquire) == 0
            && !self.upgraded.load(Ordering::Relaxed)
            && !self.evicted.load(Ordering::Relaxed)
    }

    /// Lower goes first: never a complete head before a kept-alive
    /// connection, then the longest waiting (since it opened) or idle
    /// (since its last byte).
    fn eviction_rank(&self) -> (bool, Instant) {
        if self.served.load(Ordering::Relaxed) {
            (true, self.last())
        } else {
            (false, self.epoch)
        }
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
        self.served.store(true, Ordering::Relaxed);
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

impl Waiting {
    /// The connection the request came on.
    pub fn connection(&self) -> &Activity {
        &self.0
    }
}

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

    /// A connection with a request waiting for its answer.
    fn busy() -> (Arc<Activity>, Waiting) {
        let activity = Activity::new();
        let waiting = activity.waiting();
        (activity, waiting)
    }

    #[tokio::test]
    async fn caps_count_in_all_and_per_address_and_free_on_drop() {
        let connections = Connections::new(3, 2, Default::default());
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let (busy_a1, _w1) = busy();
        let (busy_a2, _w2) = busy();
        let (busy_b1, _w3) = busy();
        let a1 = connections.admit(a, &busy_a1).unwrap();
        let _a2 = connections.admit(a, &busy_a2).unwrap();
        assert_eq!(
            connections.admit(a, &Activity::new()).unwrap_err(),
            Refusal::PerIp
        );
        let _b1 = connections.admit(b, &busy_b1).unwrap();
        assert_eq!(
            connections.admit(b, &Activity::new()).unwrap_err(),
            Refusal::Total
        );
        drop(a1);
        let _a3 = connections.admit(a, &Activity::new()).unwrap();
        assert_eq!((connections.refused(), connections.evicted()), (2, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn at_the_cap_the_longest_unfinished_then_the_longest_idle_is_evicted() {
        let connections = Connections::new(3, 0, Default::default());
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        // A kept-alive connection idle since its first request …
        let idle = Activity::new();
        drop(idle.waiting());
        let _idle = connections.admit(ip, &idle).unwrap();
        tokio::time::advance(Duration::from_secs(1)).await;
        // … one that never sent a whole head, older than …
        let unfinished = Activity::new();
        let _unfinished = connections.admit(ip, &unfinished).unwrap();
        tokio::time::advance(Duration::from_secs(1)).await;
        // … a busy one, never evicted.
        let (working, _waiting) = busy();
        let _working = connections.admit(ip, &working).unwrap();

        let first = Activity::new();
        let _first = connections.admit(ip, &first).unwrap();
        assert!(unfinished.evicted.load(Ordering::Relaxed));
        assert!(!idle.evicted.load(Ordering::Relaxed));
        // `first` completes a request: no unfinished one is left, so the
        // keep-alive connection idle longest goes next …
        drop(first.waiting());
        let second = Activity::new();
        let _second = connections.admit(ip, &second).unwrap();
        assert!(idle.evicted.load(Ordering::Relaxed));
        assert!(!first.evicted.load(Ordering::Relaxed));
        // … and an unfinished one before any kept-alive one.
        let third = Activity::new();
        let _third = connections.admit(ip, &third).unwrap();
        assert!(second.evicted.load(Ordering::Relaxed));
        assert!(!first.evicted.load(Ordering::Relaxed) && !working.evicted.load(Ordering::Relaxed));
        assert_eq!(connections.evicted(), 3);
        // Upgraded connections stay too: with only those, busy ones and
        // ones already closing, the new one is refused.
        first.upgrade();
        third.upgrade();
        assert_eq!(
            connections.admit(ip, &Activity::new()).unwrap_err(),
            Refusal::Total
        );
        assert_eq!(connections.refused(), 1);
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
