//! Service discovery (`discovery = { kind = … }` on a pool): the pool's
//! discovered instances are made to match what the source says — through a
//! config change, so that instances that stay keep
//! their state (the in-place membership update) and new ones start fresh.
//! Discovered instances carry the label `discovered = "dns"` (or `"etcd"`);
//! the static `instances` are never touched. A failed lookup keeps the
//! instances as they are (and says so in the log): an outage of the source
//! does not empty a pool.
//!
//! - `dns`, as Envoy's `STRICT_DNS` clusters: every `refresh_ms` the name
//!   resolved (an `A`/`AAAA` address with the configured port, or each
//!   `SRV` record's target resolved, with the record's port).
//! - `etcd`: every key under the prefix, its value an instance's URL;
//!   instances register with a lease and vanish when it expires. The prefix
//!   is read, then watched (a change reaches the pool as it happens; a
//!   burst of changes is one config change), and read again in full every
//!   `refresh_ms`; with [`crate::store::etcd`], the client of etcd's
//!   HTTP/JSON API.
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
use crate::control::ControlPlane;
use crate::store::etcd::{Etcd, WatchEvent, prefix_end};

/// The label discovered instances carry (its value: `dns` or `etcd`).
pub const LABEL: &str = "discovered";

/// Runs discovery for every pool that has it, until `control` is dropped
/// (its etcd watchers with it).
pub fn spawn(control: &Arc<dyn ControlPlane>) -> tokio::task::JoinHandle<()> {
    let control = Arc::downgrade(control);
    tokio::spawn(async move {
        let mut due: BTreeMap<String, Instant> = BTreeMap::new();
        let mut watchers = Watchers::default();
        loop {
            let Some(next) = round(&control, &mut due, &mut watchers).await else {
                return;
            };
            tokio::time::sleep_until(next).await;
        }
    })
}

/// The etcd watcher of each pool discovered from etcd, with the settings it
/// follows; aborted when dropped.
#[derive(Default)]
struct Watchers(BTreeMap<String, (EtcdDiscovery, tokio::task::JoinHandle<()>)>);

impl Watchers {
    /// Makes the watchers those of `pools` (started, restarted with new
    /// settings, stopped for pools that no longer have one).
    fn keep(&mut self, control: &Weak<dyn ControlPlane>, pools: &[(String, DiscoveryConfig)]) {
        let wanted: BTreeMap<&String, &EtcdDiscovery> = pools
            .iter()
            .filter_map(|(pool, d)| match d {
                DiscoveryConfig::Etcd(etcd) => Some((pool, etcd)),
                DiscoveryConfig::Dns(_) => None,
            })
            .collect();
        self.0.retain(|pool, (settings, task)| {
            let keep = wanted.get(pool).is_some_and(|w| *w == settings);
            if !keep {
                task.abort();
            }
            keep
        });
        for (pool, settings) in wanted {
            if !self.0.contains_key(pool) {
                let task =
                    tokio::spawn(follow_etcd(control.clone(), pool.clone(), settings.clone()));
                self.0.insert(pool.clone(), (settings.clone(), task));
            }
        }
    }
}

impl Drop for Watchers {
    fn drop(&mut self) {
        for (_, task) in self.0.values() {
            task.abort();
        }
    }
}

