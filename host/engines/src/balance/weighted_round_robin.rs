//! `weighted-round-robin`: smooth weighted round robin, as nginx does it.
//!
//! Each instance keeps a current weight. Per request every current weight
//! grows by the instance's configured weight; the instance with the largest
//! current weight is chosen and its current weight drops by the total. Over
//! any window of Σweight requests each instance is chosen exactly `weight`
//! times, interleaved: weights {5, 1, 1} give a a b a c a a, never five a's
//! in a row (nginx `ngx_http_upstream_get_peer`, 2012). A draining instance
//! counts with weight 0, as nginx leaves out a peer that is down: the others
//! stay interleaved instead of the draining one's turns going to whichever
//! follows it. O(N) per request under a short lock. No config keys beyond
//! the instances' `weight`.

use std::sync::{Arc, Mutex, PoisonError};

use super::{Endpoint, Ranking, RequestContext, Strategy, rotation};
use crate::policy::Fault;

/// Smooth weighted round robin over the instances' weights.
#[derive(Debug)]
pub struct WeightedRoundRobin {
    current: Mutex<Vec<i64>>,
}

impl WeightedRoundRobin {
    /// A strategy for a pool of `pool_size` instances.
    pub fn new(pool_size: usize) -> Self {
        Self {
            current: Mutex::new(vec![0; pool_size]),
        }
    }
}

impl Strategy for WeightedRoundRobin {
    fn name(&self) -> &str {
        "weighted-round-robin"
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
        let best = {
            let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
            current.resize(n, 0);
            let mut total = 0i64;
            let mut best = 0usize;
            for (i, endpoint) in endpoints.iter().enumerate() {
                let weight = if endpoint.is_draining() {
                    0
                } else {
                    i64::from(endpoint.weight())
                };
                current[i] += weight;
                total += weight;
                if current[i] > current[best] {
                    best = i;
                }
            }
            current[best] -= total;
            best
        };
        rotation(best, endpoints, out);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::tests::{rank, weighted_pool};
    use proptest::{prop_assert_eq, proptest};

    #[test]
    fn interleaves_like_nginx() {
        let endpoints = weighted_pool(&[5, 1, 1]);
        let wrr = WeightedRoundRobin::new(3);
        let order: Vec<u32> = (0..7).map(|_| rank(&wrr, &endpoints)[0]).collect();
        assert_eq!(order, [0, 0, 1, 0, 2, 0, 0]);
    }

    proptest! {
        /// Over any Σweight consecutive picks each instance is chosen exactly
        /// `weight` times (tolerance zero).
        #[test]
        fn converges_exactly_to_the_weights(weights in proptest::collection::vec(1u32..10, 1..12), warmup in 0usize..50) {
            let endpoints = weighted_pool(&weights);
            let wrr = WeightedRoundRobin::new(weights.len());
            for _ in 0..warmup {
                rank(&wrr, &endpoints);
            }
            let total: u32 = weights.iter().sum();
            let mut counts = vec![0u32; weights.len()];
            for _ in 0..total {
                counts[rank(&wrr, &endpoints)[0] as usize] += 1;
            }
            prop_assert_eq!(counts, weights);
        }
    }
}
