//! The control plane: the configuration in force and everything that
//! changes it or follows it, in one folder.
//!
//! | module | what it does |
//! |---|---|
//! | [`state`](Control) | the configuration in force, the router built from it, and the way a change goes from request to data path |
//! | [`store`] | where the configuration is kept: the state file, or etcd shared by replicas (and the plugins stored there) |
//! | [`discovery`] | instances from DNS or etcd |
//! | [`process`] | the processes behind managed pools |
//! | [`watch`] | the plugins folder, for drop-in reloads |
//! | [`loaders`] | the host's checks of what a configuration names (TLS files, session keys, etcd endpoints), for `Config::load` and every change |
//!
//! [`Control`] is the one writer. What follows or feeds it — the store's
//! follower, discovery, the process supervisor, the plugin watcher — talks
//! back to it through [`ControlPlane`], never by naming `Control`; `Control`
//! calls them.

pub mod discovery;
pub mod loaders;
pub mod process;
mod state;
pub mod store;
pub mod watch;

pub use state::Control;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::Config;
use crate::events::EventBus;
use crate::gateway::Router;
use crate::plugin::PluginHost;
use crate::proxy::StartError;

/// Why a change was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// What the change names does not exist (404).
    #[error("{0}")]
    NotFound(String),
    /// The change conflicts with the configuration (409), e.g. deleting a
    /// pool a route uses.
    #[error("{0}")]
    Conflict(String),
    /// The resulting configuration is invalid (422).
    #[error("{key}: {reason}")]
    Invalid {
        /// The dotted key, e.g. `pools.web.instances[0].url`.
        key: String,
        /// Why.
        reason: String,
    },
    /// A plugin of the resulting configuration was refused (422).
    #[error(transparent)]
    Build(#[from] StartError),
    /// The config store (etcd) cannot be reached; nothing changed (503).
    #[error("{0}")]
    Unavailable(String),
    /// The state file could not be written; nothing changed (500).
    #[error("cannot persist the change to `{}`: {error}", path.display())]
    Persist {
        /// The state file.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
}

/// What the control plane's followers and feeders may ask of the
/// configuration in force. [`Control`] is the implementation; the store's
/// follower, discovery, the process supervisor and the plugin watcher hold
/// it as `Weak<dyn ControlPlane>` (they end when it is dropped).
pub trait ControlPlane: Send + Sync {
    /// A copy of the configuration in force.
    fn config(&self) -> Config;

    /// The router in force.
    fn router(&self) -> Arc<Router>;

    /// The event bus.
    fn events(&self) -> &Arc<EventBus>;

    /// The plugin engine (to tell what a file is before anything loads it).
    fn plugin_host(&self) -> &PluginHost;

    /// Applies `edit` to a copy of the configuration as a change of this
    /// replica's own instances (managed processes, discovery): validated,
    /// built and persisted like [`Control::change`], but never sent to a
    /// shared store, so it works while etcd is down; returns the
    /// configuration in force after it.
    ///
    /// # Errors
    /// As [`Control::change`]; `Conflict` if `edit` touched what replicas
    /// share.
    fn change_local(
        &self,
        edit: &mut dyn FnMut(&mut Config) -> Result<(), ChangeError>,
    ) -> Result<Config, ChangeError>;

    /// Applies `shared` (revision `revision` of the etcd store, written by
    /// any replica) over this replica's own settings and instances, unless
    /// this replica already has that revision or a newer one; whether it
    /// was applied.
    ///
    /// # Errors
    /// It is invalid here or a plugin is refused: nothing changes.
    fn adopt(&self, shared: store::Shared, revision: i64) -> Result<bool, ChangeError>;

    /// Rebuilds everything that loads the plugin file `path`; the config
    /// keys that load it.
    ///
    /// # Errors
    /// As [`Control::reload_plugin`].
    fn reload_plugin(&self, path: &Path) -> Result<Vec<String>, ChangeError>;
}
