//! Per-request cost of passive health bookkeeping.
//!
//! Run: `cargo bench -p switchyard --bench health -- --warm-up-time 1 --measurement-time 2`
//!
//! After every attempt the data path folds the outcome into the instance's
//! latency and success EWMAs (`Endpoint::record`) and, with outlier detection
//! on, into its consecutive-error and success-rate counters
//! (`OutlierDetector::record`). This measures both, on the success path
//! (the common one) and on a failure that does not eject.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_main};
use switchyard::balance::Endpoint;
use switchyard::config::OutlierConfig;
use switchyard::events::EventBus;
use switchyard::health::PoolHealth;
use switchyard::health::outlier::OutlierDetector;
use switchyard::policy::AttemptOutcome;

fn bench_bookkeeping(c: &mut Criterion) {
    let endpoints: Vec<Arc<Endpoint>> = (0..64)
        .map(|i| {
            Arc::new(Endpoint::new(
                i,
                format!("http://10.0.0.{i}:80"),
                format!("10.0.0.{i}:80").parse().expect("authority"),
                1,
                Vec::new(),
            ))
        })
        .collect();
    let events = Arc::new(EventBus::new(16, Duration::from_secs(30)));
    let health = PoolHealth::new("bench", endpoints.len(), 50, events);
    let outlier = OutlierDetector::new(
        &OutlierConfig {
            consecutive_5xx: u32::MAX,
            ..OutlierConfig::default()
        },
        &endpoints,
        None,
    );
    let e = &endpoints[7];
    c.bench_function("bookkeeping/ewma record", |b| {
        b.iter(|| e.record(black_box(true), black_box(1_250)));
    });
    c.bench_function("bookkeeping/outlier record success", |b| {
        b.iter(|| {
            outlier.record(
                &health,
                &endpoints,
                e,
                black_box(AttemptOutcome::Answered(200)),
                0,
            )
        });
    });
    c.bench_function("bookkeeping/outlier record 5xx", |b| {
        b.iter(|| {
            outlier.record(
                &health,
                &endpoints,
                e,
                black_box(AttemptOutcome::Answered(503)),
                0,
            )
        });
    });
}

/// The criterion group (its generated function has no docs of its own).
mod group {
    #![allow(missing_docs)]
    criterion::criterion_group!(benches, super::bench_bookkeeping);
}

criterion_main!(group::benches);
