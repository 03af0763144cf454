//! `coordctl config plan start|drive|status|pause|resume|cancel`: rollout plans (see
//! `coord::rollout`), and how a plan is shown, here and on the console's plan view.
//!
//! A plan's values are shown as its prefix's published schema allows (secrets as
//! `<redacted>`), like a release's. Plans are started, driven and steered as the
//! connection's principal or the one `--as` claims; the library checks that principal may
//! `release` on the prefix (a plan's steps are releases; exit 6 otherwise) and records each
//! step, and each refusal, in the audit log.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use coord::config::{ConfigCenter, Selector};
use coord::rollout::{describe, LogLine, PlanState, PlanStatus, RolloutPlan, Rollouts};
use coord::{Coord, InstanceHealth, InstanceStatus};
use serde_json::{json, Value};

use crate::coordination::confirm;
use crate::error::{CliError, CliResult};
use crate::output::{cell, escape_controls, time, Output};
use crate::progress::Follow;
use crate::schemas::{self, Under};

/// How often a followed plan and its instances are read again.
const LOOK_EVERY: Duration = Duration::from_millis(300);
/// How many instance names one line names at most.
const NAMES: usize = 8;

/// The instances one step of a running plan selects (for the plan's gray release: a
/// percentage picks by a bucket that stays put as the plan widens), and how each stands.
pub(crate) struct StepInstances<'a> {
    /// Every live instance the step's selector picks.
    pub selected: Vec<&'a InstanceStatus>,
    gray: u64,
}

impl<'a> StepInstances<'a> {
    /// The instances among `statuses` that `selector` picks for gray release `gray`.
    pub fn of(selector: &Selector, gray: u64, statuses: &'a [InstanceStatus]) -> Self {
        let selected = statuses
            .iter()
            .filter(|s| selector.matches(&s.instance, &s.labels, gray))
            .collect();
        StepInstances { selected, gray }
    }

    /// True if `status`'s instance runs the plan's gray release.
    pub fn runs_it(&self, status: &InstanceStatus) -> bool {
        status.gray == Some(self.gray)
    }

    /// The selected instances that run it.
    pub fn on_it(&self) -> usize {
        self.selected.iter().filter(|s| self.runs_it(s)).count()
    }

    /// The selected instances that do not run it yet.
    fn behind(&self) -> Vec<&'a str> {
        self.selected
            .iter()
            .filter(|s| !self.runs_it(s))
            .map(|s| s.instance.as_str())
            .collect()
    }

    /// The selected instances that report themselves degraded, with why.
    pub fn degraded(&self) -> Vec<(&'a str, &'a str)> {
        self.selected
            .iter()
            .filter_map(|s| degraded_reason(s).map(|reason| (s.instance.as_str(), reason)))
            .collect()
    }

    /// The selected instances that rejected their latest change, with the error.
    pub fn rejected(&self) -> Vec<(&'a str, &'a str)> {
        self.selected
            .iter()
            .filter_map(|s| {
                let error = s.error.as_ref()?;
                Some((s.instance.as_str(), error.message.as_str()))
            })
            .collect()
    }
}

/// Why the instance of `status` says it is degraded, if it does.
fn degraded_reason(status: &InstanceStatus) -> Option<&str> {
    match &status.health {
        Some(InstanceHealth::Degraded { reason }) => Some(reason),
        _ => None,
    }
}

/// Up to [`NAMES`] names, then how many more.
fn names(all: &[&str]) -> String {
    let mut text = all
        .iter()
        .take(NAMES)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    if all.len() > NAMES {
        text.push_str(&format!(" and {} more", all.len() - NAMES));
    }
    text
}

/// `name: why` pairs, as [`names`] lists names.
fn named_reasons(all: &[(&str, &str)]) -> String {
    let shown: Vec<String> = all
        .iter()
        .map(|(name, why)| format!("{name}: {why}"))
        .collect();
    let refs: Vec<&str> = shown.iter().map(String::as_str).collect();
    names(&refs)
}

