//! Rollout plans: a gray release that drives itself through steps, bake times and gates, and
//! promotes itself at the end or aborts on the first failed gate.
//!
//! A [`RolloutPlan`] names new values for a prefix and ordered [`Step`]s, each a
//! [`Selector`](crate::config::Selector) that covers the one before and a bake time. Started
//! with [`Rollouts::start`], the plan is kept in etcd (`/coord/plans{prefix}`) with its
//! progress; a [`Driver`] runs it: step 1 is a gray release to its selector, each later step
//! [widens](crate::ConfigCenter::widen) that gray release in place (so an instance picked at
//! 10% stays picked at 50%), the last one is followed by a promote.
//!
//! Before moving on from a step, its gates must pass: every selected instance runs it
//! ([`wait_rollout`](crate::ConfigCenter::wait_rollout), within
//! [`Gates::rollout_timeout`]), none rejected it, none reports itself degraded
//! ([`Coord::report_health`](crate::Coord::report_health)), and each user gate the driver
//! was given ([`Driver::gate`], e.g. a metrics query) says yes. A failed gate aborts: every
//! instance is back on the base values.
//!
//! # What it promises
//!
//! - **One driver.** Drivers campaign in coord's own election; the leader drives, and every
//!   state change it makes carries its leadership's fence: a driver that lost leadership
//!   cannot move the plan.
//! - **Each step once.** A step's release and the plan's move to it commit in one
//!   transaction guarded by the plan's revision: a driver that resumes (after a crash, on
//!   another process) continues from the recorded step and never applies one twice.
//! - **Recorded.** Every step is a release in the prefix's history whose message says the
//!   plan, the step and the gates the step before passed; the promote and the abort say why.
//! - **Controllable from outside.** [`pause`](Rollouts::pause) holds the step (the driver
//!   judges nothing while paused; [`resume`](Rollouts::resume) starts the bake again, and
//!   the time its instances have to load it),
//!   [`cancel`](Rollouts::cancel) aborts the gray release and ends the plan, in one
//!   transaction, with no driver needed.
//! - **Ended with its gray release.** A gray release ended outside the plan (a rollback of
//!   the prefix ends it, or a person promotes or aborts it) ends the plan: the driver marks it
//!   aborted and says what ended it, and a cancel still succeeds.
//!
//! # Who may
//!
//! A plan releases values directly, so starting, pausing, resuming and cancelling one takes
//! what a release takes under the [access policy](crate::access): the `release` action on
//! the prefix, and `start` is refused on a prefix that requires review
//! ([`Error::ReviewRequired`]). Each is recorded in the audit log (`plan_start`,
//! `plan_pause`, `plan_resume`, `plan_cancel`) in the transaction that changes the plan,
//! refusals in a write of their own. The [`Driver`] releases as the principal of the
//! `Rollouts` it came from (the connection's own, unless made through
//! [`as_principal`](Rollouts::as_principal)): each step's release is checked against its
//! grants and names it in history and in the audit log.

mod driver;
mod plan;

use std::sync::Arc;

use tracing::Instrument;

pub use driver::{Driver, GateContext};
pub use plan::{Gates, LogLine, PlanState, PlanStatus, RolloutPlan, Step, describe};

use crate::access::audit::{self, AuditAction};
use crate::access::{Action, Gate, Identity};
use crate::clock::now_ms;
use crate::config::gray::{GrayDoc, gray_key};
use crate::config::{Along, ConfigCenter, ReleaseKind};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::store::{Compare, KeyValue, Txn, TxnOp};
use plan::plan_key;

/// Starting, watching and steering rollout plans. Get it from
/// [`Coord::rollouts`](crate::Coord::rollouts).
#[derive(Clone, Debug)]
pub struct Rollouts {
    ctx: Arc<Context>,
    center: ConfigCenter,
}

impl Rollouts {
    pub(crate) fn new(ctx: Arc<Context>, center: ConfigCenter) -> Self {
        Rollouts { ctx, center }
    }

