//! The Wasm failover adapter: a `failover-plugin` component that decides what
//! happens after a failed attempt. The host still enforces its limits.

use std::path::Path;

use wasmtime::component::HasSelf;

use super::bindings::failover::exports::switchyard::plugin::failover::{
    Decision as WitDecision, FailureContext, FailureKind,
};
use super::bindings::failover::{FailoverPlugin, FailoverPluginPre};
use super::bindings::{FAILOVER_EXPORT, PluginState};
use super::request::request_info;
use super::sandbox::{Live, Sandbox, link};
use super::{Fault, Limits, LoadError, PluginHost};
use crate::failover::{AttemptFacts, Decision, FailoverPolicy, Failure};

/// A Wasm failover plugin serving one pool, as a [`FailoverPolicy`].
pub struct WasmFailover {
    name: String,
    sandbox: Sandbox<FailoverPlugin>,
    pre: FailoverPluginPre<PluginState>,
    config_json: String,
}

impl WasmFailover {
    /// Loads the component at `path`: compiles it, checks that it exports
    /// `switchyard:plugin/failover@0.1.1`, links it in the sandbox,
    /// instantiates it and calls `configure(config_json)`.
    ///
    /// # Errors
    /// [`LoadError`] naming the file and the reason.
    pub fn load(
        host: &PluginHost,
        path: &Path,
        config_json: String,
        limits: Limits,
    ) -> Result<Self, LoadError> {
        let (pre, component) = link(
            host,
            path,
            FAILOVER_EXPORT,
            "failover",
            &limits,
            |linker| FailoverPlugin::add_to_linker::<_, HasSelf<_>>(linker, |s| s),
            FailoverPluginPre::new,
        )?;
        let sandbox = Sandbox::new(host, path, limits, component);
        let failover = Self {
            name: format!("plugin {}", sandbox.plugin()),
            sandbox,
            pre,
            config_json,
        };
        failover.sandbox.start(path, failover.instantiate())?;
        Ok(failover)
    }

    /// The plugin's call and fault counters.
    pub fn stats(&self) -> std::sync::Arc<super::PluginStats> {
        self.sandbox.stats()
    }

    fn instantiate(&self) -> Result<Live<FailoverPlugin>, Fault> {
        self.sandbox.instantiate(
            |store| self.pre.instantiate(store),
            |bindings, store| {
                bindings
                    .switchyard_plugin_failover()
                    .call_configure(store, &self.config_json)
            },
        )
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
            Failure::ConnectFailure => (FailureKind::ConnectFailed, None),
            Failure::Reset => (FailureKind::Reset, None),
            Failure::Timeout => (FailureKind::Timeout, None),
            Failure::Status(s) => (FailureKind::Status, Some(s)),
        };
        let context = FailureContext {
            request: request_info(&facts.request, &[]),
            endpoint: facts.endpoint,
            kind,
            status,
            attempt: facts.attempt,
            elapsed_ms: facts.elapsed_ms,
            tried: facts.tried.to_vec(),
            replayable: facts.replayable,
            retries_left: facts.retries_left,
        };
        let decision = self.sandbox.call(
            || self.instantiate(),
            |live| {
                live.inner
                    .switchyard_plugin_failover()
                    .call_on_failure(&mut live.store, &context)
                    .map_err(|e| self.sandbox.fault(&e))
            },
        )?;
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
