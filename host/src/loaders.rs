//! The host's side of config validation: what a configuration names (TLS
//! files, the MCP session key file, etcd endpoints) is read at load by the
//! same code that uses it later, so a file refused at load is exactly one
//! that would fail when used ([`config::Resources`](crate::config::Resources)).

use crate::config::{Invalid, ListenerTlsConfig, McpSessionsConfig, Resources, UpstreamTlsConfig};

/// The loaders of the running host: rustls for TLS files, the MCP
/// gateway's session keys, the etcd client's endpoint parser.
pub struct Loaders;

impl Resources for Loaders {
    fn listener_tls(&self, tls: &ListenerTlsConfig) -> Result<(), Invalid> {
        crate::tls::ServerTls::load(tls).map(drop)
    }

    fn upstream_tls(&self, tls: &UpstreamTlsConfig) -> Result<(), Invalid> {
        crate::tls::UpstreamTls::load(Some(tls), Vec::new()).map(drop)
    }

    fn mcp_session_keys(&self, sessions: &McpSessionsConfig) -> Result<(), String> {
        crate::proxy::SessionKeys::load(sessions, false)
            .map(drop)
            .map_err(|e| format!("{e:#}"))
    }

    fn etcd_endpoints(&self, endpoints: &[String]) -> Result<(), String> {
        crate::store::etcd::Etcd::new(endpoints, None, None, std::time::Duration::ZERO).map(drop)
    }
}
