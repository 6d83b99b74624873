//! Upstream connections: Switchyard's own keep-alive pool of HTTP/1.1
//! connections to a pool's instances.
//!
//! Why not hyper-util's pooled client: per request it hashes a
//! scheme-and-authority key under one lock shared by every worker, races
//! a checkout against a new connection, and spawns a task that waits for
//! the connection to be ready again before returning it to the pool.
//! Here a connection goes back to its pool when the response body ends
//! (the proxy is streaming it anyway), idle connections are kept per
//! worker thread (as each nginx worker keeps its own `keepalive` cache),
//! by instance id, last in first out (the warmest first), so a request
//! takes one uncontended lock and no allocation to find one.
//!
//! Each connection still has its task (hyper's `Connection` future),
//! which reads and writes the socket, over TLS for `https://` instances
//! (the handshake is part of connecting: a failed one is a connect
//! failure, for health, breakers and retries alike). The shape leaves room
//! for HTTP/2 (a sender shared by many requests instead of taken by one).

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::HOST;
use http::uri::Authority;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::pool::UpstreamBody;
use crate::balance::{Endpoint, EndpointId};
use crate::tls::UpstreamTls;

/// Stripes of the idle-connection table; threads map onto them by
/// [`thread_index`](crate::threads::thread_index).
const STRIPES: usize = 16;

/// A pool's upstream connections: how to open one, and the idle ones.
pub struct Upstreams {
    connect_timeout: Duration,
    /// TLS to the `https://` instances.
    tls: Arc<UpstreamTls>,
    idle_timeout: Duration,
    /// Idle connections per stripe, indexed by instance id, oldest first.
    idle: Box<[Mutex<Vec<Vec<Idle>>>]>,
    /// Whether the sweeper task runs (started with the first connection).
    sweeping: AtomicBool,
}

/// An idle keep-alive connection.
struct Idle {
    sender: http1::SendRequest<UpstreamBody>,
    since: Instant,
}

/// Why an upstream request failed.
#[derive(Debug)]
pub struct UpstreamError {
    connect: bool,
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl UpstreamError {
    /// Whether no connection could be opened (nothing was sent): refused,
    /// unreachable, a name that does not resolve, or past
    /// `connect_timeout_ms`.
    pub fn is_connect(&self) -> bool {
        self.connect
    }

    fn connect(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self {
            connect: true,
            source: source.into(),
        }
    }

    fn send(source: hyper::Error) -> Self {
        Self {
            connect: false,
            source: source.into(),
        }
    }
}

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.connect {
            "cannot connect"
        } else {
            "request failed"
        })
    }
}

impl std::error::Error for UpstreamError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

impl Upstreams {
    /// Connections opened within `connect_timeout` (the TLS handshake
    /// included), over `tls` to `https://` instances, kept while idle for
    /// at most `idle_timeout` (the pool's `connect_timeout_ms`, `tls` and
    /// `idle_timeout_ms`).
    pub fn new(
        connect_timeout: Duration,
        idle_timeout: Duration,
        tls: Arc<UpstreamTls>,
    ) -> Arc<Self> {
        Arc::new(Self {
            connect_timeout,
            tls,
            idle_timeout,
            idle: (0..STRIPES).map(|_| Mutex::default()).collect(),
            sweeping: AtomicBool::new(false),
        })
    }

