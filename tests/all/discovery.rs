//! Service discovery from DNS against a real DNS server (dnsmasq,
//! `tests/src/dns.rs`) and real upstreams.

use std::time::{Duration, Instant};

use serde_json::Value;
use switchyard_tests::dns::Dnsmasq;
use switchyard_tests::upstream::Upstream;

use crate::{admin, serve};

/// dnsmasq records: an SRV record `_http._tcp.svc.test` per upstream (its
/// port), every target `up.test` = 127.0.0.1.
fn srv(ups: &[&Upstream]) -> Vec<String> {
    let mut records = vec!["--host-record=up.test,127.0.0.1".to_string()];
    for up in ups {
        let port = up.url().rsplit(':').next().unwrap().to_string();
        records.push(format!("--srv-host=_http._tcp.svc.test,up.test,{port}"));
    }
    records
}

/// A config whose pool `p` (the one route's) has only `discovery` (a TOML
/// inline table), with an admin API.
fn discovered(discovery: &str) -> String {
    format!(
        "[[listeners]]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [[routes]]\npool = \"p\"\n[pools.p]\ndiscovery = {discovery}\n"
    )
}

/// Waits until pool `p`'s instances are `urls` (sorted); returns the pool's status.
async fn instances_become(api: &str, urls: &[String]) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut want = urls.to_vec();
    want.sort();
    loop {
        let (_, status) = admin(reqwest::Method::GET, &format!("{api}/v1/status"), None).await;
        let pool = status["pools"]
            .as_array()
            .and_then(|p| p.iter().find(|p| p["name"] == "p"))
            .cloned()
            .unwrap_or_default();
        let mut have: Vec<String> = pool["instances"].as_array().map_or_else(Vec::new, |i| {
            i.iter()
                .filter_map(|i| i["url"].as_str().map(str::to_owned))
                .collect()
        });
        have.sort();
        if have == want {
            return pool;
        }
        assert!(
            Instant::now() < deadline,
            "instances {have:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn requests(pool: &Value, url: &str) -> u64 {
    pool["instances"]
        .as_array()
        .and_then(|i| i.iter().find(|i| i["url"] == url))
        .and_then(|i| i["requests"].as_u64())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_records_add_and_remove_instances_and_an_outage_keeps_them() {
    let ups = [
        Upstream::start("u0"),
        Upstream::start("u1"),
        Upstream::start("u2"),
    ];
    let mut dns = Dnsmasq::start(&srv(&[&ups[0], &ups[1]]));
    let dir = tempfile::tempdir().unwrap();
    let config = discovered(&format!(
        "{{ kind = \"dns\", name = \"_http._tcp.svc.test\", type = \"SRV\", refresh_ms = 200, nameserver = \"{}\" }}",
        dns.address()
    ));
    let proxy = serve(&dir, &config);
    let api = proxy.admin_url();
    let url = |i: usize| ups[i].url().replace("localhost", "127.0.0.1");
    instances_become(&api, &[url(0), url(1)]).await;
    for _ in 0..6 {
        let response = crate::client()
            .get(format!("{}/", proxy.url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let (_, status) = admin(reqwest::Method::GET, &format!("{api}/v1/status"), None).await;
    let before = status["pools"][0].clone();
    // The records change: u0 leaves, u2 joins; u1 stays with its state.
    let port = dns.port();
    dns.stop();
    let mut dns = Dnsmasq::start_on(port, &srv(&[&ups[1], &ups[2]]));
    let after = instances_become(&api, &[url(1), url(2)]).await;
    assert!(
        requests(&after, &url(1)) >= requests(&before, &url(1)) && requests(&before, &url(1)) > 0,
        "{before} / {after}"
    );
    assert_eq!(requests(&after, &url(2)), 0, "{after}");
    // The DNS server gone: the instances stay (and keep serving).
    dns.stop();
    proxy.wait_for_log("discovery failed; the instances stay as they are");
    instances_become(&api, &[url(1), url(2)]).await;
    let response = crate::client()
        .get(format!("{}/", proxy.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[test]
fn discovery_config_errors_name_the_key() {
    use std::path::Path;
    use switchyard::config::Config;
    let base = "[[listeners]]\nlisten = \"127.0.0.1:0\"\n[pools.p]\n";
    for (pool, key, reason) in [
        (
            "discovery = { kind = \"dns\", name = \"api.internal\" }",
            "pools.p.discovery.port",
            "needs the instances' port",
        ),
        (
            "discovery = { kind = \"dns\", name = \"\", type = \"SRV\" }",
            "pools.p.discovery.name",
            "must not be empty",
        ),
        (
            "discovery = { kind = \"dns\", name = \"x\", type = \"SRV\", refresh_ms = 1 }",
            "pools.p.discovery.refresh_ms",
            "out of range",
        ),
        (
            "discovery = { kind = \"consul\", name = \"x\" }",
            "discovery",
            "unknown variant `consul`",
        ),
    ] {
        let text = format!("{base}{pool}\n");
        let err = Config::parse(
            &text,
            Path::new("f.toml"),
            Path::new("."),
            &switchyard::loaders::Loaders,
        )
        .expect_err(pool)
        .to_string();
        assert!(err.contains(key), "{key}: {err}");
        assert!(err.contains(reason), "{reason}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_registered_in_etcd_join_and_leave_with_their_lease() {
    let ups = [Upstream::start("u0"), Upstream::start("u1")];
    let etcd = switchyard_tests::etcd::Etcd::start();
    let url = |i: usize| ups[i].url().replace("localhost", "127.0.0.1");
    // u0 for good; u1 with a 2-second lease that nobody keeps alive.
    etcd.put("/services/p/u0", &url(0), None);
    let lease = etcd.lease(2);
    etcd.put("/services/p/u1", &url(1), Some(&lease));
    let dir = tempfile::tempdir().unwrap();
    let config = discovered(&format!(
        "{{ kind = \"etcd\", endpoints = [\"{}\"], prefix = \"/services/p/\", refresh_ms = 600000 }}",
        etcd.url()
    ));
    // No full re-read within the test (refresh_ms 10 min): what changes,
    // the watch brings.
    let proxy = serve(&dir, &config);
    let api = proxy.admin_url();
    // u1 leaves when its lease expires; u0 stays.
    instances_become(&api, &[url(0)]).await;
    let response = crate::client()
        .get(format!("{}/", proxy.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // A new registration with a longer lease joins, and leaves when it
    // expires (10 s: time enough to see it joined on a loaded machine).
    let lease = etcd.lease(10);
    etcd.put("/services/p/u1", &url(1), Some(&lease));
    instances_become(&api, &[url(0), url(1)]).await;
    instances_become(&api, &[url(0)]).await;
}
