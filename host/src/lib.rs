//! # Switchyard
//!
//! An L7 orchestrator whose traffic policies — balancing, health checks,
//! failover and data fusion — are built-in Rust defaults *and* sandboxed
//! WebAssembly component plugins.
//!
//! - [`admin`]: the admin REST API over [`control`];
//! - [`config`]: the TOML configuration and its validation (the crate
//!   `switchyard-config`, below every other; [`loaders`] gives it the
//!   host's readers of TLS files, session keys and etcd endpoints);
//! - [`control`]: the configuration in force, changed atomically and persisted;
//! - [`server`]: listeners, the accept loop, graceful shutdown;
//! - [`proxy`]: routing and forwarding one request (the data path);
//! - [`balance`]: the `Strategy` trait, the built-in strategies and the balancer;
//! - [`health`]: active checks, passive outlier detection, panic mode;
//! - [`events`]: the event bus every part publishes to (health, breakers,
//!   plugins, processes, configuration), damped per instance;
//! - [`failover`]: retries with backoff and budgets, circuit breakers, bulkheads;
//! - [`fusion`]: fan-out answers judged, voted, merged and cached (data fusion);
//! - [`metrics`]: Prometheus counters, histograms and state gauges;
//! - [`status`]: the snapshot of the data path's state the status API and
//!   the metrics show;
//! - [`policy`]: what the four engines share: the fault of a decision and
//!   the primary-with-built-in-fallback wrapper;
//! - [`plugin`]: the Wasm host (all wasmtime code) and the plugin adapters;
//! - [`demo`]: the self-contained demo behind `switchyard demo`;
//! - [`store`]: where the configuration is kept: the state file, or etcd
//!   shared by several replicas;
//! - [`fswatch`]: folders watched for files whose content changed;
//! - [`watch`]: the drop-in plugins directory, reloaded without a restart;
//! - [`telemetry`]: logging set-up.

pub mod admin;
pub use switchyard_config as config;
pub use switchyard_engines::{balance, events, failover, fusion, health, policy};
pub use switchyard_net::{dial, fswatch, sse, threads, tls};
pub use switchyard_plugin as plugin;
pub mod control;
pub mod demo;
pub mod discovery;
pub mod loaders;
pub mod metrics;
pub mod process;
pub mod proxy;
pub mod server;
pub mod status;
pub mod store;
pub mod telemetry;
pub mod watch;
