//! The control plane's state: the configuration in force, the router built
//! from it, and the way a change goes from request to data path.
//!
//! A change is a function over a copy of the configuration. It is
//! **validated** (the checks of a config file), **built** (pools whose
//! config did not change are reused with their health state, breakers,
//! connections and plugin instances; drain flags are set in place),
//! **persisted** (the whole configuration as JSON in the state file: temp
//! file, fsync, rename, fsync of the directory; or, with the etcd store,
//! committed to etcd by a transaction conditioned on the revision it was
//! based on, see [`crate::store`]) and only then **swapped in**
//! atomically ([`ArcSwap`]): a request already in flight keeps the router it
//! started with, the next one gets the new router. Changes are serialised;
//! a failed one changes nothing. Health tasks follow the pools: a reused
//! pool keeps its tasks, a replaced or removed one's are stopped.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use tokio::task::JoinSet;

use super::{ChangeError, ControlPlane};
use crate::config::Config;
use crate::events::{EventBus, EventKind, HealthEvent, Severity};
use crate::gateway::Router;
use crate::plugin::PluginHost;
use crate::process::Supervisor;
use crate::proxy::{Pool, RecentRequests, Reporting, StartError};
use crate::status::SyncState;
use crate::store::{EtcdStore, Shared, Store, block_on, write_atomically};

/// The configuration in force and its router.
pub struct Control {
    host: PluginHost,
    /// Becomes true at shutdown: the admin API's event streams end.
    streams: tokio::sync::watch::Sender<bool>,
    reporting: Arc<Reporting>,
    router: ArcSwap<Router>,
    store: Store,
    /// The configuration in force and its revision: read without a lock
    /// (the writers' lock, `inner`, is held across calls to etcd), stored
    /// only by a writer holding it.
    current: ArcSwap<(Config, i64)>,
    inner: Mutex<Inner>,
    /// The processes of managed pools, once started.
    supervisor: std::sync::OnceLock<Arc<Supervisor>>,
}

/// Each pool's health tasks, by pool name, with the pool they run for.
type HealthTasks = HashMap<String, (Arc<Pool>, JoinSet<()>)>;

/// What only the writer holding the lock touches.
struct Inner {
    /// Health tasks per pool, while running.
    health: Option<HealthTasks>,
}

impl Control {
    /// Builds the router for `config`, at `revision` of `store` (see
    /// [`crate::store::open`]), where changes will be persisted.
    ///
    /// # Errors
    /// [`StartError`] when a plugin is refused.
    pub fn new(
        config: Config,
        host: PluginHost,
        store: Store,
        revision: i64,
    ) -> Result<Self, StartError> {
        let reporting = Reporting::new(&config);
        host.publish_faults_to(&reporting.events);
        let router = Router::rebuild(&config, &host, &reporting, None, None)?;
        Ok(Self {
            host,
            streams: tokio::sync::watch::Sender::new(false),
            reporting,
            router: ArcSwap::from_pointee(router),
            store,
            current: ArcSwap::from_pointee((config, revision)),
            inner: Mutex::new(Inner { health: None }),
            supervisor: std::sync::OnceLock::new(),
        })
    }

    /// Starts supervising the processes of managed pools (once; see
    /// [`Supervisor::start`]).
    pub fn start_processes(self: &Arc<Self>) -> Arc<Supervisor> {
        Arc::clone(
            self.supervisor
                .get_or_init(|| Supervisor::start(&(Arc::clone(self) as Arc<dyn ControlPlane>))),
        )
    }

    /// The processes of managed pools, once started.
    pub fn processes(&self) -> Option<&Arc<Supervisor>> {
        self.supervisor.get()
    }

    /// The plugin engine.
    pub fn plugin_host(&self) -> &PluginHost {
        &self.host
    }

    /// The router in force (the data path loads it per request).
    pub fn router(&self) -> Arc<Router> {
        self.router.load_full()
    }

    /// The configuration in force.
    pub fn config(&self) -> Config {
        self.current.load().0.clone()
    }

    /// The event bus (health, breaker and config events).
    pub fn events(&self) -> &Arc<EventBus> {
        &self.reporting.events
    }

