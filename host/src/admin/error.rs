//! Admin API errors: a status and a JSON body.

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::control::ChangeError;

/// The JSON body of every failed admin request.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody {
    /// A short machine-readable code: `bad_body`, `bad_path`,
    /// `unauthorized`, `not_found`, `conflict`, `invalid`, `unavailable`,
    /// `internal`, `not_persisted`.
    error: &'static str,
    /// What went wrong, for people.
    message: String,
    /// For `invalid`: the config key at fault.
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    /// For `invalid`: why.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

/// A path parameter extracted as axum's `Path` does, refused with the
/// JSON error (400 `bad_path`) rather than axum's plain text.
#[derive(Debug)]
pub struct PathOf<T>(pub T);

impl<S, T> FromRequestParts<S> for PathOf<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| PathOf(value))
            .map_err(|rejection| ApiError::BadPath(rejection.body_text()))
    }
}

/// Why an admin request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not valid JSON of the expected shape (400).
    #[error("{0}")]
    BadBody(String),
    /// A path parameter is not of its type (400).
    #[error("{0}")]
    BadPath(String),
    /// No or a wrong bearer token (401).
    #[error("a valid `Authorization: Bearer <token>` header is required")]
    Unauthorized,
    /// An unknown name (404).
    #[error("{0}")]
    NotFound(String),
    /// Nothing can serve the request now (503).
    #[error("{0}")]
    Unavailable(String),
    /// An internal failure (500).
    #[error("{0}")]
    Internal(String),
    /// A change that was not applied.
    #[error(transparent)]
    Change(#[from] ChangeError),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            ApiError::BadBody(_) => (StatusCode::BAD_REQUEST, "bad_body"),
            ApiError::BadPath(_) => (StatusCode::BAD_REQUEST, "bad_path"),
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::NotFound(_) | ApiError::Change(ChangeError::NotFound(_)) => {
                (StatusCode::NOT_FOUND, "not_found")
            }
            ApiError::Unavailable(_) | ApiError::Change(ChangeError::Unavailable(_)) => {
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
            }
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            ApiError::Change(ChangeError::Conflict(_)) => (StatusCode::CONFLICT, "conflict"),
            ApiError::Change(ChangeError::Invalid { .. } | ChangeError::Build(_)) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "invalid")
            }
            ApiError::Change(ChangeError::Persist { .. }) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "not_persisted")
            }
        };
        let (key, reason) = match &self {
            ApiError::Change(ChangeError::Invalid { key, reason }) => {
                (Some(key.clone()), Some(reason.clone()))
            }
            _ => (None, None),
        };
        let body = ErrorBody {
            error: code,
            message: self.to_string(),
            key,
            reason,
        };
        (status, axum::Json(body)).into_response()
    }
}
