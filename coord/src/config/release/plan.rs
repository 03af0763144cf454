//! Planning and committing a release: the state it reads, the transaction it sends, the
//! retries when another writer won, and what it remembers after.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use super::history::{Entry, entries, values_at};
use super::model::{Release, ReleaseKind, head_key, record_key};
use super::proposal::{Decision, ProposalState, StoredProposal, decision_key, proposal_key};
use super::record::{KeyChange, Record};
use super::state::{KnownStates, PrefixState, read_state, records_since, text_of};
use super::tracker::Verdict;
use crate::access::audit::{self, AuditAction};
use crate::access::{Action, Identity};
use crate::clock::now_ms;
use crate::config::center::{ConfigCenter, MapReplace, checked_values, map_replacements};
use crate::config::gray::{GrayDoc, Selector, gray_key};
use crate::config::published::PublishedSchema;
use crate::config::redact::Redaction;
use crate::config::schema::CoordConfig;
use crate::error::{Error, Result};
use crate::keyring::{KeyRing, is_sealed, key_id_of};
use crate::store::{Compare, CompareOp, CompareTarget, KeyRange, RangeOptions, Txn, TxnOp};

/// The first pause of a release that lost a race to another release of its prefix; it
/// doubles up to [`MAX_PAUSE`], each pause drawn at random below its bound (full jitter), so
/// contenders spread out instead of colliding again.
const FIRST_PAUSE: Duration = Duration::from_millis(2);
/// The longest pause between two attempts of one release.
const MAX_PAUSE: Duration = Duration::from_millis(200);
/// Releases a center makes from its remembered state before it reads the prefix again: the
/// records since the last read must all still be kept (see `state.rs`), so at most half the
/// history.
const MAX_CHAIN: u32 = 32;

/// What a release changes.
pub(super) enum Plan {
    /// Full keys → bytes to put, plus a rule for which stored keys go.
    Typed {
        values: BTreeMap<String, Vec<u8>>,
        /// The struct's maps: which stored entries go.
        maps: Vec<MapReplace>,
        /// The struct's own schema: which keys are secret.
        schema: Arc<PublishedSchema>,
    },
    /// Relative keys → JSON to put; relative keys to delete.
    Raw {
        values: BTreeMap<String, serde_json::Value>,
        remove: BTreeSet<String>,
    },
    /// Back to release `seq`'s exact values.
    Rollback { seq: u64 },
    /// Gray release `seq`'s values to everyone.
    Promote { seq: u64 },
    /// Gray release `seq` dropped.
    Abort { seq: u64 },
    /// Gray release `seq` widened in place to a selector that covers its own.
    Widen { seq: u64, selector: Selector },
    /// Relative keys → texts exactly as to store (secrets already sealed), and relative keys
    /// to delete: an approved proposal.
    Exact {
        puts: BTreeMap<String, String>,
        removes: BTreeSet<String>,
    },
}

/// Writes of another capability committed in the release's own transaction (a rollout
/// plan's state moving with the step it records): `guards` are keys that must still be at
/// their mod revision (else the release fails with [`Error::Conflict`] naming the key),
/// `compares` hold too (a leader's fence), and `ops` are given the release's seq.
pub(crate) struct Along {
    pub guards: Vec<(String, i64)>,
    pub compares: Vec<Compare>,
    #[allow(clippy::type_complexity)]
    pub ops: Box<dyn Fn(u64) -> Result<Vec<TxnOp>> + Send + Sync>,
}

/// The proposal a release approves: it must still be at the revision reviewed, never
/// rewritten, and undecided; its decision is written in the release's transaction.
pub(super) struct Approval {
    pub proposal: StoredProposal,
    /// The folder it was found in.
    pub writer: String,
    /// The proposal key's mod revision as reviewed.
    pub revision: i64,
}

impl Approval {
    fn key(&self) -> String {
        proposal_key(&self.writer, &self.proposal.prefix, &self.proposal.id)
    }

    fn decision_key(&self) -> String {
        decision_key(&self.proposal.prefix, &self.proposal.id)
    }

    /// Why the approval can no longer commit, if the proposal or its decision moved.
    async fn moved(&self, center: &ConfigCenter) -> Result<Option<Error>> {
        let (proposal, _) = center.store.get(&self.key()).await?;
        let (decision, _) = center.store.get(&self.decision_key()).await?;
        let why = match (proposal, decision) {
            (_, Some(kv)) => format!(
                "decided meanwhile ({:?})",
                Decision::decode(&kv).map(|d| d.state).ok()
            ),
            (None, None) => "withdrawn meanwhile".into(),
            (Some(kv), None) if kv.mod_revision != self.revision || kv.version != 1 => {
                "rewritten since it was reviewed: review it again".into()
            }
            _ => return Ok(None),
        };
        Ok(Some(self.proposal.refused(why)))
    }
}