    /// Follows shutdown: the value becomes `true` when the admin API's
    /// event streams must end ([`close_streams`](Self::close_streams)).
    pub fn streams_closed(&self) -> tokio::sync::watch::Receiver<bool> {
        self.streams.subscribe()
    }

    /// Ends every event stream of the admin API (server-sent events and
    /// WebSockets), so that a graceful shutdown is not held up by followers.
    pub fn close_streams(&self) {
        self.streams.send_replace(true);
    }

    /// The recent-request log.
    pub fn recent(&self) -> &RecentRequests {
        &self.reporting.recent
    }

    /// The Prometheus text exposition of the data path and the router in force.
    pub fn render_metrics(&self) -> String {
        self.reporting.metrics.store(&self.store_state());
        self.reporting.metrics.render(&self.router().snapshot())
    }

    /// Starts the health tasks of every pool (and of every pool a later
    /// change adds). Call inside the Tokio runtime.
    pub fn start_health(&self) {
        let mut inner = self.lock();
        let router = self.router();
        inner.health = Some(spawn_health(&router, HashMap::new()));
    }

    /// Stops every health task.
    pub fn stop_health(&self) {
        self.lock().health = None;
    }

    /// Applies `edit` to a copy of the configuration, then validates,
    /// builds, persists and swaps it in; returns the new configuration and
    /// what `edit` returned.
    /// Nothing changes when any step fails.
    ///
    /// With the etcd store the change is shared: this replica first
    /// catches up with etcd, `edit` runs on that, and the result is
    /// committed only if nobody wrote in between ([`crate::store`]);
    /// `precondition`, when given, is the revision the change must be
    /// based on (`If-Match`). Call it off the async workers (it blocks on
    /// etcd).
    ///
    /// # Errors
    /// [`ChangeError`]: from `edit`, validation, a refused plugin, the
    /// state file; with etcd, `Unavailable` (unreachable) and `Conflict`
    /// (another write came first, or `precondition` is not the revision).
    pub fn change_at<R>(
        &self,
        precondition: Option<i64>,
        edit: impl FnOnce(&mut Config) -> Result<R, ChangeError>,
    ) -> Result<(Config, R), ChangeError> {
        self.apply(edit, None, Scope::Shared(precondition))
    }

    /// [`change_at`](Self::change_at) with no precondition.
    ///
    /// # Errors
    /// As [`change_at`](Self::change_at).
    pub fn change<R>(
        &self,
        edit: impl FnOnce(&mut Config) -> Result<R, ChangeError>,
    ) -> Result<(Config, R), ChangeError> {
        self.change_at(None, edit)
    }

    /// Rebuilds everything that loads the plugin file `path` (pools and
    /// fan-out routes using it), so that a replaced file takes
    /// effect; returns the config keys that load it.
    ///
    /// # Errors
    /// As [`change`](Self::change): the new plugin may be refused.
    pub fn reload_plugin(&self, path: &Path) -> Result<Vec<String>, ChangeError> {
        self.apply(
            |config| Ok(config.plugin_users(path)),
            Some(path),
            Scope::Local,
        )
        .map(|(_, users)| users)
    }

    /// [`ControlPlane::adopt`]; with `older_too`, a revision older than the
    /// one in force is applied too (etcd was restored or replaced: its
    /// newest is the truth).
    fn adopt_locked(
        &self,
        inner: &mut Inner,
        shared: Shared,
        revision: i64,
        older_too: bool,
    ) -> Result<bool, ChangeError> {
        let now = self.current.load_full();
        if revision == now.1 || (revision < now.1 && !older_too) {
            return Ok(false);
        }
        let next = shared.clone().into_config(&now.0);
        next.check(&crate::loaders::Loaders)
            .map_err(|(key, reason)| ChangeError::Invalid { key, reason })?;
        let router = self.build(&next, None)?;
        self.swap(inner, next, router, revision);
        if let Store::Etcd(store) = &self.store {
            store.applied(revision, &shared);
        }
        Ok(true)
    }

    /// The store's revision of the configuration in force.
    pub fn revision(&self) -> i64 {
        self.current.load().1
    }

