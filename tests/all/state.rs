//! State that must survive what happens around it: half-open breaker slots
//! that nothing sends through, membership changes through the admin API,
//! sticky sessions whose instance went away or drains.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::{client, get, instances, serve, upstreams};

/// A config with an admin listener, event cooldown off, and pool `p`
/// (round robin over `list`) with the `extra` pool keys.
fn with_admin(list: &str, extra: &str) -> String {
    format!(
        "event_cooldown_ms = 0\n[[listeners]]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [[routes]]\npool = \"p\"\n[pools.p]\nstrategy = {{ kind = \"round-robin\" }}\ninstances = {list}\n{extra}\n"
    )
}

async fn admin(method: reqwest::Method, url: &str, body: Option<Value>) -> (u16, Value) {
    let mut request = client().request(method, url);
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let response = request.send().await.expect("admin request");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Polls `done` every 20 ms until it holds, failing after 60 s with `what`.
async fn until<F: std::future::Future<Output = bool>>(what: &str, mut done: impl FnMut() -> F) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn picks_through_the_admin_api_take_no_half_open_slot() {
    let ups = upstreams(1);
    ups[0].set_status(500);
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(
        &dir,
        &with_admin(
            &instances(&ups),
            "breaker = { consecutive_failures = 1, open_ms = 200, max_open_ms = 200, half_open_requests = 1, close_after = 1 }",
        ),
    );
    let client = client();
    let url = format!("{}/", proxy.url);
    let u0 = ups[0].url();
    assert_eq!(get(&client, &url).await.0, 500);
    proxy.wait_for(
        |l| l.contains("breaker open") && l.contains(&u0),
        "the breaker opens",
    );
    ups[0].set_status(200);
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
        |l| l.contains("breaker closed") && l.contains(&u0),
        "the breaker closes",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_gives_its_half_open_slot_back() {
    let ups = upstreams(1);
    ups[0].set_status(500);
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(
        &dir,
        &with_admin(
            &instances(&ups),
            "breaker = { consecutive_failures = 1, open_ms = 200, max_open_ms = 200, half_open_requests = 1, close_after = 1 }",
        ),
    );
    let url = format!("{}/", proxy.url);
    let u0 = ups[0].url();
    assert_eq!(get(&client(), &url).await.0, 500);
    proxy.wait_for(
        |l| l.contains("breaker open") && l.contains(&u0),
        "the breaker opens",
    );
    // The instance recovers but is slow: the probe's client gives up and
    // goes away long before the instance would answer.
    ups[0].set_status(200);
    ups[0].set_delay(Duration::from_secs(600));
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
        |l| l.contains("breaker halfopen") && l.contains(&u0),
        "the probe was admitted half-open",
    );
    // The abandoned probe gave its slot back: the next request is admitted.
    ups[0].set_delay(Duration::ZERO);
    until("a request is admitted again", || async {
        get(&client(), &url).await.0 == 200
    })
    .await;
}
