//! MCP routes against real MCP servers and a real MCP client (the official
//! Python SDK: FastMCP servers, `ClientSession`; `tests/src/mcp.rs`).

use serde_json::{Value, json};
use switchyard_tests::mcp::{McpServer, client};

use crate::serve;

/// A config with an MCP route at `/mcp` over `targets` (TOML array), extra
/// route keys `route`, and `pools` (TOML tables).
fn mcp_config(targets: &str, route: &str, pools: &str) -> String {
    format!(
        "[[listeners]]\nlisten = \"127.0.0.1:0\"\n\
         [[routes]]\nmatch = {{ path_prefix = \"/mcp\" }}\nmcp = {{ targets = {targets}{route} }}\n{pools}"
    )
}

/// `[pools.NAME]` over `servers`.
fn pool(name: &str, servers: &[&McpServer]) -> String {
    let list: Vec<String> = servers
        .iter()
        .map(|s| format!("{{ url = \"{}\" }}", s.url()))
        .collect();
    format!("[pools.{name}]\ninstances = [{}]\n", list.join(", "))
}

fn text(v: &Value) -> &str {
    v["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no text in {v}"))
}

#[test]
fn two_stateful_servers_federate_with_a_clashing_tool_name() {
    // Both answer with SSE streams (FastMCP's default); alpha pages its
    // tools two at a time.
    let alpha = McpServer::with(&["--name", "alpha", "--page-size", "2"]);
    let beta = McpServer::with(&["--name", "beta"]);
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(
        &dir,
        &mcp_config(
            "[\"alpha\", \"beta\"]",
            "",
            &(pool("alpha", &[&alpha]) + &pool("beta", &[&beta])),
        ),
    );
    let out = client(
        &format!("{}/mcp", proxy.url),
        &json!([
            { "op": "tools" },
            { "op": "page" },
            { "op": "call", "tool": "alpha__echo", "args": { "text": "hi" } },
            { "op": "call", "tool": "beta__echo", "args": { "text": "hi" } },
            { "op": "call", "tool": "beta__echo", "args": { "text": "again" } },
            { "op": "call", "tool": "beta_only" },
            { "op": "call", "tool": "alpha__calls" },
            { "op": "call", "tool": "beta__calls" },
            { "op": "call", "tool": "echo", "args": { "text": "which?" } },
            { "op": "call", "tool": "beta__ask_client", "args": { "question": "ok?" } },
            { "op": "instructions" },
            { "op": "session" },
        ]),
    );
    // The union of both lists, every page of alpha's, the clashing names
    // prefixed, the others not.
    let mut names: Vec<&str> = out[0]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    names.sort_unstable();
    let mut expected = Vec::new();
    for server in ["alpha", "beta"] {
        expected.push(format!("{server}_only"));
        for tool in [
            "answer",
            "ask_client",
            "calls",
            "echo",
            "lookup",
            "peak",
            "record",
            "slow",
        ] {
            expected.push(format!("{server}__{tool}"));
        }
    }
    expected.sort_unstable();
    assert_eq!(names, expected);
    // A first page holds alpha's first two tools and all of beta's, and a
    // composite cursor for the rest of alpha's.
    let first = &out[1];
    assert_eq!(first["names"].as_array().unwrap().len(), 2 + 9, "{first}");
    assert!(first["next"].is_string(), "{first}");
    // Each call ran once, on its owner, the prefix removed.
    assert_eq!(text(&out[2]), "alpha: hi");
    assert_eq!(text(&out[3]), "beta: hi");
    assert_eq!(text(&out[4]), "beta: again");
    assert_eq!(text(&out[5]), "beta");
    assert_eq!(text(&out[6]), "1");
    assert_eq!(text(&out[7]), "2");
    // The unprefixed clashing name is no tool of the gateway's.
    assert!(
        out[8]["exception"]
            .as_str()
            .is_some_and(|e| e.contains("unknown tool"))
            || out[8]["error"] == json!(true),
        "{}",
        out[8]
    );
    // beta's sampling request reached the client and its answer beta.
    assert_eq!(text(&out[9]), "beta heard: yes from the client");
    let instructions = out[10].as_str().unwrap();
    assert!(
        instructions.contains("## alpha\nthe alpha server") && instructions.contains("## beta"),
        "{instructions}"
    );
    // The gateway's own sealed session id, not a server's.
    let session = out[11].as_str().unwrap();
    assert!(session.len() > 100, "{session}");
}

