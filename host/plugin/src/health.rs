//! The Wasm health-check adapter: a `health-check-plugin` component that
//! says what probe to send and judges the answer; the host does the I/O.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method};

use super::adapter::WasmPlugin;
use super::bindings::balancer::switchyard::plugin::types::Endpoint as WitEndpoint;
use super::bindings::health::HealthCheckPlugin;
use super::bindings::health::exports::switchyard::plugin::health_check::{
    Health, ProbeResponse, ProbeResult,
};
use super::{Fault, Limits, LoadError, PluginHost, PluginStats};
use switchyard_engines::balance::Endpoint;
use switchyard_engines::health::HealthCheck;
use switchyard_engines::health::active::{Probe, ProbeAnswer, ProbeSpec, Verdict, VerdictHealth};

/// A Wasm health-check plugin serving one pool's probes.
pub struct WasmHealthCheck {
    plugin: WasmPlugin<HealthCheckPlugin>,
}

impl WasmHealthCheck {
    /// Loads the component at `path`: compiles it, checks that it exports
    /// its interface (`switchyard:plugin/…@0.1.3`), links it in the sandbox,
    /// instantiates it and calls `configure(config_json)`.
    ///
    /// # Errors
    /// [`LoadError`] naming the file and the reason.
    pub fn load(
        host: &PluginHost,
        path: &Path,
        config_json: String,
        limits: Limits,
    ) -> Result<Self, LoadError> {
        Ok(Self {
            plugin: WasmPlugin::load(host, path, config_json, limits)?,
        })
    }

    /// The plugin's call and fault counters.
    pub fn stats(&self) -> Arc<PluginStats> {
        self.plugin.stats()
    }
}

/// A fault is counted and logged by the sandbox; the active check makes
/// that call with the built-in HTTP check instead.
impl HealthCheck for WasmHealthCheck {
    fn probe(&self, target: &Endpoint) -> Result<Probe, Fault> {
        let target = wit_endpoint(target);
        let request = self.plugin.call(|bindings, store| {
            bindings
                .switchyard_plugin_health_check()
                .call_probe(store, &target)
                .map_err(|e| self.plugin.fault(&e))
        })?;
        let method = Method::from_bytes(request.method.as_bytes())
            .map_err(|_| Fault::Nonsense(format!("probe method `{}`", request.method)))?;
        if !request.path.starts_with('/') {
            return Err(Fault::Nonsense(format!("probe path `{}`", request.path)));
        }
        let headers = request
            .headers
            .iter()
            .map(|(k, v)| {
                Some((
                    HeaderName::try_from(k.as_str()).ok()?,
                    HeaderValue::try_from(v.as_str()).ok()?,
                ))
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| Fault::Nonsense("a probe header is not a valid header".into()))?;
        Ok(Probe::Http(ProbeSpec {
            method,
            path: request.path,
            headers,
            body: Bytes::from(request.body),
        }))
    }

    fn evaluate(&self, target: &Endpoint, answer: &ProbeAnswer) -> Result<Verdict, Fault> {
        let target = wit_endpoint(target);
        let result = match answer {
            ProbeAnswer::Response {
                status,
                headers,
                body,
                latency_us,
            } => ProbeResult::Response(ProbeResponse {
                status: *status,
                headers: headers.clone(),
                body: body.to_vec(),
                latency_us: *latency_us,
            }),
            ProbeAnswer::ConnectFailed(why) => ProbeResult::ConnectFailed(why.clone()),
            ProbeAnswer::TimedOut => ProbeResult::TimedOut,
            // A plugin asks for HTTP probes only (its WIT has no other).
            ProbeAnswer::Connected | ProbeAnswer::Grpc { .. } | ProbeAnswer::Mcp(_) => {
                return Err(Fault::Nonsense("not an answer to an HTTP probe".into()));
            }
        };
        let verdict = self.plugin.call(|bindings, store| {
            bindings
                .switchyard_plugin_health_check()
                .call_evaluate(store, &target, &result)
                .map_err(|e| self.plugin.fault(&e))
        })?;
        Ok(Verdict {
            score: verdict.score,
            health: match verdict.health {
                Health::Healthy => VerdictHealth::Healthy,
                Health::Degraded => VerdictHealth::Degraded,
                Health::Unhealthy => VerdictHealth::Unhealthy,
            },
            load: verdict.load.filter(|l| l.is_finite()),
            reason: verdict.reason,
        })
    }
}

/// An instance as the plugin API describes it.
pub(super) fn wit_endpoint(e: &Endpoint) -> WitEndpoint {
    WitEndpoint {
        id: e.id,
        address: e.url.clone(),
        weight: e.weight(),
        labels: e.labels(),
    }
}
