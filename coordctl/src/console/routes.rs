//! The read routes: schemas, one prefix's fields, history, rollout, locks, IDs, services.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::Json;
use coord::config::{PublishedKind, PublishedSchema, Release, ReleaseKind, REDACTED};
use coord::store::{KeyRange, RangeOptions};
use coord::{Coord, InstanceStatus};
use serde::Deserialize;
use serde_json::{json, Value};
use tracing::Instrument;

use super::error::ApiError;
use super::Console;
use crate::releases::{diff_row, release_json};
use crate::schemas::{self, Schemas, Under};

/// The result of a route.
pub type ApiResult<T = Json<Value>> = Result<T, ApiError>;

/// `?prefix=/config/checkout`.
#[derive(Debug, Deserialize)]
pub struct PrefixQuery {
    /// The config prefix.
    pub prefix: String,
    /// For history: how many releases.
    #[serde(default)]
    pub limit: Option<usize>,
}

/// `GET /api/prefixes`: every prefix with a published schema (but coord's own).
pub async fn prefixes(State(console): State<Arc<Console>>) -> ApiResult {
    let schemas = schemas::all(&console.coord)
        .instrument(tracing::debug_span!("console.prefixes"))
        .await
        .map_err(cli_error)?;
    let list: Vec<Value> = schemas
        .list()
        .iter()
        .filter(|s| !is_reserved(&s.prefix))
        .map(|s| json!({ "prefix": s.prefix, "type_name": s.type_name, "fields": s.fields.len() }))
        .collect();
    Ok(Json(Value::Array(list)))
}

/// True for coord's own keys (release records, schemas, statuses): the console never
/// serves them, whatever schema someone published there.
pub fn is_reserved(prefix: &str) -> bool {
    prefix == "/coord" || prefix.starts_with("/coord/")
}

/// A prefix the console serves: one with a published schema, outside coord's own keys.
pub struct Served {
    /// Without a trailing `/`.
    pub prefix: String,
    /// Its schema.
    pub schema: PublishedSchema,
    /// Every published schema, to redact by.
    pub schemas: Schemas,
}

impl Served {
    /// The redaction of keys relative to the prefix.
    pub fn under(&self) -> Under<'_> {
        self.schemas.under(&self.prefix)
    }
}

/// `raw` as a prefix the console serves, or the refusal: 400 for a prefix that is not one,
/// 403 for coord's own keys, 404 for a prefix without a published schema. Every route that
/// reads or writes a prefix's values passes through here first, so no prefix is served by
/// accident (another route, a forgotten check).
pub async fn served(coord: &Coord, raw: &str) -> ApiResult<Served> {
    let prefix = raw.trim_end_matches('/');
    if !prefix.starts_with('/') {
        return Err(ApiError::BadRequest(format!(
            "`{raw}` is not a prefix: a prefix starts with / (e.g. /config/checkout)"
        )));
    }
    if is_reserved(prefix) {
        return Err(ApiError::Forbidden(format!(
            "{prefix} holds coord's own records: the console never serves keys under /coord/"
        )));
    }
    let schemas = schemas::all(coord).await.map_err(cli_error)?;
    let schema = schemas
        .list()
        .iter()
        .find(|schema| schema.prefix == prefix)
        .cloned()
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "no schema is published for {prefix}: the console serves only prefixes with a published schema"
            ))
        })?;
    Ok(Served {
        prefix: prefix.to_owned(),
        schema,
        schemas,
    })
}

/// The latest recorded release of `prefix` (0: none yet): what a release from the page must
/// expect. Changes made outside releases since are not one (history shows them as
/// `Unrecorded`); the page's release records them first.
pub async fn latest_seq(coord: &Coord, prefix: &str) -> ApiResult<u64> {
    Ok(coord
        .config()
        .history(prefix, 2)
        .await?
        .iter()
        .find(|r| r.kind != ReleaseKind::Unrecorded)
        .map_or(0, |r| r.seq))
}

