//! What every plugin kind shares: loading with a world check, a sandboxed
//! store, live instances (one per worker thread for the data-path kinds)
//! rebuilt after a trap, and fault accounting.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use wasmtime::component::{Component, InstancePre, Linker};
use wasmtime::{Store, StoreLimitsBuilder};

use super::bindings::{Limiter, PluginState};
use super::deadline::{CpuDeadline, thread_cpu_time};
use super::output::Captured;
use super::wasi;
use super::{Fault, Limits, LoadError, PluginHost, PluginKind, PluginStats};
use switchyard_net::threads::thread_index;

/// CPU deadline of the set-up calls (instantiation, `configure`, `update`),
/// ms: generous, since `update` carries the whole endpoint set and set-up
/// happens at load or after a fault, never per request.
pub const SETUP_DEADLINE_MS: u64 = 1_000;

/// A live instance: its store and the world's bindings plus per-kind buffers.
pub struct Live<L> {
    /// The instance's store.
    pub store: Store<PluginState>,
    /// The world bindings and whatever the adapter keeps with them.
    pub inner: L,
}

/// An instance slot: empty until its first call, or after a trap.
type Slot<L> = Mutex<Option<Live<L>>>;

/// One plugin's instance slots and counters.
pub struct Sandbox<L> {
    host: PluginHost,
    plugin: Arc<str>,
    limits: Limits,
    stats: Arc<PluginStats>,
    /// One slot per worker thread for a data-path kind, one for the others
    /// ([`PluginKind::per_worker`]): a worker's slot lock is never contended
    /// by other workers while serving.
    slots: Box<[Slot<L>]>,
    quarantine: Mutex<Quarantine>,
    /// Whether `quarantine` is quarantined or probing: a call looks at it
    /// (and takes its lock, shared by every worker) only then.
    guarded: AtomicBool,
    /// The plugin's key-value store, when granted.
    kv: Option<Arc<super::kv::KvStore>>,
    /// The compiled code, shared with other loads of the same file while
    /// this one lives ([`PluginHost::compile`]).
    _component: Arc<Component>,
    /// Keeps the epoch ticker running while the plugin is loaded.
    _ticker: super::TickerLease,
}

/// Recent faults and the quarantine they led to (see
/// [`QuarantineConfig`](switchyard_config::QuarantineConfig)).
#[derive(Debug, Default)]
struct Quarantine {
    /// Times of the faults within the window, oldest first.
    recent: std::collections::VecDeque<Instant>,
    /// Quarantined until then.
    until: Option<Instant>,
    /// Quarantines since the last success (the backoff doubles with each).
    trips: u32,
    /// The next call is the first after a quarantine.
    probing: bool,
}

impl Quarantine {
    /// Whether a call must consult the quarantine: quarantined or probing.
    fn guarding(&self) -> bool {
        self.until.is_some() || self.probing
    }

    /// `Some(remaining)` while quarantined; when the time is up, the next
    /// decision call (`decides`) is the probe. Feedback calls (a balancer's
    /// `observe`) wait until a probe has succeeded: a plugin that faults in
    /// `pick` must not be trusted again because `observe` works.
    fn blocked(&mut self, now: Instant, decides: bool) -> Option<Duration> {
        match self.until {
            Some(until) if now < until => Some(until - now),
            Some(_) if decides => {
                self.until = None;
                self.probing = true;
                None
            }
            Some(_) => Some(Duration::ZERO),
            None if self.probing && !decides => Some(Duration::ZERO),
            None => None,
        }
    }

    /// Records a fault at `now`; returns the quarantine it starts, if any.
    fn fault(
        &mut self,
        now: Instant,
        policy: &switchyard_config::QuarantineConfig,
    ) -> Option<Duration> {
        if policy.faults == 0 {
            return None;
        }
        let window = Duration::from_millis(policy.window_ms);
        self.recent.push_back(now);
        while self
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > window)
        {
            self.recent.pop_front();
        }
        if !self.probing && self.recent.len() < policy.faults as usize {
            return None;
        }
        let backoff = Duration::from_millis(
            policy
                .backoff_ms
                .saturating_mul(1 << self.trips.min(20))
                .min(policy.max_backoff_ms),
        );
        self.trips += 1;
        self.probing = false;
        self.recent.clear();
        self.until = Some(now + backoff);
        Some(backoff)
    }

    /// Records a success: a probe that succeeds ends the doubling.
    fn success(&mut self) {
        if self.probing {
            self.probing = false;
            self.trips = 0;
        }
    }
}

