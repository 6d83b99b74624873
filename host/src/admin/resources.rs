//! The admin resources' handlers.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;

use axum::Json;
use axum::body::Bytes;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::error::PathOf;
use super::{AdminState, ApiError};
use crate::balance::RequestContext;
use crate::config::{Config, InstanceConfig, PoolConfig, RouteConfig};
use crate::control::ChangeError;
use crate::status::Owner;

type ApiResult<T> = Result<T, ApiError>;

/// Parses a JSON body as a `what`, with serde's reason (path and line) on failure.
pub(super) fn parse<T: DeserializeOwned>(body: &Bytes, what: &str) -> ApiResult<T> {
    let bad = |e: serde_json::Error| ApiError::BadBody(format!("not a valid {what}: {e}"));
    let mut value: Value = serde_json::from_slice(body).map_err(bad)?;
    integral_floats_as_integers(&mut value);
    serde_json::from_value(value).map_err(bad)
}

/// Turns every number like `3.0` into the integer `3`: JSON Schema counts
/// it an integer (as the OpenAPI document's `integer` fields promise), and
/// serde's integer types would refuse it.
fn integral_floats_as_integers(value: &mut Value) {
    match value {
        Value::Number(n) => {
            if let Some(f) = n
                .as_f64()
                .filter(|f| f.fract() == 0.0 && !n.is_i64() && !n.is_u64())
            {
                if f >= 0.0 && f <= u64::MAX as f64 {
                    *value = Value::from(f as u64);
                } else if f < 0.0 && f >= i64::MIN as f64 {
                    *value = Value::from(f as i64);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral_floats_as_integers),
        Value::Object(map) => map.values_mut().for_each(integral_floats_as_integers),
        _ => {}
    }
}

/// Runs a change off the async workers (building a pool may compile a
/// plugin; with etcd, it waits on etcd), based on the request's `If-Match`.
pub(super) async fn change<R: Send + 'static>(
    state: &AdminState,
    edit: impl FnOnce(&mut Config) -> Result<R, ChangeError> + Send + 'static,
) -> ApiResult<(Config, R)> {
    let control = std::sync::Arc::clone(&state.control);
    let precondition = super::precondition();
    tokio::task::spawn_blocking(move || control.change_at(precondition, edit))
        .await
        .map_err(|e| ApiError::Internal(format!("the change did not complete: {e}")))?
        .map_err(ApiError::from)
}

fn pool_of<'a>(config: &'a mut Config, pool: &str) -> Result<&'a mut PoolConfig, ChangeError> {
    config
        .pools
        .get_mut(pool)
        .ok_or_else(|| ChangeError::NotFound(format!("no pool `{pool}`")))
}

/// Index of the instance `host:port` in `pool`.
fn instance_index(pool: &PoolConfig, name: &str, instance: &str) -> Result<usize, ChangeError> {
    pool.instances
        .iter()
        .position(|i| i.upstream_authority().is_ok_and(|a| a.as_str() == instance))
        .ok_or_else(|| ChangeError::NotFound(format!("no instance `{instance}` in pool `{name}`")))
}

