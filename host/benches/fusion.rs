//! Cost of fusing answers once they are in: judging (JSON parse, canonical
//! hash) and resolving, per resolver, for 3 and 10 sources with 1 KB and
//! 100 KB JSON answers; and a Wasm resolver next to the built-in that does
//! the same work.
//!
//! Run: `cargo bench -p switchyard --bench fusion -- --warm-up-time 1 --measurement-time 3`
//!
//! The Wasm case is `mcp-federation` (parse every answer, merge the tool
//! arrays) against the built-in `merge` (parse every answer, deep-merge) on
//! the same `tools/list` answers; the Wasm figure includes marshalling every
//! answer into the sandbox and the fused answer out, under the epoch
//! deadline and memory cap.

use std::hint::black_box;
use std::path::Path;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, criterion_main};
use http::{HeaderMap, StatusCode};
use switchyard::config::{ConflictRule, ResolverConfig};
use switchyard::fusion::{
    Answer, Builtin, Judge, Outcome, Quality, Source, UpstreamResponse, judge,
};
use switchyard::plugin::{Limits, PluginHost, WasmResolver};
use switchyard::policy::RequestContext;

const SIZES: [(&str, usize); 2] = [("1KB", 1024), ("100KB", 100 * 1024)];
const SOURCES: [usize; 2] = [3, 10];

/// A JSON object of about `size` bytes: `{"items": [...]}`.
fn items_json(size: usize) -> Bytes {
    sized(
        size,
        |items| serde_json::json!({ "items": items }),
        |i| serde_json::json!({"id": i, "name": format!("item-{i}"), "price": i as f64 * 1.25}),
    )
}

/// A `tools/list` answer of about `size` bytes, half its tool names shared
/// by every source, half prefixed by `source`.
fn tools_json(size: usize, source: usize) -> Bytes {
    sized(
        size,
        |tools| serde_json::json!({"jsonrpc": "2.0", "id": 1, "result": {"tools": tools}}),
        |i| {
            let name = if i % 2 == 0 {
                format!("tool-{i}")
            } else {
                format!("s{source}-tool-{i}")
            };
            serde_json::json!({"name": name, "description": "does a thing", "inputSchema": {"type": "object"}})
        },
    )
}

/// `wrap(items)` with as many `item(i)` as fit in about `size` bytes.
fn sized(
    size: usize,
    wrap: impl Fn(Vec<serde_json::Value>) -> serde_json::Value,
    item: impl Fn(usize) -> serde_json::Value,
) -> Bytes {
    let mut items = Vec::new();
    let mut length = wrap(Vec::new()).to_string().len();
    while length < size {
        let next = item(items.len());
        length += next.to_string().len() + 1;
        items.push(next);
    }
    Bytes::from(wrap(items).to_string())
}

fn sources(n: usize) -> Vec<Source> {
    (0..n)
        .map(|i| Source {
            name: format!("s{i}"),
            priority: i as u32,
            weight: 1.0,
        })
        .collect()
}

fn outcome(body: Bytes) -> Outcome {
    Outcome::Response(UpstreamResponse {
        status: StatusCode::OK,
        headers: HeaderMap::new(),
        body,
    })
}

/// Judges every body for `resolver` and resolves, as the data path does.
fn fuse(
    resolver: &Builtin,
    sources: &[Source],
    asked: &[usize],
    bodies: &[Bytes],
    quality: &Quality,
) -> usize {
    let rules = Judge {
        accept_status: 200..=299,
        needs_json: resolver.needs_json(),
        schema: None,
        vote: resolver.vote(),
    };
    let answers: Vec<Answer> = bodies
        .iter()
        .enumerate()
        .map(|(i, b)| judge(&rules, i, 1_000, outcome(b.clone())))
        .collect();
    resolver
        .resolve(sources, asked, &answers, quality)
        .map_or(0, |f| f.body.len())
}

fn builtins(c: &mut Criterion) {
    let resolvers: [(&str, ResolverConfig); 4] = [
        (
            "priority",
            toml::from_str("kind = \"priority\"").expect("config"),
        ),
        (
            "majority json",
            toml::from_str("kind = \"majority\"").expect("config"),
        ),
        (
            "majority body",
            toml::from_str("kind = \"majority\"\ncompare = \"body\"").expect("config"),
        ),
        ("merge", toml::from_str("kind = \"merge\"").expect("config")),
    ];
    let mut group = c.benchmark_group("fuse");
    for (size_name, size) in SIZES {
        let body = items_json(size);
        for n in SOURCES {
            let s = sources(n);
            let asked: Vec<usize> = (0..n).collect();
            let bodies = vec![body.clone(); n];
            let quality = Quality::new(n);
            for (name, config) in &resolvers {
                let resolver = Builtin::new(config).expect("built-in");
                group.bench_with_input(
                    BenchmarkId::new(format!("{name} {size_name}"), n),
                    &n,
                    |b, _| b.iter(|| black_box(fuse(&resolver, &s, &asked, &bodies, &quality))),
                );
            }
        }
    }
    group.finish();
}

fn wasm_vs_builtin(c: &mut Criterion) {
    let host = PluginHost::new().expect("engine");
    let plugin = WasmResolver::load(
        &host,
        Path::new(env!("SWITCHYARD_MCP_FEDERATION_WASM")),
        "{}".into(),
        Limits {
            call_deadline_ms: 1_000,
            memory_limit_bytes: 256 << 20,
            quarantine: Default::default(),
            fuel_per_call: None,
            grants: Default::default(),
        },
    )
    .expect("mcp-federation loads");
    let merge = Builtin::Merge(ConflictRule::Priority);
    let peer = "127.0.0.1:40000".parse().expect("addr");
    let headers = http::HeaderMap::new();
    let facts = RequestContext {
        method: &http::Method::POST,
        authority: "localhost",
        path: "/mcp",
        headers: &headers,
        client_addr: peer,
    };
    let mut group = c.benchmark_group("resolver tools/list");
    for (size_name, size) in SIZES {
        for n in SOURCES {
            let s = sources(n);
            let asked: Vec<usize> = (0..n).collect();
            let bodies: Vec<Bytes> = (0..n).map(|i| tools_json(size, i)).collect();
            let quality = Quality::new(n);
            group.bench_with_input(
                BenchmarkId::new(format!("built-in merge {size_name}"), n),
                &n,
                |b, _| b.iter(|| black_box(fuse(&merge, &s, &asked, &bodies, &quality))),
            );
            let rules = Judge {
                accept_status: 200..=299,
                needs_json: false,
                schema: None,
                vote: None,
            };
            group.bench_with_input(
                BenchmarkId::new(format!("wasm mcp-federation {size_name}"), n),
                &n,
                |b, _| {
                    b.iter(|| {
                        let answers: Vec<Answer> = bodies
                            .iter()
                            .enumerate()
                            .map(|(i, body)| judge(&rules, i, 1_000, outcome(body.clone())))
                            .collect();
                        black_box(
                            plugin
                                .resolve(&facts, &s, &answers, &(200..=299))
                                .map_or(0, |f| f.body.len()),
                        )
                    })
                },
            );
        }
    }
    group.finish();
}

fn benches() {
    let mut c = Criterion::default().configure_from_args();
    builtins(&mut c);
    wasm_vs_builtin(&mut c);
}

criterion_main!(benches);
