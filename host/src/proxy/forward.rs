//! Forwarding one request: route, rank, attempt, stream the answer back.
//!
//! The route picks a pool — its fallback pool instead while the primary has no
//! fit instance (priority failover). The request then goes through the
//! phases of an [`Exchange`] (as pingora-proxy's phases over a per-request
//! context):
//!
//! 1. **start**: the pool's bulkhead admits the request or sheds it (503 +
//!    `Retry-After`); the session is looked up, the pool ranks its
//!    instances, the headers are prepared and the body made replayable when
//!    it is small enough;
//! 2. **next instance**: the first acceptable instance of the ranking that
//!    its circuit breaker admits;
//! 3. **send**: one attempt, booked on the instance (health, breaker,
//!    balancer feedback);
//! 4. **on failure**: the pool's failover policy ([`Failover`]) decides —
//!    retry (first at once on another instance, later ones after a jittered
//!    backoff, within the attempt cap, the retry budget and the request's
//!    deadline: `request_timeout_ms` of the first pool, which no switch to
//!    another pool extends), continue in another pool, answer, or give up;
//! 5. **deliver**: the answer streams back; the session is bound to the
//!    instance if it answered successfully; a GET answer is copied for
//!    stale-if-error;
//! 6. **give up**: the last good answer (stale-if-error), the route's static
//!    fallback, or a JSON error (502, 504).
//!
//! A connect failure or a timed-out attempt also keeps the instance out of
//! rotation for the pool's `fail_timeout_ms`.
//!
//! [`Failover`]: crate::failover::Failover

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{HeaderValue, Request, Response, StatusCode, Uri, Version, header};
use http_body::Body as _;
use http_body_util::{Either, Full};
use smallvec::SmallVec;
use tokio::sync::OwnedSemaphorePermit;

use super::body::ProxyBody;
use super::call::{AfterFailure, AttemptError, FailedAttempt};
use super::client::{self, ClientBody, ClientFault, FaultCell, ListenerRules, Received};
use super::pool::{Pool, UpstreamBody};
use super::recent::Served;
use super::route::{Fallback, PoolRoute, StaticResponse};
use super::upstream::PooledBody;
use super::{ProxyError, Reporting, headers};
use crate::balance::{Affinity, Endpoint, EndpointId, InFlight, Ranking, RequestContext, Sticky};
use crate::failover::{Active, Admission, AttemptFacts, StaleCache};
use crate::policy::AttemptOutcome;

/// The client's request as it arrived, with what routing read from it.
pub(crate) struct Inbound<'a> {
    /// Its head.
    pub(crate) parts: http::request::Parts,
    /// Host the client addressed, without port.
    pub(crate) host: &'a str,
    /// The client's address.
    pub(crate) peer: SocketAddr,
    /// The `Host` header (or URI authority), passed on upstream.
    pub(crate) authority: Option<&'a HeaderValue>,
    /// The listener's limits on the client.
    pub(crate) limits: &'a ListenerRules,
    /// Whether the client came over TLS.
    pub(crate) tls: bool,
}

impl PoolRoute {
    /// Serves `request` on this route: its pool (or fallback pool) with
    /// failover, reporting to `reporting`; `pools` are every pool by name,
    /// for a failover policy that moves the request to another.
    ///
    /// # Errors
    /// A [`ProxyError`] when no answer could be had (the fallback's fixed
    /// response aside).
    pub(crate) async fn serve(
        &self,
        pools: &[Arc<Pool>],
        reporting: &Reporting,
        request: Inbound<'_>,
        body: Received,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        Exchange::start(pools, reporting, self, request, body)
            .await?
            .run()
            .await
    }
}

/// An answer that came back, with the instance's in-flight count held for
/// the body's lifetime.
type Answered = (Response<PooledBody>, InFlight);

/// A failed attempt.
enum Failed {
    /// The instance's failure, and its failed answer when there was one
    /// (held: if no retry happens, it is the best the client can get);
    /// boxed, being the rare case and the large one.
    Upstream(Box<UpstreamFailure>),
    /// The client's body failed: not the instance's doing.
    Client(ClientFault),
}

