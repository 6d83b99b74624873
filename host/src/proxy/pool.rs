//! A pool at run time: its instances, its balancer and its upstream connections.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::HeaderName;
use http::uri::Authority;
use http_body_util::{Either, Full};

use super::StartError;
use super::upstream::Upstreams;
use crate::tls::UpstreamTls;
use tokio::task::JoinSet;

use smallvec::SmallVec;

use crate::balance::{
    self, Balancer, ById, CHECK_DEGRADED, DEGRADED, EJECTED, Endpoint, EndpointId, Members,
    Ranking, Sticky, Strategy, UNHEALTHY, next_candidate,
};
use crate::config::{InstanceConfig, PoolConfig, StrategyConfig};
use crate::events::{EventBus, EventKind, HealthEvent, Severity};
use crate::failover::breaker::Transition;
use crate::failover::{
    Admission, BreakerState, Breakers, Bulkhead, Failover, FailoverPolicy, RetryBudget, RetryPolicy,
};
use crate::health::active::{self, ActiveCheck, RiseFall};
use crate::health::outlier::OutlierDetector;
use crate::health::trend::TrendTracker;
use crate::health::{HealthCheck, PoolHealth};
use crate::metrics::Metrics;
use crate::plugin::{
    Limits, LoadError, PluginHost, PluginKind, PluginStats, WasmFailover, WasmHealthCheck,
    WasmStrategy,
};
use crate::policy::AttemptOutcome;
use crate::status::{InstanceStatus, PoolStatus};

/// A request body sent upstream: the client's, streamed, or buffered bytes
/// (replayable across attempts).
pub type UpstreamBody = Either<super::client::ClientBody, Full<Bytes>>;

/// A pool of instances behind one balancer and one connection pool.
///
/// A `Pool` is one *generation* of a pool: its membership is fixed. A
/// membership change (instances added, removed, re-weighted or re-labelled,
/// by the admin API or a config change that touches only `instances`)
/// builds the next generation from this one ([`Pool::build`] with
/// `previous`), which keeps everything that is not membership: the
/// instances that stay (their statistics, in-flight counts, health flags,
/// ejections, breakers, trends and probe counts, all by stable id), the
/// sticky-session table, the plugin instances (a balancer plugin is told
/// the new membership with `update`), the bulkhead, the retry budget and
/// the pooled connections. New instances start fresh; removed ones finish
/// their in-flight requests in the generation that sent them.
pub struct Pool {
    /// The pool's name in the config.
    name: String,
    /// The instances, by stable id and in config order.
    members: Members,
    /// Ranks the instances per request.
    balancer: Balancer,
    /// Pooled keep-alive HTTP/1.1 connections to the instances.
    upstreams: Arc<Upstreams>,
    /// Time allowed to the response headers.
    request_timeout: Duration,
    /// How long a connect failure keeps an instance out of rotation.
    fail_timeout: Duration,
    /// The Wasm strategy's counters, when the strategy is a plugin.
    plugin_stats: Option<Arc<PluginStats>>,
    /// Response header carrying an instance's load report (`resource-aware`).
    load_header: Option<HeaderName>,
    /// Session affinity, when configured.
    sticky: Option<Sticky>,
    /// Unfit count and panic mode.
    health: Arc<PoolHealth>,
    /// Active checks, when configured (run by [`crate::server::Switchyard::serve`]).
    active_check: Option<Arc<ActiveCheck>>,
    /// Passive outlier detection, when configured.
    outlier: Option<OutlierDetector>,
    /// Predictive health, when configured.
    trend: Option<TrendTracker>,
    /// What happens after a failed attempt: the retry rules and the
    /// failover policy (built-in, or a plugin with the built-in standing by).
    failover: Failover,
    /// Retries in flight vs requests in flight.
    budget: Arc<RetryBudget>,
    /// Circuit breakers, when configured.
    breakers: Option<Breakers>,
    /// Bounded concurrency, when configured.
    bulkhead: Option<Arc<Bulkhead>>,
    /// The failover plugin's counters, when the policy is a plugin.
    failover_stats: Option<Arc<PluginStats>>,
    /// The health-check plugin's counters, when the check is a plugin.
    health_stats: Option<Arc<PluginStats>>,
    /// The config the pool was built from.
    config: PoolConfig,
    /// Retries sent (the `switchyard_retries_total` series of this pool).
    retries_total: prometheus_client::metrics::counter::Counter,
    /// Active checks' consecutive results, by instance id.
    probes: ById<Arc<Mutex<RiseFall>>>,
    /// The id the next new instance gets.
    next_id: EndpointId,
    /// Whether this generation took its state from a previous one.
    carried: bool,
    clock: Instant,
}