/// A JSON-RPC exchange over the streamable HTTP transport, by hand: the
/// HTTP status, the `Mcp-Session-Id` answered, and the JSON-RPC message (a
/// JSON body or the last message of an SSE body).
async fn post(url: &str, session: Option<&str>, message: Value) -> (u16, Option<String>, Value) {
    let mut request = crate::client()
        .post(url)
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .body(message.to_string());
    if let Some(s) = session {
        request = request.header("mcp-session-id", s);
    }
    let response = request.send().await.expect("the gateway answers");
    let status = response.status().as_u16();
    let id = response
        .headers()
        .get("mcp-session-id")
        .map(|v| v.to_str().unwrap().to_string());
    let sse = response
        .headers()
        .get("content-type")
        .is_some_and(|v| v.to_str().unwrap().starts_with("text/event-stream"));
    let body = response.text().await.unwrap();
    let message = if sse {
        body.lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .next_back()
            .map_or(Value::Null, |d| serde_json::from_str(d).unwrap())
    } else if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{body}: {e}"))
    };
    (status, id, message)
}

/// Opens a session at `url`: `initialize`, then `notifications/initialized`.
async fn initialize(url: &str) -> String {
    let (status, session, _) = post(
        url,
        None,
        json!({ "jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": { "name": "test", "version": "1" } } }),
    )
    .await;
    assert_eq!(status, 200);
    let session = session.expect("a session id");
    let (status, _, _) = post(
        url,
        Some(&session),
        json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }),
    )
    .await;
    assert_eq!(status, 202);
    session
}

/// `tools/call` of `echo` in `session`: the status and the message.
async fn echo(url: &str, session: &str, text: &str) -> (u16, Value) {
    let (status, _, message) = post(
        url,
        Some(session),
        json!({ "jsonrpc": "2.0", "id": 2, "method": "tools/call",
                "params": { "name": "echo", "arguments": { "text": text } } }),
    )
    .await;
    (status, message)
}

