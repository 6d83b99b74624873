//! Where the configuration is kept: this machine's state file (`[store]
//! kind = "file"`, [`crate::control`]), or an etcd cluster shared by every
//! replica (`kind = "etcd"`), as APISIX keeps its configuration in etcd.
//!
//! With etcd, what replicas **share** ([`Shared`]: routes, pools and their
//! static instances, the grace and cooldown settings) is one JSON document
//! at `PREFIX config`. What stays **per replica** is read from each one's
//! file (listeners, admin, runtime, plugin cache, MCP session keys, the
//! store itself) or learned by it: instances of managed pools and
//! discovered instances, health, breakers and sticky tables (as in Envoy,
//! each replica judges its upstreams itself).
//!
//! - **Start**: the document is read (and written from the file's pools
//!   when etcd has none yet: the first replica seeds it); etcd unreachable
//!   → the local cached copy (`cache_file`) with a warning, else the file.
//! - **Follow**: a watch on the prefix applies each new revision of the
//!   document; a watch that fell behind a compaction, or broke, resyncs
//!   from a fresh read (reconnecting with exponential backoff and jitter,
//!   100 ms to 5 s). The document is also read every 10 s, so a connection
//!   that died silently is noticed.
//! - **Write** (the admin API): the replica first catches up with etcd (a
//!   linearizable read), then applies the change on top and commits it
//!   with a transaction conditioned on the document's `mod_revision` it
//!   was based on, and acknowledges only after etcd committed. A write
//!   that lost the race to another replica's gets 409 naming both
//!   revisions (nothing written, never a lost update); `If-Match: "N"` on
//!   a request makes revision N its precondition. etcd unreachable → 503.
//! - **Plugins** uploaded through the API ([`plugins`]) are stored
//!   content-addressed, in chunks.
//!
//! Plugin files under this replica's `admin.plugins_dir` are written in the
//! document as `$plugins_dir/NAME.wasm` and read back under the reading
//! replica's own `plugins_dir`, so replicas need not share a directory
//! layout for uploaded plugins; other plugin paths must exist on every
//! replica.

pub mod etcd;
pub mod plugins;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;

use self::etcd::{Etcd, EtcdError, Kv, WatchEvent, b64, prefix_end};
use crate::config::{Config, EtcdStoreConfig, PoolConfig, StoreConfig};
use crate::control::ControlPlane;
use crate::status::SyncState;

/// How often a replica that follows etcd reads it besides the watch.
const CHECK: Duration = Duration::from_secs(10);

/// How a plugin path under the writing replica's `plugins_dir` is written
/// in the shared document.
const PLUGINS_DIR: &str = "$plugins_dir";

/// What replicas share: the document at `PREFIX config`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Shared {
    routes: Vec<crate::config::RouteConfig>,
    pools: BTreeMap<String, PoolConfig>,
    shutdown_grace_ms: u64,
    event_cooldown_ms: u64,
}

/// Whether `instance` of `pool` is this replica's own: a managed pool's
/// replica, or discovered.
fn is_local(pool: &PoolConfig, instance: &crate::config::InstanceConfig) -> bool {
    pool.process.is_some() || instance.labels.contains_key(crate::discovery::LABEL)
}

fn plugins_dir(config: &Config) -> Option<&Path> {
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

/// The configuration to start with: the state file's when it exists
/// (the last acknowledged configuration) with `config`'s `listeners`,
/// `admin`, `plugin_cache` and `plugin_fuel` (which change only through
/// the file), else `config`.
///
/// # Errors
/// A reason naming the state file when it exists but cannot be read,
/// parsed or validated.
pub fn restore(config: Config) -> Result<Config, String> {
    let Some(path) = config.admin.as_ref().map(|a| a.state_file.clone()) else {
        return Ok(config);
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(config),
        Err(e) => return Err(format!("state file `{}`: {e}", path.display())),
    };
    let mut restored: Config =
        serde_json::from_str(&text).map_err(|e| format!("state file `{}`: {e}", path.display()))?;
    // Those two change only through the file (and a restart).
    restored.listeners = config.listeners;
    restored.admin = config.admin;
    restored.plugin_cache = config.plugin_cache;
    restored.plugin_fuel = config.plugin_fuel;
    restored.store = config.store;
    restored
        .check(&crate::loaders::Loaders)
        .map_err(|(key, reason)| format!("state file `{}`: {key}: {reason}", path.display()))?;
    tracing::info!(state_file = %path.display(), "configuration restored from the state file (it wins over the config file)");
    Ok(restored)
}

/// Writes `value` as JSON to `path` atomically: a temp file beside it,
/// fsync, rename over `path`, fsync of the directory — after a crash the
/// file is the old or the new content, never a mix.
///
/// # Errors
/// The I/O error.
pub fn write_atomically(path: &Path, value: &impl serde::Serialize) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let text = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
    let mut file = tempfile::NamedTempFile::new_in(dir)?;
    file.write_all(&text)?;
    file.as_file().sync_all()?;
    file.persist(path).map_err(|e| e.error)?;
    std::fs::File::open(dir)?.sync_all()
}

