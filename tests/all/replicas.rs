//! Several replicas, one configuration: real `switchyard` processes sharing
//! a real etcd (`tests/src/etcd.rs`: one member, or a 3-member cluster for
//! the failure cases).

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchyard_tests::etcd::Etcd;
use switchyard_tests::fixtures;
use switchyard_tests::process::Switchyard;
use switchyard_tests::upstream::Upstream;

use crate::{BINARY, admin, client, get, upstreams};

/// A replica: its directory (config, cached copy, plugins) and process.
struct Replica {
    dir: tempfile::TempDir,
    process: Switchyard,
    api: String,
}

/// The config of a replica: its own listener and admin API, the etcd store
/// at `endpoints`, and pool `p` over `first` (what seeds etcd).
fn replica_config(endpoints: &[String], first: &Upstream) -> String {
    format!(
        "[[listeners]]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [store]\nkind = \"etcd\"\nendpoints = {endpoints:?}\ntimeout_ms = 5000\n\
         [[routes]]\npool = \"p\"\n[pools.p]\ninstances = [{{ url = \"{}\" }}]\n",
        first.url()
    )
}

impl Replica {
    fn start(endpoints: &[String], first: &Upstream) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config =
            switchyard_tests::process::write_config(dir.path(), &replica_config(endpoints, first));
        let process = Switchyard::serve(BINARY, &config);
        let api = process.admin_url();
        Self { dir, process, api }
    }

    /// Kills the process and starts it again on the same directory.
    fn restart(&mut self) {
        self.process.kill_hard();
        self.process = Switchyard::serve(BINARY, &self.dir.path().join("config.toml"));
        self.api = self.process.admin_url();
    }

    async fn store(&self) -> Value {
        admin(reqwest::Method::GET, &format!("{}/ready", self.api), None)
            .await
            .1["store"]
            .clone()
    }

    /// The upstream that answers a GET through this replica.
    async fn served_by(&self) -> String {
        get(&client(), &format!("{}/", self.process.url)).await.1
    }
}

/// PUTs `bytes` as plugin `name` through the admin API at `api`: the status.
async fn upload(api: &str, name: &str, bytes: &[u8]) -> u16 {
    let request = client()
        .put(format!("{api}/v1/plugins/{name}"))
        .body(bytes.to_vec());
    request.send().await.unwrap().status().as_u16()
}

/// DELETEs plugin `name` through the admin API at `api`: the status.
async fn delete_plugin(api: &str, name: &str) -> u16 {
    let request = client().delete(format!("{api}/v1/plugins/{name}"));
    request.send().await.unwrap().status().as_u16()
}

