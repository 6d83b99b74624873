//! Generated bindings, one `bindgen!` per world, and the store state every
//! plugin instance carries. Everything else imports from here.

use std::sync::Arc;

use wasmtime::{ResourceLimiter, StoreLimits};

use super::PluginStats;
use super::kv::KvStore;
use super::output::Captured;

/// The `balancer-plugin` world.
pub mod balancer {
    wasmtime::component::bindgen!({
        world: "balancer-plugin",
        path: "../../wit",
        // Ungranted, the store traps (a fault), naming the capability.
        imports: {
            "switchyard:plugin/kv.get": trappable,
            "switchyard:plugin/kv.set": trappable,
            "switchyard:plugin/kv.delete": trappable,
            // Over the output bound of a call, logging traps (a fault).
            "switchyard:plugin/host.log": trappable,
        },
    });
}

/// The `health-check-plugin` world; `types`, `host` and `kv` are the balancer's.
pub mod health {
    wasmtime::component::bindgen!({
        world: "health-check-plugin",
        path: "../../wit",
        with: {
            "switchyard:plugin/types": super::balancer::switchyard::plugin::types,
            "switchyard:plugin/host": super::balancer::switchyard::plugin::host,
            "switchyard:plugin/kv": super::balancer::switchyard::plugin::kv,
        },
    });
}

/// The `failover-plugin` world without its optional `request-needs` export
/// (looked up per component, [`needs`]), so that plugins built against
/// 0.1.0/0.1.1 still match; `types`, `host` and `kv` are the balancer's.
pub mod failover {
    wasmtime::component::bindgen!({
        inline: "
            package switchyard:host;
            world failover-plugin {
                include switchyard:plugin/platform@0.1.3;
                export switchyard:plugin/failover@0.1.3;
            }
        ",
        path: "../../wit",
        with: {
            "switchyard:plugin/types": super::balancer::switchyard::plugin::types,
            "switchyard:plugin/host": super::balancer::switchyard::plugin::host,
            "switchyard:plugin/kv": super::balancer::switchyard::plugin::kv,
        },
    });
}

/// The `resolver-plugin` world without its optional `request-needs` export
/// (as [`failover`]); `types`, `host` and `kv` are the balancer's.
pub mod resolver {
    wasmtime::component::bindgen!({
        inline: "
            package switchyard:host;
            world resolver-plugin {
                include switchyard:plugin/platform@0.1.3;
                export switchyard:plugin/resolver@0.1.3;
            }
        ",
        path: "../../wit",
        with: {
            "switchyard:plugin/types": super::balancer::switchyard::plugin::types,
            "switchyard:plugin/host": super::balancer::switchyard::plugin::host,
            "switchyard:plugin/kv": super::balancer::switchyard::plugin::kv,
        },
    });
}

/// The `filter-plugin` world (since 0.1.3); `types`, `host` and `kv` are
/// the balancer's.
pub mod filter {
    wasmtime::component::bindgen!({
        world: "filter-plugin",
        path: "../../wit",
        with: {
            "switchyard:plugin/types": super::balancer::switchyard::plugin::types,
            "switchyard:plugin/host": super::balancer::switchyard::plugin::host,
            "switchyard:plugin/kv": super::balancer::switchyard::plugin::kv,
        },
    });
}

/// The optional `request-needs` export (since 0.1.2), on its own: a
/// component that has it is asked once after its first `configure`
/// (`exports::switchyard::plugin::request_needs::Guest`).
pub mod needs {
    wasmtime::component::bindgen!({
        inline: "
            package switchyard:host;
            world needs {
                export switchyard:plugin/request-needs@0.1.3;
            }
        ",
        path: "../../wit",
    });
}

pub use balancer::switchyard::plugin::host::Level;

/// Name of the balancer interface a plugin must export.
pub const BALANCER_EXPORT: &str = "switchyard:plugin/balancer@0.1.3";

/// Name of the failover interface a plugin must export.
pub const FAILOVER_EXPORT: &str = "switchyard:plugin/failover@0.1.3";

/// Name of the resolver interface a plugin must export.
pub const RESOLVER_EXPORT: &str = "switchyard:plugin/resolver@0.1.3";

/// Name of the filter interface a plugin must export.
pub const FILTER_EXPORT: &str = "switchyard:plugin/filter@0.1.3";

/// Name of the health-check interface a plugin must export.
pub const HEALTH_CHECK_EXPORT: &str = "switchyard:plugin/health-check@0.1.3";

/// The data of one plugin instance's store.
pub struct PluginState {
    /// The plugin's name (its file name), for log lines.
    pub name: Arc<str>,
    /// Memory and instance limits, enforced by the store's limiter.
    pub limits: Limiter,
    /// Partial stdout/stderr lines and the current call's output count.
    pub captured: Captured,
    /// The plugin's counters (its output bounds among them).
    pub stats: Arc<PluginStats>,
    /// The plugin's key-value store, when granted.
    pub kv: Option<Arc<KvStore>>,
    /// The current call's CPU deadline.
    pub deadline: super::deadline::CpuDeadline,
}

/// The store's resource limiter: wasmtime's [`StoreLimits`] (the memory cap;
/// a denied grow traps) and a flag set when it denied a grow, so that a
/// memory-cap fault is known from the limiter itself, not from the text of
/// the trap.
pub struct Limiter {
    limits: StoreLimits,
    /// A memory grow was denied since the flag was last taken.
    pub memory_denied: bool,
}

impl Limiter {
    /// A limiter over `limits`.
    pub fn new(limits: StoreLimits) -> Self {
        Self {
            limits,
            memory_denied: false,
        }
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.limits.memory_growing(current, desired, maximum);
        if !matches!(allowed, Ok(true)) {
            self.memory_denied = true;
        }
        allowed
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

impl PluginState {
    fn kv(&self) -> wasmtime::Result<&KvStore> {
        self.kv.as_deref().ok_or_else(|| {
            wasmtime::format_err!("{}", super::wasi::not_granted("switchyard:plugin/kv", "kv"))
        })
    }
}

impl balancer::switchyard::plugin::kv::Host for PluginState {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<Vec<u8>>> {
        Ok(self.kv()?.get(&key))
    }

    fn set(&mut self, key: String, value: Vec<u8>) -> wasmtime::Result<Result<(), String>> {
        Ok(self.kv()?.set(key, value))
    }

    fn delete(&mut self, key: String) -> wasmtime::Result<bool> {
        Ok(self.kv()?.delete(&key))
    }
}

impl balancer::switchyard::plugin::types::Host for PluginState {}

impl balancer::switchyard::plugin::host::Host for PluginState {
    fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        self.captured
            .log(&self.name, self.stats.output(), level, &message)?;
        Ok(())
    }
}
