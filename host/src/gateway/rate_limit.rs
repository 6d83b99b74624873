//! Rate limits: a `rate-limit` filter's limits, each a GCRA (generic cell
//! rate algorithm) per key, its state bounded.
//!
//! Per key a limit keeps one number, the theoretical arrival time (TAT) of
//! the next request at the sustained rate. A request costing `c` moves it
//! to `max(TAT, now) + c·T` (`T = period / rate`) and is admitted when that
//! is at most `burst·T` ahead of now: a key at rest admits `burst` at once,
//! then one every `T`, and no window edge lets twice the rate through.
//! This is the algorithm of Brandur Leach's `throttled` and Redis's
//! `redis-cell`. The state is an atomic per key in a bounded map of
//! shards: a full shard forgets its keys at rest (nothing
//! changes for them), then, when every key is busy, some busy ones
//! (their next request starts at rest; counted).

use std::collections::HashMap;
use std::hash::BuildHasher as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError, RwLock, Weak};
use std::time::{Duration, Instant};

use http::HeaderValue;
use prometheus_client::metrics::counter::Counter;

use super::auth::Principal;
use super::filter::RequestFacts;
use crate::config::{KeyPart, LimitConfig, RateLimitConfig, RedisLimitConfig};
use crate::events::{EventBus, EventKind, HealthEvent, Severity};
use crate::proxy::{ProxyError, Reporting};

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
    /// The limits of requests in flight.
    concurrency: Vec<Concurrency>,
    /// The `RateLimit-Policy` field: the request limits that are
    /// enforced.
    policy: Option<HeaderValue>,
    /// Whether admitted answers carry the RateLimit fields.
    headers: bool,
    /// The filter's name.
    name: String,
    /// Its route's index.
    route: usize,
    /// Where the request limits are shared, when they are.
    global: Option<Global>,
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
    /// TAT per key (shared with the same limit of the config before).
    tats: Arc<Tats>,
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
    pub fn new(config: &RateLimitConfig, name: &str, route: usize, reporting: &Reporting) -> Self {
        let build = |per_call: bool| -> Vec<Limit> {
            config
                .limits
                .iter()
                .filter(|limit| limit.per_tool_call() == per_call)
                .map(|limit| Limit::new(limit, config.max_keys, (route, name), reporting))
                .collect()
        };
        let (requests, calls) = (build(false), build(true));
        let concurrency = config
            .concurrency
            .iter()
            .map(|limit| {
                let counter = |decision| {
                    reporting
                        .metrics
                        .rate_limit_decisions(route, name, &limit.name, decision)
                };
                Concurrency {
                    name: limit.name.clone(),
                    key: limit
                        .key
                        .iter()
                        .filter_map(|k| KeyPart::parse(k).ok())
                        .collect(),
                    max: limit.max,
                    counts: Keyed::new(
                        config.max_keys,
                        reporting
                            .metrics
                            .rate_limit_evictions(route, name, &limit.name),
                    ),
                    allowed: counter("allowed"),
                    limited: counter("limited"),
                }
            })
            .collect();
        let global = config.redis.as_ref().and_then(|redis| {
            Global::new(redis, config, (route, name), reporting)
                .inspect_err(|reason| tracing::error!(filter = %name, %reason, "the rate limits' Redis cannot be used: they are enforced locally"))
                .ok()
        });
        let policy = requests
            .iter()
            .filter(|l| !l.shadow)
            .map(Limit::policy)
            .collect::<Vec<_>>()
            .join(", ");
        Self {
            requests,
            calls,
            concurrency,
            policy: HeaderValue::try_from(policy).ok().filter(|p| !p.is_empty()),
            headers: config.headers,
            name: name.to_owned(),
            route,
            global,
        }
    }

    /// Each limit as `/v1/status` shows it: `filter`, `limit`, `counts`
    /// (`requests` or `tool_calls`), `rate`/`burst` as the GCRA holds
    /// them (`emission_ms`: one unit every so many milliseconds;
    /// `burst_units`), `shadow`, `mode` (`process`; with a Redis,
    /// `global`, or `local` while it fails), `keys` held here, and the
    /// decisions `allowed`, `limited`, `shadow_limited` since start; a
    /// concurrency limit counts `in_flight`, with its `max`.
    pub fn status(&self) -> Vec<serde_json::Value> {
        let mode = match &self.global {
            None => "process",
            Some(global) if global.local_until.load(Ordering::Acquire) == 0 => "global",
            Some(_) => "local",
        };
        let each = |limits: &[Limit], counts: &str| -> Vec<serde_json::Value> {
            limits
                .iter()
                .map(|limit| {
                    serde_json::json!({
                        "filter": self.name,
                        "limit": limit.name,
                        "counts": counts,
                        "emission_ms": limit.emission_ns as f64 / 1e6,
                        "burst_units": limit.tolerance_ns / limit.emission_ns,
                        "shadow": limit.shadow,
                        "mode": if counts == "requests" { mode } else { "process" },
                        "keys": limit.tats.len(),
                        "allowed": limit.allowed.get(),
                        "limited": limit.limited.get(),
                        "shadow_limited": limit.shadow_limited.get(),
                    })
                })
                .collect()
        };
        let mut all = each(&self.requests, "requests");
        all.extend(each(&self.calls, "tool_calls"));
        all.extend(self.concurrency.iter().map(|limit| {
            serde_json::json!({
                "filter": self.name,
                "limit": limit.name,
                "counts": "in_flight",
                "max": limit.max,
                "mode": "process",
                "keys": limit.counts.len(),
                "allowed": limit.allowed.get(),
                "limited": limit.limited.get(),
            })
        }));
        all
    }

    /// Whether some limit counts MCP tool calls.
    pub fn counts_calls(&self) -> bool {
        !self.calls.is_empty()
    }

    /// Judges a request by the limits that count requests (through the
    /// filter's Redis when it names one; by each replica's share while
    /// Redis fails): admitted by every one (and then counted against
    /// each), or refused by the first it is over; the RateLimit fields of
    /// the answer when the filter gives them (`headers`).
    ///
    /// # Errors
    /// 429 with `Retry-After` (whole seconds, rounded up), the filter's
    /// `RateLimit-Policy` and the limit's `RateLimit` state.
    pub async fn check(
        &self,
        parts: &http::request::Parts,
        facts: &RequestFacts<'_>,
    ) -> Result<Option<RateLimitFields>, ProxyError> {
        let principal = parts.extensions.get::<Arc<Principal>>().map(AsRef::as_ref);
        let write = |limit: &Limit, key: &mut String| {
            limit.write_key(parts, facts, principal, key);
            true
        };
        let judged = match &self.global {
            None => self.judge(&self.requests, write),
            Some(global) => match global.decide(self, write).await {
                Some(decided) => decided,
                None => self.judge(&global.shares, write),
            },
        };
        let (limit, over) = match judged {
            Ok(nearest) => return Ok(self.fields(nearest)),
            Err(refused) => refused,
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

    /// The fields of an admitted request's answer, when the filter gives
    /// them: the policy, and the state of the limit nearest to refusing.
    fn fields(&self, nearest: Nearest<'_>) -> Option<RateLimitFields> {
        let (limit, left, reset_ns) = nearest.filter(|_| self.headers)?;
        let state = format!("\"{}\";r={left};t={}", limit.name, seconds(reset_ns));
        Some(RateLimitFields {
            policy: self.policy.clone()?,
            state: HeaderValue::try_from(state).ok()?,
        })
    }

    /// Counts the request `parts` in flight against every concurrency
    /// limit: the counts it holds until its answer's body is sent (none
    /// without such limits).
    ///
    /// # Errors
    /// 429 with `Retry-After: 1` when a key is at its limit (nothing
    /// held).
    pub fn enter(
        &self,
        parts: &http::request::Parts,
        facts: &RequestFacts<'_>,
    ) -> Result<Option<ConcurrencySlots>, ProxyError> {
        if self.concurrency.is_empty() {
            return Ok(None);
        }
        let principal = parts.extensions.get::<Arc<Principal>>().map(AsRef::as_ref);
        let mut held = ConcurrencySlots::default();
        KEY.with_borrow_mut(|key| {
            for limit in &self.concurrency {
                key.clear();
                write_key(&limit.key, parts, facts, principal, key);
                let count = limit.counts.with(
                    key,
                    |c| c.load(Ordering::Acquire) == 0 && Arc::strong_count(c) == 1,
                    Arc::clone,
                );
                let admitted = count
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                        (n < limit.max).then_some(n + 1)
                    })
                    .is_ok();
                if !admitted {
                    limit.limited.inc();
                    tracing::debug!(target: "switchyard::audit", route = self.route, filter = %self.name, limit = %limit.name, decision = "limited");
                    return Err(ProxyError::RateLimited {
                        message: format!(
                            "over limit `{}` of filter `{}`: {} requests in flight",
                            limit.name, self.name, limit.max
                        ),
                        retry_after_s: 1,
                        policy: None,
                        state: None,
                    });
                }
                limit.allowed.inc();
                held.0.push(Arc::new(Slot(count)));
            }
            Ok(Some(held))
        })
    }

    /// The keys of the tool-call limits for the request `parts`.
    pub fn call_keys(&self, parts: &http::request::Parts, facts: &RequestFacts<'_>) -> CallKeys {
        let principal = parts.extensions.get::<Arc<Principal>>().map(AsRef::as_ref);
        CallKeys(
            self.calls
                .iter()
                .map(|limit| {
                    let mut key = String::new();
                    limit.write_key(parts, facts, principal, &mut key);
                    key
                })
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
        let key = |limit: &Limit, key: &mut String| {
            let base = self
                .calls
                .iter()
                .position(|l| std::ptr::eq(l, limit))
                .and_then(|i| keys.0.get(i));
            let counts = limit.tools.is_empty() || limit.tools.iter().any(|t| t == tool);
            let Some(base) = base.filter(|_| counts) else {
                return false;
            };
            key.push_str(base);
            if limit.key.contains(&KeyPart::McpTool) {
                key.push('\u{1f}');
                key.push_str(tool);
            }
            true
        };
        self.judge(&self.calls, key)
            .map(drop)
            .map_err(|(limit, over)| {
                format!(
                    "tool `{tool}` is over limit `{}` of filter `{}`: try again in {} s",
                    limit.name,
                    self.name,
                    seconds(over.retry_after_ns).max(1)
                )
            })
    }

    /// Judges one request or call by `limits`, each under the key
    /// `write_key` writes (`false`: the limit does not count it):
    /// admitted by every one (and then counted against each), or refused
    /// by the first it is over, what the ones before took given back.
    fn judge<'l>(
        &self,
        limits: &'l [Limit],
        write_key: impl Fn(&Limit, &mut String) -> bool,
    ) -> Result<Nearest<'l>, (&'l Limit, Over)> {
        let route = self.route;
        let now = now_ns();
        KEY.with_borrow_mut(|key| {
            // Which limits took their cost (a filter has at most 64).
            let mut taken = 0u64;
            let mut nearest = None;
            for (i, limit) in limits.iter().enumerate() {
                key.clear();
                if !write_key(limit, key) {
                    continue;
                }
                let over = match limit.acquire(key, now) {
                    Ok(ahead) => {
                        limit.allowed.inc();
                        taken |= 1 << i;
                        nearest = limit.nearer(nearest, ahead);
                        continue;
                    }
                    Err(over) => over,
                };
                if limit.shadow {
                    limit.shadow_limited.inc();
                    tracing::debug!(target: "switchyard::audit", route, filter = %self.name, limit = %limit.name, decision = "shadow_limited");
                    continue;
                }
                limit.limited.inc();
                tracing::debug!(target: "switchyard::audit", route, filter = %self.name, limit = %limit.name, decision = "limited");
                for (j, earlier) in limits[..i].iter().enumerate() {
                    key.clear();
                    if taken & (1 << j) != 0 && write_key(earlier, key) {
                        earlier.release(key);
                    }
                }
                return Err((limit, over));
            }
            Ok(nearest)
        })
    }
}

