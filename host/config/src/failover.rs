//! The failover keys of a pool (`retry`, `failover`, `breaker`,
//! `bulkhead`) and of a route (`fallback`).
//!
//! ```toml
//! [pools.web]
//! retry = { retries = 2, retry_on = ["connect-failure", "reset", "timeout", "5xx"], backoff_base_ms = 25, backoff_max_ms = 250 }
//! failover = { kind = "plugin", plugin = { path = "retry_schedule.wasm" } }   # default { kind = "retry" }
//! breaker = { failure_rate = 0.5, min_requests = 20, window_ms = 10000, open_ms = 60000 }
//! bulkhead = { max_concurrent = 512, max_queue = 256, queue_timeout_ms = 1000 }
//!
//! [[routes]]
//! pool = "web"
//! fallback = { pool = "web-dr" }        # or { status = 503, body = "…" }
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::plugin::{Deprecated, PluginRef, plugin_of};
use super::types::{Invalid, MAX_WAIT_MS, in_range};

/// Who decides after a failed attempt of the pool: the built-in `retry`
/// policy (the pool's `retry` table), or a failover plugin with that
/// policy as its fallback.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "kebab-case", try_from = "FailoverSpelling")]
pub enum FailoverConfig {
    /// The pool's `retry` table decides. The default.
    #[default]
    Retry,
    /// A failover plugin decides after each failed attempt — connect
    /// failures, resets, timeouts and every 4xx/5xx response (its `fail`
    /// passes the response on). The host still enforces `retry`'s attempt
    /// cap, budget and backoff cap.
    Plugin(FailoverPluginConfig),
}

/// Keys of `failover = { kind = "plugin", … }`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FailoverPluginConfig {
    /// The `failover-plugin` component and its limits.
    pub plugin: PluginRef,
    /// Decides when the plugin faults: `{ kind = "retry" }`, the pool's
    /// `retry` table (the only built-in failover policy). Default that.
    #[serde(default)]
    pub fallback: FailoverFallback,
    /// Set when read from the deprecated `failover_plugin = { path, … }`.
    #[serde(skip)]
    pub deprecated: Deprecated,
}

/// The built-in failover policy a plugin falls back to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum FailoverFallback {
    /// The pool's `retry` table.
    #[default]
    Retry,
}

/// What a `failover` table may hold: `{ kind, plugin, fallback }`, or the
/// plugin's keys alone (the deprecated `failover_plugin = { path, … }`,
/// read through the key's alias).
#[derive(Deserialize)]
struct FailoverSpelling {
    kind: Option<FailoverKind>,
    plugin: Option<PluginRef>,
    fallback: Option<FailoverFallback>,
    #[serde(flatten)]
    flat: toml::Table,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
enum FailoverKind {
    Retry,
    Plugin,
}

impl TryFrom<FailoverSpelling> for FailoverConfig {
    type Error = String;

    fn try_from(spelling: FailoverSpelling) -> Result<Self, String> {
        match spelling.kind {
            Some(FailoverKind::Retry) => {
                if spelling.plugin.is_some()
                    || spelling.fallback.is_some()
                    || !spelling.flat.is_empty()
                {
                    return Err("`kind = \"retry\"` takes no other keys (the policy is the pool's `retry` table)".into());
                }
                Ok(Self::Retry)
            }
            Some(FailoverKind::Plugin) => {
                let (plugin, flat) = plugin_of(spelling.plugin, spelling.flat)?;
                Ok(Self::Plugin(FailoverPluginConfig {
                    plugin,
                    fallback: spelling.fallback.unwrap_or_default(),
                    deprecated: Deprecated(flat.then_some(NEW_SPELLING)),
                }))
            }
            // `failover_plugin = { path = … }`: a plugin, flat.
            None if spelling.plugin.is_none() && spelling.fallback.is_none() => {
                let (plugin, _) = plugin_of(None, spelling.flat)?;
                Ok(Self::Plugin(FailoverPluginConfig {
                    plugin,
                    fallback: FailoverFallback::Retry,
                    deprecated: Deprecated(Some(NEW_SPELLING)),
                }))
            }
            None => Err("missing `kind`: `\"retry\"` or `\"plugin\"`".into()),
        }
    }
}

/// The spelling a deprecated failover plugin table is told to use.
const NEW_SPELLING: &str = "failover = { kind = \"plugin\", plugin = { path = …, config = … }, fallback = { kind = \"retry\" } }";

impl FailoverConfig {
    /// The plugin, when one decides.
    pub fn plugin(&self) -> Option<&PluginRef> {
        match self {
            Self::Retry => None,
            Self::Plugin(p) => Some(&p.plugin),
        }
    }

