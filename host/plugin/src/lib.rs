//! Plugin hosting: every line of wasmtime code in Switchyard lives here.
//!
//! A plugin is a WebAssembly **component** exporting one of the worlds of the
//! `switchyard:plugin@0.1.3` WIT package (`wit/`), one world per
//! [`PluginKind`]. This module compiles it, checks the world, sandboxes it
//! and adapts it to its engine's Rust trait: [`WasmStrategy`] is a
//! [`Strategy`](switchyard_engines::balance::Strategy), [`WasmHealthCheck`] a
//! [`HealthCheck`](switchyard_engines::health::HealthCheck), [`WasmFailover`] a
//! [`FailoverPolicy`](switchyard_engines::failover::FailoverPolicy); [`WasmResolver`]
//! fuses a fan-out's answers. The health-check, failover and resolver
//! adapters wrap the one generic adapter (`adapter::WasmPlugin`) and only
//! convert types; the request context is converted to WIT in one place.
//!
//! ## Sandbox
//! - **Capabilities**: the only import a plugin gets is the `host` interface
//!   (`log`), plus the two pieces of WASI a Rust guest's standard library
//!   cannot do without ([`wasi`]): stdout/stderr, captured line by line into
//!   the host's log tagged with the plugin's name, and the `HashMap` seed.
//!   Clocks, random numbers and a key-value store only when the plugin's
//!   config grants them ([`Grants`]); every other import (files, sockets,
//!   environment) is linked to a stub that traps when called, naming the
//!   capability that would grant it where there is one.
//! - **CPU**: every call runs under an epoch deadline. A ticker thread bumps
//!   the engine's epoch every [`EPOCH_TICK`] while a plugin call is in
//!   progress (it looks every [`IDLE_TICK`] while none is, and sleeps while
//!   no plugin is loaded). A call still running after `call_deadline_ms`
//!   ticks is checked against its thread's CPU clock ([`deadline`]): it
//!   traps with `Trap::Interrupt` once it has kept its core busy for half
//!   of a further window of that length, so a spinning call is stopped by
//!   about twice its deadline and a call the OS preempted is not blamed.
//! - **Fuel** (optional): with `fuel_per_call`, a call traps once it has
//!   burnt that much fuel (about one unit per wasm instruction): a
//!   deterministic CPU limit, the same on every machine, unlike the deadline.
//! - **Memory**: each instance's linear memory is capped (`memory_limit_mib`);
//!   a growth past it traps.
//!
//! ## Faults
//! A trap, an exceeded deadline or memory cap, or a nonsense answer is a
//! [`Fault`]: the caller uses its built-in fallback for that decision, counts
//! the fault in [`PluginStats`] and logs the plugin and the reason. A trapped
//! instance is dead (wasmtime refuses to re-enter it), so the next call first
//! builds a fresh instance from the pre-linked component and replays
//! `configure` and `update`. Expected failures the plugin reports itself are
//! WIT `result` values, not faults.

mod adapter;
mod balancer;
mod bindings;
pub mod deadline;
mod error;
mod failover;
mod filter;
mod health;
mod kv;
pub mod output;
mod request;
mod resolver;
mod sandbox;
pub mod testing;
pub mod tools;
pub mod wasi;

pub use balancer::WasmStrategy;
pub use error::{Fault, LoadError};
pub use failover::WasmFailover;
pub use filter::{
    FilterMcpCall, FilterRequest, FilterVerdict, HeaderChanges, MadeResponse, McpRefusal,
    McpVerdict, WasmFilter,
};
pub use health::WasmHealthCheck;
pub use resolver::WasmResolver;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use sha2::Digest as _;
use wasmtime::component::Component;
use wasmtime::{Config, Engine};

/// Largest plugin file the host reads, bytes (64 MiB): a plugin decides,
/// it does not carry data; a larger file is refused before it is read.
pub const MAX_PLUGIN_BYTES: usize = 64 << 20;

