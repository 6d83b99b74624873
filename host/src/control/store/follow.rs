//! Following etcd: a watch on the prefix, a read every few seconds, and
//! each new revision adopted by the control plane.

use std::path::Path;
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::etcd::{Kv, WatchEvent, prefix_end};
use super::kept::parse_document;
use super::shared::plugins_dir;
use super::{EtcdStore, plugins};
use crate::control::ControlPlane;

/// How often a replica that follows etcd reads it besides the watch.
const CHECK: Duration = Duration::from_secs(10);

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

    #[test]
    fn backoff_grows_with_jitter_to_five_seconds() {
        let mut backoff = Backoff::default();
        let first = backoff.next_delay();
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
        let last = (0..20).map(|_| backoff.next_delay()).last().unwrap();
        assert!(last >= Duration::from_millis(2500) && last <= Duration::from_secs(5));
    }
}
