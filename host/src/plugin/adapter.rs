//! The one generic plugin adapter: a component of one world, loaded,
//! configured, sandboxed and called. The world-specific adapters
//! ([`super::WasmHealthCheck`], [`super::WasmFailover`],
//! [`super::WasmResolver`]) wrap a [`WasmPlugin`] and only convert their
//! engine's types to and from WIT; the balancer adapter uses the same
//! pieces ([`link`], [`Sandbox`]) for its richer set-up (requirements and
//! the endpoint set).

use std::path::Path;
use std::sync::Arc;

use wasmtime::Store;
use wasmtime::component::{HasSelf, InstancePre, Linker};

use super::bindings::PluginState;
use super::bindings::balancer::switchyard::plugin::types::PluginError;
use super::bindings::failover::{FailoverPlugin, FailoverPluginPre};
use super::bindings::health::{HealthCheckPlugin, HealthCheckPluginPre};
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
    /// A new instance in `store`.
    ///
    /// # Errors
    /// Instantiation failed (a trap in a start function, a limit).
    fn instantiate(pre: &Self::Pre, store: &mut Store<PluginState>) -> wasmtime::Result<Self>;
    /// Calls the instance's `configure` with `config` (JSON text).
    ///
    /// # Errors
    /// A trap; the plugin's own refusal is the inner `Err`.
    fn configure(
        &self,
        store: &mut Store<PluginState>,
        config: &str,
    ) -> wasmtime::Result<Result<(), PluginError>>;
}

/// A loaded plugin of world `W`, serving one pool or route.
pub struct WasmPlugin<W: World> {
    sandbox: Sandbox<W>,
    pre: W::Pre,
    config_json: String,
}

impl<W: World> WasmPlugin<W> {
    /// Loads the component at `path`: compiles it, checks that it exports
    /// `W`'s interface, links it in the sandbox, instantiates it and calls
    /// `configure(config_json)`.
    ///
    /// # Errors
    /// [`LoadError`] naming the file and the reason: unreadable, not a
    /// component, wrong world or version, or refused by its own `configure`.
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
        let plugin = Self {
            sandbox: Sandbox::new(host, path, limits, component),
            pre,
            config_json,
        };
        plugin.sandbox.start(path, plugin.instantiate())?;
        Ok(plugin)
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
        self.sandbox.instantiate(
            |store| W::instantiate(&self.pre, store),
            |bindings, store| bindings.configure(store, &self.config_json),
        )
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

/// Implements [`World`] for generated bindings whose exports are reached
/// through `$exports`.
macro_rules! world {
    ($world:ty, $pre:ty, $kind:expr, $exports:ident) => {
        impl World for $world {
            const KIND: PluginKind = $kind;
            type Pre = $pre;
            fn add_to_linker(linker: &mut Linker<PluginState>) -> wasmtime::Result<()> {
                <$world>::add_to_linker::<_, HasSelf<_>>(linker, |s| s)
            }
            fn pre(pre: InstancePre<PluginState>) -> wasmtime::Result<Self::Pre> {
                <$pre>::new(pre)
            }
            fn instantiate(
                pre: &Self::Pre,
                store: &mut Store<PluginState>,
            ) -> wasmtime::Result<Self> {
                pre.instantiate(store)
            }
            fn configure(
                &self,
                store: &mut Store<PluginState>,
                config: &str,
            ) -> wasmtime::Result<Result<(), PluginError>> {
                self.$exports().call_configure(store, config)
            }
        }
    };
}

world!(
    HealthCheckPlugin,
    HealthCheckPluginPre<PluginState>,
    PluginKind::HealthCheck,
    switchyard_plugin_health_check
);
world!(
    FailoverPlugin,
    FailoverPluginPre<PluginState>,
    PluginKind::Failover,
    switchyard_plugin_failover
);
world!(
    ResolverPlugin,
    ResolverPluginPre<PluginState>,
    PluginKind::Resolver,
    switchyard_plugin_resolver
);
