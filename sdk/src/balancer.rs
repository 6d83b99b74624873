//! Balancing strategies: rank the candidates of a pool for one request.

use crate::{Endpoint, EndpointId, EndpointStats, PluginError, RequestInfo};

pub use crate::wit::balancer::exports::switchyard::plugin::balancer::Requirements;

/// A balancing strategy. The host calls, in order:
///
/// 1. [`new`](Balancer::new) once, with the pool's plugin config as JSON text
///    (`{}` when the pool sets none), then [`requirements`](Balancer::requirements);
/// 2. [`update`](Balancer::update) with the full endpoint set before the first
///    pick and whenever membership changes;
/// 3. [`pick`](Balancer::pick) per request, and
///    [`observe`](Balancer::observe) after each attempt (unless
///    [`requirements`](Balancer::requirements) turned it off).
///
/// A strategy *ranks*; the host filters the ranking (unreachable, already
/// tried, draining) and takes the first acceptable id. Returning an empty
/// ranking or an id that is not a candidate is a fault: the host uses the
/// pool's built-in fallback strategy for that request and counts the fault.
pub trait Balancer: Sized + 'static {
    /// Builds the strategy from its JSON config; an error refuses the plugin at load.
    fn new(config: &str) -> Result<Self, PluginError>;

    /// What the strategy needs from the host. Default: no request headers
    /// (which keeps `pick` cheapest) and `observe` calls on (set `observe:
    /// false` when [`observe`](Balancer::observe) is not implemented, to save
    /// a call per request).
    fn requirements(&self) -> Requirements {
        Requirements {
            request_headers: Vec::new(),
            observe: true,
        }
    }

    /// The pool's membership changed: `endpoints` is the complete new set and
    /// `version` increases with every change. Default: ignore.
    fn update(&mut self, version: u64, endpoints: Vec<Endpoint>) {
        let _ = (version, endpoints);
    }

    /// Ranks `candidates` for `request`, most preferred first, at most `limit` ids.
    fn pick(
        &mut self,
        request: &RequestInfo,
        candidates: &[EndpointStats],
        limit: u32,
    ) -> Result<Vec<EndpointId>, PluginError>;

    /// Feedback after an attempt on `id`: `success` is false for connect errors,
    /// timeouts and 5xx; `latency_us` is time to response headers. Default: ignore.
    fn observe(&mut self, id: EndpointId, success: bool, latency_us: u64) {
        let _ = (id, success, latency_us);
    }
}

/// Exports a [`Balancer`] implementation as the component's `balancer` interface.
///
/// Use once per plugin crate, at the crate root: `switchyard_sdk::export_balancer!(MyStrategy);`
#[macro_export]
macro_rules! export_balancer {
    ($ty:ty) => {
        const _: () = {
            use $crate::wit::balancer::exports::switchyard::plugin::balancer as exported;
            struct Export;
            ::std::thread_local! {
                static SLOT: $crate::Slot<$ty> = const { $crate::Slot::new() };
            }
            impl exported::Guest for Export {
                fn configure(config: String) -> Result<$crate::Requirements, $crate::PluginError> {
                    SLOT.with(|slot| {
                        slot.install(<$ty as $crate::Balancer>::new(&config), |plugin| {
                            $crate::Balancer::requirements(plugin)
                        })
                    })
                }
                fn update(version: u64, endpoints: Vec<$crate::Endpoint>) {
                    SLOT.with(|slot| slot.with(|p| $crate::Balancer::update(p, version, endpoints)))
                }
                fn pick(
                    request: $crate::RequestInfo,
                    candidates: Vec<$crate::EndpointStats>,
                    limit: u32,
                ) -> Result<Vec<$crate::EndpointId>, $crate::PluginError> {
                    SLOT.with(|slot| {
                        slot.with(|p| $crate::Balancer::pick(p, &request, &candidates, limit))
                    })
                }
                fn observe(id: $crate::EndpointId, success: bool, latency_us: u64) {
                    SLOT.with(|slot| {
                        slot.with(|p| $crate::Balancer::observe(p, id, success, latency_us))
                    })
                }
            }
    $crate::wit::balancer::export!(Export with_types_in $crate::wit::balancer);
        };
    };
}
