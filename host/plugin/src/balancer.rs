//! The Wasm balancer adapter: a `balancer-plugin` component as a [`Strategy`].

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use http::HeaderName;
use wasmtime::component::HasSelf;

use super::adapter::header_names;
use super::bindings::PluginState;
use super::bindings::balancer::exports::switchyard::plugin::balancer::Requirements;
use super::bindings::balancer::switchyard::plugin::types::{
    Endpoint as WitEndpoint, EndpointStats as WitStats, PluginError, RequestInfo,
};
use super::bindings::balancer::{BalancerPlugin, BalancerPluginPre};
use super::health::wit_endpoint;
use super::request::fill_request;
use super::sandbox::{Live, Sandbox, link};
use super::{Fault, Limits, LoadError, PluginHost, PluginKind, PluginStats};
use switchyard_engines::balance::{
    Endpoint, EndpointId, RANK_LIMIT, Ranking, RequestContext, Strategy, spread,
};

/// A Wasm balancer plugin serving one pool.
///
/// One instance per worker thread ([`PluginKind::per_worker`]), kept
/// across membership changes (each is told them with `update`, versions
/// increasing from 1); a worker's calls go to its own instance, whose lock
/// is held only for the synchronous call (never across an await). Per-call
/// buffers (request facts, candidate stats) are reused between calls.
pub struct WasmStrategy {
    name: String,
    sandbox: Sandbox<Bound>,
    pre: BalancerPluginPre<PluginState>,
    config_json: String,
    /// The membership version and the endpoint set last given to `update`
    /// (a rebuilt instance is told them again).
    membership: Mutex<(u64, Vec<WitEndpoint>)>,
    request_headers: Vec<HeaderName>,
    observe: bool,
    /// Most candidates one `pick` receives (a sample beyond).
    max_candidates: usize,
}

/// The live bindings and the per-call buffers reused between calls.
struct Bound {
    bindings: BalancerPlugin,
    /// The membership version this instance was last told.
    version: u64,
    request: RequestInfo,
    candidates: Vec<WitStats>,
}

impl WasmStrategy {
    /// Loads the component at `path` for a pool of `endpoints`: compiles it,
    /// checks that it exports `switchyard:plugin/balancer@0.1.3`, links it in
    /// the sandbox, instantiates it and calls `configure(config_json)` and
    /// `update`. A `pick` receives at most `max_candidates` candidates: a
    /// fresh sample (`spread`) when more are fit.
    ///
    /// # Errors
    /// [`LoadError`] naming the file and the reason: unreadable, not a
    /// component, wrong world or version, or refused by its own `configure`.
    pub fn load(
        host: &PluginHost,
        path: &Path,
        config_json: String,
        limits: Limits,
        endpoints: &[Arc<Endpoint>],
        max_candidates: usize,
    ) -> Result<Self, LoadError> {
        let (pre, component) = link(
            host,
            path,
            PluginKind::Balancer.export(),
            PluginKind::Balancer.name(),
            &limits,
            |linker| BalancerPlugin::add_to_linker::<_, HasSelf<_>>(linker, |s| s),
            BalancerPluginPre::new,
        )?;
        let rejected = |reason: String| LoadError::Rejected {
            path: path.to_path_buf(),
            reason,
        };
        let sandbox = Sandbox::new(host, PluginKind::Balancer, path, limits, component);
        // The set-up calls below run under their deadline: keep the ticker ticking.
        let _calling = host.calling();
        let mut strategy = Self {
            name: format!("plugin {}", sandbox.plugin()),
            sandbox,
            pre,
            config_json,
            membership: Mutex::new((1, endpoints.iter().map(|e| wit_endpoint(e)).collect())),
            request_headers: Vec::new(),
            observe: true,
            max_candidates,
        };
        let (live, requirements) = strategy
            .instantiate()
            .map_err(|e| rejected(e.to_string()))?;
        strategy.observe = requirements.observe;
        strategy.request_headers = header_names(&requirements.request_headers).map_err(rejected)?;
        strategy.sandbox.install(live);
        Ok(strategy)
    }

    /// The plugin's call and fault counters.
    pub fn stats(&self) -> Arc<PluginStats> {
        self.sandbox.stats()
    }

