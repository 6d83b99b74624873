//! `all`: every asked source's answer with its provenance, in source
//! order, as one JSON array (see [`Builtin::All`](super::Builtin::All)).

use serde_json::Value;

use super::super::{Answer, Fused, FusionError, Source};

/// [`Builtin::All`](super::Builtin::All) over the answers to the sources
/// `asked`.
///
/// # Errors
/// [`FusionError`] when no answer is acceptable.
pub(super) fn all(
    sources: &[Source],
    asked: &[usize],
    answers: &[Answer],
) -> Result<Fused, FusionError> {
    if !answers.iter().any(Answer::accepted) {
        return Err(FusionError::no_answer(sources, answers));
    }
    let items: Vec<Value> = asked
        .iter()
        .filter_map(|&s| {
            let source = sources.get(s)?;
            let answer = answers.iter().find(|a| a.source == s);
            let mut item = serde_json::json!({
                "source": source.name,
                "priority": source.priority,
                "weight": source.weight,
            });
            if let Some(a) = answer {
                item["latency_ms"] = Value::from(a.latency_us as f64 / 1000.0);
                if let Some(r) = a.response() {
                    item["status"] = Value::from(r.status.as_u16());
                    item["body"] = serde_json::from_slice(&r.body).unwrap_or_else(|_| {
                        Value::from(String::from_utf8_lossy(&r.body).into_owned())
                    });
                }
                if let Some(why) = &a.rejected {
                    item["error"] = Value::from(why.as_str());
                }
            }
            Some(item)
        })
        .collect();
    let used: Vec<usize> = asked
        .iter()
        .copied()
        .filter(|s| answers.iter().any(|a| a.source == *s && a.accepted()))
        .collect();
    let agreement = used.len() as f64 / asked.len().max(1) as f64;
    Ok(Fused::json(&Value::Array(items), used, 0, agreement))
}
