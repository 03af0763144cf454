//! The audit log: one append-only record per operation that changes who runs what.
//!
//! Releases (every kind), proposals and their approval or rejection, schema publishes, policy
//! changes, a lock broken and an ID released by force each write one [`AuditRecord`]:
//!
//! ```text
//! /coord/audit/{writer}/{unix ms, 13 digits}-{8 hex}  →  JSON AuditRecord
//! ```
//!
//! `writer` is the principal the connection authenticates as (see [`crate::access`]): under
//! etcd's RBAC each principal may write only its own folder, so a record's folder says who
//! wrote it ([`AuditRecord::writer`]): a principal can put any words in a record, but only
//! in its own folder, and only its own records can it delete (etcd has no append-only
//! permission).
//!
//! # What it promises
//!
//! - **In the operation's transaction.** A done operation's record is a put in the same etcd
//!   transaction as the operation: the log never holds an operation that did not happen, and
//!   never misses one that did. A retried attempt that lost a race wrote nothing, so each
//!   operation is recorded once.
//! - **Refusals too.** An operation refused by the policy, by a review rule or by etcd's own
//!   RBAC is recorded as [`Outcome::Refused`] with the reason, in a write of its own (the
//!   refused operation has no transaction to join). Only a principal etcd lets write nothing
//!   at all goes unrecorded, and a warning says so.
//! - **Trimmed.** [`trim`] drops a writer's records older than an age or beyond a count.
//! - **Reads are reads.** [`list`] writes nothing, and skips (with a warning) a record that
//!   does not decode.

use crate::clock::now_ms;
use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::store::{KeyRange, RangeOptions, Store, Txn, TxnOp};

/// Where every audit record is kept.
pub const AUDIT_ROOT: &str = "/coord/audit/";

/// The folder of one writer's records.
pub fn writer_prefix(writer: &str) -> String {
    format!("{AUDIT_ROOT}{writer}/")
}

/// What was done.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditAction {
    /// A release (typed, raw, or `publish`).
    Release,
    /// A rollback to an earlier release.
    Rollback,
    /// A gray release started.
    GrayStart,
    /// A gray release promoted to everyone.
    Promote,
    /// A gray release aborted.
    Abort,
    /// A gray release widened in place.
    Widen,
    /// A rollout plan started.
    PlanStart,
    /// A rollout plan paused.
    PlanPause,
    /// A rollout plan resumed.
    PlanResume,
    /// A rollout plan cancelled.
    PlanCancel,
    /// A proposal stored.
    Propose,
    /// A proposal approved (and released).
    Approve,
    /// A proposal rejected.
    Reject,
    /// A schema published for a prefix.
    SchemaPublish,
    /// The access policy changed.
    PolicyChange,
    /// A lock's holder removed by force.
    LockBreak,
    /// An instance ID released by force.
    IdRelease,
}

impl AuditAction {
    /// The action's name as records and the CLI spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::Release => "release",
            AuditAction::Rollback => "rollback",
            AuditAction::GrayStart => "gray_start",
            AuditAction::Promote => "promote",
            AuditAction::Abort => "abort",
            AuditAction::Widen => "widen",
            AuditAction::PlanStart => "plan_start",
            AuditAction::PlanPause => "plan_pause",
            AuditAction::PlanResume => "plan_resume",
            AuditAction::PlanCancel => "plan_cancel",
            AuditAction::Propose => "propose",
            AuditAction::Approve => "approve",
            AuditAction::Reject => "reject",
            AuditAction::SchemaPublish => "schema_publish",
            AuditAction::PolicyChange => "policy_change",
            AuditAction::LockBreak => "lock_break",
            AuditAction::IdRelease => "id_release",
        }
    }
}

/// Whether the operation happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Done: written in the operation's own transaction.
    Done,
    /// Refused: nothing of the operation was written.
    Refused,
}

/// One audited operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AuditRecord {
    /// When, in milliseconds since the Unix epoch (the writer's clock).
    pub at_ms: u64,
    /// Who: the principal the operation was checked as.
    pub principal: String,
    /// The delegate that acted for the principal (the console), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
    /// What.
    pub action: AuditAction,
    /// On what: a config prefix, a lock name, `service/id`, or the policy key.
    pub target: String,
    /// Which: a release seq, a proposal id, a fencing token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Done or refused.
    pub outcome: Outcome,
    /// Why it was refused, or the message given with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The store revision the record was written at (filled by [`list`]).
    #[serde(default, skip_serializing)]
    pub revision: i64,
    /// The record's key (filled by [`list`]).
    #[serde(default, skip_serializing)]
    pub key: String,
    /// Who wrote it: the folder it is in (filled by [`list`]). A record whose `principal` is
    /// neither its writer nor acted for through its `via` was not written by the operation
    /// it describes.
    #[serde(default, skip_serializing)]
    pub writer: String,
}