/// The etcd store of a replica.
pub struct EtcdStore {
    client: Etcd,
    prefix: String,
    cache_file: PathBuf,
    state: Mutex<SyncState>,
}

/// The cached copy: the last shared document applied and its revision.
#[derive(Serialize, Deserialize)]
struct Cached {
    revision: i64,
    shared: Shared,
}

impl EtcdStore {
    fn new(settings: &EtcdStoreConfig) -> Result<Self, String> {
        let tls = settings
            .tls
            .as_ref()
            .map(|t| crate::tls::UpstreamTls::load(Some(t), Vec::new()))
            .transpose()
            .map_err(|(k, r)| format!("store.tls.{k}: {r}"))?
            .map(Arc::new);
        let credentials = settings
            .credentials()
            .map_err(|(k, r)| format!("store.{k}: {r}"))?;
        let client = Etcd::new(
            &settings.endpoints,
            tls,
            credentials,
            Duration::from_millis(settings.timeout_ms),
        )
        .map_err(|e| format!("store.endpoints: {e}"))?;
        Ok(Self {
            client,
            prefix: settings.prefix.clone(),
            cache_file: settings.cache_file.clone(),
            state: Mutex::new(SyncState {
                kind: "etcd",
                in_sync: false,
                revision: 0,
                loaded_from: "etcd",
                error: None,
                refused: None,
            }),
        })
    }

    fn config_key(&self) -> Vec<u8> {
        format!("{}config", self.prefix).into_bytes()
    }

    /// Where the replica stands.
    pub fn state(&self) -> SyncState {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SyncState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set_error(&self, error: Option<String>) {
        let mut state = self.lock();
        state.in_sync = error.is_none();
        state.error = error;
    }

    /// Records that `revision` is applied (and cached).
    pub fn applied(&self, revision: i64, shared: &Shared) {
        {
            let mut state = self.lock();
            state.revision = revision;
            state.refused = None;
        }
        let cached = Cached {
            revision,
            shared: shared.clone(),
        };
        if let Err(error) = write_atomically(&self.cache_file, &cached) {
            tracing::warn!(cache_file = %self.cache_file.display(), %error, "cannot write the cached copy of the configuration");
        }
    }

    /// The shared document and its revision (`None`: never written).
    ///
    /// # Errors
    /// etcd unreachable, or the document is not valid.
    pub async fn read_document(&self) -> Result<Option<(Shared, i64)>, String> {
        let (kvs, _) = self
            .client
            .range(&self.config_key(), None)
            .await
            .map_err(|e| e.to_string())?;
        kvs.first().map(parse_document).transpose()
    }

    /// Commits `shared` if the document is still at `base` (0: absent):
    /// `Ok(Ok(revision))` committed, `Ok(Err(newer))` another write came
    /// first (the document and its revision now).
    ///
    /// # Errors
    /// etcd unreachable or refusing.
    pub async fn commit(
        &self,
        base: i64,
        shared: &Shared,
    ) -> Result<Result<i64, Option<(Shared, i64)>>, EtcdError> {
        let key = self.config_key();
        let value = serde_json::to_vec(shared).unwrap_or_default();
        let (committed, responses, revision) = self
            .client
            .txn(
                vec![json!({ "key": b64(&key), "target": "MOD", "result": "EQUAL", "mod_revision": base.to_string() })],
                vec![json!({ "request_put": { "key": b64(&key), "value": b64(&value) } })],
                vec![json!({ "request_range": { "key": b64(&key) } })],
            )
            .await?;
        if committed {
            return Ok(Ok(revision));
        }
        let newer = responses
            .first()
            .map(Etcd::kvs_of)
            .unwrap_or_default()
            .first()
            .and_then(|kv| parse_document(kv).ok());
        Ok(Err(newer))
    }
}

/// Runs `future` to completion from synchronous code on the runtime's
/// threads (a blocking-pool thread or, via `block_in_place`, a worker of
/// the multi-threaded runtime).
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    let handle = tokio::runtime::Handle::current();
    tokio::task::block_in_place(|| handle.block_on(future))
}

fn parse_document(kv: &Kv) -> Result<(Shared, i64), String> {
    serde_json::from_slice::<Shared>(&kv.value)
        .map(|shared| (shared, kv.mod_revision))
        .map_err(|e| {
            format!(
                "the configuration in etcd (revision {}) is not valid: {e}",
                kv.mod_revision
            )
        })
}

