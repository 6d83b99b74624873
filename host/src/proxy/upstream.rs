//! Upstream connections: Switchyard's own pool of connections to a
//! pool's instances (HTTP/1.1 kept alive, HTTP/2 multiplexed; TLS to
//! `https://` instances).
//!
//! Why not hyper-util's pooled client: per request it hashes a
//! scheme-and-authority key under one lock shared by every worker, races
//! a checkout against a new connection, and spawns a task that waits for
//! the connection to be ready again before returning it to the pool.
//! Here a connection goes back to its pool when the response body ends
//! (the proxy is streaming it anyway), idle connections are kept per
//! worker thread (as each nginx worker keeps its own `keepalive` cache),
//! by instance id, last in first out (the warmest first), so a request
//! takes one uncontended lock and no allocation to find one. At most
//! `max_idle_connections` are kept per instance and thread (nginx's
//! `keepalive`); the one idle longest goes first.
//!
//! A kept connection can be closed by the instance just as a request is
//! sent on it (its keep-alive timeout firing): the request fails before
//! any answer. [`Upstreams::request_or_resend`] sends such a request once
//! more on a new connection when it may be repeated (RFC 9112 §9.3.1, as
//! nginx does), without it counting as an attempt.
//!
//! Each connection still has its task (hyper's `Connection` future),
//! which reads and writes the socket, over TLS for `https://` instances
//! (the handshake is part of connecting: a failed one is a connect
//! failure, for health, breakers and retries alike).
//!
//! HTTP/2 (`protocol = "h2"`, or `"auto"` when ALPN settles on it) keeps
//! one connection per instance and thread stripe instead, its sender
//! shared by the requests of those threads (streams multiplexed), as each
//! Envoy worker keeps its own HTTP/2 connection per host.

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
use hyper::client::conn::{http1, http2};
use prometheus_client::metrics::counter::Counter;

use super::pool::UpstreamBody;
use crate::balance::{Endpoint, EndpointId};
use crate::config::UpstreamProtocol;
use crate::dial::{Connected, UpstreamError, open};
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
    /// Idle HTTP/1.1 connections kept per instance and stripe.
    max_idle: usize,
    /// Requests sent again after a kept connection closed under them.
    resends: Counter,
    /// The HTTP version spoken to the instances.
    protocol: UpstreamProtocol,
    /// Idle HTTP/1.1 connections per stripe, indexed by instance id,
    /// oldest first.
    idle: Box<[Mutex<Vec<Vec<Idle>>>]>,
    /// The HTTP/2 connection per stripe, indexed by instance id, shared by
    /// the requests of that stripe's threads.
    multiplexed: Box<[Mutex<Vec<Multiplexed>>]>,
    /// Whether the sweeper task runs (started with the first connection).
    sweeping: AtomicBool,
}

/// An idle keep-alive connection.
struct Idle {
    sender: http1::SendRequest<UpstreamBody>,
    since: Instant,
}

/// A stripe's HTTP/2 connection to one instance.
#[derive(Default)]
struct Multiplexed {
    sender: Option<http2::SendRequest<UpstreamBody>>,
    /// When the last request was sent on it: a connection unused for
    /// `idle_timeout_ms` is let go (it closes once its streams end).
    used: Option<Instant>,
    /// Held while the connection is being opened: requests that arrive
    /// meanwhile wait for it instead of opening their own.
    opening: Arc<tokio::sync::Mutex<()>>,
}

impl Upstreams {
    /// Connections speaking `protocol`, opened within `connect_timeout`
    /// (the TLS handshake included), over `tls` to `https://` instances,
    /// kept while idle for at most `idle_timeout`, at most `max_idle` of
    /// them per instance and thread stripe (the pool's `protocol`,
    /// `connect_timeout_ms`, `tls`, `idle_timeout_ms` and
    /// `max_idle_connections`); requests sent again on a new connection
    /// are counted in `resends`.
    pub fn new(
        protocol: UpstreamProtocol,
        connect_timeout: Duration,
        idle_timeout: Duration,
        max_idle: usize,
        tls: Arc<UpstreamTls>,
        resends: Counter,
    ) -> Arc<Self> {
        Arc::new(Self {
            connect_timeout,
            tls,
            protocol,
            idle_timeout,
            max_idle,
            resends,
            idle: (0..STRIPES).map(|_| Mutex::default()).collect(),
            multiplexed: (0..STRIPES).map(|_| Mutex::default()).collect(),
            sweeping: AtomicBool::new(false),
        })
    }

