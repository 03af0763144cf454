//! What an API call answers when it fails: a status and a JSON body a page can act on.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

/// A field an edit was refused for, with what the schema expects of it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct FieldError {
    /// The key, relative to the prefix.
    pub key: String,
    /// Why, as the schema check says it (expected type, doc, what was given).
    pub reason: String,
    /// The field's Rust type, if the key is a known field.
    pub type_name: Option<String>,
    /// The field's doc comment, if the key is a known field.
    pub doc: Option<String>,
}

/// A failed API call.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// From the coord library.
    #[error(transparent)]
    Coord(#[from] coord::Error),
    /// The console was started without `--token-file`.
    #[error("this console is read-only: start it with --token-file to allow writes")]
    ReadOnly,
    /// No write token, or one not in the token file.
    #[error("{0}")]
    Unauthorized(String),
    /// A write from another origin, without the page's CSRF token, or to a non-loopback host.
    #[error("{0}")]
    Forbidden(String),
    /// The request itself is wrong (nothing to release, no message…).
    #[error("{0}")]
    BadRequest(String),
    /// No schema, no such release…
    #[error("{0}")]
    NotFound(String),
    /// The schema refuses these fields; nothing was written.
    #[error("the schema refuses {}: nothing was written", names(.0))]
    Refused(Vec<FieldError>),
    /// Someone released meanwhile; nothing was written.
    #[error("{prefix} was released meanwhile (release {latest}, the page showed {expected}): nothing was written")]
    Conflict {
        /// The prefix.
        prefix: String,
        /// The latest release the person saw.
        expected: u64,
        /// The latest release now.
        latest: u64,
        /// How the values changed from `expected` to `latest`.
        diff: Vec<Value>,
    },
}

fn names(fields: &[FieldError]) -> String {
    fields
        .iter()
        .map(|f| f.key.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::ReadOnly | ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Refused(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::Coord(e) => match e {
                coord::Error::NotFound { .. } => StatusCode::NOT_FOUND,
                coord::Error::Conflict { .. } => StatusCode::CONFLICT,
                coord::Error::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
                coord::Error::InvalidArgument { .. } => StatusCode::BAD_REQUEST,
                e if e.is_transient() => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            },
        }
    }

    fn code(&self) -> &'static str {
        match self {
            ApiError::ReadOnly => "read_only",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::NotFound(_) => "not_found",
            ApiError::Refused(_) => "refused",
            ApiError::Conflict { .. } => "conflict",
            ApiError::Coord(_) => "coord",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.to_string(), "code": self.code() });
        match &self {
            ApiError::Refused(fields) => body["fields"] = json!(fields),
            ApiError::Conflict {
                expected,
                latest,
                diff,
                ..
            } => {
                body["expected"] = json!(expected);
                body["latest"] = json!(latest);
                body["diff"] = json!(diff);
            }
            _ => {}
        }
        (self.status(), Json(body)).into_response()
    }
}
