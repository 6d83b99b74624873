//! A failover plugin: decides what happens after a failed attempt.

use switchyard_sdk::{Decision, Failover, FailureContext, PluginError, RetryPlan};

struct Plugin;

impl Failover for Plugin {
    fn new(_config: &str) -> Result<Self, PluginError> {
        Ok(Plugin)
    }

    /// Retry once, elsewhere, at once; then give up.
    fn on_failure(&mut self, failure: FailureContext) -> Decision {
        if failure.attempt == 1 && failure.retries_left > 0 {
            Decision::Retry(RetryPlan { delay_ms: 0, same_endpoint: false })
        } else {
            Decision::Fail
        }
    }
}

switchyard_sdk::export_failover!(Plugin);
