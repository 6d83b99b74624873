//! Active health checks: the host probes every instance on a timer.
//!
//! Each instance has its own loop: wait `interval_ms` plus a random
//! 0..=`jitter_ms` (the first wait is a random share of the interval, so a
//! pool's probes spread out), take one of `max_concurrent` permits, probe,
//! and count. `fall` failures in a row mark the instance unhealthy; `rise`
//! passes in a row mark it healthy.
//!
//! Every probe has one shape, whatever the `kind`: the pool's
//! [`HealthCheck`] says what to make ([`Probe`]: an HTTP request, a TCP
//! connect, a gRPC `Check`, an MCP `initialize` and `ping`), the host makes
//! it within `timeout_ms` on a new connection (an HTTP body is read to
//! [`MAX_PROBE_BODY`] bytes at most, never buffered whole), and the check
//! judges the [`ProbeAnswer`]. The built-ins are in [`super::check`]. With
//! `kind = "plugin"` a health-check plugin says what to send and judges the
//! answer (and may report the instance's load, and judge it degraded, with
//! a score); when a plugin call faults, the built-in HTTP check
//! ([`super::check::HttpCheck`]) makes that call instead.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, header};
use http_body_util::{BodyExt, Full, Limited};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::check::HealthCheck;
use super::{EventKind, PoolHealth, Severity};
use super::{grpc, mcp};
use crate::balance::{CHECK_DEGRADED, Endpoint, UNHEALTHY};
use crate::policy::WithFallback;
use switchyard_config::{HealthCheckConfig, UpstreamProtocol};
use switchyard_net::dial::{Connected, connect_tcp, open};
use switchyard_net::tls::UpstreamTls;

/// Most body bytes an HTTP probe reads.
pub const MAX_PROBE_BODY: usize = 64 * 1024;

/// What one probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// The probe passed.
    Pass,
    /// The probe failed, with the reason.
    Fail(String),
}

/// What one probe came to: the outcome, and what a health plugin's verdict
/// adds to it.
#[derive(Debug, Clone, PartialEq)]
pub struct Probed {
    /// Passed or failed.
    pub outcome: ProbeOutcome,
    /// The load the instance reported (0.0..=1.0), from a plugin's verdict.
    pub load: Option<f32>,
    /// The verdict's score, 0.0 (worst) ..= 1.0 (best), from a plugin.
    pub score: Option<f32>,
    /// Passed, but judged `degraded` by a plugin, with its reason.
    pub degraded: Option<String>,
}

impl From<Verdict> for Probed {
    fn from(verdict: Verdict) -> Self {
        let (outcome, degraded) = match verdict.health {
            VerdictHealth::Unhealthy => (ProbeOutcome::Fail(verdict.reason), None),
            VerdictHealth::Degraded => (ProbeOutcome::Pass, Some(verdict.reason)),
            VerdictHealth::Healthy => (ProbeOutcome::Pass, None),
        };
        Self {
            outcome,
            load: verdict.load,
            score: Some(verdict.score),
            degraded,
        }
    }
}

impl From<ProbeOutcome> for Probed {
    fn from(outcome: ProbeOutcome) -> Self {
        Self {
            outcome,
            load: None,
            score: None,
            degraded: None,
        }
    }
}

/// An HTTP probe to send.
#[derive(Debug, Clone)]
pub struct ProbeSpec {
    /// Request method.
    pub method: Method,
    /// Path and query.
    pub path: String,
    /// Request headers.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Request body.
    pub body: Bytes,
}

/// The probe a [`HealthCheck`] asks the host to make; the host does the
/// I/O, within `timeout_ms`, on a new connection each time.
#[derive(Debug, Clone)]
pub enum Probe {
    /// An HTTP request (the `http` check, and plugins).
    Http(ProbeSpec),
    /// A TCP connection, nothing sent (the `tcp` check, HAProxy's `check`).
    Connect,
    /// `grpc.health.v1.Health/Check` for `service` over HTTP/2 (the `grpc`
    /// check, the gRPC Health Checking Protocol).
    Grpc {
        /// The service asked about; `""` is the server as a whole.
        service: String,
    },
    /// MCP's `initialize`, then `ping` with the session it gives (the `mcp`
    /// check).
    Mcp {
        /// The server's MCP endpoint, e.g. `/mcp`.
        path: String,
    },
}

