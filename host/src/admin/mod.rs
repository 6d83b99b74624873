//! The admin API: a JSON REST interface on its own listener (loopback by
//! default), as Kong's admin API and Envoy's admin endpoints are.
//!
//! | resource | methods |
//! |---|---|
//! | `/health`, `/ready` | `GET` — liveness and readiness (no token needed) |
//! | `/openapi.json` | `GET` — this API as an OpenAPI 3 document, generated from the handlers (no token needed) |
//! | `/dashboard` | `GET` — the web dashboard (one page; it asks for the token when one is configured) |
//! | `/dashboard/uplot.js`, `/dashboard/uplot.css` | `GET` — the charting library it uses (uPlot, vendored) |
//! | `/v1/status` | `GET` — pools, instances, health, breakers, plugin counters |
//! | `/metrics` | `GET` — Prometheus text format ([`crate::metrics`]) |
//! | `/v1/requests` | `GET` — the last requests answered, newest first |
//! | `/v1/config` | `GET`, `PUT` — the whole configuration (JSON) |
//! | `/v1/pools` | `GET` |
//! | `/v1/pools/{pool}` | `GET`, `PUT` (create or replace), `DELETE` |
//! | `/v1/pools/{pool}/instances` | `GET`, `POST` (add) |
//! | `/v1/pools/{pool}/instances/{instance}` | `GET`, `PATCH` (`weight`, `labels`, `drain`), `DELETE` |
//! | `/v1/pools/{pool}/instances/{instance}/drain`, `…/undrain` | `POST` |
//! | `/v1/pools/{pool}/pick` | `POST` — the instance the balancer would choose |
//! | `/v1/routes` | `GET`, `POST` (append) |
//! | `/v1/routes/{index}` | `GET`, `PUT`, `DELETE` |
//! | `/v1/filters` | `GET` |
//! | `/v1/filters/{filter}` | `GET`, `PUT` (create or replace), `DELETE` |
//! | `/v1/events` | `GET` — a WebSocket (on upgrade) or server-sent events, `?kind=health,failover,config` |
//! | `/v1/plugins` | `GET` — uploaded plugins: kind, sha256, users, calls, faults |
//! | `/v1/plugins/{name}` | `PUT` (the `.wasm` as the body; checked first), `DELETE` |
//! | `/v1/plugins/{name}/reload` | `POST` — rebuild whatever loads it |
//!
//! Every successful `/v1/` answer carries `ETag: "N"`, the configuration's
//! revision; a change sent with `If-Match: "N"` is applied only at that
//! revision (409 otherwise). With the etcd store every change is shared by
//! all replicas ([`crate::store`]); 503 while etcd is unreachable.
//!
//! `{instance}` is the instance's `host:port`. The token goes in
//! `Authorization: Bearer …`, or in `?access_token=…` (for WebSockets). Every change goes through
//! [`Control::change`]: validated, applied atomically, persisted, then
//! acknowledged. Errors are JSON `{"error": code, "message": text}` (and
//! `key` for an invalid field): 400 unreadable body, 401 missing or wrong
//! token, 404 unknown name, 409 conflict, 422 invalid configuration, 500 the
//! state file could not be written.

mod error;
mod filters;
mod plugins;
mod resources;
#[cfg(test)]
mod tests;

pub use error::ApiError;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::control::Control;

/// What every handler gets.
#[derive(Clone)]
pub struct AdminState {
    /// The configuration in force.
    pub control: Arc<Control>,
    /// The bearer token required, if any.
    token: Option<Arc<str>>,
}

