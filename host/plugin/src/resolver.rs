//! The Wasm resolver adapter: a `resolver-plugin` component that fuses the
//! answers of a fan-out route. A fault falls back to the route's built-in.

use std::ops::RangeInclusive;
use std::path::Path;
use std::sync::Arc;

use http::{HeaderName, HeaderValue, StatusCode};

use super::adapter::WasmPlugin;
use super::bindings::resolver::ResolverPlugin;
use super::bindings::resolver::exports::switchyard::plugin::resolver::{
    FusedResponse, Outcome as WitOutcome, SourceAnswer, UpstreamResponse,
};
use super::request::request_info;
use super::{Fault, Limits, LoadError, PluginHost, PluginStats};
use switchyard_engines::fusion::{Answer, Fused, FusionError, Outcome, Quality, Resolve, Source};
use switchyard_engines::policy::RequestContext;

/// A Wasm resolver serving one fan-out route, as a [`Resolve`].
pub struct WasmResolver {
    plugin: WasmPlugin<ResolverPlugin>,
    /// The route's statuses that count (as a [`Resolve`]).
    accept_status: RangeInclusive<u16>,
}

impl WasmResolver {
    /// Loads the component at `path`: compiles it, checks that it exports
    /// its interface (`switchyard:plugin/…@0.1.3`), links it in the sandbox,
    /// instantiates it, calls `configure(config_json)` and asks the
    /// optional `request-needs` export which request headers to pass.
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
            accept_status: 200..=299,
        })
    }

    /// The same plugin, for a route whose answers count with a status in
    /// `accept_status` (default 200..=299).
    #[must_use]
    pub fn accepting(self, accept_status: RangeInclusive<u16>) -> Self {
        Self {
            accept_status,
            ..self
        }
    }

    /// The plugin's call and fault counters.
    pub fn stats(&self) -> Arc<PluginStats> {
        self.plugin.stats()
    }

    /// Asks the plugin to fuse `answers` (one per asked source, in arrival
    /// order). Every response is passed as received, except one with an
    /// accepted status that failed the route's checks (JSON Schema), which
    /// the plugin sees as an error with the reason.
    ///
    /// # Errors
    /// A [`Fault`] (counted and logged) — trap, deadline, memory, an error
    /// value, an invalid status or header, or sources it names that were not
    /// asked: the caller uses the built-in fallback.
    pub fn resolve(
        &self,
        request: &RequestContext<'_>,
        sources: &[Source],
        answers: &[Answer],
        accept_status: &RangeInclusive<u16>,
    ) -> Result<Fused, Fault> {
        let info = request_info(request, self.plugin.request_headers());
        let wit_answers: Vec<SourceAnswer> = answers
            .iter()
            .filter_map(|a| {
                let source = sources.get(a.source)?;
                let outcome = match (&a.outcome, &a.rejected) {
                    (Outcome::Response(r), Some(why))
                        if accept_status.contains(&r.status.as_u16()) =>
                    {
                        WitOutcome::Error(why.clone())
                    }
                    (Outcome::Response(r), _) => WitOutcome::Response(UpstreamResponse {
                        status: r.status.as_u16(),
                        headers: r
                            .headers
                            .iter()
                            .filter_map(|(k, v)| {
                                Some((k.as_str().to_string(), v.to_str().ok()?.to_string()))
                            })
                            .collect(),
                        body: r.body.to_vec(),
                    }),
                    (Outcome::Error(e), _) => WitOutcome::Error(e.clone()),
                    (Outcome::Timeout, _) => WitOutcome::Timeout,
                };
                Some(SourceAnswer {
                    source: source.name.clone(),
                    priority: source.priority,
                    weight: source.weight as f32,
                    latency_us: a.latency_us,
                    outcome,
                })
            })
            .collect();
        self.plugin.call(|bindings, store| {
            let fused = bindings
                .switchyard_plugin_resolver()
                .call_resolve(store, &info, &wit_answers)
                .map_err(|e| self.plugin.fault(&e))?
                .map_err(|e| Fault::Refused(format!("{e:?}")))?;
            convert(fused, sources, answers)
        })
    }
}