/// What came of a probe.
#[derive(Debug, Clone)]
pub enum ProbeAnswer {
    /// A response; the body is cut at [`MAX_PROBE_BODY`] bytes.
    Response {
        /// Status code.
        status: u16,
        /// Response headers (values not UTF-8 are passed lossily).
        headers: Vec<(String, String)>,
        /// The first [`MAX_PROBE_BODY`] bytes of the body.
        body: Bytes,
        /// From sending to the end of the (cut) body, µs.
        latency_us: u64,
    },
    /// The TCP connection of a [`Probe::Connect`] was made.
    Connected,
    /// The answer to a [`Probe::Grpc`]: its head, trailers and first
    /// [`MAX_PROBE_BODY`] bytes.
    Grpc {
        /// HTTP status.
        status: http::StatusCode,
        /// Response headers.
        headers: http::HeaderMap,
        /// Trailers, where gRPC puts `grpc-status`.
        trailers: Option<http::HeaderMap>,
        /// The body (a length-prefixed `HealthCheckResponse`).
        body: Bytes,
    },
    /// How a [`Probe::Mcp`] exchange ended: `ping` answered, or why not.
    Mcp(Result<(), String>),
    /// Connecting failed or the connection broke.
    ConnectFailed(String),
    /// No answer within `timeout_ms`.
    TimedOut,
}

/// A health-check plugin's judgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerdictHealth {
    /// Passes.
    Healthy,
    /// Passes, but the plugin sees trouble: the instance is chosen only
    /// when no instance judged healthy is acceptable (Envoy's degraded hosts).
    Degraded,
    /// Fails.
    Unhealthy,
}

/// A health-check plugin's verdict on one probe.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// The judgement.
    pub health: VerdictHealth,
    /// 0.0 (worst) ..= 1.0 (best): orders degraded instances.
    pub score: f32,
    /// The load the instance reported, 0..=1 (feeds `resource-aware`).
    pub load: Option<f32>,
    /// Why.
    pub reason: String,
}

/// A prepared check for one pool.
pub struct ActiveCheck {
    config: HealthCheckConfig,
    check: WithFallback<dyn HealthCheck>,
    tls: Arc<UpstreamTls>,
    protocol: UpstreamProtocol,
}

impl ActiveCheck {
    /// Prepares `config` (validated at load): with `plugin` (a health-check
    /// plugin the caller loaded, for `kind = "plugin"`) the built-in HTTP
    /// check stands by; without, the built-in decides. Probes speak the
    /// pool's `protocol`, over `tls` (the pool's) to `https://` instances.
    pub fn new(
        config: &HealthCheckConfig,
        plugin: Option<Arc<dyn HealthCheck>>,
        tls: Arc<UpstreamTls>,
        protocol: UpstreamProtocol,
    ) -> Self {
        let builtin = super::check::builtin(config);
        let check = match plugin {
            Some(plugin) => WithFallback::new(plugin, Some(builtin)),
            None => WithFallback::new(Arc::from(builtin), None),
        };
        Self {
            config: config.clone(),
            check,
            tls,
            protocol,
        }
    }

    /// Probes `endpoint` once: the check says what to send, the host sends
    /// it, the check judges the answer (a call the plugin faults on is
    /// made by the built-in instead); the outcome, and what the verdict
    /// adds.
    pub async fn probe(&self, endpoint: &Endpoint) -> Probed {
        let Some(probe) = self.check.decide(|c| c.probe(endpoint)) else {
            return ProbeOutcome::Fail("no probe to send".into()).into();
        };
        let answer = self.make(endpoint, &probe).await;
        match self.check.decide(|c| c.evaluate(endpoint, &answer)) {
            Some(verdict) => verdict.into(),
            None => ProbeOutcome::Fail("no verdict".into()).into(),
        }
    }

