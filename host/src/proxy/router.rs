//! Routes: the first route whose conditions all hold picks the pool.

use std::collections::BTreeMap;
use std::sync::Arc;

use std::time::Duration;

use super::pool::PoolStatus;
use super::{Pool, StartError};
use crate::config::{Config, RouteMatch};
use crate::health::{EventBus, HealthEvent};
use crate::plugin::PluginHost;

/// The routes and the pools they lead to.
pub struct Router {
    routes: Vec<(RouteMatch, Arc<Pool>)>,
    pools: Vec<Arc<Pool>>,
    events: Arc<EventBus>,
}

impl Router {
    /// Builds every pool of `config` (loading plugins) and the route table.
    ///
    /// # Errors
    /// [`StartError::Plugin`] when a pool's plugin is refused.
    pub fn build(config: &Config, host: &PluginHost) -> Result<Self, StartError> {
        let events = Arc::new(EventBus::new(
            1024,
            Duration::from_millis(config.event_cooldown_ms),
        ));
        let mut pools = BTreeMap::new();
        for (name, pool) in &config.pools {
            pools.insert(
                name.clone(),
                Arc::new(Pool::build(name, pool, host, &events)?),
            );
        }
        let routes = config
            .routes
            .iter()
            .filter_map(|r| {
                pools
                    .get(&r.pool)
                    .map(|p| (r.matches.clone(), Arc::clone(p)))
            })
            .collect();
        Ok(Self {
            routes,
            pools: pools.into_values().collect(),
            events,
        })
    }

    /// The pool of the first route matching `host` (without port) and `path`.
    pub fn route(&self, host: &str, path: &str) -> Option<&Arc<Pool>> {
        self.routes
            .iter()
            .find(|(m, _)| matches(m, host, path))
            .map(|(_, pool)| pool)
    }
}

impl Router {
    /// Every pool's state: health, panic mode, instances (the status API's query).
    pub fn status(&self) -> Vec<PoolStatus> {
        self.pools.iter().map(|p| p.status()).collect()
    }

    /// Health events as they happen.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<HealthEvent> {
        self.events.subscribe()
    }

    /// Starts every pool's health checks; dropping the sets stops them.
    pub fn spawn_health(&self) -> Vec<tokio::task::JoinSet<()>> {
        self.pools.iter().map(Pool::spawn_health).collect()
    }
}

fn matches(m: &RouteMatch, host: &str, path: &str) -> bool {
    m.host
        .as_deref()
        .is_none_or(|h| h.eq_ignore_ascii_case(host))
        && m.path_prefix.as_deref().is_none_or(|p| path.starts_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_all_hold() {
        let m = RouteMatch {
            host: Some("API.example.com".into()),
            path_prefix: Some("/v1".into()),
        };
        assert!(matches(&m, "api.example.com", "/v1/users"));
        assert!(!matches(&m, "www.example.com", "/v1/users"));
        assert!(!matches(&m, "api.example.com", "/v2"));
        assert!(matches(&RouteMatch::default(), "any", "/"));
    }
}