/// The gray release of a running plan.
fn running_gray(status: &PlanStatus) -> Option<u64> {
    match status.state {
        PlanState::Running { gray, .. } => Some(gray),
        _ => None,
    }
}

fn at(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// ` as release 7`, or nothing.
fn as_release(seq: Option<u64>) -> String {
    seq.map(|seq| format!(" as release {seq}"))
        .unwrap_or_default()
}

/// Where step `i` stands: `done`, `current` (`paused`), `pending`; `-` once a plan ended
/// without being promoted.
pub(crate) fn step_state(status: &PlanStatus, i: usize) -> &'static str {
    match &status.state {
        PlanState::Pending => "pending",
        PlanState::Running { step, .. } if i < *step => "done",
        PlanState::Running { step, .. } if i == *step && status.paused => "paused",
        PlanState::Running { step, .. } if i == *step => "current",
        PlanState::Running { .. } => "pending",
        PlanState::Promoted { .. } => "done",
        _ => "-",
    }
}

/// Where the plan stands, in words: `running step 2/3 (50%) as gray release 4 since …`.
pub(crate) fn state_text(status: &PlanStatus) -> String {
    let text = match &status.state {
        PlanState::Pending => "pending (no driver has started it)".to_owned(),
        PlanState::Running {
            step,
            gray,
            since_ms,
        } => format!(
            "running {} as gray release {gray} since {}",
            status.describe_step(*step),
            time(at(*since_ms))
        ),
        PlanState::Promoted { seq } => format!("promoted as release {seq}"),
        PlanState::Aborted { reason, seq } => format!("aborted{}: {reason}", as_release(*seq)),
        PlanState::Cancelled { by, seq } => format!("cancelled by {by}{}", as_release(*seq)),
        _ => "in a state this coordctl does not know".to_owned(),
    };
    if status.paused && !status.state.is_finished() {
        format!("{text}, paused")
    } else {
        text
    }
}

/// Where a plan is, for a question or a note: `step 2/3 (50%)` or `before its first step`.
fn where_text(status: &PlanStatus) -> String {
    match status.state {
        PlanState::Running { step, .. } => status.describe_step(step),
        _ => "before its first step".to_owned(),
    }
}

/// What is going on now in one line (the same while nothing changes), and a detail that
/// changes by itself (the bake's time left).
pub(crate) fn now_text(status: &PlanStatus, statuses: &[InstanceStatus]) -> (String, String) {
    let PlanState::Running {
        step,
        gray,
        since_ms,
        ..
    } = status.state
    else {
        return (state_text(status), String::new());
    };
    let Some(current) = status.plan.steps.get(step) else {
        return (state_text(status), String::new());
    };
    let picked = StepInstances::of(&current.selector, gray, statuses);
    let on_it = picked.on_it();
    let mut text = format!(
        "{}: {on_it} of {} selected instance(s) run it",
        status.describe_step(step),
        picked.selected.len()
    );
    let behind = picked.behind();
    if !behind.is_empty() {
        text.push_str(&format!(" (waiting for {})", names(&behind)));
    }
    let degraded = picked.degraded();
    if degraded.is_empty() {
        text.push_str(", none degraded");
    } else {
        text.push_str(&format!(
            ", {} degraded ({})",
            degraded.len(),
            named_reasons(&degraded)
        ));
    }
    let rejected = picked.rejected();
    if !rejected.is_empty() {
        text.push_str(&format!(
            ", {} rejected it ({})",
            rejected.len(),
            named_reasons(&rejected)
        ));
    }
    if status.paused {
        text.push_str("; paused");
        return (text, String::new());
    }
    let bake_until =
        since_ms.saturating_add(u64::try_from(current.bake.as_millis()).unwrap_or(u64::MAX));
    let now = now_ms();
    let detail = if !behind.is_empty() {
        String::new()
    } else if bake_until > now {
        format!(
            "baking: {}s left",
            Duration::from_millis(bake_until - now).as_secs_f64().ceil()
        )
    } else {
        "judging the gates".to_owned()
    };
    (text, detail)
}