/// The admin API over `control`, requiring the bearer token named by the
/// config's `admin.token_env` / `admin.token_file` (none configured: open).
pub fn router(control: Arc<Control>) -> Router {
    let token = control.config().admin.as_ref().and_then(|admin| {
        let from_env = admin
            .token_env
            .as_ref()
            .and_then(|name| std::env::var(name).ok());
        let from_file = || {
            admin
                .token_file
                .as_ref()
                .and_then(|path| std::fs::read_to_string(path).ok())
        };
        from_env
            .or_else(from_file)
            .map(|t| t.trim_end().to_string())
            .filter(|t| !t.is_empty())
            .map(Arc::from)
    });
    if control
        .config()
        .admin
        .as_ref()
        .is_some_and(|a| (a.token_env.is_some() || a.token_file.is_some()) && token.is_none())
    {
        tracing::warn!(
            "admin token configured but empty or unreadable: every admin request will be refused"
        );
    }
    with_state(AdminState { control, token })
}

/// The API over `state` (tests build it directly), with `/openapi.json`.
pub fn with_state(state: AdminState) -> Router {
    let (router, spec) = documented();
    let spec = Arc::new(spec);
    router
        .route(
            "/dashboard",
            get(|| async { axum::response::Html(include_str!("dashboard.html")) }),
        )
        .route(
            "/dashboard/uplot.js",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
                    include_str!("vendor/uplot/uPlot.iife.min.js"),
                )
            }),
        )
        .route(
            "/dashboard/uplot.css",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
                    include_str!("vendor/uplot/uPlot.min.css"),
                )
            }),
        )
        .route(
            "/openapi.json",
            get(move || {
                let spec = Arc::clone(&spec);
                async move { axum::Json((*spec).clone()) }
            }),
        )
        .route_layer(middleware::from_fn_with_state(state.clone(), revisions))
        .route_layer(middleware::from_fn_with_state(state.clone(), authorize))
        .layer(axum::extract::DefaultBodyLimit::max(
            plugins::MAX_UPLOAD_BYTES,
        ))
        .fallback(|| async { ApiError::NotFound("no such admin resource".into()) })
        .with_state(state)
}

/// The OpenAPI 3 document of the admin API, generated from the handlers'
/// annotations (the same routes the API serves).
pub fn openapi() -> utoipa::openapi::OpenApi {
    documented().1
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Switchyard admin API",
        description = "Pools, instances, routes, plugins, status, metrics and events of a running Switchyard. \
                       Every request but /health and /ready needs `Authorization: Bearer <token>` when a token is configured. \
                       Every error is the JSON `Error` object."
    ),
    components(schemas(error::ErrorBody))
)]
struct ApiDoc;

/// Documents the errors every operation can answer, each with the JSON
/// `Error` schema: 400 (an unreadable path parameter, query or body) and
/// 401 (a token is configured and missing) on every operation but the open
/// ones, 404 on every operation with a path parameter, 500 (not persisted)
/// on every change; and gives each documented 4xx/5xx the `Error` body.
struct ErrorResponses;

impl utoipa::Modify for ErrorResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
        let error = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("Error")))
                        .build(),
                )
                .build()
        };
        let if_match = {
            use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
            use utoipa::openapi::schema::{ObjectBuilder, Type};
            ParameterBuilder::new()
                .name("If-Match")
                .parameter_in(ParameterIn::Header)
                .required(utoipa::openapi::Required::False)
                .description(Some(
                    "Apply the change only if the configuration is at this revision (the `ETag` \
                     of an earlier answer), else 409",
                ))
                .schema(Some(
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .pattern(Some(r#"^(\*|"[0-9]{1,18}")$"#)),
                ))
                .build()
        };
        for (path, item) in &mut openapi.paths.paths {
            let open = OPEN_PATHS.contains(&path.as_str());
            let operations = [
                (&mut item.get, false),
                (&mut item.put, true),
                (&mut item.post, true),
                (&mut item.delete, true),
                (&mut item.patch, true),
            ];
            for (operation, changes) in operations {
                let Some(operation) = operation else {
                    continue;
                };
                if changes && !open {
                    operation
                        .parameters
                        .get_or_insert_with(Vec::new)
                        .push(RefOr::T(if_match.clone()));
                }
                let responses = &mut operation.responses.responses;
                let mut add = |code: &str, description: &str| {
                    responses
                        .entry(code.to_string())
                        .or_insert_with(|| RefOr::T(error(description)));
                };
                if !open {
                    add("400", "Unreadable: a path parameter, the query or the body");
                    add(
                        "401",
                        "A token is configured and the request does not carry it",
                    );
                }
                if path.contains('{') {
                    add("404", "No such resource");
                }
                if changes && !open {
                    add(
                        "409",
                        "Conflicts with the configuration, or another write came first (`If-Match`)",
                    );
                    add("500", "The change could not be persisted (state file)");
                    add(
                        "503",
                        "The config store (etcd) is unreachable: nothing changed",
                    );
                }
                for (code, response) in responses.iter_mut() {
                    if let RefOr::T(response) = response
                        && (code.starts_with('4') || code.starts_with('5'))
                        && response.content.is_empty()
                    {
                        *response = error(&response.description);
                    }
                }
            }
        }
        open_tagged_variants(openapi);
    }
}

