//! One replica's life: start, ready, supervise, drain, restart (see the
//! module docs of [`super`]).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::mpsc;

use super::child::{Lines, Process, stop_signal};
use super::stdio::Bridge;
use super::supervisor::{Order, Supervisor};
use crate::balance::Endpoint;
use crate::config::{InstanceConfig, ProcessConfig, ProcessTransport};
use crate::control::{ChangeError, ControlPlane};
use crate::events::{EventKind, HealthEvent, Severity};
use crate::health::active::ProbeOutcome;

/// How often a starting replica is probed for readiness, and a waiting one
/// looks at its dependencies.
const POLL: Duration = Duration::from_millis(200);

/// Where a replica is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReplicaState {
    /// Waiting for the pools it depends on.
    Waiting,
    /// Started, not yet ready.
    Starting,
    /// Ready: an instance of the pool.
    Ready,
    /// Exited (or failed its checks); waiting out its backoff.
    Backoff,
    /// Restarted too often: left stopped until asked through the API.
    CrashLoop,
    /// Being drained and stopped.
    Stopping,
    /// Stopped for good (scaled down, pool removed, shutdown).
    Stopped,
}

/// What the API shows of a replica.
#[derive(Debug, Clone, Serialize)]
pub struct ReplicaStatus {
    /// Its number in the pool, 0..replicas.
    pub replica: u32,
    /// Where it is in its life.
    pub state: ReplicaState,
    /// Its process id, while it runs.
    pub pid: Option<u32>,
    /// Its port, once started.
    pub port: Option<u16>,
    /// Restarts so far.
    pub restarts: u32,
    /// How its last process ended (e.g. `exit status: 1`, `signal: 9`).
    pub exit_status: Option<String>,
    /// Time ready, ms (0 when not ready).
    pub up_ms: u64,
    /// Its last lines of output (at most [`KEPT_LINES`](super::KEPT_LINES)).
    pub last_lines: Vec<String>,
}

/// A replica's shared record.
pub(super) struct Replica {
    pub(super) status: Mutex<ReplicaStatus>,
    pub(super) ready_since: Mutex<Option<Instant>>,
    pub(super) lines: Arc<Lines>,
}

impl Replica {
    fn update(&self, f: impl FnOnce(&mut ReplicaStatus)) {
        f(&mut self.status.lock().unwrap_or_else(PoisonError::into_inner));
    }

    pub(super) fn status(&self) -> ReplicaStatus {
        let mut status = self
            .status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        status.up_ms = self
            .ready_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .map_or(0, |t| t.elapsed().as_millis() as u64);
        status.last_lines = self.lines.snapshot();
        status
    }

    fn set_ready(&self, ready: bool) {
        *self
            .ready_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = ready.then(Instant::now);
    }
}

/// How one run of a replica's process ended.
enum Ended {
    /// It exited on its own.
    Exited(String),
    /// It did not become ready in time, or failed its checks.
    Unfit(String),
    /// Ordered.
    Ordered(Order),
}

