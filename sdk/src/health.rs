//! Health checks: say what probe the host sends, and judge its answer.

use crate::{Endpoint, PluginError};

pub use crate::wit::health::exports::switchyard::plugin::health_check::{
    Health, ProbeRequest, ProbeResponse, ProbeResult, Verdict,
};

/// A health-check policy. The host calls [`new`](HealthCheck::new) once with
/// the pool's health-plugin config (JSON text), then per probe
/// [`probe`](HealthCheck::probe) to learn what to send and
/// [`evaluate`](HealthCheck::evaluate) with what came back. The host sends the
/// probe, applies the timeout and measures latency; the plugin only judges.
pub trait HealthCheck: Sized + 'static {
    /// Builds the check from its JSON config; an error refuses the plugin at load.
    fn new(config: &str) -> Result<Self, PluginError>;
    /// The probe to send to `target` now.
    fn probe(&mut self, target: &Endpoint) -> ProbeRequest;
    /// Judges `result`, the outcome of the probe sent to `target`.
    fn evaluate(&mut self, target: &Endpoint, result: ProbeResult) -> Verdict;
}

/// Exports a [`HealthCheck`] implementation as the component's `health-check` interface.
#[macro_export]
macro_rules! export_health_check {
    ($ty:ty) => {
        const _: () = {
            use $crate::wit::health::exports::switchyard::plugin::health_check as exported;
            struct Export;
            ::std::thread_local! {
                static SLOT: $crate::Slot<$ty> = const { $crate::Slot::new() };
            }
            impl exported::Guest for Export {
                fn configure(config: String) -> Result<(), $crate::PluginError> {
                    SLOT.with(|slot| {
                        slot.install(<$ty as $crate::HealthCheck>::new(&config), |_| ())
                    })
                }
                fn probe(target: $crate::Endpoint) -> $crate::ProbeRequest {
                    SLOT.with(|slot| slot.with(|p| $crate::HealthCheck::probe(p, &target)))
                }
                fn evaluate(
                    target: $crate::Endpoint,
                    answer: $crate::ProbeResult,
                ) -> $crate::Verdict {
                    SLOT.with(|slot| {
                        slot.with(|p| $crate::HealthCheck::evaluate(p, &target, answer))
                    })
                }
            }
    $crate::wit::health::export!(Export with_types_in $crate::wit::health);
        };
    };
}
