//! `/v1/filters`: the named filters routes list in their `filters`.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;

use super::error::PathOf;
use super::resources::{delete_named, get_named, parse, put_named};
use super::{AdminState, ApiError};
use crate::config::{FilterConfig, RouteConfig};

/// `GET /v1/filters`.
#[utoipa::path(
    get,
    path = "/v1/filters",
    tag = "filters",
    responses((status = 200, description = "Every filter's config by name", body = serde_json::Value))
)]
pub async fn list_filters(State(state): State<AdminState>) -> Json<BTreeMap<String, FilterConfig>> {
    Json(state.control.config().filters)
}

/// `GET /v1/filters/{filter}`.
#[utoipa::path(
    get,
    path = "/v1/filters/{filter}",
    tag = "filters",
    params(("filter" = String, Path, description = "Filter name")),
    responses((status = 200, description = "The filter's config", body = FilterConfig), (status = 404, description = "No such filter"))
)]
pub async fn get_filter(
    State(state): State<AdminState>,
    PathOf(filter): PathOf<String>,
) -> Result<Json<FilterConfig>, ApiError> {
    get_named(&state, &filter, "filter", |config| &mut config.filters)
}

/// `PUT /v1/filters/{filter}`: creates (201) or replaces (200) the filter;
/// the routes that list it apply the new one from their next request.
#[utoipa::path(
    put,
    path = "/v1/filters/{filter}",
    tag = "filters",
    request_body = FilterConfig,
    params(("filter" = String, Path, description = "Filter name")),
    responses((status = 200, description = "Replaced", body = FilterConfig), (status = 201, description = "Created", body = FilterConfig), (status = 400, description = "Not a filter"), (status = 422, description = "Invalid: `key` and `reason`"))
)]
pub async fn put_filter(
    State(state): State<AdminState>,
    PathOf(filter): PathOf<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<FilterConfig>), ApiError> {
    let new: FilterConfig = parse(&body, "filter")?;
    put_named(&state, filter, new, |config| &mut config.filters).await
}

/// `DELETE /v1/filters/{filter}`: refused (409) while a route lists it.
#[utoipa::path(
    delete,
    path = "/v1/filters/{filter}",
    tag = "filters",
    params(("filter" = String, Path, description = "Filter name")),
    responses((status = 204, description = "Deleted"), (status = 404, description = "No such filter"), (status = 409, description = "A route lists it"))
)]
pub async fn delete_filter(
    State(state): State<AdminState>,
    PathOf(filter): PathOf<String>,
) -> Result<StatusCode, ApiError> {
    let lists = |route: &RouteConfig, name: &str| route.filters.iter().any(|f| f == name);
    delete_named(
        &state,
        filter,
        "filter",
        |config| &mut config.filters,
        lists,
    )
    .await
}
