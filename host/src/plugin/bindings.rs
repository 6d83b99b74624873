//! Generated bindings, one `bindgen!` per world, and the store state every
//! plugin instance carries. Everything else imports from here.

use std::sync::Arc;

use wasmtime::StoreLimits;

use super::wasi::Captured;

/// The `balancer-plugin` world.
pub mod balancer {
    wasmtime::component::bindgen!({
        world: "balancer-plugin",
        path: "../wit",
    });
}

/// The `health-check-plugin` world; `types` and `host` are the balancer's.
pub mod health {
    wasmtime::component::bindgen!({
        world: "health-check-plugin",
        path: "../wit",
        with: {
            "switchyard:plugin/types": super::balancer::switchyard::plugin::types,
            "switchyard:plugin/host": super::balancer::switchyard::plugin::host,
        },
    });
}

/// The `failover-plugin` world; `types` and `host` are the balancer's.
pub mod failover {
    wasmtime::component::bindgen!({
        world: "failover-plugin",
        path: "../wit",
        with: {
            "switchyard:plugin/types": super::balancer::switchyard::plugin::types,
            "switchyard:plugin/host": super::balancer::switchyard::plugin::host,
        },
    });
}

/// The `resolver-plugin` world; `types` and `host` are the balancer's.
pub mod resolver {
    wasmtime::component::bindgen!({
        world: "resolver-plugin",
        path: "../wit",
        with: {
            "switchyard:plugin/types": super::balancer::switchyard::plugin::types,
            "switchyard:plugin/host": super::balancer::switchyard::plugin::host,
        },
    });
}

pub use balancer::switchyard::plugin::host::Level;

/// Name of the balancer interface a plugin must export.
pub const BALANCER_EXPORT: &str = "switchyard:plugin/balancer@0.1.0";

/// Name of the failover interface a plugin must export.
pub const FAILOVER_EXPORT: &str = "switchyard:plugin/failover@0.1.0";

/// Name of the resolver interface a plugin must export.
pub const RESOLVER_EXPORT: &str = "switchyard:plugin/resolver@0.1.0";

/// Name of the health-check interface a plugin must export.
pub const HEALTH_CHECK_EXPORT: &str = "switchyard:plugin/health-check@0.1.0";

/// The data of one plugin instance's store.
pub struct PluginState {
    /// The plugin's name (its file name), for log lines.
    pub name: Arc<str>,
    /// Memory and instance limits, enforced by the store's limiter.
    pub limits: StoreLimits,
    /// Partial stdout/stderr lines.
    pub captured: Captured,
}

impl balancer::switchyard::plugin::types::Host for PluginState {}

impl balancer::switchyard::plugin::host::Host for PluginState {
    fn log(&mut self, level: Level, message: String) {
        let plugin = &*self.name;
        match level {
            Level::Trace => tracing::trace!(target: "switchyard::plugin", plugin, "{message}"),
            Level::Debug => tracing::debug!(target: "switchyard::plugin", plugin, "{message}"),
            Level::Info => tracing::info!(target: "switchyard::plugin", plugin, "{message}"),
            Level::Warn => tracing::warn!(target: "switchyard::plugin", plugin, "{message}"),
            Level::Error => tracing::error!(target: "switchyard::plugin", plugin, "{message}"),
        }
    }
}
