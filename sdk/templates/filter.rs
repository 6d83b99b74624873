//! A filter plugin: sees each request of the routes that list it, and
//! continues, changes or answers it.

use switchyard_sdk::{DirectResponse, Filter, FilterNeeds, HttpRequest, PluginError, RequestChange, RequestVerdict};

struct Plugin;

impl Filter for Plugin {
    fn new(_config: &str) -> Result<Self, PluginError> {
        Ok(Plugin)
    }

    /// The request headers this filter reads.
    fn needs(&self) -> FilterNeeds {
        FilterNeeds {
            request_headers: vec!["user-agent".into()],
            on_response: false,
            response_headers: Vec::new(),
            mcp_calls: false,
            mcp_results: false,
            request_body_bytes: 0,
            response_body_bytes: 0,
        }
    }

    /// Refuses `/admin` paths; tags every other request with its client.
    fn on_request(&mut self, request: &HttpRequest) -> RequestVerdict {
        if request.path.starts_with("/admin") {
            return RequestVerdict::Respond(DirectResponse {
                status: 403,
                headers: vec![("content-type".into(), "text/plain".into())],
                body: b"forbidden\n".to_vec(),
            });
        }
        RequestVerdict::Change(RequestChange {
            path: None,
            set_headers: vec![("x-client-addr".into(), request.client_addr.clone())],
            remove_headers: Vec::new(),
        })
    }
}

switchyard_sdk::export_filter!(Plugin);
