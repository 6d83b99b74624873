//! Plugins uploaded through the admin API, shared through etcd.
//!
//! A plugin is stored **content-addressed**: its bytes under
//! `PREFIX blobs/SHA256/NNNNN`, in chunks of [`CHUNK_BYTES`], and its name
//! as `PREFIX plugins/NAME` → `{"sha256", "size", "chunks"}`. Chunks,
//! because etcd refuses a request over 1.5 MiB (`--max-request-bytes`) and
//! is tuned for small values; a plugin is usually 100 KiB–20 MiB. Chunks
//! are written first (each its own request, idempotent: same content, same
//! keys), the name last, so a replica that sees the name finds every chunk.
//! A replica fetches the chunks, checks the sha256 of their concatenation
//! against the name's, and only then writes `plugins_dir/NAME.wasm`
//! (atomically); the plugins directory's watcher ([`crate::watch`])
//! reloads whatever loads it, as for a file dropped in by hand.
//!
//! The alternative, a shared volume or object store with etcd holding the
//! hash, would add a second system to run; chunking keeps etcd the one
//! shared dependency.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::EtcdStore;
use super::etcd::{EtcdError, b64, prefix_end};
use crate::plugin::sha256_hex;

/// Bytes per chunk: 512 KiB (683 KiB as the gateway's base64), well under
/// etcd's default request limit of 1.5 MiB.
pub const CHUNK_BYTES: usize = 512 << 10;

/// What `PREFIX plugins/NAME` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Manifest {
    sha256: String,
    size: usize,
    chunks: usize,
}

fn name_key(store: &EtcdStore, name: &str) -> Vec<u8> {
    format!("{}plugins/{name}", store.prefix).into_bytes()
}

/// Chunks live under `PREFIX blobs/`, which sorts before `PREFIX config`:
/// the follower's watch (from `config` on) does not carry them.
fn blob_prefix(store: &EtcdStore, sha256: &str) -> Vec<u8> {
    format!("{}blobs/{sha256}/", store.prefix).into_bytes()
}

/// The plugin name of `key` when it is a `PREFIX plugins/NAME` key.
pub fn name_of<'k>(store: &EtcdStore, key: &'k [u8]) -> Option<&'k str> {
    let rest = key.strip_prefix(format!("{}plugins/", store.prefix).as_bytes())?;
    std::str::from_utf8(rest).ok().filter(|n| !n.is_empty())
}

/// Stores `bytes` as the plugin `name`: chunks first, then the name; the
/// chunks of the content it replaced go unless another name has it.
///
/// # Errors
/// etcd unreachable or refusing.
pub async fn publish(store: &EtcdStore, name: &str, bytes: &[u8]) -> Result<(), EtcdError> {
    let before = names(store).await?;
    let sha256 = sha256_hex(bytes);
    let chunks = bytes.chunks(CHUNK_BYTES).collect::<Vec<_>>();
    for (i, chunk) in chunks.iter().enumerate() {
        put(store, &chunk_key(store, &sha256, i), chunk).await?;
    }
    let manifest = Manifest {
        sha256,
        size: bytes.len(),
        chunks: chunks.len(),
    };
    put(
        store,
        &name_key(store, name),
        &serde_json::to_vec(&manifest).unwrap_or_default(),
    )
    .await?;
    match orphaned(&before, name, &manifest.sha256) {
        Some(old) => store
            .client
            .txn(Vec::new(), vec![blob_deletion(store, old)], Vec::new())
            .await
            .map(drop),
        None => Ok(()),
    }
}

/// The content `name` had in `all` when no other name has it and it is not
/// `kept`: its chunks can go.
fn orphaned<'a>(all: &'a [(String, Manifest)], name: &str, kept: &str) -> Option<&'a str> {
    let (_, old) = all.iter().find(|(n, _)| n == name)?;
    let shared = all.iter().any(|(n, m)| n != name && m.sha256 == old.sha256);
    (old.sha256 != kept && !shared).then_some(old.sha256.as_str())
}

/// The operation that deletes every chunk of `sha256`.
fn blob_deletion(store: &EtcdStore, sha256: &str) -> serde_json::Value {
    let blob = blob_prefix(store, sha256);
    json!({ "request_delete_range": { "key": b64(&blob), "range_end": b64(&prefix_end(&blob)) } })
}