/// Interval of the epoch ticker while a plugin call is in progress; one
/// tick is one unit of `call_deadline_ms`.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// How long the epoch ticker sleeps when it finds no plugin call in
/// progress (a call that starts meanwhile is ticked from the next wake, so
/// a deadline holds to within this much). A 1 ms wake on a core that is
/// busy serving cost ~10% of its requests (BENCHMARKS.md); calls take
/// microseconds, so the ticker mostly finds none.
pub const IDLE_TICK: Duration = Duration::from_millis(10);

/// Stripes of the calls-in-progress count (threads map onto them by
/// [`thread_index`](switchyard_net::threads::thread_index)), each on its own cache line: workers never write
/// the same line.
const CALL_STRIPES: usize = 64;

/// One stripe of the calls-in-progress count, alone on its cache line.
#[derive(Debug, Default)]
#[repr(align(128))]
struct CallStripe(AtomicUsize);

/// Marks a plugin call (or a load, whose set-up calls run under the
/// set-up deadline) in progress while it lives, so that the epoch ticker
/// ticks every [`EPOCH_TICK`] until it ends.
pub(crate) struct Calling<'a>(&'a AtomicUsize);

impl Drop for Calling<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The wasmtime engine shared by every plugin, plus its epoch ticker thread.
///
/// Create one per process; dropping the last clone stops the ticker.
#[derive(Clone)]
pub struct PluginHost {
    engine: Engine,
    /// The compiled-plugin cache, when enabled (shares its counters with
    /// the engine's).
    cache: Option<wasmtime::Cache>,
    /// Compiled components by SHA-256 of their bytes, while a loaded plugin
    /// holds them: pools loading the same file share one copy of its code.
    compiled: Arc<Mutex<HashMap<[u8; 32], Weak<Component>>>>,
    /// The `kv` stores of the plugins granted one.
    kv: Arc<kv::KvStores>,
    /// Whether calls meter fuel (`plugin_fuel`).
    fuel: bool,
    ticker: Arc<Ticker>,
    /// Where plugin faults are published as events, once a control plane
    /// has set it.
    events: Arc<std::sync::OnceLock<Arc<switchyard_engines::events::EventBus>>>,
    /// Worker threads of the runtime serving requests: the instances a
    /// data-path plugin may have (see [`PluginKind::per_worker`]).
    workers: usize,
}

/// The epoch ticker's switch: it ticks only while some plugin holds a
/// [`TickerLease`] (a loaded plugin), so a Switchyard without plugins has
/// no thread waking a thousand times a second.
#[derive(Debug, Default)]
struct TickerState {
    /// Plugins loaded.
    leases: usize,
    /// The host is gone: the thread ends.
    stopped: bool,
}

/// The ticker thread's state, shared with the host and the leases.
#[derive(Debug)]
struct TickerControl {
    state: Mutex<TickerState>,
    wake: std::sync::Condvar,
    /// Ticks made since start.
    ticks: AtomicU64,
    /// Calls in progress, striped by thread.
    calls: Box<[CallStripe]>,
}

impl Default for TickerControl {
    fn default() -> Self {
        Self {
            state: Mutex::default(),
            wake: std::sync::Condvar::new(),
            ticks: AtomicU64::new(0),
            calls: (0..CALL_STRIPES).map(|_| CallStripe::default()).collect(),
        }
    }
}

impl TickerControl {
    fn lock(&self) -> std::sync::MutexGuard<'_, TickerState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether some plugin call is in progress.
    fn calling(&self) -> bool {
        self.calls.iter().any(|c| c.0.load(Ordering::Relaxed) > 0)
    }

    /// While leased, until stopped: ticks every [`EPOCH_TICK`] while a call
    /// is in progress, and looks again after [`IDLE_TICK`] when none is
    /// (the epoch only matters to a call in progress: its deadline is set
    /// relative to the epoch when it starts).
    fn run(&self, engine: &Engine) {
        loop {
            {
                let mut state = self.lock();
                while state.leases == 0 && !state.stopped {
                    state = self
                        .wake
                        .wait(state)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                if state.stopped {
                    return;
                }
            }
            if self.calling() {
                engine.increment_epoch();
                self.ticks.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(EPOCH_TICK);
            } else {
                std::thread::sleep(IDLE_TICK);
            }
        }
    }
}

/// Stops the ticker thread when the last clone of the host goes.
struct Ticker(Arc<TickerControl>);

impl Drop for Ticker {
    fn drop(&mut self) {
        self.0.lock().stopped = true;
        self.0.wake.notify_all();
    }
}

/// Keeps the epoch ticker running while a plugin is loaded (held by its
/// sandbox).
#[derive(Debug)]
pub struct TickerLease(Arc<TickerControl>);

impl Drop for TickerLease {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.leases -= 1;
    }
}