/// The instances of `config` with their `host:port` (validated when the
/// config was loaded, so none is left out).
fn instances(config: &PoolConfig) -> impl Iterator<Item = (&InstanceConfig, Authority)> {
    config
        .instances
        .iter()
        .filter_map(|i| i.upstream_authority().ok().map(|a| (i, a)))
}

impl Pool {
    /// The pool's name in the config.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The instances, by stable id and in config order.
    pub fn members(&self) -> &Members {
        &self.members
    }

    /// Ranks the instances per request.
    pub fn balancer(&self) -> &Balancer {
        &self.balancer
    }

    /// Pooled connections to the instances.
    pub fn upstreams(&self) -> &Arc<Upstreams> {
        &self.upstreams
    }

    /// Time allowed to the response headers (`request_timeout_ms`).
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// Session affinity, when configured.
    pub fn sticky(&self) -> Option<&Sticky> {
        self.sticky.as_ref()
    }

    /// Active checks, when configured.
    pub fn active_check(&self) -> Option<&Arc<ActiveCheck>> {
        self.active_check.as_ref()
    }

    /// What happens after a failed attempt: the retry rules and the
    /// failover policy.
    pub fn failover(&self) -> &Failover {
        &self.failover
    }

    /// Retries in flight vs requests in flight.
    pub fn budget(&self) -> &RetryBudget {
        &self.budget
    }

    /// Counts one retry sent (`switchyard_retries_total{pool}`).
    pub fn count_retry(&self) {
        self.retries_total.inc();
    }

    /// The balancer plugin's counters, when the strategy is a plugin.
    pub fn plugin_stats(&self) -> Option<&Arc<PluginStats>> {
        self.plugin_stats.as_ref()
    }

    /// The counters of each plugin the pool loads, by kind: balancer,
    /// health check, failover.
    pub fn plugin_counters(&self) -> impl Iterator<Item = (PluginKind, &Arc<PluginStats>)> {
        [
            (PluginKind::Balancer, &self.plugin_stats),
            (PluginKind::HealthCheck, &self.health_stats),
            (PluginKind::Failover, &self.failover_stats),
        ]
        .into_iter()
        .filter_map(|(kind, stats)| Some((kind, stats.as_ref()?)))
    }

