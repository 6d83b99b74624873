//! The `strategy` table of a pool: which balancing strategy, and its keys.
//!
//! ```toml
//! strategy = { kind = "round-robin" }
//! strategy = { kind = "weighted-round-robin" }
//! strategy = { kind = "random" }
//! strategy = { kind = "least-connections", choice_count = 2 }
//! strategy = { kind = "fastest-response", decay_ms = 10000, default_rtt_ms = 30 }
//! strategy = { kind = "consistent-hash", key = "header:x-user", algorithm = "maglev", bounded_load_factor = 1.25 }
//! strategy = { kind = "resource-aware", load_header = "x-load" }
//! strategy = { kind = "plugin", plugin = { path = "my_balancer.wasm", config = { } }, fallback = { kind = "round-robin" } }
//! ```
//!
//! The algorithms, their sources and defaults are documented on the
//! strategies themselves in `switchyard::balance`.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::plugin::{Deprecated, NameOrTable, PluginRef, check_plugin_kind, plugin_of};
use super::types::{Invalid, in_range};

/// How a pool ranks its instances.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum StrategyConfig {
    /// Each request to the next instance in order (`switchyard::balance::RoundRobin`).
    RoundRobin(NoKeys),
    /// Smooth weighted round robin, as nginx (`switchyard::balance::WeightedRoundRobin`).
    WeightedRoundRobin(NoKeys),
    /// Uniformly random (`switchyard::balance::Random`).
    Random(NoKeys),
    /// Fewest in-flight requests among a random sample (`switchyard::balance::LeastConnections`).
    LeastConnections(LeastConnectionsConfig),
    /// Peak-EWMA latency × load (`switchyard::balance::FastestResponse`).
    FastestResponse(FastestResponseConfig),
    /// A hash of a request key onto a ring or Maglev table (`switchyard::balance::ConsistentHash`).
    ConsistentHash(ConsistentHashConfig),
    /// Weights scaled by the load instances report (`switchyard::balance::ResourceAware`).
    ResourceAware(ResourceAwareConfig),
    /// A Wasm balancer plugin.
    Plugin(PluginStrategyConfig),
}

impl Default for StrategyConfig {
    fn default() -> Self {
        Self::RoundRobin(NoKeys {})
    }
}

/// The keys of a strategy that has none: any key is refused as unknown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NoKeys {}

/// A balancer plugin's `max_candidates` when not set.
pub const DEFAULT_MAX_CANDIDATES: u32 = 64;

/// Upper bound of a balancer plugin's `max_candidates`.
const MAX_CANDIDATES: u64 = 65_536;

/// Keys of `plugin`: a Wasm balancer, the built-in that ranks a request
/// when it faults, and how many candidates one call sees.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(try_from = "PluginStrategySpelling")]
pub struct PluginStrategyConfig {
    /// The `balancer-plugin` component and its limits.
    pub plugin: PluginRef,
    /// The built-in strategy that ranks a request when the plugin faults,
    /// e.g. `{ kind = "least-connections" }`; not a plugin. Default
    /// `{ kind = "round-robin" }`.
    #[schema(no_recursion)]
    pub fallback: Box<StrategyConfig>,
    /// Most candidates one `pick` receives, 2..=65536. Default 64. A pool
    /// with more fit instances gives the plugin a fresh uniform sample of
    /// this many per request (a random start and a random stride coprime
    /// with the pool size), so that a decision's cost stays bounded as the
    /// pool grows — the power-of-d-choices argument (Mitzenmacher, 2001)
    /// that Envoy's least-request balancer rests on.
    pub max_candidates: u32,
    /// Set when read from a deprecated spelling.
    #[serde(skip)]
    pub deprecated: Deprecated,
}

/// What a `strategy = { kind = "plugin", … }` table may hold: the new
/// spelling, or the plugin's keys flat (deprecated, in `flat`).
#[derive(Deserialize)]
struct PluginStrategySpelling {
    plugin: Option<PluginRef>,
    fallback: Option<NameOrTable<StrategyConfig>>,
    max_candidates: Option<u32>,
    #[serde(flatten)]
    flat: toml::Table,
}

impl TryFrom<PluginStrategySpelling> for PluginStrategyConfig {
    type Error = String;

