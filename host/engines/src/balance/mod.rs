//! Balancing: which instance of a pool serves a request.
//!
//! Strategies **rank**; the [`Balancer`] **filters**. A [`Strategy`] orders
//! the pool's instances for one request, most preferred first, without
//! looking at health or at what was already tried; the balancer then walks
//! that ranking and skips instances that are already tried or were recently
//! unreachable. Keeping the two apart (as pingora's `BackendSelection` and
//! `LoadBalancer::select_with` do) keeps a strategy's order stable while
//! instances flap, and lets a Wasm plugin and a built-in be used the same way.
//!
//! Built-in strategies, one file each:
//!
//! | `kind` | strategy | decides by |
//! |---|---|---|
//! | `round-robin` | [`RoundRobin`] | order |
//! | `weighted-round-robin` | [`WeightedRoundRobin`] | weights, smoothly interleaved (nginx) |
//! | `random` | [`Random`] | chance |
//! | `least-connections` | [`LeastConnections`] | in-flight requests, power of two choices (Envoy) |
//! | `fastest-response` | [`FastestResponse`] | peak-EWMA latency × load (Linkerd, Finagle) |
//! | `consistent-hash` | [`ConsistentHash`] | a request key on a ring or Maglev table, optional bounded loads |
//! | `resource-aware` | [`ResourceAware`] | weight × (1 − reported load) |
//!
//! A Wasm balancer plugin is adapted by `switchyard::plugin::WasmStrategy`. When
//! a strategy fails (a plugin fault), the balancer ranks that request with the
//! pool's fallback strategy instead: the request is never lost. A draining
//! instance ([`Endpoint::set_draining`]) is never chosen for a new request.

mod consistent_hash;
mod endpoint;
mod fastest_response;
mod least_connections;
mod maglev;
mod members;
mod random;
mod resource_aware;
mod ring;
mod round_robin;
mod sample;
mod sticky;
mod weighted_round_robin;

pub use consistent_hash::ConsistentHash;
pub use endpoint::{
    CHECK_DEGRADED, DEGRADED, EJECTED, Endpoint, EndpointStats, InFlight, UNHEALTHY,
};
pub use fastest_response::FastestResponse;
pub use least_connections::LeastConnections;
pub use maglev::Maglev;
pub use members::{ById, Members};
pub use random::Random;
pub use resource_aware::ResourceAware;
pub use ring::Ring;
pub use round_robin::RoundRobin;
pub use sample::spread;
pub use sticky::{Affinity, Sticky};
pub use weighted_round_robin::WeightedRoundRobin;

pub use crate::policy::RequestContext;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use http::HeaderMap;
use smallvec::SmallVec;

use crate::policy::{Fault, WithFallback};
use switchyard_config::{PluginStrategyConfig, StrategyConfig};

/// Index of an instance in its pool (the plugin API's `endpoint-id`).
pub type EndpointId = u32;

/// How many instances a ranking holds at most: the first acceptable one and
/// enough spares for the failover attempt after it.
pub const RANK_LIMIT: usize = 8;

/// A ranking: instance ids, most preferred first. Inline up to [`RANK_LIMIT`],
/// so ranking a request does not allocate.
pub type Ranking = SmallVec<[EndpointId; RANK_LIMIT]>;

/// A balancing strategy: ranks the instances of one pool.
///
/// Lifecycle: built once per pool with the pool's instances; `rank` is called
/// per request from many threads at once; `observe` after every attempt;
/// `update` after a membership change, when the strategy is kept across it
/// (a plugin, whose state lives in its instance; built-ins are built anew
/// for the new membership). Rankings and observations name instances by
/// stable id ([`Members`]). Implementations use interior mutability and
/// never block or await.
pub trait Strategy: Send + Sync + 'static {
    /// Short name for logs, e.g. `round-robin` or `plugin canary_split.wasm`.
    fn name(&self) -> &str;

    /// Appends at most `RANK_LIMIT` ids of `endpoints` to `out`, most
    /// preferred first. `endpoints` is the whole pool, indexed by id.
    ///
    /// # Errors
    /// A [`Fault`] when the strategy could not decide (only plugins fail).
    fn rank(
        &self,
        request: &RequestContext<'_>,
        endpoints: &[Arc<Endpoint>],
        out: &mut Ranking,
    ) -> Result<(), Fault>;

    /// Feedback after an attempt on `id`. Default: ignore.
    fn observe(&self, id: EndpointId, success: bool, latency_us: u64) {
        let _ = (id, success, latency_us);
    }

    /// The pool's membership changed to `endpoints` (some kept, some new,
    /// some gone); requests of the previous membership may still be ranked
    /// for a moment. Default: ignore.
    fn update(&self, endpoints: &[Arc<Endpoint>]) {
        let _ = endpoints;
    }
}

