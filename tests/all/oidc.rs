//! A `jwt` filter whose keys come from a real OpenID provider's
//! `jwks_url` (`oidc-provider`, tokens by the client-credentials grant):
//! tokens verified, a key rotation followed without a restart, the keys
//! kept through the provider's outage; and `examples/mcp-auth.toml`, an
//! MCP route behind it with per-tool rules, used by the official Python
//! SDK's client.

use std::time::{Duration, Instant};

use serde_json::json;
use switchyard_tests::mcp::{McpServer, client_with, oauth_client};
use switchyard_tests::oidc::OidcProvider;
use switchyard_tests::upstream::Upstream;

use crate::auth::curl;
use crate::serve;

const API: &str = "http://switchyard.test/api";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_of_an_openid_provider_are_verified_through_a_key_rotation_and_an_outage() {
    let upstream = Upstream::start("u0");
    let mut provider = OidcProvider::start("k1");
    let issuer = provider.issuer();
    let config = format!(
        r#"
[[listeners]]
listen = "127.0.0.1:0"

[filters.jwt]
kind = "jwt"
providers = [{{ issuer = "{issuer}", audiences = ["{API}"], jwks_url = "{issuer}/jwks" }}]

# The token's claims reach rules: a required claim, a claim's value.
[filters.claims]
kind = "authorize"
require = ["has(principal.metadata.jti)", "principal.metadata.client_id == 'svc'"]

[filters.whoami]
kind = "request-headers"
set = {{ "x-principal" = "{{principal}}" }}

[[routes]]
pool = "p"
filters = ["jwt", "claims", "whoami"]

[pools.p]
instances = [{{ url = "{}" }}]
"#,
        upstream.url()
    );
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(&dir, &config);
    let url = format!("{}/orders", proxy.url);
    let bearer = |token: &str| format!("authorization: Bearer {token}");

    // A token for this API: its subject is the principal.
    let token = provider.token(API, "read");
    let answer = curl(url.clone(), &["-H", &bearer(&token)]).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.header("x-seen-x-principal"), Some("svc"));
    // A token for another resource is refused (RFC 8707's audience).
    let other = provider.token("http://other.test/api", "read");
    let answer = curl(url.clone(), &["-H", &bearer(&other)]).await;
    assert_eq!(answer.status, 401, "{}", answer.body);
    assert_eq!(upstream.hits(), 1);

    // The provider rotates its key: a token signed with the new one is
    // taken without a restart (its unknown `kid` has the JWKS fetched
    // again; at most one such fetch a second, so it may take a retry).
    provider.rotate("k2");
    let rotated = provider.token(API, "read");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let answer = curl(url.clone(), &["-H", &bearer(&rotated)]).await;
        if answer.status == 200 {
            break;
        }
        assert_eq!(answer.status, 401, "{}", answer.body);
        assert!(Instant::now() < deadline, "the new key was never fetched");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The provider goes away: the keys last fetched still verify a token
    // never seen before.
    let unseen = provider.token(API, "write");
    provider.stop();
    let answer = curl(url.clone(), &["-H", &bearer(&unseen)]).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mcp_auth_example_lets_each_caller_see_and_call_what_its_scopes_allow() {
    let provider = OidcProvider::start("k1");
    let docs = McpServer::with(&["--name", "docs"]);
    let search = McpServer::with(&["--name", "search"]);
    let text = crate::examples::example("mcp-auth.toml", &[])
        .replace("http://127.0.0.1:9100", &provider.issuer())
        .replace("http://127.0.0.1:9001", &docs.url())
        .replace("http://127.0.0.1:9002", &search.url());
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(&dir, &text);
    let mcp = format!("{}/mcp", proxy.url);
    // The audience the example names: the gateway's endpoint as the
    // provider's clients know it.
    let audience = "http://127.0.0.1:8080/mcp";
    wait_for_keys(&provider, &mcp, audience).await;
    let steps = json!([
        { "op": "tools" },
        { "op": "call", "tool": "docs__echo", "args": { "text": "hi" } },
        { "op": "call", "tool": "search__answer" },
    ]);

    let read = provider.token(audience, "read");
    let out = client_with(
        &mcp,
        &json!({ "authorization": format!("Bearer {read}") }),
        &steps,
    );
    assert_eq!(out[0], json!(["docs__echo", "search__echo"]), "{out:?}");
    assert_eq!(out[1]["text"], "docs: hi", "{out:?}");
    assert!(out[2]["exception"].is_string(), "{out:?}");

    let write = provider.token(audience, "read write");
    let out = client_with(
        &mcp,
        &json!({ "authorization": format!("Bearer {write}") }),
        &steps,
    );
    let tools = out[0].as_array().map_or(0, Vec::len);
    assert!(tools > 2, "{out:?}");
    assert_eq!(out[2]["text"], "42", "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mcp_client_finds_the_provider_through_the_gateway_and_calls_what_its_scopes_allow() {
    let provider = OidcProvider::start("k1");
    let server = McpServer::with(&["--name", "docs"]);
    let issuer = provider.issuer();
    // The resource's canonical URI names the listener's port.
    let port = switchyard_tests::free_port();
    let resource = format!("http://127.0.0.1:{port}/mcp");
    let config = format!(
        r#"
[[listeners]]
listen = "127.0.0.1:{port}"

[filters.oidc]
kind = "jwt"
resource = "{resource}"
scopes_supported = ["read"]
providers = [{{ issuer = "{issuer}", audiences = ["{resource}"], jwks_url = "{issuer}/jwks" }}]

[filters.per-tool]
kind = "authorize"
allow = ["mcp.method != 'tools/call'", "'write' in principal.scopes", "mcp.name == 'echo'"]

[[routes]]
match = {{ path_prefix = "/mcp" }}
mcp = {{ targets = ["docs"] }}
filters = ["oidc", "per-tool"]

[pools.docs]
instances = [{{ url = "{}" }}]
"#,
        server.url()
    );
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(&dir, &config);

    // Without a token: 401, the challenge pointing at the resource's
    // metadata (RFC 9728 §5.1), which names the provider.
    let answer = curl(format!("{}/mcp", proxy.url), &["-X", "POST"]).await;
    assert_eq!(answer.status, 401, "{}", answer.body);
    let metadata_url = format!("http://127.0.0.1:{port}/.well-known/oauth-protected-resource/mcp");
    let challenge = answer.header("www-authenticate").unwrap_or_default();
    assert!(
        challenge.contains(&format!(r#"resource_metadata="{metadata_url}""#)),
        "{challenge}"
    );
    assert!(challenge.contains(r#"scope="read""#), "{challenge}");
    let answer = curl(metadata_url, &[]).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let metadata: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(metadata["resource"], json!(resource));
    assert_eq!(metadata["authorization_servers"], json!([issuer]));
    wait_for_keys(&provider, &format!("{}/mcp", proxy.url), &resource).await;

    // The SDK's OAuth client does the rest: 401, metadata, the provider's
    // own metadata, a token for this resource with the scope the
    // challenge asks for, the calls — of which the rules let a `read`
    // token make only `echo`.
    let steps = json!([
        { "op": "tools" },
        { "op": "call", "tool": "echo", "args": { "text": "hi" } },
        { "op": "call", "tool": "answer" },
    ]);
    let oauth = json!({ "client_id": "svc", "client_secret": "secret", "issuer": issuer });
    let out = tokio::task::spawn_blocking(move || oauth_client(&resource, &oauth, &steps))
        .await
        .unwrap();
    assert_eq!(out[0], json!(["echo"]), "{out:?}");
    assert_eq!(out[1]["text"], "docs: hi", "{out:?}");
    assert!(out[2]["exception"].is_string(), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_resource_server_snippet_lets_an_mcp_client_find_the_provider() {
    let provider = OidcProvider::start("k1");
    let server = McpServer::with(&["--name", "docs"]);
    let port = switchyard_tests::free_port();
    let gateway = format!("http://127.0.0.1:{port}");
    // The snippet with its provider and gateway where the test runs them.
    let snippet = crate::readme_snippet("**An MCP route as an OAuth 2.1 resource server.**")
        .replace("https://id.example.com", &provider.issuer())
        .replace("https://gw.example.com", &gateway);
    let config = format!(
        "[[listeners]]\nlisten = \"127.0.0.1:{port}\"\n{snippet}\n\
         [[routes]]\nmatch = {{ path_prefix = \"/mcp\" }}\nmcp = {{ targets = [\"docs\"] }}\nfilters = [\"oidc\"]\n\
         [pools.docs]\ninstances = [{{ url = \"{}\" }}]\n",
        server.url()
    );
    let dir = tempfile::tempdir().unwrap();
    let _proxy = serve(&dir, &config);

    // Its metadata, which any origin may read.
    let metadata = curl(
        format!("{gateway}/.well-known/oauth-protected-resource/mcp"),
        &["-H", "origin: https://app.example.com"],
    )
    .await;
    assert_eq!(metadata.status, 200, "{}", metadata.body);
    assert_eq!(metadata.header("access-control-allow-origin"), Some("*"));
    let document: serde_json::Value = serde_json::from_str(&metadata.body).unwrap();
    assert_eq!(document["scopes_supported"], json!(["read", "write"]));
    let resource = format!("{gateway}/mcp");
    wait_for_keys(&provider, &resource, &resource).await;

    // The SDK's client: discovery, a token with the scopes the challenge
    // names, a call.
    let oauth =
        json!({ "client_id": "svc", "client_secret": "secret", "issuer": provider.issuer() });
    let steps = json!([{ "op": "call", "tool": "echo", "args": { "text": "hi" } }]);
    let out = tokio::task::spawn_blocking(move || oauth_client(&resource, &oauth, &steps))
        .await
        .unwrap();
    assert_eq!(out[0]["text"], "docs: hi", "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_signs_in_by_the_authorization_code_flow_and_steps_up_for_a_tool_needing_more() {
    let provider = OidcProvider::start("k1");
    let server = McpServer::with(&["--name", "docs"]);
    let issuer = provider.issuer();
    let port = switchyard_tests::free_port();
    let resource = format!("http://127.0.0.1:{port}/mcp");
    // The challenge asks for `read`; `answer` needs `write` too. Only
    // the user signed in (not a service's client-credentials token) may
    // call.
    let config = format!(
        r#"
[[listeners]]
listen = "127.0.0.1:{port}"
[admin]
listen = "127.0.0.1:0"

[filters.oidc]
kind = "jwt"
resource = "{resource}"
scopes_supported = ["read"]
providers = [{{ issuer = "{issuer}", audiences = ["{resource}"], jwks_url = "{issuer}/jwks" }}]

[filters.users]
kind = "authorize"
require = ["principal.id == 'alice'"]
tool_scopes = {{ answer = ["write"] }}

[[routes]]
match = {{ path_prefix = "/mcp" }}
mcp = {{ targets = ["docs"] }}
filters = ["oidc", "users"]

[pools.docs]
instances = [{{ url = "{}" }}]
"#,
        server.url()
    );
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(&dir, &config);
    wait_for_keys(&provider, &resource, &resource).await;

    // The SDK registers itself, sends the user to sign in (PKCE), lists
    // the tools with a `read` token (no `answer`), is refused `answer`
    // with 403 insufficient_scope, signs the user in again for `write`
    // and calls it; its list then shows it.
    let steps = json!([
        { "op": "tools" },
        { "op": "call", "tool": "answer" },
        { "op": "tools" },
    ]);
    let oauth = json!({ "flow": "code" });
    let out = tokio::task::spawn_blocking(move || oauth_client(&resource, &oauth, &steps))
        .await
        .unwrap();
    let lists = |i: usize, tool: &str| out[i].as_array().is_some_and(|t| t.contains(&json!(tool)));
    assert!(lists(0, "echo") && !lists(0, "answer"), "{out:?}");
    assert_eq!(out[1]["text"], "42", "{out:?}");
    assert!(lists(2, "answer"), "{out:?}");
    // The step-up was a refusal the gateway counted.
    let metrics = curl(format!("{}/metrics", proxy.admin_url()), &[])
        .await
        .body;
    let denied = r#"switchyard_auth_decisions_total{route="0",filter="users",decision="denied"}"#;
    assert!(metrics.contains(denied), "{denied} in:\n{metrics}");
}

/// Waits until the gateway at `endpoint` takes a token of `provider` for
/// `resource`: it fetches the provider's keys when it starts, and the
/// SDK's client, which does not retry a refused token, must not race that
/// fetch on a slow machine.
async fn wait_for_keys(provider: &OidcProvider, endpoint: &str, resource: &str) {
    let token = format!("authorization: Bearer {}", provider.token(resource, "read"));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let answer = curl(endpoint.to_owned(), &["-H", &token]).await;
        if answer.status != 401 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the keys were never fetched: {}",
            answer.body
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
