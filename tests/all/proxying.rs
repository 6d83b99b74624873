//! The data path: headers, errors, HTTP/2, streaming bodies.

use crate::{client, get, instances, serve, single_pool, upstreams};

const ROUND_ROBIN: &str = r#"{ kind = "round-robin" }"#;

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

/// [`one_pool`] with `pool_keys` added to the pool, served by one worker
/// thread: one table of idle upstream connections, so which connection a
/// request takes is certain.
fn one_worker_pool(upstream_list: &str, pool_keys: &str) -> String {
    one_pool(upstream_list).replace(
        "connect_timeout_ms = 500",
        &format!("connect_timeout_ms = 500\n{pool_keys}"),
    ) + "[runtime]\nworker_threads = 1\n"
}

/// Sends `n` GETs to `/app/N` one after the other; each must be `200 ok`
/// (the proxy's log in the message of a failure).
async fn sequential_gets_answer_ok(
    client: &reqwest::Client,
    proxy: &switchyard_tests::process::Switchyard,
    n: usize,
) {
    for i in 0..n {
        let (status, body) = get(client, &format!("{}/app/{i}", proxy.url)).await;
        assert_eq!(
            (status, body.as_str()),
            (200, "ok"),
            "request {i}; switchyard's log:\n{}",
            proxy.log().join("\n")
        );
    }
}

/// An instance on a plain socket that answers one request per connection
/// (`200 ok`, no `connection: close`) and then closes it: at once, or —
/// with `wait_for_next` — only when the next request arrives, unanswered.
/// Its `host:port`.
fn one_answer_per_connection(wait_for_next: bool) -> std::net::SocketAddr {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            // Reads a request head (and its body, by content-length).
            let mut read_request = || {
                let (mut line, mut length) = (String::new(), 0);
                while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                    line.clear();
                }
                let mut body = vec![0; length];
                reader.read_exact(&mut body).is_ok() && line == "\r\n"
            };
            if read_request() {
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
            }
            if wait_for_next {
                read_request();
            }
        }
    });
    addr
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

/// Upstream connections are kept alive and reused: sequential requests
/// (bodies of every kind: empty, small, streamed) share one connection;
/// one idle past `idle_timeout_ms` is not used again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_are_reused_until_idle_past_the_timeout() {
    let ups = upstreams(1);
    let dir = tempfile::tempdir().unwrap();
    let config = one_worker_pool(&instances(&ups), "idle_timeout_ms = 2000");
    let proxy = serve(&dir, &config);
    let client = client();
    for i in 0..30 {
        // An empty body ends with the head: the connection goes back at once.
        ups[0].set_body(if i % 3 == 0 { "" } else { "some body" });
        let (status, _) = get(&client, &format!("{}/app/{i}", proxy.url)).await;
        assert_eq!(status, 200);
    }
    assert_eq!(ups[0].hits(), 30);
    assert_eq!(
        ups[0].connections(),
        1,
        "sequential requests share a connection"
    );
    // Idle past the timeout (2 s): that connection is not used again.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let (status, _) = get(&client, &format!("{}/app/late", proxy.url)).await;
    assert_eq!(status, 200);
    assert_eq!(
        ups[0].connections(),
        2,
        "a new connection after the idle timeout"
    );
}

/// At most `max_idle_connections` idle connections are kept per instance
/// (and worker): after a burst of six requests in flight at once, two are
/// kept, so the next burst of six opens four more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_upstream_connections_are_capped_per_instance() {
    let ups = upstreams(1);
    let dir = tempfile::tempdir().unwrap();
    let config = one_worker_pool(&instances(&ups), "max_idle_connections = 2");
    let proxy = serve(&dir, &config);
    let url = format!("{}/app", proxy.url);
    // Six requests held by the instance at once (six connections), then
    // answered.
    let burst = |hits_before: u64| {
        let url = url.clone();
        let up = &ups[0];
        async move {
            up.hold();
            let requests: Vec<_> = (0..6)
                .map(|_| {
                    let url = url.clone();
                    tokio::spawn(async move { get(&client(), &url).await.0 })
                })
                .collect();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            while up.hits() < hits_before + 6 {
                assert!(std::time::Instant::now() < deadline, "{} held", up.hits());
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            up.release();
            for request in requests {
                assert_eq!(request.await.unwrap(), 200);
            }
        }
    };
    burst(0).await;
    assert_eq!(ups[0].connections(), 6);
    burst(6).await;
    assert_eq!(
        ups[0].connections(),
        10,
        "two idle connections reused, four opened"
    );
}

