//! Failures of upstreams and of the process's life: a killed instance, shutdown.

use std::time::Duration;

use crate::{client, get, instances, serve, single_pool, upstreams};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_killed_mid_run_costs_no_request() {
    let mut ups = upstreams(3);
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(
        &dir,
        &single_pool(r#"{ kind = "round-robin" }"#, &instances(&ups)),
    );
    let client = client();
    let url = format!("{}/", proxy.url);
    for _ in 0..30 {
        assert_eq!(get(&client, &url).await.0, 200);
    }
    ups[1].kill();
    let killed_hits = ups[1].hits();
    for i in 0..60 {
        let (status, body) = get(&client, &url).await;
        assert_eq!(status, 200, "request {i} after the kill: {body}");
        assert_ne!(body, "u1");
    }
    assert_eq!(ups[1].hits(), killed_hits);
    assert_eq!(ups[0].hits() + ups[2].hits(), 20 + 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_requests_finish() {
    let ups = upstreams(1);
    ups[0].set_delay(Duration::from_millis(1500));
    let dir = tempfile::tempdir().unwrap();
    let mut proxy = serve(
        &dir,
        &single_pool(r#"{ kind = "round-robin" }"#, &instances(&ups)),
    );
    let client = client();
    let url = format!("{}/slow", proxy.url);
    let in_flight = tokio::spawn(async move { get(&client, &url).await });
    // Wait until the upstream has the request, then ask switchyard to stop.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while ups[0].hits() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "request never arrived"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    proxy.terminate();
    proxy.wait_for_log("shutting down");
    let (status, body) = in_flight.await.unwrap();
    assert_eq!((status, body.as_str()), (200, "u0"));
    let exit = tokio::task::spawn_blocking(move || {
        let status = proxy.wait_exit();
        (status, proxy)
    })
    .await
    .unwrap();
    assert!(exit.0.success(), "exit status {:?}", exit.0);
    exit.1.wait_for_log("shutdown complete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_the_admin_event_streams() {
    let ups = upstreams(1);
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "shutdown_grace_ms = 2000\n[[listeners]]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [[routes]]\npool = \"p\"\n[pools.p]\ninstances = {}\n",
        instances(&ups)
    );
    let mut proxy = serve(&dir, &config);
    // A follower of the server-sent events, connected (headers received).
    let mut follower = client()
        .get(format!("{}/v1/events", proxy.admin_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(follower.status(), 200);
    proxy.terminate();
    // Its stream ends (within 30 s, before the client's own 60 s timeout),
    // and the process exits (within the helper's bound,
    // far past the 2 s grace; before, it waited for the follower to leave).
    let ended = tokio::time::timeout(Duration::from_secs(30), async {
        while let Ok(Some(_)) = follower.chunk().await {}
    })
    .await;
    assert!(ended.is_ok(), "the event stream did not end at shutdown");
    let status = tokio::task::spawn_blocking(move || proxy.wait_exit())
        .await
        .unwrap();
    assert!(status.success(), "exit status {status:?}");
}
