//! `/v1/plugins`: `.wasm` components uploaded into `admin.plugins_dir`.
//!
//! An upload is checked before it is kept: written to a temp file beside
//! its destination, compiled, its world recognised (balancer, health-check,
//! failover or resolver, at a WIT version this host supports) — else 422
//! with the reason, and nothing changes. An accepted file replaces
//! `NAME.wasm` atomically (rename); whatever loads it is rebuilt with it.
//! With the etcd store, an accepted upload (or a delete) is first written
//! to etcd ([`crate::store::plugins`]) so that every replica gets it; 503
//! and nothing changes while etcd is unreachable.

use std::io::Write as _;
use std::path::PathBuf;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::error::PathOf;
use super::{AdminState, ApiError};
use crate::control::ChangeError;
use crate::plugin::{PluginHost, sha256_hex};

/// Largest upload, bytes: the host's plugin size limit.
pub const MAX_UPLOAD_BYTES: usize = crate::plugin::MAX_PLUGIN_BYTES;

fn plugins_dir(state: &AdminState) -> PathBuf {
    state
        .control
        .config()
        .admin
        .map_or_else(|| PathBuf::from("switchyard-plugins"), |a| a.plugins_dir)
}

/// `NAME.wasm` in the plugins dir, for a name of `[A-Za-z0-9_-]`.
fn file_of(state: &AdminState, name: &str) -> Result<PathBuf, ApiError> {
    if name.is_empty()
        || name.len() > 100
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(ApiError::BadBody(format!(
            "plugin name `{name}`: use 1 to 100 of A-Z, a-z, 0-9, `_` and `-`"
        )));
    }
    Ok(plugins_dir(state).join(format!("{name}.wasm")))
}

/// The 503 of a plugin change while etcd cannot take it.
fn unavailable(error: &crate::store::etcd::EtcdError) -> ApiError {
    ApiError::Unavailable(format!(
        "the plugin could not be shared through the config store ({error}); nothing changed"
    ))
}

/// A description of the component at `path` (its kind, interface, size, sha256).
fn describe(
    host: &PluginHost,
    name: &str,
    path: &std::path::Path,
    bytes: &[u8],
) -> Result<Value, ApiError> {
    let kind = host.kind_of(path).map_err(|e| {
        ApiError::Change(ChangeError::Invalid {
            key: format!("plugins.{name}"),
            reason: e.to_string(),
        })
    })?;
    Ok(json!({
        "name": name,
        "kind": kind.name(),
        "interface": kind.export(),
        "size_bytes": bytes.len(),
        "sha256": sha256_hex(bytes),
    }))
}

/// `GET /v1/plugins`: every uploaded plugin with its kind, sha256, the
/// config keys that load it, and call and fault counts (balancers).
#[utoipa::path(
    get,
    path = "/v1/plugins",
    tag = "plugins",
    responses((status = 200, description = "Uploaded plugins: kind, sha256, users, calls, faults", body = serde_json::Value))
)]
pub async fn list(State(state): State<AdminState>) -> Result<Json<Vec<Value>>, ApiError> {
    let dir = plugins_dir(&state);
    let control = std::sync::Arc::clone(&state.control);
    tokio::task::spawn_blocking(move || {
        let config = control.config();
        let router = control.router();
        let mut entries: Vec<PathBuf> = match std::fs::read_dir(&dir) {
            Ok(read) => read
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "wasm"))
                .collect(),
            Err(_) => Vec::new(),
        };
        entries.sort();
        let host = control.plugin_host();
        entries
            .iter()
            .map(|path| {
                let name = path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let bytes = std::fs::read(path).unwrap_or_default();
                let mut item = describe(host, &name, path, &bytes).unwrap_or_else(|e| {
                    json!({ "name": name, "error": e.to_string(), "sha256": sha256_hex(&bytes) })
                });
                let users = config.plugin_users(path);
                let (calls, faults) = router
                    .pools()
                    .iter()
                    .filter(|p| users.contains(&format!("pools.{}.strategy.plugin", p.name())))
                    .filter_map(|p| p.plugin_stats())
                    .fold((0, 0), |(c, f), s| (c + s.calls(), f + s.faults()));
                item["used_by"] = json!(users);
                item["calls"] = json!(calls);
                item["faults"] = json!(faults);
                item
            })
            .collect::<Vec<_>>()
    })
    .await
    .map(Json)
    .map_err(|e| ApiError::Internal(e.to_string()))
}