    /// Sends `request` (its URI in origin form, `/path?query`) to
    /// `endpoint` on an idle connection of this thread's, else on a new one,
    /// with a `Host` header naming the instance when it has none. A request that
    /// an idle connection could not take (closed by the instance meanwhile)
    /// is sent on the next one; the response body gives the connection back
    /// when it ends (a 101 answer's connection is the upgrade's instead).
    ///
    /// # Errors
    /// [`UpstreamError`]: no connection ([`is_connect`](UpstreamError::is_connect)),
    /// or the exchange failed.
    pub async fn request(
        self: &Arc<Self>,
        endpoint: &Endpoint,
        mut request: Request<UpstreamBody>,
    ) -> Result<Response<PooledBody>, UpstreamError> {
        ensure_host(&mut request, &endpoint.authority);
        loop {
            let (mut sender, reused) = match self.checkout(endpoint.id) {
                Some(sender) => (sender, true),
                None => {
                    self.start_sweeper();
                    (self.connect(endpoint).await?, false)
                }
            };
            if let Err(e) = sender.ready().await {
                if reused {
                    continue;
                }
                return Err(UpstreamError::send(e));
            }
            match sender.try_send_request(request).await {
                Ok(response) if response.status() == StatusCode::SWITCHING_PROTOCOLS => {
                    // The connection becomes the upgrade's: not pooled.
                    return Ok(response.map(PooledBody::unpooled));
                }
                Ok(response) => {
                    let give_back = GiveBack {
                        upstreams: Arc::clone(self),
                        id: endpoint.id,
                        sender,
                    };
                    return Ok(response.map(|body| PooledBody::new(body, give_back)));
                }
                Err(mut e) => match e.take_message() {
                    // Not sent: the connection closed as it was taken.
                    Some(unsent) if reused => request = unsent,
                    _ => return Err(UpstreamError::send(e.into_error())),
                },
            }
        }
    }

    /// The TLS client for `https://` instances.
    pub fn tls(&self) -> &Arc<UpstreamTls> {
        &self.tls
    }

    /// The idle table of this thread's stripe.
    fn stripe(&self) -> std::sync::MutexGuard<'_, Vec<Vec<Idle>>> {
        self.idle[crate::threads::thread_index() % STRIPES]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The most recently idle open connection to instance `id`, if any;
    /// connections idle past the timeout or closed are dropped.
    fn checkout(&self, id: EndpointId) -> Option<http1::SendRequest<UpstreamBody>> {
        let mut stripe = self.stripe();
        let idle = stripe.get_mut(id as usize)?;
        let now = Instant::now();
        while let Some(c) = idle.pop() {
            if now.duration_since(c.since) < self.idle_timeout && !c.sender.is_closed() {
                return Some(c.sender);
            }
        }
        None
    }

    /// Keeps `sender` as an idle connection to instance `id` (unless it is
    /// closed); the ones idle past the timeout go.
    fn give_back(&self, id: EndpointId, sender: http1::SendRequest<UpstreamBody>) {
        if sender.is_closed() {
            return;
        }
        let now = Instant::now();
        let mut stripe = self.stripe();
        let at = id as usize;
        if stripe.len() <= at {
            stripe.resize_with(at + 1, Vec::new);
        }
        let idle = &mut stripe[at];
        let expired = idle
            .iter()
            .take_while(|c| now.duration_since(c.since) >= self.idle_timeout)
            .count();
        idle.drain(..expired);
        idle.push(Idle { sender, since: now });
    }

    /// Starts, once, the task that sweeps idle connections every half idle
    /// timeout (at least every second, at most every minute) while the
    /// pool lives.
    fn start_sweeper(self: &Arc<Self>) {
        if self.sweeping.swap(true, Ordering::Relaxed) {
            return;
        }
        let every = (self.idle_timeout / 2).clamp(Duration::from_secs(1), Duration::from_secs(60));
        let upstreams = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                match upstreams.upgrade() {
                    Some(u) => u.sweep(),
                    None => return,
                }
            }
        });
    }

    /// Drops the connections idle past the timeout, in every stripe (a
    /// connection to an instance that gets no more requests would
    /// otherwise stay open until the instance closes it).
    fn sweep(&self) {
        let now = Instant::now();
        for stripe in &self.idle {
            let mut stripe = stripe.lock().unwrap_or_else(PoisonError::into_inner);
            for idle in stripe.iter_mut() {
                idle.retain(|c| {
                    now.duration_since(c.since) < self.idle_timeout && !c.sender.is_closed()
                });
            }
        }
    }

    /// Idle connections now, over every stripe.
    pub fn idle_count(&self) -> usize {
        self.idle
            .iter()
            .map(|s| {
                s.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .iter()
                    .map(Vec::len)
                    .sum::<usize>()
            })
            .sum()
    }

    /// A new connection to `endpoint` (port 80, or 443 for `https://`,
    /// when its URL names none), no Nagle, over TLS for `https://`, its
    /// task spawned; all within the connect timeout.
    async fn connect(
        &self,
        endpoint: &Endpoint,
    ) -> Result<http1::SendRequest<UpstreamBody>, UpstreamError> {
        tokio::time::timeout(self.connect_timeout, open(&self.tls, endpoint))
            .await
            .map_err(|_| {
                UpstreamError::connect(format!(
                    "no connection within {} ms",
                    self.connect_timeout.as_millis()
                ))
            })?
    }
}

