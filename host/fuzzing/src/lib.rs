//! Inputs for the fuzz targets (proptest strategies), shared by the
//! modules that parse untrusted input: the config loader, the admin API's
//! bodies, the fusion judges and resolvers, and the host side of plugin
//! answers. Each target runs `PROPTEST_CASES` cases (256 by default) in
//! the test suite; `TESTING.md` records the longer runs.

use proptest::prelude::*;
use serde_json::Value;

/// Keys the parsers know, so that arbitrary documents reach past the
/// first "unknown field" into the checks behind it.
const KEYS: &[&str] = &[
    "url",
    "weight",
    "labels",
    "drain",
    "strategy",
    "kind",
    "instances",
    "pool",
    "match",
    "path_prefix",
    "host",
    "fan_out",
    "sources",
    "resolver",
    "retry",
    "breaker",
    "health",
    "outlier",
    "bulkhead",
    "sticky",
    "listeners",
    "listen",
    "routes",
    "pools",
    "admin",
    "method",
    "headers",
    "path",
    "field",
    "header",
    "status",
    "body",
    "fallback",
    "timeout_ms",
    "priority",
    "count",
    "compare",
    "min_agree",
    "on_conflict",
    "config",
];

/// An object key: a known one most of the time, else any short string.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => proptest::sample::select(KEYS).prop_map(str::to_string),
        1 => ".{0,8}",
    ]
}

/// Any JSON value, up to 4 levels deep, numbers of every kind included.
pub fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
        proptest::sample::select(KEYS).prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..6)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// `text` with up to 8 random edits: a range deleted, or a token of TOML
/// syntax, a number or a known key inserted — valid documents made almost
/// valid, where parsers break.
pub fn mutated(text: &'static str) -> impl Strategy<Value = String> {
    const TOKENS: &[&str] = &[
        "=",
        "[",
        "]",
        "{",
        "}",
        ",",
        "\"",
        "\n",
        "[[",
        "]]",
        ".",
        "0",
        "-1",
        "1e309",
        "18446744073709551616",
        "4294967296",
        "nan",
        "inf",
        "true",
        "\"\"",
        "\"x\"",
        "''",
        "\\u0000",
        "#",
        "𝄞",
    ];
    let edit = (
        any::<prop::sample::Index>(),
        0usize..16,
        0usize..(TOKENS.len() + KEYS.len()),
    );
    prop::collection::vec(edit, 0..8).prop_map(move |edits| {
        let mut text = text.to_string();
        for (at, len, token) in edits {
            let start = floor_char(&text, at.index(text.len() + 1));
            if len < 4 {
                let end = floor_char(&text, (start + len * 8).min(text.len()));
                text.replace_range(start..end, "");
            } else {
                let token = TOKENS
                    .get(token)
                    .copied()
                    .unwrap_or_else(|| KEYS[token - TOKENS.len()]);
                text.insert_str(start, token);
            }
        }
        text
    })
}

/// The largest character boundary of `text` at or below `at`.
fn floor_char(text: &str, mut at: usize) -> usize {
    at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}
