//! One upstream call: the attempt every route kind makes on an instance.
//!
//! A pool route's attempt ([`super::forward`]), a fan-out source
//! ([`super::fanout`]) and an MCP call ([`super::mcp`]) all send through
//! [`Pool::send`] and book through [`Pool::book`], so an attempt is made,
//! bounded, classified and booked the same way whatever asked for it:
//!
//! 1. the instance's in-flight count is taken (held with the answer while
//!    it is read);
//! 2. the request goes over the pool's pooled connections — once more on a
//!    new connection when a kept one failed before any answer and the
//!    request may be repeated (RFC 9112 §9.3.1, as nginx does), which is
//!    not an attempt of its own;
//! 3. the wait for the answer's head is bounded by the attempt's timeout;
//! 4. the result is an answer's head or an [`AttemptError`] — connect
//!    failure (nothing sent), failure after sending, or timeout;
//! 5. the caller books it on the instance ([`Pool::book`]: balancer
//!    feedback, outlier detection, breaker, `fail_timeout_ms`) once it
//!    knows the attempt was the instance's doing (a pool route first rules
//!    out the client's own body failing).

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Request, Response};

use super::pool::{Attempt, Pool, UpstreamBody};
use super::upstream::PooledBody;
use crate::balance::{Endpoint, InFlight};
use crate::dial::UpstreamError;
use crate::failover::Admission;

/// How an attempt failed before an answer's head came.
#[derive(Debug)]
pub enum AttemptError {
    /// The connection could not be made: nothing was sent.
    Connect(UpstreamError),
    /// The connection failed once the request was on its way (reset,
    /// closed): it may have been acted on.
    Failed(UpstreamError),
    /// No answer's head within the attempt's timeout (this long): it may
    /// have been acted on.
    TimedOut(Duration),
}

impl AttemptError {
    /// `URL: reason`, for logs and error answers.
    pub fn reason(&self, endpoint: &Endpoint) -> String {
        match self {
            Self::Connect(error) | Self::Failed(error) => {
                format!("{}: {}", endpoint.url, super::forward::error_chain(error))
            }
            Self::TimedOut(timeout) => format!(
                "{}: no answer within {} ms",
                endpoint.url,
                timeout.as_millis()
            ),
        }
    }
}

/// One attempt's result, not booked yet.
pub struct Sent {
    /// The answer's head, with the instance's in-flight count (hold it
    /// while the answer is read), or how the attempt failed.
    pub result: Result<(Response<PooledBody>, InFlight), AttemptError>,
    /// From sending to the answer's head (or the failure), µs.
    pub latency_us: u64,
}

impl Pool {
    /// One attempt on `endpoint`: the request `build(false)` makes (and,
    /// when a kept connection failed before any answer and the request is
    /// `resendable`, the one `build(true)` makes, on a new connection),
    /// waiting at most `timeout` for the answer's head. Not booked: see
    /// [`Pool::book`].
    pub async fn send(
        &self,
        endpoint: &Arc<Endpoint>,
        timeout: Duration,
        resendable: bool,
        build: impl FnMut(bool) -> Request<UpstreamBody>,
    ) -> Sent {
        let in_flight = endpoint.start_request();
        let started = Instant::now();
        let answered = tokio::time::timeout(
            timeout,
            self.upstreams()
                .request_or_resend(endpoint, resendable, build),
        )
        .await;
        let latency_us = started.elapsed().as_micros() as u64;
        let result = match answered {
            Ok(Ok(response)) => Ok((response, in_flight)),
            Ok(Err(error)) if error.is_connect() => Err(AttemptError::Connect(error)),
            Ok(Err(error)) => Err(AttemptError::Failed(error)),
            Err(_) => Err(AttemptError::TimedOut(timeout)),
        };
        Sent { result, latency_us }
    }

    /// Books the attempt `sent` on `endpoint` with the breaker's
    /// `admission`: an answer by its status (5xx a failure) and load
    /// report; a connect failure or a timeout also keeps the instance out
    /// of rotation for `fail_timeout_ms`.
    pub fn book(&self, endpoint: &Endpoint, admission: Admission, sent: &Sent) {
        let attempt = match &sent.result {
            Ok((response, _)) => Attempt::Answered {
                status: response.status().as_u16(),
                headers: response.headers(),
            },
            Err(AttemptError::Connect(_)) => Attempt::ConnectFailed,
            Err(AttemptError::Failed(_)) => Attempt::Failed,
            Err(AttemptError::TimedOut(_)) => Attempt::TimedOut,
        };
        self.record_attempt(endpoint, admission, attempt, sent.latency_us);
    }
}
