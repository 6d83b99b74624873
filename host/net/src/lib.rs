//! # switchyard-net
//!
//! What Switchyard's engines and data path stand on to reach the network:
//! dialing an instance ([`dial`]: TCP, TLS, the HTTP/1.1 or HTTP/2
//! handshake), TLS with rustls ([`tls`]: termination with certificates by
//! SNI, origination to `https://` instances, client identities), folder
//! watching that sees content changes only ([`fswatch`]), the
//! server-sent-events parser ([`sse`]) and per-thread striping
//! ([`threads`]).
//!
//! It sits above `switchyard-config` alone: it imports none of the
//! engines, the plugin host or the server.

pub mod dial;
pub mod fswatch;
pub mod sse;
pub mod threads;
pub mod tls;
