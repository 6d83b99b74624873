//! `rate-limit` filters through a real `switchyard`: a flood from one
//! client held to its burst while another client passes, the 429's
//! `Retry-After` and RateLimit fields, a shadow limit that only counts,
//! the keys' bound, and bad limits refused naming the key.

use std::time::{Duration, Instant};

use switchyard_tests::upstream::Upstream;

use crate::auth::curl;
use crate::{client, serve};

/// A listener with an admin API and one route to `upstream` through the
/// filter `limits` (the TOML lines of its table after `kind`).
fn config(upstream: &Upstream, limits: &str) -> String {
    format!(
        "[[listeners]]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [filters.limits]\nkind = \"rate-limit\"\n{limits}\n\
         [[routes]]\npool = \"p\"\nfilters = [\"limits\"]\n\
         [pools.p]\ninstances = [{{ url = \"{}\" }}]\n",
        upstream.url()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_one_client_is_held_to_its_burst_and_another_client_passes() {
    let upstream = Upstream::start("u0");
    // Per client (its `x-client` header): 5 at once, then one a minute —
    // within the test, the burst and at most one more. Per route, a
    // shadow limit of 3 at once that only counts.
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(
        &dir,
        &config(
            &upstream,
            "headers = true\nlimits = [\n\
               { name = \"per-client\", key = [\"header:x-client\"], rate = 1, period_ms = 60000, burst = 5 },\n\
               { name = \"everyone\", key = [\"route\"], rate = 1, period_ms = 60000, burst = 3, shadow = true },\n\
             ]",
        ),
    );
    let url = format!("{}/orders", proxy.url);
    let started = Instant::now();
    let mut passed = 0;
    let mut refused = None;
    for i in 0..20 {
        let answer = curl(url.clone(), &["-H", "x-client: a"]).await;
        if i == 0 {
            // Admitted answers carry the fields too (`headers = true`):
            // 4 of the burst left, at rest again in a minute.
            assert_eq!(answer.header("ratelimit"), Some(r#""per-client";r=4;t=60"#));
            assert_eq!(
                answer.header("ratelimit-policy"),
                Some(r#""per-client";q=5;w=300"#)
            );
        }
        match answer.status {
            200 => passed += 1,
            429 => refused = Some(answer),
            other => panic!("{other}: {}", answer.body),
        }
    }
    // B + R·t, R·t < 1 within a minute.
    assert!(started.elapsed() < Duration::from_secs(60));
    assert!((5..=6).contains(&passed), "{passed} of client a passed");
    let refused = refused.expect("a refusal");
    let body: serde_json::Value = serde_json::from_str(&refused.body).unwrap();
    assert_eq!(body["error"], "rate_limited", "{body}");
    // The next request is admitted one emission interval (60 s) after the
    // burst began, less the time the flood took.
    let retry_after: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    let elapsed = started.elapsed().as_secs();
    assert!(
        (59 - elapsed..=60).contains(&retry_after),
        "retry-after {retry_after}"
    );
    // The policy: the burst over the time the rate takes to earn it; the
    // state: nothing left, at rest again after the 5 units taken (300 s)
    // less the time since.
    assert_eq!(
        refused.header("ratelimit-policy"),
        Some(r#""per-client";q=5;w=300"#)
    );
    let state = refused.header("ratelimit").unwrap();
    let reset: u64 = state
        .strip_prefix(r#""per-client";r=0;t="#)
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("{state}"));
    assert!((294 - elapsed..=360).contains(&reset), "{state}");

    // Another client has a budget of its own.
    for _ in 0..5 {
        let answer = curl(url.clone(), &["-H", "x-client: b"]).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    assert_eq!(upstream.hits(), passed + 5);

    // A config change elsewhere keeps the limits' state: client a is
    // still over its limit.
    let (status, body) = crate::admin(
        reqwest::Method::PUT,
        &format!("{}/v1/filters/unrelated", proxy.admin_url()),
        Some(serde_json::json!({ "kind": "request-id" })),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let answer = curl(url.clone(), &["-H", "x-client: a"]).await;
    assert_eq!(answer.status, 429, "{}", answer.body);

    // Counted: the refusals; the shadow limit's would-be refusals of what
    // passed the first limit, beyond its 3.
    let metrics = curl(format!("{}/metrics", proxy.admin_url()), &[])
        .await
        .body;
    let count = |labels: &str| -> u64 {
        let series = format!(
            "switchyard_rate_limit_decisions_total{{route=\"0\",filter=\"limits\",{labels}}} "
        );
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&series))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    assert_eq!(
        count(r#"limit="per-client",decision="limited""#),
        21 - passed,
        "{metrics}"
    );
    assert_eq!(
        count(r#"limit="everyone",decision="allowed""#),
        3,
        "{metrics}"
    );
    assert_eq!(
        count(r#"limit="everyone",decision="shadow_limited""#),
        passed + 5 - 3,
        "{metrics}"
    );
    // `/v1/status` shows each limit: what it holds and decided.
    let (_, status) = crate::admin(
        reqwest::Method::GET,
        &format!("{}/v1/status", proxy.admin_url()),
        None,
    )
    .await;
    let limit = &status["routes"][0]["limits"][0];
    assert_eq!(limit["limit"], "per-client", "{status}");
    assert_eq!(limit["mode"], "process", "{limit}");
    assert_eq!(limit["keys"], 2, "{limit}");
    assert_eq!(limit["burst_units"], 5, "{limit}");
    assert_eq!(limit["limited"], 21 - passed, "{limit}");
    assert_eq!(status["routes"][0]["limits"][1]["shadow"], true, "{status}");
    let answers =
        r#"switchyard_filter_answers_total{route="0",filter="limits",answer="rate_limited"}"#;
    assert!(
        metrics.contains(&format!("{answers} {}", 21 - passed)),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_holds_no_more_keys_than_its_maximum() {
    let upstream = Upstream::start("u0");
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(
        &dir,
        &config(
            &upstream,
            "max_keys = 10\nlimits = [{ name = \"per-client\", key = [\"header:x-client\"], rate = 1, period_ms = 60000 }]",
        ),
    );
    let client = client();
    let evicted =
        r#"switchyard_rate_limit_keys_evicted_total{route="0",filter="limits",limit="per-client"}"#;
    // Distinct clients until the limit has forgotten some: each is new,
    // so each passes; past 10 keys the least recently used go.
    let mut sent = 0;
    loop {
        for _ in 0..20 {
            let response = client
                .get(format!("{}/", proxy.url))
                .header("x-client", format!("c{sent}"))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            sent += 1;
        }
        let metrics = curl(format!("{}/metrics", proxy.admin_url()), &[])
            .await
            .body;
        let forgotten: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(evicted)?.trim().parse().ok())
            .unwrap_or(0);
        if forgotten > 0 {
            break;
        }
        assert!(sent < 2_000, "{sent} keys and none forgotten:\n{metrics}");
    }
    // However many clients came, the limit holds at most its 10 keys.
    let (_, status) = crate::admin(
        reqwest::Method::GET,
        &format!("{}/v1/status", proxy.admin_url()),
        None,
    )
    .await;
    let keys = status["routes"][0]["limits"][0]["keys"].as_u64().unwrap();
    assert!(keys <= 10, "{keys} keys held after {sent} clients");
}

#[test]
fn bad_limits_are_refused_naming_the_key() {
    for (limits, key, reason) in [
        (
            "limits = []",
            "filters.limits.limits",
            "give at least one limit (`limits`, `concurrency`), at most 64",
        ),
        (
            "concurrency = [{ name = \"c\", key = [\"mcp_tool\"], max = 1 }]",
            "filters.limits.concurrency[0].key[0]",
            "`mcp_tool` does not key requests in flight",
        ),
        (
            "concurrency = [{ name = \"c\", max = 0 }]",
            "filters.limits.concurrency[0].max",
            "0 is not within 1..=1000000000",
        ),
        (
            r#"limits = [{ name = "a", rate = 0 }]"#,
            "filters.limits.limits[0].rate",
            "0 is not within 1..=1000000000",
        ),
        (
            r#"limits = [{ name = "a", rate = 1, key = ["cookie:sid"] }]"#,
            "filters.limits.limits[0].key[0]",
            "`cookie:sid` is not a key part",
        ),
        (
            r#"limits = [{ name = "a", rate = 10, burst = 2, cost = 3 }]"#,
            "filters.limits.limits[0].burst",
            "2 is not within 3..=1000000000",
        ),
        (
            r#"limits = [{ name = "a", rate = 1 }, { name = "a", rate = 2 }]"#,
            "filters.limits.limits[1].name",
            "is empty or not unique",
        ),
        (
            r#"limits = [{ name = "a b", rate = 1 }]"#,
            "filters.limits.limits[0].name",
            "printable ASCII",
        ),
        (
            "max_keys = 0\nlimits = [{ name = \"a\", rate = 1 }]",
            "filters.limits.max_keys",
            "must be within 1..=100000000",
        ),
        (
            "redis = { url = \"http://cache:6379\", replicas = 2 }\nlimits = [{ name = \"a\", rate = 1 }]",
            "filters.limits.redis.url",
            "is not redis://HOST:PORT",
        ),
        (
            "redis = { url = \"rediss://cache:6380\", replicas = 2 }\nlimits = [{ name = \"a\", rate = 1 }]",
            "filters.limits.redis.url",
            "not supported yet",
        ),
        (
            "redis = { url = \"redis://cache:6379\", replicas = 0 }\nlimits = [{ name = \"a\", rate = 1 }]",
            "filters.limits.redis.replicas",
            "must be within 1..=10000",
        ),
    ] {
        crate::assert_filter_refused("limits", "rate-limit", limits, key, reason);
    }
}

#[test]
fn the_readme_rate_limit_snippet_is_a_valid_filter() {
    let snippet = crate::readme_snippet("**Rate limits.**");
    let dir = tempfile::tempdir().unwrap();
    let config = switchyard_tests::process::write_config(
        dir.path(),
        &format!(
            "[[listeners]]\nlisten = \"127.0.0.1:0\"\n{snippet}\n[[routes]]\npool = \"p\"\nfilters = [\"limits\"]\n\
             [pools.p]\ninstances = [{{ url = \"http://127.0.0.1:9\" }}]\n"
        ),
    );
    let output = std::process::Command::new(crate::BINARY)
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn a_tool_quota_refuses_the_call_past_it_while_another_tool_and_principal_pass() {
    use serde_json::json;
    use switchyard_tests::mcp::{McpServer, client_with};
    let server = McpServer::with(&["--name", "docs"]);
    let (ann, ann_digest) = crate::auth::new_key();
    let (bob, bob_digest) = crate::auth::new_key();
    // Two `echo` calls an hour per principal; every other tool free.
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(
        &dir,
        &format!(
            r#"
[[listeners]]
listen = "127.0.0.1:0"

[filters.keys]
kind = "api-key"
principals = [{{ id = "ann", keys = ["{ann_digest}"] }}, {{ id = "bob", keys = ["{bob_digest}"] }}]

[filters.quotas]
kind = "rate-limit"
limits = [{{ name = "echoes", key = ["principal", "mcp_tool"], tools = ["echo"], rate = 2, period_ms = 3600000 }}]

[[routes]]
match = {{ path_prefix = "/mcp" }}
mcp = {{ targets = ["docs"] }}
filters = ["keys", "quotas"]

[pools.docs]
instances = [{{ url = "{}" }}]
"#,
            server.url()
        ),
    );
    let url = format!("{}/mcp", proxy.url);
    let echo = json!({ "op": "call", "tool": "echo", "args": { "text": "hi" } });
    let steps = json!([echo, echo, echo, { "op": "call", "tool": "calls" }, { "op": "call", "tool": "answer" }]);
    let out = client_with(&url, &json!({ "x-api-key": ann }), &steps);
    assert_eq!(out[0]["text"], "docs: hi", "{out:?}");
    assert_eq!(out[1]["text"], "docs: hi", "{out:?}");
    let refused = out[2]["exception"].as_str().unwrap_or_default();
    assert!(refused.contains("over limit `echoes`"), "{out:?}");
    // The refused call never reached the server; another tool passes.
    assert_eq!(out[3]["text"], "2", "{out:?}");
    assert_eq!(out[4]["text"], "42", "{out:?}");
    // Bob has a quota of his own.
    let out = client_with(&url, &json!({ "x-api-key": bob }), &json!([echo]));
    assert_eq!(out[0]["text"], "docs: hi", "{out:?}");
}

/// The number of requests of `client` (its `x-client`) out of `count`,
/// sent in turn to each of `urls`, that were served (the rest must be
/// 429s: never a 5xx).
async fn flood(urls: &[String], client: &str, count: usize) -> usize {
    let http = crate::client();
    let mut served = 0;
    for i in 0..count {
        let status = http
            .get(&urls[i % urls.len()])
            .header("x-client", client)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        match status {
            200 => served += 1,
            429 => {}
            other => panic!("a request of {client} was answered {other}"),
        }
    }
    served
}

/// `switchyard_rate_limit_global` of the admin API at `admin`.
async fn global_mode(admin: &str) -> Option<u64> {
    let metrics = curl(format!("{admin}/metrics"), &[]).await.body;
    metrics.lines().find_map(|l| {
        l.strip_prefix(r#"switchyard_rate_limit_global{route="0",filter="limits"} "#)?
            .parse()
            .ok()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_a_limit_through_redis_and_each_keeps_its_share_while_redis_is_away() {
    let mut redis = switchyard_tests::redis::RedisServer::start();
    let upstream = Upstream::start("u0");
    // 10 at once per client across the replicas, then one a minute.
    let limits = format!(
        "headers = true\nredis = {{ url = \"{}\", replicas = 2, timeout_ms = 500 }}\n\
         limits = [{{ name = \"per-client\", key = [\"header:x-client\"], rate = 1, period_ms = 60000, burst = 10 }}]",
        redis.url()
    );
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = serve(&dir_a, &config(&upstream, &limits));
    let b = serve(&dir_b, &config(&upstream, &limits));
    let urls = [format!("{}/", a.url), format!("{}/", b.url)];

    // Redis's answer gives an admitted request's fields.
    let first = curl(urls[0].clone(), &["-H", "x-client: z"]).await;
    assert_eq!(first.header("ratelimit"), Some(r#""per-client";r=9;t=60"#));

    // One budget for both: the burst, give or take the one the rate adds.
    let served = flood(&urls, "a", 40).await;
    assert!(
        (10..=11).contains(&served),
        "{served} of 40 served by two replicas"
    );
    assert_eq!(global_mode(&a.admin_url()).await, Some(1));

    // Redis goes away: each replica holds a client to its share (5 at
    // once), none answers 5xx, and says its limits are local.
    redis.stop();
    let served_a = flood(&urls[..1], "b", 20).await;
    let served_b = flood(&urls[1..], "b", 20).await;
    assert!(
        (5..=6).contains(&served_a),
        "{served_a} of 20 served by replica a alone"
    );
    assert!(
        (5..=6).contains(&served_b),
        "{served_b} of 20 served by replica b alone"
    );
    assert_eq!(global_mode(&a.admin_url()).await, Some(0));
    assert_eq!(global_mode(&b.admin_url()).await, Some(0));
    let (_, status) = crate::admin(
        reqwest::Method::GET,
        &format!("{}/v1/status", a.admin_url()),
        None,
    )
    .await;
    assert_eq!(
        status["routes"][0]["limits"][0]["mode"], "local",
        "{status}"
    );

    // Redis is back: within a few seconds the limits are global again.
    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(60);
    while global_mode(&a.admin_url()).await != Some(1) {
        assert!(
            Instant::now() < deadline,
            "replica a never followed Redis again"
        );
        flood(&urls[..1], "c", 1).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_flight_past_a_concurrency_limit_are_refused_until_one_ends() {
    let upstream = Upstream::start("u0");
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(
        &dir,
        &config(
            &upstream,
            "concurrency = [{ name = \"per-client\", key = [\"header:x-client\"], max = 2 }]",
        ),
    );
    let url = format!("{}/slow", proxy.url);
    // Two requests of client a held at the upstream.
    upstream.hold();
    let held: Vec<_> = (0..2)
        .map(|_| tokio::spawn(curl(url.clone(), &["-H", "x-client: a"])))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while upstream.hits() < 2 {
        assert!(Instant::now() < deadline, "the held requests never arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A third of client a is refused at once; client b passes the filter
    // (and waits at the upstream like the others).
    let refused = curl(url.clone(), &["-H", "x-client: a"]).await;
    assert_eq!(refused.status, 429, "{}", refused.body);
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert!(
        refused.body.contains("2 requests in flight"),
        "{}",
        refused.body
    );
    let other = tokio::spawn(curl(url.clone(), &["-H", "x-client: b"]));
    while upstream.hits() < 3 {
        assert!(
            Instant::now() < deadline,
            "client b's request never arrived"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Once they are answered, client a may send again.
    upstream.release();
    for request in held {
        assert_eq!(request.await.unwrap().status, 200);
    }
    assert_eq!(other.await.unwrap().status, 200);
    let again = curl(url, &["-H", "x-client: a"]).await;
    assert_eq!(again.status, 200, "{}", again.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_asks_for_a_password_gets_it_from_the_environment() {
    let redis = switchyard_tests::redis::RedisServer::with_args(&["--requirepass", "s3cret"]);
    let upstream = Upstream::start("u0");
    let dir = tempfile::tempdir().unwrap();
    let path = switchyard_tests::process::write_config(
        dir.path(),
        &config(
            &upstream,
            &format!(
                "redis = {{ url = \"{}\", password_env = \"SWITCHYARD_TEST_REDIS_PASSWORD\", replicas = 2, timeout_ms = 500 }}\n\
                 limits = [{{ name = \"per-client\", key = [\"header:x-client\"], rate = 1, period_ms = 60000, burst = 10 }}]",
                redis.url()
            ),
        ),
    );
    let mut command = std::process::Command::new(crate::BINARY);
    command
        .args(["serve", "--config"])
        .arg(&path)
        .env("SWITCHYARD_TEST_REDIS_PASSWORD", "s3cret");
    let proxy = switchyard_tests::process::Switchyard::start(command).listening();
    // Global: the whole burst of 10 (a replica's share, had Redis refused
    // it, would be 5), and the password in no config the admin API shows.
    let served = flood(&[format!("{}/", proxy.url)], "a", 20).await;
    assert!((10..=11).contains(&served), "{served} of 20 served");
    assert_eq!(global_mode(&proxy.admin_url()).await, Some(1));
    let (_, filters) = crate::admin(
        reqwest::Method::GET,
        &format!("{}/v1/filters", proxy.admin_url()),
        None,
    )
    .await;
    assert!(!filters.to_string().contains("s3cret"), "{filters}");
}
