//! Prometheus metrics (`GET /metrics` on the admin listener), with
//! `prometheus-client`.
//!
//! Counters and histograms of the data path live in [`Metrics`], which
//! outlives configuration changes; each route and pool takes its handles
//! when it is built, so recording a request is a few atomic adds with no
//! lock and no allocation. State — in-flight requests, health, breakers,
//! plugin counters, fusion caches — is read from the router in force when
//! scraped ([`Metrics::render`]).
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `switchyard_requests_total` | counter | `route`, `pool`, `class` (`2xx`…) |
//! | `switchyard_request_duration_seconds` | histogram (to response headers) | `route`, `pool` |
//! | `switchyard_retries_total` | counter | `pool` |
//! | `switchyard_upstream_resends_total` | counter (requests sent again on a new connection after a kept one closed under them) | `pool` |
//! | `switchyard_instance_in_flight` | gauge | `pool`, `instance` |
//! | `switchyard_instance_fit` / `_unhealthy` / `_ejected` / `_draining` | gauge (0/1) | `pool`, `instance` |
//! | `switchyard_instance_breaker_state` | gauge (0 closed, 1 half-open, 2 open) | `pool`, `instance` |
//! | `switchyard_instance_latency_ewma_seconds` | gauge | `pool`, `instance` |
//! | `switchyard_pool_panic` | gauge (0/1) | `pool` |
//! | `switchyard_pool_bulkhead_active` / `_queued` | gauge (requests holding a slot / waiting for one; pools with a bulkhead) | `pool` |
//! | `switchyard_plugin_calls_total` / `_faults_total` / `_call_seconds_total` / `_output_dropped_bytes_total` / `_output_dropped_lines_total` | counter | `pool` (`route N` for a resolver, `filter NAME` for a filter), `kind` (`balancer`, `health-check`, `failover`, `resolver`, `filter`) |
//! | `switchyard_plugin_quarantined` | gauge (0/1) | `pool`, `kind` |
//! | `switchyard_fusion_cache_total` | counter | `route`, `result` (`hit`, `miss`, `stale`) |
//! | `switchyard_mcp_calls_total` | counter | `route`, `target`, `method` (JSON-RPC), `outcome` (`ok`, `failed`, `timeout`, `unreachable`, `no_instance`, `session_gone`) |
//! | `switchyard_mcp_call_duration_seconds` | histogram | `route`, `target`, `method` |
//! | `switchyard_mcp_tool_calls_total` | counter | `route`, `target`, `tool`, `outcome` |
//! | `switchyard_filter_answers_total` | counter (requests a route's filter answered itself instead of the route's target) | `route`, `filter`, `answer` (`redirect`, `respond`, `preflight`, `forbidden`, `payload_too_large`, `header_fields_too_large`, `bad_request`, `unauthorized`, `plugin`) |
//! | `switchyard_auth_decisions_total` | counter (requests an authentication filter decided on) | `route`, `filter`, `decision` (`authenticated`, `anonymous`: none and none required, `missing`, `invalid`: refused 401) |
//! | `switchyard_rate_limit_decisions_total` | counter (requests a limit of a `rate-limit` filter judged) | `route`, `filter`, `limit`, `decision` (`allowed`, `limited`: refused 429, `shadow_limited`: over a shadow limit, passed) |
//! | `switchyard_rate_limit_global` | gauge (1: the filter's limits are shared through its Redis; 0: Redis failing, each replica enforces its share) | `route`, `filter` |
//! | `switchyard_rate_limit_keys_evicted_total` | counter (keys a limit forgot at `max_keys`, not at rest) | `route`, `filter`, `limit` |
//! | `switchyard_principal_requests_total` | counter (requests an authentication filter found the principal of; the first 1,000 principals of a route's filter by name, the rest as `_other`) | `route`, `filter`, `principal` |
//! | `switchyard_process_restarts_total` | counter | `pool`, `replica` |
//! | `switchyard_client_connections_refused_total` | counter (client connections closed at once: a connection cap reached, nothing evictable) | `listener` |
//! | `switchyard_client_connections_evicted_total` | counter (client connections closed to admit a new one at `max_connections`) | `listener` |
//! | `switchyard_process_ready_since_seconds` | gauge (Unix time; 0 when not ready) | `pool`, `replica` |
//! | `switchyard_config_revision` | gauge (the config store's revision in force) | — |
//! | `switchyard_config_store_in_sync` | gauge (0/1: following the store now) | — |

