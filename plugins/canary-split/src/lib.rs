//! # canary-split: a weighted canary split by instance label
//!
//! Sends `percent`% of requests to the instances whose label `label` equals
//! `canary` (the canary group) and the rest to the other instances (the stable
//! group), round robin within each group. The split is exact over every 100
//! requests an instance decides: an accumulator adds `percent` per request
//! and a request goes to the canary group whenever it passes 100 (the same
//! error-diffusion idea as smooth weighted round robin in nginx), so there
//! are no bursts. Switchyard runs an instance per worker thread, so over
//! every 100 requests the proxy serves the split is off by at most a request
//! per worker.
//!
//! The ranking lists the chosen group first and the other group after it, so
//! when the host filters out an unreachable canary the request falls over to
//! a stable instance instead of failing. When one group has no candidates,
//! every request goes to the other.
//!
//! Config (JSON, from the pool's `strategy.config` table):
//!
//! | key | type | default | meaning |
//! |---|---|---|---|
//! | `label` | string | `"track"` | label that marks the group |
//! | `canary` | string | `"canary"` | label value of the canary group |
//! | `percent` | integer 0..=100 | `10` | share of requests sent to the canary group |

use std::collections::HashSet;

use serde::Deserialize;
use switchyard_sdk::{
    Balancer, Endpoint, EndpointId, EndpointStats, PluginError, RequestInfo, Requirements,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Config {
    label: String,
    canary: String,
    percent: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            label: "track".into(),
            canary: "canary".into(),
            percent: 10,
        }
    }
}

struct CanarySplit {
    config: Config,
    canary_ids: HashSet<EndpointId>,
    accumulator: u32,
    canary_cursor: usize,
    stable_cursor: usize,
}

impl Balancer for CanarySplit {
    fn new(config: &str) -> Result<Self, PluginError> {
        let config: Config = serde_json::from_str(config)
            .map_err(|e| PluginError::InvalidConfig(format!("canary-split: {e}")))?;
        if config.percent > 100 {
            return Err(PluginError::InvalidConfig(format!(
                "canary-split: `percent` must be 0..=100, got {}",
                config.percent
            )));
        }
        Ok(Self {
            config,
            canary_ids: HashSet::new(),
            accumulator: 0,
            canary_cursor: 0,
            stable_cursor: 0,
        })
    }

    fn requirements(&self) -> Requirements {
        // Neither headers nor feedback: the split depends on the count alone.
        Requirements {
            request_headers: Vec::new(),
            observe: false,
        }
    }

    fn update(&mut self, _version: u64, endpoints: Vec<Endpoint>) {
        self.canary_ids = endpoints
            .into_iter()
            .filter(|e| {
                e.labels
                    .iter()
                    .any(|(k, v)| *k == self.config.label && *v == self.config.canary)
            })
            .map(|e| e.id)
            .collect();
    }

    fn pick(
        &mut self,
        _request: &RequestInfo,
        candidates: &[EndpointStats],
        limit: u32,
    ) -> Result<Vec<EndpointId>, PluginError> {
        let (canary, stable): (Vec<EndpointId>, Vec<EndpointId>) = candidates
            .iter()
            .map(|c| c.id)
            .partition(|id| self.canary_ids.contains(id));
        self.accumulator += self.config.percent;
        let to_canary = self.accumulator >= 100;
        if to_canary {
            self.accumulator -= 100;
        }
        let (first, rest) = if to_canary && !canary.is_empty() || stable.is_empty() {
            (rotate(canary, &mut self.canary_cursor), stable)
        } else {
            (rotate(stable, &mut self.stable_cursor), canary)
        };
        let ranking: Vec<EndpointId> = first.into_iter().chain(rest).collect();
        if ranking.is_empty() {
            return Err(PluginError::NoCandidates);
        }
        Ok(ranking.into_iter().take(limit as usize).collect())
    }
}

/// Rotates `group` left by the cursor and advances the cursor (round robin).
fn rotate(mut group: Vec<EndpointId>, cursor: &mut usize) -> Vec<EndpointId> {
    if !group.is_empty() {
        let start = *cursor % group.len();
        group.rotate_left(start);
        *cursor = cursor.wrapping_add(1);
    }
    group
}

switchyard_sdk::export_balancer!(CanarySplit);
