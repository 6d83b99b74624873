//! # retry-schedule: retry listed statuses on a schedule, then fall back
//!
//! After a failed attempt:
//! - a response whose status is not in `statuses` is not this plugin's
//!   business: it fails (the client gets that answer);
//! - a connect failure (nothing was sent) is retried at once;
//! - a listed status, a reset or a timeout is retried after
//!   `delays_ms[attempt − 1]` — attempt 1's failure waits `delays_ms[0]` —
//!   while the schedule lasts (on another instance, or a tried one when
//!   every instance was tried);
//! - once the schedule or the host's retries (`retries-left`) are used up,
//!   the request goes to `fallback_pool` if one is set, else it fails (the
//!   client gets the last answer).
//!
//! The host still enforces the pool's attempt cap, retry budget and backoff
//! cap, so a long schedule cannot cause a retry storm.
//!
//! Config (JSON from the pool's `failover.plugin.config`):
//!
//! | key | type | default | meaning |
//! |---|---|---|---|
//! | `statuses` | list of integers | `[502, 503, 504]` | statuses that retry |
//! | `delays_ms` | list of integers | `[0, 100, 400]` | wait before each retry |
//! | `fallback_pool` | string | none | pool to try when the schedule is used up |

use serde::Deserialize;
use switchyard_sdk::{Decision, Failover, FailureContext, FailureKind, PluginError, RetryPlan};

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Config {
    statuses: Vec<u16>,
    delays_ms: Vec<u32>,
    fallback_pool: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            statuses: vec![502, 503, 504],
            delays_ms: vec![0, 100, 400],
            fallback_pool: None,
        }
    }
}

struct RetrySchedule(Config);

impl Failover for RetrySchedule {
    fn new(config: &str) -> Result<Self, PluginError> {
        let config: Config = serde_json::from_str(config)
            .map_err(|e| PluginError::InvalidConfig(format!("retry-schedule: {e}")))?;
        Ok(Self(config))
    }

    fn on_failure(&mut self, failure: FailureContext) -> Decision {
        let retry = |delay_ms| {
            Decision::Retry(RetryPlan {
                delay_ms,
                same_endpoint: false,
            })
        };
        let used_up = || match &self.0.fallback_pool {
            Some(pool) => Decision::Fallback(pool.clone()),
            None => Decision::Fail,
        };
        let scheduled = self.0.delays_ms.get(failure.attempt as usize - 1).copied();
        match (failure.kind, failure.status) {
            (FailureKind::Status, Some(status)) if !self.0.statuses.contains(&status) => {
                Decision::Fail
            }
            _ if failure.retries_left == 0 => used_up(),
            (FailureKind::ConnectFailed, _) => retry(0),
            _ => scheduled.map_or_else(used_up, retry),
        }
    }
}

switchyard_sdk::export_failover!(RetrySchedule);
