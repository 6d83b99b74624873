//! Errors of the data path and of starting it.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{StatusCode, header};
use http_body_util::Full;

use crate::plugin::LoadError;

/// Why `switchyard` could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A pool's plugin was refused.
    #[error("{key}: {error}")]
    Plugin {
        /// The config key that names the plugin, e.g. `pools.web.strategy`.
        key: String,
        /// Why the plugin was refused.
        error: LoadError,
    },
    /// A listener could not bind.
    #[error("cannot listen on {addr}: {error}")]
    Bind {
        /// The configured address.
        addr: SocketAddr,
        /// The OS error.
        error: std::io::Error,
    },
    /// A listener's TLS files could not be loaded (they changed since the
    /// config was validated).
    #[error("{key}: {reason}")]
    Tls {
        /// The config key, e.g. `listeners[0].tls.certificates[0].key_file`.
        key: String,
        /// Why.
        reason: String,
    },
    /// A route could not be built from its (validated) config.
    #[error("route: {0}")]
    Route(String),
    /// The plugin engine could not start.
    #[error("plugin engine: {0}")]
    Engine(String),
}

/// 499, nginx's non-standard "client closed request": recorded in metrics
/// and the request log for a client that went away mid-request.
fn client_closed_request() -> StatusCode {
    StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST)
}

/// Why a request got an error response from Switchyard itself.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// No route matches the request (404).
    #[error("no route matches host `{host}` and path `{path}`")]
    NoRoute {
        /// The request's host.
        host: String,
        /// The request's path.
        path: String,
    },
    /// No instance of the pool answered (502).
    #[error("no instance of pool `{pool}` could take the request: {reason}")]
    NoUpstream {
        /// The pool.
        pool: String,
        /// The last attempt's failure, or why none was made.
        reason: String,
    },
    /// The pool's bulkhead shed the request (503 + `Retry-After`).
    #[error("pool `{pool}` is at capacity: {why}; retry after {retry_after_s} s")]
    Shed {
        /// The pool.
        pool: String,
        /// Queue full or queue timeout.
        why: crate::failover::Shed,
        /// The `Retry-After` value, seconds.
        retry_after_s: u64,
    },
    /// The request could not be read (400).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The client sent no body bytes for the listener's
    /// `body_read_timeout_ms` (408).
    #[error("the request body stalled for {timeout_ms} ms")]
    ClientTimeout {
        /// The listener's `body_read_timeout_ms`.
        timeout_ms: u64,
    },
    /// The client went away before its request was complete: nobody gets
    /// the answer; logged and counted as 499 (nginx's "client closed
    /// request").
    #[error("the client closed the connection before its request was complete")]
    ClientGone,
    /// A filter of the route refused the request (403): the client's
    /// address is not admitted.
    #[error("{0}")]
    Forbidden(String),
    /// The request carries no credentials an authentication filter of the
    /// route takes, or bad ones (401, with `WWW-Authenticate: challenge`).
    #[error("{reason}")]
    Unauthorized {
        /// Why, for the client.
        reason: String,
        /// The `WWW-Authenticate` challenge (RFC 9110 §11.6.1).
        challenge: std::borrow::Cow<'static, str>,
    },
    /// A limit of a `rate-limit` filter refused the request (429).
    #[error("{message}")]
    RateLimited {
        /// Which limit, and when to come back.
        message: String,
        /// `Retry-After`, whole seconds.
        retry_after_s: u64,
        /// The `RateLimit-Policy` field: the filter's enforced limits.
        policy: Option<header::HeaderValue>,
        /// The `RateLimit` field: the refusing limit's state.
        state: Option<header::HeaderValue>,
    },
    /// The request's header fields are over the route's limit (431).
    #[error("the request's header fields are over the limit of {limit}")]
    HeadersTooLarge {
        /// Which limit, as the config says it (`100 fields`, `16384 bytes`).
        limit: String,
    },
    /// A filter plugin of the route faulted and its `failure_mode` is
    /// `closed` (503).
    #[error("filter `{filter}` failed ({reason}) and its failure_mode is closed")]
    FilterFailed {
        /// The filter's name.
        filter: String,
        /// The fault.
        reason: String,
    },
    /// The request body is over the route's limit (413).
    #[error("the request body is over the limit of {limit_bytes} bytes")]
    PayloadTooLarge {
        /// The route's limit (a fan-out's `max_request_body_bytes`, a
        /// `body-limit` filter's `max_bytes`).
        limit_bytes: u64,
    },
    /// A fan-out route could not fuse an answer (502, with the tally).
    #[error("fan-out route {route}: {error}")]
    Fusion {
        /// The route's index in the config.
        route: usize,
        /// Why, with the tally.
        error: crate::fusion::FusionError,
    },
    /// The instance did not answer in time (504).
    #[error("instance {instance} of pool `{pool}` did not answer within {timeout_ms} ms")]
    Timeout {
        /// The pool.
        pool: String,
        /// The instance's URL.
        instance: String,
        /// The pool's `request_timeout_ms`.
        timeout_ms: u64,
    },
}