    /// Builds the pool `name` from `config`, loading its plugins in `host`.
    /// When `previous` (the pool's generation in force) differs from
    /// `config` only in `instances`, the new generation takes its state
    /// (see [`Pool`]); otherwise everything is built anew.
    ///
    /// # Errors
    /// [`StartError::Plugin`] when a plugin is refused; [`StartError::Tls`]
    /// when the pool's TLS files cannot be read.
    pub fn build(
        name: &str,
        config: &PoolConfig,
        host: &PluginHost,
        events: &Arc<EventBus>,
        metrics: &Metrics,
        previous: Option<&Pool>,
    ) -> Result<Self, StartError> {
        let previous = previous.filter(|p| p.same_policy(config));
        let clock = previous.map_or_else(Instant::now, |p| p.clock);
        let (endpoints, next_id) = members(config, previous, clock);
        let plugin_key = |key: &str, error| StartError::Plugin {
            key: format!("pools.{name}.{key}"),
            error,
        };
        let (balancer, plugin_stats) = balancer(config, host, &endpoints, previous)
            .map_err(|e| plugin_key("strategy.plugin", e))?;
        let sticky = config
            .sticky
            .as_ref()
            .map(|c| Sticky::new(c, &endpoints, previous.and_then(|p| p.sticky.as_ref())));
        let tls = match previous {
            Some(p) => Arc::clone(p.upstreams.tls()),
            None => upstream_tls(name, config)?,
        };
        let (active_check, health_stats) = match previous {
            Some(p) => (p.active_check.clone(), p.health_stats.clone()),
            None => active_check(config, host, Arc::clone(&tls))
                .map_err(|e| plugin_key("health.plugin", e))?,
        };
        let (failover_plugin, failover_stats) = failover_plugin(config, host, previous)
            .map_err(|e| plugin_key("failover.plugin", e))?;
        for stats in [&plugin_stats, &health_stats, &failover_stats]
            .into_iter()
            .flatten()
        {
            stats.serve(name);
        }
        let load_header = match &config.strategy {
            StrategyConfig::ResourceAware(c) => HeaderName::try_from(c.load_header.as_str()).ok(),
            _ => None,
        };
        let upstreams = match previous {
            Some(p) => Arc::clone(&p.upstreams),
            None => Upstreams::new(
                config.protocol,
                Duration::from_millis(config.connect_timeout_ms),
                Duration::from_millis(config.idle_timeout_ms),
                config.max_idle_connections as usize,
                tls,
                metrics.resends(name),
            ),
        };
        tracing::info!(
            pool = name,
            strategy = balancer.name(),
            instances = endpoints.len(),
            carried = previous.is_some(),
            "pool ready"
        );
        Ok(Self {
            name: name.to_string(),
            balancer,
            upstreams,
            request_timeout: Duration::from_millis(config.request_timeout_ms),
            fail_timeout: Duration::from_millis(config.fail_timeout_ms),
            plugin_stats,
            load_header,
            sticky,
            health: previous.map_or_else(
                || {
                    Arc::new(PoolHealth::new(
                        name,
                        endpoints.len(),
                        config.panic_threshold_percent,
                        Arc::clone(events),
                    ))
                },
                |p| Arc::clone(&p.health),
            ),
            active_check,
            outlier: config.outlier.as_ref().map(|c| {
                OutlierDetector::new(c, &endpoints, previous.and_then(|p| p.outlier.as_ref()))
            }),
            trend: config
                .trend
                .as_ref()
                .map(|c| TrendTracker::new(c, &endpoints, previous.and_then(|p| p.trend.as_ref()))),
            failover: Failover::new(RetryPolicy::new(&config.retry), failover_plugin),
            budget: previous.map_or_else(
                || {
                    Arc::new(RetryBudget::new(
                        config.retry.budget_ratio,
                        config.retry.budget_min_concurrent,
                    ))
                },
                |p| Arc::clone(&p.budget),
            ),
            breakers: config
                .breaker
                .as_ref()
                .map(|c| Breakers::new(c, &endpoints, previous.and_then(|p| p.breakers.as_ref()))),
            bulkhead: match previous {
                Some(p) => p.bulkhead.clone(),
                None => config.bulkhead.as_ref().map(|c| Arc::new(Bulkhead::new(c))),
            },
            failover_stats,
            health_stats,
            config: config.clone(),
            retries_total: metrics.retries(name),
            probes: ById::carry(&endpoints, previous.map(|p| &p.probes), || {
                Mutex::new(RiseFall::default())
            }),
            next_id,
            carried: previous.is_some(),
            clock,
            members: Members::new(endpoints),
        })
    }

    /// Whether `config` differs from this pool's only in `instances` (the
    /// next generation may then take this one's state).
    fn same_policy(&self, config: &PoolConfig) -> bool {
        self.config.same_as(config, |c| c.instances.clear())
    }

    /// Whether this pool can serve `config` as it is: the same config but
    /// for instances' `drain` flags, which [`activate`](Self::activate)
    /// sets without a rebuild.
    pub fn serves(&self, config: &PoolConfig) -> bool {
        self.config.same_as(config, |c| {
            c.instances.iter_mut().for_each(|i| i.drain = false);
        })
    }

    /// Puts this generation in force once the router holding it was swapped
    /// in (a failed change must change nothing, so nothing shared is
    /// touched before): sets each instance's weight, labels and draining
    /// flag as `config` says, retires the instances of `previous` that are
    /// not members any more, recounts the pool's health over the new
    /// membership, and tells a kept balancer plugin the new membership.
    pub fn activate(&self, config: &PoolConfig, previous: Option<&Pool>) {
        for (instance, authority) in instances(config) {
            if let Some(endpoint) = self.members.by_authority(&authority) {
                endpoint.reconfigure(
                    instance.weight,
                    instance.labels.clone().into_iter().collect(),
                );
                endpoint.set_draining(instance.drain, self.now_ms());
            }
        }
        let Some(previous) = previous.filter(|p| !std::ptr::eq(*p, self)) else {
            return;
        };
        for gone in previous.members.as_slice().iter().filter(|e| {
            self.members
                .get(e.id)
                .is_none_or(|kept| !Arc::ptr_eq(kept, e))
        }) {
            // Not drained: a request that took the previous router just
            // before the swap may still pick it, as that router would have.
            gone.retire();
        }
        if self.carried {
            self.health.resize(self.members.as_slice());
            self.balancer.update(self.members.as_slice());
        }
    }

