//! Filter plugins on an MCP route: asked about each JSON-RPC call after the
//! gateway parsed it (`on-mcp-call`: deny it, or rewrite its arguments)
//! and about the result of each call routed to one server
//! (`on-mcp-result`: redact it, or deny it), in the route's filter order.
//! A filter that faults lets the message pass under `failure_mode =
//! "open"` and refuses it with a JSON-RPC internal error under `closed`.
//! An `authorize` filter's rules judge each call before the plugins are
//! asked, and leave out of the merged lists what the caller may not call.

use std::sync::Arc;

use serde_json::{Value, json};

use super::merge::ListKind;
use super::route::Client;
use super::upstream::subject;
use super::{FORBIDDEN, INTERNAL_ERROR, RATE_LIMITED};
use crate::gateway::authorize::{Call, ScopedRules};
use crate::gateway::rate_limit::ScopedQuotas;
use crate::plugin::{Fault, FilterMcpCall, FilterRequest, McpRefusal, McpVerdict, WasmFilter};

/// One filter plugin an MCP route asks, with the request as it saw it.
pub struct McpGuard {
    /// The plugin.
    pub filter: Arc<WasmFilter>,
    /// The filter's name, for logs and errors.
    pub name: Arc<str>,
    /// `failure_mode = "closed"`: a fault refuses the message.
    pub closed: bool,
    /// The request, as the plugin's `on-request` saw it.
    pub view: FilterRequest,
}

/// Why a call may not go on: the JSON-RPC error the client gets, and the
/// scope challenge when it lacked a scope (answered with 403).
pub(super) struct Refused {
    /// The JSON-RPC error's code and message.
    pub(super) refusal: McpRefusal,
    /// The `WWW-Authenticate` value of a scope challenge.
    pub(super) challenge: Option<String>,
}

impl From<McpRefusal> for Refused {
    fn from(refusal: McpRefusal) -> Self {
        Self {
            refusal,
            challenge: None,
        }
    }
}

/// The filter plugins and rules of a request on an MCP route (none:
/// nothing asked).
#[derive(Clone, Default)]
pub struct Guards {
    plugins: Option<Arc<[McpGuard]>>,
    rules: Option<Arc<[ScopedRules]>>,
    quotas: Option<Arc<[ScopedQuotas]>>,
}

/// A JSON-RPC call as the guards see it: method, name and the session's
/// client.
pub(super) struct Asked<'a> {
    pub(super) method: &'a str,
    pub(super) name: Option<&'a str>,
    pub(super) client: Option<(&'a str, &'a str)>,
}

impl Guards {
    /// The plugins `guards`, the `rules` with the request's variables and
    /// the tool-call limits `quotas` with the request's keys (nothing to
    /// ask when all are empty).
    pub fn new(guards: Vec<McpGuard>, rules: Vec<ScopedRules>, quotas: Vec<ScopedQuotas>) -> Self {
        Self {
            plugins: (!guards.is_empty()).then(|| guards.into()),
            rules: (!rules.is_empty()).then(|| rules.into()),
            quotas: (!quotas.is_empty()).then(|| quotas.into()),
        }
    }

    fn each(&self) -> impl Iterator<Item = &McpGuard> {
        self.plugins.iter().flat_map(|g| g.iter())
    }

    fn rules(&self) -> impl Iterator<Item = &ScopedRules> {
        self.rules.iter().flat_map(|r| r.iter())
    }

    /// Whether some guard sees calls (rules and limits see every call).
    pub(super) fn see_calls(&self) -> bool {
        self.rules.is_some()
            || self.quotas.is_some()
            || self.each().any(|g| g.filter.on_mcp_calls())
    }

    /// Whether some guard sees results.
    pub(super) fn see_results(&self) -> bool {
        self.each().any(|g| g.filter.on_mcp_results())
    }