    /// A fresh instance, configured and told the endpoint set.
    fn instantiate(&self) -> Result<(Live<Bound>, Requirements), Fault> {
        let mut store = self.sandbox.store();
        let bindings = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| self.sandbox.fault_in(&mut store, &e))?;
        let exports = bindings.switchyard_plugin_balancer();
        self.sandbox.arm_setup(&mut store);
        let requirements = exports
            .call_configure(&mut store, &self.config_json)
            .map_err(|e| self.sandbox.fault_in(&mut store, &e))?
            .map_err(|e| Fault::Refused(format!("configure: {}", describe(&e))))?;
        self.sandbox.arm_setup(&mut store);
        let (version, pool_size) = {
            let membership = self
                .membership
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            exports
                .call_update(&mut store, membership.0, &membership.1)
                .map_err(|e| self.sandbox.fault_in(&mut store, &e))?;
            (membership.0, membership.1.len())
        };
        let inner = Bound {
            bindings,
            version,
            request: super::request::empty(),
            candidates: Vec::with_capacity(pool_size.min(self.max_candidates)),
        };
        Ok((Live { store, inner }, requirements))
    }

    /// Runs the decision `call` on the live instance (see [`Sandbox::call`]).
    fn call<R>(&self, call: impl FnOnce(&mut Live<Bound>) -> Result<R, Fault>) -> Result<R, Fault> {
        self.sandbox
            .call(|| self.instantiate().map(|(live, _)| live), call)
    }
}

impl Strategy for WasmStrategy {
    fn name(&self) -> &str {
        &self.name
    }

    fn rank(
        &self,
        request: &RequestContext<'_>,
        endpoints: &[Arc<Endpoint>],
        out: &mut Ranking,
    ) -> Result<(), Fault> {
        self.call(|live| {
            let bound = &mut live.inner;
            fill_request(&mut bound.request, request, &self.request_headers);
            bound.candidates.clear();
            bound
                .candidates
                .extend(spread(endpoints.len(), self.max_candidates).map(|i| {
                    let e = &endpoints[i];
                    let s = e.stats();
                    WitStats {
                        id: e.id,
                        in_flight: s.in_flight,
                        ewma_latency_us: s.ewma_latency_us,
                        success_rate: s.success_rate,
                        load: s.load,
                    }
                }));
            let ids = bound
                .bindings
                .switchyard_plugin_balancer()
                .call_pick(
                    &mut live.store,
                    &bound.request,
                    &bound.candidates,
                    RANK_LIMIT as u32,
                )
                .map_err(|e| self.sandbox.fault(&e))?
                .map_err(|e| Fault::Refused(describe(&e)))?;
            if ids.is_empty() {
                return Err(Fault::Nonsense("empty ranking".into()));
            }
            if let Some(bad) = ids
                .iter()
                .find(|id| !bound.candidates.iter().any(|c| c.id == **id))
            {
                return Err(Fault::Nonsense(format!(
                    "unknown endpoint id {bad} (not one of the {} candidates)",
                    bound.candidates.len()
                )));
            }
            out.extend(ids.into_iter().take(RANK_LIMIT));
            Ok(())
        })
    }

    fn update(&self, endpoints: &[Arc<Endpoint>]) {
        let (version, list) = {
            let mut membership = self
                .membership
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            membership.0 += 1;
            membership.1 = endpoints.iter().map(|e| wit_endpoint(e)).collect();
            (membership.0, membership.1.clone())
        };
        // Every live instance (one per worker) is told. A fault is counted
        // and logged by the sandbox; an instance that was not told is
        // dropped, and its next call builds one told the new membership.
        // An instance built since the change was told it when built.
        self.sandbox.broadcast(|live| {
            if live.inner.version >= version {
                return Ok(());
            }
            live.inner
                .bindings
                .switchyard_plugin_balancer()
                .call_update(&mut live.store, version, &list)
                .map_err(|e| self.sandbox.fault(&e))?;
            live.inner.version = version;
            Ok(())
        });
    }

    fn observe(&self, id: EndpointId, success: bool, latency_us: u64) {
        if !self.observe {
            return;
        }
        // A fault is counted and logged by the sandbox; nothing to fall back to.
        let _ = self.sandbox.feedback(
            || self.instantiate().map(|(live, _)| live),
            |live| {
                live.inner
                    .bindings
                    .switchyard_plugin_balancer()
                    .call_observe(&mut live.store, id, success, latency_us)
                    .map_err(|e| self.sandbox.fault(&e))
            },
        );
    }
}

fn describe(e: &PluginError) -> String {
    match e {
        PluginError::InvalidConfig(why) => format!("invalid config: {why}"),
        PluginError::NoCandidates => "no candidates".to_string(),
        PluginError::Internal(why) => format!("internal error: {why}"),
    }
}
