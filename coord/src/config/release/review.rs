//! Review before release: propose, approve, reject.
//!
//! A prefix the access policy marks for review (see [`crate::access`]) refuses direct
//! releases of new values ([`Error::ReviewRequired`]); its changes are
//! [`propose`](ReleaseBuilder::propose)d and become releases when another principal
//! [`approve`](ConfigCenter::approve)s them. Any prefix may use proposals.
//!
//! # What it promises
//!
//! - **Exactly what was reviewed.** A proposal stores the release as it would be recorded
//!   (each key's text before and after, secrets sealed); approval commits those texts, in one
//!   transaction with the proposal marked approved, the release record (proposer as principal,
//!   approver as `approved_by`) and the audit record.
//! - **Four eyes.** The approver must hold `approve` on the prefix and must not be the
//!   proposer; a proposal is approved or rejected once; an expired one cannot be approved.
//! - **Not stale.** Approval is refused ([`Error::Proposal`], listing what changed) if the
//!   prefix had another release since the proposal's base, or a key it changes no longer
//!   holds the text it was proposed over.
//! - **Reads are reads.** [`proposals`](ConfigCenter::proposals) writes nothing.

use std::collections::{BTreeMap, BTreeSet};

use tracing::Instrument;

use super::model::now_ms;
use super::plan::{Approval, Plan};
use super::proposal::{
    Proposal, ProposalState, StoredProposal, new_id, proposal_key, proposals_of,
};
use super::{ReleaseBuilder, check_prefix};
use crate::access::audit::{self, AuditAction};
use crate::access::policy::DEFAULT_PROPOSAL_TTL;
use crate::access::{Action, Gate};
use crate::config::center::ConfigCenter;
use crate::config::redact::Redaction;
use crate::error::{Error, Result};
use crate::store::{Compare, KeyRange, RangeOptions, Txn, TxnOp};

