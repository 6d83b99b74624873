//! `pick` latency of every built-in strategy and of the example Wasm plugins.
//!
//! Run: `cargo bench -p switchyard --bench pick -- --warm-up-time 1 --measurement-time 2`
//!
//! Each iteration ranks one request over N instances (8, 64, 1024, 10000)
//! into a reused ranking, as the data path does. The Wasm cases run through
//! the full sandbox: epoch deadline armed, memory-capped store, request facts
//! and every candidate's statistics marshalled, ids returned.

use std::hint::black_box;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, criterion_main};
use http::{HeaderMap, HeaderValue, Method};
use switchyard::balance::{self, Endpoint, Ranking, RequestContext, Strategy};
use switchyard::config::{
    ConsistentHashConfig, FastestResponseConfig, HashAlgorithm, HashKey, LeastConnectionsConfig,
    NoKeys, ResourceAwareConfig, StrategyConfig,
};
use switchyard::plugin::{Limits, PluginHost, WasmStrategy};

const PLUGINS: [(&str, &str, &str); 3] = [
    (
        "wasm canary-split",
        env!("SWITCHYARD_CANARY_SPLIT_WASM"),
        r#"{"percent":10}"#,
    ),
    (
        "wasm latency-p2c",
        env!("SWITCHYARD_LATENCY_P2C_WASM"),
        "{}",
    ),
    (
        "wasm label-affinity",
        env!("SWITCHYARD_LABEL_AFFINITY_WASM"),
        "{}",
    ),
];

fn pool(n: usize) -> Vec<Arc<Endpoint>> {
    (0..n)
        .map(|i| {
            let track = if i % 4 == 0 { "canary" } else { "stable" };
            let region = if i % 2 == 0 { "eu" } else { "us" };
            let port = 10_000 + (i % 50_000) as u16;
            let e = Arc::new(Endpoint::new(
                i as u32,
                format!(
                    "http://10.{}.{}.{}:{port}",
                    i >> 16,
                    (i >> 8) & 255,
                    i & 255
                ),
                format!("127.0.0.1:{port}").parse().expect("authority"),
                1 + (i % 3) as u32,
                vec![
                    ("track".to_string(), track.to_string()),
                    ("region".to_string(), region.to_string()),
                ],
            ));
            e.record(true, 1_000 + (i as u64 % 7) * 300);
            e.report_load((i % 10) as f32 / 10.0);
            e
        })
        .collect()
}

fn builtins() -> Vec<(&'static str, StrategyConfig)> {
    let hash = |algorithm| {
        StrategyConfig::ConsistentHash(ConsistentHashConfig {
            key: HashKey::Header("x-user".into()),
            algorithm,
            bounded_load_factor: None,
            vnodes_per_weight: 160,
            table_size: 65_537,
        })
    };
    vec![
        ("round-robin", StrategyConfig::RoundRobin(NoKeys {})),
        (
            "weighted-round-robin",
            StrategyConfig::WeightedRoundRobin(NoKeys {}),
        ),
        ("random", StrategyConfig::Random(NoKeys {})),
        (
            "least-connections",
            StrategyConfig::LeastConnections(LeastConnectionsConfig::default()),
        ),
        (
            "fastest-response",
            StrategyConfig::FastestResponse(FastestResponseConfig::default()),
        ),
        ("consistent-hash ring", hash(HashAlgorithm::Ring)),
        ("consistent-hash maglev", hash(HashAlgorithm::Maglev)),
        (
            "resource-aware",
            StrategyConfig::ResourceAware(ResourceAwareConfig::default()),
        ),
    ]
}

fn bench_pick(c: &mut Criterion) {
    let host = PluginHost::new().expect("plugin host");
    let method = Method::GET;
    let mut headers = HeaderMap::new();
    headers.insert("x-user", HeaderValue::from_static("user-4711"));
    headers.insert("x-region", HeaderValue::from_static("eu"));
    let client: SocketAddr = "127.0.0.1:40000".parse().expect("addr");
    let request = RequestContext {
        method: &method,
        authority: "bench.local",
        path: "/api/items?id=42",
        headers: &headers,
        client_addr: client,
    };

    let mut group = c.benchmark_group("pick");
    for n in [8usize, 64, 1024, 10_000] {
        let endpoints = pool(n);
        let mut strategies: Vec<(&str, Box<dyn Strategy>)> = builtins()
            .into_iter()
            .filter_map(|(name, config)| {
                balance::build(&config, &endpoints).ok().map(|s| (name, s))
            })
            .collect();
        for (name, path, config) in PLUGINS {
            let limits = Limits {
                call_deadline_ms: 50,
                memory_limit_bytes: 64 << 20,
                quarantine: Default::default(),
                fuel_per_call: None,
                grants: Default::default(),
            };
            let wasm = WasmStrategy::load(
                &host,
                Path::new(path),
                config.to_string(),
                limits,
                &endpoints,
                switchyard::config::DEFAULT_MAX_CANDIDATES as usize,
            )
            .expect("load plugin");
            strategies.push((name, Box::new(wasm)));
        }
        for (name, strategy) in &strategies {
            let mut ranking = Ranking::new();
            group.bench_with_input(BenchmarkId::new(*name, n), &endpoints, |b, endpoints| {
                b.iter(|| {
                    ranking.clear();
                    strategy
                        .rank(black_box(&request), endpoints, &mut ranking)
                        .expect("rank");
                    black_box(&ranking);
                });
            });
        }
    }
    group.finish();
}

/// The criterion group (its generated function has no docs of its own).
mod group {
    #![allow(missing_docs)]
    criterion::criterion_group!(benches, super::bench_pick);
}

criterion_main!(group::benches);