/// A replica's life: start, ready, supervise, restart (module docs).
pub(super) async fn run(
    supervisor: Weak<Supervisor>,
    pool: String,
    index: u32,
    replica: Arc<Replica>,
    mut orders: mpsc::UnboundedReceiver<Order>,
) {
    let mut tier = 0usize;
    let mut restarts: VecDeque<Instant> = VecDeque::new();
    loop {
        let Some(control) = supervisor.upgrade().and_then(|s| s.control.upgrade()) else {
            return;
        };
        let Some(config) = control
            .config()
            .pools
            .get(&pool)
            .and_then(|p| p.process.clone())
        else {
            replica.update(|s| s.state = ReplicaState::Stopped);
            return;
        };
        drop(control);
        // Dependencies first.
        replica.update(|s| s.state = ReplicaState::Waiting);
        loop {
            let Some(control) = supervisor.upgrade().and_then(|s| s.control.upgrade()) else {
                return;
            };
            if dependencies_ready(&*control, &pool) {
                break;
            }
            drop(control);
            tokio::select! {
                () = tokio::time::sleep(POLL) => {}
                order = orders.recv() => if matches!(order, None | Some(Order::Stop)) {
                    replica.update(|s| s.state = ReplicaState::Stopped);
                    return;
                },
            }
        }
        let ended = live(&supervisor, &pool, index, &config, &replica, &mut orders).await;
        let Some(control) = supervisor.upgrade().and_then(|s| s.control.upgrade()) else {
            return;
        };
        let stable = replica
            .ready_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some_and(|t| t.elapsed() >= Duration::from_millis(config.stable_after_ms));
        replica.set_ready(false);
        control
            .router()
            .reporting()
            .metrics
            .process_ready(&pool, index, 0);
        if stable {
            tier = 0;
        }
        let why = match ended {
            Ended::Ordered(Order::Stop) => {
                replica.update(|s| {
                    s.state = ReplicaState::Stopped;
                    s.pid = None;
                });
                // Scaled back up while it stopped: its number starts anew.
                drop(control);
                if let Some(supervisor) = supervisor.upgrade() {
                    supervisor.reconcile();
                }
                return;
            }
            Ended::Ordered(Order::Restart) => {
                tier = 0;
                restarts.clear();
                restarted_by_api(&*control, &pool, index, &replica, "");
                continue;
            }
            Ended::Exited(why) | Ended::Unfit(why) => why,
        };
        // A restart after a failure: within the window's budget, after the
        // tier's wait.
        let now = Instant::now();
        restarts.push_back(now);
        let window = Duration::from_millis(config.restart_window_ms);
        while restarts
            .front()
            .is_some_and(|t| now.duration_since(*t) > window)
        {
            restarts.pop_front();
        }
        if restarts.len() > config.max_restarts as usize {
            replica.update(|s| s.state = ReplicaState::CrashLoop);
            publish(
                &*control,
                &pool,
                None,
                EventKind::ProcessCrashLoop,
                Severity::Critical,
                format!(
                    "pool {pool}: replica {index} restarted {} times within {} ms ({why}); left stopped until restarted through the API",
                    restarts.len() - 1,
                    config.restart_window_ms
                ),
            );
            drop(control);
            match orders.recv().await {
                Some(Order::Restart) => {
                    tier = 0;
                    restarts.clear();
                    if let Some(control) = supervisor.upgrade().and_then(|s| s.control.upgrade()) {
                        restarted_by_api(&*control, &pool, index, &replica, " out of crash-loop");
                    }
                    continue;
                }
                _ => {
                    replica.update(|s| s.state = ReplicaState::Stopped);
                    return;
                }
            }
        }
        let wait = config.restart_backoff_ms[tier.min(config.restart_backoff_ms.len() - 1)];
        tier += 1;
        replica.update(|s| s.state = ReplicaState::Backoff);
        drop(control);
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(wait)) => {}
            order = orders.recv() => match order {
                Some(Order::Restart) => { tier = 0; restarts.clear(); }
                _ => {
                    replica.update(|s| s.state = ReplicaState::Stopped);
                    return;
                }
            },
        }
        let Some(control) = supervisor.upgrade().and_then(|s| s.control.upgrade()) else {
            return;
        };
        count_restart(&*control, &pool, index, &replica);
        publish(
            &*control,
            &pool,
            None,
            EventKind::ProcessRestarted,
            Severity::Warning,
            format!(
                "pool {pool}: replica {index} restarted after {wait} ms (tier {tier} of restart_backoff_ms; it ended: {why})"
            ),
        );
    }
}

/// A restart asked through the API (`from`: what it was in, for the
/// message): counted, and published as an event.
fn restarted_by_api(
    control: &dyn ControlPlane,
    pool: &str,
    index: u32,
    replica: &Replica,
    from: &str,
) {
    publish(
        control,
        pool,
        None,
        EventKind::ProcessRestarted,
        Severity::Info,
        format!("pool {pool}: replica {index} restarted{from} (asked through the API)"),
    );
    count_restart(control, pool, index, replica);
}

/// One more restart of `replica` (its status and the metrics).
fn count_restart(control: &dyn ControlPlane, pool: &str, index: u32, replica: &Replica) {
    replica.update(|s| s.restarts += 1);
    control
        .router()
        .reporting()
        .metrics
        .process_restart(pool, index);
}

