//! The failover policy: what happens after a failed attempt.
//!
//! A [`FailoverPolicy`] is asked once per failed attempt, with the
//! [`AttemptFacts`], and answers a [`Decision`]: retry (after a delay, on
//! another instance or the same one), continue in another pool, answer with
//! a response of its own, or give up. The built-in is the pool's
//! [`RetryPolicy`]; a Wasm failover plugin implements the same trait
//! (`switchyard::plugin::WasmFailover`). [`Failover`] holds the configured one
//! with the built-in standing by ([`WithFallback`]) and keeps the host's
//! limits whatever a policy says: a retry needs a request that can be sent
//! again (or one that was never sent: a connect failure), and a plugin's
//! delay is capped at `backoff_max_ms`. The attempt cap and the retry
//! budget are the attempt loop's (in `switchyard::proxy`); nothing here sends.

use std::sync::Arc;
use std::time::Duration;

use super::RetryPolicy;
use crate::balance::EndpointId;
use crate::policy::{AttemptOutcome, Fault, RequestContext, WithFallback};

/// The facts of one failed attempt.
#[derive(Debug, Clone, Copy)]
pub struct AttemptFacts<'a> {
    /// The request (a plugin gets no headers of it).
    pub request: RequestContext<'a>,
    /// The instance that failed.
    pub endpoint: EndpointId,
    /// How it failed.
    pub failure: AttemptOutcome,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// Since the request arrived, ms.
    pub elapsed_ms: u64,
    /// Instances tried so far, this one included.
    pub tried: &'a [EndpointId],
    /// Whether the request can be sent again (its body is empty or
    /// buffered; an MCP call: only an idempotent one).
    pub replayable: bool,
    /// Whether the request may be repeated once it may have reached the
    /// instance: an idempotent method (or the pool's
    /// `retry_non_idempotent`), or an MCP call its tool's annotations or
    /// `tools.NAME.idempotent` mark idempotent. The built-in retries
    /// anything but a connect failure only then.
    pub idempotent: bool,
    /// Retries still allowed (attempt cap and retry budget).
    pub retries_left: u32,
    /// Instances of the pool that could take a retry and were not tried
    /// yet (breakers aside). With none, a retry goes to a tried instance.
    pub untried: u32,
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Try again, after `delay_ms` (`None`: the retry policy's backoff), on
    /// the instance that just failed only if `same_endpoint`.
    Retry {
        /// Wait first, ms; `None` for the pool's jittered backoff.
        delay_ms: Option<u32>,
        /// Allow the instance that just failed.
        same_endpoint: bool,
    },
    /// Continue in the named pool.
    Fallback(String),
    /// Answer with this response.
    Respond {
        /// Status code.
        status: u16,
        /// Headers.
        headers: Vec<(String, String)>,
        /// Body.
        body: Vec<u8>,
    },
    /// Give up: the client gets the last failure.
    Fail,
}

/// A failover policy: decides after a failed attempt.
///
/// Lifecycle: built with its pool; `on_failure` is called from many
/// threads at once, synchronously, once per failed attempt. Never blocks.
pub trait FailoverPolicy: Send + Sync + 'static {
    /// Short name for logs, e.g. `retry` or `plugin retry_schedule.wasm`.
    fn name(&self) -> &str;

    /// Whether this policy judges every 4xx and 5xx answer (a plugin), or
    /// only 5xx and the statuses the retry policy lists (the built-in).
    fn judges_every_error(&self) -> bool {
        false
    }

    /// What to do after the failed attempt `facts`.
    ///
    /// # Errors
    /// A [`Fault`] when the policy could not decide (only plugins fail).
    fn on_failure(&self, facts: &AttemptFacts<'_>) -> Result<Decision, Fault>;
}

fn _object_safe(_: &dyn FailoverPolicy) {}

/// The built-in: retry a retryable failure ([`RetryPolicy::retryable`]) on
/// another instance after the policy's backoff; give up otherwise, and when
/// every instance was tried.
impl FailoverPolicy for RetryPolicy {
    fn name(&self) -> &str {
        "retry"
    }

    fn on_failure(&self, facts: &AttemptFacts<'_>) -> Result<Decision, Fault> {
        Ok(
            if facts.untried > 0 && self.retryable(facts.failure, facts.idempotent) {
                Decision::Retry {
                    delay_ms: None,
                    same_endpoint: false,
                }
            } else {
                Decision::Fail
            },
        )
    }
}

/// A pool's failover: the configured policy, the built-in retry policy
/// standing by, and the host's limits over both.
pub struct Failover {
    policy: WithFallback<dyn FailoverPolicy>,
    retry: RetryPolicy,
}

impl Failover {
    /// Failover by `plugin` when given, else by `retry` (the built-in, which
    /// also stands in when the plugin faults and sets the limits).
    pub fn new(retry: RetryPolicy, plugin: Option<Arc<dyn FailoverPolicy>>) -> Self {
        let policy = match plugin {
            Some(plugin) => WithFallback::new(plugin, Some(Box::new(retry.clone()))),
            None => WithFallback::new(Arc::new(retry.clone()) as Arc<dyn FailoverPolicy>, None),
        };
        Self { policy, retry }
    }

