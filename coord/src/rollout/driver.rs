//! The driver: one process at a time moves a plan from step to step.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tracing::Instrument;

use super::plan::{PlanState, PlanStatus, driver_election, plan_key};
use super::{Written, gray_in_progress, how_ended, moving};
use crate::clock::now_ms;
use crate::config::gray::gray_key;
use crate::config::{ConfigCenter, InstanceHealth, InstanceStatus, Release};
use crate::context::Context;
use crate::election::{DEFAULT_ELECTION_TTL, Election, Leadership};
use crate::error::{Error, Result};
use crate::store::{Compare, EventKind, KeyRange, KeyValue, Txn, TxnOp};
use crate::watch::{ResilientWatch, WatchConfig, WatchEvent};

/// How often the driver looks at the instances while a step bakes.
const LOOK_EVERY: Duration = Duration::from_millis(100);

/// The least time a judgement gives the selected instances to show they run a step, even
/// when the step's [`rollout_timeout`](super::Gates::rollout_timeout) has passed (a driver
/// that took over, restarted or was held up): enough for a few reads of their statuses, so
/// only instances really behind fail the gate.
const RECHECK_AT_LEAST: Duration = Duration::from_secs(3);

/// The first pause after a round of the drive loop that moved nothing (an error, a wake-up
/// with nothing new); it doubles up to [`MAX_PAUSE`] while nothing moves.
const FIRST_PAUSE: Duration = Duration::from_millis(100);
/// The longest pause between two rounds that move nothing.
const MAX_PAUSE: Duration = Duration::from_secs(5);
/// Errors in a row, with the plan not moving in between, after which the driver gives up.
const MAX_FAILURES: u32 = 10;

/// What a user gate is told: the plan, the step it judges, the statuses of the instances.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct GateContext {
    /// The plan as it stands.
    pub plan: PlanStatus,
    /// The step being judged (from 0).
    pub step: usize,
    /// Every live instance on the prefix.
    pub statuses: Vec<InstanceStatus>,
}

type GateFn = Arc<
    dyn Fn(GateContext) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync,
>;

/// Runs a prefix's plan: campaigns to be its only driver, then moves it step by step until it
/// is promoted, aborted or cancelled. Made by [`Rollouts::driver`](super::Rollouts::driver).
///
/// The driver releases as the principal of the `Rollouts` it came from: the connection's
/// own (its etcd user, or `anonymous`) unless made through
/// [`Rollouts::as_principal`](super::Rollouts::as_principal). Each step is a release checked
/// against that principal's grants (`release` on the prefix, and a prefix that requires
/// review refuses the first step), and its record in history and in the audit log names it.
///
/// It rides out trouble: a store error, a watch that breaks, a release that lost a race to
/// another of the prefix are logged, and after a pause (100 ms, doubling up to 5 s) the plan
/// is read again and the step judged or tried again. It gives up only when its leadership
/// is lost, the plan is gone, or errors keep coming (10 in a row) while the plan does not
/// move.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> coord::Result<()> {
/// use std::collections::BTreeMap;
/// use std::time::Duration;
/// use coord::config::Selector;
/// use coord::rollout::{PlanState, RolloutPlan};
///
/// let coord = coord::Coord::in_memory();
/// coord.config().set("/config/app/limit", &10).await?;
/// let plan = RolloutPlan::new("/config/app", BTreeMap::from([("limit".to_owned(), 20.into())]))
///     .step(Selector::default().percent(10), Duration::from_millis(10))
///     .step(Selector::default(), Duration::ZERO);
/// coord.rollouts().start(plan).await?;
/// let done = coord
///     .rollouts()
///     .driver("/config/app")
///     .gate("error budget", |_ctx| async { Ok(()) })
///     .run()
///     .await?;
/// assert!(matches!(done.state, PlanState::Promoted { .. }));
/// assert_eq!(coord.config().get::<i32>("/config/app/limit").await?, 20);
/// # Ok(())
/// # }
/// ```
#[must_use = "a driver does nothing until it runs"]
pub struct Driver {
    ctx: Arc<Context>,
    center: ConfigCenter,
    prefix: String,
    gates: Vec<(String, GateFn)>,
    ttl: Duration,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let gates: Vec<&str> = self.gates.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("Driver")
            .field("prefix", &self.prefix)
            .field("gates", &gates)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// What judging a step found.
enum Verdict {
    Pass(String),
    Fail(String),
    /// The plan changed (paused, cancelled, moved by another driver): read it again.
    Changed,
    /// The plan's gray release is no longer in progress: something outside the plan ended it.
    GrayEnded,
}

/// How a round of the drive loop ended.
enum Round {
    /// It did what it could; read the plan again.
    Again,
    /// The plan is over.
    Done(Box<PlanStatus>),
}

impl Driver {
    pub(crate) fn new(ctx: Arc<Context>, center: ConfigCenter, prefix: &str) -> Self {
        Driver {
            ctx,
            center,
            prefix: prefix.to_owned(),
            gates: Vec::new(),
            ttl: DEFAULT_ELECTION_TTL,
        }
    }

