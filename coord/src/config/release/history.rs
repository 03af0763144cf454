//! Reading releases back: history, diffs, the values a rollback restores, rollout targets.
//!
//! Every function here only reads. A record of the current format holds its changes; the
//! changes of a record of the first format are told from the record before it (the oldest
//! kept one shows its values as set, what they replaced being unknown).

use std::collections::{BTreeMap, BTreeSet};

use tracing::Instrument;

use super::model::{KeyDiff, Release, ReleaseKind, check_prefix, record_key};
use super::record::{KeyChange, Record, changes_between, key_diffs};
use super::state::{PrefixState, read_state, records_since};
use crate::clock::now_ms;
use crate::config::center::ConfigCenter;
use crate::config::redact::Redaction;
use crate::error::{Error, Result};
use crate::store::{KeyRange, RangeOptions};

/// A record with its changes worked out and the revision it was written at.
#[derive(Clone, Debug)]
pub(super) struct Entry {
    pub record: Record,
    pub written: i64,
    pub changes: BTreeMap<String, KeyChange>,
}

/// Records (oldest first) as entries.
pub(super) fn entries(records: Vec<(Record, i64)>) -> Vec<Entry> {
    let mut entries: Vec<Entry> = Vec::with_capacity(records.len());
    for (record, written) in records {
        let changes = match (&record.values, entries.last()) {
            (None, _) => record.changes.clone(),
            (Some(values), Some(previous)) if previous.record.seq + 1 == record.seq => {
                match &previous.record.values {
                    Some(before) => changes_between(before, values),
                    // A first-format record after a current one cannot be written (an older
                    // coord refuses the current head); shown as set if met.
                    None => unknown_before(values),
                }
            }
            (Some(values), _) => unknown_before(values),
        };
        entries.push(Entry {
            record,
            written,
            changes,
        });
    }
    entries
}

fn unknown_before(values: &BTreeMap<String, String>) -> BTreeMap<String, KeyChange> {
    values
        .iter()
        .map(|(key, text)| {
            (
                key.clone(),
                KeyChange {
                    old: None,
                    new: Some(text.clone()),
                    old_unknown: true,
                },
            )
        })
        .collect()
}

/// Why the values of a release cannot be restored exactly.
pub(super) enum Unrestorable {
    /// The value a key had before a later change was compacted away before it was recorded.
    Unknown { key: String, seq: u64 },
    /// Keys were removed outside releases after it and their names could not be read.
    Unnamed { count: u64, seq: u64 },
}

impl Unrestorable {
    pub fn error(&self, prefix: &str, target: u64) -> Error {
        let reason = match self {
            Unrestorable::Unknown { key, seq } => format!(
                "release {target} cannot be restored exactly: `{key}` was changed outside \
                 releases (recorded as release {seq}) after etcd had compacted away its value \
                 before; release the values you want instead"
            ),
            Unrestorable::Unnamed { count, seq } => format!(
                "release {target} cannot be restored exactly: {count} keys were removed outside \
                 releases (recorded as release {seq}) after etcd had compacted away their \
                 names; release the values you want instead"
            ),
        };
        Error::InvalidArgument {
            field: prefix.to_owned(),
            reason,
        }
    }
}

/// The value at `entries[target]` of every key changed after it (`None`: absent then).
pub(super) fn values_at(
    entries: &[Entry],
    target: usize,
) -> std::result::Result<BTreeMap<String, Option<String>>, Unrestorable> {
    let mut restore = BTreeMap::new();
    let base = entries[target].record.values.as_ref();
    for entry in &entries[target + 1..] {
        if entry.record.unnamed_removals > 0 {
            return Err(Unrestorable::Unnamed {
                count: entry.record.unnamed_removals,
                seq: entry.record.seq,
            });
        }
        for (key, change) in &entry.changes {
            if restore.contains_key(key) {
                continue;
            }
            let old = match base {
                // A first-format record holds every key: exact whatever came after.
                Some(values) => values.get(key).cloned(),
                None if change.old_unknown => {
                    return Err(Unrestorable::Unknown {
                        key: key.clone(),
                        seq: entry.record.seq,
                    });
                }
                None => change.old.clone(),
            };
            restore.insert(key.clone(), old);
        }
    }
    Ok(restore)
}

/// The prefix's records and state at one revision, with the unrecorded changes (if any) as
/// a last entry numbered as the next release will record them.
pub(super) async fn read_all(
    center: &ConfigCenter,
    prefix: &str,
) -> Result<(PrefixState, Vec<Entry>)> {
    let state = read_state(center, prefix, &BTreeSet::new(), false).await?;
    let records = records_since(center, prefix, 0, state.revision).await?;
    let mut entries = entries(records);
    if let Some(mut unrecorded) = state.external(state.seq() + 1, now_ms()) {
        unrecorded.kind = ReleaseKind::Unrecorded;
        entries.push(Entry {
            changes: unrecorded.changes.clone(),
            record: unrecorded,
            written: state.revision,
        });
    }
    Ok((state, entries))
}

