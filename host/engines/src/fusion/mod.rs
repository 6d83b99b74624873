//! Data fusion: one answer out of the answers of several sources.
//!
//! A fan-out route ([`switchyard_config::FanOutConfig`]) sends the request to
//! several **sources** at once — several pools, or several instances of one
//! pool — within a per-source timeout and an overall deadline
//! (`switchyard::proxy`'s fan-out runs it). Every answer is **judged** first
//! ([`judge`]): it counts only with a status in `accept_status`, a body within
//! `max_answer_bytes`, valid JSON when the resolver reads JSON, and — with a
//! `schema_path` — a body that satisfies the route's JSON Schema. Errors,
//! timeouts and answers that do not count **abstain**.
//!
//! A **resolver** then makes the answer ([`Resolve`]: a [`Builtin`], or a
//! resolver plugin with a built-in standing by). The resolvers follow the conflict-resolution
//! strategies of the data-fusion literature (Bleiholder & Naumann, "Data
//! Fusion", ACM Computing Surveys 41(1), 2008): *trust your friends*
//! (`priority`), *cry with the wolves* (`majority`, `quorum`,
//! `weighted-vote`), *keep up to date* (`most-recent`), *meet in the middle*
//! (`median`); `weighted-vote` with `learn = true` weighs sources by their
//! track record, as truth-discovery methods do (Li et al., "A Survey on Truth
//! Discovery", SIGKDD Explorations 17(2), 2015). Every tie is broken by
//! source priority, then by the source's position, so a result never depends
//! on which answer arrived first — except for `first-success` and a `quorum`
//! reached early, whose point is to answer as soon as possible.
//!
//! Every fused response carries its **provenance**: `x-switchyard-sources`
//! (the sources whose answers were used), `x-switchyard-agreement` (the share
//! of acceptable answers that agree with the result, 0..=1) and
//! `x-switchyard-conflicts` (conflicting values resolved). Each source's
//! **quality** (acceptance and agreement, [`Quality`]) is kept per route.
//! Fused answers can be **cached** ([`FusionCache`]).

mod cache;
mod json;
mod policy;
mod quality;
mod resolve;

pub use cache::{CacheLookup, CacheStats, FusionCache};
pub use json::{canonical_hash, merge};
pub use policy::{Judging, Resolve};
pub use quality::{Quality, SourceQuality};
pub use resolve::Builtin;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use http_body_util::Full;

/// One source of a fan-out route.
#[derive(Debug, Clone)]
pub struct Source {
    /// Pool name, or `pool/host:port` for an instance source.
    pub name: String,
    /// 0 = highest.
    pub priority: u32,
    /// Configured vote weight, > 0.
    pub weight: f64,
}

/// A complete upstream response.
#[derive(Debug, Clone)]
pub struct UpstreamResponse {
    /// Status.
    pub status: StatusCode,
    /// Headers (hop-by-hop ones removed).
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

/// What one source gave.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// A complete response.
    Response(UpstreamResponse),
    /// The attempt failed; the host's reason.
    Error(String),
    /// No answer within the per-source timeout or the deadline.
    Timeout,
}

/// One source's judged answer.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Index of the source in the route's sources.
    pub source: usize,
    /// Time to the complete answer, µs.
    pub latency_us: u64,
    /// What the source gave.
    pub outcome: Outcome,
    /// Why the answer does not count; `None` when it does.
    pub rejected: Option<String>,
    /// The body as JSON, when the resolver reads JSON.
    pub json: Option<serde_json::Value>,
    /// The vote key (hash of the canonical JSON or of the body), when the
    /// resolver votes.
    pub key: Option<u64>,
}

impl Answer {
    /// Whether the answer counts.
    pub fn accepted(&self) -> bool {
        self.rejected.is_none()
    }

    /// The response, if the source gave one.
    pub fn response(&self) -> Option<&UpstreamResponse> {
        match &self.outcome {
            Outcome::Response(r) => Some(r),
            _ => None,
        }
    }

    /// Why the source abstained, for the error tally (`None` if it counts).
    fn abstention(&self) -> Option<String> {
        self.rejected.clone()
    }
}

