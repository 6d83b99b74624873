//! The serde types of the config file, and their validation.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use super::discovery::{DiscoveryConfig, DnsDiscovery, DnsRecordType, EtcdDiscovery};
pub use super::failover::{
    BreakerConfig, BulkheadConfig, FailoverConfig, FailoverFallback, FailoverPluginConfig,
    FallbackConfig, RetryConfig, RetryOn, StaleConfig,
};
pub use super::filter::{
    ApiKeyConfig, ApiKeyPrincipal, AuthMode, AuthorizeConfig, BodyLimitConfig, ClientCertConfig,
    CompressConfig, CorsConfig, DecompressConfig, FilterConfig, FilterFailureMode,
    ForwardAuthConfig, ForwardedConfig, HeaderLimitConfig, HeaderRules, HostRewriteConfig,
    IpFilterConfig, JwtConfig, JwtProvider, PluginFilterConfig, PrefixConfig, RedirectConfig,
    RegexRewriteConfig, RequestIdConfig, RespondConfig, TemplatePart, Variable, compile_rule,
    origin_matches, parse_cidr, parse_jwks, parse_key_digest, parse_template,
};
pub use super::fusion::{
    Compare, CompareKeys, ConflictRule, FanOutConfig, FusionCacheConfig, MedianConfig, MergeConfig,
    MostRecentConfig, QuorumConfig, ResolverConfig, ResolverPluginConfig, SourceConfig,
    WeightedVoteConfig,
};
pub use super::health::{CheckKind, HealthCheckConfig, HealthFallback, OutlierConfig, TrendConfig};
pub use super::mcp::{
    FailureMode, McpConfig, McpSessionsConfig, McpTargetConfig, McpTargetTable, PrefixMode,
    ToolConfig, ToolFusion,
};
pub use super::plugin::{Capability, Deprecated, PluginRef, QuarantineConfig};
pub use super::process::{ProcessConfig, ProcessTransport, StdioSessions};
pub use super::rate_limit::{
    ConcurrencyConfig, KeyPart, LimitConfig, RateLimitConfig, RedisLimitConfig,
};
pub use super::store::{EtcdStoreConfig, StoreConfig};
pub use super::strategy::{
    ConsistentHashConfig, DEFAULT_MAX_CANDIDATES, FastestResponseConfig, HashAlgorithm, HashKey,
    LeastConnectionsConfig, NoKeys, PluginStrategyConfig, ResourceAwareConfig, StrategyConfig,
};
pub use crate::tls::{CertificateFiles, ClientAuth, ListenerTlsConfig, UpstreamTlsConfig};

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Data-plane listeners; at least one.
    pub listeners: Vec<ListenerConfig>,
    /// Routes, matched in order: the first that matches a request wins.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// Pools by name.
    #[serde(default)]
    pub pools: BTreeMap<String, PoolConfig>,
    /// Filters by name, for routes to list in their `filters`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub filters: BTreeMap<String, FilterConfig>,
    /// How long shutdown waits for in-flight requests before closing, ms. Default 30000.
    #[serde(default = "defaults::shutdown_grace_ms")]
    pub shutdown_grace_ms: u64,
    /// Alert cooldown, ms: an event repeating the last one published for the
    /// same instance (same kind) within this long is not published again,
    /// and an instance whose health state changes
    /// `switchyard::events::FLAP_TRANSITIONS` times within it
    /// is flapping: one `flapping` event, then its state once it has kept
    /// it this long (see `switchyard::events::EventBus`). 0: every
    /// event published. Default 30000.
    #[serde(default = "defaults::event_cooldown_ms")]
    pub event_cooldown_ms: u64,
    /// The admin API (REST, metrics, events, dashboard). Default: off.
    #[serde(default)]
    pub admin: Option<AdminConfig>,
    /// The on-disk cache of compiled plugins. Default: on, in the user's
    /// cache directory.
    #[serde(default)]
    pub plugin_cache: PluginCacheConfig,
    /// Meter fuel in every plugin call, so that plugins may set
    /// `fuel_per_call` (a deterministic CPU budget). Costs 12–25% per call.
    /// Read at start. Default false.
    #[serde(default)]
    pub plugin_fuel: bool,
    /// The async runtime (read from the file at start).
    #[serde(default)]
    pub runtime: RuntimeConfig,
    /// The keys that seal the session ids of `mcp` routes (read at start).
    #[serde(default)]
    pub mcp_sessions: McpSessionsConfig,
    /// Where the configuration the admin API changes is kept: this
    /// machine's state file, or etcd for several replicas (read at start).
    #[serde(default)]
    pub store: StoreConfig,
}

/// The async runtime: how many worker threads serve the listeners, as
/// nginx's `worker_processes`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Worker threads. Default: the cores the process may use (its CPU
    /// affinity, as `taskset` sets it); 1..=1024.
    pub worker_threads: Option<usize>,
}

/// The compiled-plugin cache: a component compiled once is kept on disk,
/// keyed by a SHA-256 of its bytes and of the engine's compiler settings
/// and version (wasmtime's cache), so a restart loads it in milliseconds
/// instead of compiling again (seconds for a large component). Only files
/// Switchyard compiled itself are loaded from it; the directory is created
/// `0700`, and must stay writable by Switchyard's user alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct PluginCacheConfig {
    /// Whether compiled plugins are cached. Default true.
    pub enabled: bool,
    /// Where; relative to the config file. Default
    /// `$XDG_CACHE_HOME/switchyard`, else `$HOME/.cache/switchyard`, else
    /// `switchyard` in the system temp directory.
    #[schema(value_type = Option<String>)]
    pub dir: Option<PathBuf>,
}

impl Default for PluginCacheConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            dir: None,
        }
    }
}

