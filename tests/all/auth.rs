//! Authentication filters through a real `switchyard`, with curl as the
//! client and a real upstream: API keys made by `switchyard api-key new`.

use serde_json::json;
use switchyard_tests::upstream::Upstream;

use crate::{BINARY, admin, serve};

/// What curl printed for one request: status, head (lower-case, and as
/// sent), body.
pub(crate) struct Curl {
    pub(crate) status: u16,
    head: String,
    sent: String,
    pub(crate) body: String,
}

impl Curl {
    /// The value of response header `name` (lower case), lower-cased, if
    /// sent.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        field(&self.head, name)
    }

    /// The value of response header `name` (lower case) as sent (a
    /// session id, whose case matters).
    pub(crate) fn header_as_sent(&self, name: &str) -> Option<&str> {
        field(&self.sent, name)
    }
}

/// The value of the field `name` (lower case) of `head`.
fn field<'h>(head: &'h str, name: &str) -> Option<&'h str> {
    head.lines().find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// `curl -si URL ARGS…`.
pub(crate) async fn curl(url: String, args: &[&str]) -> Curl {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("curl")
            .args(["-sSi", "--max-time", "30"])
            .args(&args)
            .arg(&url)
            .output()
            .expect("curl")
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "no status in {text:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
    Curl {
        status,
        head: head.to_ascii_lowercase(),
        sent: head.to_owned(),
        body: body.to_string(),
    }
}

