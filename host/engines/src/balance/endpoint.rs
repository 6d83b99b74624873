//! One upstream instance and its live statistics.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use http::uri::Authority;

/// Weight of the newest sample in the latency and success EWMAs (0..1).
/// 0.1 gives a memory of roughly the last 10 attempts.
pub const EWMA_ALPHA: f64 = 0.1;

/// An instance of a pool, with the statistics the balancer and plugins read.
/// All statistics are lock-free atomics updated on the data path.
///
/// One `Endpoint` lives as long as the instance is a member of its pool:
/// a membership change keeps it (with its statistics, health flags and
/// in-flight count) and may change its weight and labels in place.
#[derive(Debug)]
pub struct Endpoint {
    /// Stable id in the pool, given when the instance joined and never
    /// reused (`endpoint-id` for plugins; see [`super::Members`]).
    pub id: u32,
    /// `http://host:port` as configured.
    pub url: String,
    /// `host:port`, the upstream request's authority (the instance's
    /// identity in its pool).
    pub authority: Authority,
    weight: AtomicU32,
    labels: Mutex<Vec<(String, String)>>,
    retired: AtomicBool,
    in_flight: AtomicU32,
    requests: AtomicU64,
    ewma_latency_us: AtomicU64,
    success_rate_bits: AtomicU32,
    unreachable_until_ms: AtomicU64,
    load_bits: AtomicU32,
    health_score_bits: AtomicU32,
    /// When draining started (pool clock, ms); [`NOT_DRAINING`] when not.
    drain_started_ms: AtomicU64,
    health: AtomicU8,
}

/// Health flag: failed its active checks (`fall` in a row).
pub const UNHEALTHY: u8 = 1;
/// Health flag: ejected by passive outlier detection.
pub const EJECTED: u8 = 2;
/// Health flag: its trend is degrading (still routable).
pub const DEGRADED: u8 = 4;
/// Health flag: a health check judged it `degraded` (still fit, chosen
/// only when no instance judged healthy is acceptable; Envoy's degraded hosts).
pub const CHECK_DEGRADED: u8 = 8;

/// The drain start of an instance that is not draining.
const NOT_DRAINING: u64 = u64::MAX;

/// Bits of the "no load reported" marker (a NaN).
const NO_LOAD: u32 = 0x7fc0_0001;

/// A snapshot of an instance's statistics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EndpointStats {
    /// Requests in flight now.
    pub in_flight: u32,
    /// EWMA of latency to response headers, µs; 0 = no data yet.
    pub ewma_latency_us: u64,
    /// EWMA of attempt success, 0.0..=1.0; 1.0 with no data.
    pub success_rate: f32,
    /// Last load the instance reported, 0.0..=1.0, if any.
    pub load: Option<f32>,
}

