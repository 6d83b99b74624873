//! An HTTP service the gateway itself asks — a `forward-auth` filter's
//! authorization service, a `jwt` filter's JWKS endpoint — over
//! Switchyard's own kept-alive upstream connections (TLS to `https://`
//! ones, verified against the Mozilla roots).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::HOST;
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Either, Full, Limited};
use prometheus_client::metrics::counter::Counter;

use crate::balance::Endpoint;
use crate::config::UpstreamProtocol;
use crate::proxy::{Upstreams, error_chain};
use crate::tls::UpstreamTls;

/// How long an idle connection to a service is kept.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The most idle connections kept to a service per thread stripe.
const MAX_IDLE: usize = 64;

/// A service at a URL (validated at load: `http://` or `https://` with a
/// host), asked with GETs of the URL's path and query.
pub struct Service {
    endpoint: Endpoint,
    path: PathAndQuery,
    host: HeaderValue,
    upstreams: Arc<Upstreams>,
    /// The most one exchange may take, head and body.
    timeout: Duration,
}

/// A service's answer: status, headers, and the whole body.
pub struct Answered {
    /// Its status.
    pub status: StatusCode,
    /// Its headers.
    pub headers: HeaderMap,
    /// Its body, whole.
    pub body: Bytes,
}

impl Service {
    /// The service at `url`, each exchange (connecting included) given
    /// at most `timeout`.
    ///
    /// # Errors
    /// A URL that is not `http://` or `https://` with a host, or TLS that
    /// cannot be set up.
    pub fn new(url: &str, timeout: Duration) -> Result<Self, String> {
        let uri: http::Uri = url.parse().map_err(|e| format!("`{url}`: {e}"))?;
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| format!("`{url}` has no host"))?;
        let scheme = uri.scheme_str().unwrap_or("http");
        let tls = UpstreamTls::load(None, Vec::new()).map_err(|(_, e)| e)?;
        Ok(Self {
            host: HeaderValue::from_str(authority.as_str()).map_err(|e| e.to_string())?,
            // Id 0: the only instance of its own connections (their idle
            // table is indexed by id).
            endpoint: Endpoint::new(
                0,
                format!("{scheme}://{authority}"),
                authority,
                1,
                Vec::new(),
            ),
            path: uri
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
            upstreams: Upstreams::new(
                UpstreamProtocol::Http1,
                timeout,
                IDLE_TIMEOUT,
                MAX_IDLE,
                Arc::new(tls),
                // Resends after a kept connection closed: no pool's count.
                Counter::default(),
            ),
            timeout,
        })
    }

    /// A GET with `headers` (and the service's `Host`), its answer read
    /// whole (at most `max_body_bytes` of body; read to its end, the
    /// connection is kept for the next).
    ///
    /// # Errors
    /// No answer within the timeout, a failed exchange, a body over the
    /// bound.
    pub async fn get(
        &self,
        mut headers: HeaderMap,
        max_body_bytes: usize,
    ) -> Result<Answered, String> {
        headers.insert(HOST, self.host.clone());
        let mut request = Request::get(self.path.as_str())
            .body(Either::Right(Full::new(Bytes::new())))
            .map_err(|e| e.to_string())?;
        *request.headers_mut() = headers;
        let exchange = async {
            let response = self
                .upstreams
                .request(&self.endpoint, request)
                .await
                .map_err(|e| error_chain(&e))?;
            let (head, body) = response.into_parts();
            let body = Limited::new(body, max_body_bytes)
                .collect()
                .await
                .map_err(|e| format!("its answer's body: {e}"))?
                .to_bytes();
            Ok(Answered {
                status: head.status,
                headers: head.headers,
                body,
            })
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| format!("no answer within {} ms", self.timeout.as_millis()))?
    }
}