use std::collections::HashMap;
use std::sync::{OnceLock, PoisonError, RwLock};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::failover::BreakerState;
use crate::status::Snapshot;

/// Labels of a route's request metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
    pool: String,
    class: String,
}

/// Labels of a route's latency.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LatencyLabels {
    route: String,
    pool: String,
}

/// Labels of pool metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    pool: String,
}

/// Labels of listener metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabels {
    listener: String,
}

/// Labels of instance metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InstanceLabels {
    pool: String,
    instance: String,
}

/// Labels of plugin metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginLabels {
    pool: String,
    kind: String,
}

/// Labels of fusion cache metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    route: String,
    result: String,
}

fn latency_histogram() -> Histogram {
    // 0.25 ms .. ~8 s.
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

/// Labels of an MCP route's calls to its targets.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct McpLabels {
    route: String,
    target: String,
    method: String,
    outcome: String,
}

/// Labels of an MCP route's call latency.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct McpLatencyLabels {
    route: String,
    target: String,
    method: String,
}

/// Labels of an MCP route's tool calls.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct McpToolLabels {
    route: String,
    target: String,
    tool: String,
    outcome: String,
}

/// Labels of a filter's answers.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FilterLabels {
    route: String,
    filter: String,
    answer: String,
}

/// Labels of an authentication filter's decisions.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AuthLabels {
    route: String,
    filter: String,
    decision: String,
}

/// Labels of a limit of a `rate-limit` filter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    route: String,
    filter: String,
    limit: String,
}

/// Labels of a `rate-limit` filter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitFilterLabels {
    route: String,
    filter: String,
}

/// Labels of a limit's decisions.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitDecisionLabels {
    route: String,
    filter: String,
    limit: String,
    decision: String,
}

/// Labels of the requests of one principal.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PrincipalLabels {
    route: String,
    filter: String,
    principal: String,
}

/// The requests of each principal one authentication filter of a route
/// found (`switchyard_principal_requests_total`), labels bounded whatever
/// the credentials name: a counter of its own for each of the first
/// [`PRINCIPAL_LABELS`] principals, one for the rest (`_other`) — Kong's
/// per-consumer metrics, without a series per token subject.
pub struct PrincipalCounts {
    family: Family<PrincipalLabels, Counter>,
    route: String,
    filter: String,
    known: RwLock<HashMap<String, Counter>>,
    other: OnceLock<Counter>,
}

/// How many principals of one route's filter have a label of their own.
pub const PRINCIPAL_LABELS: usize = 1_000;

impl PrincipalCounts {
    /// Counts a request of `principal`.
    pub fn count(&self, principal: &str) {
        let labels = |principal: &str| PrincipalLabels {
            route: self.route.clone(),
            filter: self.filter.clone(),
            principal: principal.to_owned(),
        };
        if let Some(counter) = self
            .known
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(principal)
        {
            counter.inc();
            return;
        }
        let mut known = self.known.write().unwrap_or_else(PoisonError::into_inner);
        if known.len() < PRINCIPAL_LABELS || known.contains_key(principal) {
            known
                .entry(principal.to_owned())
                .or_insert_with(|| self.family.get_or_create(&labels(principal)).clone())
                .inc();
        } else {
            self.other
                .get_or_init(|| self.family.get_or_create(&labels("_other")).clone())
                .inc();
        }
    }
}

/// Labels of a managed pool's replica.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReplicaLabels {
    pool: String,
    replica: String,
}

