//! Forward authentication: a `forward-auth` filter asks an HTTP service
//! about each request before it goes anywhere, as nginx's `auth_request`
//! and Traefik's ForwardAuth do. The sub-request is a GET to the filter's
//! URL carrying the request's chosen headers and Traefik's
//! `X-Forwarded-Method`/`-Proto`/`-Host`/`-Uri`/`-For`; a 2xx answer lets
//! the request pass with the answer's chosen headers (and principal), any
//! other answer is the client's (status, headers, body: a login redirect,
//! a 401 with its challenge), and no answer within `timeout_ms` is
//! `failure_mode`'s. Answers may be remembered for `cache_ttl_ms`, keyed
//! by the values of the headers the service sees.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderName, HeaderValue, Response};
use http_body_util::Full;
use prometheus_client::metrics::counter::Counter;

use super::auth::Principal;
use super::filter::{Answer, RequestFacts};
use super::service::Service;
use crate::config::{FilterFailureMode, ForwardAuthConfig};
use crate::metrics::PrincipalCounts;
use crate::proxy::ProxyError;

/// The most of a refusal's body sent back to the client, bytes: a
/// longer one is the service failing.
const MAX_REFUSAL_BYTES: usize = 64 * 1024;

/// The most answers remembered per filter.
const MAX_REMEMBERED: u64 = 10_000;

/// A `forward-auth` filter of a route.
pub struct ForwardAuth {
    service: Service,
    request_headers: Vec<HeaderName>,
    response_headers: Vec<HeaderName>,
    principal_header: Option<HeaderName>,
    closed: bool,
    remembered: Option<moka::sync::Cache<Vec<u8>, Arc<Decision>>>,
    /// The filter's name, for errors and the audit log.
    name: String,
    /// Decisions: `allowed`, `denied`, `failed`.
    counters: [Counter; 3],
    /// The requests of each principal the service named.
    principals: PrincipalCounts,
}

/// What the service said about a request.
enum Decision {
    /// A 2xx: the headers to set upstream, and the principal it named.
    Allow {
        headers: Vec<(HeaderName, HeaderValue)>,
        principal: Option<Arc<Principal>>,
    },
    /// Any other answer, for the client.
    Deny(Response<Full<Bytes>>),
}

impl ForwardAuth {
    /// The filter `name` of `config` (validated at load), its decisions
    /// counted in `counters` (`allowed`, `denied`, `failed`), the
    /// principals the service names in `principals`.
    ///
    /// # Errors
    /// As [`Service::new`].
    pub fn new(
        config: &ForwardAuthConfig,
        name: &str,
        counters: [Counter; 3],
        principals: PrincipalCounts,
    ) -> Result<Self, String> {
        let headers = |names: &[String]| -> Vec<HeaderName> {
            names.iter().filter_map(|n| n.parse().ok()).collect()
        };
        Ok(Self {
            service: Service::new(&config.url, Duration::from_millis(config.timeout_ms))?,
            request_headers: headers(&config.request_headers),
            response_headers: headers(&config.response_headers),
            principal_header: config
                .principal_header
                .as_deref()
                .and_then(|n| n.parse().ok()),
            closed: config.failure_mode == FilterFailureMode::Closed,
            remembered: (config.cache_ttl_ms > 0).then(|| {
                moka::sync::Cache::builder()
                    .max_capacity(MAX_REMEMBERED)
                    .time_to_live(Duration::from_millis(config.cache_ttl_ms))
                    .build()
            }),
            name: name.to_owned(),
            counters,
            principals,
        })
    }

    /// Removes the client's own headers of the names the service sets
    /// (whether it is asked or not: they cannot be forged), asks the
    /// service about the request `parts` unless a filter before found its
    /// principal, and applies its answer: the service's headers set, its
    /// principal put in the request's extensions.
    ///
    /// # Errors
    /// The service's own answer when it is not a 2xx; 503 when it gave
    /// none and `failure_mode` is `closed`.
    pub async fn check(
        &self,
        parts: &mut http::request::Parts,
        facts: &RequestFacts<'_>,
    ) -> Result<Option<Arc<Principal>>, Answer> {
        if parts.extensions.get::<Arc<Principal>>().is_some() {
            self.remove_answer_headers(&mut parts.headers);
            return Ok(None);
        }
        let key = self.remembered.as_ref().map(|_| self.key(&parts.headers));
        let remembered = key
            .as_ref()
            .zip(self.remembered.as_ref())
            .and_then(|(key, cache)| cache.get(key));
        let decision = match remembered {
            Some(decision) => decision,
            None => match self.ask(parts, facts).await {
                Ok(decision) => {
                    let decision = Arc::new(decision);
                    if let (Some(key), Some(cache)) = (key, &self.remembered) {
                        cache.insert(key, Arc::clone(&decision));
                    }
                    decision
                }
                Err(reason) => return self.failed(&reason, facts),
            },
        };
        self.remove_answer_headers(&mut parts.headers);
        let (filter, client) = (self.name.as_str(), facts.peer.ip());
        match &*decision {
            Decision::Allow { headers, principal } => {
                self.counters[0].inc();
                for (name, value) in headers {
                    parts.headers.append(name.clone(), value.clone());
                }
                let id = principal.as_ref().map_or("", |p| p.id.as_str());
                tracing::debug!(target: "switchyard::audit", route = facts.route, filter, %client, principal = id, decision = "allowed");
                if let Some(principal) = principal {
                    self.principals.count(&principal.id);
                    parts.extensions.insert(Arc::clone(principal));
                }
                Ok(principal.clone())
            }
            Decision::Deny(response) => {
                self.counters[1].inc();
                tracing::info!(target: "switchyard::audit", route = facts.route, filter, %client, decision = "denied", status = response.status().as_u16());
                Err(Answer::Made(Box::new(copy(response))))
            }
        }
    }

