//! `round-robin`: each request starts one instance further along the pool.
//!
//! Request *n* ranks instance `n mod N` first, then the following instances in
//! pool order, so three instances a, b, c serve a, b, c, a, b, c … (HAProxy's
//! `roundrobin` order with equal weights). Weights are ignored; weighted
//! round robin is its own strategy.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use super::{Endpoint, Ranking, RequestContext, Strategy, rotating_start, rotation};
use crate::policy::Fault;

/// Round robin over the pool in configured order. No config keys.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl Strategy for RoundRobin {
    fn name(&self) -> &str {
        "round-robin"
    }

    fn rank(
        &self,
        _request: &RequestContext<'_>,
        endpoints: &[Arc<Endpoint>],
        out: &mut Ranking,
    ) -> Result<(), Fault> {
        let n = endpoints.len();
        let Some(start) = rotating_start(&self.next, n) else {
            return Ok(());
        };
        rotation(start, endpoints, out);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::tests::{pool, rank};

    #[test]
    fn each_request_starts_one_further() {
        let endpoints = pool(3);
        let rr = RoundRobin::default();
        assert_eq!(rank(&rr, &endpoints), [0, 1, 2]);
        assert_eq!(rank(&rr, &endpoints), [1, 2, 0]);
        assert_eq!(rank(&rr, &endpoints), [2, 0, 1]);
        assert_eq!(rank(&rr, &endpoints), [0, 1, 2]);
    }

    #[test]
    fn rankings_are_capped() {
        let endpoints = pool(20);
        assert_eq!(
            rank(&RoundRobin::default(), &endpoints).len(),
            crate::balance::RANK_LIMIT
        );
    }
}
