//! Random sampling shared by the power-of-two-choices strategies.
//!
//! "The power of two choices in randomized load balancing" (Mitzenmacher,
//! 2001): sampling two instances at random and taking the less loaded one
//! gets exponentially better maximum load than one random choice, at O(1)
//! cost per request and without the herd behaviour of always taking the
//! global minimum from stale statistics.

use std::sync::Arc;

use smallvec::SmallVec;

use super::{Endpoint, EndpointId, RANK_LIMIT, Ranking};

/// Ranks `endpoints` by `cost` (lower is better) over a random sample of
/// `choice_count` distinct instances, then appends the others from a random
/// start (spares for a failover attempt), up to [`RANK_LIMIT`]. With
/// `choice_count >= endpoints.len()` every instance is compared.
pub fn rank_sampled(
    endpoints: &[Arc<Endpoint>],
    choice_count: usize,
    cost: impl Fn(&Endpoint) -> f64,
    out: &mut Ranking,
) {
    let n = endpoints.len();
    if n == 0 {
        return;
    }
    let mut sample: SmallVec<[(f64, EndpointId); RANK_LIMIT]> = SmallVec::new();
    let mut consider = |e: &Endpoint| insert_bounded(&mut sample, (cost(e), e.id));
    if choice_count >= n {
        // Keep the RANK_LIMIT cheapest, from a random start so ties rotate.
        let start = fastrand::usize(..n);
        for offset in 0..n {
            consider(&endpoints[(start + offset) % n]);
        }
    } else {
        for i in distinct(n, choice_count.min(RANK_LIMIT)) {
            consider(&endpoints[i as usize]);
        }
    }
    out.extend(sample.iter().map(|(_, id)| *id));
    let start = fastrand::usize(..n);
    for offset in 0..n {
        if out.len() >= RANK_LIMIT {
            break;
        }
        let id = endpoints[(start + offset) % n].id;
        if !out.contains(&id) {
            out.push(id);
        }
    }
}

/// Inserts `entry` into `sorted` (ascending cost, stable for ties), keeping
/// at most [`RANK_LIMIT`] entries.
pub(super) fn insert_bounded(
    sorted: &mut SmallVec<[(f64, EndpointId); RANK_LIMIT]>,
    entry: (f64, EndpointId),
) {
    let pos = sorted.partition_point(|probe| probe.0 <= entry.0);
    if pos < RANK_LIMIT {
        if sorted.len() == RANK_LIMIT {
            sorted.pop();
        }
        sorted.insert(pos, entry);
    }
}

/// `k` distinct positions drawn uniformly from `0..n` (k <= n, k <=
/// RANK_LIMIT), in a uniformly random order: every position is equally
/// likely to come first, so that the first drawn — which wins a tie of
/// costs — is a fair choice among equals.
pub fn distinct(n: usize, k: usize) -> SmallVec<[EndpointId; RANK_LIMIT]> {
    let mut picked: SmallVec<[EndpointId; RANK_LIMIT]> = SmallVec::new();
    // Floyd's algorithm: a uniform set in k draws, no rejection loop. Its
    // order is not uniform (position n − 1 is never drawn first), hence
    // the shuffle (Fisher–Yates) after it.
    for j in (n - k)..n {
        let t = fastrand::usize(..=j) as EndpointId;
        let id = if picked.contains(&t) {
            j as EndpointId
        } else {
            t
        };
        picked.push(id);
    }
    fastrand::shuffle(&mut picked);
    picked
}

/// `k` distinct positions of `0..n` (k <= n) in O(k) time and no
/// allocation: a uniformly random start and a random stride coprime with
/// `n`, so every position is equally likely to be among them. With `k ==
/// n` it is every position, from position 0 in order.
///
/// This bounds the candidates a balancer plugin sees in a large pool; the
/// positions are not independent of each other (a Floyd draw would be, at
/// O(k²) or an O(n) scratch table per request), which a sample meant to
/// bound the cost of one decision does not need.
pub fn spread(n: usize, k: usize) -> impl Iterator<Item = usize> {
    let (start, stride) = if k < n {
        (fastrand::usize(..n), coprime_stride(n))
    } else {
        (0, 1)
    };
    (0..k.min(n)).map(move |i| (start + i * stride) % n)
}