    pub(super) fn validate(&self) -> Result<(), Invalid> {
        match self {
            // The only built-in fallback, `retry`, is the pool's own table.
            Self::Plugin(p) => super::plugin::check_plugin_kind(&p.plugin, false, || Ok(())),
            Self::Retry => Ok(()),
        }
    }
}

/// When and how a failed attempt is retried.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Extra attempts after the first. Default 1.
    pub retries: u32,
    /// Failures that retry: `connect-failure`, `reset`, `timeout`, `5xx`.
    /// Default `["connect-failure", "reset", "timeout"]`.
    pub retry_on: Vec<RetryOn>,
    /// Statuses that retry besides `5xx`, e.g. `[429]`. Default none.
    pub retry_statuses: Vec<u16>,
    /// Time allowed to one attempt's response headers, ms, within the
    /// request's deadline. Default: the pool's `request_timeout_ms` shared
    /// evenly among the attempts (`retries + 1`), so that a hung instance
    /// leaves time to try another (15 s of 30 s with the defaults).
    pub per_try_timeout_ms: Option<u64>,
    /// Backoff before retry n: a random time in 0..=min(max, base × 2^(n−1)), ms
    /// ("full jitter", AWS Architecture Blog 2015). The first retry goes at once
    /// (immediate failover). Default 25.
    pub backoff_base_ms: u64,
    /// Cap of the backoff, ms. Default 250 (Envoy's defaults: 25 ms × 10);
    /// at most 60000 (as `backoff_base_ms`).
    pub backoff_max_ms: u64,
    /// Retry budget: retries in flight may be at most this share of the pool's
    /// requests in flight… Default 0.2 (Envoy `budget_percent` 20%).
    pub budget_ratio: f64,
    /// …or this many, whichever is more. Default 10 (Linkerd's budget
    /// minimum of 10 retries; Envoy's `min_retry_concurrency` is 3): enough
    /// for the requests in flight on one instance that dies under a load of
    /// tens of concurrent requests. Retries after a connect failure (nothing
    /// was sent) are not counted.
    pub budget_min_concurrent: u32,
    /// Retry methods that are not idempotent (POST, PATCH) too. Default false.
    pub retry_non_idempotent: bool,
    /// Request bodies up to this size are buffered so they can be replayed;
    /// a larger (or unknown-length) body is streamed and never retried. Default 65536.
    pub replay_limit_bytes: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            retries: 1,
            retry_on: vec![RetryOn::ConnectFailure, RetryOn::Reset, RetryOn::Timeout],
            retry_statuses: Vec::new(),
            per_try_timeout_ms: None,
            backoff_base_ms: 25,
            backoff_max_ms: 250,
            budget_ratio: 0.2,
            budget_min_concurrent: 10,
            retry_non_idempotent: false,
            replay_limit_bytes: 65_536,
        }
    }
}

/// A failure class that may retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RetryOn {
    /// The TCP connection could not be made (the request never left).
    ConnectFailure,
    /// The connection broke before a complete response head.
    Reset,
    /// The per-try timeout expired.
    Timeout,
    /// Any 5xx response.
    #[serde(rename = "5xx")]
    ServerError,
}

/// A circuit breaker per instance.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerConfig {
    /// Failure share over `window_ms` that opens the breaker, 0 < r <= 1. Default 0.5.
    pub failure_rate: f64,
    /// Requests in the window before the rate counts. Default 20.
    pub min_requests: u32,
    /// The rolling window, ms. Default 10000.
    pub window_ms: u64,
    /// Consecutive failures that open the breaker regardless of the rate; 0 = off. Default 5.
    pub consecutive_failures: u32,
    /// First open time, ms; doubles on each trip without a close in between. Default 60000.
    pub open_ms: u64,
    /// Cap of the open time, ms. Default 300000.
    pub max_open_ms: u64,
    /// Requests admitted while half-open. Default 3.
    pub half_open_requests: u32,
    /// Successes while half-open that close the breaker. Default 3.
    pub close_after: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_rate: 0.5,
            min_requests: 20,
            window_ms: 10_000,
            consecutive_failures: 5,
            open_ms: 60_000,
            max_open_ms: 300_000,
            half_open_requests: 3,
            close_after: 3,
        }
    }
}

/// A bulkhead per pool: bounded concurrency and a bounded queue.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkheadConfig {
    /// Upstream requests in flight at once. Required.
    pub max_concurrent: u32,
    /// Requests waiting for a slot; more are shed at once. Default 0 (no queue).
    #[serde(default)]
    pub max_queue: u32,
    /// Longest wait in the queue, ms; then shed. Default 1000.
    #[serde(default = "default_queue_timeout_ms")]
    pub queue_timeout_ms: u64,
}

fn default_queue_timeout_ms() -> u64 {
    1_000
}

/// What a route does when its pool cannot serve.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged, deny_unknown_fields)]
pub enum FallbackConfig {
    /// Send the request to another pool while this one has no fit instance.
    Pool {
        /// The secondary pool.
        pool: String,
    },
    /// Answer with a fixed response when no instance could answer.
    Static {
        /// Status code. Default 503.
        #[serde(default = "default_fallback_status")]
        #[schema(minimum = 100, maximum = 599)]
        status: u16,
        /// Body. Default empty.
        #[serde(default)]
        body: String,
        /// Headers.
        #[serde(default)]
        headers: BTreeMap<String, String>,
    },
}

