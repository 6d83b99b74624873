//! `resource-aware`: weights scaled by the load instances report.
//!
//! Instances report their load, 0.0 (idle) ..= 1.0 (saturated), in a response
//! header (`load_header`, default `x-load`; health-check verdicts will feed
//! the same value). Each request draws an instance at random with probability
//! proportional to its effective weight
//!
//! > w_eff = weight × max(1 − load, `min_weight_factor`)
//!
//! An instance that has not reported yet counts with the mean load of those
//! that have (0 when none has), so a new instance is neither shunned nor
//! flooded. `min_weight_factor` (default 0.05) keeps a saturated instance in
//! rotation at a trickle, so its report is refreshed. The rest of the ranking
//! (spares for when the engine passes over the choice) is in descending
//! effective weight. O(N) per request.
//!
//! Config: `load_header` (default `x-load`), `min_weight_factor` (default 0.05).

use std::sync::Arc;

use smallvec::SmallVec;

use super::sample::insert_bounded;
use super::{Endpoint, EndpointId, RANK_LIMIT, Ranking, RequestContext, Strategy};
use crate::policy::Fault;
use switchyard_config::ResourceAwareConfig;

/// Weighted random over weight × (1 − reported load).
#[derive(Debug)]
pub struct ResourceAware {
    min_weight_factor: f64,
}

impl ResourceAware {
    /// A strategy with `config`'s floor (the header is read by the data path).
    pub fn new(config: &ResourceAwareConfig) -> Self {
        Self {
            min_weight_factor: config.min_weight_factor,
        }
    }

    /// The effective weight of `endpoint` given the pool's `mean_load`.
    pub fn effective_weight(&self, endpoint: &Endpoint, mean_load: f64) -> f64 {
        let load = endpoint.load().map_or(mean_load, f64::from);
        f64::from(endpoint.weight()) * (1.0 - load).max(self.min_weight_factor)
    }
}

impl Strategy for ResourceAware {
    fn name(&self) -> &str {
        "resource-aware"
    }

    fn rank(
        &self,
        _request: &RequestContext<'_>,
        endpoints: &[Arc<Endpoint>],
        out: &mut Ranking,
    ) -> Result<(), Fault> {
        let n = endpoints.len();
        if n == 0 {
            return Ok(());
        }
        let (sum, count) = endpoints
            .iter()
            .filter_map(|e| e.load())
            .fold((0.0, 0u32), |(s, c), l| (s + f64::from(l), c + 1));
        let mean_load = if count == 0 {
            0.0
        } else {
            sum / f64::from(count)
        };
        let total: f64 = endpoints
            .iter()
            .map(|e| self.effective_weight(e, mean_load))
            .sum();
        let mut target = fastrand::f64() * total;
        let mut chosen = n - 1;
        for (i, e) in endpoints.iter().enumerate() {
            target -= self.effective_weight(e, mean_load);
            if target < 0.0 {
                chosen = i;
                break;
            }
        }
        // Spares, for when the engine passes over the choice (unfit, tried):
        // the heaviest effective weights first, so a skipped instance's share
        // goes where the load reports say there is room.
        let mut spares: SmallVec<[(f64, EndpointId); RANK_LIMIT]> = SmallVec::new();
        for (_, e) in endpoints.iter().enumerate().filter(|(i, _)| *i != chosen) {
            insert_bounded(&mut spares, (-self.effective_weight(e, mean_load), e.id));
        }
        out.push(endpoints[chosen].id);
        out.extend(spares.iter().take(RANK_LIMIT - 1).map(|(_, id)| *id));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::tests::{pool, rank};

    #[test]
    fn shares_follow_one_minus_load() {
        let endpoints = pool(3);
        endpoints[0].report_load(0.0);
        endpoints[1].report_load(0.5);
        endpoints[2].report_load(1.0);
        let strategy = ResourceAware::new(&ResourceAwareConfig::default());
        let mut counts = [0u32; 3];
        const DRAWS: u32 = 20_000;
        for _ in 0..DRAWS {
            counts[rank(&strategy, &endpoints)[0] as usize] += 1;
        }
        // Effective weights 1, 0.5, 0.05 of 1.55: 64.5%, 32.3%, 3.2%; ±2 points.
        let share = |i: usize| f64::from(counts[i]) / f64::from(DRAWS);
        assert!((share(0) - 0.645).abs() < 0.02, "{counts:?}");
        assert!((share(1) - 0.323).abs() < 0.02, "{counts:?}");
        assert!((share(2) - 0.032).abs() < 0.02, "{counts:?}");
    }

    #[test]
    fn an_instance_without_a_report_counts_at_the_mean() {
        let endpoints = pool(3);
        endpoints[0].report_load(0.2);
        endpoints[1].report_load(0.6);
        let strategy = ResourceAware::new(&ResourceAwareConfig::default());
        let w = strategy.effective_weight(&endpoints[2], 0.4);
        assert!((w - 0.6).abs() < 1e-9);
    }
}