impl PluginCacheConfig {
    /// The directory in use when the cache is enabled.
    pub fn directory(&self) -> Option<PathBuf> {
        if !self.enabled {
            return None;
        }
        Some(self.dir.clone().unwrap_or_else(|| {
            let env = |name| std::env::var_os(name).filter(|v| !v.is_empty());
            env("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| env("HOME").map(|home| PathBuf::from(home).join(".cache")))
                .unwrap_or_else(std::env::temp_dir)
                .join("switchyard")
        }))
    }
}

/// The admin listener: a separate socket for operators, on loopback by default.
///
/// Changes made through it are validated, applied atomically and written to
/// `state_file` before they are acknowledged; at start, an existing state
/// file wins over the config file (it holds the last acknowledged config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// `ip:port` to bind. Default `127.0.0.1:9901`.
    #[serde(default = "defaults::admin_listen")]
    #[schema(value_type = String)]
    pub listen: SocketAddr,
    /// Environment variable holding the bearer token every request must
    /// carry (`Authorization: Bearer …`). Default: none.
    pub token_env: Option<String>,
    /// File holding the bearer token (trailing whitespace ignored). Default: none.
    #[schema(value_type = Option<String>)]
    pub token_file: Option<PathBuf>,
    /// Where acknowledged changes are persisted (JSON, written atomically);
    /// relative to the config file. Default `switchyard-state.json`.
    #[serde(default = "defaults::state_file")]
    #[schema(value_type = String)]
    pub state_file: PathBuf,
    /// Where plugins uploaded through the API are stored (`NAME.wasm`);
    /// relative to the config file. Default `switchyard-plugins`.
    #[serde(default = "defaults::plugins_dir")]
    #[schema(value_type = String)]
    pub plugins_dir: PathBuf,
    /// Requests kept in the recent-request log. Default 256.
    #[serde(default = "defaults::recent_requests")]
    pub recent_requests: usize,
    /// TLS on the admin listener, as on a proxy listener (`client_ca_file`
    /// makes it mTLS). Default: none.
    pub tls: Option<ListenerTlsConfig>,
    /// Serve the admin API on an address other than loopback with no
    /// authentication (neither a token nor required client certificates):
    /// anyone who reaches it may change routes and pools, drain instances
    /// and upload plugins. Without it such a config is refused (as Traefik
    /// refuses its API on a public entry point unless `api.insecure`); with
    /// it, a warning at start and in `/v1/status`. Default false.
    #[serde(default)]
    pub insecure: bool,
}

impl AdminConfig {
    /// Whether every admin request must authenticate: a bearer token is
    /// configured, or TLS requires client certificates.
    pub fn authenticates(&self) -> bool {
        self.token_env.is_some()
            || self.token_file.is_some()
            || self.tls.as_ref().is_some_and(|t| {
                t.client_ca_file.is_some() && t.client_auth == ClientAuth::Required
            })
    }

    /// Whether the admin API is open to anyone who can reach a non-loopback
    /// address (allowed only with `insecure = true`).
    pub fn is_exposed(&self) -> bool {
        !self.listen.ip().is_loopback() && !self.authenticates()
    }
}

/// One listening socket (plain HTTP/1.1 and HTTP/2 with prior knowledge,
/// or HTTPS with `tls`) and its bounds on clients, read at start. Defaults follow nginx
/// (`client_header_timeout`, `keepalive_timeout`, `client_body_timeout`);
/// the connection cap is also bounded by the process's file-descriptor
/// limit (raised to its hard limit at start).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// `ip:port` to bind, e.g. `0.0.0.0:8080`; port 0 picks a free port.
    #[schema(value_type = String)]
    pub listen: SocketAddr,
    /// Time allowed to a client to send a whole request head, ms; on
    /// HTTP/1.1 it also bounds the wait for the next request on a kept-alive
    /// connection (the head timer starts when hyper waits for a head).
    /// Default 30000; 1..=3600000.
    #[serde(default = "defaults::header_read_timeout_ms")]
    pub header_read_timeout_ms: u64,
    /// A connection with no request waiting for its answer and no byte
    /// either way for this long is closed, ms (nginx's `keepalive_timeout`
    /// between requests; a silent streamed answer is cut like nginx's
    /// `proxy_read_timeout`). Default 75000; 1..=3600000.
    #[serde(default = "defaults::client_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
    /// Longest wait for the next piece of a request body, ms; a stalled
    /// body is answered 408 and not booked on the instance. Default 60000;
    /// 1..=3600000.
    #[serde(default = "defaults::body_read_timeout_ms")]
    pub body_read_timeout_ms: u64,
    /// Client connections open at once; past it a new connection is
    /// accepted and closed at once. Default: as many as the open-file limit
    /// allows, (limit − 256) / 2 (each may hold an upstream connection too),
    /// at most 1000000; a configured value is capped the same way (with a
    /// warning). 1..=1000000.
    pub max_connections: Option<u32>,
    /// Client connections open at once from one IP address; 0 = no limit
    /// (the default: clients behind a NAT share an address).
    #[serde(default)]
    pub max_connections_per_ip: u32,
    /// Decode percent-encoded unreserved characters and remove dot
    /// segments of request paths before routing (RFC 3986 §6, §5.2.4;
    /// Envoy's `normalize_path`). Default true.
    #[serde(default = "defaults::yes")]
    pub normalize_path: bool,
    /// Merge runs of slashes in request paths (Envoy's `merge_slashes`).
    /// Default true.
    #[serde(default = "defaults::yes")]
    pub merge_slashes: bool,
    /// An escaped slash (`%2F`, `%5C`) in a path: `"reject"` (400, the
    /// default) or `"keep"` (Envoy's `path_with_escaped_slashes_action`).
    #[serde(default)]
    pub escaped_slashes: EscapedSlashes,
    /// TLS termination: with it the listener speaks HTTPS only (HTTP/1.1
    /// and HTTP/2 by ALPN). Default: none (plain HTTP/1.1 and h2c).
    pub tls: Option<ListenerTlsConfig>,
}

