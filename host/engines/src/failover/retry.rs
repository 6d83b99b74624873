//! Retry policy, backoff with full jitter, and the retry budget.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::Method;

use switchyard_config::{RetryConfig, RetryOn};

use crate::policy::AttemptOutcome;

/// A pool's retry rules.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    config: RetryConfig,
}

impl RetryPolicy {
    /// Rules from `config` (validated at load).
    pub fn new(config: &RetryConfig) -> Self {
        Self {
            config: config.clone(),
        }
    }

    /// Attempts in all: 1 + `retries`.
    pub fn max_attempts(&self) -> usize {
        1 + self.config.retries as usize
    }

    /// The per-try timeout: as configured, or the request's `deadline`
    /// shared evenly among the attempts (so that an instance that hangs
    /// leaves time to try another).
    pub fn per_try_timeout(&self, deadline: Duration) -> Duration {
        self.config.per_try_timeout_ms.map_or_else(
            || deadline / (self.max_attempts() as u32).max(1),
            Duration::from_millis,
        )
    }

    /// The largest body buffered for replay, bytes.
    pub fn replay_limit(&self) -> u64 {
        self.config.replay_limit_bytes
    }

    /// Whether `method` may be retried after it may have reached the instance.
    pub fn method_retryable(&self, method: &Method) -> bool {
        self.config.retry_non_idempotent || is_idempotent(method)
    }

    /// Whether a response with `status` counts as a retryable failure.
    pub fn status_retryable(&self, status: u16) -> bool {
        (status >= 500 && self.config.retry_on.contains(&RetryOn::ServerError))
            || self.config.retry_statuses.contains(&status)
    }

    /// Whether `failure` may be retried, for a request that is
    /// `idempotent` or not (may be repeated once it may have reached the
    /// instance: [`method_retryable`](Self::method_retryable) for an HTTP
    /// request). A connect failure is always safe (nothing was sent);
    /// anything else needs an idempotent request.
    pub fn retryable(&self, failure: AttemptOutcome, idempotent: bool) -> bool {
        let class = match failure {
            AttemptOutcome::ConnectFailure => RetryOn::ConnectFailure,
            AttemptOutcome::Reset => RetryOn::Reset,
            AttemptOutcome::Timeout => RetryOn::Timeout,
            AttemptOutcome::Answered(status) => return self.status_retryable(status) && idempotent,
        };
        self.config.retry_on.contains(&class)
            && (failure == AttemptOutcome::ConnectFailure || idempotent)
    }

    /// A plugin-chosen delay, capped at `backoff_max_ms`.
    pub fn cap_delay(&self, delay_ms: u64) -> Duration {
        Duration::from_millis(delay_ms.min(self.config.backoff_max_ms))
    }

    /// The wait before retry number `retry` (1-based): none for the first
    /// (immediate failover to another instance), then a uniformly random time
    /// in 0..=min(max, base × 2^(retry−2)) ("full jitter").
    pub fn backoff(&self, retry: u32) -> Duration {
        if retry <= 1 {
            return Duration::ZERO;
        }
        let exp = self
            .config
            .backoff_base_ms
            .saturating_mul(1u64 << (retry - 2).min(20));
        Duration::from_millis(fastrand::u64(..=exp.min(self.config.backoff_max_ms)))
    }
}

/// Safe to repeat (RFC 9110 §9.2.2).
pub fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// A pool's retry budget: retries in flight ≤ max(min, ratio × requests in flight).
#[derive(Debug)]
pub struct RetryBudget {
    ratio: f64,
    min: usize,
    requests: AtomicUsize,
    retries: AtomicUsize,
}