impl Endpoint {
    /// Where to dial the instance: its authority, and TLS when its URL is
    /// `https://`.
    pub fn address(&self) -> switchyard_net::dial::Address<'_> {
        switchyard_net::dial::Address {
            authority: &self.authority,
            secure: self.url.starts_with("https://"),
        }
    }

    /// A new instance with no statistics.
    pub fn new(
        id: u32,
        url: String,
        authority: Authority,
        weight: u32,
        labels: Vec<(String, String)>,
    ) -> Self {
        Self {
            id,
            url,
            authority,
            weight: AtomicU32::new(weight.max(1)),
            labels: Mutex::new(labels),
            retired: AtomicBool::new(false),
            in_flight: AtomicU32::new(0),
            requests: AtomicU64::new(0),
            ewma_latency_us: AtomicU64::new(0),
            success_rate_bits: AtomicU32::new(1.0f32.to_bits()),
            unreachable_until_ms: AtomicU64::new(0),
            load_bits: AtomicU32::new(NO_LOAD),
            health_score_bits: AtomicU32::new(1.0f32.to_bits()),
            drain_started_ms: AtomicU64::new(NOT_DRAINING),
            health: AtomicU8::new(0),
        }
    }

    /// Relative weight, >= 1.
    pub fn weight(&self) -> u32 {
        self.weight.load(Ordering::Relaxed)
    }

    /// Labels as configured.
    pub fn labels(&self) -> Vec<(String, String)> {
        self.labels
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Applies a re-weighting or re-labelling in place (a membership change
    /// that keeps the instance).
    pub fn reconfigure(&self, weight: u32, labels: Vec<(String, String)>) {
        self.weight.store(weight.max(1), Ordering::Relaxed);
        *self.labels.lock().unwrap_or_else(PoisonError::into_inner) = labels;
    }

    /// Marks the instance as removed from its pool: its last requests may
    /// still finish, but its health changes no longer count in the pool's.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::Relaxed);
    }

    /// Whether the instance was removed from its pool.
    pub fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Relaxed)
    }

    /// The current statistics.
    pub fn stats(&self) -> EndpointStats {
        EndpointStats {
            in_flight: self.in_flight.load(Ordering::Relaxed),
            ewma_latency_us: self.ewma_latency_us.load(Ordering::Relaxed),
            success_rate: f32::from_bits(self.success_rate_bits.load(Ordering::Relaxed)),
            load: self.load(),
        }
    }

    /// The last load the instance reported (0.0..=1.0), if any.
    pub fn load(&self) -> Option<f32> {
        let bits = self.load_bits.load(Ordering::Relaxed);
        (bits != NO_LOAD).then(|| f32::from_bits(bits))
    }

    /// Records a load report; values outside 0.0..=1.0 are clamped, NaN ignored.
    pub fn report_load(&self, load: f32) {
        if !load.is_nan() {
            self.load_bits
                .store(load.clamp(0.0, 1.0).to_bits(), Ordering::Relaxed);
        }
    }

    /// Starts (`true`, at `now_ms` on the pool's clock; an instance already
    /// draining keeps its start) or ends draining: a draining instance gets
    /// no new requests.
    pub fn set_draining(&self, draining: bool, now_ms: u64) {
        if draining {
            let _ = self.drain_started_ms.compare_exchange(
                NOT_DRAINING,
                now_ms.min(NOT_DRAINING - 1),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        } else {
            self.drain_started_ms.store(NOT_DRAINING, Ordering::Relaxed);
        }
    }

    /// Whether the instance is draining.
    pub fn is_draining(&self) -> bool {
        self.drain_started_ms.load(Ordering::Relaxed) != NOT_DRAINING
    }

    /// When draining started (pool clock, ms), if it is draining.
    pub fn drain_started_ms(&self) -> Option<u64> {
        let started = self.drain_started_ms.load(Ordering::Relaxed);
        (started != NOT_DRAINING).then_some(started)
    }

    /// The score of the last health-check verdict, 0.0 (worst) ..= 1.0
    /// (best); 1.0 until a health plugin gives one.
    pub fn health_score(&self) -> f32 {
        f32::from_bits(self.health_score_bits.load(Ordering::Relaxed))
    }

    /// Records a health-check verdict's score, clamped to 0.0..=1.0 (NaN ignored).
    pub fn set_health_score(&self, score: f32) {
        if !score.is_nan() {
            self.health_score_bits
                .store(score.clamp(0.0, 1.0).to_bits(), Ordering::Relaxed);
        }
    }

    /// Whether a health check judged it degraded ([`CHECK_DEGRADED`]).
    pub fn is_check_degraded(&self) -> bool {
        self.health_flags() & CHECK_DEGRADED != 0
    }

    /// The health flags ([`UNHEALTHY`], [`EJECTED`], [`DEGRADED`],
    /// [`CHECK_DEGRADED`]); 0 = healthy.
    pub fn health_flags(&self) -> u8 {
        self.health.load(Ordering::Relaxed)
    }

    /// Fit to take requests: neither unhealthy nor ejected (degraded is fit).
    pub fn is_fit(&self) -> bool {
        self.health_flags() & (UNHEALTHY | EJECTED) == 0
    }

    /// Sets (`on`) or clears a health flag; returns whether the instance was
    /// fit before and is fit after.
    pub fn set_health_flag(&self, flag: u8, on: bool) -> (bool, bool) {
        let before = if on {
            self.health.fetch_or(flag, Ordering::Relaxed)
        } else {
            self.health.fetch_and(!flag, Ordering::Relaxed)
        };
        let after = if on { before | flag } else { before & !flag };
        let fit = |f: u8| f & (UNHEALTHY | EJECTED) == 0;
        (fit(before), fit(after))
    }

    /// Requests sent to it since it joined (every attempt).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts a request in flight until the returned guard drops (and in
    /// [`requests`](Self::requests)).
    pub fn start_request(self: &std::sync::Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
        InFlight(std::sync::Arc::clone(self))
    }

    /// Folds one attempt into the EWMAs. Concurrent updates may lose a sample;
    /// the averages are estimates, not counters.
    pub fn record(&self, success: bool, latency_us: u64) {
        let old = self.ewma_latency_us.load(Ordering::Relaxed);
        let new = if old == 0 {
            latency_us
        } else {
            (old as f64 + EWMA_ALPHA * (latency_us as f64 - old as f64)) as u64
        };
        self.ewma_latency_us.store(new.max(1), Ordering::Relaxed);
        let rate = f32::from_bits(self.success_rate_bits.load(Ordering::Relaxed)) as f64;
        let sample = if success { 1.0 } else { 0.0 };
        let rate = (rate + EWMA_ALPHA * (sample - rate)) as f32;
        self.success_rate_bits
            .store(rate.to_bits(), Ordering::Relaxed);
    }

    /// Marks the instance unreachable until `until_ms` (on the pool's clock).
    pub fn mark_unreachable(&self, until_ms: u64) {
        self.unreachable_until_ms.store(until_ms, Ordering::Relaxed);
    }

    /// Clears an unreachable mark (after a successful attempt). Reads first,
    /// so the common case (no mark) does not write a shared cache line.
    pub fn mark_reachable(&self) {
        if self.unreachable_until_ms.load(Ordering::Relaxed) != 0 {
            self.unreachable_until_ms.store(0, Ordering::Relaxed);
        }
    }

    /// Whether the instance is not marked unreachable at `now_ms`.
    pub fn is_reachable(&self, now_ms: u64) -> bool {
        self.unreachable_until_ms.load(Ordering::Relaxed) <= now_ms
    }
}

