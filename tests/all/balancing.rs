//! Built-in strategies over real upstreams.

use std::time::Duration;

use crate::{client, get, instances, serve, single_pool, upstreams};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_gives_the_exact_order() {
    let ups = upstreams(3);
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(
        &dir,
        &single_pool(r#"{ kind = "round-robin" }"#, &instances(&ups)),
    );
    let client = client();
    let mut order = Vec::new();
    for _ in 0..9 {
        let (status, body) = get(&client, &format!("{}/", proxy.url)).await;
        assert_eq!(status, 200);
        order.push(body);
    }
    assert_eq!(
        order,
        ["u0", "u1", "u2", "u0", "u1", "u2", "u0", "u1", "u2"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_connections_shares_equal_idle_instances_evenly() {
    let ups = upstreams(3);
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(
        &dir,
        &single_pool(r#"{ kind = "least-connections" }"#, &instances(&ups)),
    );
    let client = client();
    // Sequential requests: every instance is idle at every pick, so every
    // pick is a tie of the two sampled, broken at random.
    for _ in 0..600 {
        assert_eq!(get(&client, &format!("{}/", proxy.url)).await.0, 200);
    }
    // 200 each expected; ±60 is over five standard deviations.
    let hits: Vec<u64> = ups.iter().map(|u| u.hits()).collect();
    assert!(
        hits.iter().all(|h| (140..=260).contains(h)),
        "uneven shares of 600: {hits:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_connections_avoids_an_instance_holding_requests() {
    let ups = upstreams(3);
    // Requests to u0 are held for seconds: far longer than the probe below
    // takes even on a loaded machine.
    ups[0].set_delay(Duration::from_secs(8));
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(
        &dir,
        &single_pool(r#"{ kind = "least-connections" }"#, &instances(&ups)),
    );
    let url = format!("{}/", proxy.url);
    // One client, until u0 holds its request (it picks u0 sooner or later:
    // while all are idle, ties go to a random instance).
    let background = {
        let url = url.clone();
        tokio::spawn(async move {
            let client = client();
            loop {
                let (status, body) = get(&client, &url).await;
                assert_eq!(status, 200);
                if body == "u0" {
                    break;
                }
            }
        })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while ups[0].hits() < 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "u0 never got a request"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // While u0 has a request in flight and the others have none, every pick
    // goes elsewhere: any two sampled include an idle instance, and P2C takes
    // the one with fewer in flight (round robin would send a third to u0).
    let client = client();
    for _ in 0..20 {
        let (status, body) = get(&client, &url).await;
        assert_eq!(status, 200);
        assert_ne!(
            body, "u0",
            "a request went to the instance holding requests"
        );
    }
    background.await.unwrap();
}

/// Serves `requests` sequential GETs to `path` (with `header`, if any) and
/// returns the bodies (the upstream names).
async fn drive(url: &str, requests: usize, header: Option<(&str, String)>) -> Vec<String> {
    let client = client();
    let mut bodies = Vec::with_capacity(requests);
    for _ in 0..requests {
        let mut request = client.get(url);
        if let Some((name, value)) = &header {
            request = request.header(*name, value);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        bodies.push(response.text().await.unwrap());
    }
    bodies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_round_robin_serves_exactly_by_weight() {
    let ups = upstreams(3);
    let dir = tempfile::tempdir().unwrap();
    let weighted = format!(
        r#"[{{ url = "{}", weight = 3 }}, {{ url = "{}" }}, {{ url = "{}" }}]"#,
        ups[0].url(),
        ups[1].url(),
        ups[2].url()
    );
    let proxy = serve(
        &dir,
        &single_pool(r#"{ kind = "weighted-round-robin" }"#, &weighted),
    );
    let bodies = drive(&format!("{}/", proxy.url), 50, None).await;
    // Smooth: the heaviest never serves more than its share in a row.
    assert_eq!(&bodies[..5], ["u0", "u1", "u0", "u2", "u0"]);
    assert_eq!((ups[0].hits(), ups[1].hits(), ups[2].hits()), (30, 10, 10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_spreads_over_every_instance() {
    let ups = upstreams(3);
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(
        &dir,
        &single_pool(r#"{ kind = "random" }"#, &instances(&ups)),
    );
    drive(&format!("{}/", proxy.url), 300, None).await;
    // Expected 100 each; ±40 is about five standard deviations.
    for u in &ups {
        assert!((60..=140).contains(&u.hits()), "{}: {}", u.name, u.hits());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fastest_response_avoids_a_slow_instance() {
    let ups = upstreams(3);
    ups[1].set_delay(Duration::from_millis(100));
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(
        &dir,
        &single_pool(r#"{ kind = "fastest-response" }"#, &instances(&ups)),
    );
    drive(&format!("{}/", proxy.url), 60, None).await;
    // Round robin would send it 20; once it has answered slowly, power of two
    // choices never prefers it over a fast one.
    assert!(ups[1].hits() <= 4, "slow instance got {}", ups[1].hits());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hash_keeps_a_key_on_its_instance_and_moves_it_once() {
    for algorithm in ["ring", "maglev"] {
        let mut ups = upstreams(3);
        let dir = tempfile::tempdir().unwrap();
        let proxy = serve(
            &dir,
            &single_pool(
                &format!(
                    r#"{{ kind = "consistent-hash", key = "header:x-user", algorithm = "{algorithm}" }}"#
                ),
                &instances(&ups),
            ),
        );
        let url = format!("{}/", proxy.url);
        let alice = drive(&url, 10, Some(("x-user", "alice".into()))).await;
        assert!(
            alice.iter().all(|b| *b == alice[0]),
            "{algorithm}: {alice:?}"
        );
        // Different keys spread over the pool.
        let mut homes = std::collections::BTreeSet::new();
        for user in 0..30 {
            homes.insert(
                drive(&url, 1, Some(("x-user", format!("user-{user}"))))
                    .await
                    .remove(0),
            );
        }
        assert!(homes.len() >= 2, "{algorithm}: every key on {homes:?}");
        // A request without the key is still served.
        assert_eq!(drive(&url, 1, None).await.len(), 1);
        // When alice's instance dies she moves once, and stays.
        let home: usize = alice[0][1..].parse().unwrap();
        ups[home].kill();
        let moved = drive(&url, 10, Some(("x-user", "alice".into()))).await;
        assert!(
            moved.iter().all(|b| *b == moved[0] && *b != alice[0]),
            "{algorithm}: {moved:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_aware_sends_less_to_a_loaded_instance() {
    let ups = upstreams(3);
    ups[0].set_response_header("x-load", "0.9");
    ups[1].set_response_header("x-load", "0.0");
    ups[2].set_response_header("x-load", "0.0");
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(
        &dir,
        &single_pool(r#"{ kind = "resource-aware" }"#, &instances(&ups)),
    );
    drive(&format!("{}/", proxy.url), 300, None).await;
    // Effective weights 0.1 : 1 : 1 once reported: about 5% for u0 (plus the
    // requests before its first report); round robin would give it 100.
    assert!(ups[0].hits() < 45, "loaded instance got {}", ups[0].hits());
    assert!(ups[1].hits() > 100 && ups[2].hits() > 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_instance_gets_no_new_requests() {
    let ups = upstreams(3);
    let dir = tempfile::tempdir().unwrap();
    let list = format!(
        r#"[{{ url = "{}" }}, {{ url = "{}", drain = true }}, {{ url = "{}" }}]"#,
        ups[0].url(),
        ups[1].url(),
        ups[2].url()
    );
    for strategy in [
        r#"{ kind = "round-robin" }"#,
        r#"{ kind = "consistent-hash", key = "path" }"#,
    ] {
        let proxy = serve(&dir, &single_pool(strategy, &list));
        drive(&format!("{}/some/path", proxy.url), 30, None).await;
        assert_eq!(ups[1].hits(), 0, "{strategy}");
    }
    assert_eq!(ups[0].hits() + ups[2].hits(), 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_cookie_keeps_a_client_on_its_instance() {
    let ups = upstreams(3);
    let dir = tempfile::tempdir().unwrap();
    let toml = single_pool(r#"{ kind = "round-robin" }"#, &instances(&ups))
        + "sticky = { cookie = \"sy-affinity\", ttl_ms = 600000 }\n";
    let proxy = serve(&dir, &toml);
    let client = client();
    let first = client.get(format!("{}/", proxy.url)).send().await.unwrap();
    let set_cookie = first.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        set_cookie.starts_with("sy-affinity=") && set_cookie.contains("Max-Age=600"),
        "{set_cookie}"
    );
    let home = first.text().await.unwrap();
    let cookie = set_cookie.split(';').next().unwrap().to_string();
    // Round robin alone would rotate; the cookie holds the client on `home`.
    let bodies = drive(&format!("{}/", proxy.url), 12, Some(("cookie", cookie))).await;
    assert!(bodies.iter().all(|b| *b == home), "{home}: {bodies:?}");
    // Without the cookie, round robin goes on rotating.
    let others = drive(&format!("{}/", proxy.url), 3, None).await;
    assert_eq!(
        others
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_mcp_sessions_follow_the_id_the_server_assigned_and_rebind_on_failure() {
    let mut ups = upstreams(3);
    for u in &ups {
        // Each server assigns its own session id, as an MCP server answering `initialize`.
        u.set_response_header("mcp-session-id", &format!("session-{}", u.name));
    }
    let dir = tempfile::tempdir().unwrap();
    let toml = single_pool(r#"{ kind = "round-robin" }"#, &instances(&ups))
        + "sticky = { header = \"mcp-session-id\" }\n";
    let proxy = serve(&dir, &toml);
    let url = format!("{}/mcp", proxy.url);
    let home = drive(&url, 1, None).await.remove(0);
    let session = ("mcp-session-id", format!("session-{home}"));
    let bodies = drive(&url, 12, Some(session.clone())).await;
    assert!(bodies.iter().all(|b| *b == home), "{home}: {bodies:?}");
    // The bound instance dies: the session is re-picked once and re-bound.
    let index: usize = home[1..].parse().unwrap();
    ups[index].kill();
    let moved = drive(&url, 12, Some(session)).await;
    assert!(
        moved.iter().all(|b| *b == moved[0] && *b != home),
        "{moved:?}"
    );
}