    /// Where this replica stands with its config store.
    pub fn store_state(&self) -> SyncState {
        let revision = self.revision();
        self.store.state(revision)
    }

    /// The etcd store, when that is the store.
    pub fn etcd(&self) -> Option<&Arc<EtcdStore>> {
        match &self.store {
            Store::Etcd(store) => Some(store),
            Store::File(_) => None,
        }
    }

    /// The router for `next`, built over the one in force (see
    /// [`Router::rebuild`]; `replaced`: a plugin file replaced).
    fn build(&self, next: &Config, replaced: Option<&Path>) -> Result<Arc<Router>, ChangeError> {
        let current = self.router();
        Ok(Arc::new(Router::rebuild(
            next,
            &self.host,
            &self.reporting,
            Some(&current),
            replaced,
        )?))
    }

    /// Puts `next` and its `router` in force at `revision`.
    fn swap(&self, inner: &mut Inner, next: Config, router: Arc<Router>, revision: i64) {
        let current = self.router.swap(Arc::clone(&router));
        router.activate(&next, Some(&current));
        if let Some(health) = inner.health.take() {
            inner.health = Some(spawn_health(&router, health));
        }
        let (pool, what) = describe_change(&self.current.load().0, &next);
        self.current.store(Arc::new((next, revision)));
        self.reporting.events.publish(HealthEvent::new(
            &pool,
            None,
            EventKind::ConfigChanged,
            Severity::Info,
            what,
        ));
    }

    fn apply<R>(
        &self,
        edit: impl FnOnce(&mut Config) -> Result<R, ChangeError>,
        replaced: Option<&Path>,
        scope: Scope,
    ) -> Result<(Config, R), ChangeError> {
        let mut inner = self.lock();
        let etcd = match (&self.store, scope) {
            (Store::Etcd(store), Scope::Shared(_)) => {
                self.catch_up(&mut inner, store)?;
                Some(store)
            }
            _ => None,
        };
        let (now, mut revision) = (*self.current.load_full()).clone();
        if let Scope::Shared(Some(base)) = scope
            && base != revision
        {
            return Err(ChangeError::Conflict(format!(
                "the change is based on revision {base} but the configuration is at revision \
                 {revision} (another write came first): read it again and retry"
            )));
        }
        let mut next = now.clone();
        let edited = edit(&mut next)?;
        if next.listeners != now.listeners
            || next.admin != now.admin
            || next.plugin_cache != now.plugin_cache
            || next.plugin_fuel != now.plugin_fuel
            || next.store != now.store
        {
            return Err(ChangeError::Conflict(
                "`listeners`, `admin`, `plugin_cache`, `plugin_fuel` and `store` cannot change \
                 at run time: edit the config file and restart"
                    .into(),
            ));
        }
        next.check(&crate::loaders::Loaders)
            .map_err(|(key, reason)| ChangeError::Invalid { key, reason })?;
        let router = self.build(&next, replaced)?;
        match &self.store {
            Store::File(Some(path)) => {
                write_atomically(path, &next).map_err(|error| ChangeError::Persist {
                    path: path.clone(),
                    error,
                })?;
                revision += 1;
            }
            Store::File(None) => revision += 1,
            Store::Etcd(_) => {
                let shared = Shared::of(&next);
                if !shared.same_as(&Shared::of(&now)) {
                    let Some(store) = etcd else {
                        return Err(ChangeError::Conflict(
                            "a change of this replica's own instances touched the shared \
                             configuration"
                                .into(),
                        ));
                    };
                    revision = self.commit(&mut inner, store, &shared)?;
                    store.applied(revision, &shared);
                }
            }
        }
        self.swap(&mut inner, next.clone(), router, revision);
        Ok((next, edited))
    }