/// `GET /api/config?prefix=`: every field with its value (secrets redacted), type, default,
/// doc and where the value comes from, and the latest release (what an edit must expect).
pub async fn config(
    State(console): State<Arc<Console>>,
    Query(query): Query<PrefixQuery>,
) -> ApiResult {
    let span = tracing::debug_span!("console.config", prefix = %query.prefix);
    async {
        let coord = &console.coord;
        let Served {
            prefix,
            schema,
            schemas,
        } = served(coord, &query.prefix).await?;
        let latest = latest_seq(coord, &prefix).await?;
        let response = coord
            .store()
            .range(
                &KeyRange::prefix(format!("{prefix}/")),
                RangeOptions::default(),
            )
            .await?;
        let stored: BTreeMap<&str, Value> = response
            .kvs
            .iter()
            .filter_map(|kv| {
                let rest = kv.key.strip_prefix(&prefix)?.strip_prefix('/')?;
                Some((rest, schemas::decode(&kv.value)))
            })
            .collect();
        let fields: Vec<Value> = schema
            .fields
            .iter()
            .map(|field| field_json(&schemas, &schema, field, &stored))
            .collect();
        Ok(Json(json!({
            "prefix": prefix,
            "type_name": schema.type_name,
            "latest_seq": latest,
            "revision": response.revision,
            "fields": fields,
        })))
    }
    .instrument(span)
    .await
}

fn field_json(
    schemas: &Schemas,
    schema: &PublishedSchema,
    field: &coord::config::PublishedField,
    stored: &BTreeMap<&str, Value>,
) -> Value {
    let under = schemas.under(&schema.prefix);
    let shown = |key: &str, value: &Value| under.shown(key, value.clone());
    // Whether the page treats the field as a secret (a map: its entries).
    let secret = schemas.holds_secret(schema, field);
    let (kind, value, present) = match &field.kind {
        PublishedKind::Value => {
            let value = stored.get(field.key.as_str());
            (
                "value",
                value.map_or(Value::Null, |v| shown(&field.key, v)),
                value.is_some(),
            )
        }
        other => {
            // A map's entries are the keys under it, each shown by its own secrecy.
            let under = format!("{}/", field.key);
            let entries: serde_json::Map<String, Value> = stored
                .iter()
                .filter_map(|(key, value)| {
                    let name = key.strip_prefix(under.as_str())?;
                    Some((name.to_owned(), shown(key, value)))
                })
                .collect();
            let kind = if matches!(other, PublishedKind::NestedMap { .. }) {
                "nested_map"
            } else {
                "map"
            };
            let present = !entries.is_empty();
            (kind, Value::Object(entries), present)
        }
    };
    let source = match (present, field.required) {
        (true, _) => "etcd",
        (false, true) => "missing",
        (false, false) => "default",
    };
    let default = if secret {
        field.default.as_ref().map(|_| json!(REDACTED))
    } else {
        field.default.clone()
    };
    // What one entry of a map is, so the page can offer an input of the right type per entry.
    let (entry_type, entry_fields) = match &field.kind {
        PublishedKind::Map { entry_type } => (Some(entry_type.as_str()), Value::Null),
        PublishedKind::NestedMap { fields } => (
            None,
            fields
                .iter()
                .map(|f| {
                    let secret = under.entry_field_is_secret(&field.key, &f.key);
                    json!({ "key": f.key, "type_name": f.type_name, "secret": secret, "required": f.required })
                })
                .collect(),
        ),
        _ => (None, Value::Null),
    };
    json!({
        "key": field.key,
        "type_name": field.type_name,
        "kind": kind,
        "entry_type": entry_type,
        "entry_fields": entry_fields,
        "value": value,
        "present": present,
        "source": source,
        "default": default,
        "required": field.required,
        "secret": secret,
        "doc": field.doc,
    })
}

