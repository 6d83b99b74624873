//! `switchyard demo`: the whole data path on one machine, with no files of yours.
//!
//! Starts three upstream HTTP servers on loopback ephemeral ports
//! (`upstream-1` and `upstream-2` labelled `track = "stable"`, `upstream-3`
//! labelled `track = "canary"`), a listener, and one pool whose strategy is
//! the `canary-split` example plugin (compiled from `plugins/canary-split`
//! and embedded in this binary) configured to send 20% of requests to the
//! canary. It prints the URL, a curl loop to try, and the per-upstream counts
//! once a second while traffic arrives. The admin API and the dashboard run
//! on their own listener (`--admin`, default `127.0.0.1:9901`, no token;
//! on an address beyond loopback it is open, with a warning):
//! drain an instance from the dashboard and watch the counts move.
//! Ctrl-C stops everything cleanly.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;

use crate::config::{
    AdminConfig, Config, InstanceConfig, ListenerConfig, PluginRef, PluginStrategyConfig,
    PoolConfig, RouteConfig, RouteMatch, StrategyConfig,
};
use crate::plugin::PluginHost;
use crate::server::{Switchyard, shutdown_signal};

/// The `canary-split` example plugin, compiled for `wasm32-wasip2` by the build script.
pub const CANARY_SPLIT_WASM: &[u8] = include_bytes!(env!("SWITCHYARD_CANARY_SPLIT_WASM"));

/// Share of requests the demo sends to the canary, percent.
pub const CANARY_PERCENT: i64 = 20;

const UPSTREAMS: [(&str, &str); 3] = [
    ("upstream-1", "stable"),
    ("upstream-2", "stable"),
    ("upstream-3", "canary"),
];

