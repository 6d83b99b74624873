//! The state file: a configuration written atomically and restored at
//! start.

use std::io::Write as _;
use std::path::Path;

use crate::config::Config;

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