/// The enforced limit an admitted request left nearest to refusing, with
/// what is left of it and how long until its key is at rest (ns).
type Nearest<'l> = Option<(&'l Limit, u64, u64)>;

/// The `RateLimit-Policy` and `RateLimit` fields of an admitted request's
/// answer, when its filter gives them (in the request's extensions until
/// the answer is made).
#[derive(Clone)]
pub struct RateLimitFields {
    /// `RateLimit-Policy`.
    pub policy: HeaderValue,
    /// `RateLimit`.
    pub state: HeaderValue,
}

thread_local! {
    /// The key being judged: written anew for each limit, never freed.
    static KEY: std::cell::RefCell<String> = std::cell::RefCell::new(String::with_capacity(128));
}

/// Whole seconds of `ns`, rounded up.
fn seconds(ns: u64) -> u64 {
    ns.div_ceil(1_000_000_000)
}

impl Limit {
    /// Limit `config` of filter `filter` of route `route`, keeping at most
    /// `max_keys` keys: with the state of the limit the config had before
    /// when that one was the same (a config change elsewhere gives no
    /// client a fresh burst).
    fn new(
        config: &LimitConfig,
        max_keys: u64,
        (route, filter): (usize, &str),
        reporting: &Reporting,
    ) -> Self {
        let metrics = &reporting.metrics;
        // At most a day (the longest period, at a rate of one), at least 1 ns.
        let emission_ns = (config.period_ms.saturating_mul(1_000_000) / config.rate.max(1)).max(1);
        let tolerance_ns = emission_ns.saturating_mul(config.burst());
        let cost_ns = emission_ns.saturating_mul(config.cost);
        let counter =
            |decision| metrics.rate_limit_decisions(route, filter, &config.name, decision);
        let identity = format!(
            "{route}\u{1f}{filter}\u{1f}{}\u{1f}{:?}\u{1f}{:?}\u{1f}{emission_ns}\u{1f}{tolerance_ns}\u{1f}{cost_ns}\u{1f}{max_keys}",
            config.name, config.key, config.tools
        );
        let tats = reporting.limit_states.get_or_make(identity, || {
            Tats::new(
                max_keys,
                metrics.rate_limit_evictions(route, filter, &config.name),
            )
        });
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
            cost_ns,
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

    /// Writes the key of a request to `key` ([`write_key`]).
    fn write_key(
        &self,
        parts: &http::request::Parts,
        facts: &RequestFacts<'_>,
        principal: Option<&Principal>,
        key: &mut String,
    ) {
        write_key(&self.key, parts, facts, principal, key);
    }

    /// `nearest`, or this limit when it admitted a request leaving its TAT
    /// `ahead` ns ahead of now with less left (shadow limits never).
    fn nearer<'l>(&'l self, nearest: Nearest<'l>, ahead: u64) -> Nearest<'l> {
        let left = self.tolerance_ns.saturating_sub(ahead) / self.emission_ns;
        match nearest {
            Some((_, fewer, _)) if fewer <= left => nearest,
            _ if self.shadow => nearest,
            _ => Some((self, left, ahead)),
        }
    }

    /// Counts a request of `key` at `now` when the limit admits it: how
    /// far its TAT is then ahead of now, ns.
    ///
    /// # Errors
    /// When it is over the limit: when it would be admitted.
    fn acquire(&self, key: &str, now: u64) -> Result<u64, Over> {
        self.tats.with(
            key,
            |tat| tat.load(Ordering::Relaxed) <= now,
            |tat| {
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
                    match tat.compare_exchange_weak(seen, next, Ordering::AcqRel, Ordering::Acquire)
                    {
                        Ok(_) => return Ok(ahead),
                        Err(current) => seen = current,
                    }
                }
            },
        )
    }

