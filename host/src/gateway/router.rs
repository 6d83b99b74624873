//! Routes: the first route whose conditions all hold picks the pool.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use super::filter::Chain;
use crate::config::{Config, FallbackConfig, FilterConfig, JwtConfig, RouteMatch};
use crate::events::HealthEvent;
use crate::failover::StaleCache;
use crate::mcp::{McpRoute, Sessions};
use crate::metrics::RouteMetrics;
use crate::plugin::{Limits, PluginHost, PluginKind, WasmFilter};
use crate::proxy::{Fallback, FanOut, Pool, PoolRoute, Reporting, StartError, StaticResponse};
use crate::status::{Owner, PluginCounters, PoolStatus, Snapshot};
use crate::tls::ClientIdentity;

/// The routes and the pools they lead to.
pub struct Router {
    routes: Vec<Route>,
    pools: Vec<Arc<Pool>>,
    /// The filter plugins, by filter name (each loaded once, whichever
    /// routes list it).
    filters: BTreeMap<String, Arc<WasmFilter>>,
    /// The filters' configs, which the next router compares to keep a
    /// plugin that is the same.
    filter_configs: BTreeMap<String, FilterConfig>,
    reporting: Arc<Reporting>,
    /// The MCP routes' session keys and sessions seen: made with the first
    /// router, then handed from each router to the next.
    mcp: Arc<Sessions>,
    /// The Protected Resource Metadata (RFC 9728) of the `jwt` filters
    /// that name a `resource`: the path it is served at, the document.
    resource_metadata: Vec<(String, bytes::Bytes)>,
}

impl Router {
    /// Builds every pool of `config` (loading plugins) and the route table,
    /// reporting to a new [`Reporting`].
    ///
    /// # Errors
    /// [`StartError::Plugin`] when a pool's plugin is refused.
    pub fn build(config: &Config, host: &PluginHost) -> Result<Self, StartError> {
        Self::rebuild(config, host, &Reporting::new(config), None, None)
    }

    /// Builds the router for `config`, reusing every pool of `previous`
    /// that [serves](Pool::serves) its new config as it is (only drain flags
    /// changed; [`activate`](Self::activate) sets them), and building the
    /// next generation of a pool whose `instances` changed from its
    /// previous one, which keeps its state (see [`Pool`]) — unless it loads
    /// the plugin file `replaced`. Other pools and every route are built
    /// anew; a route whose config is unchanged keeps what it learned (its
    /// stale-if-error answers, its fan-out's cache and source quality, its
    /// MCP catalog), unless its resolver is the plugin `replaced`: a pool's
    /// membership change costs no route its state. Nothing the previous
    /// router uses is changed until [`activate`](Self::activate).
    ///
    /// # Errors
    /// [`StartError::Plugin`] when a plugin is refused.
    pub fn rebuild(
        config: &Config,
        host: &PluginHost,
        reporting: &Arc<Reporting>,
        previous: Option<&Router>,
        replaced: Option<&Path>,
    ) -> Result<Self, StartError> {
        let is_replaced = |path: &Path| replaced == Some(path);
        let mcp = previous.map_or_else(|| Sessions::new(config), |p| Arc::clone(&p.mcp));
        let mut pools = BTreeMap::new();
        for (name, pool) in &config.pools {
            let before = previous
                .and_then(|r| r.pools.iter().find(|p| p.name() == name))
                .filter(|_| !pool.plugin_keys().iter().any(|(_, p)| is_replaced(p)));
            let built = match before {
                Some(p) if p.serves(pool) => Arc::clone(p),
                _ => Arc::new(Pool::build(
                    name,
                    pool,
                    host,
                    &reporting.events,
                    &reporting.metrics,
                    before.map(|p| &**p),
                )?),
            };
            pools.insert(name.clone(), built);
        }
        let filters = load_filters(config, host, previous, replaced)?;
        let mut routes = Vec::with_capacity(config.routes.len());
        for (index, r) in config.routes.iter().enumerate() {
            // The same route before the change: the one at the same place
            // first (routes rarely move), serialized once.
            let json = serde_json::to_value(r).ok();
            let same = |old: &&Route| json.is_some() && old.config == json;
            let before = previous
                .and_then(|p| {
                    p.routes
                        .get(index)
                        .filter(same)
                        .or_else(|| p.routes.iter().find(same))
                })
                .filter(|_| !r.plugin_path().is_some_and(is_replaced))
                .map(|old| &old.target);
            let target = match (&r.pool, &r.fan_out, &r.mcp) {
                (_, _, Some(mcp_config)) => {
                    let before = match before {
                        Some(Target::Mcp(m)) => Some(&**m),
                        _ => None,
                    };
                    Target::Mcp(Box::new(McpRoute::build(
                        index,
                        &r.matches,
                        mcp_config,
                        &pools,
                        (reporting, &mcp),
                        before,
                    )?))
                }
                (_, Some(fan_out), None) => {
                    let before = match before {
                        Some(Target::FanOut(f)) => Some(&**f),
                        _ => None,
                    };
                    Target::FanOut(Box::new(FanOut::build(
                        index, fan_out, &pools, host, before,
                    )?))
                }
                (Some(name), None, None) => {
                    let Some(pool) = pools.get(name) else {
                        continue;
                    };
                    let fallback = match &r.fallback {
                        Some(FallbackConfig::Pool { pool }) => {
                            pools.get(pool).cloned().map(Fallback::Pool)
                        }
                        Some(FallbackConfig::Static {
                            status,
                            body,
                            headers,
                        }) => Some(Fallback::Static(StaticResponse::new(
                            *status, body, headers,
                        ))),
                        None => None,
                    };
                    let stale = match before {
                        Some(Target::Pool(p)) => p.stale.clone(),
                        _ => None,
                    };
                    Target::Pool(PoolRoute {
                        pool: Arc::clone(pool),
                        fallback,
                        stale: r
                            .stale_if_error
                            .as_ref()
                            .map(|c| stale.unwrap_or_else(|| Arc::new(StaleCache::new(c)))),
                    })
                }
                // Validation refuses a route with none.
                (None, None, None) => continue,
            };
            let served_by = target.served_by();
            routes.push(Route {
                config: json,
                chain: Chain::build(
                    &r.filters,
                    &config.filters,
                    &filters,
                    (index, matches!(target, Target::Mcp(_))),
                    reporting,
                ),
                matches: r.matches.clone(),
                metrics: reporting.metrics.route(index, served_by),
                index,
                target,
            });
        }
        Ok(Self {
            routes,
            pools: pools.into_values().collect(),
            filters,
            filter_configs: config.filters.clone(),
            reporting: Arc::clone(reporting),
            mcp,
            resource_metadata: config
                .filters
                .values()
                .filter_map(|filter| match filter {
                    FilterConfig::Jwt(jwt) => resource_metadata(jwt),
                    _ => None,
                })
                .collect(),
        })
    }

