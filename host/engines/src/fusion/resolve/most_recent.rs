//! `most-recent`: the acceptable answer with the latest timestamp (see
//! [`Builtin::MostRecent`](super::Builtin::MostRecent)).

use std::cmp::Ordering;

use serde_json::Value;

use super::super::{Answer, Fused, FusionError, Source};
use super::{Stamp, pass};

/// A comparable timestamp.
#[derive(Debug, Clone, PartialEq, PartialOrd)]
enum Time {
    Number(f64),
    Text(String),
}

impl Time {
    fn parse(text: &str) -> Time {
        if let Ok(n) = text.trim().parse::<f64>() {
            return Time::Number(n);
        }
        match httpdate::parse_http_date(text) {
            Ok(t) => Time::Number(
                t.duration_since(std::time::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64()),
            ),
            Err(_) => Time::Text(text.to_string()),
        }
    }
}

/// [`Builtin::MostRecent`](super::Builtin::MostRecent) by `stamp` over the
/// `ranked` acceptable answers.
///
/// # Errors
/// [`FusionError`] when no answer carries the timestamp.
pub(super) fn most_recent(
    sources: &[Source],
    answers: &[Answer],
    ranked: &[&Answer],
    stamp: &Stamp,
) -> Result<Fused, FusionError> {
    let stamped: Vec<(&Answer, Time)> = ranked
        .iter()
        .filter_map(|a| {
            let time = match stamp {
                Stamp::Field(pointer) => match a.json.as_ref()?.pointer(pointer)? {
                    Value::Number(n) => Time::Number(n.as_f64()?),
                    Value::String(s) => Time::parse(s),
                    _ => return None,
                },
                Stamp::Header(name) => Time::parse(a.response()?.headers.get(name)?.to_str().ok()?),
            };
            Some((*a, time))
        })
        .collect();
    // Latest first; `ranked` order (priority) breaks ties since the fold keeps the first maximum.
    let best = stamped
        .iter()
        .fold(None::<&(&Answer, Time)>, |best, item| match best {
            Some(b) if b.1.partial_cmp(&item.1) != Some(Ordering::Less) => Some(b),
            _ => Some(item),
        });
    match best {
        Some((answer, _)) => Ok(pass(answer, answers)),
        None => Err(FusionError::NoAnswer {
            abstained: super::super::abstained(sources, answers)
                .into_iter()
                .chain(ranked.iter().filter_map(|a| {
                    sources
                        .get(a.source)
                        .map(|s| (s.name.clone(), "no timestamp".to_string()))
                }))
                .collect(),
        }),
    }
}