    /// Sends `request` (its URI in origin form, `/path?query`) to
    /// `endpoint` with a `Host` header naming the instance when it has
    /// none: over HTTP/2, on this thread stripe's connection to it (opened
    /// if there is none); over HTTP/1.1, on an idle connection of this
    /// thread's, else on a new one. A request that an idle connection could
    /// not take (closed by the instance meanwhile) is sent on the next one;
    /// an HTTP/1.1 response body gives the connection back when it ends (a
    /// 101 answer's connection is the upgrade's instead).
    ///
    /// # Errors
    /// [`UpstreamError`]: no connection ([`is_connect`](UpstreamError::is_connect),
    /// which includes an instance that does not speak the HTTP/2 it was
    /// asked for), or the exchange failed.
    pub async fn request(
        self: &Arc<Self>,
        endpoint: &Endpoint,
        request: Request<UpstreamBody>,
    ) -> Result<Response<PooledBody>, UpstreamError> {
        self.send(endpoint, request, true).await
    }

    /// [`request`](Self::request) of the request `build(false)` makes;
    /// should that fail on a kept connection ([`UpstreamError::is_stale`])
    /// and the request be `resendable` (may be repeated, and its body can
    /// be), the request `build(true)` makes goes once more, on a new
    /// connection. Not an attempt of its own: the caller books one outcome.
    ///
    /// # Errors
    /// As [`request`](Self::request), of the last request sent.
    pub async fn request_or_resend(
        self: &Arc<Self>,
        endpoint: &Endpoint,
        resendable: bool,
        mut build: impl FnMut(bool) -> Request<UpstreamBody>,
    ) -> Result<Response<PooledBody>, UpstreamError> {
        match self.send(endpoint, build(false), true).await {
            Err(error) if error.is_stale() && resendable => {
                tracing::debug!(instance = %endpoint.url, error = %super::forward::error_chain(&error), "a kept connection failed before any answer; sending again on a new one");
                self.resends.inc();
                self.send(endpoint, build(true), false).await
            }
            other => other,
        }
    }