    /// The Protected Resource Metadata document served at `path`, when a
    /// `jwt` filter names a resource whose metadata is there.
    pub fn resource_metadata(&self, path: &str) -> Option<&bytes::Bytes> {
        self.resource_metadata
            .iter()
            .find(|(at, _)| at == path)
            .map(|(_, document)| document)
    }

    /// The first route matching `host` (without port) and `path`.
    pub fn route(&self, host: &str, path: &str, client: Option<&ClientIdentity>) -> Option<&Route> {
        self.routes
            .iter()
            .find(|r| matches(&r.matches, host, path, client))
    }
}

/// Where a `jwt` filter's resource metadata is served, and the document
/// (RFC 9728 §2): the resource, the providers' issuers as its
/// authorization servers, its scopes, bearer tokens in the header only.
fn resource_metadata(jwt: &JwtConfig) -> Option<(String, bytes::Bytes)> {
    let (path, _) = jwt.resource_metadata()?;
    let mut issuers: Vec<&str> = jwt.providers.iter().map(|p| p.issuer.as_str()).collect();
    issuers.dedup();
    let mut document = serde_json::json!({
        "resource": jwt.resource,
        "authorization_servers": issuers,
        "bearer_methods_supported": ["header"],
    });
    if !jwt.scopes_supported.is_empty() {
        document["scopes_supported"] = serde_json::json!(jwt.scopes_supported);
    }
    Some((path, document.to_string().into()))
}

/// A route: its conditions and where matching requests go.
pub struct Route {
    /// The conditions.
    pub matches: RouteMatch,
    /// Where matching requests go.
    pub target: Target,
    /// Its request counters and latency histogram.
    pub metrics: RouteMetrics,
    /// Its position in the config's `routes`.
    pub index: usize,
    /// Its filters (empty without `filters`).
    pub chain: Chain,
    /// The config it was built from, as JSON: the next router keeps the
    /// state of a route whose config is the same.
    config: Option<serde_json::Value>,
}

/// Where a route sends its requests.
pub enum Target {
    /// One pool (with failover).
    Pool(PoolRoute),
    /// Several sources at once, fused.
    FanOut(Box<FanOut>),
    /// An MCP gateway over one or more pools.
    Mcp(Box<McpRoute>),
}

impl Target {
    /// What serves the route, as metrics label it: the pool's name,
    /// `fan-out` or `mcp`.
    pub fn served_by(&self) -> &str {
        match self {
            Target::Pool(p) => p.pool.name(),
            Target::FanOut(_) => "fan-out",
            Target::Mcp(_) => "mcp",
        }
    }
}

impl Router {
    /// Every pool's state: health, panic mode, instances (the status API's query).
    pub fn status(&self) -> Vec<PoolStatus> {
        self.pools.iter().map(|p| p.status()).collect()
    }