/// `GET /v1/status`.
#[utoipa::path(
    get,
    path = "/v1/status",
    tag = "status",
    responses((status = 200, description = "Pools, instances, health, breakers, every route's target and filter chain (`routes`), plugin counters, per fan-out route each source's quality and the cache counts, per MCP route its targets, sessions and tools, every route's rate limits (`routes[].limits`: filter, limit, what it counts, its mode, keys held and decisions), per managed pool its replicas, the config store's sync state and revision, and `warnings` (sentences: how this process is exposed, e.g. an admin API with no authentication, and each config value read from a deprecated spelling with the spelling to write)", body = serde_json::Value))
)]
pub async fn status(State(state): State<AdminState>) -> Json<Value> {
    let router = state.control.router();
    let snapshot = router.snapshot();
    // Every loaded plugin, of every kind: a pool's balancer, health check
    // and failover policy, a fan-out route's resolver.
    let plugins: Vec<Value> = snapshot
        .plugins
        .iter()
        .map(|p| {
            let (pool, route, filter) = match &p.owner {
                Owner::Pool(name) => (Some(name.as_str()), None, None),
                Owner::Route(index) => (None, Some(*index), None),
                Owner::Filter(name) => (None, None, Some(name.as_str())),
            };
            let s = &p.stats;
            json!({ "pool": pool, "route": route, "filter": filter, "kind": p.kind.name(), "calls": s.calls(),
                    "faults": s.faults(), "call_seconds": s.call_seconds(),
                    "quarantined": s.quarantined(), "quarantines": s.quarantines(),
                    "instances": s.instances(),
                    "output_dropped_bytes": s.output().dropped_bytes(),
                    "output_dropped_lines": s.output().dropped_lines() })
        })
        .collect();
    // Fan-out routes: each source's learned quality, and the cache counts.
    let fan_outs: Vec<Value> = router
        .routes()
        .iter()
        .filter_map(|r| match &r.target {
            crate::gateway::Target::FanOut(f) => Some((r.index, f)),
            crate::gateway::Target::Pool(_) | crate::gateway::Target::Mcp(_) => None,
        })
        .map(|(route, f)| {
            let sources: Vec<Value> = f
                .sources()
                .iter()
                .zip(f.quality().snapshot())
                .map(|(s, q)| {
                    json!({ "source": s.name, "priority": s.priority, "weight": s.weight,
                            "acceptance": q.acceptance, "agreement": q.agreement })
                })
                .collect();
            let cache = f.cache().map(|c| {
                let s = c.stats();
                json!({ "hits": s.hits, "misses": s.misses, "stale": s.stale })
            });
            json!({ "route": route, "sources": sources, "cache": cache })
        })
        .collect();
    // MCP routes: targets, sessions in use, tools learned.
    let mcp: Vec<Value> = router
        .routes()
        .iter()
        .filter_map(|r| match &r.target {
            crate::gateway::Target::Mcp(m) => Some(m.status()),
            _ => None,
        })
        .collect();
    // Every route: what serves it and its filter chain, in order.
    let routes: Vec<Value> = router
        .routes()
        .iter()
        .map(|r| {
            json!({ "route": r.index, "served_by": r.target.served_by(), "filters": r.chain.names(),
                    "limits": r.chain.limits_status() })
        })
        .collect();
    // Managed pools: their replicas.
    let processes = state
        .control
        .processes()
        .map(|s| s.all())
        .unwrap_or_default();
    // What an operator must know: how this process is exposed, and the
    // config spellings to change before they stop being read.
    let config = state.control.config();
    let warnings: Vec<String> = config
        .admin
        .as_ref()
        .is_some_and(|a| a.is_exposed())
        .then(|| {
            "the admin API listens beyond loopback with no authentication (admin.insecure = true)"
                .to_string()
        })
        .into_iter()
        .chain(config.deprecations())
        .collect();
    Json(
        json!({ "pools": snapshot.pools, "routes": routes, "plugins": plugins, "fan_outs": fan_outs, "mcp_routes": mcp,
                "processes": processes, "store": state.control.store_state(), "warnings": warnings }),
    )
}

/// `GET /metrics`: the Prometheus (OpenMetrics) text exposition.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "status",
    responses((status = 200, description = "Prometheus (OpenMetrics) text", content_type = "application/openmetrics-text", body = String))
)]
pub async fn metrics(State(state): State<AdminState>) -> impl axum::response::IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.control.render_metrics(),
    )
}

/// `GET /v1/requests`: the recent-request log, newest first
/// (`admin.recent_requests` entries).
#[utoipa::path(
    get,
    path = "/v1/requests",
    tag = "status",
    responses((status = 200, description = "The last requests answered, newest first", body = serde_json::Value))
)]
pub async fn requests(State(state): State<AdminState>) -> Json<Vec<crate::proxy::RequestRecord>> {
    Json(state.control.recent().snapshot())
}

/// `GET /v1/config`.
#[utoipa::path(
    get,
    path = "/v1/config",
    tag = "config",
    responses((status = 200, description = "The configuration in force", body = Config))
)]
pub async fn get_config(State(state): State<AdminState>) -> Json<Config> {
    Json(state.control.config())
}