/// The long-lived metrics of the data path.
pub struct Metrics {
    registry: Registry,
    requests: Family<RouteLabels, Counter>,
    latency: Family<LatencyLabels, Histogram, fn() -> Histogram>,
    retries: Family<PoolLabels, Counter>,
    resends: Family<PoolLabels, Counter>,
    mcp_calls: Family<McpLabels, Counter>,
    mcp_latency: Family<McpLatencyLabels, Histogram, fn() -> Histogram>,
    mcp_tools: Family<McpToolLabels, Counter>,
    filter_answers: Family<FilterLabels, Counter>,
    auth_decisions: Family<AuthLabels, Counter>,
    principal_requests: Family<PrincipalLabels, Counter>,
    limit_decisions: Family<LimitDecisionLabels, Counter>,
    limit_evictions: Family<LimitLabels, Counter>,
    limit_global: Family<LimitFilterLabels, Gauge>,
    process_restarts: Family<ReplicaLabels, Counter>,
    process_ready_since: Family<ReplicaLabels, Gauge>,
    connections_refused: Family<ListenerLabels, Counter>,
    connections_evicted: Family<ListenerLabels, Counter>,
    config_revision: Gauge,
    store_in_sync: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RouteLabels, Counter>::default();
        let latency = Family::<LatencyLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        let retries = Family::<PoolLabels, Counter>::default();
        registry.register(
            "switchyard_requests",
            "Requests answered, by route, pool and status class",
            requests.clone(),
        );
        registry.register(
            "switchyard_request_duration_seconds",
            "Time from a request's arrival to its response headers",
            latency.clone(),
        );
        registry.register(
            "switchyard_retries",
            "Retries sent to a pool's instances",
            retries.clone(),
        );
        let resends = Family::<PoolLabels, Counter>::default();
        registry.register(
            "switchyard_upstream_resends",
            "Requests sent again on a new connection after a kept one closed under them (not retries)",
            resends.clone(),
        );
        let connections_refused = Family::<ListenerLabels, Counter>::default();
        registry.register(
            "switchyard_client_connections_refused",
            "Client connections closed at once: a connection cap was reached and none could be evicted",
            connections_refused.clone(),
        );
        let connections_evicted = Family::<ListenerLabels, Counter>::default();
        registry.register(
            "switchyard_client_connections_evicted",
            "Client connections closed to admit a new one at max_connections (the longest waiting for a request head, else the longest idle)",
            connections_evicted.clone(),
        );
        let mcp_calls = Family::<McpLabels, Counter>::default();
        let mcp_latency =
            Family::<McpLatencyLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            );
        let mcp_tools = Family::<McpToolLabels, Counter>::default();
        let process_restarts = Family::<ReplicaLabels, Counter>::default();
        let process_ready_since = Family::<ReplicaLabels, Gauge>::default();
        registry.register(
            "switchyard_process_restarts",
            "Restarts of a managed pool's replica",
            process_restarts.clone(),
        );
        registry.register(
            "switchyard_process_ready_since_seconds",
            "Unix time a managed pool's replica became ready (0 while it is not): its up time is now minus this",
            process_ready_since.clone(),
        );
        registry.register(
            "switchyard_mcp_calls",
            "Requests of MCP routes to their targets, by route, target, JSON-RPC method and outcome",
            mcp_calls.clone(),
        );
        registry.register(
            "switchyard_mcp_call_duration_seconds",
            "Time of an MCP route's request to a target, to its answer's head",
            mcp_latency.clone(),
        );
        registry.register(
            "switchyard_mcp_tool_calls",
            "tools/call of MCP routes, by route, target, tool and outcome",
            mcp_tools.clone(),
        );
        let filter_answers = Family::<FilterLabels, Counter>::default();
        registry.register(
            "switchyard_filter_answers",
            "Requests a route's filter answered itself (redirect, fixed response, preflight, refusal), by route, filter and answer",
            filter_answers.clone(),
        );
        let auth_decisions = Family::<AuthLabels, Counter>::default();
        registry.register(
            "switchyard_auth_decisions",
            "Requests an authentication filter decided on, by route, filter and decision",
            auth_decisions.clone(),
        );
        let principal_requests = Family::<PrincipalLabels, Counter>::default();
        registry.register(
            "switchyard_principal_requests",
            "Requests an authentication filter found the principal of, by route, filter and principal (the first 1,000 principals of a route's filter by name, the rest as `_other`)",
            principal_requests.clone(),
        );
        let limit_decisions = Family::<LimitDecisionLabels, Counter>::default();
        registry.register(
            "switchyard_rate_limit_decisions",
            "Requests a limit of a rate-limit filter judged, by route, filter, limit and decision",
            limit_decisions.clone(),
        );
        let limit_evictions = Family::<LimitLabels, Counter>::default();
        registry.register(
            "switchyard_rate_limit_keys_evicted",
            "Keys a limit forgot before they were at rest because it held max_keys, by route, filter and limit",
            limit_evictions.clone(),
        );
        let limit_global = Family::<LimitFilterLabels, Gauge>::default();
        registry.register(
            "switchyard_rate_limit_global",
            "Whether a rate-limit filter with a Redis enforces its limits globally (1) or, Redis failing, each replica its share locally (0), by route and filter",
            limit_global.clone(),
        );
        let config_revision = Gauge::default();
        let store_in_sync = Gauge::default();
        registry.register(
            "switchyard_config_revision",
            "The revision of the configuration in force (etcd's, or the changes since start with the state file)",
            config_revision.clone(),
        );
        registry.register(
            "switchyard_config_store_in_sync",
            "1 while the replica follows its config store (always with the state file), 0 while etcd is out of reach",
            store_in_sync.clone(),
        );
        Self {
            registry,
            requests,
            latency,
            retries,
            resends,
            mcp_calls,
            mcp_latency,
            mcp_tools,
            filter_answers,
            auth_decisions,
            principal_requests,
            limit_decisions,
            limit_evictions,
            limit_global,
            process_restarts,
            process_ready_since,
            connections_refused,
            connections_evicted,
            config_revision,
            store_in_sync,
        }
    }
}