/// How an instance failed an attempt.
struct UpstreamFailure {
    failure: AttemptOutcome,
    held: Option<Answered>,
}

/// What the exchange does after a failed attempt.
enum Next<'a> {
    /// Attempt again (the ranking and delay are set).
    Retry,
    /// Continue in this pool (the failover policy's fallback).
    Switch(&'a Pool),
    /// Answer with this response (boxed: rare, and large).
    Respond(Box<Response<ProxyBody>>),
    /// No more attempts.
    Stop,
}

/// Why the attempts on a pool ended without an answer to deliver.
enum Exhausted<'a> {
    /// The client's request failed (its body): answered as the client's
    /// error, nothing booked on the instance, nothing else tried.
    Client(ProxyError),
    /// Nothing left: the failed answer held, if any.
    Held(Option<(EndpointId, Answered)>),
    /// The failover policy moves the request to this pool.
    Switch(&'a Pool),
}

/// How a client asked to switch protocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Upgrading {
    /// HTTP/1.1 `Connection: upgrade`; answered 101.
    Http1,
    /// HTTP/2 extended CONNECT (RFC 8441); answered 200.
    Connect,
}

/// One request on a pool route, across its attempts: the per-request
/// context the phases (module docs) read and update.
struct Exchange<'a> {
    /// Every pool by name (a failover policy's fallback).
    pools: &'a [Arc<Pool>],
    reporting: &'a Reporting,
    route: &'a PoolRoute,
    /// The pool in use (a failover policy may move the request to another).
    pool: &'a Pool,
    parts: http::request::Parts,
    host: &'a str,
    peer: SocketAddr,
    path_and_query: PathAndQuery,
    affinity: Affinity,
    ranking: Ranking,
    body: RequestBody,
    limits: &'a ListenerRules,
    tried: SmallVec<[EndpointId; 4]>,
    /// The route's fallback pool took over (it does only once).
    fell_back: bool,
    /// The failover policy moved the request to another pool (only once).
    switched: bool,
    started_at: Instant,
    /// When the request must have its answer's head — the route's
    /// deadline: `request_timeout_ms` of the first pool it reached, from
    /// its start. Every wait (an attempt, a backoff, a policy's delay)
    /// ends by then, and so does the whole request, however many pools it
    /// goes through: a switch to another pool never extends it (Envoy's
    /// route timeout spans retries), that pool's own `request_timeout_ms`
    /// may only bring it closer.
    deadline: Instant,
    /// The last failure, answered when nothing better is left.
    failure: Option<ProxyError>,
    /// The wait before the next attempt (a backoff or the failover
    /// policy's delay), within the deadline.
    delay: Option<Duration>,
    /// The bulkhead slot, held until the answer's body ends.
    slot: Option<OwnedSemaphorePermit>,
    /// The retry in flight, counted by the retry budget.
    _retry: Option<Active<'a>>,
    /// The request in flight, counted by the retry budget.
    _request: Active<'a>,
    /// The client asked to switch protocols (a WebSocket handshake): over
    /// HTTP/1.1, or by an HTTP/2 extended CONNECT.
    upgrading: Option<Upgrading>,
}

impl<'a> Exchange<'a> {
    /// Phase 1: the pool (priority failover), its bulkhead, the session, the
    /// ranking, the upstream headers and a replayable body.
    async fn start(
        pools: &'a [Arc<Pool>],
        reporting: &'a Reporting,
        route: &'a PoolRoute,
        request: Inbound<'a>,
        body: Received,
    ) -> Result<Self, ProxyError> {
        let Inbound {
            mut parts,
            host,
            peer,
            authority,
            limits,
            tls,
        } = request;
        let (pool, fell_back): (&Pool, bool) = match &route.fallback {
            Some(Fallback::Pool(secondary)) if !route.pool.can_take() => (secondary, true),
            _ => (&route.pool, false),
        };
        let counted = pool.budget().request();
        let slot = pool.enter_bulkhead().await?;
        let path_and_query = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let upgrade = match headers::upgrade(parts.version, &parts.headers) {
            Some(protocol) => Some((protocol, Upgrading::Http1)),
            None => headers::extended_connect(&mut parts).map(|p| (p, Upgrading::Connect)),
        };
        let affinity = lookup(pool, &parts.headers);
        let ranking = rank(pool, &parts, host, &path_and_query, peer, &affinity);
        headers::prepare_request(&mut parts.headers, peer.ip(), authority, tls);
        let upgrading = upgrade.map(|(protocol, how)| {
            headers::keep_upgrade(&mut parts.headers, protocol);
            how
        });
        let retry = pool.failover().retry();
        let body = RequestBody::prepare(body, &parts.headers, retry, limits).await?;
        Ok(Self {
            pools,
            reporting,
            route,
            pool,
            parts,
            host,
            peer,
            path_and_query,
            affinity,
            ranking,
            body,
            limits,
            tried: SmallVec::new(),
            fell_back,
            switched: false,
            started_at: Instant::now(),
            deadline: Instant::now() + pool.request_timeout(),
            failure: None,
            delay: None,
            slot,
            _retry: None,
            _request: counted,
            upgrading,
        })
    }

