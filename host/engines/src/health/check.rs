//! The health-check policy: what probe to send, and what its answer means.
//!
//! A [`HealthCheck`] is asked, per instance and per probe, for the probe to
//! make ([`Probe`]) and then for a [`Verdict`] on what came back
//! ([`ProbeAnswer`]); the host does the I/O in between ([`super::active`]).
//! Every kind of check has this one shape; the built-ins, one per `kind`
//! ([`builtin`]):
//!
//! | kind | check | passes when |
//! |---|---|---|
//! | `http` | [`HttpCheck`] | the configured request gets a status within `expect_status` (and `body_contains`, if set) |
//! | `tcp` | [`TcpCheck`] | the connection is made |
//! | `grpc` | [`GrpcCheck`] | `grpc.health.v1.Health/Check` answers `SERVING` |
//! | `mcp` | [`McpCheck`] | MCP's `initialize`, then `ping`, answer |
//!
//! A Wasm health-check plugin implements the same trait
//! (`switchyard::plugin::WasmHealthCheck`); the active check holds it with
//! the HTTP check standing by ([`crate::policy::WithFallback`]), so a
//! faulting plugin call is made by the built-in instead.

use bytes::Bytes;
use http::Method;

use super::active::{Probe, ProbeAnswer, ProbeSpec, Verdict, VerdictHealth};
use crate::balance::Endpoint;
use crate::policy::Fault;
use switchyard_config::{CheckKind, HealthCheckConfig};

/// A health-check policy.
///
/// Lifecycle: built with its pool; `probe` then `evaluate` per probe of
/// each instance, from the instances' probe tasks at once; synchronous and
/// short (the host sends the probe in between). Never blocks.
pub trait HealthCheck: Send + Sync + 'static {
    /// The probe to make to `target` now.
    ///
    /// # Errors
    /// A [`Fault`] when the policy could not decide (only plugins fail).
    fn probe(&self, target: &Endpoint) -> Result<Probe, Fault>;

    /// Judges `answer`, what came of the probe sent to `target`.
    ///
    /// # Errors
    /// A [`Fault`] when the policy could not decide (only plugins fail).
    fn evaluate(&self, target: &Endpoint, answer: &ProbeAnswer) -> Result<Verdict, Fault>;
}

fn _object_safe(_: &dyn HealthCheck) {}

/// The built-in check of `config`'s `kind` (for `plugin`, the HTTP check
/// that stands by for the plugin).
pub fn builtin(config: &HealthCheckConfig) -> Box<dyn HealthCheck> {
    let timeout_ms = config.timeout_ms;
    match config.kind {
        CheckKind::Http | CheckKind::Plugin => Box::new(HttpCheck::new(config)),
        CheckKind::Tcp => Box::new(TcpCheck { timeout_ms }),
        CheckKind::Grpc => Box::new(GrpcCheck {
            service: config.grpc_service.clone(),
            timeout_ms,
        }),
        CheckKind::Mcp => Box::new(McpCheck {
            path: config.path.clone(),
            timeout_ms,
        }),
    }
}

/// The verdict of a built-in: healthy (score 1.0) unless there is a
/// `failure`, then unhealthy (score 0.0) with it as the reason.
fn pass_unless(failure: Option<String>) -> Verdict {
    match failure {
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
    }
}

/// Why `answer` (to a probe of another shape than `expected`) fails: a
/// broken connection, a timeout, or an answer to some other probe.
fn unanswered(answer: &ProbeAnswer, timeout_ms: u64, expected: &str) -> String {
    match answer {
        ProbeAnswer::TimedOut => format!("no answer within {timeout_ms} ms"),
        ProbeAnswer::ConnectFailed(why) => why.clone(),
        _ => format!("not an answer to a {expected} probe"),
    }
}

/// The built-in TCP check: the connection is made within `timeout_ms`
/// (HAProxy's plain `check`).
#[derive(Debug, Clone)]
pub struct TcpCheck {
    timeout_ms: u64,
}

impl HealthCheck for TcpCheck {
    fn probe(&self, _target: &Endpoint) -> Result<Probe, Fault> {
        Ok(Probe::Connect)
    }

    fn evaluate(&self, _target: &Endpoint, answer: &ProbeAnswer) -> Result<Verdict, Fault> {
        Ok(pass_unless(match answer {
            ProbeAnswer::Connected => None,
            other => Some(unanswered(other, self.timeout_ms, "TCP")),
        }))
    }
}

/// The built-in gRPC check: `grpc.health.v1.Health/Check` for `service`
/// answers `SERVING` (the gRPC Health Checking Protocol, as Envoy's
/// `grpc_health_check`).
#[derive(Debug, Clone)]
pub struct GrpcCheck {
    service: String,
    timeout_ms: u64,
}

