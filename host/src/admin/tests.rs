//! Every admin resource through the router itself (`oneshot`, no sockets):
//! success, invalid bodies, unknown names, conflicts and the token.

use std::path::Path;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use super::{AdminState, with_state};
use crate::config::Config;
use crate::control::Control;
use crate::plugin::PluginHost;
use crate::store::Store;

const CONFIG: &str = r#"
[[listeners]]
listen = "127.0.0.1:0"
[[routes]]
match = { path_prefix = "/api" }
pool = "web"
[pools.web]
instances = [{ url = "http://127.0.0.1:9001" }, { url = "http://127.0.0.1:9002", weight = 2 }]
[pools.spare]
instances = [{ url = "http://127.0.0.1:9101" }]
"#;

/// An admin API over CONFIG, persisting to a temp dir; `token` if given.
fn api(token: Option<&str>) -> (axum::Router, Arc<Control>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::parse(
        CONFIG,
        Path::new("t.toml"),
        dir.path(),
        &crate::loaders::Loaders,
    )
    .unwrap();
    let control = Arc::new(
        Control::new(
            config,
            PluginHost::new().unwrap(),
            Store::File(Some(dir.path().join("state.json"))),
            0,
        )
        .unwrap(),
    );
    (
        with_state(AdminState::new(Arc::clone(&control), token)),
        control,
        dir,
    )
}

async fn call(
    app: &axum::Router,
    method: &str,
    uri: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    call_with(app, method, uri, body, None).await
}