impl AuditRecord {
    /// A record of `action` on `target` by `principal`, done now.
    pub fn new(principal: &str, action: AuditAction, target: impl Into<String>) -> Self {
        AuditRecord {
            at_ms: now_ms(),
            principal: principal.to_owned(),
            via: None,
            action,
            target: target.into(),
            detail: None,
            outcome: Outcome::Done,
            reason: None,
            revision: 0,
            key: String::new(),
            writer: String::new(),
        }
    }

    /// Acting for `principal` through `via`.
    #[must_use]
    pub fn via(mut self, via: Option<String>) -> Self {
        self.via = via;
        self
    }

    /// With a detail (a seq, an id).
    #[must_use]
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// With a message or reason.
    #[must_use]
    pub fn reason(mut self, reason: Option<String>) -> Self {
        self.reason = reason;
        self
    }

    /// Marked refused, with why.
    #[must_use]
    pub fn refused(mut self, why: &Error) -> Self {
        self.outcome = Outcome::Refused;
        self.reason = Some(why.to_string());
        self
    }

    /// The put that appends this record to `writer`'s folder, for the operation's own
    /// transaction.
    pub fn op(&self, writer: &str) -> Result<TxnOp> {
        let nonce: u32 = rand::random();
        let key = format!("{}{:013}-{nonce:08x}", writer_prefix(writer), self.at_ms);
        let value = serde_json::to_vec(self)
            .map_err(|e| Error::invalid_argument(&key, format!("cannot encode: {e}")))?;
        Ok(TxnOp::put(key, value))
    }
}

/// Appends a record in a write of its own (for a refused operation). A failure is logged,
/// not returned: the refusal the caller reports matters more than its record.
pub async fn append(store: &Store, writer: &str, record: &AuditRecord) {
    let result = match record.op(writer) {
        Ok(op) => store.txn(Txn::new().and_then([op])).await.map(|_| ()),
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        tracing::warn!(writer, action = record.action.as_str(), target = %record.target, error = %e,
            "cannot write the audit record of a refused operation");
    }
}

/// Sends `txn`, which holds `record`'s put: etcd refusing it for permission (its RBAC) is
/// recorded as a refusal in a write of its own before the error is returned.
pub(crate) async fn send(
    store: &Store,
    writer: &str,
    record: &AuditRecord,
    txn: Txn,
) -> Result<crate::store::TxnResponse> {
    let result = store.txn(txn).await;
    if let Err(e @ Error::PermissionDenied { .. }) = &result {
        append(store, writer, &record.clone().refused(e)).await;
    }
    result
}

/// Which records [`list`] returns.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct AuditQuery {
    /// Only records whose target is this prefix or under it.
    pub prefix: Option<String>,
    /// Only records at or after this time (ms since the epoch).
    pub since_ms: Option<u64>,
    /// Only records of this principal.
    pub principal: Option<String>,
    /// At most this many, the newest (0: all).
    pub limit: usize,
}

impl AuditQuery {
    /// Only records on `prefix` or under it.
    #[must_use]
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = Some(prefix.into());
        self
    }

    /// Only records no older than `age`.
    #[must_use]
    pub fn since(mut self, age: Duration) -> Self {
        self.since_ms = Some(now_ms().saturating_sub(age.as_millis() as u64));
        self
    }

    /// Only records of `principal`.
    #[must_use]
    pub fn principal(mut self, principal: impl Into<String>) -> Self {
        self.principal = Some(principal.into());
        self
    }

    /// The newest `limit` records.
    #[must_use]
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }
}

/// The records that match `query`, oldest first. Reads one range; writes nothing.
pub async fn list(store: &Store, query: &AuditQuery) -> Result<Vec<AuditRecord>> {
    let response = store
        .range(&KeyRange::prefix(AUDIT_ROOT), RangeOptions::default())
        .await?;
    let mut records = Vec::new();
    for kv in response.kvs {
        // One damaged record must not hide the others.
        let mut record: AuditRecord = match serde_json::from_slice(&kv.value) {
            Ok(record) => record,
            Err(e) => {
                tracing::warn!(key = %kv.key, error = %e, "an audit record that does not decode; skipped");
                continue;
            }
        };
        record.revision = kv.mod_revision;
        record.writer = kv
            .key
            .strip_prefix(AUDIT_ROOT)
            .and_then(|rest| rest.split_once('/'))
            .map(|(writer, _)| writer.to_owned())
            .unwrap_or_default();
        record.key = kv.key;
        let keep = query
            .prefix
            .as_deref()
            .is_none_or(|p| super::policy::covers(p, &record.target))
            && query.since_ms.is_none_or(|t| record.at_ms >= t)
            && query
                .principal
                .as_deref()
                .is_none_or(|p| record.principal == p);
        if keep {
            records.push(record);
        }
    }
    records.sort_by_key(|r| (r.revision, r.at_ms));
    if query.limit > 0 && records.len() > query.limit {
        records.drain(..records.len() - query.limit);
    }
    Ok(records)
}