impl PluginHost {
    /// Builds the engine (Cranelift, epoch interruption on), without a
    /// compiled-plugin cache, and starts the epoch ticker thread.
    ///
    /// # Errors
    /// When wasmtime rejects the engine configuration or the thread cannot start.
    pub fn new() -> anyhow::Result<Self> {
        Self::with_options(None, false)
    }

    /// The host `config` asks for: its compile cache and fuel metering.
    ///
    /// # Errors
    /// As [`with_options`](Self::with_options).
    pub fn for_config(config: &switchyard_config::Config) -> anyhow::Result<Self> {
        let mut host = Self::with_options(
            config.plugin_cache.directory().as_deref(),
            config.plugin_fuel,
        )?;
        if let Some(workers) = config.runtime.worker_threads {
            host.workers = workers.max(1);
        }
        Ok(host)
    }

    /// As [`new`](Self::new), caching compiled components in `cache_dir`
    /// (created `0700` if missing; see
    /// [`plugin_cache`](switchyard_config::Config::plugin_cache)) and, with
    /// `fuel`, metering fuel in every call so that plugins may have a
    /// `fuel_per_call` budget (it costs 12–25% per call, BENCHMARKS.md).
    ///
    /// # Errors
    /// As `new`, or when the cache directory cannot be created.
    pub fn with_options(cache_dir: Option<&Path>, fuel: bool) -> anyhow::Result<Self> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        config.consume_fuel(fuel);
        if let Some(dir) = cache_dir {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| anyhow::anyhow!("plugin cache `{}`: {e}", dir.display()))?;
        }
        let cache = cache_dir
            .map(|dir| {
                let mut cache = wasmtime::CacheConfig::new();
                cache.with_directory(dir);
                wasmtime::Cache::new(cache)
                    .map_err(|e| anyhow::anyhow!("plugin cache `{}`: {e}", dir.display()))
            })
            .transpose()?;
        config.cache(cache.clone());
        let engine = Engine::new(&config).map_err(|e| anyhow::anyhow!("wasmtime engine: {e}"))?;
        let control = Arc::new(TickerControl::default());
        let (ticker_engine, ticker_control) = (engine.clone(), Arc::clone(&control));
        std::thread::Builder::new()
            .name("switchyard-epoch".into())
            .spawn(move || ticker_control.run(&ticker_engine))?;
        Ok(Self {
            engine,
            cache,
            compiled: Arc::default(),
            kv: Arc::default(),
            fuel,
            ticker: Arc::new(Ticker(control)),
            events: Arc::default(),
            workers: std::thread::available_parallelism().map_or(1, usize::from),
        })
    }

    /// Keeps the epoch ticker running until the lease is dropped (a
    /// plugin's sandbox holds one while the plugin is loaded).
    pub fn ticker_lease(&self) -> TickerLease {
        let control = &self.ticker.0;
        control.lock().leases += 1;
        control.wake.notify_all();
        TickerLease(Arc::clone(control))
    }

    /// Marks a plugin call in progress on this thread until the guard is
    /// dropped (see [`Calling`]).
    pub(crate) fn calling(&self) -> Calling<'_> {
        let stripe = &self.ticker.0.calls[switchyard_net::threads::thread_index() % CALL_STRIPES].0;
        stripe.fetch_add(1, Ordering::Relaxed);
        Calling(stripe)
    }

    /// Epoch ticks made since the host started (only while a plugin call
    /// is in progress).
    pub fn ticks(&self) -> u64 {
        self.ticker.0.ticks.load(Ordering::Relaxed)
    }

    /// Publishes plugin faults on `events` from now on (the first bus set stays).
    pub fn publish_faults_to(&self, events: &Arc<switchyard_engines::events::EventBus>) {
        let _ = self.events.set(Arc::clone(events));
    }

    /// A `plugin_quarantined` event.
    pub(crate) fn publish_quarantine(
        &self,
        serving: &str,
        plugin: &str,
        backoff: Duration,
        faults: u64,
    ) {
        if let Some(events) = self.events.get() {
            events.publish(switchyard_engines::events::HealthEvent::new(
                serving,
                Some(plugin),
                switchyard_engines::events::EventKind::PluginQuarantined,
                switchyard_engines::events::Severity::Critical,
                format!(
                    "plugin {plugin} quarantined for {} ms after {faults} faults; the built-in decides",
                    backoff.as_millis()
                ),
            ));
        }
    }

    /// A `plugin_fault` event (rate-limited per plugin by the bus's cooldown).
    pub(crate) fn publish_fault(&self, serving: &str, plugin: &str, faults: u64, fault: &Fault) {
        if let Some(events) = self.events.get() {
            events.publish(switchyard_engines::events::HealthEvent::new(
                serving,
                Some(plugin),
                switchyard_engines::events::EventKind::PluginFault,
                switchyard_engines::events::Severity::Warning,
                format!("plugin {plugin} faulted ({faults} so far): {fault}; the built-in served"),
            ));
        }
    }

    /// The engine, for compiling components.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Reads and compiles the component at `path` (Cranelift, ~40 ms for a
    /// small plugin; milliseconds from the compile cache). A file whose
    /// bytes match a component some loaded plugin still holds shares it.
    ///
    /// # Errors
    /// [`LoadError::Read`] or [`LoadError::NotAComponent`] (over
    /// [`MAX_PLUGIN_BYTES`], or not a component — with a hint when the file
    /// is a core module).
    pub fn compile(&self, path: &Path) -> Result<Arc<Component>, LoadError> {
        let read_error = |error| LoadError::Read {
            path: path.to_path_buf(),
            error,
        };
        let size = std::fs::metadata(path).map_err(read_error)?.len();
        if size > MAX_PLUGIN_BYTES as u64 {
            return Err(LoadError::NotAComponent {
                path: path.to_path_buf(),
                reason: format!(
                    "{size} bytes is over the {} MiB a plugin may have",
                    MAX_PLUGIN_BYTES >> 20
                ),
            });
        }
        let bytes = std::fs::read(path).map_err(read_error)?;
        let digest: [u8; 32] = sha2::Sha256::digest(&bytes).into();
        let shared = self
            .compiled
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&digest)
            .and_then(Weak::upgrade);
        if let Some(component) = shared {
            return Ok(component);
        }
        let started = std::time::Instant::now();
        let hits = self.cache.as_ref().map(wasmtime::Cache::cache_hits);
        let compiled = Component::from_binary(&self.engine, &bytes);
        if compiled.is_ok() {
            let from_cache = self.cache.as_ref().map(wasmtime::Cache::cache_hits) > hits;
            tracing::info!(
                plugin = %path.display(),
                ms = started.elapsed().as_millis() as u64,
                "{}",
                if from_cache {
                    "plugin loaded from the compile cache"
                } else {
                    "plugin compiled"
                }
            );
        }
        let component = Arc::new(compiled.map_err(|e| {
            let reason = if !bytes.starts_with(b"\0asm") {
                "not a WebAssembly file (no `\\0asm` magic bytes)".to_string()
            } else if bytes.get(4..8) == Some(b"\x01\0\0\0".as_slice()) {
                "it is a core WebAssembly module; build plugins for `wasm32-wasip2` \
                 (which emits a component) with switchyard-sdk"
                    .to_string()
            } else {
                e.root_cause().to_string()
            };
            LoadError::NotAComponent {
                path: path.to_path_buf(),
                reason,
            }
        })?);
        let mut compiled = self.compiled.lock().unwrap_or_else(PoisonError::into_inner);
        compiled.retain(|_, held| held.strong_count() > 0);
        compiled.insert(digest, Arc::downgrade(&component));
        Ok(component)
    }

    /// The names the component at `path` exports, e.g.
    /// `["switchyard:plugin/balancer@0.1.3"]`: which plugin kind it is.
    ///
    /// # Errors
    /// As [`compile`](Self::compile).
    pub fn exports(&self, path: &Path) -> Result<Vec<String>, LoadError> {
        Ok(self.exports_of(&*self.compile(path)?))
    }

    pub(crate) fn exports_of(&self, component: &Component) -> Vec<String> {
        component
            .component_type()
            .exports(&self.engine)
            .map(|(name, _)| name.to_string())
            .collect()
    }
}

