//! The Wasm health-check adapter: a `health-check-plugin` component that
//! says what probe to send and judges the answer; the host does the I/O.

use std::path::Path;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method};
use wasmtime::component::HasSelf;

use super::bindings::balancer::switchyard::plugin::types::Endpoint as WitEndpoint;
use super::bindings::health::exports::switchyard::plugin::health_check::{
    Health, ProbeResponse, ProbeResult,
};
use super::bindings::health::{HealthCheckPlugin, HealthCheckPluginPre};
use super::bindings::{HEALTH_CHECK_EXPORT, PluginState};
use super::sandbox::{Live, Sandbox, link};
use super::{Fault, Limits, LoadError, PluginHost};
use crate::balance::Endpoint;
use crate::health::active::{ProbeAnswer, ProbeSpec, Verdict, VerdictHealth};

/// A Wasm health-check plugin serving one pool's probes.
pub struct WasmHealthCheck {
    sandbox: Sandbox<HealthCheckPlugin>,
    pre: HealthCheckPluginPre<PluginState>,
    config_json: String,
}

impl WasmHealthCheck {
    /// Loads the component at `path`: compiles it, checks that it exports
    /// `switchyard:plugin/health-check@0.1.1`, links it in the sandbox,
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
        let (pre, component) = link(
            host,
            path,
            HEALTH_CHECK_EXPORT,
            "health-check",
            &limits,
            |linker| HealthCheckPlugin::add_to_linker::<_, HasSelf<_>>(linker, |s| s),
            HealthCheckPluginPre::new,
        )?;
        let check = Self {
            sandbox: Sandbox::new(host, path, limits, component),
            pre,
            config_json,
        };
        check.sandbox.start(path, check.instantiate())?;
        Ok(check)
    }

    /// The plugin's call and fault counters.
    pub fn stats(&self) -> std::sync::Arc<super::PluginStats> {
        self.sandbox.stats()
    }

    fn instantiate(&self) -> Result<Live<HealthCheckPlugin>, Fault> {
        self.sandbox.instantiate(
            |store| self.pre.instantiate(store),
            |bindings, store| {
                bindings
                    .switchyard_plugin_health_check()
                    .call_configure(store, &self.config_json)
            },
        )
    }

    /// The probe to send to `target`.
    ///
    /// # Errors
    /// A [`Fault`] (counted and logged): the caller sends the built-in probe.
    pub fn probe(&self, target: &Endpoint) -> Result<ProbeSpec, Fault> {
        let target = wit_endpoint(target);
        let request = self.sandbox.call(
            || self.instantiate(),
            |live| {
                live.inner
                    .switchyard_plugin_health_check()
                    .call_probe(&mut live.store, &target)
                    .map_err(|e| self.sandbox.fault(&e))
            },
        )?;
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
        Ok(ProbeSpec {
            method,
            path: request.path,
            headers,
            body: Bytes::from(request.body),
        })
    }

    /// Judges `answer`, what came of the probe sent to `target`.
    ///
    /// # Errors
    /// A [`Fault`] (counted and logged): the caller judges with the built-in rule.
    pub fn evaluate(&self, target: &Endpoint, answer: &ProbeAnswer) -> Result<Verdict, Fault> {
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
        };
        let verdict = self.sandbox.call(
            || self.instantiate(),
            |live| {
                live.inner
                    .switchyard_plugin_health_check()
                    .call_evaluate(&mut live.store, &target, &result)
                    .map_err(|e| self.sandbox.fault(&e))
            },
        )?;
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
