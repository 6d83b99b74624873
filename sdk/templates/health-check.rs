//! A health-check plugin: says what to send to an instance and judges the answer.

use switchyard_sdk::{Endpoint, Health, HealthCheck, PluginError, ProbeRequest, ProbeResult, Verdict};

struct Plugin;

impl HealthCheck for Plugin {
    fn new(_config: &str) -> Result<Self, PluginError> {
        Ok(Plugin)
    }

    fn probe(&mut self, _target: &Endpoint) -> ProbeRequest {
        ProbeRequest { method: "GET".into(), path: "/healthz".into(), headers: Vec::new(), body: Vec::new() }
    }

    /// 2xx is healthy; anything else is not.
    fn evaluate(&mut self, _target: &Endpoint, result: ProbeResult) -> Verdict {
        let (health, reason) = match result {
            ProbeResult::Response(r) if (200..300).contains(&r.status) => (Health::Healthy, format!("status {}", r.status)),
            ProbeResult::Response(r) => (Health::Unhealthy, format!("status {}", r.status)),
            ProbeResult::ConnectFailed(why) => (Health::Unhealthy, why),
            ProbeResult::TimedOut => (Health::Unhealthy, "timed out".into()),
        };
        let score = if matches!(health, Health::Healthy) { 1.0 } else { 0.0 };
        Verdict { health, score, load: None, reason }
    }
}

switchyard_sdk::export_health_check!(Plugin);
