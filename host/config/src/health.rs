//! The health keys of a pool: `health` (active checks), `outlier` (passive
//! outlier detection) and `panic_threshold_percent`.
//!
//! ```toml
//! [pools.web]
//! health = { kind = "http", path = "/healthz", interval_ms = 5000, timeout_ms = 1000, rise = 2, fall = 3 }
//! outlier = { consecutive_gateway_errors = 5, consecutive_5xx = 5, base_ejection_ms = 30000 }
//! panic_threshold_percent = 50
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::plugin::PluginRef;
use super::types::Invalid;

/// Active health checks: probes the host sends on a timer.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    /// `http` (default), `tcp` (connect only), `grpc` (the gRPC health
    /// protocol; the pool's `protocol` must be `"h2"`), `mcp` (MCP's
    /// `initialize` and `ping` at `path`, the server's MCP endpoint, e.g.
    /// `/mcp`) or `plugin`.
    #[serde(default)]
    pub kind: CheckKind,
    /// Time between probes of one instance, ms. Default 5000.
    #[serde(default = "defaults::interval_ms")]
    pub interval_ms: u64,
    /// Random extra delay added to each interval, 0..=jitter_ms, so probes of
    /// many proxies do not align. Default 10% of the interval.
    pub jitter_ms: Option<u64>,
    /// Time allowed to one probe, ms; must be below the interval. Default 1000.
    #[serde(default = "defaults::timeout_ms")]
    pub timeout_ms: u64,
    /// Consecutive passed probes that make an unhealthy instance healthy. Default 2 (HAProxy).
    #[serde(default = "defaults::rise")]
    pub rise: u32,
    /// Consecutive failed probes that make a healthy instance unhealthy. Default 3 (HAProxy).
    #[serde(default = "defaults::fall")]
    pub fall: u32,
    /// HTTP: request path (and query). Default `/`.
    #[serde(default = "defaults::path")]
    pub path: String,
    /// HTTP: request method. Default `GET`.
    #[serde(default = "defaults::method")]
    pub method: String,
    /// HTTP: extra request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// HTTP: inclusive range of passing statuses. Default `[200, 399]`.
    #[serde(default = "defaults::expect_status")]
    #[schema(min_items = 2, max_items = 2)]
    pub expect_status: [u16; 2],
    /// HTTP: text the body must contain (first 64 KiB). Default: any body.
    pub body_contains: Option<String>,
    /// gRPC: the service asked about (`grpc.health.v1.HealthCheckRequest`
    /// `service`). Default `""`: the server as a whole.
    #[serde(default)]
    pub grpc_service: String,
    /// Probes in flight at once for this pool. Default 64.
    #[serde(default = "defaults::max_concurrent")]
    pub max_concurrent: u32,
    /// `kind = "plugin"`: the health-check plugin that says what to send and
    /// judges the answer.
    pub plugin: Option<PluginRef>,
    /// `kind = "plugin"`: the built-in check that makes and judges a probe
    /// the plugin faulted on. Default (and only) `{ kind = "http" }`: this
    /// table's `path`, `method`, `headers`, `expect_status` and
    /// `body_contains`.
    #[serde(default)]
    pub fallback: Option<HealthFallback>,
}

/// The built-in check a health-check plugin falls back to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum HealthFallback {
    /// The HTTP check of the same table.
    #[default]
    Http,
}

/// How an active probe is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum CheckKind {
    /// An HTTP request judged by status and body.
    #[default]
    Http,
    /// A TCP connect; success is a completed handshake.
    Tcp,
    /// `grpc.health.v1.Health/Check` over HTTP/2; success is `SERVING`.
    Grpc,
    /// MCP over streamable HTTP: `initialize` (or `server/discover`), then
    /// `ping`; success is `ping`'s result (see `switchyard::health::mcp`).
    Mcp,
    /// A health-check plugin (see [`PluginRef`]).
    Plugin,
}