    /// Everything the metrics show, as of now: every pool's state, every
    /// loaded plugin's counters, every fan-out cache's counts.
    pub fn snapshot(&self) -> Snapshot {
        let mut plugins = Vec::new();
        for pool in &self.pools {
            plugins.extend(pool.plugin_counters().map(|(kind, stats)| PluginCounters {
                owner: Owner::Pool(pool.name().to_owned()),
                kind,
                stats: Arc::clone(stats),
            }));
        }
        plugins.extend(self.filters.iter().map(|(name, filter)| PluginCounters {
            owner: Owner::Filter(name.clone()),
            kind: PluginKind::Filter,
            stats: filter.stats(),
        }));
        let mut caches = Vec::new();
        for (index, route) in self.routes.iter().enumerate() {
            if let Target::FanOut(fan_out) = &route.target {
                plugins.extend(fan_out.plugin_stats().map(|stats| PluginCounters {
                    owner: Owner::Route(index),
                    kind: PluginKind::Resolver,
                    stats,
                }));
                caches.extend(fan_out.cache().map(|c| (index, c.stats())));
            }
        }
        Snapshot {
            pools: self.status(),
            plugins,
            caches,
        }
    }

    /// Puts this router's pools in force after it was swapped in for
    /// `previous` (see [`Pool::activate`]); `config` is the configuration
    /// it was built from.
    pub fn activate(&self, config: &Config, previous: Option<&Router>) {
        for pool in &self.pools {
            if let Some(pool_config) = config.pools.get(pool.name()) {
                pool.activate(
                    pool_config,
                    previous.and_then(|r| r.pool_named(pool.name())),
                );
            }
        }
        // Pools that are gone retire their instances (their requests in
        // flight finish in the router that sent them).
        for gone in previous
            .iter()
            .flat_map(|r| &r.pools)
            .filter(|p| self.pool_named(p.name()).is_none())
        {
            gone.members().as_slice().iter().for_each(|e| e.retire());
        }
    }

    /// A pool by name (a failover plugin's fallback).
    pub fn pool_named(&self, name: &str) -> Option<&Pool> {
        crate::proxy::pool_named(&self.pools, name)
    }

    /// Health events as they happen.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<HealthEvent> {
        self.reporting.events.subscribe()
    }

    /// Where the data path reports.
    pub fn reporting(&self) -> &Arc<Reporting> {
        &self.reporting
    }

    /// The pools, by name order.
    pub fn pools(&self) -> &[Arc<Pool>] {
        &self.pools
    }

    /// The routes, in match order.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }
}

/// Loads the filter plugins of `config`, keeping those of `previous`
/// whose filter config is the same and whose file is not `replaced` (with
/// their instances and what they learned).
///
/// # Errors
/// [`StartError::Plugin`] naming `filters.NAME` when a plugin is refused.
fn load_filters(
    config: &Config,
    host: &PluginHost,
    previous: Option<&Router>,
    replaced: Option<&Path>,
) -> Result<BTreeMap<String, Arc<WasmFilter>>, StartError> {
    let mut loaded = BTreeMap::new();
    for (name, filter) in &config.filters {
        let FilterConfig::Plugin(p) = filter else {
            continue;
        };
        let kept = previous
            .filter(|_| replaced != Some(p.plugin.path.as_path()))
            .filter(|r| {
                r.filter_configs
                    .get(name)
                    .is_some_and(|old| crate::config::same_json(old, filter))
            })
            .and_then(|r| r.filters.get(name));
        let plugin = match kept {
            Some(plugin) => Arc::clone(plugin),
            None => {
                let plugin = WasmFilter::load(
                    host,
                    &p.plugin.path,
                    p.plugin.config_json(),
                    Limits::of(&p.plugin),
                )
                .map_err(|error| StartError::Plugin {
                    key: format!("filters.{name}.plugin"),
                    error,
                })?;
                plugin.stats().serve(format!("filter {name}"));
                Arc::new(plugin)
            }
        };
        loaded.insert(name.clone(), plugin);
    }
    Ok(loaded)
}

fn matches(m: &RouteMatch, host: &str, path: &str, client: Option<&ClientIdentity>) -> bool {
    m.host
        .as_deref()
        .is_none_or(|h| h.eq_ignore_ascii_case(host))
        && m.path_prefix.as_deref().is_none_or(|p| path.starts_with(p))
        && m.client_san
            .as_deref()
            .is_none_or(|san| client.is_some_and(|c| c.has_san(san)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_all_hold() {
        let m = RouteMatch {
            host: Some("API.example.com".into()),
            path_prefix: Some("/v1".into()),
            client_san: None,
        };
        assert!(matches(&m, "api.example.com", "/v1/users", None));
        assert!(!matches(&m, "www.example.com", "/v1/users", None));
        assert!(!matches(&m, "api.example.com", "/v2", None));
        assert!(matches(&RouteMatch::default(), "any", "/", None));
    }
}
