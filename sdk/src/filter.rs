//! Filters (WIT 0.1.3): see each request of a route, its answer, and on MCP
//! routes each JSON-RPC call and result; continue, change or answer.

use crate::PluginError;

pub use crate::wit::filter::exports::switchyard::plugin::filter::{
    BodyPrefix, DirectResponse, FilterNeeds, HttpRequest, HttpResponse, McpCall, McpCallVerdict,
    McpClient, McpError, McpResultVerdict, RequestChange, RequestVerdict, ResponseChange,
    ResponseVerdict,
};

/// A filter. The host calls [`new`](Filter::new) once with the filter's
/// config (JSON text), asks [`needs`](Filter::needs) what it wants to see,
/// then calls [`on_request`](Filter::on_request) for every request of the
/// routes that list it, and the other methods only when `needs` asked for
/// them. A panic is a fault: the route's `failure_mode` decides what the
/// request gets (`open`: it continues unfiltered; `closed`: 503).
pub trait Filter: Sized + 'static {
    /// Builds the filter from its JSON config; an error refuses the plugin at load.
    fn new(config: &str) -> Result<Self, PluginError>;

    /// What the filter wants to see: the request headers it reads, whether
    /// it sees answers (and which of their headers), MCP calls and MCP
    /// results, and how many of the request's and the answer's first body
    /// bytes (at most 1 MiB each; `HttpRequest::body`,
    /// `HttpResponse::body`). Default: the request without headers or
    /// body, nothing else.
    fn needs(&self) -> FilterNeeds {
        FilterNeeds {
            request_headers: Vec::new(),
            on_response: false,
            response_headers: Vec::new(),
            mcp_calls: false,
            mcp_results: false,
            request_body_bytes: 0,
            response_body_bytes: 0,
        }
    }

    /// Decides about a request: continue, change (path, headers) or respond.
    fn on_request(&mut self, request: &HttpRequest) -> RequestVerdict;

    /// Decides about the answer to `request`. Default: continue.
    fn on_response(&mut self, _request: &HttpRequest, _response: &HttpResponse) -> ResponseVerdict {
        ResponseVerdict::Continue
    }

    /// Decides about an MCP call: continue, rewrite its arguments or deny
    /// it. Default: continue.
    fn on_mcp_call(&mut self, _call: &McpCall) -> McpCallVerdict {
        McpCallVerdict::Continue
    }

    /// Decides about the result of an MCP call (`result`, JSON text of the
    /// response's `result` member): continue, replace or deny. Default:
    /// continue.
    fn on_mcp_result(&mut self, _call: &McpCall, _result: &str) -> McpResultVerdict {
        McpResultVerdict::Continue
    }
}

/// Exports a [`Filter`] implementation as the component's `filter` interface.
#[macro_export]
macro_rules! export_filter {
    ($ty:ty) => {
        const _: () = {
            use $crate::wit::filter::exports::switchyard::plugin::filter as exported;
            struct Export;
            ::std::thread_local! {
                static SLOT: $crate::Slot<$ty> = const { $crate::Slot::new() };
            }
            impl exported::Guest for Export {
                fn configure(config: String) -> Result<$crate::FilterNeeds, $crate::PluginError> {
                    SLOT.with(|slot| {
                        slot.install(<$ty as $crate::Filter>::new(&config), |p| {
                            $crate::Filter::needs(p)
                        })
                    })
                }
                fn on_request(request: $crate::HttpRequest) -> $crate::RequestVerdict {
                    SLOT.with(|slot| slot.with(|p| $crate::Filter::on_request(p, &request)))
                }
                fn on_response(
                    request: $crate::HttpRequest,
                    response: $crate::HttpResponse,
                ) -> $crate::ResponseVerdict {
                    SLOT.with(|slot| {
                        slot.with(|p| $crate::Filter::on_response(p, &request, &response))
                    })
                }
                fn on_mcp_call(call: $crate::McpCall) -> $crate::McpCallVerdict {
                    SLOT.with(|slot| slot.with(|p| $crate::Filter::on_mcp_call(p, &call)))
                }
                fn on_mcp_result(
                    call: $crate::McpCall,
                    result: String,
                ) -> $crate::McpResultVerdict {
                    SLOT.with(|slot| {
                        slot.with(|p| $crate::Filter::on_mcp_result(p, &call, &result))
                    })
                }
            }
    $crate::wit::filter::export!(Export with_types_in $crate::wit::filter);
        };
    };
}
