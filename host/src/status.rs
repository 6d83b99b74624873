//! What the status API, the dashboard and the metrics show of the data
//! path: a [`Snapshot`] taken when asked ([`crate::gateway::Router::snapshot`]),
//! so that none of them reads the router's internals.

use std::sync::Arc;

use serde::Serialize;

use crate::failover::BreakerState;
pub use crate::failover::BulkheadStatus;
use crate::fusion::CacheStats;
use crate::health::trend::TrendStatus;
use crate::plugin::{PluginKind, PluginStats};

/// The state of the router in force, as of when it was taken.
pub struct Snapshot {
    /// Every pool.
    pub pools: Vec<PoolStatus>,
    /// Every loaded plugin's counters.
    pub plugins: Vec<PluginCounters>,
    /// Every fan-out route's cache counts, by route index.
    pub caches: Vec<(usize, CacheStats)>,
}

/// Who loads a plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// A pool (its balancer, health check or failover policy), by name.
    Pool(String),
    /// A fan-out route (its resolver), by index.
    Route(usize),
    /// A filter (a plugin), by name.
    Filter(String),
}

impl std::fmt::Display for Owner {
    /// The pool's name, or `route N`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Owner::Pool(name) => f.write_str(name),
            Owner::Route(index) => write!(f, "route {index}"),
            Owner::Filter(name) => write!(f, "filter {name}"),
        }
    }
}

/// The counters of one loaded plugin.
pub struct PluginCounters {
    /// Who loads it.
    pub owner: Owner,
    /// Its kind.
    pub kind: PluginKind,
    /// Calls, faults, call time, quarantine.
    pub stats: Arc<PluginStats>,
}

/// A pool's state, as the status API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PoolStatus {
    /// The pool's name.
    pub name: String,
    /// Its strategy's name.
    pub strategy: String,
    /// Whether it is in panic mode (routing over unfit instances too).
    pub panic: bool,
    /// Times it entered panic mode.
    pub panics: u64,
    /// Instances fit now.
    pub fit: usize,
    /// Its bulkhead's occupancy; absent without a bulkhead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bulkhead: Option<BulkheadStatus>,
    /// Every instance.
    pub instances: Vec<InstanceStatus>,
}

/// An instance's state, as the status API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct InstanceStatus {
    /// `http://host:port`.
    pub url: String,
    /// Configured weight.
    pub weight: u32,
    /// Its labels.
    pub labels: std::collections::BTreeMap<String, String>,
    /// Fit to take requests (neither unhealthy nor ejected).
    pub fit: bool,
    /// Failed its active checks.
    pub unhealthy: bool,
    /// Ejected by outlier detection.
    pub ejected: bool,
    /// Judged degraded by a health check: chosen only when no instance
    /// judged healthy is acceptable.
    pub degraded: bool,
    /// The last health-check verdict's score, 0.0..=1.0 (1.0 without a plugin).
    pub health_score: f32,
    /// Draining.
    pub draining: bool,
    /// Requests in flight.
    pub in_flight: u32,
    /// Requests sent to it since it joined the pool (every attempt): its
    /// share of the traffic over an interval is the change of this.
    pub requests: u64,
    /// EWMA latency to response headers, µs.
    pub ewma_latency_us: u64,
    /// EWMA success, 0..=1.
    pub success_rate: f32,
    /// Last reported load, 0..=1.
    pub load: Option<f32>,
    /// Trend and prediction, when trends are on.
    pub trend: Option<TrendStatus>,
    /// Circuit breaker state, when breakers are on.
    pub breaker: Option<BreakerState>,
}

/// Where a replica stands with the store, for `/ready` and `/v1/status`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SyncState {
    /// `file` or `etcd`.
    pub kind: &'static str,
    /// Whether the replica follows the store now (always true for `file`).
    pub in_sync: bool,
    /// The revision of the configuration applied: etcd's `mod_revision` of
    /// the shared document (0: none yet), or with `file` the changes
    /// applied since start.
    pub revision: i64,
    /// Where the configuration in force came from at start: `etcd`,
    /// `cache` (etcd unreachable), `file`.
    pub loaded_from: &'static str,
    /// Why the replica is not in sync, when it is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// A revision of the store that this replica could not apply, and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}