    /// Sets the TTL of the driver's leadership (default
    /// [`DEFAULT_ELECTION_TTL`](crate::election::DEFAULT_ELECTION_TTL)): how long a driver that
    /// vanished without resigning (a crash, a partition) holds the plan before another takes
    /// over. At least one second.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Adds a user gate, judged at the end of each step's bake: `Err(reason)` aborts the plan
    /// with the reason. Every driver of the plan should be given the same gates. A gate's
    /// future is dropped if the plan changes while it runs (a pause, a cancel), and a step
    /// judged again (after an error) asks it again.
    pub fn gate<F, Fut>(mut self, name: &str, gate: F) -> Self
    where
        F: Fn(GateContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        let gate: GateFn = Arc::new(move |ctx| Box::pin(gate(ctx)));
        self.gates.push((name.to_owned(), gate));
        self
    }

    /// Campaigns, then drives the plan to its end; returns it finished.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] if the prefix has no plan; [`Error::SessionLost`] if leadership is
    /// lost (another driver takes over from the recorded step); [`Error::InvalidArgument`] for
    /// a [`ttl`](Self::ttl) under a second; the last error when errors keep coming while the
    /// plan does not move.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe in the sense that matters: dropped at any point, the plan is at a recorded
    /// step and the next driver resumes it; its leadership is resigned in the background.
    pub async fn run(self) -> Result<PlanStatus> {
        let span = tracing::info_span!("rollout.drive", prefix = %self.prefix);
        async {
            let election =
                Election::new(Arc::clone(&self.ctx), &driver_election(&self.prefix)).ttl(self.ttl);
            let leadership = election.campaign(self.ctx.instance.name.clone()).await?;
            tracing::info!("driving the plan");
            let result = tokio::select! {
                result = self.drive(&leadership) => result,
                lost = leadership.lost() => Err(lost),
            };
            if let Err(e) = leadership.resign().await {
                tracing::debug!(error = %e, "could not resign; the lease expires");
            }
            result
        }
        .instrument(span)
        .await
    }

    /// The drive loop: a round per state of the plan, each read afresh. A round that fails is
    /// logged and, after a pause, the plan is read again: if it moved, the next round goes on
    /// from there; if not, the round is tried again.
    async fn drive(&self, leadership: &Leadership) -> Result<PlanStatus> {
        let mut pause = FIRST_PAUSE;
        let mut failures = 0_u32;
        let mut last: Option<i64> = None;
        loop {
            let status = match self.read().await {
                Ok(status) => Some(status),
                Err(e @ (Error::NotFound { .. } | Error::Closed)) => return Err(e),
                Err(e) => {
                    failures = self.failed(e, failures)?;
                    None
                }
            };
            let moved = status.as_ref().is_some_and(|s| last != Some(s.revision));
            if moved {
                pause = FIRST_PAUSE;
                failures = 0;
            } else if last.is_some() || status.is_none() {
                // Nothing moved since the last round: an error, or a wake-up with nothing new.
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(MAX_PAUSE);
            }
            let Some(status) = status else { continue };
            last = Some(status.revision);
            match self.round(status, leadership).await {
                Ok(Round::Done(status)) => return Ok(*status),
                Ok(Round::Again) => {}
                Err(e @ (Error::SessionLost { .. } | Error::Closed)) => return Err(e),
                Err(e) => failures = self.failed(e, failures)?,
            }
        }
    }

