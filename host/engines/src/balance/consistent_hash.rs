//! `consistent-hash`: the same key goes to the same instance.
//!
//! The key is read from the request (`key`: a header, a cookie, a query
//! parameter, the path or the client IP), hashed with xxHash64 (as Envoy
//! does), and looked up in one of two structures built from the instances'
//! URLs and weights:
//!
//! - **ring** ([`Ring`]; Karger et al., "Consistent hashing and random trees",
//!   1997, in Ketama's form): `vnodes_per_weight` virtual nodes per unit of
//!   weight; a key belongs to the first node clockwise. Adding an instance to
//!   N moves about 1/(N+1) of the keys, all to the new one.
//! - **maglev** ([`Maglev`]; Eisenbud et al., "Maglev: A Fast and Reliable
//!   Software Network Load Balancer", NSDI 2016): a `table_size` (prime)
//!   lookup table filled from per-instance permutations; O(1) lookups and
//!   near-perfect balance, with slightly more disruption than a ring on change.
//!
//! The ranking continues along the ring (or the table) so failover goes to
//! the key's next instance, and the ring stays put while instances flap: the
//! engine, not the strategy, skips unfit ones.
//!
//! **Bounded loads** (Mirrokni, Thorup and Zadimoghaddam, "Consistent Hashing
//! with Bounded Loads", SODA 2018): with `bounded_load_factor` c, an instance
//! accepts a request only while its in-flight count is below
//! ⌈c × (total in flight + 1) / N⌉; the key goes to the first instance along
//! its walk that has room (one always has).
//!
//! A request **without the key** (header, cookie or parameter absent) is
//! balanced at random, as Envoy does when its hash policy yields no key.

use std::net::IpAddr;
use std::ops::ControlFlow;
use std::sync::Arc;

use http::HeaderName;
use xxhash_rust::xxh64::xxh64;

use super::maglev::Maglev;
use super::ring::Ring;
use super::{
    ById, Endpoint, EndpointId, RANK_LIMIT, Random, Ranking, RequestContext, Strategy, cookie_value,
};
use crate::policy::Fault;
use switchyard_config::{ConsistentHashConfig, HashAlgorithm, HashKey};

/// Consistent hashing on a ring or a Maglev table, with optional bounded loads.
#[derive(Debug)]
pub struct ConsistentHash {
    key: Key,
    table: Table,
    bounded_load_factor: Option<f64>,
    name: String,
    /// Where each instance of the table stands in the pool (bounded loads).
    positions: ById<u32>,
}

#[derive(Debug)]
enum Key {
    Header(HeaderName),
    Cookie(String),
    Query(String),
    Path,
    ClientIp,
}

#[derive(Debug)]
enum Table {
    Ring(Ring),
    Maglev(Maglev),
}

impl ConsistentHash {
    /// Builds the ring or table for `endpoints`.
    pub fn new(endpoints: &[Arc<Endpoint>], config: &ConsistentHashConfig) -> Self {
        let key = match &config.key {
            // Validated at config load; an invalid name cannot reach here.
            HashKey::Header(name) => HeaderName::try_from(name.as_str())
                .map(Key::Header)
                .unwrap_or(Key::Path),
            HashKey::Cookie(name) => Key::Cookie(name.clone()),
            HashKey::Query(name) => Key::Query(name.clone()),
            HashKey::Path => Key::Path,
            HashKey::ClientIp => Key::ClientIp,
        };
        let table = match config.algorithm {
            HashAlgorithm::Ring => {
                Table::Ring(Ring::new(endpoints, config.vnodes_per_weight as usize))
            }
            HashAlgorithm::Maglev => {
                Table::Maglev(Maglev::new(endpoints, config.table_size as usize))
            }
        };
        let name = match config.algorithm {
            HashAlgorithm::Ring => "consistent-hash ring",
            HashAlgorithm::Maglev => "consistent-hash maglev",
        };
        Self {
            key,
            table,
            positions: ById::positions(endpoints),
            bounded_load_factor: config.bounded_load_factor,
            name: name.to_string(),
        }
    }

    /// The key's hash, or `None` when the request lacks the key.
    fn hash(&self, request: &RequestContext<'_>) -> Option<u64> {
        match &self.key {
            Key::Header(name) => request.headers.get(name).map(|v| xxh64(v.as_bytes(), 0)),
            Key::Cookie(name) => {
                cookie_value(request.headers, name).map(|v| xxh64(v.as_bytes(), 0))
            }
            Key::Query(name) => query(request.path, name).map(|v| xxh64(v.as_bytes(), 0)),
            Key::Path => {
                let path = request.path.split('?').next().unwrap_or(request.path);
                Some(xxh64(path.as_bytes(), 0))
            }
            Key::ClientIp => Some(match request.client_addr.ip() {
                IpAddr::V4(ip) => xxh64(&ip.octets(), 0),
                IpAddr::V6(ip) => xxh64(&ip.octets(), 0),
            }),
        }
    }