/// Counts one request in flight on an instance; decrements when dropped
/// (when the response body has been streamed, or the attempt failed).
#[derive(Debug)]
pub struct InFlight(std::sync::Arc<Endpoint>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint() -> Endpoint {
        Endpoint::new(
            0,
            "http://127.0.0.1:1".into(),
            "127.0.0.1:1".parse().unwrap(),
            1,
            vec![],
        )
    }

    #[test]
    fn ewma_starts_at_the_first_sample_and_moves_by_alpha() {
        let e = endpoint();
        assert_eq!(e.stats().ewma_latency_us, 0);
        assert_eq!(e.stats().success_rate, 1.0);
        e.record(true, 1000);
        assert_eq!(e.stats().ewma_latency_us, 1000);
        e.record(false, 2000);
        assert_eq!(e.stats().ewma_latency_us, 1100);
        assert!((e.stats().success_rate - 0.9).abs() < 1e-6);
    }

    #[test]
    fn in_flight_counts_until_the_guard_drops() {
        let e = std::sync::Arc::new(endpoint());
        let a = e.start_request();
        let b = e.start_request();
        assert_eq!(e.in_flight(), 2);
        drop(a);
        assert_eq!(e.in_flight(), 1);
        drop(b);
        assert_eq!(e.in_flight(), 0);
    }

    #[test]
    fn unreachable_marks_expire() {
        let e = endpoint();
        e.mark_unreachable(100);
        assert!(!e.is_reachable(99));
        assert!(e.is_reachable(100));
        e.mark_reachable();
        assert!(e.is_reachable(0));
    }
}
