//! The one generic plugin adapter: a component of one world, loaded,
//! configured, sandboxed and called. The world-specific adapters
//! ([`super::WasmHealthCheck`], [`super::WasmFailover`],
//! [`super::WasmResolver`], [`super::WasmFilter`]) wrap a [`WasmPlugin`] and only convert their
//! engine's types to and from WIT; the balancer adapter uses the same
//! pieces ([`link`], [`Sandbox`]) for its richer set-up (requirements and
//! the endpoint set).
//!
//! A world's optional `request-needs` export (WIT 0.1.2) is not part of its
//! generated bindings, so that plugins built against 0.1.0/0.1.1 still
//! match: [`WasmPlugin`] looks it up per component and, when it is there,
//! asks it once at load for the request headers the plugin wants.

use std::path::Path;
use std::sync::Arc;

use http::HeaderName;
use wasmtime::Store;
use wasmtime::component::{HasSelf, Instance, InstancePre, Linker};

use super::bindings::PluginState;
use super::bindings::balancer::switchyard::plugin::types::PluginError;
use super::bindings::failover::{FailoverPlugin, FailoverPluginPre};
use super::bindings::filter::exports::switchyard::plugin::filter::FilterNeeds;
use super::bindings::filter::{FilterPlugin, FilterPluginPre};
use super::bindings::health::{HealthCheckPlugin, HealthCheckPluginPre};
use super::bindings::needs::exports::switchyard::plugin::request_needs::{
    Guest as RequestNeeds, GuestIndices as RequestNeedsIndices,
};
use super::bindings::resolver::{ResolverPlugin, ResolverPluginPre};
use super::sandbox::{Live, Sandbox, link};
use super::{Fault, Limits, LoadError, PluginHost, PluginKind, PluginStats};

/// A plugin world whose set-up is one `configure(config)` call: what the
/// generic adapter needs of its generated bindings.
pub trait World: Sized + Send + 'static {
    /// Which kind of plugin this world is.
    const KIND: PluginKind;
    /// The bindings' type-checked pre-instance.
    type Pre: Send + Sync + 'static;
    /// Links the world's imports.
    ///
    /// # Errors
    /// As wasmtime's linker.
    fn add_to_linker(linker: &mut Linker<PluginState>) -> wasmtime::Result<()>;
    /// Type-checks the component's exports against the world.
    ///
    /// # Errors
    /// The component does not match the world.
    fn pre(pre: InstancePre<PluginState>) -> wasmtime::Result<Self::Pre>;
    /// The linked, type-checked component behind `pre`.
    fn instance_pre(pre: &Self::Pre) -> &InstancePre<PluginState>;
    /// The world's bindings of `instance`.
    ///
    /// # Errors
    /// The instance lacks an export of the world (checked by [`pre`](Self::pre)).
    fn bind(store: &mut Store<PluginState>, instance: &Instance) -> wasmtime::Result<Self>;
    /// What `configure` answers: `()`, or for a filter the
    /// [`FilterNeeds`](super::bindings::filter::exports::switchyard::plugin::filter::FilterNeeds).
    type Setup: Send + Sync + 'static;
    /// Calls the instance's `configure` with `config` (JSON text).
    ///
    /// # Errors
    /// A trap; the plugin's own refusal is the inner `Err`.
    fn configure(
        &self,
        store: &mut Store<PluginState>,
        config: &str,
    ) -> wasmtime::Result<Result<Self::Setup, PluginError>>;
}

/// A fresh instance of world `W`, what its `configure` answered, and its
/// `request-needs` export when it has one.
type Configured<W> = (Live<W>, <W as World>::Setup, Option<RequestNeeds>);

/// A loaded plugin of world `W`, serving one pool or route.
pub struct WasmPlugin<W: World> {
    sandbox: Sandbox<W>,
    pre: W::Pre,
    config_json: String,
    /// The component's `request-needs` export, when it has one.
    needs: Option<RequestNeedsIndices>,
    /// The request headers it asked for (none without `request-needs`).
    request_headers: Vec<HeaderName>,
    /// What its first `configure` answered (a rebuilt instance has the
    /// same config, so the same answer).
    setup: W::Setup,
}

impl<W: World> WasmPlugin<W> {
    /// Loads the component at `path`: compiles it, checks that it exports
    /// `W`'s interface, links it in the sandbox, instantiates it, calls
    /// `configure(config_json)` and, if the component exports
    /// `request-needs`, asks it for the request headers it wants.
    ///
    /// # Errors
    /// [`LoadError`] naming the file and the reason: unreadable, not a
    /// component, wrong world or version, refused by its own `configure`,
    /// or an invalid header name asked for.
    pub fn load(
        host: &PluginHost,
        path: &Path,
        config_json: String,
        limits: Limits,
    ) -> Result<Self, LoadError> {
        let (pre, component) = link(
            host,
            path,
            W::KIND.export(),
            W::KIND.name(),
            &limits,
            W::add_to_linker,
            W::pre,
        )?;
        let needs = RequestNeedsIndices::new(W::instance_pre(&pre)).ok();
        // The set-up calls below run under their deadline: keep the ticker ticking.
        let _calling = host.calling();
        let sandbox = Sandbox::new(host, W::KIND, path, limits, component);
        let rejected = |reason: String| LoadError::Rejected {
            path: path.to_path_buf(),
            reason,
        };
        let (mut live, setup, asked) =
            Self::instantiate_with_needs(&sandbox, &pre, needs.as_ref(), &config_json)
                .map_err(|e| rejected(e.to_string()))?;
        let mut request_headers = Vec::new();
        if let Some(needs) = asked {
            sandbox.arm_setup(&mut live.store);
            let names = needs.call_request_headers(&mut live.store).map_err(|e| {
                let fault = sandbox.fault_in(&mut live.store, &e);
                rejected(format!("request-headers: {fault}"))
            })?;
            request_headers = header_names(&names).map_err(rejected)?;
        }
        sandbox.install(live);
        Ok(Self {
            sandbox,
            pre,
            config_json,
            needs,
            request_headers,
            setup,
        })
    }