/// A `kind`-tagged config enum is documented as `oneOf` of `allOf [the
/// variant's struct, {kind}]`; a struct that refuses unknown fields says
/// `additionalProperties: false`, which no object with `kind` satisfies.
/// Such structs stay open in the document (the server still refuses an
/// unknown field, with 400 naming it).
fn open_tagged_variants(openapi: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::RefOr;
    use utoipa::openapi::schema::Schema;
    let Some(components) = openapi.components.as_mut() else {
        return;
    };
    let mut variants = Vec::new();
    for schema in components.schemas.values() {
        let RefOr::T(Schema::OneOf(one_of)) = schema else {
            continue;
        };
        for item in &one_of.items {
            if let RefOr::T(Schema::AllOf(all_of)) = item {
                variants.extend(all_of.items.iter().filter_map(|part| match part {
                    RefOr::Ref(r) => r.ref_location.rsplit('/').next().map(str::to_string),
                    RefOr::T(_) => None,
                }));
            }
        }
    }
    for name in variants {
        if let Some(RefOr::T(Schema::Object(object))) = components.schemas.get_mut(&name) {
            object.additional_properties = None;
        }
    }
}

/// Every documented route and the OpenAPI document of them, with the
/// errors each can answer ([`ErrorResponses`]).
fn documented() -> (Router<AdminState>, utoipa::openapi::OpenApi) {
    let (router, mut spec) = operations().split_for_parts();
    utoipa::Modify::modify(&ErrorResponses, &mut spec);
    (router, spec)
}

/// Every documented route: the handlers and their OpenAPI operations.
fn operations() -> OpenApiRouter<AdminState> {
    OpenApiRouter::with_openapi(<ApiDoc as utoipa::OpenApi>::openapi())
        .routes(routes!(health))
        .routes(routes!(ready))
        .routes(routes!(resources::status))
        .routes(routes!(resources::metrics))
        .routes(routes!(resources::requests))
        .routes(routes!(resources::get_config, resources::put_config))
        .routes(routes!(resources::list_pools))
        .routes(routes!(
            resources::get_pool,
            resources::put_pool,
            resources::delete_pool
        ))
        .routes(routes!(resources::list_instances, resources::add_instance))
        .routes(routes!(
            resources::get_instance,
            resources::patch_instance,
            resources::delete_instance
        ))
        .routes(routes!(resources::drain))
        .routes(routes!(resources::undrain))
        .routes(routes!(resources::pick))
        .routes(routes!(
            resources::list_processes,
            resources::scale_processes
        ))
        .routes(routes!(resources::restart_process))
        .routes(routes!(resources::list_routes, resources::add_route))
        .routes(routes!(
            resources::get_route,
            resources::put_route,
            resources::delete_route
        ))
        .routes(routes!(filters::list_filters))
        .routes(routes!(
            filters::get_filter,
            filters::put_filter,
            filters::delete_filter
        ))
        .routes(routes!(filters::list_principals))
        .routes(routes!(filters::put_principal, filters::delete_principal))
        .routes(routes!(filters::add_key))
        .routes(routes!(filters::delete_key))
        .routes(routes!(resources::events))
        .routes(routes!(plugins::list))
        .routes(routes!(plugins::upload, plugins::delete))
        .routes(routes!(plugins::reload))
}

