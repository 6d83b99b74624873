//! `least-connections`: the instance with the fewest in-flight requests.
//!
//! Instances are ranked by in-flight requests divided by weight (nginx's
//! `least_conn`, which also honours weights); ties are broken round robin so
//! an idle pool is still spread evenly. The scan is O(N) per request plus a
//! sort of the [`RANK_LIMIT`] best. Power-of-two-choices sampling for large
//! pools is a separate strategy.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Endpoint, RANK_LIMIT, Ranking, RequestContext, Strategy};
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
        if n == 0 {
            return Ok(());
        }
        let start = self.tie_break.fetch_add(1, Ordering::Relaxed) % n;
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
