//! Health through the real proxy: active checks, passive ejection, panic mode.

use std::time::Duration;

use crate::{client, get, instances, serve, upstreams};

fn pool_with(extra: &str, list: &str) -> String {
    format!(
        "event_cooldown_ms = 0\n[[listeners]]\nlisten = \"127.0.0.1:0\"\n[[routes]]\npool = \"p\"\n\
         [pools.p]\nstrategy = {{ kind = \"round-robin\" }}\ninstances = {list}\n{extra}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_failing_its_checks_leaves_and_returns() {
    let ups = upstreams(3);
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(
        &dir,
        &pool_with(
            "health = { path = \"/healthz\", interval_ms = 200, timeout_ms = 100, rise = 2, fall = 2 }",
            &instances(&ups),
        ),
    );
    let url = format!("{}/", proxy.url);
    let client = client();
    ups[1].set_status(503);
    proxy.wait_for(
        |l| l.contains("unhealthy after 2 failed checks") && l.contains(&ups[1].url()),
        "u1 unhealthy",
    );
    // Out of rotation: round robin skips it, every request succeeds elsewhere.
    for _ in 0..10 {
        let (status, body) = get(&client, &url).await;
        assert_eq!(status, 200);
        assert_ne!(body, "u1");
    }
    ups[1].set_status(200);
    let line = proxy.wait_for(
        |l| l.contains("healthy again") && l.contains(&ups[1].url()),
        "u1 healthy",
    );
    assert!(line.contains("INFO"), "{line}");
    // Back in rotation after `rise` passed probes.
    let mut bodies = Vec::new();
    for _ in 0..9 {
        bodies.push(get(&client, &url).await.1);
    }
    assert!(bodies.iter().any(|b| b == "u1"), "{bodies:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_instance_is_marked_unhealthy_by_the_probe_timeout() {
    let ups = upstreams(2);
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(
        &dir,
        &pool_with(
            "health = { kind = \"http\", interval_ms = 200, timeout_ms = 100, rise = 1, fall = 2 }",
            &instances(&ups),
        ),
    );
    ups[0].set_delay(Duration::from_secs(5));
    let line = proxy.wait_for(
        |l| l.contains("unhealthy after") && l.contains(&ups[0].url()),
        "u0 unhealthy",
    );
    assert!(line.contains("no answer within 100 ms"), "{line}");
    // All traffic now goes to u1, at once, without waiting on u0.
    let client = client();
    for _ in 0..10 {
        assert_eq!(
            get(&client, &format!("{}/", proxy.url)).await,
            (200, "u1".to_string())
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consecutive_5xx_eject_an_instance_at_once() {
    let ups = upstreams(3);
    ups[2].set_status(503);
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(
        &dir,
        &pool_with(
            "outlier = { consecutive_5xx = 2, base_ejection_ms = 60000, interval_ms = 1000 }",
            &instances(&ups),
        ),
    );
    let client = client();
    let url = format!("{}/", proxy.url);
    // Round robin: u2 answers 503 twice in the first six requests, then is ejected.
    for _ in 0..6 {
        get(&client, &url).await;
    }
    let line = proxy.wait_for(
        |l| l.contains("ejected for 60000 ms") && l.contains(&ups[2].url()),
        "u2 ejected",
    );
    assert!(line.contains("2 consecutive 5xx"), "{line}");
    let hits = ups[2].hits();
    for _ in 0..12 {
        assert_eq!(get(&client, &url).await.0, 200);
    }
    assert_eq!(ups[2].hits(), hits, "an ejected instance gets no traffic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn below_the_panic_threshold_every_instance_takes_traffic() {
    let ups = upstreams(3);
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(
        &dir,
        &pool_with(
            "panic_threshold_percent = 50\nhealth = { path = \"/healthz\", interval_ms = 200, timeout_ms = 100, rise = 2, fall = 2 }",
            &instances(&ups),
        ),
    );
    ups[0].set_status(503);
    ups[1].set_status(503);
    proxy.wait_for(
        |l| l.contains("panic mode: only 33% of instances fit"),
        "panic mode",
    );
    // Health is ignored: round robin reaches the unhealthy instances again.
    let client = client();
    let mut bodies = Vec::new();
    for _ in 0..6 {
        let response = client.get(format!("{}/", proxy.url)).send().await.unwrap();
        bodies.push(
            response.headers()["x-upstream"]
                .to_str()
                .unwrap()
                .to_string(),
        );
    }
    assert!(
        bodies.iter().any(|b| b == "u0") && bodies.iter().any(|b| b == "u1"),
        "{bodies:?}"
    );
    ups[0].set_status(200);
    ups[1].set_status(200);
    proxy.wait_for(|l| l.contains("panic mode over"), "panic over");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gradually_degrading_instance_is_flagged_before_it_fails() {
    let ups = std::sync::Arc::new(upstreams(2));
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(
        &dir,
        &pool_with(
            "health = { path = \"/healthz\", interval_ms = 300, timeout_ms = 250, rise = 2, fall = 2 }\n\
             trend = { interval_ms = 100, window = 10, degrading_ratio = 0.25 }",
            &instances(&ups),
        ),
    );
    // Live traffic, so the latency EWMA follows the instance.
    let url = format!("{}/", proxy.url);
    let traffic = tokio::spawn(async move {
        let client = client();
        loop {
            let _ = client.get(&url).send().await;
        }
    });
    // u0 slows down by 4 ms every 40 ms, up to 600 ms.
    let slowing = std::sync::Arc::clone(&ups);
    let ramp = tokio::spawn(async move {
        for step in 1..=150u64 {
            slowing[0].set_delay(Duration::from_millis(4 * step));
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
    });
    let u0 = ups[0].url();
    proxy.wait_for(
        |l| l.contains("trend degrading") && l.contains(&u0),
        "u0 degrading",
    );
    proxy.wait_for(
        |l| l.contains("unhealthy after") && l.contains(&u0),
        "u0 unhealthy",
    );
    ramp.abort();
    traffic.abort();
    let log = proxy.log();
    let position = |needle: &str| {
        log.iter()
            .position(|l| l.contains(needle) && l.contains(&u0))
    };
    assert!(
        position("trend degrading") < position("unhealthy after"),
        "degrading must be flagged before the checks fail:\n{}",
        log.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_health_plugin_judges_json_reports_and_its_load_steers_traffic() {
    let ups = upstreams(3);
    ups[0].set_body(r#"{"status":"ok","load":0.95}"#);
    ups[1].set_body(r#"{"status":"ok","load":0.0}"#);
    ups[2].set_body(r#"{"status":"down"}"#);
    let dir = tempfile::tempdir().unwrap();
    let health = format!(
        "health = {{ kind = \"plugin\", interval_ms = 200, timeout_ms = 100, rise = 1, fall = 2, plugin = {{ path = \"{}\", config = {{ path = \"/health\" }}, call_deadline_ms = 1000 }} }}",
        switchyard_tests::fixtures::JSON_HEALTH
    );
    let toml = pool_with(&health, &instances(&ups)).replace(
        r#"{ kind = "round-robin" }"#,
        r#"{ kind = "resource-aware" }"#,
    );
    let proxy = serve(&dir, &toml);
    let line = proxy.wait_for(
        |l| l.contains("unhealthy after 2 failed checks") && l.contains(&ups[2].url()),
        "u2 unhealthy",
    );
    assert!(line.contains("status `down`"), "{line}");
    let client = client();
    let count = |n: usize| {
        let (client, url) = (client.clone(), format!("{}/", proxy.url));
        async move {
            let mut counts = std::collections::BTreeMap::new();
            for _ in 0..n {
                let response = client.get(&url).send().await.unwrap();
                let upstream = response.headers()["x-upstream"]
                    .to_str()
                    .unwrap()
                    .to_string();
                *counts.entry(upstream).or_insert(0) += 1;
            }
            counts
        }
    };
    // Poll (bounded) until both loads have been probed and reported.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while count(40).await.get("u0").copied().unwrap_or(0) > 8 {
        assert!(
            std::time::Instant::now() < deadline,
            "u0's load was never reported"
        );
    }
    let counts = count(200).await;
    // u0 reports 95% load: weight 0.05 against u1's 1.0 (about 5%); u2 is unhealthy.
    assert!(!counts.contains_key("u2"), "{counts:?}");
    assert!(counts.get("u0").copied().unwrap_or(0) < 40, "{counts:?}");
    assert!(!proxy.log().iter().any(|l| l.contains("plugin fault")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_faulting_health_plugin_falls_back_to_the_built_in_check() {
    for trap in ["probe", "evaluate"] {
        let ups = upstreams(2);
        ups[1].set_status(503);
        let dir = tempfile::tempdir().unwrap();
        let health = format!(
            "health = {{ kind = \"plugin\", path = \"/healthz\", interval_ms = 200, timeout_ms = 100, rise = 1, fall = 2, plugin = {{ path = \"{}\", config = {{ trap = \"{trap}\" }} }}, fallback = {{ kind = \"http\" }} }}",
            switchyard_tests::fixtures::HOSTILE_HEALTH
        );
        let proxy = serve(&dir, &pool_with(&health, &instances(&ups)));
        // The built-in rule judged it: a 503 is outside 200..=399.
        let line = proxy.wait_for(
            |l| l.contains("unhealthy after 2 failed checks") && l.contains(&ups[1].url()),
            "u1 unhealthy",
        );
        assert!(
            line.contains("status 503, expected 200..=399"),
            "{trap}: {line}"
        );
        proxy.wait_for(
            |l| l.contains("plugin fault") && l.contains("hostile_health.wasm"),
            "fault logged",
        );
        assert!(
            !proxy
                .log()
                .iter()
                .any(|l| l.contains("unhealthy after") && l.contains(&ups[0].url())),
            "{trap}: the healthy instance was marked down"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_probe_body_is_cut_not_buffered() {
    let ups = upstreams(2);
    // Half a MiB, not UTF-8 clean text, with the marker only past 64 KiB: the
    // check reads only that much, so the marker at the end is never seen.
    let mut huge = "\u{fffd}x".repeat(512 * 1024 / 4);
    huge.push_str("MARKER");
    ups[1].set_body(&huge);
    ups[0].set_body("MARKER");
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(
        &dir,
        &pool_with(
            "health = { interval_ms = 200, timeout_ms = 150, rise = 1, fall = 2, body_contains = \"MARKER\" }",
            &instances(&ups),
        ),
    );
    let line = proxy.wait_for(
        |l| l.contains("unhealthy after") && l.contains(&ups[1].url()),
        "u1 unhealthy",
    );
    assert!(line.contains("body does not contain `MARKER`"), "{line}");
    assert!(
        !proxy
            .log()
            .iter()
            .any(|l| l.contains("unhealthy after") && l.contains(&ups[0].url()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_degraded_verdict_puts_an_instance_last_not_out() {
    let ups = upstreams(2);
    ups[0].set_body(r#"{"status":"ok"}"#);
    ups[1].set_body(r#"{"status":"degraded"}"#);
    let dir = tempfile::tempdir().unwrap();
    let health = format!(
        "health = {{ kind = \"plugin\", interval_ms = 200, timeout_ms = 100, rise = 1, fall = 1, plugin = {{ path = \"{}\", config = {{ path = \"/health\" }}, call_deadline_ms = 1000 }} }}",
        switchyard_tests::fixtures::JSON_HEALTH
    );
    let proxy = serve(&dir, &pool_with(&health, &instances(&ups)));
    proxy.wait_for(
        |l| {
            l.contains("degraded (chosen only when no healthy instance is)")
                && l.contains(&ups[1].url())
        },
        "u1 judged degraded",
    );
    let client = client();
    let url = format!("{}/", proxy.url);
    // Round robin would alternate; the degraded instance is passed over.
    for _ in 0..20 {
        assert_eq!(
            get(&client, &url).await,
            (200, r#"{"status":"ok"}"#.to_string())
        );
    }
    // The healthy one goes down: the degraded one serves rather than nobody.
    ups[0].set_body(r#"{"status":"down"}"#);
    proxy.wait_for(
        |l| l.contains("unhealthy after 1 failed checks") && l.contains(&ups[0].url()),
        "u0 unhealthy",
    );
    for _ in 0..5 {
        assert_eq!(
            get(&client, &url).await,
            (200, r#"{"status":"degraded"}"#.to_string())
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flat_instances_raise_no_trend_alarm_at_start_up() {
    let ups = upstreams(3);
    for u in &ups {
        // Flat, and long enough that scheduling jitter is small beside it.
        u.set_delay(Duration::from_millis(50));
    }
    let dir = tempfile::tempdir().unwrap();
    let config = pool_with(
        "trend = { interval_ms = 100, window = 10, degrading_ratio = 0.5 }",
        &instances(&ups),
    ) + "[admin]\nlisten = \"127.0.0.1:0\"\n";
    let proxy = serve(&dir, &config);
    let status_url = format!("{}/v1/status", proxy.admin_url());
    let client = client();
    let url = format!("{}/", proxy.url);
    // Traffic until every instance's trend has been computed from real
    // samples (a non-zero slope), then a little more.
    let classified = |status: &serde_json::Value| {
        status["pools"][0]["instances"]
            .as_array()
            .is_some_and(|all| {
                all.iter()
                    .all(|i| i["trend"]["latency_slope_ms_per_s"].as_f64().unwrap_or(0.0) != 0.0)
            })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        assert_eq!(get(&client, &url).await.0, 200);
        let status = crate::admin(reqwest::Method::GET, &status_url, None)
            .await
            .1;
        if classified(&status) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never classified: {status}"
        );
    }
    for _ in 0..10 {
        assert_eq!(get(&client, &url).await.0, 200);
    }
    let alarms: Vec<String> = proxy
        .log()
        .into_iter()
        .filter(|l| l.contains("trend degrading") || l.contains("predicted unfit"))
        .collect();
    assert!(alarms.is_empty(), "false alarms: {alarms:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cooldown_never_hides_the_last_transition_of_a_flapping_instance() {
    let ups = upstreams(2);
    let dir = tempfile::tempdir().unwrap();
    let config = pool_with(
        "health = { path = \"/healthz\", interval_ms = 200, timeout_ms = 100, rise = 1, fall = 1 }",
        &instances(&ups),
    )
    .replace("event_cooldown_ms = 0", "event_cooldown_ms = 30000");
    let proxy = serve(&dir, &config);
    let u0 = ups[0].url();
    let transitions = |needle: &'static str| {
        let u0 = u0.clone();
        move |l: &str| l.contains(needle) && l.contains(&u0)
    };
    // Unhealthy, healthy again, unhealthy again — all within the cooldown.
    ups[0].set_status(500);
    proxy.wait_for(transitions("unhealthy after"), "u0 unhealthy");
    ups[0].set_status(200);
    let healthy = proxy.wait_for(transitions("healthy again"), "u0 healthy again");
    ups[0].set_status(500);
    // Log lines start with their RFC 3339 time: a later line sorts after.
    let unhealthy_again = transitions("unhealthy after");
    proxy.wait_for(
        |l| unhealthy_again(l) && l > healthy.as_str(),
        "the second unhealthy transition, published despite the cooldown",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mcp_check_tells_an_mcp_server_from_a_plain_http_one_and_a_stopped_one() {
    use switchyard_tests::mcp::McpServer;
    let mut mcp = McpServer::start();
    let plain = switchyard_tests::upstream::Upstream::start("plain");
    let stopped = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(
        &dir,
        &pool_with(
            "health = { kind = \"mcp\", path = \"/mcp\", interval_ms = 1000, timeout_ms = 800, rise = 1, fall = 1 }",
            &format!(
                "[{{ url = \"{}\" }}, {{ url = \"{}\" }}, {{ url = \"{stopped}\" }}]",
                mcp.url(),
                plain.url()
            ),
        ),
    );
    let plain_line = proxy.wait_for(
        |l| l.contains("unhealthy after") && l.contains(&plain.url()),
        "the plain HTTP server unhealthy",
    );
    assert!(plain_line.contains("initialize"), "{plain_line}");
    let stopped_line = proxy.wait_for(
        |l| l.contains("unhealthy after") && l.contains(&stopped),
        "the stopped server unhealthy",
    );
    assert!(stopped_line.contains("connect"), "{stopped_line}");
    // The real MCP server: out when it stops, back when it answers MCP again.
    let (url, port) = (mcp.url(), mcp.port());
    mcp.stop();
    proxy.wait_for(
        |l| l.contains("unhealthy after") && l.contains(&url),
        "the MCP server unhealthy once stopped",
    );
    let _again = McpServer::start_on(port);
    proxy.wait_for(
        |l| l.contains("healthy again") && l.contains(&url),
        "the MCP server healthy again",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flapping_instance_gives_one_flapping_event_then_its_state_once_stable() {
    let ups = upstreams(2);
    let dir = tempfile::tempdir().unwrap();
    let config = pool_with(
        "health = { path = \"/healthz\", interval_ms = 150, timeout_ms = 100, rise = 1, fall = 1 }",
        &instances(&ups),
    )
    .replace("event_cooldown_ms = 0", "event_cooldown_ms = 5000")
        + "[admin]\nlisten = \"127.0.0.1:0\"\n";
    let proxy = serve(&dir, &config);
    let api = proxy.admin_url();
    let mut events = crate::follow_events(&api, "health").await;
    let u0 = ups[0].url();
    // u0 as /v1/status shows it: unhealthy or not.
    let unhealthy = || async {
        let (_, status) =
            crate::admin(reqwest::Method::GET, &format!("{api}/v1/status"), None).await;
        status["pools"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|p| p["instances"].as_array().into_iter().flatten())
            .find(|i| i["url"] == u0.as_str())
            .and_then(|i| i["unhealthy"].as_bool())
    };
    let until = |want: bool| async move {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while unhealthy().await != Some(want) {
            assert!(
                std::time::Instant::now() < deadline,
                "u0 never unhealthy = {want}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    // Six round trips, each seen in /v1/status, then it stays down.
    for _ in 0..6 {
        ups[0].set_status(503);
        until(true).await;
        ups[0].set_status(200);
        until(false).await;
    }
    ups[0].set_status(503);
    until(true).await;
    let seen = crate::read_events_until(&mut events, "after flapping").await;
    let of_u0: Vec<serde_json::Value> = seen
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str(d).ok())
        .filter(|e: &serde_json::Value| e["instance"] == u0.as_str())
        .collect();
    let kinds: Vec<&str> = of_u0.iter().filter_map(|e| e["kind"].as_str()).collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "flapping").count(),
        1,
        "{kinds:?}"
    );
    assert!(kinds.len() < 13, "13 transitions, not damped: {kinds:?}");
    // The trailing edge says what /v1/status says.
    assert_eq!(kinds.last(), Some(&"unhealthy"), "{kinds:?}");
    assert_eq!(unhealthy().await, Some(true));
}