    /// What the plugin's `configure` answered.
    pub fn setup(&self) -> &W::Setup {
        &self.setup
    }

    /// The request headers the plugin asked for (lower-case names; empty
    /// when it does not export `request-needs`).
    pub fn request_headers(&self) -> &[HeaderName] {
        &self.request_headers
    }

    /// The plugin's file name, for logs.
    pub fn name(&self) -> &str {
        self.sandbox.plugin()
    }

    /// The plugin's call and fault counters.
    pub fn stats(&self) -> Arc<PluginStats> {
        self.sandbox.stats()
    }

    /// A fresh instance, configured.
    fn instantiate(&self) -> Result<Live<W>, Fault> {
        Self::instantiate_with_needs(
            &self.sandbox,
            &self.pre,
            self.needs.as_ref(),
            &self.config_json,
        )
        .map(|(live, ..)| live)
    }

    /// A fresh instance of `pre` in `sandbox`, configured with
    /// `config_json`, what its `configure` answered, and its
    /// `request-needs` export if the component has one (`indices`).
    fn instantiate_with_needs(
        sandbox: &Sandbox<W>,
        pre: &W::Pre,
        indices: Option<&RequestNeedsIndices>,
        config_json: &str,
    ) -> Result<Configured<W>, Fault> {
        let mut needs = None;
        let (live, setup) = sandbox.instantiate(
            |store| {
                let instance = W::instance_pre(pre).instantiate(&mut *store)?;
                if let Some(indices) = indices {
                    needs = Some(indices.load(&mut *store, &instance)?);
                }
                W::bind(store, &instance)
            },
            |bindings, store| bindings.configure(store, config_json),
        )?;
        Ok((live, setup, needs))
    }

    /// Runs the decision `call` on the live instance (see
    /// [`Sandbox::call`]); it maps a wasmtime error with
    /// [`fault`](Self::fault), and may find the answer nonsense.
    ///
    /// # Errors
    /// A [`Fault`], counted and logged: the caller decides with its built-in.
    pub fn call<R>(
        &self,
        call: impl FnOnce(&W, &mut Store<PluginState>) -> Result<R, Fault>,
    ) -> Result<R, Fault> {
        self.sandbox.call(
            || self.instantiate(),
            |live| call(&live.inner, &mut live.store),
        )
    }

    /// Maps a wasmtime error of a call to a fault.
    pub fn fault(&self, err: &wasmtime::Error) -> Fault {
        self.sandbox.fault(err)
    }
}

/// `names` (header names as a plugin gave them) as header names.
///
/// # Errors
/// The first invalid name, quoted.
pub fn header_names(names: &[String]) -> Result<Vec<HeaderName>, String> {
    names
        .iter()
        .map(|h| {
            HeaderName::try_from(h.as_str())
                .map_err(|_| format!("asked for an invalid header name `{h}`"))
        })
        .collect()
}

/// Implements [`World`] for generated bindings whose exports are reached
/// through `$exports`.
macro_rules! world {
    ($world:ty, $pre:ty, $kind:expr, $exports:ident, $setup:ty) => {
        impl World for $world {
            const KIND: PluginKind = $kind;
            type Pre = $pre;
            fn add_to_linker(linker: &mut Linker<PluginState>) -> wasmtime::Result<()> {
                <$world>::add_to_linker::<_, HasSelf<_>>(linker, |s| s)
            }
            fn pre(pre: InstancePre<PluginState>) -> wasmtime::Result<Self::Pre> {
                <$pre>::new(pre)
            }
            fn instance_pre(pre: &Self::Pre) -> &InstancePre<PluginState> {
                pre.instance_pre()
            }
            fn bind(store: &mut Store<PluginState>, instance: &Instance) -> wasmtime::Result<Self> {
                <$world>::new(store, instance)
            }
            type Setup = $setup;
            fn configure(
                &self,
                store: &mut Store<PluginState>,
                config: &str,
            ) -> wasmtime::Result<Result<$setup, PluginError>> {
                self.$exports().call_configure(store, config)
            }
        }
    };
}

world!(
    HealthCheckPlugin,
    HealthCheckPluginPre<PluginState>,
    PluginKind::HealthCheck,
    switchyard_plugin_health_check,
    ()
);
world!(
    FailoverPlugin,
    FailoverPluginPre<PluginState>,
    PluginKind::Failover,
    switchyard_plugin_failover,
    ()
);
world!(
    ResolverPlugin,
    ResolverPluginPre<PluginState>,
    PluginKind::Resolver,
    switchyard_plugin_resolver,
    ()
);
world!(
    FilterPlugin,
    FilterPluginPre<PluginState>,
    PluginKind::Filter,
    switchyard_plugin_filter,
    FilterNeeds
);
