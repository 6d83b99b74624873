//! `pick` latency of the built-in strategies and of a Wasm plugin.
//!
//! Run: `cargo bench -p switchyard --bench pick`
//!
//! Each iteration ranks one request over N instances (8, 64, 1024) into a
//! reused ranking, as the data path does. The Wasm case is the `canary-split`
//! example plugin (the one `switchyard demo` embeds), called through the full
//! sandbox: epoch deadline armed, memory-capped store, marshalling of the
//! request facts and of every candidate's statistics.

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, criterion_main};
use http::{HeaderMap, Method};
use switchyard::balance::{
    Endpoint, LeastConnections, Ranking, RequestContext, RoundRobin, Strategy,
};
use switchyard::plugin::{Limits, PluginHost, WasmStrategy};

fn pool(n: usize) -> Vec<Arc<Endpoint>> {
    (0..n)
        .map(|i| {
            let track = if i % 4 == 0 { "canary" } else { "stable" };
            let port = 10_000 + i as u16;
            Arc::new(Endpoint::new(
                i as u32,
                format!("http://127.0.0.1:{port}"),
                format!("127.0.0.1:{port}").parse().expect("authority"),
                1,
                vec![("track".to_string(), track.to_string())],
            ))
        })
        .collect()
}

fn bench_pick(c: &mut Criterion) {
    let host = PluginHost::new().expect("plugin host");
    let dir = std::env::temp_dir().join(format!("switchyard-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let plugin = dir.join("canary_split.wasm");
    std::fs::write(&plugin, switchyard::demo::CANARY_SPLIT_WASM).expect("write plugin");

    let method = Method::GET;
    let headers = HeaderMap::new();
    let client: SocketAddr = "127.0.0.1:40000".parse().expect("addr");
    let request = RequestContext {
        method: &method,
        authority: "bench.local",
        path: "/api/items?id=42",
        headers: &headers,
        client_addr: client,
    };

    let mut group = c.benchmark_group("pick");
    for n in [8usize, 64, 1024] {
        let endpoints = pool(n);
        let wasm = WasmStrategy::load(
            &host,
            &plugin,
            r#"{"percent":10}"#.to_string(),
            Limits {
                call_deadline_ms: 5,
                memory_limit_bytes: 16 << 20,
            },
            &endpoints,
        )
        .expect("load plugin");
        let strategies: [(&str, Box<dyn Strategy>); 3] = [
            ("round-robin", Box::new(RoundRobin::default())),
            ("least-connections", Box::new(LeastConnections::default())),
            ("wasm canary-split", Box::new(wasm)),
        ];
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
    let _ = std::fs::remove_dir_all(&dir);
}

/// The criterion group (its generated function has no docs of its own).
mod group {
    #![allow(missing_docs)]
    criterion::criterion_group!(benches, super::bench_pick);
}

criterion_main!(group::benches);
