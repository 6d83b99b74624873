//! Failover through the real proxy: retries, budgets, breakers, bulkheads,
//! replay rules and route fallbacks.

use std::time::Duration;

use crate::{client, get, instances, serve, upstreams};

fn pool_with(extra: &str, list: &str) -> String {
    format!(
        "event_cooldown_ms = 0\n[[listeners]]\nlisten = \"127.0.0.1:0\"\n[[routes]]\npool = \"p\"\n\
         [pools.p]\nstrategy = {{ kind = \"round-robin\" }}\ninstances = {list}\n{extra}\n"
    )
}

/// Runs 16 concurrent clients of 60 GETs each against `url`, calls `harm`
/// once `victim_hits` says the victim served 20 of them, and returns how
/// many GETs did not get a 200.
async fn failures_under_load(
    url: &str,
    victim_hits: impl Fn() -> u64,
    harm: impl FnOnce(),
) -> usize {
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let url = url.to_string();
        clients.spawn(async move {
            let client = client();
            let mut failures = 0;
            for _ in 0..60 {
                if get(&client, &url).await.0 != 200 {
                    failures += 1;
                }
            }
            failures
        });
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while victim_hits() < 20 {
        assert!(
            std::time::Instant::now() < deadline,
            "no traffic reached the victim"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    harm();
    let mut failures = 0;
    while let Some(done) = clients.join_next().await {
        failures += done.unwrap();
    }
    failures
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_one_of_three_under_load_costs_no_idempotent_request() {
    let ups = std::sync::Mutex::new(upstreams(3));
    // Each answer takes 10 ms, so that about a third of the 16 requests in
    // flight are on the instance when it dies (as with real servers under
    // load), and all of them need a retry at once.
    for u in ups.lock().unwrap().iter() {
        u.set_delay(Duration::from_millis(10));
    }
    let list = instances(&ups.lock().unwrap());
    let dir = tempfile::tempdir().unwrap();
    // The defaults: one retry; the retry budget's minimum covers the
    // requests in flight on the instance that dies, and the connections it
    // refuses afterwards are retried outside the budget.
    let proxy = serve(&dir, &pool_with("", &list));
    let failures = failures_under_load(
        &format!("{}/", proxy.url),
        || ups.lock().unwrap()[1].hits(),
        || ups.lock().unwrap()[1].kill(),
    )
    .await;
    assert_eq!(failures, 0, "client-visible errors after the kill");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_instance_under_load_costs_no_idempotent_request() {
    let ups = upstreams(3);
    let dir = tempfile::tempdir().unwrap();
    // Defaults but a 2 s deadline (to keep the test short): each attempt
    // gets half of it; a timed-out attempt is retried elsewhere and keeps
    // the hung instance out for fail_timeout_ms. Until the first attempt
    // times out, round robin sends every client's next request to the hung
    // instance, so all 16 can time out within a few milliseconds of each
    // other and retry at once: the retry budget's minimum is raised to the
    // 16 clients (the default, 10, covers a loaded machine only when those
    // retries do not overlap, which made this test flaky).
    let proxy = serve(
        &dir,
        &pool_with(
            "request_timeout_ms = 2000
retry = { budget_min_concurrent = 16 }",
            &instances(&ups),
        ),
    );
    let failures = failures_under_load(
        &format!("{}/", proxy.url),
        || ups[1].hits(),
        || ups[1].set_delay(Duration::from_secs(3600)),
    )
    .await;
    assert_eq!(failures, 0, "client-visible errors after the hang");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_failing_instance_trips_its_breaker_which_recovers() {
    let ups = upstreams(2);
    ups[1].set_fail_every(2);
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(
        &dir,
        &pool_with(
            "retry = { retries = 1, retry_on = [\"5xx\"] }\n\
             breaker = { failure_rate = 0.5, min_requests = 6, window_ms = 10000, consecutive_failures = 0, open_ms = 3000, max_open_ms = 6000, half_open_requests = 2, close_after = 2 }",
            &instances(&ups),
        ),
    );
    let client = client();
    let url = format!("{}/", proxy.url);
    let u1 = ups[1].url();
    // Drive traffic until the breaker opens; every client request still succeeds (retried on u0).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !proxy
        .log()
        .iter()
        .any(|l| l.contains("breaker open") && l.contains(&u1))
    {
        assert_eq!(get(&client, &url).await.0, 200);
        assert!(std::time::Instant::now() < deadline, "breaker never opened");
    }
    // Open: traffic moves to u0.
    let hits = ups[1].hits();
    for _ in 0..6 {
        assert_eq!(get(&client, &url).await, (200, "u0".to_string()));
    }
    assert_eq!(ups[1].hits(), hits);
    // Recovered: after the open time it half-opens, the probes pass, it closes.
    ups[1].set_fail_every(0);
    while !proxy
        .log()
        .iter()
        .any(|l| l.contains("breaker closed") && l.contains(&u1))
    {
        assert_eq!(get(&client, &url).await.0, 200);
        assert!(std::time::Instant::now() < deadline, "breaker never closed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        proxy
            .log()
            .iter()
            .any(|l| l.contains("breaker halfopen") && l.contains(&u1))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_wide_outage_causes_no_retry_storm() {
    let ups = upstreams(3);
    for u in &ups {
        u.set_status(503);
    }
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(
        &dir,
        &pool_with(
            "retry = { retries = 3, retry_on = [\"5xx\"], budget_ratio = 0.2, budget_min_concurrent = 1, backoff_base_ms = 1, backoff_max_ms = 2 }",
            &instances(&ups),
        ),
    );
    const CLIENTS: usize = 10;
    const EACH: usize = 20;
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..CLIENTS {
        let url = format!("{}/", proxy.url);
        clients.spawn(async move {
            let client = client();
            for _ in 0..EACH {
                assert_eq!(get(&client, &url).await.0, 503);
            }
        });
    }
    while let Some(done) = clients.join_next().await {
        done.unwrap();
    }
    let requests = (CLIENTS * EACH) as u64;
    let attempts: u64 = ups.iter().map(|u| u.hits()).sum();
    // Without a budget: 4 attempts per request (800). The budget keeps retries
    // in flight to 20% of requests in flight.
    assert!(attempts >= requests, "{attempts}");
    assert!(
        attempts <= requests * 3 / 2,
        "retry storm: {attempts} attempts for {requests} requests"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_bulkhead_sheds_at_once_and_the_queue_times_out() {
    let ups = upstreams(1);
    // The one slot stays taken twice as long as the queue waits.
    ups[0].set_delay(Duration::from_millis(6000));
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(
        &dir,
        &(pool_with(
            "bulkhead = { max_concurrent = 1, max_queue = 1, queue_timeout_ms = 3000 }",
            &instances(&ups),
        ) + "[admin]\nlisten = \"127.0.0.1:0\"\n"),
    );
    let url = format!("{}/", proxy.url);
    let send = |url: String| async move {
        let started = std::time::Instant::now();
        let response = client().get(&url).send().await.unwrap();
        let status = response.status().as_u16();
        let retry_after = response.headers().get("retry-after").cloned();
        let body: serde_json::Value =
            serde_json::from_str(&response.text().await.unwrap()).unwrap_or_default();
        (status, retry_after, body, started.elapsed())
    };
    let status = format!("{}/v1/status", proxy.admin_url());
    // Waits until the bulkhead holds `active` and `queued` requests.
    let occupied = |active: u64, queued: u64| {
        let status = status.clone();
        async move {
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            loop {
                let (_, now) = crate::admin(reqwest::Method::GET, &status, None).await;
                let bulkhead = &now["pools"][0]["bulkhead"];
                if bulkhead["active"] == active && bulkhead["queued"] == queued {
                    return;
                }
                assert!(std::time::Instant::now() < deadline, "bulkhead {bulkhead}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let busy = tokio::spawn(send(url.clone()));
    occupied(1, 0).await;
    let queued = tokio::spawn(send(url.clone()));
    occupied(1, 1).await;
    let (_, metrics) = get(&client(), &format!("{}/metrics", proxy.admin_url())).await;
    for line in [
        "switchyard_pool_bulkhead_active{pool=\"p\"} 1",
        "switchyard_pool_bulkhead_queued{pool=\"p\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
    // Slot and queue full: shed at once, not queued.
    let (status, retry_after, body, _) = send(url.clone()).await;
    assert_eq!(status, 503);
    assert_eq!(retry_after.unwrap(), "3");
    assert_eq!(body["error"], "overloaded");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("the queue is full"),
        "{body}"
    );
    // The queued request gives up after the queue timeout.
    let (status, _, body, waited) = queued.await.unwrap();
    assert_eq!(status, 503, "the queued request times out: {body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("no slot within the queue timeout"),
        "{body}"
    );
    assert!(waited >= Duration::from_millis(3000), "{waited:?}");
    occupied(1, 0).await;
    assert_eq!(busy.await.unwrap().0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_and_oversized_bodies_are_not_retried() {
    let ups = upstreams(2);
    ups[0].set_status(503);
    ups[1].set_status(503);
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(
        &dir,
        &pool_with(
            "retry = { retries = 1, retry_on = [\"5xx\"], replay_limit_bytes = 1024 }",
            &instances(&ups),
        ),
    );
    let client = client();
    let url = format!("{}/", proxy.url);
    let hits = || ups[0].hits() + ups[1].hits();
    let sent =
        |method: reqwest::Method, body: Vec<u8>| client.request(method, &url).body(body).send();
    let before = hits();
    assert_eq!(
        sent(reqwest::Method::PUT, vec![b'x'; 100])
            .await
            .unwrap()
            .status(),
        503
    );
    assert_eq!(hits() - before, 2, "a small PUT is buffered and retried");
    let before = hits();
    assert_eq!(
        sent(reqwest::Method::POST, vec![b'x'; 100])
            .await
            .unwrap()
            .status(),
        503
    );
    assert_eq!(hits() - before, 1, "POST is not retried");
    let before = hits();
    assert_eq!(
        sent(reqwest::Method::PUT, vec![b'x'; 4096])
            .await
            .unwrap()
            .status(),
        503
    );
    assert_eq!(
        hits() - before,
        1,
        "a body over the replay limit is not retried"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_fallbacks_serve_while_the_primary_is_down() {
    let primary = upstreams(1);
    let secondary = switchyard_tests::upstream::Upstream::start("dr");
    let gone = {
        let mut u = upstreams(1);
        let url = u[0].url();
        u[0].kill();
        url
    };
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "event_cooldown_ms = 0\n[[listeners]]\nlisten = \"127.0.0.1:0\"\n\
         [[routes]]\nmatch = {{ path_prefix = \"/app\" }}\npool = \"main\"\nfallback = {{ pool = \"dr\" }}\n\
         [[routes]]\npool = \"gone\"\nfallback = {{ status = 503, body = \"maintenance\", headers = {{ retry-after = \"30\" }} }}\n\
         [pools.main]\ninstances = {}\nhealth = {{ path = \"/healthz\", interval_ms = 200, timeout_ms = 100, rise = 1, fall = 1 }}\n\
         [pools.dr]\ninstances = [{{ url = \"{}\" }}]\n\
         [pools.gone]\ninstances = [{{ url = \"{gone}\" }}]\n",
        instances(&primary),
        secondary.url()
    );
    let proxy = serve(&dir, &toml);
    let client = client();
    assert_eq!(
        get(&client, &format!("{}/app", proxy.url)).await,
        (200, "u0".to_string())
    );
    primary[0].set_status(503);
    proxy.wait_for(|l| l.contains("unhealthy after"), "primary unhealthy");
    // Priority failover: the secondary pool while the primary has no fit instance.
    assert_eq!(
        get(&client, &format!("{}/app", proxy.url)).await,
        (200, "dr".to_string())
    );
    // The static fallback answers when no attempt succeeds (connection refused).
    let response = client
        .get(format!("{}/other", proxy.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "30");
    assert_eq!(response.text().await.unwrap(), "maintenance");
    // The primary returns: traffic goes back to it.
    primary[0].set_status(200);
    proxy.wait_for(|l| l.contains("healthy again"), "primary healthy");
    assert_eq!(
        get(&client, &format!("{}/app", proxy.url)).await,
        (200, "u0".to_string())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_plugin_retries_on_its_schedule_within_the_host_cap_then_falls_back() {
    let ups = upstreams(3);
    for u in &ups {
        u.set_status(429);
    }
    let dr = switchyard_tests::upstream::Upstream::start("dr");
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "[[listeners]]\nlisten = \"127.0.0.1:0\"\n\
         [[routes]]\nmatch = {{ path_prefix = \"/capped\" }}\npool = \"capped\"\n\
         [[routes]]\npool = \"main\"\n\
         [pools.main]\ninstances = {list}\nretry = {{ retries = 3 }}\n\
         failover = {{ kind = \"plugin\", plugin = {{ path = \"{plugin}\", config = {{ statuses = [429], delays_ms = [0, 10], fallback_pool = \"dr\" }}, call_deadline_ms = 1000 }} }}\n\
         [pools.capped]\ninstances = {list}\nretry = {{ retries = 1 }}\n\
         failover = {{ kind = \"plugin\", plugin = {{ path = \"{plugin}\", config = {{ statuses = [429], delays_ms = [0, 0, 0, 0, 0, 0, 0, 0] }}, call_deadline_ms = 1000 }} }}\n\
         [pools.dr]\ninstances = [{{ url = \"{dr}\" }}]\n",
        list = instances(&ups),
        plugin = switchyard_tests::fixtures::RETRY_SCHEDULE,
        dr = dr.url(),
    );
    let proxy = serve(&dir, &toml);
    let client = client();
    let hits = || ups.iter().map(|u| u.hits()).sum::<u64>();
    // 429 is not retried by the built-in policy; the plugin retries it twice,
    // then sends the request to the `dr` pool.
    let (status, body) = get(&client, &format!("{}/", proxy.url)).await;
    assert_eq!((status, body.as_str()), (200, "dr"));
    assert_eq!(hits(), 3, "the first attempt and two scheduled retries");
    // A schedule of eight retries, but the pool allows one: two attempts, then
    // the last answer goes to the client.
    let before = hits();
    let (status, _) = get(&client, &format!("{}/capped", proxy.url)).await;
    assert_eq!(status, 429);
    assert_eq!(
        hits() - before,
        2,
        "the host's attempt cap holds over the plugin"
    );
    assert!(!proxy.log().iter().any(|l| l.contains("plugin fault")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_if_error_serves_the_last_good_answer() {
    let mut ups = upstreams(1);
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "[[listeners]]\nlisten = \"127.0.0.1:0\"\n[[routes]]\npool = \"p\"\nstale_if_error = {{ max_age_ms = 60000 }}\n\
         [pools.p]\ninstances = {}\n",
        instances(&ups)
    );
    let proxy = serve(&dir, &toml);
    let client = client();
    assert_eq!(
        get(&client, &format!("{}/item?id=7", proxy.url)).await,
        (200, "u0".to_string())
    );
    ups[0].kill();
    served_stale(&client, &format!("{}/item?id=7", proxy.url), "u0").await;
    // Another query was never answered: no stale copy, the error stands.
    assert_eq!(
        get(&client, &format!("{}/item?id=8", proxy.url)).await.0,
        502
    );
    // Only GET is served stale.
    let post = client
        .post(format!("{}/item?id=7", proxy.url))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 502);
}

/// A pool's membership changes (an instance added through the admin API):
/// the routes keep what they learned — a route's stale-if-error answers and
/// a fan-out's cached answer — as the pools keep their instances' state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_membership_change_costs_no_route_its_cached_answers() {
    let mut ups = upstreams(2);
    let mut joining = switchyard_tests::upstream::Upstream::start("joining");
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "[[listeners]]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [[routes]]\nmatch = {{ path_prefix = \"/fused\" }}\n\
         fan_out = {{ sources = [{{ pool = \"p\" }}, {{ pool = \"q\" }}], resolver = {{ kind = \"first-success\" }}, cache = {{ ttl_ms = 600000 }} }}\n\
         [[routes]]\npool = \"p\"\nstale_if_error = {{ max_age_ms = 600000 }}\n\
         [pools.p]\ninstances = [{{ url = \"{}\" }}]\n[pools.q]\ninstances = [{{ url = \"{}\" }}]\n",
        ups[0].url(),
        ups[1].url()
    );
    let proxy = serve(&dir, &toml);
    let client = client();
    let cache_state = |response: &reqwest::Response| {
        response.headers()["x-switchyard-cache"]
            .to_str()
            .unwrap()
            .to_string()
    };
    let fused = format!("{}/fused?id=1", proxy.url);
    let first = client.get(&fused).send().await.unwrap();
    assert_eq!(
        (first.status().as_u16(), cache_state(&first)),
        (200, "miss".into())
    );
    assert_eq!(
        get(&client, &format!("{}/item?id=7", proxy.url)).await,
        (200, "u0".to_string())
    );
    // p gains an instance.
    let (status, body) = crate::admin(
        reqwest::Method::POST,
        &format!("{}/v1/pools/p/instances", proxy.admin_url()),
        Some(serde_json::json!({ "url": joining.url() })),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    // The fan-out's answer is still cached: no source is asked.
    let asked = ups[0].hits() + ups[1].hits() + joining.hits();
    let again = client.get(&fused).send().await.unwrap();
    assert_eq!(
        (again.status().as_u16(), cache_state(&again)),
        (200, "hit".into())
    );
    assert_eq!(ups[0].hits() + ups[1].hits() + joining.hits(), asked);
    // Every instance of p is gone: the answer from before the change is served.
    ups[0].kill();
    joining.kill();
    served_stale(&client, &format!("{}/item?id=7", proxy.url), "u0").await;
}

/// Asserts that `url` is answered from the stale-if-error copy: 200,
/// marked stale, with its age, the body `body`.
async fn served_stale(client: &reqwest::Client, url: &str, body: &str) {
    let stale = client.get(url).send().await.unwrap();
    assert_eq!(stale.status(), 200);
    assert_eq!(stale.headers()["x-switchyard-stale"], "1");
    assert!(stale.headers().contains_key("age"));
    assert_eq!(stale.text().await.unwrap(), body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_faulting_failover_plugin_falls_back_to_the_built_in_policy() {
    let mut ups = upstreams(2);
    let dir = tempfile::tempdir().unwrap();
    let toml = pool_with(
        &format!(
            "retry = {{ retries = 1 }}\nfailover = {{ kind = \"plugin\", plugin = {{ path = \"{}\" }} }}",
            switchyard_tests::fixtures::HOSTILE_FAILOVER
        ),
        &instances(&ups),
    );
    let proxy = serve(&dir, &toml);
    ups[0].kill();
    let client = client();
    // Round robin reaches the dead u0 on one of two requests; the plugin traps
    // on the connect failure and the built-in policy retries on u1.
    for _ in 0..4 {
        assert_eq!(
            get(&client, &format!("{}/", proxy.url)).await,
            (200, "u1".to_string())
        );
    }
    proxy.wait_for(
        |l| l.contains("plugin fault") && l.contains("hostile_failover.wasm"),
        "fault logged",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fallback_pool_serves_when_every_primary_instance_is_dead() {
    // The /api route of examples/failover.toml, on ephemeral ports: three
    // dead `api` instances (no health check, no outlier detection: nothing
    // marks them unfit), `api-dr` up.
    let mut api = upstreams(3);
    let dr = switchyard_tests::upstream::Upstream::start("dr");
    let config =
        crate::examples::example("failover.toml", &api).replace("http://127.0.0.1:9101", &dr.url());
    for u in &mut api {
        u.kill();
    }
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(&dir, &config);
    let client = client();
    // Every attempt on `api` fails (connect refused): `api-dr` answers;
    // then the breakers and unreachable marks send requests there at once.
    for _ in 0..5 {
        assert_eq!(
            get(&client, &format!("{}/api/new", proxy.url)).await,
            (200, "dr".to_string())
        );
    }
    assert_eq!(dr.hits(), 5);
    // The other route's static fallback still answers when no attempt succeeds.
    let (status, body) = get(&client, &format!("{}/other", proxy.url)).await;
    assert_eq!((status, body.as_str()), (503, "down for maintenance"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retry_schedule_readme_example_reaches_its_fallback_pool() {
    // plugins/retry-schedule/README.md's example, on ephemeral ports.
    let ups = upstreams(2);
    let dr = switchyard_tests::upstream::Upstream::start("dr");
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "[[listeners]]\nlisten = \"127.0.0.1:0\"\n[[routes]]\npool = \"api\"\n\
         [pools.api]\nretry = {{ retries = 3 }}\n\
         failover = {{ kind = \"plugin\", plugin = {{ path = \"{plugin}\", config = {{ statuses = [429, 503], delays_ms = [0, 50, 200], fallback_pool = \"api-dr\" }} }} }}\n\
         instances = {list}\n\
         [pools.api-dr]\ninstances = [{{ url = \"{dr}\" }}]\n",
        plugin = switchyard_tests::fixtures::RETRY_SCHEDULE,
        list = instances(&ups),
        dr = dr.url(),
    );
    let proxy = serve(&dir, &toml);
    let client = client();
    let url = format!("{}/", proxy.url);
    // Both answer 503: the schedule is used up, then api-dr answers.
    for u in &ups {
        u.set_status(503);
    }
    for _ in 0..3 {
        assert_eq!(get(&client, &url).await, (200, "dr".to_string()));
    }
    assert_eq!(dr.hits(), 3);
    // A status it does not list is the client's answer, not a fallback.
    for u in &ups {
        u.set_status(404);
    }
    assert_eq!(get(&client, &url).await.0, 404);
    assert_eq!(dr.hits(), 3);
    // Both dead: connect failures, retried at once, then api-dr.
    drop(ups);
    for _ in 0..3 {
        assert_eq!(get(&client, &url).await, (200, "dr".to_string()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_switched_to_the_fallback_pool_ends_by_the_routes_deadline() {
    // Both pools hang; the primary gives each attempt 500 ms of its 3 s
    // deadline, the fallback pool would give 60 s of its own.
    let primary = upstreams(1);
    primary[0].set_delay(Duration::from_secs(120));
    let secondary = switchyard_tests::upstream::Upstream::start("dr");
    secondary.set_delay(Duration::from_secs(120));
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "[[listeners]]\nlisten = \"127.0.0.1:0\"\n\
         [[routes]]\npool = \"main\"\nfallback = {{ pool = \"dr\" }}\n\
         [pools.main]\ninstances = {}\nrequest_timeout_ms = 3000\n\
         retry = {{ retries = 0, per_try_timeout_ms = 500 }}\n\
         [pools.dr]\ninstances = [{{ url = \"{}\" }}]\nrequest_timeout_ms = 60000\n",
        instances(&primary),
        secondary.url()
    );
    let proxy = serve(&dir, &toml);
    let started = std::time::Instant::now();
    let (status, _) = get(&client(), &format!("{}/", proxy.url)).await;
    let took = started.elapsed();
    assert_eq!(status, 504);
    // The fallback pool took the request over, within what was left of
    // the route's 3 s (before: 60 s more of its own).
    assert_eq!(secondary.hits(), 1);
    assert!(took < Duration::from_secs(30), "the request took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_switched_to_the_fallback_pool_enters_its_bulkhead() {
    let primary = upstreams(1);
    primary[0].set_status(503);
    let dr = switchyard_tests::upstream::Upstream::start("dr");
    dr.hold();
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "[[listeners]]\nlisten = \"127.0.0.1:0\"\n\
         [[routes]]\npool = \"main\"\nfallback = {{ pool = \"dr\" }}\n\
         [pools.main]\ninstances = {}\n\
         [pools.dr]\ninstances = [{{ url = \"{}\" }}]\nbulkhead = {{ max_concurrent = 1, max_queue = 0 }}\n",
        instances(&primary),
        dr.url()
    );
    let proxy = serve(&dir, &toml);
    let url = format!("{}/", proxy.url);
    // The first request fails on the primary and holds the fallback
    // pool's one slot.
    let first = tokio::spawn({
        let url = url.clone();
        async move { get(&client(), &url).await }
    });
    let started = std::time::Instant::now();
    while dr.hits() < 1 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the first request never reached dr"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The second is shed by the fallback pool's bulkhead: it gets the
    // primary's failed answer, and never reaches dr.
    assert_eq!(get(&client(), &url).await.0, 503);
    assert_eq!(dr.hits(), 1, "the second request went past dr's bulkhead");
    dr.release();
    assert_eq!(first.await.unwrap(), (200, "dr".to_string()));
}
