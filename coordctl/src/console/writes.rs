//! The write routes: release, rollback, gray start / promote / abort. Each runs behind the
//! write guard ([`super::auth::require_writer`]), writes only a prefix the console serves
//! ([`super::routes::served`]: a published schema, none of coord's own keys), records its
//! writer as the author, and runs as the writer's principal
//! ([`ConfigCenter::on_behalf_of`]), so the access policy checks that principal's grants.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::extract::State;
use axum::{Extension, Json};
use coord::config::{ConfigCenter, PublishedSchema, ReleaseBuilder, Selector};
use serde::Deserialize;
use serde_json::Value;
use tracing::Instrument;

use super::auth::Writer;
use super::error::{ApiError, FieldError};
use super::routes::{added, diff_json, served, ApiResult, Served};
use super::Console;
use crate::releases::release_json;

/// `POST /api/release`.
#[derive(Debug, Deserialize)]
pub struct ReleaseBody {
    /// The prefix.
    pub prefix: String,
    /// Relative key → new value.
    #[serde(default)]
    pub values: BTreeMap<String, Value>,
    /// Relative keys to delete in the same release.
    #[serde(default)]
    pub remove: BTreeSet<String>,
    /// Why (required: history shows it).
    #[serde(default)]
    pub message: String,
    /// The latest release the person saw (0: none); a release made since is a conflict.
    pub expect_latest: Option<u64>,
}

/// `POST /api/rollback`.
#[derive(Debug, Deserialize)]
pub struct RollbackBody {
    /// The prefix.
    pub prefix: String,
    /// The release whose values to restore.
    pub seq: u64,
    /// Why.
    #[serde(default)]
    pub message: String,
    /// The latest release the person saw.
    pub expect_latest: Option<u64>,
}

/// `POST /api/gray/start`.
#[derive(Debug, Deserialize)]
pub struct GrayStartBody {
    /// The prefix.
    pub prefix: String,
    /// Relative key → value for the picked instances.
    pub values: BTreeMap<String, Value>,
    /// Which instances.
    #[serde(default)]
    pub selector: Selector,
    /// Why.
    #[serde(default)]
    pub message: String,
}

/// `POST /api/gray/promote` and `/api/gray/abort`.
#[derive(Debug, Deserialize)]
pub struct GrayBody {
    /// The prefix.
    pub prefix: String,
    /// The gray release.
    pub seq: u64,
    /// Why.
    #[serde(default)]
    pub message: String,
}

/// Every field the schema refuses, each with its type and doc; empty if all pass.
pub fn refusals(schema: &PublishedSchema, values: &BTreeMap<String, Value>) -> Vec<FieldError> {
    values
        .iter()
        .filter_map(|(key, value)| {
            let refused = schema.check(key, value).err()?;
            let reason = match refused {
                coord::Error::Invalid { reason, .. } => reason,
                other => other.to_string(),
            };
            let field = schema.field(key);
            Some(FieldError {
                key: key.clone(),
                reason,
                // A map's entry is checked as the entry type: name that, not the map's.
                type_name: schema.type_of(key).map(str::to_owned),
                doc: field.map(|f| f.doc.clone()),
            })
        })
        .collect()
}

fn message(text: &str) -> Result<String, ApiError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(ApiError::BadRequest(
            "say why in the message: history shows it".into(),
        ));
    }
    Ok(text.to_owned())
}

/// What every write route checks before it builds its release, in the order a person most
/// needs the answers: the prefix is one the console serves, each new value passes the schema
/// (all refusals at once), and the message says why.
struct Opened {
    served: Served,
    message: String,
}

async fn open(
    console: &Console,
    prefix: &str,
    values: Option<&BTreeMap<String, Value>>,
    message_text: &str,
) -> Result<Opened, ApiError> {
    let served = served(&console.coord, prefix).await?;
    if let Some(values) = values {
        let refused = refusals(&served.schema, values);
        if !refused.is_empty() {
            return Err(ApiError::Refused(refused));
        }
    }
    let message = message(message_text)?;
    Ok(Opened { served, message })
}

/// The prefix as the routes key it: without a trailing slash.
pub(super) fn trimmed_prefix(raw: &str) -> String {
    raw.trim_end_matches('/').to_owned()
}

/// The config center acting for `writer`'s principal: what it writes is checked against
/// that principal's grants and recorded as theirs, via the console's own principal.
pub(super) fn acting_for(console: &Console, writer: &Writer) -> Result<ConfigCenter, ApiError> {
    Ok(console.delegate.on_behalf_of(&writer.principal)?)
}

/// Commits `builder` as `writer`; a release made meanwhile becomes a conflict with the diff
/// from what the person saw to what is there now.
async fn commit(
    console: &Console,
    opened: Opened,
    builder: ReleaseBuilder,
    writer: &Writer,
) -> ApiResult {
    let Opened { served, message } = opened;
    let committed = builder
        .author(writer.author())
        .message(message)
        .commit()
        .await;
    let (prefix, under) = (served.prefix.as_str(), served.under());
    match committed {
        Ok(release) => Ok(Json(release_json(&release, under))),
        Err(coord::Error::Conflict {
            expected, current, ..
        }) => {
            let expected = u64::try_from(expected).unwrap_or_default();
            let latest = u64::try_from(current).unwrap_or_default();
            // With nothing seen before, everything now is the change.
            let diff = if expected == 0 {
                let config = console.coord.config();
                config
                    .history(prefix, 1)
                    .await?
                    .first()
                    .map(|r| added(r, under))
                    .unwrap_or_default()
            } else {
                console
                    .coord
                    .config()
                    .diff(prefix, expected, latest)
                    .await?
                    .into_iter()
                    .map(|d| diff_json(d, under))
                    .collect()
            };
            Err(ApiError::Conflict {
                prefix: prefix.to_owned(),
                expected,
                latest,
                diff,
            })
        }
        Err(e) => Err(e.into()),
    }
}

