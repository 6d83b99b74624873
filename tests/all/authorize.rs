//! `authorize` filters through a real `switchyard`: CEL rules over the
//! request and its principal (curl and a real upstream), and over each
//! MCP call on an MCP route (the official Python SDK's client and two
//! real MCP servers).

use serde_json::json;
use switchyard_tests::mcp::{McpServer, client_with};
use switchyard_tests::upstream::Upstream;

use crate::auth::{curl, new_key};
use crate::serve;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_over_the_request_and_its_principal_let_some_pass_and_refuse_the_rest() {
    let upstream = Upstream::start("u0");
    let (ops, ops_digest) = new_key();
    let (dev, dev_digest) = new_key();
    let config = format!(
        r#"
[[listeners]]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"

[filters.keys]
kind = "api-key"
mode = "optional"
principals = [
  {{ id = "ann", keys = ["{ops_digest}"], metadata = {{ team = "ops" }}, scopes = ["deploy"] }},
  {{ id = "dan", keys = ["{dev_digest}"], metadata = {{ team = "dev" }} }},
]

[filters.rules]
kind = "authorize"
require = ["source.address == '127.0.0.1'"]
allow = [
  "request.method == 'GET' && request.path.startsWith('/public/')",
  "principal != null && principal.metadata.team == 'ops'",
  "principal != null && request.headers['x-ticket'].matches('^T-[0-9]+$')",
]

[[routes]]
pool = "p"
filters = ["keys", "rules"]

[pools.p]
instances = [{{ url = "{}" }}]
"#,
        upstream.url()
    );
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(&dir, &config);
    let url = |path: &str| format!("{}{path}", proxy.url);
    let key = |k: &str| format!("x-api-key: {k}");

    // Allowed: anyone may GET /public/, ops may do anything, another
    // principal with a ticket header.
    for (path, args) in [
        ("/public/a", vec![]),
        ("/orders", vec!["-X", "DELETE", "-H", &*key(&ops)]),
        (
            "/orders",
            vec!["-X", "POST", "-H", &*key(&dev), "-H", "x-ticket: T-42"],
        ),
    ] {
        let answer = curl(url(path), &args).await;
        assert_eq!(answer.status, 200, "{path} {args:?}: {}", answer.body);
    }
    assert_eq!(upstream.hits(), 3);

    // Refused with 403 and a JSON body, the upstream not asked: no
    // principal; dev without a ticket; a ticket that does not match; a
    // header missing (the rule fails, which counts as false).
    for (path, args) in [
        ("/orders", vec![]),
        ("/public/a", vec!["-X", "POST"]),
        ("/orders", vec!["-H", &*key(&dev)]),
        ("/orders", vec!["-H", &*key(&dev), "-H", "x-ticket: 42"]),
    ] {
        let answer = curl(url(path), &args).await;
        assert_eq!(answer.status, 403, "{path} {args:?}: {}", answer.body);
        let body: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
        assert_eq!(body["error"], "forbidden", "{body}");
        let message = body["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("not allowed by filter `rules` (allow)"),
            "{body}"
        );
    }
    assert_eq!(upstream.hits(), 3);

    let metrics = curl(format!("{}/metrics", proxy.admin_url()), &[])
        .await
        .body;
    for line in [
        r#"switchyard_auth_decisions_total{route="0",filter="rules",decision="allowed"} 3"#,
        r#"switchyard_auth_decisions_total{route="0",filter="rules",decision="denied"} 4"#,
        r#"switchyard_filter_answers_total{route="0",filter="rules",answer="forbidden"} 4"#,
    ] {
        assert!(metrics.contains(line), "{line} in:\n{metrics}");
    }
}

