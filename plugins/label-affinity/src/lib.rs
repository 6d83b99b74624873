//! # label-affinity: route by a request header to instances with a matching label
//!
//! A request whose header `header` has value V goes to the instances whose
//! label `label` equals V (round robin among them, one cursor per label
//! value); the other instances
//! follow in the ranking, so when no matching instance can take the request
//! it falls back to the rest. A request without the header, or whose value
//! matches no instance, is balanced round robin over all of them.
//!
//! The plugin asks the host for this one header only (`requirements`), so a
//! pick marshals one short string per request.
//!
//! Config (JSON from the pool's `strategy.config`):
//!
//! | key | type | default | meaning |
//! |---|---|---|---|
//! | `header` | string | `"x-region"` | request header read (lower case) |
//! | `label` | string | `"region"` | instance label compared with it |

use std::collections::HashMap;

use serde::Deserialize;
use switchyard_sdk::{
    Balancer, Endpoint, EndpointId, EndpointStats, PluginError, RequestInfo, Requirements,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Config {
    header: String,
    label: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            header: "x-region".into(),
            label: "region".into(),
        }
    }
}

struct LabelAffinity {
    config: Config,
    /// The value of `label` of each endpoint id (index), if it has one.
    labels: Vec<Option<String>>,
    /// A round-robin cursor per known label value, and one ("") for the rest;
    /// bounded by the labels in use, whatever values requests carry.
    cursors: HashMap<String, usize>,
}

impl Balancer for LabelAffinity {
    fn new(config: &str) -> Result<Self, PluginError> {
        let mut config: Config = serde_json::from_str(config)
            .map_err(|e| PluginError::InvalidConfig(format!("label-affinity: {e}")))?;
        config.header.make_ascii_lowercase();
        Ok(Self {
            config,
            labels: Vec::new(),
            cursors: HashMap::new(),
        })
    }

    fn requirements(&self) -> Requirements {
        Requirements {
            request_headers: vec![self.config.header.clone()],
            observe: false,
        }
    }

    fn update(&mut self, _version: u64, endpoints: Vec<Endpoint>) {
        let size = endpoints
            .iter()
            .map(|e| e.id as usize + 1)
            .max()
            .unwrap_or(0);
        self.labels = vec![None; size];
        for e in endpoints {
            let value = e
                .labels
                .into_iter()
                .find(|(k, _)| *k == self.config.label)
                .map(|(_, v)| v);
            self.labels[e.id as usize] = value;
        }
        self.cursors = self
            .labels
            .iter()
            .flatten()
            .map(|v| (v.clone(), 0))
            .collect();
        self.cursors.insert(String::new(), 0);
    }

    fn pick(
        &mut self,
        request: &RequestInfo,
        candidates: &[EndpointStats],
        limit: u32,
    ) -> Result<Vec<EndpointId>, PluginError> {
        if candidates.is_empty() {
            return Err(PluginError::NoCandidates);
        }
        let wanted = request
            .headers
            .iter()
            .find(|(name, _)| *name == self.config.header)
            .map(|(_, value)| value.as_str());
        let labels = &self.labels;
        let matches = |c: &&EndpointStats| {
            wanted.is_some() && labels.get(c.id as usize).and_then(Option::as_deref) == wanted
        };
        let (group, rest): (Vec<&EndpointStats>, Vec<&EndpointStats>) =
            candidates.iter().partition(matches);
        let cursor_key = if group.is_empty() {
            ""
        } else {
            wanted.unwrap_or("")
        };
        let (first, spares) = if group.is_empty() {
            (rest, group)
        } else {
            (group, rest)
        };
        let start = match self.cursors.get_mut(cursor_key) {
            Some(cursor) => {
                *cursor = cursor.wrapping_add(1);
                *cursor % first.len()
            }
            None => 0,
        };
        let mut ranking: Vec<EndpointId> = (0..first.len())
            .map(|i| first[(start + i) % first.len()].id)
            .chain(spares.iter().map(|c| c.id))
            .collect();
        ranking.truncate(limit as usize);
        Ok(ranking)
    }
}

switchyard_sdk::export_balancer!(LabelAffinity);