async fn call_with(
    app: &axum::Router,
    method: &str,
    uri: &str,
    body: Option<Value>,
    token: Option<&str>,
) -> (StatusCode, Value) {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let request = request
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn health_ready_status_and_config() {
    let (app, _, _dir) = api(None);
    assert_eq!(call(&app, "GET", "/health", None).await.0, StatusCode::OK);
    assert_eq!(call(&app, "GET", "/ready", None).await.0, StatusCode::OK);
    let (status, body) = call(&app, "GET", "/v1/status", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["pools"].as_array().map(Vec::len), Some(2));
    let (_, config) = call(&app, "GET", "/v1/config", None).await;
    assert_eq!(config["pools"]["web"]["instances"][1]["weight"], 2);
    let (status, body) = call(&app, "GET", "/v1/nothing", None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
}

#[tokio::test]
async fn pools_crud_with_validation_and_conflicts() {
    let (app, control, dir) = api(None);
    let pool = json!({ "instances": [{ "url": "http://127.0.0.1:9201" }] });
    let (status, _) = call(&app, "PUT", "/v1/pools/new", Some(pool.clone())).await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(control.router().pool_named("new").is_some(), "applied");
    assert_eq!(
        call(&app, "PUT", "/v1/pools/new", Some(pool)).await.0,
        StatusCode::OK
    );
    let (status, body) = call(&app, "GET", "/v1/pools/new", None).await;
    assert_eq!(
        (status, body["instances"][0]["url"].as_str()),
        (StatusCode::OK, Some("http://127.0.0.1:9201"))
    );
    // Persisted before acknowledged.
    let saved: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("state.json")).unwrap()).unwrap();
    assert!(saved["pools"]["new"].is_object());

    let bad = json!({ "instances": [{ "url": "ftp://x:1" }] });
    let (status, body) = call(&app, "PUT", "/v1/pools/bad", Some(bad)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["key"], "pools.bad.instances[0].url");
    assert!(
        control.router().pool_named("bad").is_none(),
        "nothing applied"
    );
    let (status, body) = call(
        &app,
        "PUT",
        "/v1/pools/bad",
        Some(json!({ "instances": [], "weight_ms": 1 })),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["message"].as_str().unwrap().contains("weight_ms"),
        "{body}"
    );

    let (status, body) = call(&app, "DELETE", "/v1/pools/web", None).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(body["message"].as_str().unwrap().contains("routes[0]"));
    assert_eq!(
        call(&app, "DELETE", "/v1/pools/spare", None).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        call(&app, "DELETE", "/v1/pools/spare", None).await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn instances_add_patch_drain_delete() {
    let (app, control, _dir) = api(None);
    let base = "/v1/pools/web/instances";
    let (status, _) = call(
        &app,
        "POST",
        base,
        Some(json!({ "url": "http://127.0.0.1:9003" })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = call(
        &app,
        "POST",
        base,
        Some(json!({ "url": "http://127.0.0.1:9003" })),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, body) = call(
        &app,
        "PATCH",
        &format!("{base}/127.0.0.1:9003"),
        Some(json!({ "weight": 5, "labels": { "zone": "a" } })),
    )
    .await;
    assert_eq!((status, body["weight"].as_u64()), (StatusCode::OK, Some(5)));
    let (status, _) = call(
        &app,
        "PATCH",
        &format!("{base}/127.0.0.1:9003"),
        Some(json!({ "weight": 0 })),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = call(
        &app,
        "PATCH",
        &format!("{base}/127.0.0.1:9003"),
        Some(json!({ "colour": "red" })),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Draining keeps the pool (its state) and flips the flag in place.
    let before = control.router().pool_named("web").map(|p| p as *const _);
    let (status, body) = call(&app, "POST", &format!("{base}/127.0.0.1:9001/drain"), None).await;
    assert_eq!(
        (status, body["drain"].as_bool()),
        (StatusCode::OK, Some(true))
    );
    let router = control.router();
    let web = router.pool_named("web").unwrap();
    assert_eq!(Some(web as *const _), before, "the pool was reused");
    assert!(web.members().as_slice()[0].is_draining());
    call(
        &app,
        "POST",
        &format!("{base}/127.0.0.1:9001/undrain"),
        None,
    )
    .await;
    assert!(
        !control
            .router()
            .pool_named("web")
            .unwrap()
            .members()
            .as_slice()[0]
            .is_draining()
    );

    assert_eq!(
        call(&app, "GET", &format!("{base}/127.0.0.1:9999"), None)
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        call(&app, "DELETE", &format!("{base}/127.0.0.1:9003"), None)
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    let (_, list) = call(&app, "GET", base, None).await;
    assert_eq!(list.as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn routes_crud_and_pick() {
    let (app, _, _dir) = api(None);
    let (status, body) = call(
        &app,
        "POST",
        "/v1/routes",
        Some(json!({ "pool": "spare", "match": { "path_prefix": "/spare" } })),
    )
    .await;
    assert_eq!(
        (status, body["index"].as_u64()),
        (StatusCode::CREATED, Some(1))
    );
    let (status, body) = call(&app, "POST", "/v1/routes", Some(json!({ "pool": "ghost" }))).await;
    assert_eq!(
        (status, body["key"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("routes[2].pool"))
    );
    let (status, _) = call(&app, "PUT", "/v1/routes/1", Some(json!({ "pool": "web" }))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        call(&app, "GET", "/v1/routes/1", None).await.1["pool"],
        "web"
    );
    assert_eq!(
        call(&app, "DELETE", "/v1/routes/1", None).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        call(&app, "GET", "/v1/routes/1", None).await.0,
        StatusCode::NOT_FOUND
    );

    let (status, body) = call(
        &app,
        "POST",
        "/v1/pools/web/pick",
        Some(json!({ "path": "/api/x" })),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        body["instance"]
            .as_str()
            .unwrap()
            .starts_with("http://127.0.0.1:900")
    );
    assert_eq!(body["ranking"].as_array().map(Vec::len), Some(2));
    let (status, _) = call(
        &app,
        "POST",
        "/v1/pools/web/pick",
        Some(json!({ "method": "NOT A METHOD" })),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        call(&app, "POST", "/v1/pools/ghost/pick", None).await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn put_config_replaces_all_but_listeners() {
    let (app, control, _dir) = api(None);
    let (_, mut config) = call(&app, "GET", "/v1/config", None).await;
    config["pools"]["web"]["instances"][0]["weight"] = json!(7);
    let (status, _) = call(&app, "PUT", "/v1/config", Some(config.clone())).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(control.config().pools["web"].instances[0].weight, 7);
    config["listeners"][0]["listen"] = json!("127.0.0.1:1");
    let (status, body) = call(&app, "PUT", "/v1/config", Some(config)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, _) = call(
        &app,
        "PUT",
        "/v1/config",
        Some(json!({ "listeners": "nope" })),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_configured_token_is_required_except_for_probes() {
    let (app, _, _dir) = api(Some("s3cret"));
    let (status, body) = call(&app, "GET", "/v1/status", None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthorized"))
    );
    assert_eq!(
        call_with(&app, "GET", "/v1/status", None, Some("wrong"))
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        call_with(&app, "GET", "/v1/status", None, Some("s3cret"))
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        call_with(&app, "DELETE", "/v1/pools/spare", None, Some("wrong"))
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(call(&app, "GET", "/health", None).await.0, StatusCode::OK);
}

#[tokio::test]
async fn the_openapi_document_matches_the_routes_served() {
    let (app, _, _dir) = api(None);
    let (status, spec) = call(&app, "GET", "/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(spec["openapi"].as_str().unwrap().starts_with('3'));
    let paths = spec["paths"].as_object().unwrap();
    assert_eq!(paths.len(), 27, "{:?}", paths.keys().collect::<Vec<_>>());
    let mut operations = 0;
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            if !["get", "put", "post", "patch", "delete"].contains(&method.as_str()) {
                continue;
            }
            operations += 1;
            // Every documented operation is served (a fresh API each: some change things).
            let (app, _, _dir) = api(None);
            let uri = path
                .replace("{pool}", "web")
                .replace("{instance}", "127.0.0.1:9001")
                .replace("{index}", "0")
                .replace("{replica}", "0")
                .replace("{name}", "nothing")
                .replace("{filter}", "nothing")
                .replace("{principal}", "nobody")
                .replace("{digest}", "sha256:00");
            if uri == "/v1/events" {
                continue; // a stream: served, but it never ends
            }
            let (status, body) = call(&app, &method.to_uppercase(), &uri, None).await;
            assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            assert_ne!(body["message"], "no such admin resource", "{method} {path}");
        }
    }
    assert!(operations >= 36, "{operations}");
    // And the document is what `openapi()` generates.
    assert_eq!(spec, serde_json::to_value(super::openapi()).unwrap());
}

#[tokio::test]
async fn status_shows_fan_out_sources_and_cache() {
    let dir = tempfile::tempdir().unwrap();
    let text = CONFIG.replace(
        "[[routes]]\nmatch = { path_prefix = \"/api\" }",
        "[[routes]]\nmatch = { path_prefix = \"/fused\" }\n\
         fan_out = { sources = [{ pool = \"web\" }, { pool = \"spare\", weight = 2.0 }], resolver = { kind = \"all\" }, cache = {} }\n\
         [[routes]]\nmatch = { path_prefix = \"/api\" }",
    );
    let config = Config::parse(
        &text,
        Path::new("t.toml"),
        dir.path(),
        &crate::loaders::Loaders,
    )
    .unwrap();
    let control =
        Arc::new(Control::new(config, PluginHost::new().unwrap(), Store::File(None), 0).unwrap());
    let app = with_state(AdminState::new(control, None));
    let (status, body) = call(&app, "GET", "/v1/status", None).await;
    assert_eq!(status, StatusCode::OK);
    let fan_out = &body["fan_outs"][0];
    assert_eq!(fan_out["route"], 0, "{body}");
    assert_eq!(fan_out["sources"][1]["source"], "spare");
    assert_eq!(fan_out["sources"][1]["weight"], 2.0);
    assert_eq!(
        fan_out["sources"][0]["acceptance"], 1.0,
        "no fusion yet: full quality"
    );
    assert_eq!(fan_out["cache"]["hits"], 0);
}

mod fuzz {
    use proptest::prelude::*;

    use super::*;

    /// The operations that read a JSON body.
    const WITH_BODY: &[(&str, &str)] = &[
        ("PUT", "/v1/config"),
        ("PUT", "/v1/pools/fuzzed"),
        ("POST", "/v1/pools/web/instances"),
        ("PATCH", "/v1/pools/web/instances/127.0.0.1:9001"),
        ("POST", "/v1/pools/web/pick"),
        ("POST", "/v1/routes"),
        ("PUT", "/v1/routes/0"),
    ];

    proptest! {
        #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

        /// Any JSON body gets an answer below 500, and an error answer is
        /// the JSON error object.
        #[test]
        fn any_body_gets_a_client_answer(
            operation in proptest::sample::select(WITH_BODY),
            body in switchyard_fuzzing::json(),
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let (app, _, _dir) = api(None);
            let (status, answer) = runtime.block_on(call(&app, operation.0, operation.1, Some(body)));
            prop_assert!(status.as_u16() < 500, "{status}: {answer}");
            if status.as_u16() >= 400 {
                prop_assert!(answer["error"].is_string(), "{status}: {answer}");
            }
        }
    }
}

#[tokio::test]
async fn if_match_makes_a_change_conditional_on_the_revision() {
    let (app, _, _dir) = api(None);
    let send = |method: &str, uri: &str, if_match: Option<&str>, body: Option<Value>| {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(tag) = if_match {
            request = request.header("if-match", tag);
        }
        let request = request
            .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
            .unwrap();
        let app = app.clone();
        async move {
            let response = app.oneshot(request).await.unwrap();
            let etag = response
                .headers()
                .get("etag")
                .map(|v| v.to_str().unwrap().to_string());
            (response.status(), etag)
        }
    };
    let (status, etag) = send("GET", "/v1/config", None, None).await;
    assert_eq!((status, etag.as_deref()), (StatusCode::OK, Some("\"0\"")));
    let drain = "/v1/pools/web/instances/127.0.0.1:9001/drain";
    // Stale: refused, nothing changed.
    let (status, _) = send("POST", drain, Some("\"7\""), None).await;
    assert_eq!(status, StatusCode::CONFLICT);
    // Current: applied, and the answer carries the new revision.
    let (status, etag) = send("POST", drain, Some("\"0\""), None).await;
    assert_eq!((status, etag.as_deref()), (StatusCode::OK, Some("\"1\"")));
    // The same precondition again is now stale.
    let (status, _) = send("POST", drain, Some("\"0\""), None).await;
    assert_eq!(status, StatusCode::CONFLICT);
    // Not a revision: 400.
    let (status, _) = send("POST", drain, Some("\"seven\""), None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // `*`, or no precondition: on the newest.
    let (status, etag) = send("POST", drain, Some("*"), None).await;
    assert_eq!((status, etag.as_deref()), (StatusCode::OK, Some("\"2\"")));
    let (status, etag) = send("POST", drain, None, None).await;
    assert_eq!((status, etag.as_deref()), (StatusCode::OK, Some("\"3\"")));
}