/// Everything about a release but its plan.
pub(super) struct Job {
    pub(super) center: ConfigCenter,
    pub(super) prefix: String,
    pub(super) kind: ReleaseKind,
    pub(super) message: Option<String>,
    pub(super) author: Option<String>,
    pub(super) expect: Option<u64>,
    /// Relative key → the mod revision it must still have (0: absent).
    pub(super) expect_versions: BTreeMap<String, i64>,
    /// A gray release to these instances instead of a release to all.
    pub(super) gray: Option<Selector>,
    /// How long to keep trying against other releases (default: the center's).
    pub(super) timeout: Option<Duration>,
    /// The proposal this release approves, if it is an approval.
    pub(super) approval: Option<Approval>,
    /// Writes committed with it, if any.
    pub(super) along: Option<Along>,
}

/// A transaction ready to send, with what it records and what the prefix is after it.
struct Planned {
    txn: Txn,
    /// The records it writes, the release last.
    records: Vec<Record>,
    /// The state after it (keys it writes still at mod revision 0).
    after: PrefixState,
    redaction: Redaction,
    /// Keys it changes and their bytes: for a refusal in the user's terms.
    size: (usize, usize),
}

impl Job {
    pub(super) async fn run(self, plan: Plan) -> Result<Release> {
        let typed = matches!(plan, Plan::Typed { .. });
        let mut known = self.center.slots.get::<KnownStates>().take(&self.prefix);
        if let Some(state) = &mut known
            && let Some(tracker) = self.center.slots.get::<KnownStates>().tracker(&self.prefix)
        {
            match tracker.verdict(state.checked_at, &state.ours, state.revision) {
                Verdict::Clean => {
                    state.checked_at = state.revision;
                    state.ours.clear();
                    state.chain = 0;
                }
                Verdict::Written => known = None,
                Verdict::Unknown => {}
            }
        }
        let mut known = known.filter(|state| {
            // A key's version is checked against the prefix as it is now, never a
            // remembered (possibly old) state: an old one would refuse a current view.
            self.expect_versions.is_empty()
                && state.chain < MAX_CHAIN.min(self.center.release_history as u32 / 2)
                && (state.complete || !typed)
                // A rollback undoes every change since its target, those made outside
                // releases and not recorded yet included: only a fresh read finds them.
                && !matches!(plan, Plan::Rollback { .. })
        });
        let timeout = self.timeout.unwrap_or(self.center.release_timeout);
        let deadline = tokio::time::Instant::now() + timeout;
        let mut bound = FIRST_PAUSE;
        let mut attempts = 0_u32;
        loop {
            attempts += 1;
            // A remembered state may simply be old: finding so is no conflict.
            let remembered = known.is_some();
            let keys = plan.keys(&self);
            let mut state = match known.take() {
                Some(state) => state,
                None => read_state(&self.center, &self.prefix, &keys, typed).await?,
            };
            // A remembered state reads the keys it does not know; if someone else wrote one
            // since, the prefix is read again.
            if remembered && !state.learn(&self.center, &self.prefix, &keys).await? {
                continue;
            }
            // A refusal from a remembered state may be an old policy's: read again first.
            if let Err(refused) = self.admit(&plan, &state) {
                if remembered {
                    continue;
                }
                self.audit_refused(&refused).await;
                return Err(refused);
            }
            if let Some(approval) = &self.approval
                && let Err(stale) = self.check_not_stale(approval, &state)
            {
                // A remembered state may only be old: read again before refusing.
                if remembered {
                    continue;
                }
                self.audit_refused(&stale).await;
                return Err(stale);
            }
            if let Some(expected) = self.expect
                && state.seq() != expected
            {
                if remembered {
                    continue;
                }
                return Err(self.conflict(expected, state.seq()));
            }
            for (key, &expected) in &self.expect_versions {
                let current = state.mod_revision(key);
                if current != expected {
                    return Err(Error::Conflict {
                        key: format!("{}/{key}", self.prefix),
                        expected,
                        current,
                    });
                }
            }
            let lost = match self.plan_txn(&plan, &mut state).await? {
                // A key the plan needed was written after the state was read.
                None => true,
                Some(mut planned) => {
                    let txn = std::mem::take(&mut planned.txn);
                    let response = match self.center.store.txn(txn).await {
                        Ok(response) => response,
                        Err(e) => {
                            if matches!(e, Error::PermissionDenied { .. }) {
                                self.audit_refused(&e).await;
                            }
                            return Err(too_large(&self.prefix, planned.size, e));
                        }
                    };
                    if response.succeeded {
                        let checked = planned.after.checked_at;
                        let release = self.committed(response.revision, planned)?;
                        self.center
                            .slots
                            .get::<KnownStates>()
                            .track(&self.center.store, &self.prefix, checked)
                            .await;
                        return Ok(release);
                    }
                    !remembered
                }
            };
            if !lost {
                continue;
            }
            if let Some(approval) = &self.approval
                && let Some(moved) = approval.moved(&self.center).await?
            {
                self.audit_refused(&moved).await;
                return Err(moved);
            }
            if let Some(along) = &self.along {
                for (key, expected) in &along.guards {
                    let (kv, _) = self.center.store.get(key).await?;
                    let current = kv.map_or(0, |kv| kv.mod_revision);
                    if current != *expected {
                        return Err(Error::Conflict {
                            key: key.clone(),
                            expected: *expected,
                            current,
                        });
                    }
                }
            }
            let strict = self.expect.is_some()
                || matches!(
                    plan,
                    Plan::Rollback { .. }
                        | Plan::Promote { .. }
                        | Plan::Abort { .. }
                        | Plan::Widen { .. }
                );
            if strict {
                let now = latest_seq(&self.center, &self.prefix).await?;
                if now != state.seq() {
                    return Err(self.conflict(state.seq(), now));
                }
            }
            // Another writer won this round: wait a random while below a growing bound, so
            // writers that collided spread out rather than collide again at once.
            let pause = bound.mul_f64(rand::random::<f64>());
            bound = (bound * 2).min(MAX_PAUSE);
            if tokio::time::Instant::now() + pause >= deadline {
                return Err(Error::Timeout {
                    operation: format!(
                        "release of `{}`: other writers kept changing it through {attempts} \
                         attempts",
                        self.prefix
                    ),
                    after: timeout,
                });
            }
            tracing::debug!(
                attempts,
                ?pause,
                "the prefix changed under the release; reading it again"
            );
            tokio::time::sleep(pause).await;
        }
    }

