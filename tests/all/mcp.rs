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
        for tool in ["answer", "ask_client", "calls", "echo", "lookup", "record"] {
            expected.push(format!("{server}__{tool}"));
        }
    }
    expected.sort_unstable();
    assert_eq!(names, expected);
    // A first page holds alpha's first two tools and all of beta's, and a
    // composite cursor for the rest of alpha's.
    let first = &out[1];
    assert_eq!(first["names"].as_array().unwrap().len(), 2 + 7, "{first}");
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
