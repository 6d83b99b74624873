//! Failover: what happens when an attempt fails.
//!
//! The attempt loop (in `switchyard::proxy`) asks these pieces, in order:
//!
//! - [`Bulkhead`]: may the request use the pool at all? A bounded number of
//!   upstream requests run at once, a bounded queue waits with a timeout,
//!   and the rest are shed at once with 503 and `Retry-After` — never an
//!   unbounded queue.
//! - [`CircuitBreaker`]s, one per instance: closed → open on a failure rate
//!   over a rolling window (with a minimum volume) or on consecutive
//!   failures; open for a time that doubles on repeated trips (capped);
//!   half-open admits a few probe requests and closes after enough
//!   successes. An open breaker takes its instance out of the filter.
//! - [`Failover`]: after a failed attempt, the pool's [`FailoverPolicy`]
//!   (the built-in [`RetryPolicy`], or a Wasm plugin with the built-in
//!   standing by) decides: retry, another pool, a response of its own, or
//!   give up; the host's limits hold over any policy.
//! - [`RetryPolicy`]: is this failure retryable, is the request replayable,
//!   how long to back off (full jitter), and does the pool's [`RetryBudget`]
//!   allow one more retry in flight. A retry goes to a different instance:
//!   the ranking minus those already tried; the first retry goes at once
//!   (immediate failover), later ones after the backoff.
//!
//! - [`StaleCache`]: when every attempt of a GET failed, a route with
//!   `stale_if_error` answers with the last good answer it saw.
//!
//! Why budgets and not only max retries: with `retries = 2`, a pool-wide
//! outage turns every request into three upstream attempts — a retry storm
//! that keeps a recovering pool down. A budget caps retries in flight to a
//! share of the requests in flight (Envoy's retry budget; Linkerd's is the
//! same idea), so during an outage the extra load is bounded whatever the
//! per-request limit.

pub mod breaker;
mod bulkhead;
mod policy;
mod retry;
mod stale;

pub use breaker::{Admission, BreakerState, Breakers, CircuitBreaker};
pub use bulkhead::{Bulkhead, BulkheadStatus, Shed};
pub use policy::{AttemptFacts, Decision, Failover, FailoverPolicy};
pub use retry::{Active, RetryBudget, RetryPolicy};
pub use stale::{Recorder, StaleCache};