/// Where a replica keeps its configuration.
pub enum Store {
    /// The state file (none without an admin API).
    File(Option<PathBuf>),
    /// etcd.
    Etcd(Arc<EtcdStore>),
}

impl Store {
    /// Where the replica stands, given the `revision` it applied.
    pub fn state(&self, revision: i64) -> SyncState {
        match self {
            Store::File(_) => SyncState {
                kind: "file",
                in_sync: true,
                revision,
                loaded_from: "file",
                error: None,
                refused: None,
            },
            Store::Etcd(store) => store.state(),
        }
    }
}

/// The configuration to start with, the store it is kept in and its
/// revision: for `file`, [`restore`]; for `etcd`, the shared
/// document (seeded from `config` when etcd has none, the plugins it loads
/// fetched first), else the cached copy, else `config`, each over this
/// replica's own settings.
///
/// # Errors
/// A reason naming the file or key: the state file or cached copy cannot
/// be read, the store's settings are wrong, or no configuration is valid.
pub async fn open(config: Config) -> Result<(Config, Store, i64), String> {
    let settings = match &config.store {
        StoreConfig::File => {
            let state_file = config.admin.as_ref().map(|a| a.state_file.clone());
            return Ok((restore(config)?, Store::File(state_file), 0));
        }
        StoreConfig::Etcd(settings) => settings.clone(),
    };
    let store = Arc::new(EtcdStore::new(&settings)?);
    let from_etcd = async {
        if let Some(dir) = plugins_dir(&config) {
            plugins::fetch_all(&store, dir).await?;
        }
        match store.read_document().await? {
            Some((shared, revision)) => Ok::<_, String>((shared, revision)),
            None => {
                // The first replica: the file's pools become the shared ones.
                let shared = Shared::of(&config);
                match store.commit(0, &shared).await.map_err(|e| e.to_string())? {
                    Ok(revision) => {
                        tracing::info!(revision, prefix = %store.prefix, "etcd had no configuration: stored this replica's");
                        Ok((shared, revision))
                    }
                    Err(Some(theirs)) => Ok(theirs),
                    Err(None) => Err("the configuration in etcd changed while seeding it".into()),
                }
            }
        }
    };
    let (config, revision, loaded_from) = match from_etcd.await {
        Ok((shared, revision)) => {
            let next = shared.clone().into_config(&config);
            next.check(&crate::loaders::Loaders)
                .map_err(|(key, reason)| {
                    format!("the configuration in etcd (revision {revision}): {key}: {reason}")
                })?;
            store.set_error(None);
            store.applied(revision, &shared);
            (next, revision, "etcd")
        }
        Err(why) => {
            store.set_error(Some(why.clone()));
            match read_cache(&settings.cache_file)? {
                Some(cached) => {
                    tracing::warn!(cache_file = %settings.cache_file.display(), revision = cached.revision, "etcd is unreachable ({why}): serving the cached copy of the configuration");
                    let next = cached.shared.into_config(&config);
                    next.check(&crate::loaders::Loaders)
                        .map_err(|(key, reason)| {
                            format!("{}: {key}: {reason}", settings.cache_file.display())
                        })?;
                    (next, cached.revision, "cache")
                }
                None => {
                    tracing::warn!(
                        "etcd is unreachable ({why}) and there is no cached copy: serving the config file until etcd answers"
                    );
                    (config, 0, "file")
                }
            }
        }
    };
    {
        let mut state = store.lock();
        state.revision = revision;
        state.loaded_from = loaded_from;
    }
    Ok((config, Store::Etcd(store), revision))
}

fn read_cache(path: &Path) -> Result<Option<Cached>, String> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Follows the store until `control` is dropped: applies every new revision
/// of the shared document and every plugin uploaded on another replica.
pub fn follow(
    control: &Arc<dyn ControlPlane>,
    store: Arc<EtcdStore>,
) -> tokio::task::JoinHandle<()> {
    let control = Arc::downgrade(control);
    tokio::spawn(async move {
        let mut backoff = Backoff::default();
        loop {
            let outcome = sync_and_watch(&control, &store).await;
            if control.strong_count() == 0 {
                return;
            }
            match outcome {
                Ok(()) => backoff = Backoff::default(),
                Err(why) => {
                    // Said once per outage; the retries are quiet.
                    if store.lock().in_sync {
                        tracing::warn!("the config store is out of reach, reconnecting: {why}");
                    } else {
                        tracing::debug!("the config store is still out of reach: {why}");
                    }
                    store.set_error(Some(why));
                }
            }
            tokio::time::sleep(backoff.next_delay()).await;
        }
    })
}

/// Exponential backoff with "equal jitter" (AWS's "Exponential Backoff
/// And Jitter"): a delay doubling from 100 ms to 5 s, of which a random
/// half is waited, so that replicas that lost etcd together do not all
/// come back at once.
#[derive(Default)]
pub struct Backoff(u32);