/// What a listener does with an escaped slash (`%2F`, `%2f`, `%5C`, `%5c`)
/// in a request path (Envoy's `path_with_escaped_slashes_action`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum EscapedSlashes {
    /// Answer 400 (the default: an upstream may decode it into a separator
    /// that routing did not see).
    #[default]
    Reject,
    /// Forward it unchanged, as a character of its segment.
    Keep,
}

impl ListenerConfig {
    /// Largest accepted `max_connections`.
    pub const MAX_CONNECTIONS: u32 = 1_000_000;

    /// A listener on `listen` with the default bounds.
    pub fn on(listen: SocketAddr) -> Self {
        Self {
            listen,
            header_read_timeout_ms: defaults::header_read_timeout_ms(),
            idle_timeout_ms: defaults::client_idle_timeout_ms(),
            body_read_timeout_ms: defaults::body_read_timeout_ms(),
            max_connections: None,
            max_connections_per_ip: 0,
            normalize_path: true,
            merge_slashes: true,
            escaped_slashes: EscapedSlashes::Reject,
            tls: None,
        }
    }

    fn validate(&self) -> Result<(), Invalid> {
        for (key, value) in [
            ("header_read_timeout_ms", self.header_read_timeout_ms),
            ("idle_timeout_ms", self.idle_timeout_ms),
            ("body_read_timeout_ms", self.body_read_timeout_ms),
        ] {
            in_range(key, value, 1, MAX_WAIT_MS)?;
        }
        let max = self.max_connections.unwrap_or(Self::MAX_CONNECTIONS);
        in_range(
            "max_connections",
            u64::from(max),
            1,
            u64::from(Self::MAX_CONNECTIONS),
        )?;
        in_range(
            "max_connections_per_ip",
            u64::from(self.max_connections_per_ip),
            0,
            u64::from(max),
        )
    }
}

/// The longest time any timeout or wait may be configured to, ms (one
/// hour): a request, a probe or a queue that waits longer is a
/// misconfiguration, refused naming its key.
pub const MAX_WAIT_MS: u64 = 3_600_000;

/// `value` of `key` within `min..=max`.
///
/// # Errors
/// The key and the range it must be in.
pub(super) fn in_range(key: &str, value: u64, min: u64, max: u64) -> Result<(), Invalid> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err((
            key.into(),
            format!("{value} is out of range: {min}..={max}"),
        ))
    }
}

/// A route: which requests go to which pool.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// What the request must look like; an empty match takes every request.
    #[serde(default, rename = "match")]
    pub matches: RouteMatch,
    /// Name of the pool that serves the route (exactly one of `pool`,
    /// `fan_out` and `mcp`).
    pub pool: Option<String>,
    /// Fan the request out to several sources and fuse their answers.
    #[serde(default)]
    pub fan_out: Option<FanOutConfig>,
    /// An MCP gateway over one or more pools of MCP servers.
    #[serde(default)]
    pub mcp: Option<McpConfig>,
    /// What to do when the pool cannot serve. Default: the error response.
    #[serde(default)]
    pub fallback: Option<FallbackConfig>,
    /// Serve the last good GET answer when every attempt fails. Default: off;
    /// `stale_if_error = {}` turns it on with defaults.
    #[serde(default)]
    pub stale_if_error: Option<StaleConfig>,
    /// Names of `[filters]` applied in this order to the route's requests
    /// (and, in the same order, to its responses). Default: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<String>,
}

/// Conditions of a route; all given conditions must hold.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteMatch {
    /// Host the client addressed (`Host` header or HTTP/2 `:authority`),
    /// compared case-insensitively and without the port.
    pub host: Option<String>,
    /// Plain string prefix of the path, as Envoy's `prefix` match: `/api`
    /// matches `/api`, `/api/v1` and `/apix`.
    pub path_prefix: Option<String>,
    /// A subject alternative name (DNS name, URI such as a SPIFFE id,
    /// e-mail or IP address) of the client certificate the listener
    /// verified (mTLS, `client_ca_file`), compared case-insensitively. A
    /// request without a verified certificate does not match.
    pub client_san: Option<String>,
}

