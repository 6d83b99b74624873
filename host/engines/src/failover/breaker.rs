//! Circuit breakers, one per instance.
//!
//! States (Nygard, "Release It!", as resilience4j and Envoy implement them):
//!
//! - **closed**: requests flow; outcomes go into a rolling window of
//!   `window_ms` (ten buckets). The breaker opens when the window holds at
//!   least `min_requests` and the failure share reaches `failure_rate`, or
//!   after `consecutive_failures` failures in a row.
//! - **open**: the instance takes no requests for `open_ms` × 2^(trips − 1),
//!   capped at `max_open_ms`, trips counting opens since the last close.
//! - **half-open**: after the open time, up to `half_open_requests` probe
//!   requests are admitted; `close_after` successes close the breaker, any
//!   failure opens it again (for longer). With active health checks, a
//!   check that passes again — after one failed while the breaker was
//!   open — ends the open time at once ([`Breakers::checked`]): recovery
//!   takes a check interval, not `open_ms`, and real requests still decide.
//!
//! Defaults: failure rate 0.5 and 60 s open, as the original design; 20
//! requests minimum over 10 s; 5 consecutive failures; 3 half-open probes.
//!
//! Admission is a guard value ([`Admission`]): a half-open probe slot taken
//! by [`Breakers::admit`] is given back when its admission is dropped without
//! an outcome (the client went away, a fan-out source was cancelled), so a
//! breaker can never be left half-open with every slot gone. Asking whether
//! an instance would be admitted ([`Breakers::would_admit`], the admin API's
//! pick) takes no slot at all.

use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;

use crate::balance::{ById, Endpoint};
use switchyard_config::BreakerConfig;

/// A breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BreakerState {
    /// Requests flow.
    Closed,
    /// No requests until the open time passes.
    Open,
    /// A few probe requests decide.
    HalfOpen,
}

const BUCKETS: usize = 10;

/// One instance's breaker.
#[derive(Debug)]
pub struct CircuitBreaker {
    state: BreakerState,
    /// (bucket start ms, requests, failures)
    buckets: [(u64, u32, u32); BUCKETS],
    consecutive: u32,
    trips: u32,
    open_until_ms: u64,
    half_open_admitted: u32,
    half_open_successes: u32,
    /// Times the breaker went half-open: a probe slot given back belongs to
    /// the half-open period that handed it out.
    generation: u64,
    /// An active health check failed since the breaker opened.
    check_failed: bool,
}

/// A state change, for events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The new state.
    pub to: BreakerState,
    /// Why.
    pub reason: String,
}

impl Default for CircuitBreaker {
    fn default() -> Self {
        Self {
            state: BreakerState::Closed,
            buckets: [(0, 0, 0); BUCKETS],
            consecutive: 0,
            trips: 0,
            open_until_ms: 0,
            half_open_admitted: 0,
            half_open_successes: 0,
            generation: 0,
            check_failed: false,
        }
    }
}

/// What [`CircuitBreaker::allow`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Refused: open, or every half-open probe slot is taken.
    Refused,
    /// Admitted while closed: nothing to give back.
    Closed,
    /// Admitted as a half-open probe of period `generation`: the slot must be
    /// given back ([`CircuitBreaker::release`]) unless an outcome is recorded.
    Probe(u64),
}

impl CircuitBreaker {
    /// The current state.
    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// Whether a request would be admitted at `now_ms`, changing nothing.
    pub fn would_allow(&self, config: &BreakerConfig, now_ms: u64) -> bool {
        match self.state {
            BreakerState::Closed => true,
            BreakerState::Open => now_ms >= self.open_until_ms,
            BreakerState::HalfOpen => self.half_open_admitted < config.half_open_requests,
        }
    }

    /// Whether a request may go to the instance at `now_ms`; moves an open
    /// breaker whose time is up to half-open, and takes a half-open probe slot.
    pub fn allow(&mut self, config: &BreakerConfig, now_ms: u64) -> (Admit, Option<Transition>) {
        let transition = (self.state == BreakerState::Open && now_ms >= self.open_until_ms)
            .then(|| self.half_open(config, "open time over"));
        let admit = match self.state {
            BreakerState::Closed => Admit::Closed,
            BreakerState::Open => Admit::Refused,
            BreakerState::HalfOpen if self.half_open_admitted < config.half_open_requests => {
                self.half_open_admitted += 1;
                Admit::Probe(self.generation)
            }
            BreakerState::HalfOpen => Admit::Refused,
        };
        (admit, transition)
    }