/// The slot of the calling thread among `n`: by [`thread_index`], so
/// while serving, when the only callers are the runtime's worker threads
/// (numbered consecutively by their first call), each worker has its own
/// slot when `n` is the worker count. Any other thread shares a slot
/// (correct, through its lock, just not contention-free).
fn slot_of_this_thread(n: usize) -> usize {
    if n == 1 { 0 } else { thread_index() % n }
}

impl<L> Sandbox<L> {
    /// A sandbox for the plugin at `path` (named by its file name) of
    /// `kind`, with an instance slot per worker thread when the kind runs
    /// on the data path.
    pub fn new(
        host: &PluginHost,
        kind: PluginKind,
        path: &Path,
        limits: Limits,
        component: Arc<Component>,
    ) -> Self {
        let slots = if kind.per_worker() { host.workers } else { 1 };
        let plugin: Arc<str> = path
            .file_name()
            .map_or_else(
                || path.display().to_string(),
                |f| f.to_string_lossy().into_owned(),
            )
            .into();
        Self {
            host: host.clone(),
            plugin,
            limits,
            stats: Arc::new(PluginStats::default()),
            slots: (0..slots).map(|_| Mutex::new(None)).collect(),
            quarantine: Mutex::new(Quarantine::default()),
            guarded: AtomicBool::new(false),
            kv: limits.grants.kv.then(|| host.kv.of(path)),
            _component: component,
            _ticker: host.ticker_lease(),
        }
    }

    /// The plugin's name (its file name).
    pub fn plugin(&self) -> &Arc<str> {
        &self.plugin
    }

    /// The plugin's counters.
    pub fn stats(&self) -> Arc<PluginStats> {
        Arc::clone(&self.stats)
    }

    /// A fresh store: memory capped, epoch deadline armed to trap (with the
    /// set-up deadline; [`arm`](Self::arm) sets the per-call one).
    pub fn store(&self) -> Store<PluginState> {
        let state = PluginState {
            name: Arc::clone(&self.plugin),
            limits: Limiter::new(
                StoreLimitsBuilder::new()
                    .memory_size(self.limits.memory_limit_bytes)
                    .trap_on_grow_failure(true)
                    .build(),
            ),
            captured: Captured::default(),
            stats: Arc::clone(&self.stats),
            kv: self.kv.clone(),
            deadline: CpuDeadline::default(),
        };
        let mut store = Store::new(self.host.engine(), state);
        store.limiter(|s| &mut s.limits);
        store.epoch_deadline_callback(|mut store| {
            Ok(store.data_mut().deadline.on_expiry(thread_cpu_time()))
        });
        self.arm_setup(&mut store);
        store
    }

    /// Arms the set-up deadline (before `configure` or `update`); set-up
    /// has no fuel budget.
    pub fn arm_setup(&self, store: &mut Store<PluginState>) {
        let ticks = SETUP_DEADLINE_MS.max(self.limits.call_deadline_ms);
        let state = store.data_mut();
        state.captured.start_call();
        state.deadline = CpuDeadline::new(ticks);
        store.set_epoch_deadline(ticks);
        if self.host.fuel {
            refuel(store, u64::MAX);
        }
    }

    /// Re-arms the call deadline and the fuel budget of `store` (before
    /// every call).
    pub fn arm(&self, store: &mut Store<PluginState>) {
        let ticks = self.limits.call_deadline_ms;
        let state = store.data_mut();
        state.captured.start_call();
        state.deadline = CpuDeadline::new(ticks);
        store.set_epoch_deadline(ticks);
        if self.host.fuel {
            refuel(store, self.limits.fuel_per_call.unwrap_or(u64::MAX));
        }
    }