    /// Phases 2–6: attempts until an answer can be delivered or nothing is
    /// left; when every attempt on the primary pool failed, the route's
    /// fallback pool takes over (once, and only with a request that can be
    /// sent again).
    async fn run(mut self) -> Result<Response<ProxyBody>, ProxyError> {
        loop {
            let held = match self.attempts().await {
                Ok(response) => return Ok(response),
                Err(Exhausted::Switch(other)) => {
                    self.switch_pool(other).await?;
                    continue;
                }
                Err(Exhausted::Client(error)) => return Err(error),
                Err(Exhausted::Held(held)) => held,
            };
            match self.fallback_pool() {
                Some(secondary) => {
                    tracing::info!(pool = %self.pool.name(), fallback = %secondary.name(), "every attempt failed; the route's fallback pool takes over");
                    self.fell_back = true;
                    // Shed there: the failed answer held, if any, is still
                    // the best the client can get.
                    if let Err(shed) = self.switch_pool(secondary).await {
                        return match held {
                            Some((id, answered)) => Ok(self.deliver(id, answered)),
                            None => Err(shed),
                        };
                    }
                }
                None => {
                    return match held {
                        Some((id, answered)) => Ok(self.deliver(id, answered)),
                        None => self.give_up(),
                    };
                }
            }
        }
    }

