//! stale-if-error: the last good answer to a GET, served when the pool fails.
//!
//! With `stale_if_error` on a route, every successful (2xx) GET answer whose
//! body fits `max_body_bytes` is remembered per host, path and query (RFC
//! 5861's `stale-if-error`, decided by the proxy rather than the origin's
//! headers). When every attempt of a later GET fails, the remembered answer is
//! sent, up to `max_age_ms` old, with `Age` and `x-switchyard-stale: 1`. The
//! table holds at most `max_entries` answers (least recently used go first).
//! Bodies are copied while they stream to the client, so the data path
//! neither waits nor buffers beyond `max_body_bytes`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use http_body_util::Full;
use moka::sync::Cache;

use switchyard_config::StaleConfig;

/// A remembered answer.
#[derive(Debug)]
pub struct Stored {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    at: Instant,
}

/// A route's remembered answers.
pub struct StaleCache {
    entries: Cache<String, Arc<Stored>>,
    max_body: usize,
}

/// Copies a streaming answer; stores it when it ends within the size limit.
pub struct Recorder {
    cache: Cache<String, Arc<Stored>>,
    key: String,
    status: StatusCode,
    headers: HeaderMap,
    body: BytesMut,
    max_body: usize,
}

impl StaleCache {
    /// A cache per `config` (validated at load).
    pub fn new(config: &StaleConfig) -> Self {
        Self {
            entries: Cache::builder()
                .max_capacity(config.max_entries)
                .time_to_live(Duration::from_millis(config.max_age_ms))
                .build(),
            max_body: config.max_body_bytes as usize,
        }
    }

    /// The cache key of a request.
    pub fn key(host: &str, path_and_query: &str) -> String {
        format!("{host}{path_and_query}")
    }

    /// A recorder for a 2xx answer to `key`, unless its declared length is over the limit.
    pub fn record(
        &self,
        key: String,
        status: StatusCode,
        headers: &HeaderMap,
        declared: Option<u64>,
    ) -> Option<Recorder> {
        if !status.is_success() || declared.is_some_and(|len| len > self.max_body as u64) {
            return None;
        }
        Some(Recorder {
            cache: self.entries.clone(),
            key,
            status,
            headers: headers.clone(),
            body: BytesMut::new(),
            max_body: self.max_body,
        })
    }

    /// The remembered answer to `key`, marked stale.
    pub fn serve(&self, key: &str) -> Option<Response<Full<Bytes>>> {
        let stored = self.entries.get(key)?;
        let mut response = Response::new(Full::new(stored.body.clone()));
        *response.status_mut() = stored.status;
        *response.headers_mut() = stored.headers.clone();
        let age = stored.at.elapsed().as_secs();
        response
            .headers_mut()
            .insert(http::header::AGE, HeaderValue::from(age));
        response
            .headers_mut()
            .insert("x-switchyard-stale", HeaderValue::from_static("1"));
        Some(response)
    }
}

impl Recorder {
    /// Copies a chunk; gives up (returns false) past the size limit.
    pub fn push(&mut self, chunk: &[u8]) -> bool {
        if self.body.len() + chunk.len() > self.max_body {
            return false;
        }
        self.body.extend_from_slice(chunk);
        true
    }

    /// The body ended: remember the answer.
    pub fn finish(self) {
        self.cache.insert(
            self.key,
            Arc::new(Stored {
                status: self.status,
                headers: self.headers,
                body: self.body.freeze(),
                at: Instant::now(),
            }),
        );
    }
}