    /// Remembers the state after a committed release and answers it.
    fn committed(&self, revision: i64, planned: Planned) -> Result<Release> {
        let Planned {
            records,
            mut after,
            redaction,
            ..
        } = planned;
        let Some(last) = records.last() else {
            return Err(Error::invalid_argument(&self.prefix, "nothing to record"));
        };
        for (_, rev) in after.values.values_mut() {
            if *rev == 0 {
                *rev = revision;
            }
        }
        after.revision = revision;
        after.ours.insert(revision);
        after.head = Some((last.head(), revision));
        if let Some((_, rev)) = &mut after.gray {
            *rev = revision;
        }
        let answer = last.public(revision, &last.changes, &redaction);
        self.center
            .slots
            .get::<KnownStates>()
            .put(&self.prefix, after);
        Ok(answer)
    }

    /// The policy's word on this release: the principal's grant (`approve` for an approval,
    /// else `release`), and no direct change of new values on a prefix that requires review.
    fn admit(&self, plan: &Plan, state: &PrefixState) -> Result<()> {
        let identity = &self.center.identity;
        if let Some(approval) = &self.approval {
            state.gate.allow(identity, Action::Approve, &self.prefix)?;
            // The proposer must still be one who may propose here.
            let proposer = Identity {
                principal: approval.proposal.proposer.clone(),
                via: approval.proposal.via.clone(),
                authenticated: identity.authenticated,
            };
            return state.gate.allow(&proposer, Action::Propose, &self.prefix);
        }
        state.gate.allow(identity, Action::Release, &self.prefix)?;
        if matches!(plan, Plan::Typed { .. } | Plan::Raw { .. }) {
            state.gate.direct_release(&self.prefix)?;
        }
        Ok(())
    }

    /// What the audit log calls this release.
    fn audit_action(&self, kind: &ReleaseKind) -> AuditAction {
        match (kind, &self.approval) {
            (_, Some(_)) => AuditAction::Approve,
            (ReleaseKind::Rollback { .. }, _) => AuditAction::Rollback,
            (ReleaseKind::Gray { .. }, _) => AuditAction::GrayStart,
            (ReleaseKind::Promote { .. }, _) => AuditAction::Promote,
            (ReleaseKind::Abort { .. }, _) => AuditAction::Abort,
            (ReleaseKind::Widen { .. }, _) => AuditAction::Widen,
            _ => AuditAction::Release,
        }
    }

    /// Records a refused release in the audit log.
    async fn audit_refused(&self, why: &Error) {
        let identity = &self.center.identity;
        let mut record = identity
            .record(self.audit_action(&self.kind), &self.prefix)
            .refused(why);
        if let Some(approval) = &self.approval {
            record = record.detail(format!("proposal {}", approval.proposal.id));
        }
        audit::append(&self.center.store, identity.writer(), &record).await;
    }

    /// Refuses an approval whose prefix moved since the proposal: another release since its
    /// base, or a key it changes no longer holding the text it was proposed over.
    fn check_not_stale(&self, approval: &Approval, state: &PrefixState) -> Result<()> {
        let proposal = &approval.proposal;
        let mut changed = Vec::new();
        for (key, change) in &proposal.release.changes {
            let now = state.text(&self.prefix, key)?;
            if now != change.old.as_deref() {
                let secret = proposal.release.secrets.contains(key)
                    || now.is_some_and(|t| crate::keyring::is_sealed(t.as_bytes()));
                changed.push(if secret {
                    format!("{key}: changed (secret)")
                } else {
                    format!("{key}: {} now", now.unwrap_or("absent"))
                });
            }
        }
        if changed.is_empty() && state.seq() == proposal.base {
            return Ok(());
        }
        if state.seq() != proposal.base {
            changed.insert(
                0,
                format!(
                    "latest release {} (the proposal is based on {})",
                    state.seq(),
                    proposal.base
                ),
            );
        }
        Err(Error::Proposal {
            prefix: self.prefix.clone(),
            id: proposal.id.clone(),
            reason: "the prefix changed since it was proposed: propose again".into(),
            changed,
        })
    }

