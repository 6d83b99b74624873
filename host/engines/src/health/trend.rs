//! Predictive health: is an instance getting better or worse, and when would
//! it become unfit?
//!
//! The model. Every `interval_ms` each instance's latency (the EWMA of live
//! responses, ms) and error rate (1 − the EWMA of attempt success) are
//! sampled into a window of the last `window` samples. An ordinary
//! least-squares line through each window gives a slope (per second). Over
//! one window's duration D:
//!
//! - latency: a rise of more than `degrading_ratio` × the window's mean
//!   latency is **degrading**, a fall of as much **improving**;
//! - error rate: a rise of more than `degrading_error_delta` is degrading
//!   (and a fall of as much improving); degrading on either wins;
//! - otherwise **stable**.
//!
//! When a degrading line reaches `unfit_latency_ms` or `unfit_error_rate`
//! within `horizon_ms`, the instance is **predicted unfit in ~N s**, N =
//! (limit − current) / slope — an early warning before checks or outlier
//! detection act. A degrading instance is flagged [`DEGRADED`]; the data path
//! keeps only `degraded_share` of its traffic (1.0: unchanged). An instance
//! that has had no traffic yet gives no sample (its latency EWMA of 0 means
//! "no data", not "0 ms"), and a trend needs `min_samples` real samples
//! before it may be anything but stable: no false alarm at start-up.
//! Instances whose traffic stopped keep their last estimate, which the
//! slope then sees as flat.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;

use super::{EventKind, PoolHealth, Severity};
use crate::balance::{ById, DEGRADED, Endpoint};
use switchyard_config::TrendConfig;

/// The direction of an instance's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Trend {
    /// Latency or errors falling.
    Improving,
    /// No significant change (or not enough samples yet).
    #[default]
    Stable,
    /// Latency or errors rising.
    Degrading,
}

/// One instance's trend and prediction.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Default)]
pub struct TrendStatus {
    /// The classification.
    pub trend: Trend,
    /// Seconds until the trend line crosses an unfit limit, when within the horizon.
    pub predicted_unfit_in_s: Option<u64>,
    /// Latency slope, ms per second.
    pub latency_slope_ms_per_s: f64,
    /// Error-rate slope, per second.
    pub error_slope_per_s: f64,
}

/// The trends of one pool's instances.
pub struct TrendTracker {
    config: TrendConfig,
    windows: ById<Arc<Mutex<Window>>>,
}

#[derive(Default)]
struct Window {
    samples: VecDeque<(f64, f64, f64)>,
    status: TrendStatus,
}

impl TrendTracker {
    /// A tracker for the pool `endpoints`, keeping the windows `previous`
    /// (the pool's generation before a membership change) holds for them.
    pub fn new(
        config: &TrendConfig,
        endpoints: &[Arc<Endpoint>],
        previous: Option<&TrendTracker>,
    ) -> Self {
        Self {
            config: config.clone(),
            windows: ById::carry(endpoints, previous.map(|p| &p.windows), || {
                Mutex::new(Window::default())
            }),
        }
    }

    /// The sampling interval, ms.
    pub fn interval_ms(&self) -> u64 {
        self.config.interval_ms
    }

    /// Share of traffic a degrading instance keeps.
    pub fn degraded_share(&self) -> f64 {
        self.config.degraded_share
    }

    /// The current status of instance `id`.
    pub fn status(&self, id: u32) -> TrendStatus {
        self.windows
            .get(id)
            .map(|w| w.lock().unwrap_or_else(PoisonError::into_inner).status)
            .unwrap_or_default()
    }

