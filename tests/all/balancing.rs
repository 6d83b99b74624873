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
async fn least_connections_sends_fewer_requests_to_a_slow_upstream() {
    let ups = upstreams(3);
    ups[0].set_delay(Duration::from_millis(300));
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(
        &dir,
        &single_pool(r#"{ kind = "least-connections" }"#, &instances(&ups)),
    );
    let client = client();
    // 6 concurrent clients, 20 requests each.
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..6 {
        let client = client.clone();
        let url = format!("{}/", proxy.url);
        tasks.spawn(async move {
            for _ in 0..20 {
                let (status, _) = get(&client, &url).await;
                assert_eq!(status, 200);
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    let (slow, fast) = (ups[0].hits(), ups[1].hits().min(ups[2].hits()));
    assert_eq!(ups.iter().map(|u| u.hits()).sum::<u64>(), 120);
    // Round robin would give each 40; the slow one holds its requests longer,
    // so least-connections sends it far fewer.
    assert!(
        slow * 2 < fast,
        "slow upstream got {slow}, the fast ones at least {fast}"
    );
}
