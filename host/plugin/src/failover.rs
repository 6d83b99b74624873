//! The Wasm failover adapter: a `failover-plugin` component that decides what
//! happens after a failed attempt. The host still enforces its limits.

use std::path::Path;
use std::sync::Arc;

use super::adapter::WasmPlugin;
use super::bindings::failover::FailoverPlugin;
use super::bindings::failover::exports::switchyard::plugin::failover::{
    Decision as WitDecision, FailureContext, FailureKind,
};
use super::request::request_info;
use super::{Fault, Limits, LoadError, PluginHost, PluginStats};
use switchyard_engines::failover::{AttemptFacts, Decision, FailoverPolicy};
use switchyard_engines::policy::AttemptOutcome;

/// A Wasm failover plugin serving one pool, as a [`FailoverPolicy`].
pub struct WasmFailover {
    name: String,
    plugin: WasmPlugin<FailoverPlugin>,
}

impl WasmFailover {
    /// Loads the component at `path`: compiles it, checks that it exports
    /// its interface (`switchyard:plugin/…@0.1.3`), links it in the sandbox,
    /// instantiates it, calls `configure(config_json)` and asks the
    /// optional `request-needs` export which request headers to pass.
    ///
    /// # Errors
    /// [`LoadError`] naming the file and the reason.
    pub fn load(
        host: &PluginHost,
        path: &Path,
        config_json: String,
        limits: Limits,
    ) -> Result<Self, LoadError> {
        let plugin = WasmPlugin::load(host, path, config_json, limits)?;
        Ok(Self {
            name: format!("plugin {}", plugin.name()),
            plugin,
        })
    }

    /// The plugin's call and fault counters.
    pub fn stats(&self) -> Arc<PluginStats> {
        self.plugin.stats()
    }
}

impl FailoverPolicy for WasmFailover {
    fn name(&self) -> &str {
        &self.name
    }

    /// A plugin judges every 4xx and 5xx answer.
    fn judges_every_error(&self) -> bool {
        true
    }

    /// Asks the plugin; a [`Fault`] is counted and logged by the sandbox
    /// (the caller applies the built-in policy).
    fn on_failure(&self, facts: &AttemptFacts<'_>) -> Result<Decision, Fault> {
        let (kind, status) = match facts.failure {
            AttemptOutcome::ConnectFailure => (FailureKind::ConnectFailed, None),
            AttemptOutcome::Reset => (FailureKind::Reset, None),
            AttemptOutcome::Timeout => (FailureKind::Timeout, None),
            AttemptOutcome::Answered(s) => (FailureKind::Status, Some(s)),
        };
        let context = FailureContext {
            request: request_info(&facts.request, self.plugin.request_headers()),
            endpoint: facts.endpoint,
            kind,
            status,
            attempt: facts.attempt,
            elapsed_ms: facts.elapsed_ms,
            tried: facts.tried.to_vec(),
            replayable: facts.replayable,
            retries_left: facts.retries_left,
        };
        let decision = self.plugin.call(|bindings, store| {
            let decision = bindings
                .switchyard_plugin_failover()
                .call_on_failure(store, &context)
                .map_err(|e| self.plugin.fault(&e))?;
            // An answer must carry a final HTTP status; anything else is a
            // fault (the built-in policy decides instead).
            match &decision {
                WitDecision::Respond(r) if !(200..=599).contains(&r.status) => {
                    Err(Fault::Nonsense(format!("respond with status {}", r.status)))
                }
                _ => Ok(decision),
            }
        })?;
        Ok(match decision {
            WitDecision::Retry(plan) => Decision::Retry {
                delay_ms: Some(plan.delay_ms),
                same_endpoint: plan.same_endpoint,
            },
            WitDecision::Fallback(pool) => Decision::Fallback(pool),
            WitDecision::Respond(r) => Decision::Respond {
                status: r.status,
                headers: r.headers,
                body: r.body,
            },
            WitDecision::Fail => Decision::Fail,
        })
    }
}
