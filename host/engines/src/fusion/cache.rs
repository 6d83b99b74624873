//! The cache of fused answers of one fan-out route (moka, bounded, TTL).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use http_body_util::Full;
use moka::sync::Cache;
use xxhash_rust::xxh64::Xxh64;

use switchyard_config::FusionCacheConfig;

/// A stored fused answer (provenance headers included).
#[derive(Debug)]
struct Entry {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    stored: Instant,
}

/// The result of a lookup.
pub enum CacheLookup {
    /// A fresh answer: serve it.
    Hit(http::Response<Full<Bytes>>),
    /// No fresh answer; `stale` is served if fusion fails.
    Miss {
        /// An answer past its TTL but within `stale_if_error_ms`.
        stale: Option<http::Response<Full<Bytes>>>,
    },
}

/// Hit, miss and stale counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheStats {
    /// Fresh answers served.
    pub hits: u64,
    /// Lookups that found no fresh answer.
    pub misses: u64,
    /// Stale answers served because fusion failed.
    pub stale: u64,
}

/// Fused answers by request key. Only 2xx answers are stored.
pub struct FusionCache {
    entries: Cache<u64, Arc<Entry>>,
    ttl: Duration,
    stale_window: Duration,
    vary: Vec<HeaderName>,
    hits: AtomicU64,
    misses: AtomicU64,
    stale: AtomicU64,
}

impl FusionCache {
    /// A cache per `config` (validated: header names parse).
    pub fn new(config: &FusionCacheConfig) -> Self {
        let ttl = Duration::from_millis(config.ttl_ms);
        let stale_window = Duration::from_millis(config.stale_if_error_ms);
        Self {
            entries: Cache::builder()
                .max_capacity(config.max_entries)
                .time_to_live(ttl + stale_window)
                .build(),
            ttl,
            stale_window,
            vary: config
                .vary_headers
                .iter()
                .filter_map(|h| HeaderName::try_from(h.as_str()).ok())
                .collect(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            stale: AtomicU64::new(0),
        }
    }

    /// The key of a request: route index, method, path and query, the
    /// `vary_headers` values, and the body.
    pub fn key(
        &self,
        route: usize,
        method: &Method,
        path_and_query: &str,
        headers: &HeaderMap,
        body: &[u8],
    ) -> u64 {
        let mut h = Xxh64::new(0);
        h.update(&(route as u64).to_le_bytes());
        for part in [method.as_str().as_bytes(), path_and_query.as_bytes()] {
            h.update(&(part.len() as u64).to_le_bytes());
            h.update(part);
        }
        for name in &self.vary {
            for value in headers.get_all(name) {
                h.update(&(value.len() as u64).to_le_bytes());
                h.update(value.as_bytes());
            }
            h.update(b"\0");
        }
        h.update(&xxhash_rust::xxh64::xxh64(body, 0).to_le_bytes());
        h.digest()
    }

    /// Looks `key` up, counting a hit or a miss.
    pub fn lookup(&self, key: u64) -> CacheLookup {
        let entry = self.entries.get(&key);
        match entry {
            Some(e) if e.stored.elapsed() < self.ttl => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                CacheLookup::Hit(e.to_response("hit"))
            }
            other => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                CacheLookup::Miss {
                    stale: other
                        .filter(|e| e.stored.elapsed() < self.ttl + self.stale_window)
                        .map(|e| e.to_response("stale")),
                }
            }
        }
    }

    /// Counts a stale answer served.
    pub fn served_stale(&self) {
        self.stale.fetch_add(1, Ordering::Relaxed);
    }

    /// Stores `response`'s parts under `key` if its status is 2xx.
    pub fn store(&self, key: u64, status: StatusCode, headers: &HeaderMap, body: &Bytes) {
        if status.is_success() {
            self.entries.insert(
                key,
                Arc::new(Entry {
                    status,
                    headers: headers.clone(),
                    body: body.clone(),
                    stored: Instant::now(),
                }),
            );
        }
    }

    /// Hit, miss and stale counts so far.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            stale: self.stale.load(Ordering::Relaxed),
        }
    }
}

impl Entry {
    /// The stored answer with `x-switchyard-cache: {how}` and `Age`.
    fn to_response(&self, how: &'static str) -> http::Response<Full<Bytes>> {
        let mut response = http::Response::new(Full::new(self.body.clone()));
        *response.status_mut() = self.status;
        *response.headers_mut() = self.headers.clone();
        let headers = response.headers_mut();
        headers.insert("x-switchyard-cache", HeaderValue::from_static(how));
        headers.insert(
            http::header::AGE,
            HeaderValue::from(self.stored.elapsed().as_secs()),
        );
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(ttl_ms: u64, stale_if_error_ms: u64) -> FusionCache {
        FusionCache::new(&FusionCacheConfig {
            ttl_ms,
            stale_if_error_ms,
            vary_headers: vec!["accept".into()],
            ..FusionCacheConfig::default()
        })
    }

    #[test]
    fn keys_cover_method_path_vary_headers_and_body() {
        let c = cache(1_000, 0);
        let mut h = HeaderMap::new();
        let base = c.key(0, &Method::GET, "/a", &h, b"");
        assert_ne!(base, c.key(1, &Method::GET, "/a", &h, b""));
        assert_ne!(base, c.key(0, &Method::POST, "/a", &h, b""));
        assert_ne!(base, c.key(0, &Method::GET, "/a?x=1", &h, b""));
        assert_ne!(base, c.key(0, &Method::GET, "/a", &h, b"{}"));
        h.insert("user-agent", HeaderValue::from_static("x"));
        assert_eq!(
            base,
            c.key(0, &Method::GET, "/a", &h, b""),
            "not a vary header"
        );
        h.insert("accept", HeaderValue::from_static("text/csv"));
        assert_ne!(base, c.key(0, &Method::GET, "/a", &h, b""));
    }

    #[test]
    fn only_2xx_is_stored_and_counted() {
        let c = cache(60_000, 0);
        let body = Bytes::from_static(b"{}");
        c.store(1, StatusCode::BAD_GATEWAY, &HeaderMap::new(), &body);
        assert!(matches!(c.lookup(1), CacheLookup::Miss { stale: None }));
        c.store(1, StatusCode::OK, &HeaderMap::new(), &body);
        let CacheLookup::Hit(r) = c.lookup(1) else {
            panic!("not a hit")
        };
        assert_eq!(r.headers()["x-switchyard-cache"], "hit");
        assert_eq!(
            c.stats(),
            CacheStats {
                hits: 1,
                misses: 1,
                stale: 0
            }
        );
    }

    #[test]
    fn an_expired_answer_is_offered_as_stale_within_the_window() {
        let c = cache(1, 60_000);
        c.store(
            7,
            StatusCode::OK,
            &HeaderMap::new(),
            &Bytes::from_static(b"x"),
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match c.lookup(7) {
                CacheLookup::Miss { stale: Some(r) } => {
                    assert_eq!(r.headers()["x-switchyard-cache"], "stale");
                    break;
                }
                _ => assert!(Instant::now() < deadline, "never expired"),
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}