    fn try_from(spelling: PluginStrategySpelling) -> Result<Self, String> {
        let (plugin, flat) = plugin_of(spelling.plugin, spelling.flat)?;
        let fallback = spelling.fallback.unwrap_or(NameOrTable {
            value: StrategyConfig::default(),
            by_name: false,
        });
        let deprecated = (flat || fallback.by_name).then_some(
            "strategy = { kind = \"plugin\", plugin = { path = …, config = … }, \
             fallback = { kind = \"round-robin\" } }",
        );
        Ok(Self {
            plugin,
            fallback: Box::new(fallback.value),
            max_candidates: spelling.max_candidates.unwrap_or(DEFAULT_MAX_CANDIDATES),
            deprecated: Deprecated(deprecated),
        })
    }
}

impl PluginStrategyConfig {
    /// The plugin's checks, then the fallback's and `max_candidates`'.
    fn validate(&self) -> Result<(), Invalid> {
        check_plugin_kind(
            &self.plugin,
            matches!(*self.fallback, StrategyConfig::Plugin(_)),
            || self.fallback.validate(),
        )?;
        in_range(
            "max_candidates",
            u64::from(self.max_candidates),
            2,
            MAX_CANDIDATES,
        )
    }
}

/// Keys of `least-connections`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct LeastConnectionsConfig {
    /// Instances sampled per request, >= 2. Default 2 (power of two choices,
    /// as Envoy's `LEAST_REQUEST`). A value >= the pool size scans them all.
    pub choice_count: u32,
}

impl Default for LeastConnectionsConfig {
    fn default() -> Self {
        Self { choice_count: 2 }
    }
}

/// Keys of `fastest-response`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct FastestResponseConfig {
    /// Time constant of the latency decay, ms. Default 10000 (Finagle and Linkerd).
    pub decay_ms: u64,
    /// Latency assumed for an instance with no data yet, ms. Default 30 (Linkerd).
    pub default_rtt_ms: u64,
    /// Instances sampled per request, >= 2. Default 2.
    pub choice_count: u32,
}

impl Default for FastestResponseConfig {
    fn default() -> Self {
        Self {
            decay_ms: 10_000,
            default_rtt_ms: 30,
            choice_count: 2,
        }
    }
}

/// Keys of `consistent-hash`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsistentHashConfig {
    /// Where the hash key comes from: `header:NAME`, `cookie:NAME`,
    /// `query:NAME`, `path` or `client-ip`. Required.
    #[schema(
        value_type = String,
        pattern = "^(header:[!#$%&'*+.^_`|~0-9A-Za-z-]+|cookie:.+|query:.+|path|client-ip)$",
        example = "header:x-user"
    )]
    pub key: HashKey,
    /// `ring` (Karger et al. 1997, as Envoy's `RING_HASH`) or `maglev`
    /// (Eisenbud et al. 2016, as Envoy's `MAGLEV`). Default `ring`.
    #[serde(default)]
    pub algorithm: HashAlgorithm,
    /// Bounded loads (Mirrokni, Thorup, Zadimoghaddam 2018): an instance
    /// takes a request only while its in-flight count is below
    /// `factor × average`; >= 1.0. Default: unbounded.
    #[serde(default)]
    pub bounded_load_factor: Option<f64>,
    /// Ring entries (virtual nodes) per unit of instance weight. Default 160
    /// (Ketama). A fixed count per instance keeps every other instance's nodes
    /// in place when one joins or leaves.
    #[serde(default = "default_vnodes_per_weight")]
    pub vnodes_per_weight: u32,
    /// Maglev lookup table size; must be prime. Default 65537 (Envoy).
    #[serde(default = "default_table_size")]
    pub table_size: u32,
}

fn default_vnodes_per_weight() -> u32 {
    160
}

fn default_table_size() -> u32 {
    65_537
}

/// The consistent-hash algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum HashAlgorithm {
    /// Ketama-style ring of virtual nodes.
    #[default]
    Ring,
    /// Maglev lookup table.
    Maglev,
}

/// Where a consistent-hash key is read from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum HashKey {
    /// A request header's value (the first, if repeated); name lower-case.
    Header(String),
    /// A cookie's value.
    Cookie(String),
    /// A query parameter's raw value.
    Query(String),
    /// The path, without the query.
    Path,
    /// The client's IP address.
    ClientIp,
}

