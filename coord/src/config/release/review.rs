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
//!   (each key's text before and after, secrets sealed) in its writer's folder, where etcd
//!   lets no one else write; it is never rewritten. Approval commits those texts, in one
//!   transaction with the decision, the release record (proposer as principal, approver as
//!   `approved_by`) and the audit record, only while the proposal is still at the revision
//!   reviewed ([`approve_reviewed`](ConfigCenter::approve_reviewed)) and at version 1.
//! - **Four eyes.** The approver must hold `approve` on the prefix and must not be the
//!   proposer; the proposer must still hold `propose`; a proposal stored by someone other
//!   than its named proposer (or that proposer's delegate) is refused; a proposal is decided
//!   once (the decision key is written only if absent); an expired one cannot be approved.
//! - **Not stale.** Approval is refused ([`Error::Proposal`], listing what changed) if the
//!   prefix had another release since the proposal's base, or a key it changes no longer
//!   holds the text it was proposed over.
//! - **Reads are reads.** [`proposals`](ConfigCenter::proposals) writes nothing.

use std::collections::{BTreeMap, BTreeSet};

use tracing::Instrument;

use super::plan::{Approval, Plan};
use super::proposal::{
    Decision, PROPOSALS_ROOT, Proposal, ProposalState, StoredProposal, decision_key, decisions_of,
    new_id, parse_proposal_key, proposal_key,
};
use super::{ReleaseBuilder, check_prefix};
use crate::access::audit::{self, AuditAction};
use crate::access::policy::DEFAULT_PROPOSAL_TTL;
use crate::access::{Action, Gate};
use crate::clock::now_ms;
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
    /// assert!(ana.approve_reviewed(&proposal).await.is_err(), "not one's own");
    ///
    /// let release = bo.approve_reviewed(&proposal).await?;
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
            let writer = identity.writer().to_owned();
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
                    release,
                };
                let key = proposal_key(&writer, &job.prefix, &stored.id);
                let record = identity
                    .record(AuditAction::Propose, &job.prefix)
                    .detail(format!("proposal {}", stored.id))
                    .reason(stored.release.message.clone());
                let txn = Txn::new()
                    .when([
                        Compare::create_revision(&key, 0),
                        Compare::create_revision(decision_key(&job.prefix, &stored.id), 0),
                        gate.compare(),
                    ])
                    .and_then([TxnOp::put(&key, stored.encode()?), record.op(&writer)?]);
                let response = audit::send(&center.store, &writer, &record, txn).await?;
                if response.succeeded {
                    return Ok(stored.public(
                        (&writer, response.revision),
                        None,
                        &Redaction::default(),
                        now,
                    ));
                }
                // The policy changed under it (or the id was taken): plan again.
            }
            Err(Error::Conflict {
                key: format!("{PROPOSALS_ROOT}{writer}{}//", job.prefix),
                expected: 0,
                current: 0,
            })
        }
        .instrument(span)
        .await
    }
}

/// A proposal as stored, where, and its decision.
struct Found {
    stored: StoredProposal,
    writer: String,
    revision: i64,
    decision: Option<Decision>,
}

impl Found {
    fn public(&self, now: u64) -> Proposal {
        self.stored.public(
            (&self.writer, self.revision),
            self.decision.as_ref(),
            &Redaction::default(),
            now,
        )
    }
}

impl ConfigCenter {
    /// The proposals of `prefix`, open and decided, oldest first (secrets redacted). A
    /// proposal stored by someone other than the proposer it names is left out, with a
    /// warning.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it only reads.
    pub async fn proposals(&self, prefix: &str) -> Result<Vec<Proposal>> {
        let prefix = check_prefix(prefix)?;
        let now = now_ms();
        let mut found = self.find_proposals(&prefix, None).await?;
        found.sort_by(|a, b| {
            (a.stored.created_ms, &a.stored.id).cmp(&(b.stored.created_ms, &b.stored.id))
        });
        Ok(found.iter().map(|f| f.public(now)).collect())
    }