    /// Brings the configuration in force up to etcd's newest revision
    /// before a shared change (the caller holds the writers' lock, `inner`).
    fn catch_up(&self, inner: &mut Inner, store: &EtcdStore) -> Result<(), ChangeError> {
        match block_on(store.read_document()) {
            Ok(Some((shared, revision))) => {
                if revision < self.revision() {
                    tracing::warn!(
                        revision,
                        applied = self.revision(),
                        "etcd's configuration is older than the one in force (etcd restored or \
                         replaced?): taking etcd's"
                    );
                }
                self.adopt_locked(inner, shared, revision, true).map_err(|e| {
                    ChangeError::Conflict(format!(
                        "etcd holds revision {revision}, which this replica cannot apply ({e}); \
                         it serves revision {}",
                        self.revision()
                    ))
                })?;
                Ok(())
            }
            Ok(None) => {
                let now = self.current.load_full();
                if now.1 != 0 {
                    // Wiped or replaced: this change stores the whole
                    // configuration again (conditioned on its absence).
                    tracing::warn!(
                        applied = now.1,
                        "etcd holds no configuration any more: this change seeds it again"
                    );
                    self.current.store(Arc::new((now.0.clone(), 0)));
                }
                Ok(())
            }
            Err(why) => Err(unavailable(&why, self.revision())),
        }
    }