/// The five kinds of plugin, one per engine and WIT world.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PluginKind {
    /// `balancer-plugin`: ranks a pool's instances ([`WasmStrategy`]).
    Balancer,
    /// `health-check-plugin`: a probe and its verdict ([`WasmHealthCheck`]).
    HealthCheck,
    /// `failover-plugin`: what follows a failed attempt ([`WasmFailover`]).
    Failover,
    /// `resolver-plugin`: fuses a fan-out's answers ([`WasmResolver`]).
    Resolver,
    /// `filter-plugin` (since WIT 0.1.3): a step of a route's filter
    /// chain ([`WasmFilter`]).
    Filter,
}

impl PluginKind {
    /// Whether a plugin of this kind has an instance per worker thread (up
    /// to the runtime's worker count, each built on its worker's first
    /// call), so that workers never wait on each other's calls — as each
    /// nginx worker and each Envoy worker thread has its own balancer
    /// state. True for the kinds called on the data path (balancer,
    /// failover, resolver, filter): their state (an accumulator, a cursor, what
    /// `observe` taught) is per worker. A health check has one instance:
    /// its probes run off the data path and see one state.
    pub fn per_worker(self) -> bool {
        !matches!(self, PluginKind::HealthCheck)
    }

    /// Every kind.
    pub const ALL: [PluginKind; 5] = [
        PluginKind::Balancer,
        PluginKind::HealthCheck,
        PluginKind::Failover,
        PluginKind::Resolver,
        PluginKind::Filter,
    ];

