//! Data-fusion resolvers: make one response out of several sources' answers.

use crate::{PluginError, RequestInfo};

pub use crate::wit::resolver::exports::switchyard::plugin::resolver::{
    FusedResponse, Outcome, SourceAnswer, UpstreamResponse,
};

/// A resolver. The host calls [`new`](Resolver::new) once with the route's
/// resolver config (JSON text), then [`resolve`](Resolver::resolve) with every
/// source's answer (in source order) for each fanned-out request.
pub trait Resolver: Sized + 'static {
    /// Builds the resolver from its JSON config; an error refuses the plugin at load.
    fn new(config: &str) -> Result<Self, PluginError>;
    /// Fuses `answers` into one response for `request`.
    fn resolve(
        &mut self,
        request: &RequestInfo,
        answers: Vec<SourceAnswer>,
    ) -> Result<FusedResponse, PluginError>;
    /// Lower-case names of the request headers to pass in
    /// `request.headers` (WIT 0.1.2 `request-needs`), asked once after
    /// [`new`](Resolver::new). Default: none.
    fn request_headers(&self) -> Vec<String> {
        Vec::new()
    }
}

/// Exports a [`Resolver`] implementation as the component's `resolver` and
/// `request-needs` interfaces.
#[macro_export]
macro_rules! export_resolver {
    ($ty:ty) => {
        const _: () = {
            use $crate::wit::resolver::exports::switchyard::plugin::resolver as exported;
            struct Export;
            ::std::thread_local! {
                static SLOT: $crate::Slot<$ty> = const { $crate::Slot::new() };
            }
            impl exported::Guest for Export {
                fn configure(config: String) -> Result<(), $crate::PluginError> {
                    SLOT.with(|slot| slot.install(<$ty as $crate::Resolver>::new(&config), |_| ()))
                }
                fn resolve(
                    request: $crate::RequestInfo,
                    answers: Vec<$crate::SourceAnswer>,
                ) -> Result<$crate::FusedResponse, $crate::PluginError> {
                    SLOT.with(|slot| slot.with(|p| $crate::Resolver::resolve(p, &request, answers)))
                }
            }
            impl $crate::wit::needs::exports::switchyard::plugin::request_needs::Guest for Export {
                fn request_headers() -> Vec<String> {
                    SLOT.with(|slot| slot.with(|p| $crate::Resolver::request_headers(p)))
                }
            }
    $crate::wit::resolver::export!(Export with_types_in $crate::wit::resolver);
    $crate::wit::needs::export!(Export with_types_in $crate::wit::needs);
        };
    };
}