/// A pool of upstream instances and how to choose among them.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    /// The balancing strategy. Default `round-robin`.
    #[serde(default)]
    pub strategy: StrategyConfig,
    /// The instances; at least one, unless `process` starts them (then
    /// they are its replicas, set by Switchyard).
    #[serde(default)]
    pub instances: Vec<InstanceConfig>,
    /// Processes Switchyard starts, supervises and restarts; each replica
    /// is an instance. Default: none (the instances run on their own).
    #[serde(default)]
    pub process: Option<ProcessConfig>,
    /// Instances discovered (from DNS) beside the static `instances`, kept
    /// up to date. Default: none.
    #[serde(default)]
    pub discovery: Option<DiscoveryConfig>,
    /// Pools whose processes must be ready before this pool's start (each
    /// with its `min_ready` fit instances); stopped after this one.
    /// Default: none.
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// Fit instances this pool needs to count as ready for the pools that
    /// depend on it. Default 1.
    #[serde(default = "defaults::min_ready")]
    pub min_ready: u32,
    /// TCP connect timeout per attempt, ms. Default 1000.
    #[serde(default = "defaults::connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// The request's deadline in this pool: from its arrival to its answer's
    /// headers, across every attempt, backoff and policy delay (as Envoy's
    /// route `timeout`; a retry that would wait past it is not made), ms.
    /// Default 30000; at most 3600000. Streaming the body afterwards is not
    /// limited. A switch to another pool (route fallback, failover policy)
    /// starts that pool's deadline.
    #[serde(default = "defaults::request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// After a connect failure, the instance is skipped for this long, ms, as
    /// nginx's `fail_timeout` with `max_fails=1`. Default 10000. When every
    /// instance is skipped, all are tried rather than none.
    #[serde(default = "defaults::fail_timeout_ms")]
    pub fail_timeout_ms: u64,
    /// Idle pooled upstream connections are closed after this long, ms (an
    /// HTTP/2 connection no request used for this long is let go, and
    /// closes when its streams end). Default 90000.
    #[serde(default = "defaults::idle_timeout_ms")]
    pub idle_timeout_ms: u64,
    /// Idle HTTP/1.1 connections kept per instance and worker thread, as
    /// nginx's `keepalive` (which counts per worker process): when one more
    /// would be kept, the one idle longest is closed; 0 keeps none (a new
    /// connection per request). Bounds the sockets a burst leaves open for
    /// `idle_timeout_ms`. Default 64, at most 65536.
    #[serde(default = "defaults::max_idle_connections")]
    pub max_idle_connections: u32,
    /// TLS to the pool's `https://` instances: CA bundle, SNI name, client
    /// certificate. Default: Mozilla's roots, each instance's host.
    pub tls: Option<UpstreamTlsConfig>,
    /// The HTTP version spoken to the instances: `"http1"` (the default;
    /// idle keep-alive connections reused), `"h2"` (HTTP/2: ALPN `h2` over
    /// TLS, prior knowledge over plain TCP; one connection per instance and
    /// worker, its streams multiplexed; gRPC needs it) or `"auto"` (over
    /// TLS, what ALPN settles; plain TCP, HTTP/1.1).
    #[serde(default)]
    pub protocol: UpstreamProtocol,
    /// Session affinity on top of the strategy. Default: none.
    #[serde(default)]
    pub sticky: Option<StickyConfig>,
    /// Active health checks. Default: none (instances are healthy until
    /// passive detection says otherwise).
    #[serde(default)]
    pub health: Option<HealthCheckConfig>,
    /// Passive outlier detection. Default: none.
    #[serde(default)]
    pub outlier: Option<OutlierConfig>,
    /// Predictive health (trends). Default: none; `trend = {}` turns it on with defaults.
    #[serde(default)]
    pub trend: Option<TrendConfig>,
    /// Retries. Default: one retry on connect failure, reset or timeout
    /// (see [`RetryConfig`]).
    #[serde(default)]
    pub retry: RetryConfig,
    /// A circuit breaker per instance. Default: none.
    #[serde(default)]
    pub breaker: Option<BreakerConfig>,
    /// Bounded concurrency for the pool. Default: none.
    #[serde(default)]
    pub bulkhead: Option<BulkheadConfig>,
    /// Who decides after a failed attempt: `{ kind = "retry" }` (the
    /// `retry` table; the default) or `{ kind = "plugin", plugin = { … } }`
    /// (see [`FailoverConfig`]). `failover_plugin = { path, … }` is its
    /// deprecated spelling.
    #[serde(default, alias = "failover_plugin")]
    pub failover: FailoverConfig,
    /// Below this share of fit instances, percent, the pool ignores health and
    /// routes over every instance rather than overload the few left (Envoy's
    /// panic threshold). Default 50; 0 = never.
    #[serde(default = "defaults::panic_threshold_percent")]
    pub panic_threshold_percent: u32,
}

/// Session affinity: requests of one session go to one instance while it is fit.
///
/// Exactly one of `cookie` and `header`:
/// - `cookie = "NAME"`: switchyard sets cookie NAME naming the instance (a hash
///   of its URL, as Traefik's sticky cookie), `Max-Age` = `ttl_ms`; stateless,
///   so it survives restarts and is shared by every replica.
/// - `header = "NAME"`: the session id is the request header NAME (e.g.
///   `mcp-session-id`), or, on a session's first response, the response header
///   NAME (an MCP server assigns the id in its `initialize` answer); the id is
///   bound to the instance in a table of at most `max_sessions` entries, each
///   dropped after `ttl_ms` without use.
///
/// When the bound instance is unreachable, unfit or gone, the strategy picks
/// another and the session is re-bound to it if that one answers
/// successfully (below 400; a 404 from it means the session is unknown
/// there, and the client sees it). A draining instance keeps its sessions
/// until `drain_timeout_ms` after the drain started, as Envoy's and
/// HAProxy's graceful drain do (`drain_sessions = "keep"`, the default), or
/// gives them up at once (`"move"`).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StickyConfig {
    /// Cookie that carries the affinity.
    pub cookie: Option<String>,
    /// Header that carries the session id.
    pub header: Option<String>,
    /// Lifetime of an affinity without use, ms. Default 3600000 (1 h).
    #[serde(default = "defaults::sticky_ttl_ms")]
    pub ttl_ms: u64,
    /// Header mode: most sessions remembered (least recently used go first). Default 100000.
    #[serde(default = "defaults::max_sessions")]
    pub max_sessions: u64,
    /// What a draining instance does with its sessions. Default `keep`.
    #[serde(default)]
    pub drain_sessions: DrainSessions,
    /// How long a draining instance keeps its sessions (`keep`), ms from
    /// the start of the drain. Default 600000 (10 min, Envoy's drain time).
    #[serde(default = "defaults::drain_timeout_ms")]
    pub drain_timeout_ms: u64,
}

/// What a draining instance does with its sticky sessions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum DrainSessions {
    /// Sessions bound to it keep going to it until `drain_timeout_ms`.
    #[default]
    Keep,
    /// Sessions move to another instance at once.
    Move,
}

/// The HTTP version a pool speaks to its instances.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum UpstreamProtocol {
    /// HTTP/1.1.
    #[default]
    Http1,
    /// HTTP/2 (ALPN `h2`, or prior knowledge without TLS).
    H2,
    /// HTTP/2 when ALPN settles on it, else HTTP/1.1 (plain TCP: HTTP/1.1).
    Auto,
}

/// One upstream instance.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InstanceConfig {
    /// `http://host[:port]` or `https://host[:port]` (port 80 or 443 when
    /// not given; no path). An `https` instance is reached over TLS (the
    /// pool's `tls`).
    pub url: String,
    /// Relative weight, >= 1. Default 1. Used by `least-connections` and plugins.
    #[serde(default = "defaults::weight")]
    pub weight: u32,
    /// Free-form labels, passed to plugins (e.g. `{ track = "canary" }`).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Start draining: the instance gets no new requests while requests
    /// already in flight complete; sessions bound to it stay for the
    /// pool's `sticky.drain_timeout_ms` (`drain_sessions = "keep"`, the
    /// default) or move at once (`"move"`). Default false.
    #[serde(default)]
    pub drain: bool,
}

