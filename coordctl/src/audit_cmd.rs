//! `coordctl audit ls|trim`: the audit log (see `coord::access::audit`), read and trimmed.

use std::time::{Duration, UNIX_EPOCH};

use coord::access::audit::{self, AuditQuery, AuditRecord, Outcome};
use coord::config::ConfigCenter;
use coord::Coord;
use serde_json::{json, Value};

use crate::error::{CliError, CliResult};
use crate::output::{time, Output};

/// An age older than any record (a hundred years).
const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// When a record was written, as RFC 3339.
fn at(record: &AuditRecord) -> String {
    time(UNIX_EPOCH + Duration::from_millis(record.at_ms))
}

fn outcome(record: &AuditRecord) -> &'static str {
    match record.outcome {
        Outcome::Done => "done",
        Outcome::Refused => "refused",
    }
}

/// One record as `audit ls -o json` and the console show it.
pub(crate) fn record_json(record: &AuditRecord) -> Value {
    json!({
        "time": at(record),
        "at_ms": record.at_ms,
        "principal": record.principal,
        "via": record.via,
        "action": record.action.as_str(),
        "target": record.target,
        "detail": record.detail,
        "outcome": outcome(record),
        "reason": record.reason,
        "revision": record.revision,
        "key": record.key,
    })
}

/// The records `query` picks, oldest first.
pub(crate) async fn records(coord: &Coord, query: &AuditQuery) -> CliResult<Vec<AuditRecord>> {
    Ok(audit::list(coord.store(), query).await?)
}

/// `audit ls [--prefix P] [--since D] [--principal X] [--limit N]`.
pub async fn ls(
    coord: &Coord,
    out: Output,
    prefix: Option<String>,
    since: Option<Duration>,
    principal: Option<String>,
    limit: usize,
) -> CliResult {
    let mut query = AuditQuery::default().limit(limit);
    if let Some(prefix) = prefix {
        query = query.prefix(prefix);
    }
    if let Some(since) = since {
        query = query.since(since);
    }
    if let Some(principal) = principal {
        query = query.principal(principal);
    }
    let records = records(coord, &query).await?;
    if out.is_json() {
        out.json(&Value::Array(records.iter().map(record_json).collect()));
        return Ok(());
    }
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|r| {
            let who = match &r.via {
                Some(via) => format!("{} (via {via})", r.principal),
                None => r.principal.clone(),
            };
            vec![
                at(r),
                who,
                r.action.as_str().to_owned(),
                r.target.clone(),
                r.detail.clone().unwrap_or_else(|| "-".into()),
                outcome(r).to_owned(),
                r.reason.clone().unwrap_or_default(),
            ]
        })
        .collect();
    out.table(
        &[
            "TIME",
            "PRINCIPAL",
            "ACTION",
            "TARGET",
            "DETAIL",
            "OUTCOME",
            "REASON",
        ],
        &rows,
    );
    Ok(())
}

/// `audit trim [--older-than D] [--keep N]`: this connection's own folder only (each
/// principal writes, and under etcd's RBAC may delete, only its own).
pub async fn trim(
    coord: &Coord,
    config: &ConfigCenter,
    out: Output,
    older_than: Option<Duration>,
    keep: Option<usize>,
) -> CliResult {
    if older_than.is_none() && keep.is_none() {
        return Err(CliError::Usage(
            "say what to trim: --older-than 90d, --keep N, or both".into(),
        ));
    }
    let writer = config.identity().writer().to_owned();
    // No age limit: an age older than any record; no count limit: every record kept. The
    // library counts an age in u64 milliseconds: a longer one would wrap around.
    let max_age = older_than.unwrap_or(FOREVER).min(FOREVER);
    let deleted = audit::trim(coord.store(), &writer, max_age, keep.unwrap_or(usize::MAX)).await?;
    if out.is_json() {
        out.json(&json!({
            "writer": writer,
            "folder": audit::writer_prefix(&writer),
            "deleted": deleted,
        }));
    } else {
        out.note(&format!(
            "deleted {deleted} record(s) from {}",
            audit::writer_prefix(&writer)
        ));
    }
    Ok(())
}
