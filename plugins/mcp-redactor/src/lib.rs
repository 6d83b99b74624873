//! # mcp-redactor: keep secrets and e-mail addresses out of MCP results
//!
//! A filter plugin for MCP routes, a guardrail no server has to implement:
//! - **results** (`on-mcp-result`, unless `redact_results` is off): every string in a tool's, prompt's or
//!   resource's result is scanned, and what looks like a secret — a token
//!   starting with one of `prefixes` (`sk-`, `ghp_`, `AKIA`, `xoxb-`, …)
//!   followed by at least 16 token characters — or, with `emails`, an
//!   e-mail address, is replaced by `replacement`; so the client (an LLM's
//!   context, a log) never sees it;
//! - **calls** (`on-mcp-call`): a `tools/call` of a tool in `deny_tools`
//!   (exact names, or `prefix*`) is refused with a JSON-RPC error (-32000),
//!   before any server is asked; with `redact_arguments`, the arguments
//!   are redacted the same way before they reach the server.
//!
//! Config (JSON from the filter's `plugin.config`):
//!
//! | key | type | default | meaning |
//! |---|---|---|---|
//! | `prefixes` | list of strings | `["sk-", "ghp_", "github_pat_", "AKIA", "xoxb-", "xoxp-", "glpat-"]` | how secrets start |
//! | `emails` | bool | `true` | redact e-mail addresses |
//! | `replacement` | string | `"[REDACTED]"` | what replaces each |
//! | `deny_tools` | list of strings | `[]` | tools refused (`name` or `prefix*`) |
//! | `redact_results` | bool | `true` | redact results |
//! | `redact_arguments` | bool | `false` | redact call arguments too |

use serde::Deserialize;
use serde_json::Value;
use switchyard_sdk::{
    Filter, FilterNeeds, HttpRequest, McpCall, McpCallVerdict, McpError, McpResultVerdict,
    PluginError, RequestVerdict,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Config {
    prefixes: Vec<String>,
    emails: bool,
    replacement: String,
    deny_tools: Vec<String>,
    redact_results: bool,
    redact_arguments: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            prefixes: [
                "sk-",
                "ghp_",
                "github_pat_",
                "AKIA",
                "xoxb-",
                "xoxp-",
                "glpat-",
            ]
            .map(String::from)
            .to_vec(),
            emails: true,
            replacement: "[REDACTED]".into(),
            deny_tools: Vec::new(),
            redact_results: true,
            redact_arguments: false,
        }
    }
}

/// Shortest run of token characters after a prefix that counts as a secret.
const MIN_SECRET_TAIL: usize = 16;

struct Redactor(Config);

fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

fn is_email_local(c: char) -> bool {
    c.is_ascii_alphanumeric() || "._%+-".contains(c)
}

fn is_email_domain(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '.' || c == '-'
}

impl Redactor {
    /// `text` with every secret and e-mail address replaced; `None` when
    /// nothing was found.
    fn redact_text(&self, text: &str) -> Option<String> {
        let mut spans: Vec<(usize, usize)> = Vec::new();
        for prefix in &self.0.prefixes {
            for (start, _) in text.match_indices(prefix.as_str()) {
                let starts_word = text[..start]
                    .chars()
                    .next_back()
                    .is_none_or(|c| !is_token_char(c));
                let tail = text[start + prefix.len()..]
                    .find(|c: char| !is_token_char(c))
                    .unwrap_or(text.len() - start - prefix.len());
                if starts_word && tail >= MIN_SECRET_TAIL {
                    spans.push((start, start + prefix.len() + tail));
                }
            }
        }
        if self.0.emails {
            for (at, _) in text.match_indices('@') {
                let local = text[..at]
                    .char_indices()
                    .rev()
                    .take_while(|(_, c)| is_email_local(*c))
                    .last()
                    .map(|(i, _)| i);
                let domain_len = text[at + 1..]
                    .find(|c: char| !is_email_domain(c))
                    .unwrap_or(text.len() - at - 1);
                let domain = text[at + 1..at + 1 + domain_len].trim_end_matches('.');
                if let (Some(start), true) =
                    (local, domain.contains('.') && !domain.starts_with('.'))
                {
                    spans.push((start, at + 1 + domain.len()));
                }
            }
        }
        if spans.is_empty() {
            return None;
        }
        spans.sort_unstable();
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for (start, end) in spans {
            if start >= at {
                out.push_str(&text[at..start]);
                out.push_str(&self.0.replacement);
                at = end;
            } else {
                at = at.max(end);
            }
        }
        out.push_str(&text[at..]);
        Some(out)
    }