/// What the route checks in an answer before it counts.
pub struct Judge<'a> {
    /// Inclusive range of statuses that count.
    pub accept_status: std::ops::RangeInclusive<u16>,
    /// Whether the resolver reads JSON (then a non-JSON body does not count).
    pub needs_json: bool,
    /// The route's JSON Schema, if any (implies JSON).
    pub schema: Option<&'a jsonschema::Validator>,
    /// How votes compare answers, if the resolver votes.
    pub vote: Option<switchyard_config::Compare>,
}

/// Judges `outcome` of source `source`: fills in why it does not count, its
/// JSON and its vote key.
pub fn judge(judge: &Judge<'_>, source: usize, latency_us: u64, outcome: Outcome) -> Answer {
    let mut answer = Answer {
        source,
        latency_us,
        outcome,
        rejected: None,
        json: None,
        key: None,
    };
    let response = match &answer.outcome {
        Outcome::Response(r) => r,
        Outcome::Error(e) => {
            answer.rejected = Some(format!("error: {e}"));
            return answer;
        }
        Outcome::Timeout => {
            answer.rejected = Some("timeout".into());
            return answer;
        }
    };
    if !judge.accept_status.contains(&response.status.as_u16()) {
        answer.rejected = Some(format!("status {}", response.status.as_u16()));
        return answer;
    }
    let wants_json = judge.needs_json
        || judge.schema.is_some()
        || judge.vote == Some(switchyard_config::Compare::Json);
    if wants_json {
        match serde_json::from_slice::<serde_json::Value>(&response.body) {
            Ok(value) => {
                if let Some(schema) = judge.schema
                    && let Some(error) = schema.iter_errors(&value).next()
                {
                    answer.rejected = Some(format!(
                        "fails the schema at `{}`: {error}",
                        error.instance_path()
                    ));
                    return answer;
                }
                answer.json = Some(value);
            }
            Err(e) => {
                answer.rejected = Some(format!("not JSON: {e}"));
                return answer;
            }
        }
    }
    answer.key = match judge.vote {
        Some(switchyard_config::Compare::Json) => answer.json.as_ref().map(canonical_hash),
        Some(switchyard_config::Compare::Body) => {
            Some(xxhash_rust::xxh64::xxh64(&response.body, 0))
        }
        None => None,
    };
    answer
}

/// The fused answer and its provenance.
#[derive(Debug, Clone)]
pub struct Fused {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
    /// Indices of the sources whose answers were used.
    pub used: Vec<usize>,
    /// Conflicting values resolved.
    pub conflicts: u32,
    /// Share of the acceptable answers that agree with the result, 0..=1.
    pub agreement: f64,
}

impl Fused {
    /// A JSON answer (status 200, `content-type: application/json`).
    pub fn json(
        value: &serde_json::Value,
        used: Vec<usize>,
        conflicts: u32,
        agreement: f64,
    ) -> Self {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        Self {
            status: StatusCode::OK,
            headers,
            body: Bytes::from(serde_json::to_vec(value).unwrap_or_default()),
            used,
            conflicts,
            agreement,
        }
    }

    /// The response with the provenance headers, names from `sources`.
    pub fn into_response(self, sources: &[Source]) -> http::Response<Full<Bytes>> {
        let mut headers = self.headers;
        headers.remove(header::CONTENT_LENGTH);
        headers.remove(header::TRANSFER_ENCODING);
        // The cache state is the host's to say, not an upstream's.
        headers.remove("x-switchyard-cache");
        let names: Vec<&str> = self
            .used
            .iter()
            .filter_map(|&i| sources.get(i).map(|s| s.name.as_str()))
            .collect();
        if let Ok(v) = HeaderValue::from_str(&names.join(", ")) {
            headers.insert("x-switchyard-sources", v);
        }
        if let Ok(v) = HeaderValue::from_str(&format!("{:.2}", self.agreement)) {
            headers.insert("x-switchyard-agreement", v);
        }
        headers.insert("x-switchyard-conflicts", HeaderValue::from(self.conflicts));
        let mut response = http::Response::new(Full::new(self.body));
        *response.status_mut() = self.status;
        *response.headers_mut() = headers;
        response
    }
}

