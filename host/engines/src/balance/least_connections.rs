//! `least-connections`: fewest in-flight requests among a random sample.
//!
//! Envoy's `LEAST_REQUEST`: sample `choice_count` instances at random (default
//! 2, the power of two choices) and take the one with the fewest in-flight
//! requests relative to its weight, cost = (in-flight + 1) / weight. With
//! `choice_count` at least the pool size every instance is compared (nginx's
//! `least_conn`), ties broken from a random start. O(choice_count) per
//! request, O(N) for a full scan.
//!
//! Config: `choice_count` (>= 2, default 2).

use std::sync::Arc;

use super::sample::rank_sampled;
use super::{Endpoint, Ranking, RequestContext, Strategy};
use crate::policy::Fault;

/// Least in-flight requests among `choice_count` sampled instances.
#[derive(Debug)]
pub struct LeastConnections {
    choice_count: usize,
}

impl LeastConnections {
    /// Samples `choice_count` instances per request (>= 2).
    pub fn new(choice_count: u32) -> Self {
        Self {
            choice_count: choice_count.max(2) as usize,
        }
    }
}

impl Default for LeastConnections {
    fn default() -> Self {
        Self::new(2)
    }
}

impl Strategy for LeastConnections {
    fn name(&self) -> &str {
        "least-connections"
    }

    fn rank(
        &self,
        _request: &RequestContext<'_>,
        endpoints: &[Arc<Endpoint>],
        out: &mut Ranking,
    ) -> Result<(), Fault> {
        rank_sampled(endpoints, self.choice_count, cost, out);
        Ok(())
    }
}

/// (in-flight + 1) / weight.
fn cost(endpoint: &Endpoint) -> f64 {
    (f64::from(endpoint.in_flight()) + 1.0) / f64::from(endpoint.weight())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::tests::{pool, rank, weighted_pool};

    #[test]
    fn a_full_scan_puts_the_fewest_in_flight_first() {
        let endpoints = pool(3);
        let lc = LeastConnections::new(3);
        let _busy = [endpoints[0].start_request(), endpoints[0].start_request()];
        let _one = endpoints[2].start_request();
        assert_eq!(rank(&lc, &endpoints), [1, 2, 0]);
    }

    #[test]
    fn weight_divides_the_load() {
        let endpoints = weighted_pool(&[1, 4]);
        let _a = endpoints[0].start_request();
        let _b = [
            endpoints[1].start_request(),
            endpoints[1].start_request(),
            endpoints[1].start_request(),
        ];
        // (1+1)/1 versus (3+1)/4: the heavier instance still ranks first.
        assert_eq!(rank(&LeastConnections::new(2), &endpoints), [1, 0]);
    }

    #[test]
    fn sampling_ranks_every_instance_for_failover() {
        let endpoints = pool(20);
        let ranking = rank(&LeastConnections::default(), &endpoints);
        assert_eq!(ranking.len(), crate::balance::RANK_LIMIT);
    }
}
