//! Configuration: the TOML file given to `switchyard serve --config FILE`.
//!
//! The file is data: every table rejects unknown keys
//! (`deny_unknown_fields`), and [`Config::load`] validates what types cannot
//! say (every route names a pool that exists, instance URLs are
//! `http(s)://host[:port]`, plugin files exist), then has the files and
//! addresses it names read by the implementations that will use them
//! ([`Resources`]: TLS files, the MCP session key file, etcd endpoints).
//! Every error names the file, the key and the reason.
//!
//! This crate is the bottom layer of the workspace: it depends on no other
//! Switchyard crate, so the engines, the plugin host and the server import
//! it and never the other way round.
//!
//! ```toml
//! [[listeners]]
//! listen = "127.0.0.1:8080"
//!
//! [[routes]]
//! match = { path_prefix = "/api", host = "api.example.com" }   # both optional
//! pool = "web"
//!
//! [pools.web]
//! strategy = { kind = "round-robin" }       # or any built-in (see `StrategyConfig`), or a plugin:
//! # strategy = { kind = "plugin", plugin = { path = "canary_split.wasm", config = { percent = 10 } } }
//! connect_timeout_ms = 1000
//! request_timeout_ms = 30000
//! sticky = { cookie = "sy-affinity", ttl_ms = 3600000 }   # optional session affinity
//! instances = [
//!   { url = "http://127.0.0.1:9001", weight = 2, labels = { track = "stable" } },
//!   { url = "http://127.0.0.1:9002", drain = true },       # no new requests
//! ]
//! ```

mod discovery;
mod error;
mod failover;
mod filter;
mod fusion;
mod health;
mod mcp;
mod plugin;
mod process;
mod rate_limit;
mod store;
mod strategy;
mod tls;
mod types;

pub use error::ConfigError;
pub use types::{
    AdminConfig, ApiKeyConfig, ApiKeyPrincipal, AuthMode, AuthorizeConfig, BodyLimitConfig,
    BreakerConfig, BulkheadConfig, Capability, CertificateFiles, CheckKind, ClientAuth,
    ClientCertConfig, Compare, CompareKeys, CompressConfig, ConcurrencyConfig, Config,
    ConflictRule, ConsistentHashConfig, CorsConfig, DEFAULT_MAX_CANDIDATES, DecompressConfig,
    Deprecated, DiscoveryConfig, DnsDiscovery, DnsRecordType, DrainSessions, EscapedSlashes,
    EtcdDiscovery, EtcdStoreConfig, FailoverConfig, FailoverFallback, FailoverPluginConfig,
    FailureMode, FallbackConfig, FanOutConfig, FastestResponseConfig, FilterConfig,
    FilterFailureMode, ForwardAuthConfig, ForwardedConfig, FusionCacheConfig, HashAlgorithm,
    HashKey, HeaderLimitConfig, HeaderRules, HealthCheckConfig, HealthFallback, HostRewriteConfig,
    InstanceConfig, IpFilterConfig, JwtConfig, JwtProvider, KeyPart, LeastConnectionsConfig,
    LimitConfig, ListenerConfig, ListenerTlsConfig, McpConfig, McpSessionsConfig, McpTargetConfig,
    McpTargetTable, MedianConfig, MergeConfig, MostRecentConfig, NoKeys, OutlierConfig,
    PluginFilterConfig, PluginRef, PluginStrategyConfig, PoolConfig, PrefixConfig, PrefixMode,
    ProcessConfig, ProcessTransport, QuarantineConfig, QuorumConfig, RateLimitConfig,
    RedirectConfig, RedisLimitConfig, RegexRewriteConfig, RequestIdConfig, ResolverConfig,
    ResolverPluginConfig, ResourceAwareConfig, RespondConfig, RetryConfig, RetryOn, RouteConfig,
    RouteMatch, RuntimeConfig, SourceConfig, StaleConfig, StdioSessions, StickyConfig, StoreConfig,
    StrategyConfig, TemplatePart, ToolConfig, ToolFusion, TrendConfig, UpstreamProtocol,
    UpstreamTlsConfig, Variable, WeightedVoteConfig, compile_rule, origin_matches, parse_cidr,
    parse_jwks, parse_key_digest, parse_template,
};