impl ReleaseBuilder {
    /// Stores this release as a proposal for review instead of committing it: planned as
    /// [`commit`](Self::commit) would (values checked, secrets sealed) against the prefix as
    /// it is now, nothing of the prefix written. Needs `propose` on the prefix (or no policy).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> coord::Result<()> {
    /// use std::collections::BTreeMap;
    /// use coord::config::ProposalState;
    ///
    /// let coord = coord::Coord::in_memory();
    /// let ana = coord.config().as_principal("ana")?;
    /// let bo = coord.config().as_principal("bo")?;
    /// let proposal = ana
    ///     .release_raw("/config/app", BTreeMap::from([("limit".to_owned(), 20.into())]))
    ///     .message("more headroom")
    ///     .propose()
    ///     .await?;
    /// assert!(ana.get::<i32>("/config/app/limit").await.is_err(), "nothing released yet");
    /// assert!(ana.approve("/config/app", &proposal.id).await.is_err(), "not one's own");
    ///
    /// let release = bo.approve("/config/app", &proposal.id).await?;
    /// assert_eq!(release.principal.as_deref(), Some("ana"));
    /// assert_eq!(release.approved_by.as_deref(), Some("bo"));
    /// assert_eq!(bo.get::<i32>("/config/app/limit").await?, 20);
    /// let state = &bo.proposals("/config/app").await?[0].state;
    /// assert!(matches!(state, ProposalState::Approved { seq, .. } if *seq == release.seq));
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::PermissionDenied`] without `propose`; the errors of
    /// [`commit`](Self::commit) for a change that cannot be released; [`Error::InvalidArgument`]
    /// for a change that changes nothing.
    ///
    /// # Cancel safety
    ///
    /// Dropped midway, the proposal is stored whole or not at all.
    pub async fn propose(self) -> Result<Proposal> {
        let job = self.job;
        let span = tracing::info_span!("config.propose", prefix = %job.prefix);
        async move {
            let plan = self.plan?;
            let center = job.center.clone();
            let identity = center.identity.clone();
            for _ in 0..3 {
                let (base, release, gate) = job.prepare(&plan).await?;
                if release.changes.is_empty() && !release.is_gray() {
                    return Err(Error::invalid_argument(
                        &job.prefix,
                        "the proposal changes nothing",
                    ));
                }
                let now = now_ms();
                let ttl = gate
                    .review(&job.prefix)
                    .and_then(|(_, review)| review.expire_after)
                    .unwrap_or(DEFAULT_PROPOSAL_TTL);
                let stored = StoredProposal {
                    id: new_id(),
                    prefix: job.prefix.clone(),
                    base,
                    proposer: identity.principal.clone(),
                    via: identity.via.clone(),
                    created_ms: now,
                    expires_ms: now.saturating_add(ttl.as_millis() as u64),
                    state: ProposalState::Open,
                    decided_ms: None,
                    release,
                };
                let key = proposal_key(&job.prefix, &stored.id);
                let record = identity
                    .record(AuditAction::Propose, &job.prefix)
                    .detail(format!("proposal {}", stored.id))
                    .reason(stored.release.message.clone());
                let txn = Txn::new()
                    .when([Compare::create_revision(&key, 0), gate.compare()])
                    .and_then([
                        TxnOp::put(&key, stored.encode()?),
                        record.op(identity.writer())?,
                    ]);
                let response = audit::send(&center.store, identity.writer(), &record, txn).await?;
                if response.succeeded {
                    return Ok(stored.public(response.revision, &Redaction::default(), now));
                }
                // The policy changed under it (or the id was taken): plan again.
            }
            Err(Error::Conflict {
                key: proposals_of(&job.prefix),
                expected: 0,
                current: 0,
            })
        }
        .instrument(span)
        .await
    }
}

impl ConfigCenter {
    /// The proposals of `prefix`, open and decided, oldest first (secrets redacted).
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it only reads.
    pub async fn proposals(&self, prefix: &str) -> Result<Vec<Proposal>> {
        let prefix = check_prefix(prefix)?;
        let response = self
            .store
            .range(
                &KeyRange::prefix(proposals_of(&prefix)),
                RangeOptions::default(),
            )
            .await?;
        let now = now_ms();
        let mut out = Vec::new();
        for kv in &response.kvs {
            let stored = StoredProposal::decode(kv)?;
            out.push((
                stored.created_ms,
                stored.public(kv.mod_revision, &Redaction::default(), now),
            ));
        }
        out.sort_by_key(|(created, p)| (*created, p.id.clone()));
        Ok(out.into_iter().map(|(_, p)| p).collect())
    }

    /// One proposal of `prefix`.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] naming its key if there is none with that id.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it only reads.
    pub async fn proposal(&self, prefix: &str, id: &str) -> Result<Proposal> {
        let prefix = check_prefix(prefix)?;
        let (stored, revision) = self.read_proposal(&prefix, id).await?;
        Ok(stored.public(revision, &Redaction::default(), now_ms()))
    }

    /// Approves proposal `id` of `prefix`: commits it as a release (see the
    /// [module docs](crate::config::release)), recorded with the proposer as its principal
    /// and this center's principal as `approved_by`.
    ///
    /// # Errors
    ///
    /// [`Error::PermissionDenied`] without `approve`; [`Error::Proposal`] for one's own
    /// proposal, one no longer open, or one whose prefix changed since (listing what changed);
    /// [`Error::NotFound`] for an unknown id. Each refusal is in the audit log.
    ///
    /// # Cancel safety
    ///
    /// As [`ReleaseBuilder::commit`]: the release and the approval commit together or not at
    /// all.
    pub async fn approve(&self, prefix: &str, id: &str) -> Result<super::Release> {
        let prefix = check_prefix(prefix)?;
        let (proposal, revision) = self.read_proposal(&prefix, id).await?;
        let refuse = |error: Error| async {
            let record = self
                .identity
                .record(AuditAction::Approve, &prefix)
                .detail(format!("proposal {id}"))
                .refused(&error);
            audit::append(&self.store, self.identity.writer(), &record).await;
            error
        };
        if let Err(e) = proposal.check_open(now_ms()) {
            return Err(refuse(e).await);
        }
        if proposal.proposer == self.identity.principal {
            let e = proposal.refused(format!(
                "`{}` proposed it and cannot approve it: another principal must",
                proposal.proposer
            ));
            return Err(refuse(e).await);
        }
        let release = &proposal.release;
        let (plan, gray) = if let super::ReleaseKind::Gray { selector } = &release.kind {
            (
                Plan::Exact {
                    puts: release.gray_values.clone(),
                    removes: release.gray_removes.clone(),
                },
                Some(selector.clone()),
            )
        } else {
            let mut puts = BTreeMap::new();
            let mut removes = BTreeSet::new();
            for (key, change) in &release.changes {
                match &change.new {
                    Some(text) => {
                        puts.insert(key.clone(), text.clone());
                    }
                    None => {
                        removes.insert(key.clone());
                    }
                }
            }
            (Plan::Exact { puts, removes }, None)
        };
        let mut builder = self.builder(&prefix, Ok(plan), release.kind.clone());
        builder.job.message = release.message.clone();
        builder.job.author = release.author.clone();
        builder.job.gray = gray;
        builder.job.approval = Some(Approval { proposal, revision });
        let span = tracing::info_span!("config.approve", prefix = %prefix, id);
        let job = builder.job;
        job.run(builder.plan?).instrument(span).await
    }

    /// Rejects proposal `id` of `prefix` with `reason`. Needs `approve` on the prefix, or to
    /// be its proposer (withdrawing it).
    ///
    /// # Errors
    ///
    /// [`Error::PermissionDenied`] for a principal who may not; [`Error::Proposal`] for one no
    /// longer open; [`Error::NotFound`] for an unknown id.
    ///
    /// # Cancel safety
    ///
    /// Dropped midway, the proposal is rejected or not, with its audit record.
    pub async fn reject(&self, prefix: &str, id: &str, reason: &str) -> Result<Proposal> {
        let prefix = check_prefix(prefix)?;
        let span = tracing::info_span!("config.reject", prefix = %prefix, id);
        async {
            let identity = &self.identity;
            let record = identity
                .record(AuditAction::Reject, &prefix)
                .detail(format!("proposal {id}"))
                .reason(Some(reason.to_owned()));
            for _ in 0..3 {
                let (mut proposal, revision) = self.read_proposal(&prefix, id).await?;
                let gate = Gate::read(&self.store).await?;
                let admitted = if proposal.proposer == identity.principal {
                    Ok(())
                } else {
                    gate.allow(identity, Action::Approve, &prefix)
                };
                if let Err(e) = admitted.and_then(|()| proposal.check_open(now_ms())) {
                    audit::append(&self.store, identity.writer(), &record.clone().refused(&e))
                        .await;
                    return Err(e);
                }
                let now = now_ms();
                proposal.state = ProposalState::Rejected {
                    by: identity.principal.clone(),
                    reason: reason.to_owned(),
                };
                proposal.decided_ms = Some(now);
                let key = proposal_key(&prefix, id);
                let txn = Txn::new()
                    .when([Compare::mod_revision(&key, revision), gate.compare()])
                    .and_then([
                        TxnOp::put(&key, proposal.encode()?),
                        record.op(identity.writer())?,
                    ]);
                let response = audit::send(&self.store, identity.writer(), &record, txn).await?;
                if response.succeeded {
                    return Ok(proposal.public(response.revision, &Redaction::default(), now));
                }
            }
            Err(Error::Conflict {
                key: proposal_key(&prefix, id),
                expected: 0,
                current: 0,
            })
        }
        .instrument(span)
        .await
    }

    async fn read_proposal(&self, prefix: &str, id: &str) -> Result<(StoredProposal, i64)> {
        let key = proposal_key(prefix, id);
        let (kv, _) = self.store.get(&key).await?;
        let kv = kv.ok_or(Error::NotFound { key })?;
        Ok((StoredProposal::decode(&kv)?, kv.mod_revision))
    }
}
