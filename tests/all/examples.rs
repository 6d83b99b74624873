//! The shipped configs in `examples/`, run as their comments say, on
//! ephemeral ports: each `http://127.0.0.1:900N` becomes a real upstream
//! (`uN-1`), the listener an ephemeral port, plugins are the built fixtures.

use std::collections::BTreeMap;
use std::path::Path;

use switchyard_tests::fixtures;
use switchyard_tests::pki::{Issued, Pki, Usage};
use switchyard_tests::upstream::Upstream;

use crate::{client, serve};

/// `examples/NAME` with its listener on an ephemeral port and its instances
/// `http://127.0.0.1:9001`… on `ups` (in order).
pub fn example(name: &str, ups: &[Upstream]) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(name);
    let mut text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .replace("listen = \"127.0.0.1:8080\"", "listen = \"127.0.0.1:0\"");
    for (i, up) in ups.iter().enumerate() {
        text = text.replace(&format!("http://127.0.0.1:{}", 9001 + i), &up.url());
    }
    text
}

/// Which upstream answered each of `n` GETs of `path` (the body is its name).
async fn answers(base: &str, path: &str, n: usize, header: Option<(&str, &str)>) -> Vec<String> {
    let client = client();
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let mut request = client.get(format!("{base}{path}"));
        if let Some((name, value)) = header {
            request = request.header(name, value);
        }
        let response = request.send().await.expect("request");
        assert_eq!(response.status(), 200);
        out.push(response.text().await.expect("body"));
    }
    out
}