/// Why no answer could be fused (502 with the tally).
#[derive(Debug, Clone, thiserror::Error)]
pub enum FusionError {
    /// No source gave an answer that counts.
    #[error("no source gave an acceptable answer")]
    NoAnswer {
        /// `(source, why it abstained)`, in source order.
        abstained: Vec<(String, String)>,
    },
    /// No answer reached the vote's threshold.
    #[error("no answer reached the quorum ({needed})")]
    NoQuorum {
        /// What was needed, e.g. `more than 1.5 of 3 sources`.
        needed: String,
        /// Each distinct answer's votes and the sources that gave it, most first.
        tally: Vec<(f64, Vec<String>)>,
        /// `(source, why it abstained)`.
        abstained: Vec<(String, String)>,
    },
}

impl FusionError {
    /// No acceptable answer among `answers`.
    pub fn no_answer(sources: &[Source], answers: &[Answer]) -> Self {
        FusionError::NoAnswer {
            abstained: abstained(sources, answers),
        }
    }

    /// The error's JSON details (the tally), for the 502 body.
    pub fn details(&self) -> serde_json::Value {
        let abstained = |list: &[(String, String)]| -> serde_json::Value {
            list.iter()
                .map(|(s, why)| (s.clone(), serde_json::Value::from(why.as_str())))
                .collect::<serde_json::Map<_, _>>()
                .into()
        };
        match self {
            FusionError::NoAnswer { abstained: list } => {
                serde_json::json!({ "abstained": abstained(list) })
            }
            FusionError::NoQuorum {
                needed,
                tally,
                abstained: list,
            } => serde_json::json!({
                "needed": needed,
                "tally": tally
                    .iter()
                    .map(|(votes, sources)| serde_json::json!({ "votes": votes, "sources": sources }))
                    .collect::<Vec<_>>(),
                "abstained": abstained(list),
            }),
        }
    }
}

/// `(source name, reason)` of every answer that does not count.
fn abstained(sources: &[Source], answers: &[Answer]) -> Vec<(String, String)> {
    let mut list: Vec<(usize, String)> = answers
        .iter()
        .filter_map(|a| a.abstention().map(|why| (a.source, why)))
        .collect();
    list.sort_by_key(|(i, _)| *i);
    list.into_iter()
        .filter_map(|(i, why)| sources.get(i).map(|s| (s.name.clone(), why)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, body: &str) -> Outcome {
        Outcome::Response(UpstreamResponse {
            status: StatusCode::from_u16(status).unwrap(),
            headers: HeaderMap::new(),
            body: Bytes::copy_from_slice(body.as_bytes()),
        })
    }

    #[test]
    fn judging_rejects_status_non_json_and_schema_failures() {
        let schema = jsonschema::validator_for(&serde_json::json!({
            "type": "object", "required": ["price"],
            "properties": { "price": { "type": "number" } }
        }))
        .unwrap();
        let judge_with = |schema| Judge {
            accept_status: 200..=299,
            needs_json: true,
            schema,
            vote: Some(switchyard_config::Compare::Json),
        };
        let j = judge_with(Some(&schema));
        assert!(judge(&j, 0, 1, response(200, r#"{"price": 3}"#)).accepted());
        let bad = judge(&j, 0, 1, response(200, r#"{"price": "3"}"#));
        assert!(bad.rejected.unwrap().contains("/price"));
        let j = judge_with(None);
        assert_eq!(
            judge(&j, 0, 1, response(503, "{}")).rejected.as_deref(),
            Some("status 503")
        );
        assert!(
            judge(&j, 0, 1, response(200, "<html>"))
                .rejected
                .unwrap()
                .starts_with("not JSON")
        );
        let a = judge(&j, 0, 1, response(200, r#"{"a":1,"b":[1,2]}"#));
        let b = judge(&j, 1, 1, response(200, r#"{ "b": [1, 2], "a": 1 }"#));
        assert_eq!(a.key, b.key, "canonical JSON ignores key order and spacing");
        assert!(judge(&j, 0, 1, Outcome::Timeout).rejected.as_deref() == Some("timeout"));
    }
}