    /// The attempts on the pool in use, until an answer is delivered, the
    /// failover policy answers, or nothing is left on this pool; then the
    /// failed answer held, if any (the best the client can get so far).
    async fn attempts(&mut self) -> Result<Response<ProxyBody>, Exhausted<'a>> {
        let max_attempts = self.pool.failover().retry().max_attempts();
        let mut held = None;
        for attempt in 1..=max_attempts {
            if let Some(wait) = self.delay.take().filter(|w| !w.is_zero()) {
                tokio::time::sleep(wait).await;
            }
            if Instant::now() >= self.deadline {
                self.failure = Some(ProxyError::Timeout {
                    pool: self.pool.name().to_owned(),
                    instance: "(no attempt left within the deadline)".into(),
                    timeout_ms: self.pool.request_timeout().as_millis() as u64,
                });
                break;
            }
            let Some((id, endpoint, admission)) = self.next_instance() else {
                break;
            };
            let last = attempt == max_attempts || !self.body.replayable();
            // The last answer goes to the client as it is, even failed,
            // unless a fallback pool or a failover plugin may still take the
            // request elsewhere: then a failed one is held.
            let final_answer = last
                && (!self.body.replayable()
                    || self.fallback_pool().is_none() && self.pool.failover().plugin().is_none());
            let failed = match self.send(endpoint, admission, final_answer, attempt).await {
                Ok(answered) => return Ok(self.deliver(id, answered)),
                Err(Failed::Client(fault)) => {
                    return Err(Exhausted::Client(fault.error(self.limits)));
                }
                Err(Failed::Upstream(failed)) => failed,
            };
            let holding = failed.held.is_some();
            held = failed.held.map(|answered| (id, answered));
            if final_answer {
                if !self.body.replayable() && attempt < max_attempts {
                    tracing::info!(pool = %self.pool.name(), "not retried: the request body is over replay_limit_bytes or of unknown length");
                }
                break;
            }
            // Even after the last attempt the policy is asked: it may move
            // the request to another pool (a retry is over the cap then).
            match self.on_failure(id, failed.failure, holding, attempt, last) {
                // A held answer is given up for the retry.
                Next::Retry => held = None,
                Next::Switch(other) => return Err(Exhausted::Switch(other)),
                Next::Respond(response) => return Ok(*response),
                Next::Stop => break,
            }
        }
        Err(Exhausted::Held(held))
    }

    /// The route's fallback pool, when it may still take the request: not
    /// used yet, not the pool in use, and the request can be sent again.
    fn fallback_pool(&self) -> Option<&'a Pool> {
        match &self.route.fallback {
            Some(Fallback::Pool(secondary))
                if !self.fell_back
                    && self.body.replayable()
                    && !std::ptr::eq(self.pool, &**secondary) =>
            {
                Some(secondary)
            }
            _ => None,
        }
    }

    /// Phase 2: the next instance to try, with its breaker's admission.
    fn next_instance(&mut self) -> Option<(EndpointId, &'a Arc<Endpoint>, Admission)> {
        let pool = self.pool;
        let (id, admission) = pool.next(&self.ranking, &self.tried, self.affinity.bound)?;
        let endpoint = pool.members().get(id)?;
        self.tried.push(id);
        Some((id, endpoint, admission))
    }

    /// Phase 3: attempt number `attempt` on `endpoint`, booked on it. An
    /// answer is returned to deliver unless it is a failure and more
    /// attempts may follow (`last` is false); then it is held in the
    /// [`Failed`].
    async fn send(
        &mut self,
        endpoint: &'a Arc<Endpoint>,
        admission: Admission,
        last: bool,
        attempt: usize,
    ) -> Result<Answered, Failed> {
        let pool = self.pool;
        // A request whose kept connection failed before any answer (closed
        // by the instance as it was taken) goes once more, on a new
        // connection, when it may be repeated: not an attempt of its own,
        // nothing booked on the instance (as nginx does).
        let resendable =
            self.body.replayable() && pool.failover().retry().method_retryable(&self.parts.method);
        let timeout = pool
            .failover()
            .retry()
            .per_try_timeout(pool.request_timeout())
            .min(self.deadline.saturating_duration_since(Instant::now()));
        // The headers are moved into the last request that can be sent.
        let sent = pool
            .send(endpoint, timeout, resendable, |again| {
                self.upstream_request(last && (again || !resendable))
            })
            .await;
        // The client's body failed, or the attempt timed out while the body
        // waited for the client's next bytes: nothing is booked on the
        // instance (the admission is given back unrecorded).
        let client_fault = match &sent.result {
            Ok(_) => None,
            Err(AttemptError::TimedOut(_)) => self
                .body
                .client_fault()
                .or_else(|| self.body.awaiting_client().then_some(ClientFault::Stalled)),
            Err(_) => self.body.client_fault(),
        };
        if let Some(fault) = client_fault {
            tracing::debug!(pool = %pool.name(), attempt, ?fault, "the client's request body failed");
            return Err(Failed::Client(fault));
        }
        pool.book(endpoint, admission, &sent);
        let (failure, held) = match sent.result {
            Ok((response, in_flight)) => {
                let status = response.status().as_u16();
                if !pool.failover().is_failure(status) || last {
                    return Ok((response, in_flight));
                }
                self.failure = Some(ProxyError::NoUpstream {
                    pool: pool.name().to_owned(),
                    reason: format!("{}: status {status}", endpoint.url),
                });
                (
                    AttemptOutcome::Answered(status),
                    Some((response, in_flight)),
                )
            }
            Err(AttemptError::TimedOut(timeout)) => {
                tracing::warn!(pool = %pool.name(), attempt, instance = %endpoint.url, "upstream timed out");
                self.failure = Some(ProxyError::Timeout {
                    pool: pool.name().to_owned(),
                    instance: endpoint.url.clone(),
                    timeout_ms: timeout.as_millis() as u64,
                });
                (AttemptOutcome::Timeout, None)
            }
            Err(error) => {
                let failure = error.outcome();
                let reason = error.reason(endpoint);
                tracing::warn!(pool = %pool.name(), attempt, %reason, "upstream attempt failed");
                self.failure = Some(ProxyError::NoUpstream {
                    pool: pool.name().to_owned(),
                    reason,
                });
                (failure, None)
            }
        };
        Err(Failed::Upstream(Box::new(UpstreamFailure {
            failure,
            held,
        })))
    }

    /// The request for one attempt: the client's, its body replayed (or
    /// streamed), its headers moved when `take_headers` (nothing will be
    /// sent after it), else copied.
    fn upstream_request(&mut self, take_headers: bool) -> Request<UpstreamBody> {
        let mut upstream = Request::new(self.body.for_attempt());
        *upstream.method_mut() = self.parts.method.clone();
        *upstream.uri_mut() = Uri::from(self.path_and_query.clone());
        *upstream.version_mut() = Version::HTTP_11;
        *upstream.headers_mut() = if take_headers {
            std::mem::take(&mut self.parts.headers)
        } else {
            self.parts.headers.clone()
        };
        upstream
    }

    /// Phase 4: asks the pool's failover policy what follows the failed
    /// attempt on `id` (`holding`: its failed answer is held; `last`: the
    /// attempt cap is reached, so a retry is not possible but another pool
    /// or an answer of the policy's own is), and prepares it. A held failed
    /// answer is only given up for a retry that can happen (an instance is
    /// left — a tried one when no other is — and the retry budget has room).
    fn on_failure(
        &mut self,
        id: EndpointId,
        failure: AttemptOutcome,
        holding: bool,
        attempt: usize,
        last: bool,
    ) -> Next<'a> {
        let pool = self.pool;
        let untried = pool.untried(&self.ranking, &self.tried, self.affinity.bound);
        let failed = FailedAttempt {
            facts: AttemptFacts {
                request: self.request_context(),
                endpoint: id,
                failure,
                attempt: attempt as u32,
                elapsed_ms: self.started_at.elapsed().as_millis() as u64,
                tried: &self.tried,
                replayable: self.body.replayable(),
                idempotent: pool.failover().retry().method_retryable(&self.parts.method),
                retries_left: 0,
                untried: untried as u32,
            },
            last,
            deadline: self.deadline,
            holding,
        };
        // With no untried instance left, a retry goes to a tried one.
        let after = pool.after_failure(failed, || {
            pool.has_candidate(&self.ranking, &[], self.affinity.bound)
        });
        match after {
            AfterFailure::Retry {
                wait,
                same_endpoint,
                budget,
            } => {
                self._retry = budget;
                self.delay = Some(wait);
                if same_endpoint {
                    self.tried.pop();
                } else if untried == 0 {
                    self.tried.clear();
                }
                Next::Retry
            }
            AfterFailure::Respond {
                status,
                headers,
                body,
            } => {
                let headers: std::collections::BTreeMap<String, String> =
                    headers.into_iter().collect();
                let text = String::from_utf8_lossy(&body);
                let response = StaticResponse::new(status, &text, &headers).to_response();
                Next::Respond(Box::new(response.map(ProxyBody::Local)))
            }
            AfterFailure::Fallback(name) => match super::pool_named(self.pools, &name) {
                Some(other) if other.name() != pool.name() && !self.switched => {
                    self.switched = true;
                    Next::Switch(other)
                }
                _ => {
                    tracing::warn!(pool = %pool.name(), fallback = %name, "failover policy named an unknown pool; giving up");
                    Next::Stop
                }
            },
            AfterFailure::Stop => Next::Stop,
        }
    }

    /// Continues the request in `other`: its own bulkhead (the slot of the
    /// pool left is given back once `other`'s is taken), session lookup and
    /// ranking, the deadline it may shorten, nothing tried there yet.
    ///
    /// # Errors
    /// [`ProxyError::Shed`] when `other`'s bulkhead sheds the request.
    async fn switch_pool(&mut self, other: &'a Pool) -> Result<(), ProxyError> {
        self.slot = other.enter_bulkhead().await?;
        self.pool = other;
        self.deadline = self.deadline.min(Instant::now() + other.request_timeout());
        self.affinity = lookup(other, &self.parts.headers);
        self.ranking = rank(
            other,
            &self.parts,
            self.host,
            &self.path_and_query,
            self.peer,
            &self.affinity,
        );
        self.tried.clear();
        Ok(())
    }

    /// Phase 5 for an instance that switched protocols (101; an HTTP/2
    /// client that asked by extended CONNECT is answered 200): once the
    /// client's connection (or stream) and the instance's are both
    /// upgraded, the request's tunnel relays them both ways (see
    /// [`super::Tunnels`]), holding the in-flight mark and the bulkhead
    /// slot until it closes. A 101 to a request that asked for no upgrade
    /// is a bad gateway.
    fn switch_protocols(
        &mut self,
        mut response: Response<PooledBody>,
        in_flight: InFlight,
    ) -> Response<ProxyBody> {
        let client = self.parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
        let Some((client, how)) = client.zip(self.upgrading) else {
            return ProxyError::NoUpstream {
                pool: self.pool.name().to_owned(),
                reason:
                    "the instance switched protocols (101) though the request asked for no upgrade"
                        .into(),
            }
            .into_response()
            .map(ProxyBody::Local);
        };
        let upstream = hyper::upgrade::on(&mut response);
        let protocol = response.headers().get(header::UPGRADE).cloned();
        headers::strip_hop_by_hop(response.headers_mut());
        if let Some(protocol) = protocol {
            headers::keep_upgrade(response.headers_mut(), protocol);
        }
        let held = (in_flight, self.slot.take());
        self.reporting.tunnels.relay(client, upstream, held);
        let (mut head, _) = response.into_parts();
        head.version = Version::HTTP_11;
        if how == Upgrading::Connect {
            headers::connect_accepted(&mut head);
        }
        Response::from_parts(head, ProxyBody::Local(Full::default()))
    }

    /// Phase 5: sends the answer of instance `id` on: binds the session,
    /// strips hop-by-hop headers, sets the version, and copies a GET answer
    /// for stale-if-error.
    fn deliver(
        &mut self,
        id: EndpointId,
        (mut response, in_flight): Answered,
    ) -> Response<ProxyBody> {
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            return self.switch_protocols(response, in_flight);
        }
        if let Some(sticky) = &self.pool.sticky() {
            let status = response.status();
            sticky.bind(&self.affinity, id, status, response.headers_mut());
        }
        headers::strip_hop_by_hop(response.headers_mut());
        if self.reporting.recent.enabled()
            && let Some(endpoint) = self.pool.members().get(id)
        {
            response.extensions_mut().insert(Served {
                pool: self.pool.name().to_owned(),
                instance: endpoint.url.clone(),
                attempts: self.tried.len() as u32,
            });
        }
        // The answer goes out in this proxy's protocol, not the instance's:
        // hyper writes an HTTP/1 status line with the response's version
        // (an HTTP/1.0 instance's must not reach an HTTP/1.1 client as
        // `HTTP/1.0`, RFC 9110 §2.5); HTTP/2 ignores it.
        *response.version_mut() = Version::HTTP_11;
        let recorder = match &self.route.stale {
            Some(stale) if self.parts.method == http::Method::GET => stale
                .record(
                    StaleCache::key(self.host, self.path_and_query.as_str()),
                    response.status(),
                    response.headers(),
                    response.body().size_hint().exact(),
                )
                .map(Box::new),
            _ => None,
        };
        let slot = self.slot.take();
        response.map(|body| ProxyBody::Upstream {
            body,
            _in_flight: in_flight,
            recorder,
            _slot: slot,
        })
    }

    /// Phase 6: every attempt failed (or none could be made): the last good
    /// answer of a GET (stale-if-error), the route's static fallback, or the
    /// last failure.
    fn give_up(self) -> Result<Response<ProxyBody>, ProxyError> {
        let pool = self.pool;
        if let Some(stale) = &self.route.stale
            && self.parts.method == http::Method::GET
            && let Some(response) =
                stale.serve(&StaleCache::key(self.host, self.path_and_query.as_str()))
        {
            tracing::info!(pool = %pool.name(), path = %self.path_and_query, "every attempt failed; serving the last good answer (stale-if-error)");
            return Ok(response.map(ProxyBody::Local));
        }
        if let Some(Fallback::Static(response)) = &self.route.fallback {
            return Ok(response.to_response().map(ProxyBody::Local));
        }
        Err(self.failure.unwrap_or_else(|| ProxyError::NoUpstream {
            pool: pool.name().to_owned(),
            reason: "no instance available".into(),
        }))
    }

    /// The request as the engines see it.
    fn request_context(&self) -> RequestContext<'_> {
        RequestContext {
            method: &self.parts.method,
            authority: self.host,
            path: self.path_and_query.as_str(),
            headers: &self.parts.headers,
            client_addr: self.peer,
        }
    }
}

