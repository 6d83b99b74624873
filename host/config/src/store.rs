//! The `[store]` table: where the configuration the admin API changes is
//! kept (`switchyard::store` documents how).
//!
//! ```toml
//! [store]
//! kind = "file"            # the default: `admin.state_file`, nothing to run
//!
//! # or, for several replicas sharing one configuration:
//! [store]
//! kind = "etcd"
//! endpoints = ["http://10.0.0.5:2379", "http://10.0.0.6:2379", "http://10.0.0.7:2379"]
//! prefix = "/switchyard/"
//! timeout_ms = 2000
//! cache_file = "switchyard-etcd-cache.json"
//! # username = "switchyard", password_env = "ETCD_PASSWORD"
//! # tls = { ca_file = "etcd-ca.pem", cert_file = "client.pem", key_file = "client-key.pem" }
//! ```

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::types::{Invalid, MAX_WAIT_MS, in_range};
use crate::tls::UpstreamTlsConfig;

/// Where the configuration is kept. Read at start (changing it needs a
/// restart).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum StoreConfig {
    /// The admin API's `state_file` on this machine (one replica).
    #[default]
    File,
    /// An etcd cluster shared by every replica.
    Etcd(Box<EtcdStoreConfig>),
}

/// The configuration kept in etcd, under `prefix`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EtcdStoreConfig {
    /// etcd's client URLs (`http://host:port` or `https://…`); at least
    /// one. Calls go to the one that answered last, the others in turn
    /// when it fails.
    pub endpoints: Vec<String>,
    /// The key prefix every key of this deployment starts with. Default
    /// `/switchyard/`.
    #[serde(default = "defaults::prefix")]
    pub prefix: String,
    /// How long one call to etcd may take (connect included), ms.
    /// Default 2000.
    #[serde(default = "defaults::timeout_ms")]
    pub timeout_ms: u64,
    /// The local copy of the last configuration applied, read when etcd is
    /// unreachable at start; relative to the config file. Default
    /// `switchyard-etcd-cache.json`.
    #[serde(default = "defaults::cache_file")]
    #[schema(value_type = String)]
    pub cache_file: PathBuf,
    /// etcd user to authenticate as (with a password). Default: none.
    pub username: Option<String>,
    /// The environment variable holding the password.
    pub password_env: Option<String>,
    /// The file holding the password (trailing newline ignored); relative
    /// to the config file.
    #[schema(value_type = Option<String>)]
    pub password_file: Option<PathBuf>,
    /// TLS to `https://` endpoints (CA bundle, client certificate for
    /// etcd's `--client-cert-auth`). Default: Mozilla's roots.
    pub tls: Option<UpstreamTlsConfig>,
}

impl EtcdStoreConfig {
    /// The paths in this table, to resolve against the config's directory.
    pub(super) fn paths_mut(&mut self) -> impl Iterator<Item = &mut PathBuf> {
        std::iter::once(&mut self.cache_file)
            .chain(self.password_file.as_mut())
            .chain(self.tls.iter_mut().flat_map(UpstreamTlsConfig::paths_mut))
    }

    /// The user and password to authenticate with, when configured.
    ///
    /// # Errors
    /// `(key, reason)`: the password's variable or file cannot be read.
    pub fn credentials(&self) -> Result<Option<(String, String)>, Invalid> {
        let Some(user) = &self.username else {
            return Ok(None);
        };
        let password = match (&self.password_env, &self.password_file) {
            (Some(name), None) => std::env::var(name).map_err(|_| {
                (
                    "password_env".to_string(),
                    format!("environment variable `{name}` is not set"),
                )
            })?,
            (None, Some(path)) => std::fs::read_to_string(path)
                .map_err(|e| {
                    (
                        "password_file".to_string(),
                        format!("{}: {e}", path.display()),
                    )
                })?
                .trim_end()
                .to_string(),
            _ => {
                return Err((
                    "username".into(),
                    "give the password with exactly one of `password_env` and `password_file`"
                        .into(),
                ));
            }
        };
        Ok(Some((user.clone(), password)))
    }

    pub(super) fn validate(&self) -> Result<(), Invalid> {
        if self.endpoints.is_empty() {
            return Err((
                "endpoints".into(),
                "give at least one etcd client URL".into(),
            ));
        }
        if !self.prefix.starts_with('/') || !self.prefix.ends_with('/') {
            return Err((
                "prefix".into(),
                format!("`{}`: start and end it with `/`", self.prefix),
            ));
        }
        in_range("timeout_ms", self.timeout_ms, 1, MAX_WAIT_MS)?;
        self.credentials().map(drop)
    }
}

mod defaults {
    pub fn prefix() -> String {
        "/switchyard/".into()
    }
    pub fn timeout_ms() -> u64 {
        2000
    }
    pub fn cache_file() -> std::path::PathBuf {
        "switchyard-etcd-cache.json".into()
    }
}