/// `GET /health`: the process is up.
#[utoipa::path(get, path = "/health", tag = "probes", responses((status = 200, description = "Up", body = serde_json::Value)))]
async fn health() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({"status": "ok"}))
}

/// `GET /ready`: routes are built and listeners bound; `store` says
/// whether the configuration follows its store and at which revision (a
/// replica out of touch with etcd is still ready: it serves the last
/// configuration it applied).
#[utoipa::path(get, path = "/ready", tag = "probes", responses((status = 200, description = "Ready, with the config store's sync state", body = serde_json::Value)))]
async fn ready(State(state): State<AdminState>) -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({"status": "ready", "store": state.control.store_state()}))
}

tokio::task_local! {
    /// The revision an admin request's change must be based on: its
    /// `If-Match` header.
    static PRECONDITION: Option<i64>;
}

/// The `If-Match` revision of the request being served, if any.
fn precondition() -> Option<i64> {
    PRECONDITION.try_with(|p| *p).ok().flatten()
}

/// Optimistic concurrency over the configuration's revision ([`Control::revision`]):
/// every successful `/v1/` answer carries `ETag: "N"`, and a change sent
/// with `If-Match: "N"` is applied only if the configuration is still at
/// revision N (else 409, as Kubernetes answers a stale `resourceVersion`).
/// `If-Match: *` is no precondition; one that is not a revision is refused
/// with 400.
async fn revisions(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    let given = match request.headers().get(header::IF_MATCH) {
        None => None,
        // `*`: any revision (RFC 9110: the configuration always exists).
        Some(value) if value.as_bytes() == b"*" => None,
        Some(value) => {
            let parsed = value
                .to_str()
                .ok()
                .map(|v| v.trim().trim_start_matches("W/").trim_matches('"'))
                .and_then(|v| v.parse::<i64>().ok());
            match parsed {
                Some(revision) => Some(revision),
                None => {
                    return ApiError::BadBody(
                        "If-Match: give one configuration revision, as the ETag said: \"12\""
                            .into(),
                    )
                    .into_response();
                }
            }
        }
    };
    let tagged = request.uri().path().starts_with("/v1/");
    let mut response = PRECONDITION.scope(given, next.run(request)).await;
    if tagged && response.status().is_success() {
        let etag = format!("\"{}\"", state.control.revision());
        if let Ok(value) = header::HeaderValue::from_str(&etag) {
            response.headers_mut().insert(header::ETAG, value);
        }
    }
    response
}

impl AdminState {
    /// State over `control` with an optional bearer `token`.
    pub fn new(control: Arc<Control>, token: Option<&str>) -> Self {
        Self {
            control,
            token: token.map(Arc::from),
        }
    }
}

/// Paths open without the token: probes, the API's own description and
/// the dashboard page (which asks the API with the token itself).
const OPEN_PATHS: [&str; 6] = [
    "/health",
    "/ready",
    "/openapi.json",
    "/dashboard",
    "/dashboard/uplot.js",
    "/dashboard/uplot.css",
];

/// Refuses a request without the configured bearer token (401), except
/// for [`OPEN_PATHS`].
async fn authorize(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    let Some(expected) = &state.token else {
        return next.run(request).await;
    };
    if OPEN_PATHS.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    // A browser's WebSocket cannot set headers: `?access_token=` too.
    let from_query = request.uri().query().and_then(|q| {
        q.split('&')
            .find_map(|pair| pair.strip_prefix("access_token="))
    });
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .or(from_query);
    if given.is_some_and(|g| constant_time_eq(g.as_bytes(), expected.as_bytes())) {
        next.run(request).await
    } else {
        let mut response = ApiError::Unauthorized.into_response();
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        *response.status_mut() = StatusCode::UNAUTHORIZED;
        response
    }
}

/// Compares without an early exit on the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