    /// Counts a failed round: logged, and given up on once too many came in a row.
    fn failed(&self, error: Error, failures: u32) -> Result<u32> {
        let failures = failures + 1;
        if failures >= MAX_FAILURES {
            tracing::warn!(error = %error, failures, "giving up on the plan: it does not move");
            return Err(error);
        }
        if matches!(error, Error::Conflict { .. }) {
            // A release of the prefix won a race: no trouble, the step is tried again.
            tracing::info!(error = %error, failures, "a step of the plan lost a race; trying again");
        } else {
            tracing::warn!(error = %error, failures, "a step of the plan failed; trying again");
        }
        Ok(failures)
    }

    /// One move of the plan from where it stands.
    async fn round(&self, status: PlanStatus, leadership: &Leadership) -> Result<Round> {
        if status.state.is_finished() {
            return Ok(Round::Done(Box::new(status)));
        }
        if status.paused {
            self.wait_for_change(&status).await?;
            return Ok(Round::Again);
        }
        match status.state.clone() {
            PlanState::Pending => self.first_step(&status, leadership).await?,
            PlanState::Running {
                step,
                gray,
                since_ms,
            } => match self.judge(&status, step, gray, since_ms).await? {
                Verdict::Changed => {}
                Verdict::GrayEnded => {
                    self.ended_outside(&status, step, gray, leadership).await?;
                }
                Verdict::Fail(reason) => {
                    self.abort(&status, step, gray, reason, leadership).await?;
                }
                Verdict::Pass(gates) => {
                    self.next_step(&status, step, gray, gates, leadership)
                        .await?;
                }
            },
            _ => return Ok(Round::Done(Box::new(status))),
        }
        Ok(Round::Again)
    }

    async fn read(&self) -> Result<PlanStatus> {
        let key = plan_key(&self.prefix);
        let (kv, _) = self.center.store.get(&key).await?;
        let kv = kv.ok_or(Error::NotFound { key })?;
        PlanStatus::decode(&kv)
    }

    /// Waits until the plan's key changes from `status`.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] once the store is closed; other watch errors are waited out.
    async fn wait_for_change(&self, status: &PlanStatus) -> Result<()> {
        let revision = status.revision;
        self.wait_until(plan_key(&self.prefix), revision, |kv| {
            kv.map_or(0, |kv| kv.mod_revision) != revision
        })
        .await
    }

    /// Waits until gray release `gray` is no longer in progress, as seen from `revision` on.
    async fn wait_for_gray_end(&self, gray: u64, revision: i64) -> Result<()> {
        self.wait_until(gray_key(&self.prefix), revision, |kv| {
            !gray_in_progress(kv, gray)
        })
        .await
    }

