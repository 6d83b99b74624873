//! The `fan_out` table of a route: where a request is fanned out to, and how
//! the answers become one (`switchyard::fusion` documents every resolver).
//!
//! ```toml
//! [[routes]]
//! match = { path_prefix = "/quote" }
//! [routes.fan_out]
//! sources = [{ pool = "vendor-a" }, { pool = "vendor-b", weight = 2.0 }, { pool = "vendor-c" }]
//! # or: pool = "replicas", count = 3    (k instances of one pool; omit count for all)
//! timeout_ms = 2000            # overall deadline
//! source_timeout_ms = 1000     # per source, to the complete answer
//! resolver = { kind = "majority", compare = "json" }
//! schema_path = "quote.schema.json"
//! cache = { ttl_ms = 5000, max_entries = 10000, vary_headers = ["accept"], stale_if_error_ms = 60000 }
//! ```

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::plugin::PluginRef;
use super::strategy::NoKeys;
use super::types::Invalid;

/// A fan-out route: the request goes to several sources at once and a
/// resolver makes one answer out of theirs.
///
/// Exactly one of `sources` (several pools, one request each, the pool's
/// balancer choosing the instance) and `pool` (`count` instances of one pool,
/// each a source).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FanOutConfig {
    /// Pools to ask, one request each; a source's priority is its position
    /// (0 = highest) unless given.
    #[serde(default)]
    pub sources: Vec<SourceConfig>,
    /// One pool whose instances are the sources (priority = the instance's
    /// position in the pool, weight = its weight).
    pub pool: Option<String>,
    /// With `pool`: ask this many fit instances, in the balancer's order.
    /// Default: every instance.
    pub count: Option<u32>,
    /// The whole fan-out must finish within this long, ms; sources that have
    /// not answered by then count as timed out. Default 5000.
    #[serde(default = "defaults::timeout_ms")]
    pub timeout_ms: u64,
    /// Time one source has for its complete answer, ms. Default 2000.
    #[serde(default = "defaults::source_timeout_ms")]
    pub source_timeout_ms: u64,
    /// The request body is buffered (it is sent to every source) up to this
    /// size, bytes; a larger body gets 413. Default 1048576.
    #[serde(default = "defaults::max_bytes")]
    pub max_request_body_bytes: u64,
    /// A source's answer larger than this, bytes, is invalid (not read
    /// further). Default 1048576.
    #[serde(default = "defaults::max_bytes")]
    pub max_answer_bytes: u64,
    /// Inclusive range of statuses that count as an answer. Default `[200, 299]`.
    #[serde(default = "defaults::accept_status")]
    #[schema(min_items = 2, max_items = 2)]
    pub accept_status: [u16; 2],
    /// End the fan-out as soon as the resolver's result is settled (the
    /// first success, a reached quorum, the best priority answered) and
    /// cancel the requests still pending. `false` waits for every source or
    /// the deadline, so that every source's quality is learned. Default true.
    #[serde(default = "defaults::early_exit")]
    pub early_exit: bool,
    /// How the answers become one. Required.
    pub resolver: ResolverConfig,
    /// A JSON Schema file (relative to the config file) every answer must
    /// satisfy to count. Default: none.
    #[schema(value_type = Option<String>)]
    pub schema_path: Option<PathBuf>,
    /// Cache of fused answers. Default: none.
    pub cache: Option<FusionCacheConfig>,
}

/// One pool as a source of a fan-out route.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// The pool.
    pub pool: String,
    /// 0 = highest. Default: the source's position in `sources`.
    pub priority: Option<u32>,
    /// Vote weight, > 0. Default 1.0.
    #[serde(default = "defaults::weight")]
    pub weight: f64,
}

/// The resolver of a fan-out route.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ResolverConfig {
    /// The first acceptable answer wins; the others are cancelled (hedging).
    FirstSuccess(NoKeys),
    /// The acceptable answer of the best-priority source.
    Priority(NoKeys),
    /// An answer given by more than half of the sources.
    Majority(CompareKeys),
    /// An answer given by at least `min_agree` sources.
    Quorum(QuorumConfig),
    /// The answer with the largest total source weight.
    WeightedVote(WeightedVoteConfig),
    /// The answer with the latest timestamp.
    MostRecent(MostRecentConfig),
    /// The median of a numeric field.
    Median(MedianConfig),
    /// A deep JSON merge of every answer.
    Merge(MergeConfig),
    /// A JSON array of every source's answer with its provenance.
    All(NoKeys),
    /// A resolver plugin.
    Plugin(ResolverPluginConfig),
}

