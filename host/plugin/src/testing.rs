//! Test harness for plugin authors: load a built `.wasm` in the real
//! sandbox — the same compile, world check, linking, limits and fault
//! handling as `switchyard serve` — and call it directly, without a proxy,
//! upstreams or a config file. Use it from a `#[test]` with
//! `switchyard-plugin` as a dev-dependency (or `switchyard`, which
//! re-exports it as `switchyard::plugin`):
//!
//! ```no_run
//! use switchyard_plugin::testing::{BalancerHarness, endpoint};
//!
//! let pool = vec![
//!     endpoint(0, "http://10.0.0.1:80", 1, &[("track", "stable")]),
//!     endpoint(1, "http://10.0.0.2:80", 1, &[("track", "canary")]),
//! ];
//! let lb = BalancerHarness::load("canary_split.wasm".as_ref(), r#"{"percent": 50}"#, pool)
//!     .expect("the plugin loads");
//! let first = lb.pick(&[]).expect("a ranking")[0];
//! assert!(first < 2);
//! ```
//!
//! Health checks, failover policies and resolvers are loaded with
//! [`health_check`], [`failover`] and [`resolver`]; their engines' trait
//! methods ([`HealthCheck`](switchyard_engines::health::HealthCheck)'s `probe`/`evaluate`,
//! [`FailoverPolicy`](switchyard_engines::failover::FailoverPolicy)'s `on_failure`) and
//! the resolver's `resolve` are the calls the proxy makes. A plugin's fault comes back as an `Err(`[`Fault`]`)`, where
//! the proxy would have used its built-in default.

use std::path::Path;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue, Method};

use super::{
    Fault, Grants, Limits, LoadError, PluginHost, PluginStats, WasmFailover, WasmHealthCheck,
    WasmResolver, WasmStrategy,
};
use switchyard_config::QuarantineConfig;
use switchyard_engines::balance::{Endpoint, EndpointId, Ranking, RequestContext, Strategy};

/// Limits of a plugin under test (and of `switchyard plugin` tools): a
/// generous 1 s deadline and 256 MiB (a test judges decisions, a benchmark
/// measures time), every capability granted, no quarantine.
pub const TEST_LIMITS: Limits = Limits {
    call_deadline_ms: 1_000,
    memory_limit_bytes: 256 << 20,
    quarantine: QuarantineConfig {
        faults: 0,
        window_ms: 1,
        backoff_ms: 1,
        max_backoff_ms: 1,
    },
    fuel_per_call: None,
    grants: Grants {
        clock: true,
        random: true,
        kv: true,
    },
};

/// An instance of a pool as the host describes it to plugins: `id` (its
/// index in the pool), `url`, `weight` and `labels`.
///
/// # Panics
/// When `url` has no `host:port` authority (a test's own input).
pub fn endpoint(id: EndpointId, url: &str, weight: u32, labels: &[(&str, &str)]) -> Arc<Endpoint> {
    let authority = url
        .split("://")
        .nth(1)
        .unwrap_or(url)
        .split('/')
        .next()
        .unwrap_or_default()
        .parse()
        .expect("endpoint url with host:port");
    Arc::new(Endpoint::new(
        id,
        url.to_string(),
        authority,
        weight,
        labels
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect(),
    ))
}

/// A balancer plugin loaded over a fixed pool.
pub struct BalancerHarness {
    strategy: WasmStrategy,
    pool: Vec<Arc<Endpoint>>,
}

impl BalancerHarness {
    /// Loads the balancer at `path` with `config_json` over `pool` (calls
    /// `configure` and `update`), under [`TEST_LIMITS`].
    ///
    /// # Errors
    /// [`LoadError`] with the reason, as `switchyard` would refuse it.
    pub fn load(
        path: &Path,
        config_json: &str,
        pool: Vec<Arc<Endpoint>>,
    ) -> Result<Self, LoadError> {
        let strategy = WasmStrategy::load(
            &host_for(path)?,
            path,
            config_json.into(),
            TEST_LIMITS,
            &pool,
            switchyard_config::DEFAULT_MAX_CANDIDATES as usize,
        )?;
        Ok(Self { strategy, pool })
    }

    /// The plugin's ranking of the whole pool for a `GET /` to
    /// `example.com` from `127.0.0.1` with `headers` (only those the plugin
    /// asked for in `configure` reach it, as in the proxy).
    ///
    /// # Errors
    /// The [`Fault`] the proxy would have fallen back on.
    ///
    /// # Panics
    /// When a header name or value is not valid HTTP (a test's own input).
    pub fn pick(&self, headers: &[(&str, &str)]) -> Result<Vec<EndpointId>, Fault> {
        let headers: HeaderMap = headers
            .iter()
            .map(|(name, value)| {
                (
                    HeaderName::try_from(*name).expect("header name"),
                    HeaderValue::try_from(*value).expect("header value"),
                )
            })
            .collect();
        let request = RequestContext {
            method: &Method::GET,
            authority: "example.com",
            path: "/",
            headers: &headers,
            client_addr: ([127, 0, 0, 1], 40_000).into(),
        };
        let mut ranking = Ranking::new();
        self.strategy.rank(&request, &self.pool, &mut ranking)?;
        Ok(ranking.to_vec())
    }

    /// Feeds an attempt's outcome back (`observe`, when the plugin asked for it).
    pub fn observe(&self, id: EndpointId, success: bool, latency_us: u64) {
        self.strategy.observe(id, success, latency_us);
    }

    /// Calls and faults so far.
    pub fn stats(&self) -> Arc<PluginStats> {
        self.strategy.stats()
    }
}

fn host_for(path: &Path) -> Result<PluginHost, LoadError> {
    PluginHost::new().map_err(|e| LoadError::Rejected {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Loads the health-check plugin at `path` with `config_json` under
/// [`TEST_LIMITS`]; call `probe(endpoint)` and `evaluate(endpoint, answer)`.
///
/// # Errors
/// [`LoadError`] with the reason.
pub fn health_check(path: &Path, config_json: &str) -> Result<WasmHealthCheck, LoadError> {
    WasmHealthCheck::load(&host_for(path)?, path, config_json.into(), TEST_LIMITS)
}

/// Loads the failover plugin at `path` with `config_json` under
/// [`TEST_LIMITS`]; call `on_failure(facts)`.
///
/// # Errors
/// [`LoadError`] with the reason.
pub fn failover(path: &Path, config_json: &str) -> Result<WasmFailover, LoadError> {
    WasmFailover::load(&host_for(path)?, path, config_json.into(), TEST_LIMITS)
}

/// Loads the resolver plugin at `path` with `config_json` under
/// [`TEST_LIMITS`]; call `resolve(request, sources, answers, accept)`.
///
/// # Errors
/// [`LoadError`] with the reason.
pub fn resolver(path: &Path, config_json: &str) -> Result<WasmResolver, LoadError> {
    WasmResolver::load(&host_for(path)?, path, config_json.into(), TEST_LIMITS)
}
