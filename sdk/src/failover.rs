//! Failover policies: decide what happens after an attempt failed.

use crate::PluginError;

pub use crate::wit::failover::exports::switchyard::plugin::failover::{
    Decision, FailureContext, FailureKind, RetryPlan, StaticResponse,
};

/// A failover policy. The host calls [`new`](Failover::new) once with the
/// route's failover-plugin config (JSON text), then
/// [`on_failure`](Failover::on_failure) after each failed attempt. The host
/// still enforces its limits (retry budget, max attempts, deadline): a retry it
/// cannot afford becomes a failure.
pub trait Failover: Sized + 'static {
    /// Builds the policy from its JSON config; an error refuses the plugin at load.
    fn new(config: &str) -> Result<Self, PluginError>;
    /// Decides what to do after `failure`.
    fn on_failure(&mut self, failure: FailureContext) -> Decision;
    /// Lower-case names of the request headers to pass in
    /// `failure.request.headers` (WIT 0.1.2 `request-needs`), asked once
    /// after [`new`](Failover::new). Default: none.
    fn request_headers(&self) -> Vec<String> {
        Vec::new()
    }
}

/// Exports a [`Failover`] implementation as the component's `failover` and
/// `request-needs` interfaces.
#[macro_export]
macro_rules! export_failover {
    ($ty:ty) => {
        const _: () = {
            use $crate::wit::failover::exports::switchyard::plugin::failover as exported;
            struct Export;
            ::std::thread_local! {
                static SLOT: $crate::Slot<$ty> = const { $crate::Slot::new() };
            }
            impl exported::Guest for Export {
                fn configure(config: String) -> Result<(), $crate::PluginError> {
                    SLOT.with(|slot| slot.install(<$ty as $crate::Failover>::new(&config), |_| ()))
                }
                fn on_failure(failure: $crate::FailureContext) -> $crate::Decision {
                    SLOT.with(|slot| slot.with(|p| $crate::Failover::on_failure(p, failure)))
                }
            }
            impl $crate::wit::needs::exports::switchyard::plugin::request_needs::Guest for Export {
                fn request_headers() -> Vec<String> {
                    SLOT.with(|slot| slot.with(|p| $crate::Failover::request_headers(p)))
                }
            }
    $crate::wit::failover::export!(Export with_types_in $crate::wit::failover);
    $crate::wit::needs::export!(Export with_types_in $crate::wit::needs);
        };
    };
}
