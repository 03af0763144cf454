//! The review screen: a prefix's proposals with what each changes, and approving or rejecting
//! one as the token's principal.
//!
//! `GET /api/proposals?prefix=` is a read; it says whether the token presented (a write
//! token) belongs to a principal the access policy lets approve on the prefix, so the page
//! offers Approve and Reject only to them. The write routes do not trust the page: each runs
//! as the token's principal ([`super::writes::acting_for`]) and the library checks the
//! policy in the approval's own transaction (and records a refusal in the audit log), which
//! answers 403 for a principal without `approve`, 409 for one's own proposal or one no longer
//! open.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::{Extension, Json};
use coord::access::Action;
use serde::Deserialize;
use serde_json::json;
use tracing::Instrument;

use super::auth::Writer;
use super::error::ApiError;
use super::permission::presented_permission;
use super::routes::{served, ApiResult};
use super::writes::{acting_for, trimmed_prefix};
use super::Console;
use crate::proposals::proposal_json;
use crate::releases::release_json;

/// `?prefix=`.
#[derive(Debug, Deserialize)]
pub struct ProposalsQuery {
    /// The config prefix.
    pub prefix: String,
}

/// `POST /api/proposals/approve`.
#[derive(Debug, Deserialize)]
pub struct ApproveBody {
    /// The prefix.
    pub prefix: String,
    /// The proposal.
    pub id: String,
    /// The proposal's revision as the page showed it: approval is refused if it was
    /// rewritten since (`coord::ConfigCenter::approve_reviewed`).
    #[serde(default)]
    pub revision: Option<i64>,
}

/// `POST /api/proposals/reject`.
#[derive(Debug, Deserialize)]
pub struct RejectBody {
    /// The prefix.
    pub prefix: String,
    /// The proposal.
    pub id: String,
    /// Why (the proposer reads it).
    #[serde(default)]
    pub reason: String,
}

/// `GET /api/proposals?prefix=`: every proposal of a served prefix (open and decided, oldest
/// first, each with its changes, secrets redacted), the principal of the write token
/// presented, and whether that principal may approve here (`can_approve`, with the policy's
/// reason).
pub async fn proposals(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Query(query): Query<ProposalsQuery>,
) -> ApiResult {
    let span = tracing::debug_span!("console.proposals", prefix = %query.prefix);
    async {
        let served = served(&console.coord, &query.prefix).await?;
        let approve = presented_permission(
            &console,
            &headers,
            Action::Approve,
            &served.prefix,
            "approving",
        )
        .await?;
        let proposals = console.coord.config().proposals(&served.prefix).await?;
        let under = served.under();
        Ok(Json(json!({
            "prefix": served.prefix,
            "principal": approve.principal,
            "can_approve": approve.allowed,
            "reason": approve.reason,
            "proposals": proposals.iter().map(|p| proposal_json(p, under)).collect::<Vec<_>>(),
        })))
    }
    .instrument(span)
    .await
}

/// `POST /api/proposals/approve`: the proposal committed as a release, as the token's
/// principal.
pub async fn approve(
    State(console): State<Arc<Console>>,
    Extension(writer): Extension<Writer>,
    Json(body): Json<ApproveBody>,
) -> ApiResult {
    let prefix = trimmed_prefix(&body.prefix);
    let span = tracing::info_span!("console.approve", prefix = %prefix, id = %body.id, principal = %writer.principal);
    async {
        let served = served(&console.coord, &prefix).await?;
        let config = acting_for(&console, &writer)?;
        let release = match body.revision {
            // What the reviewer saw, or nothing.
            Some(seen) => {
                let mut reviewed = config.proposal(&served.prefix, &body.id).await?;
                reviewed.revision = seen;
                config.approve_reviewed(&reviewed).await?
            }
            None => config.approve(&served.prefix, &body.id).await?,
        };
        Ok(Json(release_json(&release, served.under())))
    }
    .instrument(span)
    .await
}

/// `POST /api/proposals/reject`: the proposal rejected with a reason, as the token's
/// principal (one who may approve, or its proposer withdrawing it).
pub async fn reject(
    State(console): State<Arc<Console>>,
    Extension(writer): Extension<Writer>,
    Json(body): Json<RejectBody>,
) -> ApiResult {
    let prefix = trimmed_prefix(&body.prefix);
    let span = tracing::info_span!("console.reject", prefix = %prefix, id = %body.id, principal = %writer.principal);
    async {
        let reason = body.reason.trim();
        if reason.is_empty() {
            return Err(ApiError::BadRequest(
                "say why in the reason: the proposer reads it".into(),
            ));
        }
        let served = served(&console.coord, &prefix).await?;
        let proposal = acting_for(&console, &writer)?
            .reject(&served.prefix, &body.id, reason)
            .await?;
        Ok(Json(proposal_json(&proposal, served.under())))
    }
    .instrument(span)
    .await
}