mod defaults {
    pub fn min_ready() -> u32 {
        1
    }
    pub fn shutdown_grace_ms() -> u64 {
        30_000
    }
    pub fn header_read_timeout_ms() -> u64 {
        30_000
    }
    pub fn client_idle_timeout_ms() -> u64 {
        75_000
    }
    pub fn body_read_timeout_ms() -> u64 {
        60_000
    }
    pub fn yes() -> bool {
        true
    }
    pub fn event_cooldown_ms() -> u64 {
        30_000
    }
    pub fn connect_timeout_ms() -> u64 {
        1_000
    }
    pub fn request_timeout_ms() -> u64 {
        30_000
    }
    pub fn fail_timeout_ms() -> u64 {
        10_000
    }
    pub fn idle_timeout_ms() -> u64 {
        90_000
    }
    pub fn max_idle_connections() -> u32 {
        64
    }
    pub fn weight() -> u32 {
        1
    }
    pub fn panic_threshold_percent() -> u32 {
        50
    }
    pub fn admin_listen() -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], 9901))
    }
    pub fn state_file() -> std::path::PathBuf {
        "switchyard-state.json".into()
    }
    pub fn plugins_dir() -> std::path::PathBuf {
        "switchyard-plugins".into()
    }
    pub fn recent_requests() -> usize {
        256
    }
    pub fn sticky_ttl_ms() -> u64 {
        3_600_000
    }
    pub fn max_sessions() -> u64 {
        100_000
    }
    pub fn drain_timeout_ms() -> u64 {
        600_000
    }
}

pub(super) use super::Invalid;

impl Config {
    /// Has `resources` read every file and address the configuration names,
    /// in the order of the file: listeners' and the admin API's TLS, pools'
    /// TLS, the MCP session key file, the etcd store's endpoints and TLS.
    ///
    /// # Errors
    /// `(dotted key, reason)` of the first that cannot be loaded.
    pub(super) fn check_resources(&self, resources: &dyn super::Resources) -> Result<(), Invalid> {
        let within = |table: String| move |(k, reason): Invalid| (format!("{table}.{k}"), reason);
        for (name, filter) in &self.filters {
            if let FilterConfig::Jwt(jwt) = filter {
                for (i, provider) in jwt.providers.iter().enumerate() {
                    if provider.jwks_file.is_some() {
                        resources.jwks_file(provider).map_err(|reason| {
                            (format!("filters.{name}.providers[{i}].jwks_file"), reason)
                        })?;
                    }
                }
            }
        }
        for (i, listener) in self.listeners.iter().enumerate() {
            if let Some(tls) = &listener.tls {
                resources
                    .listener_tls(tls)
                    .map_err(within(format!("listeners[{i}].tls")))?;
            }
        }
        if let Some(tls) = self.admin.as_ref().and_then(|a| a.tls.as_ref()) {
            resources
                .listener_tls(tls)
                .map_err(within("admin.tls".into()))?;
        }
        for (name, pool) in &self.pools {
            if let Some(tls) = &pool.tls {
                resources
                    .upstream_tls(tls)
                    .map_err(within(format!("pools.{name}.tls")))?;
            }
        }
        if self.mcp_sessions.key_file.is_some() {
            resources
                .mcp_session_keys(&self.mcp_sessions)
                .map_err(|reason| ("mcp_sessions.key_file".to_string(), reason))?;
        }
        if let StoreConfig::Etcd(etcd) = &self.store {
            resources
                .etcd_endpoints(&etcd.endpoints)
                .map_err(|reason| ("store.endpoints".to_string(), reason))?;
            if let Some(tls) = &etcd.tls {
                resources
                    .upstream_tls(tls)
                    .map_err(within("store.tls".into()))?;
            }
        }
        Ok(())
    }

    /// One sentence per value read from a deprecated spelling, naming its
    /// key and the spelling to write instead; empty when there is none.
    /// Logged at start, printed by `switchyard check`, and listed in
    /// `/v1/status` `warnings`.
    pub fn deprecations(&self) -> Vec<String> {
        self.pools
            .iter()
            .flat_map(|(name, pool)| {
                let strategy = match &pool.strategy {
                    StrategyConfig::Plugin(p) => p.deprecated.0.map(|new| ("strategy", new)),
                    _ => None,
                };
                let failover = match &pool.failover {
                    FailoverConfig::Plugin(p) => p.deprecated.0.map(|new| ("failover", new)),
                    FailoverConfig::Retry => None,
                };
                strategy.into_iter().chain(failover).map(move |(key, new)| {
                    format!("pools.{name}.{key}: a deprecated spelling, still read; write `{new}`")
                })
            })
            .collect()
    }

    /// Every file the pools and routes load: plugins (strategy, health
    /// check, failover, resolver) and fan-out schemas.
    pub fn loaded_files_mut(&mut self) -> impl Iterator<Item = &mut PathBuf> {
        let pools = self.pools.values_mut().flat_map(|pool| {
            let strategy = match &mut pool.strategy {
                StrategyConfig::Plugin(plugin) => Some(&mut plugin.plugin.path),
                _ => None,
            };
            let health = pool
                .health
                .as_mut()
                .and_then(|h| h.plugin.as_mut())
                .map(|p| &mut p.path);
            let failover = match &mut pool.failover {
                FailoverConfig::Plugin(p) => Some(&mut p.plugin.path),
                FailoverConfig::Retry => None,
            };
            strategy.into_iter().chain(health).chain(failover)
        });
        let routes = self
            .routes
            .iter_mut()
            .filter_map(|r| r.fan_out.as_mut())
            .flat_map(FanOutConfig::paths_mut);
        let filters = self.filters.values_mut().filter_map(|f| match f {
            FilterConfig::Plugin(p) => Some(&mut p.plugin.path),
            _ => None,
        });
        pools.chain(routes).chain(filters)
    }