/// The handles one route records into.
#[derive(Clone, Debug)]
pub struct RouteMetrics {
    /// Requests by status class: 1xx … 5xx.
    classes: [Counter; 5],
    latency: Histogram,
}

impl RouteMetrics {
    /// Records one answered request: its status and the seconds to its headers.
    pub fn record(&self, status: u16, seconds: f64) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.classes[class].inc();
        self.latency.observe(seconds);
    }
}

impl Metrics {
    /// The handles of route number `route` serving `pool` (its pool's name,
    /// or `fan-out`).
    pub fn route(&self, route: usize, pool: &str) -> RouteMetrics {
        let counter = |class: &str| {
            self.requests
                .get_or_create(&RouteLabels {
                    route: route.to_string(),
                    pool: pool.to_string(),
                    class: class.to_string(),
                })
                .clone()
        };
        RouteMetrics {
            classes: ["1xx", "2xx", "3xx", "4xx", "5xx"].map(counter),
            latency: self
                .latency
                .get_or_create(&LatencyLabels {
                    route: route.to_string(),
                    pool: pool.to_string(),
                })
                .clone(),
        }
    }

    /// The counter of the requests filter `filter` of route number `route`
    /// answered itself with `answer` (see the module's table).
    pub fn filter_answers(&self, route: usize, filter: &str, answer: &str) -> Counter {
        self.filter_answers
            .get_or_create(&FilterLabels {
                route: route.to_string(),
                filter: filter.to_string(),
                answer: answer.to_string(),
            })
            .clone()
    }

    /// The counter of the requests authentication filter `filter` of route
    /// number `route` decided `decision` on (see the module's table).
    pub fn auth_decisions(&self, route: usize, filter: &str, decision: &str) -> Counter {
        self.auth_decisions
            .get_or_create(&AuthLabels {
                route: route.to_string(),
                filter: filter.to_string(),
                decision: decision.to_string(),
            })
            .clone()
    }

