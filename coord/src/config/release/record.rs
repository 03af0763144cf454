//! The stored form of a release: what it changed, key by key.
//!
//! A record holds each key its release changed, with the exact stored text before and after,
//! so its size follows the change, not the prefix. The latest record is also kept, without
//! its changes, as the head, with what the next release needs to find changes made outside releases without
//! reading the prefix: the revision the release read the prefix at and how many keys it left.
//!
//! Records of the first format (written before changes were recorded) held every key under
//! the prefix after the release; they are still read, shown and rolled back to exactly. A
//! release always writes the current format, so a prefix moves to it at its next release.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::model::{Change, KeyDiff, Release, ReleaseKind};
use crate::config::redact::Redaction;
use crate::error::{Error, Result};
use crate::store::KeyValue;

/// The format records are written in.
pub(super) const FORMAT: u32 = 2;

/// One key's change: its stored text before and after (`None`: absent).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct KeyChange {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new: Option<String>,
    /// The text before could not be read (etcd had compacted it away before the change was
    /// recorded): no rollback can restore it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub old_unknown: bool,
}

impl KeyChange {
    pub fn new(old: Option<String>, new: Option<String>) -> Self {
        KeyChange {
            old,
            new,
            old_unknown: false,
        }
    }

    /// The change as output shows it, `None` if nothing changed.
    fn public(&self, show: impl Fn(&str) -> serde_json::Value) -> Option<Change> {
        Some(match (&self.old, &self.new, self.old_unknown) {
            (_, Some(new), true) => Change::Set { new: show(new) },
            (None, Some(new), false) => Change::Added { new: show(new) },
            (Some(old), Some(new), false) if old != new => Change::Changed {
                old: show(old),
                new: show(new),
            },
            (Some(old), None, false) => Change::Removed { old: show(old) },
            _ => return None,
        })
    }
}