    /// One proposal of `prefix`.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] if there is none with that id.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it only reads.
    pub async fn proposal(&self, prefix: &str, id: &str) -> Result<Proposal> {
        let prefix = check_prefix(prefix)?;
        Ok(self.find_proposal(&prefix, id).await?.public(now_ms()))
    }

    /// Approves proposal `id` of `prefix` as it is stored now: [`approve_reviewed`] with the
    /// proposal read just before. A tool that showed a person the proposal should pass what
    /// it showed to [`approve_reviewed`] instead, so nothing rewritten since is approved.
    ///
    /// [`approve_reviewed`]: Self::approve_reviewed
    ///
    /// # Errors
    ///
    /// As [`approve_reviewed`](Self::approve_reviewed).
    ///
    /// # Cancel safety
    ///
    /// As [`approve_reviewed`](Self::approve_reviewed).
    pub async fn approve(&self, prefix: &str, id: &str) -> Result<super::Release> {
        let prefix = check_prefix(prefix)?;
        let found = self.find_proposal(&prefix, id).await?;
        self.approve_found(found, None).await
    }

    /// Approves `proposal`, as the reviewer saw it: commits it as a release (as
    /// [`ReleaseBuilder::commit`] would have), recorded with the proposer as its principal and
    /// this center's principal as `approved_by`, if it is still stored at the revision seen.
    ///
    /// # Errors
    ///
    /// [`Error::PermissionDenied`] without `approve` (or if the proposer no longer holds
    /// `propose`); [`Error::Proposal`] for one's own proposal, one stored by someone other
    /// than its proposer, one no longer open, one rewritten since it was seen, or one whose
    /// prefix changed since (listing what changed); [`Error::NotFound`] for an unknown id.
    /// Each refusal by the policy, the review rules or the proposal's state is in the audit
    /// log; a release that cannot be planned (a gray release already in progress, a value a
    /// newer schema refuses) fails as [`ReleaseBuilder::commit`] does.
    ///
    /// # Cancel safety
    ///
    /// As [`ReleaseBuilder::commit`]: the release and the decision commit together or not at
    /// all.
    pub async fn approve_reviewed(&self, proposal: &Proposal) -> Result<super::Release> {
        let prefix = check_prefix(&proposal.prefix)?;
        let found = self.find_proposal(&prefix, &proposal.id).await?;
        self.approve_found(found, Some(proposal.revision)).await
    }