impl Backoff {
    /// The next delay to wait.
    pub fn next_delay(&mut self) -> Duration {
        let cap = 100u64.saturating_mul(1 << self.0.min(6)).min(5000);
        self.0 = self.0.saturating_add(1);
        Duration::from_millis(fastrand::u64(cap / 2..=cap))
    }
}

/// One round: read everything (plugins, then the document), then watch
/// from there. `Ok` when the watch asked for a resync (compaction).
async fn sync_and_watch(
    control: &Weak<dyn ControlPlane>,
    store: &Arc<EtcdStore>,
) -> Result<(), String> {
    let dir = control
        .upgrade()
        .and_then(|c| plugins_dir(&c.config()).map(Path::to_path_buf));
    if let Some(dir) = &dir {
        plugins::fetch_all(store, dir).await?;
    }
    let revision = read_and_adopt(control, store).await?;
    if !store.lock().in_sync {
        tracing::info!(revision, "the config store is in sync again");
    }
    store.set_error(None);
    let (events, mut received) = tokio::sync::mpsc::channel(64);
    // From `PREFIX config` to the prefix's end: the document and the plugin
    // names (`PREFIX plugins/…`), not the chunks (`PREFIX blobs/…` sorts
    // before), whose megabytes each replica reads once, by range, anyway.
    let (from, end) = (store.config_key(), prefix_end(store.prefix.as_bytes()));
    let watch = store.client.watch(&from, &end, revision + 1, &events);
    tokio::pin!(watch);
    // A watch on a connection that silently died (a partition: no FIN)
    // would wait forever: etcd is read every CHECK, which also catches a
    // revision the watch missed.
    let mut check = tokio::time::interval_at(tokio::time::Instant::now() + CHECK, CHECK);
    loop {
        tokio::select! {
            ended = &mut watch => {
                // Apply what arrived before the stream ended.
                while let Ok(event) = received.try_recv() {
                    handle(control, store, dir.as_deref(), event).await;
                }
                return ended.map_err(|e| e.to_string());
            }
            Some(event) = received.recv() => {
                if !handle(control, store, dir.as_deref(), event).await {
                    return Ok(());
                }
            }
            _ = check.tick() => {
                read_and_adopt(control, store).await?;
            }
        }
    }
}

/// Reads the shared document and applies it when newer; etcd's revision.
async fn read_and_adopt(
    control: &Weak<dyn ControlPlane>,
    store: &Arc<EtcdStore>,
) -> Result<i64, String> {
    let (kvs, revision) = store
        .client
        .range(&store.config_key(), None)
        .await
        .map_err(|e| e.to_string())?;
    if let Some(kv) = kvs.first() {
        adopt(control, store, kv).await;
    }
    Ok(revision)
}

/// Applies one watch event; false when a resync is needed.
async fn handle(
    control: &Weak<dyn ControlPlane>,
    store: &Arc<EtcdStore>,
    dir: Option<&Path>,
    event: WatchEvent,
) -> bool {
    let changes = match event {
        WatchEvent::Compacted(revision) => {
            tracing::info!(
                revision,
                "the config watch fell behind etcd's compaction: reading again"
            );
            return false;
        }
        WatchEvent::Changed(changes, _) => changes,
    };
    let config_key = store.config_key();
    for (key, kv) in changes {
        if key == config_key {
            if let Some(kv) = kv {
                adopt(control, store, &kv).await;
            }
        } else if let Some(dir) = dir
            && let Some(name) = plugins::name_of(store, &key)
        {
            plugins::apply_change(store, dir, name).await;
        }
    }
    true
}

/// Applies the document `kv` when newer than what `control` has.
async fn adopt(control: &Weak<dyn ControlPlane>, store: &Arc<EtcdStore>, kv: &Kv) {
    let Some(control) = control.upgrade() else {
        return;
    };
    let document = parse_document(kv);
    let store = Arc::clone(store);
    let _ = tokio::task::spawn_blocking(move || {
        let refused = match document {
            Ok((shared, revision)) => match control.adopt(shared, revision) {
                Ok(_) => return,
                Err(error) => format!("revision {revision}: {error}"),
            },
            Err(error) => error,
        };
        tracing::error!(error = %refused, "a configuration from etcd was refused: this replica keeps serving the one it has");
        store.lock().refused = Some(refused);
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StrategyConfig;

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
    fn backoff_grows_with_jitter_to_five_seconds() {
        let mut backoff = Backoff::default();
        let first = backoff.next_delay();
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
        let last = (0..20).map(|_| backoff.next_delay()).last().unwrap();
        assert!(last >= Duration::from_millis(2500) && last <= Duration::from_secs(5));
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