/// `PUT /v1/config`: replaces everything but `listeners` and `admin`.
#[utoipa::path(
    put,
    path = "/v1/config",
    tag = "config",
    request_body = Config,
    responses((status = 200, description = "Applied and persisted", body = serde_json::Value), (status = 400, description = "Not a configuration"), (status = 409, description = "`listeners` or `admin` changed"), (status = 422, description = "Invalid: `key` and `reason`"))
)]
pub async fn put_config(State(state): State<AdminState>, body: Bytes) -> ApiResult<Json<Config>> {
    let next: Config = parse(&body, "configuration")?;
    let (config, ()) = change(&state, move |config| {
        *config = next;
        Ok(())
    })
    .await?;
    Ok(Json(config))
}

/// `GET /v1/pools`: every pool's config.
#[utoipa::path(
    get,
    path = "/v1/pools",
    tag = "pools",
    responses((status = 200, description = "Every pool's config by name", body = serde_json::Value))
)]
pub async fn list_pools(State(state): State<AdminState>) -> Json<BTreeMap<String, PoolConfig>> {
    Json(state.control.config().pools)
}

/// `GET /v1/pools/{pool}`.
#[utoipa::path(
    get,
    path = "/v1/pools/{pool}",
    tag = "pools",
    params(("pool" = String, Path, description = "Pool name")),
    responses((status = 200, description = "The pool's config", body = PoolConfig), (status = 404, description = "No such pool"))
)]
pub async fn get_pool(
    State(state): State<AdminState>,
    PathOf(pool): PathOf<String>,
) -> ApiResult<Json<PoolConfig>> {
    get_named(&state, &pool, "pool", |config| &mut config.pools)
}

/// The entry `name` (a `what`) of the config's map that `map` selects
/// (pools, filters): 404 when there is none.
pub(super) fn get_named<T>(
    state: &AdminState,
    name: &str,
    what: &str,
    map: fn(&mut Config) -> &mut BTreeMap<String, T>,
) -> ApiResult<Json<T>> {
    map(&mut state.control.config())
        .remove(name)
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no {what} `{name}`")))
}

/// `PUT /v1/pools/{pool}`: creates (201) or replaces (200) the pool.
#[utoipa::path(
    put,
    path = "/v1/pools/{pool}",
    tag = "pools",
    request_body = PoolConfig,
    params(("pool" = String, Path, description = "Pool name")),
    responses((status = 200, description = "Replaced", body = serde_json::Value), (status = 201, description = "Created", body = serde_json::Value), (status = 400, description = "Not a pool"), (status = 422, description = "Invalid: `key` and `reason`"))
)]
pub async fn put_pool(
    State(state): State<AdminState>,
    PathOf(pool): PathOf<String>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<PoolConfig>)> {
    let new: PoolConfig = parse(&body, "pool")?;
    put_named(&state, pool, new, |config| &mut config.pools).await
}

/// Creates (201) or replaces (200) the entry `name` of the config's map
/// that `map` selects (pools, filters); answers with the entry as applied.
pub(super) async fn put_named<T: Clone + Send + 'static>(
    state: &AdminState,
    name: String,
    new: T,
    map: fn(&mut Config) -> &mut BTreeMap<String, T>,
) -> ApiResult<(StatusCode, Json<T>)> {
    let key = name.clone();
    let (mut config, replaced) = change(state, move |config| {
        Ok(map(config).insert(key, new).is_some())
    })
    .await?;
    let status = put_status(replaced);
    let applied = map(&mut config).remove(&name);
    applied
        .map(|entry| (status, Json(entry)))
        .ok_or_else(|| ApiError::Internal(format!("`{name}` is missing after the change")))
}

/// The status of a PUT: 200 when it replaced something, else 201.
pub(super) fn put_status(replaced: bool) -> StatusCode {
    if replaced {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    }
}

/// `DELETE /v1/pools/{pool}`: refused (409) while a route uses it.
#[utoipa::path(
    delete,
    path = "/v1/pools/{pool}",
    tag = "pools",
    params(("pool" = String, Path, description = "Pool name")),
    responses((status = 204, description = "Deleted"), (status = 404, description = "No such pool"), (status = 409, description = "A route uses it"))
)]
pub async fn delete_pool(
    State(state): State<AdminState>,
    PathOf(pool): PathOf<String>,
) -> ApiResult<StatusCode> {
    delete_named(&state, pool, "pool", |config| &mut config.pools, route_uses).await
}