/// What hides the secrets of `entries`: the state's schema and every record's marks.
fn redaction_of(state: &PrefixState, entries: &[Entry]) -> Redaction {
    state
        .redaction()
        .marking(entries.iter().flat_map(|entry| &entry.record.secrets))
}

fn position(entries: &[Entry], prefix: &str, seq: u64) -> Result<usize> {
    entries
        .iter()
        .position(|entry| entry.record.seq == seq)
        .ok_or_else(|| Error::NotFound {
            key: record_key(prefix, seq),
        })
}

impl ConfigCenter {
    /// The newest `limit` releases of `prefix`, newest first, each with what it changed. If
    /// the prefix changed outside releases since the latest one, the first entry is a
    /// [`ReleaseKind::Unrecorded`] one with those changes (numbered as the entry the next
    /// release will record them as). Secret values show as `"<redacted>"` (see
    /// [`Release::values`]).
    ///
    /// Writes nothing: the prefix, its records and the store revision stay as they were.
    ///
    /// # Errors
    ///
    /// Store errors; [`Error::Decode`] naming a record that is not a release record, or a
    /// published schema that does not parse.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it only reads.
    pub async fn history(&self, prefix: &str, limit: usize) -> Result<Vec<Release>> {
        let prefix = check_prefix(prefix)?;
        let span = tracing::debug_span!("config.history", prefix = %prefix);
        async {
            let (state, entries) = read_all(self, &prefix).await?;
            let redaction = redaction_of(&state, &entries);
            Ok(entries
                .iter()
                .rev()
                .take(limit)
                .map(|entry| {
                    entry
                        .record
                        .public(entry.written, &entry.changes, &redaction)
                })
                .collect())
        }
        .instrument(span)
        .await
    }

    /// How each key differs from release `from` to release `to` (either order), in key order.
    /// Either may be the [`ReleaseKind::Unrecorded`] entry [`history`](Self::history) shows
    /// (the values as they are now). Secret values show as `"<redacted>"` (a changed secret
    /// is listed, its values not). Writes nothing.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] naming a release that is not (or no longer) in history.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it only reads.
    pub async fn diff(&self, prefix: &str, from: u64, to: u64) -> Result<Vec<KeyDiff>> {
        let prefix = check_prefix(prefix)?;
        let span = tracing::debug_span!("config.diff", prefix = %prefix, from, to);
        async {
            let (state, entries) = read_all(self, &prefix).await?;
            let (a, b) = (
                position(&entries, &prefix, from)?,
                position(&entries, &prefix, to)?,
            );
            let (older, newer) = (a.min(b), a.max(b));
            let mut changes: BTreeMap<String, KeyChange> = BTreeMap::new();
            for entry in &entries[older + 1..=newer] {
                for (key, change) in &entry.changes {
                    let slot = changes.entry(key.clone()).or_insert_with(|| change.clone());
                    slot.new = change.new.clone();
                }
            }
            // The first-format release diffed from holds every value: exact olds.
            if let Some(values) = &entries[older].record.values {
                for (key, change) in &mut changes {
                    change.old = values.get(key).cloned();
                    change.old_unknown = false;
                }
            }
            let redaction = redaction_of(&state, &entries);
            // From `to`'s side when it is the older one; a value before that etcd compacted
            // away cannot be shown as an end, so that key is left out.
            let changes: BTreeMap<String, KeyChange> = changes
                .into_iter()
                .filter_map(|(key, change)| match (a > b, change.old_unknown) {
                    (false, _) => Some((key, change)),
                    (true, true) => None,
                    (true, false) => Some((key, KeyChange::new(change.new, change.old))),
                })
                .collect();
            let diffs = key_diffs(&changes, &BTreeSet::new(), &redaction);
            Ok(diffs)
        }
        .instrument(span)
        .await
    }
}

/// Every recorded release of `prefix` but gray ones, as (seq, the revision it was applied
/// at): what an instance current at a revision runs.
pub(crate) async fn applied_at(center: &ConfigCenter, prefix: &str) -> Result<Vec<(u64, i64)>> {
    let records = records_since(center, prefix, 0, 0).await?;
    Ok(records
        .into_iter()
        .filter(|(record, _)| !record.is_gray())
        .map(|(record, written)| (record.seq, record.applied_at(written)))
        .collect())
}

/// Release `seq` and the revision it was applied at.
pub(super) async fn read_record(
    center: &ConfigCenter,
    prefix: &str,
    seq: u64,
) -> Result<(Record, i64)> {
    let key = record_key(prefix, seq);
    let response = center
        .store
        .range(&KeyRange::key(key.as_str()), RangeOptions::default())
        .await?;
    match response.kvs.first() {
        Some(kv) => {
            let record = Record::decode(kv)?;
            let revision = record.applied_at(kv.mod_revision);
            Ok((record, revision))
        }
        None => Err(Error::NotFound { key }),
    }
}
