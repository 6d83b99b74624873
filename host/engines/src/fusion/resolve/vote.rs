//! Votes: `majority`, `quorum` and `weighted-vote` (see
//! [`Builtin::Vote`](super::Builtin::Vote) and [`Threshold`]): equal
//! answers grouped and counted.

use std::cmp::Ordering;

use super::super::{Answer, Fused, FusionError, Quality, Source};
use super::{Threshold, pass, ranked};

/// Equal answers and their votes.
pub(super) struct Group<'a> {
    key: u64,
    votes: f64,
    /// Best first.
    pub(super) members: Vec<&'a Answer>,
}

/// Groups the acceptable answers by key, weighing each by `weight(source)`:
/// most votes first, ties to the group whose best source ranks best.
pub(super) fn tally<'a>(
    sources: &[Source],
    answers: &'a [Answer],
    weight: impl Fn(usize) -> f64,
) -> Vec<Group<'a>> {
    let mut groups: Vec<Group<'a>> = Vec::new();
    for answer in ranked(sources, answers) {
        let Some(key) = answer.key else { continue };
        let w = weight(answer.source);
        match groups.iter_mut().find(|g| g.key == key) {
            Some(g) => {
                g.votes += w;
                g.members.push(answer);
            }
            None => groups.push(Group {
                key,
                votes: w,
                members: vec![answer],
            }),
        }
    }
    // Stable: equal votes keep the order of their best member's rank.
    groups.sort_by(|a, b| b.votes.partial_cmp(&a.votes).unwrap_or(Ordering::Equal));
    groups
}

/// [`Builtin::Vote`](super::Builtin::Vote) to `threshold` over the answers
/// to the sources `asked`; records each source's acceptance and agreement
/// in `quality`.
///
/// # Errors
/// [`FusionError`] with the tally when no answer reaches the threshold.
pub(super) fn vote(
    sources: &[Source],
    asked: &[usize],
    answers: &[Answer],
    threshold: Threshold,
    quality: &Quality,
) -> Result<Fused, FusionError> {
    let scores = quality.snapshot();
    let weight = |s: usize| -> f64 {
        match threshold {
            Threshold::Weighted { learn, .. } => {
                let base = sources.get(s).map_or(1.0, |x| x.weight);
                if learn {
                    base * scores.get(s).map_or(1.0, |q| q.score())
                } else {
                    base
                }
            }
            _ => 1.0,
        }
    };
    let groups = tally(sources, answers, weight);
    let (wins, needed) = match threshold {
        Threshold::Majority => {
            let need = asked.len() / 2 + 1;
            (
                groups.first().is_some_and(|g| g.members.len() >= need),
                format!("{need} of {} sources", asked.len()),
            )
        }
        Threshold::Quorum(q) => (
            groups
                .first()
                .is_some_and(|g| g.members.len() >= q as usize),
            format!("{q} of {} sources", asked.len()),
        ),
        Threshold::Weighted { min_share, .. } => {
            let total: f64 = asked.iter().map(|&s| weight(s)).sum();
            let need = min_share * total;
            (
                groups
                    .first()
                    .is_some_and(|g| g.votes > 0.0 && g.votes >= need),
                format!("{need:.2} of weight {total:.2}"),
            )
        }
    };
    let accepted = answers.iter().filter(|a| a.accepted()).count();
    let winner = groups.first().filter(|_| wins);
    quality.record(answers.iter().map(|a| {
        let agreed = match (a.key, winner) {
            (Some(k), Some(w)) if a.accepted() => Some(k == w.key),
            _ => None,
        };
        (a.source, a.accepted(), agreed)
    }));
    match winner {
        Some(group) => {
            let best = group.members[0];
            let mut fused = pass(best, answers);
            fused.used = group.members.iter().map(|a| a.source).collect();
            fused.conflicts = groups.len() as u32 - 1;
            fused.agreement = group.members.len() as f64 / accepted.max(1) as f64;
            Ok(fused)
        }
        None if groups.is_empty() => Err(FusionError::no_answer(sources, answers)),
        None => Err(FusionError::NoQuorum {
            needed,
            tally: groups
                .iter()
                .map(|g| {
                    (
                        g.votes,
                        g.members
                            .iter()
                            .filter_map(|a| sources.get(a.source).map(|s| s.name.clone()))
                            .collect(),
                    )
                })
                .collect(),
            abstained: super::super::abstained(sources, answers),
        }),
    }
}