    /// Goes half-open (`why`), with every probe slot free.
    fn half_open(&mut self, config: &BreakerConfig, why: &str) -> Transition {
        self.state = BreakerState::HalfOpen;
        self.half_open_admitted = 0;
        self.half_open_successes = 0;
        self.generation += 1;
        Transition {
            to: BreakerState::HalfOpen,
            reason: format!(
                "{why}; admitting {} probe requests",
                config.half_open_requests
            ),
        }
    }

    /// Folds in an active health check's result: an open breaker whose
    /// instance failed a check since it opened and now passes one goes
    /// half-open at once.
    pub fn checked(&mut self, config: &BreakerConfig, passed: bool) -> Option<Transition> {
        if self.state != BreakerState::Open {
            return None;
        }
        if !passed {
            self.check_failed = true;
            return None;
        }
        self.check_failed
            .then(|| self.half_open(config, "an active health check passes again"))
    }

    /// Gives back a probe slot of half-open period `generation` that sent
    /// nothing worth recording; a slot of an earlier period is void.
    pub fn release(&mut self, generation: u64) {
        if self.state == BreakerState::HalfOpen && self.generation == generation {
            self.half_open_admitted = self.half_open_admitted.saturating_sub(1);
        }
    }

    /// Folds one outcome in at `now_ms`; returns a transition when the state changed.
    pub fn record(
        &mut self,
        config: &BreakerConfig,
        success: bool,
        now_ms: u64,
    ) -> Option<Transition> {
        match self.state {
            BreakerState::Open => None,
            BreakerState::HalfOpen if success => {
                self.half_open_successes += 1;
                (self.half_open_successes >= config.close_after).then(|| {
                    self.state = BreakerState::Closed;
                    self.trips = 0;
                    self.consecutive = 0;
                    self.buckets = [(0, 0, 0); BUCKETS];
                    Transition {
                        to: BreakerState::Closed,
                        reason: format!("{} probe requests succeeded", config.close_after),
                    }
                })
            }
            BreakerState::HalfOpen => {
                Some(self.open(config, now_ms, "a probe request failed".into()))
            }
            BreakerState::Closed => {
                let bucket_ms = (config.window_ms / BUCKETS as u64).max(1);
                let start = now_ms - now_ms % bucket_ms;
                let slot = &mut self.buckets[((now_ms / bucket_ms) as usize) % BUCKETS];
                if slot.0 != start {
                    *slot = (start, 0, 0);
                }
                slot.1 += 1;
                slot.2 += u32::from(!success);
                self.consecutive = if success { 0 } else { self.consecutive + 1 };
                if config.consecutive_failures > 0
                    && self.consecutive >= config.consecutive_failures
                {
                    return Some(self.open(
                        config,
                        now_ms,
                        format!("{} consecutive failures", self.consecutive),
                    ));
                }
                let horizon = now_ms.saturating_sub(config.window_ms);
                let (requests, failures) = self
                    .buckets
                    .iter()
                    .filter(|b| b.0 > horizon || (b.0 == 0 && horizon == 0 && b.1 > 0))
                    .fold((0, 0), |(r, f), b| (r + b.1, f + b.2));
                let rate = f64::from(failures) / f64::from(requests.max(1));
                (requests >= config.min_requests && rate >= config.failure_rate).then(|| {
                    self.open(
                        config,
                        now_ms,
                        format!("failure rate {:.0}% over {requests} requests", rate * 100.0),
                    )
                })
            }
        }
    }

    fn open(&mut self, config: &BreakerConfig, now_ms: u64, reason: String) -> Transition {
        self.trips += 1;
        let open_ms = config
            .open_ms
            .saturating_mul(1u64 << (self.trips - 1).min(20))
            .min(config.max_open_ms);
        self.state = BreakerState::Open;
        self.open_until_ms = now_ms + open_ms;
        self.consecutive = 0;
        self.check_failed = false;
        Transition {
            to: BreakerState::Open,
            reason: format!("{reason}; open for {open_ms} ms (trip {})", self.trips),
        }
    }
}

type Shared = Arc<Mutex<CircuitBreaker>>;

fn lock(breaker: &Shared) -> std::sync::MutexGuard<'_, CircuitBreaker> {
    breaker.lock().unwrap_or_else(PoisonError::into_inner)
}

/// An instance's admission by its breaker, held for the attempt: when it
/// was a half-open probe and is dropped without
/// [`Breakers::record`] (the attempt was abandoned), the probe slot is given
/// back. The default admits with nothing to give back (no breaker).
#[derive(Debug, Default)]
#[must_use = "dropping an admission gives its probe slot back"]
pub struct Admission(Option<(Shared, u64)>);

