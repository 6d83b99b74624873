//! Rate limits: a `rate-limit` filter's limits, each a GCRA (generic cell
//! rate algorithm) per key, its state bounded.
//!
//! Per key a limit keeps one number, the theoretical arrival time (TAT) of
//! the next request at the sustained rate. A request costing `c` moves it
//! to `max(TAT, now) + c·T` (`T = period / rate`) and is admitted when that
//! is at most `burst·T` ahead of now: a key at rest admits `burst` at once,
//! then one every `T`, and no window edge lets twice the rate through.
//! This is the algorithm of Brandur Leach's `throttled` and Redis's
//! `redis-cell`. The state is a lock-free atomic per key in a bounded
//! cache (`moka`): a key idle for `burst·T` is back at rest and forgotten,
//! and past `max_keys` the least recently used key is forgotten (its next
//! request starts at rest; counted).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use http::HeaderValue;
use prometheus_client::metrics::counter::Counter;

use super::auth::Principal;
use super::filter::RequestFacts;
use crate::config::{KeyPart, LimitConfig, RateLimitConfig};
use crate::metrics::Metrics;
use crate::proxy::ProxyError;

/// Where the limiters' clock starts: TATs are nanoseconds since then.
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// Nanoseconds since [`EPOCH`].
fn now_ns() -> u64 {
    u64::try_from(EPOCH.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// A `rate-limit` filter of a route.
pub struct RateLimits {
    limits: Vec<Limit>,
    /// The `RateLimit-Policy` field: every limit that is enforced.
    policy: Option<HeaderValue>,
    /// The filter's name.
    name: String,
}

/// One limit, with its state and counters.
struct Limit {
    name: String,
    key: Vec<KeyPart>,
    /// `T`: the time one cost unit takes at the sustained rate, ns.
    emission_ns: u64,
    /// How far the TAT may run ahead of now: `burst·T`, ns.
    tolerance_ns: u64,
    /// What one request moves the TAT by: `cost·T`, ns.
    cost_ns: u64,
    shadow: bool,
    /// TAT per key.
    tats: moka::sync::Cache<String, Arc<AtomicU64>>,
    allowed: Counter,
    limited: Counter,
    shadow_limited: Counter,
}

/// A limit's answer for a request over it: when it would be admitted,
/// and when the key is at rest again.
struct Over {
    retry_after_ns: u64,
    reset_ns: u64,
}

impl RateLimits {
    /// The filter `name` of route `route` from `config` (validated at
    /// load: a key part that does not parse is skipped), counting in
    /// `metrics`.
    pub fn new(config: &RateLimitConfig, name: &str, route: usize, metrics: &Metrics) -> Self {
        let limits: Vec<Limit> = config
            .limits
            .iter()
            .map(|limit| Limit::new(limit, config.max_keys, (route, name), metrics))
            .collect();
        let policy = limits
            .iter()
            .filter(|l| !l.shadow)
            .map(Limit::policy)
            .collect::<Vec<_>>()
            .join(", ");
        Self {
            limits,
            policy: HeaderValue::try_from(policy).ok().filter(|p| !p.is_empty()),
            name: name.to_owned(),
        }
    }

    /// Judges a request: admitted by every limit (and then counted against
    /// each), or refused by the first it is over.
    ///
    /// # Errors
    /// 429 with `Retry-After` (whole seconds, rounded up), the filter's
    /// `RateLimit-Policy` and the limit's `RateLimit` state.
    pub fn check(
        &self,
        parts: &http::request::Parts,
        facts: &RequestFacts<'_>,
    ) -> Result<(), ProxyError> {
        let now = now_ns();
        let principal = parts.extensions.get::<Arc<Principal>>();
        for (i, limit) in self.limits.iter().enumerate() {
            let key = limit.key_of(parts, facts, principal.map(AsRef::as_ref));
            let Err(over) = limit.acquire(&key, now) else {
                limit.allowed.inc();
                continue;
            };
            if limit.shadow {
                limit.shadow_limited.inc();
                tracing::debug!(target: "switchyard::audit", route = facts.route, filter = %self.name, limit = %limit.name, client = %facts.peer.ip(), decision = "shadow_limited");
                continue;
            }
            limit.limited.inc();
            // What the limits before it took is given back: the request
            // is not served.
            for earlier in &self.limits[..i] {
                let key = earlier.key_of(parts, facts, principal.map(AsRef::as_ref));
                earlier.release(&key);
            }
            tracing::debug!(target: "switchyard::audit", route = facts.route, filter = %self.name, limit = %limit.name, client = %facts.peer.ip(), decision = "limited");
            let retry_after_s = over.retry_after_ns.div_ceil(1_000_000_000).max(1);
            let state = format!(
                "\"{}\";r=0;t={}",
                limit.name,
                over.reset_ns.div_ceil(1_000_000_000)
            );
            return Err(ProxyError::RateLimited {
                message: format!(
                    "over limit `{}` of filter `{}`: try again in {retry_after_s} s",
                    limit.name, self.name
                ),
                retry_after_s,
                policy: self.policy.clone(),
                state: HeaderValue::try_from(state).ok(),
            });
        }
        Ok(())
    }
}

impl Limit {
    fn new(
        config: &LimitConfig,
        max_keys: u64,
        (route, filter): (usize, &str),
        metrics: &Metrics,
    ) -> Self {
        // At most a day (the longest period, at a rate of one), at least 1 ns.
        let emission_ns = (config.period_ms.saturating_mul(1_000_000) / config.rate.max(1)).max(1);
        let tolerance_ns = emission_ns.saturating_mul(config.burst());
        let counter =
            |decision| metrics.rate_limit_decisions(route, filter, &config.name, decision);
        let evicted = metrics.rate_limit_evictions(route, filter, &config.name);
        let tats = moka::sync::Cache::builder()
            .max_capacity(max_keys)
            // Idle this long, a key is at rest: forgetting it changes nothing.
            .time_to_idle(Duration::from_nanos(tolerance_ns).max(Duration::from_secs(1)))
            .eviction_listener(move |_, _, cause| {
                if cause == moka::notification::RemovalCause::Size {
                    evicted.inc();
                }
            })
            .build();
        Self {
            name: config.name.clone(),
            key: config
                .key
                .iter()
                .filter_map(|k| KeyPart::parse(k).ok())
                .collect(),
            emission_ns,
            tolerance_ns,
            cost_ns: emission_ns.saturating_mul(config.cost),
            shadow: config.shadow,
            tats,
            allowed: counter("allowed"),
            limited: counter("limited"),
            shadow_limited: counter("shadow_limited"),
        }
    }

    /// Its `RateLimit-Policy` member: the burst as the quota, over the
    /// time the sustained rate takes to earn it (whole seconds, at least
    /// one).
    fn policy(&self) -> String {
        let quota = self.tolerance_ns / self.emission_ns;
        let window = self.tolerance_ns.div_ceil(1_000_000_000).max(1);
        format!("\"{}\";q={quota};w={window}", self.name)
    }

    /// The key of a request: its parts' values, separated by a byte no
    /// header value holds.
    fn key_of(
        &self,
        parts: &http::request::Parts,
        facts: &RequestFacts<'_>,
        principal: Option<&Principal>,
    ) -> String {
        let mut key = String::new();
        for (i, part) in self.key.iter().enumerate() {
            if i > 0 {
                key.push('\u{1f}');
            }
            match part {
                KeyPart::ClientIp => key.push_str(&facts.peer.ip().to_string()),
                KeyPart::Principal => key.push_str(principal.map_or("", |p| p.id.as_str())),
                KeyPart::Header(name) => key.push_str(
                    &parts
                        .headers
                        .get(name)
                        .map(|v| String::from_utf8_lossy(v.as_bytes()))
                        .unwrap_or_default(),
                ),
                KeyPart::Claim(name) => key.push_str(
                    principal
                        .and_then(|p| p.metadata.get(name))
                        .map_or("", String::as_str),
                ),
                KeyPart::Route => key.push_str(&facts.route.to_string()),
            }
        }
        key
    }

    /// Counts a request of `key` at `now` when the limit admits it.
    ///
    /// # Errors
    /// When it is over the limit: when it would be admitted.
    fn acquire(&self, key: &str, now: u64) -> Result<(), Over> {
        let tat = match self.tats.get(key) {
            Some(tat) => tat,
            None => self
                .tats
                .get_with(key.to_owned(), || Arc::new(AtomicU64::new(0))),
        };
        let mut seen = tat.load(Ordering::Acquire);
        loop {
            let next = seen.max(now).saturating_add(self.cost_ns);
            let ahead = next - now;
            if ahead > self.tolerance_ns {
                return Err(Over {
                    retry_after_ns: ahead - self.tolerance_ns,
                    reset_ns: seen.saturating_sub(now),
                });
            }
            match tat.compare_exchange_weak(seen, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Ok(()),
                Err(current) => seen = current,
            }
        }
    }

    /// Gives back what a request of `key` took.
    fn release(&self, key: &str) {
        if let Some(tat) = self.tats.get(key) {
            let _ = tat.fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                Some(t.saturating_sub(self.cost_ns))
            });
        }
    }
}
