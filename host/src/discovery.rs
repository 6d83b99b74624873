//! Service discovery (`discovery = { kind = … }` on a pool): every
//! `refresh_ms` the pool's discovered instances are made to match what the
//! source says — through a config change, so that instances that stay keep
//! their state (the in-place membership update) and new ones start fresh.
//! Discovered instances carry the label `discovered = "dns"` (or `"etcd"`);
//! the static `instances` are never touched. A failed lookup keeps the
//! instances as they are (and says so in the log): an outage of the source
//! does not empty a pool.
//!
//! - `dns`, as Envoy's `STRICT_DNS` clusters: the name resolved (an
//!   `A`/`AAAA` address with the configured port, or each `SRV` record's
//!   target resolved, with the record's port).
//! - `etcd`: every key under the prefix, its value an instance's URL;
//!   instances register with a lease and vanish when it expires. Read with
//!   [`crate::store::etcd`], the client of etcd's HTTP/JSON API.
//!
//! Discovered instances are each replica's own: with the etcd config
//! store, they are never written to the shared configuration.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::{Resolver, TokioResolver};
use tokio::time::Instant;

use crate::config::{DiscoveryConfig, DnsDiscovery, DnsRecordType, EtcdDiscovery, InstanceConfig};
use crate::control::Control;
use crate::store::etcd::{Etcd, prefix_end};

/// The label discovered instances carry (its value: `dns` or `etcd`).
pub const LABEL: &str = "discovered";

/// Runs discovery for every pool that has it, until `control` is dropped.
pub fn spawn(control: &Arc<Control>) -> tokio::task::JoinHandle<()> {
    let control = Arc::downgrade(control);
    tokio::spawn(async move {
        let mut due: BTreeMap<String, Instant> = BTreeMap::new();
        loop {
            let Some(next) = round(&control, &mut due).await else {
                return;
            };
            tokio::time::sleep_until(next).await;
        }
    })
}

/// Resolves every pool whose time has come; when the next one is due
/// (`None` once Switchyard is gone).
async fn round(control: &Weak<Control>, due: &mut BTreeMap<String, Instant>) -> Option<Instant> {
    let pools: Vec<(String, DiscoveryConfig)> = control
        .upgrade()?
        .config()
        .pools
        .iter()
        .filter_map(|(name, p)| p.discovery.clone().map(|d| (name.clone(), d)))
        .collect();
    due.retain(|name, _| pools.iter().any(|(n, _)| n == name));
    let now = Instant::now();
    for (pool, discovery) in &pools {
        if due.get(pool).is_some_and(|at| *at > now) {
            continue;
        }
        let (refresh_ms, source, found) = match discovery {
            DiscoveryConfig::Dns(dns) => (dns.refresh_ms, "dns", resolve(dns).await),
            DiscoveryConfig::Etcd(etcd) => (etcd.refresh_ms, "etcd", read_etcd(etcd).await),
        };
        due.insert(pool.clone(), now + Duration::from_millis(refresh_ms));
        match found {
            Ok(urls) => apply(control, pool, source, urls).await,
            Err(why) => {
                tracing::warn!(
                    pool,
                    source,
                    "discovery failed; the instances stay as they are: {why}"
                )
            }
        }
    }
    // Look again at least every second: a pool may have gained discovery.
    let next = due
        .values()
        .min()
        .copied()
        .unwrap_or(now + Duration::from_secs(1));
    Some(next.min(now + Duration::from_secs(1)))
}