/// `PUT /v1/plugins/{name}` with the `.wasm` as the body: checked, stored,
/// and every user rebuilt with it. 201 new, 200 replaced, 422 refused.
#[utoipa::path(
    put,
    path = "/v1/plugins/{name}",
    tag = "plugins",
    request_body(content = Vec<u8>, content_type = "application/wasm", description = "The `.wasm` component"),
    params(("name" = String, Path, pattern = "^[A-Za-z0-9_-]{1,100}$", description = "Plugin name (file stem): 1 to 100 of A-Z, a-z, 0-9, `_` and `-`")),
    responses((status = 200, description = "Replaced; its users rebuilt", body = serde_json::Value), (status = 201, description = "Stored", body = serde_json::Value), (status = 422, description = "Not a plugin this host can load: the reason"))
)]
pub async fn upload(
    State(state): State<AdminState>,
    PathOf(name): PathOf<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let path = file_of(&state, &name)?;
    let control = std::sync::Arc::clone(&state.control);
    tokio::task::spawn_blocking(move || {
        let dir = path
            .parent()
            .map(std::path::Path::to_path_buf)
            .unwrap_or_default();
        std::fs::create_dir_all(&dir)
            .map_err(|e| ApiError::Internal(format!("{}: {e}", dir.display())))?;
        let io = |e: std::io::Error| ApiError::Internal(format!("writing the plugin: {e}"));
        let mut temp = tempfile::Builder::new()
            .suffix(".wasm")
            .tempfile_in(&dir)
            .map_err(io)?;
        temp.write_all(&body).map_err(io)?;
        temp.as_file().sync_all().map_err(io)?;
        let mut described = describe(control.plugin_host(), &name, temp.path(), &body)?;
        let existed = path.exists();
        if let Some(store) = control.etcd() {
            // Shared before it is acknowledged: every replica fetches it
            // (this one's follower may write the file before we do).
            crate::store::block_on(crate::store::plugins::publish(store, &name, &body))
                .map_err(|e| unavailable(&e))?;
        }
        temp.persist(&path).map_err(|e| io(e.error))?;
        let users = if existed {
            control.reload_plugin(&path)?
        } else {
            Vec::new()
        };
        described["reloaded"] = json!(users);
        let status = if existed {
            StatusCode::OK
        } else {
            StatusCode::CREATED
        };
        Ok((status, Json(described)))
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?
}

/// `POST /v1/plugins/{name}/reload`: rebuilds every user of the file.
#[utoipa::path(
    post,
    path = "/v1/plugins/{name}/reload",
    tag = "plugins",
    params(("name" = String, Path, pattern = "^[A-Za-z0-9_-]{1,100}$", description = "Plugin name (file stem): 1 to 100 of A-Z, a-z, 0-9, `_` and `-`")),
    responses((status = 200, description = "Its users rebuilt", body = serde_json::Value), (status = 404, description = "No such plugin"))
)]
pub async fn reload(
    State(state): State<AdminState>,
    PathOf(name): PathOf<String>,
) -> Result<Json<Value>, ApiError> {
    let path = file_of(&state, &name)?;
    if !path.exists() {
        return Err(ApiError::NotFound(format!("no plugin `{name}`")));
    }
    let control = std::sync::Arc::clone(&state.control);
    let users = tokio::task::spawn_blocking(move || control.reload_plugin(&path))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    Ok(Json(json!({ "name": name, "reloaded": users })))
}

/// `DELETE /v1/plugins/{name}`: 409 while the config loads it.
#[utoipa::path(
    delete,
    path = "/v1/plugins/{name}",
    tag = "plugins",
    params(("name" = String, Path, pattern = "^[A-Za-z0-9_-]{1,100}$", description = "Plugin name (file stem): 1 to 100 of A-Z, a-z, 0-9, `_` and `-`")),
    responses((status = 204, description = "Deleted"), (status = 404, description = "No such plugin"), (status = 409, description = "Loaded by the config"))
)]
pub async fn delete(
    State(state): State<AdminState>,
    PathOf(name): PathOf<String>,
) -> Result<StatusCode, ApiError> {
    let path = file_of(&state, &name)?;
    let users = state.control.config().plugin_users(&path);
    if !users.is_empty() {
        return Err(ApiError::Change(ChangeError::Conflict(format!(
            "plugin `{name}` is loaded by {}",
            users.join(", ")
        ))));
    }
    if !path.exists() {
        return Err(ApiError::NotFound(format!("no plugin `{name}`")));
    }
    if let Some(store) = state.control.etcd() {
        crate::store::plugins::remove(store, &name)
            .await
            .map_err(|e| unavailable(&e))?;
    }
    match std::fs::remove_file(&path) {
        // NotFound: it existed above; with etcd, this replica's follower
        // may have removed it first.
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(StatusCode::NO_CONTENT),
        Err(e) => Err(ApiError::Internal(format!("{}: {e}", path.display()))),
    }
}
