//! The server: listeners bound, the accept loop serving each connection
//! (HTTP/1.1 and HTTP/2 prior knowledge, h2c; or HTTPS, the TLS handshake
//! within `header_read_timeout_ms`, see [`crate::tls`]) with the data path
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

use crate::config::{Config, ListenerConfig, ListenerTlsConfig};
use crate::control::{Control, ControlPlane};
use crate::plugin::PluginHost;
use crate::proxy::{ListenerRules, StartError};
use crate::store::Store;
use crate::tls::{ClientTls, ServerTls};
use limits::{Activity, Connections, IdleIo, Throttle};

/// A configured proxy with its listeners bound, ready to [`serve`](Self::serve).
pub struct Switchyard {
    listeners: Vec<(TcpListener, ListenerConfig, Option<Arc<ServerTls>>)>,
    admin: Option<(TcpListener, Option<Arc<ServerTls>>)>,
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
        Self::bind_to_store(config, host, Store::File(state_file), 0).await
    }

    /// [`bind`](Self::bind), with changes kept in `store`, whose revision
    /// `revision` `config` is ([`crate::store::open`]); with etcd, the
    /// store is followed while serving.
    ///
    /// # Errors
    /// As [`bind`](Self::bind).
    pub async fn bind_to_store(
        config: &Config,
        host: &PluginHost,
        store: Store,
        revision: i64,
    ) -> Result<Self, StartError> {
        let control = Arc::new(Control::new(config.clone(), host.clone(), store, revision)?);
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|error| StartError::Bind { addr, error })
        };
        limits::raise_nofile_limit();
        let tls = |settings: Option<&ListenerTlsConfig>, key: String| {
            settings
                .map(|s| {
                    ServerTls::load(s)
                        .map(Arc::new)
                        .map_err(|(k, reason)| StartError::Tls {
                            key: format!("{key}.tls.{k}"),
                            reason,
                        })
                })
                .transpose()
        };
        let mut listeners = Vec::with_capacity(config.listeners.len());
        for (i, listener) in config.listeners.iter().enumerate() {
            let tls = tls(listener.tls.as_ref(), format!("listeners[{i}]"))?;
            listeners.push((bind(listener.listen).await?, listener.clone(), tls));
        }
        let admin = match &config.admin {
            Some(admin) => Some((
                bind(admin.listen).await?,
                tls(admin.tls.as_ref(), "admin".into())?,
            )),
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
            .filter_map(|(l, _, _)| l.local_addr().ok())
            .collect()
    }

    /// The admin listener's address, when configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|(l, _)| l.local_addr().ok())
    }

    /// Serves until `shutdown` completes, then drains: stops accepting, lets
    /// in-flight requests finish for up to `shutdown_grace_ms`, and returns.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut loops = tokio::task::JoinSet::new();
        // The certificates are watched before anything says it listens: a
        // file replaced from then on is reloaded.
        let watched: Vec<(String, Arc<ServerTls>)> = self
            .listeners
            .iter()
            .filter_map(|(listener, _, tls)| {
                let addr = listener.local_addr().ok()?;
                Some((addr.to_string(), Arc::clone(tls.as_ref()?)))
            })
            .chain(
                self.admin
                    .as_ref()
                    .and_then(|(_, tls)| Some(("admin".to_string(), Arc::clone(tls.as_ref()?)))),
            )
            .collect();
        for (name, tls) in &watched {
            tls.warn_if_expired(name);
        }
        let _certificates = (!watched.is_empty())
            .then(|| {
                crate::tls::watch_certificates(watched)
                    .map_err(|reason| tracing::warn!(%reason, "TLS certificates will not reload"))
                    .ok()
            })
            .flatten();
        for (listener, config, tls) in self.listeners {
            if let Ok(addr) = listener.local_addr() {
                let scheme = if tls.is_some() { "https" } else { "http" };
                tracing::info!("listening on {scheme}://{addr}");
            }
            loops.spawn(accept_loop(
                listener,
                config,
                tls,
                Arc::clone(&self.control),
                stop_rx.clone(),
                self.shutdown_grace,
            ));
        }
        if let Some((listener, tls)) = self.admin {
            let app = crate::admin::router(Arc::clone(&self.control));
            if let Ok(addr) = listener.local_addr() {
                let scheme = if tls.is_some() { "https" } else { "http" };
                tracing::info!("admin API on {scheme}://{addr}");
                if self
                    .control
                    .config()
                    .admin
                    .as_ref()
                    .is_some_and(|a| a.is_exposed())
                {
                    tracing::warn!(
                        "the admin API on {scheme}://{addr} has no authentication (`admin.insecure = true`): anyone who reaches it may change the configuration"
                    );
                }
            }
            loops.spawn(admin_loop(listener, app, tls, stop_rx.clone()));
        }
        for deprecation in self.control.config().deprecations() {
            tracing::warn!("{deprecation}");
        }
        self.control.start_health();
        let processes = self.control.start_processes();
        let plane: Arc<dyn ControlPlane> = self.control.clone();
        let discovery = crate::discovery::spawn(&plane);
        let follower = self
            .control
            .etcd()
            .map(|store| crate::store::follow(&plane, Arc::clone(store)));
        let plugins_dir = self.control.config().admin.map(|a| a.plugins_dir);
        let _watcher = plugins_dir.and_then(|dir| {
            crate::watch::watch_plugins(Arc::clone(&plane), &dir)
                .map_err(|reason| tracing::warn!(%reason, "drop-in plugin reload is off"))
                .ok()
        });
        shutdown.await;
        self.control.stop_health();
        self.control.close_streams();
        tracing::info!("shutting down: no new connections; draining in-flight requests");
        let _ = stop_tx.send(true);
        // Upgraded connections (WebSocket) are no longer the listeners':
        // they drain beside them, within the same grace period.
        let tunnels = Arc::clone(&self.control.router().reporting().tunnels);
        let listeners = async { while loops.join_next().await.is_some() {} };
        tokio::join!(listeners, tunnels.drain(self.shutdown_grace));
        // The pools' own processes last, dependents first.
        discovery.abort();
        if let Some(follower) = follower {
            follower.abort();
        }
        processes.stop().await;
        tracing::info!("shutdown complete");
    }
}

