//! The supervisor of every managed pool's replicas (see the module docs of
//! [`super`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::replica::{Replica, ReplicaState, ReplicaStatus, run};
use crate::control::ControlPlane;
use crate::events::EventKind;

/// What a replica's task is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Order {
    /// Restart now (from the API): backoff and crash-loop reset.
    Restart,
    /// Drain and stop for good.
    Stop,
}

/// A replica's task and its line of orders.
struct Running {
    replica: Arc<Replica>,
    orders: mpsc::UnboundedSender<Order>,
    task: JoinHandle<()>,
}

/// The processes of every managed pool.
pub struct Supervisor {
    pub(super) control: Weak<dyn ControlPlane>,
    pools: Mutex<BTreeMap<String, BTreeMap<u32, Running>>>,
    /// Set by [`stop`](Self::stop): nothing is started any more.
    stopping: std::sync::atomic::AtomicBool,
}

impl Running {
    /// Whether it is over: stopped for good (its task may still be
    /// returning) or its task ended.
    fn gone(&self) -> bool {
        self.task.is_finished() || self.replica.status().state == ReplicaState::Stopped
    }
}

/// Why an API request about processes failed.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// No such pool, or not a managed one (404).
    #[error("{0}")]
    NotFound(String),
}

impl Supervisor {
    /// Starts supervising the managed pools of `control`'s configuration:
    /// their instances are the replicas this supervisor starts (any left
    /// from an earlier run are removed first), and every config change from
    /// now on is reconciled.
    pub fn start(control: &Arc<dyn ControlPlane>) -> Arc<Self> {
        let supervisor = Arc::new(Self {
            control: Arc::downgrade(control),
            pools: Mutex::default(),
            stopping: std::sync::atomic::AtomicBool::new(false),
        });
        // Instances of managed pools from an earlier run (persisted in the
        // state file) are not this run's replicas.
        let stale = control
            .config()
            .pools
            .values()
            .any(|p| p.process.is_some() && !p.instances.is_empty());
        if stale {
            let cleared = control.change_local(&mut |config: &mut crate::config::Config| {
                for pool in config.pools.values_mut().filter(|p| p.process.is_some()) {
                    pool.instances.clear();
                }
                Ok(())
            });
            if let Err(error) = cleared {
                tracing::warn!(%error, "could not clear the instances of managed pools");
            }
        }
        supervisor.reconcile();
        let mut changes = control.events().subscribe();
        let weak = Arc::downgrade(&supervisor);
        tokio::spawn(async move {
            loop {
                match changes.recv().await {
                    Ok(event) if event.kind != EventKind::ConfigChanged => continue,
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
                let Some(supervisor) = weak.upgrade() else {
                    return;
                };
                supervisor.reconcile();
            }
        });
        supervisor
    }

    /// Starts the replicas the configuration asks for and stops those it
    /// no longer does (scaled down, pool removed or no longer managed).
    pub(super) fn reconcile(self: &Arc<Self>) {
        if self.stopping.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        let Some(control) = self.control.upgrade() else {
            return;
        };
        let config = control.config();
        let mut pools = self.lock();
        pools.retain(|name, replicas| {
            let wanted = config
                .pools
                .get(name)
                .and_then(|p| p.process.as_ref())
                .map_or(0, |p| p.replicas);
            replicas.retain(|index, running| {
                let keep = *index < wanted && !running.gone();
                if !keep {
                    let _ = running.orders.send(Order::Stop);
                }
                keep || !running.gone()
            });
            // Stopping ones are kept until their task ends.
            !replicas.is_empty() || wanted > 0
        });
        for (name, pool) in &config.pools {
            let Some(process) = &pool.process else {
                continue;
            };
            let replicas = pools.entry(name.clone()).or_default();
            for index in 0..process.replicas {
                if replicas.get(&index).is_some_and(|r| !r.gone()) {
                    continue;
                }
                let replica = Arc::new(Replica {
                    status: Mutex::new(ReplicaStatus {
                        replica: index,
                        state: ReplicaState::Waiting,
                        pid: None,
                        port: None,
                        restarts: 0,
                        exit_status: None,
                        up_ms: 0,
                        last_lines: Vec::new(),
                    }),
                    ready_since: Mutex::default(),
                    lines: Arc::default(),
                });
                let (orders, received) = mpsc::unbounded_channel();
                let task = tokio::spawn(run(
                    Arc::downgrade(self),
                    name.clone(),
                    index,
                    Arc::clone(&replica),
                    received,
                ));
                replicas.insert(
                    index,
                    Running {
                        replica,
                        orders,
                        task,
                    },
                );
            }
        }
    }

    /// The replicas of `pool`.
    ///
    /// # Errors
    /// [`ProcessError::NotFound`] when `pool` is not a managed pool.
    pub fn replicas(&self, pool: &str) -> Result<Vec<ReplicaStatus>, ProcessError> {
        let mut pools = self.lock();
        let replicas = pools
            .get_mut(pool)
            .ok_or_else(|| ProcessError::NotFound(format!("pool `{pool}` has no processes")))?;
        // Replicas stopped for good (scaled down) are forgotten.
        replicas.retain(|_, r| !r.gone());
        Ok(replicas.values().map(|r| r.replica.status()).collect())
    }

    /// Every managed pool's replicas, by pool.
    pub fn all(&self) -> BTreeMap<String, Vec<ReplicaStatus>> {
        let pools = self.lock();
        pools
            .iter()
            .map(|(name, replicas)| {
                let statuses = replicas
                    .values()
                    .filter(|r| !r.gone())
                    .map(|r| r.replica.status())
                    .collect();
                (name.clone(), statuses)
            })
            .collect()
    }

    /// Restarts replica `replica` of `pool` now (a crash-looped one too).
    ///
    /// # Errors
    /// [`ProcessError::NotFound`] for an unknown pool or replica.
    pub fn restart(&self, pool: &str, replica: u32) -> Result<(), ProcessError> {
        let pools = self.lock();
        let running = pools
            .get(pool)
            .and_then(|r| r.get(&replica))
            .ok_or_else(|| {
                ProcessError::NotFound(format!("pool `{pool}` has no replica {replica}"))
            })?;
        let _ = running.orders.send(Order::Restart);
        Ok(())
    }

    /// Stops every replica, the pools that depend on others first (reverse
    /// start order), each drained first; returns when all have exited.
    pub async fn stop(&self) {
        let order = self
            .control
            .upgrade()
            .and_then(|c| c.config().start_order().ok())
            .unwrap_or_default();
        self.stopping
            .store(true, std::sync::atomic::Ordering::Release);
        let mut pools = std::mem::take(&mut *self.lock());
        let mut names: Vec<String> = order.into_iter().rev().collect();
        names.extend(
            pools
                .keys()
                .filter(|k| !names.contains(k))
                .cloned()
                .collect::<Vec<_>>(),
        );
        for name in names {
            let Some(replicas) = pools.remove(&name) else {
                continue;
            };
            for running in replicas.values() {
                let _ = running.orders.send(Order::Stop);
            }
            for (_, running) in replicas {
                let _ = running.task.await;
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, BTreeMap<u32, Running>>> {
        self.pools.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