impl ProxyError {
    /// The status code sent to the client.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute { .. } => StatusCode::NOT_FOUND,
            ProxyError::NoUpstream { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Shed { .. } | ProxyError::FilterFailed { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::ClientTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            ProxyError::ClientGone => client_closed_request(),
            ProxyError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::Forbidden(_) => StatusCode::FORBIDDEN,
            ProxyError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            ProxyError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ProxyError::HeadersTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ProxyError::Fusion { .. } => StatusCode::BAD_GATEWAY,
        }
    }

    /// Short machine-readable code, the `error` field of the JSON body.
    pub fn code(&self) -> &'static str {
        match self {
            ProxyError::NoRoute { .. } => "no_route",
            ProxyError::NoUpstream { .. } => "no_upstream",
            ProxyError::Timeout { .. } => "upstream_timeout",
            ProxyError::Shed { .. } => "overloaded",
            ProxyError::BadRequest(_) => "bad_request",
            ProxyError::ClientTimeout { .. } => "request_timeout",
            ProxyError::ClientGone => "client_closed_request",
            ProxyError::PayloadTooLarge { .. } => "payload_too_large",
            ProxyError::Forbidden(_) => "forbidden",
            ProxyError::Unauthorized { .. } => "unauthorized",
            ProxyError::RateLimited { .. } => "rate_limited",
            ProxyError::FilterFailed { .. } => "filter_failed",
            ProxyError::HeadersTooLarge { .. } => "request_header_fields_too_large",
            ProxyError::Fusion { error, .. } => match error {
                crate::fusion::FusionError::NoAnswer { .. } => "no_acceptable_answer",
                crate::fusion::FusionError::NoQuorum { .. } => "no_quorum",
            },
        }
    }

    /// The response: the status and `{"error": code, "message": text}`.
    pub fn into_response(self) -> http::Response<Full<Bytes>> {
        let retry_after = match &self {
            ProxyError::Shed { retry_after_s, .. }
            | ProxyError::RateLimited { retry_after_s, .. } => Some(*retry_after_s),
            _ => None,
        };
        let rate_limit = match &self {
            ProxyError::RateLimited { policy, state, .. } => Some((policy.clone(), state.clone())),
            _ => None,
        };
        let challenge = match &self {
            ProxyError::Unauthorized { challenge, .. } => {
                header::HeaderValue::from_str(challenge).ok()
            }
            _ => None,
        };
        let mut body = serde_json::json!({ "error": self.code(), "message": self.to_string() });
        if let ProxyError::Fusion { error, .. } = &self {
            body["details"] = error.details();
        }
        let mut response = http::Response::new(Full::new(Bytes::from(body.to_string())));
        *response.status_mut() = self.status();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json"),
        );
        if let Some(challenge) = challenge {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, challenge);
        }
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(seconds));
        }
        if let Some((policy, state)) = rate_limit {
            let headers = response.headers_mut();
            if let Some(policy) = policy {
                headers.insert("ratelimit-policy", policy);
            }
            if let Some(state) = state {
                headers.insert("ratelimit", state);
            }
        }
        response
    }
}