/// `GET /api/history?prefix=&limit=`: newest first, each with how it changed the values
/// (a gray release: what it changes for its instances).
pub async fn history(
    State(console): State<Arc<Console>>,
    Query(query): Query<PrefixQuery>,
) -> ApiResult {
    let limit = query.limit.unwrap_or(20).clamp(1, 100);
    let span = tracing::debug_span!("console.history", prefix = %query.prefix, limit);
    async {
        let config = console.coord.config();
        let served = served(&console.coord, &query.prefix).await?;
        let (prefix, under) = (&served.prefix, served.under());
        // One more than shown: the oldest shown release needs its predecessor for its diff.
        let releases = config.history(prefix, limit + 1).await?;
        let diffs = releases.iter().take(limit).enumerate().map(|(i, release)| {
            let before = releases.get(i + 1);
            release_changes(&console.coord, prefix, under, release, before)
        });
        let diffs = futures::future::try_join_all(diffs).await?;
        let docs: Vec<Value> = releases
            .iter()
            .zip(diffs)
            .map(|(release, changes)| {
                let mut doc = release_json(release, under);
                doc["changes"] = Value::Array(changes);
                doc
            })
            .collect();
        Ok(Json(Value::Array(docs)))
    }
    .instrument(span)
    .await
}

/// How `release` changed the values from `before`; for a gray release, what it sets and
/// removes. Every value shown as `under` allows.
async fn release_changes(
    coord: &Coord,
    prefix: &str,
    under: Under<'_>,
    release: &Release,
    before: Option<&Release>,
) -> Result<Vec<Value>, ApiError> {
    let old = |key: &str| {
        release
            .values
            .get(key)
            .map_or(Value::Null, |old| under.shown(key, old.clone()))
    };
    if matches!(release.kind, ReleaseKind::Gray { .. }) {
        let mut changes: Vec<Value> = release
            .gray_values
            .iter()
            .map(|(key, new)| {
                let new = under.shown(key, new.clone());
                json!({ "key": key, "change": "gray", "old": old(key), "new": new })
            })
            .collect();
        changes.extend(release.gray_removes.iter().map(|key| {
            json!({ "key": key, "change": "gray removed", "old": old(key), "new": Value::Null })
        }));
        return Ok(changes);
    }
    let Some(before) = before else {
        if release.seq > 1 {
            // Its predecessor was trimmed from history: nothing to compare with.
            return Ok(Vec::new());
        }
        return Ok(added(release, under));
    };
    let diffs = coord.config().diff(prefix, before.seq, release.seq).await?;
    Ok(diffs.into_iter().map(|d| diff_json(d, under)).collect())
}

/// Every value of `release` as an added key (what a first release changes).
pub fn added(release: &Release, under: Under<'_>) -> Vec<Value> {
    under
        .values(&release.values)
        .into_iter()
        .map(|(key, new)| json!({ "key": key, "change": "added", "old": Value::Null, "new": new }))
        .collect()
}

/// One key of a library diff, as the page shows it.
pub fn diff_json(diff: coord::config::KeyDiff, under: Under<'_>) -> Value {
    let (key, change, old, new) = diff_row(diff, under);
    json!({ "key": key, "change": change, "old": old, "new": new })
}

/// One instance's status, as the page shows it.
pub fn status_json(status: &InstanceStatus) -> Value {
    json!({
        "instance": status.instance,
        "labels": status.labels,
        "release": status.release,
        "gray": status.gray,
        "revision": status.revision,
        "updated_ms": status.updated_ms,
        "health": status.health,
        "error": status.error.as_ref().map(|e| json!({ "key": e.key, "message": e.message, "revision": e.revision })),
    })
}

/// `GET /api/rollout?prefix=`: each live instance and what it runs.
pub async fn rollout(
    State(console): State<Arc<Console>>,
    Query(query): Query<PrefixQuery>,
) -> ApiResult {
    let served = served(&console.coord, &query.prefix).await?;
    let statuses = console.coord.config().rollout(&served.prefix).await?;
    Ok(Json(Value::Array(
        statuses.iter().map(status_json).collect(),
    )))
}