/// The request's session in `pool`, if it has session affinity.
fn lookup(pool: &Pool, headers: &http::HeaderMap) -> Affinity {
    pool.sticky()
        .as_ref()
        .map(|sticky| sticky.lookup(headers))
        .unwrap_or_default()
}

/// Ranks `pool` for the request, the sticky instance first.
pub(crate) fn rank(
    pool: &Pool,
    parts: &http::request::Parts,
    host: &str,
    path_and_query: &PathAndQuery,
    peer: SocketAddr,
    affinity: &Affinity,
) -> Ranking {
    let mut ranking = pool.balancer().rank(
        &RequestContext {
            method: &parts.method,
            authority: host,
            path: path_and_query.as_str(),
            headers: &parts.headers,
            client_addr: peer,
        },
        pool.members().as_slice(),
    );
    Sticky::prefer(affinity, &mut ranking);
    ranking
}

/// A request body across attempts: replayable bytes, or a one-shot stream.
enum RequestBody {
    /// Empty, or buffered within the replay limit: every attempt sends a copy.
    Replay(Bytes),
    /// Streamed: only the first attempt can send it; how it ended is
    /// recorded in `fault`.
    Stream {
        body: Option<ClientBody>,
        fault: Arc<FaultCell>,
    },
}

impl RequestBody {
    /// Buffers `body` when it may need replaying (more than one attempt) and
    /// its declared length is within the limit; otherwise keeps the stream.
    /// Either way each piece of it is awaited at most the listener's
    /// `body_read_timeout_ms`.
    ///
    /// # Errors
    /// The client's fault while buffering (400, 408, 499).
    async fn prepare(
        body: Received,
        headers: &http::HeaderMap,
        retry: &crate::failover::RetryPolicy,
        limits: &ListenerRules,
    ) -> Result<Self, ProxyError> {
        if body.is_end_stream() {
            return Ok(RequestBody::Replay(Bytes::new()));
        }
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        match declared {
            Some(length) if retry.max_attempts() > 1 && length <= retry.replay_limit() => {
                client::read_whole(body, limits, retry.replay_limit())
                    .await
                    .map(RequestBody::Replay)
            }
            _ => {
                let (body, fault) = ClientBody::new(body, limits);
                Ok(RequestBody::Stream {
                    body: Some(body),
                    fault,
                })
            }
        }
    }

    fn replayable(&self) -> bool {
        matches!(self, RequestBody::Replay(_))
    }

    /// How the client's streamed body failed, if it did.
    fn client_fault(&self) -> Option<ClientFault> {
        match self {
            RequestBody::Replay(_) => None,
            RequestBody::Stream { fault, .. } => fault.get(),
        }
    }

    /// Whether the streamed body is waiting for the client's next bytes.
    fn awaiting_client(&self) -> bool {
        match self {
            RequestBody::Replay(_) => false,
            RequestBody::Stream { fault, .. } => fault.waiting_on_client(),
        }
    }

    fn for_attempt(&mut self) -> UpstreamBody {
        match self {
            RequestBody::Replay(bytes) => Either::Right(Full::new(bytes.clone())),
            RequestBody::Stream { body, .. } => match body.take() {
                Some(body) => Either::Left(body),
                None => Either::Right(Full::new(Bytes::new())),
            },
        }
    }
}

/// The error and its sources, `: `-joined (hyper's own Display is terse).
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}