/// Whether every pool `pool` depends on has its `min_ready` fit instances.
fn dependencies_ready(control: &dyn ControlPlane, pool: &str) -> bool {
    let config = control.config();
    let Some(depends_on) = config.pools.get(pool).map(|p| p.depends_on.clone()) else {
        return true;
    };
    let router = control.router();
    depends_on.iter().all(|dependency| {
        let min = config.pools.get(dependency).map_or(1, |p| p.min_ready) as usize;
        router.pool_named(dependency).is_some_and(|p| {
            p.members()
                .as_slice()
                .iter()
                .filter(|e| e.is_fit() && !e.is_draining())
                .count()
                >= min
        })
    })
}

/// One run of the replica's process: start, ready, supervise, end.
async fn live(
    supervisor: &Weak<Supervisor>,
    pool: &str,
    index: u32,
    config: &ProcessConfig,
    replica: &Replica,
    orders: &mut mpsc::UnboundedReceiver<Order>,
) -> Ended {
    let port = match config.ports.get(index as usize) {
        Some(port) => *port,
        None => match free_port() {
            Ok(port) => port,
            Err(e) => return Ended::Exited(format!("no free port: {e}")),
        },
    };
    let url = format!("http://127.0.0.1:{port}");
    let mut process = match Runner::start(pool, index, port, config, &replica.lines).await {
        Ok(p) => p,
        Err(e) => {
            let why = format!("could not start `{}`: {e}", config.command);
            tracing::warn!(pool, replica = index, "{why}");
            replica.update(|s| s.exit_status = Some(why.clone()));
            return Ended::Exited(why);
        }
    };
    let pid = process.pid().await;
    replica.update(|s| {
        s.state = ReplicaState::Starting;
        s.pid = pid;
        s.port = Some(port);
    });
    if let Some(control) = supervisor.upgrade().and_then(|s| s.control.upgrade()) {
        publish(
            &*control,
            pool,
            Some(&url),
            EventKind::ProcessStarted,
            Severity::Info,
            format!(
                "pool {pool}: replica {index} started (pid {}, port {port})",
                pid.map_or_else(|| "none yet".into(), |p| p.to_string())
            ),
        );
    }
    let endpoint = match format!("127.0.0.1:{port}").parse() {
        Ok(authority) => Endpoint::new(u32::MAX, url.clone(), authority, 1, Vec::new()),
        Err(_) => return Ended::Exited(format!("bad URL {url}")),
    };
    // Ready, or why not.
    let deadline = tokio::time::Instant::now() + Duration::from_millis(config.ready_timeout_ms);
    let ended = loop {
        tokio::select! {
            why = process.wait() => break Some(Ended::Exited(why)),
            order = orders.recv() => break Some(Ended::Ordered(order.unwrap_or(Order::Stop))),
            () = tokio::time::sleep_until(deadline) => break Some(Ended::Unfit(format!(
                "not ready within ready_timeout_ms ({})", config.ready_timeout_ms
            ))),
            passed = probe(supervisor, pool, &endpoint) => {
                if passed.is_ok() {
                    break None;
                }
                tokio::time::sleep(POLL).await;
            }
        }
    };
    let ended = match ended {
        Some(ended) => ended,
        None => {
            let joined = with_instance(supervisor, pool, &url, Membership::Join).await;
            if let Err(error) = joined {
                tracing::warn!(pool, replica = index, %error, "could not add the replica's instance");
            }
            replica.set_ready(true);
            if let Some(control) = supervisor.upgrade().and_then(|s| s.control.upgrade()) {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs() as i64);
                control
                    .router()
                    .reporting()
                    .metrics
                    .process_ready(pool, index, now);
            }
            replica.update(|s| s.state = ReplicaState::Ready);
            supervise(supervisor, pool, config, &endpoint, &mut process, orders).await
        }
    };
    // Out of the pool first (draining it when ordered to stop), then the
    // process stopped.
    if matches!(ended, Ended::Ordered(Order::Stop)) {
        replica.update(|s| s.state = ReplicaState::Stopping);
        drain(
            supervisor,
            pool,
            &url,
            Duration::from_millis(config.stop_timeout_ms),
        )
        .await;
    }
    if let Err(error) = with_instance(supervisor, pool, &url, Membership::Leave).await {
        tracing::warn!(pool, replica = index, %error, "could not remove the replica's instance");
    }
    let status = match &ended {
        Ended::Exited(why) => {
            process.kill_group().await;
            why.clone()
        }
        _ => process.stop(config).await,
    };
    replica.update(|s| {
        s.pid = None;
        s.exit_status = Some(status.clone());
    });
    if let Some(control) = supervisor.upgrade().and_then(|s| s.control.upgrade()) {
        let why = match &ended {
            Ended::Exited(_) => "exited".to_string(),
            Ended::Unfit(why) => format!("stopped: {why}"),
            Ended::Ordered(Order::Stop) => "stopped".to_string(),
            Ended::Ordered(Order::Restart) => "stopped to restart".to_string(),
        };
        publish(
            &*control,
            pool,
            Some(&url),
            EventKind::ProcessExited,
            Severity::Warning,
            format!("pool {pool}: replica {index} {why} ({status})"),
        );
    }
    match ended {
        Ended::Unfit(why) => Ended::Unfit(format!("{why}; {status}")),
        other => other,
    }
}

