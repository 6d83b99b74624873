//! The Wasm filter adapter: a `filter-plugin` component (WIT 0.1.3), one
//! step of a route's filter chain. It sees the request (the headers it
//! asked for), may see the answer, and on MCP routes each JSON-RPC call
//! and result; every answer it gives is checked here, and nonsense (an
//! invalid status, header or path) is a fault like a trap. What a fault
//! costs the request is the route's `failure_mode`, decided by the caller.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use super::adapter::{WasmPlugin, header_names};
use super::bindings::filter::FilterPlugin;
use super::bindings::filter::exports::switchyard::plugin::filter::{
    BodyPrefix, DirectResponse, HttpRequest, HttpResponse, McpCall, McpCallVerdict, McpClient,
    McpError, McpResultVerdict, RequestVerdict, ResponseVerdict,
};
use super::request::request_info;
use super::{Fault, Limits, LoadError, PluginHost, PluginStats};
use switchyard_engines::policy::RequestContext;

/// The most of a body's first bytes a filter may ask to see
/// (`request-body-bytes`, `response-body-bytes`): 1 MiB.
pub const MAX_BODY_BYTES: u32 = 1 << 20;

/// A Wasm filter serving the routes that list it.
pub struct WasmFilter {
    plugin: WasmPlugin<FilterPlugin>,
    request_headers: Vec<HeaderName>,
    response_headers: Vec<HeaderName>,
}

/// The request as a filter sees it, built once per request
/// ([`WasmFilter::view`]) and passed to each of its calls.
#[derive(Clone)]
pub struct FilterRequest(HttpRequest);

/// An MCP call as a filter sees it ([`WasmFilter::mcp_call`]).
pub struct FilterMcpCall(McpCall);

/// A response a filter made: status, headers and body.
#[derive(Debug)]
pub struct MadeResponse {
    /// The status.
    pub status: StatusCode,
    /// The headers, in the order the filter gave them.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
}

/// Header changes a filter asked for: `remove` first, then `set`.
#[derive(Debug, Default)]
pub struct HeaderChanges {
    /// Headers removed by name.
    pub remove: Vec<HeaderName>,
    /// Headers set, replacing any of the same name, in order.
    pub set: Vec<(HeaderName, HeaderValue)>,
}

impl HeaderChanges {
    /// Applies the changes to `headers`.
    pub fn apply(self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in self.set {
            headers.insert(name, value);
        }
    }
}

/// What a filter decided about a request or an answer.
#[derive(Debug)]
pub enum FilterVerdict<C> {
    /// It goes on unchanged.
    Continue,
    /// It goes on with the changes `C`.
    Change(C),
    /// It is answered (a request) or replaced (an answer) by this response.
    Respond(MadeResponse),
}

/// A JSON-RPC error a filter gives instead of a result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McpRefusal {
    /// The JSON-RPC error code.
    pub code: i32,
    /// The message.
    pub message: String,
}

/// What a filter decided about an MCP call or result.
#[derive(Debug)]
pub enum McpVerdict {
    /// It goes on unchanged.
    Continue,
    /// It goes on with this JSON instead: a call's new `arguments` (an
    /// object), a result's new `result`.
    Replace(serde_json::Value),
    /// It is refused with this JSON-RPC error.
    Deny(McpRefusal),
}

impl WasmFilter {
    /// Loads the component at `path`: compiles it, checks that it exports
    /// `switchyard:plugin/filter@0.1.3`, links it in the sandbox,
    /// instantiates it and calls `configure(config_json)`, whose answer
    /// says what the filter wants to see.
    ///
    /// # Errors
    /// [`LoadError`] naming the file and the reason (an invalid header
    /// name among those it asked for, or more body bytes than
    /// `MAX_BODY_BYTES` (1 MiB), too).
    pub fn load(
        host: &PluginHost,
        path: &Path,
        config_json: String,
        limits: Limits,
    ) -> Result<Self, LoadError> {
        let plugin = WasmPlugin::<FilterPlugin>::load(host, path, config_json, limits)?;
        let rejected = |reason: String| LoadError::Rejected {
            path: path.to_path_buf(),
            reason,
        };
        let needs = plugin.setup();
        let request_headers = header_names(&needs.request_headers).map_err(rejected)?;
        let response_headers = header_names(&needs.response_headers).map_err(rejected)?;
        for (key, bytes) in [
            ("request-body-bytes", needs.request_body_bytes),
            ("response-body-bytes", needs.response_body_bytes),
        ] {
            if bytes > MAX_BODY_BYTES {
                return Err(rejected(format!(
                    "`{key}` {bytes} is over the most a filter may see, {MAX_BODY_BYTES}"
                )));
            }
        }
        Ok(Self {
            plugin,
            request_headers,
            response_headers,
        })
    }

    /// The plugin's call and fault counters.
    pub fn stats(&self) -> Arc<PluginStats> {
        self.plugin.stats()
    }

    /// The plugin's file name.
    pub fn name(&self) -> &str {
        self.plugin.name()
    }

    /// Whether it asked to see answers (`on-response`).
    pub fn on_responses(&self) -> bool {
        self.plugin.setup().on_response
    }