    /// Follows `key` from after `revision` until `done` says yes of it (`None`: deleted).
    ///
    /// A relist (the history was compacted, a break before any revision came) shows the
    /// key as it is: `done` judges it like any change, so a key that did not change keeps
    /// the wait going.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] once the store is closed; other watch errors are logged and waited
    /// out (the watch backs off and resumes by itself).
    async fn wait_until(
        &self,
        key: String,
        revision: i64,
        done: impl Fn(Option<&KeyValue>) -> bool,
    ) -> Result<()> {
        let mut watch = ResilientWatch::with_config(
            self.center.store.clone(),
            KeyRange::key(key.as_str()),
            WatchConfig::default(),
        )
        .starting_after(revision);
        loop {
            let seen = match watch.next().await {
                Ok(WatchEvent::Progress { .. }) => continue,
                Ok(WatchEvent::Init { kvs, .. }) => done(kvs.iter().find(|kv| kv.key == key)),
                Ok(WatchEvent::Events { events, .. } | WatchEvent::Resync { events, .. }) => events
                    .iter()
                    .filter(|e| e.kv.key == key)
                    .any(|e| match e.kind {
                        EventKind::Put => done(Some(&e.kv)),
                        EventKind::Delete => done(None),
                    }),
                Err(Error::Closed) => return Err(Error::Closed),
                Err(e) => {
                    tracing::warn!(%key, error = %e, "the watch broke; it resumes");
                    continue;
                }
            };
            if seen {
                return Ok(());
            }
        }
    }

    /// Step 1: the gray release to its selector, and the plan running it, in one transaction.
    async fn first_step(&self, status: &PlanStatus, leadership: &Leadership) -> Result<()> {
        let plan = &status.plan;
        let what = status.describe_step(0);
        let (along, written) = moving(status, vec![leadership.fence()], move |seq, next| {
            next.state = PlanState::Running {
                step: 0,
                gray: seq,
                since_ms: now_ms(),
            };
            next.note(format!("{what}: gray release {seq}"));
        });
        let builder = match &status.texts {
            Some(planned) => self.center.release_exact(
                &plan.prefix,
                planned.texts.clone(),
                planned.removes.clone(),
            ),
            // A plan stored before plans kept their texts.
            None => self.center.release_raw_with(
                &plan.prefix,
                plan.values.clone(),
                plan.removes.clone(),
            ),
        };
        let release = builder
            .to(status.step(0)?.selector.clone())
            .message(self.message(status, &status.describe_step(0), None))
            .author(self.author(status))
            .along(along);
        self.commit(release.commit().await, &written).await
    }

    /// Widen to the next step, or promote after the last, recording the gates passed.
    async fn next_step(
        &self,
        status: &PlanStatus,
        step: usize,
        gray: u64,
        gates: String,
        leadership: &Leadership,
    ) -> Result<()> {
        let plan = &status.plan;
        let passed = format!("{} passed: {gates}", status.describe_step(step));
        if let Some(next) = plan.steps.get(step + 1) {
            let what = status.describe_step(step + 1);
            let note = format!("{passed}; {what}");
            let (along, written) = moving(status, vec![leadership.fence()], move |_, next_doc| {
                next_doc.state = PlanState::Running {
                    step: step + 1,
                    gray,
                    since_ms: now_ms(),
                };
                next_doc.note(note.clone());
            });
            let release = self
                .center
                .widen(&plan.prefix, gray, next.selector.clone())
                .message(self.message(status, &status.describe_step(step + 1), Some(&passed)))
                .author(self.author(status))
                .along(along);
            self.commit(release.commit().await, &written).await
        } else {
            let note = passed.clone();
            let (along, written) =
                moving(status, vec![leadership.fence()], move |seq, next_doc| {
                    next_doc.state = PlanState::Promoted { seq };
                    next_doc.note(format!("{note}; promoted as release {seq}"));
                });
            let release = self
                .center
                .promote(&plan.prefix, gray)
                .message(self.message(status, "promoted", Some(&passed)))
                .author(self.author(status))
                .along(along);
            self.commit(release.commit().await, &written).await
        }
    }

    async fn abort(
        &self,
        status: &PlanStatus,
        step: usize,
        gray: u64,
        reason: String,
        leadership: &Leadership,
    ) -> Result<()> {
        let why = format!("{} failed: {reason}", status.describe_step(step));
        tracing::warn!(plan = %status.id, %why, "aborting the plan");
        let note = why.clone();
        let (along, written) = moving(status, vec![leadership.fence()], move |seq, next| {
            next.state = PlanState::Aborted {
                reason: note.clone(),
                seq: Some(seq),
            };
            next.note(format!("aborted as release {seq}: {note}"));
        });
        let release = self
            .center
            .abort(&status.plan.prefix, gray)
            .message(self.message(status, "aborted", Some(&why)))
            .author(self.author(status))
            .along(along);
        self.commit(release.commit().await, &written).await
    }

