//! Route filters through a real `switchyard`: rewrites, headers, redirects,
//! fixed responses, client address lists and body limits, seen by real
//! clients (reqwest, curl) and a real upstream.

use switchyard_tests::upstream::Upstream;

use crate::serve;

/// A config with one pool `p` over `upstream`, `filters` (TOML
/// `[filters.*]` tables) and `routes` (TOML `[[routes]]` tables).
fn filtered(upstream: &Upstream, filters: &str, routes: &str) -> String {
    format!(
        "[[listeners]]\nlisten = \"127.0.0.1:0\"\n{routes}\n[pools.p]\n\
         instances = [{{ url = \"{}\" }}]\n{filters}",
        upstream.url()
    )
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    response.headers().get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_are_rewritten_and_headers_changed_both_ways() {
    let upstream = Upstream::start("u0");
    let config = filtered(
        &upstream,
        r#"
[filters.strip-api]
kind = "strip-prefix"
prefix = "/api"
[filters.v2]
kind = "add-prefix"
prefix = "/v2"
[filters.legacy]
kind = "regex-rewrite"
pattern = "^/old/(?P<id>[0-9]+)$"
substitution = "/items/${id}"
[filters.backend-host]
kind = "host-rewrite"
host = "backend.internal"
[filters.tag]
kind = "request-headers"
remove = ["cookie"]
set = { "x-client-ip" = "{client_ip}", "x-route" = "route {route} via {method} {path}" }
add = { "x-tag" = "one" }
[filters.tidy]
kind = "response-headers"
remove = ["x-upstream-version"]
set = { "x-served-by" = "switchyard" }
"#,
        r#"
[[routes]]
match = { path_prefix = "/api" }
pool = "p"
filters = ["strip-api", "v2", "tag", "tidy"]
[[routes]]
match = { path_prefix = "/old" }
pool = "p"
filters = ["legacy", "backend-host"]
[[routes]]
pool = "p"
"#,
    );
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(&dir, &config);
    let client = crate::client();

    let response = client
        .get(format!("{}/api/users?q=1", proxy.url))
        .header("cookie", "secret=1")
        .header("x-tag", "zero")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-upstream-path"), Some("/v2/users?q=1"));
    assert_eq!(header(&response, "x-seen-cookie"), None, "cookie removed");
    assert_eq!(header(&response, "x-seen-x-client-ip"), Some("127.0.0.1"));
    assert_eq!(
        header(&response, "x-seen-x-route"),
        Some("route 0 via GET /api/users")
    );
    let tags: Vec<&str> = response
        .headers()
        .get_all("x-seen-x-tag")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    assert_eq!(tags, ["zero", "one"], "add keeps the client's value");
    assert_eq!(header(&response, "x-served-by"), Some("switchyard"));
    assert_eq!(header(&response, "x-upstream-version"), None);
    // The prefix alone is the root; a longer word is not the prefix.
    let response = client
        .get(format!("{}/api", proxy.url))
        .send()
        .await
        .unwrap();
    assert_eq!(header(&response, "x-upstream-path"), Some("/v2/"));
    let response = client
        .get(format!("{}/apix", proxy.url))
        .send()
        .await
        .unwrap();
    assert_eq!(header(&response, "x-upstream-path"), Some("/v2/apix"));

    let response = client
        .get(format!("{}/old/42", proxy.url))
        .send()
        .await
        .unwrap();
    assert_eq!(header(&response, "x-upstream-path"), Some("/items/42"));
    assert_eq!(header(&response, "x-seen-host"), Some("backend.internal"));
    // Routes without filters are untouched.
    let response = client
        .get(format!("{}/else", proxy.url))
        .send()
        .await
        .unwrap();
    assert_eq!(header(&response, "x-upstream-path"), Some("/else"));
    assert!(header(&response, "x-upstream-version").is_some());
    assert_eq!(header(&response, "x-served-by"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_and_fixed_responses_answer_at_the_gateway() {
    let upstream = Upstream::start("u0");
    let config = filtered(
        &upstream,
        r#"
[filters.to-https]
kind = "redirect"
scheme = "https"
status = 308
[filters.moved]
kind = "redirect"
host = "new.example.com"
path = "/landing"
strip_query = true
[filters.docs-moved]
kind = "redirect"
path = "/guide/"
status = 302
[filters.maintenance]
kind = "respond"
status = 503
body = "back soon"
headers = { "retry-after" = "120" }
[filters.tidy]
kind = "response-headers"
set = { "x-served-by" = "switchyard" }
"#,
        r#"
[[routes]]
match = { path_prefix = "/secure" }
pool = "p"
filters = ["to-https"]
[[routes]]
match = { path_prefix = "/moved" }
pool = "p"
filters = ["moved"]
[[routes]]
match = { path_prefix = "/docs" }
pool = "p"
filters = ["docs-moved"]
[[routes]]
pool = "p"
filters = ["tidy", "maintenance"]
"#,
    );
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(&dir, &config);

    // curl, as a user would try it: the status and where it points.
    let output = std::process::Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{redirect_url}",
            "-H",
            "host: shop.example.com",
            &format!("{}/secure/cart?id=7", proxy.url),
        ])
        .output()
        .expect("curl");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "308 https://shop.example.com/secure/cart?id=7"
    );
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = client
        .get(format!("{}/moved/x?y=1", proxy.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 301);
    assert_eq!(
        header(&response, "location"),
        Some("http://new.example.com/landing")
    );
    // Without a new scheme or host, the request's host and port stay.
    let response = client
        .get(format!("{}/docs", proxy.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 302);
    assert_eq!(
        header(&response, "location"),
        Some(format!("{}/guide/", proxy.url).as_str())
    );
    let response = client
        .get(format!("{}/else", proxy.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(header(&response, "retry-after"), Some("120"));
    assert_eq!(
        header(&response, "content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(header(&response, "x-served-by"), Some("switchyard"));
    assert_eq!(response.text().await.unwrap(), "back soon");
    assert_eq!(upstream.hits(), 0, "nothing reached the pool");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_addresses_are_admitted_or_refused() {
    let upstream = Upstream::start("u0");
    let config = filtered(
        &upstream,
        r#"
[admin]
listen = "127.0.0.1:0"
[filters.nobody-local]
kind = "ip-filter"
deny = ["127.0.0.0/8", "::1"]
[filters.partners]
kind = "ip-filter"
allow = ["192.0.2.0/24"]
trusted_proxies = ["127.0.0.1"]
"#,
        r#"
[[routes]]
match = { path_prefix = "/internal" }
pool = "p"
filters = ["nobody-local"]
[[routes]]
match = { path_prefix = "/partners" }
pool = "p"
filters = ["partners"]
"#,
    );
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(&dir, &config);
    let client = crate::client();

    let response = client
        .get(format!("{}/internal", proxy.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let body: serde_json::Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    assert_eq!(body["error"], "forbidden", "{body}");
    // Behind a trusted proxy (this client, 127.0.0.1), the address it
    // forwarded is the client's.
    for (forwarded, status) in [
        ("192.0.2.7", 200),
        ("198.51.100.1", 403),
        ("192.0.2.7, 198.51.100.1", 403),
        ("198.51.100.1, 192.0.2.7", 200),
    ] {
        let response = client
            .get(format!("{}/partners", proxy.url))
            .header("x-forwarded-for", forwarded)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "x-forwarded-for: {forwarded}");
    }
    assert_eq!(upstream.hits(), 2);
    // Each refusal is counted for its route and filter.
    let metrics = client
        .get(format!("{}/metrics", proxy.admin_url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        r#"switchyard_filter_answers_total{route="0",filter="nobody-local",answer="forbidden"} 1"#,
        r#"switchyard_filter_answers_total{route="1",filter="partners",answer="forbidden"} 2"#,
    ] {
        assert!(metrics.contains(line), "{line} in:\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_limit_are_refused_with_413() {
    let upstream = Upstream::start("u0");
    let config = filtered(
        &upstream,
        "[filters.small]\nkind = \"body-limit\"\nmax_bytes = 1024\n",
        "[[routes]]\npool = \"p\"\nfilters = [\"small\"]\n",
    );
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(&dir, &config);
    let client = crate::client();

    let response = client
        .post(format!("{}/upload", proxy.url))
        .body(vec![b'x'; 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "at the limit");
    let response = client
        .post(format!("{}/upload", proxy.url))
        .body(vec![b'x'; 1025])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413, "declared over the limit");
    assert_eq!(upstream.hits(), 1, "refused before the pool");
    // A chunked body with no declared length is cut where it passes the
    // limit (written by hand: the head goes before the body is known).
    let address = proxy.url.trim_start_matches("http://").to_string();
    let answer = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(&address).unwrap();
        let mut request = format!(
            "POST /upload HTTP/1.1\r\nhost: {address}\r\ntransfer-encoding: chunked\r\n\r\n"
        )
        .into_bytes();
        for _ in 0..4 {
            request.extend_from_slice(b"200\r\n");
            request.extend_from_slice(&[b'y'; 512]);
            request.extend_from_slice(b"\r\n");
        }
        request.extend_from_slice(b"0\r\n\r\n");
        // The proxy may answer and close before it read all of it.
        let _ = stream.write_all(&request);
        let mut answer = Vec::new();
        let mut buf = [0; 4096];
        while let Ok(n) = stream.read(&mut buf) {
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
            if answer.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
        String::from_utf8_lossy(&answer).into_owned()
    })
    .await
    .unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 413"),
        "streamed over the limit: {answer}"
    );
}

#[test]
fn bad_filters_are_refused_naming_the_key() {
    use std::path::Path;
    use switchyard::config::Config;
    let base = "[[listeners]]\nlisten = \"127.0.0.1:0\"\n[pools.p]\n\
                instances = [{ url = \"http://127.0.0.1:9\" }]\n";
    for (extra, key, reason) in [
        (
            "[filters.f]\nkind = \"regex-rewrite\"\npattern = \"(\"\nsubstitution = \"/\"\n",
            "filters.f.pattern",
            "invalid regex",
        ),
        (
            "[filters.f]\nkind = \"ip-filter\"\nallow = [\"10.0.0.0/8\", \"10.0.0.0/40\"]\n",
            "filters.f.allow[1]",
            "is not an IP address or CIDR block",
        ),
        (
            "[filters.f]\nkind = \"request-headers\"\nset = { \"bad header\" = \"x\" }\n",
            "filters.f.set",
            "`bad header` is not a valid header name",
        ),
        (
            "[filters.f]\nkind = \"response-headers\"\nset = { \"x-a\" = \"{nope}\" }\n",
            "filters.f.set.x-a",
            "unknown variable `{nope}`",
        ),
        (
            "[filters.f]\nkind = \"strip-prefix\"\nprefix = \"api\"\n",
            "filters.f.prefix",
            "must start with `/`",
        ),
        (
            "[filters.f]\nkind = \"redirect\"\nstatus = 200\n",
            "filters.f.status",
            "is not a redirect status",
        ),
        (
            "[filters.f]\nkind = \"body-limit\"\nmax_bytes = 0\n",
            "filters.f.max_bytes",
            "must be ≥ 1",
        ),
        (
            "[filters.f]\nkind = \"cors\"\nallow_origins = [\"*\"]\nallow_credentials = true\n",
            "filters.f.allow_origins[0]",
            "cannot be combined with `allow_credentials`",
        ),
        (
            "[filters.f]\nkind = \"cors\"\nallow_origins = [\"app.example.com/x\"]\n",
            "filters.f.allow_origins[0]",
            "is not an origin",
        ),
        (
            "[filters.f]\nkind = \"compress\"\nalgorithms = [\"gzip\", \"lz4\"]\n",
            "filters.f.algorithms[1]",
            "`lz4` is not one of",
        ),
        (
            "[filters.f]\nkind = \"forwarded\"\ntrusted_proxies = [\"proxy.local\"]\n",
            "filters.f.trusted_proxies[0]",
            "is not an IP address or CIDR block",
        ),
        (
            "[[routes]]\npool = \"p\"\nfilters = [\"missing\"]\n",
            "routes[0].filters[0]",
            "unknown filter `missing`",
        ),
        (
            "[filters.f]\nkind = \"gzip\"\n",
            "line",
            "unknown variant `gzip`",
        ),
    ] {
        let text = format!("{base}{extra}");
        let err = Config::parse(
            &text,
            Path::new("f.toml"),
            Path::new("."),
            &switchyard::loaders::Loaders,
        )
        .expect_err(extra)
        .to_string();
        assert!(err.starts_with("f.toml: "), "{err}");
        assert!(err.contains(key), "{key}: {err}");
        assert!(err.contains(reason), "{reason}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_are_managed_through_the_admin_api() {
    use reqwest::Method;
    use serde_json::json;

    use crate::admin;
    let upstream = Upstream::start("u0");
    let config = filtered(
        &upstream,
        "[admin]\nlisten = \"127.0.0.1:0\"\n",
        "[[routes]]\npool = \"p\"\n",
    );
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(&dir, &config);
    let api = proxy.admin_url();
    let client = crate::client();
    let path_seen =
        |response: &reqwest::Response| header(response, "x-upstream-path").map(str::to_owned);

    let strip = json!({ "kind": "strip-prefix", "prefix": "/v1" });
    let (status, body) = admin(Method::PUT, &format!("{api}/v1/filters/strip"), Some(strip)).await;
    assert_eq!(status, 201, "{body}");
    let route = json!({ "pool": "p", "filters": ["strip"] });
    let (status, body) = admin(Method::PUT, &format!("{api}/v1/routes/0"), Some(route)).await;
    assert_eq!(status, 200, "{body}");
    let response = client
        .get(format!("{}/v1/x", proxy.url))
        .send()
        .await
        .unwrap();
    assert_eq!(path_seen(&response).as_deref(), Some("/x"));
    // Replaced: the route applies the new filter from its next request.
    let strip = json!({ "kind": "strip-prefix", "prefix": "/v1/x" });
    let (status, _) = admin(Method::PUT, &format!("{api}/v1/filters/strip"), Some(strip)).await;
    assert_eq!(status, 200);
    let response = client
        .get(format!("{}/v1/x/y", proxy.url))
        .send()
        .await
        .unwrap();
    assert_eq!(path_seen(&response).as_deref(), Some("/y"));
    let (_, status) = admin(Method::GET, &format!("{api}/v1/status"), None).await;
    assert_eq!(status["routes"][0]["filters"], json!(["strip"]), "{status}");

    // Refused, and nothing changes: an invalid filter, one in use.
    let bad = json!({ "kind": "ip-filter", "allow": ["10.0.0.0/99"] });
    let (status, body) = admin(Method::PUT, &format!("{api}/v1/filters/bad"), Some(bad)).await;
    assert_eq!(status, 422, "{body}");
    assert!(body.to_string().contains("filters.bad.allow[0]"), "{body}");
    let (status, body) = admin(Method::DELETE, &format!("{api}/v1/filters/strip"), None).await;
    assert_eq!(status, 409, "{body}");
    assert!(body.to_string().contains("routes[0]"), "{body}");
    let (status, _) = admin(Method::GET, &format!("{api}/v1/filters/bad"), None).await;
    assert_eq!(status, 404);

    // A filter plugin: a component that is not a filter is refused naming
    // the filter and what the file exports; a filter is loaded and applies.
    use switchyard_tests::fixtures::{CANARY_SPLIT, TEST_FILTER};
    let not_a_filter = json!({ "kind": "plugin", "plugin": { "path": CANARY_SPLIT } });
    let (status, body) = admin(
        Method::PUT,
        &format!("{api}/v1/filters/guard"),
        Some(not_a_filter),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    let text = body.to_string();
    assert!(
        text.contains("filters.guard.plugin") && text.contains("switchyard:plugin/filter@0.1.3"),
        "{body}"
    );
    let guard = json!({ "kind": "plugin", "failure_mode": "closed",
                        "plugin": { "path": TEST_FILTER, "config": { "request": "deny" } } });
    let (status, body) = admin(Method::PUT, &format!("{api}/v1/filters/guard"), Some(guard)).await;
    assert_eq!(status, 201, "{body}");
    let route = json!({ "pool": "p", "filters": ["guard"] });
    let (status, body) = admin(Method::PUT, &format!("{api}/v1/routes/0"), Some(route)).await;
    assert_eq!(status, 200, "{body}");
    let response = client.get(format!("{}/x", proxy.url)).send().await.unwrap();
    assert_eq!(response.status(), 403);

    let route = json!({ "pool": "p" });
    admin(Method::PUT, &format!("{api}/v1/routes/0"), Some(route)).await;
    for filter in ["strip", "guard"] {
        let (status, _) = admin(Method::DELETE, &format!("{api}/v1/filters/{filter}"), None).await;
        assert_eq!(status, 204, "{filter}");
    }
    let (_, filters) = admin(Method::GET, &format!("{api}/v1/filters"), None).await;
    assert_eq!(filters, json!({}));
}

/// A page that, from its own origin (`http://localhost:PORT`), PUTs with a
/// custom header (so the browser sends a preflight) to two routes of the
/// same Switchyard on another origin (`http://127.0.0.1:PORT`), and writes
/// what each fetch got into its title as JSON.
const CORS_PAGE: &str = r#"<!doctype html><title></title><script>
const api = "http://127.0.0.1:" + location.port;
(async () => {
  const out = {};
  for (const name of ["open", "closed"]) {
    try {
      const r = await fetch(api + "/api/" + name, { method: "PUT", headers: { "x-custom": "1" }, body: "hi" });
      out[name] = r.status + " " + (await r.text());
    } catch (e) {
      out[name] = "blocked";
    }
  }
  document.title = JSON.stringify(out);
})();
</script>"#;

#[test]
fn a_browser_reads_only_what_cors_allows_its_origin() {
    let upstream = Upstream::start("u0");
    let page = serde_json::to_string(CORS_PAGE).unwrap();
    let config = filtered(
        &upstream,
        &format!(
            r#"
[filters.page]
kind = "respond"
content_type = "text/html; charset=utf-8"
body = {page}
[filters.cors-open]
kind = "cors"
allow_origins = ["https://app.example.com", "http://localhost:*"]
allow_methods = ["GET", "PUT"]
allow_headers = ["x-custom"]
max_age_s = 600
[filters.cors-closed]
kind = "cors"
allow_origins = ["https://app.example.com"]
allow_methods = ["GET", "PUT"]
allow_headers = ["x-custom"]
"#
        ),
        r#"
[[routes]]
match = { path_prefix = "/page" }
pool = "p"
filters = ["page"]
[[routes]]
match = { path_prefix = "/api/open" }
pool = "p"
filters = ["cors-open"]
[[routes]]
match = { path_prefix = "/api/closed" }
pool = "p"
filters = ["cors-closed"]
"#,
    );
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(&dir, &config);
    let page_url = proxy.url.replace("127.0.0.1", "localhost") + "/page";
    let harness = crate::dashboard::browser_harness();
    let output = std::process::Command::new("node")
        .arg(harness.join("cors.mjs"))
        .arg(&page_url)
        .output()
        .expect("node (Debian: apt-get install nodejs)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the browser run failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seen: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    // The upstream answers a request with a body with that body.
    assert_eq!(seen["open"], "200 hi", "{seen}");
    assert_eq!(seen["closed"], "blocked", "{seen}");
    // Both preflights were answered at the gateway; the refused origin's
    // PUT was never sent.
    assert_eq!(upstream.hits(), 1, "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_headers_follow_the_fetch_standard() {
    let upstream = Upstream::start("u0");
    let config = filtered(
        &upstream,
        r#"
[filters.named]
kind = "cors"
allow_origins = ["https://*.example.com"]
allow_methods = ["GET", "DELETE"]
allow_headers = ["x-custom", "content-type"]
expose_headers = ["x-upstream"]
allow_credentials = true
max_age_s = 600
[filters.anyone]
kind = "cors"
allow_origins = ["*"]
allow_headers = ["*"]
"#,
        r#"
[[routes]]
match = { path_prefix = "/named" }
pool = "p"
filters = ["named"]
[[routes]]
pool = "p"
filters = ["anyone"]
"#,
    );
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(&dir, &config);
    let client = crate::client();
    let preflight = |path: &str, origin: &str| {
        client
            .request(reqwest::Method::OPTIONS, format!("{}{path}", proxy.url))
            .header("origin", origin)
            .header("access-control-request-method", "DELETE")
            .header("access-control-request-headers", "x-custom")
            .send()
    };

    let response = preflight("/named/x", "https://app.example.com")
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert_eq!(
        header(&response, "access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(
        header(&response, "access-control-allow-methods"),
        Some("GET, DELETE")
    );
    assert_eq!(
        header(&response, "access-control-allow-headers"),
        Some("x-custom, content-type")
    );
    assert_eq!(
        header(&response, "access-control-allow-credentials"),
        Some("true")
    );
    assert_eq!(header(&response, "access-control-max-age"), Some("600"));
    let response = preflight("/named/x", "https://example.org").await.unwrap();
    assert_eq!(response.status(), 204);
    assert_eq!(header(&response, "access-control-allow-origin"), None);
    assert_eq!(upstream.hits(), 0, "preflights are answered at the gateway");

    let response = client
        .get(format!("{}/named/x", proxy.url))
        .header("origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(&response, "access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(
        header(&response, "access-control-expose-headers"),
        Some("x-upstream")
    );
    let vary: Vec<&str> = response
        .headers()
        .get_all("vary")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    assert!(vary.contains(&"origin"), "{vary:?}");
    // No Origin: no CORS headers; any origin without credentials: `*`,
    // and a preflight gets back the headers it asked for.
    let response = client
        .get(format!("{}/named/x", proxy.url))
        .send()
        .await
        .unwrap();
    assert_eq!(header(&response, "access-control-allow-origin"), None);
    let response = preflight("/any", "https://whoever.test").await.unwrap();
    assert_eq!(header(&response, "access-control-allow-origin"), Some("*"));
    assert_eq!(
        header(&response, "access-control-allow-headers"),
        Some("x-custom")
    );
    assert_eq!(header(&response, "access-control-allow-credentials"), None);
}

/// `curl --compressed` asking for `encoding` at `url`: the answer's
/// headers (lowercase) and its body as curl decoded it.
fn curl_compressed(url: &str, encoding: &str, dir: &std::path::Path) -> (String, Vec<u8>) {
    let (head, body) = (dir.join("head"), dir.join("body"));
    let status = std::process::Command::new("curl")
        .args(["-s", "--compressed", "-H"])
        .arg(format!("accept-encoding: {encoding}"))
        .arg("-D")
        .arg(&head)
        .arg("-o")
        .arg(&body)
        .arg(url)
        .status()
        .expect("curl");
    assert!(status.success(), "curl {url}");
    (
        std::fs::read_to_string(head).unwrap().to_ascii_lowercase(),
        std::fs::read(body).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_are_compressed_as_the_client_accepts() {
    let upstream = Upstream::start("u0");
    // 64 KiB of text, not all alike.
    let text: String = (0..5000)
        .map(|i| format!("line {i:09}\n"))
        .collect::<String>()[..65536]
        .to_string();
    upstream.set_body(&text);
    upstream.set_response_header("content-type", "text/plain; charset=utf-8");
    let config = filtered(
        &upstream,
        "[filters.squeeze]\nkind = \"compress\"\n\
         [filters.only-big]\nkind = \"compress\"\nmin_bytes = 1000000\n",
        "[[routes]]\nmatch = { path_prefix = \"/big\" }\npool = \"p\"\nfilters = [\"only-big\"]\n\
         [[routes]]\npool = \"p\"\nfilters = [\"squeeze\"]\n",
    );
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(&dir, &config);
    let url = format!("{}/text", proxy.url);
    for encoding in ["gzip", "br", "zstd"] {
        let (head, body) = curl_compressed(&url, encoding, dir.path());
        assert!(
            head.contains(&format!("content-encoding: {encoding}")),
            "{head}"
        );
        assert!(head.contains("vary: accept-encoding"), "{head}");
        assert!(!head.contains("content-length"), "{head}");
        assert!(
            body == text.as_bytes(),
            "{encoding}: the decoded answer differs"
        );
    }
    // The client's preference, then the operator's order.
    let (head, _) = curl_compressed(&url, "gzip;q=0.5, br", dir.path());
    assert!(head.contains("content-encoding: br"), "{head}");
    // Not accepted, too small, a HEAD: as the upstream sent it.
    let (head, body) = curl_compressed(&url, "identity", dir.path());
    assert!(!head.contains("content-encoding"), "{head}");
    assert!(head.contains("vary: accept-encoding"), "{head}");
    assert!(body == text.as_bytes());
    let (head, _) = curl_compressed(&format!("{}/big", proxy.url), "gzip", dir.path());
    assert!(!head.contains("content-encoding"), "{head}");
    let response = crate::client()
        .head(&url)
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&response, "content-encoding"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_gets_an_id_upstream_and_back() {
    let upstream = Upstream::start("u0");
    let config = filtered(
        &upstream,
        "[filters.id]\nkind = \"request-id\"\n\
         [filters.fresh-id]\nkind = \"request-id\"\nheader = \"x-trace\"\nkeep = false\n",
        "[[routes]]\nmatch = { path_prefix = \"/fresh\" }\npool = \"p\"\nfilters = [\"fresh-id\"]\n\
         [[routes]]\npool = \"p\"\nfilters = [\"id\"]\n",
    );
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(&dir, &config);
    let client = crate::client();
    let mut ids = Vec::new();
    for _ in 0..2 {
        let response = client.get(format!("{}/", proxy.url)).send().await.unwrap();
        let id = header(&response, "x-request-id")
            .unwrap_or_default()
            .to_string();
        assert!(
            id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
            "{id}"
        );
        assert_eq!(header(&response, "x-seen-x-request-id"), Some(id.as_str()));
        ids.push(id);
    }
    assert_ne!(ids[0], ids[1]);
    // The client's id is kept, unless the filter says not to.
    let response = client
        .get(format!("{}/", proxy.url))
        .header("x-request-id", "client-42")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&response, "x-request-id"), Some("client-42"));
    assert_eq!(header(&response, "x-seen-x-request-id"), Some("client-42"));
    let response = client
        .get(format!("{}/fresh", proxy.url))
        .header("x-trace", "client-42")
        .send()
        .await
        .unwrap();
    let id = header(&response, "x-trace").unwrap_or_default();
    assert_ne!(id, "client-42");
    assert_eq!(header(&response, "x-seen-x-trace"), Some(id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_with_too_many_or_too_large_headers_get_431() {
    let upstream = Upstream::start("u0");
    let config = filtered(
        &upstream,
        "[filters.heads]\nkind = \"header-limit\"\nmax_headers = 8\nmax_header_bytes = 300\n",
        "[[routes]]\npool = \"p\"\nfilters = [\"heads\"]\n",
    );
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(&dir, &config);
    let client = crate::client();
    let url = format!("{}/", proxy.url);
    assert_eq!(client.get(&url).send().await.unwrap().status(), 200);
    let mut many = client.get(&url);
    for i in 0..10 {
        many = many.header(format!("x-h{i}"), "1");
    }
    let response = many.send().await.unwrap();
    assert_eq!(response.status(), 431);
    let body: serde_json::Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    assert_eq!(body["error"], "request_header_fields_too_large", "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("8 fields"),
        "{body}"
    );
    let response = client
        .get(&url)
        .header("x-big", "b".repeat(400))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 431);
    assert_eq!(upstream.hits(), 1, "refused before the pool");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_filters_snippet_does_what_it_says() {
    let snippet = crate::readme_snippet("#### Filters");
    let upstream = Upstream::start("u0");
    let config = format!(
        "[[listeners]]\nlisten = \"127.0.0.1:0\"\n{snippet}\n[pools.api]\ninstances = [{{ url = \"{}\" }}]\n",
        upstream.url()
    );
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(&dir, &config);
    let response = crate::client()
        .get(format!("{}/api/users", proxy.url))
        .header("origin", "https://app.example.com")
        .header("cookie", "a=1")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&response, "x-upstream-path"), Some("/users"));
    assert_eq!(header(&response, "x-seen-x-client-ip"), Some("127.0.0.1"));
    assert_eq!(header(&response, "x-seen-cookie"), None);
    assert_eq!(
        header(&response, "access-control-allow-origin"),
        Some("https://app.example.com")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_are_kept_only_from_trusted_proxies() {
    let upstream = Upstream::start("u0");
    let config = filtered(
        &upstream,
        "[filters.from-anyone]\nkind = \"forwarded\"\nforwarded = true\n\
         [filters.from-us]\nkind = \"forwarded\"\ntrusted_proxies = [\"127.0.0.1\"]\n",
        "[[routes]]\nmatch = { path_prefix = \"/trusted\" }\npool = \"p\"\nfilters = [\"from-us\"]\n\
         [[routes]]\npool = \"p\"\nfilters = [\"from-anyone\"]\n",
    );
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(&dir, &config);
    let client = crate::client();
    let send = |path: &str| {
        client
            .get(format!("{}{path}", proxy.url))
            .header("x-forwarded-for", "203.0.113.9")
            .header("x-forwarded-host", "spoofed.example")
            .header("forwarded", "for=203.0.113.9")
            .send()
    };
    let authority = proxy.url.trim_start_matches("http://").to_string();
    // This client (127.0.0.1) is not trusted here: what it claimed is gone.
    let response = send("/").await.unwrap();
    assert_eq!(
        header(&response, "x-seen-x-forwarded-for"),
        Some("127.0.0.1")
    );
    assert_eq!(
        header(&response, "x-seen-x-forwarded-host"),
        Some(authority.as_str())
    );
    assert_eq!(
        header(&response, "x-seen-forwarded"),
        Some(format!("for=127.0.0.1;proto=http;host=\"{authority}\"").as_str())
    );
    // Trusted: its headers stay, and this hop is added.
    let response = send("/trusted").await.unwrap();
    assert_eq!(
        header(&response, "x-seen-x-forwarded-for"),
        Some("203.0.113.9, 127.0.0.1")
    );
    assert_eq!(
        header(&response, "x-seen-x-forwarded-host"),
        Some("spoofed.example")
    );
    assert_eq!(
        header(&response, "x-seen-forwarded"),
        Some("for=203.0.113.9")
    );
}

/// `data` encoded as `encoding` (`gzip`, `br`, `zstd`), with
/// async-compression's encoders (the codecs' reference implementations
/// underneath: flate2, brotli, zstd).
async fn encoded(data: &[u8], encoding: &str) -> Vec<u8> {
    use async_compression::tokio::bufread::{BrotliEncoder, GzipEncoder, ZstdEncoder};
    use tokio::io::AsyncReadExt as _;
    let mut out = Vec::new();
    match encoding {
        "gzip" => GzipEncoder::new(data).read_to_end(&mut out).await,
        "br" => BrotliEncoder::new(data).read_to_end(&mut out).await,
        _ => ZstdEncoder::new(data).read_to_end(&mut out).await,
    }
    .unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_are_decoded_when_a_route_says_so() {
    let upstream = Upstream::start("u0");
    let config = filtered(
        &upstream,
        "[filters.inflate]\nkind = \"decompress\"\nmax_decoded_bytes = 100000\n",
        r#"
[[routes]]
match = { path_prefix = "/inflate" }
pool = "p"
filters = ["inflate"]
[[routes]]
pool = "p"
"#,
    );
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(&dir, &config);
    let client = crate::client();
    let text: Vec<u8> = (0..5000)
        .flat_map(|i| format!("line {i}\n").into_bytes())
        .collect();
    for encoding in ["gzip", "br", "zstd"] {
        let body = encoded(&text, encoding).await;
        assert!(body.len() < text.len() / 2, "{encoding} compresses");
        let response = client
            .post(format!("{}/inflate", proxy.url))
            .header("content-encoding", encoding)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{encoding}");
        assert_eq!(header(&response, "x-seen-content-encoding"), None);
        assert_eq!(
            response.bytes().await.unwrap().as_ref(),
            text.as_slice(),
            "{encoding}: the upstream got the decoded body, byte for byte"
        );
        // A route without the filter passes the body as it is.
        let response = client
            .post(format!("{}/else", proxy.url))
            .header("content-encoding", encoding)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(header(&response, "x-seen-content-encoding"), Some(encoding));
        assert!(response.bytes().await.unwrap().len() < text.len() / 2);
    }
    // A body that decodes past the bound: 413, however small as sent.
    let bomb = encoded(&vec![b'x'; 1 << 20], "gzip").await;
    assert!(bomb.len() < 10_000);
    let response = client
        .post(format!("{}/inflate", proxy.url))
        .header("content-encoding", "gzip")
        .body(bomb)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    // Bytes that are not what the header says: 400.
    let response = client
        .post(format!("{}/inflate", proxy.url))
        .header("content-encoding", "gzip")
        .body("not gzip at all")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: serde_json::Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("not valid gzip")),
        "{body}"
    );
}