/// The plan as JSON: the stored plan (`PlanStatus`, its values shown as `under` allows) and,
/// for each step, its state and, while the plan runs, the instances it selects (each with
/// whether it runs it, its health and its error); `state_text` and `now` in words.
pub(crate) fn plan_json(
    status: &PlanStatus,
    statuses: &[InstanceStatus],
    under: Under<'_>,
) -> CliResult<Value> {
    let mut doc = serde_json::to_value(status)
        .map_err(|e| CliError::Refused(format!("cannot show plan {} as JSON: {e}", status.id)))?;
    doc["plan"]["values"] = json!(under.values(&status.plan.values));
    let gray = running_gray(status);
    let steps: Vec<Value> = status
        .plan
        .steps
        .iter()
        .enumerate()
        .map(|(i, step)| {
            let mut doc = json!({
                "step": i + 1,
                "selector": step.selector,
                "describe": describe(&step.selector),
                "bake": humantime::format_duration(step.bake).to_string(),
                "state": step_state(status, i),
            });
            if let Some(gray) = gray {
                let picked = StepInstances::of(&step.selector, gray, statuses);
                let instances: Vec<Value> = picked
                    .selected
                    .iter()
                    .map(|s| {
                        json!({
                            "instance": s.instance,
                            "runs_it": picked.runs_it(s),
                            "health": s.health,
                            "error": s.error.as_ref().map(|e| e.message.clone()),
                        })
                    })
                    .collect();
                doc["selected"] = json!(picked.selected.len());
                doc["on_it"] = json!(picked.on_it());
                doc["degraded"] = json!(picked.degraded().len());
                doc["instances"] = Value::Array(instances);
            }
            doc
        })
        .collect();
    doc["steps"] = Value::Array(steps);
    doc["state_text"] = json!(state_text(status));
    doc["now"] = json!(now_text(status, statuses).0);
    Ok(doc)
}

/// `rate=20, burst=5; removes old_key`, values shown as `under` allows.
fn values_text(plan: &RolloutPlan, under: Under<'_>) -> String {
    let mut text = under
        .values(&plan.values)
        .iter()
        .map(|(key, value)| format!("{key}={}", cell(value)))
        .collect::<Vec<_>>()
        .join(", ");
    if !plan.removes.is_empty() {
        let removes: Vec<&str> = plan.removes.iter().map(String::as_str).collect();
        text.push_str(&format!("; removes {}", removes.join(", ")));
    }
    text
}

fn gates_text(plan: &RolloutPlan) -> String {
    let mut gates = Vec::new();
    if plan.gates.healthy {
        gates.push("no selected instance degraded".to_owned());
    }
    gates.push(format!(
        "every selected instance on each step within {}",
        humantime::format_duration(plan.gates.rollout_timeout)
    ));
    gates.push("none rejects it".to_owned());
    gates.join(", ")
}

/// The plan for people: what, by whom, where it stands, its values, gates and steps (each
/// with the instances it selects while the plan runs). Not its log.
fn print_plan(out: Output, status: &PlanStatus, statuses: &[InstanceStatus], under: Under<'_>) {
    let plan = &status.plan;
    let why = plan
        .message
        .as_deref()
        .map(|m| format!(" ({m})"))
        .unwrap_or_default();
    out.line(&escape_controls(&format!(
        "plan {} on {}{why}: {}",
        status.id,
        plan.prefix,
        state_text(status)
    )));
    out.line(&escape_controls(&format!(
        "started by {}; values: {}",
        status.started_by,
        values_text(plan, under)
    )));
    out.line(&format!("gates: {}", gates_text(plan)));
    let gray = running_gray(status);
    let rows: Vec<Vec<String>> = plan
        .steps
        .iter()
        .enumerate()
        .map(|(i, step)| {
            let (on_it, instances) = match gray {
                Some(gray) => {
                    let picked = StepInstances::of(&step.selector, gray, statuses);
                    let marked: Vec<String> = picked
                        .selected
                        .iter()
                        .map(|s| {
                            if s.error.is_some() {
                                format!("{} (rejected)", s.instance)
                            } else if degraded_reason(s).is_some() {
                                format!("{} (degraded)", s.instance)
                            } else if !picked.runs_it(s) {
                                format!("{} (loading)", s.instance)
                            } else {
                                s.instance.clone()
                            }
                        })
                        .collect();
                    let refs: Vec<&str> = marked.iter().map(String::as_str).collect();
                    (
                        format!("{}/{}", picked.on_it(), picked.selected.len()),
                        if refs.is_empty() {
                            "-".to_owned()
                        } else {
                            names(&refs)
                        },
                    )
                }
                None => ("-".to_owned(), "-".to_owned()),
            };
            vec![
                (i + 1).to_string(),
                describe(&step.selector),
                humantime::format_duration(step.bake).to_string(),
                step_state(status, i).to_owned(),
                on_it,
                instances,
            ]
        })
        .collect();
    out.table(
        &["STEP", "SELECTOR", "BAKE", "STATE", "ON IT", "INSTANCES"],
        &rows,
    );
}