    /// Milliseconds on the pool's monotonic clock (unreachable marks, ejections).
    pub fn now_ms(&self) -> u64 {
        self.clock.elapsed().as_millis() as u64
    }

    /// The instance to try next (see [`next_candidate`]) and its breaker's
    /// admission, passing over instances whose circuit breaker refuses the
    /// request; with trends on, a degrading instance is passed over for the
    /// next fit one with probability 1 − `degraded_share`. The admission is
    /// held for the attempt and handed to [`book`](Self::book);
    /// dropped unrecorded, it gives a half-open probe slot back. `session`
    /// is the instance the request's sticky session is bound to, if any: it
    /// may be chosen while it drains, as long as it keeps its sessions
    /// ([`Sticky::keeps`]).
    pub fn next(
        &self,
        ranking: &Ranking,
        tried: &[EndpointId],
        session: Option<EndpointId>,
    ) -> Option<(EndpointId, Admission)> {
        let now = self.now_ms();
        self.walk(ranking, tried, session, now, |id| self.admit(id, now))
    }

    /// The instance [`next`](Self::next) would choose now, asking the
    /// breakers without taking an admission (nothing will be sent).
    pub fn peek(&self, ranking: &Ranking, tried: &[EndpointId]) -> Option<EndpointId> {
        let now = self.now_ms();
        let would = |id| {
            self.breakers
                .as_ref()
                .is_none_or(|b| b.would_admit(id, now))
                .then_some(())
        };
        self.walk(ranking, tried, None, now, would)
            .map(|(id, ())| id)
    }

    /// The instance of `session` when draining does not exclude it.
    fn drain_exempt(&self, session: Option<EndpointId>, now_ms: u64) -> Option<EndpointId> {
        let sticky = self.sticky.as_ref()?;
        session.filter(|id| {
            self.members
                .get(*id)
                .is_some_and(|e| sticky.keeps(e, now_ms))
        })
    }

    /// The walk of [`next`](Self::next) and [`peek`](Self::peek): the first
    /// acceptable instance that `admit` lets through, at `now_ms` (pool clock).
    fn walk<A>(
        &self,
        ranking: &Ranking,
        tried: &[EndpointId],
        session: Option<EndpointId>,
        now: u64,
        admit: impl Fn(EndpointId) -> Option<A>,
    ) -> Option<(EndpointId, A)> {
        let respect = self.health.respect_health();
        let exempt = self.drain_exempt(session, now);
        let mut skip: SmallVec<[EndpointId; 8]> = tried.iter().copied().collect();
        let share = self
            .trend
            .as_ref()
            .map_or(1.0, TrendTracker::degraded_share);
        let mut degraded_spare = None;
        while let Some(pick) = next_candidate(ranking, &self.members, &skip, now, respect, exempt) {
            skip.push(pick);
            if share < 1.0
                && self
                    .members
                    .get(pick)
                    .is_some_and(|e| e.health_flags() & DEGRADED != 0)
                && fastrand::f64() >= share
            {
                degraded_spare.get_or_insert(pick);
                continue;
            }
            if let Some(admitted) = admit(pick) {
                return Some((pick, admitted));
            }
        }
        degraded_spare.and_then(|id| admit(id).map(|a| (id, a)))
    }

    /// How many instances [`next`](Self::next) could still choose among,
    /// breakers aside: acceptable and not in `tried`.
    pub fn untried(
        &self,
        ranking: &Ranking,
        tried: &[EndpointId],
        session: Option<EndpointId>,
    ) -> usize {
        let mut skip: SmallVec<[EndpointId; 8]> = tried.iter().copied().collect();
        let now = self.now_ms();
        let (respect, exempt) = (
            self.health.respect_health(),
            self.drain_exempt(session, now),
        );
        while let Some(id) = next_candidate(ranking, &self.members, &skip, now, respect, exempt) {
            skip.push(id);
        }
        skip.len() - tried.len()
    }

    /// Whether [`next`](Self::next) could find an instance, breakers aside
    /// (asking them would use up a half-open probe).
    pub fn has_candidate(
        &self,
        ranking: &Ranking,
        tried: &[EndpointId],
        session: Option<EndpointId>,
    ) -> bool {
        let now = self.now_ms();
        next_candidate(
            ranking,
            &self.members,
            tried,
            now,
            self.health.respect_health(),
            self.drain_exempt(session, now),
        )
        .is_some()
    }

