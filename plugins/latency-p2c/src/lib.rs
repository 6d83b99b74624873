//! # latency-p2c: latency-aware power of two choices, as a plugin
//!
//! Samples two candidates at random and ranks first the one with the lower
//! cost = EWMA latency × (in-flight + 1), the rule of Linkerd's balancer
//! (Mitzenmacher's power of two choices over a latency × load cost). The host
//! sends each candidate's `ewma-latency-us` and `in-flight` with every pick,
//! so the plugin keeps no state but its random generator and asks for no
//! `observe` calls. A candidate with no latency data yet costs
//! `default_latency_us`, so new instances are tried without being flooded.
//!
//! Config (JSON from the pool's `strategy.config`):
//!
//! | key | type | default | meaning |
//! |---|---|---|---|
//! | `default_latency_us` | integer | `30000` | cost of an instance with no data |
//!
//! It shows what a built-in (`fastest-response`) does, written against the
//! plugin API in about fifty lines.

use std::hash::{BuildHasher, Hasher};

use serde::Deserialize;
use switchyard_sdk::{Balancer, EndpointId, EndpointStats, PluginError, RequestInfo, Requirements};

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Config {
    default_latency_us: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            default_latency_us: 30_000,
        }
    }
}

struct LatencyP2c {
    default_latency_us: u64,
    rng: u64,
}

impl Balancer for LatencyP2c {
    fn new(config: &str) -> Result<Self, PluginError> {
        let Config { default_latency_us } = serde_json::from_str(config)
            .map_err(|e| PluginError::InvalidConfig(format!("latency-p2c: {e}")))?;
        // Seeded from the host's hash seed: the only entropy a plugin gets.
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(default_latency_us);
        Ok(Self {
            default_latency_us,
            rng: hasher.finish() | 1,
        })
    }

    fn requirements(&self) -> Requirements {
        Requirements {
            request_headers: Vec::new(),
            observe: false,
        }
    }

    fn pick(
        &mut self,
        _request: &RequestInfo,
        candidates: &[EndpointStats],
        limit: u32,
    ) -> Result<Vec<EndpointId>, PluginError> {
        let n = candidates.len();
        if n == 0 {
            return Err(PluginError::NoCandidates);
        }
        let a = self.below(n);
        let b = if n > 1 {
            (a + 1 + self.below(n - 1)) % n
        } else {
            a
        };
        let (first, second) = if self.cost(&candidates[b]) < self.cost(&candidates[a]) {
            (b, a)
        } else {
            (a, b)
        };
        // The winner, the loser, then the rest in order as failover spares.
        let mut ranking = vec![candidates[first].id];
        if second != first {
            ranking.push(candidates[second].id);
        }
        ranking.extend(
            (0..n)
                .filter(|i| *i != first && *i != second)
                .map(|i| candidates[i].id),
        );
        ranking.truncate(limit as usize);
        Ok(ranking)
    }
}

impl LatencyP2c {
    fn cost(&self, c: &EndpointStats) -> u64 {
        let latency = if c.ewma_latency_us == 0 {
            self.default_latency_us
        } else {
            c.ewma_latency_us
        };
        latency.saturating_mul(u64::from(c.in_flight) + 1)
    }

    /// A uniform draw from 0..n (xorshift64*).
    fn below(&mut self, n: usize) -> usize {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        (self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) % n as u64) as usize
    }
}

switchyard_sdk::export_balancer!(LatencyP2c);
