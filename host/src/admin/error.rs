//! Admin API errors: a status and a JSON body.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::control::ChangeError;

/// Why an admin request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not valid JSON of the expected shape (400).
    #[error("{0}")]
    BadBody(String),
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
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::NotFound(_) | ApiError::Change(ChangeError::NotFound(_)) => {
                (StatusCode::NOT_FOUND, "not_found")
            }
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            ApiError::Change(ChangeError::Conflict(_)) => (StatusCode::CONFLICT, "conflict"),
            ApiError::Change(ChangeError::Invalid { .. } | ChangeError::Build(_)) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "invalid")
            }
            ApiError::Change(ChangeError::Persist { .. }) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "not_persisted")
            }
        };
        let mut body = serde_json::json!({ "error": code, "message": self.to_string() });
        if let ApiError::Change(ChangeError::Invalid { key, reason }) = &self {
            body["key"] = key.as_str().into();
            body["reason"] = reason.as_str().into();
        }
        (status, axum::Json(body)).into_response()
    }
}