    /// Stores `plan` for its prefix, pending until a [`Driver`] runs it.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for a plan that does not [`validate`](RolloutPlan::validate);
    /// [`Error::PermissionDenied`] if the access policy does not let this principal
    /// `release` on the prefix, [`Error::ReviewRequired`] if the prefix requires review (a
    /// plan releases its values directly; both recorded in the audit log);
    /// [`Error::Conflict`] on the plan key if another plan of the prefix is not finished.
    ///
    /// # Cancel safety
    ///
    /// Dropped midway, the plan is stored or not.
    pub async fn start(&self, plan: RolloutPlan) -> Result<PlanStatus> {
        plan.validate()?;
        crate::config::reserved::refuse_reserved("prefix", &plan.prefix)?;
        let key = plan_key(&plan.prefix);
        let span = tracing::info_span!("rollout.start", key = %key);
        async {
            loop {
                let gate = self.admit(AuditAction::PlanStart, &plan.prefix).await?;
                let (current, _) = self.center.store.get(&key).await?;
                let guard = match &current {
                    Some(kv) => {
                        let running = PlanStatus::decode(kv)?;
                        if !running.state.is_finished() {
                            return Err(Error::Conflict {
                                key: key.clone(),
                                expected: 0,
                                current: kv.mod_revision,
                            });
                        }
                        Compare::mod_revision(&key, kv.mod_revision)
                    }
                    None => Compare::create_revision(&key, 0),
                };
                // The texts the plan will release, sealed where secret, as a release would
                // store them: the plan key keeps no secret in clear.
                let texts = self
                    .center
                    .planned_texts(&plan.prefix, plan.values.clone(), plan.removes.clone())
                    .await?;
                let mut shown = plan.clone();
                for key in &texts.secrets {
                    if let Some(value) = shown.values.get_mut(key) {
                        *value = serde_json::Value::String("<redacted>".into());
                    }
                }
                let mut status = PlanStatus {
                    id: format!("{:08x}", rand::random::<u32>()),
                    plan: shown,
                    state: PlanState::Pending,
                    paused: false,
                    started_by: self.center.identity().principal.clone(),
                    log: Vec::new(),
                    revision: 0,
                    texts: Some(texts.clone()),
                };
                status.note(format!(
                    "started by {} with {} steps",
                    status.started_by,
                    status.plan.steps.len()
                ));
                // Lost to another writer (a plan started, the policy changed): read again.
                if let Some(revision) = self
                    .write(guard, &gate, &status, AuditAction::PlanStart)
                    .await?
                {
                    status.revision = revision;
                    return Ok(status);
                }
            }
        }
        .instrument(span)
        .await
    }

    /// These rollouts as principal `name` (see
    /// [`ConfigCenter::as_principal`](crate::ConfigCenter::as_principal)): plans are started,
    /// steered and driven as `name`, checked against its grants and recorded as its.
    ///
    /// # Errors
    ///
    /// As [`ConfigCenter::as_principal`](crate::ConfigCenter::as_principal).
    pub fn as_principal(&self, name: &str) -> Result<Rollouts> {
        Ok(Rollouts {
            ctx: Arc::clone(&self.ctx),
            center: self.center.as_principal(name)?,
        })
    }

    /// These rollouts acting for principal `name` through this connection's principal, a
    /// delegate (see [`ConfigCenter::on_behalf_of`](crate::ConfigCenter::on_behalf_of)).
    ///
    /// # Errors
    ///
    /// As [`ConfigCenter::on_behalf_of`](crate::ConfigCenter::on_behalf_of).
    pub fn on_behalf_of(&self, name: &str) -> Result<Rollouts> {
        Ok(Rollouts {
            ctx: Arc::clone(&self.ctx),
            center: self.center.on_behalf_of(name)?,
        })
    }

    /// Who plans are started, steered and driven as.
    pub fn identity(&self) -> &Identity {
        self.center.identity()
    }