    /// Judges `asked` by the rules, then a tool call by the limits that
    /// count tool calls, then asks each guard that sees calls about it
    /// with `arguments`, which a guard may replace for the next guards
    /// and the server.
    ///
    /// # Errors
    /// The refusal the client gets: a rule's or a guard's denial, a
    /// limit's, or a closed guard's fault.
    pub(super) fn on_call(&self, asked: &Asked<'_>, arguments: &mut Value) -> Result<(), Refused> {
        let call = Call {
            method: asked.method,
            name: asked.name,
        };
        for (rules, scope) in self.rules() {
            rules.judge_call(scope, call).map_err(|refusal| Refused {
                refusal: McpRefusal {
                    code: i32::try_from(FORBIDDEN).unwrap_or(i32::MIN),
                    message: refusal.message,
                },
                challenge: refusal.challenge,
            })?;
        }
        if let ("tools/call", Some(tool)) = (asked.method, asked.name) {
            for (limits, keys) in self.quotas.iter().flat_map(|q| q.iter()) {
                limits.check_call(keys, tool).map_err(|message| {
                    Refused::from(McpRefusal {
                        code: i32::try_from(RATE_LIMITED).unwrap_or(i32::MIN),
                        message,
                    })
                })?;
            }
        }
        self.judge(
            WasmFilter::on_mcp_calls,
            asked,
            None,
            arguments,
            |f, call, _| f.on_mcp_call(call),
        )
        .map_err(Refused::from)
    }

    /// Asks each guard that sees results about `result` of the call
    /// `asked` with `arguments` (as the server received them); a guard may
    /// replace it for the next guards and the client.
    ///
    /// # Errors
    /// As [`on_call`](Self::on_call).
    pub(super) fn on_result(
        &self,
        asked: &Asked<'_>,
        arguments: &Value,
        result: &mut Value,
    ) -> Result<(), McpRefusal> {
        self.judge(
            WasmFilter::on_mcp_results,
            asked,
            Some(arguments),
            result,
            WasmFilter::on_mcp_result,
        )
    }

    /// Asks each guard whose filter `sees` with `ask` about `value` (the
    /// call's arguments, or its result when `arguments` are given), in the
    /// route's order; a guard's replacement is what the next one sees.
    fn judge(
        &self,
        sees: impl Fn(&WasmFilter) -> bool,
        asked: &Asked<'_>,
        arguments: Option<&Value>,
        value: &mut Value,
        ask: impl Fn(&WasmFilter, &FilterMcpCall, &Value) -> Result<McpVerdict, Fault>,
    ) -> Result<(), McpRefusal> {
        for guard in self.each().filter(|g| sees(&g.filter)) {
            let call = guard.filter.mcp_call(
                &guard.view,
                asked.method,
                asked.name,
                arguments.unwrap_or(value),
                asked.client,
            );
            match ask(&guard.filter, &call, value) {
                Ok(McpVerdict::Continue) => {}
                Ok(McpVerdict::Replace(replaced)) => *value = replaced,
                Ok(McpVerdict::Deny(refusal)) => return Err(refusal),
                Err(fault) => guard.faulted(&fault)?,
            }
        }
        Ok(())
    }
}

impl Guards {
    /// Leaves out of the merged list `result` of `kind` the items the
    /// rules would not let this caller use (a tool it may not call, a
    /// prompt it may not get, a resource it may not read), and marks the
    /// list `cacheScope: "private"`: it is this caller's. Resource
    /// templates are kept (a template names no one resource).
    pub(super) fn hide_forbidden(&self, kind: ListKind, result: &mut Value) {
        let method = match kind {
            _ if self.rules.is_none() => return,
            ListKind::Tools => "tools/call",
            ListKind::Prompts => "prompts/get",
            ListKind::Resources => "resources/read",
            ListKind::Templates => return,
        };
        if let Some(items) = result.get_mut(kind.field()).and_then(Value::as_array_mut) {
            items.retain(|item| {
                let call = Call {
                    method,
                    name: item.get(kind.key()).and_then(Value::as_str),
                };
                self.rules()
                    .all(|(rules, scope)| rules.permits(scope, call))
            });
        }
        if let Some(scope) = result.get_mut("cacheScope") {
            *scope = json!("private");
        }
    }
}

