//! `random`: a uniformly random instance per request.
//!
//! Each request starts at a random instance and ranks the following ones in
//! pool order as spares (HAProxy's `random` with one draw). Weights are
//! ignored. Useful as a stateless baseline and when many proxies share a pool
//! (no coordinated round-robin waves). No config keys.

use std::sync::Arc;

use super::{Endpoint, Ranking, RequestContext, Strategy, rotation};
use crate::policy::Fault;

/// Uniformly random first choice.
#[derive(Debug, Default)]
pub struct Random;

impl Strategy for Random {
    fn name(&self) -> &str {
        "random"
    }

    fn rank(
        &self,
        _request: &RequestContext<'_>,
        endpoints: &[Arc<Endpoint>],
        out: &mut Ranking,
    ) -> Result<(), Fault> {
        let n = endpoints.len();
        if n > 0 {
            let start = fastrand::usize(..n);
            rotation(start, endpoints, out);
        }
        Ok(())
    }
}