/// A random stride in `1..n` sharing no factor with `n` (1 when `n` <= 2).
fn coprime_stride(n: usize) -> usize {
    if n <= 2 {
        return 1;
    }
    loop {
        let stride = fastrand::usize(1..n);
        if gcd(stride, n) == 1 {
            return stride;
        }
    }
}

fn gcd(mut a: usize, mut b: usize) -> usize {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::tests::pool;
    use proptest::{prop_assert, prop_assert_eq, proptest};

    proptest! {
        // No failure file in the source tree: a failing case prints its seed.
        #![proptest_config(proptest::test_runner::Config {
            cases: 24,
            failure_persistence: None,
            ..proptest::test_runner::Config::default()
        })]

        /// Equal, idle instances get equal shares, whatever the pool size
        /// and the number of choices: ties are broken at random
        /// (Mitzenmacher's analysis assumes a uniform sample and random
        /// tie-breaking). Within 30% of 1/N over 400·N picks (the
        /// generator is seeded, so a case is reproducible).
        #[test]
        fn equal_instances_get_equal_shares(n in 2usize..=100, choice_count in 2usize..=9, seed: u64) {
            fastrand::seed(seed);
            let endpoints = pool(n);
            let picks = 400 * n;
            let mut counts = vec![0usize; n];
            let mut out = Ranking::new();
            for _ in 0..picks {
                out.clear();
                rank_sampled(&endpoints, choice_count, |e| f64::from(e.in_flight()), &mut out);
                counts[out[0] as usize] += 1;
            }
            for (i, count) in counts.iter().enumerate() {
                prop_assert!(
                    count.abs_diff(400) <= 120,
                    "instance {} of {} got {} of {} picks (choice_count {})", i, n, count, picks, choice_count
                );
            }
        }

        /// A spread is `min(k, n)` distinct positions in range, and over
        /// many draws every position is included about equally often.
        #[test]
        fn spreads_are_distinct_and_cover_the_pool_evenly(n in 1usize..300, k in 1usize..80, seed: u64) {
            fastrand::seed(seed);
            let draws = 200;
            let mut included = vec![0usize; n];
            for _ in 0..draws {
                let positions: Vec<usize> = spread(n, k).collect();
                prop_assert_eq!(positions.len(), k.min(n));
                let mut unique = positions.clone();
                unique.sort_unstable();
                unique.dedup();
                prop_assert_eq!(unique.len(), positions.len(), "repeated position in {:?}", positions);
                for p in positions {
                    prop_assert!(p < n);
                    included[p] += 1;
                }
            }
            // Each position is included with probability min(k, n) / n:
            // expected `draws · k / n`; allow a wide binomial margin.
            let expected = (draws * k.min(n)) as f64 / n as f64;
            let margin = 6.0 * expected.sqrt() + 2.0;
            for (p, count) in included.iter().enumerate() {
                prop_assert!(
                    (*count as f64 - expected).abs() <= margin,
                    "position {} of {} included {} times, expected {:.1} (k {})", p, n, count, expected, k
                );
            }
        }

        #[test]
        fn distinct_draws_are_distinct_and_in_range(n in 1usize..200, k in 1usize..=8) {
            let k = k.min(n);
            let ids = distinct(n, k);
            prop_assert_eq!(ids.len(), k);
            for (i, id) in ids.iter().enumerate() {
                prop_assert!((*id as usize) < n);
                prop_assert!(!ids[..i].contains(id));
            }
        }

        /// Power of two choices never ranks the worse of its two samples first:
        /// whatever the loads, the first id costs no more than the second.
        #[test]
        fn p2c_never_picks_the_worse_sample(loads in proptest::collection::vec(0u32..50, 2..40)) {
            let endpoints = pool(loads.len());
            let guards: Vec<_> = endpoints
                .iter()
                .zip(&loads)
                .flat_map(|(e, n)| (0..*n).map(|_| e.start_request()).collect::<Vec<_>>())
                .collect();
            let mut out = Ranking::new();
            rank_sampled(&endpoints, 2, |e| f64::from(e.in_flight()), &mut out);
            let (a, b) = (out[0] as usize, out[1] as usize);
            prop_assert!(loads[a] <= loads[b], "picked {} (load {}) over {} (load {})", a, loads[a], b, loads[b]);
            let mut unique = out.to_vec();
            unique.sort_unstable();
            unique.dedup();
            prop_assert_eq!(unique.len(), out.len());
            drop(guards);
        }
    }
}