    /// Gives back what a request of `key` took.
    fn release(&self, key: &str) {
        self.tats.get(key, |tat| {
            let _ = tat.fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                Some(t.saturating_sub(self.cost_ns))
            });
        });
    }
}

/// Writes the key of a request to `key`: the values of the parts of
/// `spec`, separated by a byte no header value holds (a tool call's tool
/// is added by the call).
fn write_key(
    spec: &[KeyPart],
    parts: &http::request::Parts,
    facts: &RequestFacts<'_>,
    principal: Option<&Principal>,
    key: &mut String,
) {
    use std::fmt::Write as _;
    for (i, part) in spec.iter().enumerate() {
        if i > 0 {
            key.push('\u{1f}');
        }
        match part {
            KeyPart::ClientIp => {
                let _ = write!(key, "{}", facts.peer.ip());
            }
            KeyPart::Principal => key.push_str(principal.map_or("", |p| p.id.as_str())),
            KeyPart::Header(name) => {
                if let Some(value) = parts.headers.get(name) {
                    key.push_str(&String::from_utf8_lossy(value.as_bytes()));
                }
            }
            KeyPart::Claim(name) => key.push_str(
                principal
                    .and_then(|p| p.metadata.get(name))
                    .map_or("", String::as_str),
            ),
            KeyPart::Route => {
                let _ = write!(key, "{}", facts.route);
            }
            // Added by each call.
            KeyPart::McpTool => {}
        }
    }
}

