//! How a pool or route names a plugin: one shape for the four kinds.
//!
//! ```toml
//! strategy = { kind = "plugin", plugin = { path = "canary_split.wasm", config = { percent = 10 } }, fallback = { kind = "round-robin" } }
//! health   = { kind = "plugin", plugin = { path = "probe.wasm" }, fallback = { kind = "http" }, path = "/healthz" }
//! failover = { kind = "plugin", plugin = { path = "retry_schedule.wasm" }, fallback = { kind = "retry" } }
//! resolver = { kind = "plugin", plugin = { path = "vote.wasm" }, fallback = { kind = "priority" } }
//! ```
//!
//! `plugin` is a [`PluginRef`] (the component, its `configure` input and its
//! sandbox limits); `fallback` is the built-in that makes a decision the
//! plugin faulted on, written as that built-in is written at the same key.
//!
//! Spellings of earlier versions still load, each with a deprecation
//! warning that gives the new spelling ([`Deprecated`]): the plugin's keys
//! flat beside `kind = "plugin"` in `strategy`, a strategy fallback named by
//! a string (`fallback = "random"`), and the pool key `failover_plugin`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::types::{Invalid, in_range};

/// A plugin component, its `configure` input and its sandbox limits: the
/// `plugin` table of every plugin kind.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PluginRef {
    /// The `.wasm` component; relative to the config file's directory.
    #[schema(value_type = String)]
    pub path: PathBuf,
    /// Passed to the plugin's `configure` as JSON. Default `{}`.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub config: toml::Table,
    /// CPU deadline of one plugin call, ms (epoch ticks of 1 ms), 1..=60000.
    /// Default 5.
    #[serde(default = "defaults::call_deadline_ms")]
    pub call_deadline_ms: u64,
    /// Linear-memory cap of the plugin instance, MiB, 1..=4096. Default 16.
    #[serde(default = "defaults::memory_limit_mib")]
    pub memory_limit_mib: u64,
    /// When a faulting plugin is set aside. Default: see [`QuarantineConfig`].
    #[serde(default)]
    pub quarantine: QuarantineConfig,
    /// Fuel (≈ wasm instructions) one call may burn: a deterministic CPU
    /// limit beside the deadline. Default: none (the deadline alone).
    pub fuel_per_call: Option<u64>,
    /// Extras granted beyond the `host` interface, e.g. `["clock"]`.
    /// Default: none (deny by default).
    #[serde(default)]
    pub capabilities: Vec<Capability>,
}

/// An extra a plugin may be granted; a plugin calling one it was not
/// granted traps (a fault, so the built-in serves that decision).
///
/// | name | what the plugin gets |
/// |---|---|
/// | `clock` | `wasi:clocks/monotonic-clock` `now`/`resolution` (ns since an arbitrary start) and `wasi:clocks/wall-clock` `now`/`resolution`; no sleeping (`subscribe-*` trap) |
/// | `random` | `wasi:random/random` and `wasi:random/insecure`: bytes and `u64`s from the OS's CSPRNG (at most 64 KiB per call) |
/// | `kv` | `switchyard:plugin/kv` (since WIT 0.1.1): a 64 KiB key-value store per plugin file that survives instance rebuilds and reloads, not restarts |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Capability {
    /// Monotonic and wall clocks (read only).
    Clock,
    /// Random numbers.
    Random,
    /// A key-value store that outlives instances.
    Kv,
}

/// Quarantine of a plugin that faults repeatedly: after `faults` faults
/// within `window_ms`, the built-in default makes every decision of the
/// plugin for `backoff_ms`; then the plugin is tried again, and a fault on
/// that first try sets it aside again for twice as long (up to
/// `max_backoff_ms`) — the circuit-breaker pattern, applied to a plugin. A
/// success ends the doubling. Faults are counted either way.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct QuarantineConfig {
    /// Faults within the window that quarantine; 0 = never. Default 5.
    pub faults: u32,
    /// The window, ms. Default 10000.
    pub window_ms: u64,
    /// First quarantine, ms; doubles on each quarantine without a success
    /// in between. Default 30000.
    pub backoff_ms: u64,
    /// Longest quarantine, ms. Default 600000.
    pub max_backoff_ms: u64,
}

impl Default for QuarantineConfig {
    fn default() -> Self {
        Self {
            faults: 5,
            window_ms: 10_000,
            backoff_ms: 30_000,
            max_backoff_ms: 600_000,
        }
    }
}

impl QuarantineConfig {
    fn validate(&self) -> Result<(), Invalid> {
        if self.faults > 0 && (self.window_ms == 0 || self.backoff_ms == 0) {
            return Err((
                "quarantine.window_ms".into(),
                "window_ms and backoff_ms must be > 0".into(),
            ));
        }
        if self.max_backoff_ms < self.backoff_ms {
            return Err((
                "quarantine.max_backoff_ms".into(),
                "must be >= backoff_ms".into(),
            ));
        }
        Ok(())
    }
}

impl PluginRef {
    /// Checks the file exists and the limits are in range.
    ///
    /// # Errors
    /// `(key within the plugin table, reason)`.
    pub(super) fn validate(&self) -> Result<(), Invalid> {
        if !self.path.is_file() {
            return Err((
                "path".into(),
                format!("plugin file `{}` does not exist", self.path.display()),
            ));
        }
        // A decision is microseconds; a minute is the most a call may block
        // a data-path thread.
        in_range("call_deadline_ms", self.call_deadline_ms, 1, 60_000)?;
        in_range("memory_limit_mib", self.memory_limit_mib, 1, 4096)?;
        if self.fuel_per_call == Some(0) {
            return Err(("fuel_per_call".into(), "must be >= 1".into()));
        }
        self.quarantine.validate()
    }