    /// Visits the instances in the key's lookup order (repeats included)
    /// until `visit` breaks or the structure has been walked once.
    fn walk(&self, hash: u64, visit: impl FnMut(EndpointId) -> ControlFlow<()>) {
        match &self.table {
            Table::Ring(ring) => ring.walk(hash, visit),
            Table::Maglev(maglev) => maglev.walk(hash, visit),
        }
    }

    /// Appends the distinct instances of the key's walk, `first` (if any)
    /// leading, up to [`RANK_LIMIT`].
    fn collect(&self, hash: u64, first: Option<EndpointId>, pool_size: usize, out: &mut Ranking) {
        let limit = RANK_LIMIT.min(pool_size);
        out.extend(first);
        self.walk(hash, |id| {
            if !out.contains(&id) {
                out.push(id);
            }
            if out.len() >= limit {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
    }
}

impl Strategy for ConsistentHash {
    fn name(&self) -> &str {
        &self.name
    }

    fn rank(
        &self,
        request: &RequestContext<'_>,
        endpoints: &[Arc<Endpoint>],
        out: &mut Ranking,
    ) -> Result<(), Fault> {
        let Some(hash) = self.hash(request) else {
            return Random.rank(request, endpoints, out);
        };
        let first = self.bounded_load_factor.and_then(|factor| {
            // Bounded loads: the first instance along the walk with room.
            let n = endpoints.len().max(1);
            let total: u64 = endpoints.iter().map(|e| u64::from(e.in_flight())).sum();
            let capacity = (factor * (total + 1) as f64 / n as f64).ceil() as u64;
            let mut found = None;
            self.walk(hash, |id| {
                let in_flight = self
                    .positions
                    .get(id)
                    .map_or(u64::MAX, |i| u64::from(endpoints[*i as usize].in_flight()));
                if in_flight < capacity {
                    found = Some(id);
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            });
            found
        });
        self.collect(hash, first, endpoints.len(), out);
        Ok(())
    }
}

/// The raw value of query parameter `name` in `path` (`a=1&b=2`).
fn query<'a>(path: &'a str, name: &str) -> Option<&'a str> {
    let (_, query) = path.split_once('?')?;
    query
        .split('&')
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The hash of an instance's identity (its URL) with `seed`.
pub(super) fn identity_hash(endpoint: &Endpoint, seed: u64) -> u64 {
    xxh64(endpoint.url.as_bytes(), seed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::tests::{pool, request, weighted_pool};
    use http::HeaderMap;

    fn strategy(
        algorithm: HashAlgorithm,
        key: &str,
        endpoints: &[Arc<Endpoint>],
    ) -> ConsistentHash {
        ConsistentHash::new(
            endpoints,
            &ConsistentHashConfig {
                key: HashKey::try_from(key.to_string()).unwrap(),
                algorithm,
                bounded_load_factor: None,
                vnodes_per_weight: 160,
                table_size: 65_537,
            },
        )
    }

    fn first(s: &ConsistentHash, endpoints: &[Arc<Endpoint>], headers: &HeaderMap) -> EndpointId {
        let mut out = Ranking::new();
        s.rank(&request(headers), endpoints, &mut out).unwrap();
        out[0]
    }

    #[test]
    fn keys_come_from_headers_cookies_and_queries() {
        let mut headers = HeaderMap::new();
        headers.insert("x-user", "alice".parse().unwrap());
        headers.append("cookie", "a=1; session=s42".parse().unwrap());
        assert_eq!(cookie_value(&headers, "session"), Some("s42"));
        assert_eq!(cookie_value(&headers, "missing"), None);
        assert_eq!(query("/p?x=1&user=bob&flag", "user"), Some("bob"));
        assert_eq!(query("/p?x=1&flag", "flag"), Some(""));
        assert_eq!(query("/p", "user"), None);
    }

    #[test]
    fn the_same_key_goes_to_the_same_instance() {
        let endpoints = pool(10);
        for algorithm in [HashAlgorithm::Ring, HashAlgorithm::Maglev] {
            let s = strategy(algorithm, "header:x-user", &endpoints);
            let mut headers = HeaderMap::new();
            headers.insert("x-user", "alice".parse().unwrap());
            let id = first(&s, &endpoints, &headers);
            for _ in 0..20 {
                assert_eq!(first(&s, &endpoints, &headers), id);
            }
        }
    }

    #[test]
    fn bounded_loads_skip_a_full_instance() {
        let endpoints = pool(4);
        let mut config = ConsistentHashConfig {
            key: HashKey::Path,
            algorithm: HashAlgorithm::Ring,
            bounded_load_factor: Some(1.25),
            vnodes_per_weight: 160,
            table_size: 65_537,
        };
        let headers = HeaderMap::new();
        let home = first(
            &ConsistentHash::new(&endpoints, &config),
            &endpoints,
            &headers,
        );
        // Load the key's home instance far past 1.25 × the average.
        let _busy: Vec<_> = (0..10)
            .map(|_| endpoints[home as usize].start_request())
            .collect();
        let bounded = ConsistentHash::new(&endpoints, &config);
        assert_ne!(first(&bounded, &endpoints, &headers), home);
        config.bounded_load_factor = None;
        let unbounded = ConsistentHash::new(&endpoints, &config);
        assert_eq!(first(&unbounded, &endpoints, &headers), home);
    }

    /// The first instance of each of `keys` in `strategy`.
    fn homes(s: &ConsistentHash, keys: &[u64]) -> Vec<EndpointId> {
        keys.iter()
            .map(|h| {
                let mut first = None;
                s.walk(*h, |id| {
                    first = Some(id);
                    ControlFlow::Break(())
                });
                first.unwrap()
            })
            .collect()
    }

    use proptest::{prop_assert, proptest};

    proptest! {
        /// Adding one instance to N moves about 1/(N+1) of the keys; on a ring
        /// every moved key moves to the new instance (Karger et al.), Maglev
        /// moves a little more (Eisenbud et al. report near-minimal disruption).
        #[test]
        fn adding_an_instance_remaps_about_one_in_n_plus_one(n in 3usize..24, seed in 0u64..1000) {
            let keys: Vec<u64> = (0..4000u64).map(|k| xxh64(&k.to_le_bytes(), seed)).collect();
            let before_pool = pool(n);
            let after_pool = pool(n + 1);
            for algorithm in [HashAlgorithm::Ring, HashAlgorithm::Maglev] {
                let before = homes(&strategy(algorithm, "path", &before_pool), &keys);
                let after = homes(&strategy(algorithm, "path", &after_pool), &keys);
                let moved: Vec<usize> = (0..keys.len()).filter(|i| before[*i] != after[*i]).collect();
                let fraction = moved.len() as f64 / keys.len() as f64;
                let ideal = 1.0 / (n + 1) as f64;
                match algorithm {
                    HashAlgorithm::Ring => {
                        prop_assert!(moved.iter().all(|i| after[*i] == n as EndpointId));
                        prop_assert!(fraction < 2.5 * ideal, "ring moved {fraction}, ideal {ideal}");
                    }
                    HashAlgorithm::Maglev => {
                        prop_assert!(fraction < 2.5 * ideal + 0.02, "maglev moved {fraction}, ideal {ideal}");
                    }
                }
                prop_assert!(fraction > 0.3 * ideal, "{algorithm:?} moved only {fraction}");
            }
        }

        /// Weighted: Maglev's slots follow the weights within 2% of the table;
        /// the ring's keys within 40% of each instance's weighted share
        /// (160 virtual nodes per weight unit leave a ~8% standard deviation).
        #[test]
        fn shares_follow_the_weights(weights in proptest::collection::vec(1u32..5, 2..8)) {
            let endpoints = weighted_pool(&weights);
            let total: u32 = weights.iter().sum();
            let m = 65_537usize;
            let slots = Maglev::new(&endpoints, m).slots(weights.len());
            for (i, w) in weights.iter().enumerate() {
                let ideal = f64::from(*w) / f64::from(total);
                let got = slots[i] as f64 / m as f64;
                prop_assert!((got - ideal).abs() < 0.02, "maglev {i}: {got} vs {ideal}");
            }
            let ring = strategy(HashAlgorithm::Ring, "path", &endpoints);
            let keys: Vec<u64> = (0..20_000u64).map(|k| xxh64(&k.to_le_bytes(), 7)).collect();
            let mut counts = vec![0usize; weights.len()];
            for home in homes(&ring, &keys) {
                counts[home as usize] += 1;
            }
            for (i, w) in weights.iter().enumerate() {
                let ideal = f64::from(*w) / f64::from(total);
                let got = counts[i] as f64 / keys.len() as f64;
                prop_assert!((got - ideal).abs() < 0.4 * ideal, "ring {i}: {got} vs {ideal}");
            }
        }

        /// Maglev gives every instance of equal weight M/N slots, ±1%.
        #[test]
        fn maglev_slots_are_balanced(n in 2usize..64) {
            let m = 65_537usize;
            let slots = Maglev::new(&pool(n), m).slots(n);
            let ideal = m as f64 / n as f64;
            for s in slots {
                prop_assert!((s as f64 - ideal).abs() <= (ideal * 0.01).max(1.0), "{s} vs {ideal}");
            }
        }
    }
}