impl McpGuard {
    /// What a fault costs the message: nothing under `open`, a refusal
    /// under `closed`.
    fn faulted(&self, fault: &Fault) -> Result<(), McpRefusal> {
        if self.closed {
            Err(McpRefusal {
                code: i32::try_from(INTERNAL_ERROR).unwrap_or(i32::MIN),
                message: format!(
                    "filter `{}` failed ({fault}) and its failure_mode is closed",
                    self.name
                ),
            })
        } else {
            Ok(())
        }
    }
}

/// Where a request's arguments are: `params.arguments` for `tools/call`
/// and `prompts/get`, `params` for the rest.
fn arguments_pointer(method: &str) -> &'static str {
    match method {
        "tools/call" | "prompts/get" => "/params/arguments",
        _ => "/params",
    }
}

/// The session's client, as its `initialize` named itself.
fn client_info<'a>(client: &'a Client<'_>) -> Option<(&'a str, &'a str)> {
    client
        .session
        .as_ref()
        .and_then(|s| s.client.as_ref())
        .map(|(name, version)| (name.as_str(), version.as_str()))
}

/// Asks `client`'s guards about the request `message` (method `method`).
/// `Ok(None)`: it goes on as it is; `Ok(Some(m))`: it goes on as `m`, its
/// arguments rewritten.
///
/// # Errors
/// The refusal the client gets instead of an answer.
pub(super) fn guard_call(
    client: &Client<'_>,
    method: &str,
    message: &Value,
) -> Result<Option<Value>, Refused> {
    let pointer = arguments_pointer(method);
    let before = message
        .pointer(pointer)
        .cloned()
        .unwrap_or_else(|| json!({}));
    let mut arguments = before.clone();
    let asked = Asked {
        method,
        name: subject(message),
        client: client_info(client),
    };
    client.guards.on_call(&asked, &mut arguments)?;
    if arguments == before {
        return Ok(None);
    }
    let mut message = message.clone();
    if let Some(object) = message.as_object_mut() {
        let params = object.entry("params").or_insert_with(|| json!({}));
        match (pointer, params) {
            ("/params", params) => *params = arguments,
            (_, Value::Object(params)) => {
                params.insert("arguments".to_owned(), arguments);
            }
            (_, params) => *params = json!({ "arguments": arguments }),
        }
    }
    Ok(Some(message))
}

/// What the guards need to judge the result of one call, owned: a
/// streamed answer is relayed by a task of its own.
pub(super) struct ResultGuard {
    guards: Guards,
    method: String,
    name: Option<String>,
    client: Option<(String, String)>,
    arguments: Value,
}

impl ResultGuard {
    /// The guard of the call `message` of `client`, when one of its
    /// guards sees results.
    pub(super) fn of(client: &Client<'_>, message: &Value) -> Option<Arc<Self>> {
        if !client.guards.see_results() {
            return None;
        }
        let method = message.get("method").and_then(Value::as_str).unwrap_or("");
        Some(Arc::new(Self {
            guards: client.guards.clone(),
            method: method.to_owned(),
            name: subject(message).map(str::to_owned),
            client: client_info(client).map(|(n, v)| (n.to_owned(), v.to_owned())),
            arguments: message
                .pointer(arguments_pointer(method))
                .cloned()
                .unwrap_or_else(|| json!({})),
        }))
    }

    /// Judges the JSON-RPC response `answer`: its `result` kept, replaced,
    /// or the whole answer turned into the guard's error (an error answer
    /// passes unasked).
    pub(super) fn apply(&self, answer: &mut Value) {
        let Some(result) = answer.get_mut("result") else {
            return;
        };
        let asked = Asked {
            method: &self.method,
            name: self.name.as_deref(),
            client: self.client.as_ref().map(|(n, v)| (n.as_str(), v.as_str())),
        };
        if let Err(refusal) = self.guards.on_result(&asked, &self.arguments, result) {
            let id = answer.get("id").cloned().unwrap_or(Value::Null);
            *answer = json!({
                "jsonrpc": "2.0",
                "id": id,
                "error": { "code": refusal.code, "message": refusal.message },
            });
        }
    }
}
