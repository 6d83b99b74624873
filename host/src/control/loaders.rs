//! The host's side of config validation: what a configuration names (TLS
//! files, the MCP session key file, etcd endpoints, JWKS files) is read at load by the
//! same code that uses it later, so a file refused at load is exactly one
//! that would fail when used ([`config::Resources`](crate::config::Resources)).

use crate::config::{
    Invalid, JwtProvider, ListenerTlsConfig, McpSessionsConfig, Resources, UpstreamTlsConfig,
    parse_jwks,
};

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
        crate::mcp::SessionKeys::load(sessions, false)
            .map(drop)
            .map_err(|e| format!("{e:#}"))
    }

    fn etcd_endpoints(&self, endpoints: &[String]) -> Result<(), String> {
        crate::store::etcd::Etcd::new(endpoints, None, None, std::time::Duration::ZERO).map(drop)
    }

    fn jwks_file(&self, provider: &JwtProvider) -> Result<(), String> {
        parse_jwks(&provider.jwks_text()?, provider.hmac).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    proptest! {
        #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

        /// The shipped examples, edited at random, are loaded or refused
        /// naming the file; the loader (with the host's loaders) never panics.
        #[test]
        fn the_loader_refuses_what_it_cannot_load_and_never_panics(
            text in prop_oneof![
                switchyard_fuzzing::mutated(include_str!("../../../examples/failover.toml")),
                switchyard_fuzzing::mutated(include_str!("../../../examples/fusion.toml")),
                switchyard_fuzzing::mutated(include_str!("../../../examples/strategies.toml")),
                switchyard_fuzzing::mutated(include_str!("../../../examples/health.toml")),
                switchyard_fuzzing::mutated(include_str!("../../../examples/mcp-auth.toml")),
                switchyard_fuzzing::mutated(include_str!("../../../examples/rate-limits.toml")),
            ]
        ) {
            let dir = std::env::temp_dir();
            let loaded = crate::config::Config::parse(
                &text,
                std::path::Path::new("fuzz.toml"),
                &dir,
                &super::Loaders,
            );
            if let Err(error) = loaded {
                prop_assert!(error.to_string().starts_with("fuzz.toml: "), "{error}");
            }
        }
    }
}
