//! A pool at run time: its instances, its balancer and its upstream client.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::HeaderName;
use http_body_util::{Either, Empty};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::StartError;
use crate::balance::{self, Balancer, Endpoint, Sticky};
use crate::config::{PoolConfig, StrategyConfig};
use crate::plugin::{Limits, PluginHost, PluginStats, WasmStrategy};

/// A request body sent upstream: the client's, streamed, or empty on a retry.
pub type UpstreamBody = Either<Incoming, Empty<Bytes>>;

/// A pool of instances behind one balancer and one connection pool.
pub struct Pool {
    /// The pool's name in the config.
    pub name: String,
    /// The instances, indexed by id.
    pub endpoints: Vec<Arc<Endpoint>>,
    /// Ranks the instances per request.
    pub balancer: Balancer,
    /// Pooled keep-alive HTTP/1.1 connections to the instances.
    pub client: Client<HttpConnector, UpstreamBody>,
    /// Time allowed to the response headers.
    pub request_timeout: Duration,
    /// How long a connect failure keeps an instance out of rotation.
    pub fail_timeout: Duration,
    /// The Wasm strategy's counters, when the strategy is a plugin.
    pub plugin_stats: Option<Arc<PluginStats>>,
    /// Response header carrying an instance's load report (`resource-aware`).
    pub load_header: Option<HeaderName>,
    /// Session affinity, when configured.
    pub sticky: Option<Sticky>,
    clock: Instant,
}

impl Pool {
    /// Builds the pool `name` from `config`, loading its plugin in `host`.
    ///
    /// # Errors
    /// [`StartError::Plugin`] when the plugin is refused.
    pub fn build(name: &str, config: &PoolConfig, host: &PluginHost) -> Result<Self, StartError> {
        let endpoints: Vec<Arc<Endpoint>> = config
            .instances
            .iter()
            .enumerate()
            .filter_map(|(i, instance)| {
                // Validated when the config was loaded.
                let authority = instance.upstream_authority().ok()?;
                Some(Arc::new(Endpoint::new(
                    i as u32,
                    instance.url.clone(),
                    authority,
                    instance.weight,
                    instance.labels.clone().into_iter().collect(),
                )))
            })
            .collect();
        for (endpoint, instance) in endpoints.iter().zip(&config.instances) {
            endpoint.set_draining(instance.drain);
        }
        let (balancer, plugin_stats) = match balance::build(&config.strategy, &endpoints) {
            Ok(strategy) => (Balancer::new(strategy, None), None),
            Err(plugin) => {
                let config_json =
                    serde_json::to_string(&plugin.config).unwrap_or_else(|_| "{}".to_string());
                let limits = Limits {
                    call_deadline_ms: plugin.call_deadline_ms,
                    memory_limit_bytes: (plugin.memory_limit_mib as usize) << 20,
                };
                let strategy =
                    WasmStrategy::load(host, &plugin.path, config_json, limits, &endpoints)
                        .map_err(|error| StartError::Plugin {
                            pool: name.to_string(),
                            error,
                        })?;
                let stats = strategy.stats();
                (
                    Balancer::new(Box::new(strategy), Some(balance::builtin(plugin.fallback))),
                    Some(stats),
                )
            }
        };
        let sticky = config.sticky.as_ref().map(|c| Sticky::new(c, &endpoints));
        let load_header = match &config.strategy {
            StrategyConfig::ResourceAware(c) => HeaderName::try_from(c.load_header.as_str()).ok(),
            _ => None,
        };
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_millis(config.connect_timeout_ms)));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_millis(config.idle_timeout_ms))
            .build(connector);
        tracing::info!(
            pool = name,
            strategy = balancer.name(),
            instances = endpoints.len(),
            "pool ready"
        );
        Ok(Self {
            name: name.to_string(),
            endpoints,
            balancer,
            client,
            request_timeout: Duration::from_millis(config.request_timeout_ms),
            fail_timeout: Duration::from_millis(config.fail_timeout_ms),
            plugin_stats,
            load_header,
            sticky,
            clock: Instant::now(),
        })
    }

    /// Milliseconds on the pool's monotonic clock (for unreachable marks).
    pub fn now_ms(&self) -> u64 {
        self.clock.elapsed().as_millis() as u64
    }
}