/// Counts a request in flight until dropped.
#[derive(Debug)]
pub struct Active<'a>(&'a AtomicUsize);

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl RetryBudget {
    /// A budget of `ratio` of requests in flight, at least `min` retries.
    pub fn new(ratio: f64, min: u32) -> Self {
        Self {
            ratio,
            min: min as usize,
            requests: AtomicUsize::new(0),
            retries: AtomicUsize::new(0),
        }
    }

    /// Counts a client request in flight.
    pub fn request(&self) -> Active<'_> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        Active(&self.requests)
    }

    /// Retries the budget would admit now.
    pub fn room(&self) -> usize {
        let requests = self.requests.load(Ordering::Relaxed);
        let allowed = ((requests as f64 * self.ratio) as usize).max(self.min);
        allowed.saturating_sub(self.retries.load(Ordering::Relaxed))
    }

    /// A retry slot, if the budget has room; held for the retry's duration.
    pub fn try_retry(&self) -> Option<Active<'_>> {
        let requests = self.requests.load(Ordering::Relaxed);
        let allowed = ((requests as f64 * self.ratio) as usize).max(self.min);
        self.retries
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |r| {
                (r < allowed).then_some(r + 1)
            })
            .ok()
            .map(|_| Active(&self.retries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(config: RetryConfig) -> RetryPolicy {
        RetryPolicy::new(&config)
    }

    #[test]
    fn full_jitter_backoff_grows_and_is_capped() {
        let p = policy(RetryConfig {
            backoff_base_ms: 10,
            backoff_max_ms: 35,
            ..RetryConfig::default()
        });
        assert_eq!(
            p.backoff(1),
            Duration::ZERO,
            "the first retry fails over at once"
        );
        for _ in 0..200 {
            assert!(p.backoff(2) <= Duration::from_millis(10));
            assert!(p.backoff(3) <= Duration::from_millis(20));
            assert!(p.backoff(9) <= Duration::from_millis(35));
        }
        let spread: std::collections::BTreeSet<_> = (0..200).map(|_| p.backoff(9)).collect();
        assert!(spread.len() > 10, "jittered, not fixed");
    }

    #[test]
    fn which_failures_retry() {
        let p = policy(RetryConfig {
            retry_on: vec![
                RetryOn::ConnectFailure,
                RetryOn::Reset,
                RetryOn::ServerError,
            ],
            retry_statuses: vec![429],
            ..RetryConfig::default()
        });
        assert!(
            p.retryable(
                AttemptOutcome::ConnectFailure,
                p.method_retryable(&Method::POST)
            ),
            "nothing was sent"
        );
        assert!(
            !p.retryable(AttemptOutcome::Reset, p.method_retryable(&Method::POST)),
            "POST may have been processed"
        );
        assert!(p.retryable(AttemptOutcome::Reset, p.method_retryable(&Method::GET)));
        assert!(
            !p.retryable(AttemptOutcome::Timeout, p.method_retryable(&Method::GET)),
            "timeout not listed"
        );
        assert!(p.retryable(
            AttemptOutcome::Answered(503),
            p.method_retryable(&Method::GET)
        ));
        assert!(p.retryable(
            AttemptOutcome::Answered(429),
            p.method_retryable(&Method::GET)
        ));
        assert!(!p.retryable(
            AttemptOutcome::Answered(404),
            p.method_retryable(&Method::GET)
        ));
        let lenient = policy(RetryConfig {
            retry_non_idempotent: true,
            ..RetryConfig::default()
        });
        assert!(lenient.retryable(
            AttemptOutcome::Reset,
            lenient.method_retryable(&Method::POST)
        ));
    }

    #[test]
    fn the_budget_caps_retries_in_flight() {
        let budget = RetryBudget::new(0.2, 2);
        let requests: Vec<_> = (0..20).map(|_| budget.request()).collect();
        // 20 requests in flight: max(2, 0.2 × 20) = 4 retries.
        let retries: Vec<_> = (0..10).filter_map(|_| budget.try_retry()).collect();
        assert_eq!(retries.len(), 4);
        drop(retries);
        drop(requests);
        // Nothing in flight: the minimum still allows 2.
        let retries: Vec<_> = (0..10).filter_map(|_| budget.try_retry()).collect();
        assert_eq!(retries.len(), 2);
    }
}