/// A new HTTP/1.1 connection to `endpoint`, over `tls` when its URL is
/// `https://`, its task spawned (the connection closes when the sender is
/// dropped).
///
/// # Errors
/// [`UpstreamError`] of the connect kind: no TCP connection, a failed TLS
/// handshake, or a failed HTTP/1.1 handshake.
pub async fn open<B>(
    tls: &UpstreamTls,
    endpoint: &Endpoint,
) -> Result<http1::SendRequest<B>, UpstreamError>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let secure = endpoint.url.starts_with("https://");
    let stream = connect_tcp(&endpoint.authority, secure)
        .await
        .map_err(UpstreamError::connect)?;
    if secure {
        let stream = tls
            .connect(host_of(&endpoint.authority), stream)
            .await
            .map_err(|e| UpstreamError::connect(format!("TLS handshake: {e}")))?;
        handshake(stream).await
    } else {
        handshake(stream).await
    }
}

/// The host of `authority`, without an IPv6 address's brackets.
fn host_of(authority: &Authority) -> &str {
    let host = authority.host();
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// A TCP connection to `authority` (its port, else 443 with `tls` or 80),
/// no Nagle.
///
/// # Errors
/// The name does not resolve, or the connection is refused or unreachable.
pub async fn connect_tcp(authority: &Authority, tls: bool) -> std::io::Result<TcpStream> {
    let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let stream = TcpStream::connect((host_of(authority), port)).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// An HTTP/1.1 connection over `io` that can be upgraded (101), its task
/// spawned.
async fn handshake<IO, B>(io: IO) -> Result<http1::SendRequest<B>, UpstreamError>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (sender, connection) = http1::handshake(TokioIo::new(io))
        .await
        .map_err(UpstreamError::connect)?;
    tokio::spawn(async move {
        if let Err(e) = connection.with_upgrades().await {
            tracing::debug!("upstream connection ended: {e}");
        }
    });
    Ok(sender)
}

/// Gives `request` a `Host` header naming `authority` when the client sent
/// none (HTTP/1.1 requires one).
fn ensure_host(request: &mut Request<UpstreamBody>, authority: &Authority) {
    if !request.headers().contains_key(HOST)
        && let Ok(host) = HeaderValue::from_str(authority.as_str())
    {
        request.headers_mut().insert(HOST, host);
    }
}

/// Returns a connection to its pool.
struct GiveBack {
    upstreams: Arc<Upstreams>,
    id: EndpointId,
    sender: http1::SendRequest<UpstreamBody>,
}

/// An upstream response body that gives its connection back to the pool
/// when it ends; dropped before its end, the connection closes with it.
pub struct PooledBody {
    body: Incoming,
    give_back: Option<GiveBack>,
}

impl PooledBody {
    fn new(body: Incoming, give_back: GiveBack) -> Self {
        let mut pooled = Self {
            body,
            give_back: Some(give_back),
        };
        if pooled.body.is_end_stream() {
            pooled.ended();
        }
        pooled
    }

    /// A body whose connection is not given back (it was upgraded).
    fn unpooled(body: Incoming) -> Self {
        Self {
            body,
            give_back: None,
        }
    }

    /// The body ended: its connection can take the next request.
    fn ended(&mut self) {
        if let Some(g) = self.give_back.take() {
            g.upstreams.give_back(g.id, g.sender);
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.ended(),
            Poll::Ready(Some(Ok(_))) if self.body.is_end_stream() => self.ended(),
            Poll::Ready(Some(Err(_))) => self.give_back = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