/// Passive outlier detection from live traffic, as Envoy's outlier detection.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct OutlierConfig {
    /// Consecutive connect failures, resets and timeouts that eject. Default 5; 0 = off.
    pub consecutive_gateway_errors: u32,
    /// Consecutive 5xx responses that eject. Default 5; 0 = off.
    pub consecutive_5xx: u32,
    /// Eject instances whose success rate is below mean − factor × stdev of the
    /// pool's. Default 1.9 (Envoy's 1900/1000); 0 = off.
    pub success_rate_stdev_factor: f64,
    /// Instances with enough volume needed before success rates are compared. Default 5.
    pub success_rate_minimum_hosts: u32,
    /// Requests in an interval for an instance's success rate to count. Default 100.
    pub success_rate_request_volume: u32,
    /// How often ejections are re-evaluated and success rates compared, ms. Default 10000.
    pub interval_ms: u64,
    /// Ejection time = base × number of ejections, ms. Default 30000.
    pub base_ejection_ms: u64,
    /// Cap of the ejection time, ms. Default 300000.
    pub max_ejection_ms: u64,
    /// Most of the pool ejected at once, percent; at least one instance may
    /// always be ejected (Envoy). Default 10.
    pub max_ejection_percent: u32,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        Self {
            consecutive_gateway_errors: 5,
            consecutive_5xx: 5,
            success_rate_stdev_factor: 1.9,
            success_rate_minimum_hosts: 5,
            success_rate_request_volume: 100,
            interval_ms: 10_000,
            base_ejection_ms: 30_000,
            max_ejection_ms: 300_000,
            max_ejection_percent: 10,
        }
    }
}

mod defaults {
    pub fn interval_ms() -> u64 {
        5_000
    }
    pub fn timeout_ms() -> u64 {
        1_000
    }
    pub fn rise() -> u32 {
        2
    }
    pub fn fall() -> u32 {
        3
    }
    pub fn path() -> String {
        "/".into()
    }
    pub fn method() -> String {
        "GET".into()
    }
    pub fn expect_status() -> [u16; 2] {
        [200, 399]
    }
    pub fn max_concurrent() -> u32 {
        64
    }
}

impl HealthCheckConfig {
    /// The jitter, ms: as configured, or 10% of the interval.
    pub fn jitter(&self) -> u64 {
        self.jitter_ms.unwrap_or(self.interval_ms / 10)
    }

    pub(super) fn validate(&self) -> Result<(), Invalid> {
        let err = |k: &str, reason: String| Err((k.to_string(), reason));
        if self.interval_ms == 0 {
            return err("interval_ms", "must be > 0".into());
        }
        if self.timeout_ms == 0 || self.timeout_ms >= self.interval_ms {
            return err(
                "timeout_ms",
                format!("must be > 0 and below interval_ms ({})", self.interval_ms),
            );
        }
        if self.rise == 0 {
            return err("rise", "must be >= 1".into());
        }
        if self.fall == 0 {
            return err("fall", "must be >= 1".into());
        }
        if self.max_concurrent == 0 {
            return err("max_concurrent", "must be >= 1".into());
        }
        match (&self.kind, &self.plugin) {
            (CheckKind::Plugin, None) => {
                return err(
                    "plugin",
                    "`kind = \"plugin\"` needs a `plugin` table".into(),
                );
            }
            (CheckKind::Plugin, Some(plugin)) => {
                plugin
                    .validate()
                    .map_err(|(k, reason)| (format!("plugin.{k}"), reason))?;
            }
            (_, Some(_)) => return err("plugin", "only with `kind = \"plugin\"`".into()),
            (_, None) => {}
        }
        if self.fallback.is_some() && self.kind != CheckKind::Plugin {
            return err("fallback", "only with `kind = \"plugin\"`".into());
        }
        if self.kind != CheckKind::Tcp {
            if !self.path.starts_with('/') {
                return err("path", format!("`{}` must start with `/`", self.path));
            }
            if http::Method::from_bytes(self.method.as_bytes()).is_err() {
                return err("method", format!("`{}` is not an HTTP method", self.method));
            }
            for (name, value) in &self.headers {
                if http::HeaderName::try_from(name.as_str()).is_err()
                    || http::HeaderValue::try_from(value.as_str()).is_err()
                {
                    return err(
                        "headers",
                        format!("`{name}: {value}` is not a valid header"),
                    );
                }
            }
            let [low, high] = self.expect_status;
            if !(100..=599).contains(&low) || !(low..=599).contains(&high) {
                return err(
                    "expect_status",
                    format!("`[{low}, {high}]` must be a range within 100..=599"),
                );
            }
        }
        Ok(())
    }
}