/// The key of chunk `index` of `sha256`.
fn chunk_key(store: &EtcdStore, sha256: &str, index: usize) -> Vec<u8> {
    let mut key = blob_prefix(store, sha256);
    key.extend_from_slice(format!("{index:05}").as_bytes());
    key
}

async fn put(store: &EtcdStore, key: &[u8], value: &[u8]) -> Result<(), EtcdError> {
    store
        .client
        .txn(
            Vec::new(),
            vec![json!({ "request_put": { "key": b64(key), "value": b64(value) } })],
            Vec::new(),
        )
        .await
        .map(drop)
}

/// Removes the plugin `name`, and its chunks unless another name has the
/// same content, in one transaction.
///
/// # Errors
/// etcd unreachable or refusing.
pub async fn remove(store: &EtcdStore, name: &str) -> Result<(), EtcdError> {
    let all = names(store).await?;
    let mut delete =
        vec![json!({ "request_delete_range": { "key": b64(&name_key(store, name)) } })];
    delete.extend(orphaned(&all, name, "").map(|old| blob_deletion(store, old)));
    store
        .client
        .txn(Vec::new(), delete, Vec::new())
        .await
        .map(drop)
}

/// Every stored plugin's name and manifest.
async fn names(store: &EtcdStore) -> Result<Vec<(String, Manifest)>, EtcdError> {
    let prefix = format!("{}plugins/", store.prefix).into_bytes();
    let (kvs, _) = store
        .client
        .range(&prefix, Some(&prefix_end(&prefix)))
        .await?;
    Ok(kvs
        .iter()
        .filter_map(|kv| {
            let name = name_of(store, &kv.key)?.to_string();
            serde_json::from_slice(&kv.value).ok().map(|m| (name, m))
        })
        .collect())
}

/// The plugins of `dir` that came from etcd, name → sha256: the file
/// `dir/.etcd-plugins.json` (not a `.wasm`, so the watcher ignores it).
/// A plugin removed from etcd while this replica was away is removed from
/// `dir` when it is back — if its file is still what etcd gave (a file put
/// there by hand since is left alone).
type Record = BTreeMap<String, String>;

fn record_path(dir: &Path) -> std::path::PathBuf {
    dir.join(".etcd-plugins.json")
}

fn read_record(dir: &Path) -> Record {
    std::fs::read(record_path(dir))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

fn write_record(dir: &Path, record: &Record) {
    let written = std::fs::create_dir_all(dir)
        .and_then(|()| super::write_atomically(&record_path(dir), record));
    if let Err(error) = written {
        tracing::warn!(dir = %dir.display(), %error, "cannot record the plugins fetched from etcd");
    }
}

/// Makes `dir` hold every stored plugin (those whose file differs are
/// fetched and written), and removes those that came from etcd and are no
/// longer there (as recorded in `dir/.etcd-plugins.json`).
///
/// # Errors
/// etcd unreachable, or a plugin whose chunks do not match its hash.
pub async fn fetch_all(store: &EtcdStore, dir: &Path) -> Result<(), String> {
    let stored = names(store).await.map_err(|e| e.to_string())?;
    let was = read_record(dir);
    let mut record = was.clone();
    // Recorded before written: a file of etcd's is never unrecorded.
    for (name, manifest) in &stored {
        record.insert(name.clone(), manifest.sha256.clone());
    }
    if record != was {
        write_record(dir, &record);
    }
    for (name, manifest) in &stored {
        fetch(store, dir, name, manifest).await?;
    }
    let gone: Vec<String> = record
        .keys()
        .filter(|name| stored.iter().all(|(n, _)| n != *name))
        .cloned()
        .collect();
    if gone.is_empty() {
        return Ok(());
    }
    for name in gone {
        let path = file(dir, &name);
        let unchanged =
            std::fs::read(&path).is_ok_and(|bytes| Some(&sha256_hex(&bytes)) == record.get(&name));
        if unchanged {
            std::fs::remove_file(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            tracing::info!(
                plugin = name,
                "plugin removed from etcd while this replica was away: removed"
            );
        }
        record.remove(&name);
    }
    write_record(dir, &record);
    Ok(())
}

/// Applies a change of `PREFIX plugins/NAME` seen by the watch: what the
/// name holds *now* is read and made the file (stored or replaced) or the
/// file removed — an event older than a write of this replica's own never
/// puts older bytes back. Failures are logged (the next resync tries again).
pub async fn apply_change(store: &EtcdStore, dir: &Path, name: &str) {
    let outcome = async {
        let (kvs, _) = store
            .client
            .range(&name_key(store, name), None)
            .await
            .map_err(|e| e.to_string())?;
        let mut record = read_record(dir);
        match kvs.first() {
            Some(kv) => {
                let manifest = serde_json::from_slice::<Manifest>(&kv.value)
                    .map_err(|e| format!("plugin `{name}` in etcd: {e}"))?;
                // Recorded before written: a file of etcd's is never unrecorded.
                record.insert(name.to_string(), manifest.sha256.clone());
                write_record(dir, &record);
                fetch(store, dir, name, &manifest).await?;
            }
            None => {
                match std::fs::remove_file(file(dir, name)) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(e.to_string());
                    }
                    _ => {}
                }
                record.remove(name);
                write_record(dir, &record);
            }
        }
        Ok::<_, String>(())
    };
    if let Err(error) = outcome.await {
        tracing::warn!(plugin = name, %error, "a plugin from etcd was not applied");
    }
}