    /// Redacts every string of `value` in place; whether any changed.
    fn redact(&self, value: &mut Value) -> bool {
        match value {
            Value::String(text) => match self.redact_text(text) {
                Some(redacted) => {
                    *text = redacted;
                    true
                }
                None => false,
            },
            Value::Array(items) => self.redact_all(items.iter_mut()),
            Value::Object(fields) => self.redact_all(fields.values_mut()),
            _ => false,
        }
    }

    /// Redacts every one of `values` (each, not stopping at the first
    /// that changed); whether any changed.
    fn redact_all<'a>(&self, values: impl Iterator<Item = &'a mut Value>) -> bool {
        let mut changed = false;
        for value in values {
            changed |= self.redact(value);
        }
        changed
    }

    /// Whether the tool `name` is denied.
    fn denied(&self, name: &str) -> bool {
        self.0
            .deny_tools
            .iter()
            .any(|rule| match rule.strip_suffix('*') {
                Some(prefix) => name.starts_with(prefix),
                None => rule == name,
            })
    }
}

impl Filter for Redactor {
    fn new(config: &str) -> Result<Self, PluginError> {
        let config: Config = serde_json::from_str(config)
            .map_err(|e| PluginError::InvalidConfig(format!("mcp-redactor: {e}")))?;
        if let Some(p) = config.prefixes.iter().find(|p| p.is_empty()) {
            return Err(PluginError::InvalidConfig(format!(
                "mcp-redactor: prefixes: `{p}` is empty"
            )));
        }
        Ok(Self(config))
    }

    fn needs(&self) -> FilterNeeds {
        FilterNeeds {
            request_headers: Vec::new(),
            on_response: false,
            response_headers: Vec::new(),
            mcp_calls: !self.0.deny_tools.is_empty() || self.0.redact_arguments,
            mcp_results: self.0.redact_results,
            request_body_bytes: 0,
            response_body_bytes: 0,
        }
    }

    fn on_request(&mut self, _request: &HttpRequest) -> RequestVerdict {
        RequestVerdict::Continue
    }

    fn on_mcp_call(&mut self, call: &McpCall) -> McpCallVerdict {
        if call.method == "tools/call" && call.name.as_deref().is_some_and(|n| self.denied(n)) {
            return McpCallVerdict::Deny(McpError {
                code: -32000,
                message: format!(
                    "tool `{}` is not allowed through this gateway",
                    call.name.as_deref().unwrap_or_default()
                ),
            });
        }
        if self.0.redact_arguments
            && let Ok(mut arguments) = serde_json::from_str::<Value>(&call.arguments)
            && self.redact(&mut arguments)
        {
            return McpCallVerdict::Rewrite(arguments.to_string());
        }
        McpCallVerdict::Continue
    }

    fn on_mcp_result(&mut self, _call: &McpCall, result: &str) -> McpResultVerdict {
        let Ok(mut value) = serde_json::from_str::<Value>(result) else {
            return McpResultVerdict::Continue;
        };
        if self.redact(&mut value) {
            McpResultVerdict::Replace(value.to_string())
        } else {
            McpResultVerdict::Continue
        }
    }
}

switchyard_sdk::export_filter!(Redactor);