/// The stored form of a release.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Record {
    /// [`FORMAT`]; absent in records of the first format.
    #[serde(default)]
    pub format: u32,
    pub seq: u64,
    #[serde(flatten)]
    pub kind: ReleaseKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub time_ms: u64,
    /// First format only: every key under the prefix after the release (relative key →
    /// exact stored text). Required there, so an older coord refuses a record of the current
    /// format rather than reading it as an empty prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<BTreeMap<String, String>>,
    /// Each key the release changed (relative key → before and after).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub changes: BTreeMap<String, KeyChange>,
    /// A gray release's values (relative key → text), laid over the prefix for its instances.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub gray_values: BTreeMap<String, String>,
    /// The keys a gray release removes for its instances.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub gray_removes: BTreeSet<String>,
    /// Relative keys whose values are secret.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub secrets: BTreeSet<String>,
    /// For an external entry: the latest revision a change it holds was seen at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seen_revision: Option<i64>,
    /// How many keys the prefix held after the release.
    #[serde(default)]
    pub count: u64,
    /// The revision up to which changes made outside releases were looked for when this
    /// release was prepared: every later write under the prefix that no record made is one
    /// (see `state.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checked_at: Option<i64>,
    /// For an external entry: keys removed outside releases whose names could not be read
    /// (compacted away); no rollback can restore them.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unnamed_removals: u64,
    /// The principal the release was checked as (see `coord::access`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    /// The delegate that acted for the principal, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
    /// For a release that approved a proposal: its id and its approver (the proposer is the
    /// principal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proposal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Record {
    /// A record of the current format, with nothing in it yet.
    pub fn new(seq: u64, kind: ReleaseKind, time_ms: u64) -> Record {
        Record {
            format: FORMAT,
            seq,
            kind,
            author: None,
            message: None,
            time_ms,
            values: None,
            changes: BTreeMap::new(),
            gray_values: BTreeMap::new(),
            gray_removes: BTreeSet::new(),
            secrets: BTreeSet::new(),
            seen_revision: None,
            count: 0,
            checked_at: None,
            unnamed_removals: 0,
            principal: None,
            via: None,
            proposal: None,
            approved_by: None,
        }
    }

    /// The record as the head keeps it: without its changes and gray values, which its own
    /// key holds (so a release writes its change twice, not three times).
    pub fn head(&self) -> Record {
        Record {
            changes: BTreeMap::new(),
            gray_values: BTreeMap::new(),
            gray_removes: BTreeSet::new(),
            ..self.clone()
        }
    }

    pub fn decode(kv: &KeyValue) -> Result<Record> {
        serde_json::from_slice(&kv.value).map_err(|source| Error::Decode {
            key: kv.key.clone(),
            source,
        })
    }

    pub fn encode(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(self)
            .map_err(|e| Error::invalid_argument("release record", format!("cannot encode: {e}")))
    }

    /// The revision the release took effect at, its record written at `written`: for an
    /// external entry, the latest change it saw.
    pub fn applied_at(&self, written: i64) -> i64 {
        self.seen_revision.unwrap_or(written)
    }

    /// Whether this record holds the text of a key `is_secret` calls secret, stored plain:
    /// made before the prefix's secrets were sealed.
    pub fn holds_plain_secret(&self, is_secret: impl Fn(&str) -> bool) -> bool {
        let plain = |key: &str, text: Option<&String>| {
            (is_secret(key) || self.secrets.contains(key))
                && text.is_some_and(|text| !crate::keyring::is_sealed(text.as_bytes()))
        };
        self.changes
            .iter()
            .any(|(key, change)| plain(key, change.old.as_ref()) || plain(key, change.new.as_ref()))
            || self
                .values
                .iter()
                .flatten()
                .any(|(key, text)| plain(key, Some(text)))
            || self
                .gray_values
                .iter()
                .any(|(key, text)| plain(key, Some(text)))
    }

    /// True for a gray release: it changes no key of the prefix.
    pub fn is_gray(&self) -> bool {
        matches!(self.kind, ReleaseKind::Gray { .. })
    }

    /// The record as output shows it, with `changes` (its own, or for a record of the first
    /// format, what history worked out), hiding what `redaction` and the record's own marks
    /// say is secret.
    pub fn public(
        &self,
        applied_at: i64,
        changes: &BTreeMap<String, KeyChange>,
        redaction: &Redaction,
    ) -> Release {
        let show = |key: &str, text: &str| redaction.show_marked(&self.secrets, key, text);
        let changes = key_diffs(changes, &self.secrets, redaction);
        Release {
            seq: self.seq,
            revision: self.applied_at(applied_at),
            kind: self.kind.clone(),
            author: self.author.clone(),
            message: self.message.clone(),
            time: UNIX_EPOCH + Duration::from_millis(self.time_ms),
            values: changes
                .iter()
                .filter_map(|diff| match &diff.change {
                    Change::Added { new } | Change::Changed { new, .. } | Change::Set { new } => {
                        Some((diff.key.clone(), new.clone()))
                    }
                    _ => None,
                })
                .collect(),
            changes,
            gray_values: self
                .gray_values
                .iter()
                .map(|(key, text)| (key.clone(), show(key, text)))
                .collect(),
            gray_removes: self.gray_removes.clone(),
            principal: self.principal.clone(),
            proposal: self.proposal.clone(),
            approved_by: self.approved_by.clone(),
        }
    }
}

/// `changes` as output shows them, in key order, hiding what `redaction` or `marked` (a
/// record's own marks) says is secret; a key whose change undid itself is left out.
pub(super) fn key_diffs(
    changes: &BTreeMap<String, KeyChange>,
    marked: &BTreeSet<String>,
    redaction: &Redaction,
) -> Vec<KeyDiff> {
    changes
        .iter()
        .filter_map(|(key, change)| {
            let show = |text: &str| redaction.show_marked(marked, key, text);
            change.public(show).map(|change| KeyDiff {
                key: key.clone(),
                change,
            })
        })
        .collect()
}

/// How `new` (every key's text) differs from `old`: the changes between two records of the
/// first format.
pub(super) fn changes_between(
    old: &BTreeMap<String, String>,
    new: &BTreeMap<String, String>,
) -> BTreeMap<String, KeyChange> {
    let keys: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    keys.into_iter()
        .filter(|key| old.get(*key) != new.get(*key))
        .map(|key| {
            (
                key.clone(),
                KeyChange::new(old.get(key).cloned(), new.get(key).cloned()),
            )
        })
        .collect()
}