/// A limit of requests in flight per key.
struct Concurrency {
    name: String,
    key: Vec<KeyPart>,
    max: u64,
    /// Requests in flight per key; a request holds its key's count.
    counts: Keyed<Arc<AtomicU64>>,
    allowed: Counter,
    limited: Counter,
}

/// The counts of concurrency limits a request holds until its answer's
/// body is sent (in the request's extensions until then); each count goes
/// down when the last copy is dropped.
#[derive(Clone, Default)]
pub struct ConcurrencySlots(Vec<Arc<Slot>>);

/// One count held.
struct Slot(Arc<AtomicU64>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl ConcurrencySlots {
    /// Holds `other`'s counts too.
    pub fn join(&mut self, mut other: ConcurrencySlots) {
        self.0.append(&mut other.0);
    }
}

/// The GCRA of every request limit of a filter in one Lua script on
/// Redis's own clock (`TIME`), so that no replica's clock matters: per
/// limit a key holding its TAT in microseconds, checked all first and
/// taken only when every enforced limit admits the request. ARGV holds,
/// per limit, its tolerance (`burst·T`) and cost (`cost·T`) in
/// microseconds, the cost negative for a shadow limit. Returns the
/// 1-based index of the limit the request is over (0: admitted), then per
/// limit the time until the request would fit (0: it fits), then the time
/// until its key is at rest, microseconds.
const GCRA_SCRIPT: &str = r"
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local n = #KEYS
local refused = 0
local tats, retry, reset = {}, {}, {}
for i = 1, n do
  local tolerance = tonumber(ARGV[2 * i - 1])
  local cost = tonumber(ARGV[2 * i])
  local shadow = cost < 0
  if shadow then cost = -cost end
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  reset[i] = math.max(tat - now, 0)
  if tat < now then tat = now end
  local ahead = tat + cost - now
  if ahead > tolerance then
    retry[i] = ahead - tolerance
    tats[i] = false
    if not shadow and refused == 0 then refused = i end
  else
    retry[i] = 0
    tats[i] = tat + cost
  end
end
if refused == 0 then
  for i = 1, n do
    if tats[i] then
      redis.call('SET', KEYS[i], tats[i], 'PX', math.floor((tats[i] - now) / 1000) + 1)
    end
  end
end
local out = { refused }
for i = 1, n do out[#out + 1] = retry[i] end
for i = 1, n do out[#out + 1] = reset[i] end
return out
";

/// How long a filter whose Redis failed enforces its limits locally
/// before it asks Redis again, ns.
const LOCAL_FOR_NS: u64 = 1_000_000_000;

/// A filter's request limits shared through Redis, and each replica's
/// share of them, enforced while Redis does not answer.
struct Global {
    client: redis::Client,
    /// The connection, made when first needed and again after a failure.
    connection: arc_swap::ArcSwapOption<redis::aio::MultiplexedConnection>,
    script: redis::Script,
    timeout: Duration,
    /// The prefix of its keys: `switchyard:rl:ROUTE:FILTER:`.
    prefix: String,
    /// Each request limit at `rate / replicas` and `burst / replicas`.
    shares: Vec<Limit>,
    /// Until when (ns since [`EPOCH`]) Redis is not asked; 0 while it
    /// answers.
    local_until: AtomicU64,
    /// 1 while the limits are global, 0 while they are local.
    mode: prometheus_client::metrics::gauge::Gauge,
    events: Arc<EventBus>,
    /// `route N`, and the filter's name, for events and logs.
    subject: (String, String),
}

impl Global {
    fn new(
        redis: &RedisLimitConfig,
        config: &RateLimitConfig,
        (route, name): (usize, &str),
        reporting: &Reporting,
    ) -> Result<Self, String> {
        let mut info = redis::IntoConnectionInfo::into_connection_info(redis.url.as_str())
            .map_err(|e| e.to_string())?;
        if let Some(variable) = &redis.password_env {
            match std::env::var(variable) {
                Ok(password) => info.redis.password = Some(password),
                Err(_) => {
                    tracing::error!(filter = %name, %variable, "the rate limits' Redis password is not set: Redis will refuse, and each replica enforces its share")
                }
            }
        }
        let client = redis::Client::open(info).map_err(|e| e.to_string())?;
        let shares = config
            .limits
            .iter()
            .filter(|limit| !limit.per_tool_call())
            .map(|limit| {
                let share = LimitConfig {
                    period_ms: limit.period_ms.saturating_mul(redis.replicas),
                    burst: Some((limit.burst() / redis.replicas).max(limit.cost)),
                    ..limit.clone()
                };
                Limit::new(&share, config.max_keys, (route, name), reporting)
            })
            .collect();
        let mode = reporting.metrics.rate_limit_global(route, name);
        mode.set(1);
        Ok(Self {
            client,
            connection: arc_swap::ArcSwapOption::empty(),
            script: redis::Script::new(GCRA_SCRIPT),
            timeout: Duration::from_millis(redis.timeout_ms),
            prefix: format!("switchyard:rl:{route}:{name}:"),
            shares,
            local_until: AtomicU64::new(0),
            mode,
            events: Arc::clone(&reporting.events),
            subject: (format!("route {route}"), name.to_owned()),
        })
    }

    /// Decides a request by Redis: `None` when Redis is not asked (it
    /// failed less than a second ago) or does not answer in time, and the
    /// shares decide.
    async fn decide<'l>(
        &self,
        limits: &'l RateLimits,
        write: impl Fn(&Limit, &mut String) -> bool,
    ) -> Option<Result<Nearest<'l>, (&'l Limit, Over)>> {
        let now = now_ns();
        if !self.asks_redis(now) {
            return None;
        }
        let keys: Vec<String> = limits
            .requests
            .iter()
            .map(|limit| {
                let mut key = format!("{}{}\u{1e}", self.prefix, limit.name);
                write(limit, &mut key);
                key
            })
            .collect();
        let answer =
            match tokio::time::timeout(self.timeout, self.eval(&limits.requests, &keys)).await {
                Ok(Ok(answer)) if answer.len() == 1 + 2 * keys.len() => answer,
                Ok(Ok(answer)) => {
                    self.failed(now, &format!("the script answered {answer:?}"));
                    return None;
                }
                Ok(Err(error)) => {
                    self.failed(now, &error.to_string());
                    return None;
                }
                Err(_) => {
                    self.failed(
                        now,
                        &format!("no answer within {} ms", self.timeout.as_millis()),
                    );
                    return None;
                }
            };
        self.answered();
        let n = keys.len();
        let refused = usize::try_from(answer[0]).unwrap_or(0);
        let micros = |v: i64| u64::try_from(v).unwrap_or(0).saturating_mul(1000);
        for (i, limit) in limits.requests.iter().enumerate() {
            let fits = answer[1 + i] == 0;
            let counter = match (fits, limit.shadow) {
                (true, _) => &limit.allowed,
                (false, true) => &limit.shadow_limited,
                (false, false) => &limit.limited,
            };
            counter.inc();
            if i + 1 == refused {
                break;
            }
        }
        Some(match refused {
            0 => Ok(limits
                .requests
                .iter()
                .enumerate()
                .fold(None, |nearest, (i, limit)| {
                    // What a limit it fitted left: its TAT before, plus the cost.
                    let ahead = micros(answer[n + 1 + i]).saturating_add(limit.cost_ns);
                    if answer[1 + i] == 0 {
                        limit.nearer(nearest, ahead)
                    } else {
                        nearest
                    }
                })),
            r => Err((
                &limits.requests[r.min(n) - 1],
                Over {
                    retry_after_ns: micros(answer[r.min(n)]),
                    reset_ns: micros(answer[n + r.min(n)]),
                },
            )),
        })
    }

    /// Runs the script with `keys`, one per limit of `limits`.
    async fn eval(&self, limits: &[Limit], keys: &[String]) -> redis::RedisResult<Vec<i64>> {
        let mut connection = match self.connection.load_full() {
            Some(connection) => (*connection).clone(),
            None => {
                let connection = self.client.get_multiplexed_async_connection().await?;
                self.connection.store(Some(Arc::new(connection.clone())));
                connection
            }
        };
        let mut invocation = self.script.prepare_invoke();
        for (limit, key) in limits.iter().zip(keys) {
            let cost = i64::try_from(limit.cost_ns / 1000).unwrap_or(i64::MAX);
            invocation
                .key(key)
                .arg(limit.tolerance_ns / 1000)
                .arg(if limit.shadow { -cost } else { cost });
        }
        let answer = invocation.invoke_async(&mut connection).await;
        if answer.is_err() {
            // Connect again next time.
            self.connection.store(None);
        }
        answer
    }

    /// Whether to ask Redis: it answered last time, or it failed more
    /// than [`LOCAL_FOR_NS`] ago and this request is the one to try again.
    fn asks_redis(&self, now: u64) -> bool {
        let until = self.local_until.load(Ordering::Acquire);
        until == 0
            || (until <= now
                && self
                    .local_until
                    .compare_exchange(
                        until,
                        now + LOCAL_FOR_NS,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    )
                    .is_ok())
    }

    /// Redis answered: the limits are global (again).
    fn answered(&self) {
        if self.local_until.swap(0, Ordering::AcqRel) != 0 {
            self.mode.set(1);
            let (route, filter) = &self.subject;
            tracing::info!(%route, %filter, "the rate limits' Redis answers again: the limits are global");
            self.events.publish(HealthEvent::new(
                route,
                Some(filter),
                EventKind::RateLimitGlobal,
                Severity::Info,
                format!("filter {filter}: Redis answers again; its limits are global"),
            ));
        }
    }

    /// Redis failed at `now`: the limits are local for a while.
    fn failed(&self, now: u64, reason: &str) {
        if self.local_until.swap(now + LOCAL_FOR_NS, Ordering::AcqRel) == 0 {
            self.mode.set(0);
            let (route, filter) = &self.subject;
            tracing::warn!(%route, %filter, %reason, "the rate limits' Redis failed: each replica enforces its share locally");
            self.events.publish(HealthEvent::new(
                route,
                Some(filter),
                EventKind::RateLimitLocal,
                Severity::Warning,
                format!("filter {filter}: Redis failed ({reason}); each replica enforces its share of the limits"),
            ));
        }
    }
}

/// The state of every limit the routers of a process built, by the
/// limit's identity (route, filter, name, key, tools, rate, burst, cost,
/// bound): a router built for a new config takes the state of each limit
/// that did not change, so that its clients keep their budgets. Held
/// weakly: a limit no router has is forgotten.
#[derive(Default)]
pub struct LimitStates(Mutex<HashMap<String, Weak<Tats>>>);

impl LimitStates {
    /// The state of the limit `identity`, made by `make` when no router
    /// has it.
    fn get_or_make(&self, identity: String, make: impl FnOnce() -> Tats) -> Arc<Tats> {
        let mut states = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        states.retain(|_, state| state.strong_count() > 0);
        if let Some(state) = states.get(&identity).and_then(Weak::upgrade) {
            return state;
        }
        let state = Arc::new(make());
        states.insert(identity, Arc::downgrade(&state));
        state
    }
}

/// One shard of a [`Keyed`] map.
type Shard<V> = HashMap<Box<str>, V>;

/// A limit's state by key, at most `max_keys` keys: a map in shards (each
/// under its own lock, held for a lookup and an atomic update, never
/// across an await). A full shard first forgets its keys at rest (nothing
/// changes for them), then, when every key is busy, an eighth of them
/// (counted: a rate limit's clients get a fresh burst).
struct Keyed<V> {
    hasher: std::hash::RandomState,
    shards: Box<[RwLock<Shard<V>>]>,
    per_shard: usize,
    evicted: Counter,
}

/// A rate limit's TATs.
type Tats = Keyed<AtomicU64>;

impl<V: Default> Keyed<V> {
    fn new(max_keys: u64, evicted: Counter) -> Self {
        let max_keys = usize::try_from(max_keys).unwrap_or(usize::MAX).max(1);
        let shards = max_keys.min(16);
        Self {
            hasher: std::hash::RandomState::new(),
            shards: (0..shards).map(|_| RwLock::default()).collect(),
            per_shard: max_keys / shards,
            evicted,
        }
    }

    fn shard(&self, key: &str) -> &RwLock<Shard<V>> {
        let hash = self.hasher.hash_one(key);
        &self.shards[(hash % self.shards.len() as u64) as usize]
    }

    /// Runs `f` on the state of `key`, when it has one.
    fn get(&self, key: &str, f: impl FnOnce(&V)) {
        if let Some(state) = self
            .shard(key)
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
        {
            f(state);
        }
    }

    /// Runs `f` on the state of `key`, made at rest when it has none;
    /// `at_rest` tells the states a full shard may forget freely.
    fn with<R>(&self, key: &str, at_rest: impl Fn(&V) -> bool, f: impl FnOnce(&V) -> R) -> R {
        let shard = self.shard(key);
        if let Some(state) = shard
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
        {
            return f(state);
        }
        let mut map = shard.write().unwrap_or_else(PoisonError::into_inner);
        if !map.contains_key(key) && map.len() >= self.per_shard {
            map.retain(|_, state| !at_rest(state));
            if map.len() >= self.per_shard {
                let busy: Vec<Box<str>> = map
                    .keys()
                    .take((self.per_shard / 8).max(1))
                    .cloned()
                    .collect();
                for key in &busy {
                    map.remove(key);
                }
                self.evicted.inc_by(busy.len() as u64);
            }
        }
        f(map.entry(key.into()).or_default())
    }

    /// How many keys it holds.
    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }
}
