//! The `mcp` table of a route: an MCP gateway over one or more pools of
//! MCP servers (`switchyard::mcp` documents what the gateway does).
//!
//! ```toml
//! [[routes]]
//! match = { path_prefix = "/mcp" }
//! [routes.mcp]
//! targets = ["docs", { pool = "search", name = "web", path = "/mcp" }]
//! prefix = "on-conflict"       # or "always", "never"
//! separator = "__"
//! failure_mode = "open"        # or "closed"
//! call_timeout_ms = 300000     # a whole tools/call
//! idle_timeout_ms = 60000      # between two events of a streamed answer
//! tools = { "web__search" = { idempotent = true, fuse = { count = 3, resolver = { kind = "majority" } } } }
//!
//! [mcp_sessions]
//! key_file = "session-keys"   # base64 or hex AES-256 keys, one a line; the first seals
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::fusion::ResolverConfig;
use super::types::{Invalid, in_range};

/// An MCP route: Switchyard speaks MCP's streamable HTTP transport to the
/// client and to every target, federating the targets' tools, prompts and
/// resources into one server.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct McpConfig {
    /// The MCP servers: pools (any strategy, health check and failover
    /// policy). One target makes an MCP-aware proxy; several, a federation.
    pub targets: Vec<McpTargetConfig>,
    /// When a listed name gets its target's name and `separator` in front.
    /// Default `on-conflict`.
    #[serde(default)]
    pub prefix: PrefixMode,
    /// Between a target's name and a tool's or prompt's. Default `__`.
    #[serde(default = "defaults::separator")]
    pub separator: String,
    /// What a failing target does to a request that fans out. Default `open`.
    #[serde(default)]
    pub failure_mode: FailureMode,
    /// A whole call to one target (its answer's last byte), ms. Default
    /// 300000; at most 3600000.
    #[serde(default = "defaults::call_timeout_ms")]
    pub call_timeout_ms: u64,
    /// The longest wait for the next event of a streamed (SSE) answer, or
    /// for a JSON answer's head, ms. Default 60000; at most 3600000.
    #[serde(default = "defaults::idle_timeout_ms")]
    pub idle_timeout_ms: u64,
    /// A request that fans out to every target (`initialize`, the lists)
    /// ends within this long, ms; targets that have not answered count as
    /// failing. Default 10000; at most 3600000.
    #[serde(default = "defaults::fan_out_timeout_ms")]
    pub fan_out_timeout_ms: u64,
    /// A session unused this long on this Switchyard is refused (the client
    /// is told to initialize again), ms. Default 1800000 (30 min).
    #[serde(default = "defaults::session_idle_timeout_ms")]
    pub session_idle_timeout_ms: u64,
    /// A session older than this is refused everywhere (the bound for a
    /// replica that has not seen it yet), ms. Default 86400000 (24 h).
    #[serde(default = "defaults::session_max_age_ms")]
    pub session_max_age_ms: u64,
    /// Largest JSON-RPC message read from a client or a target, bytes.
    /// Default 4194304.
    #[serde(default = "defaults::max_message_bytes")]
    pub max_message_bytes: u64,
    /// Per tool, by the name the client sees: the operator's word on what
    /// the server's annotations say. Default: none.
    #[serde(default)]
    pub tools: BTreeMap<String, ToolConfig>,
}

/// One target of an MCP route: a pool, as a string (`"docs"`) or a table.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum McpTargetConfig {
    /// A pool's name; the target is named after it and asked at the
    /// client's path.
    Pool(String),
    /// A pool with its name and path.
    Table(McpTargetTable),
}

/// A target given as a table.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct McpTargetTable {
    /// The pool of the target's MCP servers.
    pub pool: String,
    /// The target's name: the prefix of its names, in events and metrics.
    /// `[A-Za-z0-9_-]`, 1..=64 characters. Default: the pool's name.
    pub name: Option<String>,
    /// The MCP endpoint's path on the instances. Default: the client's path.
    pub path: Option<String>,
    /// Headers sent with every request to the target (an API key of the
    /// gateway's own, say: the client's `Authorization` is never passed on,
    /// as the MCP spec forbids token passthrough). Default: none.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

impl McpTargetConfig {
    /// The pool.
    pub fn pool(&self) -> &str {
        match self {
            Self::Pool(pool) => pool,
            Self::Table(t) => &t.pool,
        }
    }

    /// The target's name.
    pub fn name(&self) -> &str {
        match self {
            Self::Pool(pool) => pool,
            Self::Table(t) => t.name.as_deref().unwrap_or(&t.pool),
        }
    }

    /// The endpoint's path, when fixed.
    pub fn path(&self) -> Option<&str> {
        match self {
            Self::Pool(_) => None,
            Self::Table(t) => t.path.as_deref(),
        }
    }

    /// The target's own headers.
    pub fn headers(&self) -> Option<&BTreeMap<String, String>> {
        match self {
            Self::Pool(_) => None,
            Self::Table(t) => Some(&t.headers),
        }
    }
}

/// When a name gets its target's prefix.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PrefixMode {
    /// Every tool and prompt name.
    Always,
    /// Only a name that more than one target lists.
    #[default]
    OnConflict,
    /// Never; a name more than one target lists is left out (a warning event).
    Never,
}