/// Deletes the entry `name` (a `what`) of the config's map that `map`
/// selects: 404 when there is none, 409 while a route `uses` it.
pub(super) async fn delete_named<T: Send + 'static>(
    state: &AdminState,
    name: String,
    what: &'static str,
    map: fn(&mut Config) -> &mut BTreeMap<String, T>,
    uses: fn(&RouteConfig, &str) -> bool,
) -> ApiResult<StatusCode> {
    change(state, move |config| {
        if let Some(i) = config.routes.iter().position(|r| uses(r, &name)) {
            return Err(ChangeError::Conflict(format!(
                "{what} `{name}` is used by routes[{i}]; change or delete the route first"
            )));
        }
        map(config)
            .remove(&name)
            .map(|_| ())
            .ok_or_else(|| ChangeError::NotFound(format!("no {what} `{name}`")))
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Whether `route` sends requests to `pool` (as its pool, fallback or source).
fn route_uses(route: &RouteConfig, pool: &str) -> bool {
    let fallback = matches!(&route.fallback, Some(crate::config::FallbackConfig::Pool { pool: p }) if p == pool);
    let fan_out = route.fan_out.as_ref().is_some_and(|f| {
        f.pool.as_deref() == Some(pool) || f.sources.iter().any(|s| s.pool == pool)
    });
    route.pool.as_deref() == Some(pool) || fallback || fan_out
}

/// `GET /v1/pools/{pool}/instances`.
#[utoipa::path(
    get,
    path = "/v1/pools/{pool}/instances",
    tag = "instances",
    params(("pool" = String, Path, description = "Pool name")),
    responses((status = 200, description = "The pool's instances", body = serde_json::Value), (status = 404, description = "No such pool"))
)]
pub async fn list_instances(
    State(state): State<AdminState>,
    PathOf(pool): PathOf<String>,
) -> ApiResult<Json<Vec<InstanceConfig>>> {
    get_pool(State(state), PathOf(pool))
        .await
        .map(|Json(p)| Json(p.instances))
}

/// `POST /v1/pools/{pool}/instances`: adds an instance (201); 409 if its
/// `host:port` is already in the pool.
#[utoipa::path(
    post,
    path = "/v1/pools/{pool}/instances",
    tag = "instances",
    request_body = InstanceConfig,
    params(("pool" = String, Path, description = "Pool name")),
    responses((status = 201, description = "Added", body = serde_json::Value), (status = 409, description = "Already in the pool"), (status = 422, description = "Invalid"))
)]
pub async fn add_instance(
    State(state): State<AdminState>,
    PathOf(pool): PathOf<String>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<InstanceConfig>)> {
    let instance: InstanceConfig = parse(&body, "instance")?;
    let added = instance.clone();
    change(&state, move |config| {
        let target = pool_of(config, &pool)?;
        if let Ok(authority) = instance.upstream_authority()
            && instance_index(target, &pool, authority.as_str()).is_ok()
        {
            return Err(ChangeError::Conflict(format!(
                "pool `{pool}` already has an instance at `{authority}`"
            )));
        }
        target.instances.push(instance);
        Ok(())
    })
    .await?;
    Ok((StatusCode::CREATED, Json(added)))
}

/// `GET /v1/pools/{pool}/instances/{instance}`.
#[utoipa::path(
    get,
    path = "/v1/pools/{pool}/instances/{instance}",
    tag = "instances",
    params(("pool" = String, Path, description = "Pool name"), ("instance" = String, Path, description = "The instance's `host:port`")),
    responses((status = 200, description = "The instance", body = serde_json::Value), (status = 404, description = "No such pool or instance"))
)]
pub async fn get_instance(
    State(state): State<AdminState>,
    PathOf((pool, instance)): PathOf<(String, String)>,
) -> ApiResult<Json<InstanceConfig>> {
    let mut config = state.control.config();
    let target = pool_of(&mut config, &pool)?;
    let i = instance_index(target, &pool, &instance)?;
    Ok(Json(target.instances.swap_remove(i)))
}

/// The fields of an instance a `PATCH` may change.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InstancePatch {
    weight: Option<u32>,
    labels: Option<BTreeMap<String, String>>,
    drain: Option<bool>,
}

