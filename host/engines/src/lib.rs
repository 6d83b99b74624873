//! # switchyard-engines
//!
//! The four engines that decide what happens to a request, each a trait
//! with built-in implementations, and what they share:
//!
//! - [`balance`]: the `Strategy` trait, the built-in strategies, the
//!   balancer and the instances ([`balance::Endpoint`]) they rank;
//! - [`health`]: active checks, passive outlier detection, predictive
//!   trends, the panic threshold;
//! - [`failover`]: retry rules and budget, circuit breakers, bulkheads and
//!   the failover-policy trait;
//! - [`fusion`]: judging answers and the built-in resolvers;
//! - [`policy`]: the one shape of the four (a primary, a built-in
//!   fallback, quarantine), which the plugin host's adapters implement;
//! - [`events`]: the event bus (health, process, config and plugin events,
//!   damped per instance).
//!
//! It sits above `switchyard-config` and `switchyard-net`: the plugin host
//! (`switchyard-plugin`) implements these traits with Wasm components and
//! the server (`switchyard`) drives them; neither is imported here.

pub mod balance;
pub mod events;
pub mod failover;
pub mod fusion;
pub mod health;
pub mod policy;
