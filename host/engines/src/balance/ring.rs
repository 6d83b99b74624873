//! The hash ring of `consistent-hash` (Karger et al. 1997, Ketama's form).

use std::ops::ControlFlow;
use std::sync::Arc;

use super::consistent_hash::identity_hash;
use super::{Endpoint, EndpointId};

/// Virtual nodes sorted by hash: `(hash, instance)`.
#[derive(Debug)]
pub struct Ring {
    nodes: Vec<(u64, EndpointId)>,
}

impl Ring {
    /// `vnodes_per_weight × weight` virtual nodes per instance, hashed from
    /// its URL and the node's number: the ring depends on the set of
    /// instances, not on their order, and one instance joining or leaving
    /// moves only the keys of its own nodes.
    pub fn new(endpoints: &[Arc<Endpoint>], vnodes_per_weight: usize) -> Self {
        let mut nodes = Vec::new();
        for endpoint in endpoints {
            let share = vnodes_per_weight as u64 * u64::from(endpoint.weight());
            nodes.extend((0..share).map(|replica| (identity_hash(endpoint, replica), endpoint.id)));
        }
        nodes.sort_unstable();
        Self { nodes }
    }

    /// Visits nodes clockwise from the first at or after `hash`, once around.
    pub fn walk(&self, hash: u64, mut visit: impl FnMut(EndpointId) -> ControlFlow<()>) {
        let start = self.nodes.partition_point(|(h, _)| *h < hash);
        let (before, after) = self.nodes.split_at(start);
        for (_, id) in after.iter().chain(before) {
            if visit(*id).is_break() {
                return;
            }
        }
    }
}