/// Watches a ready replica: its exit, its probes, its orders.
async fn supervise(
    supervisor: &Weak<Supervisor>,
    pool: &str,
    config: &ProcessConfig,
    endpoint: &Endpoint,
    process: &mut Runner,
    orders: &mut mpsc::UnboundedReceiver<Order>,
) -> Ended {
    let interval = supervisor
        .upgrade()
        .and_then(|s| s.control.upgrade())
        .and_then(|c| {
            c.config()
                .pools
                .get(pool)
                .and_then(|p| p.health.as_ref().map(|h| h.interval_ms))
        })
        .map_or(Duration::from_secs(1), Duration::from_millis);
    let mut failed = 0u32;
    loop {
        tokio::select! {
            why = process.wait() => return Ended::Exited(why),
            order = orders.recv() => return Ended::Ordered(order.unwrap_or(Order::Stop)),
            () = tokio::time::sleep(interval) => {
                if config.restart_after_failed_checks == 0 {
                    continue;
                }
                match probe(supervisor, pool, endpoint).await {
                    Ok(()) => failed = 0,
                    Err(why) => {
                        failed += 1;
                        if failed >= config.restart_after_failed_checks {
                            return Ended::Unfit(format!("{failed} failed checks in a row, the last: {why}"));
                        }
                    }
                }
            }
        }
    }
}

/// One probe of `endpoint` with `pool`'s active check, or a TCP connect
/// without one.
async fn probe(
    supervisor: &Weak<Supervisor>,
    pool: &str,
    endpoint: &Endpoint,
) -> Result<(), String> {
    let check = supervisor
        .upgrade()
        .and_then(|s| s.control.upgrade())
        .and_then(|c| {
            c.router()
                .pool_named(pool)
                .and_then(|p| p.active_check().cloned())
        });
    match check {
        Some(check) => match check.probe(endpoint).await.outcome {
            ProbeOutcome::Pass => Ok(()),
            ProbeOutcome::Fail(why) => Err(why),
        },
        None => crate::dial::connect_tcp(&endpoint.authority, false)
            .await
            .map(drop)
            .map_err(|e| format!("connect: {e}")),
    }
}

/// Adding or removing an instance.
#[derive(Clone, Copy)]
enum Membership {
    Join,
    Leave,
}

/// Adds `url` to `pool`'s instances, or removes it (a config change, made
/// off the async threads: it writes the state file).
async fn with_instance(
    supervisor: &Weak<Supervisor>,
    pool: &str,
    url: &str,
    membership: Membership,
) -> Result<(), ChangeError> {
    let Some(control) = supervisor.upgrade().and_then(|s| s.control.upgrade()) else {
        return Ok(());
    };
    let (pool, url) = (pool.to_string(), url.to_string());
    tokio::task::spawn_blocking(move || edit_instances(&*control, &pool, &url, membership))
        .await
        .unwrap_or(Ok(()))
}

