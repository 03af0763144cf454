//! A proposal: a release planned and stored for review instead of committed.
//!
//! ```text
//! /coord/proposals/{writer}{prefix}//{id}  →  JSON StoredProposal
//! /coord/decisions{prefix}//{id}           →  JSON Decision (approved or rejected)
//! ```
//!
//! A proposal holds the release exactly as it would have been recorded (each key's text
//! before and after, secrets sealed as they would be stored), the release it was based on,
//! who proposed it and why. It lives in its **writer's folder** (the connection's principal;
//! a delegate's own): etcd's RBAC lets each principal write only its own folder, so nobody
//! can store a proposal in another's name. It is never rewritten: a decision is a key of its
//! own, written by the approver, once. Approving commits the proposal's texts, guarded by the
//! proposal's revision as reviewed, its version (1: never rewritten), the absence of a
//! decision, the prefix's latest release (still the base) and each key's text before.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::model::{KeyDiff, ReleaseKind};
use super::record::{Record, key_diffs};
use crate::config::redact::Redaction;
use crate::error::{Error, Result};
use crate::store::KeyValue;

/// Where every proposal is kept, in its writer's folder.
pub(crate) const PROPOSALS_ROOT: &str = "/coord/proposals/";

pub(super) fn proposal_key(writer: &str, prefix: &str, id: &str) -> String {
    format!("{PROPOSALS_ROOT}{writer}{prefix}//{id}")
}

/// The writer, prefix and id of a proposal key, if it is one.
pub(super) fn parse_proposal_key(key: &str) -> Option<(&str, &str, &str)> {
    let rest = key.strip_prefix(PROPOSALS_ROOT)?;
    let slash = rest.find('/')?;
    let (writer, rest) = rest.split_at(slash);
    let (prefix, id) = rest.rsplit_once("//")?;
    (!writer.is_empty() && !id.is_empty() && !id.contains('/')).then_some((writer, prefix, id))
}

/// The reserved range of a prefix's decisions.
pub(crate) fn decisions_of(prefix: &str) -> String {
    format!("/coord/decisions{prefix}//")
}

pub(super) fn decision_key(prefix: &str, id: &str) -> String {
    format!("{}{id}", decisions_of(prefix))
}

/// Where a proposal stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ProposalState {
    /// Waiting for review.
    Open,
    /// Approved and committed as release `seq`.
    Approved {
        /// The approver.
        by: String,
        /// The release it became.
        seq: u64,
    },
    /// Rejected.
    Rejected {
        /// Who rejected it.
        by: String,
        /// Why.
        reason: String,
    },
    /// Open past its expiry: it can no longer be approved (shown, never stored).
    Expired,
}

/// A decision on a proposal: written once, by its approver or rejecter, with the proposal as
/// decided.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Decision {
    #[serde(flatten)]
    pub state: ProposalState,
    pub at_ms: u64,
    /// The proposal decided (its writer's folder and the revision reviewed).
    pub writer: String,
    pub revision: i64,
    pub proposal: StoredProposal,
}

impl Decision {
    pub fn decode(kv: &KeyValue) -> Result<Decision> {
        serde_json::from_slice(&kv.value).map_err(|source| Error::Decode {
            key: kv.key.clone(),
            source,
        })
    }

    pub fn encode(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(self)
            .map_err(|e| Error::invalid_argument("decision", format!("cannot encode: {e}")))
    }
}

/// The stored form.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct StoredProposal {
    pub id: String,
    pub prefix: String,
    /// The latest release seq when it was proposed.
    pub base: u64,
    pub proposer: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
    pub created_ms: u64,
    pub expires_ms: u64,
    /// The release as it would be recorded.
    pub release: Record,
}

impl StoredProposal {
    pub fn decode(kv: &KeyValue) -> Result<StoredProposal> {
        serde_json::from_slice(&kv.value).map_err(|source| Error::Decode {
            key: kv.key.clone(),
            source,
        })
    }

    pub fn encode(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(self)
            .map_err(|e| Error::invalid_argument("proposal", format!("cannot encode: {e}")))
    }