impl Admission {
    /// Whether this admission holds a half-open probe slot.
    pub fn is_probe(&self) -> bool {
        self.0.is_some()
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        if let Some((breaker, generation)) = self.0.take() {
            lock(&breaker).release(generation);
        }
    }
}

/// The breakers of one pool, by instance id.
#[derive(Debug)]
pub struct Breakers {
    config: BreakerConfig,
    breakers: ById<Shared>,
}

impl Breakers {
    /// A breaker for each of `endpoints`: the one `previous` (the pool's
    /// generation before a membership change) holds for it, else a closed one.
    pub fn new(
        config: &BreakerConfig,
        endpoints: &[Arc<Endpoint>],
        previous: Option<&Breakers>,
    ) -> Self {
        Self {
            config: config.clone(),
            breakers: ById::carry(endpoints, previous.map(|p| &p.breakers), || {
                Mutex::new(CircuitBreaker::default())
            }),
        }
    }

    /// Admits a request to instance `id` at `now_ms`, or refuses it (`None`);
    /// see [`CircuitBreaker::allow`]. The transition to half-open, if this
    /// call made it, comes back for events.
    pub fn admit(&self, id: u32, now_ms: u64) -> (Option<Admission>, Option<Transition>) {
        let Some(breaker) = self.breakers.get(id) else {
            return (Some(Admission::default()), None);
        };
        let (admit, transition) = lock(breaker).allow(&self.config, now_ms);
        let admission = match admit {
            Admit::Refused => None,
            Admit::Closed => Some(Admission::default()),
            Admit::Probe(generation) => Some(Admission(Some((Arc::clone(breaker), generation)))),
        };
        (admission, transition)
    }

    /// Whether instance `id` would be admitted at `now_ms`; takes no slot.
    pub fn would_admit(&self, id: u32, now_ms: u64) -> bool {
        self.breakers
            .get(id)
            .is_none_or(|b| lock(b).would_allow(&self.config, now_ms))
    }

    /// Records the outcome of the attempt `admission` let through (its probe
    /// slot, if any, is used up); see [`CircuitBreaker::record`].
    pub fn record(
        &self,
        id: u32,
        mut admission: Admission,
        success: bool,
        now_ms: u64,
    ) -> Option<Transition> {
        admission.0 = None;
        self.breakers
            .get(id)
            .and_then(|b| lock(b).record(&self.config, success, now_ms))
    }

    /// Folds in instance `id`'s active health check result; see
    /// [`CircuitBreaker::checked`].
    pub fn checked(&self, id: u32, passed: bool) -> Option<Transition> {
        self.breakers
            .get(id)
            .and_then(|b| lock(b).checked(&self.config, passed))
    }