    /// Plans the release on a fresh read without sending it: the record it would write, and
    /// the latest release it is based on (for a proposal). Checked as `propose`.
    pub(super) async fn prepare(&self, plan: &Plan) -> Result<(u64, Record, crate::access::Gate)> {
        self.plan_only(plan, Some(AuditAction::Propose)).await
    }

    /// Plans the release on a fresh read without sending it; with `admit`, first checked as
    /// `propose` (a refusal recorded as that action).
    pub(super) async fn plan_only(
        &self,
        plan: &Plan,
        admit: Option<AuditAction>,
    ) -> Result<(u64, Record, crate::access::Gate)> {
        let typed = matches!(plan, Plan::Typed { .. });
        let mut state = read_state(&self.center, &self.prefix, &plan.keys(self), typed).await?;
        if let Some(action) = admit
            && let Err(refused) =
                state
                    .gate
                    .allow(&self.center.identity, Action::Propose, &self.prefix)
        {
            let record = self
                .center
                .identity
                .record(action, &self.prefix)
                .refused(&refused);
            audit::append(&self.center.store, self.center.identity.writer(), &record).await;
            return Err(refused);
        }
        let base = state.seq();
        let planned = match self.plan_txn(plan, &mut state).await? {
            Some(planned) => planned,
            None => {
                return Err(Error::Conflict {
                    key: self.prefix.clone(),
                    expected: state.revision,
                    current: 0,
                });
            }
        };
        let record = planned
            .records
            .last()
            .cloned()
            .ok_or_else(|| Error::invalid_argument(&self.prefix, "nothing to plan"))?;
        Ok((base, record, state.gate))
    }

    fn conflict(&self, expected: u64, current: u64) -> Error {
        Error::Conflict {
            key: self.prefix.clone(),
            expected: i64::try_from(expected).unwrap_or(i64::MAX),
            current: i64::try_from(current).unwrap_or(i64::MAX),
        }
    }

