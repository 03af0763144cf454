//! The release model: what a release is as history shows it, and where its records live.

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::config::gray::Selector;
use crate::config::reserved::refuse_reserved;
use crate::error::{Error, Result};

/// The reserved range of a prefix's records.
pub(crate) fn releases_of(prefix: &str) -> String {
    format!("/coord/releases{prefix}//")
}

pub(super) fn head_key(prefix: &str) -> String {
    format!("{}head", releases_of(prefix))
}

pub(super) fn record_key(prefix: &str, seq: u64) -> String {
    format!("{}{seq:020}", releases_of(prefix))
}

pub(super) fn is_record_key(prefix: &str, key: &str) -> bool {
    key.strip_prefix(&releases_of(prefix))
        .is_some_and(|rest| rest.len() == 20 && rest.bytes().all(|b| b.is_ascii_digit()))
}

/// What kind of change a release was.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ReleaseKind {
    /// A [`release`](crate::ConfigCenter::release) or
    /// [`release_raw`](crate::ConfigCenter::release_raw).
    Release,
    /// A [`publish`](crate::ConfigCenter::publish): a release without a message.
    Publish,
    /// A [`rollback`](crate::ConfigCenter::rollback) to release `to`.
    Rollback {
        /// The release whose values were restored.
        to: u64,
    },
    /// A change made outside releases (`set`, `batch`, etcdctl), recorded by the release
    /// that found it.
    External,
    /// Changes made outside releases since the latest release and not recorded yet: only in
    /// what [`history`](crate::ConfigCenter::history) returns, never stored. The prefix's
    /// next release records them as an [`External`](Self::External) entry; until then they
    /// are no rollback target.
    Unrecorded,
    /// A gray release: only the instances `selector` picks see it (see [`Selector`]).
    Gray {
        /// Who sees it.
        selector: Selector,
    },
    /// Gray release `gray` made the prefix's values for everyone.
    Promote {
        /// The gray release promoted.
        gray: u64,
    },
    /// Gray release `gray` dropped: its instances are back on the prefix's values.
    Abort {
        /// The gray release aborted.
        gray: u64,
    },
    /// Gray release `gray` widened in place to `selector`, which picks every instance it
    /// picked before (its percentage buckets stay: an instance picked at 10% is picked at
    /// 50%).
    Widen {
        /// The gray release widened.
        gray: u64,
        /// Who sees it from now on.
        selector: Selector,
    },
}

/// One release of a prefix, as [`history`](crate::ConfigCenter::history) returns it.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Release {
    /// Its number: 1 for the prefix's first, one more for each after.
    pub seq: u64,
    /// The store revision it was applied at. For an external entry, the latest revision at
    /// which a key under the prefix was seen changed (a delete is seen, not dated).
    pub revision: i64,
    /// What it was.
    pub kind: ReleaseKind,
    /// Who made it (`None` for an external entry).
    pub author: Option<String>,
    /// Why.
    pub message: Option<String>,
    /// When it was made (for an external entry: when it was seen).
    pub time: SystemTime,
    /// Each key it added or changed (relative to the prefix) with its new value, as JSON; a
    /// value that is not JSON shows as a JSON string; secrets (see
    /// [`PublishedSchema::is_secret`](crate::config::PublishedSchema::is_secret)) show as `"<redacted>"`. A gray release leaves
    /// the prefix as it was: its changes are in `gray_values` and `gray_removes`.
    pub values: BTreeMap<String, serde_json::Value>,
    /// What it changed, key by key, in key order (shown like `values`).
    pub changes: Vec<KeyDiff>,
    /// What a gray release sets for its instances (shown like `values`); empty otherwise.
    pub gray_values: BTreeMap<String, serde_json::Value>,
    /// What a gray release removes for its instances; empty otherwise.
    pub gray_removes: BTreeSet<String>,
    /// The principal it was checked as (see [`crate::access`]); for an approved proposal,
    /// the proposer. `None` for an external entry and for releases of coord before access
    /// policies.
    pub principal: Option<String>,
    /// The proposal it committed, if it was approved from one.
    pub proposal: Option<String>,
    /// Who approved that proposal.
    pub approved_by: Option<String>,
}

/// How one key differs between two releases.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Change {
    /// Not in the older release.
    Added {
        /// The value in the newer one.
        new: serde_json::Value,
    },
    /// In both, with different values.
    Changed {
        /// The older value.
        old: serde_json::Value,
        /// The newer value.
        new: serde_json::Value,
    },
    /// Not in the newer release.
    Removed {
        /// The value in the older one.
        old: serde_json::Value,
    },
    /// Set to `new` by a change made outside releases, after etcd had compacted away what it
    /// held before (or, in the oldest record kept from before changes were recorded key by
    /// key, set to `new` from a value not kept).
    Set {
        /// The value after.
        new: serde_json::Value,
    },
}

/// One key of a [`diff`](crate::ConfigCenter::diff).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct KeyDiff {
    /// The key, relative to the prefix.
    pub key: String,
    /// How it changed.
    pub change: Change,
}

pub(super) fn check_prefix(prefix: &str) -> Result<String> {
    refuse_reserved("prefix", prefix)?;
    let trimmed = prefix.trim_end_matches('/');
    if !trimmed.starts_with('/') || trimmed.contains("//") || trimmed.contains('\0') {
        return Err(Error::invalid_argument(
            prefix,
            "a release prefix is absolute (`/config/name`) with no empty segment",
        ));
    }
    Ok(trimmed.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_keys_of_a_prefix_never_match_another_prefix() {
        assert!(is_record_key("/a", &record_key("/a", 7)));
        assert!(!is_record_key("/a", &record_key("/a/b", 7)));
        assert!(!is_record_key("/a", &head_key("/a")));
        assert!(!releases_of("/a/b").starts_with(&releases_of("/a")));
    }
}
