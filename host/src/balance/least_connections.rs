//! `least-connections`: the instance with the fewest in-flight requests.
//!
//! Instances are ranked by in-flight requests divided by weight (nginx's
//! `least_conn`, which also honours weights); ties are broken round robin so
//! an idle pool is still spread evenly. The scan is O(N) per request plus a
//! sort of the [`RANK_LIMIT`] best. Power-of-two-choices sampling for large
//! pools is a separate strategy.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use super::{Endpoint, RANK_LIMIT, Ranking, RequestContext, Strategy, rotating_start};
use crate::plugin::Fault;

/// Fewest in-flight requests relative to weight. No config keys.
#[derive(Debug, Default)]
pub struct LeastConnections {
    tie_break: AtomicUsize,
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
        let n = endpoints.len();
        let Some(start) = rotating_start(&self.tie_break, n) else {
            return Ok(());
        };
        // Keys: (in_flight / weight, distance from the rotating start); kept
        // as the RANK_LIMIT smallest by insertion into a small sorted buffer.
        let mut best: smallvec::SmallVec<[(u64, u32, usize); RANK_LIMIT]> =
            smallvec::SmallVec::new();
        for offset in 0..n {
            let id = (start + offset) % n;
            let e = &endpoints[id];
            let key = (u64::from(e.in_flight()) << 16) / u64::from(e.weight);
            let entry = (key, offset as u32, id);
            let pos = best.partition_point(|probe| (probe.0, probe.1) <= (entry.0, entry.1));
            if pos < RANK_LIMIT {
                if best.len() == RANK_LIMIT {
                    best.pop();
                }
                best.insert(pos, entry);
            }
        }
        out.extend(best.iter().map(|(_, _, id)| *id as u32));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::tests::{pool, rank};

    #[test]
    fn fewest_in_flight_first_and_ties_rotate() {
        let endpoints = pool(3);
        let lc = LeastConnections::default();
        let _busy = [endpoints[0].start_request(), endpoints[0].start_request()];
        let _one = endpoints[2].start_request();
        assert_eq!(rank(&lc, &endpoints), [1, 2, 0]);
        let _two = endpoints[1].start_request();
        // 1 and 2 now tie at one in flight: the tie-break rotates.
        let first = rank(&lc, &endpoints);
        let second = rank(&lc, &endpoints);
        assert_eq!(first[2], 0);
        assert_eq!(second[2], 0);
        assert_ne!(first[0], second[0]);
    }

    #[test]
    fn weight_divides_the_load() {
        let mut endpoints = pool(2);
        endpoints[1] = Arc::new(Endpoint::new(
            1,
            "http://127.0.0.1:2".into(),
            "127.0.0.1:2".parse().unwrap(),
            4,
            vec![],
        ));
        let _a = endpoints[0].start_request();
        let _b = [
            endpoints[1].start_request(),
            endpoints[1].start_request(),
            endpoints[1].start_request(),
        ];
        // 1/1 versus 3/4: the heavier instance still ranks first.
        assert_eq!(rank(&LeastConnections::default(), &endpoints), [1, 0]);
    }
}