    /// Samples every instance at `now_s` (seconds on any monotonic clock),
    /// reclassifies, and publishes changes.
    pub fn tick(&self, health: &PoolHealth, endpoints: &[Arc<Endpoint>], now_s: f64) {
        for endpoint in endpoints {
            let Some(window) = self.windows.get(endpoint.id) else {
                continue;
            };
            let stats = endpoint.stats();
            if stats.ewma_latency_us == 0 {
                continue; // No traffic yet: no data, not a 0 ms sample.
            }
            let latency_ms = stats.ewma_latency_us as f64 / 1_000.0;
            let error_rate = 1.0 - f64::from(stats.success_rate);
            let (before, after) = {
                let mut w = window.lock().unwrap_or_else(PoisonError::into_inner);
                w.samples.push_back((now_s, latency_ms, error_rate));
                while w.samples.len() > self.config.window as usize {
                    w.samples.pop_front();
                }
                let before = w.status;
                w.status = self.classify(&w.samples);
                (before, w.status)
            };
            self.report(health, endpoint, before, after);
        }
    }

    /// Classifies a window (the model in the module docs).
    fn classify(&self, samples: &VecDeque<(f64, f64, f64)>) -> TrendStatus {
        if samples.len() < self.config.min_samples.max(3) as usize {
            return TrendStatus::default();
        }
        let (first, last) = (samples[0].0, samples[samples.len() - 1].0);
        let span = (last - first).max(f64::EPSILON);
        let latency_slope = slope(samples.iter().map(|s| (s.0, s.1)));
        let error_slope = slope(samples.iter().map(|s| (s.0, s.2)));
        let mean_latency = samples.iter().map(|s| s.1).sum::<f64>() / samples.len() as f64;
        let latency_change = latency_slope * span / mean_latency.max(0.001);
        let error_change = error_slope * span;
        let trend = if latency_change > self.config.degrading_ratio
            || error_change > self.config.degrading_error_delta
        {
            Trend::Degrading
        } else if latency_change < -self.config.degrading_ratio
            || error_change < -self.config.degrading_error_delta
        {
            Trend::Improving
        } else {
            Trend::Stable
        };
        let (_, latency_now, error_now) = samples[samples.len() - 1];
        let eta = |now: f64, limit: f64, slope: f64| {
            (slope > 0.0 && now < limit).then(|| (limit - now) / slope)
        };
        let predicted = [
            eta(
                latency_now,
                self.config.unfit_latency_ms as f64,
                latency_slope,
            ),
            eta(error_now, self.config.unfit_error_rate, error_slope),
        ]
        .into_iter()
        .flatten()
        .fold(None, |best: Option<f64>, t| {
            Some(best.map_or(t, |b| b.min(t)))
        })
        .filter(|t| trend == Trend::Degrading && *t * 1_000.0 <= self.config.horizon_ms as f64);
        TrendStatus {
            trend,
            predicted_unfit_in_s: predicted.map(|t| t.ceil() as u64),
            latency_slope_ms_per_s: latency_slope,
            error_slope_per_s: error_slope,
        }
    }

    fn report(
        &self,
        health: &PoolHealth,
        endpoint: &Endpoint,
        before: TrendStatus,
        after: TrendStatus,
    ) {
        if before.trend != after.trend {
            health.set_flag(endpoint, DEGRADED, after.trend == Trend::Degrading);
            let (kind, severity) = match after.trend {
                Trend::Degrading => (EventKind::Degrading, Severity::Warning),
                Trend::Improving => (EventKind::Improving, Severity::Info),
                Trend::Stable => (EventKind::Stable, Severity::Info),
            };
            let message = format!(
                "trend {:?}: latency {:+.2} ms/s, error rate {:+.4}/s",
                after.trend, after.latency_slope_ms_per_s, after.error_slope_per_s
            )
            .to_lowercase();
            health.publish(endpoint, kind, severity, message);
        }
        if let (None, Some(seconds)) = (before.predicted_unfit_in_s, after.predicted_unfit_in_s) {
            health.publish(
                endpoint,
                EventKind::Predicted,
                Severity::Warning,
                format!("predicted unfit in ~{seconds} s if the trend holds"),
            );
        }
    }
}