    /// Whether it asked to see MCP calls (`on-mcp-call`).
    pub fn on_mcp_calls(&self) -> bool {
        self.plugin.setup().mcp_calls
    }

    /// Whether it asked to see MCP results (`on-mcp-result`).
    pub fn on_mcp_results(&self) -> bool {
        self.plugin.setup().mcp_results
    }

    /// How many of a request body's first bytes it asked to see (0: none).
    pub fn request_body_bytes(&self) -> usize {
        self.plugin.setup().request_body_bytes as usize
    }

    /// How many of an answer's first bytes it asked to see (0: none).
    pub fn response_body_bytes(&self) -> usize {
        self.plugin.setup().response_body_bytes as usize
    }

    /// The request as this filter sees it: `request` with only the
    /// headers it asked for, the client's verified certificate name
    /// `identity`, the route's position `route`, and the body's first
    /// bytes (at most [`request_body_bytes`](Self::request_body_bytes))
    /// with whether they are the whole body, when it asked for them.
    pub fn view(
        &self,
        request: &RequestContext<'_>,
        identity: Option<&str>,
        route: usize,
        body: Option<(Vec<u8>, bool)>,
    ) -> FilterRequest {
        let info = request_info(request, &self.request_headers);
        FilterRequest(HttpRequest {
            method: info.method,
            authority: info.authority,
            path: info.path,
            headers: info.headers,
            client_addr: info.client_addr,
            client_identity: identity.map(str::to_owned),
            route: u32::try_from(route).unwrap_or(u32::MAX),
            body: body.map(prefix),
        })
    }

    /// Asks the filter about `request`.
    ///
    /// # Errors
    /// A [`Fault`] (counted and logged): a trap, an overrun, or a verdict
    /// with an invalid path, header or status.
    pub fn on_request(
        &self,
        request: &FilterRequest,
    ) -> Result<FilterVerdict<(Option<PathAndQuery>, HeaderChanges)>, Fault> {
        self.plugin.call(|bindings, store| {
            let verdict = bindings
                .switchyard_plugin_filter()
                .call_on_request(store, &request.0)
                .map_err(|e| self.plugin.fault(&e))?;
            Ok(match verdict {
                RequestVerdict::Continue => FilterVerdict::Continue,
                RequestVerdict::Change(change) => {
                    let path = change
                        .path
                        .map(|p| {
                            if p.starts_with('/') {
                                PathAndQuery::try_from(p.as_str()).ok()
                            } else {
                                None
                            }
                            .ok_or_else(|| Fault::Nonsense(format!("invalid path `{p}`")))
                        })
                        .transpose()?;
                    let headers = changes(change.remove_headers, change.set_headers)?;
                    FilterVerdict::Change((path, headers))
                }
                RequestVerdict::Respond(response) => FilterVerdict::Respond(made(response)?),
            })
        })
    }

    /// Asks the filter about the answer `status`/`headers` to `request`,
    /// with the body's first bytes (at most
    /// [`response_body_bytes`](Self::response_body_bytes)) and whether
    /// they are the whole body, when it asked for them.
    ///
    /// # Errors
    /// As [`on_request`](Self::on_request).
    pub fn on_response(
        &self,
        request: &FilterRequest,
        status: StatusCode,
        headers: &HeaderMap,
        body: Option<(Vec<u8>, bool)>,
    ) -> Result<FilterVerdict<HeaderChanges>, Fault> {
        let response = HttpResponse {
            status: status.as_u16(),
            headers: pairs(headers, &self.response_headers),
            body: body.map(prefix),
        };
        self.plugin.call(|bindings, store| {
            let verdict = bindings
                .switchyard_plugin_filter()
                .call_on_response(store, &request.0, &response)
                .map_err(|e| self.plugin.fault(&e))?;
            Ok(match verdict {
                ResponseVerdict::Continue => FilterVerdict::Continue,
                ResponseVerdict::Change(change) => {
                    FilterVerdict::Change(changes(change.remove_headers, change.set_headers)?)
                }
                ResponseVerdict::Replace(response) => FilterVerdict::Respond(made(response)?),
            })
        })
    }

    /// An MCP call as this filter sees it: the JSON-RPC `method`, the
    /// tool, prompt or resource `name`, the `arguments` (JSON), and the
    /// session's client (`clientInfo` name and version), carried by
    /// `request`.
    pub fn mcp_call(
        &self,
        request: &FilterRequest,
        method: &str,
        name: Option<&str>,
        arguments: &serde_json::Value,
        client: Option<(&str, &str)>,
    ) -> FilterMcpCall {
        FilterMcpCall(McpCall {
            request: request.0.clone(),
            method: method.to_owned(),
            name: name.map(str::to_owned),
            arguments: arguments.to_string(),
            client: client.map(|(name, version)| McpClient {
                name: name.to_owned(),
                version: version.to_owned(),
            }),
        })
    }

