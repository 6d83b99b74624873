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
    /// The limits that count HTTP requests.
    requests: Vec<Limit>,
    /// The limits that count MCP tool calls.
    calls: Vec<Limit>,
    /// The `RateLimit-Policy` field: the request limits that are
    /// enforced.
    policy: Option<HeaderValue>,
    /// The filter's name.
    name: String,
    /// Its route's index.
    route: usize,
}

/// One limit, with its state and counters.
struct Limit {
    name: String,
    key: Vec<KeyPart>,
    /// The tools whose calls it counts (none: every tool).
    tools: Vec<String>,
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

/// The keys of a request's tool-call limits, but for the tool: taken when
/// the request passed the filter, completed by each call.
#[derive(Clone)]
pub struct CallKeys(Vec<String>);

/// A filter's tool-call limits with a request's keys.
pub type ScopedQuotas = (Arc<RateLimits>, CallKeys);

impl RateLimits {
    /// The filter `name` of route `route` from `config` (validated at
    /// load: a key part that does not parse is skipped), counting in
    /// `metrics`.
    pub fn new(config: &RateLimitConfig, name: &str, route: usize, metrics: &Metrics) -> Self {
        let build = |per_call: bool| -> Vec<Limit> {
            config
                .limits
                .iter()
                .filter(|limit| limit.per_tool_call() == per_call)
                .map(|limit| Limit::new(limit, config.max_keys, (route, name), metrics))
                .collect()
        };
        let (requests, calls) = (build(false), build(true));
        let policy = requests
            .iter()
            .filter(|l| !l.shadow)
            .map(Limit::policy)
            .collect::<Vec<_>>()
            .join(", ");
        Self {
            requests,
            calls,
            policy: HeaderValue::try_from(policy).ok().filter(|p| !p.is_empty()),
            name: name.to_owned(),
            route,
        }
    }

    /// Whether some limit counts MCP tool calls.
    pub fn counts_calls(&self) -> bool {
        !self.calls.is_empty()
    }

    /// Judges a request by the limits that count requests: admitted by
    /// every one (and then counted against each), or refused by the
    /// first it is over.
    ///
    /// # Errors
    /// 429 with `Retry-After` (whole seconds, rounded up), the filter's
    /// `RateLimit-Policy` and the limit's `RateLimit` state.
    pub fn check(
        &self,
        parts: &http::request::Parts,
        facts: &RequestFacts<'_>,
    ) -> Result<(), ProxyError> {
        let principal = parts.extensions.get::<Arc<Principal>>().map(AsRef::as_ref);
        let Err((limit, over)) = self.judge(&self.requests, |limit| {
            Some(limit.key_of(parts, facts, principal))
        }) else {
            return Ok(());
        };
        let retry_after_s = seconds(over.retry_after_ns).max(1);
        let state = format!("\"{}\";r=0;t={}", limit.name, seconds(over.reset_ns));
        Err(ProxyError::RateLimited {
            message: format!(
                "over limit `{}` of filter `{}`: try again in {retry_after_s} s",
                limit.name, self.name
            ),
            retry_after_s,
            policy: self.policy.clone(),
            state: HeaderValue::try_from(state).ok(),
        })
    }

    /// The keys of the tool-call limits for the request `parts`.
    pub fn call_keys(&self, parts: &http::request::Parts, facts: &RequestFacts<'_>) -> CallKeys {
        let principal = parts.extensions.get::<Arc<Principal>>().map(AsRef::as_ref);
        CallKeys(
            self.calls
                .iter()
                .map(|limit| limit.key_of(parts, facts, principal))
                .collect(),
        )
    }

    /// Judges a `tools/call` of `tool` by the limits that count calls of
    /// it, with the request's `keys`.
    ///
    /// # Errors
    /// Which limit it is over and when to try again, for the JSON-RPC
    /// error the client gets.
    pub fn check_call(&self, keys: &CallKeys, tool: &str) -> Result<(), String> {
        let key = |limit: &Limit| {
            let i = self.calls.iter().position(|l| std::ptr::eq(l, limit))?;
            let base = keys.0.get(i)?;
            if !limit.tools.is_empty() && !limit.tools.iter().any(|t| t == tool) {
                return None;
            }
            Some(if limit.key.contains(&KeyPart::McpTool) {
                format!("{base}\u{1f}{tool}")
            } else {
                base.clone()
            })
        };
        self.judge(&self.calls, key).map_err(|(limit, over)| {
            format!(
                "tool `{tool}` is over limit `{}` of filter `{}`: try again in {} s",
                limit.name,
                self.name,
                seconds(over.retry_after_ns).max(1)
            )
        })
    }

    /// Judges one request or call by `limits`, each under the key `key`
    /// gives (none: the limit does not count it): admitted by every one
    /// (and then counted against each), or refused by the first it is
    /// over, what the ones before took given back.
    fn judge<'l>(
        &self,
        limits: &'l [Limit],
        key_of: impl Fn(&Limit) -> Option<String>,
    ) -> Result<(), (&'l Limit, Over)> {
        let route = self.route;
        let now = now_ns();
        // Which limits took their cost (a filter has at most 64).
        let mut taken = 0u64;
        for (i, limit) in limits.iter().enumerate() {
            let Some(key) = key_of(limit) else { continue };
            let Err(over) = limit.acquire(&key, now) else {
                limit.allowed.inc();
                taken |= 1 << i;
                continue;
            };
            if limit.shadow {
                limit.shadow_limited.inc();
                tracing::debug!(target: "switchyard::audit", route, filter = %self.name, limit = %limit.name, decision = "shadow_limited");
                continue;
            }
            limit.limited.inc();
            tracing::debug!(target: "switchyard::audit", route, filter = %self.name, limit = %limit.name, decision = "limited");
            for (j, earlier) in limits[..i].iter().enumerate() {
                if let Some(key) = key_of(earlier).filter(|_| taken & (1 << j) != 0) {
                    earlier.release(&key);
                }
            }
            return Err((limit, over));
        }
        Ok(())
    }
}

/// Whole seconds of `ns`, rounded up.
fn seconds(ns: u64) -> u64 {
    ns.div_ceil(1_000_000_000)
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
            tools: config.tools.clone(),
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
    /// header value holds (a tool call's tool is added by the call).
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
                // Added by each call.
                KeyPart::McpTool => {}
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
