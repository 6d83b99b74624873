//! The Wasm balancer adapter: a `balancer-plugin` component as a [`Strategy`].

use std::fmt::Write as _;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use http::HeaderName;
use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Engine, Store, StoreLimitsBuilder};

use super::bindings::balancer::exports::switchyard::plugin::balancer::Requirements;
use super::bindings::balancer::switchyard::plugin::types::{
    Endpoint as WitEndpoint, EndpointStats as WitStats, PluginError, RequestInfo,
};
use super::bindings::balancer::{BalancerPlugin, BalancerPluginPre};
use super::bindings::{BALANCER_EXPORT, PluginState};
use super::wasi::{self, Captured};
use super::{Fault, Limits, LoadError, PluginHost, PluginStats};
use crate::balance::{Endpoint, EndpointId, RANK_LIMIT, Ranking, RequestContext, Strategy};

/// A Wasm balancer plugin serving one pool.
///
/// One instance per pool; calls are serialized by a mutex that is held only
/// for the synchronous call (never across an await). Per-call buffers
/// (request facts, candidate stats) are reused between calls.
pub struct WasmStrategy {
    name: String,
    plugin: Arc<str>,
    engine: Engine,
    pre: BalancerPluginPre<PluginState>,
    config_json: String,
    limits: Limits,
    endpoints: Vec<WitEndpoint>,
    request_headers: Vec<HeaderName>,
    observe: bool,
    stats: Arc<PluginStats>,
    live: Mutex<Option<Live>>,
}

struct Live {
    store: Store<PluginState>,
    bindings: BalancerPlugin,
    request: RequestInfo,
    candidates: Vec<WitStats>,
}

impl WasmStrategy {
    /// Loads the component at `path` for a pool of `endpoints`: compiles it,
    /// checks that it exports `switchyard:plugin/balancer@0.1.0`, links it in
    /// the sandbox, instantiates it and calls `configure(config_json)` and
    /// `update`.
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
    ) -> Result<Self, LoadError> {
        let engine = host.engine().clone();
        let component = host.compile(path)?;
        check_world(path, &host.exports_of(&component))?;
        let rejected = |reason: String| LoadError::Rejected {
            path: path.to_path_buf(),
            reason,
        };
        let mut linker = Linker::new(&engine);
        BalancerPlugin::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
            .and_then(|()| wasi::add_to_linker(&mut linker, &component))
            .map_err(|e| rejected(format!("cannot link: {e:#}")))?;
        let pre = linker
            .instantiate_pre(&component)
            .and_then(BalancerPluginPre::new)
            .map_err(|e| LoadError::WrongWorld {
                path: path.to_path_buf(),
                reason: format!("does not match the balancer world: {e:#}"),
            })?;
        let plugin: Arc<str> = path
            .file_name()
            .map_or_else(
                || path.display().to_string(),
                |f| f.to_string_lossy().into_owned(),
            )
            .into();
        let mut strategy = Self {
            name: format!("plugin {plugin}"),
            plugin,
            engine,
            pre,
            config_json,
            limits,
            endpoints: endpoints.iter().map(|e| wit_endpoint(e)).collect(),
            request_headers: Vec::new(),
            observe: true,
            stats: Arc::new(PluginStats::default()),
            live: Mutex::new(None),
        };
        let (live, requirements) = strategy
            .instantiate()
            .map_err(|e| rejected(e.to_string()))?;
        strategy.observe = requirements.observe;
        strategy.request_headers = requirements
            .request_headers
            .iter()
            .map(|h| {
                HeaderName::try_from(h.as_str())
                    .map_err(|_| rejected(format!("asked for an invalid header name `{h}`")))
            })
            .collect::<Result<_, _>>()?;
        *strategy
            .live
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner) = Some(live);
        Ok(strategy)
    }

    /// The plugin's call and fault counters.
    pub fn stats(&self) -> Arc<PluginStats> {
        Arc::clone(&self.stats)
    }

    /// A fresh instance, configured and told the endpoint set.
    fn instantiate(&self) -> Result<(Live, Requirements), Fault> {
        let state = PluginState {
            name: Arc::clone(&self.plugin),
            limits: StoreLimitsBuilder::new()
                .memory_size(self.limits.memory_limit_bytes)
                .trap_on_grow_failure(true)
                .build(),
            captured: Captured::default(),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        store.epoch_deadline_trap();
        let call_error = |e: wasmtime::Error| self.fault(&e);
        store.set_epoch_deadline(self.limits.call_deadline_ms);
        let bindings = self.pre.instantiate(&mut store).map_err(call_error)?;
        let exports = bindings.switchyard_plugin_balancer();
        store.set_epoch_deadline(self.limits.call_deadline_ms);
        let requirements = exports
            .call_configure(&mut store, &self.config_json)
            .map_err(call_error)?
            .map_err(|e| Fault::Refused(format!("configure: {}", describe(&e))))?;
        store.set_epoch_deadline(self.limits.call_deadline_ms);
        exports
            .call_update(&mut store, 1, &self.endpoints)
            .map_err(call_error)?;
        let live = Live {
            store,
            bindings,
            request: RequestInfo {
                method: String::new(),
                authority: String::new(),
                path: String::new(),
                headers: Vec::new(),
                client_addr: String::new(),
            },
            candidates: Vec::with_capacity(self.endpoints.len()),
        };
        Ok((live, requirements))
    }

    fn fault(&self, err: &wasmtime::Error) -> Fault {
        Fault::from_call(
            err,
            self.limits.call_deadline_ms,
            self.limits.memory_limit_bytes,
        )
    }

    /// Counts and logs `fault`; the caller falls back.
    fn report(&self, fault: Fault) -> Fault {
        let faults = self.stats.count_fault();
        tracing::warn!(
            plugin = &*self.plugin,
            faults,
            reason = %fault,
            "plugin fault; the fallback strategy serves this request"
        );
        fault
    }

    /// Runs `call` on the live instance, building one first if the last
    /// faulted. On a trap the instance is discarded.
    fn with_live<R>(&self, call: impl FnOnce(&mut Live) -> Result<R, Fault>) -> Result<R, Fault> {
        let mut guard = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        if guard.is_none() {
            let (live, _) = self
                .instantiate()
                .map_err(|f| Fault::Reinstantiate(f.to_string()))?;
            *guard = Some(live);
        }
        let Some(live) = guard.as_mut() else {
            return Err(Fault::Reinstantiate("no instance".into()));
        };
        self.stats.count_call();
        live.store.set_epoch_deadline(self.limits.call_deadline_ms);
        let result = call(live);
        if matches!(
            result,
            Err(Fault::Trap(_) | Fault::Deadline { .. } | Fault::Memory { .. })
        ) {
            *guard = None;
        }
        result
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
        let pool_size = endpoints.len();
        self.with_live(|live| {
            fill_request(&mut live.request, request, &self.request_headers);
            live.candidates.clear();
            live.candidates.extend(endpoints.iter().map(|e| {
                let s = e.stats();
                WitStats {
                    id: e.id,
                    in_flight: s.in_flight,
                    ewma_latency_us: s.ewma_latency_us,
                    success_rate: s.success_rate,
                    load: s.load,
                }
            }));
            let ids = live
                .bindings
                .switchyard_plugin_balancer()
                .call_pick(
                    &mut live.store,
                    &live.request,
                    &live.candidates,
                    RANK_LIMIT as u32,
                )
                .map_err(|e| self.fault(&e))?
                .map_err(|e| Fault::Refused(describe(&e)))?;
            if ids.is_empty() {
                return Err(Fault::Nonsense("empty ranking".into()));
            }
            if let Some(bad) = ids.iter().find(|id| **id as usize >= pool_size) {
                return Err(Fault::Nonsense(format!(
                    "unknown endpoint id {bad} (pool has {pool_size})"
                )));
            }
            out.extend(ids.into_iter().take(RANK_LIMIT));
            Ok(())
        })
        .map_err(|fault| self.report(fault))
    }

    fn observe(&self, id: EndpointId, success: bool, latency_us: u64) {
        if !self.observe {
            return;
        }
        let result = self.with_live(|live| {
            live.bindings
                .switchyard_plugin_balancer()
                .call_observe(&mut live.store, id, success, latency_us)
                .map_err(|e| self.fault(&e))
        });
        if let Err(fault) = result {
            self.report(fault);
        }
    }
}