#[test]
fn on_an_mcp_route_rules_judge_each_call_and_hide_what_a_caller_may_not_call() {
    let alpha = McpServer::with(&["--name", "alpha"]);
    let beta = McpServer::with(&["--name", "beta", "--json"]);
    let (ann, ann_digest) = new_key();
    let (bob, bob_digest) = new_key();
    // A principal may call the tools its scopes name; lists and every
    // other method are open to any principal.
    let config = format!(
        r#"
[[listeners]]
listen = "127.0.0.1:0"

[filters.keys]
kind = "api-key"
principals = [
  {{ id = "ann", keys = ["{ann_digest}"], scopes = ["alpha__echo", "alpha__calls"] }},
  {{ id = "bob", keys = ["{bob_digest}"], scopes = ["beta__calls"] }},
]

[filters.who-may-call]
kind = "authorize"
allow = ["mcp.method != 'tools/call'", "mcp.name in principal.scopes"]

[[routes]]
match = {{ path_prefix = "/mcp" }}
mcp = {{ targets = ["alpha", "beta"] }}
filters = ["keys", "who-may-call"]

[pools.alpha]
instances = [{{ url = "{}" }}]
[pools.beta]
instances = [{{ url = "{}" }}]
"#,
        alpha.url(),
        beta.url(),
    );
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(&dir, &config);
    let mcp = format!("{}/mcp", proxy.url);

    let out = client_with(
        &mcp,
        &json!({ "x-api-key": ann }),
        &json!([
            { "op": "tools" },
            { "op": "call", "tool": "alpha__echo", "args": { "text": "hi" } },
            { "op": "call", "tool": "beta__echo", "args": { "text": "hi" } },
            { "op": "call", "tool": "alpha__calls" },
        ]),
    );
    // The list shows ann only what she may call.
    assert_eq!(out[0], json!(["alpha__echo", "alpha__calls"]), "{out:?}");
    assert_eq!(out[1]["text"], "alpha: hi", "{out:?}");
    let denied = out[2]["exception"].as_str().unwrap_or_default();
    assert!(
        denied.contains("not allowed by filter `who-may-call` (allow)"),
        "{out:?}"
    );
    assert_eq!(out[3]["text"], "1", "{out:?}");

    // bob sees beta's counter only, and beta never served ann's echo.
    let out = client_with(
        &mcp,
        &json!({ "x-api-key": bob }),
        &json!([
            { "op": "tools" },
            { "op": "call", "tool": "beta__calls" },
            { "op": "call", "tool": "alpha__calls" },
        ]),
    );
    assert_eq!(out[0], json!(["beta__calls"]), "{out:?}");
    assert_eq!(out[1]["text"], "0", "{out:?}");
    assert!(out[2]["exception"].is_string(), "{out:?}");
}

#[test]
fn bad_rules_are_refused_naming_the_key_and_the_reason() {
    for (rules, key, reason) in [
        (
            r#"require = ["principal.id =="]"#,
            "filters.rules.require[0]",
            "",
        ),
        (
            r#"allow = ["true", "princpal.id == 'a'"]"#,
            "filters.rules.allow[1]",
            "`princpal` is not a variable here",
        ),
        (
            "",
            "filters.rules.require",
            "give `require` or `allow` rules",
        ),
    ] {
        crate::assert_filter_refused("rules", "authorize", rules, key, reason);
    }
}

