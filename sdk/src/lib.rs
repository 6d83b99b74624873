//! # switchyard-sdk: write Switchyard plugins as plain Rust
//!
//! A Switchyard plugin is a WebAssembly component that makes one kind of
//! traffic decision. With this crate a plugin is a trait impl plus one macro
//! line; the generated WIT bindings stay hidden in [`wit`].
//!
//! | kind | trait | export macro | WIT world |
//! |---|---|---|---|
//! | balancing strategy | [`Balancer`] | [`export_balancer!`] | `balancer-plugin` |
//! | health check | [`HealthCheck`] | [`export_health_check!`] | `health-check-plugin` |
//! | failover policy | [`Failover`] | [`export_failover!`] | `failover-plugin` |
//! | data-fusion resolver | [`Resolver`] | [`export_resolver!`] | `resolver-plugin` |
//! | filter (WIT 0.1.3) | [`Filter`] | [`export_filter!`] | `filter-plugin` |
//!
//! ```ignore
//! use switchyard_sdk::{Balancer, EndpointId, EndpointStats, PluginError, RequestInfo};
//!
//! struct First;
//! impl Balancer for First {
//!     fn new(_config: &str) -> Result<Self, PluginError> { Ok(First) }
//!     fn pick(&mut self, _req: &RequestInfo, candidates: &[EndpointStats], _limit: u32)
//!         -> Result<Vec<EndpointId>, PluginError> {
//!         Ok(candidates.iter().map(|c| c.id).collect())
//!     }
//! }
//! switchyard_sdk::export_balancer!(First);
//! ```
//!
//! Build with `cargo build --release --target wasm32-wasip2` (crate type
//! `cdylib`): the output `.wasm` is a component the host loads directly.
//!
//! ## The one rule
//! Plugins decide; the host does all I/O. A plugin gets no filesystem,
//! network, environment or clock: it receives facts and returns a decision.
//! Its stdout/stderr (and panic messages) go to the host's log. A call runs
//! under a CPU deadline and a memory cap; exceeding either, trapping or
//! answering nonsense is a *fault*, and the host falls back to its built-in
//! policy for that decision.

mod balancer;
mod failover;
mod filter;
mod health;
mod resolver;
mod slot;

pub use balancer::{Balancer, Requirements};
pub use failover::{Decision, Failover, FailureContext, FailureKind, RetryPlan, StaticResponse};
pub use filter::{
    BodyPrefix, DirectResponse, Filter, FilterNeeds, HttpRequest, HttpResponse, McpCall,
    McpCallVerdict, McpClient, McpError, McpResultVerdict, RequestChange, RequestVerdict,
    ResponseChange, ResponseVerdict,
};
pub use health::{Health, HealthCheck, ProbeRequest, ProbeResponse, ProbeResult, Verdict};
pub use resolver::{FusedResponse, Outcome, Resolver, SourceAnswer, UpstreamResponse};
#[doc(hidden)]
pub use slot::Slot;

/// The `kv` capability (WIT 0.1.1): a small key-value store the host keeps
/// for this plugin file across instance rebuilds and reloads (not
/// restarts), 64 KiB in all. Only for plugins whose config grants it
/// (`capabilities = ["kv"]`): without the grant each call traps, a fault.
pub mod kv {
    use crate::wit::platform::switchyard::plugin::kv;

    /// The value under `key`, if any.
    pub fn get(key: &str) -> Option<Vec<u8>> {
        kv::get(key)
    }

    /// Stores `value` under `key`; an error (the store unchanged) when the
    /// store would exceed its 64 KiB bound.
    ///
    /// # Errors
    /// The host's reason, naming the size the store would reach.
    pub fn set(key: &str, value: &[u8]) -> Result<(), String> {
        kv::set(key, value)
    }

    /// Removes `key`; whether it was there.
    pub fn delete(key: &str) -> bool {
        kv::delete(key)
    }
}
pub use wit::platform::switchyard::plugin::types::{
    Endpoint, EndpointId, EndpointStats, PluginError, RequestInfo,
};

/// Generated bindings. Hidden: use the re-exports at the crate root.
#[doc(hidden)]
pub mod wit {
    /// The shared `types` and `host` interfaces.
    #[allow(missing_docs)]
    pub mod platform {
        wit_bindgen::generate!({ world: "platform", path: "wit" });
    }