/// How two answers are compared in a vote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Compare {
    /// Equal as JSON (key order and whitespace do not matter); an answer that
    /// is not JSON is invalid.
    #[default]
    Json,
    /// Byte-equal bodies (compared by hash).
    Body,
}

/// Keys of `majority`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct CompareKeys {
    /// `json` (default) or `body`.
    pub compare: Compare,
}

/// Keys of `quorum`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuorumConfig {
    /// Sources that must give the same answer, >= 1. Required.
    pub min_agree: u32,
    /// `json` (default) or `body`.
    #[serde(default)]
    pub compare: Compare,
}

/// Keys of `weighted-vote`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct WeightedVoteConfig {
    /// `json` (default) or `body`.
    pub compare: Compare,
    /// Multiply each source's weight by its learned quality (acceptance ×
    /// agreement with past results). Default false.
    pub learn: bool,
    /// Share of the total weight of all sources the winner needs, 0..1.
    /// Default 0 (the heaviest answer wins).
    pub min_share: f64,
}

impl Default for WeightedVoteConfig {
    fn default() -> Self {
        Self {
            compare: Compare::Json,
            learn: false,
            min_share: 0.0,
        }
    }
}

/// Keys of `most-recent`: exactly one of `field` and `header`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MostRecentConfig {
    /// JSON Pointer (RFC 6901) of the timestamp in the body, e.g. `/updated_at`.
    pub field: Option<String>,
    /// Response header carrying the timestamp, e.g. `last-modified`.
    pub header: Option<String>,
}

/// Keys of `median`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MedianConfig {
    /// JSON Pointer (RFC 6901) of the number, e.g. `/price`. Required.
    pub field: String,
}

/// Keys of `merge`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct MergeConfig {
    /// Which value wins a key that sources disagree on. Default `priority`.
    pub on_conflict: ConflictRule,
}

/// The rule for a key that sources disagree on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ConflictRule {
    /// The best-priority source's value.
    #[default]
    Priority,
    /// The value most sources gave; a tie goes to the best priority.
    Majority,
}

/// Keys of `plugin`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResolverPluginConfig {
    /// The `resolver-plugin` component and its limits.
    pub plugin: PluginRef,
    /// The built-in resolver used when the plugin faults. Default `priority`.
    #[serde(default = "defaults::fallback")]
    #[schema(no_recursion)]
    pub fallback: Box<ResolverConfig>,
}

/// The cache of a fan-out route's fused answers.
///
/// Key: route, method, path and query, the `vary_headers` values and a hash
/// of the request body. Only answers with a 2xx status are stored.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct FusionCacheConfig {
    /// How long an answer is served from the cache, ms. Default 5000.
    pub ttl_ms: u64,
    /// Answers kept (least recently used go first). Default 10000.
    pub max_entries: u64,
    /// Request headers that are part of the key. Default none.
    pub vary_headers: Vec<String>,
    /// After its TTL, an answer is kept this much longer, ms, and served
    /// (`x-switchyard-cache: stale`) when fusion fails. Default 0 (off).
    pub stale_if_error_ms: u64,
}

impl Default for FusionCacheConfig {
    fn default() -> Self {
        Self {
            ttl_ms: 5_000,
            max_entries: 10_000,
            vary_headers: Vec::new(),
            stale_if_error_ms: 0,
        }
    }
}

mod defaults {
    use super::{NoKeys, ResolverConfig};

    pub fn timeout_ms() -> u64 {
        5_000
    }
    pub fn source_timeout_ms() -> u64 {
        2_000
    }
    pub fn max_bytes() -> u64 {
        1 << 20
    }
    pub fn accept_status() -> [u16; 2] {
        [200, 299]
    }
    pub fn weight() -> f64 {
        1.0
    }
    pub fn early_exit() -> bool {
        true
    }
    pub fn fallback() -> Box<ResolverConfig> {
        Box::new(ResolverConfig::Priority(NoKeys {}))
    }
}

