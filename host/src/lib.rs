//! # Switchyard
//!
//! An L7 orchestrator whose traffic policies — balancing, health checks,
//! failover and data fusion — are built-in Rust defaults *and* sandboxed
//! WebAssembly component plugins.
//!
//! This crate is the server and the binary; it stands on four crates,
//! each importing only those before it, re-exported here at their paths:
//! [`config`] (`switchyard-config`: the TOML configuration and its
//! validation); [`dial`], [`tls`], [`fswatch`], [`sse`], [`threads`]
//! (`switchyard-net`); [`balance`], [`health`], [`failover`], [`fusion`],
//! [`policy`], [`events`] (`switchyard-engines`: the four engines, what they
//! share and the event bus); [`plugin`] (`switchyard-plugin`: all wasmtime
//! code). Its own modules, bottom up (each imports only those before it):
//!
//! - [`status`]: the snapshot of the data path's state the status API and
//!   the metrics show;
//! - [`metrics`]: Prometheus counters, histograms and state gauges;
//! - [`proxy`]: the data path below the routes — pools, the one upstream
//!   call and failover step, the connection pool, the pool route, fan-out;
//! - [`mcp`]: the MCP gateway, an MCP route over pools of MCP servers;
//! - [`gateway`]: the request path — match a route, apply its filters,
//!   dispatch by its kind ([`proxy`] or [`mcp`]), record it;
//! - [`control`]: the control plane — the configuration in force, changed
//!   atomically and persisted ([`control::Control`]), and what follows or
//!   feeds it through [`control::ControlPlane`]: [`store`] (the state file
//!   or etcd), [`discovery`], [`process`] (managed upstreams), [`watch`]
//!   (drop-in plugins), [`loaders`] (the host's checks of what a config
//!   names);
//! - [`admin`]: the admin REST API and dashboard over [`control`];
//! - [`server`]: listeners, the accept loop, graceful shutdown;
//! - [`demo`]: the self-contained demo behind `switchyard demo`;
//! - [`telemetry`]: logging set-up.

pub use switchyard_config as config;
pub use switchyard_engines::{balance, events, failover, fusion, health, policy};
pub use switchyard_net::{dial, fswatch, sse, threads, tls};
pub use switchyard_plugin as plugin;

pub mod admin;
pub mod control;
pub mod demo;
pub mod gateway;
pub mod mcp;
pub mod metrics;
pub mod proxy;
pub mod server;
pub mod status;
pub mod telemetry;

pub use control::{discovery, loaders, process, store, watch};