use std::path::Path;

/// Whether two config values say the same, compared as their serialized
/// values (the config types have no `PartialEq` of their own: some hold
/// floats and free-form plugin config).
pub fn same_json<T: serde::Serialize>(a: &T, b: &T) -> bool {
    serde_json::to_value(a).ok() == serde_json::to_value(b).ok()
}

/// The `name = value` headers of a config table (validated at load), as
/// header pairs; an invalid one is left out.
pub fn header_pairs(
    headers: &std::collections::BTreeMap<String, String>,
) -> Vec<(http::HeaderName, http::HeaderValue)> {
    headers
        .iter()
        .filter_map(|(k, v)| {
            Some((
                http::HeaderName::try_from(k).ok()?,
                http::HeaderValue::try_from(v).ok()?,
            ))
        })
        .collect()
}

/// The checks of a configuration that read what it names, made by the
/// implementations that will use it (so that a file refused at load is
/// exactly one that would fail later): the host implements this trait with
/// its TLS loader, its MCP session keys and its etcd client.
///
/// Each check's error is `(key relative to the checked table, reason)` or a
/// reason alone; [`Config::check`] prefixes the table's dotted key.
pub trait Resources {
    /// Reads a listener's certificates, keys and client CA bundle, as a
    /// handshake would.
    ///
    /// # Errors
    /// The key within the `tls` table and why it cannot be loaded.
    fn listener_tls(&self, tls: &ListenerTlsConfig) -> Result<(), Invalid>;
    /// Reads a TLS client's CA bundle and client certificate and checks its
    /// SNI name.
    ///
    /// # Errors
    /// As [`Resources::listener_tls`].
    fn upstream_tls(&self, tls: &UpstreamTlsConfig) -> Result<(), Invalid>;
    /// Reads the MCP session key file (only called when one is set).
    ///
    /// # Errors
    /// Why the keys cannot be read or parsed.
    fn mcp_session_keys(&self, sessions: &McpSessionsConfig) -> Result<(), String>;
    /// Parses the etcd client URLs.
    ///
    /// # Errors
    /// The first URL that is not `http(s)://host[:port]`.
    fn etcd_endpoints(&self, endpoints: &[String]) -> Result<(), String>;
    /// Reads and parses a `jwt` provider's JWKS file (only called when
    /// one is set).
    ///
    /// # Errors
    /// Why it cannot be read, or is not a JWKS with a usable key.
    fn jwks_file(&self, provider: &JwtProvider) -> Result<(), String>;
}

/// [`Resources`] that checks nothing: the schema checks alone, for tools
/// and tests that read a configuration without the host's loaders.
pub struct SchemaOnly;

impl Resources for SchemaOnly {
    fn listener_tls(&self, _: &ListenerTlsConfig) -> Result<(), Invalid> {
        Ok(())
    }
    fn upstream_tls(&self, _: &UpstreamTlsConfig) -> Result<(), Invalid> {
        Ok(())
    }
    fn mcp_session_keys(&self, _: &McpSessionsConfig) -> Result<(), String> {
        Ok(())
    }
    fn etcd_endpoints(&self, _: &[String]) -> Result<(), String> {
        Ok(())
    }
    fn jwks_file(&self, _: &JwtProvider) -> Result<(), String> {
        Ok(())
    }
}

/// A failed check: `(dotted key, reason)`.
pub type Invalid = (String, String);

