//! The store in use, the file or etcd: opened at start (etcd read, or
//! seeded from the file, or its cached copy), then written through.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::etcd::{Etcd, EtcdError, Kv, b64};
use super::shared::plugins_dir;
use super::{Shared, plugins, restore, write_atomically};
use crate::config::{Config, EtcdStoreConfig, StoreConfig};
use crate::status::SyncState;

/// The etcd store of a replica.
pub struct EtcdStore {
    pub(super) client: Etcd,
    pub(super) prefix: String,
    pub(super) cache_file: PathBuf,
    pub(super) state: Mutex<SyncState>,
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

    pub(super) fn config_key(&self) -> Vec<u8> {
        format!("{}config", self.prefix).into_bytes()
    }

    /// Where the replica stands.
    pub fn state(&self) -> SyncState {
        self.lock().clone()
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, SyncState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn set_error(&self, error: Option<String>) {
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

pub(super) fn parse_document(kv: &Kv) -> Result<(Shared, i64), String> {
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