fn counts(answers: &[String]) -> BTreeMap<&str, usize> {
    let mut counts = BTreeMap::new();
    for a in answers {
        *counts.entry(a.as_str()).or_insert(0) += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_example_takes_turns() {
    let ups = crate::upstreams(3);
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(&dir, &example("round-robin.toml", &ups));
    assert_eq!(
        answers(&proxy.url, "/", 6, None).await,
        ["u0", "u1", "u2", "u0", "u1", "u2"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_example_does_what_its_comments_say() {
    let ups = crate::upstreams(1);
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(&dir, &example("filters.toml", &ups));
    let client = client();
    let get = |path: &str| client.get(format!("{}{path}", proxy.url)).send();
    let response = get("/api/").await.unwrap();
    let seen = |r: &reqwest::Response, name: &str| {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    assert_eq!(seen(&response, "x-upstream-path").as_deref(), Some("/"));
    assert_eq!(
        seen(&response, "x-seen-x-client-ip").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(
        seen(&response, "x-content-type-options").as_deref(),
        Some("nosniff")
    );
    let response = client
        .request(reqwest::Method::OPTIONS, format!("{}/api/", proxy.url))
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "PUT")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert_eq!(
        seen(&response, "access-control-allow-origin").as_deref(),
        Some("https://app.example.com")
    );
    ups[0].set_body(&"compressible text ".repeat(100));
    ups[0].set_response_header("content-type", "text/plain");
    let output = std::process::Command::new("curl")
        .args(["-s", "--compressed", "-D", "-", "-o", "/dev/null"])
        .arg(format!("{}/api/big.txt", proxy.url))
        .output()
        .expect("curl");
    let head = String::from_utf8_lossy(&output.stdout).to_ascii_lowercase();
    assert!(head.contains("content-encoding: "), "{head}");
    let response = get("/old/42").await.unwrap();
    assert_eq!(
        seen(&response, "x-upstream-path").as_deref(),
        Some("/items/42")
    );
    assert_eq!(get("/admin").await.unwrap().status(), 403);
    // As the comment runs it: curl asks `Expect: 100-continue` for a body
    // this large, and is answered 413 before it sends it.
    let big = dir.path().join("big.iso");
    std::fs::write(&big, vec![0u8; 2 << 20]).unwrap();
    let output = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST"])
        .arg("--data-binary")
        .arg(format!("@{}", big.display()))
        .arg(format!("{}/api/upload", proxy.url))
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "413");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_plugin_example_sends_ten_percent_of_api_to_the_canary() {
    let ups = crate::upstreams(5);
    let dir = tempfile::tempdir().unwrap();
    // `path` is relative to the config file: the plugin goes beside it.
    std::fs::copy(fixtures::CANARY_SPLIT, dir.path().join("canary_split.wasm")).unwrap();
    let proxy = serve(&dir, &example("canary-plugin.toml", &ups));
    let api = counts(&answers(&proxy.url, "/api/items", 200, None).await)
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect::<BTreeMap<_, _>>();
    // 10%: each worker thread's plugin instance sends exactly every tenth
    // of its requests, so the total is 20 within one per worker (2 here);
    // the stable two share the rest.
    let canary = api.get("u2").copied().unwrap_or(0);
    assert!((18..=22).contains(&canary), "{api:?}");
    assert_eq!(
        api.get("u0").copied().unwrap_or(0) + api.get("u1").copied().unwrap_or(0),
        200 - canary
    );
    // Everything else goes to the static pool (u3, u4).
    let rest = answers(&proxy.url, "/index.html", 10, None).await;
    assert!(rest.iter().all(|a| a == "u3" || a == "u4"), "{rest:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strategies_example_does_what_each_pool_says() {
    let ups = crate::upstreams(3);
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(&dir, &example("strategies.toml", &ups));
    // Weighted 3:1, interleaved; the draining third gets nothing.
    let wrr = answers(&proxy.url, "/wrr", 8, None).await;
    assert_eq!(
        counts(&wrr),
        BTreeMap::from([("u0", 6), ("u1", 2)]),
        "{wrr:?}"
    );
    assert!(
        !wrr.windows(4).any(|w| w.iter().all(|a| a == "u0")),
        "bursts: {wrr:?}"
    );
    // One user, one instance.
    let alice = answers(&proxy.url, "/users/me", 10, Some(("x-user", "alice"))).await;
    assert_eq!(counts(&alice).len(), 1, "{alice:?}");
    // An MCP session stays with the instance that served it first.
    let session = answers(&proxy.url, "/mcp", 10, Some(("mcp-session-id", "s-1"))).await;
    assert_eq!(counts(&session).len(), 1, "{session:?}");
    // Browsers get an affinity cookie from the fastest-response pool.
    let response = client()
        .get(format!("{}/", proxy.url))
        .send()
        .await
        .unwrap();
    let cookie = response
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(cookie.starts_with("sy-affinity="), "{cookie}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fusion_example_votes_takes_the_median_and_hedges() {
    // vendor-a: u0 and u3; vendor-b: u1; vendor-c: u2; the MCP servers: u4, u5.
    let ups = crate::upstreams(6);
    let quote = |price: u32| format!(r#"{{"symbol": "ACME", "price": {price}}}"#);
    ups[0].set_body(&quote(10));
    ups[3].set_body(&quote(10));
    ups[1].set_body(&quote(12));
    ups[2].set_body(&quote(12));
    let dir = tempfile::tempdir().unwrap();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    std::fs::copy(
        examples.join("quote.schema.json"),
        dir.path().join("quote.schema.json"),
    )
    .unwrap();
    std::fs::copy(
        fixtures::MCP_FEDERATION,
        dir.path().join("mcp_federation.wasm"),
    )
    .unwrap();
    let config = example("fusion.toml", &ups[..4])
        .replace("http://127.0.0.1:9201", &ups[4].url())
        .replace("http://127.0.0.1:9202", &ups[5].url());
    let proxy = serve(&dir, &config);
    let client = client();
    let get = |path: &str| client.get(format!("{}{path}", proxy.url)).send();
    // /quote: the answer two vendors agree on (b and c: 12), then cached.
    let first = get("/quote/ACME").await.unwrap();
    assert_eq!(first.status(), 200);
    let body: serde_json::Value = serde_json::from_str(&first.text().await.unwrap()).unwrap();
    assert_eq!(body["price"], 12, "{body}");
    let again = get("/quote/ACME").await.unwrap();
    assert_eq!(again.headers()["x-switchyard-cache"], "hit");
    // /price/median: the middle of 10, 12, 12.
    let median = get("/price/median").await.unwrap().text().await.unwrap();
    let median: serde_json::Value = serde_json::from_str(&median).unwrap();
    assert_eq!(median["price"].as_f64(), Some(12.0), "{median}");
    // /search: both replicas of vendor-a asked; the slow one loses.
    ups[0].set_delay(std::time::Duration::from_secs(30));
    let hedged = get("/search?q=x").await.unwrap();
    assert_eq!(hedged.status(), 200);
    let sources = hedged.headers()["x-switchyard-sources"]
        .to_str()
        .unwrap()
        .to_string();
    let u3 = ups[3].url().trim_start_matches("http://").to_string();
    assert!(sources.contains(&u3), "{sources}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_example_takes_an_instance_out_after_three_failed_checks() {
    let ups = crate::upstreams(3);
    ups[1].set_status(503);
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(&dir, &example("health.toml", &ups));
    // Every 5 s (+ jitter), 3 failures: out within about 20 s.
    let u1 = ups[1].url();
    let line = proxy.wait_for(
        |l| l.contains("unhealthy after 3 failed checks") && l.contains(&u1),
        "u1 unhealthy after 3 checks",
    );
    assert!(line.contains("status 503"), "{line}");
    let served = answers(&proxy.url, "/", 20, None).await;
    assert!(served.iter().all(|a| a == "u0" || a == "u2"), "{served:?}");
}

/// The files `examples/tls.toml` names, under `dir/certs`, made by three
/// test CAs: the site's (server certificates for `localhost` and
/// `api.example.test`), the clients' (a client certificate for
/// `spiffe://example.org/billing`) and the internal one (the billing
/// instance's certificate for `billing.internal`).
pub struct TlsExampleCertificates {
    /// The CA of the listener's certificates.
    pub site: Pki,
    /// The billing client's certificate.
    pub client: Issued,
    /// The billing instance's certificate.
    pub instance: Issued,
}

/// Makes the files `examples/tls.toml` names under `dir/certs` (see
/// [`TlsExampleCertificates`]).
///
/// # Panics
/// When a file cannot be written (test set-up).
pub fn tls_example_certificates(dir: &Path) -> TlsExampleCertificates {
    let certs = dir.join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    let site = Pki::new(&certs, "site");
    site.issue("site", "localhost", &["localhost"], Usage::Server, false);
    site.issue(
        "api",
        "api.example.test",
        &["api.example.test"],
        Usage::Server,
        false,
    );
    let clients = Pki::new(&certs, "clients");
    let client = clients.issue(
        "billing-client",
        "billing",
        &["spiffe://example.org/billing"],
        Usage::Client,
        false,
    );
    let instance = Pki::new(&certs, "internal").issue(
        "billing-instance",
        "billing.internal",
        &["billing.internal"],
        Usage::Server,
        false,
    );
    TlsExampleCertificates {
        site,
        client,
        instance,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_example_serves_https_by_sni_routes_by_client_certificate_and_verifies_instances() {
    let dir = tempfile::tempdir().unwrap();
    let certs = tls_example_certificates(dir.path());
    let web = Upstream::start("web");
    let billing_instance = Upstream::start_tls("billing", &certs.instance);
    let text = example("tls.toml", std::slice::from_ref(&web))
        .replace("listen = \"127.0.0.1:8443\"", "listen = \"127.0.0.1:0\"")
        .replace("https://127.0.0.1:9002", &billing_instance.url());
    let proxy = serve(&dir, &text);
    let port = crate::tls::port(&proxy.url);
    let ca = certs.site.ca_file();

    // No client certificate: the catch-all route.
    let (ok, out, err) = crate::tls::curl("localhost", port, "/", &ca, &[]).await;
    assert!(ok && out.contains("web"), "{out}{err}");
    // SNI api.example.test gets the second certificate (curl checks the name).
    let (ok, out, err) = crate::tls::curl("api.example.test", port, "/", &ca, &[]).await;
    assert!(ok && out.contains("web"), "{out}{err}");
    // The billing identity goes to the HTTPS instance, verified for `sni`.
    let client_cert = crate::tls::client_cert(&certs.client);
    let (ok, out, err) = crate::tls::curl("localhost", port, "/", &ca, &client_cert).await;
    assert!(ok, "{err}");
    assert!(
        out.contains("billing") && out.contains("x-seen-x-forwarded-client-cert"),
        "{out}"
    );
    assert_eq!(billing_instance.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_example_passes_calls_through_over_http2() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    let server = switchyard_tests::grpc::GrpcServer::start("");
    let dir = tempfile::tempdir().unwrap();
    let text = example("grpc.toml", &[]).replace("http://127.0.0.1:9001", &server.url());
    let proxy = serve(&dir, &text);
    let channel = tonic::transport::Endpoint::from_shared(proxy.url.clone())
        .unwrap()
        .connect()
        .await
        .expect("a gRPC channel to switchyard");
    let answer = HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .expect("Check through switchyard")
        .into_inner();
    assert_eq!(answer.status(), ServingStatus::Serving);
}

#[test]
fn mcp_example_federates_and_fuses() {
    use switchyard_tests::mcp::{McpServer, client};
    let docs = McpServer::with(&["--name", "docs"]);
    let search = [
        McpServer::with(&["--name", "search", "--answer", "7"]),
        McpServer::with(&["--name", "search", "--answer", "7"]),
        McpServer::with(&["--name", "search", "--answer", "8"]),
    ];
    let dir = tempfile::tempdir().unwrap();
    let mut text = example("mcp.toml", &[]).replace("http://127.0.0.1:9001", &docs.url());
    for (i, server) in search.iter().enumerate() {
        text = text.replace(&format!("http://127.0.0.1:{}", 9002 + i), &server.url());
    }
    let proxy = serve(&dir, &text);
    let out = client(
        &format!("{}/mcp", proxy.url),
        &serde_json::json!([
            { "op": "call", "tool": "docs__echo", "args": { "text": "hi" } },
            { "op": "call", "tool": "search_only" },
            { "op": "call", "tool": "search__answer" },
        ]),
    );
    assert_eq!(out[0]["text"], "docs: hi");
    assert_eq!(out[1]["text"], "search");
    assert_eq!(out[2]["text"], "7", "{}", out[2]);
    let fusion = &out[2]["meta"]["io.switchyard/fusion"];
    assert_eq!(
        fusion["used"].as_array().map(Vec::len),
        Some(2),
        "{}",
        out[2]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_example_starts_its_pools_in_order_and_serves() {
    let dir = tempfile::tempdir().unwrap();
    let text = example("processes.toml", &[])
        .replace("listen = \"127.0.0.1:9901\"", "listen = \"127.0.0.1:0\"");
    // http.server serves the config file's directory (the processes' cwd).
    std::fs::create_dir(dir.path().join("db")).unwrap();
    let proxy = serve(&dir, &text);
    let api = proxy.admin_url();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    loop {
        let (_, replicas) = crate::admin(
            reqwest::Method::GET,
            &format!("{api}/v1/pools/api/processes"),
            None,
        )
        .await;
        let ready = replicas
            .as_array()
            .is_some_and(|r| r.len() == 2 && r.iter().all(|r| r["state"] == "ready"));
        if ready {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "api ready: {replicas}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let db = proxy.wait_for_log("pool db: replica 0 started");
    let api_started = proxy.wait_for_log("pool api: replica 0 started");
    assert!(db < api_started, "{db} / {api_started}");
    for path in ["/", "/db/"] {
        let response = client()
            .get(format!("{}{path}", proxy.url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_example_shares_a_change_and_discovered_instances() {
    let etcd = switchyard_tests::etcd::Etcd::start();
    let ups = crate::upstreams(3);
    let text = example("replicas.toml", &ups[..2])
        .replace("listen = \"127.0.0.1:9901\"", "listen = \"127.0.0.1:0\"")
        .replace("http://127.0.0.1:2379", &etcd.url());
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let replicas: Vec<_> = dirs.iter().map(|d| serve(d, &text)).collect();
    let apis: Vec<String> = replicas.iter().map(|r| r.admin_url()).collect();
    let client = client();
    for replica in &replicas {
        let mut seen = counts(&answers(&replica.url, "/", 4, None).await)
            .into_keys()
            .map(str::to_string)
            .collect::<Vec<_>>();
        seen.sort();
        assert_eq!(seen, ["u0", "u1"]);
    }
    // A drain through the first replica's API is in force on the second.
    let drain = format!(
        "{}/v1/pools/web/instances/{}/drain",
        apis[0],
        ups[1].url().trim_start_matches("http://")
    );
    let response = client.post(&drain).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (_, body) = crate::get(&client, &format!("{}/v1/pools/web", apis[1])).await;
        let pool: serde_json::Value = serde_json::from_str(&body).unwrap();
        if pool["instances"][1]["drain"] == true {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{pool}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(answers(&replicas[1].url, "/", 4, None).await, ["u0"; 4]);
    // An instance registered in etcd with a lease serves /api on both.
    let lease = etcd.lease(60);
    etcd.put("/services/api/a", &ups[2].url(), Some(&lease));
    for replica in &replicas {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while crate::get(&client, &format!("{}/api", replica.url)).await.1 != "u2" {
            assert!(
                std::time::Instant::now() < deadline,
                "/api never reached u2"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_counts_proxied_requests_not_its_health_checks() {
    // The scratch folder of a demo that was killed (its process is gone)
    // is removed by the next one.
    let gone = {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        child.wait().unwrap();
        child.id()
    };
    let stale = std::env::temp_dir().join(format!("switchyard-demo-{gone}"));
    std::fs::create_dir_all(stale.join("plugins")).unwrap();
    let (demo, url) = crate::demo();
    assert!(!stale.exists(), "{} is left behind", stale.display());
    let client = client();
    for _ in 0..50 {
        assert_eq!(crate::get(&client, &url).await.0, 200);
    }
    // The readout: "  N requests   upstream-1 (stable): n (p%)   …", once a
    // second while the total changes. The health checks (every second,
    // from the start) must not be in it.
    let total = |line: &str| -> u64 {
        line.split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    let last = demo.wait_for(
        |l| l.contains(" requests   upstream-1") && total(l) >= 50,
        "a readout of the 50 requests",
    );
    assert_eq!(total(&last), 50, "{last}");
    let counts: u64 = last
        .split("): ")
        .skip(1)
        .filter_map(|part| part.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(counts, 50, "the upstreams' counts: {last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_example_holds_a_flood_to_its_rate() {
    let ups = crate::upstreams(1);
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(&dir, &example("rate-limits.toml", &ups));
    let client = client();
    // Requests as fast as one client sends them: the burst of 40 passes,
    // and a client faster than 20 a second meets a 429 soon after.
    let mut served = 0;
    loop {
        let response = client
            .get(format!("{}/", proxy.url))
            .header("x-api-key", "sy_example-key-replace-me")
            .send()
            .await
            .unwrap();
        match response.status().as_u16() {
            200 => served += 1,
            429 => break,
            other => panic!("answered {other}"),
        }
        assert!(served < 2_000, "2,000 served and none refused");
    }
    assert!(served >= 40, "refused after {served}");
}