fn check_world(path: &Path, exports: &[String]) -> Result<(), LoadError> {
    if exports.iter().any(|e| e == BALANCER_EXPORT) {
        return Ok(());
    }
    let family = BALANCER_EXPORT.split('@').next().unwrap_or(BALANCER_EXPORT);
    let reason = match exports.iter().find(|e| e.starts_with(family)) {
        Some(other) => format!(
            "exports `{other}`, a version this host does not support (supported: `{BALANCER_EXPORT}`)"
        ),
        None => format!(
            "is not a balancer plugin: it does not export `{BALANCER_EXPORT}` (it exports: {})",
            if exports.is_empty() {
                "nothing".to_string()
            } else {
                exports.join(", ")
            }
        ),
    };
    Err(LoadError::WrongWorld {
        path: path.to_path_buf(),
        reason,
    })
}

fn wit_endpoint(e: &Endpoint) -> WitEndpoint {
    WitEndpoint {
        id: e.id,
        address: e.url.clone(),
        weight: e.weight,
        labels: e.labels.clone(),
    }
}

/// Copies the request facts into the reused `info`, keeping its buffers.
fn fill_request(info: &mut RequestInfo, request: &RequestContext<'_>, wanted: &[HeaderName]) {
    info.method.clear();
    info.method.push_str(request.method.as_str());
    info.authority.clear();
    info.authority.push_str(request.authority);
    info.path.clear();
    info.path.push_str(request.path);
    info.client_addr.clear();
    let _ = write!(info.client_addr, "{}", request.client_addr);
    info.headers.clear();
    for name in wanted {
        for value in request.headers.get_all(name) {
            info.headers.push((
                name.as_str().to_string(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            ));
        }
    }
}

fn describe(e: &PluginError) -> String {
    match e {
        PluginError::InvalidConfig(why) => format!("invalid config: {why}"),
        PluginError::NoCandidates => "no candidates".to_string(),
        PluginError::Internal(why) => format!("internal error: {why}"),
    }
}