    fn admit(&self, id: EndpointId, now_ms: u64) -> Option<Admission> {
        let Some(breakers) = &self.breakers else {
            return Some(Admission::default());
        };
        let (admission, transition) = breakers.admit(id, now_ms);
        if let Some(t) = transition {
            self.publish_breaker(id, t);
        }
        admission
    }

    fn publish_breaker(&self, id: EndpointId, t: Transition) {
        let (kind, severity) = match t.to {
            BreakerState::Open => (EventKind::BreakerOpen, Severity::Warning),
            BreakerState::HalfOpen => (EventKind::BreakerHalfOpen, Severity::Info),
            BreakerState::Closed => (EventKind::BreakerClosed, Severity::Info),
        };
        let url = self.members.get(id).map(|e| e.url.as_str());
        self.health.events().publish(HealthEvent::new(
            &self.name,
            url,
            kind,
            severity,
            format!("breaker {:?}: {}", t.to, t.reason).to_lowercase(),
        ));
    }

    /// Books one attempt on `endpoint`, let through by `admission`, that
    /// ended in `outcome` (an answer's `headers` carry a load report):
    /// reachability, a load report, the balancer's observation, outlier
    /// detection and the circuit breaker. A connect failure or a timed-out
    /// attempt also keeps the instance out for `fail_timeout_ms` (nginx's
    /// `max_fails=1`, which counts both), so that a dead or hung instance
    /// costs only the requests already on it.
    pub(super) fn record_attempt(
        &self,
        endpoint: &Endpoint,
        admission: Admission,
        outcome: AttemptOutcome,
        headers: Option<&http::HeaderMap>,
        latency_us: u64,
    ) {
        if let AttemptOutcome::Answered(_) = outcome {
            endpoint.mark_reachable();
            if let Some(load) = self
                .load_header
                .as_ref()
                .zip(headers)
                .and_then(|(h, headers)| headers.get(h))
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<f32>().ok())
            {
                endpoint.report_load(load);
            }
        } else if outcome.is_unreachable() {
            let until = self.now_ms() + self.fail_timeout.as_millis() as u64;
            endpoint.mark_unreachable(until);
        }
        let success = outcome.is_success();
        self.balancer.observe(endpoint, success, latency_us);
        self.record_outcome(endpoint, outcome);
        if let Some(t) = self
            .breakers
            .as_ref()
            .and_then(|b| b.record(endpoint.id, admission, success, self.now_ms()))
        {
            self.publish_breaker(endpoint.id, t);
        }
    }

    /// A slot in the pool's bulkhead (`None` without one), held by the
    /// caller until its answer has been read or streamed: every route kind
    /// — pool, fan-out source, MCP call — enters the same bulkhead, so it
    /// bounds all the load that reaches the pool.
    ///
    /// # Errors
    /// [`ProxyError::Shed`](super::ProxyError::Shed) (503 + `Retry-After`)
    /// when the queue is full or the wait times out.
    pub async fn enter_bulkhead(
        &self,
    ) -> Result<Option<tokio::sync::OwnedSemaphorePermit>, super::ProxyError> {
        let Some(bulkhead) = &self.bulkhead else {
            return Ok(None);
        };
        bulkhead
            .enter()
            .await
            .map(Some)
            .map_err(|why| super::ProxyError::Shed {
                pool: self.name.clone(),
                why,
                retry_after_s: bulkhead.retry_after_secs(),
            })
    }

    /// Whether any instance could take a request now: not draining, fit
    /// (unless in panic mode), not recently unreachable, and admitted by its
    /// breaker (asked without taking a probe slot). A route's fallback pool
    /// takes the requests of a pool that cannot.
    pub fn can_take(&self) -> bool {
        let (now, respect) = (self.now_ms(), self.health.respect_health());
        self.members.as_slice().iter().any(|e| {
            !e.is_draining()
                && (!respect || e.is_fit())
                && e.is_reachable(now)
                && self
                    .breakers
                    .as_ref()
                    .is_none_or(|b| b.would_admit(e.id, now))
        })
    }

    /// Feeds one attempt's outcome to outlier detection, if configured.
    pub fn record_outcome(&self, endpoint: &Endpoint, outcome: AttemptOutcome) {
        if let Some(outlier) = &self.outlier {
            outlier.record(
                &self.health,
                self.members.as_slice(),
                endpoint,
                outcome,
                self.now_ms(),
            );
        }
    }

    /// An active health check's result on `endpoint`: a check that passes
    /// again closes its open breaker early (see [`Breakers::checked`]).
    fn checked(&self, endpoint: &Endpoint, passed: bool) {
        if let Some(t) = self
            .breakers
            .as_ref()
            .and_then(|b| b.checked(endpoint.id, passed))
        {
            self.publish_breaker(endpoint.id, t);
        }
    }

    /// Starts the pool's background health work: active checks and the
    /// outlier detection interval. Dropping the set stops them.
    pub fn spawn_health(self: &Arc<Self>) -> JoinSet<()> {
        let mut tasks = match &self.active_check {
            Some(check) => active::spawn(
                Arc::clone(check),
                self.members
                    .as_slice()
                    .iter()
                    .filter_map(|e| Some((Arc::clone(e), Arc::clone(self.probes.get(e.id)?))))
                    .collect(),
                Arc::clone(&self.health),
                {
                    let pool = Arc::clone(self);
                    Arc::new(move |endpoint: &Endpoint, passed| pool.checked(endpoint, passed))
                },
            ),
            None => JoinSet::new(),
        };
        if let Some(interval_ms) = self.trend.as_ref().map(TrendTracker::interval_ms) {
            let pool = Arc::clone(self);
            tasks.spawn(async move {
                let start = Instant::now();
                let mut tick = tokio::time::interval(Duration::from_millis(interval_ms));
                loop {
                    tick.tick().await;
                    if let Some(trend) = &pool.trend {
                        trend.tick(
                            &pool.health,
                            pool.members.as_slice(),
                            start.elapsed().as_secs_f64(),
                        );
                    }
                }
            });
        }
        if let Some(interval_ms) = self.outlier.as_ref().map(OutlierDetector::interval_ms) {
            let pool = Arc::clone(self);
            tasks.spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(interval_ms));
                tick.tick().await;
                loop {
                    tick.tick().await;
                    if let Some(outlier) = &pool.outlier {
                        outlier.tick(&pool.health, pool.members.as_slice(), pool.now_ms());
                    }
                }
            });
        }
        tasks
    }

    /// The pool's state for the status API.
    pub fn status(&self) -> PoolStatus {
        PoolStatus {
            name: self.name.clone(),
            strategy: self.balancer.name().to_string(),
            panic: self.health.in_panic(),
            panics: self.health.panics(),
            fit: self.members.len() - self.health.unfit().min(self.members.len()),
            bulkhead: self.bulkhead.as_ref().map(|b| b.occupancy()),
            instances: self
                .members
                .as_slice()
                .iter()
                .map(|e| {
                    let stats = e.stats();
                    let flags = e.health_flags();
                    InstanceStatus {
                        url: e.url.clone(),
                        weight: e.weight(),
                        labels: e.labels().into_iter().collect(),
                        fit: e.is_fit(),
                        unhealthy: flags & UNHEALTHY != 0,
                        ejected: flags & EJECTED != 0,
                        degraded: flags & CHECK_DEGRADED != 0,
                        health_score: e.health_score(),
                        draining: e.is_draining(),
                        in_flight: stats.in_flight,
                        requests: e.requests(),
                        ewma_latency_us: stats.ewma_latency_us,
                        success_rate: stats.success_rate,
                        load: stats.load,
                        trend: self.trend.as_ref().map(|t| t.status(e.id)),
                        breaker: self.breakers.as_ref().map(|b| b.state(e.id)),
                    }
                })
                .collect(),
        }
    }
}