    /// The kind's name, as the admin API, the metrics and `switchyard
    /// plugin` say it: `balancer`, `health-check`, `failover`, `resolver`,
    /// `filter`.
    pub fn name(self) -> &'static str {
        match self {
            PluginKind::Balancer => "balancer",
            PluginKind::HealthCheck => "health-check",
            PluginKind::Failover => "failover",
            PluginKind::Resolver => "resolver",
            PluginKind::Filter => "filter",
        }
    }

    /// The interface a plugin of this kind must export, at the version this
    /// host speaks, e.g. `switchyard:plugin/balancer@0.1.3`.
    pub fn export(self) -> &'static str {
        match self {
            PluginKind::Balancer => bindings::BALANCER_EXPORT,
            PluginKind::HealthCheck => bindings::HEALTH_CHECK_EXPORT,
            PluginKind::Failover => bindings::FAILOVER_EXPORT,
            PluginKind::Resolver => bindings::RESOLVER_EXPORT,
            PluginKind::Filter => bindings::FILTER_EXPORT,
        }
    }
}

impl std::fmt::Display for PluginKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The kind whose interface one of `exports` implements (see
/// [`implements`]), if any.
pub(crate) fn kind_in(exports: &[String]) -> Option<PluginKind> {
    PluginKind::ALL
        .into_iter()
        .find(|kind| exports.iter().any(|e| implements(e, kind.export())))
}

/// Lower-case hex SHA-256 of `bytes`: how plugin files are named in
/// reports (`switchyard plugin inspect`, the admin API).
pub fn sha256_hex(bytes: &[u8]) -> String {
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl PluginHost {
    /// The kind of the component at `path`.
    ///
    /// # Errors
    /// [`LoadError`]: unreadable, not a component, or exporting none of the
    /// plugin interfaces this host supports (naming what it exports).
    pub fn kind_of(&self, path: &Path) -> Result<PluginKind, LoadError> {
        let exports = self.exports(path)?;
        kind_in(&exports).ok_or_else(|| LoadError::WrongWorld {
            path: path.to_path_buf(),
            reason: format!(
                "is not a Switchyard plugin: it exports none of {} (it exports: {})",
                PluginKind::ALL.map(PluginKind::export).join(", "),
                if exports.is_empty() {
                    "nothing".to_string()
                } else {
                    exports.join(", ")
                }
            ),
        })
    }
}

/// Whether the exported interface name `exported` (e.g.
/// `switchyard:plugin/balancer@0.1.0`) is one this host can call as
/// `supported` (e.g. `switchyard:plugin/balancer@0.1.3`): the same
/// interface at a semver-compatible version — the same major version, or
/// before 1.0 the same minor one (`0.0.x` only exactly). This is the rule
/// wasmtime applies when it links imports and finds exports, and the one
/// `wit/README.md` promises plugin authors.
pub(crate) fn implements(exported: &str, supported: &str) -> bool {
    fn split(name: &str) -> Option<(&str, [u64; 3])> {
        let (interface, version) = name.split_once('@')?;
        let mut parts = version.split('.').map(str::parse::<u64>);
        let mut next = || parts.next().and_then(Result::ok);
        Some((interface, [next()?, next()?, next()?]))
    }
    match (split(exported), split(supported)) {
        (Some((a, [a0, a1, a2])), Some((b, [b0, b1, b2]))) if a == b => match (b0, b1) {
            (0, 0) => (a0, a1, a2) == (b0, b1, b2),
            (0, _) => (a0, a1) == (b0, b1),
            _ => a0 == b0,
        },
        _ => exported == supported,
    }
}

/// Sandbox limits of one plugin instance.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// CPU deadline of one call, in epoch ticks (ms).
    pub call_deadline_ms: u64,
    /// Linear-memory cap, bytes.
    pub memory_limit_bytes: usize,
    /// When repeated faults set the plugin aside.
    pub quarantine: switchyard_config::QuarantineConfig,
    /// Fuel (≈ wasm instructions) one call may burn; `None`: unlimited,
    /// the epoch deadline alone bounds the call.
    pub fuel_per_call: Option<u64>,
    /// The capabilities granted beyond the `host` interface.
    pub grants: Grants,
}

impl Limits {
    /// The limits `plugin`'s config sets (validated at load).
    pub fn of(plugin: &switchyard_config::PluginRef) -> Self {
        Self {
            call_deadline_ms: plugin.call_deadline_ms,
            memory_limit_bytes: (plugin.memory_limit_mib as usize) << 20,
            quarantine: plugin.quarantine,
            fuel_per_call: plugin.fuel_per_call,
            grants: Grants::from(plugin.capabilities.as_slice()),
        }
    }
}

/// What a plugin may use beyond the `host` interface (deny by default;
/// [`Capability`](switchyard_config::Capability) documents each).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Grants {
    /// Monotonic and wall clocks.
    pub clock: bool,
    /// Random numbers.
    pub random: bool,
    /// A key-value store that outlives instances.
    pub kv: bool,
}

