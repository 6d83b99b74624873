//! `median`: the median of a number at a JSON Pointer over the acceptable
//! answers (see [`Builtin::Median`](super::Builtin::Median)).

use std::cmp::Ordering;

use serde_json::Value;

use super::super::{Answer, Fused, FusionError, Source};

/// [`Builtin::Median`](super::Builtin::Median) of the number at JSON
/// Pointer `field` over the `ranked` acceptable answers.
///
/// # Errors
/// [`FusionError`] when no answer has a finite number there.
pub(super) fn median(
    sources: &[Source],
    answers: &[Answer],
    ranked: &[&Answer],
    field: &str,
) -> Result<Fused, FusionError> {
    let mut values: Vec<(f64, &Answer)> = ranked
        .iter()
        .filter_map(|a| Some((a.json.as_ref()?.pointer(field)?.as_f64()?, *a)))
        .filter(|(v, _)| v.is_finite())
        .collect();
    if values.is_empty() {
        return Err(FusionError::NoAnswer {
            abstained: super::super::abstained(sources, answers)
                .into_iter()
                .chain(ranked.iter().filter_map(|a| {
                    sources
                        .get(a.source)
                        .map(|s| (s.name.clone(), format!("no number at `{field}`")))
                }))
                .collect(),
        });
    }
    // Stable sort: equal values stay in rank order.
    values.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(Ordering::Equal));
    let n = values.len();
    let lower = (n - 1) / 2;
    let median = if n % 2 == 1 {
        values[lower].0
    } else {
        (values[lower].0 + values[lower + 1].0) / 2.0
    };
    let mut body = values[lower].1.json.clone().unwrap_or(Value::Null);
    if let Some(slot) = body.pointer_mut(field) {
        *slot = serde_json::Number::from_f64(median).map_or(Value::Null, Value::Number);
    }
    let mut distinct: Vec<f64> = values.iter().map(|v| v.0).collect();
    distinct.dedup();
    let agreeing = values.iter().filter(|v| v.0 == median).count();
    Ok(Fused::json(
        &body,
        values.iter().map(|v| v.1.source).collect(),
        distinct.len() as u32 - 1,
        agreeing as f64 / n as f64,
    ))
}
