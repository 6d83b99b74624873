//! The data path below the routes: pools and the one upstream call, the
//! pool route with its failover, fan-out, and what they share.
//!
//! A pool ranks its instances ([`crate::balance`]); a pool route's request
//! is forwarded to the first acceptable instance over a pooled keep-alive
//! connection (`forward`). Bodies stream in both directions; hop-by-hop
//! headers are removed and `X-Forwarded-For`/`X-Forwarded-Proto` set
//! (`headers`).
//!
//! Every route kind — a pool route, a fan-out source, an MCP call
//! ([`crate::mcp`]) — makes its attempts on an instance through one
//! upstream call and takes one failover step after a failed one (`call`):
//! sent, bounded, booked and decided the same way.
//!
//! Matching a request to its route and dispatching it by the route's kind
//! is [`crate::gateway`]'s, above this module.

mod ahead;
mod body;
mod call;
mod client;
mod coding;
mod error;
mod fanout;
mod forward;
mod headers;
mod path;
mod pool;
mod recent;
mod reporting;
mod route;
mod tunnel;
mod upstream;

pub use body::ProxyBody;
pub use client::{ListenerRules, Received};
pub use coding::{Decode, Encoding};
pub use error::{ProxyError, StartError};
pub use fanout::FanOut;
pub(crate) use forward::error_chain;
pub use pool::{Pool, pool_named};
pub use recent::{RecentRequests, RequestRecord};
pub use reporting::Reporting;
pub use route::{Fallback, PoolRoute, StaticResponse};
pub use tunnel::Tunnels;
pub use upstream::Upstreams;

pub(crate) use ahead::ReadAhead;
pub(crate) use call::{AfterFailure, AttemptError, FailedAttempt};
pub(crate) use client::{read_ahead, read_whole};
pub(crate) use forward::{Inbound, rank};
pub(crate) use headers::{forward_client_cert, prepare_request};
pub(crate) use path::{PathRules, normalize};
pub(crate) use pool::UpstreamBody;
pub(crate) use recent::Served;
pub(crate) use upstream::PooledBody;