    /// The prefix's plan (the running one, or the last), if any.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it only reads.
    pub async fn status(&self, prefix: &str) -> Result<Option<PlanStatus>> {
        let (kv, _) = self
            .center
            .store
            .get(&plan_key(prefix.trim_end_matches('/')))
            .await?;
        kv.as_ref().map(PlanStatus::decode).transpose()
    }

    /// Holds the plan at its step: the driver judges no gate and moves on to nothing until
    /// [`resume`](Self::resume).
    ///
    /// # Errors
    ///
    /// [`Error::PermissionDenied`] if the access policy does not let this principal `release`
    /// on the prefix (recorded in the audit log); [`Error::NotFound`] without a plan;
    /// [`Error::InvalidArgument`] for a finished one.
    ///
    /// # Cancel safety
    ///
    /// Dropped midway, the plan is paused or not.
    pub async fn pause(&self, prefix: &str) -> Result<PlanStatus> {
        self.steer(prefix, AuditAction::PlanPause, |status, by| {
            status.paused = true;
            status.note(format!("paused by {by}"));
            Ok(())
        })
        .await
    }

    /// Lets a paused plan go on; the step starts again: its bake time, and the time its
    /// instances have to load it ([`Gates::rollout_timeout`]).
    ///
    /// # Errors
    ///
    /// As [`pause`](Self::pause).
    ///
    /// # Cancel safety
    ///
    /// Dropped midway, the plan is resumed or not.
    pub async fn resume(&self, prefix: &str) -> Result<PlanStatus> {
        self.steer(prefix, AuditAction::PlanResume, |status, by| {
            status.paused = false;
            if let PlanState::Running { since_ms, .. } = &mut status.state {
                *since_ms = now_ms();
            }
            status.note(format!("resumed by {by}"));
            Ok(())
        })
        .await
    }

