//! A pool's membership: its instances under stable ids.
//!
//! An instance's [`EndpointId`] is given once, when the instance joins its
//! pool, and never reused: ids are not positions in a vector, so a
//! membership change that removes or adds an instance shifts nothing that a
//! session table, a breaker, an ejection or a plugin holds by id. The pool
//! keeps its instances in config order ([`Members::as_slice`]) and finds one
//! by id through a dense id → position table ([`Members::get`], O(1)).
//! [`ById`] keeps per-instance values the same way.
//!
//! Cost: the tables are as long as the highest id given, one word per id
//! ever given in the pool (a pool that saw a million additions keeps a few
//! megabytes).

use std::sync::Arc;

use super::{Endpoint, EndpointId};

/// Per-instance values indexed by stable [`EndpointId`]; the ids of
/// instances no longer in the pool hold nothing.
#[derive(Debug)]
pub struct ById<T>(Vec<Option<T>>);

impl<T> ById<T> {
    /// A value for each of `endpoints`, made by `value`.
    pub fn build(endpoints: &[Arc<Endpoint>], mut value: impl FnMut(&Endpoint) -> T) -> Self {
        let len = endpoints
            .iter()
            .map(|e| e.id as usize + 1)
            .max()
            .unwrap_or(0);
        let mut slots: Vec<Option<T>> = std::iter::repeat_with(|| None).take(len).collect();
        for endpoint in endpoints {
            slots[endpoint.id as usize] = Some(value(endpoint));
        }
        Self(slots)
    }

    /// The value of instance `id`, if it is a member.
    pub fn get(&self, id: EndpointId) -> Option<&T> {
        self.0.get(id as usize).and_then(Option::as_ref)
    }
}

impl<T> ById<Arc<T>> {
    /// A value for each of `endpoints`: the one `previous` holds for the
    /// same id (shared, so both generations of the pool update one state),
    /// else a new one from `fresh`.
    pub fn carry(
        endpoints: &[Arc<Endpoint>],
        previous: Option<&Self>,
        mut fresh: impl FnMut() -> T,
    ) -> Self {
        Self::build(endpoints, |e| {
            previous
                .and_then(|p| p.get(e.id))
                .map_or_else(|| Arc::new(fresh()), Arc::clone)
        })
    }
}

impl ById<u32> {
    /// Each of `endpoints`' position in the slice.
    pub fn positions(endpoints: &[Arc<Endpoint>]) -> Self {
        let mut position = 0u32;
        Self::build(endpoints, |_| {
            position += 1;
            position - 1
        })
    }
}

/// The instances of one generation of a pool: in config order, and by id.
#[derive(Debug)]
pub struct Members {
    endpoints: Vec<Arc<Endpoint>>,
    positions: ById<u32>,
}

impl Members {
    /// Members `endpoints` (ids distinct).
    pub fn new(endpoints: Vec<Arc<Endpoint>>) -> Self {
        let positions = ById::positions(&endpoints);
        Self {
            endpoints,
            positions,
        }
    }

    /// The instances in config order.
    pub fn as_slice(&self) -> &[Arc<Endpoint>] {
        &self.endpoints
    }

    /// How many instances.
    pub fn len(&self) -> usize {
        self.endpoints.len()
    }

    /// Whether the pool has no instance.
    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }

    /// Instance `id`, if it is a member.
    pub fn get(&self, id: EndpointId) -> Option<&Arc<Endpoint>> {
        self.position(id).map(|i| &self.endpoints[i])
    }

    /// Where instance `id` stands in config order, if it is a member.
    pub fn position(&self, id: EndpointId) -> Option<usize> {
        self.positions.get(id).map(|p| *p as usize)
    }

    /// The member at `authority` (`host:port`, an instance's identity in
    /// its pool), if any.
    pub fn by_authority(&self, authority: &http::uri::Authority) -> Option<&Arc<Endpoint>> {
        self.endpoints.iter().find(|e| e.authority == *authority)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::tests::pool;

    #[test]
    fn ids_are_found_whatever_their_position() {
        let mut endpoints = pool(4);
        endpoints.remove(1);
        let members = Members::new(endpoints);
        assert_eq!(members.len(), 3);
        assert_eq!(members.position(0), Some(0));
        assert_eq!(members.position(1), None, "removed");
        assert_eq!(members.position(3), Some(2));
        assert_eq!(members.get(2).map(|e| e.id), Some(2));
        assert!(members.get(99).is_none());
    }

    #[test]
    fn carried_values_are_shared_and_new_ids_start_fresh() {
        let endpoints = pool(3);
        let before: ById<Arc<u32>> = ById::carry(&endpoints, None, || 7);
        let kept: Vec<_> = endpoints[1..].to_vec();
        let after = ById::carry(&kept, Some(&before), || 9);
        assert!(Arc::ptr_eq(after.get(2).unwrap(), before.get(2).unwrap()));
        assert!(after.get(0).is_none());
        let fresh = ById::carry(&pool(5)[4..], Some(&before), || 9);
        assert_eq!(**fresh.get(4).unwrap(), 9);
    }
}
