//! One upstream call: the attempt every route kind makes on an instance.
//!
//! A pool route's attempt ([`super::forward`]), a fan-out source
//! ([`super::fanout`]) and an MCP call ([`crate::mcp`]) all send through
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
//!
//! After a failed attempt, every route kind asks [`Pool::after_failure`]
//! what follows — one failover step: the pool's failover policy (the
//! built-in retry rules, or a failover plugin with them standing by)
//! decides on the attempt's [`AttemptFacts`]; the host then holds the
//! attempt cap, the request's deadline, and the retry budget (a connect
//! failure, which sent nothing, is exempt from the budget), and counts the
//! retry. Carrying out the step is the route kind's: a pool route retries,
//! switches pools or answers the policy's response; an MCP call retries
//! (only an idempotent one is replayable) and fails otherwise.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Request, Response};

use super::pool::{Pool, UpstreamBody};
use super::upstream::PooledBody;
use crate::balance::{Endpoint, InFlight};
use crate::dial::UpstreamError;
use crate::failover::{Active, Admission, AttemptFacts, Decision};
use crate::policy::AttemptOutcome;

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
    /// The kind of the failure, as the engines classify it.
    pub fn outcome(&self) -> AttemptOutcome {
        match self {
            Self::Connect(_) => AttemptOutcome::ConnectFailure,
            Self::Failed(_) => AttemptOutcome::Reset,
            Self::TimedOut(_) => AttemptOutcome::Timeout,
        }
    }

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

/// A failed attempt, as [`Pool::after_failure`] takes it.
pub struct FailedAttempt<'r> {
    /// The facts the failover policy decides on; `retries_left` is filled
    /// in by `after_failure` (attempt cap and retry budget).
    pub facts: AttemptFacts<'r>,
    /// No retry can follow (the attempt cap is reached, or the request
    /// cannot be sent again); another pool or the policy's own answer still
    /// can.
    pub last: bool,
    /// The request's deadline: a retry whose wait would pass it is not made.
    pub deadline: Instant,
    /// A failed answer is held for the client: a retry gives it up, so one
    /// on another instance is only made when an instance can take it.
    pub holding: bool,
}

/// What follows a failed attempt ([`Pool::after_failure`]).
pub enum AfterFailure<'p> {
    /// Attempt again after `wait`, on the instance that failed only if
    /// `same_endpoint`; `budget` is the retry budget's slot (none for a
    /// connect failure's retry), held for the retry's duration.
    Retry {
        /// The backoff, or the policy's delay (capped at `backoff_max_ms`).
        wait: Duration,
        /// The instance that just failed may take the retry.
        same_endpoint: bool,
        /// The retry budget's slot, if the retry counts against it.
        budget: Option<Active<'p>>,
    },
    /// Continue in the named pool (the failover policy's fallback).
    Fallback(String),
    /// Answer with the policy's own response.
    Respond {
        /// Status code.
        status: u16,
        /// Headers.
        headers: Vec<(String, String)>,
        /// Body.
        body: Vec<u8>,
    },
    /// No more attempts: the client gets the last failure.
    Stop,
}

impl Pool {
    /// The failover step after the failed attempt `failed` (module docs):
    /// the policy's decision within the host's limits. `has_candidate` is
    /// asked only when a held answer would be given up for a retry on
    /// another instance.
    pub fn after_failure(
        &self,
        failed: FailedAttempt<'_>,
        has_candidate: impl FnOnce() -> bool,
    ) -> AfterFailure<'_> {
        let FailedAttempt {
            mut facts,
            last,
            deadline,
            holding,
        } = failed;
        let failover = self.failover();
        // A connect failure sent nothing: its retry is not counted by the
        // retry budget (it cannot add load to a struggling instance), only
        // by the attempt cap.
        let connect = facts.failure == AttemptOutcome::ConnectFailure;
        let cap_left = failover
            .retry()
            .max_attempts()
            .saturating_sub(facts.attempt as usize);
        let budget_left = if connect {
            usize::MAX
        } else {
            self.budget().room()
        };
        facts.retries_left = cap_left.min(budget_left) as u32;
        match failover.decide(&facts) {
            Decision::Retry { .. } if last => AfterFailure::Stop,
            Decision::Retry {
                delay_ms,
                same_endpoint,
            } => {
                // The first retry goes at once; later ones after a backoff
                // (or the policy's delay).
                let wait = delay_ms.map_or_else(
                    || failover.backoff(facts.attempt),
                    |ms| Duration::from_millis(u64::from(ms)),
                );
                if Instant::now() + wait >= deadline {
                    tracing::info!(pool = %self.name(), wait_ms = wait.as_millis() as u64, "not retrying: the wait would pass the request's deadline");
                    return AfterFailure::Stop;
                }
                if holding && !same_endpoint && !has_candidate() {
                    return AfterFailure::Stop;
                }
                let budget = if connect {
                    None
                } else {
                    let Some(slot) = self.budget().try_retry() else {
                        if !holding {
                            tracing::warn!(pool = %self.name(), "retry budget exhausted; not retrying");
                        }
                        return AfterFailure::Stop;
                    };
                    Some(slot)
                };
                self.count_retry();
                AfterFailure::Retry {
                    wait,
                    same_endpoint,
                    budget,
                }
            }
            Decision::Fallback(pool) => AfterFailure::Fallback(pool),
            Decision::Respond {
                status,
                headers,
                body,
            } => AfterFailure::Respond {
                status,
                headers,
                body,
            },
            Decision::Fail => AfterFailure::Stop,
        }
    }

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
        let (outcome, headers) = match &sent.result {
            Ok((response, _)) => (
                AttemptOutcome::Answered(response.status().as_u16()),
                Some(response.headers()),
            ),
            Err(error) => (error.outcome(), None),
        };
        self.record_attempt(endpoint, admission, outcome, headers, sent.latency_us);
    }
}
