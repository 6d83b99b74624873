//! The data path: headers, errors, HTTP/2, streaming bodies.

use crate::{client, get, instances, serve, upstreams};

fn one_pool(upstream_list: &str) -> String {
    format!(
        r#"
[[listeners]]
listen = "127.0.0.1:0"
[[routes]]
match = {{ path_prefix = "/app" }}
pool = "p"
[pools.p]
connect_timeout_ms = 500
instances = {upstream_list}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_headers_and_strips_hop_by_hop() {
    let ups = upstreams(1);
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(&dir, &one_pool(&instances(&ups)));
    let response = client()
        .get(format!("{}/app/x?q=1", proxy.url))
        .header("x-forwarded-for", "10.1.2.3")
        .header("connection", "x-private")
        .header("x-private", "secret")
        .header("x-custom", "kept")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let h = response.headers();
    assert_eq!(h["x-seen-x-forwarded-for"], "10.1.2.3, 127.0.0.1");
    assert_eq!(h["x-seen-x-forwarded-proto"], "http");
    assert_eq!(h["x-seen-x-custom"], "kept");
    assert!(h.get("x-seen-x-private").is_none(), "{h:?}");
    assert!(h.get("x-seen-connection").is_none(), "{h:?}");
    assert!(h["x-seen-host"].to_str().unwrap().starts_with("127.0.0.1:"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_route_is_404_and_no_instance_is_502_with_json() {
    let dead = {
        let mut u = upstreams(1);
        let url = u[0].url();
        u[0].kill();
        url
    };
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(&dir, &one_pool(&format!("[{{ url = \"{dead}\" }}]")));
    let client = client();
    let (status, body) = get(&client, &format!("{}/elsewhere", proxy.url)).await;
    assert_eq!(status, 404);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["error"], "no_route");
    assert!(json["message"].as_str().unwrap().contains("/elsewhere"));

    let (status, body) = get(&client, &format!("{}/app", proxy.url)).await;
    assert_eq!(status, 502);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["error"], "no_upstream");
    assert!(json["message"].as_str().unwrap().contains(&dead), "{json}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_clients_are_served() {
    let ups = upstreams(1);
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(&dir, &one_pool(&instances(&ups)));
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let response = h2.get(format!("{}/app", proxy.url)).send().await.unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    let h = response.headers().clone();
    assert_eq!(response.text().await.unwrap(), "u0");
    // The HTTP/2 :authority reaches the HTTP/1.1 upstream as Host.
    assert!(h["x-seen-host"].to_str().unwrap().starts_with("127.0.0.1:"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_and_response_bodies_stream_through() {
    let ups = upstreams(1);
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(&dir, &one_pool(&instances(&ups)));
    let payload: Vec<u8> = (0..4 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let response = client()
        .post(format!("{}/app/upload", proxy.url))
        .body(payload.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().await.unwrap().as_ref(), payload.as_slice());
}