    /// [`request`](Self::request), on an idle HTTP/1.1 connection only when
    /// `reuse` says so.
    async fn send(
        self: &Arc<Self>,
        endpoint: &Endpoint,
        mut request: Request<UpstreamBody>,
        reuse: bool,
    ) -> Result<Response<PooledBody>, UpstreamError> {
        ensure_host(&mut request, &endpoint.authority);
        if self.protocol != UpstreamProtocol::Http1
            && let Some(sender) = self.multiplexed(endpoint.id)
        {
            return send_h2(sender, endpoint, request, false).await;
        }
        loop {
            let idle = if reuse {
                self.checkout(endpoint.id)
            } else {
                None
            };
            let (mut sender, reused) = match idle {
                Some(sender) => (sender, true),
                // Boxed: connecting (a TLS handshake's state included) is
                // rare and large; inline, it would swell every request's
                // future, which the data path moves and allocates.
                None => match Box::pin(self.open_new(endpoint)).await? {
                    (Connected::Http1(sender), _) => (sender, false),
                    (Connected::H2(sender), fresh) => {
                        return send_h2(sender, endpoint, request, fresh).await;
                    }
                },
            };
            if let Err(e) = sender.ready().await {
                if reused {
                    continue;
                }
                return Err(UpstreamError::send(e, false));
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
                    _ => return Err(UpstreamError::send(e.into_error(), reused)),
                },
            }
        }
    }

    /// A new connection to `endpoint`, and whether it is new. HTTP/2
    /// connections are opened one at a time per instance and stripe: a
    /// request that arrives while one is being opened waits for it and
    /// shares it (then it is not new).
    async fn open_new(
        self: &Arc<Self>,
        endpoint: &Endpoint,
    ) -> Result<(Connected<UpstreamBody>, bool), UpstreamError> {
        let multiplexes = match self.protocol {
            UpstreamProtocol::Http1 => false,
            UpstreamProtocol::H2 => true,
            // Only TLS can settle on HTTP/2 (ALPN); plain TCP is HTTP/1.1.
            UpstreamProtocol::Auto => endpoint.url.starts_with("https://"),
        };
        if !multiplexes {
            return Ok((self.connect(endpoint).await?, true));
        }
        let opening = {
            let mut stripe = self.multiplexed_stripe();
            Arc::clone(&slot(&mut stripe, endpoint.id).opening)
        };
        let _turn = opening.lock().await;
        if let Some(sender) = self.multiplexed(endpoint.id) {
            return Ok((Connected::H2(sender), false));
        }
        let connected = self.connect(endpoint).await?;
        if let Connected::H2(sender) = &connected {
            let mut stripe = self.multiplexed_stripe();
            let entry = slot(&mut stripe, endpoint.id);
            entry.sender = Some(sender.clone());
            entry.used = Some(Instant::now());
        }
        Ok((connected, true))
    }

    /// The HTTP/2 table of this thread's stripe.
    fn multiplexed_stripe(&self) -> std::sync::MutexGuard<'_, Vec<Multiplexed>> {
        self.multiplexed[crate::threads::thread_index() % STRIPES]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// This stripe's open HTTP/2 connection to instance `id`, if any, for
    /// a request sent now (a closed one, or one unused past the idle
    /// timeout, is let go).
    fn multiplexed(&self, id: EndpointId) -> Option<http2::SendRequest<UpstreamBody>> {
        let now = Instant::now();
        let mut stripe = self.multiplexed_stripe();
        let entry = stripe.get_mut(id as usize)?;
        if !self.usable(entry, now) {
            entry.sender = None;
            return None;
        }
        entry.used = Some(now);
        entry.sender.clone()
    }

    /// Whether `entry` holds an open HTTP/2 connection used within the
    /// idle timeout before `now`.
    fn usable(&self, entry: &Multiplexed, now: Instant) -> bool {
        entry.sender.as_ref().is_some_and(|s| !s.is_closed())
            && entry
                .used
                .is_some_and(|used| now.duration_since(used) < self.idle_timeout)
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
    /// closed, or none may be kept); the ones idle past the timeout go, and
    /// the one idle longest when the stripe holds `max_idle` already.
    /// A connection let go closes once its sender is dropped.
    fn give_back(&self, id: EndpointId, sender: http1::SendRequest<UpstreamBody>) {
        if sender.is_closed() || self.max_idle == 0 {
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
        if idle.len() >= self.max_idle {
            idle.drain(..=idle.len() - self.max_idle);
        }
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

    /// Drops the connections idle past the timeout, HTTP/1.1 and HTTP/2,
    /// in every stripe (a connection to an instance that gets no more
    /// requests would otherwise stay open until the instance closes it).
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
        for stripe in &self.multiplexed {
            let mut stripe = stripe.lock().unwrap_or_else(PoisonError::into_inner);
            for entry in stripe.iter_mut() {
                if !self.usable(entry, now) {
                    entry.sender = None;
                }
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

    /// A new connection to `endpoint` (see [`open`]) within the connect
    /// timeout.
    async fn connect(
        self: &Arc<Self>,
        endpoint: &Endpoint,
    ) -> Result<Connected<UpstreamBody>, UpstreamError> {
        self.start_sweeper();
        tokio::time::timeout(
            self.connect_timeout,
            open(&self.tls, endpoint.address(), self.protocol),
        )
        .await
        .map_err(|_| {
            UpstreamError::connect(format!(
                "no connection within {} ms",
                self.connect_timeout.as_millis()
            ))
        })?
    }
}

/// The ALPN protocols a pool speaking `protocol` offers its `https://`
/// instances, in order of preference.
pub fn alpn(protocol: UpstreamProtocol) -> Vec<Vec<u8>> {
    match protocol {
        UpstreamProtocol::Http1 => vec![b"http/1.1".to_vec()],
        UpstreamProtocol::H2 => vec![b"h2".to_vec()],
        UpstreamProtocol::Auto => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
    }
}

/// Instance `id`'s entry of a stripe's HTTP/2 table, made if missing.
fn slot(stripe: &mut Vec<Multiplexed>, id: EndpointId) -> &mut Multiplexed {
    let at = id as usize;
    if stripe.len() <= at {
        stripe.resize_with(at + 1, Multiplexed::default);
    }
    &mut stripe[at]
}

/// Sends `request` on the HTTP/2 connection `sender` to `endpoint`. On a
/// `fresh` connection, a failure before any answer means the instance
/// does not speak HTTP/2 (its HTTP/1 answer to the preface comes as a
/// protocol error or as the connection closing, whichever hyper sees
/// first), or dropped the connection at once: a connect failure.
async fn send_h2(
    sender: http2::SendRequest<UpstreamBody>,
    endpoint: &Endpoint,
    request: Request<UpstreamBody>,
    fresh: bool,
) -> Result<Response<PooledBody>, UpstreamError> {
    match Connected::H2(sender)
        .send(endpoint.address(), request)
        .await
    {
        Ok(response) => Ok(response.map(PooledBody::unpooled)),
        // Whether the HTTP/1 answer to the preface came as a protocol error
        // or as the connection closing under the request.
        Err(e) if fresh => Err(UpstreamError::connect(format!(
            "the instance does not speak HTTP/2 (protocol = \"h2\"), or closed the new connection: {e}"
        ))),
        Err(e) => Err(UpstreamError::send(e, false)),
    }
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