/// A fault is counted and logged by the sandbox; the route's built-in
/// resolver fuses instead.
impl Resolve for WasmResolver {
    fn fuse(
        &self,
        request: &RequestContext<'_>,
        sources: &[Source],
        _asked: &[usize],
        answers: &[Answer],
        quality: &Quality,
    ) -> Result<Result<Fused, FusionError>, Fault> {
        let fused = self.resolve(request, sources, answers, &self.accept_status)?;
        quality.record(answers.iter().map(|a| (a.source, a.accepted(), None)));
        Ok(Ok(fused))
    }
}

/// The plugin's answer checked and converted; nonsense is a fault.
fn convert(fused: FusedResponse, sources: &[Source], answers: &[Answer]) -> Result<Fused, Fault> {
    let status = StatusCode::from_u16(fused.status)
        .map_err(|_| Fault::Nonsense(format!("status {}", fused.status)))?;
    let mut headers = http::HeaderMap::new();
    for (name, value) in &fused.headers {
        let (Ok(n), Ok(v)) = (
            HeaderName::try_from(name.as_str()),
            HeaderValue::try_from(value.as_str()),
        ) else {
            return Err(Fault::Nonsense(format!("invalid header `{name}: {value}`")));
        };
        headers.append(n, v);
    }
    let mut used = Vec::with_capacity(fused.sources_used.len());
    for name in &fused.sources_used {
        match answers
            .iter()
            .find(|a| sources.get(a.source).is_some_and(|s| &s.name == name))
        {
            Some(a) => used.push(a.source),
            None => {
                return Err(Fault::Nonsense(format!(
                    "names source `{name}`, which was not asked"
                )));
            }
        }
    }
    let accepted = answers.iter().filter(|a| a.accepted()).count();
    Ok(Fused {
        status,
        headers,
        body: fused.body.into(),
        agreement: used.len() as f64 / accepted.max(1) as f64,
        used,
        conflicts: fused.conflicts,
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use switchyard_engines::fusion::{Judge, judge};

    fn sources() -> Vec<Source> {
        (0..3)
            .map(|i| Source {
                name: format!("s{i}"),
                priority: i,
                weight: 1.0,
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

        /// A resolver plugin's answer, whatever it says, is taken (a valid
        /// status, valid headers, sources that were asked) or is a fault;
        /// the host never panics on it.
        #[test]
        fn any_plugin_answer_is_taken_or_a_fault(
            status in any::<u16>(),
            headers in prop::collection::vec((".{0,12}", ".{0,12}"), 0..4),
            used in prop::collection::vec(prop_oneof![Just("s1".to_string()), ".{0,4}"], 0..4),
        ) {
            let sources = sources();
            let j = Judge { accept_status: 200..=299, needs_json: false, schema: None, vote: None };
            let answers: Vec<Answer> = (0..2)
                .map(|i| judge(&j, i, 0, Outcome::Timeout))
                .collect();
            let fused = FusedResponse {
                status,
                headers: headers.clone(),
                body: Vec::new(),
                sources_used: used.clone(),
                conflicts: 0,
            };
            let valid = StatusCode::from_u16(status).is_ok()
                && headers.iter().all(|(n, v)| {
                    HeaderName::try_from(n.as_str()).is_ok() && HeaderValue::try_from(v.as_str()).is_ok()
                })
                && used.iter().all(|u| u == "s0" || u == "s1");
            match convert(fused, &sources, &answers) {
                Ok(f) => {
                    prop_assert!(valid);
                    prop_assert_eq!(f.used.len(), used.len());
                }
                Err(fault) => prop_assert!(!valid, "{fault}"),
            }
        }
    }
}
