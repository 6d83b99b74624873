//! The `kv` capability: a small key-value store per plugin file, kept by
//! the host so that it outlives instances (a rebuild after a trap, a reload
//! of a new version of the file). Not persisted across restarts.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

/// Bound of one store: keys plus values, bytes (64 KiB).
pub const KV_MAX_BYTES: usize = 64 << 10;

/// One plugin's store. Calls are synchronous and short (a map lookup under
/// a mutex no await ever holds).
#[derive(Debug, Default)]
pub struct KvStore {
    entries: Mutex<Entries>,
}

#[derive(Debug, Default)]
struct Entries {
    map: BTreeMap<String, Vec<u8>>,
    bytes: usize,
}

impl KvStore {
    /// The value under `key`.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.lock().map.get(key).cloned()
    }

    /// Stores `value` under `key`, unless the store would then exceed
    /// [`KV_MAX_BYTES`] (the error says by how much; nothing changes).
    pub fn set(&self, key: String, value: Vec<u8>) -> Result<(), String> {
        let mut entries = self.lock();
        let old = entries.map.get(&key).map_or(0, |v| key.len() + v.len());
        let bytes = entries.bytes - old + key.len() + value.len();
        if bytes > KV_MAX_BYTES {
            return Err(format!(
                "the store would hold {bytes} bytes, over its {KV_MAX_BYTES}-byte bound"
            ));
        }
        entries.bytes = bytes;
        entries.map.insert(key, value);
        Ok(())
    }

    /// Removes `key`; whether it was there.
    pub fn delete(&self, key: &str) -> bool {
        let mut entries = self.lock();
        match entries.map.remove(key) {
            Some(value) => {
                entries.bytes -= key.len() + value.len();
                true
            }
            None => false,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The stores of a host, by plugin file path; a store lives as long as the
/// host (one per file ever loaded with the grant, at most
/// [`KV_MAX_BYTES`] each).
#[derive(Debug, Default)]
pub struct KvStores(Mutex<HashMap<PathBuf, Arc<KvStore>>>);

impl KvStores {
    /// The store of the plugin at `path`, created empty on first use.
    pub fn of(&self, path: &Path) -> Arc<KvStore> {
        Arc::clone(
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(path.to_path_buf())
                .or_default(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_counts_keys_and_values_and_a_refused_set_changes_nothing() {
        let store = KvStore::default();
        store.set("a".into(), vec![0; KV_MAX_BYTES - 1]).unwrap();
        let err = store.set("b".into(), vec![0; 1]).unwrap_err();
        assert!(err.contains(&format!("{}", KV_MAX_BYTES + 2)), "{err}");
        assert_eq!(store.get("b"), None);
        // Replacing a value frees the old one first.
        store.set("a".into(), vec![1; 10]).unwrap();
        store.set("b".into(), vec![2; 1000]).unwrap();
        assert!(store.delete("a"));
        assert!(!store.delete("a"));
        assert_eq!(store.get("b").map(|v| v.len()), Some(1000));
    }

    #[test]
    fn stores_are_per_path_and_shared_by_loads_of_the_same_file() {
        let stores = KvStores::default();
        stores
            .of(Path::new("/p/a.wasm"))
            .set("k".into(), b"v".to_vec())
            .unwrap();
        assert_eq!(
            stores.of(Path::new("/p/a.wasm")).get("k"),
            Some(b"v".to_vec())
        );
        assert_eq!(stores.of(Path::new("/p/b.wasm")).get("k"), None);
    }
}