    /// The transaction applying `plan` over `state`; `None` if a key it needed was written
    /// after the state was read (read it again).
    async fn plan_txn(&self, plan: &Plan, state: &mut PrefixState) -> Result<Option<Planned>> {
        let prefix = &self.prefix;
        let full = |key: &str| format!("{prefix}/{key}");
        // Secrets stay secret across untyped releases that do not know the struct: the
        // latest record's marks carry over.
        let mut redaction = state.redaction();
        let (puts, deletes): (BTreeMap<String, Vec<u8>>, BTreeSet<String>) = match plan {
            Plan::Typed {
                values,
                maps,
                schema,
            } => {
                let under = format!("{prefix}/");
                let keys = self.center.keys.load();
                let puts = values
                    .iter()
                    .map(|(key, bytes)| {
                        let relative = key[under.len()..].to_owned();
                        let stored = state.values.get(&relative).map(|(text, _)| text.as_bytes());
                        let bytes = match (keys.as_deref(), stored) {
                            // A secret sealed anew differs in every byte (a fresh nonce): keep
                            // the stored envelope if it holds the same value under the newest
                            // key, so an unchanged secret is no change (and a rotation is one).
                            (Some(ring), Some(stored)) if same_sealed(ring, key, stored, bytes) => {
                                stored.to_vec()
                            }
                            _ => bytes.clone(),
                        };
                        (relative, bytes)
                    })
                    .collect::<BTreeMap<_, _>>();

                let deletes = state
                    .values
                    .keys()
                    .filter(|key| maps.iter().any(|map| map.gone(&full(key))))
                    .cloned()
                    .collect();
                redaction = redaction.with_schema(Arc::clone(schema));
                (puts, deletes)
            }
            Plan::Raw { values, remove } => {
                // A published schema refuses a wrong value before anything is written,
                // and says which keys are secret.
                if let Some(schema) = &state.schema {
                    schema.check_all(values)?;
                }
                let mut puts = BTreeMap::new();
                for (key, json) in values {
                    check_relative(prefix, key)?;
                    let bytes = serde_json::to_vec(json).map_err(|e| {
                        Error::invalid_argument(full(key), format!("cannot encode: {e}"))
                    })?;
                    puts.insert(key.clone(), bytes);
                }
                let deletes = remove
                    .iter()
                    .filter(|key| state.values.contains_key(*key))
                    .cloned()
                    .collect();
                (puts, deletes)
            }
            Plan::Rollback { seq } => {
                let records = records_since(&self.center, prefix, 0, state.revision).await?;
                let mut entries = entries(records);
                if let Some(external) = state.external(state.seq() + 1, now_ms()) {
                    entries.push(Entry {
                        changes: external.changes.clone(),
                        record: external,
                        written: state.revision,
                    });
                }
                let Some(target) = entries.iter().position(|e| e.record.seq == *seq) else {
                    return Err(Error::NotFound {
                        key: record_key(prefix, *seq),
                    });
                };
                if entries[target].record.kind == ReleaseKind::External
                    && entries[target].record.seq > state.seq()
                {
                    return Err(Error::NotFound {
                        key: record_key(prefix, *seq),
                    });
                }
                let restore = values_at(&entries, target).map_err(|why| why.error(prefix, *seq))?;
                let keys = restore.keys().cloned().collect();
                if !state.learn(&self.center, prefix, &keys).await? {
                    return Ok(None);
                }
                redaction = redaction.marking(entries.iter().flat_map(|e| &e.record.secrets));
                let mut puts = BTreeMap::new();
                let mut deletes = BTreeSet::new();
                for (key, old) in restore {
                    let now = state.text(prefix, &key)?;
                    match old {
                        Some(text) if now != Some(text.as_str()) => {
                            puts.insert(key, text.into_bytes());
                        }
                        None if now.is_some() => {
                            deletes.insert(key);
                        }
                        _ => {}
                    }
                }
                (puts, deletes)
            }
            Plan::Promote { seq } => {
                let gray = in_progress(state, prefix, *seq)?.clone();
                let keys = gray.values.keys().chain(&gray.removes).cloned().collect();
                if !state.learn(&self.center, prefix, &keys).await? {
                    return Ok(None);
                }
                let puts = gray
                    .values
                    .iter()
                    .map(|(key, text)| (key.clone(), text.clone().into_bytes()))
                    .collect();
                let deletes = gray
                    .removes
                    .iter()
                    .filter(|key| state.values.contains_key(*key))
                    .cloned()
                    .collect();
                (puts, deletes)
            }
            Plan::Abort { seq } => {
                in_progress(state, prefix, *seq)?;
                (BTreeMap::new(), BTreeSet::new())
            }
            Plan::Widen { seq, selector } => {
                let gray = in_progress(state, prefix, *seq)?;
                if !selector.covers(&gray.selector) {
                    return Err(Error::GrayConflict {
                        prefix: prefix.clone(),
                        in_progress: *seq,
                        reason: "a widening keeps every instance the gray release reaches: \
                                 the new selector must cover the old one"
                            .into(),
                    });
                }
                (BTreeMap::new(), BTreeSet::new())
            }
            Plan::Exact { puts, removes } => {
                let mut keys: BTreeSet<String> = puts.keys().cloned().collect();
                keys.extend(removes.iter().cloned());
                if !state.learn(&self.center, prefix, &keys).await? {
                    return Ok(None);
                }
                let puts = puts
                    .iter()
                    .map(|(key, text)| (key.clone(), text.clone().into_bytes()))
                    .collect();
                (puts, removes.clone())
            }
        };
        // One gate for every kind of release: a secret (the schema or a record says so, or its
        // stored value is sealed) is written sealed, whatever wrote it (a typed value, a raw
        // one, a rollback or a promote restoring an old text), or not at all.
        let ring = self.center.keys.load_full();
        let sealed_schema = state.schema.as_ref().is_some_and(|s| s.sealed);
        let mut puts = puts;
        for (key, bytes) in &mut puts {
            if is_sealed(bytes) {
                continue;
            }
            let stored = state.text(prefix, key)?;
            let stored_sealed = stored.is_some_and(|text| is_sealed(text.as_bytes()));
            if !(stored_sealed || redaction.is_secret(key)) {
                continue;
            }
            match ring.as_deref() {
                Some(ring) => {
                    *bytes = ring.seal(&full(key), &zeroize::Zeroizing::new(bytes.clone()))?
                }
                None if stored_sealed => {
                    return Err(unsealing_refused(&full(key), stored));
                }
                None if sealed_schema => return Err(plain_refused(&full(key))),
                // A prefix whose secrets were never sealed, written by a process without keys.
                None => {}
            }
        }
        let gray_release = match (&self.gray, plan) {
            (None, _) => None,
            (Some(selector), Plan::Typed { .. } | Plan::Raw { .. } | Plan::Exact { .. }) => {
                if let Some((gray, _)) = &state.gray {
                    return Err(Error::GrayConflict {
                        prefix: prefix.clone(),
                        in_progress: gray.seq,
                        reason: format!(
                            "gray release {} is in progress; promote or abort it first",
                            gray.seq
                        ),
                    });
                }
                Some(selector.clone())
            }
            (Some(_), _) => {
                return Err(Error::invalid_argument(
                    prefix,
                    "only a release or a raw release can be a gray release",
                ));
            }
        };
        let mut texts = BTreeMap::new();
        for (key, bytes) in &puts {
            let text = String::from_utf8(bytes.clone()).map_err(|_| {
                Error::invalid_argument(full(key), "a released value must be UTF-8 text")
            })?;
            texts.insert(key.clone(), text);
        }
        // What the release changes, key by key, and the prefix after it. A gray release
        // changes no key of the prefix: its values are in its record and gray key.
        let mut changes = BTreeMap::new();
        let mut after = state.clone();
        after.drift = None;
        after.chain = state.chain + 1;
        if gray_release.is_none() {
            for (key, text) in &texts {
                let old = state.text(prefix, key)?.map(str::to_owned);
                if old.is_none() {
                    after.count += 1;
                }
                if old.as_deref() != Some(text.as_str()) {
                    changes.insert(key.clone(), KeyChange::new(old, Some(text.clone())));
                }
                after.absent.remove(key);
                after.values.insert(key.clone(), (text.clone(), 0));
            }
            for key in &deletes {
                let old = state.text(prefix, key)?.map(str::to_owned);
                if old.is_some() {
                    after.count = after.count.saturating_sub(1);
                    changes.insert(key.clone(), KeyChange::new(old, None));
                }
                after.values.remove(key);
                after.absent.insert(key.clone());
            }
        }
        // A rollback restores what everyone ran at release `to`: a gray release in progress
        // would keep its instances on values of after it, so the rollback ends it, recorded
        // as an abort in the same transaction.
        let ended_gray = match (plan, &state.gray) {
            (Plan::Rollback { .. }, Some((gray, _))) => Some(gray.seq),
            _ => None,
        };
        if matches!(plan, Plan::Promote { .. } | Plan::Abort { .. }) || ended_gray.is_some() {
            after.gray = None;
        }
        if let (Plan::Widen { selector, .. }, Some((gray, _))) = (plan, &mut after.gray) {
            gray.selector = selector.clone();
        }

        let now = now_ms();
        let mut records = Vec::new();
        let mut seq = state.seq();
        if let Some(external) = state.external(seq + 1, now) {
            seq += 1;
            records.push(external);
        }
        let author = self.author.clone().or_else(|| self.center.author.clone());
        if let (Some(gray), Plan::Rollback { seq: to }) = (ended_gray, plan) {
            seq += 1;
            let mut abort = Record::new(seq, ReleaseKind::Abort { gray }, now);
            abort.author = author.clone();
            abort.message = Some(format!("ended by the rollback to {to}"));
            abort.count = state.count;
            abort.checked_at = Some(state.checked_at);
            records.push(abort);
        }
        seq += 1;
        let kind = match (&gray_release, plan) {
            (Some(selector), _) => ReleaseKind::Gray {
                selector: selector.clone(),
            },
            (None, Plan::Promote { seq }) => ReleaseKind::Promote { gray: *seq },
            (None, Plan::Abort { seq }) => ReleaseKind::Abort { gray: *seq },
            (None, _) => self.kind.clone(),
        };
        let mut release = Record::new(seq, kind, now);
        release.author = author;
        let identity = &self.center.identity;
        match &self.approval {
            Some(approval) => {
                release.principal = Some(approval.proposal.proposer.clone());
                release.via = approval.proposal.via.clone();
                release.proposal = Some(approval.proposal.id.clone());
                release.approved_by = Some(identity.principal.clone());
            }
            None => {
                release.principal = Some(identity.principal.clone());
                release.via = identity.via.clone();
            }
        }
        release.message = match (&self.message, plan) {
            (Some(message), _) => Some(message.clone()),
            (None, Plan::Rollback { seq }) => Some(format!("rollback to {seq}")),
            (None, _) => None,
        };
        release.secrets = redaction.secrets_among(changes.keys().chain(texts.keys()));
        // The text a secret had before is history, and history keeps no plaintext once there
        // is a key to seal with: a release that seals a plain secret (a migration) records the
        // old value sealed too. A rollback to before it restores the same value, sealed.
        release.changes = changes;
        if let Some(ring) = ring.as_deref() {
            for record in records.iter_mut().chain(std::iter::once(&mut release)) {
                seal_record(record, ring, |key| redaction.is_secret(key), &full)?;
            }
        }
        release.count = after.count;
        release.checked_at = Some(state.checked_at);
        if gray_release.is_some() {
            release.gray_values = texts.clone();
            release.gray_removes = deletes.clone();
        }
        records.push(release.clone());
        if let Some(selector) = &gray_release {
            after.gray = Some((
                GrayDoc {
                    seq,
                    selector: selector.clone(),
                    values: texts.clone(),
                    removes: deletes.clone(),
                },
                0,
            ));
        }

        // Guards: no other release, the same gray release, and every key written unchanged
        // since it was read (so each recorded value before is exact).
        let mut compares = vec![
            match &state.head {
                Some((_, rev)) => Compare::mod_revision(head_key(prefix), *rev),
                None => Compare::create_revision(head_key(prefix), 0),
            },
            match &state.gray {
                Some((_, rev)) => Compare::mod_revision(gray_key(prefix), *rev),
                None => Compare::create_revision(gray_key(prefix), 0),
            },
            // The published schema the values were checked against (and that says which
            // are secret) is still the one published.
            match state.schema_rev {
                0 => Compare::create_revision(PublishedSchema::key(prefix), 0),
                rev => Compare::mod_revision(PublishedSchema::key(prefix), rev),
            },
            // The policy it was admitted by is still the one in force.
            state.gate.compare(),
        ];
        if let Some(along) = &self.along {
            compares.extend(along.guards.iter().map(|(key, rev)| match rev {
                0 => Compare::create_revision(key.as_str(), 0),
                rev => Compare::mod_revision(key.as_str(), *rev),
            }));
            compares.extend(along.compares.iter().cloned());
        }
        if let Some(approval) = &self.approval {
            compares.push(Compare::mod_revision(approval.key(), approval.revision));
            compares.push(Compare::version(approval.key(), 1));
            compares.push(Compare::create_revision(approval.decision_key(), 0));
        }
        let guarded: BTreeSet<&String> = if gray_release.is_some() {
            BTreeSet::new()
        } else {
            puts.keys().chain(&deletes).collect()
        };
        for key in guarded {
            compares.push(match state.mod_revision(key) {
                0 => Compare::create_revision(full(key), 0),
                rev => Compare::mod_revision(full(key), rev),
            });
        }
        // A typed release replaces its maps whole: no entry may appear unseen (etcd walks
        // the map's keys for this compare; only typed releases of maps pay it).
        if let Plan::Typed { maps, .. } = plan {
            compares.extend(maps.iter().map(|map| {
                Compare::new(
                    map.under.clone(),
                    CompareOp::Less,
                    CompareTarget::ModRevision(state.revision.saturating_add(1)),
                )
                .over_prefix()
            }));
        }
        let size = (
            release.changes.len(),
            release
                .changes
                .iter()
                .map(|(key, c)| {
                    key.len()
                        + c.old.as_ref().map_or(0, String::len)
                        + c.new.as_ref().map_or(0, String::len)
                })
                .sum(),
        );
        let mut ops: Vec<TxnOp> = Vec::new();
        match &after.gray {
            Some((gray, _)) if gray_release.is_some() || matches!(plan, Plan::Widen { .. }) => {
                let doc = serde_json::to_vec(gray).map_err(|e| {
                    Error::invalid_argument(gray_key(prefix), format!("cannot encode: {e}"))
                })?;
                ops.push(TxnOp::put(gray_key(prefix), doc));
            }
            _ => {
                ops.extend(
                    puts.into_iter()
                        .map(|(key, bytes)| TxnOp::put(full(&key), bytes))
                        .chain(deletes.iter().map(|key| TxnOp::delete(full(key)))),
                );
            }
        }
        if matches!(plan, Plan::Promote { .. } | Plan::Abort { .. }) || ended_gray.is_some() {
            ops.push(TxnOp::delete(gray_key(prefix)));
        }
        for record in &records {
            ops.push(TxnOp::put(record_key(prefix, record.seq), record.encode()?));
        }
        ops.push(TxnOp::put(head_key(prefix), release.head().encode()?));
        let mut audit = identity
            .record(self.audit_action(&release.kind), prefix.as_str())
            .detail(format!("release {seq}"))
            .reason(release.message.clone());
        if let Some(approval) = &self.approval {
            let decision = Decision {
                state: ProposalState::Approved {
                    by: identity.principal.clone(),
                    seq,
                },
                at_ms: now,
                writer: approval.writer.clone(),
                revision: approval.revision,
                proposal: approval.proposal.clone(),
            };
            ops.push(TxnOp::put(approval.decision_key(), decision.encode()?));
            audit = audit.detail(format!(
                "proposal {} as release {seq}",
                approval.proposal.id
            ));
        }
        ops.push(audit.op(identity.writer())?);
        if let Some(along) = &self.along {
            ops.extend((along.ops)(seq)?);
        }
        let keep = self.center.release_history.max(1) as u64;
        let oldest_kept = seq.saturating_sub(keep) + 1;
        let first_gone = state.seq().saturating_sub(keep) + 1;
        for old in first_gone.max(1)..oldest_kept {
            ops.push(TxnOp::delete(record_key(prefix, old)));
        }
        Ok(Some(Planned {
            txn: Txn::new().when(compares).and_then(ops),
            records,
            after,
            redaction,
            size,
        }))
    }
}

