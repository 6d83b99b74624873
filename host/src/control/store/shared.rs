//! What replicas share: the document at `PREFIX config`, made from a
//! replica's config and applied to one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::{Config, FilterConfig, PoolConfig};

/// How a plugin path under the writing replica's `plugins_dir` is written
/// in the shared document.
const PLUGINS_DIR: &str = "$plugins_dir";

/// What replicas share: the document at `PREFIX config`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Shared {
    routes: Vec<crate::config::RouteConfig>,
    pools: BTreeMap<String, PoolConfig>,
    /// Absent from documents written before filters existed.
    #[serde(default)]
    filters: BTreeMap<String, FilterConfig>,
    shutdown_grace_ms: u64,
    event_cooldown_ms: u64,
}

/// Whether `instance` of `pool` is this replica's own: a managed pool's
/// replica, or discovered.
fn is_local(pool: &PoolConfig, instance: &crate::config::InstanceConfig) -> bool {
    pool.process.is_some() || instance.labels.contains_key(crate::discovery::LABEL)
}

pub(super) fn plugins_dir(config: &Config) -> Option<&Path> {
    config.admin.as_ref().map(|a| a.plugins_dir.as_path())
}

/// `config`'s plugins directory as an absolute path (the config file's
/// directory may have been given as a relative one).
fn absolute_plugins_dir(config: &Config) -> Option<PathBuf> {
    plugins_dir(config).and_then(|dir| std::path::absolute(dir).ok())
}

impl Shared {
    /// What of `config` replicas share: its own instances left out, plugin
    /// paths under its `plugins_dir` made portable.
    pub fn of(config: &Config) -> Self {
        let mut copy = config.clone();
        for pool in copy.pools.values_mut() {
            let local: Vec<bool> = pool.instances.iter().map(|i| is_local(pool, i)).collect();
            let mut keep = local.into_iter().map(|l| !l);
            pool.instances.retain(|_| keep.next().unwrap_or(true));
        }
        if let Some(dir) = absolute_plugins_dir(config) {
            for path in copy.loaded_files_mut() {
                let absolute = std::path::absolute(&*path).unwrap_or_else(|_| path.clone());
                if let Ok(name) = absolute.strip_prefix(&dir) {
                    *path = Path::new(PLUGINS_DIR).join(name);
                }
            }
        }
        Self {
            routes: copy.routes,
            pools: copy.pools,
            filters: copy.filters,
            shutdown_grace_ms: copy.shutdown_grace_ms,
            event_cooldown_ms: copy.event_cooldown_ms,
        }
    }

    /// Whether `self` and `other` say the same (compared as JSON: the
    /// config types have no `PartialEq` of their own).
    pub fn same_as(&self, other: &Shared) -> bool {
        crate::config::same_json(self, other)
    }

