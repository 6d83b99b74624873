//! # mcp-federation: one MCP `tools/list` out of several MCP servers
//!
//! A resolver plugin for a fan-out route in front of several MCP servers
//! (streamable HTTP transport, JSON answers). Every server's `tools/list`
//! answer is read in source priority order (best first); the tools are
//! concatenated, and a tool whose name an earlier server already uses is
//! renamed `<source><separator><name>` (the source name reduced to
//! `[A-Za-z0-9_-]`), so a client sees every tool exactly once. Each rename
//! counts as a resolved conflict. The answer is a JSON-RPC response with the
//! `id` of the best-priority answer.
//!
//! Answers that are not a JSON-RPC result with a `tools` array (an error, a
//! timeout, another method's result) contribute nothing. If no answer has
//! tools — the request was another method, e.g. `initialize` — the
//! best-priority 2xx answer is passed through unchanged.
//!
//! Config (JSON from the route's `resolver.plugin.config`):
//!
//! | key | type | default | meaning |
//! |---|---|---|---|
//! | `separator` | string | `"__"` | between the source and the tool name in a renamed tool |
//!
//! Left out: pagination (`nextCursor` of each server is dropped: the first
//! page of each server is federated) and answers framed as server-sent events.

use std::collections::BTreeSet;

use serde::Deserialize;
use serde_json::{Value, json};
use switchyard_sdk::{FusedResponse, Outcome, PluginError, RequestInfo, Resolver, SourceAnswer};

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Config {
    separator: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            separator: "__".into(),
        }
    }
}

struct McpFederation(Config);

impl Resolver for McpFederation {
    fn new(config: &str) -> Result<Self, PluginError> {
        let config: Config = serde_json::from_str(config)
            .map_err(|e| PluginError::InvalidConfig(format!("mcp-federation: {e}")))?;
        Ok(Self(config))
    }

    fn resolve(
        &mut self,
        _request: &RequestInfo,
        mut answers: Vec<SourceAnswer>,
    ) -> Result<FusedResponse, PluginError> {
        answers.sort_by_key(|a| a.priority);
        let ok: Vec<(&SourceAnswer, &switchyard_sdk::UpstreamResponse)> = answers
            .iter()
            .filter_map(|a| match &a.outcome {
                Outcome::Response(r) if (200..300).contains(&r.status) => Some((a, r)),
                _ => None,
            })
            .collect();
        let mut id = None;
        let mut tools: Vec<Value> = Vec::new();
        let mut names: BTreeSet<String> = BTreeSet::new();
        let mut used = Vec::new();
        let mut conflicts = 0;
        for (answer, response) in &ok {
            let Ok(message) = serde_json::from_slice::<Value>(&response.body) else {
                continue;
            };
            let Some(list) = message.pointer("/result/tools").and_then(Value::as_array) else {
                continue;
            };
            id.get_or_insert_with(|| message.get("id").cloned().unwrap_or(Value::Null));
            used.push(answer.source.clone());
            for tool in list {
                let Some(name) = tool.get("name").and_then(Value::as_str) else {
                    continue;
                };
                let mut tool = tool.clone();
                let name = if names.contains(name) {
                    conflicts += 1;
                    let renamed = format!("{}{}{name}", sanitize(&answer.source), self.0.separator);
                    tool["name"] = Value::from(renamed.as_str());
                    renamed
                } else {
                    name.to_string()
                };
                if names.contains(&name) {
                    switchyard_sdk::log::warn(&format!(
                        "tool `{name}` clashes even after renaming; dropped"
                    ));
                    continue;
                }
                names.insert(name);
                tools.push(tool);
            }
        }
        if used.is_empty() {
            // Not a tools/list exchange: the best answer as it is.
            let (answer, response) = ok.first().ok_or(PluginError::NoCandidates)?;
            return Ok(FusedResponse {
                status: response.status,
                headers: response.headers.clone(),
                body: response.body.clone(),
                sources_used: vec![answer.source.clone()],
                conflicts: 0,
            });
        }
        let body = json!({
            "jsonrpc": "2.0",
            "id": id.unwrap_or(Value::Null),
            "result": { "tools": tools },
        });
        Ok(FusedResponse {
            status: 200,
            headers: vec![("content-type".into(), "application/json".into())],
            body: serde_json::to_vec(&body).map_err(|e| PluginError::Internal(e.to_string()))?,
            sources_used: used,
            conflicts,
        })
    }
}

/// `name` with every character outside `[A-Za-z0-9_-]` replaced by `_`.
fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

switchyard_sdk::export_resolver!(McpFederation);