    /// Commits `shared` to etcd on top of the revision in force: the new one.
    fn commit(
        &self,
        inner: &mut Inner,
        store: &EtcdStore,
        shared: &Shared,
    ) -> Result<i64, ChangeError> {
        let before = self.current.load_full();
        let base = before.1;
        match block_on(store.commit(base, shared)) {
            Ok(Ok(revision)) => Ok(revision),
            Ok(Err(newer)) => {
                let now = newer.as_ref().map_or(0, |(_, r)| *r);
                // What the write that came first changed, to name it.
                let theirs = match newer {
                    Some((theirs, revision)) => {
                        match self.adopt_locked(inner, theirs, revision, true) {
                            Ok(_) => {
                                let after = &self.current.load().0;
                                format!(" ({})", describe_change(&before.0, after).1)
                            }
                            Err(error) => {
                                tracing::error!(revision, %error, "a configuration from etcd was refused");
                                String::new()
                            }
                        }
                    }
                    None => String::new(),
                };
                Err(ChangeError::Conflict(format!(
                    "another write changed the configuration{theirs} after revision {base} this \
                     change was based on (now revision {now}); nothing was written: read it again \
                     and retry"
                )))
            }
            Err(error) => Err(unavailable(&error.to_string(), base)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What changed from `before` to `after`, for the config event: the pool
/// when the change is one pool's (else empty) and a sentence, e.g.
/// `pool web: instance 10.0.0.6:8080 draining` or `pools added: api-dr`.
fn describe_change(before: &Config, after: &Config) -> (String, String) {
    let names = |c: &Config| {
        c.pools
            .keys()
            .cloned()
            .collect::<std::collections::BTreeSet<_>>()
    };
    let (old, new) = (names(before), names(after));
    let added: Vec<&String> = new.difference(&old).collect();
    let removed: Vec<&String> = old.difference(&new).collect();
    let changed: Vec<&String> = new
        .intersection(&old)
        .filter(|p| !before.pools[*p].same_as(&after.pools[*p], |_| {}))
        .collect();
    let list = |names: &[&String]| {
        names
            .iter()
            .map(|n| n.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut parts = Vec::new();
    if !added.is_empty() {
        parts.push(format!("pools added: {}", list(&added)));
    }
    if !removed.is_empty() {
        parts.push(format!("pools removed: {}", list(&removed)));
    }
    if let [pool] = changed.as_slice()
        && added.is_empty()
        && removed.is_empty()
    {
        let (was, now) = (&before.pools[*pool], &after.pools[*pool]);
        let instance = |i: &crate::config::InstanceConfig| {
            i.upstream_authority()
                .map_or_else(|_| i.url.clone(), |a| a.to_string())
        };
        let was_at: std::collections::BTreeMap<String, _> =
            was.instances.iter().map(|i| (instance(i), i)).collect();
        let now_at: std::collections::BTreeMap<String, _> =
            now.instances.iter().map(|i| (instance(i), i)).collect();
        let mut what = Vec::new();
        for (at, i) in &now_at {
            match was_at.get(at) {
                None => what.push(format!("instance {at} added")),
                Some(w) if w.drain != i.drain => what.push(format!(
                    "instance {at} {}",
                    if i.drain { "draining" } else { "undrained" }
                )),
                Some(w) if w.weight != i.weight || w.labels != i.labels => {
                    what.push(format!("instance {at} re-weighted or re-labelled"));
                }
                Some(_) => {}
            }
        }
        what.extend(
            was_at
                .keys()
                .filter(|at| !now_at.contains_key(*at))
                .map(|at| format!("instance {at} removed")),
        );
        if what.is_empty() {
            what.push("settings changed".into());
        }
        return ((*pool).clone(), format!("pool {pool}: {}", what.join(", ")));
    }
    if !changed.is_empty() {
        parts.push(format!("pools changed: {}", list(&changed)));
    }
    if serde_json::to_value(&before.routes).ok() != serde_json::to_value(&after.routes).ok() {
        parts.push("routes changed".into());
    }
    if parts.is_empty() {
        parts.push("configuration changed (nothing a route or pool uses)".into());
    }
    (String::new(), parts.join("; "))
}

/// The health tasks for `router`'s pools: a pool found in `running` (the
/// same `Arc`) keeps its tasks; others get new ones; the rest are dropped
/// (which stops them).
fn spawn_health(router: &Router, mut running: HealthTasks) -> HealthTasks {
    router
        .pools()
        .iter()
        .map(|pool| {
            let entry = match running.remove(pool.name()) {
                Some((old, tasks)) if Arc::ptr_eq(&old, pool) => (old, tasks),
                _ => (Arc::clone(pool), pool.spawn_health()),
            };
            (pool.name().to_owned(), entry)
        })
        .collect()
}

/// Whether a change is shared by replicas or this replica's own.
#[derive(Clone, Copy)]
enum Scope {
    /// Shared, with the revision it must be based on when given.
    Shared(Option<i64>),
    /// This replica's own instances, or a plugin reloaded.
    Local,
}

impl ControlPlane for Control {
    fn config(&self) -> Config {
        self.config()
    }

    fn router(&self) -> Arc<Router> {
        self.router()
    }

    fn events(&self) -> &Arc<EventBus> {
        self.events()
    }

    fn plugin_host(&self) -> &PluginHost {
        self.plugin_host()
    }

    fn change_local(
        &self,
        edit: &mut dyn FnMut(&mut Config) -> Result<(), ChangeError>,
    ) -> Result<Config, ChangeError> {
        self.apply(|config| edit(config), None, Scope::Local)
            .map(|(config, ())| config)
    }

    fn adopt(&self, shared: Shared, revision: i64) -> Result<bool, ChangeError> {
        let mut inner = self.lock();
        self.adopt_locked(&mut inner, shared, revision, false)
    }

    fn reload_plugin(&self, path: &Path) -> Result<Vec<String>, ChangeError> {
        self.reload_plugin(path)
    }
}

/// The 503 of a shared change while etcd is unreachable.
fn unavailable(why: &str, revision: i64) -> ChangeError {
    ChangeError::Unavailable(format!(
        "the config store is unreachable ({why}): writes are refused until it answers; this \
         replica keeps serving revision {revision}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_is_described_by_what_it_changed() {
        let dir = tempfile::tempdir().unwrap();
        let file = |pools: &str| {
            let text = format!("[[listeners]]\nlisten = \"127.0.0.1:8080\"\n{pools}");
            Config::parse(
                &text,
                Path::new("c.toml"),
                dir.path(),
                &crate::loaders::Loaders,
            )
            .unwrap()
        };
        let one = "[pools.a]\ninstances = [{ url = \"http://127.0.0.1:1\" }]\n";
        let two = format!("{one}[pools.b]\ninstances = [{{ url = \"http://127.0.0.1:2\" }}]\n");
        let drained = {
            let mut c = file(&two);
            c.pools.get_mut("b").unwrap().instances[0].drain = true;
            c
        };
        assert_eq!(
            describe_change(&file(&two), &drained),
            (
                "b".to_string(),
                "pool b: instance 127.0.0.1:2 draining".to_string()
            )
        );
        assert_eq!(describe_change(&file(one), &drained).1, "pools added: b");
    }
}