/// Resolves every pool whose time has come; when the next one is due
/// (`None` once Switchyard is gone).
async fn round(
    control: &Weak<dyn ControlPlane>,
    due: &mut BTreeMap<String, Instant>,
    watchers: &mut Watchers,
) -> Option<Instant> {
    let pools: Vec<(String, DiscoveryConfig)> = control
        .upgrade()?
        .config()
        .pools
        .iter()
        .filter_map(|(name, p)| p.discovery.clone().map(|d| (name.clone(), d)))
        .collect();
    watchers.keep(control, &pools);
    due.retain(|name, _| pools.iter().any(|(n, _)| n == name));
    let now = Instant::now();
    for (pool, discovery) in &pools {
        let DiscoveryConfig::Dns(dns) = discovery else {
            continue;
        };
        if due.get(pool).is_some_and(|at| *at > now) {
            continue;
        }
        due.insert(pool.clone(), now + Duration::from_millis(dns.refresh_ms));
        match resolve(dns).await {
            Ok(urls) => apply(control, pool, "dns", urls).await,
            Err(why) => failed(pool, "dns", &why),
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

fn failed(pool: &str, source: &str, why: &str) {
    tracing::warn!(
        pool,
        source,
        "discovery failed; the instances stay as they are: {why}"
    );
}

/// An instance's URL from the value of an etcd key, if it is one.
fn instance_url(value: &[u8]) -> Option<String> {
    let url = std::str::from_utf8(value).ok()?.trim();
    (url.starts_with("http://") || url.starts_with("https://")).then(|| url.to_string())
}

/// Follows `pool`'s instances under `etcd.prefix`, until aborted: the
/// prefix read (every key an instance, its value the URL), then watched
/// from that revision — a registration or an expired lease reaches the
/// pool as it happens — and read again in full every `refresh_ms`. A failed
/// read or a broken watch keeps the instances and tries again with backoff.
async fn follow_etcd(control: Weak<dyn ControlPlane>, pool: String, etcd: EtcdDiscovery) {
    let client = match Etcd::new(&etcd.endpoints, None, None, Duration::from_secs(5)) {
        Ok(client) => client,
        Err(why) => return failed(&pool, "etcd", &why),
    };
    let mut backoff = crate::store::Backoff::default();
    loop {
        match watch_etcd(&control, &pool, &etcd, &client).await {
            Ok(()) => backoff = crate::store::Backoff::default(),
            Err(why) => failed(&pool, "etcd", &why),
        }
        if control.strong_count() == 0 {
            return;
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// One read and watch of [`follow_etcd`]; `Ok` when the watch asks for a
/// fresh read (compaction, or the full read is due).
async fn watch_etcd(
    control: &Weak<dyn ControlPlane>,
    pool: &str,
    etcd: &EtcdDiscovery,
    client: &Etcd,
) -> Result<(), String> {
    let prefix = etcd.prefix.as_bytes();
    let end = prefix_end(prefix);
    let (kvs, revision) = client
        .range(prefix, Some(&end))
        .await
        .map_err(|e| e.to_string())?;
    let mut instances: BTreeMap<Vec<u8>, String> = kvs
        .into_iter()
        .filter_map(|kv| instance_url(&kv.value).map(|url| (kv.key, url)))
        .collect();
    apply(control, pool, "etcd", instances.values().cloned().collect()).await;
    let (events, mut received) = tokio::sync::mpsc::channel(64);
    let watch = client.watch(prefix, &end, revision + 1, &events);
    tokio::pin!(watch);
    let reread = tokio::time::sleep(Duration::from_millis(etcd.refresh_ms));
    tokio::pin!(reread);
    loop {
        let event = tokio::select! {
            ended = &mut watch => return ended.map_err(|e| e.to_string()),
            () = &mut reread => return Ok(()),
            Some(event) = received.recv() => event,
        };
        // What arrived meanwhile too: one config change for a burst.
        let mut pending = vec![event];
        while let Ok(more) = received.try_recv() {
            pending.push(more);
        }
        for event in pending {
            match event {
                WatchEvent::Compacted(_) => return Ok(()),
                WatchEvent::Changed(changes, _) => {
                    for (key, kv) in changes {
                        match kv.and_then(|kv| instance_url(&kv.value)) {
                            Some(url) => instances.insert(key, url),
                            None => instances.remove(&key),
                        };
                    }
                }
            }
        }
        apply(control, pool, "etcd", instances.values().cloned().collect()).await;
    }
}

/// Makes `pool`'s instances discovered from `source` `urls` (a config
/// change, off the async threads: it writes the state file), when they
/// differ.
async fn apply(
    control: &Weak<dyn ControlPlane>,
    pool: &str,
    source: &'static str,
    urls: BTreeSet<String>,
) {
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
        control.change_local(&mut |config: &mut crate::config::Config| {
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
