//! `/v1/filters`: the named filters routes list in their `filters`.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;

use super::error::PathOf;
use super::resources::{change, delete_named, get_named, parse, put_named, put_status};
use super::{AdminState, ApiError};
use crate::config::{ApiKeyConfig, ApiKeyPrincipal, Config, FilterConfig, RouteConfig};
use crate::control::ChangeError;

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

/// A principal of an `api-key` filter as the admin API takes it: its id
/// is the path's.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PrincipalBody {
    /// The `sha256:` digests of its keys (`switchyard api-key hash KEY`,
    /// or `POST …/keys` to have one made); at least one.
    pub keys: Vec<String>,
    /// What else is known of it (team, plan). Default none.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// The scopes it holds. Default none.
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// A key made by `POST …/keys`: shown once, only its digest is kept.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct NewKey {
    /// The key to give the client (`sy_` and 43 base64url characters).
    pub key: String,
    /// Its digest, as the filter stores it and `DELETE …/keys/{digest}`
    /// names it.
    pub digest: String,
}

/// The `api-key` filter `name` of `config`.
///
/// # Errors
/// 404 when there is no filter of that name or it is of another kind.
fn api_keys<'c>(config: &'c mut Config, name: &str) -> Result<&'c mut ApiKeyConfig, ChangeError> {
    match config.filters.get_mut(name) {
        Some(FilterConfig::ApiKey(keys)) => Ok(keys),
        Some(_) => Err(ChangeError::NotFound(format!(
            "filter `{name}` is not an `api-key` filter: it has no principals"
        ))),
        None => Err(ChangeError::NotFound(format!("no filter `{name}`"))),
    }
}

/// The principal `id` of the `api-key` filter `name` of `config`.
///
/// # Errors
/// 404 when there is no such filter or principal.
fn principal<'c>(
    config: &'c mut Config,
    name: &str,
    id: &str,
) -> Result<&'c mut ApiKeyPrincipal, ChangeError> {
    api_keys(config, name)?
        .principals
        .iter_mut()
        .find(|p| p.id == id)
        .ok_or_else(|| ChangeError::NotFound(format!("no principal `{id}` in filter `{name}`")))
}

/// `GET /v1/filters/{filter}/principals`.
#[utoipa::path(
    get,
    path = "/v1/filters/{filter}/principals",
    tag = "filters",
    params(("filter" = String, Path, description = "An `api-key` filter's name")),
    responses((status = 200, description = "Its principals, their keys as digests", body = Vec<ApiKeyPrincipal>), (status = 404, description = "No such `api-key` filter"))
)]
pub async fn list_principals(
    State(state): State<AdminState>,
    PathOf(filter): PathOf<String>,
) -> Result<Json<Vec<ApiKeyPrincipal>>, ApiError> {
    let mut config = state.control.config();
    Ok(Json(api_keys(&mut config, &filter)?.principals.clone()))
}

/// `PUT /v1/filters/{filter}/principals/{principal}`: creates (201) or
/// replaces (200) a principal of an `api-key` filter (Kong's consumer
/// with its `key-auth` credentials); requests see the change from the
/// next one, every replica through the config store.
#[utoipa::path(
    put,
    path = "/v1/filters/{filter}/principals/{principal}",
    tag = "filters",
    request_body = PrincipalBody,
    params(("filter" = String, Path, description = "An `api-key` filter's name"), ("principal" = String, Path, description = "The principal's id")),
    responses((status = 200, description = "Replaced", body = ApiKeyPrincipal), (status = 201, description = "Created", body = ApiKeyPrincipal), (status = 400, description = "Not a principal"), (status = 404, description = "No such `api-key` filter"), (status = 422, description = "Invalid: `key` and `reason` (a digest that is not one, a key another principal has)"))
)]
pub async fn put_principal(
    State(state): State<AdminState>,
    PathOf((filter, id)): PathOf<(String, String)>,
    body: Bytes,
) -> Result<(StatusCode, Json<ApiKeyPrincipal>), ApiError> {
    let body: PrincipalBody = parse(&body, "principal")?;
    let new = ApiKeyPrincipal {
        id: id.clone(),
        keys: body.keys,
        metadata: body.metadata,
        scopes: body.scopes,
    };
    let put = new.clone();
    let (_, replaced) = change(&state, move |config| {
        let principals = &mut api_keys(config, &filter)?.principals;
        Ok(match principals.iter_mut().find(|p| p.id == put.id) {
            Some(old) => {
                *old = put;
                true
            }
            None => {
                principals.push(put);
                false
            }
        })
    })
    .await?;
    Ok((put_status(replaced), Json(new)))
}

/// `DELETE /v1/filters/{filter}/principals/{principal}`: its keys stop
/// working from the next request.
#[utoipa::path(
    delete,
    path = "/v1/filters/{filter}/principals/{principal}",
    tag = "filters",
    params(("filter" = String, Path, description = "An `api-key` filter's name"), ("principal" = String, Path, description = "The principal's id")),
    responses((status = 204, description = "Deleted"), (status = 404, description = "No such filter or principal"), (status = 422, description = "It is the filter's last principal"))
)]
pub async fn delete_principal(
    State(state): State<AdminState>,
    PathOf((filter, id)): PathOf<(String, String)>,
) -> Result<StatusCode, ApiError> {
    change(&state, move |config| {
        principal(config, &filter, &id)?;
        api_keys(config, &filter)?.principals.retain(|p| p.id != id);
        Ok(())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/filters/{filter}/principals/{principal}/keys`: makes a new
/// key for the principal and adds its digest (a rotation's first step:
/// hand the key out, then delete the old one's digest). The key is in
/// this answer only.
#[utoipa::path(
    post,
    path = "/v1/filters/{filter}/principals/{principal}/keys",
    tag = "filters",
    params(("filter" = String, Path, description = "An `api-key` filter's name"), ("principal" = String, Path, description = "The principal's id")),
    responses((status = 201, description = "The new key and its digest", body = NewKey), (status = 404, description = "No such filter or principal"))
)]
pub async fn add_key(
    State(state): State<AdminState>,
    PathOf((filter, id)): PathOf<(String, String)>,
) -> Result<(StatusCode, Json<NewKey>), ApiError> {
    let (key, digest) = crate::gateway::auth::new_key()
        .map_err(|e| ApiError::Internal(format!("no randomness for a key: {e}")))?;
    let added = digest.clone();
    change(&state, move |config| {
        principal(config, &filter, &id)?.keys.push(added);
        Ok(())
    })
    .await?;
    Ok((StatusCode::CREATED, Json(NewKey { key, digest })))
}

/// `DELETE /v1/filters/{filter}/principals/{principal}/keys/{digest}`:
/// the key of that digest stops working from the next request.
#[utoipa::path(
    delete,
    path = "/v1/filters/{filter}/principals/{principal}/keys/{digest}",
    tag = "filters",
    params(("filter" = String, Path, description = "An `api-key` filter's name"), ("principal" = String, Path, description = "The principal's id"), ("digest" = String, Path, description = "The key's digest, `sha256:…`")),
    responses((status = 204, description = "Deleted"), (status = 404, description = "No such filter, principal or key"), (status = 422, description = "It is the principal's last key"))
)]
pub async fn delete_key(
    State(state): State<AdminState>,
    PathOf((filter, id, digest)): PathOf<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    change(&state, move |config| {
        let keys = &mut principal(config, &filter, &id)?.keys;
        let before = keys.len();
        keys.retain(|k| *k != digest);
        if keys.len() == before {
            return Err(ChangeError::NotFound(format!(
                "principal `{id}` has no key `{digest}`"
            )));
        }
        Ok(())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
