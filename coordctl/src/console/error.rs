//! What an API call answers when it fails: a status and a JSON body a page can act on.
//!
//! A failure of the store or of the console itself answers a generic sentence; what went
//! wrong (etcd's address, a decode error quoting a value) goes to the server's log only.

use std::time::Duration;

use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderValue, StatusCode};
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
    /// From the coord library; the body says what a person may know of it (see
    /// [`public_message`]).
    #[error(transparent)]
    Coord(#[from] coord::Error),
    /// A failure of the console itself; the body says nothing of it.
    #[error("{0}")]
    Internal(String),
    /// Too many wrong tokens lately: every token check waits out the window.
    #[error("too many wrong tokens: try again in {} s", retry_after.as_secs().max(1))]
    TooManyFailures {
        /// Until the window ends.
        retry_after: Duration,
    },
    /// As many event streams are open as the console serves.
    #[error("{0}")]
    Busy(String),
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
    /// A rollout plan that has ended: nothing to steer.
    #[error("{0}")]
    Ended(String),
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
            ApiError::Conflict { .. } | ApiError::Ended(_) => StatusCode::CONFLICT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::TooManyFailures { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Coord(e) => match e {
                coord::Error::NotFound { .. } => StatusCode::NOT_FOUND,
                coord::Error::Conflict { .. } | coord::Error::GrayConflict { .. } => {
                    StatusCode::CONFLICT
                }
                coord::Error::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
                coord::Error::PermissionDenied { .. } | coord::Error::ReviewRequired { .. } => {
                    StatusCode::FORBIDDEN
                }
                coord::Error::Proposal { .. } => StatusCode::CONFLICT,
                coord::Error::InvalidArgument { .. } => StatusCode::BAD_REQUEST,
                // Not 503: trying again at once may apply the write twice.
                e if e.is_outcome_unknown() => StatusCode::GATEWAY_TIMEOUT,
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
            ApiError::Ended(_) => "ended",
            ApiError::Coord(coord::Error::PermissionDenied { .. }) => "permission_denied",
            ApiError::Coord(coord::Error::ReviewRequired { .. }) => "review_required",
            ApiError::Coord(coord::Error::Proposal { .. }) => "proposal",
            ApiError::Coord(e) if e.is_outcome_unknown() => "outcome_unknown",
            ApiError::Coord(e) if e.is_transient() => "unavailable",
            ApiError::Coord(_) => "coord",
            ApiError::Internal(_) => "internal",
            ApiError::TooManyFailures { .. } => "too_many_failures",
            ApiError::Busy(_) => "busy",
        }
    }

    /// What the body says: the error itself, unless it may tell more than a person should
    /// know (then it is logged).
    fn message(&self) -> String {
        match self {
            ApiError::Coord(e) => public_message(e),
            ApiError::Internal(detail) => {
                tracing::warn!(error = %detail, "console: a request failed");
                INTERNAL.to_owned()
            }
            other => other.to_string(),
        }
    }
}

/// What a page is told of a failure inside the console.
const INTERNAL: &str = "the console could not answer: its log says why";
/// What a page is told when the store cannot be reached.
const UNREACHABLE: &str = "the store could not be reached: try again shortly";
/// What a page is told when a write's answer was lost.
const OUTCOME_UNKNOWN: &str = "the store did not confirm the change: it may or may not have \
     been applied; reload to see the current values before trying again";

/// What a person may read of a library error: the refusals they can act on (not found, a
/// conflict, a value the schema refuses, a bad argument, the access policy's refusal with
/// its reason, a prefix that requires review, a proposal that cannot be decided) as they
/// are; for anything else a generic sentence, the error itself logged.
pub fn public_message(e: &coord::Error) -> String {
    match e {
        coord::Error::NotFound { .. }
        | coord::Error::Conflict { .. }
        | coord::Error::GrayConflict { .. }
        | coord::Error::Invalid { .. }
        | coord::Error::InvalidArgument { .. }
        | coord::Error::PermissionDenied { .. }
        | coord::Error::ReviewRequired { .. }
        | coord::Error::Proposal { .. } => e.to_string(),
        e if e.is_outcome_unknown() => {
            tracing::warn!(error = %e, "console: a write's outcome is unknown");
            OUTCOME_UNKNOWN.to_owned()
        }
        e if e.is_transient() => {
            tracing::warn!(error = %e, "console: the store could not be reached");
            UNREACHABLE.to_owned()
        }
        e => {
            tracing::warn!(error = %e, "console: a store call failed");
            INTERNAL.to_owned()
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.message(), "code": self.code() });
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
        let mut response = (self.status(), Json(body)).into_response();
        let retry_after = match &self {
            ApiError::TooManyFailures { retry_after } => Some(retry_after.as_secs().max(1)),
            ApiError::Busy(_) => Some(5),
            _ => None,
        };
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_of(error: ApiError) -> (StatusCode, Value) {
        let response = error.into_response();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn an_unreachable_store_answers_a_generic_503_without_its_address() {
        let (status, body) = body_of(ApiError::Coord(coord::Error::Unavailable {
            endpoints: "http://10.20.30.40:2379".into(),
            reason: "connection refused (user root)".into(),
        }))
        .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["error"], UNREACHABLE);
        assert!(!body.to_string().contains("10.20.30.40"), "{body}");
        assert!(!body.to_string().contains("root"), "{body}");
    }

    #[tokio::test]
    async fn a_write_of_unknown_outcome_answers_504_and_says_to_reload_first() {
        let (status, body) = body_of(ApiError::Coord(coord::Error::OutcomeUnknown {
            operation: "txn /config/pay/rate".into(),
            key: "/config/pay/rate".into(),
            source: Box::new(coord::Error::Unavailable {
                endpoints: "http://10.20.30.40:2379".into(),
                reason: "connection reset".into(),
            }),
        }))
        .await;
        assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(body["code"], "outcome_unknown");
        assert_eq!(body["error"], OUTCOME_UNKNOWN);
        assert!(!body.to_string().contains("10.20.30.40"), "{body}");
    }

    #[tokio::test]
    async fn other_backend_failures_answer_a_generic_500() {
        for error in [
            ApiError::Coord(coord::Error::Backend {
                key: "/config/pay/api_key".into(),
                reason: "etcd at 10.20.30.40:2379 said no".into(),
            }),
            ApiError::Internal("detail at 10.20.30.40".into()),
        ] {
            let (status, body) = body_of(error).await;
            assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
            assert_eq!(body["error"], INTERNAL);
            assert!(!body.to_string().contains("10.20.30.40"), "{body}");
        }
    }

    #[tokio::test]
    async fn a_refusal_a_person_can_act_on_is_shown_as_it_is() {
        let (status, body) = body_of(ApiError::Coord(coord::Error::NotFound {
            key: "/coord/releases/config/pay//00000000000000000009".into(),
        }))
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(
            body["error"].as_str().unwrap().contains("not found"),
            "{body}"
        );
    }
}
