//! The Wasm failover adapter: a `failover-plugin` component that decides what
//! happens after a failed attempt. The host still enforces its limits.

use std::path::Path;

use wasmtime::component::HasSelf;

use super::bindings::balancer::switchyard::plugin::types::RequestInfo;
use super::bindings::failover::exports::switchyard::plugin::failover::{
    Decision as WitDecision, FailureContext, FailureKind,
};
use super::bindings::failover::{FailoverPlugin, FailoverPluginPre};
use super::bindings::{FAILOVER_EXPORT, PluginState};
use super::sandbox::{Live, Sandbox, link};
use super::{Fault, Limits, LoadError, PluginHost};
use crate::failover::Failure;

/// What a failover plugin decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Retry after `delay_ms`; on the same instance only if `same_endpoint`.
    Retry {
        /// Wait first, ms.
        delay_ms: u32,
        /// Allow the instance that just failed.
        same_endpoint: bool,
    },
    /// Send the request to the named pool.
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
    /// Give up.
    Fail,
}

/// The facts of one failed attempt, as the host gives them to the plugin.
#[derive(Debug, Clone)]
pub struct AttemptFacts<'a> {
    /// Method, authority, path, client address.
    pub method: &'a str,
    /// Host the client addressed.
    pub authority: &'a str,
    /// Path and query.
    pub path: &'a str,
    /// Client address.
    pub client_addr: String,
    /// The instance that failed.
    pub endpoint: u32,
    /// How it failed.
    pub failure: Failure,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// Since the request arrived, ms.
    pub elapsed_ms: u64,
    /// Instances tried so far.
    pub tried: &'a [u32],
    /// Whether the request can be sent again.
    pub replayable: bool,
    /// Retries still allowed (attempt cap and budget).
    pub retries_left: u32,
}

/// A Wasm failover plugin serving one pool.
pub struct WasmFailover {
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
        let failover = Self {
            sandbox: Sandbox::new(host, path, limits, component),
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

    /// Asks the plugin what to do after the failed attempt `facts`.
    ///
    /// # Errors
    /// A [`Fault`] (counted and logged): the caller applies the built-in policy.
    pub fn on_failure(&self, facts: &AttemptFacts<'_>) -> Result<Decision, Fault> {
        let (kind, status) = match facts.failure {
            Failure::ConnectFailure => (FailureKind::ConnectFailed, None),
            Failure::Reset => (FailureKind::Reset, None),
            Failure::Timeout => (FailureKind::Timeout, None),
            Failure::Status(s) => (FailureKind::Status, Some(s)),
        };
        let context = FailureContext {
            request: RequestInfo {
                method: facts.method.to_string(),
                authority: facts.authority.to_string(),
                path: facts.path.to_string(),
                headers: Vec::new(),
                client_addr: facts.client_addr.clone(),
            },
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
                delay_ms: plan.delay_ms,
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