impl From<&[switchyard_config::Capability]> for Grants {
    fn from(capabilities: &[switchyard_config::Capability]) -> Self {
        use switchyard_config::Capability;
        Self {
            clock: capabilities.contains(&Capability::Clock),
            random: capabilities.contains(&Capability::Random),
            kv: capabilities.contains(&Capability::Kv),
        }
    }
}

/// Counters of one loaded plugin; shared with whoever reports on it.
#[derive(Debug, Default)]
pub struct PluginStats {
    calls: AtomicU64,
    faults: AtomicU64,
    call_nanos: AtomicU64,
    quarantines: AtomicU64,
    quarantined: AtomicBool,
    instances: AtomicUsize,
    output: output::OutputStats,
    /// The pool or route the plugin serves, for its events (set once).
    serving: std::sync::OnceLock<String>,
}

impl PluginStats {
    /// Its output rate and what was dropped ([`output`]).
    pub fn output(&self) -> &output::OutputStats {
        &self.output
    }

    /// Names the pool (or route) the plugin serves, for its fault and
    /// quarantine events; the first name given stays.
    pub fn serve(&self, name: impl Into<String>) {
        let _ = self.serving.set(name.into());
    }

    /// The pool (or route) the plugin serves; empty before [`serve`](Self::serve).
    pub fn serving(&self) -> &str {
        self.serving.get().map_or("", String::as_str)
    }

