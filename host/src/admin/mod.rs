//! The admin API: a JSON REST interface on its own listener (loopback by
//! default), as Kong's admin API and Envoy's admin endpoints are.
//!
//! | resource | methods |
//! |---|---|
//! | `/health`, `/ready` | `GET` — liveness and readiness (no token needed) |
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
//! | `/v1/events` | `GET` — a WebSocket (on upgrade) or server-sent events, `?kind=health,failover,config` |
//! | `/v1/plugins` | `GET` — uploaded plugins: kind, sha256, users, calls, faults |
//! | `/v1/plugins/{name}` | `PUT` (the `.wasm` as the body; checked first), `DELETE` |
//! | `/v1/plugins/{name}/reload` | `POST` — rebuild whatever loads it |
//!
//! `{instance}` is the instance's `host:port`. Every change goes through
//! [`Control::change`]: validated, applied atomically, persisted, then
//! acknowledged. Errors are JSON `{"error": code, "message": text}` (and
//! `key` for an invalid field): 400 unreadable body, 401 missing or wrong
//! token, 404 unknown name, 409 conflict, 422 invalid configuration, 500 the
//! state file could not be written.

mod error;
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
use axum::routing::{get, post};

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

/// The API over `state` (tests build it directly).
pub fn with_state(state: AdminState) -> Router {
    let open = Router::new()
        .route(
            "/health",
            get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
        )
        .route(
            "/ready",
            get(|| async { axum::Json(serde_json::json!({"status": "ready"})) }),
        );
    let api = Router::new()
        .route("/v1/status", get(resources::status))
        .route("/metrics", get(resources::metrics))
        .route("/v1/requests", get(resources::requests))
        .route(
            "/v1/config",
            get(resources::get_config).put(resources::put_config),
        )
        .route("/v1/pools", get(resources::list_pools))
        .route(
            "/v1/pools/{pool}",
            get(resources::get_pool)
                .put(resources::put_pool)
                .delete(resources::delete_pool),
        )
        .route(
            "/v1/pools/{pool}/instances",
            get(resources::list_instances).post(resources::add_instance),
        )
        .route(
            "/v1/pools/{pool}/instances/{instance}",
            get(resources::get_instance)
                .patch(resources::patch_instance)
                .delete(resources::delete_instance),
        )
        .route(
            "/v1/pools/{pool}/instances/{instance}/drain",
            post(resources::drain),
        )
        .route(
            "/v1/pools/{pool}/instances/{instance}/undrain",
            post(resources::undrain),
        )
        .route("/v1/pools/{pool}/pick", post(resources::pick))
        .route(
            "/v1/routes",
            get(resources::list_routes).post(resources::add_route),
        )
        .route(
            "/v1/routes/{index}",
            get(resources::get_route)
                .put(resources::put_route)
                .delete(resources::delete_route),
        )
        .route("/v1/events", get(resources::events))
        .route("/v1/plugins", get(plugins::list))
        .route(
            "/v1/plugins/{name}",
            axum::routing::put(plugins::upload)
                .delete(plugins::delete)
                .layer(axum::extract::DefaultBodyLimit::max(
                    plugins::MAX_UPLOAD_BYTES,
                )),
        )
        .route("/v1/plugins/{name}/reload", post(plugins::reload))
        .route_layer(middleware::from_fn_with_state(state.clone(), authorize));
    open.merge(api)
        .fallback(|| async { ApiError::NotFound("no such admin resource".into()) })
        .with_state(state)
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

/// Refuses a request without the configured bearer token (401).
async fn authorize(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    let Some(expected) = &state.token else {
        return next.run(request).await;
    };
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
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
