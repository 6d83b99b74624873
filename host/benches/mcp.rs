//! Cost of an MCP route's `tools/list` merge once the targets' pages are
//! in: 2, 10 and 50 targets of 20 tools each (a realistic tool carries a
//! description and an input schema, ~300 bytes), a quarter of the names
//! shared by every target (prefixed on conflict), the rest the target's
//! own; the merged answer serialized as it is sent.
//!
//! Run: `cargo bench -p switchyard --bench mcp -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use criterion::{BatchSize, BenchmarkId, Criterion, criterion_main};
use serde_json::{Value, json};
use switchyard::config::PrefixMode;
use switchyard::mcp::merge::{ListKind, Naming, merge_list};

const TARGETS: [usize; 3] = [2, 10, 50];
const TOOLS: usize = 20;

/// Target `t`'s page: `TOOLS` tools, the first quarter named alike everywhere.
fn page(t: usize) -> Value {
    let tools: Vec<Value> = (0..TOOLS)
        .map(|i| {
            let name = if i < TOOLS / 4 {
                format!("shared_{i}")
            } else {
                format!("tool_{t}_{i}")
            };
            json!({
                "name": name,
                "description": "Looks something up in the target's index and returns the matching records.",
                "inputSchema": { "type": "object", "properties": {
                    "query": { "type": "string", "description": "what to look for" },
                    "limit": { "type": "integer", "minimum": 1, "maximum": 100 } },
                    "required": ["query"] },
                "annotations": { "readOnlyHint": true },
            })
        })
        .collect();
    json!({ "tools": tools, "nextCursor": null, "_meta": { "server": t } })
}

fn merge(c: &mut Criterion) {
    let mut group = c.benchmark_group("tools_list_merge");
    for n in TARGETS {
        let names: Vec<String> = (0..n).map(|t| format!("target{t}")).collect();
        let pages: Vec<(usize, Value)> = (0..n).map(|t| (t, page(t))).collect();
        let naming = Naming {
            mode: PrefixMode::OnConflict,
            separator: "__",
            targets: &names,
        };
        // The pages are the merge's to consume: copies are made outside
        // the timing.
        group.bench_with_input(BenchmarkId::from_parameter(n), &pages, |b, pages| {
            b.iter_batched(
                || pages.clone(),
                |pages| {
                    let merged =
                        merge_list(ListKind::Tools, black_box(pages), &[], &naming, |_, _| {
                            false
                        });
                    black_box(merged.result.to_string())
                },
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}

fn benches() {
    let mut c = Criterion::default().configure_from_args();
    merge(&mut c);
}

criterion_main!(benches);
