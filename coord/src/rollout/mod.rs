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
//!   judges nothing while paused; [`resume`](Rollouts::resume) starts the bake again),
//!   [`cancel`](Rollouts::cancel) aborts the gray release and ends the plan, in one
//!   transaction, with no driver needed.

mod driver;
mod plan;

use std::sync::Arc;

use tracing::Instrument;

pub use driver::{Driver, GateContext};
pub use plan::{Gates, LogLine, PlanState, PlanStatus, RolloutPlan, Step, describe};

use crate::config::{Along, ConfigCenter};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::store::{Compare, Txn, TxnOp};
use plan::{now_ms, plan_key};

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
            let mut status = PlanStatus {
                id: format!("{:08x}", rand::random::<u32>()),
                plan,
                state: PlanState::Pending,
                paused: false,
                started_by: self.center.identity().principal.clone(),
                log: Vec::new(),
                revision: 0,
            };
            status.note(format!(
                "started by {} with {} steps",
                status.started_by,
                status.plan.steps.len()
            ));
            let txn = Txn::new()
                .when([guard])
                .and_then([TxnOp::put(&key, status.encode()?)]);
            let response = self.center.store.txn(txn).await?;
            if !response.succeeded {
                return Err(Error::Conflict {
                    key,
                    expected: current.map_or(0, |kv| kv.mod_revision),
                    current: -1,
                });
            }
            status.revision = response.revision;
            Ok(status)
        }
        .instrument(span)
        .await
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
    /// [`Error::NotFound`] without a plan; [`Error::InvalidArgument`] for a finished one.
    ///
    /// # Cancel safety
    ///
    /// Dropped midway, the plan is paused or not.
    pub async fn pause(&self, prefix: &str) -> Result<PlanStatus> {
        self.steer(prefix, |status, by| {
            status.paused = true;
            status.note(format!("paused by {by}"));
            Ok(())
        })
        .await
    }

    /// Lets a paused plan go on; the step's bake time starts again.
    ///
    /// # Errors
    ///
    /// As [`pause`](Self::pause).
    ///
    /// # Cancel safety
    ///
    /// Dropped midway, the plan is resumed or not.
    pub async fn resume(&self, prefix: &str) -> Result<PlanStatus> {
        self.steer(prefix, |status, by| {
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
    /// so every instance is back on the base values.
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
        loop {
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
                match self.put_if_unchanged(&status, &next).await? {
                    Some(done) => return Ok(done),
                    None => continue,
                }
            };
            let message = format!(
                "plan {} cancelled by {by} at {}",
                status.id,
                status.describe_step(step)
            );
            let (along, after) = moving(&status, Vec::new(), move |seq, next| {
                next.state = PlanState::Cancelled {
                    by: by.clone(),
                    seq: Some(seq),
                };
                next.note(format!(
                    "cancelled by {by}; gray release aborted as release {seq}"
                ));
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
    /// others change it.
    async fn steer(
        &self,
        prefix: &str,
        change: impl Fn(&mut PlanStatus, &str) -> Result<()>,
    ) -> Result<PlanStatus> {
        let prefix = prefix.trim_end_matches('/');
        loop {
            let status = self.status(prefix).await?.ok_or_else(|| Error::NotFound {
                key: plan_key(prefix),
            })?;
            if status.state.is_finished() {
                return Err(finished(&status));
            }
            let mut next = status.clone();
            change(&mut next, &self.center.identity().principal)?;
            if let Some(done) = self.put_if_unchanged(&status, &next).await? {
                return Ok(done);
            }
        }
    }

    async fn put_if_unchanged(
        &self,
        before: &PlanStatus,
        after: &PlanStatus,
    ) -> Result<Option<PlanStatus>> {
        let key = plan_key(&before.plan.prefix);
        let txn = Txn::new()
            .when([Compare::mod_revision(&key, before.revision)])
            .and_then([TxnOp::put(&key, after.encode()?)]);
        let response = self.center.store.txn(txn).await?;
        Ok(response.succeeded.then(|| {
            let mut done = after.clone();
            done.revision = response.revision;
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