impl Plan {
    /// The keys (relative) a release of this plan writes, read with the state (others it
    /// learns once the state says which).
    fn keys(&self, job: &Job) -> BTreeSet<String> {
        let mut keys: BTreeSet<String> = job.expect_versions.keys().cloned().collect();
        match self {
            Plan::Raw { values, remove } => {
                keys.extend(values.keys().cloned());
                keys.extend(remove.iter().cloned());
            }
            Plan::Exact { puts, removes } => {
                keys.extend(puts.keys().cloned());
                keys.extend(removes.iter().cloned());
            }
            _ => {}
        }
        keys
    }
}

/// The latest release's seq, from the head alone.
async fn latest_seq(center: &ConfigCenter, prefix: &str) -> Result<u64> {
    let response = center
        .store
        .range(&KeyRange::key(head_key(prefix)), RangeOptions::default())
        .await?;
    match response.kvs.first() {
        Some(kv) => Ok(Record::decode(kv)?.seq),
        None => Ok(0),
    }
}

/// A release the store refused before sending (over etcd's request size or operation
/// count), told in the user's terms: the prefix, how much it changes, the limit; not the
/// internal key the request happened to start with. Other errors pass through.
fn too_large(prefix: &str, (keys, bytes): (usize, usize), e: Error) -> Error {
    match e {
        // The store refuses a request with InvalidArgument only for its size or its count of
        // operations (the keys and values of a release are checked before).
        Error::InvalidArgument { reason, .. } => Error::InvalidArgument {
            field: prefix.to_owned(),
            reason: format!(
                "a release of `{prefix}` cannot be sent in one transaction: {reason}. It \
                 changes {keys} keys ({bytes} bytes before and after, each written with its \
                 record); nothing was written"
            ),
        },
        other => other,
    }
}