    /// Its state now, given its decision: an undecided proposal past its expiry is expired.
    pub fn state_at(&self, decision: Option<&Decision>, now_ms: u64) -> ProposalState {
        match decision {
            Some(decision) => decision.state.clone(),
            None if now_ms >= self.expires_ms => ProposalState::Expired,
            None => ProposalState::Open,
        }
    }

    /// Refuses a decision on a proposal that is no longer open.
    pub fn check_open(&self, decision: Option<&Decision>, now_ms: u64) -> Result<()> {
        let why = match self.state_at(decision, now_ms) {
            ProposalState::Open => return Ok(()),
            ProposalState::Approved { by, seq } => {
                format!("already approved by {by} as release {seq}")
            }
            ProposalState::Rejected { by, .. } => format!("already rejected by {by}"),
            ProposalState::Expired => "expired: propose it again".into(),
        };
        Err(self.refused(why))
    }

    pub fn refused(&self, reason: impl Into<String>) -> Error {
        Error::Proposal {
            prefix: self.prefix.clone(),
            id: self.id.clone(),
            reason: reason.into(),
            changed: Vec::new(),
        }
    }

    /// Refuses a proposal whose proposer is not the folder it was found in: a writer can
    /// store only its own proposals, or a delegate's for the principals it acts for.
    pub fn check_writer(&self, writer: &str) -> Result<()> {
        if self.proposer == writer || self.via.as_deref() == Some(writer) {
            return Ok(());
        }
        Err(self.refused(format!(
            "it names `{}` as its proposer but was stored by `{writer}`",
            self.proposer
        )))
    }

    /// The proposal as output shows it (secrets redacted).
    pub fn public(
        &self,
        (writer, revision): (&str, i64),
        decision: Option<&Decision>,
        redaction: &Redaction,
        now_ms: u64,
    ) -> Proposal {
        let release = self
            .release
            .public(revision, &self.release.changes, redaction);
        Proposal {
            id: self.id.clone(),
            prefix: self.prefix.clone(),
            base: self.base,
            kind: self.release.kind.clone(),
            proposer: self.proposer.clone(),
            via: self.via.clone(),
            message: self.release.message.clone(),
            created: time(self.created_ms),
            expires: time(self.expires_ms),
            state: self.state_at(decision, now_ms),
            changes: key_diffs(&self.release.changes, &self.release.secrets, redaction),
            gray_values: release.gray_values,
            revision,
            stored_by: writer.to_owned(),
        }
    }
}

fn time(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// A proposal as [`proposals`](crate::ConfigCenter::proposals) and
/// [`propose`](crate::config::ReleaseBuilder::propose) return it.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Proposal {
    /// Its id, unique under its prefix.
    pub id: String,
    /// The config prefix.
    pub prefix: String,
    /// The latest release of the prefix when it was proposed: approval requires it still is.
    pub base: u64,
    /// The release it would be (`Release`, `Publish`, `Gray`).
    pub kind: ReleaseKind,
    /// Who proposed it.
    pub proposer: String,
    /// The delegate that acted for the proposer, if any.
    pub via: Option<String>,
    /// Why.
    pub message: Option<String>,
    /// When it was proposed.
    pub created: SystemTime,
    /// When it stops being approvable.
    pub expires: SystemTime,
    /// Open, approved, rejected or expired.
    pub state: ProposalState,
    /// What it changes, key by key (secrets redacted).
    pub changes: Vec<KeyDiff>,
    /// For a gray proposal: what it sets for the selected instances (secrets redacted).
    pub gray_values: BTreeMap<String, serde_json::Value>,
    /// The store revision the proposal was written at: what a reviewer saw, which
    /// [`approve_reviewed`](crate::ConfigCenter::approve_reviewed) requires it still is.
    pub revision: i64,
    /// The principal whose folder holds it: the proposer, or the delegate it came through.
    pub stored_by: String,
}

/// A fresh id: 8 hex digits.
pub(super) fn new_id() -> String {
    format!("{:08x}", rand::random::<u32>())
}
