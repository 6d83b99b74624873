//! Health: which instances are fit to take requests.
//!
//! Three sources mark an instance, as flags on its [`Endpoint`]:
//!
//! - **active checks** ([`active`]): a probe per instance every
//!   `interval_ms` (+ jitter); `fall` failed probes in a row mark it
//!   unhealthy, `rise` passed probes in a row mark it healthy again (HAProxy's
//!   `rise`/`fall`). Instances start healthy, so a pool serves from its first
//!   second; a new instance is checked from its first interval on.
//! - **passive outlier detection** ([`outlier`], Envoy's outlier detection):
//!   consecutive gateway errors, consecutive 5xx, or a success rate far below
//!   the pool's eject an instance for base × ejections (capped); it returns
//!   at the first detection interval after that time.
//! - **panic threshold** ([`PoolHealth`]): when fewer than
//!   `panic_threshold_percent` of a pool's instances are fit, health is
//!   ignored and every instance takes traffic — overloading the few left would
//!   turn a partial outage into a total one (Envoy's panic mode, default 50%).
//!
//! - **trends** ([`trend`]): latency and error-rate slopes per instance
//!   classify it improving / stable / degrading and predict when it would
//!   become unfit; a degrading instance can be given less traffic.
//!
//! Every transition becomes a [`HealthEvent`] on the [`EventBus`]
//! ([`crate::events`]): logged with a severity and published to
//! subscribers (the REST API streams them).

pub mod active;
pub mod check;
pub mod grpc;
pub mod mcp;
pub mod outlier;
pub mod trend;

pub use check::{HealthCheck, HttpCheck};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use crate::balance::Endpoint;
use crate::events::{EventBus, EventKind, HealthEvent, Severity};

/// A pool's health bookkeeping: how many instances are unfit, and panic mode.
pub struct PoolHealth {
    pool: String,
    size: AtomicUsize,
    unfit: AtomicUsize,
    panic_threshold: f64,
    in_panic: AtomicBool,
    panics: AtomicU64,
    events: Arc<EventBus>,
}

impl PoolHealth {
    /// Bookkeeping for pool `pool` of `size` instances; `panic_threshold_percent`
    /// 0 means never panic.
    pub fn new(
        pool: &str,
        size: usize,
        panic_threshold_percent: u32,
        events: Arc<EventBus>,
    ) -> Self {
        Self {
            pool: pool.to_string(),
            size: AtomicUsize::new(size),
            unfit: AtomicUsize::new(0),
            panic_threshold: f64::from(panic_threshold_percent) / 100.0,
            in_panic: AtomicBool::new(false),
            panics: AtomicU64::new(0),
            events,
        }
    }

    /// Whether the data path filters on health (false in panic mode).
    pub fn respect_health(&self) -> bool {
        !self.in_panic.load(Ordering::Relaxed)
    }

    /// Whether the pool is in panic mode.
    pub fn in_panic(&self) -> bool {
        self.in_panic.load(Ordering::Relaxed)
    }

    /// Times the pool entered panic mode.
    pub fn panics(&self) -> u64 {
        self.panics.load(Ordering::Relaxed)
    }

    /// Instances currently unfit.
    pub fn unfit(&self) -> usize {
        self.unfit.load(Ordering::Relaxed)
    }

    /// The event bus the pool publishes on.
    pub fn events(&self) -> &Arc<EventBus> {
        &self.events
    }

    /// The pool's name.
    pub fn pool(&self) -> &str {
        &self.pool
    }

    /// Takes the pool's new membership: its size, and the unfit count
    /// recounted from the members' flags (a kept instance keeps its flags;
    /// a new one starts fit); panic mode follows.
    pub fn resize(&self, members: &[Arc<Endpoint>]) {
        self.size.store(members.len(), Ordering::Relaxed);
        let unfit = members.iter().filter(|e| !e.is_fit()).count();
        self.unfit.store(unfit, Ordering::Relaxed);
        self.update_panic();
    }

    /// Publishes an event about `endpoint` of this pool.
    pub fn publish(
        &self,
        endpoint: &Endpoint,
        kind: EventKind,
        severity: Severity,
        message: String,
    ) {
        self.events.publish(HealthEvent::new(
            &self.pool,
            Some(&endpoint.url),
            kind,
            severity,
            message,
        ));
    }

    /// Sets or clears `flag` on `endpoint`, keeping the unfit count and panic
    /// mode current. Returns whether fitness changed. A retired instance's
    /// flags change without counting (it is no longer one of the pool's).
    pub fn set_flag(&self, endpoint: &Endpoint, flag: u8, on: bool) -> bool {
        let (was_fit, is_fit) = endpoint.set_health_flag(flag, on);
        if endpoint.is_retired() {
            return false;
        }
        if was_fit && !is_fit {
            self.unfit.fetch_add(1, Ordering::Relaxed);
        } else if !was_fit && is_fit {
            self.unfit.fetch_sub(1, Ordering::Relaxed);
        }
        if was_fit != is_fit {
            self.update_panic();
        }
        was_fit != is_fit
    }

    fn update_panic(&self) {
        let size = self.size.load(Ordering::Relaxed);
        if size == 0 {
            return;
        }
        let fit_share = (size - self.unfit().min(size)) as f64 / size as f64;
        let panic = fit_share < self.panic_threshold;
        if self.in_panic.swap(panic, Ordering::Relaxed) != panic {
            if panic {
                self.panics.fetch_add(1, Ordering::Relaxed);
            }
            let (kind, severity, message) = if panic {
                (
                    EventKind::PanicOn,
                    Severity::Critical,
                    format!(
                        "panic mode: only {:.0}% of instances fit (threshold {:.0}%); routing over all",
                        fit_share * 100.0,
                        self.panic_threshold * 100.0
                    ),
                )
            } else {
                (
                    EventKind::PanicOff,
                    Severity::Info,
                    format!(
                        "panic mode over: {:.0}% of instances fit",
                        fit_share * 100.0
                    ),
                )
            };
            self.events
                .publish(HealthEvent::new(&self.pool, None, kind, severity, message));
        }
    }
}