/// Deletes `writer`'s records older than `max_age` and all but its newest `max_count`;
/// returns how many went. Reads the writer's keys (names only) once, deletes in transactions
/// of at most 100.
pub async fn trim(
    store: &Store,
    writer: &str,
    max_age: Duration,
    max_count: usize,
) -> Result<usize> {
    let prefix = writer_prefix(writer);
    let response = store
        .range(
            &KeyRange::prefix(&prefix),
            RangeOptions::default().keys_only(),
        )
        .await?;
    let cutoff = now_ms().saturating_sub(max_age.as_millis() as u64);
    let keys: Vec<String> = response.kvs.into_iter().map(|kv| kv.key).collect();
    let over = keys.len().saturating_sub(max_count);
    let doomed: Vec<&String> = keys
        .iter()
        .enumerate()
        .filter(|(i, key)| *i < over || time_of(&prefix, key).is_some_and(|t| t < cutoff))
        .map(|(_, key)| key)
        .collect();
    for chunk in doomed.chunks(100) {
        let ops = chunk.iter().map(|key| TxnOp::delete(key.as_str()));
        store.txn(Txn::new().and_then(ops)).await?;
    }
    Ok(doomed.len())
}

/// The time in a record key (its name sorts by it).
fn time_of(prefix: &str, key: &str) -> Option<u64> {
    key.strip_prefix(prefix)?.get(..13)?.parse().ok()
}

/// Counts records by action, for summaries and tests.
pub fn count_by_action(records: &[AuditRecord]) -> BTreeMap<(AuditAction, bool), usize> {
    let mut counts = BTreeMap::new();
    for record in records {
        *counts
            .entry((record.action, record.outcome == Outcome::Done))
            .or_insert(0) += 1;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn records_list_in_order_filtered_and_trim_by_count_and_age() {
        let store = Store::in_memory();
        for (i, target) in ["/config/a", "/config/b", "/config/a/x"].iter().enumerate() {
            let mut record =
                AuditRecord::new("ana", AuditAction::Release, *target).detail(format!("{i}"));
            record.at_ms = now_ms() - 10_000 + i as u64;
            store
                .txn(Txn::new().and_then([record.op("ana").unwrap()]))
                .await
                .unwrap();
        }
        let refused = AuditRecord::new("eve", AuditAction::Release, "/config/a").refused(
            &Error::PermissionDenied {
                key: "/config/a".into(),
                reason: "no".into(),
            },
        );
        append(&store, "eve", &refused).await;

        let all = list(&store, &AuditQuery::default()).await.unwrap();
        assert_eq!(all.len(), 4);
        assert!(all.windows(2).all(|w| w[0].revision < w[1].revision));
        assert_eq!(all[3].outcome, Outcome::Refused);
        assert!(all[3].key.starts_with("/coord/audit/eve/"));
        assert_eq!(all[3].writer, "eve");
        // A damaged record hides nothing else.
        store
            .put(
                "/coord/audit/eve/0000000000001-bad",
                b"{not json".to_vec(),
                0,
            )
            .await
            .unwrap();
        assert_eq!(list(&store, &AuditQuery::default()).await.unwrap().len(), 4);

        let under_a = list(&store, &AuditQuery::default().prefix("/config/a"))
            .await
            .unwrap();
        assert_eq!(under_a.len(), 3);
        let eve = list(&store, &AuditQuery::default().principal("eve"))
            .await
            .unwrap();
        assert_eq!(eve.len(), 1);
        assert_eq!(
            list(&store, &AuditQuery::default().limit(1)).await.unwrap()[0].principal,
            "eve"
        );

        assert_eq!(
            trim(&store, "ana", Duration::from_secs(3600), 2)
                .await
                .unwrap(),
            1
        );
        assert_eq!(
            trim(&store, "ana", Duration::from_secs(1), 100)
                .await
                .unwrap(),
            2
        );
        let left = list(&store, &AuditQuery::default()).await.unwrap();
        assert_eq!(left.len(), 1, "eve's record is not ana's to trim");
    }
}