    pub(super) fn resolve_paths(&mut self, base: &Path) {
        let tls_paths = self
            .listeners
            .iter_mut()
            .filter_map(|l| l.tls.as_mut())
            .chain(self.admin.as_mut().and_then(|a| a.tls.as_mut()))
            .flat_map(ListenerTlsConfig::paths_mut)
            .chain(
                self.pools
                    .values_mut()
                    .filter_map(|p| p.tls.as_mut())
                    .flat_map(UpstreamTlsConfig::paths_mut),
            );
        for path in tls_paths {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        }
        for path in self.loaded_files_mut() {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        }
        if let Some(dir) = &mut self.plugin_cache.dir
            && dir.is_relative()
        {
            *dir = base.join(&*dir);
        }
        if let Some(admin) = &mut self.admin {
            for path in admin
                .token_file
                .iter_mut()
                .chain([&mut admin.state_file, &mut admin.plugins_dir])
            {
                if path.is_relative() {
                    *path = base.join(&*path);
                }
            }
        }
        for cwd in self
            .pools
            .values_mut()
            .filter_map(|p| p.process.as_mut())
            .map(|p| p.cwd.get_or_insert_with(|| base.to_path_buf()))
        {
            if cwd.is_relative() {
                *cwd = base.join(&*cwd);
            }
        }
        if let Some(path) = self.mcp_sessions.key_file.as_mut()
            && path.is_relative()
        {
            *path = base.join(&*path);
        }
        for filter in self.filters.values_mut() {
            if let FilterConfig::Jwt(jwt) = filter {
                for path in jwt
                    .providers
                    .iter_mut()
                    .filter_map(|p| p.jwks_file.as_mut())
                {
                    if path.is_relative() {
                        *path = base.join(&*path);
                    }
                }
            }
        }
        if let StoreConfig::Etcd(etcd) = &mut self.store {
            for path in etcd.paths_mut().filter(|p| p.is_relative()) {
                *path = base.join(&*path);
            }
        }
    }

    pub(super) fn validate(&self) -> Result<(), Invalid> {
        if self.listeners.is_empty() {
            return Err((
                "listeners".into(),
                "at least one listener is required".into(),
            ));
        }
        if let Some(workers) = self.runtime.worker_threads {
            in_range("runtime.worker_threads", workers as u64, 1, 1024)?;
        }
        for (i, listener) in self.listeners.iter().enumerate() {
            listener
                .validate()
                .map_err(|(k, reason)| (format!("listeners[{i}].{k}"), reason))?;
        }
        if let Some(admin) = &self.admin
            && admin.is_exposed()
            && !admin.insecure
        {
            return Err((
                "admin.listen".into(),
                format!(
                    "`{}` is not a loopback address and the admin API has no authentication: \
                     set `token_env` or `token_file`, or TLS with `client_ca_file` (client \
                     certificates required), or listen on 127.0.0.1; `insecure = true` serves \
                     it open anyway",
                    admin.listen
                ),
            ));
        }
        for (name, filter) in &self.filters {
            filter
                .validate()
                .map_err(|(k, reason)| (format!("filters.{name}.{k}"), reason))?;
        }
        let names: Vec<&String> = self.pools.keys().collect();
        for (i, route) in self.routes.iter().enumerate() {
            for (j, filter) in route.filters.iter().enumerate() {
                if !self.filters.contains_key(filter) {
                    return Err((
                        format!("routes[{i}].filters[{j}]"),
                        format!(
                            "unknown filter `{filter}` (filters: {})",
                            self.filters.keys().cloned().collect::<Vec<_>>().join(", ")
                        ),
                    ));
                }
            }
            match (&route.pool, &route.fan_out, &route.mcp) {
                (Some(pool), None, None) if !self.pools.contains_key(pool) => {
                    return Err((
                        format!("routes[{i}].pool"),
                        format!(
                            "unknown pool `{pool}` (pools: {})",
                            self.pools.keys().cloned().collect::<Vec<_>>().join(", ")
                        ),
                    ));
                }
                (Some(_), None, None) => {}
                (None, Some(fan_out), None) => fan_out
                    .validate(&names)
                    .map_err(|(k, reason)| (format!("routes[{i}].fan_out.{k}"), reason))?,
                (None, None, Some(mcp)) => mcp
                    .validate(&names)
                    .map_err(|(k, reason)| (format!("routes[{i}].mcp.{k}"), reason))?,
                _ => {
                    return Err((
                        format!("routes[{i}].pool"),
                        "give exactly one of `pool`, `fan_out` and `mcp`".into(),
                    ));
                }
            }
            if route.mcp.is_some() && (route.fallback.is_some() || route.stale_if_error.is_some()) {
                return Err((
                    format!("routes[{i}].mcp"),
                    "`fallback` and `stale_if_error` are for `pool` routes".into(),
                ));
            }
            if route.fan_out.is_some()
                && (route.fallback.is_some() || route.stale_if_error.is_some())
            {
                return Err((
                    format!("routes[{i}].fan_out"),
                    "`fallback` and `stale_if_error` are for `pool` routes; a fan-out route \
                     serves stale answers with `fan_out.cache.stale_if_error_ms`"
                        .into(),
                ));
            }
            if let Some(stale) = &route.stale_if_error {
                stale
                    .validate()
                    .map_err(|(k, reason)| (format!("routes[{i}].stale_if_error.{k}"), reason))?;
            }
            if let Some(fallback) = &route.fallback {
                fallback
                    .validate(&names)
                    .map_err(|(k, reason)| (format!("routes[{i}].fallback.{k}"), reason))?;
            }
            if let Some(prefix) = &route.matches.path_prefix
                && !prefix.starts_with('/')
            {
                return Err((
                    format!("routes[{i}].match.path_prefix"),
                    format!("`{prefix}` must start with `/`"),
                ));
            }
        }
        for (name, pool) in &self.pools {
            pool.validate(name)?;
        }
        self.check_dependencies()?;
        if let StoreConfig::Etcd(etcd) = &self.store {
            etcd.validate()
                .map_err(|(k, reason)| (format!("store.{k}"), reason))?;
        }
        Ok(())
    }
}