    /// `fault` of a call in `store`, explained: a memory-cap fault when the
    /// store's limiter denied a memory grow during the call (the flag is
    /// taken); a trap with what the call last wrote to stderr (a panic's
    /// message).
    pub fn explain(&self, store: &mut Store<PluginState>, fault: Fault) -> Fault {
        let state = store.data_mut();
        if std::mem::take(&mut state.limits.memory_denied) {
            return Fault::Memory {
                limit_mib: (self.limits.memory_limit_bytes >> 20) as u64,
            };
        }
        match fault {
            Fault::Trap(trap) => {
                let said = state.captured.recent_stderr();
                Fault::Trap(if said.is_empty() {
                    trap
                } else {
                    format!("{trap}; its stderr: {said}")
                })
            }
            other => other,
        }
    }

    /// Maps a wasmtime call error to a fault.
    pub fn fault(&self, err: &wasmtime::Error) -> Fault {
        super::error::fault_from_call(err, &self.limits)
    }

    /// Maps the wasmtime error of a call in `store` to an explained fault
    /// (see [`explain`](Self::explain)).
    pub fn fault_in(&self, store: &mut Store<PluginState>, err: &wasmtime::Error) -> Fault {
        let fault = self.fault(err);
        self.explain(store, fault)
    }

    /// A fresh live instance of a plugin whose set-up is one `configure`
    /// call, and what `configure` answered (`()` for the kinds whose
    /// `configure` answers nothing): `instantiate` builds the world's
    /// bindings in a new store, then `configure` runs under the set-up
    /// deadline. An error value from `configure` is a [`Fault::Refused`].
    pub fn instantiate<S, E: std::fmt::Debug>(
        &self,
        instantiate: impl FnOnce(&mut Store<PluginState>) -> wasmtime::Result<L>,
        configure: impl FnOnce(&L, &mut Store<PluginState>) -> wasmtime::Result<Result<S, E>>,
    ) -> Result<(Live<L>, S), Fault> {
        let mut store = self.store();
        let inner = instantiate(&mut store).map_err(|e| self.fault_in(&mut store, &e))?;
        self.arm_setup(&mut store);
        let setup = configure(&inner, &mut store)
            .map_err(|e| self.fault_in(&mut store, &e))?
            .map_err(|e| Fault::Refused(format!("configure: {e:?}")))?;
        Ok((Live { store, inner }, setup))
    }

    /// Installs `live` (the instance built at load) in the first slot; the
    /// others are built on their first call.
    pub fn install(&self, live: Live<L>) {
        self.fill(&mut lock(&self.slots[0]), live);
    }

    /// Puts `live` in `slot`, counting it.
    fn fill(&self, slot: &mut Option<Live<L>>, live: Live<L>) {
        if slot.replace(live).is_none() {
            self.stats.instance_built();
        }
    }

    /// Empties `slot`, counting the instance dropped.
    fn empty(&self, slot: &mut Option<Live<L>>) {
        if slot.take().is_some() {
            self.stats.instance_dropped();
        }
    }

    /// Runs the feedback `call` on every live instance (a state change all
    /// must know, such as a balancer's `update`); an instance the call
    /// fails on, or that is skipped while quarantined, is dropped, so that
    /// its slot builds one that knows on its next call. Empty slots are
    /// left empty.
    pub fn broadcast(&self, call: impl Fn(&mut Live<L>) -> Result<(), Fault>) {
        for slot in &self.slots {
            let mut live = lock(slot);
            if live.is_some() {
                let no_instance = || Err(Fault::Reinstantiate("no instance".into()));
                if self.run_in(&mut live, false, no_instance, &call).is_err() {
                    self.empty(&mut live);
                }
            }
        }
    }

    /// Runs the decision `call` on the live instance, first building one
    /// with `instantiate` if the last one faulted. A trap discards the
    /// instance; every fault is counted and logged (the caller falls back).
    pub fn call<R>(
        &self,
        instantiate: impl FnOnce() -> Result<Live<L>, Fault>,
        call: impl FnOnce(&mut Live<L>) -> Result<R, Fault>,
    ) -> Result<R, Fault> {
        self.run(true, instantiate, call)
    }

    /// As [`call`](Self::call), for a feedback call (no decision): skipped
    /// while quarantined and until a decision call has probed the plugin
    /// successfully, and its success does not end a quarantine.
    pub fn feedback<R>(
        &self,
        instantiate: impl FnOnce() -> Result<Live<L>, Fault>,
        call: impl FnOnce(&mut Live<L>) -> Result<R, Fault>,
    ) -> Result<R, Fault> {
        self.run(false, instantiate, call)
    }