/// The gray release in progress, if it is release `seq`.
fn in_progress<'s>(state: &'s PrefixState, prefix: &str, seq: u64) -> Result<&'s GrayDoc> {
    match &state.gray {
        Some((gray, _)) if gray.seq == seq => Ok(gray),
        Some((gray, _)) => Err(Error::GrayConflict {
            prefix: prefix.to_owned(),
            in_progress: gray.seq,
            reason: format!(
                "release {seq} is not the gray release in progress ({})",
                gray.seq
            ),
        }),
        None => Err(Error::NotFound {
            key: format!("{} (gray release {seq})", gray_key(prefix)),
        }),
    }
}

fn check_relative(prefix: &str, key: &str) -> Result<()> {
    if key.is_empty() || key.starts_with('/') || key.contains("//") || key.contains('\0') {
        return Err(Error::invalid_argument(
            format!("{prefix}/{key}"),
            "a released key is relative to the prefix: non-empty, no leading `/`, no empty segment",
        ));
    }
    Ok(())
}

pub(super) fn typed_plan<T: CoordConfig>(
    prefix: &str,
    value: &T,
    keys: Option<&KeyRing>,
) -> Result<Plan> {
    let values = checked_values(prefix, value, keys)?;
    let maps = map_replacements::<T>(prefix, &values);
    Ok(Plan::Typed {
        values,
        maps,
        schema: Arc::new(PublishedSchema::of::<T>(prefix)),
    })
}