fn log_line(line: &LogLine) -> String {
    format!("{}  {}", time(at(line.at_ms)), escape_controls(&line.text))
}

/// The rollouts of the principal every write goes through (`config`'s: the connection's own,
/// or the one `--as` claims).
fn rollouts(coord: &Coord, config: &ConfigCenter) -> CliResult<Rollouts> {
    let rollouts = coord.rollouts();
    let principal = &config.identity().principal;
    if rollouts.identity().principal == *principal {
        Ok(rollouts)
    } else {
        Ok(rollouts.as_principal(principal)?)
    }
}

/// The prefix's plan, or exit 3 saying there is none.
async fn existing(rollouts: &Rollouts, prefix: &str) -> CliResult<PlanStatus> {
    rollouts.status(prefix).await?.ok_or_else(|| {
        CliError::NotFound(format!(
            "no rollout plan on {prefix} (coordctl config plan start FILE starts one)"
        ))
    })
}

/// Refuses (exit 4) to `verb` a plan that has ended.
fn unfinished(status: &PlanStatus, verb: &str) -> CliResult {
    if status.state.is_finished() {
        return Err(CliError::Conflict(format!(
            "plan {} on {} is {}: nothing to {verb}",
            status.id,
            status.plan.prefix,
            state_text(status)
        )));
    }
    Ok(())
}

/// A steering call's failure: the library refuses a plan that ended meanwhile as an invalid
/// argument; that is a conflict (exit 4), said with how it ended.
async fn steer_error(rollouts: &Rollouts, prefix: &str, e: coord::Error, verb: &str) -> CliError {
    if let coord::Error::InvalidArgument { .. } = e {
        if let Ok(Some(now)) = rollouts.status(prefix).await {
            if now.state.is_finished() {
                return CliError::Conflict(format!(
                    "plan {} on {} ended meanwhile ({}): nothing to {verb}",
                    now.id,
                    now.plan.prefix,
                    state_text(&now)
                ));
            }
        }
    }
    CliError::Coord(e)
}

/// The live instances of a running plan's prefix (none to read for a plan that does not run).
async fn instances(coord: &Coord, status: &PlanStatus) -> CliResult<Vec<InstanceStatus>> {
    if running_gray(status).is_none() {
        return Ok(Vec::new());
    }
    Ok(coord.config().rollout(&status.plan.prefix).await?)
}

/// Follows one plan: prints each new line of its log and what goes on now.
struct Follower<'a> {
    coord: &'a Coord,
    prefix: String,
    id: String,
    view: Follow,
    printed: usize,
}

impl<'a> Follower<'a> {
    fn new(coord: &'a Coord, out: Output, status: &PlanStatus) -> Self {
        Follower {
            coord,
            prefix: status.plan.prefix.clone(),
            id: status.id.clone(),
            view: Follow::start(out),
            printed: 0,
        }
    }