    fn run<R>(
        &self,
        decides: bool,
        instantiate: impl FnOnce() -> Result<Live<L>, Fault>,
        call: impl FnOnce(&mut Live<L>) -> Result<R, Fault>,
    ) -> Result<R, Fault> {
        let slot = &self.slots[slot_of_this_thread(self.slots.len())];
        self.run_in(&mut lock(slot), decides, instantiate, call)
    }

    /// [`run`](Self::run) on the instance in `slot` (locked by the caller).
    fn run_in<R>(
        &self,
        slot: &mut Option<Live<L>>,
        decides: bool,
        instantiate: impl FnOnce() -> Result<Live<L>, Fault>,
        call: impl FnOnce(&mut Live<L>) -> Result<R, Fault>,
    ) -> Result<R, Fault> {
        let _calling = self.host.calling();
        if self.guarded.load(Ordering::Acquire) {
            let mut quarantine = self
                .quarantine
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let blocked = quarantine.blocked(Instant::now(), decides);
            self.guarded.store(quarantine.guarding(), Ordering::Release);
            if let Some(remaining) = blocked {
                return Err(Fault::Quarantined {
                    remaining_ms: remaining.as_millis() as u64,
                });
            }
            self.stats.set_quarantined(false);
        }
        let result = {
            if slot.is_none() {
                let live = instantiate().map_err(|f| Fault::Reinstantiate(f.to_string()))?;
                self.fill(slot, live);
            }
            match slot.as_mut() {
                Some(live) => {
                    self.arm(&mut live.store);
                    let started = std::time::Instant::now();
                    let result = call(live).map_err(|fault| self.explain(&mut live.store, fault));
                    self.stats.count_call(started.elapsed());
                    if matches!(
                        result,
                        Err(Fault::Trap(_)
                            | Fault::Deadline { .. }
                            | Fault::Fuel { .. }
                            | Fault::Memory { .. })
                    ) {
                        self.empty(slot);
                    }
                    result
                }
                None => Err(Fault::Reinstantiate("no instance".into())),
            }
        };
        if result.is_ok() && decides && self.guarded.load(Ordering::Acquire) {
            let mut quarantine = self
                .quarantine
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            quarantine.success();
            self.guarded.store(quarantine.guarding(), Ordering::Release);
        }
        result.map_err(|fault| {
            let faults = self.stats.count_fault();
            let quarantined = {
                let mut quarantine = self
                    .quarantine
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                let started = quarantine.fault(Instant::now(), &self.limits.quarantine);
                self.guarded.store(quarantine.guarding(), Ordering::Release);
                started
            };
            if let Some(backoff) = quarantined {
                self.stats.set_quarantined(true);
                tracing::error!(
                    plugin = &*self.plugin,
                    faults,
                    backoff_ms = backoff.as_millis() as u64,
                    "plugin quarantined: the built-in makes its decisions until the backoff ends"
                );
                self.host
                    .publish_quarantine(self.stats.serving(), &self.plugin, backoff, faults);
            }
            tracing::warn!(
                plugin = &*self.plugin,
                faults,
                reason = %fault,
                "plugin fault; the built-in fallback serves this decision"
            );
            self.host
                .publish_fault(self.stats.serving(), &self.plugin, faults, &fault);
            fault
        })
    }
}

