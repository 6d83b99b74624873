//! The health-check policy: what probe to send, and what its answer means.
//!
//! A [`HealthCheck`] is asked, per instance and per probe, for the probe to
//! send ([`ProbeSpec`]) and then for a [`Verdict`] on what came back
//! ([`ProbeAnswer`]); the host does the I/O in between ([`super::active`]).
//! The built-in is [`HttpCheck`]: the configured request, and a status
//! within `expect_status` (and `body_contains`, if set) passes. A Wasm
//! health-check plugin implements the same trait
//! (`switchyard::plugin::WasmHealthCheck`); the active check holds it with the
//! built-in standing by ([`crate::policy::WithFallback`]), so a faulting
//! plugin call is made by the built-in instead.

use bytes::Bytes;
use http::Method;

use super::active::{ProbeAnswer, ProbeSpec, Verdict, VerdictHealth};
use crate::balance::Endpoint;
use crate::policy::Fault;
use switchyard_config::HealthCheckConfig;

/// A health-check policy.
///
/// Lifecycle: built with its pool; `probe` then `evaluate` per probe of
/// each instance, from the instances' probe tasks at once; synchronous and
/// short (the host sends the probe in between). Never blocks.
pub trait HealthCheck: Send + Sync + 'static {
    /// The probe to send to `target` now.
    ///
    /// # Errors
    /// A [`Fault`] when the policy could not decide (only plugins fail).
    fn probe(&self, target: &Endpoint) -> Result<ProbeSpec, Fault>;

    /// Judges `answer`, what came of the probe sent to `target`.
    ///
    /// # Errors
    /// A [`Fault`] when the policy could not decide (only plugins fail).
    fn evaluate(&self, target: &Endpoint, answer: &ProbeAnswer) -> Result<Verdict, Fault>;
}

fn _object_safe(_: &dyn HealthCheck) {}

/// The built-in HTTP check: the configured request; a status within
/// `expect_status` and, if set, `body_contains` in the first
/// [`super::active::MAX_PROBE_BODY`] bytes of the body pass (HAProxy's
/// `http-check expect`). Healthy scores 1.0, unhealthy 0.0.
#[derive(Debug, Clone)]
pub struct HttpCheck {
    spec: ProbeSpec,
    expect_status: [u16; 2],
    body_contains: Option<String>,
    timeout_ms: u64,
}

impl HttpCheck {
    /// The check `config` describes (validated at load).
    pub fn new(config: &HealthCheckConfig) -> Self {
        Self {
            spec: ProbeSpec {
                method: Method::from_bytes(config.method.as_bytes()).unwrap_or(Method::GET),
                path: config.path.clone(),
                headers: switchyard_config::header_pairs(&config.headers),
                body: Bytes::new(),
            },
            expect_status: config.expect_status,
            body_contains: config.body_contains.clone(),
            timeout_ms: config.timeout_ms,
        }
    }

    /// Why `answer` fails the rule, or `None` when it passes.
    fn failure(&self, answer: &ProbeAnswer) -> Option<String> {
        match answer {
            ProbeAnswer::TimedOut => Some(format!("no answer within {} ms", self.timeout_ms)),
            ProbeAnswer::ConnectFailed(why) => Some(why.clone()),
            ProbeAnswer::Response { status, body, .. } => {
                let [low, high] = self.expect_status;
                if !(low..=high).contains(status) {
                    return Some(format!("status {status}, expected {low}..={high}"));
                }
                match &self.body_contains {
                    Some(needle) if !contains(body, needle.as_bytes()) => {
                        Some(format!("body does not contain `{needle}`"))
                    }
                    _ => None,
                }
            }
        }
    }
}

impl HealthCheck for HttpCheck {
    fn probe(&self, _target: &Endpoint) -> Result<ProbeSpec, Fault> {
        Ok(self.spec.clone())
    }

    fn evaluate(&self, _target: &Endpoint, answer: &ProbeAnswer) -> Result<Verdict, Fault> {
        Ok(match self.failure(answer) {
            None => Verdict {
                health: VerdictHealth::Healthy,
                score: 1.0,
                load: None,
                reason: "passed".into(),
            },
            Some(reason) => Verdict {
                health: VerdictHealth::Unhealthy,
                score: 0.0,
                load: None,
                reason,
            },
        })
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_search_is_on_bytes() {
        assert!(contains(b"\xff\xfe{\"status\":\"ok\"}", b"\"ok\""));
        assert!(!contains(b"\xff\xfe", b"ok"));
        assert!(contains(b"", b""));
    }
}