    /// Prints the log lines not printed yet, then what goes on now.
    fn show(&mut self, status: &PlanStatus, statuses: &[InstanceStatus]) {
        for line in status.log.iter().skip(self.printed) {
            self.view.line(&log_line(line));
        }
        self.printed = self.printed.max(status.log.len());
        // How it ended is said once, by the command's last line or error.
        if status.state.is_finished() {
            return;
        }
        let (now, detail) = now_text(status, statuses);
        self.view.now(&escape_controls(&now), &detail);
    }

    /// Reads the plan and its instances again, and shows them.
    async fn look(&mut self) -> CliResult<PlanStatus> {
        let status = self
            .coord
            .rollouts()
            .status(&self.prefix)
            .await?
            .ok_or_else(|| {
                CliError::NotFound(format!("the rollout plan on {} is gone", self.prefix))
            })?;
        if status.id != self.id {
            return Err(CliError::Conflict(format!(
                "plan {} on {} ended and plan {} started since; `coordctl config plan status {}` \
                 shows it",
                self.id, self.prefix, status.id, self.prefix
            )));
        }
        let statuses = instances(self.coord, &status).await?;
        self.show(&status, &statuses);
        Ok(status)
    }

    /// Looks every [`LOOK_EVERY`], for as long as it is polled; a failed read is a warning
    /// (the driver beside it goes on).
    async fn keep_looking(&mut self) {
        loop {
            tokio::time::sleep(LOOK_EVERY).await;
            if let Err(e) = self.look().await {
                self.view.warn(&e.to_string());
            }
        }
    }
}

/// The end of a followed plan: the final plan as JSON (for `-o json`), then exit 0 if it was
/// promoted, 1 with the reason if a gate aborted it, 4 if it was cancelled.
fn finish(out: Output, status: &PlanStatus, under: Under<'_>) -> CliResult {
    if out.is_json() {
        out.json(&plan_json(status, &[], under)?);
    }
    let what = format!("plan {} on {}", status.id, status.plan.prefix);
    match &status.state {
        PlanState::Promoted { seq } => {
            out.note(&format!(
                "{what} promoted as release {seq}: every instance runs the new values"
            ));
            Ok(())
        }
        PlanState::Aborted { .. } => Err(CliError::Aborted(format!(
            "{what} {}; every instance is back on the base values",
            state_text(status)
        ))),
        PlanState::Cancelled { .. } => Err(CliError::Cancelled(format!(
            "{what} {}; every instance is back on the base values",
            state_text(status)
        ))),
        _ => Ok(()),
    }
}

/// Runs a driver of the plan in this process and shows its progress until it ends (or
/// Ctrl-C: the plan stays at its step for the next driver).
async fn drive_following(
    coord: &Coord,
    rollouts: &Rollouts,
    out: Output,
    status: PlanStatus,
) -> CliResult {
    let prefix = status.plan.prefix.clone();
    let schemas = schemas::all(coord).await?;
    let under = schemas.under(&prefix);
    let statuses = instances(coord, &status).await?;
    if !out.is_json() {
        print_plan(out, &status, &statuses, under);
        out.line("");
    }
    if status.state.is_finished() {
        for line in &status.log {
            if !out.is_json() {
                out.line(&log_line(line));
            }
        }
        return finish(out, &status, under);
    }
    let mut follower = Follower::new(coord, out, &status);
    follower.show(&status, &statuses);
    let driver = rollouts.driver(&prefix).run();
    tokio::pin!(driver);
    let finished = loop {
        tokio::select! {
            done = &mut driver => break done?,
            () = follower.keep_looking() => {}
            _ = tokio::signal::ctrl_c() => {
                let now = coord.rollouts().status(&prefix).await.ok().flatten();
                let at = now.as_ref().map_or_else(|| where_text(&status), where_text);
                return Err(CliError::Interrupted(format!(
                    "stopped driving plan {} on {prefix} at {at}: it stays there until a \
                     driver resumes it (coordctl config plan drive {prefix})",
                    status.id
                )));
            }
        }
    };
    follower.show(&finished, &[]);
    drop(follower);
    finish(out, &finished, under)
}

