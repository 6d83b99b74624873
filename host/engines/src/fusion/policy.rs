//! The fusion policy: how a fan-out's answers become one.
//!
//! A [`Resolve`] says what each answer must be judged for before it fuses
//! them ([`Judging`]: JSON, a vote key), whether the answers so far settle
//! the result (early exit), and fuses them. The built-ins are [`Builtin`];
//! a Wasm resolver plugin implements the same trait
//! (`switchyard::plugin::WasmResolver`). The fan-out holds the configured one
//! with a built-in standing by ([`crate::policy::WithFallback`]); a built-in
//! that takes over from a faulting plugin judges the answers anew for what
//! it needs.

use super::{Answer, Builtin, Fused, FusionError, Quality, Source};
use crate::policy::{Fault, RequestContext};
use switchyard_config::Compare;

/// What a resolver needs checked in every answer, beyond the route's status
/// range and JSON Schema.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Judging {
    /// The answer must be JSON (it is parsed).
    pub json: bool,
    /// The answer's vote key, compared this way.
    pub vote: Option<Compare>,
}

/// A fusion policy.
///
/// Lifecycle: built with its route; `settled` is called as answers arrive,
/// `fuse` once per request when the fan-out is over; both synchronous.
pub trait Resolve: Send + Sync + 'static {
    /// What every answer must be judged for. Default: nothing more.
    fn judging(&self) -> Judging {
        Judging::default()
    }

    /// Whether `answers` (so far, of the sources `asked`) settle the
    /// result, so that the requests still pending can be cancelled.
    /// Default: never (every source is waited for).
    fn settled(&self, sources: &[Source], asked: &[usize], answers: &[Answer]) -> bool {
        let _ = (sources, asked, answers);
        false
    }

    /// Fuses `answers` (judged per [`judging`](Self::judging), in arrival
    /// order) and records each source's acceptance in `quality`. `Ok(Err)`
    /// is a result, not a fault: no answer wins (502 with the tally).
    ///
    /// # Errors
    /// A [`Fault`] when the policy could not decide (only plugins fail).
    fn fuse(
        &self,
        request: &RequestContext<'_>,
        sources: &[Source],
        asked: &[usize],
        answers: &[Answer],
        quality: &Quality,
    ) -> Result<Result<Fused, FusionError>, Fault>;
}

fn _object_safe(_: &dyn Resolve) {}

impl Resolve for Builtin {
    fn judging(&self) -> Judging {
        Judging {
            json: self.needs_json(),
            vote: self.vote(),
        }
    }

    fn settled(&self, sources: &[Source], asked: &[usize], answers: &[Answer]) -> bool {
        self.enough(sources, asked, answers)
    }

    fn fuse(
        &self,
        _request: &RequestContext<'_>,
        sources: &[Source],
        asked: &[usize],
        answers: &[Answer],
        quality: &Quality,
    ) -> Result<Result<Fused, FusionError>, Fault> {
        Ok(self.resolve(sources, asked, answers, quality))
    }
}