/// `component` with a custom section of `size` bytes appended (a valid
/// component still: custom sections are ignored by the runtime).
fn padded(mut component: Vec<u8>, size: usize) -> Vec<u8> {
    fn leb128(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    let name = b"padding";
    let mut payload = Vec::with_capacity(size + 16);
    leb128(name.len(), &mut payload);
    payload.extend_from_slice(name);
    payload.resize(payload.len() + size, 0x5a);
    component.push(0);
    leb128(payload.len(), &mut component);
    component.extend_from_slice(&payload);
    component
}

/// Polls `done` every 20 ms until it holds, failing after 60 s with `what`.
async fn until<F: std::future::Future<Output = bool>>(what: &str, mut done: impl FnMut() -> F) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until every replica serves from `upstream` alone.
async fn all_served_by(replicas: &[Replica], upstream: &str) {
    for (i, replica) in replicas.iter().enumerate() {
        until(&format!("replica {i} serves from {upstream}"), || async {
            replica.served_by().await == upstream
        })
        .await;
    }
}

/// Replaces pool `p`'s instances with `ups` through `replica`'s API.
async fn set_instances(replica: &Replica, ups: &[&Upstream]) -> (u16, Value) {
    let instances: Vec<Value> = ups.iter().map(|u| json!({ "url": u.url() })).collect();
    admin(
        reqwest::Method::PUT,
        &format!("{}/v1/pools/p", replica.api),
        Some(json!({ "instances": instances })),
    )
    .await
}

/// The pool `p` a replica has.
async fn pool(replica: &Replica) -> Value {
    admin(
        reqwest::Method::GET,
        &format!("{}/v1/pools/p", replica.api),
        None,
    )
    .await
    .1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_one_configuration_through_etcd() {
    let mut etcd = Etcd::start();
    let ups = upstreams(3);
    let endpoints = etcd.urls();
    let mut replicas: Vec<Replica> = (0..3)
        .map(|_| Replica::start(&endpoints, &ups[0]))
        .collect();
    for replica in &replicas {
        let store = replica.store().await;
        assert_eq!(store["kind"], "etcd", "{store}");
        assert_eq!(store["in_sync"], true, "{store}");
        assert_eq!(store["loaded_from"], "etcd", "{store}");
    }
    // The first replica seeded etcd; every one is at that revision.
    let seeded = replicas[0].store().await["revision"].clone();
    for replica in &replicas[1..] {
        until("the same revision everywhere", || async {
            replica.store().await["revision"] == seeded
        })
        .await;
    }
    all_served_by(&replicas, "u0").await;

    // A change on one replica is served by all three.
    let (status, _) = set_instances(&replicas[1], &[&ups[1]]).await;
    assert_eq!(status, 200);
    all_served_by(&replicas, "u1").await;

    // A filter and the route that lists it, written on one replica, are
    // applied by all three.
    let filter = json!({ "kind": "response-headers", "set": { "x-shared": "yes" } });
    let (status, body) = admin(
        reqwest::Method::PUT,
        &format!("{}/v1/filters/shared", replicas[2].api),
        Some(filter),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let route = json!({ "pool": "p", "filters": ["shared"] });
    let (status, body) = admin(
        reqwest::Method::PUT,
        &format!("{}/v1/routes/0", replicas[2].api),
        Some(route),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    for replica in &replicas {
        until("every replica applies the shared filter", || async {
            let response = client()
                .get(format!("{}/", replica.process.url))
                .send()
                .await
                .unwrap();
            response
                .headers()
                .get("x-shared")
                .is_some_and(|v| v == "yes")
        })
        .await;
    }

    // Two writes based on the same revision (If-Match): one wins, one 409.
    let response = client()
        .get(format!("{}/v1/config", replicas[0].api))
        .send()
        .await
        .unwrap();
    let etag = response.headers()["etag"].to_str().unwrap().to_string();
    let write = |replica: &Replica, body: Value| {
        let request = client()
            .put(format!("{}/v1/pools/p", replica.api))
            .header("if-match", etag.clone())
            .header("content-type", "application/json")
            .body(body.to_string());
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let text = response.text().await.unwrap();
            (status, serde_json::from_str::<Value>(&text).unwrap())
        }
    };
    let (a, b) = tokio::join!(
        write(
            &replicas[1],
            json!({ "instances": [{ "url": ups[2].url() }] })
        ),
        write(
            &replicas[2],
            json!({ "instances": [{ "url": ups[0].url() }] })
        ),
    );
    let mut statuses = [a.0, b.0];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 409], "{a:?} {b:?}");
    let loser = if a.0 == 409 { &a.1 } else { &b.1 };
    assert_eq!(loser["error"], "conflict");
    assert!(
        loser["message"].as_str().unwrap().contains("revision"),
        "{loser}"
    );
    let winner = if a.0 == 200 { "u2" } else { "u0" };
    all_served_by(&replicas, winner).await;
    let agreed = pool(&replicas[1]).await;
    for replica in &replicas {
        until("every replica has the winner's pool", || async {
            pool(replica).await == agreed
        })
        .await;
    }

    // Concurrent writes without a precondition: each is applied on the
    // newest revision or refused with 409, never lost.
    let adds: Vec<Upstream> = (0..6).map(|i| Upstream::start(&format!("n{i}"))).collect();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, up) in adds.iter().enumerate() {
        let url = format!("{}/v1/pools/p/instances", replicas[i % 3].api);
        let body = json!({ "url": up.url() });
        tasks.spawn(async move {
            let (status, _) = admin(reqwest::Method::POST, &url, Some(body.clone())).await;
            (status, body["url"].as_str().unwrap().to_string())
        });
    }
    let mut accepted = Vec::new();
    while let Some(done) = tasks.join_next().await {
        let (status, url) = done.unwrap();
        assert!(status == 201 || status == 409, "{status}");
        if status == 201 {
            accepted.push(url);
        }
    }
    assert!(!accepted.is_empty());
    let has_exactly = |p: &Value| {
        let mut urls: Vec<String> = p["instances"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["url"].as_str().unwrap().to_string())
            .filter(|u| adds.iter().any(|a| a.url() == *u))
            .collect();
        urls.sort();
        let mut want = accepted.clone();
        want.sort();
        urls == want
    };
    for replica in &replicas {
        until(
            "every acknowledged add is there, and only those",
            || async { has_exactly(&pool(replica).await) },
        )
        .await;
    }

    // A plugin uploaded on one replica reaches the others, byte for byte,
    // and a pool using it is built on each from its own copy. 1.3 MB of
    // padding make it three chunks in etcd.
    let bytes = padded(std::fs::read(fixtures::LABEL_AFFINITY).unwrap(), 1_300_000);
    assert_eq!(upload(&replicas[0].api, "affinity", &bytes).await, 201);
    for replica in &replicas {
        let file = replica.dir.path().join("switchyard-plugins/affinity.wasm");
        until("the plugin is on every replica", || async {
            std::fs::read(&file).is_ok_and(|b| b == bytes)
        })
        .await;
    }
    let plugin_path = replicas[0]
        .dir
        .path()
        .join("switchyard-plugins/affinity.wasm");
    let (status, body) = admin(
        reqwest::Method::PUT,
        &format!("{}/v1/pools/p", replicas[0].api),
        Some(json!({
            "strategy": { "kind": "plugin",
                          "plugin": { "path": plugin_path,
                                      "config": { "header": "x-region", "label": "region" },
                                      "call_deadline_ms": 1000 } },
            "instances": [
                { "url": ups[1].url(), "labels": { "region": "eu" } },
                { "url": ups[2].url(), "labels": { "region": "us" } },
            ],
        })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    for replica in &replicas {
        let own = replica.dir.path().join("switchyard-plugins/affinity.wasm");
        until("each replica loads its own copy", || async {
            pool(replica).await["strategy"]["plugin"]["path"] == json!(own)
        })
        .await;
        let region = client()
            .get(format!("{}/", replica.process.url))
            .header("x-region", "us")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(region, "u2", "the plugin chose on this replica");
    }
    let (status, _) = set_instances(&replicas[0], &[&ups[1]]).await;
    assert_eq!(status, 200);
    all_served_by(&replicas, "u1").await;

    // etcd stops: every replica keeps serving, writes get 503, /ready says so.
    etcd.stop();
    let (status, body) = set_instances(&replicas[2], &[&ups[0]]).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "unavailable");
    for replica in &replicas {
        until("the replica says it is out of sync", || async {
            replica.store().await["in_sync"] == false
        })
        .await;
        assert_eq!(replica.served_by().await, "u1");
    }
    let status = admin(
        reqwest::Method::GET,
        &format!("{}/v1/status", replicas[0].api),
        None,
    )
    .await
    .1;
    assert_eq!(status["store"]["in_sync"], false, "{}", status["store"]);
    assert!(
        status["store"]["error"]
            .as_str()
            .unwrap()
            .contains("unreachable")
    );
    let metrics = get(&client(), &format!("{}/metrics", replicas[0].api))
        .await
        .1;
    assert!(
        metrics.contains("switchyard_config_store_in_sync 0"),
        "the metric says so too"
    );
    // A replica restarted while etcd is down serves its cached copy.
    replicas[2].restart();
    let store = replicas[2].store().await;
    assert_eq!(store["loaded_from"], "cache", "{store}");
    assert_eq!(replicas[2].served_by().await, "u1");
    assert!(
        replicas[2]
            .process
            .log()
            .iter()
            .any(|l| l.contains("serving the cached copy")),
        "the cached copy is announced"
    );

    // etcd back: every replica resyncs, and writes work again everywhere.
    etcd.restart();
    for replica in &replicas {
        until("the replica is in sync again", || async {
            replica.store().await["in_sync"] == true
        })
        .await;
    }
    let (status, body) = set_instances(&replicas[2], &[&ups[0]]).await;
    assert_eq!(status, 200, "{body}");
    all_served_by(&replicas, "u0").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etcd_member_killed_the_replicas_go_on() {
    let mut etcd = Etcd::cluster(3);
    let ups = upstreams(2);
    let endpoints = etcd.urls();
    let replicas: Vec<Replica> = (0..3)
        .map(|_| Replica::start(&endpoints, &ups[0]))
        .collect();
    all_served_by(&replicas, "u0").await;
    // The member every replica asks first dies.
    etcd.kill_member(0);
    etcd.wait_serving(1);
    // A write still commits (on a member that answers) and reaches all;
    // while the cluster elects a new leader it may be refused with 503, as
    // a client would be told, and is sent again.
    until("a write commits without member 0", || async {
        let (status, body) = set_instances(&replicas[0], &[&ups[1]]).await;
        assert!(status == 200 || status == 503, "{status} {body}");
        status == 200
    })
    .await;
    all_served_by(&replicas, "u1").await;
    for replica in &replicas {
        until("the replica follows the cluster", || async {
            replica.store().await["in_sync"] == true
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_or_deleted_plugin_leaves_no_chunks_behind() {
    let etcd = Etcd::start();
    let ups = upstreams(1);
    let replica = Replica::start(&etcd.urls(), &ups[0]);
    let plugin = std::fs::read(fixtures::LABEL_AFFINITY).unwrap();
    let padded_plugin = padded(plugin.clone(), 600_000);
    assert_eq!(upload(&replica.api, "p1", &padded_plugin).await, 201);
    let chunks = etcd.keys("/switchyard/blobs/");
    assert_eq!(chunks.len(), 2, "{chunks:?}");
    // Replaced: only the new content's chunks are left.
    assert_eq!(upload(&replica.api, "p1", &plugin).await, 200);
    let sha = switchyard::plugin::sha256_hex(&plugin);
    assert_eq!(
        etcd.keys("/switchyard/blobs/"),
        [format!("/switchyard/blobs/{sha}/00000")]
    );
    // Deleted: nothing is left.
    assert_eq!(delete_plugin(&replica.api, "p1").await, 204);
    assert!(etcd.keys("/switchyard/blobs/").is_empty());
    assert!(etcd.keys("/switchyard/plugins/").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_deleted_while_a_replica_was_down_is_gone_when_it_is_back() {
    let etcd = Etcd::start();
    let ups = upstreams(1);
    let mut replicas: Vec<Replica> = (0..2)
        .map(|_| Replica::start(&etcd.urls(), &ups[0]))
        .collect();
    let plugin = std::fs::read(fixtures::LABEL_AFFINITY).unwrap();
    assert_eq!(upload(&replicas[0].api, "gone", &plugin).await, 201);
    let file = replicas[1].dir.path().join("switchyard-plugins/gone.wasm");
    until("the plugin reaches the second replica", || async {
        std::fs::read(&file).is_ok_and(|b| b == plugin)
    })
    .await;
    // A file dropped in by hand beside it is the replica's own.
    let own = replicas[1].dir.path().join("switchyard-plugins/own.wasm");
    std::fs::write(&own, &plugin).unwrap();
    replicas[1].process.kill_hard();
    assert_eq!(delete_plugin(&replicas[0].api, "gone").await, 204);
    replicas[1].restart();
    assert!(!file.exists(), "the deleted plugin is gone");
    assert!(own.exists(), "the hand-dropped one stays");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_store_is_seeded_again_by_the_next_write() {
    let etcd = Etcd::start();
    let ups = upstreams(2);
    let replicas: Vec<Replica> = (0..2)
        .map(|_| Replica::start(&etcd.urls(), &ups[0]))
        .collect();
    all_served_by(&replicas, "u0").await;
    etcd.delete_prefix("/switchyard/");
    // Both keep serving; the next write stores the whole configuration again.
    all_served_by(&replicas, "u0").await;
    let (status, body) = set_instances(&replicas[1], &[&ups[1]]).await;
    assert_eq!(status, 200, "{body}");
    all_served_by(&replicas, "u1").await;
    let a = replicas[0].store().await["revision"].clone();
    assert_eq!(a, replicas[1].store().await["revision"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_reach_etcd_over_mutual_tls_as_an_etcd_user() {
    use switchyard_tests::pki::{Pki, Usage};
    let pki_dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(pki_dir.path(), "etcd");
    let server = pki.issue(
        "server",
        "etcd",
        &["127.0.0.1"],
        Usage::ServerAndClient,
        false,
    );
    let curl = pki.issue("curl", "root", &[], Usage::Client, false);
    // No CommonName: with authentication on, etcd's JSON gateway refuses a
    // client certificate that has one (it would not be taken as the user).
    let replica_cert = pki.issue("replica", "", &[], Usage::Client, false);
    let etcd = Etcd::start_tls(&pki, server, curl);
    etcd.enable_auth("s3cret");
    std::fs::write(pki_dir.path().join("password"), "s3cret\n").unwrap();
    let ups = upstreams(2);
    let secure = format!(
        "username = \"root\"\npassword_file = \"{}\"\n\
         tls = {{ ca_file = \"{}\", cert_file = \"{}\", key_file = \"{}\" }}\n",
        pki_dir.path().join("password").display(),
        pki.ca_file().display(),
        replica_cert.cert_file.display(),
        replica_cert.key_file.display()
    );
    let config = replica_config(&etcd.urls(), &ups[0]).replace(
        "timeout_ms = 5000\n",
        &format!("timeout_ms = 5000\n{secure}"),
    );
    let start = || {
        let dir = tempfile::tempdir().unwrap();
        let path = switchyard_tests::process::write_config(dir.path(), &config);
        let process = Switchyard::serve(BINARY, &path);
        let api = process.admin_url();
        Replica { dir, process, api }
    };
    let replicas = [start(), start()];
    for replica in &replicas {
        let store = replica.store().await;
        assert_eq!(store["in_sync"], true, "{store}");
        assert_eq!(store["loaded_from"], "etcd", "{store}");
    }
    let (status, body) = set_instances(&replicas[0], &[&ups[1]]).await;
    assert_eq!(status, 200, "{body}");
    all_served_by(&replicas, "u1").await;

    // A wrong password: the replica cannot read etcd, says why, and serves
    // the file.
    let wrong = config.replace(
        &pki_dir.path().join("password").display().to_string(),
        &pki_dir.path().join("wrong").display().to_string(),
    );
    std::fs::write(pki_dir.path().join("wrong"), "nope").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = switchyard_tests::process::write_config(dir.path(), &wrong);
    let refused = Switchyard::serve(BINARY, &path);
    let api = refused.admin_url();
    let store = admin(reqwest::Method::GET, &format!("{api}/ready"), None)
        .await
        .1["store"]
        .clone();
    assert_eq!(store["in_sync"], false, "{store}");
    assert!(
        store["error"]
            .as_str()
            .unwrap()
            .contains("authentication as `root` failed"),
        "{store}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_from_a_compacted_revision_is_told_to_read_again() {
    use switchyard::store::etcd::{Etcd as Client, WatchEvent, prefix_end};
    let etcd = Etcd::start();
    for i in 0..5 {
        etcd.put("/c/key", &i.to_string(), None);
    }
    etcd.compact();
    let client = Client::new(&etcd.urls(), None, None, Duration::from_secs(5)).unwrap();
    let (events, mut received) = tokio::sync::mpsc::channel(4);
    let end = prefix_end(b"/c/");
    let watch = client.watch(b"/c/", &end, 1, &events);
    let (outcome, event) = tokio::join!(watch, received.recv());
    assert!(outcome.is_ok(), "{outcome:?}");
    match event {
        Some(WatchEvent::Compacted(revision)) => assert!(revision >= 5, "{revision}"),
        other => panic!("expected a compaction, got {other:?}"),
    }
}
