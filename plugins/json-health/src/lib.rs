//! # json-health: a health check on a JSON status endpoint
//!
//! Asks the host to `GET` `path` (with `accept: application/json`) and judges
//! the answer: a 2xx whose JSON body has `"status"` in `healthy` is healthy,
//! in `degraded` is degraded (still in rotation), anything else unhealthy. A
//! numeric `"load"` (0.0 idle ..= 1.0 saturated) is reported to the host,
//! where `resource-aware` balancing uses it. E.g. `{"status":"ok","load":0.3}`.
//!
//! Config (JSON from the pool's `health.plugin.config`):
//!
//! | key | type | default | meaning |
//! |---|---|---|---|
//! | `path` | string | `"/health"` | the endpoint to probe |
//! | `healthy` | list of strings | `["ok", "up", "healthy"]` | statuses that pass |
//! | `degraded` | list of strings | `["degraded", "warn"]` | statuses that pass, degraded |

use serde::Deserialize;
use switchyard_sdk::{
    Endpoint, Health, HealthCheck, PluginError, ProbeRequest, ProbeResult, Verdict,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Config {
    path: String,
    healthy: Vec<String>,
    degraded: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            path: "/health".into(),
            healthy: vec!["ok".into(), "up".into(), "healthy".into()],
            degraded: vec!["degraded".into(), "warn".into()],
        }
    }
}

/// The fields of the body this check reads.
#[derive(Deserialize)]
struct Report {
    status: Option<String>,
    load: Option<f32>,
}

struct JsonHealth(Config);

impl HealthCheck for JsonHealth {
    fn new(config: &str) -> Result<Self, PluginError> {
        let config: Config = serde_json::from_str(config)
            .map_err(|e| PluginError::InvalidConfig(format!("json-health: {e}")))?;
        if !config.path.starts_with('/') {
            return Err(PluginError::InvalidConfig(format!(
                "json-health: `path` must start with `/`, got `{}`",
                config.path
            )));
        }
        Ok(JsonHealth(config))
    }

    fn probe(&mut self, _target: &Endpoint) -> ProbeRequest {
        ProbeRequest {
            method: "GET".into(),
            path: self.0.path.clone(),
            headers: vec![("accept".into(), "application/json".into())],
            body: Vec::new(),
        }
    }

    fn evaluate(&mut self, _target: &Endpoint, result: ProbeResult) -> Verdict {
        let verdict = |health, load, reason: String| Verdict {
            health,
            score: match health {
                Health::Healthy => 1.0,
                Health::Degraded => 0.5,
                Health::Unhealthy => 0.0,
            },
            load,
            reason,
        };
        let response = match result {
            ProbeResult::Response(r) => r,
            ProbeResult::ConnectFailed(why) => return verdict(Health::Unhealthy, None, why),
            ProbeResult::TimedOut => return verdict(Health::Unhealthy, None, "timed out".into()),
        };
        if !(200..300).contains(&response.status) {
            return verdict(
                Health::Unhealthy,
                None,
                format!("status {}", response.status),
            );
        }
        let report: Report = match serde_json::from_slice(&response.body) {
            Ok(report) => report,
            Err(e) => {
                return verdict(
                    Health::Unhealthy,
                    None,
                    format!("body is not a JSON report: {e}"),
                );
            }
        };
        let load = report.load.filter(|l| l.is_finite());
        match report.status {
            Some(s) if self.0.healthy.contains(&s) => {
                verdict(Health::Healthy, load, format!("status {s}"))
            }
            Some(s) if self.0.degraded.contains(&s) => {
                verdict(Health::Degraded, load, format!("status {s}"))
            }
            Some(s) => verdict(Health::Unhealthy, load, format!("status `{s}`")),
            None => verdict(Health::Unhealthy, load, "no `status` in the report".into()),
        }
    }
}

switchyard_sdk::export_health_check!(JsonHealth);