    /// Makes `probe` to `endpoint` within `timeout_ms`.
    async fn make(&self, endpoint: &Endpoint, probe: &Probe) -> ProbeAnswer {
        match probe {
            Probe::Http(spec) => self.send(endpoint, spec).await,
            Probe::Connect => {
                let address = endpoint.address();
                self.within(async {
                    connect_tcp(address.authority, address.secure)
                        .await
                        .map(|_| ProbeAnswer::Connected)
                        .map_err(|e| format!("connect: {e}"))
                })
                .await
            }
            Probe::Grpc { service } => {
                self.within(async {
                    let mut conn = self.connect(endpoint).await?;
                    let request = grpc::check_request(service, endpoint.authority.as_str());
                    let response = conn
                        .send(endpoint.address(), request)
                        .await
                        .map_err(|e| format!("request failed: {e}"))?;
                    let (head, body) = response.into_parts();
                    let answer = Limited::new(body, MAX_PROBE_BODY)
                        .collect()
                        .await
                        .map_err(|e| format!("answer broke: {e}"))?;
                    Ok(ProbeAnswer::Grpc {
                        status: head.status,
                        headers: head.headers,
                        trailers: answer.trailers().cloned(),
                        body: answer.to_bytes(),
                    })
                })
                .await
            }
            Probe::Mcp { path } => {
                self.within(async {
                    let mut conn = self.connect(endpoint).await?;
                    Ok(ProbeAnswer::Mcp(
                        mcp::probe(&mut conn, endpoint, path).await,
                    ))
                })
                .await
            }
        }
    }

    /// A new connection to `endpoint` for one probe, in the pool's protocol.
    async fn connect(&self, endpoint: &Endpoint) -> Result<Connected<Full<Bytes>>, String> {
        open(&self.tls, endpoint.address(), self.protocol)
            .await
            .map_err(|e| format!("connect: {e}"))
    }

    /// What `exchange` came to: its answer, a broken connection with the
    /// reason, or [`ProbeAnswer::TimedOut`] past `timeout_ms`.
    async fn within(
        &self,
        exchange: impl std::future::Future<Output = Result<ProbeAnswer, String>>,
    ) -> ProbeAnswer {
        match tokio::time::timeout(Duration::from_millis(self.config.timeout_ms), exchange).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(reason)) => ProbeAnswer::ConnectFailed(reason),
            Err(_) => ProbeAnswer::TimedOut,
        }
    }

    /// Sends `spec` to `endpoint` within `timeout_ms`, reading at most
    /// [`MAX_PROBE_BODY`] bytes of the body.
    async fn send(&self, endpoint: &Endpoint, spec: &ProbeSpec) -> ProbeAnswer {
        let started = std::time::Instant::now();
        self.within(async {
            let uri: http::Uri = spec
                .path
                .parse()
                .map_err(|e| format!("bad probe path: {e}"))?;
            let mut request = Request::new(Full::new(spec.body.clone()));
            *request.method_mut() = spec.method.clone();
            *request.uri_mut() = uri;
            for (name, value) in &spec.headers {
                request.headers_mut().insert(name.clone(), value.clone());
            }
            if let Ok(host) = HeaderValue::try_from(endpoint.authority.as_str()) {
                request.headers_mut().entry(header::HOST).or_insert(host);
            }
            // A new connection per probe: a probe takes no connection the
            // data path would reuse, and sees the instance as a new client.
            let mut sender = self.connect(endpoint).await?;
            let response = sender
                .send(endpoint.address(), request)
                .await
                .map_err(|e| format!("request failed: {e}"))?;
            let status = response.status().as_u16();
            let headers = response
                .headers()
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect();
            let mut body = response.into_body();
            let mut kept = bytes::BytesMut::new();
            while kept.len() < MAX_PROBE_BODY {
                match body.frame().await {
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data() {
                            let room = MAX_PROBE_BODY - kept.len();
                            kept.extend_from_slice(&data[..data.len().min(room)]);
                        }
                    }
                    Some(Err(e)) => return Err(format!("body broke: {e}")),
                    None => break,
                }
            }
            Ok(ProbeAnswer::Response {
                status,
                headers,
                body: kept.freeze(),
                latency_us: started.elapsed().as_micros() as u64,
            })
        })
        .await
    }
}

/// Consecutive probe results of one instance, and the rise/fall rule.
#[derive(Debug, Default, Clone, Copy)]
pub struct RiseFall {
    passes: u32,
    failures: u32,
}

impl RiseFall {
    /// Counts `passed` for an instance that is `healthy` now; returns the new
    /// health when it flips (`Some(true)`: rise reached; `Some(false)`: fall reached).
    pub fn record(&mut self, passed: bool, healthy: bool, rise: u32, fall: u32) -> Option<bool> {
        if passed {
            self.passes += 1;
            self.failures = 0;
            (!healthy && self.passes >= rise).then_some(true)
        } else {
            self.failures += 1;
            self.passes = 0;
            (healthy && self.failures >= fall).then_some(false)
        }
    }
}

