//! `GET /api/audit?prefix=&since=&principal=&limit=`: the audit log's records, oldest first,
//! as `coordctl audit ls -o json` shows them. Records name who did what where and why it was
//! refused; they hold no config value.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::Json;
use coord::access::audit::AuditQuery;
use serde::Deserialize;
use serde_json::Value;
use tracing::Instrument;

use super::error::ApiError;
use super::routes::{cli_error, ApiResult};
use super::Console;
use crate::audit_cmd::{record_json, records as read_records};

/// How many records an answer holds unless `limit` says otherwise, and at most.
const DEFAULT_LIMIT: usize = 200;
const MAX_LIMIT: usize = 1000;

/// The filters, each optional (an empty one is none).
#[derive(Debug, Default, Deserialize)]
pub struct AuditParams {
    /// Records on this prefix or under it.
    #[serde(default)]
    pub prefix: Option<String>,
    /// Records no older than this (`1h`, `7d`).
    #[serde(default)]
    pub since: Option<String>,
    /// Records of this principal.
    #[serde(default)]
    pub principal: Option<String>,
    /// The newest this many (default 200, at most 1000).
    #[serde(default)]
    pub limit: Option<usize>,
}

fn given(value: Option<String>) -> Option<String> {
    value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

/// `GET /api/audit`.
pub async fn records(
    State(console): State<Arc<Console>>,
    Query(params): Query<AuditParams>,
) -> ApiResult {
    let limit = params.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    let mut query = AuditQuery::default().limit(limit);
    if let Some(prefix) = given(params.prefix) {
        query = query.prefix(prefix);
    }
    if let Some(since) = given(params.since) {
        let age = humantime::parse_duration(&since).map_err(|e| {
            ApiError::BadRequest(format!(
                "since `{since}` is not a duration such as 1h or 7d: {e}"
            ))
        })?;
        query = query.since(age);
    }
    if let Some(principal) = given(params.principal) {
        query = query.principal(principal);
    }
    let records = read_records(&console.coord, &query)
        .instrument(tracing::debug_span!("console.audit"))
        .await
        .map_err(cli_error)?;
    Ok(Json(Value::Array(
        records.iter().map(record_json).collect(),
    )))
}
