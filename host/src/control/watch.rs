//! The drop-in plugins directory: adding, replacing or removing a `.wasm`
//! there takes effect without a restart.
//!
//! A watcher ([`crate::fswatch`]: content changes only, debounced) reads
//! every file that changed. A file whose sha256 did not change is left alone. A changed
//! file that the configuration loads is reloaded through
//! [`ControlPlane::reload_plugin`]: the new component is compiled, checked and
//! configured *before* the router is swapped, so requests in flight finish
//! on the old instance, none fails, and a broken replacement is refused with
//! the reason while the old instance keeps serving. A new file nothing loads
//! yet is checked and announced (its kind, or why it is not a plugin). A
//! removed file that is still loaded keeps serving from memory until the
//! configuration stops using it. Verdicts are kept by sha256, so identical
//! files (copies, a directory of many) are compiled once.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::control::ControlPlane;
use crate::fswatch::{Watch, canonical, watch_dirs};

/// Watches `dir` (created if missing) for as long as the returned handle lives.
///
/// # Errors
/// A reason when the directory cannot be created or watched.
pub fn watch_plugins(control: Arc<dyn ControlPlane>, dir: &Path) -> Result<Watch, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut known: HashMap<PathBuf, [u8; 32]> = HashMap::new();
    let mut verdicts: Verdicts = HashMap::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for path in entries.filter_map(Result::ok).map(|e| e.path()) {
            if let Some(sha) = sha_of(&path) {
                known.insert(canonical(&path), sha);
            }
        }
    }
    let watch = watch_dirs(&[dir.to_path_buf()], move |paths| {
        for path in paths
            .iter()
            .filter(|p| p.extension().is_some_and(|x| x == "wasm"))
        {
            changed(&*control, &mut known, &mut verdicts, path);
        }
    })?;
    tracing::info!(dir = %dir.display(), "watching the plugins directory for drop-in changes");
    Ok(watch)
}

fn sha_of(path: &Path) -> Option<[u8; 32]> {
    std::fs::read(path)
        .ok()
        .map(|bytes| Sha256::digest(bytes).into())
}

/// What a file's content is, by sha256: `(kind, interface)` or why it is
/// not a plugin — identical files are compiled once.
type Verdicts = HashMap<[u8; 32], Result<crate::plugin::PluginKind, String>>;

/// Handles one changed path.
fn changed(
    control: &dyn ControlPlane,
    known: &mut HashMap<PathBuf, [u8; 32]>,
    verdicts: &mut Verdicts,
    path: &Path,
) {
    let key = canonical(path);
    let config = control.config();
    // The paths the configuration names this file by.
    let loaded: Vec<PathBuf> = config
        .plugin_paths()
        .into_iter()
        .filter(|p| canonical(p) == key)
        .collect();
    let Some(sha) = sha_of(path) else {
        if known.remove(&key).is_some() && !loaded.is_empty() {
            tracing::warn!(plugin = %path.display(), "plugin file removed; the loaded instance keeps serving until the configuration stops using it");
        }
        return;
    };
    if known.get(&key) == Some(&sha) {
        return;
    }
    // Remembered whatever happens below: a refused file is not retried
    // until it changes again (reading it must not start a reload loop).
    known.insert(key.clone(), sha);
    if loaded.is_empty() {
        let verdict = verdicts.entry(sha).or_insert_with(|| {
            control
                .plugin_host()
                .kind_of(path)
                .map_err(|e| e.to_string())
        });
        match verdict {
            Ok(kind) => {
                tracing::info!(plugin = %path.display(), kind = kind.name(), interface = kind.export(), "plugin available");
            }
            Err(error) => tracing::warn!(plugin = %path.display(), %error, "not loadable; ignored"),
        }
        return;
    }
    for config_path in loaded {
        match control.reload_plugin(&config_path) {
            Ok(users) => {
                tracing::info!(plugin = %path.display(), users = %users.join(", "), "plugin reloaded");
            }
            Err(error) => {
                tracing::error!(plugin = %path.display(), %error, "plugin replacement refused; the previous instance keeps serving");
            }
        }
    }
}
