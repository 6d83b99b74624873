//! Passive outlier detection: ejecting instances that fail live traffic.
//!
//! Envoy's outlier detection, with its defaults:
//!
//! - **consecutive gateway errors** (connect failure, reset, timeout) and
//!   **consecutive 5xx** responses: at `consecutive_gateway_errors` or
//!   `consecutive_5xx` in a row the instance is ejected at once;
//! - **success rate**: every `interval_ms`, among instances with at least
//!   `success_rate_request_volume` requests in the interval (and at least
//!   `success_rate_minimum_hosts` of them), one whose success rate is below
//!   mean − `success_rate_stdev_factor` × stdev is ejected;
//! - an ejection lasts `base_ejection_ms` × the instance's ejection count,
//!   capped at `max_ejection_ms`; the instance returns at the first interval
//!   after that, and each interval it spends in service lowers its count by
//!   one, so a flapping instance is kept out longer and a recovered one is
//!   forgiven;
//! - at most `max_ejection_percent` of the pool is ejected at once, but one
//!   instance always may be.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::{EventKind, PoolHealth, Severity};
use crate::balance::{ById, EJECTED, Endpoint};
use crate::policy::AttemptOutcome;
use switchyard_config::OutlierConfig;

#[derive(Debug, Default)]
struct State {
    consecutive_gateway: AtomicU32,
    consecutive_5xx: AtomicU32,
    requests: AtomicU64,
    successes: AtomicU64,
    ejections: AtomicU32,
    ejected_until_ms: AtomicU64,
}

/// Outlier detection for one pool.
pub struct OutlierDetector {
    config: OutlierConfig,
    states: ById<Arc<State>>,
}

impl OutlierDetector {
    /// A detector for the pool `endpoints`, keeping the counts and ejection
    /// times `previous` (the pool's generation before a membership change)
    /// holds for them.
    pub fn new(
        config: &OutlierConfig,
        endpoints: &[Arc<Endpoint>],
        previous: Option<&OutlierDetector>,
    ) -> Self {
        Self {
            config: config.clone(),
            states: ById::carry(endpoints, previous.map(|p| &p.states), State::default),
        }
    }

    /// The detection interval, ms.
    pub fn interval_ms(&self) -> u64 {
        self.config.interval_ms
    }

    /// Counts one attempt on `endpoint`; ejects on a consecutive-error threshold.
    pub fn record(
        &self,
        health: &PoolHealth,
        endpoints: &[Arc<Endpoint>],
        endpoint: &Endpoint,
        outcome: AttemptOutcome,
        now_ms: u64,
    ) {
        let Some(state) = self.states.get(endpoint.id) else {
            return;
        };
        state.requests.fetch_add(1, Ordering::Relaxed);
        let (gateway, server) = if outcome.is_success() {
            state.successes.fetch_add(1, Ordering::Relaxed);
            state.consecutive_gateway.store(0, Ordering::Relaxed);
            state.consecutive_5xx.store(0, Ordering::Relaxed);
            return;
        } else if outcome.is_gateway_error() {
            (
                state.consecutive_gateway.fetch_add(1, Ordering::Relaxed) + 1,
                0,
            )
        } else {
            state.consecutive_gateway.store(0, Ordering::Relaxed);
            (0, state.consecutive_5xx.fetch_add(1, Ordering::Relaxed) + 1)
        };
        let limit = |threshold: u32, count: u32| threshold > 0 && count >= threshold;
        if limit(self.config.consecutive_gateway_errors, gateway) {
            self.eject(
                health,
                endpoints,
                endpoint,
                now_ms,
                &format!("{gateway} consecutive gateway errors"),
            );
        } else if limit(self.config.consecutive_5xx, server) {
            self.eject(
                health,
                endpoints,
                endpoint,
                now_ms,
                &format!("{server} consecutive 5xx responses"),
            );
        }
    }

