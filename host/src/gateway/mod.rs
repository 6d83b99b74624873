//! The request path: a client's request is matched against the routes in
//! order ([`Router`]), then served by its route's target — one pool with
//! failover ([`crate::proxy`]), a fan-out over several sources
//! ([`crate::proxy::FanOut`]), or the MCP gateway ([`crate::mcp`]) — and
//! recorded (route metrics, the request log). On the way, the route's
//! filters ([`filter`]) may rewrite the request, answer it themselves, or
//! change the answer's headers.
//!
//! This module sits above the route kinds it dispatches to: [`crate::proxy`]
//! and [`crate::mcp`] never import it. The listeners and their accept loop
//! are [`crate::server`]'s; this module serves one request ([`handle`]).

pub mod auth;
pub mod authorize;
mod compress;
pub mod filter;
mod forward_auth;
mod handle;
mod jwks;
pub mod rate_limit;
mod router;
mod service;

pub use handle::handle;
pub use router::{Route, Router, Target};
