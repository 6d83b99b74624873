//! The built-in resolvers: the [`Builtin`] enum, its early exit and the
//! shared ranking here; the vote, `most-recent`, `median` and `all`
//! resolvers one per file (as `balance/`'s strategies are).

mod all;
mod median;
mod most_recent;
mod vote;

use self::all::all;
use self::median::median;
use self::most_recent::most_recent;
use self::vote::{tally, vote};

use http::HeaderName;
use serde_json::Value;

use super::{Answer, Fused, FusionError, Quality, Source, json};
use switchyard_config::{Compare, ConflictRule, ResolverConfig};

/// A built-in resolver. Each documents its rule, its tie-break, and when it
/// can answer before every source has (early exit).
#[derive(Debug, Clone)]
pub enum Builtin {
    /// The first acceptable answer to arrive wins; the other requests are
    /// cancelled (hedging, as Envoy's hedged requests). Early exit: at the
    /// first acceptable answer.
    FirstSuccess,
    /// The acceptable answer of the best-priority source ("trust your
    /// friends"); ties by source position. Early exit: once every source
    /// ranked above the best acceptable answer has failed.
    Priority,
    /// A vote over equal answers (canonical JSON or body hash). Errors,
    /// timeouts and answers that do not count abstain. The winner is the
    /// answer with the most votes (or weight); a tie goes to the answer whose
    /// best source has the best priority. Without the threshold → 502 with
    /// the tally.
    Vote {
        /// What wins.
        threshold: Threshold,
        /// How answers are compared.
        compare: Compare,
    },
    /// The answer with the latest timestamp ("keep up to date"): numbers
    /// compare as numbers, HTTP dates as dates, other strings as text (RFC
    /// 3339 timestamps in one time zone sort correctly); a number counts as
    /// older than text. Answers without the timestamp do not count. Ties by
    /// priority.
    MostRecent(Stamp),
    /// The median of a number at a JSON Pointer ("meet in the middle"): for
    /// an even count, the mean of the two middle values. The answer is the
    /// body of the source holding the lower middle value, with the field set
    /// to the median. Answers without a number there do not count.
    Median {
        /// JSON Pointer of the number.
        field: String,
    },
    /// A deep JSON merge in priority order (see [`json::merge`]).
    Merge(ConflictRule),
    /// A JSON array of every asked source's answer with its provenance
    /// (`source`, `priority`, `weight`, `latency_ms`, `status`, `body` — as
    /// JSON when it parses, else text — or `error`), in source order. 502 if
    /// no answer counts.
    All,
}

/// What a vote needs to win.
#[derive(Debug, Clone, Copy)]
pub enum Threshold {
    /// More than half of the sources asked (a strict majority; abstentions
    /// count against). Early exit when reached or no longer reachable.
    Majority,
    /// At least this many equal answers; the first answer to reach the
    /// quorum wins (early exit), so with a quorum of at most half the
    /// sources the result can depend on arrival order.
    Quorum(u32),
    /// The heaviest answer by total weight (× learned quality when `learn`),
    /// with at least `min_share` of the weight of all sources asked. Waits
    /// for every source.
    Weighted {
        /// Multiply weights by [`super::SourceQuality::score`].
        learn: bool,
        /// Share of the total weight needed, 0..1.
        min_share: f64,
    },
}

/// Where `most-recent` finds the timestamp.
#[derive(Debug, Clone)]
pub enum Stamp {
    /// A JSON Pointer into the body.
    Field(String),
    /// A response header.
    Header(HeaderName),
}