impl Config {
    /// Reads, parses and validates the config file at `path`, and checks
    /// what it names with `resources`. Relative plugin paths are resolved
    /// against the file's directory.
    ///
    /// # Errors
    /// [`ConfigError`] naming the file, the key and the reason: unreadable
    /// file, TOML syntax, unknown or mistyped key, or a failed validation.
    pub fn load(path: &Path, resources: &dyn Resources) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            file: path.to_path_buf(),
            error,
        })?;
        // Absolute, so that every way of naming the file (`site.toml`,
        // `./site.toml`, `/etc/site.toml`) resolves its relative paths to
        // the same files, and a watcher's absolute paths match them.
        let absolute = std::path::absolute(path).map_err(|error| ConfigError::Read {
            file: path.to_path_buf(),
            error,
        })?;
        let base = absolute.parent().unwrap_or(Path::new("/"));
        Self::parse(&text, path, base, resources)
    }

    /// Parses and validates `text` as if read from `file`; relative plugin
    /// paths are resolved against `base`.
    ///
    /// # Errors
    /// As [`Config::load`], except reading.
    ///
    /// # Example
    /// ```
    /// use std::path::Path;
    /// use switchyard_config::{Config, SchemaOnly, StrategyConfig};
    ///
    /// let text = r#"
    /// [[listeners]]
    /// listen = "127.0.0.1:8080"
    /// [pools.web]
    /// instances = [{ url = "http://127.0.0.1:9001" }]
    /// "#;
    /// let config = Config::parse(text, Path::new("inline.toml"), Path::new("."), &SchemaOnly).unwrap();
    /// assert!(matches!(config.pools["web"].strategy, StrategyConfig::RoundRobin(_)));
    ///
    /// let err = Config::parse("listeners = 3", Path::new("bad.toml"), Path::new("."), &SchemaOnly)
    ///     .unwrap_err();
    /// assert!(err.to_string().starts_with("bad.toml: line 1: "));
    /// ```
    pub fn parse(
        text: &str,
        file: &Path,
        base: &Path,
        resources: &dyn Resources,
    ) -> Result<Self, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            file: file.to_path_buf(),
            key: e.span().map(|span| key_at(text, span.start)),
            message: e.message().to_string(),
        })?;
        config.resolve_paths(base);
        config
            .check(resources)
            .map_err(|(key, reason)| ConfigError::Invalid {
                file: file.to_path_buf(),
                key,
                reason,
            })?;
        Ok(config)
    }
}

impl Config {
    /// Validates a configuration built in memory (a change through the admin
    /// API, the store): the checks [`Config::load`] makes after parsing,
    /// then what it names, with `resources`.
    ///
    /// # Errors
    /// `(dotted key, reason)` of the first failed check.
    pub fn check(&self, resources: &dyn Resources) -> Result<(), Invalid> {
        self.validate()?;
        self.check_resources(resources)
    }
}