impl Config {
    /// Every `depends_on` names a pool, and no pool depends on itself,
    /// directly or through others (the cycle is named).
    fn check_dependencies(&self) -> Result<(), Invalid> {
        for (name, pool) in &self.pools {
            for (i, dependency) in pool.depends_on.iter().enumerate() {
                if !self.pools.contains_key(dependency) {
                    return Err((
                        format!("pools.{name}.depends_on[{i}]"),
                        format!("unknown pool `{dependency}`"),
                    ));
                }
            }
        }
        self.start_order().map(drop)
    }

    /// The pools in an order where each comes after every pool it depends
    /// on (then by name).
    ///
    /// # Errors
    /// A dependency cycle, named: `pools.a.depends_on`, `a -> b -> a`.
    pub fn start_order(&self) -> Result<Vec<String>, Invalid> {
        let mut order: Vec<String> = Vec::with_capacity(self.pools.len());
        let mut visiting: Vec<&str> = Vec::new();
        fn visit<'c>(
            config: &'c Config,
            name: &'c str,
            visiting: &mut Vec<&'c str>,
            order: &mut Vec<String>,
        ) -> Result<(), Invalid> {
            if order.iter().any(|o| o == name) {
                return Ok(());
            }
            if let Some(at) = visiting.iter().position(|v| *v == name) {
                let mut cycle: Vec<&str> = visiting[at..].to_vec();
                cycle.push(name);
                return Err((
                    format!("pools.{name}.depends_on"),
                    format!("a dependency cycle: {}", cycle.join(" -> ")),
                ));
            }
            visiting.push(name);
            for dependency in config.pools.get(name).map_or(&[][..], |p| &p.depends_on) {
                if config.pools.contains_key(dependency) {
                    visit(config, dependency, visiting, order)?;
                }
            }
            visiting.pop();
            order.push(name.to_string());
            Ok(())
        }
        for name in self.pools.keys() {
            visit(self, name, &mut visiting, &mut order)?;
        }
        Ok(order)
    }

    /// Every plugin file the configuration loads.
    pub fn plugin_paths(&self) -> Vec<PathBuf> {
        let mut paths: Vec<PathBuf> = self
            .pools
            .values()
            .flat_map(|pool| pool.plugin_keys().into_iter().map(|(_, p)| p.to_path_buf()))
            .chain(self.routes.iter().filter_map(
                |r| match r.fan_out.as_ref().map(|f| &f.resolver) {
                    Some(ResolverConfig::Plugin(p)) => Some(p.plugin.path.clone()),
                    _ => None,
                },
            ))
            .chain(self.filter_plugins().map(|(_, path)| path.to_path_buf()))
            .collect();
        paths.sort();
        paths.dedup();
        paths
    }

    /// The config keys that load the plugin file `path`, e.g.
    /// `pools.web.strategy` or `routes[2].fan_out.resolver`.
    pub fn plugin_users(&self, path: &Path) -> Vec<String> {
        let mut users: Vec<String> = self
            .pools
            .iter()
            .flat_map(|(name, pool)| {
                pool.plugin_keys()
                    .into_iter()
                    .filter(|(_, p)| *p == path)
                    .map(move |(key, _)| format!("pools.{name}.{key}"))
            })
            .collect();
        for (i, route) in self.routes.iter().enumerate() {
            if route.plugin_path() == Some(path) {
                users.push(format!("routes[{i}].fan_out.resolver"));
            }
        }
        users.extend(
            self.filter_plugins()
                .filter(|(_, p)| *p == path)
                .map(|(name, _)| format!("filters.{name}")),
        );
        users
    }

    /// `(name, path)` of every filter that is a plugin.
    pub fn filter_plugins(&self) -> impl Iterator<Item = (&str, &Path)> {
        self.filters.iter().filter_map(|(name, f)| match f {
            FilterConfig::Plugin(p) => Some((name.as_str(), p.plugin.path.as_path())),
            _ => None,
        })
    }
}

impl RouteConfig {
    /// The plugin file the route loads: its fan-out's resolver plugin.
    pub fn plugin_path(&self) -> Option<&Path> {
        match self.fan_out.as_ref().map(|f| &f.resolver) {
            Some(ResolverConfig::Plugin(p)) => Some(&p.plugin.path),
            _ => None,
        }
    }
}

impl PoolConfig {
    /// Whether `self` and `other` are the same config once `ignoring` has
    /// blanked what does not count (e.g. the instances' `drain` flags);
    /// compared as their serialized values.
    pub fn same_as(&self, other: &PoolConfig, ignoring: impl Fn(&mut PoolConfig)) -> bool {
        let blanked = |c: &PoolConfig| {
            let mut c = c.clone();
            ignoring(&mut c);
            c
        };
        super::same_json(&blanked(self), &blanked(other))
    }

    /// `(key, path)` of every plugin the pool loads.
    pub fn plugin_keys(&self) -> Vec<(&'static str, &Path)> {
        let mut keys = Vec::new();
        if let StrategyConfig::Plugin(p) = &self.strategy {
            keys.push(("strategy.plugin", p.plugin.path.as_path()));
        }
        if let Some(p) = self.health.as_ref().and_then(|h| h.plugin.as_ref()) {
            keys.push(("health.plugin", p.path.as_path()));
        }
        if let Some(p) = self.failover.plugin() {
            keys.push(("failover.plugin", p.path.as_path()));
        }
        keys
    }

