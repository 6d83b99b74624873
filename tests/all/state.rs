//! State that must survive what happens around it: half-open breaker slots
//! that nothing sends through, membership changes through the admin API,
//! sticky sessions whose instance went away or drains.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use switchyard_tests::process::Switchyard;
use switchyard_tests::upstream::Upstream;

use crate::{admin, client, get, instances, serve, upstreams};

/// A config with an admin listener, event cooldown off, and pool `p`
/// (round robin over `list`) with the `extra` pool keys.
fn with_admin(list: &str, extra: &str) -> String {
    format!(
        "event_cooldown_ms = 0\n[[listeners]]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [[routes]]\npool = \"p\"\n[pools.p]\nstrategy = {{ kind = \"round-robin\" }}\ninstances = {list}\n{extra}\n"
    )
}

/// Polls `done` every 20 ms until it holds, failing after 60 s with `what`.
async fn until<F: std::future::Future<Output = bool>>(what: &str, mut done: impl FnMut() -> F) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One upstream behind a breaker with one half-open probe slot (200 ms
/// open), opened by a 500; the upstream answers 200 again when this returns.
async fn opened_breaker() -> (Upstream, tempfile::TempDir, Switchyard) {
    let u0 = Upstream::start("u0");
    u0.set_status(500);
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(
        &dir,
        &with_admin(
            &instances(std::slice::from_ref(&u0)),
            "breaker = { consecutive_failures = 1, open_ms = 200, max_open_ms = 200, half_open_requests = 1, close_after = 1 }",
        ),
    );
    assert_eq!(get(&client(), &format!("{}/", proxy.url)).await.0, 500);
    let url = u0.url();
    proxy.wait_for(
        |l| l.contains("breaker open") && l.contains(&url),
        "the breaker opens",
    );
    u0.set_status(200);
    (u0, dir, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn picks_through_the_admin_api_take_no_half_open_slot() {
    let (u0, _dir, proxy) = opened_breaker().await;
    let client = client();
    let url = format!("{}/", proxy.url);
    // Once the open time is over, a pick asks about the instance without
    // sending anything: it must not use up the one half-open probe.
    let pick = format!("{}/v1/pools/p/pick", proxy.admin_url());
    until("a pick finds the instance again", || async {
        admin(reqwest::Method::POST, &pick, Some(json!({}))).await.0 == 200
    })
    .await;
    for _ in 0..5 {
        assert_eq!(admin(reqwest::Method::POST, &pick, None).await.0, 200);
    }
    // The probe slot is still there: a request goes through and closes it.
    assert_eq!(get(&client, &url).await, (200, "u0".to_string()));
    proxy.wait_for(
        |l| l.contains("breaker closed") && l.contains(&u0.url()),
        "the breaker closes",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_gives_its_half_open_slot_back() {
    let (u0, _dir, proxy) = opened_breaker().await;
    let url = format!("{}/", proxy.url);
    // The instance recovers but is slow: the probe's client gives up and
    // goes away long before the instance would answer.
    u0.set_delay(Duration::from_secs(600));
    // Refused (502) while open; the first request admitted once the open
    // time is over is the probe, and its client times out.
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    until("a probe is admitted and abandoned", || async {
        impatient.get(&url).send().await.is_err()
    })
    .await;
    proxy.wait_for(
        |l| l.contains("breaker halfopen") && l.contains(&u0.url()),
        "the probe was admitted half-open",
    );
    // The abandoned probe gave its slot back: the next request is admitted.
    u0.set_delay(Duration::ZERO);
    until("a request is admitted again", || async {
        get(&client(), &url).await.0 == 200
    })
    .await;
}

/// Sends one request of `session` (none: a new session) to `url`; returns
/// (status, body, the session id the answer assigned).
async fn in_session(
    client: &reqwest::Client,
    url: &str,
    session: Option<&str>,
) -> (u16, String, Option<String>) {
    let mut request = client.get(url);
    if let Some(id) = session {
        request = request.header("mcp-session-id", id);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let assigned = response
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    (status, response.text().await.expect("body"), assigned)
}

/// Every session's next request: how many did not reach their own instance.
async fn broken(client: &reqwest::Client, url: &str, sessions: &[(String, String)]) -> Vec<String> {
    let mut broken = Vec::new();
    for (id, home) in sessions {
        let (status, body, _) = in_session(client, url, Some(id)).await;
        if status != 200 || body != *home {
            broken.push(format!("{id}: {status} {body}"));
        }
    }
    broken
}

/// The instance entry of `authority` in pool `p` of `/v1/status`.
async fn instance_status(admin_url: &str, url: &str) -> Value {
    let (_, status) = admin(
        reqwest::Method::GET,
        &format!("{admin_url}/v1/status"),
        None,
    )
    .await;
    let pools = status["pools"].as_array().cloned().unwrap_or_default();
    pools
        .iter()
        .filter(|p| p["name"] == "p")
        .flat_map(|p| p["instances"].as_array().cloned().unwrap_or_default())
        .find(|i| i["url"] == url)
        .unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_changes_keep_sessions_ejections_and_breakers() {
    // u0..u2 serve sessions; u3 is ejected; u4 drains; u5 joins later.
    let ups = upstreams(6);
    for u in &ups {
        u.set_sessions(true);
    }
    ups[3].set_status(500);
    let list = format!(
        "[{}, {{ url = \"{}\", drain = true }}]",
        instances(&ups[..4]).trim_matches(['[', ']']),
        ups[4].url()
    );
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(
        &dir,
        &with_admin(
            &list,
            "sticky = { header = \"mcp-session-id\" }\n\
             outlier = { consecutive_5xx = 2, consecutive_gateway_errors = 0, success_rate_stdev_factor = 0, base_ejection_ms = 600000, max_ejection_ms = 600000, max_ejection_percent = 50 }\n\
             breaker = { consecutive_failures = 2, min_requests = 1000, open_ms = 600000, max_open_ms = 600000 }",
        ),
    );
    let admin_url = proxy.admin_url();
    let client = client();
    let url = format!("{}/mcp", proxy.url);
    let u3 = ups[3].url();
    until("u3 is ejected", || async {
        let _ = in_session(&client, &url, None).await;
        let status = instance_status(&admin_url, &u3).await;
        status["ejected"] == true && status["breaker"] == "open"
    })
    .await;
    ups[3].set_status(200);
    let u3_hits = ups[3].hits();
    // 12 sessions, each bound by the id its instance assigned.
    let mut sessions = Vec::new();
    while sessions.len() < 12 {
        let (status, home, assigned) = in_session(&client, &url, None).await;
        assert_eq!(status, 200, "{home}");
        sessions.push((assigned.expect("a session id"), home));
    }
    let homes: std::collections::BTreeSet<&str> =
        sessions.iter().map(|(_, h)| h.as_str()).collect();
    assert_eq!(homes.len(), 3, "sessions over u0..u2: {sessions:?}");
    assert_eq!(broken(&client, &url, &sessions).await, Vec::<String>::new());

    let instances = format!("{admin_url}/v1/pools/p/instances");
    let authority = |i: usize| ups[i].url().trim_start_matches("http://").to_string();
    let (status, body) = admin(
        reqwest::Method::POST,
        &instances,
        Some(json!({ "url": ups[5].url() })),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        broken(&client, &url, &sessions).await,
        Vec::<String>::new(),
        "after adding u5"
    );
    let (status, body) = admin(
        reqwest::Method::PATCH,
        &format!("{instances}/{}", authority(1)),
        Some(json!({ "weight": 3 })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        broken(&client, &url, &sessions).await,
        Vec::<String>::new(),
        "after re-weighting u1"
    );
    let (status, body) = admin(
        reqwest::Method::DELETE,
        &format!("{instances}/{}", authority(4)),
        None,
    )
    .await;
    assert!(status < 300, "{status} {body}");
    assert_eq!(
        broken(&client, &url, &sessions).await,
        Vec::<String>::new(),
        "after removing u4"
    );

    // The ejected instance stayed ejected, its breaker open, through all three changes.
    let after = instance_status(&admin_url, &u3).await;
    assert_eq!(after["ejected"], true, "{after}");
    assert_eq!(after["breaker"], "open", "{after}");
    assert_eq!(ups[3].hits(), u3_hits, "an ejected instance got traffic");
    // New sessions reach the new instance and the re-weighted one keeps its weight.
    let mut reached_u5 = false;
    for _ in 0..40 {
        let (status, home, _) = in_session(&client, &url, None).await;
        assert_eq!(status, 200);
        reached_u5 |= home == "u5";
    }
    assert!(reached_u5, "the added instance takes new sessions");
    assert_eq!(
        instance_status(&admin_url, &ups[1].url()).await["weight"],
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_balancer_plugin_is_told_a_membership_change_and_keeps_its_state() {
    let ups = upstreams(3);
    let dir = tempfile::tempdir().unwrap();
    // canary-split at 50%: its accumulator sends every second request to
    // the canary, so the request after an odd count shows whether the
    // plugin instance (and its accumulator) survived the change.
    let strategy = format!(
        r#"{{ kind = "plugin", plugin = {{ path = "{}", config = {{ percent = 50 }}, call_deadline_ms = 1000 }} }}"#,
        switchyard_tests::fixtures::CANARY_SPLIT
    );
    let labelled = format!(
        r#"[{{ url = "{}", labels = {{ track = "stable" }} }}, {{ url = "{}", labels = {{ track = "canary" }} }}]"#,
        ups[0].url(),
        ups[1].url()
    );
    // One worker: one plugin instance, whose accumulator every request sees.
    let config = with_admin(&labelled, "").replace(
        "strategy = { kind = \"round-robin\" }",
        &format!("strategy = {strategy}"),
    ) + "[runtime]\nworker_threads = 1\n";
    let proxy = serve(&dir, &config);
    let client = client();
    let url = format!("{}/", proxy.url);
    assert_eq!(get(&client, &url).await, (200, "u0".to_string()));
    let (status, body) = admin(
        reqwest::Method::POST,
        &format!("{}/v1/pools/p/instances", proxy.admin_url()),
        Some(json!({ "url": ups[2].url(), "labels": { "track": "stable" } })),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        get(&client, &url).await,
        (200, "u1".to_string()),
        "the accumulator was lost: a new plugin instance"
    );
    // The plugin knows the new stable instance: the stable picks rotate over both.
    let mut stable = std::collections::BTreeSet::new();
    for _ in 0..8 {
        let (status, body) = get(&client, &url).await;
        assert_eq!(status, 200);
        if body != "u1" {
            stable.insert(body);
        }
    }
    assert_eq!(stable.into_iter().collect::<Vec<_>>(), ["u0", "u2"]);
}

/// The `instances` count of the balancer plugin of pool `p` in `/v1/status`.
async fn balancer_instances(admin_url: &str) -> u64 {
    let (_, status) = admin(
        reqwest::Method::GET,
        &format!("{admin_url}/v1/status"),
        None,
    )
    .await;
    status["plugins"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["pool"] == "p" && p["kind"] == "balancer")
        .and_then(|p| p["instances"].as_u64())
        .unwrap_or(0)
}

/// With two workers, a balancer plugin gets an instance per worker (no
/// lock shared between them), and a membership change reaches every one:
/// canary-split at 100% sends everything to an added canary only if each
/// instance was told that the new instance is a canary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_worker_has_its_own_plugin_instance_and_all_learn_a_membership_change() {
    let ups = upstreams(2);
    let dir = tempfile::tempdir().unwrap();
    let strategy = format!(
        r#"{{ kind = "plugin", plugin = {{ path = "{}", config = {{ percent = 100 }}, call_deadline_ms = 1000 }} }}"#,
        switchyard_tests::fixtures::CANARY_SPLIT
    );
    let stable = format!(
        r#"[{{ url = "{}", labels = {{ track = "stable" }} }}]"#,
        ups[0].url()
    );
    let config = with_admin(&stable, "").replace(
        "strategy = { kind = \"round-robin\" }",
        &format!("strategy = {strategy}"),
    ) + "[runtime]\nworker_threads = 2\n";
    let proxy = serve(&dir, &config);
    let url = format!("{}/", proxy.url);
    let admin_url = proxy.admin_url();
    // Concurrent connections until both workers have served a pick.
    let burst = || async {
        let requests = (0..16).map(|_| {
            let url = url.clone();
            async move { get(&client(), &url).await }
        });
        futures_util::future::join_all(requests).await
    };
    until("a plugin instance on each worker", || async {
        for (status, _) in burst().await {
            assert_eq!(status, 200);
        }
        balancer_instances(&admin_url).await >= 2
    })
    .await;
    assert_eq!(
        balancer_instances(&admin_url).await,
        2,
        "one per worker, no more"
    );
    let (status, body) = admin(
        reqwest::Method::POST,
        &format!("{admin_url}/v1/pools/p/instances"),
        Some(json!({ "url": ups[1].url(), "labels": { "track": "canary" } })),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    for _ in 0..4 {
        for (status, body) in burst().await {
            assert_eq!(
                (status, body.as_str()),
                (200, "u1"),
                "an instance was not told"
            );
        }
    }
    assert_eq!(balancer_instances(&admin_url).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_is_not_rebound_to_an_instance_that_does_not_know_it() {
    let (ups, _dir, proxy) = two_instances(
        true,
        "sticky = { header = \"mcp-session-id\" }\nretry = { retries = 1, retry_on = [\"5xx\"] }",
    );
    let client = client();
    let url = format!("{}/mcp", proxy.url);
    let (_, home, session) = in_session(&client, &url, None).await;
    let session = session.expect("a session id");
    let (away, other) = if home == "u0" { (0, "u1") } else { (1, "u0") };
    // The session's instance fails for a moment: the retry lands on the
    // other, which does not know the session and says so.
    ups[away].set_status(503);
    let (status, body, _) = in_session(&client, &url, Some(&session)).await;
    assert_eq!(status, 404, "the client sees the answer: {body}");
    assert!(body.starts_with(other), "{body}");
    // Its instance is back: the session was not moved by that 404.
    ups[away].set_status(200);
    assert_eq!(
        in_session(&client, &url, Some(&session)).await,
        (200, home, None)
    );
}

/// Two upstreams (keeping sessions as MCP servers do when `sessions`) behind
/// pool `p` with the `extra` pool keys; the temp dir lives as long as the proxy.
fn two_instances(sessions: bool, extra: &str) -> (Vec<Upstream>, tempfile::TempDir, Switchyard) {
    let ups = upstreams(2);
    for u in &ups {
        u.set_sessions(sessions);
    }
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(&dir, &with_admin(&instances(&ups), extra));
    (ups, dir, proxy)
}

/// Drains `upstream` in pool `p` through the admin API and checks that
/// `/v1/status` shows it draining.
async fn drain(admin_url: &str, upstream: &Upstream) {
    let authority = upstream.url().trim_start_matches("http://").to_string();
    let (status, body) = admin(
        reqwest::Method::POST,
        &format!("{admin_url}/v1/pools/p/instances/{authority}/drain"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let shown = instance_status(admin_url, &upstream.url()).await;
    assert_eq!(shown["draining"], true, "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_instance_keeps_its_sessions_until_the_drain_timeout() {
    // The default drain_timeout_ms (10 min) outlasts the test.
    let (ups, _dir, proxy) = two_instances(true, "sticky = { header = \"mcp-session-id\" }");
    let admin_url = proxy.admin_url();
    let client = client();
    let url = format!("{}/mcp", proxy.url);
    let mut sessions = Vec::new();
    while sessions.len() < 6 {
        let (status, home, id) = in_session(&client, &url, None).await;
        assert_eq!(status, 200);
        sessions.push((id.expect("a session id"), home));
    }
    drain(&admin_url, &ups[0]).await;
    // Every session keeps its instance, the draining one's included ...
    assert_eq!(broken(&client, &url, &sessions).await, Vec::<String>::new());
    // ... while new sessions go to the other instance only.
    for _ in 0..6 {
        let (status, home, _) = in_session(&client, &url, None).await;
        assert_eq!((status, home.as_str()), (200, "u1"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_sessions_move_gives_a_draining_instance_s_sessions_up() {
    // Upstreams that accept any session id (no 404), so a moved session
    // shows where it went.
    let (ups, _dir, proxy) = two_instances(
        false,
        "sticky = { header = \"mcp-session-id\", drain_sessions = \"move\" }",
    );
    let admin_url = proxy.admin_url();
    let client = client();
    let url = format!("{}/mcp", proxy.url);
    // Bind one session per instance (the id is the client's own).
    let mut homes = Vec::new();
    for id in ["a", "b"] {
        homes.push(in_session(&client, &url, Some(id)).await.1);
    }
    assert_eq!(homes, ["u0", "u1"]);
    drain(&admin_url, &ups[0]).await;
    assert_eq!(in_session(&client, &url, Some("a")).await.1, "u1");
    assert_eq!(in_session(&client, &url, Some("b")).await.1, "u1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fan_out_source_cancelled_by_early_exit_gives_its_half_open_slot_back() {
    let ups = upstreams(2);
    // u1 fails first (u0 is slow then), which opens its breaker.
    ups[0].set_delay(Duration::from_millis(500));
    ups[1].set_status(500);
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "event_cooldown_ms = 0\n[[listeners]]\nlisten = \"127.0.0.1:0\"\n[[routes]]\n\
         [routes.fan_out]\npool = \"p\"\nresolver = {{ kind = \"first-success\" }}\nearly_exit = true\n\
         [pools.p]\ninstances = {}\n\
         breaker = {{ consecutive_failures = 1, open_ms = 200, max_open_ms = 200, half_open_requests = 1, close_after = 1 }}\n",
        instances(&ups)
    );
    let proxy = serve(&dir, &config);
    let client = client();
    let url = format!("{}/", proxy.url);
    let u1 = ups[1].url();
    assert_eq!(get(&client, &url).await.0, 200);
    proxy.wait_for(
        |l| l.contains("breaker open") && l.contains(&u1),
        "u1's breaker opens",
    );
    // u1 recovers but is slow; u0 answers at once: the fan-out that admits
    // u1's probe ends on u0's answer and cancels it.
    ups[1].set_status(200);
    ups[1].set_delay(Duration::from_secs(600));
    ups[0].set_delay(Duration::ZERO);
    until("u1's probe is admitted (and cancelled)", || async {
        assert_eq!(get(&client, &url).await.0, 200);
        proxy
            .log()
            .iter()
            .any(|l| l.contains("breaker halfopen") && l.contains(&u1))
    })
    .await;
    // The cancelled probe gave its slot back: u1 is admitted again, answers,
    // and its breaker closes.
    ups[1].set_delay(Duration::ZERO);
    until("u1's breaker closes", || async {
        assert_eq!(get(&client, &url).await.0, 200);
        proxy
            .log()
            .iter()
            .any(|l| l.contains("breaker closed") && l.contains(&u1))
    })
    .await;
}