/// Hears each active check's result on an instance (whether it passed).
pub type OnChecked = Arc<dyn Fn(&Endpoint, bool) + Send + Sync>;

/// Runs the checks of `endpoints` until the returned set is dropped; each
/// instance comes with its consecutive results, kept by the pool across
/// membership changes (a change restarts the tasks, not the counts).
/// `checked` hears every result (whether the probe passed), for the pool's
/// circuit breakers.
pub fn spawn(
    check: Arc<ActiveCheck>,
    endpoints: Vec<(Arc<Endpoint>, Arc<Mutex<RiseFall>>)>,
    health: Arc<PoolHealth>,
    checked: OnChecked,
) -> JoinSet<()> {
    let permits = Arc::new(Semaphore::new(check.config.max_concurrent as usize));
    let mut tasks = JoinSet::new();
    for (endpoint, counts) in endpoints {
        let (check, health, permits, checked) = (
            Arc::clone(&check),
            Arc::clone(&health),
            Arc::clone(&permits),
            Arc::clone(&checked),
        );
        tasks.spawn(async move {
            let interval = check.config.interval_ms;
            tokio::time::sleep(Duration::from_millis(fastrand::u64(..interval.max(1)))).await;
            loop {
                let probed = match permits.acquire().await {
                    Ok(_permit) => check.probe(&endpoint).await,
                    Err(_) => return,
                };
                if let Some(load) = probed.load {
                    endpoint.report_load(load);
                }
                if let Some(score) = probed.score {
                    endpoint.set_health_score(score);
                }
                if probed.outcome == ProbeOutcome::Pass {
                    grade(&health, &endpoint, probed.degraded.as_deref());
                }
                let outcome = probed.outcome;
                let healthy = endpoint.health_flags() & UNHEALTHY == 0;
                let passed = outcome == ProbeOutcome::Pass;
                checked(&endpoint, passed);
                let flipped = counts
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .record(passed, healthy, check.config.rise, check.config.fall);
                if let Some(now_healthy) = flipped {
                    health.set_flag(&endpoint, UNHEALTHY, !now_healthy);
                    let (kind, severity, message) = match &outcome {
                        _ if now_healthy => (
                            EventKind::Healthy,
                            Severity::Info,
                            format!("healthy again after {} passed checks", check.config.rise),
                        ),
                        ProbeOutcome::Fail(why) => (
                            EventKind::Unhealthy,
                            Severity::Critical,
                            format!("unhealthy after {} failed checks: {why}", check.config.fall),
                        ),
                        ProbeOutcome::Pass => {
                            (EventKind::Unhealthy, Severity::Critical, "unhealthy".into())
                        }
                    };
                    health.publish(&endpoint, kind, severity, message);
                }
                let jitter = fastrand::u64(..=check.config.jitter());
                tokio::time::sleep(Duration::from_millis(interval + jitter)).await;
            }
        });
    }
    tasks
}

/// Sets or clears `endpoint`'s [`CHECK_DEGRADED`] flag after a passed
/// probe, as the verdict says (`degraded`: its reason); a change is an event.
fn grade(health: &PoolHealth, endpoint: &Endpoint, degraded: Option<&str>) {
    if endpoint.is_check_degraded() == degraded.is_some() {
        return;
    }
    health.set_flag(endpoint, CHECK_DEGRADED, degraded.is_some());
    let (kind, severity, message) = match degraded {
        Some(why) => (
            EventKind::Degraded,
            Severity::Warning,
            format!("degraded (chosen only when no healthy instance is): {why}"),
        ),
        None => (
            EventKind::Healthy,
            Severity::Info,
            "no longer degraded".to_string(),
        ),
    };
    health.publish(endpoint, kind, severity, message);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fall_then_rise() {
        let mut c = RiseFall::default();
        let (rise, fall) = (2, 3);
        assert_eq!(c.record(false, true, rise, fall), None);
        assert_eq!(c.record(false, true, rise, fall), None);
        assert_eq!(c.record(false, true, rise, fall), Some(false));
        assert_eq!(c.record(true, false, rise, fall), None);
        assert_eq!(
            c.record(false, false, rise, fall),
            None,
            "a failure resets the passes"
        );
        assert_eq!(c.record(true, false, rise, fall), None);
        assert_eq!(c.record(true, false, rise, fall), Some(true));
        assert_eq!(c.record(true, true, rise, fall), None);
    }
}
