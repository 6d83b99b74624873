//! A `jwt` issuer's keys from its `jwks_url` (an OpenID provider's
//! `jwks_uri`), fetched over Switchyard's own upstream connections: when
//! the filter loads, again every `jwks_refresh_s` (±10%), and at once for
//! a token signed with a key not known yet — a key rotation followed
//! without a restart, as Envoy's `remote_jwks` with `async_fetch` does.
//! That refetch is single-flight (requests that need it wait for one
//! fetch), at most one a second, and a `kid` still unknown after it is
//! not fetched for again for a minute (a client sending made-up `kid`s
//! cannot make Switchyard hammer the provider). A failed fetch keeps the
//! keys last fetched, and is tried again after 1 s, doubling up to the
//! refresh interval.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use http::header::ACCEPT;
use http::{HeaderMap, HeaderValue};
use jsonwebtoken::{DecodingKey, Validation};

use super::service::Service;

/// A verifying key: its `kid`, the key, and the validation of a token it
/// signs (`iss`, `aud`, `exp`, `nbf`, the key's algorithm).
pub(super) type IssuerKey = (Option<String>, DecodingKey, Validation);

/// Builds the keys of a JWKS document (JSON text).
pub(super) type MakeKeys = Box<dyn Fn(&str) -> Result<Vec<IssuerKey>, String> + Send + Sync>;

/// The least time between two fetches a token asks for.
const MIN_REFETCH: Duration = Duration::from_secs(1);

/// How long a `kid` still unknown after a fetch is not fetched for again.
const UNKNOWN_KID_TTL: Duration = Duration::from_secs(60);

/// The most unknown `kid`s remembered.
const UNKNOWN_KIDS: u64 = 10_000;

/// The largest JWKS document taken, bytes.
const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// How long one fetch may take, connecting included.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// An issuer's keys served at a URL.
pub(super) struct RemoteJwks {
    service: Service,
    url: String,
    /// The keys last fetched, read by every verification.
    keys: Arc<ArcSwap<Vec<IssuerKey>>>,
    make: MakeKeys,
    /// When the last fetch ended; held while one runs.
    fetching: tokio::sync::Mutex<Option<Instant>>,
    /// `kid`s still unknown after a fetch.
    unknown: moka::sync::Cache<String, ()>,
    refresh: Duration,
}

impl RemoteJwks {
    /// The keys at `url` (validated at load), made by `make` into `keys`,
    /// fetched again every `refresh` by a task that ends when this is
    /// dropped (started when a Tokio runtime runs).
    ///
    /// # Errors
    /// As [`Service::new`].
    pub(super) fn start(
        url: &str,
        keys: Arc<ArcSwap<Vec<IssuerKey>>>,
        make: MakeKeys,
        refresh: Duration,
    ) -> Result<Arc<Self>, String> {
        let remote = Arc::new(Self {
            service: Service::new(url, FETCH_TIMEOUT)?,
            url: url.to_owned(),
            keys,
            make,
            fetching: tokio::sync::Mutex::new(None),
            unknown: moka::sync::Cache::builder()
                .max_capacity(UNKNOWN_KIDS)
                .time_to_live(UNKNOWN_KID_TTL)
                .build(),
            refresh,
        });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(refresher(Arc::downgrade(&remote)));
        }
        Ok(remote)
    }

    /// Fetches the keys for a token signed with `kid` (none: a token
    /// without one) that no key known verifies: whether a key of that
    /// `kid` is known now.
    pub(super) async fn refetch_for(&self, kid: Option<&str>) -> bool {
        let named = kid.unwrap_or("");
        if self.unknown.contains_key(named) {
            return false;
        }
        let mut last = self.fetching.lock().await;
        if self.knows(kid) {
            // Fetched while this request waited.
            return true;
        }
        if last.is_some_and(|t| t.elapsed() < MIN_REFETCH) {
            return false;
        }
        let fetched = self.fetch_stamped(&mut last).await;
        drop(last);
        if let Err(reason) = fetched {
            tracing::warn!(url = %self.url, %reason, "could not fetch the JWKS; keeping the keys last fetched");
            return false;
        }
        let known = self.knows(kid);
        if !known {
            self.unknown.insert(named.to_owned(), ());
        }
        known
    }

    /// Whether a key of `kid` is known (any key, for a token without one).
    fn knows(&self, kid: Option<&str>) -> bool {
        self.keys
            .load()
            .iter()
            .any(|(k, ..)| kid.is_none() || k.as_deref() == kid)
    }

    /// [`fetch`](Self::fetch), its end stamped in `last` (the value under
    /// the `fetching` lock, held by the caller).
    async fn fetch_stamped(&self, last: &mut Option<Instant>) -> Result<(), String> {
        let fetched = self.fetch().await;
        *last = Some(Instant::now());
        fetched
    }

    /// One fetch, its keys taking the place of those known.
    ///
    /// # Errors
    /// No answer, an answer that is not a 2xx, or not a JWKS with a usable
    /// key: the keys known are kept.
    async fn fetch(&self) -> Result<(), String> {
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        let answered = self.service.get(headers, MAX_JWKS_BYTES).await?;
        if !answered.status.is_success() {
            return Err(format!("it answered {}", answered.status));
        }
        let text = std::str::from_utf8(&answered.body).map_err(|e| e.to_string())?;
        let keys = (self.make)(text)?;
        tracing::debug!(url = %self.url, keys = keys.len(), "JWKS fetched");
        self.keys.store(Arc::new(keys));
        Ok(())
    }
}

/// Fetches `remote`'s keys now and every refresh interval (±10%), sooner
/// after a failure; ends once `remote` is dropped.
async fn refresher(remote: Weak<RemoteJwks>) {
    let mut failures = 0u32;
    loop {
        let Some(jwks) = remote.upgrade() else {
            return;
        };
        let fetched = jwks.fetch_stamped(&mut *jwks.fetching.lock().await).await;
        let wait = match fetched {
            Ok(()) => {
                failures = 0;
                jwks.refresh
            }
            Err(reason) => {
                failures = failures.saturating_add(1);
                tracing::warn!(url = %jwks.url, %reason, "could not fetch the JWKS; keeping the keys last fetched");
                Duration::from_secs(1 << failures.min(16).saturating_sub(1)).min(jwks.refresh)
            }
        };
        drop(jwks);
        tokio::time::sleep(wait.mul_f64(0.9 + fastrand::f64() * 0.2)).await;
    }
}