fn echoed(message: &Value) -> &str {
    message["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no echo in {message}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_survives_a_new_instance_a_restart_and_another_switchyard() {
    let mut s1 = McpServer::with(&["--name", "s1"]);
    let s2 = McpServer::with(&["--name", "s2"]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("keys"),
        format!("# test key\n{}\n", "ab".repeat(32)),
    )
    .unwrap();
    let config = format!(
        "[mcp_sessions]\nkey_file = \"keys\"\n[admin]\nlisten = \"127.0.0.1:0\"\n{}",
        mcp_config("[\"docs\"]", "", &pool("docs", &[&s1]))
    );
    let mut first = serve(&dir, &config);
    let url = format!("{}/mcp", first.url);
    let session = initialize(&url).await;
    let (status, message) = echo(&url, &session, "one").await;
    assert_eq!((status, echoed(&message)), (200, "s1: one"));

    // An instance added through the admin API takes new sessions; this
    // one stays where it is.
    let (status, body) = crate::admin(
        reqwest::Method::POST,
        &format!("{}/v1/pools/docs/instances", first.admin_url()),
        Some(json!({ "url": s2.url() })),
    )
    .await;
    assert!((200..300).contains(&status), "{status} {body}");
    // The route kept what it learned of the tools (the echo above listed
    // them), as its pool kept its instance.
    let (_, status) = crate::admin(
        reqwest::Method::GET,
        &format!("{}/v1/status", first.admin_url()),
        None,
    )
    .await;
    let route = &status["mcp_routes"][0];
    assert_eq!(
        route["targets"],
        json!([{ "name": "docs", "pool": "docs" }]),
        "{route}"
    );
    assert_eq!(route["sessions"], json!(1), "{route}");
    assert!(
        route["tools"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "echo"),
        "{route}"
    );

    for _ in 0..4 {
        let (status, message) = echo(&url, &session, "two").await;
        assert_eq!((status, echoed(&message)), (200, "s1: two"));
    }

    // Switchyard restarted (the admin change is in its state file), and a
    // second Switchyard with the same key: the session is served by both.
    first.kill_hard();
    let restarted = serve(&dir, &config);
    let other_dir = tempfile::tempdir().unwrap();
    std::fs::copy(dir.path().join("keys"), other_dir.path().join("keys")).unwrap();
    let other = serve(&other_dir, &config);
    for proxy in [&restarted, &other] {
        let (status, message) = echo(&format!("{}/mcp", proxy.url), &session, "three").await;
        assert_eq!((status, echoed(&message)), (200, "s1: three"));
    }

    // The instance that holds the session stops: the client is told to
    // initialize again (404, JSON-RPC error), and a new session works.
    s1.stop();
    let url = format!("{}/mcp", restarted.url);
    let (status, message) = echo(&url, &session, "four").await;
    assert_eq!(status, 404, "{message}");
    assert_eq!(message["error"]["code"], json!(-32001), "{message}");
    assert!(
        message["error"]["message"]
            .as_str()
            .unwrap()
            .contains("initialize"),
        "{message}"
    );
    let fresh = initialize(&url).await;
    let (status, message) = echo(&url, &fresh, "five").await;
    assert_eq!((status, echoed(&message)), (200, "s2: five"));
    // A session id no key opens is unknown.
    let (status, _) = echo(&url, "forged", "six").await;
    assert_eq!(status, 404);
}

#[test]
fn a_read_only_tool_is_fused_by_majority_over_three_instances_with_one_wrong() {
    let right = [
        McpServer::with(&["--name", "r1", "--answer", "42"]),
        McpServer::with(&["--name", "r2", "--answer", "42"]),
    ];
    let wrong = McpServer::with(&["--name", "w", "--answer", "41"]);
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(
        &dir,
        &mcp_config(
            "[\"calc\"]",
            ", tools = { answer = { fuse = { count = 3, resolver = { kind = \"majority\" } } } }",
            &pool("calc", &[&right[0], &wrong, &right[1]]),
        ),
    );
    let url = format!("{}/mcp", proxy.url);
    // Whichever instance holds the client's session, the majority wins.
    let steps: Vec<Value> = (0..4)
        .map(|_| json!({ "op": "call", "tool": "answer" }))
        .collect();
    for _ in 0..3 {
        for answer in client(&url, &Value::Array(steps.clone())) {
            assert_eq!(text(&answer), "42", "{answer}");
            // Asked of all three; the two that agree were used.
            let fusion = &answer["meta"]["io.switchyard/fusion"];
            assert_eq!(
                fusion["asked"].as_array().map(Vec::len),
                Some(3),
                "{answer}"
            );
            let used = fusion["used"].as_array().unwrap();
            assert_eq!(used.len(), 2, "{answer}");
            assert!(!used.contains(&json!(wrong.url())), "{answer}");
        }
    }
}

#[test]
fn a_tool_call_is_retried_only_when_the_tool_is_idempotent() {
    // Three session-less instances that share a log: the first call of a
    // tag ends the process that serves it before it answers. Two retries:
    // the instance `record` ended may take one (a connect failure is an
    // attempt, as on a pool route).
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("calls.log");
    let log = log.to_str().unwrap();
    let servers = [
        McpServer::with(&["--name", "a", "--stateless", "--log", log]),
        McpServer::with(&["--name", "b", "--stateless", "--log", log]),
        McpServer::with(&["--name", "c", "--stateless", "--log", log]),
    ];
    let pools = format!(
        "{}retry = {{ retries = 2 }}\n",
        pool("ops", &[&servers[0], &servers[1], &servers[2]])
    );
    let proxy = serve(&dir, &mcp_config("[\"ops\"]", "", &pools));
    let out = client(
        &format!("{}/mcp", proxy.url),
        &json!([
            { "op": "call", "tool": "record", "args": { "tag": "launch" } },
            { "op": "call", "tool": "lookup", "args": { "tag": "status" } },
        ]),
    );
    let lines = std::fs::read_to_string(log).unwrap();
    let ran = |tag: &str| {
        lines
            .lines()
            .filter(|l| l.ends_with(&format!(" {tag}")))
            .count()
    };
    // `record` (no annotation: not idempotent) ran once and failed: its
    // instance died with it, and it was not sent again.
    assert_eq!(ran("launch"), 1, "{lines}");
    assert!(
        out[0]["error"] == json!(true) || out[0]["exception"].is_string(),
        "{}",
        out[0]
    );
    // `lookup` (readOnlyHint) was sent again, to another instance.
    assert_eq!(ran("status"), 2, "{lines}");
    assert!(text(&out[1]).ends_with("did status"), "{}", out[1]);
}

#[test]
fn the_typescript_reference_server_federates_with_a_python_one() {
    let py = McpServer::with(&["--name", "py", "--json"]);
    let ts = switchyard_tests::mcp::Everything::start();
    let dir = tempfile::tempdir().unwrap();
    let pools = format!(
        "[pools.py]\ninstances = [{{ url = \"{}\" }}]\n[pools.ts]\ninstances = [{{ url = \"{}\" }}]\n",
        py.url(),
        ts.url()
    );
    let proxy = serve(
        &dir,
        &mcp_config("[\"py\", { pool = \"ts\", path = \"/mcp\" }]", "", &pools),
    );
    let out = client(
        &format!("{}/mcp", proxy.url),
        &json!([
            { "op": "tools" },
            { "op": "call", "tool": "ts__echo", "args": { "message": "hi" } },
            { "op": "call", "tool": "py__echo", "args": { "text": "hi" } },
            { "op": "call", "tool": "get-sum", "args": { "a": 2, "b": 3 } },
            { "op": "call", "tool": "trigger-sampling-request", "args": { "prompt": "hello", "maxTokens": 5 } },
            { "op": "resources" },
            { "op": "read", "uri": "demo://resource/dynamic/text/1" },
        ]),
    );
    let tools: Vec<&str> = out[0]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for tool in [
        "py__echo",
        "ts__echo",
        "get-sum",
        "trigger-sampling-request",
        "py_only",
    ] {
        assert!(tools.contains(&tool), "{tool} not in {tools:?}");
    }
    assert_eq!(text(&out[1]), "Echo: hi");
    assert_eq!(text(&out[2]), "py: hi");
    assert!(text(&out[3]).contains('5'), "{}", out[3]);
    // The server's sampling request went to the client over the gateway.
    assert!(text(&out[4]).contains("yes from the client"), "{}", out[4]);
    let resources = out[5].as_array().unwrap();
    assert!(
        resources
            .iter()
            .any(|r| r.as_str().unwrap().starts_with("demo://resource/static/")),
        "{resources:?}"
    );
    // A URI of one of its templates reaches it.
    assert!(!out[6].as_str().unwrap().is_empty(), "{}", out[6]);
}

#[test]
fn a_client_of_the_2026_revision_discovers_and_calls_without_a_session() {
    let (m1, m2) = (McpServer::modern("m1"), McpServer::modern("m2"));
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(
        &dir,
        &mcp_config(
            "[\"m1\", \"m2\"]",
            "",
            &(pool("m1", &[&m1]) + &pool("m2", &[&m2])),
        ),
    );
    let out = switchyard_tests::mcp::modern_client(
        &format!("{}/mcp", proxy.url),
        &json!([
            { "op": "version" },
            { "op": "tools" },
            { "op": "call", "tool": "m2__echo", "args": { "text": "hi" } },
            { "op": "call", "tool": "m1_only" },
        ]),
    );
    // server/discover answered by the gateway: the client chose 2026-07-28
    // (no session, Mcp-Method/Mcp-Name on every request, checked by the
    // servers against the renamed body).
    assert_eq!(out[0], json!("2026-07-28"));
    let mut tools: Vec<&str> = out[1]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    tools.sort_unstable();
    assert_eq!(tools, ["m1__echo", "m1_only", "m2__echo", "m2_only"]);
    assert_eq!(text(&out[2]), "m2: hi");
    assert_eq!(text(&out[3]), "m1");
}

#[test]
fn a_balancer_plugin_routes_a_tool_by_the_mcp_name_header() {
    // label-affinity reads `mcp-name`, which the gateway sets (as the
    // 2026-07-28 revision does) for every revision: calls of `answer` go
    // to the instance labelled for it, the others anywhere.
    let small = McpServer::with(&["--name", "small", "--stateless", "--answer", "small"]);
    let big = McpServer::with(&["--name", "big", "--stateless", "--answer", "big"]);
    let dir = tempfile::tempdir().unwrap();
    let pools = format!(
        "[pools.tools]\nstrategy = {{ kind = \"plugin\", plugin = {{ path = \"{}\", config = {{ header = \"mcp-name\", label = \"tool\" }}, call_deadline_ms = 1000 }} }}\n\
         instances = [{{ url = \"{}\", labels = {{ tool = \"none\" }} }}, {{ url = \"{}\", labels = {{ tool = \"answer\" }} }}]\n",
        switchyard_tests::fixtures::LABEL_AFFINITY,
        small.url(),
        big.url()
    );
    let proxy = serve(&dir, &mcp_config("[\"tools\"]", "", &pools));
    let mut steps = Vec::new();
    for _ in 0..4 {
        steps.push(json!({ "op": "call", "tool": "answer" }));
        steps.push(json!({ "op": "call", "tool": "echo", "args": { "text": "x" } }));
    }
    let out = client(&format!("{}/mcp", proxy.url), &Value::Array(steps));
    let answers: Vec<&str> = out.iter().step_by(2).map(text).collect();
    assert_eq!(answers, ["big"; 4]);
    let echoes: Vec<&str> = out.iter().skip(1).step_by(2).map(text).collect();
    assert!(echoes.contains(&"small: x"), "{echoes:?}");
}

#[test]
fn a_long_tool_call_is_bounded_by_the_idle_timeout_not_the_pools_request_timeout() {
    // JSON answers: the head comes when the tool is done.
    let server = McpServer::with(&["--name", "s", "--json"]);
    let dir = tempfile::tempdir().unwrap();
    let pools = format!(
        "[pools.s]\nrequest_timeout_ms = 300\ninstances = [{{ url = \"{}\" }}]\n",
        server.url()
    );
    let patient = serve(&dir, &mcp_config("[\"s\"]", "", &pools));
    let out = client(
        &format!("{}/mcp", patient.url),
        &json!([{ "op": "call", "tool": "slow", "args": { "seconds": 1.0 } }]),
    );
    assert_eq!(text(&out[0]), "s slept");
    let other = tempfile::tempdir().unwrap();
    let strict = serve(
        &other,
        &mcp_config("[\"s\"]", ", idle_timeout_ms = 200", &pools),
    );
    let out = client(
        &format!("{}/mcp", strict.url),
        &json!([{ "op": "call", "tool": "slow", "args": { "seconds": 3.0 } }]),
    );
    let failed = out[0].to_string();
    assert!(failed.contains("did not answer in time"), "{failed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_target_is_left_out_when_open_and_named_when_closed() {
    let up = McpServer::with(&["--name", "up"]);
    let down = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let pools = format!(
        "{}[pools.down]\ninstances = [{{ url = \"{down}\" }}]\n",
        pool("up", &[&up])
    );
    let dir = tempfile::tempdir().unwrap();
    let open = serve(&dir, &mcp_config("[\"up\", \"down\"]", "", &pools));
    let url = format!("{}/mcp", open.url);
    let session = initialize(&url).await;
    let (status, _, listed) = post(
        &url,
        Some(&session),
        json!({ "jsonrpc": "2.0", "id": 3, "method": "tools/list" }),
    )
    .await;
    assert_eq!(status, 200);
    let tools = listed["result"]["tools"].as_array().unwrap();
    assert!(tools.iter().any(|t| t["name"] == "up_only"), "{listed}");
    let (_, _, hello) = post(
        &url,
        None,
        json!({ "jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": { "name": "test", "version": "1" } } }),
    )
    .await;
    let targets = &hello["result"]["_meta"]["io.switchyard/targets"];
    assert_eq!(targets["up"]["ok"], json!(true), "{hello}");
    assert_eq!(targets["down"]["ok"], json!(false), "{hello}");
    open.wait_for_log("MCP target `down` left out");

    let other = tempfile::tempdir().unwrap();
    let closed = serve(
        &other,
        &mcp_config("[\"up\", \"down\"]", ", failure_mode = \"closed\"", &pools),
    );
    let (status, session, refused) = post(
        &format!("{}/mcp", closed.url),
        None,
        json!({ "jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": { "name": "test", "version": "1" } } }),
    )
    .await;
    assert_eq!((status, session), (200, None));
    assert_eq!(
        refused["error"]["data"]["targets"],
        json!(["down"]),
        "{refused}"
    );
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("target `down`"),
        "{refused}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_opens_the_notification_stream_and_delete_ends_the_session() {
    let server = McpServer::with(&["--name", "s"]);
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(&dir, &mcp_config("[\"s\"]", "", &pool("s", &[&server])));
    let url = format!("{}/mcp", proxy.url);
    let session = initialize(&url).await;
    let stream = crate::client()
        .get(&url)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    drop(stream);
    let ended = crate::client()
        .delete(&url)
        .header("mcp-session-id", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(ended.status(), 200);
    let (status, message) = echo(&url, &session, "after").await;
    assert_eq!(status, 404, "{message}");
    // The server's session ended too: a new one is needed there as well.
    let fresh = initialize(&url).await;
    let (status, message) = echo(&url, &fresh, "new").await;
    assert_eq!((status, echoed(&message)), (200, "s: new"));
}

#[test]
fn mcp_config_errors_name_the_key() {
    use std::path::Path;
    use switchyard::config::Config;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("short-key"), "abcd\n").unwrap();
    let base = "[[listeners]]\nlisten = \"127.0.0.1:0\"\n[pools.a]\ninstances = [{ url = \"http://127.0.0.1:1\" }]\n";
    for (extra, key, reason) in [
        (
            "[[routes]]\nmcp = { targets = [] }",
            "routes[0].mcp.targets",
            "at least one",
        ),
        (
            "[[routes]]\nmcp = { targets = [\"b\"] }",
            "routes[0].mcp.targets[0].pool",
            "unknown pool `b`",
        ),
        (
            "[[routes]]\nmcp = { targets = [\"a\", { pool = \"a\" }] }",
            "routes[0].mcp.targets[1].name",
            "names two targets",
        ),
        (
            "[[routes]]\nmcp = { targets = [{ pool = \"a\", name = \"a b\" }] }",
            "routes[0].mcp.targets[0].name",
            "A-Z a-z 0-9",
        ),
        (
            "[[routes]]\nmcp = { targets = [\"a\"], separator = \"\" }",
            "routes[0].mcp.separator",
            "1..=8",
        ),
        (
            "[[routes]]\nmcp = { targets = [\"a\"], call_timeout_ms = 0 }",
            "call_timeout_ms",
            "out of range",
        ),
        (
            "[[routes]]\nmcp = { targets = [\"a\"], tools = { t = { idempotent = false, fuse = { count = 3, resolver = { kind = \"majority\" } } } } }",
            "routes[0].mcp.tools.t.fuse",
            "never fanned out",
        ),
        (
            "[[routes]]\npool = \"a\"\nmcp = { targets = [\"a\"] }",
            "routes[0].pool",
            "exactly one of `pool`, `fan_out` and `mcp`",
        ),
        (
            "[mcp_sessions]\nkey_file = \"short-key\"",
            "mcp_sessions.key_file",
            "3 bytes; an AES-256 key is 32",
        ),
    ] {
        let text = format!("{base}{extra}\n");
        let err = Config::parse(
            &text,
            Path::new("f.toml"),
            dir.path(),
            &switchyard::loaders::Loaders,
        )
        .expect_err(extra)
        .to_string();
        assert!(err.contains(key), "{key}: {err}");
        assert!(err.contains(reason), "{reason}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pools_bulkhead_bounds_its_mcp_calls_and_fan_outs_alike() {
    // Answers as event streams: a call holds its slot until its stream ends.
    let server = McpServer::with(&["--name", "s"]);
    let dir = tempfile::tempdir().unwrap();
    let toml = mcp_config(
        "[\"s\"]",
        "",
        &format!(
            "[[routes]]\nmatch = {{ path_prefix = \"/fan\" }}\n[routes.fan_out]\nsources = [{{ pool = \"s\" }}]\nresolver = {{ kind = \"first-success\" }}\n\
             [admin]\nlisten = \"127.0.0.1:0\"\n{}bulkhead = {{ max_concurrent = 2, max_queue = 0 }}\n",
            pool("s", &[&server])
        ),
    );
    let proxy = serve(&dir, &toml);
    let url = format!("{}/mcp", proxy.url);
    let session = initialize(&url).await;
    // The catalog learned (one call), so that only the slow calls below
    // hold the bulkhead's slots.
    assert_eq!(echoed(&echo(&url, &session, "warm").await.1), "s: warm");
    // Calls in flight at once in one session: each its own JSON-RPC id.
    let call = |id: u64, tool: &'static str, arguments: Value| {
        let (url, session) = (url.clone(), session.clone());
        async move {
            post(
                &url,
                Some(&session),
                json!({ "jsonrpc": "2.0", "id": id, "method": "tools/call",
                        "params": { "name": tool, "arguments": arguments } }),
            )
            .await
        }
    };
    // Six clients call a 3-second tool at once.
    let calls: Vec<_> = (0..6)
        .map(|id| tokio::spawn(call(10 + id, "slow", json!({ "seconds": 3.0 }))))
        .collect();
    // While the slots are taken, a fan-out to the same pool is shed too,
    // with the same reason.
    let status = format!("{}/v1/status", proxy.admin_url());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (_, now) = crate::admin(reqwest::Method::GET, &status, None).await;
        if now["pools"][0]["bulkhead"]["active"] == 2 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{now}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let (fan_status, fan_body) = crate::get(&crate::client(), &format!("{}/fan", proxy.url)).await;
    assert_ne!(fan_status, 200, "{fan_body}");
    assert!(
        fan_body.contains("pool `s` is at capacity: the queue is full"),
        "{fan_body}"
    );
    let mut slept = 0;
    let mut shed = 0;
    for call in calls {
        let (_, _, message) = call.await.unwrap();
        let said = message.to_string();
        if said.contains("s slept") {
            slept += 1;
        } else {
            assert!(
                said.contains("pool `s` is at capacity: the queue is full"),
                "{said}"
            );
            shed += 1;
        }
    }
    assert!(slept >= 1 && shed >= 1, "{slept} ran, {shed} shed");
    // The server never ran more than the bulkhead's 2 at once.
    let (_, _, peak) = call(20, "peak", json!({})).await;
    let peak: u64 = peak["result"]["content"][0]["text"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("{peak}"));
    assert!((1..=2).contains(&peak), "{peak} slow calls at once");
}

#[test]
fn a_failover_plugin_on_an_mcp_pool_decides_the_retries_of_idempotent_calls() {
    // As above: session-less instances sharing a log, each dying on the
    // first call of a tag. The pool's failover is the retry-schedule
    // plugin: its schedule, not the gateway's own rule, decides.
    let run = |delays_ms: &str, steps: Value| {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("calls.log");
        let log = log.to_str().unwrap().to_string();
        let servers: Vec<McpServer> = ["a", "b", "c"]
            .iter()
            .map(|name| McpServer::with(&["--name", name, "--stateless", "--log", &log]))
            .collect();
        let pools = format!(
            "{}failover = {{ kind = \"plugin\", plugin = {{ path = \"{}\", config = {{ delays_ms = {delays_ms} }}, call_deadline_ms = 1000 }} }}\n",
            pool("ops", &servers.iter().collect::<Vec<_>>()),
            switchyard_tests::fixtures::RETRY_SCHEDULE
        );
        let proxy = serve(&dir, &mcp_config("[\"ops\"]", "", &pools));
        let out = client(&format!("{}/mcp", proxy.url), &steps);
        let lines = std::fs::read_to_string(&log).unwrap_or_default();
        (out, lines)
    };
    let ran = |lines: &str, tag: &str| {
        lines
            .lines()
            .filter(|l| l.ends_with(&format!(" {tag}")))
            .count()
    };
    let failed = |v: &Value| v["error"] == json!(true) || v["exception"].is_string();
    // An empty schedule: the plugin says fail, so even the idempotent
    // `lookup` is sent once (the built-in would have retried it).
    let (out, lines) = run(
        "[]",
        json!([{ "op": "call", "tool": "lookup", "args": { "tag": "status" } }]),
    );
    assert_eq!(ran(&lines, "status"), 1, "{lines}");
    assert!(failed(&out[0]), "{}", out[0]);
    // One retry on the schedule: `lookup` is sent again and answers (each
    // call on instances of its own: one that a call ended would take the
    // retry); `record` (not idempotent) is still sent once.
    let (out, lines) = run(
        "[0]",
        json!([{ "op": "call", "tool": "lookup", "args": { "tag": "status" } }]),
    );
    assert_eq!(ran(&lines, "status"), 2, "{lines}");
    assert!(text(&out[0]).ends_with("did status"), "{}", out[0]);
    let (out, lines) = run(
        "[0]",
        json!([{ "op": "call", "tool": "record", "args": { "tag": "launch" } }]),
    );
    assert_eq!(ran(&lines, "launch"), 1, "{lines}");
    assert!(failed(&out[0]), "{}", out[0]);
}
