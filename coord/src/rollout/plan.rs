//! A rollout plan as the user writes it, and as etcd keeps it with its progress.

use crate::clock::now_ms;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{PlannedTexts, Selector};
use crate::error::{Error, Result};
use crate::store::KeyValue;

/// Where a prefix's plan is kept: one at a time, the last one stays until the next starts.
pub(crate) fn plan_key(prefix: &str) -> String {
    format!("/coord/plans{prefix}")
}

/// The election of a prefix's plan drivers: one drives, the others wait.
pub(crate) fn driver_election(prefix: &str) -> String {
    format!("/coord/plan-drivers{prefix}")
}

/// One step: who sees the release, and how long it bakes there before the next step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// The instances of this step; each step's selector covers the previous one's.
    pub selector: Selector,
    /// How long the step runs, once every selected instance runs it, before the gates are
    /// judged and the plan moves on.
    #[serde(with = "humantime_serde")]
    pub bake: Duration,
}

/// What must hold before a plan moves on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gates {
    /// No selected instance may report itself degraded
    /// ([`Coord::report_health`](crate::Coord::report_health)); one that never reports
    /// passes.
    #[serde(default = "yes")]
    pub healthy: bool,
    /// How long every selected instance has to load a step before the plan aborts, counted
    /// from the step's start (or from its [`resume`](super::Rollouts::resume)). A driver
    /// that judges the step after this passed (it took over from another, or restarted)
    /// still gives the instances a few seconds to show they run it: only instances really
    /// behind abort the plan.
    #[serde(default = "default_rollout_timeout", with = "humantime_serde")]
    pub rollout_timeout: Duration,
}

fn yes() -> bool {
    true
}

fn default_rollout_timeout() -> Duration {
    Duration::from_secs(120)
}

impl Default for Gates {
    fn default() -> Self {
        Gates {
            healthy: true,
            rollout_timeout: default_rollout_timeout(),
        }
    }
}

/// A rollout plan: new values for a prefix, released in steps that only grow, each baked and
/// gated, promoted at the end or aborted on the first failed gate.
///
/// ```
/// use std::time::Duration;
/// use coord::config::Selector;
/// use coord::rollout::RolloutPlan;
///
/// let plan = RolloutPlan::parse_toml(r#"
///     prefix = "/config/checkout"
///     message = "raise the rate limit"
///     values = { "rate_limit/per_second" = 200 }
///
///     [[steps]]
///     selector = { percent = 10 }
///     bake = "5m"
///     [[steps]]
///     selector = { percent = 50 }
///     bake = "10m"
///     [[steps]]
///     selector = {}
///     bake = "0s"
///
///     [gates]
///     healthy = true
///     rollout_timeout = "2m"
/// "#)?;
/// assert_eq!(plan.steps.len(), 3);
/// assert_eq!(plan.steps[1].selector, Selector::default().percent(50));
/// assert_eq!(plan.steps[0].bake, Duration::from_secs(300));
/// # Ok::<(), coord::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutPlan {
    /// The config prefix.
    pub prefix: String,
    /// Why: recorded with every step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The new values: relative key → JSON.
    #[serde(default)]
    pub values: BTreeMap<String, serde_json::Value>,
    /// Relative keys the release removes.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub removes: BTreeSet<String>,
    /// The steps, in order.
    pub steps: Vec<Step>,
    /// The gates every step must pass.
    #[serde(default)]
    pub gates: Gates,
}

impl RolloutPlan {
    /// A plan for `prefix` setting `values`, with no steps yet.
    pub fn new(prefix: &str, values: BTreeMap<String, serde_json::Value>) -> Self {
        RolloutPlan {
            prefix: prefix.trim_end_matches('/').to_owned(),
            message: None,
            values,
            removes: BTreeSet::new(),
            steps: Vec::new(),
            gates: Gates::default(),
        }
    }

    /// Parses a plan file (TOML) and checks it.
    pub fn parse_toml(text: &str) -> Result<Self> {
        let mut plan: RolloutPlan =
            toml::from_str(text).map_err(|e| Error::invalid_argument("plan", e.to_string()))?;
        // One spelling of the prefix, as `new` and `status` have it.
        plan.prefix = plan.prefix.trim_end_matches('/').to_owned();
        plan.validate()?;
        Ok(plan)
    }

    /// Why, recorded with every step.
    #[must_use]
    pub fn message(mut self, message: impl Into<String>) -> Self {
        self.message = Some(message.into());
        self
    }

    /// Adds a step.
    #[must_use]
    pub fn step(mut self, selector: Selector, bake: Duration) -> Self {
        self.steps.push(Step { selector, bake });
        self
    }