impl Builtin {
    /// The built-in resolver of `config`; `None` for a plugin.
    pub fn new(config: &ResolverConfig) -> Option<Self> {
        Some(match config {
            ResolverConfig::FirstSuccess(_) => Builtin::FirstSuccess,
            ResolverConfig::Priority(_) => Builtin::Priority,
            ResolverConfig::Majority(c) => Builtin::Vote {
                threshold: Threshold::Majority,
                compare: c.compare,
            },
            ResolverConfig::Quorum(c) => Builtin::Vote {
                threshold: Threshold::Quorum(c.min_agree),
                compare: c.compare,
            },
            ResolverConfig::WeightedVote(c) => Builtin::Vote {
                threshold: Threshold::Weighted {
                    learn: c.learn,
                    min_share: c.min_share,
                },
                compare: c.compare,
            },
            ResolverConfig::MostRecent(c) => Builtin::MostRecent(match (&c.field, &c.header) {
                (Some(field), _) => Stamp::Field(field.clone()),
                (None, Some(header)) => Stamp::Header(HeaderName::try_from(header.as_str()).ok()?),
                (None, None) => return None,
            }),
            ResolverConfig::Median(c) => Builtin::Median {
                field: c.field.clone(),
            },
            ResolverConfig::Merge(c) => Builtin::Merge(c.on_conflict),
            ResolverConfig::All(_) => Builtin::All,
            ResolverConfig::Plugin(_) => return None,
        })
    }

    /// Whether answers must be JSON to count.
    pub fn needs_json(&self) -> bool {
        matches!(
            self,
            Builtin::MostRecent(Stamp::Field(_)) | Builtin::Median { .. } | Builtin::Merge(_)
        )
    }

    /// How the resolver compares answers, if it votes.
    pub fn vote(&self) -> Option<Compare> {
        match self {
            Builtin::Vote { compare, .. } => Some(*compare),
            _ => None,
        }
    }

    /// Whether the answers so far settle the result, so that the requests
    /// still pending among `asked` can be cancelled.
    pub fn enough(&self, sources: &[Source], asked: &[usize], answers: &[Answer]) -> bool {
        let pending = || {
            asked
                .iter()
                .filter(move |s| !answers.iter().any(|a| a.source == **s))
        };
        match self {
            Builtin::FirstSuccess => answers.iter().any(Answer::accepted),
            Builtin::Priority => {
                let Some(best) = answers
                    .iter()
                    .filter(|a| a.accepted())
                    .map(|a| rank(sources, a.source))
                    .min()
                else {
                    return false;
                };
                pending().all(|&s| rank(sources, s) > best)
            }
            Builtin::Vote {
                threshold: Threshold::Majority,
                ..
            } => {
                let need = asked.len() / 2 + 1;
                let top = tally(sources, answers, |_| 1.0)
                    .first()
                    .map_or(0, |g| g.members.len());
                top >= need || top + pending().count() < need
            }
            Builtin::Vote {
                threshold: Threshold::Quorum(q),
                ..
            } => {
                let need = *q as usize;
                let top = tally(sources, answers, |_| 1.0)
                    .first()
                    .map_or(0, |g| g.members.len());
                top >= need || top + pending().count() < need
            }
            _ => false,
        }
    }

    /// Fuses `answers` (in arrival order; one per source of `asked` once the
    /// fan-out is over) and records each source's acceptance and agreement
    /// in `quality`.
    ///
    /// # Errors
    /// [`FusionError`] with the tally when no answer wins.
    pub fn resolve(
        &self,
        sources: &[Source],
        asked: &[usize],
        answers: &[Answer],
        quality: &Quality,
    ) -> Result<Fused, FusionError> {
        let ranked = ranked(sources, answers);
        let result = match self {
            Builtin::FirstSuccess => answers
                .iter()
                .find(|a| a.accepted())
                .map(|a| pass(a, answers))
                .ok_or_else(|| FusionError::no_answer(sources, answers)),
            Builtin::Priority => ranked
                .first()
                .map(|a| pass(a, answers))
                .ok_or_else(|| FusionError::no_answer(sources, answers)),
            Builtin::Vote { threshold, .. } => {
                return vote(sources, asked, answers, *threshold, quality);
            }
            Builtin::MostRecent(stamp) => most_recent(sources, answers, &ranked, stamp),
            Builtin::Median { field } => median(sources, answers, &ranked, field),
            Builtin::Merge(rule) => {
                if ranked.is_empty() {
                    return Err(FusionError::no_answer(sources, answers));
                }
                let values: Vec<(usize, &Value)> = ranked
                    .iter()
                    .filter_map(|a| a.json.as_ref().map(|j| (a.source, j)))
                    .collect();
                let (merged, conflicts, overruled) = json::merge(&values, *rule);
                quality.record(answers.iter().map(|a| {
                    (
                        a.source,
                        a.accepted(),
                        a.accepted().then(|| !overruled.contains(&a.source)),
                    )
                }));
                let agreement = 1.0 - overruled.len() as f64 / values.len() as f64;
                return Ok(Fused::json(
                    &merged,
                    values.iter().map(|(s, _)| *s).collect(),
                    conflicts,
                    agreement,
                ));
            }
            Builtin::All => all(sources, asked, answers),
        };
        quality.record(answers.iter().map(|a| (a.source, a.accepted(), None)));
        result
    }
}