    fn eject(
        &self,
        health: &PoolHealth,
        endpoints: &[Arc<Endpoint>],
        endpoint: &Endpoint,
        now_ms: u64,
        why: &str,
    ) {
        if endpoint.health_flags() & EJECTED != 0 {
            return;
        }
        let ejected = endpoints
            .iter()
            .filter(|e| e.health_flags() & EJECTED != 0)
            .count();
        let allowed = (endpoints.len() * self.config.max_ejection_percent as usize / 100).max(1);
        if ejected >= allowed {
            tracing::debug!(pool = health.pool(), instance = %endpoint.url, why, "not ejected: max_ejection_percent reached");
            return;
        }
        let Some(state) = self.states.get(endpoint.id) else {
            return;
        };
        let count = state.ejections.fetch_add(1, Ordering::Relaxed) + 1;
        let duration = self
            .config
            .base_ejection_ms
            .saturating_mul(u64::from(count))
            .min(self.config.max_ejection_ms);
        state
            .ejected_until_ms
            .store(now_ms + duration, Ordering::Relaxed);
        state.consecutive_gateway.store(0, Ordering::Relaxed);
        state.consecutive_5xx.store(0, Ordering::Relaxed);
        health.set_flag(endpoint, EJECTED, true);
        health.publish(
            endpoint,
            EventKind::Ejected,
            Severity::Warning,
            format!("ejected for {duration} ms (ejection {count}): {why}"),
        );
    }

    /// The periodic pass: returns instances whose ejection time is over,
    /// forgives one ejection of each instance in service, and compares
    /// success rates. Call every [`interval_ms`](Self::interval_ms).
    pub fn tick(&self, health: &PoolHealth, endpoints: &[Arc<Endpoint>], now_ms: u64) {
        let mut rates = Vec::new();
        for endpoint in endpoints {
            let Some(state) = self.states.get(endpoint.id) else {
                continue;
            };
            let requests = state.requests.swap(0, Ordering::Relaxed);
            let successes = state.successes.swap(0, Ordering::Relaxed);
            if endpoint.health_flags() & EJECTED != 0 {
                if state.ejected_until_ms.load(Ordering::Relaxed) <= now_ms {
                    health.set_flag(endpoint, EJECTED, false);
                    health.publish(
                        endpoint,
                        EventKind::Returned,
                        Severity::Info,
                        "returned after its ejection time".into(),
                    );
                }
                continue;
            }
            let _ = state
                .ejections
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| c.checked_sub(1));
            if requests >= u64::from(self.config.success_rate_request_volume) && requests > 0 {
                rates.push((endpoint, successes as f64 / requests as f64));
            }
        }
        if self.config.success_rate_stdev_factor <= 0.0
            || rates.len() < self.config.success_rate_minimum_hosts as usize
            || rates.is_empty()
        {
            return;
        }
        let (mean, stdev) = mean_stdev(rates.iter().map(|(_, r)| *r));
        let threshold = mean - self.config.success_rate_stdev_factor * stdev;
        for (endpoint, rate) in rates {
            if rate < threshold {
                self.eject(
                    health,
                    endpoints,
                    endpoint,
                    now_ms,
                    &format!(
                        "success rate {:.1}% below the pool's {:.1}% − {}σ",
                        rate * 100.0,
                        mean * 100.0,
                        self.config.success_rate_stdev_factor
                    ),
                );
            }
        }
    }
}

