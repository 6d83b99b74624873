//! A `rate-limit` filter: named limits, each a rate and a burst per key.
//!
//! ```toml
//! [filters.per-client]
//! kind = "rate-limit"
//! limits = [
//!   # 10 requests a second per client address, 20 at once.
//!   { name = "per-ip", key = ["client_ip"], rate = 10, burst = 20 },
//!   # On an MCP route: 100 `search__answer` calls an hour per principal.
//!   { name = "answers", key = ["principal"], tools = ["search__answer"], rate = 100, period_ms = 3600000 },
//!   # 1,000 an hour per principal and tenant header; counted, not enforced.
//!   { name = "hourly", key = ["principal", "header:x-tenant"], rate = 1000, period_ms = 3600000, shadow = true },
//! ]
//! ```

use serde::{Deserialize, Serialize};

use super::types::Invalid;

/// A `rate-limit` filter: every limit of `limits` must let a request
/// pass. The algorithm is GCRA (the generic cell rate algorithm of ATM
/// networks, as in Brandur Leach's `throttled` and Redis's `redis-cell`):
/// per key, the theoretical arrival time of the next request, so that a
/// limit of `rate` per `period_ms` admits `burst` requests at once and
/// then one every `period_ms / rate`, with no window edge at which twice
/// the rate gets through (a fixed window's flaw).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// The limits of rates; with `concurrency`, 1..=64 in all. A request
    /// passes when all allow it, and counts against each only when all do.
    #[serde(default)]
    pub limits: Vec<LimitConfig>,
    /// The limits of requests in flight per key (nginx's `limit_conn`,
    /// Traefik's InFlightReq): a request counts from when it passes the
    /// filter until its answer's body is sent. One over gets 429 with
    /// `Retry-After: 1`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub concurrency: Vec<ConcurrencyConfig>,
    /// The most keys each limit keeps state for (1..=100000000). At it,
    /// keys idle long enough to be back at a full burst are forgotten
    /// first (which changes nothing for them), then, when every key is
    /// busy, some busy ones (counted in
    /// `switchyard_rate_limit_keys_evicted_total`: their next request
    /// starts with a full burst). Default 100000.
    #[serde(default = "default_max_keys")]
    pub max_keys: u64,
    /// Whether admitted answers carry the `RateLimit-Policy` and
    /// `RateLimit` fields too (the limit nearest to refusing: what is left
    /// and when the key is at rest), as refusals always do. Default
    /// `false`: the fields cost a few dozen bytes and their formatting on
    /// every answer (Envoy's `enable_x_ratelimit_headers` is opt-in too).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub headers: bool,
    /// A Redis server that makes the limits counting HTTP requests global:
    /// every replica naming it shares one budget per key. Default none:
    /// each process has its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisLimitConfig>,
}

fn default_max_keys() -> u64 {
    100_000
}

/// Where a `rate-limit` filter's limits are shared between replicas: a
/// Redis server that runs GCRA in a Lua script on its own clock, one round
/// trip deciding a request against every limit (Envoy's global rate limit
/// and Limitador keep their counters in Redis the same way). When Redis
/// does not answer within `timeout_ms`, or fails, each replica enforces
/// the limits locally at `rate / replicas` and `burst / replicas` (never
/// none, never a 5xx), and tries Redis again after a second.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RedisLimitConfig {
    /// `redis://[USER:PASSWORD@]HOST:PORT[/DB]`. (TLS, `rediss://`, is
    /// not supported yet.)
    pub url: String,
    /// The environment variable holding the password Redis asks for
    /// (`AUTH`), so that it is neither in the config the admin API shows
    /// nor in the store replicas share; it takes the place of a password
    /// in `url`. Read when the filter is built: unset, Redis refuses the
    /// script and each replica enforces its share. Default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// How long a decision waits for Redis, milliseconds (1..=10000).
    /// Default 50.
    #[serde(default = "default_redis_timeout_ms")]
    pub timeout_ms: u64,
    /// How many replicas share the limits (1..=10000): while Redis cannot
    /// be reached, each enforces this share of every limit.
    pub replicas: u64,
}

fn default_redis_timeout_ms() -> u64 {
    50
}