/// `PATCH /v1/pools/{pool}/instances/{instance}`: `weight`, `labels`, `drain`.
#[utoipa::path(
    patch,
    path = "/v1/pools/{pool}/instances/{instance}",
    tag = "instances",
    request_body = InstancePatch,
    params(("pool" = String, Path, description = "Pool name"), ("instance" = String, Path, description = "The instance's `host:port`")),
    responses((status = 200, description = "Changed: `weight`, `labels`, `drain`", body = serde_json::Value), (status = 400, description = "Unknown field"), (status = 422, description = "Invalid"))
)]
pub async fn patch_instance(
    State(state): State<AdminState>,
    PathOf((pool, instance)): PathOf<(String, String)>,
    body: Bytes,
) -> ApiResult<Json<InstanceConfig>> {
    let patch: InstancePatch = parse(&body, "instance patch (weight, labels, drain)")?;
    edit_instance(&state, pool, instance, move |i| {
        if let Some(weight) = patch.weight {
            i.weight = weight;
        }
        if let Some(labels) = patch.labels {
            i.labels = labels;
        }
        if let Some(drain) = patch.drain {
            i.drain = drain;
        }
    })
    .await
}

/// `POST /v1/pools/{pool}/instances/{instance}/drain`.
#[utoipa::path(
    post,
    path = "/v1/pools/{pool}/instances/{instance}/drain",
    tag = "instances",
    params(("pool" = String, Path, description = "Pool name"), ("instance" = String, Path, description = "The instance's `host:port`")),
    responses((status = 200, description = "Draining: no new requests", body = serde_json::Value), (status = 404, description = "No such pool or instance"))
)]
pub async fn drain(
    State(state): State<AdminState>,
    PathOf((pool, instance)): PathOf<(String, String)>,
) -> ApiResult<Json<InstanceConfig>> {
    edit_instance(&state, pool, instance, |i| i.drain = true).await
}

/// `POST /v1/pools/{pool}/instances/{instance}/undrain`.
#[utoipa::path(
    post,
    path = "/v1/pools/{pool}/instances/{instance}/undrain",
    tag = "instances",
    params(("pool" = String, Path, description = "Pool name"), ("instance" = String, Path, description = "The instance's `host:port`")),
    responses((status = 200, description = "Back in rotation", body = serde_json::Value), (status = 404, description = "No such pool or instance"))
)]
pub async fn undrain(
    State(state): State<AdminState>,
    PathOf((pool, instance)): PathOf<(String, String)>,
) -> ApiResult<Json<InstanceConfig>> {
    edit_instance(&state, pool, instance, |i| i.drain = false).await
}

async fn edit_instance(
    state: &AdminState,
    pool: String,
    instance: String,
    edit: impl FnOnce(&mut InstanceConfig) + Send + 'static,
) -> ApiResult<Json<InstanceConfig>> {
    let (name, key) = (pool.clone(), instance.clone());
    let (config, ()) = change(state, move |config| {
        let target = pool_of(config, &name)?;
        let i = instance_index(target, &name, &key)?;
        edit(&mut target.instances[i]);
        Ok(())
    })
    .await?;
    let target = &config.pools[&pool];
    let i = instance_index(target, &pool, &instance)?;
    Ok(Json(target.instances[i].clone()))
}

