//! The `process` table of a pool: Switchyard starts, supervises and
//! restarts the processes behind it (`switchyard::process` documents how).
//!
//! ```toml
//! [pools.api]
//! depends_on = ["db"]              # start once `db` has `min_ready` fit instances
//! health = { path = "/healthz", interval_ms = 1000 }
//! [pools.api.process]
//! command = "python3"
//! args = ["-m", "http.server", "{port}", "--bind", "127.0.0.1"]
//! replicas = 2
//! stop_timeout_ms = 10000
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::types::{Invalid, MAX_WAIT_MS, in_range};

/// The processes of a pool: `replicas` copies of one command, each an
/// instance `http://127.0.0.1:PORT` of the pool once it is ready.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProcessConfig {
    /// The program (a path, or a name looked up in `PATH`).
    pub command: String,
    /// Its arguments; `{port}` is replaced by the replica's port and
    /// `{replica}` by its number (0, 1, …). Default: none.
    #[serde(default)]
    pub args: Vec<String>,
    /// Environment variables added to Switchyard's (same replacements).
    /// Default: none.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory; relative to the config file. Default: the config
    /// file's directory.
    #[schema(value_type = Option<String>)]
    pub cwd: Option<PathBuf>,
    /// How many processes, 0..=256. Default 1.
    #[serde(default = "defaults::replicas")]
    pub replicas: u32,
    /// The replicas' ports, one per replica number; without, a free port of
    /// 127.0.0.1 is chosen at each start. Default: chosen.
    #[serde(default)]
    pub ports: Vec<u16>,
    /// The signal that asks a replica to stop: `SIGTERM`, `SIGINT`,
    /// `SIGQUIT`, `SIGHUP`, `SIGUSR1` or `SIGUSR2`. Default `SIGTERM`.
    #[serde(default = "defaults::stop_signal")]
    pub stop_signal: String,
    /// After the stop signal, how long a replica has before `SIGKILL`, ms.
    /// Default 10000.
    #[serde(default = "defaults::stop_timeout_ms")]
    pub stop_timeout_ms: u64,
    /// A started replica that has not passed the pool's health check (or,
    /// without one, accepted a TCP connection) within this long is
    /// restarted, ms. Default 60000.
    #[serde(default = "defaults::ready_timeout_ms")]
    pub ready_timeout_ms: u64,
    /// A ready replica that fails this many health probes in a row is
    /// restarted; 0 = never. Default 3.
    #[serde(default = "defaults::restart_after_failed_checks")]
    pub restart_after_failed_checks: u32,
    /// The waits before restarts, ms, in tiers: the first restart waits the
    /// first, the next the second, …, then the last again. Default
    /// `[0, 1000, 5000, 30000]`.
    #[serde(default = "defaults::restart_backoff_ms")]
    pub restart_backoff_ms: Vec<u64>,
    /// A replica ready this long starts again from the first tier, ms.
    /// Default 60000.
    #[serde(default = "defaults::stable_after_ms")]
    pub stable_after_ms: u64,
    /// More restarts than this within `restart_window_ms` and the replica is
    /// left stopped (`crash-loop`, an alert event) until restarted through
    /// the API. Default 5.
    #[serde(default = "defaults::max_restarts")]
    pub max_restarts: u32,
    /// See `max_restarts`, ms. Default 60000.
    #[serde(default = "defaults::restart_window_ms")]
    pub restart_window_ms: u64,
    /// How the process is reached: `http` (it listens on its port) or
    /// `stdio` (an MCP server speaking JSON-RPC over stdin/stdout:
    /// Switchyard listens on the port and frames the messages). Default
    /// `http`.
    #[serde(default)]
    pub transport: ProcessTransport,
    /// With `transport = "stdio"`: a process per MCP session, or one shared
    /// by every session (a stateless server). Default `per-session`.
    #[serde(default)]
    pub stdio_sessions: StdioSessions,
    /// With `stdio_sessions = "per-session"`: most processes (sessions) a
    /// replica runs at once; one more `initialize` is refused. Default 16.
    #[serde(default = "defaults::max_processes")]
    pub max_processes: u32,
}

/// How a pool's process is reached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ProcessTransport {
    /// It serves HTTP on its port.
    #[default]
    Http,
    /// An MCP server over stdin/stdout, served over HTTP by Switchyard.
    Stdio,
}

/// Which sessions a stdio MCP server's process serves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum StdioSessions {
    /// One process per MCP session, started by its `initialize`, stopped by
    /// its `DELETE`.
    #[default]
    PerSession,
    /// One process per replica for every session.
    Shared,
}

mod defaults {
    pub fn replicas() -> u32 {
        1
    }
    pub fn stop_signal() -> String {
        "SIGTERM".into()
    }
    pub fn stop_timeout_ms() -> u64 {
        10_000
    }
    pub fn ready_timeout_ms() -> u64 {
        60_000
    }
    pub fn restart_after_failed_checks() -> u32 {
        3
    }
    pub fn restart_backoff_ms() -> Vec<u64> {
        vec![0, 1_000, 5_000, 30_000]
    }
    pub fn stable_after_ms() -> u64 {
        60_000
    }
    pub fn max_restarts() -> u32 {
        5
    }
    pub fn restart_window_ms() -> u64 {
        60_000
    }
    pub fn max_processes() -> u32 {
        16
    }
}

/// The stop signals a `stop_signal` may name.
pub const STOP_SIGNALS: [&str; 6] = [
    "SIGTERM", "SIGINT", "SIGQUIT", "SIGHUP", "SIGUSR1", "SIGUSR2",
];

impl ProcessConfig {
    /// Checks what types cannot say.
    pub(super) fn validate(&self) -> Result<(), Invalid> {
        if self.command.trim().is_empty() {
            return Err(("command".into(), "must not be empty".into()));
        }
        in_range("replicas", u64::from(self.replicas), 0, 256)?;
        if !self.ports.is_empty() && self.ports.len() < self.replicas as usize {
            return Err((
                "ports".into(),
                format!(
                    "{} ports for {} replicas: give one per replica, or none",
                    self.ports.len(),
                    self.replicas
                ),
            ));
        }
        if self.ports.contains(&0) {
            return Err(("ports".into(), "port 0 is not a port".into()));
        }
        if !STOP_SIGNALS.contains(&self.stop_signal.as_str()) {
            return Err((
                "stop_signal".into(),
                format!("`{}`: one of {}", self.stop_signal, STOP_SIGNALS.join(", ")),
            ));
        }
        for (key, value) in [
            ("stop_timeout_ms", self.stop_timeout_ms),
            ("ready_timeout_ms", self.ready_timeout_ms),
            ("stable_after_ms", self.stable_after_ms),
            ("restart_window_ms", self.restart_window_ms),
        ] {
            in_range(key, value, 1, MAX_WAIT_MS)?;
        }
        in_range("max_processes", u64::from(self.max_processes), 1, 4096)?;
        if self.restart_backoff_ms.is_empty() {
            return Err(("restart_backoff_ms".into(), "at least one tier".into()));
        }
        for (i, wait) in self.restart_backoff_ms.iter().enumerate() {
            in_range(&format!("restart_backoff_ms[{i}]"), *wait, 0, MAX_WAIT_MS)?;
        }
        Ok(())
    }
}