/// The `line N: <text of that line>` at byte offset `at` of `text`, which is
/// where toml points for a bad key or value.
fn key_at(text: &str, at: usize) -> String {
    let at = at.min(text.len());
    let line_no = text[..at].matches('\n').count() + 1;
    let line = text.lines().nth(line_no - 1).unwrap_or("").trim();
    format!("line {line_no}: `{line}`")
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[[listeners]]
listen = "127.0.0.1:0"
[[routes]]
pool = "p"
[pools.p]
instances = [{ url = "http://127.0.0.1:9001" }]
"#;

    #[test]
    fn defaults_are_documented_values() {
        let config =
            Config::parse(MINIMAL, Path::new("t.toml"), Path::new("."), &SchemaOnly).unwrap();
        let pool = &config.pools["p"];
        assert!(matches!(pool.strategy, StrategyConfig::RoundRobin(_)));
        assert_eq!(
            (
                pool.connect_timeout_ms,
                pool.request_timeout_ms,
                pool.fail_timeout_ms,
                pool.idle_timeout_ms,
                pool.max_idle_connections
            ),
            (1_000, 30_000, 10_000, 90_000, 64)
        );
        assert_eq!(pool.instances[0].weight, 1);
        assert_eq!(config.shutdown_grace_ms, 30_000);
    }

    #[test]
    fn plugin_paths_resolve_against_the_config_directory() {
        let dir = std::env::temp_dir().join(format!("switchyard-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("p.wasm"), b"").unwrap();
        let text = MINIMAL.replace(
            "[pools.p]",
            "[pools.p]\nstrategy = { kind = \"plugin\", plugin = { path = \"p.wasm\" } }",
        );
        let config = Config::parse(&text, &dir.join("c.toml"), &dir, &SchemaOnly).unwrap();
        let StrategyConfig::Plugin(plugin) = &config.pools["p"].strategy else {
            panic!("not a plugin strategy");
        };
        assert_eq!(plugin.plugin.path, dir.join("p.wasm"));
        assert_eq!(
            (
                plugin.plugin.call_deadline_ms,
                plugin.plugin.memory_limit_mib
            ),
            (5, 16)
        );
        assert!(matches!(*plugin.fallback, StrategyConfig::RoundRobin(_)));
        assert!(config.deprecations().is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn deprecated_plugin_spellings_load_and_say_the_new_one() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("p.wasm"), b"").unwrap();
        let old = MINIMAL.replace(
            "[pools.p]",
            "[pools.p]\n\
             strategy = { kind = \"plugin\", path = \"p.wasm\", call_deadline_ms = 7, fallback = \"random\" }\n\
             failover_plugin = { path = \"p.wasm\", config = { n = 1 } }",
        );
        let config = Config::parse(&old, Path::new("c.toml"), dir.path(), &SchemaOnly).unwrap();
        let pool = &config.pools["p"];
        let StrategyConfig::Plugin(strategy) = &pool.strategy else {
            panic!("not a plugin strategy");
        };
        assert_eq!(strategy.plugin.call_deadline_ms, 7);
        assert!(matches!(*strategy.fallback, StrategyConfig::Random(_)));
        let failover = pool.failover.plugin().expect("a failover plugin");
        assert_eq!(failover.config_json(), r#"{"n":1}"#);
        let deprecations = config.deprecations();
        assert_eq!(deprecations.len(), 2, "{deprecations:?}");
        assert!(deprecations[0].starts_with("pools.p.strategy: "));
        assert!(deprecations[0].contains("write `strategy = { kind = \"plugin\", plugin = {"));
        assert!(deprecations[1].starts_with("pools.p.failover: "));

        // Written back (the admin API, the store), it is in the new spelling.
        let json = serde_json::to_value(&config).unwrap();
        assert_eq!(
            json["pools"]["p"]["strategy"]["plugin"]["call_deadline_ms"],
            7
        );
        assert_eq!(json["pools"]["p"]["strategy"]["fallback"]["kind"], "random");
        assert_eq!(json["pools"]["p"]["failover"]["kind"], "plugin");
        let again: Config = serde_json::from_value(json).unwrap();
        assert!(again.deprecations().is_empty());
        assert!(same_json(&again, &config));

        // Both spellings at once, or neither, is refused with the reason.
        let both = MINIMAL.replace(
            "[pools.p]",
            "[pools.p]\nstrategy = { kind = \"plugin\", path = \"p.wasm\", plugin = { path = \"p.wasm\" } }",
        );
        let err = Config::parse(&both, Path::new("c.toml"), dir.path(), &SchemaOnly).unwrap_err();
        assert!(err.to_string().contains("not beside it"), "{err}");
        let neither = MINIMAL.replace("[pools.p]", "[pools.p]\nfailover = { kind = \"plugin\" }");
        let err =
            Config::parse(&neither, Path::new("c.toml"), dir.path(), &SchemaOnly).unwrap_err();
        assert!(err.to_string().contains("missing `plugin`"), "{err}");
        let fallback = MINIMAL.replace(
            "[pools.p]",
            "[pools.p]\nstrategy = { kind = \"plugin\", plugin = { path = \"p.wasm\" }, fallback = { kind = \"plugin\", plugin = { path = \"p.wasm\" } } }",
        );
        let err =
            Config::parse(&fallback, Path::new("c.toml"), dir.path(), &SchemaOnly).unwrap_err();
        assert!(
            err.to_string().contains("pools.p.strategy.fallback"),
            "{err}"
        );
    }

    #[test]
    fn errors_name_file_key_and_reason() {
        let bad = MINIMAL.replace("9001", "9001/path");
        let err =
            Config::parse(&bad, Path::new("t.toml"), Path::new("."), &SchemaOnly).unwrap_err();
        assert_eq!(
            err.to_string(),
            "t.toml: pools.p.instances[0].url: `http://127.0.0.1:9001/path` must not have a path or query"
        );
        let unknown = MINIMAL.replace("[pools.p]", "[pools.p]\nweight_ms = 3");
        let err =
            Config::parse(&unknown, Path::new("t.toml"), Path::new("."), &SchemaOnly).unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("t.toml: line 7: `weight_ms = 3`: unknown field `weight_ms`"),
            "{text}"
        );
    }
}
