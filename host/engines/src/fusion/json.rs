//! Canonical JSON hashing and the deterministic deep merge.

use std::collections::BTreeSet;

use serde_json::Value;

use switchyard_config::ConflictRule;

/// xxHash64 of `value` in a canonical form: object keys sorted, no
/// whitespace, integers and floats by value (so `1` and `1.0` differ, as
/// they do in JSON's data model). Equal JSON texts hash equal regardless of
/// key order and formatting. The canonical bytes are written to one buffer
/// and hashed once.
pub fn canonical_hash(value: &Value) -> u64 {
    let mut buffer = Vec::with_capacity(256);
    write_canonical(&mut buffer, value);
    xxhash_rust::xxh64::xxh64(&buffer, 0)
}

fn write_canonical(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.push(b'n'),
        Value::Bool(b) => out.push(if *b { b't' } else { b'f' }),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                out.push(b'i');
                out.extend_from_slice(&i.to_le_bytes());
            } else if let Some(u) = n.as_u64() {
                out.push(b'u');
                out.extend_from_slice(&u.to_le_bytes());
            } else {
                out.push(b'd');
                out.extend_from_slice(&n.as_f64().unwrap_or(f64::NAN).to_bits().to_le_bytes());
            }
        }
        Value::String(s) => write_str(out, b's', s),
        Value::Array(items) => {
            out.push(b'[');
            for item in items {
                write_canonical(out, item);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            out.push(b'{');
            // serde_json's map is sorted unless its `preserve_order` feature
            // is on somewhere in the build: sort only when needed.
            if map.keys().is_sorted() {
                for (key, item) in map {
                    write_str(out, b'k', key);
                    write_canonical(out, item);
                }
            } else {
                let mut entries: Vec<(&String, &Value)> = map.iter().collect();
                entries.sort_by_key(|(k, _)| *k);
                for (key, item) in entries {
                    write_str(out, b'k', key);
                    write_canonical(out, item);
                }
            }
            out.push(b'}');
        }
    }
}

/// A tagged, length-prefixed string (no two sequences of strings share bytes).
fn write_str(out: &mut Vec<u8>, tag: u8, s: &str) {
    out.push(tag);
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Deep-merges `values` — `(source index, value)` in priority order, best
/// first — into one value.
///
/// Objects merge key by key (the union of their keys, each merged
/// recursively); any other value, arrays included, is atomic. When sources
/// give different values for one key, that is a conflict: `rule` picks the
/// best-priority source's value (`priority`), or the value most sources gave,
/// a tie going to the best priority (`majority`). Returns the merged value,
/// the number of conflicts, and the sources whose value lost at least one.
/// The result depends only on the values and their order, never on timing.
pub fn merge(values: &[(usize, &Value)], rule: ConflictRule) -> (Value, u32, BTreeSet<usize>) {
    let mut conflicts = 0;
    let mut overruled = BTreeSet::new();
    let merged = merge_into(values, rule, &mut conflicts, &mut overruled);
    (merged, conflicts, overruled)
}

fn merge_into(
    values: &[(usize, &Value)],
    rule: ConflictRule,
    conflicts: &mut u32,
    overruled: &mut BTreeSet<usize>,
) -> Value {
    let Some(&(_, first)) = values.first() else {
        return Value::Null;
    };
    if values.len() > 1 && values.iter().all(|(_, v)| v.is_object()) {
        let keys: BTreeSet<&String> = values
            .iter()
            .filter_map(|(_, v)| v.as_object())
            .flat_map(|m| m.keys())
            .collect();
        let mut out = serde_json::Map::new();
        for key in keys {
            let sub: Vec<(usize, &Value)> = values
                .iter()
                .filter_map(|(s, v)| v.get(key).map(|x| (*s, x)))
                .collect();
            out.insert(key.clone(), merge_into(&sub, rule, conflicts, overruled));
        }
        return Value::Object(out);
    }
    // Distinct values in order of first appearance (= priority order), with
    // the sources that gave each.
    let mut groups: Vec<(u64, &Value, Vec<usize>)> = Vec::new();
    for &(source, value) in values {
        let hash = canonical_hash(value);
        match groups.iter_mut().find(|g| g.0 == hash) {
            Some(group) => group.2.push(source),
            None => groups.push((hash, value, vec![source])),
        }
    }
    if groups.len() == 1 {
        return first.clone();
    }
    *conflicts += 1;
    let winner = match rule {
        ConflictRule::Priority => 0,
        // max_by_key keeps the last maximum; iterate reversed so the first
        // (best-priority) group wins ties.
        ConflictRule::Majority => groups
            .iter()
            .enumerate()
            .rev()
            .max_by_key(|(_, g)| g.2.len())
            .map_or(0, |(i, _)| i),
    };
    for (i, group) in groups.iter().enumerate() {
        if i != winner {
            overruled.extend(&group.2);
        }
    }
    groups[winner].1.clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_hash_ignores_key_order_not_values() {
        let a = json!({"a": 1, "b": {"c": [1, 2], "d": null}});
        let b: Value =
            serde_json::from_str(r#"{ "b": { "d": null, "c": [1,2] }, "a": 1 }"#).unwrap();
        assert_eq!(canonical_hash(&a), canonical_hash(&b));
        assert_ne!(
            canonical_hash(&a),
            canonical_hash(&json!({"a": 2, "b": {"c": [1, 2], "d": null}}))
        );
        assert_ne!(
            canonical_hash(&json!([1, 2])),
            canonical_hash(&json!([2, 1]))
        );
        assert_ne!(
            canonical_hash(&json!({"ab": "c"})),
            canonical_hash(&json!({"a": "bc"}))
        );
    }

    #[test]
    fn merge_unions_keys_and_resolves_conflicts_by_rule() {
        let a = json!({"name": "x", "price": 10, "meta": {"region": "eu"}});
        let b = json!({"price": 12, "stock": 3, "meta": {"vendor": "b"}});
        let c = json!({"price": 12, "meta": {"region": "eu"}});
        let values = [(0, &a), (1, &b), (2, &c)];
        let (by_priority, conflicts, overruled) = merge(&values, ConflictRule::Priority);
        assert_eq!(
            by_priority,
            json!({"name": "x", "price": 10, "stock": 3, "meta": {"region": "eu", "vendor": "b"}})
        );
        assert_eq!(conflicts, 1);
        assert_eq!(overruled.into_iter().collect::<Vec<_>>(), vec![1, 2]);
        let (by_majority, conflicts, overruled) = merge(&values, ConflictRule::Majority);
        assert_eq!(by_majority["price"], json!(12));
        assert_eq!(conflicts, 1);
        assert_eq!(overruled.into_iter().collect::<Vec<_>>(), vec![0]);
    }

    #[test]
    fn majority_ties_go_to_the_best_priority() {
        let (a, b) = (json!({"v": 1}), json!({"v": 2}));
        let (merged, _, _) = merge(&[(0, &a), (1, &b)], ConflictRule::Majority);
        assert_eq!(merged, json!({"v": 1}));
        let (merged, _, _) = merge(&[(1, &b), (0, &a)], ConflictRule::Majority);
        assert_eq!(merged, json!({"v": 2}), "order given is the priority order");
    }
}