/// `POST /api/release`: checked field by field against the schema, then one release.
pub async fn release(
    State(console): State<Arc<Console>>,
    Extension(writer): Extension<Writer>,
    Json(body): Json<ReleaseBody>,
) -> ApiResult {
    let prefix = trimmed_prefix(&body.prefix);
    let span = tracing::info_span!("console.release", prefix = %prefix, author = %writer.name);
    async {
        if body.values.is_empty() && body.remove.is_empty() {
            return Err(ApiError::BadRequest(
                "nothing changed: nothing to release".into(),
            ));
        }
        let opened = open(&console, &prefix, Some(&body.values), &body.message).await?;
        let mut builder = acting_for(&console, &writer)?.release_raw_with(
            &opened.served.prefix,
            body.values,
            body.remove,
        );
        if let Some(seq) = body.expect_latest {
            builder = builder.expect_latest(seq);
        }
        commit(&console, opened, builder, &writer).await
    }
    .instrument(span)
    .await
}

/// `POST /api/rollback`: back to an earlier release's exact values.
pub async fn rollback(
    State(console): State<Arc<Console>>,
    Extension(writer): Extension<Writer>,
    Json(body): Json<RollbackBody>,
) -> ApiResult {
    let prefix = trimmed_prefix(&body.prefix);
    let span = tracing::info_span!("console.rollback", prefix = %prefix, seq = body.seq, author = %writer.name);
    async {
        let opened = open(&console, &prefix, None, &body.message).await?;
        let mut builder = acting_for(&console, &writer)?.rollback(&opened.served.prefix, body.seq);
        if let Some(seq) = body.expect_latest {
            builder = builder.expect_latest(seq);
        }
        commit(&console, opened, builder, &writer).await
    }
    .instrument(span)
    .await
}

/// `POST /api/gray/start`: values for the instances a selector picks, checked like a release.
pub async fn gray_start(
    State(console): State<Arc<Console>>,
    Extension(writer): Extension<Writer>,
    Json(body): Json<GrayStartBody>,
) -> ApiResult {
    let prefix = trimmed_prefix(&body.prefix);
    let span = tracing::info_span!("console.gray_start", prefix = %prefix, author = %writer.name);
    async {
        let selector = body.selector;
        if selector.labels.is_empty() && selector.percent.is_none() && selector.instances.is_empty()
        {
            return Err(ApiError::BadRequest(
                "a gray release needs labels, a percent or instances".into(),
            ));
        }
        if body.values.is_empty() {
            return Err(ApiError::BadRequest(
                "nothing changed: nothing to release".into(),
            ));
        }
        let opened = open(&console, &prefix, Some(&body.values), &body.message).await?;
        let builder = acting_for(&console, &writer)?
            .release_raw(&opened.served.prefix, body.values)
            .to(selector);
        commit(&console, opened, builder, &writer).await
    }
    .instrument(span)
    .await
}

/// `POST /api/gray/promote`: the gray release's values to every instance.
pub async fn gray_promote(
    State(console): State<Arc<Console>>,
    Extension(writer): Extension<Writer>,
    Json(body): Json<GrayBody>,
) -> ApiResult {
    gray_end(console, writer, body, GrayEnd::Promote).await
}

/// `POST /api/gray/abort`: the gray release's instances back on the prefix's values.
pub async fn gray_abort(
    State(console): State<Arc<Console>>,
    Extension(writer): Extension<Writer>,
    Json(body): Json<GrayBody>,
) -> ApiResult {
    gray_end(console, writer, body, GrayEnd::Abort).await
}

/// How a gray release ends.
#[derive(Clone, Copy)]
enum GrayEnd {
    Promote,
    Abort,
}

async fn gray_end(
    console: Arc<Console>,
    writer: Writer,
    body: GrayBody,
    end: GrayEnd,
) -> ApiResult {
    let prefix = trimmed_prefix(&body.prefix);
    let span = match end {
        GrayEnd::Promote => {
            tracing::info_span!("console.gray_promote", prefix = %prefix, seq = body.seq, author = %writer.name)
        }
        GrayEnd::Abort => {
            tracing::info_span!("console.gray_abort", prefix = %prefix, seq = body.seq, author = %writer.name)
        }
    };
    async {
        let opened = open(&console, &prefix, None, &body.message).await?;
        let config = acting_for(&console, &writer)?;
        let builder = match end {
            GrayEnd::Promote => config.promote(&opened.served.prefix, body.seq),
            GrayEnd::Abort => config.abort(&opened.served.prefix, body.seq),
        };
        commit(&console, opened, builder, &writer).await
    }
    .instrument(span)
    .await
}