/// `DELETE /v1/pools/{pool}/instances/{instance}`.
#[utoipa::path(
    delete,
    path = "/v1/pools/{pool}/instances/{instance}",
    tag = "instances",
    params(("pool" = String, Path, description = "Pool name"), ("instance" = String, Path, description = "The instance's `host:port`")),
    responses((status = 204, description = "Removed"), (status = 404, description = "No such pool or instance"))
)]
pub async fn delete_instance(
    State(state): State<AdminState>,
    PathOf((pool, instance)): PathOf<(String, String)>,
) -> ApiResult<StatusCode> {
    change(&state, move |config| {
        let target = pool_of(config, &pool)?;
        let i = instance_index(target, &pool, &instance)?;
        target.instances.remove(i);
        Ok(())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The request a `pick` is asked about; every field optional, and the
/// body too (an empty body asks about `GET /`).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct PickRequest {
    /// Default `GET`.
    #[schema(pattern = "^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")]
    method: Option<String>,
    /// Host the client would address. Default empty.
    authority: String,
    /// Path and query. Default `/`.
    path: Option<String>,
    /// Request headers (hash keys, label routing).
    headers: BTreeMap<String, String>,
    /// The client's address (`ip:port`). Default `127.0.0.1:0`.
    #[schema(value_type = Option<String>)]
    client_addr: Option<SocketAddr>,
}

/// `POST /v1/pools/{pool}/pick`: the instance the pool's balancer would
/// choose for the described request, and the ranking behind it (for
/// clients that balance themselves). Nothing is sent; in-flight counts do
/// not change. 503 when no instance is available.
#[utoipa::path(
    post,
    path = "/v1/pools/{pool}/pick",
    tag = "pools",
    request_body = Option<PickRequest>,
    params(("pool" = String, Path, description = "Pool name")),
    responses((status = 200, description = "The instance the balancer would choose, and its ranking", body = serde_json::Value), (status = 404, description = "No such pool"), (status = 503, description = "No instance available"))
)]
pub async fn pick(
    State(state): State<AdminState>,
    PathOf(pool): PathOf<String>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    // No body, or `null`: a `GET /`.
    let request: PickRequest = if body.is_empty() {
        PickRequest::default()
    } else {
        parse::<Option<PickRequest>>(&body, "pick request")?.unwrap_or_default()
    };
    let method = Method::from_bytes(request.method.as_deref().unwrap_or("GET").as_bytes())
        .map_err(|_| ApiError::BadBody("`method` is not an HTTP method".into()))?;
    let mut headers = HeaderMap::new();
    for (name, value) in &request.headers {
        let (Ok(n), Ok(v)) = (
            HeaderName::try_from(name.as_str()),
            HeaderValue::try_from(value.as_str()),
        ) else {
            return Err(ApiError::BadBody(format!(
                "`headers.{name}` is not a valid header"
            )));
        };
        headers.insert(n, v);
    }
    let router = state.control.router();
    let target = router
        .pool_named(&pool)
        .ok_or_else(|| ApiError::NotFound(format!("no pool `{pool}`")))?;
    let ranking = target.balancer().rank(
        &RequestContext {
            method: &method,
            authority: &request.authority,
            path: request.path.as_deref().unwrap_or("/"),
            headers: &headers,
            client_addr: request
                .client_addr
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0))),
        },
        target.members().as_slice(),
    );
    let chosen = target
        .peek(&ranking, &[])
        .ok_or_else(|| ApiError::Unavailable(format!("pool `{pool}` has no instance available")))?;
    let url = |id: u32| target.members().get(id).map(|e| e.url.clone());
    Ok(Json(json!({
        "pool": pool,
        "instance": url(chosen),
        "ranking": ranking.iter().map(|&id| url(id)).collect::<Vec<_>>(),
    })))
}

/// `GET /v1/routes`.
#[utoipa::path(
    get,
    path = "/v1/routes",
    tag = "routes",
    responses((status = 200, description = "The routes in match order", body = Vec<RouteConfig>))
)]
pub async fn list_routes(State(state): State<AdminState>) -> Json<Vec<RouteConfig>> {
    Json(state.control.config().routes)
}

/// `POST /v1/routes`: appends a route (201, with its index).
#[utoipa::path(
    post,
    path = "/v1/routes",
    tag = "routes",
    request_body = RouteConfig,
    responses((status = 201, description = "Appended: its index", body = serde_json::Value), (status = 422, description = "Invalid"))
)]
pub async fn add_route(
    State(state): State<AdminState>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let route: RouteConfig = parse(&body, "route")?;
    let (config, index) = change(&state, move |config| {
        config.routes.push(route);
        Ok(config.routes.len() - 1)
    })
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "index": index, "route": config.routes[index] })),
    ))
}

fn route_at(config: &mut Config, index: usize) -> Result<&mut RouteConfig, ChangeError> {
    let count = config.routes.len();
    config
        .routes
        .get_mut(index)
        .ok_or_else(|| ChangeError::NotFound(format!("no route {index} (there are {count})")))
}