/// Locks `slot`; a poisoned lock (a panic while held) is taken as is.
fn lock<L>(slot: &Slot<L>) -> std::sync::MutexGuard<'_, Option<Live<L>>> {
    slot.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Sets the fuel of `store` (an engine that meters fuel; see
/// [`PluginHost::with_options`]).
fn refuel(store: &mut Store<PluginState>, fuel: u64) {
    if let Err(e) = store.set_fuel(fuel) {
        tracing::error!("cannot set plugin fuel: {e}");
    }
}

/// Compiles, checks and links a plugin of one world: the component at `path`
/// must export `export` (`kind` names it in messages); `add_world` links the
/// world's imports (the `host` interface), the WASI subset is linked after
/// it, and `make_pre` type-checks the exports.
///
/// # Errors
/// [`LoadError`] naming the file and what is wrong.
pub fn link<P>(
    host: &PluginHost,
    path: &Path,
    export: &str,
    kind: &str,
    limits: &Limits,
    add_world: impl FnOnce(&mut Linker<PluginState>) -> wasmtime::Result<()>,
    make_pre: impl FnOnce(InstancePre<PluginState>) -> wasmtime::Result<P>,
) -> Result<(P, Arc<Component>), LoadError> {
    if limits.fuel_per_call.is_some() && !host.fuel {
        return Err(LoadError::Rejected {
            path: path.to_path_buf(),
            reason: "`fuel_per_call` needs fuel metering: set `plugin_fuel = true` at the top \
                     of the config (read at start)"
                .into(),
        });
    }
    let component = compile_checked(host, path, export, kind)?;
    let mut linker = Linker::new(host.engine());
    add_world(&mut linker)
        .and_then(|()| wasi::add_to_linker(&mut linker, &component, limits.grants))
        .map_err(|e| LoadError::Rejected {
            path: path.to_path_buf(),
            reason: format!("cannot link: {e:#}"),
        })?;
    linker
        .instantiate_pre(&component)
        .and_then(make_pre)
        .map(|pre| (pre, component))
        .map_err(|e| LoadError::WrongWorld {
            path: path.to_path_buf(),
            reason: format!("does not match the {kind} world: {e:#}"),
        })
}

/// Compiles the component at `path` and checks that it exports `export`
/// (e.g. `switchyard:plugin/balancer@0.1.3`); `kind` names it in messages.
///
/// # Errors
/// [`LoadError`]: unreadable, not a component, or not exporting `export`
/// (naming what it exports instead, or the unsupported version it has).
pub fn compile_checked(
    host: &PluginHost,
    path: &Path,
    export: &str,
    kind: &str,
) -> Result<Arc<Component>, LoadError> {
    let component = host.compile(path)?;
    let exports = host.exports_of(&component);
    if exports.iter().any(|e| super::implements(e, export)) {
        return Ok(component);
    }
    let family = export.split('@').next().unwrap_or(export);
    let reason = match exports.iter().find(|e| e.starts_with(family)) {
        Some(other) => format!(
            "exports `{other}`, a version this host does not support (supported: `{export}`)"
        ),
        None => format!(
            "is not a {kind} plugin: it does not export `{export}` (it exports: {})",
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

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_config::QuarantineConfig;

    const POLICY: QuarantineConfig = QuarantineConfig {
        faults: 3,
        window_ms: 1_000,
        backoff_ms: 100,
        max_backoff_ms: 250,
    };

    #[test]
    fn faults_within_the_window_quarantine_and_the_backoff_doubles_to_its_cap() {
        let mut q = Quarantine::default();
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        assert_eq!(q.fault(ms(0), &POLICY), None);
        // An old fault leaves the window.
        assert_eq!(q.fault(ms(1_500), &POLICY), None);
        assert_eq!(q.fault(ms(1_600), &POLICY), None);
        assert_eq!(
            q.fault(ms(1_700), &POLICY),
            Some(Duration::from_millis(100))
        );
        assert!(q.blocked(ms(1_750), true).is_some());
        // After the backoff, feedback waits for a decision call to probe.
        assert!(q.blocked(ms(1_800), false).is_some());
        // Time up: one probe; its fault quarantines at once, for twice as long.
        assert_eq!(q.blocked(ms(1_800), true), None);
        assert_eq!(
            q.fault(ms(1_801), &POLICY),
            Some(Duration::from_millis(200))
        );
        assert_eq!(q.blocked(ms(2_001), true), None);
        assert_eq!(
            q.fault(ms(2_002), &POLICY),
            Some(Duration::from_millis(250)),
            "capped"
        );
        // A successful probe ends the doubling.
        assert_eq!(q.blocked(ms(2_300), true), None);
        q.success();
        for n in 0..2 {
            assert_eq!(q.fault(ms(2_400 + n), &POLICY), None);
        }
        assert_eq!(
            q.fault(ms(2_500), &POLICY),
            Some(Duration::from_millis(100))
        );
    }

    #[test]
    fn zero_faults_means_never() {
        let mut q = Quarantine::default();
        let policy = QuarantineConfig {
            faults: 0,
            ..POLICY
        };
        for _ in 0..100 {
            assert_eq!(q.fault(Instant::now(), &policy), None);
        }
    }
}
