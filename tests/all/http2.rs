//! HTTP/2 to instances (`protocol = "h2"`): over TLS by ALPN and in plain
//! text by prior knowledge, streams multiplexed on a connection; gRPC
//! through Switchyard (a tonic server and client: unary, server-streaming,
//! trailers), and the gRPC health check.

use std::time::Duration;

use switchyard_tests::grpc::GrpcServer;
use switchyard_tests::pki::{Pki, Usage};
use switchyard_tests::upstream::Upstream;
use tonic_health::ServingStatus;
use tonic_health::pb::health_check_response::ServingStatus as Status;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, health_check_response};

use crate::{client, serve};

fn pool(instance: &str, extra: &str) -> String {
    format!(
        "[[listeners]]\nlisten = \"127.0.0.1:0\"\n[[routes]]\npool = \"p\"\n\
         [pools.p]\nprotocol = \"h2\"\ninstances = [{{ url = \"{instance}\" }}]\n{extra}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_instances_over_tls_take_concurrent_requests_on_few_connections() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "up");
    let cert = pki.issue("up", "127.0.0.1", &["127.0.0.1"], Usage::Server, false);
    let up = Upstream::start_tls("secure-h2", &cert);
    up.set_delay(Duration::from_millis(200));
    let proxy = serve(
        &dir,
        &pool(
            &up.url(),
            &format!("tls = {{ ca_file = \"{}\" }}\n", pki.ca_file().display()),
        ),
    );
    let http = client();
    let requests = (0..20).map(|_| {
        let (http, url) = (http.clone(), format!("{}/x", proxy.url));
        tokio::spawn(async move { http.get(url).send().await.unwrap() })
    });
    for response in futures_util::future::join_all(requests).await {
        let response = response.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-upstream-version"], "HTTP/2.0");
    }
    // 20 requests in flight at once, multiplexed: one connection per
    // thread stripe that served them (two workers here, and the thread a
    // task happened to start on), not one per request as HTTP/1.1 needs.
    assert!(up.connections() <= 4, "{} connections", up.connections());
    assert_eq!(up.hits(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_by_prior_knowledge_and_a_clear_error_from_an_instance_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::start("plain-h2");
    let proxy = serve(&dir, &pool(&up.url(), ""));
    let response = client()
        .get(format!("{}/", proxy.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-upstream-version"], "HTTP/2.0");

    // An instance that speaks HTTP/1.x only: the preface gets an HTTP/1 answer.
    let url = switchyard_tests::upstream::fixed_answer(
        b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(&dir, &pool(&url, ""));
    let response = client()
        .get(format!("{}/", proxy.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    let body = response.text().await.unwrap();
    assert!(body.contains("does not speak HTTP/2"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_passes_through_unary_streaming_and_trailers_and_is_health_checked() {
    let server = GrpcServer::start("switchyard.test.Echo");
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(
        &dir,
        &pool(
            &server.url(),
            "health = { kind = \"grpc\", grpc_service = \"switchyard.test.Echo\", \
             interval_ms = 200, timeout_ms = 150, rise = 1, fall = 1 }\n",
        ),
    );
    let channel = tonic::transport::Endpoint::from_shared(proxy.url.clone())
        .unwrap()
        .connect()
        .await
        .expect("a gRPC channel to switchyard");
    let mut health = HealthClient::new(channel);

    // Unary, the answer's status in the message.
    let answer = health
        .check(HealthCheckRequest {
            service: "switchyard.test.Echo".into(),
        })
        .await
        .expect("Check through switchyard")
        .into_inner();
    assert_eq!(answer.status(), Status::Serving);
    // An error is a status in the trailers (trailers-only): NOT_FOUND.
    let unknown = health
        .check(HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await
        .expect_err("an unknown service");
    assert_eq!(unknown.code(), tonic::Code::NotFound);

    // Server streaming: the first status, then a change as it happens.
    let mut watch = health
        .watch(HealthCheckRequest {
            service: "switchyard.test.Echo".into(),
        })
        .await
        .expect("Watch through switchyard")
        .into_inner();
    let next = |m: Option<tonic_health::pb::HealthCheckResponse>| m.expect("a message").status();
    let first = tokio::time::timeout(Duration::from_secs(60), watch.message())
        .await
        .expect("a first status")
        .expect("the stream");
    assert_eq!(next(first), health_check_response::ServingStatus::Serving);
    server.set_status("switchyard.test.Echo", ServingStatus::NotServing);
    let second = tokio::time::timeout(Duration::from_secs(60), watch.message())
        .await
        .expect("a second status")
        .expect("the stream");
    assert_eq!(next(second), Status::NotServing);
    // The gRPC health check saw it too.
    proxy.wait_for(
        |l| l.contains("unhealthy") && l.contains("NOT_SERVING"),
        "the instance judged unhealthy by its gRPC check",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_over_tls_is_spoken_to_in_the_protocol_the_pool_asks_for() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "nginx");
    let cert = pki.issue("nginx", "127.0.0.1", &["127.0.0.1"], Usage::Server, false);
    let nginx = switchyard_tests::nginx::Nginx::start_tls(dir.path(), &cert);
    for (protocol, expected) in [
        ("h2", "HTTP/2.0"),
        ("auto", "HTTP/2.0"),
        ("http1", "HTTP/1.1"),
    ] {
        let config_dir = tempfile::tempdir().unwrap();
        let proxy = serve(
            &config_dir,
            &format!(
                "[[listeners]]\nlisten = \"127.0.0.1:0\"\n[[routes]]\npool = \"p\"\n\
                 [pools.p]\nprotocol = \"{protocol}\"\ninstances = [{{ url = \"{}\" }}]\n\
                 tls = {{ ca_file = \"{}\" }}\n",
                nginx.url(),
                pki.ca_file().display()
            ),
        );
        let response = client()
            .get(format!("{}/", proxy.url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "protocol {protocol}");
        assert_eq!(response.text().await.unwrap(), format!("nginx {expected}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_connection_is_reused_until_idle_past_the_timeout() {
    let up = Upstream::start("h2-idle");
    let dir = tempfile::tempdir().unwrap();
    // One worker: one stripe, so the reuse is certain.
    let proxy = serve(
        &dir,
        &(pool(&up.url(), "idle_timeout_ms = 2000\n") + "[runtime]\nworker_threads = 1\n"),
    );
    let http = client();
    for i in 0..10 {
        let response = http.get(format!("{}/{i}", proxy.url)).send().await.unwrap();
        assert_eq!(response.status(), 200);
    }
    assert_eq!(
        up.connections(),
        1,
        "sequential requests share a connection"
    );
    // Unused past the idle timeout (2 s): that connection is let go.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let response = http
        .get(format!("{}/late", proxy.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        up.connections(),
        2,
        "a new connection after the idle timeout"
    );
}