/// `GET /v1/routes/{index}`.
#[utoipa::path(
    get,
    path = "/v1/routes/{index}",
    tag = "routes",
    params(("index" = u64, Path, minimum = 0, description = "Route position, from 0")),
    responses((status = 200, description = "The route", body = RouteConfig), (status = 404, description = "No such route"))
)]
pub async fn get_route(
    State(state): State<AdminState>,
    PathOf(index): PathOf<usize>,
) -> ApiResult<Json<RouteConfig>> {
    let mut config = state.control.config();
    Ok(Json(route_at(&mut config, index)?.clone()))
}

/// `PUT /v1/routes/{index}`: replaces the route.
#[utoipa::path(
    put,
    path = "/v1/routes/{index}",
    tag = "routes",
    request_body = RouteConfig,
    params(("index" = u64, Path, minimum = 0, description = "Route position, from 0")),
    responses((status = 200, description = "Replaced", body = serde_json::Value), (status = 404, description = "No such route"), (status = 422, description = "Invalid"))
)]
pub async fn put_route(
    State(state): State<AdminState>,
    PathOf(index): PathOf<usize>,
    body: Bytes,
) -> ApiResult<Json<RouteConfig>> {
    let route: RouteConfig = parse(&body, "route")?;
    let replaced = route.clone();
    change(&state, move |config| {
        *route_at(config, index)? = route;
        Ok(())
    })
    .await?;
    Ok(Json(replaced))
}