/// `switchyard api-key new`: the key and its digest.
pub(crate) fn new_key() -> (String, String) {
    let output = std::process::Command::new(BINARY)
        .args(["api-key", "new"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| panic!("no {name} in {text}"))
    };
    (field("key:"), field("digest:"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_name_principals_and_never_reach_the_upstream() {
    let upstream = Upstream::start("u0");
    let (alice_old, alice_old_digest) = new_key();
    let (alice_new, alice_new_digest) = new_key();
    let (bob, bob_digest) = new_key();
    let config = format!(
        r#"
[[listeners]]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"

[filters.keys]
kind = "api-key"
query = "api_key"
principals = [
  {{ id = "alice", keys = ["{alice_old_digest}", "{alice_new_digest}"], metadata = {{ team = "a" }} }},
  {{ id = "bob", keys = ["{bob_digest}"] }},
]

[filters.maybe-keys]
kind = "api-key"
mode = "optional"
principals = [{{ id = "bob", keys = ["{bob_digest}"] }}]

[filters.whoami]
kind = "request-headers"
set = {{ "x-principal" = "{{principal}}" }}

[[routes]]
match = {{ path_prefix = "/open" }}
pool = "p"
filters = ["maybe-keys", "whoami"]

[[routes]]
pool = "p"
filters = ["keys", "whoami"]

[pools.p]
instances = [{{ url = "{}" }}]
"#,
        upstream.url()
    );
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(&dir, &config);
    let url = |path: &str| format!("{}{path}", proxy.url);

    // No key, a wrong one: 401 with a challenge, the upstream not asked.
    for args in [vec![], vec!["-H", "x-api-key: sy_not-a-key"]] {
        let answer = curl(url("/orders"), &args).await;
        assert_eq!(answer.status, 401, "{args:?}: {}", answer.body);
        assert_eq!(
            answer.header("www-authenticate"),
            Some(r#"apikey realm="switchyard""#)
        );
        let body: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
        assert_eq!(body["error"], "unauthorized", "{body}");
    }
    assert_eq!(upstream.hits(), 0);

    // Either of alice's keys (a rotation's overlap) is alice; the key is
    // taken out of the request before it goes upstream.
    for key in [&alice_old, &alice_new] {
        let answer = curl(url("/orders"), &["-H", &format!("x-api-key: {key}")]).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(answer.header("x-seen-x-principal"), Some("alice"));
        assert_eq!(
            answer.header("x-seen-x-api-key"),
            None,
            "the key went upstream"
        );
    }
    // From the opt-in query parameter, taken out of the query.
    let answer = curl(url(&format!("/orders?page=2&api_key={bob}")), &[]).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.header("x-seen-x-principal"), Some("bob"));
    assert_eq!(answer.header("x-upstream-path"), Some("/orders?page=2"));

    // Optional: no key passes without a principal; a bad key is still 401.
    let answer = curl(url("/open"), &[]).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.header("x-seen-x-principal"), Some(""));
    let answer = curl(url("/open"), &["-H", "x-api-key: nope"]).await;
    assert_eq!(answer.status, 401);
    let answer = curl(url("/open"), &["-H", &format!("x-api-key: {bob}")]).await;
    assert_eq!(answer.header("x-seen-x-principal"), Some("bob"));

    // Counted by decision.
    let metrics = curl(format!("{}/metrics", proxy.admin_url()), &[])
        .await
        .body;
    for line in [
        r#"switchyard_auth_decisions_total{route="1",filter="keys",decision="missing"} 1"#,
        r#"switchyard_auth_decisions_total{route="1",filter="keys",decision="invalid"} 1"#,
        r#"switchyard_auth_decisions_total{route="1",filter="keys",decision="authenticated"} 3"#,
        r#"switchyard_auth_decisions_total{route="0",filter="maybe-keys",decision="anonymous"} 1"#,
        r#"switchyard_filter_answers_total{route="1",filter="keys",answer="unauthorized"} 2"#,
        r#"switchyard_principal_requests_total{route="1",filter="keys",principal="alice"} 2"#,
        r#"switchyard_principal_requests_total{route="1",filter="keys",principal="bob"} 1"#,
        r#"switchyard_principal_requests_total{route="0",filter="maybe-keys",principal="bob"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} in:\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn principals_and_their_keys_are_managed_through_the_admin_api() {
    use reqwest::Method;
    let upstream = Upstream::start("u0");
    let (ann_old, ann_old_digest) = new_key();
    let config = format!(
        r#"
[[listeners]]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"

[filters.keys]
kind = "api-key"
principals = [{{ id = "ann", keys = ["{ann_old_digest}"] }}]

[filters.whoami]
kind = "request-headers"
set = {{ "x-principal" = "{{principal}}" }}

[[routes]]
pool = "p"
filters = ["keys", "whoami"]

[pools.p]
instances = [{{ url = "{}" }}]
"#,
        upstream.url()
    );
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(&dir, &config);
    let api = format!("{}/v1/filters/keys/principals", proxy.admin_url());
    let who = async |key: &str| {
        let answer = curl(
            format!("{}/orders", proxy.url),
            &["-H", &format!("x-api-key: {key}")],
        )
        .await;
        (
            answer.status,
            answer.header("x-seen-x-principal").map(str::to_owned),
        )
    };

    // A rotation: a new key made for ann, both work, the old one's
    // digest deleted, only the new one works.
    let (status, made) = admin(Method::POST, &format!("{api}/ann/keys"), None).await;
    assert_eq!(status, 201, "{made}");
    let ann_new = made["key"].as_str().unwrap().to_owned();
    assert_eq!(made["digest"].as_str().unwrap().len(), 71, "{made}");
    assert_eq!(who(&ann_old).await, (200, Some("ann".into())));
    assert_eq!(who(&ann_new).await, (200, Some("ann".into())));
    let (status, body) = admin(
        Method::DELETE,
        &format!("{api}/ann/keys/{ann_old_digest}"),
        None,
    )
    .await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(who(&ann_old).await.0, 401);
    assert_eq!(who(&ann_new).await, (200, Some("ann".into())));

    // A principal added with a key of its own digest, then deleted.
    let (bob, bob_digest) = new_key();
    let (status, body) = admin(
        Method::PUT,
        &format!("{api}/bob"),
        Some(json!({ "keys": [bob_digest], "scopes": ["read"] })),
    )
    .await;
    assert_eq!((status, &body["id"]), (201, &json!("bob")), "{body}");
    assert_eq!(who(&bob).await, (200, Some("bob".into())));
    // The list holds digests, never a key.
    let (status, list) = admin(Method::GET, &api, None).await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["id"].as_str())
        .collect();
    assert_eq!(ids, ["ann", "bob"], "{list}");
    assert!(!list.to_string().contains(&ann_new), "{list}");
    let (status, _) = admin(Method::DELETE, &format!("{api}/bob"), None).await;
    assert_eq!(status, 204);
    assert_eq!(who(&bob).await.0, 401);

    // Refused, nothing changed: a digest that is not one (naming the
    // key), ann's last key, a filter that is not an api-key filter, a
    // principal that does not exist.
    let (status, body) = admin(
        Method::PUT,
        &format!("{api}/cy"),
        Some(json!({ "keys": ["md5:00"] })),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body.to_string()
            .contains("filters.keys.principals[1].keys[0]"),
        "{body}"
    );
    let last = made["digest"].as_str().unwrap();
    let (status, body) = admin(Method::DELETE, &format!("{api}/ann/keys/{last}"), None).await;
    assert_eq!(status, 422, "{body}");
    let whoami = format!("{}/v1/filters/whoami/principals", proxy.admin_url());
    assert_eq!(admin(Method::GET, &whoami, None).await.0, 404);
    assert_eq!(
        admin(Method::POST, &format!("{api}/nobody/keys"), None)
            .await
            .0,
        404
    );
    assert_eq!(who(&ann_new).await, (200, Some("ann".into())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_api_key_snippet_does_what_it_says() {
    let snippet = crate::readme_snippet("**API keys.**");
    let upstream = Upstream::start("u0");
    let config = format!(
        "[[listeners]]\nlisten = \"127.0.0.1:0\"\n{snippet}\n[pools.api]\ninstances = [{{ url = \"{}\" }}]\n",
        upstream.url()
    );
    let dir = tempfile::tempdir().unwrap();
    let proxy = serve(&dir, &config);
    let answer = curl(
        format!("{}/invoices", proxy.url),
        &["-H", "x-api-key: sy_example-key-replace-me"],
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.header("x-seen-x-principal"), Some("billing"));
    let answer = curl(format!("{}/invoices", proxy.url), &[]).await;
    assert_eq!(answer.status, 401);
    assert_eq!(upstream.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verified_client_certificate_is_the_principal_and_its_absence_is_refused() {
    use crate::tls::{cert_table, client_cert, curl as curl_tls, port};
    use switchyard_tests::pki::{Pki, Usage};
    let dir = tempfile::tempdir().unwrap();
    let site = Pki::new(dir.path(), "site");
    let server = site.issue("server", "a.test", &["a.test"], Usage::Server, false);
    let clients = Pki::new(dir.path(), "clients");
    let alice = clients.issue(
        "alice",
        "alice",
        &["spiffe://test/alice"],
        Usage::Client,
        false,
    );
    let upstream = Upstream::start("u0");
    let config = format!(
        "[[listeners]]\nlisten = \"127.0.0.1:0\"\n\
         tls = {{ certificates = [{}], client_ca_file = \"{}\", client_auth = \"optional\" }}\n\
         [filters.mtls]\nkind = \"client-cert\"\n\
         [filters.whoami]\nkind = \"request-headers\"\nset = {{ \"x-principal\" = \"{{principal}}\" }}\n\
         [[routes]]\npool = \"p\"\nfilters = [\"mtls\", \"whoami\"]\n\
         [pools.p]\ninstances = [{{ url = \"{}\" }}]\n",
        cert_table(&server),
        clients.ca_file().display(),
        upstream.url()
    );
    let proxy = serve(&dir, &config);
    let at = port(&proxy.url);
    let ca = site.ca_file();
    let (ok, out, err) = curl_tls("a.test", at, "/", &ca, &client_cert(&alice)).await;
    assert!(ok, "{err}");
    let out = out.to_lowercase();
    assert!(
        out.contains("x-seen-x-principal: spiffe://test/alice"),
        "{out}"
    );
    // The listener lets a client without a certificate in (`optional`);
    // the route's filter does not.
    let (_, out, _) = curl_tls("a.test", at, "/", &ca, &[]).await;
    assert!(out.starts_with("HTTP/2 403"), "{out}");
    assert!(
        out.contains("a verified client certificate is needed"),
        "{out}"
    );
    assert_eq!(upstream.hits(), 1);
}

#[test]
fn bad_api_key_filters_are_refused_naming_the_key() {
    let digest = format!("sha256:{}", "ab".repeat(32));
    for (filter, key, reason) in [
        (
            r#"principals = [{ id = "a", keys = ["md5:abc"] }]"#.to_string(),
            "filters.keys.principals[0].keys[0]",
            "is not `sha256:` and 64 hex digits",
        ),
        (
            format!(
                r#"principals = [{{ id = "a", keys = ["{digest}"] }}, {{ id = "b", keys = ["{digest}"] }}]"#
            ),
            "filters.keys.principals[1].keys[0]",
            "the same key is already `a`'s",
        ),
        (
            r#"principals = []"#.to_string(),
            "filters.keys.principals",
            "give at least one",
        ),
        (
            format!(
                r#"header = "x api key"
principals = [{{ id = "a", keys = ["{digest}"] }}]"#
            ),
            "filters.keys.header",
            "is not a valid header name",
        ),
    ] {
        crate::assert_filter_refused("keys", "api-key", &filter, key, reason);
    }
}

/// A token signed by `key` (`kid` in its header) with `claims`.
fn token(key: &switchyard_tests::jwt::SigningKey, kid: &str, claims: &serde_json::Value) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some(kid.to_string());
    let signing = jsonwebtoken::EncodingKey::from_ec_der(&key.der);
    jsonwebtoken::encode(&header, claims, &signing).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwts_are_verified_against_the_issuers_keys_and_bad_ones_never_reach_the_upstream() {
    use base64::Engine as _;
    let upstream = Upstream::start("u0");
    let issuer_key = switchyard_tests::jwt::es256("k1");
    let stranger = switchyard_tests::jwt::es256("k1");
    let jwks = serde_json::json!({ "keys": [issuer_key.jwk] }).to_string();
    let config = format!(
        r#"
[[listeners]]
listen = "127.0.0.1:0"

[filters.jwt]
kind = "jwt"
providers = [
  {{ issuer = "https://auth.test", audiences = ["https://api.test"], jwks = '{jwks}', claims_to_headers = {{ "x-tenant" = "tenant" }} }},
  {{ issuer = "https://files.test", audiences = ["https://api.test"], jwks_file = "files-jwks.json" }},
]

[filters.whoami]
kind = "request-headers"
set = {{ "x-principal" = "{{principal}}" }}

[[routes]]
pool = "p"
filters = ["jwt", "whoami"]

[pools.p]
instances = [{{ url = "{}" }}]
"#,
        upstream.url()
    );
    let dir = tempfile::tempdir().unwrap();
    // The second issuer's keys in a file beside the config.
    let files_key = switchyard_tests::jwt::es256("f1");
    std::fs::write(
        dir.path().join("files-jwks.json"),
        serde_json::json!({ "keys": [files_key.jwk] }).to_string(),
    )
    .unwrap();
    let proxy = serve(&dir, &config);
    let url = format!("{}/orders", proxy.url);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = |iss: &str, aud: &str, exp: u64| serde_json::json!({ "iss": iss, "aud": aud, "exp": exp, "sub": "svc-billing", "tenant": "acme", "scope": "orders:read" });
    let good = token(
        &issuer_key,
        "k1",
        &claims("https://auth.test", "https://api.test", now + 600),
    );
    let answer = curl(
        url.clone(),
        &[
            "-H",
            &format!("authorization: Bearer {good}"),
            "-H",
            "x-tenant: forged",
        ],
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.header("x-seen-x-principal"), Some("svc-billing"));
    assert_eq!(
        answer.header("x-seen-x-tenant"),
        Some("acme"),
        "from the claim, not the client"
    );
    assert_eq!(
        answer.header("x-seen-authorization"),
        None,
        "the token went upstream"
    );
    // The second issuer, its keys read from its file.
    let other = token(
        &files_key,
        "f1",
        &claims("https://files.test", "https://api.test", now + 600),
    );
    let answer = curl(
        url.clone(),
        &["-H", &format!("authorization: Bearer {other}")],
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.header("x-seen-x-principal"), Some("svc-billing"));
    // Again: verified once, remembered (the claims' headers set again).
    let answer = curl(
        url.clone(),
        &["-H", &format!("authorization: Bearer {good}")],
    )
    .await;
    assert_eq!(answer.header("x-seen-x-principal"), Some("svc-billing"));
    assert_eq!(answer.header("x-seen-x-tenant"), Some("acme"));

    // No token: the challenge; bad tokens: `invalid_token`. None reaches
    // the upstream.
    let answer = curl(url.clone(), &[]).await;
    assert_eq!(answer.status, 401);
    assert_eq!(
        answer.header("www-authenticate"),
        Some(r#"bearer realm="switchyard""#)
    );
    let b64 = |text: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text);
    let unsigned = format!(
        "{}.{}.",
        b64(r#"{"alg":"none","typ":"JWT"}"#),
        b64(&claims("https://auth.test", "https://api.test", now + 600).to_string())
    );
    for (what, bad) in [
        (
            "expired",
            token(
                &issuer_key,
                "k1",
                &claims("https://auth.test", "https://api.test", now - 3600),
            ),
        ),
        (
            "another audience",
            token(
                &issuer_key,
                "k1",
                &claims("https://auth.test", "https://other.test", now + 600),
            ),
        ),
        (
            "another issuer",
            token(
                &issuer_key,
                "k1",
                &claims("https://evil.test", "https://api.test", now + 600),
            ),
        ),
        (
            "another key, same kid",
            token(
                &stranger,
                "k1",
                &claims("https://auth.test", "https://api.test", now + 600),
            ),
        ),
        (
            "an unknown kid",
            token(
                &stranger,
                "k9",
                &claims("https://auth.test", "https://api.test", now + 600),
            ),
        ),
        ("alg none", unsigned),
        ("garbage", "not.a.token".to_string()),
    ] {
        let answer = curl(
            url.clone(),
            &["-H", &format!("authorization: Bearer {bad}")],
        )
        .await;
        assert_eq!(answer.status, 401, "{what}: {}", answer.body);
        assert_eq!(
            answer.header("www-authenticate"),
            Some(r#"bearer realm="switchyard", error="invalid_token""#),
            "{what}"
        );
    }
    assert_eq!(upstream.hits(), 3);
}

#[test]
fn a_jwt_filter_with_a_bad_jwks_is_refused_naming_the_key() {
    let hmac = r#"{"keys":[{"kty":"oct","k":"c2VjcmV0","alg":"HS256"}]}"#;
    for (jwks, reason) in [
        ("{", "not a JWKS document"),
        (r#"{"keys":[]}"#, "the JWKS has no keys"),
        (hmac, "keys[0]"),
    ] {
        let key = "filters.jwt.providers[0].jwks";
        crate::assert_filter_refused(
            "jwt",
            "jwt",
            &provider(&format!("jwks = '{jwks}'")),
            key,
            reason,
        );
    }
    for (keys, key, reason) in [
        (
            r#"jwks_file = "/nonexistent/jwks.json""#,
            "filters.jwt.providers[0].jwks_file",
            "/nonexistent/jwks.json",
        ),
        (
            r#"jwks = '{"keys":[]}', jwks_file = "jwks.json""#,
            "filters.jwt.providers[0].jwks",
            "give `jwks`, `jwks_file` or `jwks_url`, one of them",
        ),
        (
            r#"jwks_url = "file:///etc/jwks.json""#,
            "filters.jwt.providers[0].jwks_url",
            "is not an http:// or https:// URL with a host",
        ),
        (
            r#"jwks_url = "https://auth.test/jwks", jwks_refresh_s = 0"#,
            "filters.jwt.providers[0].jwks_refresh_s",
            "must be ≥ 1",
        ),
        (
            &format!("hmac = true, jwks = '{hmac}'"),
            "filters.jwt.providers[0].hmac",
            "HMAC secrets are read from `jwks_file` only",
        ),
    ] {
        crate::assert_filter_refused("jwt", "jwt", &provider(keys), key, reason);
    }
    // A secret shorter than its hash, even opted in.
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("short.json");
    std::fs::write(&short, hmac).unwrap();
    crate::assert_filter_refused(
        "jwt",
        "jwt",
        &provider(&format!("hmac = true, jwks_file = \"{}\"", short.display())),
        "filters.jwt.providers[0].jwks_file",
        "a 6-byte secret is too short for `HS256` (at least 32",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hmac_tokens_are_verified_by_a_provider_that_opts_in() {
    use base64::Engine as _;
    let upstream = Upstream::start("u0");
    let secret: Vec<u8> = (0..32).map(|_| fastrand::u8(..)).collect();
    let dir = tempfile::tempdir().unwrap();
    let jwk = serde_json::json!({ "kty": "oct", "kid": "s1", "alg": "HS256",
        "k": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&secret) });
    std::fs::write(
        dir.path().join("secret.json"),
        serde_json::json!({ "keys": [jwk] }).to_string(),
    )
    .unwrap();
    let proxy = serve(
        &dir,
        &format!(
            "[[listeners]]\nlisten = \"127.0.0.1:0\"\n[[routes]]\npool = \"p\"\nfilters = [\"jwt\"]\n\
             [filters.jwt]\nkind = \"jwt\"\n\
             providers = [{{ issuer = \"https://auth.test\", audiences = [\"a\"], hmac = true, jwks_file = \"secret.json\" }}]\n\
             [pools.p]\ninstances = [{{ url = \"{}\" }}]\n",
            upstream.url()
        ),
    );
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let claims =
        serde_json::json!({ "iss": "https://auth.test", "aud": "a", "exp": exp, "sub": "batch" });
    let signed = |secret: &[u8]| {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = Some("s1".into());
        let token = jsonwebtoken::encode(
            &header,
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(secret).unwrap(),
        )
        .unwrap();
        format!("authorization: Bearer {token}")
    };
    let url = format!("{}/jobs", proxy.url);
    let answer = curl(url.clone(), &["-H", &signed(&secret)]).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    // Another secret's signature is refused.
    let answer = curl(url, &["-H", &signed(&[7u8; 32])]).await;
    assert_eq!(answer.status, 401, "{}", answer.body);
    assert_eq!(upstream.hits(), 1);
}

/// A `jwt` filter's `providers`: one whose keys are `keys` (its `jwks`,
/// `jwks_file` or `jwks_url` setting).
fn provider(keys: &str) -> String {
    format!("providers = [{{ issuer = \"https://auth.test\", audiences = [\"a\"], {keys} }}]")
}
