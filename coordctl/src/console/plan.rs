//! The plan view: a prefix's rollout plan with its steps, gates and log, and per step the
//! instances it selects; pausing, resuming and cancelling it.
//!
//! `GET /api/plan?prefix=` is a read (404 without a plan; only a prefix the console serves,
//! see [`super::routes::served`]). It says whether the write token presented belongs to a
//! principal the access policy lets `release` on the prefix (`can_steer`, with the policy's
//! reason), so the page offers Pause, Resume and Cancel only to them. The write routes do not
//! trust the page: each steers as the token's principal, through the console's own principal
//! as its delegate ([`Rollouts::on_behalf_of`]), and the library checks `release` on the
//! prefix for that principal (a plan's steps are releases, so steering one takes what
//! releasing takes) and records the step, or the refusal, in the audit log: 403 with the
//! policy's reason, 404 without a plan, 409 for a plan that has ended.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::{Extension, Json};
use coord::access::Action;
use coord::rollout::{PlanStatus, Rollouts};
use serde::Deserialize;
use serde_json::json;
use tracing::Instrument;

use super::auth::Writer;
use super::error::ApiError;
use super::permission::presented_permission;
use super::routes::{cli_error, served, ApiResult, PrefixQuery, Served};
use super::writes::trimmed_prefix;
use super::Console;
use crate::plans::{plan_json, state_text};

/// `POST /api/plan/pause|resume|cancel`.
#[derive(Debug, Deserialize)]
pub struct PlanBody {
    /// The prefix.
    pub prefix: String,
}

/// The rollouts acting for `writer`'s principal through the console's delegate (the
/// connection's own principal, or the one `--as` claims).
fn acting_for(console: &Console, writer: &Writer) -> Result<Rollouts, ApiError> {
    let mut rollouts = console.coord.rollouts();
    let delegate = &console.delegate.identity().principal;
    if rollouts.identity().principal != *delegate {
        rollouts = rollouts.as_principal(delegate)?;
    }
    Ok(rollouts.on_behalf_of(&writer.principal)?)
}

/// The prefix's plan, or 404.
async fn existing(console: &Console, prefix: &str) -> Result<PlanStatus, ApiError> {
    console
        .coord
        .rollouts()
        .status(prefix)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no rollout plan on {prefix}")))
}

/// The plan as the page shows it, with the instances of the prefix.
async fn answer(console: &Console, served: &Served, status: &PlanStatus) -> ApiResult {
    let statuses = if status.state.is_finished() {
        Vec::new()
    } else {
        console.coord.config().rollout(&served.prefix).await?
    };
    let doc = plan_json(status, &statuses, served.under()).map_err(cli_error)?;
    Ok(Json(doc))
}

/// `GET /api/plan?prefix=`: the plan (as `coordctl config plan status -o json` shows it: the
/// stored plan, its values redacted as the schema says, each step with its state and, while
/// it runs, the instances it selects), the principal of the write token presented, and
/// whether that principal may steer it (`can_steer`, with the policy's `reason`).
pub async fn plan(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Query(query): Query<PrefixQuery>,
) -> ApiResult {
    let span = tracing::debug_span!("console.plan", prefix = %query.prefix);
    async {
        let served = served(&console.coord, &query.prefix).await?;
        let status = existing(&console, &served.prefix).await?;
        let steer = presented_permission(
            &console,
            &headers,
            Action::Release,
            &served.prefix,
            "steering a plan",
        )
        .await?;
        let Json(mut doc) = answer(&console, &served, &status).await?;
        doc["principal"] = json!(steer.principal);
        doc["can_steer"] = json!(steer.allowed);
        doc["reason"] = json!(steer.reason);
        Ok(Json(doc))
    }
    .instrument(span)
    .await
}

/// What a write route does to the plan.
#[derive(Clone, Copy, Debug)]
enum Steer {
    Pause,
    Resume,
    Cancel,
}

impl Steer {
    fn verb(self) -> &'static str {
        match self {
            Steer::Pause => "pause",
            Steer::Resume => "resume",
            Steer::Cancel => "cancel",
        }
    }
}

/// `POST /api/plan/pause`: the plan holds its step until resumed.
pub async fn pause(
    State(console): State<Arc<Console>>,
    Extension(writer): Extension<Writer>,
    Json(body): Json<PlanBody>,
) -> ApiResult {
    steer(console, writer, body, Steer::Pause).await
}

/// `POST /api/plan/resume`: a paused plan goes on (its step bakes again from the start).
pub async fn resume(
    State(console): State<Arc<Console>>,
    Extension(writer): Extension<Writer>,
    Json(body): Json<PlanBody>,
) -> ApiResult {
    steer(console, writer, body, Steer::Resume).await
}

/// `POST /api/plan/cancel`: the plan ends, its gray release aborted.
pub async fn cancel(
    State(console): State<Arc<Console>>,
    Extension(writer): Extension<Writer>,
    Json(body): Json<PlanBody>,
) -> ApiResult {
    steer(console, writer, body, Steer::Cancel).await
}

async fn steer(console: Arc<Console>, writer: Writer, body: PlanBody, steer: Steer) -> ApiResult {
    let prefix = trimmed_prefix(&body.prefix);
    let span = tracing::info_span!(
        "console.plan_steer",
        prefix = %prefix,
        action = steer.verb(),
        principal = %writer.principal
    );
    async {
        let served = served(&console.coord, &prefix).await?;
        let rollouts = acting_for(&console, &writer)?;
        let steered = match steer {
            Steer::Pause => rollouts.pause(&served.prefix).await,
            Steer::Resume => rollouts.resume(&served.prefix).await,
            Steer::Cancel => rollouts.cancel(&served.prefix).await,
        };
        let done = match steered {
            Ok(done) => done,
            // The library refuses a plan that has ended as an invalid argument.
            Err(e @ coord::Error::InvalidArgument { .. }) => {
                let now = existing(&console, &served.prefix).await?;
                if !now.state.is_finished() {
                    return Err(e.into());
                }
                return Err(ApiError::Ended(format!(
                    "plan {} on {} is {}: nothing to {}",
                    now.id,
                    served.prefix,
                    state_text(&now),
                    steer.verb()
                )));
            }
            Err(coord::Error::NotFound { .. }) => {
                return Err(ApiError::NotFound(format!(
                    "no rollout plan on {}",
                    served.prefix
                )))
            }
            Err(e) => return Err(e.into()),
        };
        tracing::info!(plan = %done.id, "plan steered from the console");
        answer(&console, &served, &done).await
    }
    .instrument(span)
    .await
}
