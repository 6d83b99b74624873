//! The server: listeners bound, the accept loop serving each connection
//! (HTTP/1.1 and HTTP/2 prior knowledge, h2c) with the data path
//! ([`crate::proxy`]), the admin API on its own listener, and a graceful
//! shutdown: on the shutdown signal the listeners stop accepting, in-flight
//! requests finish (up to `shutdown_grace_ms`), then connections close.
//!
//! Each listener bounds its clients ([`limits`]): the time to send a request
//! head, a body and between requests, and the connections open at once (in
//! all and per client address); the open-file limit is raised at start.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub mod limits;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::{Config, ListenerConfig};
use crate::control::Control;
use crate::plugin::PluginHost;
use crate::proxy::{ListenerRules, StartError};
use limits::{Activity, Connections, IdleIo, Throttle};

/// A configured proxy with its listeners bound, ready to [`serve`](Self::serve).
pub struct Switchyard {
    listeners: Vec<(TcpListener, ListenerConfig)>,
    admin: Option<TcpListener>,
    control: Arc<Control>,
    shutdown_grace: Duration,
}

impl Switchyard {
    /// Builds every pool (loading plugins in `host`) and binds every
    /// listener, and the admin listener when configured. Changes through the
    /// admin API are persisted to its `state_file`.
    ///
    /// # Errors
    /// [`StartError`] when a plugin is refused or a listener cannot bind.
    pub async fn bind(config: &Config, host: &PluginHost) -> Result<Self, StartError> {
        let state_file = config.admin.as_ref().map(|a| a.state_file.clone());
        let control = Arc::new(Control::new(config.clone(), host.clone(), state_file)?);
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|error| StartError::Bind { addr, error })
        };
        limits::raise_nofile_limit();
        let mut listeners = Vec::with_capacity(config.listeners.len());
        for listener in &config.listeners {
            listeners.push((bind(listener.listen).await?, listener.clone()));
        }
        let admin = match &config.admin {
            Some(admin) => Some(bind(admin.listen).await?),
            None => None,
        };
        Ok(Self {
            listeners,
            admin,
            control,
            shutdown_grace: Duration::from_millis(config.shutdown_grace_ms),
        })
    }

    /// The addresses actually bound (useful with port 0).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|(l, _)| l.local_addr().ok())
            .collect()
    }

    /// The admin listener's address, when configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Serves until `shutdown` completes, then drains: stops accepting, lets
    /// in-flight requests finish for up to `shutdown_grace_ms`, and returns.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut loops = tokio::task::JoinSet::new();
        for (listener, config) in self.listeners {
            if let Ok(addr) = listener.local_addr() {
                tracing::info!("listening on http://{addr}");
            }
            loops.spawn(accept_loop(
                listener,
                config,
                Arc::clone(&self.control),
                stop_rx.clone(),
                self.shutdown_grace,
            ));
        }
        if let Some(listener) = self.admin {
            if let Ok(addr) = listener.local_addr() {
                tracing::info!("admin API on http://{addr}");
            }
            let mut stop = stop_rx.clone();
            let app = crate::admin::router(Arc::clone(&self.control));
            loops.spawn(async move {
                let stopped = async move {
                    let _ = stop.changed().await;
                };
                if let Err(e) = axum::serve(listener, app)
                    .with_graceful_shutdown(stopped)
                    .await
                {
                    tracing::error!(error = %e, "admin API stopped");
                }
            });
        }
        self.control.start_health();
        let plugins_dir = self.control.config().admin.map(|a| a.plugins_dir);
        let _watcher = plugins_dir.and_then(|dir| {
            crate::watch::watch_plugins(Arc::clone(&self.control), &dir)
                .map_err(|reason| tracing::warn!(%reason, "drop-in plugin reload is off"))
                .ok()
        });
        shutdown.await;
        self.control.stop_health();
        self.control.close_streams();
        tracing::info!("shutting down: no new connections; draining in-flight requests");
        let _ = stop_tx.send(true);
        while loops.join_next().await.is_some() {}
        tracing::info!("shutdown complete");
    }
}

/// Accepts and serves the connections of one listener, within its bounds
/// (`config`), until `stop`; then lets in-flight requests finish for up to
/// `grace`.
async fn accept_loop(
    listener: TcpListener,
    config: ListenerConfig,
    control: Arc<Control>,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
) {
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(config.header_read_timeout_ms));
    builder.http2().timer(TokioTimer::new());
    let listener_rules = ListenerRules::from(&config);
    let idle_timeout = Duration::from_millis(config.idle_timeout_ms);
    let cap = limits::connection_cap(config.max_connections, limits::raise_nofile_limit());
    if let Some(configured) = config.max_connections
        && cap < configured as usize
    {
        tracing::warn!(
            listen = %config.listen,
            max_connections = configured,
            cap,
            "the open-file limit allows fewer client connections than max_connections"
        );
    }
    let connections = Connections::new(cap, config.max_connections_per_ip as usize);
    let accept_errors = Throttle::new(Duration::from_secs(10));
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of
                    // spinning, and say so at most every 10 s.
                    if let Some(held) = accept_errors.pass() {
                        tracing::warn!(error = %e, failed_since_last_warning = held + 1, "accept failed");
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        // Past a cap, the connection is closed at once (it was accepted so
        // that the backlog does not fill up with it).
        let Ok(slot) = connections.admit(peer.ip()) else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let activity = Activity::new();
        let service = {
            let control = Arc::clone(&control);
            let activity = Arc::clone(&activity);
            service_fn(move |req| {
                // The router in force when the request arrives serves all of it.
                let router = control.router();
                let waiting = activity.waiting();
                async move {
                    let response = crate::proxy::handle(&router, req, peer, &listener_rules).await;
                    drop(waiting);
                    Ok::<_, std::convert::Infallible>(response)
                }
            })
        };
        let io = TokioIo::new(IdleIo::new(stream, Arc::clone(&activity)));
        let conn = builder.serve_connection(io, service);
        let conn = graceful.watch(conn.into_owned());
        tokio::spawn(async move {
            let _slot = slot;
            tokio::select! {
                ended = conn => if let Err(e) = ended {
                    tracing::debug!(%peer, error = %e, "client connection ended with an error");
                },
                () = activity.idle(idle_timeout) => {
                    tracing::debug!(%peer, "idle client connection closed");
                }
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_ms = grace.as_millis() as u64,
            "in-flight requests still running after the grace period; closing"
        );
    }
}

/// Completes on Ctrl-C (SIGINT) or SIGTERM. The handlers are installed
/// when this is called (call it before the listeners serve, inside the
/// runtime), not when the future is first polled: a signal that arrives
/// while the server starts is a graceful shutdown, not the default
/// termination.
pub fn shutdown_signal() -> impl Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let interrupt = signal(SignalKind::interrupt()).ok();
        let terminate = signal(SignalKind::terminate()).ok();
        async move {
            let wait = |s: Option<tokio::signal::unix::Signal>| async move {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = wait(interrupt) => {},
                () = wait(terminate) => {},
            }
        }
    }
    #[cfg(not(unix))]
    async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
