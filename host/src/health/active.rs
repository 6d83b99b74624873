//! Active health checks: the host probes every instance on a timer.
//!
//! Each instance has its own loop: wait `interval_ms` plus a random
//! 0..=`jitter_ms` (the first wait is a random share of the interval, so a
//! pool's probes spread out), take one of `max_concurrent` permits, probe,
//! and count. `fall` failures in a row mark the instance unhealthy; `rise`
//! passes in a row mark it healthy. An HTTP probe passes when the status is
//! within `expect_status` and, if `body_contains` is set, the first
//! [`MAX_PROBE_BODY`] bytes of the body contain it (bytes, so a body that is
//! not UTF-8 is judged like any other). A TCP probe passes when the connect
//! completes. Either fails on `timeout_ms`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, header};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::{EventKind, HealthEvent, PoolHealth, Severity};
use crate::balance::{Endpoint, UNHEALTHY};
use crate::config::{CheckKind, HealthCheckConfig};

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

/// A prepared check for one pool.
pub struct ActiveCheck {
    config: HealthCheckConfig,
    method: Method,
    headers: Vec<(HeaderName, HeaderValue)>,
    client: Client<HttpConnector, Empty<Bytes>>,
}

impl ActiveCheck {
    /// Prepares `config` (validated at load).
    pub fn new(config: &HealthCheckConfig) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_millis(config.timeout_ms)));
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(1)
            .build(connector);
        Self {
            method: Method::from_bytes(config.method.as_bytes()).unwrap_or(Method::GET),
            headers: config
                .headers
                .iter()
                .filter_map(|(k, v)| {
                    Some((
                        HeaderName::try_from(k).ok()?,
                        HeaderValue::try_from(v).ok()?,
                    ))
                })
                .collect(),
            config: config.clone(),
            client,
        }
    }

    /// Probes `endpoint` once, within `timeout_ms`.
    pub async fn probe(&self, endpoint: &Endpoint) -> ProbeOutcome {
        let timeout = Duration::from_millis(self.config.timeout_ms);
        let probe = async {
            match self.config.kind {
                CheckKind::Tcp => tokio::net::TcpStream::connect(endpoint.authority.as_str())
                    .await
                    .map(|_| ProbeOutcome::Pass)
                    .unwrap_or_else(|e| ProbeOutcome::Fail(format!("connect: {e}"))),
                CheckKind::Http => self.probe_http(endpoint).await,
            }
        };
        tokio::time::timeout(timeout, probe)
            .await
            .unwrap_or_else(|_| {
                ProbeOutcome::Fail(format!("no answer within {} ms", self.config.timeout_ms))
            })
    }

    async fn probe_http(&self, endpoint: &Endpoint) -> ProbeOutcome {
        let uri = format!("http://{}{}", endpoint.authority, self.config.path);
        let mut request = Request::new(Empty::<Bytes>::new());
        *request.method_mut() = self.method.clone();
        match uri.parse() {
            Ok(uri) => *request.uri_mut() = uri,
            Err(e) => return ProbeOutcome::Fail(format!("bad probe URI {uri}: {e}")),
        }
        for (name, value) in &self.headers {
            request.headers_mut().insert(name.clone(), value.clone());
        }
        if let Ok(host) = HeaderValue::try_from(endpoint.authority.as_str()) {
            request.headers_mut().entry(header::HOST).or_insert(host);
        }
        let response = match self.client.request(request).await {
            Ok(response) => response,
            Err(e) => return ProbeOutcome::Fail(format!("request failed: {e}")),
        };
        let status = response.status().as_u16();
        let [low, high] = self.config.expect_status;
        if !(low..=high).contains(&status) {
            return ProbeOutcome::Fail(format!("status {status}, expected {low}..={high}"));
        }
        let Some(needle) = &self.config.body_contains else {
            return ProbeOutcome::Pass;
        };
        let body = match Limited::new(response.into_body(), MAX_PROBE_BODY)
            .collect()
            .await
        {
            Ok(collected) => collected.to_bytes(),
            Err(_) => {
                return ProbeOutcome::Fail(format!(
                    "body larger than {MAX_PROBE_BODY} bytes or broken"
                ));
            }
        };
        if contains(&body, needle.as_bytes()) {
            ProbeOutcome::Pass
        } else {
            ProbeOutcome::Fail(format!("body does not contain `{needle}`"))
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
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

/// Runs the checks of `endpoints` until the returned set is dropped.
pub fn spawn(
    check: Arc<ActiveCheck>,
    endpoints: Vec<Arc<Endpoint>>,
    health: Arc<PoolHealth>,
) -> JoinSet<()> {
    let permits = Arc::new(Semaphore::new(check.config.max_concurrent as usize));
    let mut tasks = JoinSet::new();
    for endpoint in endpoints {
        let (check, health, permits) = (
            Arc::clone(&check),
            Arc::clone(&health),
            Arc::clone(&permits),
        );
        tasks.spawn(async move {
            let interval = check.config.interval_ms;
            tokio::time::sleep(Duration::from_millis(fastrand::u64(..interval.max(1)))).await;
            let mut counts = RiseFall::default();
            loop {
                let outcome = match permits.acquire().await {
                    Ok(_permit) => check.probe(&endpoint).await,
                    Err(_) => return,
                };
                let healthy = endpoint.health_flags() & UNHEALTHY == 0;
                let passed = outcome == ProbeOutcome::Pass;
                if let Some(now_healthy) =
                    counts.record(passed, healthy, check.config.rise, check.config.fall)
                {
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
                    health.events().publish(HealthEvent::new(
                        health.pool(),
                        Some(&endpoint.url),
                        kind,
                        severity,
                        message,
                    ));
                }
                let jitter = fastrand::u64(..=check.config.jitter());
                tokio::time::sleep(Duration::from_millis(interval + jitter)).await;
            }
        });
    }
    tasks
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

    #[test]
    fn body_search_is_on_bytes() {
        assert!(contains(b"\xff\xfe{\"status\":\"ok\"}", b"\"ok\""));
        assert!(!contains(b"\xff\xfe", b"ok"));
        assert!(contains(b"", b""));
    }
}