impl HealthCheck for GrpcCheck {
    fn probe(&self, _target: &Endpoint) -> Result<Probe, Fault> {
        Ok(Probe::Grpc {
            service: self.service.clone(),
        })
    }

    fn evaluate(&self, _target: &Endpoint, answer: &ProbeAnswer) -> Result<Verdict, Fault> {
        Ok(pass_unless(match answer {
            ProbeAnswer::Grpc {
                status,
                headers,
                trailers,
                body,
            } => super::grpc::judge(*status, headers, trailers.as_ref(), body).err(),
            other => Some(unanswered(other, self.timeout_ms, "gRPC")),
        }))
    }
}

/// The built-in MCP check: `initialize`, then `ping` with the session it
/// gives, at the server's MCP endpoint `path` (see [`super::mcp`]).
#[derive(Debug, Clone)]
pub struct McpCheck {
    path: String,
    timeout_ms: u64,
}

impl HealthCheck for McpCheck {
    fn probe(&self, _target: &Endpoint) -> Result<Probe, Fault> {
        Ok(Probe::Mcp {
            path: self.path.clone(),
        })
    }

    fn evaluate(&self, _target: &Endpoint, answer: &ProbeAnswer) -> Result<Verdict, Fault> {
        Ok(pass_unless(match answer {
            ProbeAnswer::Mcp(exchange) => exchange.clone().err(),
            other => Some(unanswered(other, self.timeout_ms, "MCP")),
        }))
    }
}

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
            other => Some(unanswered(other, self.timeout_ms, "HTTP")),
        }
    }
}

impl HealthCheck for HttpCheck {
    fn probe(&self, _target: &Endpoint) -> Result<Probe, Fault> {
        Ok(Probe::Http(self.spec.clone()))
    }

    fn evaluate(&self, _target: &Endpoint, answer: &ProbeAnswer) -> Result<Verdict, Fault> {
        Ok(pass_unless(self.failure(answer)))
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A config of `kind` with everything else default.
    fn config(kind: &str) -> HealthCheckConfig {
        serde_json::from_value(
            serde_json::json!({ "kind": kind, "path": "/mcp", "grpc_service": "pkg.Svc" }),
        )
        .unwrap()
    }

    #[test]
    fn each_kind_has_its_built_in_with_one_shape() {
        let target = Endpoint::new(
            0,
            "http://127.0.0.1:1".into(),
            "127.0.0.1:1".parse().unwrap(),
            1,
            Default::default(),
        );
        let tcp = builtin(&config("tcp"));
        assert!(matches!(tcp.probe(&target), Ok(Probe::Connect)));
        let passed = |check: &dyn HealthCheck, answer| check.evaluate(&target, &answer).unwrap();
        assert_eq!(
            passed(&*tcp, ProbeAnswer::Connected).health,
            VerdictHealth::Healthy
        );
        let timed_out = passed(&*tcp, ProbeAnswer::TimedOut);
        assert_eq!(
            (timed_out.health, timed_out.reason.as_str()),
            (VerdictHealth::Unhealthy, "no answer within 1000 ms")
        );

        let grpc = builtin(&config("grpc"));
        assert!(matches!(grpc.probe(&target), Ok(Probe::Grpc { service }) if service == "pkg.Svc"));
        let answer = |body: &'static [u8]| {
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
            ProbeAnswer::Grpc {
                status: http::StatusCode::OK,
                headers: http::HeaderMap::new(),
                trailers: Some(trailers),
                body: Bytes::from_static(body),
            }
        };
        assert_eq!(
            passed(&*grpc, answer(b"\0\0\0\0\x02\x08\x01")).health,
            VerdictHealth::Healthy
        );
        let not_serving = passed(&*grpc, answer(b"\0\0\0\0\x02\x08\x02"));
        assert_eq!(not_serving.reason, "status NOT_SERVING");
        // An answer to another kind of probe is a failure, not a pass.
        assert_eq!(
            passed(&*grpc, ProbeAnswer::Connected).health,
            VerdictHealth::Unhealthy
        );

        let mcp = builtin(&config("mcp"));
        assert!(matches!(mcp.probe(&target), Ok(Probe::Mcp { path }) if path == "/mcp"));
        assert_eq!(
            passed(&*mcp, ProbeAnswer::Mcp(Ok(()))).health,
            VerdictHealth::Healthy
        );
        let refused = passed(&*mcp, ProbeAnswer::Mcp(Err("ping: no session".into())));
        assert_eq!(refused.reason, "ping: no session");

        let plugin = builtin(&config("plugin"));
        assert!(matches!(plugin.probe(&target), Ok(Probe::Http(spec)) if spec.path == "/mcp"));
    }

    #[test]
    fn body_search_is_on_bytes() {
        assert!(contains(b"\xff\xfe{\"status\":\"ok\"}", b"\"ok\""));
        assert!(!contains(b"\xff\xfe", b"ok"));
        assert!(contains(b"", b""));
    }
}
