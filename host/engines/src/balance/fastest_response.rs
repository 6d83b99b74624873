//! `fastest-response`: peak-EWMA latency × load, over a random sample.
//!
//! Linkerd's and Finagle's `PeakEwma` balancer: each instance keeps a cost,
//! a moving average of its response latency that jumps *up* to any slower
//! sample at once (the "peak") and decays towards faster samples with time
//! constant `decay_ms`: with Δt since the last sample, w = e^(−Δt/τ) and
//! cost = w·cost + (1−w)·rtt (or cost = rtt when rtt > cost). Between samples
//! the cost read for ranking decays as if zero had been observed (tower's
//! `PeakEwma`), so a penalised, idle instance is tried again. A request
//! samples `choice_count` instances (power of two choices) and takes the one
//! with the lowest cost × (in-flight + 1) / weight. An instance with no sample
//! yet costs `default_rtt_ms`, so new instances are tried without being
//! flooded. A failed attempt counts with its measured latency.
//!
//! Config: `decay_ms` (default 10000), `default_rtt_ms` (default 30),
//! `choice_count` (>= 2, default 2).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::sample::rank_sampled;
use super::{ById, Endpoint, EndpointId, Ranking, RequestContext, Strategy};
use crate::policy::Fault;
use switchyard_config::FastestResponseConfig;

/// Peak-EWMA cost × load, power of two choices.
#[derive(Debug)]
pub struct FastestResponse {
    costs: ById<Mutex<PeakEwma>>,
    decay_secs: f64,
    choice_count: usize,
}

/// One instance's peak-EWMA latency, nanoseconds.
#[derive(Debug, Clone, Copy)]
struct PeakEwma {
    cost_ns: f64,
    stamp: Instant,
}

impl FastestResponse {
    /// A strategy for the pool `endpoints`.
    pub fn new(endpoints: &[Arc<Endpoint>], config: &FastestResponseConfig) -> Self {
        let start = PeakEwma {
            cost_ns: Duration::from_millis(config.default_rtt_ms).as_nanos() as f64,
            stamp: Instant::now(),
        };
        Self {
            costs: ById::build(endpoints, |_| Mutex::new(start)),
            decay_secs: Duration::from_millis(config.decay_ms).as_secs_f64(),
            choice_count: config.choice_count.max(2) as usize,
        }
    }

    /// The cost of `id` at `now`, ns, decayed since its last sample.
    fn cost_ns(&self, id: EndpointId, now: Instant) -> f64 {
        self.costs.get(id).map_or(0.0, |c| {
            let ewma = *c.lock().unwrap_or_else(PoisonError::into_inner);
            let elapsed = now.saturating_duration_since(ewma.stamp).as_secs_f64();
            ewma.cost_ns * (-elapsed / self.decay_secs).exp()
        })
    }
}

impl Strategy for FastestResponse {
    fn name(&self) -> &str {
        "fastest-response"
    }

    fn rank(
        &self,
        _request: &RequestContext<'_>,
        endpoints: &[Arc<Endpoint>],
        out: &mut Ranking,
    ) -> Result<(), Fault> {
        let now = Instant::now();
        rank_sampled(
            endpoints,
            self.choice_count,
            |e| self.cost_ns(e.id, now) * (f64::from(e.in_flight()) + 1.0) / f64::from(e.weight()),
            out,
        );
        Ok(())
    }

    fn observe(&self, id: EndpointId, _success: bool, latency_us: u64) {
        let Some(slot) = self.costs.get(id) else {
            return;
        };
        let rtt_ns = latency_us as f64 * 1_000.0;
        let now = Instant::now();
        let mut ewma = slot.lock().unwrap_or_else(PoisonError::into_inner);
        ewma.observe(rtt_ns, now, self.decay_secs);
    }
}

impl PeakEwma {
    fn observe(&mut self, rtt_ns: f64, now: Instant, decay_secs: f64) {
        if rtt_ns > self.cost_ns {
            self.cost_ns = rtt_ns;
        } else {
            let elapsed = now.saturating_duration_since(self.stamp).as_secs_f64();
            let w = (-elapsed / decay_secs).exp();
            self.cost_ns = self.cost_ns * w + rtt_ns * (1.0 - w);
        }
        self.stamp = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::tests::{pool, rank};

    #[test]
    fn a_slow_sample_is_taken_at_once_and_fast_ones_decay_towards_it() {
        let t0 = Instant::now();
        let mut e = PeakEwma {
            cost_ns: 1_000.0,
            stamp: t0,
        };
        e.observe(50_000.0, t0, 10.0);
        assert_eq!(e.cost_ns, 50_000.0);
        // One time constant later a 0 ns sample keeps e^-1 of the cost.
        e.observe(0.0, t0 + Duration::from_secs(10), 10.0);
        assert!(
            (e.cost_ns - 50_000.0 / std::f64::consts::E).abs() < 1.0,
            "{}",
            e.cost_ns
        );
    }

    #[test]
    fn the_faster_instance_ranks_first_when_both_are_compared() {
        let endpoints = pool(2);
        let fr = FastestResponse::new(
            &endpoints,
            &FastestResponseConfig {
                choice_count: 2,
                ..FastestResponseConfig::default()
            },
        );
        fr.observe(0, true, 200_000);
        fr.observe(1, true, 2_000);
        for _ in 0..10 {
            assert_eq!(rank(&fr, &endpoints)[0], 1);
        }
    }
}