/// Whether `stored` and `fresh`, both sealed for `key`, hold the same value and `stored` is
/// sealed under `ring`'s newest key.
fn same_sealed(ring: &KeyRing, key: &str, stored: &[u8], fresh: &[u8]) -> bool {
    if key_id_of(stored).as_deref() != Some(ring.newest()) || !is_sealed(fresh) {
        return false;
    }
    match (ring.open(key, stored), ring.open(key, fresh)) {
        (Ok(stored), Ok(fresh)) => stored == fresh,
        _ => false,
    }
}

/// A plain value over a sealed one, from a process without a key ring: refused, or a secret
/// would go back in clear (and every record after it).
fn unsealing_refused(key: &str, stored: Option<&str>) -> Error {
    Error::Secret {
        key: key.to_owned(),
        key_id: stored.and_then(|text| key_id_of(text.as_bytes())),
        reason: "the stored value is sealed and this process has no key ring to seal the new \
                 one with (ClientConfig::secret_keys); nothing was written"
            .to_owned(),
    }
}

/// A plain value for a secret key of a prefix whose published schema says its secrets are
/// sealed, from a process that cannot seal it.
fn plain_refused(key: &str) -> Error {
    Error::Secret {
        key: key.to_owned(),
        key_id: None,
        reason: "the prefix's published schema says its secrets are sealed, and this process has \
                 no key ring to seal this one with (ClientConfig::secret_keys, coordctl \
                 --secret-keys); nothing was written"
            .to_owned(),
    }
}

/// Seals the plain texts of secret keys a record holds (before and after each change): with
/// a key ring, history keeps no plaintext, the change outside releases a migration records
/// included. A rollback to such a record restores the same value, sealed.
fn seal_record(
    record: &mut Record,
    ring: &KeyRing,
    is_secret: impl Fn(&str) -> bool,
    full: &impl Fn(&str) -> String,
) -> Result<()> {
    for (key, change) in &mut record.changes {
        if !(is_secret(key) || record.secrets.contains(key)) {
            continue;
        }
        for text in [&mut change.old, &mut change.new].into_iter().flatten() {
            if !is_sealed(text.as_bytes()) {
                *text = text_of(ring.seal(&full(key), text.as_bytes())?);
            }
        }
    }
    Ok(())
}