fn _object_safe(_: &dyn Strategy) {}

/// The value of cookie `name` in `headers` (every `Cookie` header, `;`-separated pairs).
pub(crate) fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Appends the ids of the pool in order starting at position `start`,
/// wrapping, up to [`RANK_LIMIT`]: the ranking of every rotation-based strategy.
fn rotation(start: usize, endpoints: &[Arc<Endpoint>], out: &mut Ranking) {
    let n = endpoints.len();
    out.extend((0..n.min(RANK_LIMIT)).map(|i| endpoints[(start + i) % n].id));
}

/// Where a rotating strategy starts for this request: `counter mod n`, then
/// the counter advances. `None` for an empty pool.
fn rotating_start(counter: &AtomicUsize, n: usize) -> Option<usize> {
    (n > 0).then(|| counter.fetch_add(1, Ordering::Relaxed) % n)
}

/// Builds the built-in strategy `config` names for the pool `endpoints`.
///
/// # Errors
/// The plugin's config when `config` names a plugin, which the caller loads
/// with `switchyard::plugin::WasmStrategy::load`.
pub fn build<'a>(
    config: &'a StrategyConfig,
    endpoints: &[Arc<Endpoint>],
) -> Result<Box<dyn Strategy>, &'a PluginStrategyConfig> {
    Ok(match config {
        StrategyConfig::RoundRobin(_) => Box::new(RoundRobin::default()),
        StrategyConfig::WeightedRoundRobin(_) => Box::new(WeightedRoundRobin::new(endpoints.len())),
        StrategyConfig::Random(_) => Box::new(Random),
        StrategyConfig::LeastConnections(c) => Box::new(LeastConnections::new(c.choice_count)),
        StrategyConfig::FastestResponse(c) => Box::new(FastestResponse::new(endpoints, c)),
        StrategyConfig::ConsistentHash(c) => Box::new(ConsistentHash::new(endpoints, c)),
        StrategyConfig::ResourceAware(c) => Box::new(ResourceAware::new(c)),
        StrategyConfig::Plugin(plugin) => return Err(plugin),
    })
}

/// A pool's strategy with its fallback, and the filter over their rankings.
pub struct Balancer {
    policy: WithFallback<dyn Strategy>,
}

impl Balancer {
    /// A balancer over `strategy`; `fallback` ranks a request when `strategy`
    /// faults (when `None`, such a request gets an empty ranking and a 502).
    pub fn new(strategy: Arc<dyn Strategy>, fallback: Option<Box<dyn Strategy>>) -> Self {
        Self {
            policy: WithFallback::new(strategy, fallback),
        }
    }

    /// The primary strategy's name.
    pub fn name(&self) -> &str {
        self.policy.primary().name()
    }

    /// The primary strategy, to keep across a membership change.
    pub fn strategy(&self) -> &Arc<dyn Strategy> {
        self.policy.primary()
    }

    /// Tells the primary strategy the pool's new membership.
    pub fn update(&self, endpoints: &[Arc<Endpoint>]) {
        self.policy.primary().update(endpoints);
    }

    /// Ranks `endpoints` for `request`; when the strategy faults (it has
    /// already counted and logged that), the fallback ranks instead. Built-ins
    /// never fault; were one to, the ranking is empty (502).
    pub fn rank(&self, request: &RequestContext<'_>, endpoints: &[Arc<Endpoint>]) -> Ranking {
        let mut ranking = Ranking::new();
        let ranked = self.policy.decide(|strategy| {
            ranking.clear();
            strategy.rank(request, endpoints, &mut ranking)
        });
        if ranked.is_none() {
            ranking.clear();
        }
        ranking
    }

