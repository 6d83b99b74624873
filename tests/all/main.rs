//! Integration tests: a real `switchyard` process, real upstream servers on
//! loopback ephemeral ports, real `.wasm` components built from source.
//! One binary, one module per topic.

mod admin;
mod auth;
mod authorize;
mod balancing;
mod config;
pub mod dashboard;
mod discovery;
mod examples;
mod failover;
mod filter_plugins;
mod filters;
mod forward_auth;
mod fusion;
mod hardening;
mod harness;
mod health;
mod http2;
mod mcp;
mod oidc;
mod openapi;
mod plugins;
mod polyglot;
mod processes;
mod proxying;
mod rate_limit;
mod replicas;
mod resilience;
mod state;
mod tls;

use std::time::{Duration, Instant};

use switchyard_tests::process::{Switchyard, write_config};
use switchyard_tests::upstream::Upstream;

/// The `switchyard` binary under test.
pub const BINARY: &str = env!("CARGO_BIN_EXE_switchyard");

/// Starts `switchyard` on `toml` written into `dir`.
pub fn serve(dir: &tempfile::TempDir, toml: &str) -> Switchyard {
    Switchyard::serve(BINARY, &write_config(dir.path(), toml))
}

/// `switchyard check` of `toml`: it must refuse it; returns what it
/// printed on stderr (the file, key and reason).
pub fn check_refused(toml: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), toml);
    let output = std::process::Command::new(BINARY)
        .arg("check")
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "accepted: {stderr}");
    stderr
}

/// `switchyard check` of a config whose one route goes through filter
/// `name` of `kind` with `settings` (TOML lines of its table): it must be
/// refused naming `key` and `reason`.
pub fn assert_filter_refused(name: &str, kind: &str, settings: &str, key: &str, reason: &str) {
    let stderr = check_refused(&format!(
        "[[listeners]]\nlisten = \"127.0.0.1:0\"\n[[routes]]\npool = \"p\"\nfilters = [\"{name}\"]\n\
         [pools.p]\ninstances = [{{ url = \"http://127.0.0.1:9\" }}]\n\
         [filters.{name}]\nkind = \"{kind}\"\n{settings}\n"
    ));
    assert!(stderr.contains(key), "{key} in: {stderr}");
    assert!(stderr.contains(reason), "{reason} in: {stderr}");
}

/// The first TOML snippet of README.md after `marker`.
pub fn readme_snippet(marker: &str) -> String {
    let readme = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"),
    )
    .unwrap();
    readme
        .split(marker)
        .nth(1)
        .and_then(|s| s.split("```toml\n").nth(1))
        .and_then(|s| s.split("```").next())
        .unwrap_or_else(|| panic!("README has no TOML snippet after {marker}"))
        .to_string()
}

/// A running `switchyard demo` (listener and admin API on ephemeral
/// ports) and the URL it prints for its listener.
pub fn demo() -> (Switchyard, String) {
    let demo = Switchyard::run(
        BINARY,
        &["demo", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"],
    );
    let url = demo
        .wait_for_log("URL:")
        .split("URL:")
        .nth(1)
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    (demo, url)
}

/// `n` upstreams named `u0`, `u1`, ….
pub fn upstreams(n: usize) -> Vec<Upstream> {
    (0..n).map(|i| Upstream::start(&format!("u{i}"))).collect()
}

/// The `instances = [...]` TOML array of `upstreams`.
pub fn instances(upstreams: &[Upstream]) -> String {
    let items: Vec<String> = upstreams
        .iter()
        .map(|u| format!("{{ url = \"{}\" }}", u.url()))
        .collect();
    format!("[{}]", items.join(", "))
}

/// A config: one listener on an ephemeral port, one catch-all route, and
/// pool `p` with `strategy` (a TOML inline table) over `instances` (a TOML array).
pub fn single_pool(strategy: &str, instances: &str) -> String {
    format!(
        "[[listeners]]\nlisten = \"127.0.0.1:0\"\n[[routes]]\npool = \"p\"\n\
         [pools.p]\nstrategy = {strategy}\ninstances = {instances}\n"
    )
}

/// A blocking-free HTTP/1.1 client with a generous timeout.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(60))
        .build()
        .expect("client")
}

/// GETs `url` and returns (status, body).
pub async fn get(client: &reqwest::Client, url: &str) -> (u16, String) {
    let response = client.get(url).send().await.expect("request");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

/// Sends `method` to the admin API at `url` with an optional JSON body;
/// returns (status, the JSON answer or `null`).
pub async fn admin(
    method: reqwest::Method,
    url: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let mut request = client().request(method, url);
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let response = request.send().await.expect("admin request");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    )
}

/// The server-sent events of kinds `kinds` (comma-separated, e.g.
/// `health,config`) of the admin API at `api`, once the stream is open.
pub async fn follow_events(api: &str, kinds: &str) -> reqwest::Response {
    client()
        .get(format!("{api}/v1/events?kind={kinds}"))
        .send()
        .await
        .expect("the event stream opens")
}

/// Reads a server-sent-events response until its text contains `needle`
/// (within a generous bound); returns what was read.
pub async fn read_events_until(stream: &mut reqwest::Response, needle: &str) -> String {
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !seen.contains(needle) {
        assert!(
            Instant::now() < deadline,
            "no `{needle}` event; got {seen:?}"
        );
        match tokio::time::timeout(Duration::from_secs(60), stream.chunk()).await {
            Ok(Ok(Some(chunk))) => seen.push_str(&String::from_utf8_lossy(&chunk)),
            other => panic!("stream ended: {other:?}; got {seen:?}"),
        }
    }
    seen
}