    async fn approve_found(&self, found: Found, seen: Option<i64>) -> Result<super::Release> {
        let Found {
            stored: proposal,
            writer,
            revision,
            decision,
        } = found;
        let prefix = proposal.prefix.clone();
        let id = proposal.id.clone();
        let refuse = |error: Error| async {
            let record = self
                .identity
                .record(AuditAction::Approve, &prefix)
                .detail(format!("proposal {id}"))
                .refused(&error);
            audit::append(&self.store, self.identity.writer(), &record).await;
            error
        };
        let checks = proposal
            .check_open(decision.as_ref(), now_ms())
            .and_then(|()| proposal.check_writer(&writer))
            .and_then(|()| match seen {
                Some(seen) if seen != revision => {
                    Err(proposal.refused("rewritten since it was reviewed: review it again"))
                }
                _ => Ok(()),
            })
            .and_then(|()| {
                if proposal.proposer == self.identity.principal {
                    Err(proposal.refused(format!(
                        "`{}` proposed it and cannot approve it: another principal must",
                        proposal.proposer
                    )))
                } else {
                    Ok(())
                }
            });
        if let Err(e) = checks {
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
        builder.job.approval = Some(Approval {
            proposal,
            writer,
            revision,
        });
        let span = tracing::info_span!("config.approve", prefix = %prefix, id = %id);
        let job = builder.job;
        job.run(builder.plan?).instrument(span).await
    }

    /// Rejects proposal `id` of `prefix` with `reason`: one holding `approve` on the prefix
    /// writes the decision; the proposer (or the folder it is stored in) withdraws it, which
    /// deletes it.
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
            let writer = identity.writer();
            let record = identity
                .record(AuditAction::Reject, &prefix)
                .detail(format!("proposal {id}"))
                .reason(Some(reason.to_owned()));
            for _ in 0..3 {
                let found = self.find_proposal(&prefix, id).await?;
                let gate = Gate::read(&self.store).await?;
                let own = found.stored.proposer == identity.principal || found.writer == writer;
                let admitted = if own {
                    Ok(())
                } else {
                    gate.allow(identity, Action::Approve, &prefix)
                };
                let now = now_ms();
                if let Err(e) =
                    admitted.and_then(|()| found.stored.check_open(found.decision.as_ref(), now))
                {
                    audit::append(&self.store, writer, &record.clone().refused(&e)).await;
                    return Err(e);
                }
                let key = proposal_key(&found.writer, &prefix, id);
                let decided = decision_key(&prefix, id);
                let state = ProposalState::Rejected {
                    by: identity.principal.clone(),
                    reason: reason.to_owned(),
                };
                let decision = Decision {
                    state,
                    at_ms: now,
                    writer: found.writer.clone(),
                    revision: found.revision,
                    proposal: found.stored.clone(),
                };
                // A withdrawal deletes one's own proposal; a rejection writes the decision.
                let (guards, op) = if own && found.writer == writer {
                    (
                        vec![
                            Compare::mod_revision(&key, found.revision),
                            Compare::create_revision(&decided, 0),
                        ],
                        TxnOp::delete(&key),
                    )
                } else {
                    (
                        vec![Compare::create_revision(&decided, 0), gate.compare()],
                        TxnOp::put(&decided, decision.encode()?),
                    )
                };
                let txn = Txn::new().when(guards).and_then([op, record.op(writer)?]);
                let response = audit::send(&self.store, writer, &record, txn).await?;
                if response.succeeded {
                    let found = Found {
                        decision: Some(decision),
                        ..found
                    };
                    return Ok(found.public(now));
                }
            }
            Err(Error::Conflict {
                key: decision_key(&prefix, id),
                expected: 0,
                current: 0,
            })
        }
        .instrument(span)
        .await
    }

    /// The proposals of `prefix` (or the one with `id`), each with where it is stored and its
    /// decision. Proposals live in their writers' folders, so this reads them all (names
    /// and values; proposals are few) and the prefix's decisions.
    async fn find_proposals(&self, prefix: &str, id: Option<&str>) -> Result<Vec<Found>> {
        let all = self
            .store
            .range(&KeyRange::prefix(PROPOSALS_ROOT), RangeOptions::default())
            .await?;
        let decisions = self
            .store
            .range(
                &KeyRange::prefix(decisions_of(prefix)),
                RangeOptions::default(),
            )
            .await?;
        let mut decided = BTreeMap::new();
        for kv in &decisions.kvs {
            let decision = Decision::decode(kv)?;
            decided.insert(decision.proposal.id.clone(), decision);
        }
        let mut out = Vec::new();
        for kv in &all.kvs {
            let Some((writer, of, key_id)) = parse_proposal_key(&kv.key) else {
                continue;
            };
            if of != prefix || id.is_some_and(|id| id != key_id) {
                continue;
            }
            let stored = StoredProposal::decode(kv)?;
            if let Err(e) = stored.check_writer(writer) {
                tracing::warn!(key = %kv.key, error = %e, "a proposal in the wrong folder; ignored");
                continue;
            }
            out.push(Found {
                decision: decided.remove(&stored.id),
                writer: writer.to_owned(),
                revision: kv.mod_revision,
                stored,
            });
        }
        Ok(out)
    }

    async fn find_proposal(&self, prefix: &str, id: &str) -> Result<Found> {
        self.find_proposals(prefix, Some(id))
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| Error::NotFound {
                key: format!("{PROPOSALS_ROOT}…{prefix}//{id}"),
            })
    }
}