    /// Ends the plan: its gray release (if one started) is aborted in the same transaction,
    /// so every instance is back on the base values. A plan whose gray release already ended
    /// outside it (a rollback, a promote or abort by hand) is marked cancelled as it stands.
    ///
    /// # Errors
    ///
    /// As [`pause`](Self::pause).
    ///
    /// # Cancel safety
    ///
    /// Dropped midway, the plan is cancelled (its gray release aborted) or not.
    pub async fn cancel(&self, prefix: &str) -> Result<PlanStatus> {
        let prefix = prefix.trim_end_matches('/');
        // One retry after the gray release was found gone under the abort: it ended
        // between the look and the abort, and the next look says how.
        let mut gray_gone_once = false;
        loop {
            let gate = self.admit(AuditAction::PlanCancel, prefix).await?;
            let status = self.status(prefix).await?.ok_or_else(|| Error::NotFound {
                key: plan_key(prefix),
            })?;
            if status.state.is_finished() {
                return Err(finished(&status));
            }
            let by = self.center.identity().principal.clone();
            let PlanState::Running { gray, step, .. } = status.state else {
                let mut next = status.clone();
                next.state = PlanState::Cancelled {
                    by: by.clone(),
                    seq: None,
                };
                next.note(format!("cancelled by {by} before it started"));
                match self
                    .put_if_unchanged(&status, &next, &gate, AuditAction::PlanCancel)
                    .await?
                {
                    Some(done) => return Ok(done),
                    None => continue,
                }
            };
            if let Some(how) = gray_ended(&self.center, prefix, gray).await? {
                let mut next = status.clone();
                next.state = PlanState::Cancelled {
                    by: by.clone(),
                    seq: None,
                };
                let why = format!("gray release {gray} had ended outside the plan ({how})");
                tracing::info!(plan = %status.id, %why, "cancelling a plan whose gray release ended");
                next.note(format!("cancelled by {by}; {why}"));
                match self
                    .put_if_unchanged(&status, &next, &gate, AuditAction::PlanCancel)
                    .await?
                {
                    Some(done) => return Ok(done),
                    None => continue,
                }
            }
            let message = format!(
                "plan {} cancelled by {by} at {}",
                status.id,
                status.describe_step(step)
            );
            let (mut along, after) = moving(&status, Vec::new(), move |seq, next| {
                next.state = PlanState::Cancelled {
                    by: by.clone(),
                    seq: Some(seq),
                };
                next.note(format!(
                    "cancelled by {by}; gray release aborted as release {seq}"
                ));
            });
            // The abort is a release: it checks `release` on the prefix as the policy in force
            // when it reads the prefix, and compares that policy in its transaction. The
            // plan's own audit record goes with it.
            let identity = self.center.identity().clone();
            let (target, id) = (prefix.to_owned(), status.id.clone());
            let plan_ops = along.ops;
            along.ops = Box::new(move |seq| {
                let mut ops = plan_ops(seq)?;
                let record = identity
                    .record(AuditAction::PlanCancel, target.as_str())
                    .detail(format!(
                        "plan {id}, gray release {gray} aborted as release {seq}"
                    ));
                ops.push(record.op(identity.writer())?);
                Ok(ops)
            });
            match self
                .center
                .abort(prefix, gray)
                .message(message)
                .along(along)
                .commit()
                .await
            {
                Ok(_) => return after.take(),
                Err(Error::Conflict { .. }) => continue,
                Err(Error::GrayConflict { .. } | Error::NotFound { .. }) if !gray_gone_once => {
                    gray_gone_once = true;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// A driver for the prefix's plan (see [`Driver`]).
    pub fn driver(&self, prefix: &str) -> Driver {
        Driver::new(
            Arc::clone(&self.ctx),
            self.center.clone(),
            prefix.trim_end_matches('/'),
        )
    }

    /// Changes the plan with `change` (given who asks) unless it is finished, retrying while
    /// others change it; checked and audited as `action`.
    async fn steer(
        &self,
        prefix: &str,
        action: AuditAction,
        change: impl Fn(&mut PlanStatus, &str) -> Result<()>,
    ) -> Result<PlanStatus> {
        let prefix = prefix.trim_end_matches('/');
        loop {
            let gate = self.admit(action, prefix).await?;
            let status = self.status(prefix).await?.ok_or_else(|| Error::NotFound {
                key: plan_key(prefix),
            })?;
            if status.state.is_finished() {
                return Err(finished(&status));
            }
            let mut next = status.clone();
            change(&mut next, &self.center.identity().principal)?;
            if let Some(done) = self.put_if_unchanged(&status, &next, &gate, action).await? {
                return Ok(done);
            }
        }
    }

    /// The policy in force, if it lets this principal `release` on `prefix` (and, to start a
    /// plan, release there directly); a refusal is recorded in the audit log as `action`.
    async fn admit(&self, action: AuditAction, prefix: &str) -> Result<Gate> {
        let gate = Gate::read(&self.center.store).await?;
        let identity = self.center.identity();
        let mut checked = gate.allow(identity, Action::Release, prefix);
        if checked.is_ok() && action == AuditAction::PlanStart {
            // A plan releases its values without a proposal.
            checked = gate.direct_release(prefix);
        }
        if let Err(refused) = checked {
            let record = identity.record(action, prefix).refused(&refused);
            audit::append(&self.center.store, identity.writer(), &record).await;
            return Err(refused);
        }
        Ok(gate)
    }

    /// Writes `status` to its plan key if `guard` and the policy `gate` still hold, with the
    /// audit record of `action`; the revision written at, or `None` if a compare failed.
    async fn write(
        &self,
        guard: Compare,
        gate: &Gate,
        status: &PlanStatus,
        action: AuditAction,
    ) -> Result<Option<i64>> {
        let key = plan_key(&status.plan.prefix);
        let identity = self.center.identity();
        let record = identity
            .record(action, status.plan.prefix.as_str())
            .detail(format!("plan {}", status.id));
        let txn = Txn::new().when([guard, gate.compare()]).and_then([
            TxnOp::put(&key, status.encode()?),
            record.op(identity.writer())?,
        ]);
        let response = audit::send(&self.center.store, identity.writer(), &record, txn).await?;
        Ok(response.succeeded.then_some(response.revision))
    }

    /// Writes `after` if the plan is still `before` and the policy still `gate`.
    async fn put_if_unchanged(
        &self,
        before: &PlanStatus,
        after: &PlanStatus,
        gate: &Gate,
        action: AuditAction,
    ) -> Result<Option<PlanStatus>> {
        let guard = Compare::mod_revision(plan_key(&before.plan.prefix), before.revision);
        let written = self.write(guard, gate, after, action).await?;
        Ok(written.map(|revision| {
            let mut done = after.clone();
            done.revision = revision;
            done
        }))
    }
}

fn finished(status: &PlanStatus) -> Error {
    Error::invalid_argument(
        plan_key(&status.plan.prefix),
        format!("plan {} is finished ({:?})", status.id, status.state),
    )
}

/// The plan's move to the state `apply` makes (given the release's seq), committed with a
/// release: guarded by the plan's revision and `compares` (a leader's fence). The second
/// value gives the plan as written once the release committed.
pub(crate) fn moving(
    status: &PlanStatus,
    compares: Vec<Compare>,
    apply: impl Fn(u64, &mut PlanStatus) + Send + Sync + 'static,
) -> (Along, Written) {
    let written = Written::default();
    let slot = written.clone();
    let before = status.clone();
    let key = plan_key(&status.plan.prefix);
    let along = Along {
        guards: vec![(key.clone(), status.revision)],
        compares,
        ops: Box::new(move |seq| {
            let mut next = before.clone();
            apply(seq, &mut next);
            let op = TxnOp::put(&key, next.encode()?);
            *crate::sync::lock(&slot.0) = Some(next);
            Ok(vec![op])
        }),
    };
    (along, written)
}

/// The plan a release wrote along with it: the last one planned is the one committed (a
/// release plans again each time it loses a race).
#[derive(Clone, Default)]
pub(crate) struct Written(Arc<std::sync::Mutex<Option<PlanStatus>>>);

impl Written {
    pub(crate) fn take(&self) -> Result<PlanStatus> {
        crate::sync::lock(&self.0)
            .take()
            .ok_or_else(|| Error::invalid_argument("plan", "the release wrote no plan state"))
    }
}

/// True if `kv`, the prefix's gray key as read, holds gray release `gray` in progress.
pub(crate) fn gray_in_progress(kv: Option<&KeyValue>, gray: u64) -> bool {
    match kv {
        None => false,
        // A gray key that does not decode is no proof the release ended: it counts as in
        // progress, and the releases that read it say what is wrong.
        Some(kv) => serde_json::from_slice::<GrayDoc>(&kv.value)
            .ok()
            .is_none_or(|doc| doc.seq == gray),
    }
}

/// How gray release `gray` of `prefix` ended, if it is no longer in progress: "promoted as
/// release 5 by ana", "aborted as release 4 by ops: ended by the rollback to 1".
pub(crate) async fn gray_ended(
    center: &ConfigCenter,
    prefix: &str,
    gray: u64,
) -> Result<Option<String>> {
    let (kv, _) = center.store.get(&gray_key(prefix)).await?;
    if gray_in_progress(kv.as_ref(), gray) {
        return Ok(None);
    }
    Ok(Some(how_ended(center, prefix, gray).await?))
}

/// The release that ended gray release `gray`, in a few words, from the prefix's history.
pub(crate) async fn how_ended(center: &ConfigCenter, prefix: &str, gray: u64) -> Result<String> {
    let history = center.history(prefix, 100).await?;
    let ended = history.iter().find_map(|release| {
        let verb = match release.kind {
            ReleaseKind::Promote { gray: g } if g == gray => "promoted",
            ReleaseKind::Abort { gray: g } if g == gray => "aborted",
            _ => return None,
        };
        let by = release
            .principal
            .as_deref()
            .map(|p| format!(" by {p}"))
            .unwrap_or_default();
        let why = release
            .message
            .as_deref()
            .map(|m| format!(": {m}"))
            .unwrap_or_default();
        Some(format!("{verb} as release {}{by}{why}", release.seq))
    });
    Ok(ended.unwrap_or_else(|| "it is no longer in progress".to_owned()))
}
