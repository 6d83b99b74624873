//! # api-version-router: send each request to the API version it asks for
//!
//! A filter plugin: reads the API version a client asks for from a request
//! header (`Accept-Version: 2`, as Restify and many API gateways do) and
//! puts that version's path prefix before the path (`/users` →
//! `/v2/users`), so that one public URL serves every version of an API
//! whose upstreams serve `/v1/…` and `/v2/…`. A request without the header
//! gets `default` (without one: 400); a version not in `versions` gets 400
//! with the versions there are, as JSON. The answer carries the version
//! that served it in the same header (`on-response`).
//!
//! Config (JSON from the filter's `plugin.config`):
//!
//! | key | type | default | meaning |
//! |---|---|---|---|
//! | `header` | string | `"accept-version"` | the request header naming the version |
//! | `versions` | table version → path prefix | required | e.g. `{ "1" = "/v1", "2" = "/v2" }` |
//! | `default` | string | none | the version of a request without the header |

use std::collections::BTreeMap;

use serde::Deserialize;
use switchyard_sdk::{
    DirectResponse, Filter, FilterNeeds, HttpRequest, HttpResponse, PluginError, RequestChange,
    RequestVerdict, ResponseChange, ResponseVerdict,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "default_header")]
    header: String,
    versions: BTreeMap<String, String>,
    #[serde(default)]
    default: Option<String>,
}

fn default_header() -> String {
    "accept-version".into()
}

struct VersionRouter(Config);

impl VersionRouter {
    /// The version `request` asks for (its header, else the default).
    fn version<'a>(&'a self, request: &'a HttpRequest) -> Option<&'a str> {
        request
            .headers
            .iter()
            .find(|(name, _)| *name == self.0.header)
            .map(|(_, value)| value.trim())
            .or(self.0.default.as_deref())
    }
}

impl Filter for VersionRouter {
    fn new(config: &str) -> Result<Self, PluginError> {
        let mut config: Config = serde_json::from_str(config)
            .map_err(|e| PluginError::InvalidConfig(format!("api-version-router: {e}")))?;
        config.header.make_ascii_lowercase();
        if config.versions.is_empty() {
            return Err(PluginError::InvalidConfig(
                "api-version-router: `versions` names no version".into(),
            ));
        }
        if let Some((version, prefix)) = config
            .versions
            .iter()
            .find(|(_, p)| !p.starts_with('/') || p.ends_with('/'))
        {
            return Err(PluginError::InvalidConfig(format!(
                "api-version-router: versions.{version}: `{prefix}` must start with `/` and not end with one"
            )));
        }
        if let Some(default) = config
            .default
            .as_ref()
            .filter(|d| !config.versions.contains_key(*d))
        {
            return Err(PluginError::InvalidConfig(format!(
                "api-version-router: default `{default}` is not one of `versions`"
            )));
        }
        Ok(Self(config))
    }

    fn needs(&self) -> FilterNeeds {
        FilterNeeds {
            request_headers: vec![self.0.header.clone()],
            on_response: true,
            response_headers: Vec::new(),
            mcp_calls: false,
            mcp_results: false,
            request_body_bytes: 0,
            response_body_bytes: 0,
        }
    }

    fn on_request(&mut self, request: &HttpRequest) -> RequestVerdict {
        let prefix = self.version(request).and_then(|v| self.0.versions.get(v));
        match prefix {
            Some(prefix) => RequestVerdict::Change(RequestChange {
                path: Some(format!("{prefix}{}", request.path)),
                set_headers: Vec::new(),
                remove_headers: Vec::new(),
            }),
            None => {
                let body = serde_json::json!({
                    "error": "unsupported_api_version",
                    "message": format!(
                        "name one of the supported versions in `{}`",
                        self.0.header
                    ),
                    "supported": self.0.versions.keys().collect::<Vec<_>>(),
                });
                RequestVerdict::Respond(DirectResponse {
                    status: 400,
                    headers: vec![("content-type".into(), "application/json".into())],
                    body: body.to_string().into_bytes(),
                })
            }
        }
    }

    fn on_response(&mut self, request: &HttpRequest, _response: &HttpResponse) -> ResponseVerdict {
        match self.version(request) {
            Some(version) if self.0.versions.contains_key(version) => {
                ResponseVerdict::Change(ResponseChange {
                    set_headers: vec![(self.0.header.clone(), version.to_owned())],
                    remove_headers: Vec::new(),
                })
            }
            _ => ResponseVerdict::Continue,
        }
    }
}

switchyard_sdk::export_filter!(VersionRouter);