/// Accepts and serves the connections of one listener, within its bounds
/// (`config`), until `stop`; then lets in-flight requests finish for up to
/// `grace`.
async fn accept_loop(
    listener: TcpListener,
    config: ListenerConfig,
    tls: Option<Arc<ServerTls>>,
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
    // Extended CONNECT (RFC 8441): WebSockets over HTTP/2.
    builder
        .http2()
        .timer(TokioTimer::new())
        .enable_connect_protocol();
    let listener_rules = ListenerRules::from(&config);
    let idle_timeout = Duration::from_millis(config.idle_timeout_ms);
    let handshake_timeout = Duration::from_millis(config.header_read_timeout_ms);
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
    let counters = control.router().reporting().metrics.connection_counters(
        &listener
            .local_addr()
            .map_or_else(|_| config.listen.to_string(), |a| a.to_string()),
    );
    let connections = Connections::new(cap, config.max_connections_per_ip as usize, counters);
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
        // At the cap another connection is evicted to make room, or this
        // one is closed at once (it was accepted so that the backlog does
        // not fill up with it).
        let activity = Activity::new();
        let Ok(slot) = connections.admit(peer.ip(), &activity) else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let io = IdleIo::new(stream, Arc::clone(&activity));
        let connection = Connection {
            control: Arc::clone(&control),
            activity,
            peer,
            rules: listener_rules,
            idle_timeout,
            builder: builder.clone(),
            watcher: graceful.watcher(),
        };
        let tls = tls.clone();
        let evicted = Arc::clone(&connection.activity);
        let serve = async move {
            let Some(tls) = tls else {
                return connection.serve(io, None).await;
            };
            let handshake = tokio::time::timeout(handshake_timeout, tls.accept(io)).await;
            match handshake {
                Ok(Ok((io, identity))) => connection.serve(io, Some(ClientTls { identity })).await,
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "no TLS handshake within header_read_timeout_ms"),
            }
        };
        tokio::spawn(async move {
            let _slot = slot;
            tokio::select! {
                () = serve => {}
                () = evicted.evicted() => tracing::debug!(%peer, "client connection evicted at the connection cap"),
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

/// Serves the admin API on `listener` (over TLS with `tls`) until `stop`;
/// requests in flight then finish.
async fn admin_loop(
    listener: TcpListener,
    app: axum::Router,
    tls: Option<Arc<ServerTls>>,
    mut stop: watch::Receiver<bool>,
) {
    let Some(tls) = tls else {
        let stopped = async move {
            let _ = stop.changed().await;
        };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(stopped)
            .await
        {
            tracing::error!(error = %e, "admin API stopped");
        }
        return;
    };
    let graceful = GracefulShutdown::new();
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let (tls, builder, watcher) = (Arc::clone(&tls), builder.clone(), graceful.watcher());
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let handshake = tokio::time::timeout(ADMIN_HANDSHAKE_TIMEOUT, tls.accept(stream)).await;
            let Ok(Ok((io, _))) = handshake else {
                tracing::debug!(%peer, "admin TLS handshake failed");
                return;
            };
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(%peer, error = %e, "admin connection ended with an error");
            }
        });
    }
    graceful.shutdown().await;
}

/// How long an admin client has to complete its TLS handshake.
const ADMIN_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// One accepted client connection and what serving it needs.
struct Connection {
    control: Arc<Control>,
    activity: Arc<Activity>,
    peer: SocketAddr,
    rules: ListenerRules,
    idle_timeout: Duration,
    builder: auto::Builder<TokioExecutor>,
    watcher: hyper_util::server::graceful::Watcher,
}

impl Connection {
    /// Serves the requests of `io` (HTTP/1.1 or HTTP/2, by its first
    /// bytes) until it closes or stays idle past the listener's
    /// `idle_timeout_ms`; each request is served knowing `tls`, the
    /// connection's TLS facts when it is one.
    async fn serve<IO>(self, io: IO, tls: Option<ClientTls>)
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let Self {
            control,
            activity,
            peer,
            rules,
            idle_timeout,
            builder,
            watcher,
        } = self;
        let service = {
            let activity = Arc::clone(&activity);
            service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                // The router in force when the request arrives serves all of it.
                let router = control.router();
                let waiting = activity.waiting();
                // The connection's TLS facts: an `Arc` count, not a copy.
                let tls = tls.clone();
                let connect = req.method() == hyper::Method::CONNECT;
                async move {
                    let response =
                        crate::gateway::handle(&router, req, peer, &rules, tls.as_ref()).await;
                    // A WebSocket or a tunnel: never evicted at the cap.
                    if connect || response.status() == hyper::StatusCode::SWITCHING_PROTOCOLS {
                        waiting.connection().upgrade();
                    }
                    drop(waiting);
                    Ok::<_, std::convert::Infallible>(response)
                }
            })
        };
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
        let conn = watcher.watch(conn.into_owned());
        tokio::select! {
            ended = conn => if let Err(e) = ended {
                tracing::debug!(%peer, error = %e, "client connection ended with an error");
            },
            () = activity.idle(idle_timeout) => {
                tracing::debug!(%peer, "idle client connection closed");
            }
        }
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