    /// Passes feedback to the strategies and records it in the instance's stats.
    pub fn observe(&self, endpoint: &Endpoint, success: bool, latency_us: u64) {
        endpoint.record(success, latency_us);
        self.policy
            .primary()
            .observe(endpoint.id, success, latency_us);
        if let Some(fallback) = self.policy.fallback() {
            fallback.observe(endpoint.id, success, latency_us);
        }
    }
}

/// The next instance to try: the first of `ranking` that is not in `tried`,
/// not draining, fit when `respect_health` (not unhealthy, not ejected; the
/// pool turns it off in panic mode) and not recently unreachable; when every
/// such instance is unreachable, the first of them anyway (better a likely
/// failure than none). An instance a health check judged degraded is chosen
/// only when no acceptable reachable instance is judged healthy, the best
/// health score first (Envoy's degraded hosts). A draining instance is not
/// chosen, but for
/// `drain_exempt`: the instance a request's session is bound to while it
/// keeps its sessions through a drain ([`Sticky::keeps`]). When the ranking
/// (at most [`RANK_LIMIT`] long) has nothing acceptable, the rest of the pool
/// is searched in order. Ids that are not `members` (a ranking made for
/// another generation of the pool) are passed over.
pub fn next_candidate(
    ranking: &Ranking,
    members: &Members,
    tried: &[EndpointId],
    now_ms: u64,
    respect_health: bool,
    drain_exempt: Option<EndpointId>,
) -> Option<EndpointId> {
    let open = ranking
        .iter()
        .copied()
        .chain(members.as_slice().iter().map(|e| e.id))
        .filter_map(|id| members.get(id))
        .filter(|e| {
            !tried.contains(&e.id)
                && (!e.is_draining() || drain_exempt == Some(e.id))
                && (!respect_health || e.is_fit())
        });
    let first = open.clone().next()?.id;
    let mut degraded: Option<&Arc<Endpoint>> = None;
    for e in open.filter(|e| e.is_reachable(now_ms)) {
        if !e.is_check_degraded() {
            return Some(e.id);
        }
        if degraded.is_none_or(|d| e.health_score() > d.health_score()) {
            degraded = Some(e);
        }
    }
    Some(degraded.map_or(first, |e| e.id))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use http::Method;
    use std::net::SocketAddr;

    /// A pool of `n` instances of weight 1 on unused ports.
    pub(crate) fn pool(n: usize) -> Vec<Arc<Endpoint>> {
        weighted_pool(&vec![1; n])
    }

    /// A pool with one instance per weight, on unused ports.
    pub(crate) fn weighted_pool(weights: &[u32]) -> Vec<Arc<Endpoint>> {
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let port = 1 + i as u16;
                Arc::new(Endpoint::new(
                    i as u32,
                    format!("http://127.0.0.1:{port}"),
                    format!("127.0.0.1:{port}").parse().unwrap(),
                    *w,
                    vec![],
                ))
            })
            .collect()
    }

    static GET: Method = Method::GET;

    /// A `GET /` from 127.0.0.1 carrying `headers`.
    pub(crate) fn request(headers: &HeaderMap) -> RequestContext<'_> {
        RequestContext {
            method: &GET,
            authority: "test",
            path: "/",
            headers,
            client_addr: SocketAddr::from(([127, 0, 0, 1], 9)),
        }
    }

    /// Ranks one request with `strategy`.
    pub(crate) fn rank(strategy: &dyn Strategy, endpoints: &[Arc<Endpoint>]) -> Vec<EndpointId> {
        let headers = HeaderMap::new();
        let mut out = Ranking::new();
        strategy
            .rank(&request(&headers), endpoints, &mut out)
            .unwrap();
        out.to_vec()
    }

    #[test]
    fn next_candidate_skips_tried_and_unreachable() {
        let endpoints = pool(3);
        let ranking: Ranking = [2, 0, 1].into_iter().collect();
        assert_eq!(
            next_candidate(
                &ranking,
                &Members::new(endpoints.clone()),
                &[],
                0,
                true,
                None
            ),
            Some(2)
        );
        assert_eq!(
            next_candidate(
                &ranking,
                &Members::new(endpoints.clone()),
                &[2],
                0,
                true,
                None
            ),
            Some(0)
        );
        endpoints[0].mark_unreachable(50);
        assert_eq!(
            next_candidate(
                &ranking,
                &Members::new(endpoints.clone()),
                &[2],
                10,
                true,
                None
            ),
            Some(1)
        );
        assert_eq!(
            next_candidate(
                &ranking,
                &Members::new(endpoints.clone()),
                &[2],
                60,
                true,
                None
            ),
            Some(0)
        );
        assert_eq!(
            next_candidate(
                &ranking,
                &Members::new(endpoints.clone()),
                &[2, 0, 1],
                0,
                true,
                None
            ),
            None
        );
    }

    #[test]
    fn unfit_instances_are_skipped_unless_health_is_ignored() {
        let endpoints = pool(3);
        endpoints[0].set_health_flag(UNHEALTHY, true);
        endpoints[1].set_health_flag(EJECTED, true);
        endpoints[2].set_health_flag(DEGRADED, true);
        let ranking: Ranking = [0, 1, 2].into_iter().collect();
        assert_eq!(
            next_candidate(
                &ranking,
                &Members::new(endpoints.clone()),
                &[],
                0,
                true,
                None
            ),
            Some(2)
        );
        assert_eq!(
            next_candidate(
                &ranking,
                &Members::new(endpoints.clone()),
                &[],
                0,
                false,
                None
            ),
            Some(0)
        );
        assert_eq!(
            next_candidate(
                &ranking,
                &Members::new(endpoints.clone()),
                &[2],
                0,
                true,
                None
            ),
            None
        );
    }

    #[test]
    fn degraded_instances_come_last_the_best_score_first() {
        let endpoints = pool(3);
        let members = Members::new(endpoints.clone());
        for (e, score) in endpoints.iter().zip([0.2, 0.6, 1.0]) {
            e.set_health_flag(CHECK_DEGRADED, true);
            e.set_health_score(score);
        }
        endpoints[2].set_health_flag(CHECK_DEGRADED, false);
        let ranking: Ranking = [0, 1, 2].into_iter().collect();
        assert_eq!(
            next_candidate(&ranking, &members, &[], 0, true, None),
            Some(2)
        );
        assert_eq!(
            next_candidate(&ranking, &members, &[2], 0, true, None),
            Some(1)
        );
        endpoints[1].mark_unreachable(10);
        assert_eq!(
            next_candidate(&ranking, &members, &[2], 0, true, None),
            Some(0)
        );
    }

    #[test]
    fn when_all_untried_are_unreachable_the_first_is_tried_anyway() {
        let endpoints = pool(2);
        endpoints[0].mark_unreachable(100);
        endpoints[1].mark_unreachable(100);
        let ranking: Ranking = [1, 0].into_iter().collect();
        assert_eq!(
            next_candidate(
                &ranking,
                &Members::new(endpoints.clone()),
                &[],
                0,
                true,
                None
            ),
            Some(1)
        );
    }

    struct Faulty;
    impl Strategy for Faulty {
        fn name(&self) -> &str {
            "faulty"
        }
        fn rank(
            &self,
            _: &RequestContext<'_>,
            _: &[Arc<Endpoint>],
            out: &mut Ranking,
        ) -> Result<(), Fault> {
            out.push(7);
            Err(Fault::Nonsense("test".into()))
        }
    }

    #[test]
    fn a_faulting_strategy_is_replaced_by_the_fallback_for_that_request() {
        let endpoints = pool(3);
        let balancer = Balancer::new(Arc::new(Faulty), Some(Box::new(RoundRobin::default())));
        let headers = HeaderMap::new();
        let request = request(&headers);
        assert_eq!(balancer.rank(&request, &endpoints).to_vec(), [0, 1, 2]);
        assert_eq!(balancer.rank(&request, &endpoints).to_vec(), [1, 2, 0]);
        let no_fallback = Balancer::new(Arc::new(Faulty), None);
        assert!(no_fallback.rank(&request, &endpoints).is_empty());
    }
}