impl FanOutConfig {
    /// Checks what types cannot say; `pools` are the configured pool names.
    pub(super) fn validate(&self, pools: &[&String]) -> Result<(), Invalid> {
        let known = |name: &String, key: String| {
            if pools.contains(&name) {
                Ok(())
            } else {
                Err((
                    key,
                    format!(
                        "unknown pool `{name}` (pools: {})",
                        pools
                            .iter()
                            .map(|p| p.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ))
            }
        };
        match (&self.pool, self.sources.is_empty()) {
            (Some(pool), true) => known(pool, "pool".into())?,
            (None, false) => {
                for (i, source) in self.sources.iter().enumerate() {
                    known(&source.pool, format!("sources[{i}].pool"))?;
                    if !(source.weight > 0.0 && source.weight.is_finite()) {
                        return Err((format!("sources[{i}].weight"), "must be > 0".into()));
                    }
                }
            }
            _ => {
                return Err((
                    "sources".into(),
                    "give exactly one of `sources` (several pools) and `pool` (one pool's instances)"
                        .into(),
                ));
            }
        }
        if self.count == Some(0) {
            return Err(("count".into(), "must be >= 1".into()));
        }
        if self.count.is_some() && self.pool.is_none() {
            return Err(("count".into(), "needs `pool`".into()));
        }
        for (k, v) in [
            ("timeout_ms", self.timeout_ms),
            ("source_timeout_ms", self.source_timeout_ms),
            ("max_request_body_bytes", self.max_request_body_bytes),
            ("max_answer_bytes", self.max_answer_bytes),
        ] {
            if v == 0 {
                return Err((k.into(), "must be > 0".into()));
            }
        }
        let [low, high] = self.accept_status;
        if !(100..=599).contains(&low) || !(low..=599).contains(&high) {
            return Err((
                "accept_status".into(),
                "must be [low, high] with 100 <= low <= high <= 599".into(),
            ));
        }
        if let Some(path) = &self.schema_path {
            let text = std::fs::read_to_string(path).map_err(|e| {
                (
                    "schema_path".to_string(),
                    format!("`{}`: {e}", path.display()),
                )
            })?;
            let schema: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
                (
                    "schema_path".to_string(),
                    format!("`{}` is not JSON: {e}", path.display()),
                )
            })?;
            jsonschema::validator_for(&schema).map_err(|e| {
                (
                    "schema_path".to_string(),
                    format!("`{}` is not a valid JSON Schema: {e}", path.display()),
                )
            })?;
        }
        if let Some(cache) = &self.cache {
            cache
                .validate()
                .map_err(|(k, reason)| (format!("cache.{k}"), reason))?;
        }
        self.resolver
            .validate()
            .map_err(|(k, reason)| (format!("resolver.{k}"), reason))
    }

    /// The plugin and schema paths, to resolve against the config's directory.
    pub(super) fn paths_mut(&mut self) -> impl Iterator<Item = &mut PathBuf> {
        let plugin = match &mut self.resolver {
            ResolverConfig::Plugin(p) => Some(&mut p.plugin.path),
            _ => None,
        };
        plugin.into_iter().chain(self.schema_path.as_mut())
    }
}

impl ResolverConfig {
    fn validate(&self) -> Result<(), Invalid> {
        match self {
            ResolverConfig::Quorum(q) if q.min_agree == 0 => {
                Err(("min_agree".into(), "must be >= 1".into()))
            }
            ResolverConfig::WeightedVote(w) if !(0.0..1.0).contains(&w.min_share) => {
                Err(("min_share".into(), "must be in 0..1".into()))
            }
            ResolverConfig::MostRecent(m) => match (&m.field, &m.header) {
                (Some(field), None) => pointer(field, "field"),
                (None, Some(header)) => http::HeaderName::try_from(header.as_str())
                    .map(|_| ())
                    .map_err(|_| {
                        (
                            "header".into(),
                            format!("`{header}` is not a valid header name"),
                        )
                    }),
                _ => Err((
                    "field".into(),
                    "give exactly one of `field` and `header`".into(),
                )),
            },
            ResolverConfig::Median(m) => pointer(&m.field, "field"),
            ResolverConfig::Plugin(p) => super::plugin::check_plugin_kind(
                &p.plugin,
                matches!(*p.fallback, ResolverConfig::Plugin(_)),
                || p.fallback.validate(),
            ),
            _ => Ok(()),
        }
    }
}

/// A JSON Pointer must be empty or start with `/` (RFC 6901 §3).
fn pointer(value: &str, key: &str) -> Result<(), Invalid> {
    if value.is_empty() || value.starts_with('/') {
        Ok(())
    } else {
        Err((
            key.into(),
            format!("`{value}` is not a JSON Pointer (RFC 6901); did you mean `/{value}`?"),
        ))
    }
}

impl FusionCacheConfig {
    fn validate(&self) -> Result<(), Invalid> {
        if self.ttl_ms == 0 || self.max_entries == 0 {
            return Err(("ttl_ms".into(), "ttl_ms and max_entries must be > 0".into()));
        }
        for header in &self.vary_headers {
            http::HeaderName::try_from(header.as_str()).map_err(|_| {
                (
                    "vary_headers".to_string(),
                    format!("`{header}` is not a valid header name"),
                )
            })?;
        }
        Ok(())
    }
}