fn file(dir: &Path, name: &str) -> std::path::PathBuf {
    dir.join(format!("{name}.wasm"))
}

/// Writes the plugin `name` of `manifest` into `dir` unless the file there
/// already has its hash.
async fn fetch(
    store: &EtcdStore,
    dir: &Path,
    name: &str,
    manifest: &Manifest,
) -> Result<(), String> {
    let valid_name = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !valid_name {
        return Err(format!("plugin name `{name}` in etcd is not a file name"));
    }
    let path = file(dir, name);
    if std::fs::read(&path).is_ok_and(|b| sha256_hex(&b) == manifest.sha256) {
        return Ok(());
    }
    // One chunk a read: no answer grows with the plugin.
    let mut bytes = Vec::with_capacity(manifest.size.min(crate::plugin::MAX_PLUGIN_BYTES));
    for index in 0..manifest.chunks {
        let (kvs, _) = store
            .client
            .range(&chunk_key(store, &manifest.sha256, index), None)
            .await
            .map_err(|e| e.to_string())?;
        let chunk = kvs
            .into_iter()
            .next()
            .ok_or_else(|| format!("plugin `{name}`: chunk {index} is missing in etcd"))?;
        bytes.extend_from_slice(&chunk.value);
        if bytes.len() > crate::plugin::MAX_PLUGIN_BYTES {
            return Err(format!("plugin `{name}`: larger than a plugin may be"));
        }
    }
    if bytes.len() != manifest.size || sha256_hex(&bytes) != manifest.sha256 {
        return Err(format!(
            "plugin `{name}`: the stored chunks ({} bytes) do not match sha256 {}",
            bytes.len(),
            manifest.sha256
        ));
    }
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        std::fs::create_dir_all(&dir)?;
        let mut temp = tempfile::Builder::new().suffix(".part").tempfile_in(&dir)?;
        temp.write_all(&bytes)?;
        temp.as_file().sync_all()?;
        temp.persist(&path).map(drop).map_err(|e| e.error)
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| format!("writing plugin `{name}`: {e}"))?;
    tracing::info!(
        plugin = name,
        sha256 = %manifest.sha256,
        "plugin fetched from etcd"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(sha256: &str) -> Manifest {
        Manifest {
            sha256: sha256.into(),
            size: 1,
            chunks: 1,
        }
    }

    #[test]
    fn chunks_go_when_no_name_has_them_any_more() {
        let all = vec![
            ("a".to_string(), manifest("111")),
            ("b".to_string(), manifest("222")),
            ("c".to_string(), manifest("222")),
        ];
        // `a` replaced by other content: its old chunks go.
        assert_eq!(orphaned(&all, "a", "333"), Some("111"));
        // Replaced by the same content: they stay.
        assert_eq!(orphaned(&all, "a", "111"), None);
        // `b`'s content is `c`'s too: it stays.
        assert_eq!(orphaned(&all, "b", ""), None);
        // A new name replaces nothing.
        assert_eq!(orphaned(&all, "d", "444"), None);
    }
}