/// The instances of `config`: those `previous` has at the same
/// `host:port` kept as they are (statistics, flags, in-flight count), new
/// ones under the next ids (draining as configured, on the pool's `clock`);
/// and the id the next new instance gets.
fn members(
    config: &PoolConfig,
    previous: Option<&Pool>,
    clock: Instant,
) -> (Vec<Arc<Endpoint>>, EndpointId) {
    let mut next_id = previous.map_or(0, |p| p.next_id);
    let endpoints = instances(config)
        .map(|(instance, authority)| {
            if let Some(kept) = previous.and_then(|p| p.members.by_authority(&authority)) {
                return Arc::clone(kept);
            }
            let endpoint = Endpoint::new(
                next_id,
                instance.url.clone(),
                authority,
                instance.weight,
                instance.labels.clone().into_iter().collect(),
            );
            next_id += 1;
            endpoint.set_draining(instance.drain, clock.elapsed().as_millis() as u64);
            Arc::new(endpoint)
        })
        .collect();
    (endpoints, next_id)
}

/// The pool's balancer over `endpoints`: a built-in built anew, or the
/// plugin — `previous`'s instance when there is one, else loaded — with its
/// built-in fallback; and the plugin's counters.
fn balancer(
    config: &PoolConfig,
    host: &PluginHost,
    endpoints: &[Arc<Endpoint>],
    previous: Option<&Pool>,
) -> Result<(Balancer, Option<Arc<PluginStats>>), LoadError> {
    let plugin = match balance::build(&config.strategy, endpoints) {
        Ok(strategy) => return Ok((Balancer::new(Arc::from(strategy), None), None)),
        Err(plugin) => plugin,
    };
    let (strategy, stats): (Arc<dyn Strategy>, _) = match previous {
        Some(p) => (Arc::clone(p.balancer.strategy()), p.plugin_stats.clone()),
        None => {
            let (json, limits) = (plugin.plugin.config_json(), Limits::of(&plugin.plugin));
            let strategy = WasmStrategy::load(
                host,
                &plugin.plugin.path,
                json,
                limits,
                endpoints,
                plugin.max_candidates as usize,
            )?;
            let stats = strategy.stats();
            (Arc::new(strategy), Some(stats))
        }
    };
    // Validated a built-in, which always builds.
    let fallback = balance::build(&plugin.fallback, endpoints).ok();
    Ok((Balancer::new(strategy, fallback), stats))
}