/// stale-if-error for a route: remember the last good GET answers.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct StaleConfig {
    /// Oldest answer served, ms. Default 300000 (5 min).
    pub max_age_ms: u64,
    /// Answers remembered. Default 10000.
    pub max_entries: u64,
    /// Largest body remembered, bytes. Default 262144.
    pub max_body_bytes: u64,
}

impl Default for StaleConfig {
    fn default() -> Self {
        Self {
            max_age_ms: 300_000,
            max_entries: 10_000,
            max_body_bytes: 262_144,
        }
    }
}

impl StaleConfig {
    pub(super) fn validate(&self) -> Result<(), Invalid> {
        if self.max_age_ms == 0 || self.max_entries == 0 || self.max_body_bytes == 0 {
            return Err((
                "max_age_ms".into(),
                "max_age_ms, max_entries and max_body_bytes must be > 0".into(),
            ));
        }
        Ok(())
    }
}

fn default_fallback_status() -> u16 {
    503
}

impl RetryConfig {
    /// The longest backoff that may be configured, ms (one minute); a
    /// retry is also never made when its wait would pass the request's
    /// deadline (`request_timeout_ms`).
    pub const MAX_BACKOFF_MS: u64 = 60_000;

    pub(super) fn validate(&self) -> Result<(), Invalid> {
        let err = |k: &str, reason: String| Err((k.to_string(), reason));
        if self.retries > 10 {
            return err("retries", format!("must be 0..=10, got {}", self.retries));
        }
        if let Some(ms) = self.per_try_timeout_ms {
            in_range("per_try_timeout_ms", ms, 1, MAX_WAIT_MS)?;
        }
        in_range(
            "backoff_base_ms",
            self.backoff_base_ms,
            0,
            Self::MAX_BACKOFF_MS,
        )?;
        in_range(
            "backoff_max_ms",
            self.backoff_max_ms,
            0,
            Self::MAX_BACKOFF_MS,
        )?;
        if self.backoff_max_ms < self.backoff_base_ms {
            return err("backoff_max_ms", "must be >= backoff_base_ms".into());
        }
        if !(self.budget_ratio >= 0.0 && self.budget_ratio <= 1.0) {
            return err(
                "budget_ratio",
                format!("must be in 0..=1, got {}", self.budget_ratio),
            );
        }
        if let Some(bad) = self
            .retry_statuses
            .iter()
            .find(|s| !(100..=599).contains(*s))
        {
            return err("retry_statuses", format!("{bad} is not a status code"));
        }
        Ok(())
    }
}

impl BreakerConfig {
    pub(super) fn validate(&self) -> Result<(), Invalid> {
        let err = |k: &str, reason: String| Err((k.to_string(), reason));
        if !(self.failure_rate > 0.0 && self.failure_rate <= 1.0) {
            return err(
                "failure_rate",
                format!("must be in (0, 1], got {}", self.failure_rate),
            );
        }
        if self.window_ms == 0 || self.open_ms == 0 {
            return err("open_ms", "window_ms and open_ms must be > 0".into());
        }
        if self.max_open_ms < self.open_ms {
            return err("max_open_ms", "must be >= open_ms".into());
        }
        if self.half_open_requests == 0 {
            return err("half_open_requests", "must be >= 1".into());
        }
        if self.close_after == 0 || self.close_after > self.half_open_requests {
            return err("close_after", "must be 1..=half_open_requests".into());
        }
        Ok(())
    }
}

impl BulkheadConfig {
    pub(super) fn validate(&self) -> Result<(), Invalid> {
        if self.max_concurrent == 0 {
            return Err(("max_concurrent".into(), "must be >= 1".into()));
        }
        in_range("queue_timeout_ms", self.queue_timeout_ms, 1, MAX_WAIT_MS)
    }
}

impl FallbackConfig {
    pub(super) fn validate(&self, pools: &[&String]) -> Result<(), Invalid> {
        match self {
            FallbackConfig::Pool { pool } if !pools.contains(&pool) => {
                Err(("pool".into(), format!("unknown pool `{pool}`")))
            }
            FallbackConfig::Static {
                status, headers, ..
            } => {
                if !(100..=599).contains(status) {
                    return Err(("status".into(), format!("{status} is not a status code")));
                }
                for (k, v) in headers {
                    if http::HeaderName::try_from(k.as_str()).is_err()
                        || http::HeaderValue::try_from(v.as_str()).is_err()
                    {
                        return Err((
                            "headers".into(),
                            format!("`{k}: {v}` is not a valid header"),
                        ));
                    }
                }
                Ok(())
            }
            FallbackConfig::Pool { .. } => Ok(()),
        }
    }
}