    /// Removes the client's own headers of the names the service's answer
    /// sets.
    fn remove_answer_headers(&self, headers: &mut HeaderMap) {
        for name in &self.response_headers {
            headers.remove(name);
        }
    }

    /// The cache key of a request: the values of the headers the service
    /// sees, each with its length (so no two requests share one by
    /// accident).
    fn key(&self, headers: &HeaderMap) -> Vec<u8> {
        let mut key = Vec::new();
        for name in &self.request_headers {
            for value in headers.get_all(name) {
                key.extend_from_slice(&(value.len() as u64).to_le_bytes());
                key.extend_from_slice(value.as_bytes());
            }
            key.push(0xff);
        }
        key
    }

    /// The sub-request for `parts` sent, and its answer read.
    async fn ask(
        &self,
        parts: &http::request::Parts,
        facts: &RequestFacts<'_>,
    ) -> Result<Decision, String> {
        let mut headers = HeaderMap::new();
        for name in &self.request_headers {
            for value in parts.headers.get_all(name) {
                headers.append(name.clone(), value.clone());
            }
        }
        let forwarded = [
            ("x-forwarded-method", parts.method.as_str()),
            (
                "x-forwarded-proto",
                if facts.tls { "https" } else { "http" },
            ),
            ("x-forwarded-host", facts.host),
            (
                "x-forwarded-uri",
                parts.uri.path_and_query().map_or("/", PathAndQuery::as_str),
            ),
        ];
        for (name, value) in forwarded {
            if let Ok(value) = HeaderValue::from_str(value) {
                headers.insert(HeaderName::from_static(name), value);
            }
        }
        if let Ok(value) = HeaderValue::from_str(&facts.peer.ip().to_string()) {
            headers.insert(HeaderName::from_static("x-forwarded-for"), value);
        }
        let answered = self.service.get(headers, MAX_REFUSAL_BYTES).await?;
        if answered.status.is_success() {
            return Ok(self.allow(&answered.headers));
        }
        let mut response = Response::new(Full::new(answered.body));
        *response.status_mut() = answered.status;
        *response.headers_mut() = answered.headers;
        // The body is whole: hyper sets its length again.
        response.headers_mut().remove(TRANSFER_ENCODING);
        response.headers_mut().remove(CONTENT_LENGTH);
        Ok(Decision::Deny(response))
    }

    /// A 2xx answer's decision: its chosen headers, its principal.
    fn allow(&self, answer: &HeaderMap) -> Decision {
        let headers = self
            .response_headers
            .iter()
            .flat_map(|name| {
                answer
                    .get_all(name)
                    .iter()
                    .map(|v| (name.clone(), v.clone()))
            })
            .collect();
        let principal = self
            .principal_header
            .as_ref()
            .and_then(|name| answer.get(name))
            .and_then(|v| v.to_str().ok())
            .filter(|id| !id.is_empty())
            .map(|id| {
                Arc::new(Principal {
                    id: id.to_owned(),
                    method: "forward-auth",
                    metadata: Default::default(),
                    scopes: Vec::new(),
                })
            });
        Decision::Allow { headers, principal }
    }

    /// No answer: the request passes (`open`) or is refused with 503.
    fn failed(
        &self,
        reason: &str,
        facts: &RequestFacts<'_>,
    ) -> Result<Option<Arc<Principal>>, Answer> {
        self.counters[2].inc();
        let (filter, client) = (self.name.as_str(), facts.peer.ip());
        tracing::warn!(target: "switchyard::audit", route = facts.route, filter, %client, decision = "failed", reason, closed = self.closed);
        if self.closed {
            Err(Answer::Error(ProxyError::FilterFailed {
                filter: self.name.clone(),
                reason: format!("the authorization service: {reason}"),
            }))
        } else {
            Ok(None)
        }
    }
}

/// A fresh copy of a remembered refusal (the body is shared).
fn copy(response: &Response<Full<Bytes>>) -> Response<Full<Bytes>> {
    let mut copy = Response::new(response.body().clone());
    *copy.status_mut() = response.status();
    *copy.headers_mut() = response.headers().clone();
    copy
}