    /// Sets the gates.
    #[must_use]
    pub fn gates(mut self, gates: Gates) -> Self {
        self.gates = gates;
        self
    }

    /// Refuses a plan that cannot run: no steps, no values, or a step that does not cover the
    /// one before it (percentages only grow).
    pub fn validate(&self) -> Result<()> {
        if self.steps.is_empty() {
            return Err(Error::invalid_argument(&self.prefix, "a plan needs steps"));
        }
        if self.values.is_empty() && self.removes.is_empty() {
            return Err(Error::invalid_argument(
                &self.prefix,
                "a plan needs values to release",
            ));
        }
        for (i, pair) in self.steps.windows(2).enumerate() {
            if !pair[1].selector.covers(&pair[0].selector) {
                return Err(Error::invalid_argument(
                    &self.prefix,
                    format!(
                        "step {} does not cover step {}: every step keeps the instances of the \
                         one before",
                        i + 2,
                        i + 1
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Where a plan stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
#[non_exhaustive]
pub enum PlanState {
    /// Stored; no driver has started it.
    Pending,
    /// Step `step` (from 0) runs as gray release `gray` since `since_ms`.
    Running {
        /// The step.
        step: usize,
        /// The gray release that carries the plan.
        gray: u64,
        /// When the step was applied (ms since the epoch).
        since_ms: u64,
    },
    /// Promoted as release `seq`: every instance runs the new values.
    Promoted {
        /// The promote release.
        seq: u64,
    },
    /// A gate failed: every instance is back on the base values.
    Aborted {
        /// Which gate, which instance, why.
        reason: String,
        /// The abort release, if a gray release had started.
        seq: Option<u64>,
    },
    /// Cancelled from outside.
    Cancelled {
        /// Who.
        by: String,
        /// The abort release, if a gray release had started.
        seq: Option<u64>,
    },
}

impl PlanState {
    /// True once the plan will do nothing more.
    pub fn is_finished(&self) -> bool {
        matches!(
            self,
            PlanState::Promoted { .. } | PlanState::Aborted { .. } | PlanState::Cancelled { .. }
        )
    }
}

/// One line of a plan's progress.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// When (ms since the epoch).
    pub at_ms: u64,
    /// What happened.
    pub text: String,
}

/// A plan with its progress, as etcd keeps it and [`status`](super::Rollouts::status)
/// returns it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PlanStatus {
    /// The plan's id.
    pub id: String,
    /// The plan.
    pub plan: RolloutPlan,
    /// Where it stands.
    #[serde(flatten)]
    pub state: PlanState,
    /// Paused from outside: the driver holds the step.
    #[serde(default)]
    pub paused: bool,
    /// Who started it.
    pub started_by: String,
    /// Progress, oldest first.
    #[serde(default)]
    pub log: Vec<LogLine>,
    /// The store revision the status was read at (its key's mod revision).
    #[serde(default, skip_serializing)]
    pub revision: i64,
    /// The exact texts the plan releases, planned when it started: secrets sealed with the
    /// key ring (its `values` show them as `"<redacted>"`). Kept in etcd with the plan, never
    /// in what the status serializes to: without a key ring a secret's text is plain.
    #[serde(skip)]
    pub(crate) texts: Option<PlannedTexts>,
}

/// The plan as etcd keeps it: the status and the texts its first step releases.
#[derive(Serialize, Deserialize)]
struct Stored {
    #[serde(flatten)]
    status: PlanStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    texts: Option<PlannedTexts>,
}

impl PlanStatus {
    /// The plan stored at `kv`, checked as [`Rollouts::start`](super::Rollouts::start)
    /// checks a plan: a plan edited by hand in etcd is refused here, not where the driver
    /// runs it.
    ///
    /// # Errors
    ///
    /// [`Error::Decode`] if it is no plan; [`Error::Invalid`] naming the key for a plan that
    /// cannot run or a step it does not have.
    pub(crate) fn decode(kv: &KeyValue) -> Result<PlanStatus> {
        let stored: Stored = serde_json::from_slice(&kv.value).map_err(|source| Error::Decode {
            key: kv.key.clone(),
            source,
        })?;
        let mut status = stored.status;
        status.texts = stored.texts;
        status.revision = kv.mod_revision;
        status.plan.validate().map_err(|e| Error::Invalid {
            key: kv.key.clone(),
            reason: match e {
                Error::InvalidArgument { reason, .. } => {
                    format!("the stored plan cannot run: {reason}")
                }
                other => other.to_string(),
            },
        })?;
        if let PlanState::Running { step, .. } = status.state {
            status.step(step)?;
        }
        Ok(status)
    }

    /// Step `step` of the plan.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] naming the plan key if the plan has no such step.
    pub(crate) fn step(&self, step: usize) -> Result<&Step> {
        self.plan.steps.get(step).ok_or_else(|| Error::Invalid {
            key: plan_key(&self.plan.prefix),
            reason: format!(
                "the plan is at step {} but has {} steps",
                step + 1,
                self.plan.steps.len()
            ),
        })
    }

    pub(crate) fn encode(&self) -> Result<Vec<u8>> {
        let stored = Stored {
            status: self.clone(),
            texts: self.texts.clone(),
        };
        serde_json::to_vec(&stored).map_err(|e| {
            Error::invalid_argument(plan_key(&self.plan.prefix), format!("cannot encode: {e}"))
        })
    }

    /// Appends a progress line.
    pub(crate) fn note(&mut self, text: impl Into<String>) {
        self.log.push(LogLine {
            at_ms: now_ms(),
            text: text.into(),
        });
    }

    /// "step 2/3 (50%)".
    pub fn describe_step(&self, step: usize) -> String {
        let n = self.plan.steps.len();
        match self.plan.steps.get(step) {
            Some(s) => format!("step {}/{n} ({})", step + 1, describe(&s.selector)),
            None => format!("step {}/{n}", step + 1),
        }
    }
}

/// A selector in a few words: "10% of zone=eu-1, and web-1".
pub fn describe(selector: &Selector) -> String {
    let mut parts = Vec::new();
    let labels: Vec<String> = selector
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    match (selector.percent, labels.is_empty()) {
        (Some(p), true) => parts.push(format!("{p}%")),
        (Some(p), false) => parts.push(format!("{p}% of {}", labels.join(","))),
        (None, false) => parts.push(labels.join(",")),
        (None, true) if selector.instances.is_empty() => parts.push("everyone".into()),
        (None, true) => {}
    }
    if !selector.instances.is_empty() {
        let names: Vec<&str> = selector.instances.iter().map(String::as_str).collect();
        parts.push(names.join(","));
    }
    parts.join(", and ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_that_shrink_are_refused() {
        let values = BTreeMap::from([("a".to_owned(), 1.into())]);
        let plan = RolloutPlan::new("/config/x", values.clone())
            .step(Selector::default().percent(50), Duration::ZERO)
            .step(Selector::default().percent(10), Duration::ZERO);
        assert!(plan.validate().unwrap_err().to_string().contains("step 2"));
        let empty = RolloutPlan::new("/config/x", BTreeMap::new())
            .step(Selector::default(), Duration::ZERO);
        assert!(empty.validate().is_err());
        assert!(RolloutPlan::new("/config/x", values).validate().is_err());
    }

    fn stored(status: &PlanStatus) -> KeyValue {
        KeyValue {
            key: plan_key(&status.plan.prefix),
            value: status.encode().unwrap(),
            mod_revision: 7,
            ..KeyValue::default()
        }
    }

    #[test]
    fn a_hand_edited_plan_that_cannot_run_is_refused_when_read() {
        let values = BTreeMap::from([("a".to_owned(), 1.into())]);
        let plan = RolloutPlan::new("/config/x", values)
            .step(Selector::default().percent(10), Duration::ZERO)
            .step(Selector::default(), Duration::ZERO);
        let mut status = PlanStatus {
            id: "1".into(),
            plan,
            state: PlanState::Running {
                step: 1,
                gray: 2,
                since_ms: 0,
            },
            paused: false,
            started_by: "ana".into(),
            log: Vec::new(),
            revision: 0,
            texts: None,
        };
        assert_eq!(PlanStatus::decode(&stored(&status)).unwrap().revision, 7);

        // A step past the end.
        status.state = PlanState::Running {
            step: 2,
            gray: 2,
            since_ms: 0,
        };
        let err = PlanStatus::decode(&stored(&status)).unwrap_err();
        assert!(
            matches!(&err, Error::Invalid { key, reason }
                if key == "/coord/plans/config/x" && reason.contains("step 3 but has 2")),
            "{err:?}"
        );

        // No steps at all: nothing may index them.
        status.plan.steps.clear();
        status.state = PlanState::Pending;
        let err = PlanStatus::decode(&stored(&status)).unwrap_err();
        assert!(
            matches!(&err, Error::Invalid { key, reason }
                if key == "/coord/plans/config/x" && reason.contains("needs steps")),
            "{err:?}"
        );
        assert!(status.step(0).is_err());
    }

    #[test]
    fn selectors_read_as_words() {
        assert_eq!(describe(&Selector::default()), "everyone");
        assert_eq!(describe(&Selector::default().percent(10)), "10%");
        assert_eq!(
            describe(
                &Selector::default()
                    .percent(10)
                    .label("zone", "eu")
                    .instance("w-1")
            ),
            "10% of zone=eu, and w-1"
        );
    }
}
