//! The `discovery` table of a pool: instances learned from DNS beside the
//! static list (`switchyard::discovery` documents how).
//!
//! ```toml
//! [pools.api]
//! discovery = { kind = "dns", name = "_http._tcp.api.internal", type = "SRV", refresh_ms = 5000 }
//! # or: { kind = "dns", name = "api.internal", type = "A", port = 8080, nameserver = "10.0.0.2:53" }
//! # or: { kind = "etcd", endpoints = ["http://127.0.0.1:2379"], prefix = "/services/api/" }
//! ```

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::types::{Invalid, MAX_WAIT_MS, in_range};

/// Where a pool's instances are discovered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum DiscoveryConfig {
    /// From DNS records.
    Dns(DnsDiscovery),
    /// From keys under a prefix in etcd (instances register with a lease).
    Etcd(EtcdDiscovery),
}

/// etcd service discovery: every key under `prefix` is an instance, its
/// value the instance's URL (`http://host:port`). Instances register with a
/// lease (`etcdctl put --lease=…`) and disappear when it expires. The
/// prefix is watched: changes reach the pool as they happen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EtcdDiscovery {
    /// etcd's client URLs, e.g. `["http://10.0.0.5:2379"]`; at least one.
    pub endpoints: Vec<String>,
    /// The key prefix, e.g. `/services/api/`.
    pub prefix: String,
    /// How often the prefix is read again in full, besides the watch (a
    /// safety net for a connection that died silently), ms. Default 10000.
    #[serde(default = "defaults::etcd_refresh_ms")]
    pub refresh_ms: u64,
}

/// DNS service discovery: every address (or SRV target and port) the name
/// resolves to is an instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DnsDiscovery {
    /// The name to resolve, e.g. `api.internal` or `_http._tcp.api.internal`.
    pub name: String,
    /// `A`, `AAAA` or `SRV` (target and port from each record). Default `A`.
    #[serde(rename = "type", default)]
    pub record_type: DnsRecordType,
    /// The instances' port, for `A` and `AAAA` (required there).
    pub port: Option<u16>,
    /// How often the name is resolved again, ms. Default 5000.
    #[serde(default = "defaults::refresh_ms")]
    pub refresh_ms: u64,
    /// The DNS server, `ip:port`. Default: the system's (`/etc/resolv.conf`).
    #[schema(value_type = Option<String>)]
    pub nameserver: Option<SocketAddr>,
    /// Instances are `https://` (else `http://`). Default false.
    #[serde(default)]
    pub https: bool,
}

/// A DNS record type to discover instances from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum DnsRecordType {
    /// IPv4 addresses (with `port`).
    #[default]
    A,
    /// IPv6 addresses (with `port`).
    #[serde(rename = "AAAA")]
    Aaaa,
    /// Service records: a target name and a port each.
    #[serde(rename = "SRV")]
    Srv,
}

mod defaults {
    pub fn refresh_ms() -> u64 {
        5_000
    }
    pub fn etcd_refresh_ms() -> u64 {
        10_000
    }
}

impl DiscoveryConfig {
    /// Checks what types cannot say.
    pub(super) fn validate(&self) -> Result<(), Invalid> {
        let dns = match self {
            Self::Dns(dns) => dns,
            Self::Etcd(etcd) => {
                if etcd.endpoints.is_empty() {
                    return Err(("endpoints".into(), "at least one endpoint".into()));
                }
                if etcd.prefix.is_empty() {
                    return Err(("prefix".into(), "must not be empty".into()));
                }
                return in_range("refresh_ms", etcd.refresh_ms, 100, MAX_WAIT_MS);
            }
        };
        if dns.name.trim().is_empty() {
            return Err(("name".into(), "must not be empty".into()));
        }
        if dns.record_type != DnsRecordType::Srv && dns.port.is_none_or(|p| p == 0) {
            return Err((
                "port".into(),
                "A and AAAA discovery needs the instances' port".into(),
            ));
        }
        in_range("refresh_ms", dns.refresh_ms, 100, MAX_WAIT_MS)
    }
}