/// What a failing target does to a request fanned out to every target.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum FailureMode {
    /// It is left out of the answer, named in the result's `_meta` and in an
    /// event.
    #[default]
    Open,
    /// The request fails with a JSON-RPC error naming it.
    Closed,
}

/// The operator's word on one tool.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolConfig {
    /// Whether a call may be sent again (retried on a failure, fanned out):
    /// overrides the server's `readOnlyHint`/`idempotentHint`. Default: the
    /// annotations.
    pub idempotent: Option<bool>,
    /// Fan a call out to several instances of the owner's pool and fuse the
    /// results (an idempotent tool only). Default: one call.
    pub fuse: Option<ToolFusion>,
}

/// Result fusion of one tool's calls.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolFusion {
    /// How many fit instances are asked, 2..=64.
    pub count: u32,
    /// How their results become one (a built-in resolver; `compare`
    /// applies to the result).
    pub resolver: ResolverConfig,
}

mod defaults {
    pub fn separator() -> String {
        "__".into()
    }
    pub fn call_timeout_ms() -> u64 {
        300_000
    }
    pub fn idle_timeout_ms() -> u64 {
        60_000
    }
    pub fn fan_out_timeout_ms() -> u64 {
        10_000
    }
    pub fn session_idle_timeout_ms() -> u64 {
        1_800_000
    }
    pub fn session_max_age_ms() -> u64 {
        86_400_000
    }
    pub fn max_message_bytes() -> u64 {
        4 << 20
    }
}

impl McpConfig {
    /// Checks what types cannot say; `pools` are the configured pool names.
    pub(super) fn validate(&self, pools: &[&String]) -> Result<(), Invalid> {
        if self.targets.is_empty() {
            return Err(("targets".into(), "at least one target is required".into()));
        }
        let mut names: Vec<&str> = Vec::with_capacity(self.targets.len());
        for (i, target) in self.targets.iter().enumerate() {
            if !pools.iter().any(|p| p.as_str() == target.pool()) {
                return Err((
                    format!("targets[{i}].pool"),
                    format!("unknown pool `{}`", target.pool()),
                ));
            }
            let name = target.name();
            if name.is_empty()
                || name.len() > 64
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return Err((
                    format!("targets[{i}].name"),
                    format!("`{name}`: 1..=64 characters of A-Z a-z 0-9 _ -"),
                ));
            }
            if names.contains(&name) {
                return Err((
                    format!("targets[{i}].name"),
                    format!("`{name}` names two targets"),
                ));
            }
            names.push(name);
            if let Some(path) = target.path()
                && !path.starts_with('/')
            {
                return Err((
                    format!("targets[{i}].path"),
                    format!("`{path}` must start with `/`"),
                ));
            }
            for (header, value) in target.headers().into_iter().flatten() {
                if http::HeaderName::try_from(header.as_str()).is_err()
                    || http::HeaderValue::try_from(value.as_str()).is_err()
                {
                    return Err((
                        format!("targets[{i}].headers.{header}"),
                        "not a valid header".into(),
                    ));
                }
            }
        }
        if self.separator.is_empty() || self.separator.len() > 8 {
            return Err(("separator".into(), "1..=8 characters".into()));
        }
        for (key, value) in [
            ("call_timeout_ms", self.call_timeout_ms),
            ("idle_timeout_ms", self.idle_timeout_ms),
            ("fan_out_timeout_ms", self.fan_out_timeout_ms),
        ] {
            in_range(key, value, 1, 3_600_000)?;
        }
        in_range(
            "session_idle_timeout_ms",
            self.session_idle_timeout_ms,
            1_000,
            u64::from(u32::MAX),
        )?;
        in_range(
            "session_max_age_ms",
            self.session_max_age_ms,
            1_000,
            u64::from(u32::MAX) * 10,
        )?;
        in_range("max_message_bytes", self.max_message_bytes, 1024, 1 << 30)?;
        for (name, tool) in &self.tools {
            if let Some(fuse) = &tool.fuse {
                in_range(
                    &format!("tools.{name}.fuse.count"),
                    u64::from(fuse.count),
                    2,
                    64,
                )?;
                if matches!(fuse.resolver, ResolverConfig::Plugin(_)) {
                    return Err((
                        format!("tools.{name}.fuse.resolver"),
                        "a built-in resolver".into(),
                    ));
                }
                if tool.idempotent == Some(false) {
                    return Err((
                        format!("tools.{name}.fuse"),
                        "a tool that is not idempotent is never fanned out".into(),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Where the keys that seal MCP session ids come from (`[mcp_sessions]`).
///
/// The environment variable `SWITCHYARD_MCP_SESSION_KEYS` (keys separated
/// by commas) takes precedence over `key_file`. Each key is 32 bytes,
/// base64 or hex; the first seals new session ids, every one opens them
/// (rotation: put the new key first, drop the old one once its sessions
/// have expired). Without keys, a random key is made at start: sessions
/// then do not survive a restart nor reach another replica (a warning
/// says so).
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct McpSessionsConfig {
    /// A file of keys, one a line (`#` starts a comment); relative to the
    /// config file. Default: none.
    #[schema(value_type = Option<String>)]
    pub key_file: Option<PathBuf>,
}