fn read_plan(path: &Path) -> CliResult<RolloutPlan> {
    let text = std::fs::read_to_string(path).map_err(|source| CliError::Io {
        what: format!("reading {}", path.display()),
        source,
    })?;
    let mut plan = RolloutPlan::parse_toml(&text)
        .map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))?;
    // `/config/app/` and `/config/app` are one prefix, and one plan.
    plan.prefix = plan.prefix.trim_end_matches('/').to_owned();
    Ok(plan)
}

/// `config plan start FILE [--no-drive]`.
pub async fn start(
    coord: &Coord,
    config: &ConfigCenter,
    out: Output,
    file: &Path,
    no_drive: bool,
) -> CliResult {
    let rollouts = rollouts(coord, config)?;
    let plan = read_plan(file)?;
    let prefix = plan.prefix.clone();
    let status = match rollouts.start(plan).await {
        Ok(status) => status,
        Err(coord::Error::Conflict { .. }) => {
            let what = match rollouts.status(&prefix).await? {
                Some(running) => format!("plan {} is {}", running.id, state_text(&running)),
                None => "another plan started meanwhile".to_owned(),
            };
            return Err(CliError::Conflict(format!(
                "{prefix} has a plan that has not ended: {what}; cancel it (coordctl config \
                 plan cancel {prefix}) or wait for it to end"
            )));
        }
        Err(e) => return Err(e.into()),
    };
    if !no_drive {
        return drive_following(coord, &rollouts, out, status).await;
    }
    let schemas = schemas::all(coord).await?;
    let under = schemas.under(&prefix);
    if out.is_json() {
        out.json(&plan_json(&status, &[], under)?);
    } else {
        print_plan(out, &status, &[], under);
        out.note(&format!(
            "plan {} stored, pending: coordctl config plan drive {prefix} drives it",
            status.id
        ));
    }
    Ok(())
}

/// `config plan drive PREFIX`.
pub async fn drive(coord: &Coord, config: &ConfigCenter, out: Output, prefix: &str) -> CliResult {
    let rollouts = rollouts(coord, config)?;
    let status = existing(&rollouts, prefix).await?;
    drive_following(coord, &rollouts, out, status).await
}