    /// The counter of `decision`s of limit `limit` of rate-limit filter
    /// `filter` of route `route`.
    pub fn rate_limit_decisions(
        &self,
        route: usize,
        filter: &str,
        limit: &str,
        decision: &str,
    ) -> Counter {
        self.limit_decisions
            .get_or_create(&LimitDecisionLabels {
                route: route.to_string(),
                filter: filter.to_string(),
                limit: limit.to_string(),
                decision: decision.to_string(),
            })
            .clone()
    }

    /// The gauge of whether the limits of rate-limit filter `filter` of
    /// route `route` are global (1: Redis answers) or local (0).
    pub fn rate_limit_global(&self, route: usize, filter: &str) -> Gauge {
        self.limit_global
            .get_or_create(&LimitFilterLabels {
                route: route.to_string(),
                filter: filter.to_string(),
            })
            .clone()
    }

    /// The counter of the keys limit `limit` of rate-limit filter
    /// `filter` of route `route` forgot at its `max_keys`.
    pub fn rate_limit_evictions(&self, route: usize, filter: &str, limit: &str) -> Counter {
        self.limit_evictions
            .get_or_create(&LimitLabels {
                route: route.to_string(),
                filter: filter.to_string(),
                limit: limit.to_string(),
            })
            .clone()
    }

    /// The per-principal counts of authentication filter `filter` of
    /// route `route`.
    pub fn principal_counts(&self, route: usize, filter: &str) -> PrincipalCounts {
        PrincipalCounts {
            family: self.principal_requests.clone(),
            route: route.to_string(),
            filter: filter.to_string(),
            known: RwLock::default(),
            other: OnceLock::new(),
        }
    }