impl RedisLimitConfig {
    fn validate(&self) -> Result<(), Invalid> {
        let uri: http::Uri = self
            .url
            .parse()
            .map_err(|e| ("redis.url".to_string(), format!("`{}`: {e}", self.url)))?;
        match uri.scheme_str() {
            Some("redis") if uri.authority().is_some_and(|a| !a.host().is_empty()) => {}
            Some("rediss") => {
                return Err((
                    "redis.url".into(),
                    "TLS to Redis (`rediss://`) is not supported yet".into(),
                ));
            }
            _ => {
                return Err((
                    "redis.url".into(),
                    format!("`{}` is not redis://HOST:PORT", self.url),
                ));
            }
        }
        if self.password_env.as_deref() == Some("") {
            return Err(("redis.password_env".into(), "must not be empty".into()));
        }
        if !(1..=10_000).contains(&self.timeout_ms) {
            return Err(("redis.timeout_ms".into(), "must be within 1..=10000".into()));
        }
        if !(1..=10_000).contains(&self.replicas) {
            return Err(("redis.replicas".into(), "must be within 1..=10000".into()));
        }
        Ok(())
    }
}

/// One limit of a `rate-limit` filter.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitConfig {
    /// Its name, unique in the filter: the policy's name in the
    /// `RateLimit-Policy` and `RateLimit` response headers, and the
    /// `limit` label of its metrics.
    pub name: String,
    /// What requests share a budget: the values of these parts, in
    /// order: `client_ip`, `principal` (the id an authentication filter
    /// before it found), `header:NAME` (a request header's value),
    /// `claim:NAME` (the principal's metadata: an API key principal's, a
    /// JWT's claim), `route`, and on MCP routes `mcp_tool` (the tool a
    /// `tools/call` names, as clients see it). A part the request lacks
    /// counts as empty (every request without a principal shares one
    /// budget). Default `["client_ip"]`.
    #[serde(default = "default_key")]
    pub key: Vec<String>,
    /// On MCP routes, the tools (as clients see them) whose calls this
    /// limit counts, each `tools/call` judged on its own: a quota ("100
    /// `search__answer` calls an hour per principal"). A limit that lists
    /// tools or has `mcp_tool` in its key counts tool calls only (none on
    /// other routes); the others count HTTP requests. Default none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<String>,
    /// Requests (cost units) per `period_ms` (1..=1000000000).
    pub rate: u64,
    /// The period of `rate`, milliseconds (1..=86400000). Default 1000.
    #[serde(default = "default_period_ms")]
    pub period_ms: u64,
    /// Requests (cost units) admitted at once from a key at rest
    /// (`cost`..=1000000000). Default `rate`.
    #[serde(default)]
    pub burst: Option<u64>,
    /// What one request costs (1..=`burst`). Default 1.
    #[serde(default = "default_cost")]
    pub cost: u64,
    /// Count and log what the limit would refuse, but let it pass
    /// (Envoy's `shadow_mode`): a new limit tried on real traffic.
    /// Default `false`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shadow: bool,
}

/// A limit of requests in flight of a `rate-limit` filter.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConcurrencyConfig {
    /// Its name, unique in the filter (among `limits` too).
    pub name: String,
    /// What requests share it, as a limit's `key` (no `mcp_tool`).
    /// Default `["client_ip"]`.
    #[serde(default = "default_key")]
    pub key: Vec<String>,
    /// Requests of a key in flight at once (1..=1000000000).
    pub max: u64,
}

fn default_key() -> Vec<String> {
    vec!["client_ip".into()]
}

fn default_period_ms() -> u64 {
    1000
}

fn default_cost() -> u64 {
    1
}

/// One part of a limit's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPart {
    /// The client's IP address.
    ClientIp,
    /// The principal's id.
    Principal,
    /// A request header's value.
    Header(http::HeaderName),
    /// A value of the principal's metadata.
    Claim(String),
    /// The route.
    Route,
    /// The tool an MCP `tools/call` names.
    McpTool,
}