/// Least-squares slope of `points` (x, y); 0 when x does not vary.
pub fn slope(points: impl Iterator<Item = (f64, f64)> + Clone) -> f64 {
    let n = points.clone().count() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let (sx, sy) = points
        .clone()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    let (mx, my) = (sx / n, sy / n);
    let (num, den) = points.fold((0.0, 0.0), |(num, den), (x, y)| {
        (num + (x - mx) * (y - my), den + (x - mx) * (x - mx))
    });
    if den == 0.0 { 0.0 } else { num / den }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(points: &[(f64, f64, f64)]) -> VecDeque<(f64, f64, f64)> {
        points.iter().copied().collect()
    }

    fn tracker() -> TrendTracker {
        TrendTracker::new(
            &TrendConfig::default(),
            &crate::balance::tests::pool(1),
            None,
        )
    }

    #[test]
    fn least_squares_slope() {
        assert!((slope([(0.0, 1.0), (1.0, 3.0), (2.0, 5.0)].into_iter()) - 2.0).abs() < 1e-12);
        assert_eq!(slope([(1.0, 1.0), (1.0, 3.0)].into_iter()), 0.0);
    }

    #[test]
    fn classifies_and_predicts() {
        let t = tracker();
        // Latency 10 → 19 ms over 9 s: +1 ms/s, +64% of the mean: degrading;
        // 1000 ms is (1000 − 19) / 1 ≈ 981 s away: beyond the 300 s horizon.
        let rising: Vec<_> = (0..10)
            .map(|i| (f64::from(i), 10.0 + f64::from(i), 0.0))
            .collect();
        let status = t.classify(&window(&rising));
        assert_eq!(status.trend, Trend::Degrading);
        assert_eq!(status.predicted_unfit_in_s, None);
        // Errors 0 → 0.36 over 9 s: +0.04/s; 0.5 is reached in (0.5 − 0.36)/0.04 = 3.5 s.
        let failing: Vec<_> = (0..10)
            .map(|i| (f64::from(i), 10.0, 0.04 * f64::from(i)))
            .collect();
        let status = t.classify(&window(&failing));
        assert_eq!(status.trend, Trend::Degrading);
        assert_eq!(status.predicted_unfit_in_s, Some(4));
        let falling: Vec<_> = (0..10)
            .map(|i| (f64::from(i), 20.0 - f64::from(i), 0.0))
            .collect();
        assert_eq!(t.classify(&window(&falling)).trend, Trend::Improving);
        let flat: Vec<_> = (0..10)
            .map(|i| (f64::from(i), 10.0 + f64::from(i % 2) * 0.1, 0.01))
            .collect();
        assert_eq!(t.classify(&window(&flat)).trend, Trend::Stable);
        assert_eq!(
            t.classify(&window(&rising[..4])).trend,
            Trend::Stable,
            "fewer than min_samples (5)"
        );
        assert_eq!(t.classify(&window(&rising[..5])).trend, Trend::Degrading);
    }

    #[test]
    fn an_instance_without_traffic_gives_no_sample() {
        let endpoints = crate::balance::tests::pool(1);
        let t = TrendTracker::new(&TrendConfig::default(), &endpoints, None);
        let events =
            std::sync::Arc::new(crate::events::EventBus::new(16, std::time::Duration::ZERO));
        let health = PoolHealth::new("p", 1, 0, events);
        for i in 0..10 {
            t.tick(&health, &endpoints, f64::from(i));
        }
        let window = t.windows.get(0).unwrap().lock().unwrap();
        assert!(window.samples.is_empty(), "{:?}", window.samples);
        drop(window);
        // The first real sample starts the window; it does not rise from 0.
        endpoints[0].record(true, 5_000);
        for i in 10..20 {
            t.tick(&health, &endpoints, f64::from(i));
        }
        assert_eq!(t.status(0).trend, Trend::Stable);
    }
}