/// A source's rank: priority, then position.
fn rank(sources: &[Source], source: usize) -> (u32, usize) {
    (sources.get(source).map_or(u32::MAX, |s| s.priority), source)
}

/// The acceptable answers, best rank first.
fn ranked<'a>(sources: &[Source], answers: &'a [Answer]) -> Vec<&'a Answer> {
    let mut ranked: Vec<&Answer> = answers.iter().filter(|a| a.accepted()).collect();
    ranked.sort_by_key(|a| rank(sources, a.source));
    ranked
}

/// `answer` passed through, agreement = share of acceptable answers with
/// the same body.
fn pass(answer: &Answer, answers: &[Answer]) -> Fused {
    let body_of = |a: &Answer| a.response().map(|r| xxhash_rust::xxh64::xxh64(&r.body, 0));
    let own = body_of(answer);
    let accepted: Vec<&Answer> = answers.iter().filter(|a| a.accepted()).collect();
    let same = accepted.iter().filter(|a| body_of(a) == own).count();
    let distinct = {
        let mut hashes: Vec<Option<u64>> = accepted.iter().map(|a| body_of(a)).collect();
        hashes.sort_unstable();
        hashes.dedup();
        hashes.len()
    };
    let response = answer.response();
    Fused {
        status: response.map_or(http::StatusCode::OK, |r| r.status),
        headers: response.map(|r| r.headers.clone()).unwrap_or_default(),
        body: response.map(|r| r.body.clone()).unwrap_or_default(),
        used: vec![answer.source],
        conflicts: distinct.saturating_sub(1) as u32,
        agreement: same as f64 / accepted.len().max(1) as f64,
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http::{HeaderMap, StatusCode};

    use super::super::{Judge, Outcome, UpstreamResponse, judge};
    use super::*;

    fn sources(n: usize) -> Vec<Source> {
        (0..n)
            .map(|i| Source {
                name: format!("s{i}"),
                priority: i as u32,
                weight: 1.0,
            })
            .collect()
    }

    /// Judged answers for `bodies` (None = timeout), source i for body i.
    fn answers(resolver: &Builtin, bodies: &[Option<&str>]) -> Vec<Answer> {
        let j = Judge {
            accept_status: 200..=299,
            needs_json: resolver.needs_json(),
            schema: None,
            vote: resolver.vote(),
        };
        bodies
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let outcome = match b {
                    Some(body) => Outcome::Response(UpstreamResponse {
                        status: StatusCode::OK,
                        headers: HeaderMap::new(),
                        body: Bytes::copy_from_slice(body.as_bytes()),
                    }),
                    None => Outcome::Timeout,
                };
                judge(&j, i, 1_000, outcome)
            })
            .collect()
    }

    fn run(resolver: &Builtin, bodies: &[Option<&str>]) -> Result<Fused, FusionError> {
        let s = sources(bodies.len());
        let asked: Vec<usize> = (0..bodies.len()).collect();
        let a = answers(resolver, bodies);
        resolver.resolve(&s, &asked, &a, &Quality::new(s.len()))
    }

    fn body(f: &Fused) -> Value {
        serde_json::from_slice(&f.body).unwrap()
    }

    const MAJORITY: Builtin = Builtin::Vote {
        threshold: Threshold::Majority,
        compare: Compare::Json,
    };

    #[test]
    fn majority_counts_canonical_json_and_reports_the_tally() {
        let f = run(
            &MAJORITY,
            &[
                Some(r#"{"v":1}"#),
                Some(r#"{"v":2}"#),
                Some(r#"{ "v" : 2 }"#),
            ],
        )
        .unwrap();
        assert_eq!(body(&f), serde_json::json!({"v": 2}));
        assert_eq!((f.used.clone(), f.conflicts), (vec![1, 2], 1));
        assert!((f.agreement - 2.0 / 3.0).abs() < 1e-9);
        let err = run(&MAJORITY, &[Some(r#"{"v":1}"#), Some(r#"{"v":2}"#), None]).unwrap_err();
        let FusionError::NoQuorum {
            tally, abstained, ..
        } = &err
        else {
            panic!("{err:?}")
        };
        assert_eq!(tally.len(), 2);
        assert_eq!(abstained, &vec![("s2".to_string(), "timeout".to_string())]);
        assert_eq!(err.details()["needed"], "2 of 3 sources");
    }

    #[test]
    fn majority_exits_early_when_reached_or_unreachable() {
        let s = sources(3);
        let a = answers(&MAJORITY, &[Some("1"), Some("1")]);
        assert!(MAJORITY.enough(&s, &[0, 1, 2], &a));
        let a = answers(&MAJORITY, &[Some("1"), Some("2")]);
        assert!(
            !MAJORITY.enough(&s, &[0, 1, 2], &a),
            "s2 could still decide"
        );
        let a = answers(&MAJORITY, &[None, Some("2"), Some("3")]);
        assert!(
            MAJORITY.enough(&s, &[0, 1, 2], &a),
            "no value can reach 2 any more"
        );
    }

    #[test]
    fn priority_takes_the_best_ranked_acceptable_answer() {
        let f = run(&Builtin::Priority, &[None, Some("b"), Some("c")]).unwrap();
        assert_eq!(f.body, "b");
        let s = sources(3);
        let a = answers(&Builtin::Priority, &[None, Some("b")]);
        assert!(Builtin::Priority.enough(&s, &[0, 1, 2], &a));
        let a = answers(&Builtin::Priority, &[None, Some("b")]);
        assert!(
            !Builtin::Priority.enough(&s, &[0, 1, 2], &a[1..]),
            "s0 pending"
        );
    }

    #[test]
    fn weighted_vote_follows_weight_and_learned_quality() {
        let mut s = sources(3);
        s[0].weight = 3.0;
        let resolver = Builtin::Vote {
            threshold: Threshold::Weighted {
                learn: true,
                min_share: 0.0,
            },
            compare: Compare::Body,
        };
        let quality = Quality::new(3);
        let a = answers(&resolver, &[Some("x"), Some("y"), Some("y")]);
        let f = resolver.resolve(&s, &[0, 1, 2], &a, &quality).unwrap();
        assert_eq!(f.body, "x", "weight 3 beats 2");
        // s0 keeps disagreeing with an (unweighted) majority elsewhere; its quality drops.
        for _ in 0..20 {
            quality.record([(0, true, Some(false))]);
        }
        let f = resolver.resolve(&s, &[0, 1, 2], &a, &quality).unwrap();
        assert_eq!(f.body, "y", "learned quality shrinks s0's weight");
    }

    #[test]
    fn most_recent_median_merge_and_all() {
        let recent = Builtin::MostRecent(Stamp::Field("/at".into()));
        let f = run(
            &recent,
            &[
                Some(r#"{"at":"2026-01-02T00:00:00Z","v":1}"#),
                Some(r#"{"at":"2026-03-01T00:00:00Z","v":2}"#),
                Some(r#"{"v":3}"#),
            ],
        )
        .unwrap();
        assert_eq!(body(&f)["v"], 2);
        let tie = run(
            &recent,
            &[Some(r#"{"at":5,"v":1}"#), Some(r#"{"at":5,"v":2}"#)],
        )
        .unwrap();
        assert_eq!(body(&tie)["v"], 1, "tie to priority");

        let median = Builtin::Median { field: "/p".into() };
        let f = run(
            &median,
            &[
                Some(r#"{"p":10,"id":"a"}"#),
                Some(r#"{"p":30,"id":"b"}"#),
                Some(r#"{"p":20,"id":"c"}"#),
            ],
        )
        .unwrap();
        assert_eq!(
            (body(&f)["p"].as_f64(), body(&f)["id"].as_str()),
            (Some(20.0), Some("c"))
        );
        let f = run(
            &median,
            &[Some(r#"{"p":10}"#), Some(r#"{"p":20}"#), Some("{}")],
        )
        .unwrap();
        assert_eq!(body(&f)["p"].as_f64(), Some(15.0));

        let merge = Builtin::Merge(ConflictRule::Priority);
        let f = run(&merge, &[Some(r#"{"a":1}"#), Some(r#"{"a":2,"b":2}"#)]).unwrap();
        assert_eq!(body(&f), serde_json::json!({"a": 1, "b": 2}));
        assert_eq!((f.conflicts, f.agreement), (1, 0.5));

        let f = run(&Builtin::All, &[Some(r#"{"a":1}"#), None]).unwrap();
        let items = body(&f);
        assert_eq!(items[0]["body"]["a"], 1);
        assert_eq!(items[1]["error"], "timeout");
        assert!(run(&Builtin::All, &[None, None]).is_err());
    }

    mod fuzz {
        use bytes::Bytes;
        use http::{HeaderMap, HeaderValue, StatusCode};
        use proptest::prelude::*;

        use super::super::super::{Judge, Outcome, UpstreamResponse, judge};
        use super::super::*;
        use super::sources;
        use switchyard_config::ResolverConfig;

        /// A resolver config of every kind, with arbitrary fields (JSON
        /// Pointers, header names, thresholds).
        fn resolver() -> impl Strategy<Value = Option<Builtin>> {
            (
                proptest::sample::select(
                    &[
                        "first-success",
                        "priority",
                        "majority",
                        "quorum",
                        "weighted-vote",
                        "most-recent",
                        "median",
                        "merge",
                        "all",
                    ][..],
                ),
                switchyard_fuzzing::json(),
                prop_oneof![Just("/price".to_string()), ".{0,10}"],
            )
                .prop_map(|(kind, extra, field)| {
                    let mut config = serde_json::json!({ "kind": kind, "field": field });
                    if let (Some(config), serde_json::Value::Object(extra)) =
                        (config.as_object_mut(), extra)
                    {
                        for (k, v) in extra {
                            config.entry(k).or_insert(v);
                        }
                    }
                    serde_json::from_value::<ResolverConfig>(config)
                        .ok()
                        .and_then(|c| Builtin::new(&c))
                })
        }

        /// An answer: a status, maybe a `last-modified`-style header, and a
        /// body that is JSON (arbitrary) or arbitrary bytes.
        fn outcome() -> impl Strategy<Value = Outcome> {
            prop_oneof![
                1 => Just(Outcome::Timeout),
                8 => (
                    prop_oneof![Just(200u16), 100u16..600],
                    proptest::option::of(".{0,30}"),
                    prop_oneof![
                        switchyard_fuzzing::json().prop_map(|v| v.to_string().into_bytes()),
                        prop::collection::vec(any::<u8>(), 0..40),
                    ],
                )
                    .prop_map(|(status, date, body)| {
                        let mut headers = HeaderMap::new();
                        if let Some(v) = date.and_then(|d| HeaderValue::from_str(&d).ok()) {
                            headers.insert("last-modified", v.clone());
                            headers.insert("date", v);
                        }
                        Outcome::Response(UpstreamResponse {
                            status: StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
                            headers,
                            body: Bytes::from(body),
                        })
                    }),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

            /// Every built-in judges and fuses any answers without panicking:
            /// a result, or an error with the tally.
            #[test]
            fn judges_and_resolvers_take_any_answers(
                resolver in resolver(),
                outcomes in prop::collection::vec(outcome(), 1..6),
            ) {
                let Some(resolver) = resolver else { return Ok(()); };
                let j = Judge {
                    accept_status: 200..=299,
                    needs_json: resolver.needs_json(),
                    schema: None,
                    vote: resolver.vote(),
                };
                let s = sources(outcomes.len());
                let asked: Vec<usize> = (0..outcomes.len()).collect();
                let answers: Vec<Answer> = outcomes
                    .into_iter()
                    .enumerate()
                    .map(|(i, o)| judge(&j, i, 1_000, o))
                    .collect();
                let _ = resolver.enough(&s, &asked, &answers);
                if let Ok(fused) = resolver.resolve(&s, &asked, &answers, &Quality::new(s.len())) {
                    prop_assert!(fused.used.iter().all(|u| *u < s.len()));
                }
            }
        }
    }
}