/// `?prefix=` for locks (default: every lock).
#[derive(Debug, Deserialize)]
pub struct LocksQuery {
    #[serde(default)]
    prefix: String,
}

/// `GET /api/locks?prefix=`: holder, fencing token, TTL left, waiters in order (none of
/// coord's own keys).
pub async fn locks(
    State(console): State<Arc<Console>>,
    Query(query): Query<LocksQuery>,
) -> ApiResult {
    if is_reserved(query.prefix.trim_end_matches('/')) {
        return Err(ApiError::Forbidden(
            "the console never serves keys under /coord/".into(),
        ));
    }
    let locks = coord::inspect::locks(console.coord.store(), &query.prefix)
        .instrument(tracing::debug_span!("console.locks", prefix = %query.prefix))
        .await?;
    // The CLI's shape: lease IDs are no credential, and one shape is one thing to learn.
    let docs = locks
        .iter()
        .filter(|lock| !is_reserved(&lock.name))
        .map(crate::coordination::lock_json)
        .collect();
    Ok(Json(Value::Array(docs)))
}

/// `?service=` (IDs) or `?name=` (services); absent: every one with its count.
#[derive(Debug, Deserialize)]
pub struct NameQuery {
    #[serde(default, alias = "service")]
    name: Option<String>,
}

/// Each distinct first segment of the keys under `root`, with how many keys it has.
async fn counts(coord: &Coord, root: &str) -> ApiResult<Value> {
    let response = coord
        .store()
        .range(&KeyRange::prefix(root), RangeOptions::default().keys_only())
        .instrument(tracing::debug_span!("console.count", key = root))
        .await?;
    let mut counts = BTreeMap::<String, usize>::new();
    for kv in &response.kvs {
        if let Some((name, _)) = kv.key.strip_prefix(root).and_then(|r| r.split_once('/')) {
            *counts.entry(name.to_owned()).or_default() += 1;
        }
    }
    Ok(Value::Array(
        counts
            .into_iter()
            .map(|(name, count)| json!({ "name": name, "count": count }))
            .collect(),
    ))
}

/// `GET /api/ids?service=`: a service's taken IDs; without one, every service with its count.
pub async fn ids(State(console): State<Arc<Console>>, Query(query): Query<NameQuery>) -> ApiResult {
    let Some(service) = query.name else {
        return Ok(Json(counts(&console.coord, "/instances/").await?));
    };
    let ids = coord::inspect::ids(console.coord.store(), &service)
        .instrument(tracing::debug_span!("console.ids", service = %service))
        .await?;
    let docs = ids
        .iter()
        .map(|i| json!({ "id": i.id, "key": i.key, "ttl_left_secs": i.ttl_left.map(|d| d.as_secs()) }))
        .collect();
    Ok(Json(Value::Array(docs)))
}

/// `GET /api/services?name=`: a service's instances; without one, every service with its
/// count.
pub async fn services(
    State(console): State<Arc<Console>>,
    Query(query): Query<NameQuery>,
) -> ApiResult {
    let Some(name) = query.name else {
        return Ok(Json(counts(&console.coord, "/services/").await?));
    };
    let instances = console
        .coord
        .registry()
        .discover(&name)
        .instrument(tracing::debug_span!("console.services", name = %name))
        .await?;
    let docs = instances
        .iter()
        .map(crate::coordination::info_json)
        .collect();
    Ok(Json(Value::Array(docs)))
}

/// A failure of a CLI helper the console shares.
pub fn cli_error(e: crate::error::CliError) -> ApiError {
    match e {
        crate::error::CliError::Coord(e) => ApiError::Coord(e),
        other => ApiError::Internal(other.to_string()),
    }
}