    /// Asks the filter about an MCP call.
    ///
    /// # Errors
    /// As [`on_request`](Self::on_request); new arguments that are not a
    /// JSON object are nonsense.
    pub fn on_mcp_call(&self, call: &FilterMcpCall) -> Result<McpVerdict, Fault> {
        self.plugin.call(|bindings, store| {
            let verdict = bindings
                .switchyard_plugin_filter()
                .call_on_mcp_call(store, &call.0)
                .map_err(|e| self.plugin.fault(&e))?;
            match verdict {
                McpCallVerdict::Continue => Ok(McpVerdict::Continue),
                McpCallVerdict::Rewrite(text) => match serde_json::from_str(&text) {
                    Ok(value @ serde_json::Value::Object(_)) => Ok(McpVerdict::Replace(value)),
                    _ => Err(Fault::Nonsense(
                        "rewritten arguments are not a JSON object".into(),
                    )),
                },
                McpCallVerdict::Deny(error) => Ok(McpVerdict::Deny(refusal(error))),
            }
        })
    }

    /// Asks the filter about the `result` (the response's `result` member)
    /// of `call`.
    ///
    /// # Errors
    /// As [`on_request`](Self::on_request); a replacement that is not JSON
    /// is nonsense.
    pub fn on_mcp_result(
        &self,
        call: &FilterMcpCall,
        result: &serde_json::Value,
    ) -> Result<McpVerdict, Fault> {
        let text = result.to_string();
        self.plugin.call(|bindings, store| {
            let verdict = bindings
                .switchyard_plugin_filter()
                .call_on_mcp_result(store, &call.0, &text)
                .map_err(|e| self.plugin.fault(&e))?;
            match verdict {
                McpResultVerdict::Continue => Ok(McpVerdict::Continue),
                McpResultVerdict::Replace(text) => serde_json::from_str(&text)
                    .map(McpVerdict::Replace)
                    .map_err(|e| Fault::Nonsense(format!("the replaced result is not JSON: {e}"))),
                McpResultVerdict::Deny(error) => Ok(McpVerdict::Deny(refusal(error))),
            }
        })
    }
}

/// A body's first bytes and whether they are all of it, as WIT's record.
fn prefix((bytes, complete): (Vec<u8>, bool)) -> BodyPrefix {
    BodyPrefix { bytes, complete }
}

/// The `wanted` headers of `headers`, as WIT pairs (values that are not
/// UTF-8 are passed lossily).
fn pairs(headers: &HeaderMap, wanted: &[HeaderName]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for name in wanted {
        for value in headers.get_all(name) {
            out.push((
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            ));
        }
    }
    out
}

/// A filter's header changes, checked.
fn changes(remove: Vec<String>, set: Vec<(String, String)>) -> Result<HeaderChanges, Fault> {
    let remove = remove
        .iter()
        .map(|n| {
            HeaderName::try_from(n.as_str())
                .map_err(|_| Fault::Nonsense(format!("invalid header name `{n}`")))
        })
        .collect::<Result<_, _>>()?;
    Ok(HeaderChanges {
        remove,
        set: header_pairs(&set)?,
    })
}

/// `pairs` as header names and values.
fn header_pairs(pairs: &[(String, String)]) -> Result<Vec<(HeaderName, HeaderValue)>, Fault> {
    pairs
        .iter()
        .map(|(name, value)| {
            match (
                HeaderName::try_from(name.as_str()),
                HeaderValue::try_from(value.as_str()),
            ) {
                (Ok(n), Ok(v)) => Ok((n, v)),
                _ => Err(Fault::Nonsense(format!("invalid header `{name}: {value}`"))),
            }
        })
        .collect()
}

/// A response a filter made, checked.
fn made(response: DirectResponse) -> Result<MadeResponse, Fault> {
    let status = StatusCode::from_u16(response.status)
        .ok()
        .filter(|s| !s.is_informational())
        .ok_or_else(|| Fault::Nonsense(format!("status {}", response.status)))?;
    let mut headers = HeaderMap::new();
    for (name, value) in header_pairs(&response.headers)? {
        headers.append(name, value);
    }
    Ok(MadeResponse {
        status,
        headers,
        body: response.body.into(),
    })
}

fn refusal(error: McpError) -> McpRefusal {
    McpRefusal {
        code: error.code,
        message: error.message,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

        /// A response a filter makes, whatever it says, is taken (a final
        /// status, valid headers) or is a fault; the host never panics on it.
        #[test]
        fn any_made_response_is_taken_or_a_fault(
            status in any::<u16>(),
            headers in prop::collection::vec((".{0,12}", ".{0,12}"), 0..4),
        ) {
            let valid = (200..=999).contains(&status)
                && headers.iter().all(|(n, v)| {
                    HeaderName::try_from(n.as_str()).is_ok() && HeaderValue::try_from(v.as_str()).is_ok()
                });
            let response = DirectResponse { status, headers: headers.clone(), body: b"x".to_vec() };
            match made(response) {
                Ok(m) => {
                    prop_assert!(valid);
                    prop_assert_eq!(m.status.as_u16(), status);
                    prop_assert_eq!(m.headers.len(), headers.len());
                }
                Err(fault) => prop_assert!(!valid, "{fault}"),
            }
        }
    }
}