/// `config plan status PREFIX [--watch]`.
pub async fn status(coord: &Coord, out: Output, prefix: &str, watch: bool) -> CliResult {
    let status = existing(&coord.rollouts(), prefix).await?;
    let statuses = instances(coord, &status).await?;
    let schemas = schemas::all(coord).await?;
    let prefix = status.plan.prefix.clone();
    let under = schemas.under(&prefix);
    if !watch {
        if out.is_json() {
            out.json(&plan_json(&status, &statuses, under)?);
        } else {
            print_plan(out, &status, &statuses, under);
            out.line("");
            for line in &status.log {
                out.line(&log_line(line));
            }
        }
        return Ok(());
    }
    if !out.is_json() {
        print_plan(out, &status, &statuses, under);
        out.line("");
    }
    let mut follower = Follower::new(coord, out, &status);
    follower.show(&status, &statuses);
    let mut current = status;
    while !current.state.is_finished() {
        tokio::select! {
            () = tokio::time::sleep(LOOK_EVERY) => {}
            // Watching ends when the watcher says so: that is no failure.
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
        match follower.look().await {
            Ok(now) => current = now,
            Err(CliError::Coord(e)) if e.is_transient() => {
                follower.view.warn(&e.to_string());
            }
            Err(e) => return Err(e),
        }
    }
    drop(follower);
    finish(out, &current, under)
}

/// How a steered plan is answered: the plan as JSON, or `note`.
async fn steered(coord: &Coord, out: Output, status: &PlanStatus, note: &str) -> CliResult {
    if out.is_json() {
        let schemas = schemas::all(coord).await?;
        let statuses = instances(coord, status).await?;
        out.json(&plan_json(
            status,
            &statuses,
            schemas.under(&status.plan.prefix),
        )?);
    } else {
        out.note(note);
    }
    Ok(())
}

/// `config plan pause PREFIX`: a plan already paused is left as it is.
pub async fn pause(coord: &Coord, config: &ConfigCenter, out: Output, prefix: &str) -> CliResult {
    let rollouts = rollouts(coord, config)?;
    let status = existing(&rollouts, prefix).await?;
    unfinished(&status, "pause")?;
    if status.paused {
        let note = format!(
            "plan {} on {} is already paused at {}",
            status.id,
            status.plan.prefix,
            where_text(&status)
        );
        return steered(coord, out, &status, &note).await;
    }
    let paused = match rollouts.pause(prefix).await {
        Ok(paused) => paused,
        Err(e) => return Err(steer_error(&rollouts, prefix, e, "pause").await),
    };
    let note = format!(
        "paused plan {} on {} at {}: its driver holds it there until coordctl config plan \
         resume {}",
        paused.id,
        paused.plan.prefix,
        where_text(&paused),
        paused.plan.prefix
    );
    steered(coord, out, &paused, &note).await
}

/// `config plan resume PREFIX`: a plan that is not paused is left as it is (resuming restarts
/// the step's bake).
pub async fn resume(coord: &Coord, config: &ConfigCenter, out: Output, prefix: &str) -> CliResult {
    let rollouts = rollouts(coord, config)?;
    let status = existing(&rollouts, prefix).await?;
    unfinished(&status, "resume")?;
    if !status.paused {
        let note = format!(
            "plan {} on {} is not paused ({}): nothing changed",
            status.id,
            status.plan.prefix,
            state_text(&status)
        );
        return steered(coord, out, &status, &note).await;
    }
    let resumed = match rollouts.resume(prefix).await {
        Ok(resumed) => resumed,
        Err(e) => return Err(steer_error(&rollouts, prefix, e, "resume").await),
    };
    let note = format!(
        "resumed plan {} on {} at {} (its bake starts again)",
        resumed.id,
        resumed.plan.prefix,
        where_text(&resumed)
    );
    steered(coord, out, &resumed, &note).await
}

/// `config plan cancel PREFIX [--yes]`: asks on stderr first unless `--yes`.
pub async fn cancel(
    coord: &Coord,
    config: &ConfigCenter,
    out: Output,
    prefix: &str,
    yes: bool,
) -> CliResult {
    let rollouts = rollouts(coord, config)?;
    let status = existing(&rollouts, prefix).await?;
    unfinished(&status, "cancel")?;
    if !yes {
        let question = match status.state {
            PlanState::Running { step, gray, .. } => format!(
                "cancel plan {} on {} at {}? Gray release {gray} is aborted: every instance goes \
                 back to the base values [y/N] ",
                status.id,
                status.plan.prefix,
                status.describe_step(step)
            ),
            _ => format!(
                "cancel plan {} on {} before its first step? [y/N] ",
                status.id, status.plan.prefix
            ),
        };
        if !confirm(question).await? {
            return Err(CliError::Refused("not confirmed; nothing changed".into()));
        }
        // The answer may come long after the question: cancel only the plan asked about.
        let now = existing(&rollouts, prefix).await?;
        if now.id != status.id {
            return Err(CliError::Conflict(format!(
                "plan {} on {} ended and plan {} started while waiting for the answer; nothing \
                 cancelled",
                status.id, status.plan.prefix, now.id
            )));
        }
        unfinished(&now, "cancel")?;
    }
    let cancelled = match rollouts.cancel(prefix).await {
        Ok(cancelled) => cancelled,
        Err(e) => return Err(steer_error(&rollouts, prefix, e, "cancel").await),
    };
    let note = format!(
        "cancelled plan {} on {}{}: every instance is back on the base values",
        cancelled.id,
        cancelled.plan.prefix,
        match cancelled.state {
            PlanState::Cancelled { seq: Some(seq), .. } => {
                format!(" (its gray release aborted as release {seq})")
            }
            _ => String::new(),
        }
    );
    steered(coord, out, &cancelled, &note).await
}