    fn validate(&self, name: &str) -> Result<(), Invalid> {
        let key = |k: &str| format!("pools.{name}.{k}");
        if self.instances.is_empty() && self.process.is_none() && self.discovery.is_none() {
            return Err((key("instances"), "at least one instance is required".into()));
        }
        if let Some(discovery) = &self.discovery {
            discovery
                .validate()
                .map_err(|(k, reason)| (key(&format!("discovery.{k}")), reason))?;
        }
        if let Some(process) = &self.process {
            process
                .validate()
                .map_err(|(k, reason)| (key(&format!("process.{k}")), reason))?;
        }
        for (i, instance) in self.instances.iter().enumerate() {
            if let Err(reason) = instance.upstream_authority() {
                return Err((key(&format!("instances[{i}].url")), reason));
            }
            if instance.weight == 0 {
                return Err((
                    key(&format!("instances[{i}].weight")),
                    "must be >= 1".into(),
                ));
            }
        }
        if self
            .health
            .as_ref()
            .is_some_and(|h| h.kind == CheckKind::Grpc)
            && self.protocol != UpstreamProtocol::H2
        {
            return Err((
                key("health.kind"),
                "a gRPC check needs the pool's `protocol = \"h2\"` (gRPC is HTTP/2)".into(),
            ));
        }
        for (k, v, min) in [
            ("connect_timeout_ms", self.connect_timeout_ms, 1),
            ("request_timeout_ms", self.request_timeout_ms, 1),
            ("fail_timeout_ms", self.fail_timeout_ms, 0),
            ("idle_timeout_ms", self.idle_timeout_ms, 0),
        ] {
            in_range(k, v, min, MAX_WAIT_MS).map_err(|(k, reason)| (key(&k), reason))?;
        }
        in_range(
            "max_idle_connections",
            u64::from(self.max_idle_connections),
            0,
            65_536,
        )
        .map_err(|(k, reason)| (key(&k), reason))?;
        self.strategy
            .validate()
            .map_err(|(k, reason)| (key(&format!("strategy.{k}")), reason))?;
        if let StrategyConfig::ConsistentHash(c) = &self.strategy
            && c.algorithm == HashAlgorithm::Maglev
            && c.table_size as usize <= self.instances.len()
        {
            return Err((
                key("strategy.table_size"),
                format!(
                    "must exceed the number of instances ({}); Maglev balances well at 100x",
                    self.instances.len()
                ),
            ));
        }
        if let Some(health) = &self.health {
            health
                .validate()
                .map_err(|(k, reason)| (key(&format!("health.{k}")), reason))?;
        }
        if let Some(outlier) = &self.outlier {
            outlier
                .validate()
                .map_err(|(k, reason)| (key(&format!("outlier.{k}")), reason))?;
        }
        self.retry
            .validate()
            .map_err(|(k, reason)| (key(&format!("retry.{k}")), reason))?;
        if let Some(breaker) = &self.breaker {
            breaker
                .validate()
                .map_err(|(k, reason)| (key(&format!("breaker.{k}")), reason))?;
        }
        self.failover
            .validate()
            .map_err(|(k, reason)| (key(&format!("failover.{k}")), reason))?;
        if let Some(bulkhead) = &self.bulkhead {
            bulkhead
                .validate()
                .map_err(|(k, reason)| (key(&format!("bulkhead.{k}")), reason))?;
        }
        if let Some(trend) = &self.trend {
            trend
                .validate()
                .map_err(|(k, reason)| (key(&format!("trend.{k}")), reason))?;
        }
        if self.panic_threshold_percent > 100 {
            return Err((key("panic_threshold_percent"), "must be 0..=100".into()));
        }
        if let Some(sticky) = &self.sticky {
            sticky
                .validate()
                .map_err(|(k, reason)| (key(&format!("sticky.{k}")), reason))?;
        }
        Ok(())
    }
}

impl StickyConfig {
    fn validate(&self) -> Result<(), Invalid> {
        match (&self.cookie, &self.header) {
            (Some(_), Some(_)) | (None, None) => {
                return Err((
                    "cookie".into(),
                    "give exactly one of `cookie` and `header`".into(),
                ));
            }
            (Some(cookie), None) => {
                if cookie.is_empty()
                    || !cookie
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
                {
                    return Err((
                        "cookie".into(),
                        format!("`{cookie}` is not a valid cookie name"),
                    ));
                }
            }
            (None, Some(header)) => {
                http::HeaderName::try_from(header.as_str()).map_err(|_| {
                    (
                        "header".to_string(),
                        format!("`{header}` is not a valid header name"),
                    )
                })?;
            }
        }
        if self.ttl_ms == 0 {
            return Err(("ttl_ms".into(), "must be > 0".into()));
        }
        if self.max_sessions == 0 {
            return Err(("max_sessions".into(), "must be > 0".into()));
        }
        Ok(())
    }
}

impl InstanceConfig {
    /// The `host[:port]` authority of [`url`](Self::url), validated (the
    /// upstream request's `Host`; the port is the scheme's when absent).
    ///
    /// # Errors
    /// A reason when the URL does not parse, is neither `http://` nor
    /// `https://`, or has a path, query or user info.
    pub fn upstream_authority(&self) -> Result<http::uri::Authority, String> {
        let uri: http::Uri = self
            .url
            .parse()
            .map_err(|e| format!("`{}` is not a URL: {e}", self.url))?;
        if !self.url.starts_with("http://") && !self.url.starts_with("https://") {
            return Err(format!(
                "`{}` must start with `http://` or `https://`",
                self.url
            ));
        }
        let authority = uri
            .authority()
            .ok_or_else(|| format!("`{}` has no host", self.url))?;
        if authority.as_str().contains('@') {
            return Err(format!("`{}` must not carry user info", self.url));
        }
        if uri.path_and_query().is_some_and(|pq| pq.as_str() != "/") {
            return Err(format!("`{}` must not have a path or query", self.url));
        }
        Ok(authority.clone())
    }
}