    /// Bindings of the `balancer-plugin` world.
    #[allow(missing_docs)]
    pub mod balancer {
        wit_bindgen::generate!({
            world: "balancer-plugin",
            path: "wit",
            with: {
                "switchyard:plugin/types@0.1.3": crate::wit::platform::switchyard::plugin::types,
                "switchyard:plugin/host@0.1.3": crate::wit::platform::switchyard::plugin::host,
                "switchyard:plugin/kv@0.1.3": crate::wit::platform::switchyard::plugin::kv,
            },
            pub_export_macro: true,
            default_bindings_module: "switchyard_sdk::wit::balancer",
            export_macro_name: "export",
        });
    }
    /// Bindings of the `health-check-plugin` world.
    #[allow(missing_docs)]
    pub mod health {
        wit_bindgen::generate!({
            world: "health-check-plugin",
            path: "wit",
            with: {
                "switchyard:plugin/types@0.1.3": crate::wit::platform::switchyard::plugin::types,
                "switchyard:plugin/host@0.1.3": crate::wit::platform::switchyard::plugin::host,
                "switchyard:plugin/kv@0.1.3": crate::wit::platform::switchyard::plugin::kv,
            },
            pub_export_macro: true,
            default_bindings_module: "switchyard_sdk::wit::health",
            export_macro_name: "export",
        });
    }
    /// Bindings of the `failover-plugin` world but its `request-needs`
    /// export, which is [`needs`]'s (the export macros of two worlds with a
    /// common export cannot live in one crate); the component has both.
    #[allow(missing_docs)]
    pub mod failover {
        wit_bindgen::generate!({
            inline: "
                package switchyard:sdk;
                world failover {
                    include switchyard:plugin/platform@0.1.3;
                    export switchyard:plugin/failover@0.1.3;
                }
            ",
            path: "wit",
            with: {
                "switchyard:plugin/types@0.1.3": crate::wit::platform::switchyard::plugin::types,
                "switchyard:plugin/host@0.1.3": crate::wit::platform::switchyard::plugin::host,
                "switchyard:plugin/kv@0.1.3": crate::wit::platform::switchyard::plugin::kv,
            },
            pub_export_macro: true,
            default_bindings_module: "switchyard_sdk::wit::failover",
            export_macro_name: "export",
        });
    }
    /// Bindings of the `resolver-plugin` world but its `request-needs`
    /// export, which is [`needs`]'s (the export macros of two worlds with a
    /// common export cannot live in one crate); the component has both.
    #[allow(missing_docs)]
    pub mod resolver {
        wit_bindgen::generate!({
            inline: "
                package switchyard:sdk;
                world resolver {
                    include switchyard:plugin/platform@0.1.3;
                    export switchyard:plugin/resolver@0.1.3;
                }
            ",
            path: "wit",
            with: {
                "switchyard:plugin/types@0.1.3": crate::wit::platform::switchyard::plugin::types,
                "switchyard:plugin/host@0.1.3": crate::wit::platform::switchyard::plugin::host,
                "switchyard:plugin/kv@0.1.3": crate::wit::platform::switchyard::plugin::kv,
            },
            pub_export_macro: true,
            default_bindings_module: "switchyard_sdk::wit::resolver",
            export_macro_name: "export",
        });
    }
    /// Bindings of the `filter-plugin` world (WIT 0.1.3).
    #[allow(missing_docs)]
    pub mod filter {
        wit_bindgen::generate!({
            world: "filter-plugin",
            path: "wit",
            with: {
                "switchyard:plugin/types@0.1.3": crate::wit::platform::switchyard::plugin::types,
                "switchyard:plugin/host@0.1.3": crate::wit::platform::switchyard::plugin::host,
                "switchyard:plugin/kv@0.1.3": crate::wit::platform::switchyard::plugin::kv,
            },
            pub_export_macro: true,
            default_bindings_module: "switchyard_sdk::wit::filter",
            export_macro_name: "export",
        });
    }
    /// Bindings of the `request-needs` export (WIT 0.1.2) that the
    /// `failover-plugin` and `resolver-plugin` worlds share.
    #[allow(missing_docs)]
    pub mod needs {
        wit_bindgen::generate!({
            inline: "
                package switchyard:sdk;
                world needs {
                    export switchyard:plugin/request-needs@0.1.3;
                }
            ",
            path: "wit",
            pub_export_macro: true,
            default_bindings_module: "switchyard_sdk::wit::needs",
            export_macro_name: "export",
        });
    }
}

/// Log through the host: the line appears in the host's log, tagged with the
/// plugin's name. Cheap, but each call crosses the sandbox: avoid it per request
/// at `info` and above.
pub mod log {
    use crate::wit::platform::switchyard::plugin::host::{self, Level};

    /// Logs `message` at trace level.
    pub fn trace(message: &str) {
        host::log(Level::Trace, message);
    }
    /// Logs `message` at debug level.
    pub fn debug(message: &str) {
        host::log(Level::Debug, message);
    }
    /// Logs `message` at info level.
    pub fn info(message: &str) {
        host::log(Level::Info, message);
    }
    /// Logs `message` at warn level.
    pub fn warn(message: &str) {
        host::log(Level::Warn, message);
    }
    /// Logs `message` at error level.
    pub fn error(message: &str) {
        host::log(Level::Error, message);
    }
}