    /// Ends the plan whose gray release `gray` something outside it ended (a rollback, a
    /// promote or abort by hand): no release to make, the plan is marked aborted with what
    /// ended it, under the driver's fence. A plan that moved meanwhile is read again.
    async fn ended_outside(
        &self,
        status: &PlanStatus,
        step: usize,
        gray: u64,
        leadership: &Leadership,
    ) -> Result<()> {
        let how = how_ended(&self.center, &self.prefix, gray).await?;
        let reason = format!("gray release {gray} ended outside the plan ({how})");
        tracing::warn!(plan = %status.id, %reason, "the plan ends with its gray release");
        let mut next = status.clone();
        next.state = PlanState::Aborted {
            reason: reason.clone(),
            seq: None,
        };
        next.note(format!(
            "aborted at {}: {reason}",
            status.describe_step(step)
        ));
        let key = plan_key(&self.prefix);
        let txn = Txn::new()
            .when([
                Compare::mod_revision(&key, status.revision),
                leadership.fence(),
            ])
            .and_then([TxnOp::put(&key, next.encode()?)]);
        self.center.store.txn(txn).await?;
        Ok(())
    }

    /// A committed move; a conflict on the plan (another driver or a person moved it) is
    /// read again by the loop, and so is any other error, after a pause.
    async fn commit(&self, result: Result<Release>, written: &Written) -> Result<()> {
        match result {
            Ok(_) => written.take().map(|_| ()),
            Err(Error::Conflict { key, .. }) if key == plan_key(&self.prefix) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Who a plan's releases are by: whoever started it, through the plan.
    fn author(&self, status: &PlanStatus) -> String {
        format!("{} (plan {})", status.started_by, status.id)
    }

    /// "plan 3fa9c2d1 (raise the limit): step 2/3 (50%); step 1/3 (10%) passed: …".
    fn message(&self, status: &PlanStatus, what: &str, passed: Option<&str>) -> String {
        let why = status
            .plan
            .message
            .as_deref()
            .map(|m| format!(" ({m})"))
            .unwrap_or_default();
        match passed {
            Some(passed) => format!("plan {}{why}: {what}; {passed}", status.id),
            None => format!("plan {}{why}: {what}", status.id),
        }
    }

    /// Judges step `step` (see [`gates`](Self::gates)) while watching the plan and its gray
    /// release: a change of the plan (a pause, a cancel, another driver's move) or the end of
    /// the gray release ends the judgement.
    async fn judge(
        &self,
        status: &PlanStatus,
        step: usize,
        gray: u64,
        since_ms: u64,
    ) -> Result<Verdict> {
        let (kv, at) = self.center.store.get(&gray_key(&self.prefix)).await?;
        if !gray_in_progress(kv.as_ref(), gray) {
            return Ok(Verdict::GrayEnded);
        }
        tokio::select! {
            verdict = self.gates(status, step, gray, since_ms) => verdict,
            changed = self.wait_for_change(status) => changed.map(|()| Verdict::Changed),
            ended = self.wait_for_gray_end(gray, at) => ended.map(|()| Verdict::GrayEnded),
        }
    }

    /// The gates of step `step`: every selected instance runs it (within the rollout timeout,
    /// and at least a few seconds from now), then the bake runs out with no rejection and no
    /// degraded instance, then the user gates say yes.
    async fn gates(
        &self,
        status: &PlanStatus,
        step: usize,
        gray: u64,
        since_ms: u64,
    ) -> Result<Verdict> {
        let plan = &status.plan;
        let gates = &plan.gates;
        let selector = &status.step(step)?.selector;
        let reached_by = since_ms.saturating_add(millis(gates.rollout_timeout));
        // A judgement that starts late (after a failover, a restart) still gives the instances
        // time to show they run the step: a step they loaded long ago passes.
        let wait = Duration::from_millis(reached_by.saturating_sub(now_ms())).max(RECHECK_AT_LEAST);
        // The wait is timed here: a `Timeout` from inside is a store request's, not the gate's.
        let rollout = self
            .center
            .wait_rollout(&plan.prefix, gray, wait.saturating_mul(2));
        let reached = match tokio::time::timeout(wait, rollout).await {
            Ok(reached) => reached,
            Err(_) => {
                let statuses = self.center.rollout(&plan.prefix).await?;
                let behind: Vec<String> = statuses
                    .iter()
                    .filter(|s| {
                        selector.matches(&s.instance, &s.labels, gray) && s.gray != Some(gray)
                    })
                    .map(|s| s.instance.clone())
                    .collect();
                return Ok(Verdict::Fail(format!(
                    "not every selected instance loaded it within {:?} (behind: {})",
                    gates.rollout_timeout,
                    if behind.is_empty() {
                        "none listed".into()
                    } else {
                        behind.join(", ")
                    }
                )));
            }
        };
        let statuses = match reached {
            Ok(statuses) => statuses,
            Err(Error::Rejected {
                instance,
                key,
                reason,
            }) => {
                let at = key.map(|k| format!(" at {k}")).unwrap_or_default();
                return Ok(Verdict::Fail(format!(
                    "instance {instance} rejected it{at}: {reason}"
                )));
            }
            Err(e) => return Err(e),
        };
        let selected = |s: &InstanceStatus| selector.matches(&s.instance, &s.labels, gray);
        let running = statuses.iter().filter(|s| selected(s)).count();
        // Bake: the step runs its time while nothing goes wrong.
        let bake_until = since_ms.saturating_add(millis(status.step(step)?.bake));
        let mut statuses = statuses;
        loop {
            if let Some(fail) = look(&statuses, gray, gates.healthy, &selected) {
                return Ok(Verdict::Fail(fail));
            }
            let now = now_ms();
            if now >= bake_until {
                break;
            }
            tokio::time::sleep(Duration::from_millis(bake_until - now).min(LOOK_EVERY)).await;
            statuses = self.center.rollout(&plan.prefix).await?;
        }
        let mut passed = vec![format!("{running} instance(s) on it, none rejected")];
        if gates.healthy {
            passed.push("none degraded".into());
        }
        for (name, gate) in &self.gates {
            let context = GateContext {
                plan: status.clone(),
                step,
                statuses: statuses.clone(),
            };
            match gate(context).await {
                Ok(()) => passed.push(format!("gate {name} ok")),
                Err(reason) => return Ok(Verdict::Fail(format!("gate {name}: {reason}"))),
            }
        }
        Ok(Verdict::Pass(passed.join(", ")))
    }
}

/// A duration in whole milliseconds, saturating.
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// What is wrong among `statuses` while a step bakes: a rejection of the gray release, or a
/// selected instance that reports itself degraded.
fn look(
    statuses: &[InstanceStatus],
    gray: u64,
    healthy: bool,
    selected: &impl Fn(&InstanceStatus) -> bool,
) -> Option<String> {
    for status in statuses {
        if let Some(error) = &status.error
            && selected(status)
        {
            let at = error
                .key
                .as_ref()
                .map(|k| format!(" at {k}"))
                .unwrap_or_default();
            return Some(format!(
                "instance {} rejected it{at}: {}",
                status.instance, error.message
            ));
        }
        if healthy
            && selected(status)
            && status.gray == Some(gray)
            && let Some(InstanceHealth::Degraded { reason }) = &status.health
        {
            return Some(format!(
                "instance {} is degraded: {reason}",
                status.instance
            ));
        }
    }
    None
}