/// Runs the demo with its listener on `listen` and the admin API on `admin`
/// until Ctrl-C or SIGTERM.
///
/// # Errors
/// When a socket cannot bind or the embedded plugin cannot be written or loaded.
pub async fn run(listen: SocketAddr, admin: SocketAddr) -> anyhow::Result<()> {
    let mut instances = Vec::new();
    let mut counters = Vec::new();
    for (name, track) in UPSTREAMS {
        let hits = Arc::new(AtomicU64::new(0));
        let addr = spawn_upstream(name, track, Arc::clone(&hits)).await?;
        instances.push(InstanceConfig {
            url: format!("http://{addr}"),
            weight: 1,
            labels: BTreeMap::from([("track".to_string(), track.to_string())]),
            drain: false,
        });
        counters.push((name, track, hits));
    }

    remove_stale_dirs();
    let dir = std::env::temp_dir().join(format!("{DIR_PREFIX}{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let plugin_path: PathBuf = dir.join("canary_split.wasm");
    std::fs::write(&plugin_path, CANARY_SPLIT_WASM)
        .with_context(|| format!("writing {}", plugin_path.display()))?;

    let mut plugin_config = toml::Table::new();
    plugin_config.insert("label".into(), "track".into());
    plugin_config.insert("canary".into(), "canary".into());
    plugin_config.insert("percent".into(), CANARY_PERCENT.into());
    let config = Config {
        listeners: vec![ListenerConfig::on(listen)],
        routes: vec![RouteConfig {
            matches: RouteMatch::default(),
            pool: Some("demo".into()),
            fan_out: None,
            mcp: None,
            fallback: None,
            stale_if_error: None,
            filters: Vec::new(),
        }],
        pools: BTreeMap::from([(
            "demo".to_string(),
            PoolConfig {
                strategy: StrategyConfig::Plugin(PluginStrategyConfig {
                    plugin: PluginRef {
                        path: plugin_path,
                        config: plugin_config,
                        call_deadline_ms: 5,
                        memory_limit_mib: 16,
                        quarantine: Default::default(),
                        fuel_per_call: None,
                        capabilities: Vec::new(),
                    },
                    fallback: Box::default(),
                    max_candidates: crate::config::DEFAULT_MAX_CANDIDATES,
                    deprecated: Default::default(),
                }),
                instances,
                process: None,
                discovery: None,
                depends_on: Vec::new(),
                min_ready: 1,
                connect_timeout_ms: 1_000,
                request_timeout_ms: 30_000,
                fail_timeout_ms: 10_000,
                idle_timeout_ms: 90_000,
                max_idle_connections: 64,
                sticky: None,
                // Checked every second, so that an instance that stops is
                // seen on the dashboard's timeline within seconds; on a path
                // of their own, so that probes are not counted as traffic.
                health: Some(
                    toml::from_str(&format!(
                        "path = \"{HEALTH_PATH}\"\ninterval_ms = 1000\ntimeout_ms = 500\nrise = 1\nfall = 2"
                    ))
                        .context("the demo's health check")?,
                ),
                outlier: None,
                trend: None,
                retry: Default::default(),
                breaker: None,
                bulkhead: None,
                failover: Default::default(),
                panic_threshold_percent: 50,
                tls: None,
                protocol: Default::default(),
            },
        )]),
        filters: BTreeMap::new(),
        shutdown_grace_ms: 5_000,
        event_cooldown_ms: 30_000,
        plugin_cache: Default::default(),
        plugin_fuel: false,
        runtime: Default::default(),
        mcp_sessions: Default::default(),
        store: Default::default(),
        admin: Some(AdminConfig {
            listen: admin,
            token_env: None,
            token_file: None,
            state_file: dir.join("state.json"),
            plugins_dir: dir.join("plugins"),
            recent_requests: 256,
            tls: None,
            // No token: a demo on a public address (`--admin 0.0.0.0:…`)
            // is open, and says so at start and in /v1/status.
            insecure: !admin.ip().is_loopback(),
        }),
    };

    let host = PluginHost::for_config(&config)?;
    let shutdown = shutdown_signal();
    let switchyard = Switchyard::bind(&config, &host).await?;
    let addr = switchyard
        .local_addrs()
        .first()
        .copied()
        .context("no listener")?;
    println!();
    println!("switchyard demo: a pool of 3 upstreams, balanced by the canary-split Wasm plugin");
    println!(
        "  upstream-1, upstream-2: track=stable   upstream-3: track=canary ({CANARY_PERCENT}% of requests)"
    );
    println!();
    println!("  URL:   http://{addr}/");
    println!("  try:   for i in $(seq 1 50); do curl -s http://{addr}/; echo; done");
    if let Some(admin) = switchyard.admin_addr() {
        println!("  dashboard:  http://{admin}/dashboard");
        println!(
            "  admin API:  curl -s http://{admin}/v1/status   (all resources: http://{admin}/openapi.json)"
        );
    }
    println!();
    println!("Per-upstream counts appear below as traffic arrives. Ctrl-C to stop.");

    let reporter = tokio::spawn(async move {
        let mut last_total = 0;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let counts: Vec<u64> = counters
                .iter()
                .map(|(_, _, h)| h.load(Ordering::Relaxed))
                .collect();
            let total: u64 = counts.iter().sum();
            if total != last_total {
                last_total = total;
                let line: Vec<String> = counters
                    .iter()
                    .zip(&counts)
                    .map(|((name, track, _), n)| {
                        let share = 100.0 * *n as f64 / total as f64;
                        format!("{name} ({track}): {n} ({share:.0}%)")
                    })
                    .collect();
                println!("  {total} requests   {}", line.join("   "));
            }
        }
    });
    switchyard.serve(shutdown).await;
    reporter.abort();
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// The demo's scratch folder in the temp dir: this prefix and its pid.
const DIR_PREFIX: &str = "switchyard-demo-";

/// Removes the scratch folders of demos that ended without cleaning up
/// (killed): those whose process is gone. Linux only (it asks `/proc`).
fn remove_stale_dirs() {
    if !cfg!(target_os = "linux") {
        return;
    }
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(DIR_PREFIX))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// The path the demo's health checks probe (answered, not counted).
const HEALTH_PATH: &str = "/healthz";

/// A demo upstream: answers every request with a small JSON naming itself,
/// and counts it in `hits` — all but the health checks on [`HEALTH_PATH`].
async fn spawn_upstream(
    name: &'static str,
    track: &'static str,
    hits: Arc<AtomicU64>,
) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new()
        .route(HEALTH_PATH, axum::routing::get(|| async { "ok" }))
        .fallback(move || {
            let hits = Arc::clone(&hits);
            async move {
                hits.fetch_add(1, Ordering::Relaxed);
                axum::Json(serde_json::json!({ "upstream": name, "track": track }))
            }
        });
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(upstream = name, error = %e, "demo upstream stopped");
        }
    });
    Ok(addr)
}