    /// `local` with what is shared replaced by this: the replica's own
    /// settings and instances (of pools that still have them) kept, plugin
    /// paths put under its `plugins_dir`.
    pub fn into_config(self, local: &Config) -> Config {
        let mut config = local.clone();
        config.routes = self.routes;
        config.filters = self.filters;
        config.shutdown_grace_ms = self.shutdown_grace_ms;
        config.event_cooldown_ms = self.event_cooldown_ms;
        config.pools = self.pools;
        for (name, pool) in &mut config.pools {
            if let Some(was) = local.pools.get(name) {
                let own = was.instances.iter().filter(|i| is_local(pool, i));
                let own: Vec<_> = own
                    .filter(|i| pool.instances.iter().all(|s| s.url != i.url))
                    .cloned()
                    .collect();
                pool.instances.extend(own);
            }
        }
        if let Some(dir) = absolute_plugins_dir(local) {
            for path in config.loaded_files_mut() {
                if let Ok(name) = path.strip_prefix(PLUGINS_DIR) {
                    *path = dir.join(name);
                }
            }
        }
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StrategyConfig;
    use crate::store::{restore, write_atomically};

    /// A replica's config in `dir`: pool `p` with a plugin strategy from
    /// its plugins dir, a static instance and one discovered; pool `m`
    /// managed (its instance is a replica of this machine).
    fn replica(dir: &Path, extra: &str) -> Config {
        std::fs::create_dir_all(dir.join("plugins")).unwrap();
        std::fs::write(dir.join("plugins/b.wasm"), b"").unwrap();
        let text = format!(
            "[[listeners]]\nlisten = \"127.0.0.1:0\"\n[admin]\nplugins_dir = \"plugins\"\n\
             [[routes]]\npool = \"p\"\n[pools.p]\n\
             strategy = {{ kind = \"plugin\", plugin = {{ path = \"plugins/b.wasm\" }} }}\n\
             instances = [{{ url = \"http://10.0.0.1:80\" }}, \
             {{ url = \"http://10.0.0.9:80\", labels = {{ discovered = \"dns\" }} }}{extra}]\n\
             [pools.m]\nprocess = {{ command = \"true\" }}\n\
             instances = [{{ url = \"http://127.0.0.1:7000\" }}]\n"
        );
        Config::parse(&text, &dir.join("c.toml"), dir, &crate::loaders::Loaders).unwrap()
    }

    fn urls(config: &Config, pool: &str) -> Vec<String> {
        config.pools[pool]
            .instances
            .iter()
            .map(|i| i.url.clone())
            .collect()
    }

    #[test]
    fn replicas_share_static_instances_and_keep_their_own() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let writer = replica(a.path(), ", { url = \"http://10.0.0.2:80\" }");
        let reader = replica(b.path(), "");
        let shared = Shared::of(&writer);
        // Discovered and managed instances are the writer's own.
        assert_eq!(
            shared.pools["p"]
                .instances
                .iter()
                .map(|i| i.url.as_str())
                .collect::<Vec<_>>(),
            ["http://10.0.0.1:80", "http://10.0.0.2:80"]
        );
        assert!(shared.pools["m"].instances.is_empty());
        // The plugin under the writer's plugins dir is written portably…
        let StrategyConfig::Plugin(plugin) = &shared.pools["p"].strategy else {
            panic!("a plugin strategy");
        };
        assert_eq!(plugin.plugin.path, Path::new("$plugins_dir/b.wasm"));
        // …and read back under the reader's, beside the reader's own instances.
        let applied = shared.into_config(&reader);
        let StrategyConfig::Plugin(plugin) = &applied.pools["p"].strategy else {
            panic!("a plugin strategy");
        };
        assert_eq!(
            plugin.plugin.path,
            std::path::absolute(b.path().join("plugins/b.wasm")).unwrap()
        );
        assert_eq!(
            urls(&applied, "p"),
            [
                "http://10.0.0.1:80",
                "http://10.0.0.2:80",
                "http://10.0.0.9:80"
            ]
        );
        assert_eq!(urls(&applied, "m"), ["http://127.0.0.1:7000"]);
        assert!(applied.check(&crate::loaders::Loaders).is_ok());
        // Only the replica's own instances differ: nothing shared changed.
        assert!(Shared::of(&applied).same_as(&Shared::of(&writer)));
        assert!(!Shared::of(&reader).same_as(&Shared::of(&writer)));
    }

    #[test]
    fn restore_takes_the_state_but_listeners_and_admin_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let text = |listen: &str, pools: &str| {
            format!(
                "[[listeners]]\nlisten = \"{listen}\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
                 state_file = \"state.json\"\n{pools}"
            )
        };
        let one = "[pools.a]\ninstances = [{ url = \"http://127.0.0.1:1\" }]\n";
        let two = format!("{one}[pools.b]\ninstances = [{{ url = \"http://127.0.0.1:2\" }}]\n");
        let file = |t: &str| {
            Config::parse(t, Path::new("c.toml"), dir.path(), &crate::loaders::Loaders).unwrap()
        };
        // No state file: the file as it is.
        let config = restore(file(&text("127.0.0.1:8080", one))).unwrap();
        assert_eq!(config.pools.len(), 1);
        // A state file with another pool and another listener.
        let state = file(&text("127.0.0.1:9999", &two));
        write_atomically(&dir.path().join("state.json"), &state).unwrap();
        let restored = restore(file(&text("127.0.0.1:8080", one))).unwrap();
        assert_eq!(restored.pools.len(), 2, "acknowledged changes win");
        assert_eq!(
            restored.listeners[0].listen.port(),
            8080,
            "listeners come from the file"
        );
        // A corrupt state file is an error naming it, not a silent reset.
        std::fs::write(dir.path().join("state.json"), "{").unwrap();
        let err = restore(file(&text("127.0.0.1:8080", one))).unwrap_err();
        assert!(err.contains("state.json"), "{err}");
    }
}