/// `DELETE /v1/routes/{index}`: later routes move up by one.
#[utoipa::path(
    delete,
    path = "/v1/routes/{index}",
    tag = "routes",
    params(("index" = u64, Path, minimum = 0, description = "Route position, from 0")),
    responses((status = 204, description = "Deleted; later routes move up"), (status = 404, description = "No such route"))
)]
pub async fn delete_route(
    State(state): State<AdminState>,
    PathOf(index): PathOf<usize>,
) -> ApiResult<StatusCode> {
    change(&state, move |config| {
        route_at(config, index)?;
        config.routes.remove(index);
        Ok(())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `?kind=` of `/v1/events`: comma-separated categories (`health`,
/// `failover`, `plugin`, `config`) or event kinds (`breaker_open`, …). Default: all.
#[derive(Debug, Default, Deserialize)]
pub struct EventFilter {
    kind: Option<String>,
}

/// The next event `filter` wants, as `(category, JSON with category added)`;
/// a lag (the client read too slowly) is reported as a `lagged` event with
/// the number missed. `None` when the bus is gone or at shutdown (`closed`).
async fn next_event(
    rx: &mut tokio::sync::broadcast::Receiver<crate::events::HealthEvent>,
    closed: &mut tokio::sync::watch::Receiver<bool>,
    wanted: Option<&[String]>,
) -> Option<(&'static str, Value)> {
    loop {
        let received = tokio::select! {
            received = rx.recv() => received,
            _ = closed.wait_for(|closed| *closed) => return None,
        };
        match received {
            Ok(event) => {
                let category = event.kind.category();
                let mut value = serde_json::to_value(&event).unwrap_or(Value::Null);
                let kind = value["kind"].as_str().unwrap_or("").to_string();
                if wanted.is_some_and(|w| !w.iter().any(|x| *x == category || *x == kind)) {
                    continue;
                }
                value["category"] = category.into();
                return Some((category, value));
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                return Some(("lagged", json!({ "category": "lagged", "missed": missed })));
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
        }
    }
}

/// `GET /v1/events`: health, failover and config events as they happen,
/// one JSON object each (`category` added) — over a WebSocket when the
/// request asks for the upgrade (text messages), else as server-sent
/// events (event name = category; a comment every 15 s keeps it open).
#[utoipa::path(
    get,
    path = "/v1/events",
    tag = "events",
    params(("kind" = Option<String>, Query, description = "Comma-separated categories (`health`, `failover`, `config`) or kinds")),
    responses((status = 101, description = "WebSocket: one JSON event per text message"), (status = 200, description = "Server-sent events", content_type = "text/event-stream", body = String))
)]
pub async fn events(
    State(state): State<AdminState>,
    Query(filter): Query<EventFilter>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let wanted: Option<Vec<String>> = filter
        .kind
        .map(|k| k.split(',').map(|s| s.trim().to_string()).collect());
    let mut receiver = state.control.events().subscribe();
    let mut closed = state.control.streams_closed();
    if let Ok(upgrade) = upgrade {
        return upgrade.on_upgrade(move |mut socket: WebSocket| async move {
            while let Some((_, value)) =
                next_event(&mut receiver, &mut closed, wanted.as_deref()).await
            {
                if socket
                    .send(Message::Text(value.to_string().into()))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            // Shutdown (or the bus is gone): say goodbye.
            let _ = socket.send(Message::Close(None)).await;
        });
    }
    let stream = futures_util::stream::unfold(
        (receiver, closed, wanted),
        |(mut rx, mut closed, wanted)| async move {
            let (category, value) = next_event(&mut rx, &mut closed, wanted.as_deref()).await?;
            let sse = Event::default().event(category).data(value.to_string());
            Some((Ok::<_, Infallible>(sse), (rx, closed, wanted)))
        },
    );
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// The process supervisor (503 when it is not running).
fn supervisor(state: &AdminState) -> ApiResult<&std::sync::Arc<crate::process::Supervisor>> {
    state
        .control
        .processes()
        .ok_or_else(|| ApiError::Unavailable("process supervision is not running".into()))
}

/// `GET /v1/pools/{pool}/processes`: each replica's state, pid, port,
/// restarts, last exit status, time up and last lines of output.
#[utoipa::path(
    get,
    path = "/v1/pools/{pool}/processes",
    tag = "processes",
    params(("pool" = String, Path, description = "Pool name")),
    responses((status = 200, description = "The pool's replicas", body = serde_json::Value), (status = 404, description = "No such managed pool"), (status = 503, description = "Process supervision is not running"))
)]
pub async fn list_processes(
    State(state): State<AdminState>,
    PathOf(pool): PathOf<String>,
) -> ApiResult<Json<Vec<crate::process::ReplicaStatus>>> {
    supervisor(&state)?
        .replicas(&pool)
        .map(Json)
        .map_err(|e| ApiError::NotFound(e.to_string()))
}

/// The body of `PATCH /v1/pools/{pool}/processes`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProcessesPatch {
    /// How many replicas, 0..=256; the highest numbers are drained and
    /// stopped first when scaling down.
    pub replicas: u32,
}

/// `PATCH /v1/pools/{pool}/processes`: scale the replicas.
#[utoipa::path(
    patch,
    path = "/v1/pools/{pool}/processes",
    tag = "processes",
    params(("pool" = String, Path, description = "Pool name")),
    request_body = ProcessesPatch,
    responses((status = 200, description = "The pool's process table", body = serde_json::Value), (status = 404, description = "No such managed pool"), (status = 422, description = "The resulting configuration is invalid (`key` names the field)"))
)]
pub async fn scale_processes(
    State(state): State<AdminState>,
    PathOf(pool): PathOf<String>,
    body: Bytes,
) -> ApiResult<Json<crate::config::ProcessConfig>> {
    let patch: ProcessesPatch = parse(&body, "processes patch (replicas)")?;
    let name = pool.clone();
    let (config, ()) = change(&state, move |config| {
        let target = pool_of(config, &name)?;
        let process = target
            .process
            .as_mut()
            .ok_or_else(|| ChangeError::NotFound(format!("pool `{name}` has no processes")))?;
        process.replicas = patch.replicas;
        Ok(())
    })
    .await?;
    config.pools[&pool]
        .process
        .clone()
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("pool `{pool}` has no processes")))
}

/// `POST /v1/pools/{pool}/processes/{replica}/restart`: restart a replica
/// now (a crash-looped one too).
#[utoipa::path(
    post,
    path = "/v1/pools/{pool}/processes/{replica}/restart",
    tag = "processes",
    params(("pool" = String, Path, description = "Pool name"), ("replica" = u32, Path, description = "The replica's number")),
    responses((status = 202, description = "Restarting", body = serde_json::Value), (status = 404, description = "No such managed pool or replica"), (status = 503, description = "Process supervision is not running"))
)]
pub async fn restart_process(
    State(state): State<AdminState>,
    PathOf((pool, replica)): PathOf<(String, u32)>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    supervisor(&state)?
        .restart(&pool, replica)
        .map_err(|e| ApiError::NotFound(e.to_string()))?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "pool": pool, "replica": replica, "restarting": true })),
    ))
}