impl TryFrom<String> for HashKey {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        let named = |name: &str| -> Result<String, String> {
            if name.is_empty() {
                Err(format!("`{text}` needs a name after the colon"))
            } else {
                Ok(name.to_ascii_lowercase())
            }
        };
        match text.split_once(':') {
            Some(("header", name)) => {
                let name = named(name)?;
                http::HeaderName::try_from(name.as_str())
                    .map_err(|_| format!("`{name}` is not a valid header name"))?;
                Ok(HashKey::Header(name))
            }
            Some(("cookie", name)) => Ok(HashKey::Cookie(named(name)?)),
            Some(("query", name)) => Ok(HashKey::Query(named(name)?)),
            None if text == "path" => Ok(HashKey::Path),
            None if text == "client-ip" => Ok(HashKey::ClientIp),
            _ => Err(format!(
                "unknown hash key source `{text}` (expected `header:NAME`, `cookie:NAME`, \
                 `query:NAME`, `path` or `client-ip`)"
            )),
        }
    }
}

impl From<HashKey> for String {
    fn from(key: HashKey) -> String {
        key.to_string()
    }
}

impl fmt::Display for HashKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HashKey::Header(name) => write!(f, "header:{name}"),
            HashKey::Cookie(name) => write!(f, "cookie:{name}"),
            HashKey::Query(name) => write!(f, "query:{name}"),
            HashKey::Path => f.write_str("path"),
            HashKey::ClientIp => f.write_str("client-ip"),
        }
    }
}

/// Keys of `resource-aware`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ResourceAwareConfig {
    /// Response header in which instances report their load, 0.0 (idle) ..= 1.0
    /// (saturated). Default `x-load`.
    pub load_header: String,
    /// Smallest share of its weight a saturated instance keeps, 0 < f <= 1.
    /// Default 0.05, so a loaded instance is still probed and its report refreshed.
    pub min_weight_factor: f64,
}

impl Default for ResourceAwareConfig {
    fn default() -> Self {
        Self {
            load_header: "x-load".into(),
            min_weight_factor: 0.05,
        }
    }
}

impl StrategyConfig {
    /// Checks the keys types cannot; errors are (key under `strategy.`, reason).
    pub(super) fn validate(&self) -> Result<(), Invalid> {
        let choice = |count: u32| {
            if count < 2 {
                Err((
                    "choice_count".to_string(),
                    format!("must be >= 2, got {count}"),
                ))
            } else {
                Ok(())
            }
        };
        match self {
            StrategyConfig::LeastConnections(c) => choice(c.choice_count),
            StrategyConfig::FastestResponse(c) => {
                choice(c.choice_count)?;
                if c.decay_ms == 0 {
                    return Err(("decay_ms".into(), "must be > 0".into()));
                }
                Ok(())
            }
            StrategyConfig::ConsistentHash(c) => {
                if let Some(factor) = c.bounded_load_factor
                    && !(factor >= 1.0 && factor.is_finite())
                {
                    return Err((
                        "bounded_load_factor".into(),
                        format!("must be >= 1.0, got {factor}"),
                    ));
                }
                if c.vnodes_per_weight == 0 || c.vnodes_per_weight > 10_000 {
                    return Err(("vnodes_per_weight".into(), "must be 1..=10000".into()));
                }
                if !is_prime(c.table_size) || c.table_size > 5_000_011 {
                    return Err((
                        "table_size".into(),
                        format!("must be a prime <= 5000011, got {}", c.table_size),
                    ));
                }
                Ok(())
            }
            StrategyConfig::ResourceAware(c) => {
                http::HeaderName::try_from(c.load_header.as_str()).map_err(|_| {
                    (
                        "load_header".to_string(),
                        format!("`{}` is not a valid header name", c.load_header),
                    )
                })?;
                if !(c.min_weight_factor > 0.0 && c.min_weight_factor <= 1.0) {
                    return Err((
                        "min_weight_factor".into(),
                        format!("must be in (0, 1], got {}", c.min_weight_factor),
                    ));
                }
                Ok(())
            }
            StrategyConfig::Plugin(c) => c.validate(),
            _ => Ok(()),
        }
    }
}

fn is_prime(n: u32) -> bool {
    n >= 2
        && (2..)
            .take_while(|d: &u32| d * d <= n)
            .all(|d| !n.is_multiple_of(d))
}