fn edit_instances(
    control: &dyn ControlPlane,
    pool: &str,
    url: &str,
    membership: Membership,
) -> Result<(), ChangeError> {
    let present = control
        .config()
        .pools
        .get(pool)
        .is_some_and(|p| p.instances.iter().any(|i| i.url == url));
    match (membership, present) {
        (Membership::Join, true) | (Membership::Leave, false) => return Ok(()),
        _ => {}
    }
    control
        .change_local(&mut |config: &mut crate::config::Config| {
            let Some(p) = config.pools.get_mut(pool) else {
                return Ok(());
            };
            match membership {
                Membership::Join => p.instances.push(InstanceConfig {
                    url: url.to_string(),
                    weight: 1,
                    labels: BTreeMap::new(),
                    drain: false,
                }),
                Membership::Leave => p.instances.retain(|i| i.url != url),
            }
            Ok(())
        })
        .map(drop)
}

/// Drains `url` in `pool` and waits, up to `timeout`, for its requests in
/// flight to finish.
async fn drain(supervisor: &Weak<Supervisor>, pool: &str, url: &str, timeout: Duration) {
    let Some(control) = supervisor.upgrade().and_then(|s| s.control.upgrade()) else {
        return;
    };
    let drained = {
        let (control, pool, url) = (Arc::clone(&control), pool.to_string(), url.to_string());
        tokio::task::spawn_blocking(move || {
            control.change_local(&mut |config: &mut crate::config::Config| {
                if let Some(i) = config
                    .pools
                    .get_mut(&pool)
                    .and_then(|p| p.instances.iter_mut().find(|i| i.url == url))
                {
                    i.drain = true;
                }
                Ok(())
            })
        })
        .await
    };
    if !matches!(drained, Ok(Ok(_))) {
        return;
    }
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let in_flight = control
            .router()
            .pool_named(pool)
            .and_then(|p| {
                p.members()
                    .as_slice()
                    .iter()
                    .find(|e| e.url == url)
                    .map(|e| e.in_flight())
            })
            .unwrap_or(0);
        if in_flight == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn publish(
    control: &dyn ControlPlane,
    pool: &str,
    instance: Option<&str>,
    kind: EventKind,
    severity: Severity,
    message: String,
) {
    control
        .events()
        .publish(HealthEvent::new(pool, instance, kind, severity, message));
}

/// A free port of 127.0.0.1 (bound and released; the process binds it next).
fn free_port() -> std::io::Result<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
}

/// What runs a replica: its process, or (stdio) Switchyard's bridge to
/// its server processes.
enum Runner {
    Process(Process),
    Bridge(Bridge),
}

impl Runner {
    async fn start(
        pool: &str,
        index: u32,
        port: u16,
        config: &ProcessConfig,
        lines: &Arc<Lines>,
    ) -> std::io::Result<Self> {
        Ok(match config.transport {
            ProcessTransport::Http => {
                Self::Process(Process::start(pool, index, port, config, lines, false)?)
            }
            ProcessTransport::Stdio => {
                Self::Bridge(Bridge::start(pool, index, port, config, lines).await?)
            }
        })
    }

    /// The process id (a stdio bridge's shared process; none per session).
    async fn pid(&self) -> Option<u32> {
        match self {
            Self::Process(p) => Some(p.pid),
            Self::Bridge(b) => b.pid().await,
        }
    }

    /// Waits until it exits; how.
    async fn wait(&mut self) -> String {
        match self {
            Self::Process(p) => describe(p.wait().await),
            Self::Bridge(b) => b.wait().await,
        }
    }

    /// Stops it (the stop signal, then SIGKILL); how it ended.
    async fn stop(&mut self, config: &ProcessConfig) -> String {
        match self {
            Self::Process(p) => describe_stopped(
                p.stop(
                    stop_signal(&config.stop_signal),
                    Duration::from_millis(config.stop_timeout_ms),
                )
                .await,
            ),
            Self::Bridge(b) => {
                b.stop().await;
                "stopped".into()
            }
        }
    }

    /// Kills what is left after it exited on its own.
    async fn kill_group(&self) {
        match self {
            Self::Process(p) => p.kill_group(),
            Self::Bridge(b) => b.stop().await,
        }
    }
}

fn describe(status: std::io::Result<std::process::ExitStatus>) -> String {
    match status {
        Ok(status) => status.to_string(),
        Err(e) => format!("wait failed: {e}"),
    }
}

fn describe_stopped(status: Option<std::process::ExitStatus>) -> String {
    status.map_or_else(|| "gone".into(), |s| s.to_string())
}
