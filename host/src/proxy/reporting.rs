//! Where the data path reports, shared by every router a process builds.

use std::sync::Arc;
use std::time::Duration;

use super::RecentRequests;
use super::tunnel::Tunnels;
use crate::config::Config;
use crate::events::EventBus;
use crate::gateway::rate_limit::LimitStates;
use crate::metrics::Metrics;

/// Where the data path reports, shared by every router a process builds:
/// events, metrics, the recent-request log, and the upgraded connections
/// being relayed.
pub struct Reporting {
    /// Health, failover and config events.
    pub events: Arc<EventBus>,
    /// Counters and histograms.
    pub metrics: Metrics,
    /// The last requests answered.
    pub recent: RecentRequests,
    /// Upgraded connections (WebSocket) being relayed.
    pub tunnels: Arc<Tunnels>,
    /// The rate limits' state, kept across routers.
    pub limit_states: LimitStates,
}

impl Reporting {
    /// Reporting for `config`: its event cooldown and a recent-request log
    /// of `admin.recent_requests` entries (none without an admin listener).
    pub fn new(config: &Config) -> Arc<Self> {
        Arc::new(Self {
            events: Arc::new(EventBus::new(
                1024,
                Duration::from_millis(config.event_cooldown_ms),
            )),
            metrics: Metrics::default(),
            recent: RecentRequests::new(config.admin.as_ref().map_or(0, |a| a.recent_requests)),
            tunnels: Arc::default(),
            limit_states: LimitStates::default(),
        })
    }
}