/// Mean and population standard deviation.
fn mean_stdev(values: impl Iterator<Item = f64> + Clone) -> (f64, f64) {
    let n = values.clone().count().max(1) as f64;
    let mean = values.clone().sum::<f64>() / n;
    let variance = values.map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    (mean, variance.sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::tests::pool;
    use crate::events::EventBus;
    use std::time::Duration;

    fn setup(n: usize, config: OutlierConfig) -> (Vec<Arc<Endpoint>>, PoolHealth, OutlierDetector) {
        let events = Arc::new(EventBus::new(16, Duration::ZERO));
        let endpoints = pool(n);
        let detector = OutlierDetector::new(&config, &endpoints, None);
        (endpoints, PoolHealth::new("p", n, 0, events), detector)
    }

    #[test]
    fn consecutive_errors_eject_with_growing_backoff_and_return() {
        let config = OutlierConfig {
            consecutive_5xx: 3,
            base_ejection_ms: 1_000,
            max_ejection_ms: 2_500,
            max_ejection_percent: 100,
            ..OutlierConfig::default()
        };
        let (endpoints, health, detector) = setup(3, config);
        let e = &endpoints[0];
        let fail =
            |now| detector.record(&health, &endpoints, e, AttemptOutcome::Answered(503), now);
        fail(0);
        fail(0);
        assert!(e.is_fit());
        fail(0);
        assert!(!e.is_fit(), "ejected after 3");
        detector.tick(&health, &endpoints, 999);
        assert!(!e.is_fit(), "still ejected before base time");
        detector.tick(&health, &endpoints, 1_000);
        assert!(e.is_fit(), "returned at the interval after 1 s");
        for _ in 0..3 {
            fail(2_000);
        }
        assert!(!e.is_fit());
        detector.tick(&health, &endpoints, 3_999);
        assert!(!e.is_fit(), "second ejection lasts 2 × base");
        detector.tick(&health, &endpoints, 4_000);
        assert!(e.is_fit());
        for _ in 0..3 {
            fail(5_000);
        }
        detector.tick(&health, &endpoints, 7_499);
        assert!(!e.is_fit(), "third ejection is capped at 2.5 s, not 3");
        detector.tick(&health, &endpoints, 7_500);
        assert!(e.is_fit());
    }

    #[test]
    fn a_success_resets_the_run() {
        let config = OutlierConfig {
            consecutive_gateway_errors: 2,
            max_ejection_percent: 100,
            ..OutlierConfig::default()
        };
        let (endpoints, health, detector) = setup(2, config);
        let e = &endpoints[1];
        detector.record(&health, &endpoints, e, AttemptOutcome::Reset, 0);
        detector.record(&health, &endpoints, e, AttemptOutcome::Answered(200), 0);
        detector.record(&health, &endpoints, e, AttemptOutcome::Reset, 0);
        assert!(e.is_fit());
        detector.record(&health, &endpoints, e, AttemptOutcome::Reset, 0);
        assert!(!e.is_fit());
    }

    #[test]
    fn max_ejection_percent_holds_but_one_may_always_go() {
        let config = OutlierConfig {
            consecutive_5xx: 1,
            max_ejection_percent: 10,
            ..OutlierConfig::default()
        };
        let (endpoints, health, detector) = setup(5, config);
        for e in &endpoints {
            detector.record(&health, &endpoints, e, AttemptOutcome::Answered(503), 0);
        }
        let ejected = endpoints.iter().filter(|e| !e.is_fit()).count();
        assert_eq!(
            ejected, 1,
            "10% of 5 rounds down to 0, but one may always be ejected"
        );
    }

    #[test]
    fn a_low_success_rate_is_ejected() {
        let config = OutlierConfig {
            consecutive_5xx: 0,
            consecutive_gateway_errors: 0,
            success_rate_minimum_hosts: 5,
            success_rate_request_volume: 10,
            max_ejection_percent: 100,
            ..OutlierConfig::default()
        };
        let (endpoints, health, detector) = setup(6, config);
        for (i, e) in endpoints.iter().enumerate() {
            for n in 0..100 {
                let ok = if i == 4 { n % 2 == 0 } else { n % 50 != 0 };
                let outcome = if ok {
                    AttemptOutcome::Answered(200)
                } else {
                    AttemptOutcome::Answered(503)
                };
                detector.record(&health, &endpoints, e, outcome, 0);
            }
        }
        detector.tick(&health, &endpoints, 0);
        let unfit: Vec<usize> = (0..6).filter(|i| !endpoints[*i].is_fit()).collect();
        assert_eq!(unfit, [4]);
    }

    #[test]
    fn panic_mode_starts_below_the_threshold() {
        let events = Arc::new(EventBus::new(16, Duration::ZERO));
        let endpoints = pool(4);
        let health = PoolHealth::new("p", 4, 50, Arc::clone(&events));
        let mut rx = events.subscribe();
        health.set_flag(&endpoints[0], EJECTED, true);
        health.set_flag(&endpoints[1], EJECTED, true);
        assert!(
            health.respect_health(),
            "2 of 4 fit is 50%: not below the threshold"
        );
        health.set_flag(&endpoints[2], EJECTED, true);
        assert!(!health.respect_health(), "1 of 4 fit: panic");
        assert_eq!(health.panics(), 1);
        assert_eq!(
            rx.try_recv().unwrap().kind,
            crate::events::EventKind::PanicOn
        );
        health.set_flag(&endpoints[2], EJECTED, false);
        assert!(health.respect_health());
        assert_eq!(
            rx.try_recv().unwrap().kind,
            crate::events::EventKind::PanicOff
        );
    }
}
