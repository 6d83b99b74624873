//! The data path: listeners, routing, forwarding to pooled upstream connections.
//!
//! A request is matched against the routes in order (`router`); the route's
//! pool ranks its instances ([`crate::balance`]); the request is forwarded to
//! the first acceptable instance over a pooled keep-alive HTTP/1.1 connection
//! (`forward`). Bodies stream in both directions; hop-by-hop headers are
//! removed and `X-Forwarded-For`/`X-Forwarded-Proto` set (`headers`).
//!
//! Every route kind makes its attempts on an instance through one upstream
//! call (`call`): sent, bounded and booked the same way.
//!
//! The listeners and their accept loop are [`crate::server`]'s; this module
//! serves one request ([`handle`]).

mod body;
mod call;
mod client;
mod error;
mod fanout;
mod forward;
mod headers;
pub mod mcp;
mod path;
mod pool;
mod recent;
mod router;
mod tunnel;
mod upstream;

pub use client::ListenerRules;
pub use error::{ProxyError, StartError};
pub use forward::handle;

pub use fanout::FanOut;
pub use mcp::{McpRoute, SessionKeys};
pub use pool::Pool;
pub use recent::{RecentRequests, RequestRecord};
pub use router::{PoolRoute, Reporting, Route, Router, Target};
pub use tunnel::Tunnels;
