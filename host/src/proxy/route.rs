//! A pool route: the pool that serves it, what answers when it cannot,
//! and its stale-if-error answers. Served by [`super::forward`].

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use http_body_util::Full;

use super::Pool;
use crate::failover::StaleCache;

/// A route to one pool: the pool and its fallback.
pub struct PoolRoute {
    /// The pool that serves it.
    pub pool: Arc<Pool>,
    /// What answers when the pool cannot.
    pub fallback: Option<Fallback>,
    /// Last good GET answers, when `stale_if_error` is on.
    pub stale: Option<Arc<StaleCache>>,
}

/// A route's graceful degradation.
pub enum Fallback {
    /// A secondary pool, used while the primary has no fit instance.
    Pool(Arc<Pool>),
    /// A fixed response, sent when no attempt succeeded.
    Static(StaticResponse),
}

/// A configured fixed response.
pub struct StaticResponse {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl StaticResponse {
    /// A response of `status`, `body` and `headers` (validated at load; an
    /// invalid header is dropped).
    pub fn new(status: u16, body: &str, headers: &BTreeMap<String, String>) -> Self {
        Self {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
            headers: crate::config::header_pairs(headers).into_iter().collect(),
            body: Bytes::copy_from_slice(body.as_bytes()),
        }
    }

    /// A fresh response (cheap: the body is shared).
    pub fn to_response(&self) -> http::Response<Full<Bytes>> {
        let mut response = http::Response::new(Full::new(self.body.clone()));
        *response.status_mut() = self.status;
        *response.headers_mut() = self.headers.clone();
        response
    }
}