    /// The configured plugin, when the policy is one (kept across a
    /// membership change of its pool).
    pub fn plugin(&self) -> Option<&Arc<dyn FailoverPolicy>> {
        self.policy
            .fallback()
            .is_some()
            .then(|| self.policy.primary())
    }

    /// The retry rules: attempt cap, per-try timeout, replay limit, backoff.
    pub fn retry(&self) -> &RetryPolicy {
        &self.retry
    }

    /// Whether an answer with `status` is a failed attempt: 5xx and the
    /// listed statuses, or every 4xx and 5xx for a policy that judges them.
    pub fn is_failure(&self, status: u16) -> bool {
        status >= 500
            || self.retry.status_retryable(status)
            || (status >= 400 && self.policy.primary().judges_every_error())
    }

    /// Decides after the failed attempt `facts`. The host's limits hold
    /// whatever the policy said: a retry needs a replayable request unless
    /// nothing was sent (a connect failure), and a policy's delay is capped
    /// at `backoff_max_ms`; a policy that faulted is replaced by the built-in.
    pub fn decide(&self, facts: &AttemptFacts<'_>) -> Decision {
        let may_resend = facts.failure == AttemptOutcome::ConnectFailure || facts.replayable;
        match self.policy.decide(|p| p.on_failure(facts)) {
            Some(Decision::Retry {
                delay_ms,
                same_endpoint,
            }) if may_resend => Decision::Retry {
                delay_ms: delay_ms.map(|d| self.retry.cap_delay(u64::from(d)).as_millis() as u32),
                same_endpoint,
            },
            Some(Decision::Retry { .. }) | None => Decision::Fail,
            Some(other) => other,
        }
    }

    /// The wait before retry number `retry` when the decision named none.
    pub fn backoff(&self, retry: u32) -> Duration {
        self.retry.backoff(retry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, Method};
    use switchyard_config::RetryConfig;

    struct Always(Decision);
    impl FailoverPolicy for Always {
        fn name(&self) -> &str {
            "always"
        }
        fn judges_every_error(&self) -> bool {
            true
        }
        fn on_failure(&self, _: &AttemptFacts<'_>) -> Result<Decision, Fault> {
            Ok(self.0.clone())
        }
    }
    struct Faulty;
    impl FailoverPolicy for Faulty {
        fn name(&self) -> &str {
            "faulty"
        }
        fn on_failure(&self, _: &AttemptFacts<'_>) -> Result<Decision, Fault> {
            Err(Fault::Trap("boom".into()))
        }
    }

    fn facts<'a>(
        headers: &'a HeaderMap,
        failure: AttemptOutcome,
        replayable: bool,
    ) -> AttemptFacts<'a> {
        static POST: Method = Method::POST;
        AttemptFacts {
            request: RequestContext {
                method: &POST,
                authority: "a",
                path: "/",
                headers,
                client_addr: ([127, 0, 0, 1], 1).into(),
            },
            endpoint: 0,
            failure,
            attempt: 1,
            elapsed_ms: 0,
            tried: &[0],
            replayable,
            idempotent: false,
            retries_left: 1,
            untried: 1,
        }
    }

    fn retry() -> RetryPolicy {
        RetryPolicy::new(&RetryConfig {
            backoff_max_ms: 100,
            ..RetryConfig::default()
        })
    }

    #[test]
    fn the_host_limits_hold_over_any_policy() {
        let headers = HeaderMap::new();
        let eager = Failover::new(
            retry(),
            Some(Arc::new(Always(Decision::Retry {
                delay_ms: Some(5_000),
                same_endpoint: true,
            }))),
        );
        // A streamed body that reached the instance cannot be sent again.
        assert_eq!(
            eager.decide(&facts(&headers, AttemptOutcome::Reset, false)),
            Decision::Fail
        );
        // Nothing was sent: a retry is fine, its delay capped.
        assert_eq!(
            eager.decide(&facts(&headers, AttemptOutcome::ConnectFailure, false)),
            Decision::Retry {
                delay_ms: Some(100),
                same_endpoint: true
            }
        );
        // A plugin judges every error answer; the built-in only 5xx.
        assert!(eager.is_failure(404) && eager.is_failure(503));
        let builtin = Failover::new(retry(), None);
        assert!(!builtin.is_failure(404) && builtin.is_failure(503));
    }

    #[test]
    fn a_faulting_plugin_is_replaced_by_the_retry_policy() {
        let headers = HeaderMap::new();
        let failover = Failover::new(retry(), Some(Arc::new(Faulty)));
        // The built-in retries a connect failure even for a POST.
        assert_eq!(
            failover.decide(&facts(&headers, AttemptOutcome::ConnectFailure, true)),
            Decision::Retry {
                delay_ms: None,
                same_endpoint: false
            }
        );
        // ... and not a reset of a POST (not idempotent).
        assert_eq!(
            failover.decide(&facts(&headers, AttemptOutcome::Reset, true)),
            Decision::Fail
        );
    }
}