    /// Calls made into the plugin (every exported function counts).
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Faults: traps, deadline or memory overruns and nonsense answers.
    pub fn faults(&self) -> u64 {
        self.faults.load(Ordering::Relaxed)
    }

    /// Times the plugin was quarantined.
    pub fn quarantines(&self) -> u64 {
        self.quarantines.load(Ordering::Relaxed)
    }

    /// Live instances: up to one per worker thread for a data-path kind
    /// ([`PluginKind::per_worker`]), each built on its worker's first call.
    pub fn instances(&self) -> usize {
        self.instances.load(Ordering::Relaxed)
    }

    /// Counts an instance built.
    fn instance_built(&self) {
        self.instances.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an instance dropped.
    fn instance_dropped(&self) {
        self.instances.fetch_sub(1, Ordering::Relaxed);
    }

    /// Whether the plugin is quarantined now (the built-in decides).
    pub fn quarantined(&self) -> bool {
        self.quarantined.load(Ordering::Relaxed)
    }

    pub(crate) fn set_quarantined(&self, on: bool) {
        if on && !self.quarantined.swap(true, Ordering::Relaxed) {
            self.quarantines.fetch_add(1, Ordering::Relaxed);
        } else if !on {
            self.quarantined.store(false, Ordering::Relaxed);
        }
    }

    /// Time spent in calls, seconds (with [`calls`](Self::calls): the mean latency).
    pub fn call_seconds(&self) -> f64 {
        self.call_nanos.load(Ordering::Relaxed) as f64 / 1e9
    }

    fn count_call(&self, took: Duration) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.call_nanos
            .fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
    }

    /// Counts a fault and returns the new total.
    pub(crate) fn count_fault(&self) -> u64 {
        self.faults.fetch_add(1, Ordering::Relaxed) + 1
    }
}

#[cfg(test)]
mod tests {
    use super::{PluginHost, implements};

    /// Polls `done` every 10 ms for up to 10 s.
    fn eventually(mut done: impl FnMut() -> bool) -> bool {
        (0..1000).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(10));
            done()
        })
    }

    /// Waits until the ticks stop changing between two polls.
    fn ticks_settle(host: &PluginHost) -> bool {
        let mut last = host.ticks();
        eventually(|| {
            let now = host.ticks();
            let still = now == last;
            last = now;
            still
        })
    }

    #[test]
    fn the_epoch_ticker_ticks_only_while_a_plugin_holds_a_lease_and_a_call_runs() {
        let host = PluginHost::new().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(host.ticks(), 0, "no plugin: no ticks");
        let lease = host.ticker_lease();
        let calling = host.calling();
        assert!(
            eventually(|| host.ticks() > 3),
            "a call in progress is ticked"
        );
        drop(calling);
        assert!(ticks_settle(&host), "no call in progress: no ticks");
        let calling = host.calling();
        assert!(
            eventually(|| host.ticks() > 6),
            "ticks again for a new call"
        );
        drop(lease);
        assert!(ticks_settle(&host), "the last lease gone, the ticks stop");
        drop(calling);
    }

    #[test]
    fn exports_match_on_a_semver_compatible_version() {
        let host = "switchyard:plugin/balancer@0.1.3";
        assert!(implements("switchyard:plugin/balancer@0.1.0", host));
        assert!(implements("switchyard:plugin/balancer@0.1.7", host));
        assert!(!implements("switchyard:plugin/balancer@0.2.0", host));
        assert!(!implements("switchyard:plugin/balancer@0.0.9", host));
        assert!(!implements("switchyard:plugin/resolver@0.1.3", host));
        assert!(!implements("switchyard:plugin/balancer", host));
        assert!(implements("a:b/c@1.4.0", "a:b/c@1.0.2"));
        assert!(!implements("a:b/c@0.0.1", "a:b/c@0.0.2"));
    }
}
