//! The Maglev lookup table of `consistent-hash` (Eisenbud et al., NSDI 2016).

use std::ops::ControlFlow;
use std::sync::Arc;

use super::consistent_hash::identity_hash;
use super::{Endpoint, EndpointId};

const OFFSET_SEED: u64 = 0x6d61_676c_6576_3031;
const SKIP_SEED: u64 = 0x6d61_676c_6576_3032;

/// A table of `M` (prime) slots, each naming an instance.
#[derive(Debug)]
pub struct Maglev {
    table: Vec<EndpointId>,
}

impl Maglev {
    /// Fills `table_size` slots (prime, larger than the pool). Each instance
    /// walks its own permutation, offset + j × skip (mod M), both derived
    /// from its URL, and claims the next free slot on its turn; turns come
    /// in proportion to weight (a credit of weight / max weight per round,
    /// as Envoy's weighted Maglev), so slots are shared by weight.
    pub fn new(endpoints: &[Arc<Endpoint>], table_size: usize) -> Self {
        let m = table_size.max(1);
        let n = endpoints.len();
        if n == 0 {
            return Self { table: Vec::new() };
        }
        let offset: Vec<usize> = endpoints
            .iter()
            .map(|e| (identity_hash(e, OFFSET_SEED) % m as u64) as usize)
            .collect();
        let skip: Vec<usize> = endpoints
            .iter()
            .map(|e| (identity_hash(e, SKIP_SEED) % (m.max(2) as u64 - 1)) as usize + 1)
            .collect();
        let max_weight = endpoints
            .iter()
            .map(|e| e.weight())
            .max()
            .unwrap_or(1)
            .max(1);
        let mut next = vec![0usize; n];
        let mut credit = vec![0f64; n];
        let mut table = vec![EndpointId::MAX; m];
        let mut filled = 0;
        'fill: while filled < m {
            for i in 0..n {
                credit[i] += f64::from(endpoints[i].weight()) / f64::from(max_weight);
                if credit[i] < 1.0 {
                    continue;
                }
                credit[i] -= 1.0;
                loop {
                    let slot = (offset[i] + next[i] * skip[i]) % m;
                    next[i] += 1;
                    if table[slot] == EndpointId::MAX {
                        table[slot] = endpoints[i].id;
                        filled += 1;
                        break;
                    }
                }
                if filled == m {
                    break 'fill;
                }
            }
        }
        Self { table }
    }

    /// Visits the slots from `hash mod M` onwards, once around.
    pub fn walk(&self, hash: u64, mut visit: impl FnMut(EndpointId) -> ControlFlow<()>) {
        if self.table.is_empty() {
            return;
        }
        let start = (hash % self.table.len() as u64) as usize;
        let (before, after) = self.table.split_at(start);
        for id in after.iter().chain(before) {
            if visit(*id).is_break() {
                return;
            }
        }
    }

    /// Slots per instance id, for tests of balance.
    #[cfg(test)]
    pub fn slots(&self, pool_size: usize) -> Vec<usize> {
        let mut counts = vec![0; pool_size];
        for id in &self.table {
            counts[*id as usize] += 1;
        }
        counts
    }
}