impl OutlierConfig {
    pub(super) fn validate(&self) -> Result<(), Invalid> {
        let err = |k: &str, reason: &str| Err((k.to_string(), reason.to_string()));
        if self.interval_ms == 0 {
            return err("interval_ms", "must be > 0");
        }
        if self.base_ejection_ms == 0 {
            return err("base_ejection_ms", "must be > 0");
        }
        if self.max_ejection_ms < self.base_ejection_ms {
            return err("max_ejection_ms", "must be >= base_ejection_ms");
        }
        if self.max_ejection_percent > 100 {
            return err("max_ejection_percent", "must be 0..=100");
        }
        if !(self.success_rate_stdev_factor >= 0.0 && self.success_rate_stdev_factor.is_finite()) {
            return err("success_rate_stdev_factor", "must be >= 0");
        }
        Ok(())
    }
}

/// Predictive health: latency and error-rate trends per instance.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct TrendConfig {
    /// Time between samples of an instance's latency and error rate, ms. Default 1000.
    pub interval_ms: u64,
    /// Samples in the regression window (>= 3). Default 30.
    pub window: u32,
    /// Samples of real traffic an instance needs before its trend may be
    /// anything but stable (3..=`window`). Default 5. An instance without
    /// traffic yet gives no sample.
    pub min_samples: u32,
    /// Latency change over one window, relative to its mean, that counts as a
    /// trend: above +ratio is degrading, below −ratio improving. Default 0.25.
    pub degrading_ratio: f64,
    /// Error-rate change over one window that counts as a trend. Default 0.05.
    pub degrading_error_delta: f64,
    /// Error rate at which an instance is considered unfit, for predictions. Default 0.5.
    pub unfit_error_rate: f64,
    /// Latency at which an instance is considered unfit, for predictions, ms. Default 1000.
    pub unfit_latency_ms: u64,
    /// Predictions further out than this are not reported, ms. Default 300000.
    pub horizon_ms: u64,
    /// Share of its normal traffic a degrading instance keeps, 0..=1. Default 1.0 (unchanged).
    pub degraded_share: f64,
}

impl Default for TrendConfig {
    fn default() -> Self {
        Self {
            interval_ms: 1_000,
            window: 30,
            min_samples: 5,
            degrading_ratio: 0.25,
            degrading_error_delta: 0.05,
            unfit_error_rate: 0.5,
            unfit_latency_ms: 1_000,
            horizon_ms: 300_000,
            degraded_share: 1.0,
        }
    }
}

impl TrendConfig {
    pub(super) fn validate(&self) -> Result<(), Invalid> {
        let err = |k: &str, reason: &str| Err((k.to_string(), reason.to_string()));
        if self.interval_ms == 0 {
            return err("interval_ms", "must be > 0");
        }
        if self.window < 3 {
            return err("window", "must be >= 3");
        }
        if !(3..=self.window).contains(&self.min_samples) {
            return err("min_samples", "must be in 3..=window");
        }
        if !(self.degrading_ratio > 0.0 && self.degrading_ratio.is_finite()) {
            return err("degrading_ratio", "must be > 0");
        }
        if !(self.degrading_error_delta > 0.0 && self.degrading_error_delta <= 1.0) {
            return err("degrading_error_delta", "must be in (0, 1]");
        }
        if !(self.unfit_error_rate > 0.0 && self.unfit_error_rate <= 1.0) {
            return err("unfit_error_rate", "must be in (0, 1]");
        }
        if !(0.0..=1.0).contains(&self.degraded_share) {
            return err("degraded_share", "must be in 0..=1");
        }
        Ok(())
    }
}
