//! The admin API against a real `switchyard`: changes under load cost no
//! request, an acknowledged change survives `kill -9`, events stream live.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::{admin, client, instances, read_events_until, serve, upstreams};

/// A config with an admin listener on an ephemeral port and pool `p`.
fn with_admin(list: &str) -> String {
    format!(
        "[[listeners]]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [[routes]]\npool = \"p\"\n[pools.p]\nstrategy = {{ kind = \"round-robin\" }}\ninstances = {list}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_pools_and_instances_under_load_fails_no_request() {
    let ups = upstreams(3);
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(&dir, &with_admin(&instances(&ups[..2])));
    let api = format!("{}/v1/pools/p", proxy.admin_url());
    let url = format!("{}/", proxy.url);
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut load = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let (url, stop, sent, failed) = (
            url.clone(),
            Arc::clone(&stop),
            Arc::clone(&sent),
            Arc::clone(&failed),
        );
        load.spawn(async move {
            let client = client();
            while !stop.load(Ordering::Relaxed) {
                let ok = client
                    .get(&url)
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200);
                sent.fetch_add(1, Ordering::Relaxed);
                if !ok {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    let u2 = ups[2].url().trim_start_matches("http://").to_string();
    let u0 = ups[0].url().trim_start_matches("http://").to_string();
    let changes: Vec<(reqwest::Method, String, Option<Value>)> = vec![
        (
            reqwest::Method::POST,
            format!("{api}/instances"),
            Some(json!({ "url": ups[2].url() })),
        ),
        (
            reqwest::Method::PATCH,
            format!("{api}/instances/{u2}"),
            Some(json!({ "weight": 3 })),
        ),
        (
            reqwest::Method::POST,
            format!("{api}/instances/{u0}/drain"),
            None,
        ),
        (
            reqwest::Method::POST,
            format!("{api}/instances/{u0}/undrain"),
            None,
        ),
        (
            reqwest::Method::PUT,
            api.clone(),
            Some(
                json!({ "strategy": { "kind": "least-connections" }, "instances": [{ "url": ups[1].url() }, { "url": ups[2].url() }] }),
            ),
        ),
        (
            reqwest::Method::DELETE,
            format!("{api}/instances/{u2}"),
            None,
        ),
    ];
    for (method, target, body) in changes {
        // Let traffic flow between changes.
        let before = sent.load(Ordering::Relaxed);
        let deadline = Instant::now() + Duration::from_secs(60);
        while sent.load(Ordering::Relaxed) < before + 50 {
            assert!(Instant::now() < deadline, "no traffic");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let (status, body) = admin(method.clone(), &target, body).await;
        assert!(
            (200..300).contains(&status),
            "{method} {target}: {status} {body}"
        );
    }
    stop.store(true, Ordering::Relaxed);
    while load.join_next().await.is_some() {}
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "of {} requests",
        sent.load(Ordering::Relaxed)
    );
    // The last change is in force: only u1 is left.
    let hits = ups[1].hits();
    for _ in 0..5 {
        assert_eq!(
            client()
                .get(&url)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap(),
            "u1"
        );
    }
    assert_eq!(ups[1].hits(), hits + 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_change_survives_kill_9() {
    let ups = upstreams(2);
    let dir = tempfile::tempdir().unwrap();
    let config = with_admin(&instances(&ups[..1]));
    let mut proxy = serve(&dir, &config);
    let api = proxy.admin_url();
    let (status, _) = admin(
        reqwest::Method::POST,
        &format!("{api}/v1/pools/p/instances"),
        Some(json!({ "url": ups[1].url(), "labels": { "added": "by-api" } })),
    )
    .await;
    assert_eq!(status, 201);
    // Acknowledged: kill at once, no shutdown of any kind.
    proxy.kill_hard();
    let proxy = serve(&dir, &config);
    proxy.wait_for_log("restored from the state file");
    let (status, list) = admin(
        reqwest::Method::GET,
        &format!("{}/v1/pools/p/instances", proxy.admin_url()),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(list.as_array().map(Vec::len), Some(2), "{list}");
    assert_eq!(list[1]["labels"]["added"], "by-api");
    // And the data path uses it.
    let deadline = Instant::now() + Duration::from_secs(60);
    while ups[1].hits() == 0 {
        assert!(
            Instant::now() < deadline,
            "the restored instance gets no traffic"
        );
        let _ = client().get(format!("{}/", proxy.url)).send().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_stream_config_changes_filtered_by_kind() {
    let ups = upstreams(1);
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(&dir, &with_admin(&instances(&ups)));
    let api = proxy.admin_url();
    let mut stream = crate::follow_events(&api, "config").await;
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    let u0 = ups[0].url().trim_start_matches("http://").to_string();
    let (status, _) = admin(
        reqwest::Method::POST,
        &format!("{api}/v1/pools/p/instances/{u0}/drain"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let seen = read_events_until(&mut stream, "config_changed").await;
    assert!(seen.contains("event: config"), "{seen}");
    assert!(seen.contains("\"category\":\"config\""), "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_retries_and_show_instance_state() {
    let mut ups = upstreams(2);
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(&dir, &with_admin(&instances(&ups)));
    ups[1].kill();
    for _ in 0..6 {
        let response = client()
            .get(format!("{}/", proxy.url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "the retry covers the dead instance");
    }
    let response = client()
        .get(format!("{}/metrics", proxy.admin_url()))
        .send()
        .await
        .unwrap();
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = response.text().await.unwrap();
    let value = |series: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(series))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no `{series}` in:\n{text}"))
    };
    assert_eq!(
        value(r#"switchyard_requests_total{route="0",pool="p",class="2xx"}"#),
        6.0
    );
    assert_eq!(
        value(r#"switchyard_request_duration_seconds_count{route="0",pool="p"}"#),
        6.0
    );
    assert!(value(r#"switchyard_retries_total{pool="p"}"#) >= 1.0);
    let u0 = ups[0].url();
    assert_eq!(
        value(&format!(
            r#"switchyard_instance_fit{{pool="p",instance="{u0}"}}"#
        )),
        1.0
    );
    assert_eq!(value(r#"switchyard_pool_panic{pool="p"}"#), 0.0);
    assert!(text.ends_with("# EOF\n"));
    let (status, log) = admin(
        reqwest::Method::GET,
        &format!("{}/v1/requests", proxy.admin_url()),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let log = log.as_array().cloned().unwrap_or_default();
    assert_eq!(log.len(), 6, "{log:?}");
    assert_eq!(
        (
            log[0]["status"].as_u64(),
            log[0]["route"].as_u64(),
            log[0]["path"].as_str()
        ),
        (Some(200), Some(0), Some("/"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_are_checked_on_upload_and_reload_their_users() {
    use switchyard_tests::fixtures;
    let ups = upstreams(2);
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(&dir, &with_admin(&instances(&ups)));
    let api = format!("{}/v1/plugins", proxy.admin_url());
    let upload = |name: &str, bytes: Vec<u8>| {
        let url = format!("{api}/{name}");
        async move {
            let response = client().put(url).body(bytes).send().await.unwrap();
            let status = response.status().as_u16();
            let body: Value =
                serde_json::from_str(&response.text().await.unwrap()).unwrap_or(Value::Null);
            (status, body)
        }
    };
    let (status, body) = upload("junk", b"this is not wasm".to_vec()).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("no `\\0asm` magic"),
        "{body}"
    );
    let (status, body) = upload("core", b"\0asm\x01\0\0\0".to_vec()).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("core WebAssembly module"),
        "{body}"
    );
    let (status, _) = upload("bad name!", vec![]).await;
    assert_eq!(status, 400);

    let canary = std::fs::read(fixtures::CANARY_SPLIT).unwrap();
    let (status, body) = upload("canary", canary.clone()).await;
    assert_eq!(
        (status, body["kind"].as_str()),
        (201, Some("balancer")),
        "{body}"
    );
    assert_eq!(body["sha256"].as_str().map(str::len), Some(64));
    let (status, body) = upload("first", std::fs::read(fixtures::RESOLVER_FIRST).unwrap()).await;
    assert_eq!(
        (status, body["kind"].as_str()),
        (201, Some("resolver")),
        "{body}"
    );

    // A resolver where a balancer goes: refused with the reason, nothing changes.
    let stored = dir.path().join("switchyard-plugins");
    let pool = |file: &str| {
        json!({ "strategy": { "kind": "plugin", "plugin": { "path": stored.join(file), "call_deadline_ms": 1000 } },
                "instances": [{ "url": ups[0].url() }, { "url": ups[1].url() }] })
    };
    let pools = format!("{}/v1/pools/p", proxy.admin_url());
    let (status, body) = admin(reqwest::Method::PUT, &pools, Some(pool("first.wasm"))).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("balancer"),
        "{body}"
    );
    let (status, body) = admin(reqwest::Method::PUT, &pools, Some(pool("canary.wasm"))).await;
    assert_eq!(status, 200, "{body}");
    for _ in 0..5 {
        assert_eq!(
            client()
                .get(format!("{}/", proxy.url))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    let (_, list) = admin(reqwest::Method::GET, &api, None).await;
    let canary_entry = list
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "canary")
        .cloned()
        .unwrap();
    assert_eq!(canary_entry["used_by"], json!(["pools.p.strategy.plugin"]));
    assert!(
        canary_entry["calls"].as_u64().unwrap() >= 5,
        "{canary_entry}"
    );

    let (status, _) = admin(reqwest::Method::DELETE, &format!("{api}/canary"), None).await;
    assert_eq!(status, 409);
    let (status, body) = upload("canary", canary).await;
    assert_eq!(
        (status, body["reloaded"].clone()),
        (200, json!(["pools.p.strategy.plugin"])),
        "{body}"
    );
    let (status, body) = admin(reqwest::Method::POST, &format!("{api}/canary/reload"), None).await;
    assert_eq!(
        (status, body["reloaded"].clone()),
        (200, json!(["pools.p.strategy.plugin"]))
    );
    assert_eq!(
        admin(reqwest::Method::DELETE, &format!("{api}/first"), None)
            .await
            .0,
        204
    );
    assert_eq!(
        admin(reqwest::Method::DELETE, &format!("{api}/first"), None)
            .await
            .0,
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_stream_over_a_websocket() {
    use futures_util::StreamExt;
    let ups = upstreams(1);
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(&dir, &with_admin(&instances(&ups)));
    let api = proxy.admin_url();
    let ws_url = format!("{}/v1/events?kind=config", api.replace("http://", "ws://"));
    let (mut socket, _) = tokio_tungstenite::connect_async(ws_url)
        .await
        .expect("websocket");
    let u0 = ups[0].url().trim_start_matches("http://").to_string();
    let (status, _) = admin(
        reqwest::Method::POST,
        &format!("{api}/v1/pools/p/instances/{u0}/drain"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let message = tokio::time::timeout(Duration::from_secs(60), socket.next())
        .await
        .expect("an event within the bound")
        .expect("open")
        .expect("a message");
    let event: Value = serde_json::from_str(message.to_text().unwrap()).unwrap();
    assert_eq!(
        (event["kind"].as_str(), event["category"].as_str()),
        (Some("config_changed"), Some("config"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_faults_are_events_and_plugin_calls_are_timed() {
    use switchyard_tests::fixtures;
    let ups = upstreams(2);
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(fixtures::HOSTILE_BALANCER, dir.path().join("trap.wasm")).unwrap();
    std::fs::copy(fixtures::HOSTILE_RESOLVER, dir.path().join("resolver.wasm")).unwrap();
    let config = with_admin(&instances(&ups))
        .replace(
            "strategy = { kind = \"round-robin\" }",
            "strategy = { kind = \"plugin\", plugin = { path = \"trap.wasm\", config = { mode = \"trap\" } } }",
        )
        .replace(
            "[[routes]]\npool = \"p\"",
            "[[routes]]\nmatch = { path_prefix = \"/fused\" }\n\
             fan_out = { pool = \"p\", resolver = { kind = \"plugin\", plugin = { path = \"resolver.wasm\" } } }\n\
             [[routes]]\npool = \"p\"",
        );
    let proxy = serve(&dir, &config);
    let api = proxy.admin_url();
    let mut stream = crate::follow_events(&api, "plugin").await;
    let response = client()
        .get(format!("{}/", proxy.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "the fallback strategy served");
    let seen = read_events_until(&mut stream, "plugin_fault").await;
    assert!(
        seen.contains("event: plugin") && seen.contains("trap.wasm"),
        "{seen}"
    );
    let text = client()
        .get(format!("{api}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(r#"switchyard_plugin_faults_total{pool="p",kind="balancer"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"switchyard_plugin_call_seconds_total{pool="p",kind="balancer"}"#),
        "{text}"
    );
    let fused = client()
        .get(format!("{}/fused", proxy.url))
        .send()
        .await
        .unwrap();
    assert_eq!(fused.status(), 200, "the fallback resolver served");
    let text = client()
        .get(format!("{api}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(r#"switchyard_plugin_faults_total{pool="route 0",kind="resolver"} 1"#),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_lists_the_plugins_of_every_kind() {
    use switchyard_tests::fixtures;
    let ups = upstreams(2);
    let dir = tempfile::tempdir().unwrap();
    let config = with_admin(&instances(&ups))
        .replace(
            "strategy = { kind = \"round-robin\" }",
            &format!(
                "strategy = {{ kind = \"plugin\", plugin = {{ path = \"{}\" }} }}\n\
                 health = {{ kind = \"plugin\", interval_ms = 200, timeout_ms = 100, plugin = {{ path = \"{}\" }} }}\n\
                 failover = {{ kind = \"plugin\", plugin = {{ path = \"{}\" }} }}",
                fixtures::CANARY_SPLIT,
                fixtures::JSON_HEALTH,
                fixtures::RETRY_SCHEDULE
            ),
        )
        .replace(
            "[[routes]]\npool = \"p\"",
            &format!(
                "[[routes]]\nmatch = {{ path_prefix = \"/fused\" }}\n\
                 fan_out = {{ pool = \"p\", resolver = {{ kind = \"plugin\", plugin = {{ path = \"{}\" }} }} }}\n\
                 [[routes]]\npool = \"p\"",
                fixtures::RESOLVER_FIRST
            ),
        );
    let proxy = serve(&dir, &config);
    let (status, body) = admin(
        reqwest::Method::GET,
        &format!("{}/v1/status", proxy.admin_url()),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let mut listed: Vec<(String, String)> = body["plugins"]
        .as_array()
        .expect("plugins")
        .iter()
        .map(|p| {
            let owner = p["pool"]
                .as_str()
                .map_or_else(|| format!("route {}", p["route"]), str::to_string);
            (owner, p["kind"].as_str().unwrap_or_default().to_string())
        })
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        [
            ("p".to_string(), "balancer".to_string()),
            ("p".to_string(), "failover".to_string()),
            ("p".to_string(), "health-check".to_string()),
            ("route 0".to_string(), "resolver".to_string()),
        ],
        "{body}"
    );
}