/// The instances' URLs `dns` resolves to now.
///
/// # Errors
/// Why the lookup failed (no such name, no answer, no server).
pub async fn resolve(dns: &DnsDiscovery) -> Result<BTreeSet<String>, String> {
    let resolver = resolver(dns)?;
    let scheme = if dns.https { "https" } else { "http" };
    let url = |ip: IpAddr, port: u16| match ip {
        IpAddr::V4(v4) => format!("{scheme}://{v4}:{port}"),
        IpAddr::V6(v6) => format!("{scheme}://[{v6}]:{port}"),
    };
    let record_type = match dns.record_type {
        DnsRecordType::A => RecordType::A,
        DnsRecordType::Aaaa => RecordType::AAAA,
        DnsRecordType::Srv => RecordType::SRV,
    };
    let answer = resolver
        .lookup(dns.name.as_str(), record_type)
        .await
        .map_err(|e| e.to_string())?;
    let mut urls = BTreeSet::new();
    for record in answer.answers() {
        match (&record.data, dns.port) {
            (RData::A(a), Some(port)) => {
                urls.insert(url(IpAddr::V4(a.0), port));
            }
            (RData::AAAA(aaaa), Some(port)) => {
                urls.insert(url(IpAddr::V6(aaaa.0), port));
            }
            (RData::SRV(srv), _) => {
                let ips = resolver
                    .lookup_ip(srv.target.clone())
                    .await
                    .map_err(|e| format!("SRV target {}: {e}", srv.target))?;
                urls.extend(ips.iter().map(|ip| url(ip, srv.port)));
            }
            _ => {}
        }
    }
    Ok(urls)
}

/// A resolver for `dns`: its `nameserver` (UDP) or the system's; no cache,
/// so that a change is seen at the next refresh.
fn resolver(dns: &DnsDiscovery) -> Result<TokioResolver, String> {
    let mut builder = match dns.nameserver {
        Some(server) => {
            let mut ns = NameServerConfig::udp(server.ip());
            for connection in &mut ns.connections {
                connection.port = server.port();
            }
            Resolver::builder_with_config(
                ResolverConfig::from_parts(None, Vec::new(), vec![ns]),
                TokioRuntimeProvider::default(),
            )
        }
        None => Resolver::builder_tokio().map_err(|e| format!("the system's resolver: {e}"))?,
    };
    builder.options_mut().cache_size = 0;
    builder.build().map_err(|e| e.to_string())
}

/// The instances' URLs under `etcd.prefix`: the values of its keys.
///
/// # Errors
/// Why etcd could not be read (every endpoint tried).
pub async fn read_etcd(etcd: &EtcdDiscovery) -> Result<BTreeSet<String>, String> {
    let client = Etcd::new(&etcd.endpoints, None, None, Duration::from_secs(5))?;
    let prefix = etcd.prefix.as_bytes();
    let (kvs, _) = client
        .range(prefix, Some(&prefix_end(prefix)))
        .await
        .map_err(|e| e.to_string())?;
    Ok(kvs
        .into_iter()
        .filter_map(|kv| String::from_utf8(kv.value).ok())
        .map(|v| v.trim().to_string())
        .filter(|v| v.starts_with("http://") || v.starts_with("https://"))
        .collect())
}

/// Makes `pool`'s instances discovered from `source` `urls` (a config
/// change, off the async threads: it writes the state file), when they
/// differ.
async fn apply(control: &Weak<Control>, pool: &str, source: &'static str, urls: BTreeSet<String>) {
    let Some(control) = control.upgrade() else {
        return;
    };
    let discovered = move |i: &InstanceConfig| i.labels.get(LABEL).is_some_and(|v| v == source);
    let now: BTreeSet<String> = control
        .config()
        .pools
        .get(pool)
        .map(|p| {
            p.instances
                .iter()
                .filter(|i| discovered(i))
                .map(|i| i.url.clone())
                .collect()
        })
        .unwrap_or_default();
    if now == urls {
        return;
    }
    let pool = pool.to_string();
    let changed = tokio::task::spawn_blocking(move || {
        control.change_local(|config| {
            if let Some(p) = config.pools.get_mut(&pool) {
                p.instances
                    .retain(|i| !discovered(i) || urls.contains(&i.url));
                for url in &urls {
                    if !p.instances.iter().any(|i| &i.url == url) {
                        p.instances.push(InstanceConfig {
                            url: url.clone(),
                            weight: 1,
                            labels: BTreeMap::from([(LABEL.to_string(), source.to_string())]),
                            drain: false,
                        });
                    }
                }
            }
            Ok(())
        })
    })
    .await;
    if let Ok(Err(error)) = changed {
        tracing::warn!(%error, "discovery could not update the pool");
    }
}