    /// The plugin's `config` as JSON text, for its `configure`.
    pub fn config_json(&self) -> String {
        serde_json::to_string(&self.config).unwrap_or_else(|_| "{}".into())
    }

    /// The plugin of a deprecated flat spelling: the keys of a [`PluginRef`]
    /// written beside `kind` instead of in a `plugin` table. `None` when
    /// there are none (the new spelling, or a missing plugin).
    ///
    /// # Errors
    /// A key a plugin table does not have, or a mistyped value, as the
    /// message serde gives.
    pub(super) fn from_flat_keys(keys: toml::Table) -> Result<Option<Self>, String> {
        if keys.is_empty() {
            return Ok(None);
        }
        Self::deserialize(toml::Value::Table(keys))
            .map(Some)
            .map_err(|e| e.message().to_string())
    }
}

/// The checks of a `kind = "plugin"` table: its `plugin`, then its
/// `fallback`, which must be a built-in (`fallback_is_plugin` false) and
/// pass `check_fallback`.
///
/// # Errors
/// `(key within the table, reason)` of the first failed check.
pub(super) fn check_plugin_kind(
    plugin: &PluginRef,
    fallback_is_plugin: bool,
    check_fallback: impl FnOnce() -> Result<(), Invalid>,
) -> Result<(), Invalid> {
    plugin
        .validate()
        .map_err(|(k, reason)| (format!("plugin.{k}"), reason))?;
    if fallback_is_plugin {
        return Err((
            "fallback".into(),
            "a plugin's fallback is a built-in, not a plugin".into(),
        ));
    }
    check_fallback().map_err(|(k, reason)| (format!("fallback.{k}"), reason))
}

/// The plugin of a `kind = "plugin"` table, whichever spelling wrote it:
/// `plugin = { … }`, or (deprecated) the same keys flat in `flat`.
///
/// # Errors
/// Both spellings at once, neither, or a bad flat key.
pub(super) fn plugin_of(
    plugin: Option<PluginRef>,
    flat: toml::Table,
) -> Result<(PluginRef, bool), String> {
    match (plugin, PluginRef::from_flat_keys(flat)?) {
        (Some(plugin), None) => Ok((plugin, false)),
        (None, Some(plugin)) => Ok((plugin, true)),
        (Some(_), Some(_)) => Err(
            "write the plugin's keys (`path`, `config`, limits) in `plugin = { … }` only, \
             not beside it"
                .into(),
        ),
        (None, None) => Err(
            "missing `plugin`: the component and its limits, e.g. `plugin = { path = \"x.wasm\" }`"
                .into(),
        ),
    }
}

/// The new spelling of a value read from a deprecated one, for the warning
/// given at load ([`Config::deprecations`](super::Config::deprecations));
/// never serialized, so a config written back (the admin API, the store)
/// is in the new spelling.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Deprecated(pub Option<&'static str>);

/// A built-in `T` written as a table (`{ kind = "random" }`) or, deprecated,
/// by its name alone (`"random"`): the name becomes `{ kind = NAME }`.
#[derive(Debug)]
pub(super) struct NameOrTable<T> {
    /// The built-in read.
    pub value: T,
    /// Whether it was written by name (the deprecated spelling).
    pub by_name: bool,
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for NameOrTable<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Visit<T> {
            type Value = NameOrTable<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a table such as `{ kind = \"round-robin\" }`")
            }
            fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<Self::Value, E> {
                let table = serde::de::value::MapDeserializer::<_, E>::new(std::iter::once((
                    "kind",
                    name.to_owned(),
                )));
                Ok(NameOrTable {
                    value: T::deserialize(table)?,
                    by_name: true,
                })
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                map: M,
            ) -> Result<Self::Value, M::Error> {
                Ok(NameOrTable {
                    value: T::deserialize(serde::de::value::MapAccessDeserializer::new(map))?,
                    by_name: false,
                })
            }
        }
        deserializer.deserialize_any(Visit(std::marker::PhantomData))
    }
}

mod defaults {
    pub fn call_deadline_ms() -> u64 {
        5
    }
    pub fn memory_limit_mib() -> u64 {
        16
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StrategyConfig;

    #[test]
    fn a_built_in_is_read_from_its_name_or_its_table() {
        let by_name: NameOrTable<StrategyConfig> =
            serde_json::from_value(serde_json::json!("least-connections")).unwrap();
        assert!(by_name.by_name);
        assert!(
            matches!(by_name.value, StrategyConfig::LeastConnections(c) if c.choice_count == 2)
        );
        let table: NameOrTable<StrategyConfig> =
            toml::from_str::<toml::Table>("f = { kind = \"least-connections\", choice_count = 3 }")
                .unwrap()["f"]
                .clone()
                .try_into()
                .unwrap();
        assert!(!table.by_name);
        assert!(matches!(table.value, StrategyConfig::LeastConnections(c) if c.choice_count == 3));
        let unknown =
            serde_json::from_value::<NameOrTable<StrategyConfig>>(serde_json::json!("nope"));
        assert!(
            unknown
                .unwrap_err()
                .to_string()
                .contains("unknown variant `nope`")
        );
    }
}