    /// Counts a request of MCP route `route` to `target` (`method`, its
    /// `outcome`) that took `seconds`.
    pub fn mcp_call(&self, route: usize, target: &str, method: &str, outcome: &str, seconds: f64) {
        self.mcp_calls
            .get_or_create(&McpLabels {
                route: route.to_string(),
                target: target.to_string(),
                method: method.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
        self.mcp_latency
            .get_or_create(&McpLatencyLabels {
                route: route.to_string(),
                target: target.to_string(),
                method: method.to_string(),
            })
            .observe(seconds);
    }

    /// Counts a `tools/call` of `tool` on MCP route `route`'s `target`.
    pub fn mcp_tool_call(&self, route: usize, target: &str, tool: &str, outcome: &str) {
        self.mcp_tools
            .get_or_create(&McpToolLabels {
                route: route.to_string(),
                target: target.to_string(),
                tool: tool.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// The counters of client connections refused and evicted on the
    /// listener bound to `listener` (`ip:port`).
    pub fn connection_counters(&self, listener: &str) -> (Counter, Counter) {
        let labels = ListenerLabels {
            listener: listener.to_string(),
        };
        (
            self.connections_refused.get_or_create(&labels).clone(),
            self.connections_evicted.get_or_create(&labels).clone(),
        )
    }

    /// Counts a restart of replica `replica` of `pool`.
    pub fn process_restart(&self, pool: &str, replica: u32) {
        self.process_restarts
            .get_or_create(&ReplicaLabels {
                pool: pool.to_string(),
                replica: replica.to_string(),
            })
            .inc();
    }

    /// Replica `replica` of `pool` became ready at `unix_seconds` (0: it
    /// is no longer ready).
    pub fn process_ready(&self, pool: &str, replica: u32, unix_seconds: i64) {
        self.process_ready_since
            .get_or_create(&ReplicaLabels {
                pool: pool.to_string(),
                replica: replica.to_string(),
            })
            .set(unix_seconds);
    }

    /// The config store's `state`, shown at the next scrape.
    pub fn store(&self, state: &crate::status::SyncState) {
        self.config_revision.set(state.revision);
        self.store_in_sync.set(i64::from(state.in_sync));
    }

    /// The retry counter of `pool`.
    pub fn retries(&self, pool: &str) -> Counter {
        pool_counter(&self.retries, pool)
    }

    /// The counter of `pool`'s requests sent again on a new connection.
    pub fn resends(&self, pool: &str) -> Counter {
        pool_counter(&self.resends, pool)
    }

    /// The text exposition (OpenMetrics text, which Prometheus reads): the
    /// data-path counters, then the state in `snapshot`.
    pub fn render(&self, snapshot: &Snapshot) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode_registry(&mut out, &self.registry);
        let _ = prometheus_client::encoding::text::encode(&mut out, &state_registry(snapshot));
        out
    }
}

/// `pool`'s counter of `family`.
fn pool_counter(family: &Family<PoolLabels, Counter>, pool: &str) -> Counter {
    family
        .get_or_create(&PoolLabels {
            pool: pool.to_string(),
        })
        .clone()
}

/// A registry of the state in `snapshot`, filled at scrape time.
fn state_registry(snapshot: &Snapshot) -> Registry {
    let mut registry = Registry::default();
    let gauge = |registry: &mut Registry, name: &str, help: &str| {
        let family = Family::<InstanceLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        registry.register(name, help, family.clone());
        family
    };
    let in_flight = gauge(
        &mut registry,
        "switchyard_instance_in_flight",
        "Requests in flight to the instance",
    );
    let fit = gauge(
        &mut registry,
        "switchyard_instance_fit",
        "1 if the instance takes requests (neither unhealthy nor ejected)",
    );
    let unhealthy = gauge(
        &mut registry,
        "switchyard_instance_unhealthy",
        "1 if active health checks failed the instance",
    );
    let ejected = gauge(
        &mut registry,
        "switchyard_instance_ejected",
        "1 if outlier detection ejected the instance",
    );
    let draining = gauge(
        &mut registry,
        "switchyard_instance_draining",
        "1 if the instance is draining",
    );
    let breaker = gauge(
        &mut registry,
        "switchyard_instance_breaker_state",
        "Circuit breaker: 0 closed, 1 half-open, 2 open",
    );
    let latency = gauge(
        &mut registry,
        "switchyard_instance_latency_ewma_seconds",
        "Moving average of the instance's latency to response headers",
    );
    let pool_gauge = |registry: &mut Registry, name: &str, help: &str| {
        let family = Family::<PoolLabels, Gauge>::default();
        registry.register(name, help, family.clone());
        family
    };
    let panic = pool_gauge(
        &mut registry,
        "switchyard_pool_panic",
        "1 while the pool is in panic mode",
    );
    let bulkhead_active = pool_gauge(
        &mut registry,
        "switchyard_pool_bulkhead_active",
        "Requests holding one of the pool's bulkhead slots",
    );
    let bulkhead_queued = pool_gauge(
        &mut registry,
        "switchyard_pool_bulkhead_queued",
        "Requests waiting in the pool's bulkhead queue",
    );
    let calls = Family::<PluginLabels, Counter>::default();
    let faults = Family::<PluginLabels, Counter>::default();
    let call_seconds =
        Family::<PluginLabels, Counter<f64, std::sync::atomic::AtomicU64>>::default();
    let quarantined = Family::<PluginLabels, Gauge>::default();
    registry.register(
        "switchyard_plugin_calls",
        "Calls into the pool's plugin",
        calls.clone(),
    );
    registry.register(
        "switchyard_plugin_faults",
        "Plugin faults (the built-in served the decision)",
        faults.clone(),
    );
    registry.register(
        "switchyard_plugin_quarantined",
        "1 while the plugin is quarantined (the built-in decides)",
        quarantined.clone(),
    );
    let dropped_bytes = Family::<PluginLabels, Counter>::default();
    let dropped_lines = Family::<PluginLabels, Counter>::default();
    registry.register(
        "switchyard_plugin_output_dropped_bytes",
        "Plugin output bytes dropped over the per-call bound",
        dropped_bytes.clone(),
    );
    registry.register(
        "switchyard_plugin_output_dropped_lines",
        "Plugin log lines dropped over the per-second rate",
        dropped_lines.clone(),
    );
    registry.register(
        "switchyard_plugin_call_seconds",
        "Time spent in calls into the pool's plugin (divided by calls: the mean call latency)",
        call_seconds.clone(),
    );
    let cache = Family::<CacheLabels, Counter>::default();
    registry.register(
        "switchyard_fusion_cache",
        "Fused-answer cache lookups by result",
        cache.clone(),
    );

    for pool in &snapshot.pools {
        let labels = PoolLabels {
            pool: pool.name.clone(),
        };
        panic.get_or_create(&labels).set(i64::from(pool.panic));
        if let Some(bulkhead) = pool.bulkhead {
            let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
            bulkhead_active
                .get_or_create(&labels)
                .set(count(bulkhead.active));
            bulkhead_queued
                .get_or_create(&labels)
                .set(count(bulkhead.queued));
        }
        for instance in &pool.instances {
            let labels = InstanceLabels {
                pool: pool.name.clone(),
                instance: instance.url.clone(),
            };
            let flag = |b: bool| if b { 1.0 } else { 0.0 };
            in_flight
                .get_or_create(&labels)
                .set(f64::from(instance.in_flight));
            fit.get_or_create(&labels).set(flag(instance.fit));
            unhealthy
                .get_or_create(&labels)
                .set(flag(instance.unhealthy));
            ejected.get_or_create(&labels).set(flag(instance.ejected));
            draining.get_or_create(&labels).set(flag(instance.draining));
            latency
                .get_or_create(&labels)
                .set(instance.ewma_latency_us as f64 / 1e6);
            if let Some(state) = instance.breaker {
                let value = match state {
                    BreakerState::Closed => 0.0,
                    BreakerState::HalfOpen => 1.0,
                    BreakerState::Open => 2.0,
                };
                breaker.get_or_create(&labels).set(value);
            }
        }
    }
    for plugin in &snapshot.plugins {
        let labels = PluginLabels {
            pool: plugin.owner.to_string(),
            kind: plugin.kind.name().into(),
        };
        let stats = &plugin.stats;
        calls.get_or_create(&labels).inc_by(stats.calls());
        faults.get_or_create(&labels).inc_by(stats.faults());
        call_seconds
            .get_or_create(&labels)
            .inc_by(stats.call_seconds());
        quarantined
            .get_or_create(&labels)
            .set(i64::from(stats.quarantined()));
        dropped_bytes
            .get_or_create(&labels)
            .inc_by(stats.output().dropped_bytes());
        dropped_lines
            .get_or_create(&labels)
            .inc_by(stats.output().dropped_lines());
    }
    for (index, stats) in &snapshot.caches {
        for (result, n) in [
            ("hit", stats.hits),
            ("miss", stats.misses),
            ("stale", stats.stale),
        ] {
            cache
                .get_or_create(&CacheLabels {
                    route: index.to_string(),
                    result: result.into(),
                })
                .inc_by(n);
        }
    }
    registry
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principals_beyond_the_bound_share_one_label() {
        let metrics = Metrics::default();
        let counts = metrics.principal_counts(3, "keys");
        for i in 0..PRINCIPAL_LABELS {
            counts.count(&format!("p{i}"));
        }
        // One already labelled keeps its label; new ones are `_other`.
        counts.count("p0");
        counts.count("stranger");
        counts.count("another");
        let empty = Snapshot {
            pools: Vec::new(),
            plugins: Vec::new(),
            caches: Vec::new(),
        };
        let text = metrics.render(&empty);
        let series = |principal: &str| {
            format!(
                r#"switchyard_principal_requests_total{{route="3",filter="keys",principal="{principal}"}}"#
            )
        };
        assert!(text.contains(&format!("{} 2\n", series("p0"))), "{text}");
        assert!(text.contains(&format!("{} 1\n", series("p999"))));
        assert!(text.contains(&format!("{} 2\n", series("_other"))));
        assert!(!text.contains(&series("stranger")));
        let labelled = text.matches("switchyard_principal_requests_total{").count();
        assert_eq!(labelled, PRINCIPAL_LABELS + 1);
    }
}
