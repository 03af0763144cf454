//! The driver: one process at a time moves a plan from step to step.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tracing::Instrument;

use super::plan::{PlanState, PlanStatus, driver_election, now_ms, plan_key};
use super::{Written, moving};
use crate::config::{ConfigCenter, InstanceHealth, InstanceStatus, Release};
use crate::context::Context;
use crate::election::{Election, Leadership};
use crate::error::{Error, Result};
use crate::store::KeyRange;
use crate::watch::{ResilientWatch, WatchConfig, WatchEvent};

/// How often the driver looks at the instances while a step bakes.
const LOOK_EVERY: Duration = Duration::from_millis(100);

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
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let gates: Vec<&str> = self.gates.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("Driver")
            .field("prefix", &self.prefix)
            .field("gates", &gates)
            .finish_non_exhaustive()
    }
}

/// What judging a step found.
enum Verdict {
    Pass(String),
    Fail(String),
    /// The plan changed (paused, cancelled, moved by another driver): read it again.
    Changed,
}

impl Driver {
    pub(crate) fn new(ctx: Arc<Context>, center: ConfigCenter, prefix: &str) -> Self {
        Driver {
            ctx,
            center,
            prefix: prefix.to_owned(),
            gates: Vec::new(),
        }
    }

    /// Adds a user gate, judged at the end of each step's bake: `Err(reason)` aborts the plan
    /// with the reason. Every driver of the plan should be given the same gates.
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
    /// lost (another driver takes over from the recorded step); store errors.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe in the sense that matters: dropped at any point, the plan is at a recorded
    /// step and the next driver resumes it; its leadership is resigned in the background.
    pub async fn run(self) -> Result<PlanStatus> {
        let span = tracing::info_span!("rollout.drive", prefix = %self.prefix);
        async {
            let election = Election::new(Arc::clone(&self.ctx), &driver_election(&self.prefix));
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

    async fn drive(&self, leadership: &Leadership) -> Result<PlanStatus> {
        loop {
            let status = self.read().await?;
            if status.state.is_finished() {
                return Ok(status);
            }
            if status.paused {
                self.wait_for_change(&status).await?;
                continue;
            }
            match status.state.clone() {
                PlanState::Pending => {
                    self.first_step(&status, leadership).await?;
                }
                PlanState::Running {
                    step,
                    gray,
                    since_ms,
                } => match self.judge(&status, step, gray, since_ms).await? {
                    Verdict::Changed => {}
                    Verdict::Fail(reason) => {
                        self.abort(&status, step, gray, reason, leadership).await?;
                    }
                    Verdict::Pass(gates) => {
                        self.next_step(&status, step, gray, gates, leadership)
                            .await?;
                    }
                },
                _ => return Ok(status),
            }
        }
    }

    async fn read(&self) -> Result<PlanStatus> {
        let key = plan_key(&self.prefix);
        let (kv, _) = self.center.store.get(&key).await?;
        let kv = kv.ok_or(Error::NotFound { key })?;
        PlanStatus::decode(&kv)
    }

    /// Waits until the plan's key changes from `status`.
    async fn wait_for_change(&self, status: &PlanStatus) -> Result<()> {
        let mut watch = ResilientWatch::with_config(
            self.center.store.clone(),
            KeyRange::key(plan_key(&self.prefix)),
            WatchConfig::default(),
        )
        .starting_after(status.revision);
        loop {
            if !matches!(watch.next().await?, WatchEvent::Progress { .. }) {
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
        let release = self
            .center
            .release_raw_with(&plan.prefix, plan.values.clone(), plan.removes.clone())
            .to(plan.steps[0].selector.clone())
            .message(self.message(status, &status.describe_step(0), None))
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
            .along(along);
        self.commit(release.commit().await, &written).await
    }

    /// A committed move; a conflict (another driver or a person moved the plan) is read
    /// again by the loop.
    async fn commit(&self, result: Result<Release>, written: &Written) -> Result<()> {
        match result {
            Ok(_) => written.take().map(|_| ()),
            Err(Error::Conflict { key, .. }) if key == plan_key(&self.prefix) => Ok(()),
            Err(e) => Err(e),
        }
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

    /// Judges step `step`: every selected instance runs it (within the rollout timeout),
    /// then the bake runs out with no rejection and no degraded instance, then the user
    /// gates say yes.
    async fn judge(
        &self,
        status: &PlanStatus,
        step: usize,
        gray: u64,
        since_ms: u64,
    ) -> Result<Verdict> {
        let plan = &status.plan;
        let gates = &plan.gates;
        let reached_by = since_ms.saturating_add(gates.rollout_timeout.as_millis() as u64);
        let wait = Duration::from_millis(reached_by.saturating_sub(now_ms()));
        // One watch of the plan for the whole judgement: a pause, a cancel or another
        // driver's move ends it.
        let changed = self.wait_for_change(status);
        tokio::pin!(changed);
        let reached = tokio::select! {
            reached = self.center.wait_rollout(&plan.prefix, gray, wait.max(Duration::from_millis(1))) => reached,
            changed = &mut changed => { changed?; return Ok(Verdict::Changed) }
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
            Err(Error::Timeout { .. }) => {
                let statuses = self.center.rollout(&plan.prefix).await?;
                let selector = &plan.steps[step].selector;
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
            Err(e) => return Err(e),
        };
        let selected = |s: &InstanceStatus| {
            plan.steps[step]
                .selector
                .matches(&s.instance, &s.labels, gray)
        };
        let running = statuses.iter().filter(|s| selected(s)).count();
        // Bake: the step runs its time while nothing goes wrong.
        let bake_until = since_ms.saturating_add(plan.steps[step].bake.as_millis() as u64);
        let mut statuses = statuses;
        loop {
            if let Some(fail) = look(&statuses, gray, gates.healthy, &selected) {
                return Ok(Verdict::Fail(fail));
            }
            let now = now_ms();
            if now >= bake_until {
                break;
            }
            let pause = Duration::from_millis(bake_until - now).min(LOOK_EVERY);
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                changed = &mut changed => { changed?; return Ok(Verdict::Changed) }
            }
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