    /// The state of instance `id`'s breaker.
    pub fn state(&self, id: u32) -> BreakerState {
        self.breakers
            .get(id)
            .map_or(BreakerState::Closed, |b| lock(b).state())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> BreakerConfig {
        BreakerConfig {
            failure_rate: 0.5,
            min_requests: 10,
            window_ms: 1_000,
            consecutive_failures: 0,
            open_ms: 100,
            max_open_ms: 250,
            half_open_requests: 2,
            close_after: 2,
        }
    }

    fn allowed(b: &mut CircuitBreaker, c: &BreakerConfig, now_ms: u64) -> bool {
        b.allow(c, now_ms).0 != Admit::Refused
    }

    #[test]
    fn opens_on_the_failure_rate_with_a_minimum_volume() {
        let (c, mut b) = (config(), CircuitBreaker::default());
        for i in 0..9 {
            assert_eq!(b.record(&c, i % 2 == 0, 10), None, "below min_requests");
        }
        let t = b.record(&c, false, 10).unwrap();
        assert_eq!(t.to, BreakerState::Open);
        assert!(t.reason.contains("failure rate 50%"), "{}", t.reason);
        assert_eq!(b.allow(&c, 50), (Admit::Refused, None));
    }

    #[test]
    fn old_outcomes_leave_the_window() {
        let (c, mut b) = (config(), CircuitBreaker::default());
        for _ in 0..9 {
            b.record(&c, false, 0);
        }
        // A second later the failures have left the window: 10 fresh successes do not trip.
        for _ in 0..10 {
            assert_eq!(b.record(&c, true, 1_500), None);
        }
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn half_open_probes_close_or_reopen_for_longer() {
        let (c, mut b) = (config(), CircuitBreaker::default());
        let c = BreakerConfig {
            consecutive_failures: 3,
            ..c
        };
        for _ in 0..3 {
            b.record(&c, false, 0);
        }
        assert_eq!(b.state(), BreakerState::Open);
        let (admit, t) = b.allow(&c, 100);
        assert_eq!(admit, Admit::Probe(1));
        assert_eq!(t.unwrap().to, BreakerState::HalfOpen);
        assert!(allowed(&mut b, &c, 100), "second probe");
        assert!(!allowed(&mut b, &c, 100), "only two probes");
        // A failed probe reopens for 2 × 100 ms.
        assert_eq!(b.record(&c, false, 110).unwrap().to, BreakerState::Open);
        assert!(!allowed(&mut b, &c, 309));
        assert!(allowed(&mut b, &c, 310));
        assert_eq!(b.record(&c, true, 311), None);
        assert_eq!(b.record(&c, true, 312).unwrap().to, BreakerState::Closed);
        // Closing forgives the trips: the next open is 100 ms again.
        for _ in 0..3 {
            b.record(&c, false, 400);
        }
        assert!(!allowed(&mut b, &c, 499));
        assert!(allowed(&mut b, &c, 500));
    }

    #[test]
    fn a_check_that_passes_again_ends_the_open_time() {
        let c = config();
        let mut b = CircuitBreaker::default();
        for _ in 0..10 {
            b.record(&c, false, 0);
        }
        assert_eq!(b.state(), BreakerState::Open);
        // Passing checks alone (no failed one since the breaker opened)
        // change nothing: the requests failed, not the checks.
        assert_eq!(b.checked(&c, true), None);
        assert!(!allowed(&mut b, &c, 1));
        assert_eq!(b.checked(&c, false), None);
        let t = b.checked(&c, true).expect("half-open");
        assert_eq!(t.to, BreakerState::HalfOpen);
        assert!(
            allowed(&mut b, &c, 2),
            "a probe request, long before open_ms"
        );
        // Checks do not close it: probe requests do.
        assert_eq!(b.checked(&c, true), None);
        b.record(&c, true, 3);
        assert!(
            b.record(&c, true, 4)
                .is_some_and(|t| t.to == BreakerState::Closed)
        );
    }

    #[test]
    fn open_time_is_capped() {
        let c = BreakerConfig {
            consecutive_failures: 1,
            ..config()
        };
        let mut b = CircuitBreaker::default();
        let mut now = 0;
        for _ in 0..5 {
            b.record(&c, false, now);
            now = b.open_until_ms;
            let _ = b.allow(&c, now);
        }
        let t = b.record(&c, false, now).unwrap();
        assert!(t.reason.contains("open for 250 ms"), "{}", t.reason);
    }

    #[test]
    fn an_abandoned_probe_gives_its_slot_back_and_a_stale_one_is_void() {
        let c = BreakerConfig {
            consecutive_failures: 1,
            half_open_requests: 1,
            close_after: 1,
            ..config()
        };
        let breakers = Breakers::new(&c, &crate::balance::tests::pool(1), None);
        assert!(breakers.record(0, Admission::default(), false, 0).is_some());
        assert!(!breakers.would_admit(0, 50), "open");
        assert!(breakers.would_admit(0, 100), "its open time is over");
        let (probe, t) = breakers.admit(0, 100);
        let probe = probe.expect("the one probe");
        assert!(probe.is_probe());
        assert_eq!(t.unwrap().to, BreakerState::HalfOpen);
        assert!(breakers.admit(0, 100).0.is_none(), "the slot is taken");
        assert!(!breakers.would_admit(0, 100));
        drop(probe);
        assert!(
            breakers.would_admit(0, 100),
            "the abandoned probe gave it back"
        );
        // A probe of an earlier half-open period gives nothing back to a later one.
        let stale = breakers.admit(0, 100).0.unwrap();
        let fresh = breakers.admit(0, 100).0;
        assert!(fresh.is_none());
        let taken = breakers.admit(0, 100).0;
        assert!(taken.is_none());
        assert!(breakers.record(0, stale, false, 110).is_some(), "reopened");
        let (next, _) = breakers.admit(0, 310);
        let next = next.expect("half-open again, generation 2");
        assert!(breakers.admit(0, 310).0.is_none());
        let old = Admission(Some((Arc::clone(breakers.breakers.get(0).unwrap()), 1)));
        drop(old);
        assert!(breakers.admit(0, 310).0.is_none(), "a stale slot is void");
        assert_eq!(
            breakers.record(0, next, true, 320).unwrap().to,
            BreakerState::Closed
        );
    }
}
