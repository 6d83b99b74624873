//! `forward-auth` filters through a real `switchyard`: a small real
//! authorization service (axum on a loopback port) decides, curl is the
//! client and a real upstream answers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use switchyard_tests::upstream::Upstream;

use crate::auth::curl;
use crate::serve;

/// The service: `Bearer ok-NAME` is user NAME (200, `x-user`,
/// `x-groups`); `Bearer login` is sent to a login page (302); anything
/// else is 401 with a challenge and a JSON body. It echoes the
/// `X-Forwarded-*` headers it got as `x-auth-saw-*` on a 2xx, and counts
/// the requests it was asked about.
async fn auth_service() -> (SocketAddr, Arc<AtomicU64>) {
    let asked = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&asked);
    let app = axum::Router::new().route(
        "/verify",
        axum::routing::get(move |headers: HeaderMap| {
            let counter = Arc::clone(&counter);
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                let token = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .unwrap_or("");
                let seen = |name: &str| {
                    headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned()
                };
                if let Some(user) = token.strip_prefix("ok-") {
                    (
                        StatusCode::OK,
                        [
                            ("x-user", user.to_owned()),
                            ("x-groups", "staff".to_owned()),
                            ("x-auth-saw-method", seen("x-forwarded-method")),
                            ("x-auth-saw-uri", seen("x-forwarded-uri")),
                            ("x-auth-saw-for", seen("x-forwarded-for")),
                        ],
                        "",
                    )
                        .into_response()
                } else if token == "login" {
                    (
                        StatusCode::FOUND,
                        [("location", "https://login.example.com/")],
                        "",
                    )
                        .into_response()
                } else {
                    (
                        StatusCode::UNAUTHORIZED,
                        [
                            ("www-authenticate", r#"Bearer realm="sso""#),
                            ("content-type", "application/json"),
                        ],
                        r#"{"error":"who are you"}"#,
                    )
                        .into_response()
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, asked)
}

fn config(upstream: &Upstream, auth: SocketAddr, extra: &str) -> String {
    format!(
        r#"
[[listeners]]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"

[filters.sso]
kind = "forward-auth"
url = "http://{auth}/verify"
response_headers = ["x-user", "x-groups", "x-auth-saw-method", "x-auth-saw-uri", "x-auth-saw-for"]
principal_header = "x-user"
{extra}

[filters.whoami]
kind = "request-headers"
set = {{ "x-principal" = "{{principal}}" }}

[[routes]]
pool = "p"
filters = ["sso", "whoami"]

[pools.p]
instances = [{{ url = "{}" }}]
"#,
        upstream.url()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_decides_its_headers_go_upstream_and_its_refusals_go_back() {
    let upstream = Upstream::start("u0");
    let (auth, asked) = auth_service().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(&dir, &config(&upstream, auth, ""));
    let url = |path: &str| format!("{}{path}", proxy.url);

    // Allowed: the service's headers (not the client's forged ones) and
    // principal go upstream; the service saw the method and URI.
    let answer = curl(
        url("/orders?page=2"),
        &[
            "-X",
            "POST",
            "-H",
            "authorization: Bearer ok-ann",
            "-H",
            "x-groups: admin",
        ],
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.header("x-seen-x-user"), Some("ann"));
    assert_eq!(answer.header("x-seen-x-groups"), Some("staff"));
    assert_eq!(answer.header("x-seen-x-principal"), Some("ann"));
    assert_eq!(answer.header("x-seen-x-auth-saw-method"), Some("post"));
    assert_eq!(
        answer.header("x-seen-x-auth-saw-uri"),
        Some("/orders?page=2")
    );
    assert_eq!(answer.header("x-seen-x-auth-saw-for"), Some("127.0.0.1"));
    assert_eq!(upstream.hits(), 1);

    // Refused: the service's answer is the client's, status, headers and
    // body; the upstream is not asked.
    let answer = curl(url("/orders"), &["-H", "authorization: Bearer nope"]).await;
    assert_eq!(answer.status, 401);
    assert_eq!(
        answer.header("www-authenticate"),
        Some(r#"bearer realm="sso""#)
    );
    assert_eq!(answer.body, r#"{"error":"who are you"}"#);
    let answer = curl(url("/orders"), &["-H", "authorization: Bearer login"]).await;
    assert_eq!(answer.status, 302);
    assert_eq!(
        answer.header("location"),
        Some("https://login.example.com/")
    );
    assert_eq!(upstream.hits(), 1);
    assert_eq!(asked.load(Ordering::SeqCst), 3);

    let metrics = curl(format!("{}/metrics", proxy.admin_url()), &[])
        .await
        .body;
    for line in [
        r#"switchyard_auth_decisions_total{route="0",filter="sso",decision="allowed"} 1"#,
        r#"switchyard_auth_decisions_total{route="0",filter="sso",decision="denied"} 2"#,
    ] {
        assert!(metrics.contains(line), "{line} in:\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_are_remembered_by_the_headers_the_service_sees() {
    let upstream = Upstream::start("u0");
    let (auth, asked) = auth_service().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(&dir, &config(&upstream, auth, "cache_ttl_ms = 600000"));
    let url = format!("{}/orders", proxy.url);
    for token in ["ok-ann", "ok-ann", "ok-bob", "nope", "ok-ann", "nope"] {
        let answer = curl(
            url.clone(),
            &["-H", &format!("authorization: Bearer {token}")],
        )
        .await;
        let expected = if token == "nope" { 401 } else { 200 };
        assert_eq!(answer.status, expected, "{token}: {}", answer.body);
        if let Some(user) = token.strip_prefix("ok-") {
            assert_eq!(answer.header("x-seen-x-principal"), Some(user));
        }
    }
    // Asked once per distinct token.
    assert_eq!(asked.load(Ordering::SeqCst), 3);
    assert_eq!(upstream.hits(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_that_does_not_answer_closes_the_route_or_leaves_it_open_as_configured() {
    let upstream = Upstream::start("u0");
    // A port nothing listens on.
    let gone = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    for (mode, status) in [("closed", 503), ("open", 200)] {
        let dir = tempfile::tempdir().unwrap();
        let proxy = serve(
            &dir,
            &config(&upstream, gone, &format!("failure_mode = \"{mode}\"")),
        );
        let answer = curl(
            format!("{}/orders", proxy.url),
            &["-H", "authorization: Bearer ok-ann"],
        )
        .await;
        assert_eq!(answer.status, status, "{mode}: {}", answer.body);
        if mode == "closed" {
            assert!(answer.body.contains("filter_failed"), "{}", answer.body);
        } else {
            // Passed without the service's word: no principal.
            assert_eq!(answer.header("x-seen-x-principal"), Some(""));
        }
    }
    assert_eq!(upstream.hits(), 1);
}

#[test]
fn bad_forward_auth_filters_are_refused_naming_the_key() {
    for (filter, key, reason) in [
        (
            r#"url = "ftp://auth/verify""#,
            "filters.sso.url",
            "is not an http:// or https:// URL with a host",
        ),
        (
            "url = \"http://127.0.0.1:9/verify\"\nresponse_headers = [\"x user\"]",
            "filters.sso.response_headers[0]",
            "is not a valid header name",
        ),
        (
            "url = \"http://127.0.0.1:9/verify\"\ntimeout_ms = 0",
            "filters.sso.timeout_ms",
            "must be ≥ 1",
        ),
    ] {
        crate::assert_filter_refused("sso", "forward-auth", filter, key, reason);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_services_headers_cannot_be_forged_when_an_earlier_filter_found_the_principal() {
    let upstream = Upstream::start("u0");
    let (auth, asked) = auth_service().await;
    let (key, digest) = crate::auth::new_key();
    let keys = format!(
        "[filters.keys]\nkind = \"api-key\"\nprincipals = [{{ id = \"bot\", keys = [\"{digest}\"] }}]\n"
    );
    let text = config(&upstream, auth, "").replace(
        "filters = [\"sso\", \"whoami\"]",
        "filters = [\"keys\", \"sso\", \"whoami\"]",
    ) + &keys;
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(&dir, &text);
    let answer = curl(
        format!("{}/orders", proxy.url),
        &["-H", &format!("x-api-key: {key}"), "-H", "x-user: admin"],
    )
    .await;
    // The key's principal passes without asking the service, and the
    // client's `x-user` (a header the service sets) does not go upstream.
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.header("x-seen-x-principal"), Some("bot"));
    assert_eq!(answer.header("x-seen-x-user"), None);
    assert_eq!(asked.load(Ordering::SeqCst), 0);
}