impl KeyPart {
    /// The part `text` names.
    ///
    /// # Errors
    /// Why it names none.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.split_once(':') {
            None if text == "client_ip" => Ok(Self::ClientIp),
            None if text == "principal" => Ok(Self::Principal),
            None if text == "route" => Ok(Self::Route),
            None if text == "mcp_tool" => Ok(Self::McpTool),
            Some(("header", name)) => http::HeaderName::try_from(name.to_ascii_lowercase())
                .map(Self::Header)
                .map_err(|_| format!("`{name}` is not a header name")),
            Some(("claim", name)) if !name.is_empty() => Ok(Self::Claim(name.to_owned())),
            _ => Err(format!(
                "`{text}` is not a key part: `client_ip`, `principal`, `header:NAME`, `claim:NAME`, `route` or `mcp_tool`"
            )),
        }
    }
}

impl LimitConfig {
    /// Its burst: `burst`, else `rate`.
    pub fn burst(&self) -> u64 {
        self.burst.unwrap_or(self.rate)
    }

    /// Whether it counts MCP tool calls rather than HTTP requests: it
    /// lists `tools` or keys by `mcp_tool`.
    pub fn per_tool_call(&self) -> bool {
        !self.tools.is_empty() || self.key.iter().any(|k| k == "mcp_tool")
    }
}

impl RateLimitConfig {
    pub(crate) fn validate(&self) -> Result<(), Invalid> {
        if !(1..=64).contains(&(self.limits.len() + self.concurrency.len())) {
            return Err((
                "limits".into(),
                "give at least one limit (`limits`, `concurrency`), at most 64".into(),
            ));
        }
        if !(1..=100_000_000).contains(&self.max_keys) {
            return Err(("max_keys".into(), "must be within 1..=100000000".into()));
        }
        if let Some(redis) = &self.redis {
            redis.validate()?;
        }
        let mut names = std::collections::HashSet::new();
        for (i, limit) in self.limits.iter().enumerate() {
            let key = |k: &str| format!("limits[{i}].{k}");
            if limit.name.is_empty() || !names.insert(limit.name.as_str()) {
                return Err((
                    key("name"),
                    format!("`{}` is empty or not unique", limit.name),
                ));
            }
            // A policy name in a structured header field is a quoted string.
            if !limit
                .name
                .chars()
                .all(|c| c.is_ascii_graphic() && c != '"' && c != '\\')
            {
                return Err((
                    key("name"),
                    format!(
                        "`{}`: printable ASCII without quotes or backslashes",
                        limit.name
                    ),
                ));
            }
            if limit.key.is_empty() {
                return Err((key("key"), "give at least one part".into()));
            }
            if let Some(j) = limit.tools.iter().position(String::is_empty) {
                return Err((
                    format!("limits[{i}].tools[{j}]"),
                    "must not be empty".into(),
                ));
            }
            for (j, part) in limit.key.iter().enumerate() {
                KeyPart::parse(part).map_err(|reason| (format!("limits[{i}].key[{j}]"), reason))?;
            }
            let within = |name: &str, value: u64, range: std::ops::RangeInclusive<u64>| {
                if range.contains(&value) {
                    Ok(())
                } else {
                    Err((
                        key(name),
                        format!("{value} is not within {}..={}", range.start(), range.end()),
                    ))
                }
            };
            within("rate", limit.rate, 1..=1_000_000_000)?;
            within("period_ms", limit.period_ms, 1..=86_400_000)?;
            within("cost", limit.cost, 1..=1_000_000_000)?;
            within("burst", limit.burst(), limit.cost..=1_000_000_000)?;
        }
        for (i, limit) in self.concurrency.iter().enumerate() {
            let key = |k: &str| format!("concurrency[{i}].{k}");
            if limit.name.is_empty() || !names.insert(limit.name.as_str()) {
                return Err((
                    key("name"),
                    format!("`{}` is empty or not unique", limit.name),
                ));
            }
            if limit.key.is_empty() {
                return Err((key("key"), "give at least one part".into()));
            }
            for (j, part) in limit.key.iter().enumerate() {
                match KeyPart::parse(part) {
                    Ok(KeyPart::McpTool) => {
                        Err("`mcp_tool` does not key requests in flight".into())
                    }
                    Ok(_) => Ok(()),
                    Err(reason) => Err(reason),
                }
                .map_err(|reason| (format!("concurrency[{i}].key[{j}]"), reason))?;
            }
            if !(1..=1_000_000_000).contains(&limit.max) {
                return Err((
                    key("max"),
                    format!("{} is not within 1..=1000000000", limit.max),
                ));
            }
        }
        Ok(())
    }
}
