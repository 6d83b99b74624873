//! Filter plugins (WIT 0.1.3) through a real `switchyard`: components built
//! from source (`plugins/api-version-router`, `plugins/mcp-redactor`,
//! `tests/fixtures/test-filter`) on pool routes with a real upstream and
//! reqwest, and on MCP routes with the official Python SDK's client and
//! FastMCP servers.

use serde_json::{Value, json};
use switchyard_tests::fixtures::{API_VERSION_ROUTER, CANARY_SPLIT, MCP_REDACTOR, TEST_FILTER};
use switchyard_tests::mcp::{McpServer, client as mcp_client};
use switchyard_tests::upstream::Upstream;

use crate::serve;

/// A config with one pool `p` over `upstream`, an admin API, `filters`
/// (TOML `[filters.*]` tables) and `routes` (TOML `[[routes]]` tables).
fn filtered(upstream: &Upstream, filters: &str, routes: &str) -> String {
    format!(
        "[[listeners]]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n{routes}\n\
         [pools.p]\ninstances = [{{ url = \"{}\" }}]\n{filters}",
        upstream.url()
    )
}

/// `[filters.NAME]` loading `path` with `config` (an inline TOML table)
/// and `extra` keys.
fn plugin_filter(name: &str, path: &str, config: &str, extra: &str) -> String {
    format!(
        "[filters.{name}]\nkind = \"plugin\"\nplugin = {{ path = \"{path}\", config = {config} }}\n{extra}\n"
    )
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    response.headers().get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_plugin_changes_requests_denies_some_and_replaces_failed_answers() {
    let upstream = Upstream::start("u0");
    let filters = plugin_filter(
        "tagger",
        TEST_FILTER,
        "{ request = \"tag\", replace_status = 500 }",
        "",
    ) + &plugin_filter("bouncer", TEST_FILTER, "{ request = \"deny\" }", "");
    let routes = r#"
[[routes]]
match = { path_prefix = "/tag" }
pool = "p"
filters = ["tagger"]
[[routes]]
match = { path_prefix = "/guarded" }
pool = "p"
filters = ["bouncer"]
"#;
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(&dir, &filtered(&upstream, &filters, routes));
    let client = crate::client();

    // A header change: set and removed before the upstream sees the request.
    let response = client
        .get(format!("{}/tag/x", proxy.url))
        .header("cookie", "secret=1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-seen-x-filtered"), Some("yes"));
    let seen_client = header(&response, "x-seen-x-client").unwrap_or_default();
    assert!(seen_client.starts_with("127.0.0.1:"), "{seen_client}");
    assert_eq!(header(&response, "x-seen-cookie"), None, "cookie removed");

    // A response replacement: the upstream's 500 and its body never reach
    // the client.
    upstream.set_status(500);
    upstream.set_body("Traceback (most recent call last): secret internals");
    let response = client
        .get(format!("{}/tag/x", proxy.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(
        response.text().await.unwrap(),
        r#"{"error":"upstream_failed"}"#
    );
    upstream.set_status(200);

    // A denial: answered by the plugin, the upstream not asked, published
    // as an event.
    let mut events = crate::follow_events(&proxy.admin_url(), "filter").await;
    let hits = upstream.hits();
    let response = client
        .get(format!("{}/guarded", proxy.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(response.text().await.unwrap(), "denied by test-filter\n");
    assert_eq!(upstream.hits(), hits);
    let seen = crate::read_events_until(&mut events, "filter_refused").await;
    assert!(
        seen.contains("filter bouncer refused a request of 127.0.0.1 with 403"),
        "{seen}"
    );
    let response = client
        .get(format!("{}/guarded", proxy.url))
        .header("x-pass", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(upstream.hits(), hits + 1);

    // Counted: the plugin's calls by filter, and the answer it gave itself.
    let metrics = client
        .get(format!("{}/metrics", proxy.admin_url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        r#"switchyard_plugin_calls_total{pool="filter bouncer",kind="filter"} "#,
        r#"switchyard_filter_answers_total{route="1",filter="bouncer",answer="plugin"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} in:\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_plugin_sees_the_first_bytes_of_bodies_and_the_whole_body_still_passes() {
    let upstream = Upstream::start("u0");
    let filters = plugin_filter(
        "peek",
        TEST_FILTER,
        "{ request = \"body\", request_body_bytes = 16, response_body_bytes = 8 }",
        "",
    );
    let routes = "[[routes]]\npool = \"p\"\nfilters = [\"peek\"]\n";
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(&dir, &filtered(&upstream, &filters, routes));
    let client = crate::client();

    // A body longer than asked: the plugin sees its first 16 bytes, the
    // upstream all of it (echoed back byte for byte), and the answer's
    // first 8 bytes are seen on the way back.
    let large: Vec<u8> = (0..100_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let response = client
        .post(format!("{}/upload", proxy.url))
        .body(large.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-seen-x-body-seen"), Some("16 false"));
    assert_eq!(header(&response, "x-response-body-seen"), Some("8 false"));
    assert_eq!(response.bytes().await.unwrap(), large);

    // A body shorter than asked is seen whole; so is no body.
    let response = client
        .post(format!("{}/upload", proxy.url))
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&response, "x-seen-x-body-seen"), Some("5 true"));
    assert_eq!(header(&response, "x-response-body-seen"), Some("5 true"));
    assert_eq!(response.text().await.unwrap(), "hello");
    let response = client.get(format!("{}/", proxy.url)).send().await.unwrap();
    assert_eq!(header(&response, "x-seen-x-body-seen"), Some("0 true"));

    // A refusal on what the body says, the word split across chunks of a
    // chunked body: the upstream is not asked.
    let hits = upstream.hits();
    let address = proxy.url.trim_start_matches("http://").to_string();
    let answer = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(&address).unwrap();
        let head = format!(
            "POST /upload HTTP/1.1\r\nhost: {address}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).unwrap();
        for chunk in ["a forb", "idden word", ", and more"] {
            stream
                .write_all(format!("{:x}\r\n{chunk}\r\n", chunk.len()).as_bytes())
                .unwrap();
            stream.flush().unwrap();
        }
        let _ = stream.write_all(b"0\r\n\r\n");
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer
    })
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(
        answer.ends_with("body refused by test-filter\n"),
        "{answer}"
    );
    assert_eq!(upstream.hits(), hits);

    // An answer whose first bytes the plugin refuses is replaced.
    upstream.set_body("secret internals");
    let response = client.get(format!("{}/", proxy.url)).send().await.unwrap();
    assert_eq!(response.status(), 502);
    assert_eq!(response.text().await.unwrap(), r#"{"error":"redacted"}"#);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_faulting_filter_plugin_costs_no_request_when_open_and_refuses_when_closed() {
    let upstream = Upstream::start("u0");
    let modes = ["panic", "loop", "alloc", "bad-header"];
    let mut filters = String::new();
    let mut routes = String::new();
    for mode in modes {
        for failure_mode in ["open", "closed"] {
            let name = format!("{mode}-{failure_mode}");
            filters += &plugin_filter(
                &name,
                TEST_FILTER,
                &format!("{{ request = \"{mode}\" }}"),
                &format!("failure_mode = \"{failure_mode}\""),
            );
            routes += &format!(
                "[[routes]]\nmatch = {{ path_prefix = \"/{name}\" }}\npool = \"p\"\nfilters = [\"{name}\"]\n"
            );
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(&dir, &filtered(&upstream, &filters, &routes));
    let client = crate::client();
    for mode in modes {
        // More requests than the quarantine's 5 faults: before and after
        // the plugin is set aside, the same answer.
        for _ in 0..7 {
            let response = client
                .get(format!("{}/{mode}-open", proxy.url))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "{mode} under open");
            assert_eq!(header(&response, "x-upstream"), Some("u0"));
            let response = client
                .get(format!("{}/{mode}-closed", proxy.url))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 503, "{mode} under closed");
            let body: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
            assert_eq!(body["error"], "filter_failed", "{body}");
            assert!(
                body["message"]
                    .as_str()
                    .is_some_and(|m| m.contains(&format!("`{mode}-closed`"))),
                "{body}"
            );
        }
    }
    assert_eq!(upstream.hits(), 7 * modes.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_version_router_sends_each_request_to_the_version_it_asks_for() {
    let upstream = Upstream::start("u0");
    let filters = plugin_filter(
        "versions",
        API_VERSION_ROUTER,
        r#"{ versions = { "1" = "/v1", "2" = "/v2" }, default = "1" }"#,
        "",
    );
    let routes = "[[routes]]\npool = \"p\"\nfilters = [\"versions\"]\n";
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(&dir, &filtered(&upstream, &filters, routes));
    let client = crate::client();
    for (asked, path, served) in [
        (None, "/v1/users?page=2", "1"),
        (Some("2"), "/v2/users?page=2", "2"),
        (Some(" 1 "), "/v1/users?page=2", "1"),
    ] {
        let mut request = client.get(format!("{}/users?page=2", proxy.url));
        if let Some(version) = asked {
            request = request.header("accept-version", version);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200, "{asked:?}");
        assert_eq!(header(&response, "x-upstream-path"), Some(path));
        assert_eq!(header(&response, "accept-version"), Some(served));
    }
    let response = client
        .get(format!("{}/users", proxy.url))
        .header("accept-version", "9")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    assert_eq!(body["error"], "unsupported_api_version");
    assert_eq!(body["supported"], json!(["1", "2"]));
}

#[test]
fn a_bad_filter_plugin_is_refused_naming_the_filter_and_the_reason() {
    let upstream = Upstream::start("u0");
    let routes = "[[routes]]\npool = \"p\"\nfilters = [\"f\"]\n";
    for (filter, reason) in [
        // A balancer is not a filter.
        (
            plugin_filter("f", CANARY_SPLIT, "{}", ""),
            "switchyard:plugin/filter@0.1.3",
        ),
        // The plugin's own refusal of its config.
        (
            plugin_filter(
                "f",
                API_VERSION_ROUTER,
                r#"{ versions = { "1" = "v1" } }"#,
                "",
            ),
            "versions.1: `v1` must start with `/`",
        ),
        (
            plugin_filter("f", TEST_FILTER, "{}", "failure_mode = \"ajar\""),
            "unknown variant `ajar`",
        ),
        // More of a body than a filter may see.
        (
            plugin_filter("f", TEST_FILTER, "{ request_body_bytes = 2000000 }", ""),
            "`request-body-bytes` 2000000 is over the most a filter may see, 1048576",
        ),
    ] {
        let stderr = crate::check_refused(&filtered(&upstream, &filter, routes));
        assert!(stderr.contains("filters.f"), "{stderr}");
        assert!(stderr.contains(reason), "{reason} in: {stderr}");
    }
}

#[test]
fn on_an_mcp_route_a_filter_plugin_denies_a_tool_rewrites_arguments_and_redacts_results() {
    // alpha answers with SSE streams, beta with JSON: both ways a result
    // comes back are judged.
    let alpha = McpServer::with(&[
        "--name",
        "alpha",
        "--answer",
        "call ops@example.com with key ghp_abcdefghijklmnopqrstuvwx",
    ]);
    let beta = McpServer::with(&[
        "--name",
        "beta",
        "--json",
        "--answer",
        "AKIAABCDEFGHIJKLMNOP is the key",
    ]);
    let filters = plugin_filter(
        "scrub-arguments",
        MCP_REDACTOR,
        r#"{ redact_arguments = true, redact_results = false, replacement = "[ARGUMENT]", deny_tools = ["alpha__calls"] }"#,
        "failure_mode = \"closed\"",
    ) + &plugin_filter("scrub-results", MCP_REDACTOR, "{}", "");
    let config = format!(
        "[[listeners]]\nlisten = \"127.0.0.1:0\"\n\
         [[routes]]\nmatch = {{ path_prefix = \"/mcp\" }}\nmcp = {{ targets = [\"alpha\", \"beta\"] }}\n\
         filters = [\"scrub-arguments\", \"scrub-results\"]\n\
         [pools.alpha]\ninstances = [{{ url = \"{}\" }}]\n\
         [pools.beta]\ninstances = [{{ url = \"{}\" }}]\n{filters}",
        alpha.url(),
        beta.url(),
    );
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(&dir, &config);
    let out = mcp_client(
        &format!("{}/mcp", proxy.url),
        &json!([
            { "op": "call", "tool": "alpha__answer" },
            { "op": "call", "tool": "beta__answer" },
            { "op": "call", "tool": "alpha__echo", "args": { "text": "token sk-abcdefghijklmnop1234 here" } },
            { "op": "call", "tool": "beta__echo", "args": { "text": "mail me: ann@example.org" } },
            { "op": "call", "tool": "alpha__calls" },
            { "op": "call", "tool": "beta__calls" },
        ]),
    );
    // Results redacted: the client never sees the secrets the servers sent.
    assert_eq!(
        out[0]["text"], "call [REDACTED] with key [REDACTED]",
        "{out:?}"
    );
    assert_eq!(out[1]["text"], "[REDACTED] is the key", "{out:?}");
    // Arguments rewritten: the servers echo what they received.
    assert_eq!(out[2]["text"], "alpha: token [ARGUMENT] here", "{out:?}");
    assert_eq!(out[3]["text"], "beta: mail me: [ARGUMENT]", "{out:?}");
    // A denied tool: the client sees the JSON-RPC error, the server was
    // not asked (beta counts its echo; alpha's count was never asked).
    let denied = out[4]["exception"].as_str().unwrap_or_default();
    assert!(
        denied.contains("tool `alpha__calls` is not allowed through this gateway"),
        "{out:?}"
    );
    assert_eq!(out[5]["text"], "1", "{out:?}");
}

#[test]
fn on_an_mcp_route_a_faulting_filter_plugin_lets_calls_through_when_open_and_refuses_them_when_closed()
 {
    let server = McpServer::with(&["--name", "solo"]);
    let mut filters = String::new();
    let mut routes = String::new();
    for mode in ["open", "closed"] {
        filters += &plugin_filter(
            mode,
            TEST_FILTER,
            "{ trap_mcp_calls = true }",
            &format!("failure_mode = \"{mode}\""),
        );
        // `/open/mcp` and `/closed/mcp` reach the server's `/mcp`.
        filters +=
            &format!("[filters.strip-{mode}]\nkind = \"strip-prefix\"\nprefix = \"/{mode}\"\n");
        routes += &format!(
            "[[routes]]\nmatch = {{ path_prefix = \"/{mode}\" }}\nmcp = {{ targets = [\"solo\"] }}\nfilters = [\"strip-{mode}\", \"{mode}\"]\n"
        );
    }
    let config = format!(
        "[[listeners]]\nlisten = \"127.0.0.1:0\"\n{routes}\
         [pools.solo]\ninstances = [{{ url = \"{}\" }}]\n{filters}",
        server.url()
    );
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(&dir, &config);
    let steps = json!([{ "op": "call", "tool": "echo", "args": { "text": "hi" } }]);
    let open = mcp_client(&format!("{}/open/mcp", proxy.url), &steps);
    assert_eq!(open[0]["text"], "solo: hi", "{open:?}");
    let closed = mcp_client(&format!("{}/closed/mcp", proxy.url), &steps);
    let refused = closed[0]["exception"].as_str().unwrap_or_default();
    assert!(
        refused.contains("filter `closed` failed") && refused.contains("failure_mode is closed"),
        "{closed:?}"
    );
}
