//! What the four policy engines share: how an attempt on an instance
//! ended ([`AttemptOutcome`]), the request a policy decides about
//! ([`RequestContext`]), the [`Fault`] of a decision that could not be
//! made, and [`WithFallback`], the one "primary with built-in fallback"
//! wrapper every engine decides through.
//!
//! Each engine ([`crate::balance`], [`crate::health`], [`crate::failover`],
//! [`crate::fusion`]) defines its own small synchronous trait and types; its
//! built-ins and its Wasm adapter (in `switchyard::plugin`) implement that
//! trait. The engine holds the configured policy — a plugin, or a built-in —
//! in a [`WithFallback`] with the built-in that stands in when it faults:
//! the fault is counted and logged where it happened (the plugin sandbox),
//! and the decision is made anyway. Nothing here knows wasmtime.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{HeaderMap, Method};

/// One decision went wrong in a way the policy did not report as a value:
/// the caller decides with the built-in instead.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Fault {
    /// The call ran past its epoch deadline.
    #[error("exceeded its call deadline of {deadline_ms} ms")]
    Deadline {
        /// The configured deadline.
        deadline_ms: u64,
    },
    /// The call used up its fuel budget (`fuel_per_call`).
    #[error("used up its fuel budget of {budget} per call")]
    Fuel {
        /// The configured budget.
        budget: u64,
    },
    /// Linear memory would have grown past the cap.
    #[error("exceeded its memory limit of {limit_mib} MiB")]
    Memory {
        /// The configured cap.
        limit_mib: u64,
    },
    /// Any other trap (a guest panic shows as `unreachable`).
    #[error("trapped: {0}")]
    Trap(String),
    /// The plugin returned an error value instead of a decision.
    #[error("returned an error: {0}")]
    Refused(String),
    /// The call returned something the contract forbids.
    #[error("answered nonsense: {0}")]
    Nonsense(String),
    /// The instance could not be rebuilt after an earlier fault.
    #[error("could not be re-instantiated: {0}")]
    Reinstantiate(String),
    /// Not called: the plugin is quarantined (not a new fault).
    #[error("is quarantined for {remaining_ms} ms more")]
    Quarantined {
        /// Time left in quarantine.
        remaining_ms: u64,
    },
}

/// How one attempt on an instance ended: the one classification every
/// engine reads — the failover policy decides on a failed one, outlier
/// detection, the breaker and the balancer's feedback count it. The kinds
/// are Envoy's retry conditions (`connect-failure`, `reset`, per-try
/// timeout, a status), as pingora's `ErrorType` splits them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// The instance answered with this status (for the failover policy: a
    /// 5xx, or a status the pool's retry rules or a plugin judge failed).
    Answered(u16),
    /// The connection could not be made: nothing was sent.
    ConnectFailure,
    /// The connection failed once the request was on its way (reset,
    /// closed before a complete answer's head): it may have been acted on.
    Reset,
    /// No answer's head within the attempt's timeout: it may have been
    /// acted on.
    Timeout,
}

impl AttemptOutcome {
    /// An answer below 500: the instance did its part.
    pub fn is_success(self) -> bool {
        matches!(self, Self::Answered(status) if status < 500)
    }

    /// A 5xx answer.
    pub fn is_server_error(self) -> bool {
        matches!(self, Self::Answered(status) if status >= 500)
    }

    /// No answer at all: connect failure, reset or timeout (what Envoy's
    /// outlier detection counts as a gateway error, with no 502-504 of an
    /// instance's own).
    pub fn is_gateway_error(self) -> bool {
        !matches!(self, Self::Answered(_))
    }

    /// The instance could not be reached in time — connect failure or
    /// timeout —, which keeps it out of rotation for `fail_timeout_ms`
    /// (nginx's `max_fails`/`fail_timeout`).
    pub fn is_unreachable(self) -> bool {
        matches!(self, Self::ConnectFailure | Self::Timeout)
    }
}

/// The facts of the request a policy decides about, borrowed from it: the
/// one request context of every engine (a plugin receives it converted
/// once, with only the headers it asked for).
#[derive(Debug, Clone, Copy)]
pub struct RequestContext<'a> {
    /// The request method.
    pub method: &'a Method,
    /// Host the client addressed, without port.
    pub authority: &'a str,
    /// Path and query.
    pub path: &'a str,
    /// All request headers (a plugin receives only those it asked for).
    pub headers: &'a HeaderMap,
    /// The client's socket address.
    pub client_addr: SocketAddr,
}

/// A policy `P` with the built-in that decides when it faults.
///
/// `primary` is shared (`Arc`) so that a policy with state — a plugin
/// instance — can be kept across a membership change while the rest of
/// the engine is built anew; the fallback is a built-in, which never faults.
pub struct WithFallback<P: ?Sized> {
    primary: Arc<P>,
    fallback: Option<Box<P>>,
}

impl<P: ?Sized> WithFallback<P> {
    /// `primary`, with `fallback` deciding when it faults (`None`: a fault
    /// leaves the decision unmade).
    pub fn new(primary: Arc<P>, fallback: Option<Box<P>>) -> Self {
        Self { primary, fallback }
    }

    /// The configured policy.
    pub fn primary(&self) -> &Arc<P> {
        &self.primary
    }

    /// The built-in standing by, if any.
    pub fn fallback(&self) -> Option<&P> {
        self.fallback.as_deref()
    }

    /// Decides with the primary, or — when it faults — with the fallback;
    /// `None` when both fault (or the primary faults and there is no
    /// fallback).
    pub fn decide<R>(&self, mut decide: impl FnMut(&P) -> Result<R, Fault>) -> Option<R> {
        match decide(&self.primary) {
            Ok(decision) => Some(decision),
            Err(_fault) => self.fallback.as_deref().and_then(|f| decide(f).ok()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    trait Double {
        fn double(&self, x: u32) -> Result<u32, Fault>;
    }
    struct Works;
    impl Double for Works {
        fn double(&self, x: u32) -> Result<u32, Fault> {
            Ok(2 * x)
        }
    }
    struct Faults;
    impl Double for Faults {
        fn double(&self, _: u32) -> Result<u32, Fault> {
            Err(Fault::Nonsense("no".into()))
        }
    }

    #[test]
    fn the_fallback_decides_only_when_the_primary_faults() {
        let fine: WithFallback<dyn Double> =
            WithFallback::new(Arc::new(Works), Some(Box::new(Faults)));
        assert_eq!(fine.decide(|p| p.double(2)), Some(4));
        let faulty: WithFallback<dyn Double> =
            WithFallback::new(Arc::new(Faults), Some(Box::new(Works)));
        assert_eq!(faulty.decide(|p| p.double(3)), Some(6));
        let alone: WithFallback<dyn Double> = WithFallback::new(Arc::new(Faults), None);
        assert_eq!(alone.decide(|p| p.double(3)), None);
    }
}