/// A pool part, when configured, and the counters of the plugin behind it.
type Loaded<T> = (Option<Arc<T>>, Option<Arc<PluginStats>>);

/// The pool's active check, when configured (`previous`'s when there is
/// one, else built, loading its plugin); and the plugin's counters.
fn active_check(
    config: &PoolConfig,
    host: &PluginHost,
    tls: Arc<UpstreamTls>,
) -> Result<Loaded<ActiveCheck>, LoadError> {
    let Some(check) = &config.health else {
        return Ok((None, None));
    };
    let plugin = match &check.plugin {
        Some(plugin) => {
            let (json, limits) = (plugin.config_json(), Limits::of(plugin));
            Some(WasmHealthCheck::load(host, &plugin.path, json, limits)?)
        }
        None => None,
    };
    let stats = plugin.as_ref().map(WasmHealthCheck::stats);
    let plugin = plugin.map(|p| Arc::new(p) as Arc<dyn HealthCheck>);
    Ok((
        Some(Arc::new(ActiveCheck::new(
            check,
            plugin,
            tls,
            config.protocol,
        ))),
        stats,
    ))
}

/// The pool's TLS client for its `https://` instances (its files were read
/// when the config was validated; this reads them again).
fn upstream_tls(name: &str, config: &PoolConfig) -> Result<Arc<UpstreamTls>, StartError> {
    UpstreamTls::load(config.tls.as_ref(), super::upstream::alpn(config.protocol))
        .map(Arc::new)
        .map_err(|(key, reason)| StartError::Tls {
            key: format!("pools.{name}.tls.{key}"),
            reason,
        })
}

/// The pool's failover plugin, when configured (`previous`'s when there is
/// one, else loaded); and its counters.
fn failover_plugin(
    config: &PoolConfig,
    host: &PluginHost,
    previous: Option<&Pool>,
) -> Result<Loaded<dyn FailoverPolicy>, LoadError> {
    if let Some(p) = previous {
        return Ok((p.failover.plugin().cloned(), p.failover_stats.clone()));
    }
    let Some(plugin) = config.failover.plugin() else {
        return Ok((None, None));
    };
    let (json, limits) = (plugin.config_json(), Limits::of(plugin));
    let loaded = WasmFailover::load(host, &plugin.path, json, limits)?;
    let stats = loaded.stats();
    Ok((Some(Arc::new(loaded)), Some(stats)))
}

/// The pool of `pools` called `name`.
pub fn pool_named<'p>(pools: &'p [Arc<Pool>], name: &str) -> Option<&'p Pool> {
    pools.iter().find(|p| p.name() == name).map(|p| &**p)
}