/// An instance that closes each keep-alive connection right after its
/// answer (as one whose keep-alive timeout fires) costs no request: a
/// request that a pooled connection could not take goes on a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_closing_idle_connections_costs_no_request() {
    let addr = one_answer_per_connection(false);
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(
        &dir,
        &one_pool(&format!(r#"[{{ url = "http://{addr}" }}]"#)),
    );
    let client = client();
    sequential_gets_answer_ok(&client, &proxy, 20).await;
}

/// The keep-alive race made certain: an instance that answers the first
/// request of each connection and closes it when the next one arrives, so
/// that every request after the first goes on a connection the instance
/// closes under it. An idempotent request is sent again on a new
/// connection — with no retry configured, and nothing booked on the
/// instance — and a POST is not (it may have been processed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_connection_closed_as_the_request_arrives_costs_no_idempotent_request() {
    let addr = one_answer_per_connection(true);
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(
        &dir,
        &(one_worker_pool(
            &format!(r#"[{{ url = "http://{addr}" }}]"#),
            "retry = { retries = 0 }",
        ) + "[admin]\nlisten = \"127.0.0.1:0\"\n"),
    );
    let client = client();
    sequential_gets_answer_ok(&client, &proxy, 10).await;
    assert!(
        !proxy.log().iter().any(|l| l.contains("attempt failed")),
        "a closed kept connection booked as the instance's failure:\n{}",
        proxy.log().join("\n")
    );
    // A POST is not sent twice: it fails with the connection.
    let post = client
        .post(format!("{}/app/post", proxy.url))
        .body("data")
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 502);
    // Requests 1 to 9 each went twice; the POST once.
    let (_, metrics) = get(&client, &format!("{}/metrics", proxy.admin_url())).await;
    let resends = r#"switchyard_upstream_resends_total{pool="p"} 9"#;
    assert!(metrics.contains(resends), "{resends} in\n{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_1_0_instance_answers_an_http_1_1_client_in_http_1_1() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // An instance that speaks HTTP/1.0 only: one answer per connection.
    let url = switchyard_tests::upstream::fixed_answer(
        b"HTTP/1.0 200 OK\r\nContent-Length: 6\r\n\r\nold ok",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(&dir, &one_pool(&format!("[{{ url = \"{url}\" }}]")));
    let addr = proxy.url.trim_start_matches("http://").to_string();
    let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
    conn.write_all(b"GET /app HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(60),
        conn.read_to_string(&mut answer),
    )
    .await
    .expect("an answer")
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.ends_with("old ok"), "{answer}");
}

/// One text message sent on `socket` and its echo, within a generous bound.
async fn echoed<S>(socket: &mut tokio_tungstenite::WebSocketStream<S>, text: &str) -> String
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    socket.send(Message::text(text)).await.expect("send");
    let reply = tokio::time::timeout(std::time::Duration::from_secs(60), socket.next())
        .await
        .expect("an echo within the bound")
        .expect("open")
        .expect("a message");
    reply.into_text().expect("text").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_are_relayed_both_ways_as_one_request() {
    let ups = upstreams(1);
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(&dir, &single_pool(ROUND_ROBIN, &instances(&ups)));
    let url = format!("{}/ws", proxy.url.replace("http://", "ws://"));
    let (mut socket, response) = tokio_tungstenite::connect_async(url)
        .await
        .expect("the handshake through switchyard");
    assert_eq!(response.status(), 101);
    for i in 0..5 {
        let text = format!("message {i}");
        assert_eq!(echoed(&mut socket, &text).await, text);
    }
    socket.close(None).await.unwrap();
    // One connection to the instance carried it all.
    assert_eq!(ups[0].connections(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_websocket_lives_through_the_shutdown_grace_period() {
    let ups = upstreams(1);
    let dir = tempfile::tempdir().unwrap();
    let mut proxy = serve(
        &dir,
        &("shutdown_grace_ms = 60000\n".to_string() + &single_pool(ROUND_ROBIN, &instances(&ups))),
    );
    let url = format!("{}/ws", proxy.url.replace("http://", "ws://"));
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    assert_eq!(echoed(&mut socket, "before").await, "before");
    proxy.terminate();
    proxy.wait_for_log("shutting down");
    // Draining: no new connections, but the open tunnel still relays.
    assert_eq!(echoed(&mut socket, "during").await, "during");
    socket.close(None).await.unwrap();
    drop(socket);
    // With the tunnel closed nothing holds the process.
    assert!(proxy.wait_exit().success());
    assert!(
        !proxy
            .log()
            .iter()
            .any(|l| l.contains("still open after the grace")),
        "{:?}",
        proxy.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_over_http2_extended_connect_reaches_an_http_1_1_instance() {
    use http_body_util::Empty;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use tokio_tungstenite::tungstenite::protocol::Role;
    let ups = upstreams(1);
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(&dir, &single_pool(ROUND_ROBIN, &instances(&ups)));
    let addr = proxy.url.trim_start_matches("http://").to_string();
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let (mut h2, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake::<_, Empty<bytes::Bytes>>(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(connection);
    // A first exchange, so that the server's SETTINGS (which allow
    // extended CONNECT) have arrived before the CONNECT goes.
    let plain = http::Request::get(format!("http://{addr}/"))
        .body(Empty::new())
        .unwrap();
    assert_eq!(h2.send_request(plain).await.unwrap().status(), 200);
    let mut connect = http::Request::builder()
        .method(http::Method::CONNECT)
        .uri(format!("http://{addr}/ws"))
        .header("sec-websocket-version", "13")
        .body(Empty::new())
        .unwrap();
    connect
        .extensions_mut()
        .insert(hyper::ext::Protocol::from_static("websocket"));
    let mut response = h2.send_request(connect).await.unwrap();
    // RFC 8441: the instance's 101 reaches an HTTP/2 client as 200.
    assert_eq!(response.status(), 200);
    let stream = hyper::upgrade::on(&mut response).await.unwrap();
    let mut socket = tokio_tungstenite::WebSocketStream::from_raw_socket(
        TokioIo::new(stream),
        Role::Client,
        None,
    )
    .await;
    for text in ["over", "http/2"] {
        assert_eq!(echoed(&mut socket, text).await, text);
    }
}