#[test]
fn the_readme_authorization_snippet_lets_the_analyst_call_one_tool() {
    let snippet = crate::readme_snippet("**Authorization rules.**");
    let search = McpServer::with(&["--name", "search"]);
    let admin = McpServer::with(&["--name", "admin"]);
    let config = format!(
        "[[listeners]]\nlisten = \"127.0.0.1:0\"\n{snippet}\n\
         [pools.search]\ninstances = [{{ url = \"{}\" }}]\n\
         [pools.admin]\ninstances = [{{ url = \"{}\" }}]\n",
        search.url(),
        admin.url(),
    );
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(&dir, &config);
    let out = client_with(
        &format!("{}/mcp", proxy.url),
        &json!({ "x-api-key": "sy_example-key-replace-me" }),
        &json!([
            { "op": "tools" },
            { "op": "call", "tool": "search__answer" },
            { "op": "call", "tool": "admin__echo", "args": { "text": "x" } },
        ]),
    );
    assert_eq!(out[0], json!(["search__answer"]), "{out:?}");
    assert_eq!(out[1]["text"], "42", "{out:?}");
    assert!(out[2]["exception"].is_string(), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mcp_method_or_name_header_that_is_not_the_bodys_is_refused() {
    let server = McpServer::with(&["--name", "docs"]);
    let config = format!(
        "[[listeners]]\nlisten = \"127.0.0.1:0\"\n\
         [[routes]]\nmatch = {{ path_prefix = \"/mcp\" }}\nmcp = {{ targets = [\"docs\"] }}\n\
         [pools.docs]\ninstances = [{{ url = \"{}\" }}]\n",
        server.url()
    );
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(&dir, &config);
    let url = format!("{}/mcp", proxy.url);
    // A header saying another method, or naming a tool the body does not:
    // 400 with the JSON-RPC error -32020, whatever reads the headers
    // cannot be told one thing while the servers are asked another.
    for headers in [
        vec!["mcp-method: tools/list"],
        vec!["mcp-method: initialize", "mcp-name: deploy"],
    ] {
        let answer = post_initialize(&url, &headers).await;
        assert_eq!(answer.status, 400, "{headers:?}: {}", answer.body);
        let body: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
        assert_eq!(body["error"]["code"], -32020, "{body}");
        assert_eq!(body["id"], 1, "{body}");
    }
    // The same header as the body's, or none: served.
    for headers in [vec!["mcp-method: initialize"], vec![]] {
        let answer = post_initialize(&url, &headers).await;
        assert_eq!(answer.status, 200, "{headers:?}: {}", answer.body);
    }
}

/// An MCP `initialize` POSTed to `url` with `headers` besides the
/// transport's.
async fn post_initialize(url: &str, headers: &[&str]) -> crate::auth::Curl {
    let initialize = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;
    post_mcp(url, initialize, headers).await
}

/// The JSON-RPC message `body` POSTed to the MCP endpoint `url` with
/// `headers` besides the transport's.
async fn post_mcp(url: &str, body: &str, headers: &[&str]) -> crate::auth::Curl {
    let mut args = vec![
        "-X",
        "POST",
        "-H",
        "content-type: application/json",
        "-H",
        "accept: application/json, text/event-stream",
        "-d",
        body,
    ];
    for header in headers {
        args.extend(["-H", header]);
    }
    curl(url.to_owned(), &args).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_call_without_the_scopes_it_needs_gets_a_scope_challenge() {
    let server = McpServer::with(&["--name", "docs"]);
    let (key, digest) = new_key();
    let config = format!(
        r#"
[[listeners]]
listen = "127.0.0.1:0"

[filters.keys]
kind = "api-key"
principals = [{{ id = "ann", keys = ["{digest}"], scopes = ["read", "audit"] }}]

[filters.scopes]
kind = "authorize"
tool_scopes = {{ "answer" = ["read", "deploy"], "*" = ["read"] }}

[[routes]]
match = {{ path_prefix = "/mcp" }}
mcp = {{ targets = ["docs"] }}
filters = ["keys", "scopes"]

[pools.docs]
instances = [{{ url = "{}" }}]
"#,
        server.url()
    );
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(&dir, &config);
    let url = format!("{}/mcp", proxy.url);
    let api_key = format!("x-api-key: {key}");
    let initialized = post_initialize(&url, &[&api_key]).await;
    assert_eq!(initialized.status, 200, "{}", initialized.body);
    let session = format!(
        "mcp-session-id: {}",
        initialized
            .header_as_sent("mcp-session-id")
            .unwrap_or_default()
    );
    let headers = [api_key.as_str(), session.as_str()];
    let call = |tool: &str| {
        format!(
            r#"{{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{{"name":"{tool}","arguments":{{}}}}}}"#
        )
    };

    // `answer` needs `deploy` too: 403 with a challenge naming the
    // scopes ann holds and the one she lacks (a token asked for in its
    // place keeps what hers allowed), and a JSON-RPC error; the server is
    // not asked.
    let denied = post_mcp(&url, &call("answer"), &headers).await;
    assert_eq!(denied.status, 403, "{}", denied.body);
    assert_eq!(
        denied.header("www-authenticate"),
        Some(r#"bearer error="insufficient_scope", scope="read audit deploy""#)
    );
    let body: serde_json::Value = serde_json::from_str(&denied.body).unwrap();
    assert_eq!(body["error"]["code"], -32003, "{body}");
    // Any other tool needs `read`, which ann has; the list leaves out
    // what she may not call.
    let calls = post_mcp(&url, &call("calls"), &headers).await;
    assert_eq!(calls.status, 200, "{}", calls.body);
    assert!(calls.body.contains(r#""text":"0""#), "{}", calls.body);
    let list = r#"{"jsonrpc":"2.0","id":3,"method":"tools/list"}"#;
    let listed = post_mcp(&url, list, &headers).await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    assert!(listed.body.contains(r#""name":"calls""#), "{}", listed.body);
    assert!(
        !listed.body.contains(r#""name":"answer""#),
        "{}",
        listed.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mcp_session_serves_only_the_principal_that_opened_it() {
    let server = McpServer::with(&["--name", "docs"]);
    let (ann, ann_digest) = new_key();
    let (bob, bob_digest) = new_key();
    let config = format!(
        "[[listeners]]\nlisten = \"127.0.0.1:0\"\n\
         [filters.keys]\nkind = \"api-key\"\n\
         principals = [{{ id = \"ann\", keys = [\"{ann_digest}\"] }}, {{ id = \"bob\", keys = [\"{bob_digest}\"] }}]\n\
         [[routes]]\nmatch = {{ path_prefix = \"/mcp\" }}\nmcp = {{ targets = [\"docs\"] }}\nfilters = [\"keys\"]\n\
         [pools.docs]\ninstances = [{{ url = \"{}\" }}]\n",
        server.url()
    );
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(&dir, &config);
    let url = format!("{}/mcp", proxy.url);
    let (ann, bob) = (format!("x-api-key: {ann}"), format!("x-api-key: {bob}"));
    let opened = post_initialize(&url, &[&ann]).await;
    assert_eq!(opened.status, 200, "{}", opened.body);
    let session = format!(
        "mcp-session-id: {}",
        opened.header_as_sent("mcp-session-id").unwrap_or_default()
    );
    let list = r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#;
    // bob, who learned ann's session id, is told it does not exist.
    let stolen = post_mcp(&url, list, &[&bob, &session]).await;
    assert_eq!(stolen.status, 404, "{}", stolen.body);
    assert!(stolen.body.contains("another principal"), "{}", stolen.body);
    // ann goes on with it.
    let listed = post_mcp(&url, list, &[&ann, &session]).await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    assert!(listed.body.contains(r#""name":"echo""#), "{}", listed.body);
}
