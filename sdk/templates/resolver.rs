//! A resolver plugin: makes one response out of the answers of a fan-out.

use switchyard_sdk::{FusedResponse, Outcome, PluginError, RequestInfo, Resolver, SourceAnswer};

struct Plugin;

impl Resolver for Plugin {
    fn new(_config: &str) -> Result<Self, PluginError> {
        Ok(Plugin)
    }

    /// The best-priority 2xx answer.
    fn resolve(&mut self, _request: &RequestInfo, mut answers: Vec<SourceAnswer>) -> Result<FusedResponse, PluginError> {
        answers.sort_by_key(|a| a.priority);
        answers
            .into_iter()
            .find_map(|a| match a.outcome {
                Outcome::Response(r) if (200..300).contains(&r.status) => Some(FusedResponse {
                    status: r.status,
                    headers: r.headers,
                    body: r.body,
                    sources_used: vec![a.source],
                    conflicts: 0,
                }),
                _ => None,
            })
            .ok_or(PluginError::NoCandidates)
    }
}

switchyard_sdk::export_resolver!(Plugin);
