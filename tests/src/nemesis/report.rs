//! What a run did and found, and whether it passed.
//!
//! A run passes only if it proves something: no invariant is violated, every fault was
//! injected and healed as scheduled (a fault that failed to inject tested nothing), and the
//! fences were seen to work: at least one fenced increment and one fenced ID write were
//! refused, and `lost()` reported the loss each time (the strike, see
//! [`strike`](super::strike), makes sure there is something to refuse).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use coord::testing::HarnessError;

use super::check::Check;
use super::converge::CONVERGE_LIMIT;
use super::history::{History, OpKind, Outcome};
use super::runner::{Options, MEMBERS};
use super::{election, ids, locks};

/// What a run did and found.
#[derive(Clone, Debug)]
pub struct Report {
    /// What was run.
    pub options: Options,
    /// Operations per kind: (ok, failed, unknown).
    pub operations: BTreeMap<OpKind, [usize; 3]>,
    /// Faults per kind: (injected, of which failed to inject or heal).
    pub faults: BTreeMap<&'static str, (usize, usize)>,
    /// The first errors of faults that failed to inject or heal (not violations: a member
    /// that would not restart is the harness's trouble, and shows here).
    pub fault_errors: Vec<String>,
    /// Every invariant checked, with its violations.
    pub checks: Vec<Check>,
    /// Per workload, the time from the end of the final heal until it converged (see the
    /// [module docs](self)); `None` if it did not within [`CONVERGE_LIMIT`].
    pub converged_after: BTreeMap<&'static str, Option<Duration>>,
    /// The counters' final values.
    pub counters: Vec<u64>,
    /// Everything recorded, for a closer look at a violation.
    pub history: History,
}

impl Report {
    /// The number of violations over every invariant; 0 for a good run.
    pub fn violations(&self) -> usize {
        self.checks.iter().map(|c| c.violations.len()).sum()
    }

    /// Whether the run passed: no violation and nothing missing (see [`Self::shortfalls`]).
    pub fn passed(&self) -> bool {
        self.violations() == 0 && self.shortfalls().is_empty()
    }

    /// What the run did not show although it must have: faults that failed to inject or
    /// heal, and refusals or loss reports that never happened. Empty for a run that proves
    /// what it claims.
    pub fn shortfalls(&self) -> Vec<String> {
        let mut missing = Vec::new();
        let failed: usize = self.faults.values().map(|&(_, failed)| failed).sum();
        if failed > 0 {
            missing.push(format!("{failed} faults failed to inject or heal"));
        }
        let evidence = self.evidence();
        for (count, what) in [
            (
                evidence.refused_increments,
                "no fenced increment was refused",
            ),
            (evidence.refused_id_writes, "no fenced ID write was refused"),
            (evidence.losses_reported, "no lost() reported a loss"),
        ] {
            if count == 0 {
                missing.push(what.to_owned());
            }
        }
        missing
    }

    /// What the history shows the fences did.
    pub fn evidence(&self) -> Evidence {
        let ops = self.history.ops();
        let refused = |kind: OpKind, why: &str| {
            ops.iter()
                .filter(|op| op.kind == kind && op.payload.error.as_deref() == Some(why))
                .count()
        };
        Evidence {
            refused_increments: refused(OpKind::Increment, locks::REFUSED),
            refused_id_writes: refused(OpKind::IdWrite, ids::REFUSED),
            refused_leader_writes: refused(OpKind::LeaderWrite, election::REFUSED),
            losses_reported: ops
                .iter()
                .filter(|op| {
                    matches!(
                        op.kind,
                        OpKind::LostReported | OpKind::IdLostReported | OpKind::LeaderLostReported
                    ) && op.outcome == Outcome::Ok
                })
                .count(),
        }
    }

    /// How many faults were injected.
    pub fn faults_injected(&self) -> usize {
        self.faults.values().map(|&(injected, _)| injected).sum()
    }

    /// How many operations of `kind` succeeded.
    pub fn ok(&self, kind: OpKind) -> usize {
        self.operations.get(&kind).map_or(0, |counts| counts[0])
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &self.options;
        writeln!(
            f,
            "nemesis: seed {}, {:?} of faults on a {MEMBERS}-member etcd; {} clients, each with \
             {} lock holders, {} ID holders ({} IDs), a candidate, a releaser, a release reader, a \
             config reader, a registrar and a discoverer; one config writer; a probe client \
             struck every {:?}",
            o.seed,
            o.duration,
            o.clients,
            o.workload.locks,
            o.ids.holders_per_client,
            o.ids.max_id,
            o.strike.every
        )?;
        writeln!(f)?;
        writeln!(
            f,
            "{:<22} {:>8} {:>8} {:>8}",
            "operation", "ok", "failed", "unknown"
        )?;
        for (kind, [ok, failed, unknown]) in &self.operations {
            writeln!(f, "{:<22} {ok:>8} {failed:>8} {unknown:>8}", kind.name())?;
        }
        writeln!(f)?;
        writeln!(f, "{:<22} {:>8} {:>8}", "fault", "injected", "failed")?;
        for (kind, (injected, failed)) in &self.faults {
            writeln!(f, "{kind:<22} {injected:>8} {failed:>8}")?;
        }
        for error in &self.fault_errors {
            writeln!(f, "  {error}")?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "{:<58} {:>8} {:>10}",
            "invariant", "checked", "violations"
        )?;
        for check in &self.checks {
            writeln!(
                f,
                "{:<58} {:>8} {:>10}",
                check.name,
                check.checked,
                check.violations.len()
            )?;
        }
        writeln!(f)?;
        writeln!(f, "counters at the end: {:?}", self.counters)?;
        writeln!(f, "time to converge after the final heal:")?;
        for (workload, after) in &self.converged_after {
            match after {
                Some(after) => writeln!(f, "  {workload:<14} {:>6.2} s", after.as_secs_f64())?,
                None => writeln!(f, "  {workload:<14} not within {CONVERGE_LIMIT:?}")?,
            }
        }
        let evidence = self.evidence();
        writeln!(
            f,
            "fences: {} increments, {} ID writes and {} leader writes refused, {} losses \
             reported by lost()",
            evidence.refused_increments,
            evidence.refused_id_writes,
            evidence.refused_leader_writes,
            evidence.losses_reported
        )?;
        writeln!(f, "violations: {}", self.violations())?;
        for shortfall in self.shortfalls() {
            writeln!(f, "not shown: {shortfall}")?;
        }
        for check in self.checks.iter().filter(|c| !c.violations.is_empty()) {
            writeln!(f)?;
            writeln!(f, "violated: {}", check.name)?;
            for violation in check.violations.iter().take(5) {
                writeln!(f, "  {violation}")?;
            }
        }
        Ok(())
    }
}

/// What a run's fences were seen to do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Evidence {
    /// Fenced increments their fence refused.
    pub refused_increments: usize,
    /// Fenced ID marker writes their fence refused.
    pub refused_id_writes: usize,
    /// Fenced leader log writes their fence refused (shown, not required: the strike aims at
    /// the candidate too, but the run passes on the locks' and IDs' evidence).
    pub refused_leader_writes: usize,
    /// Losses that a refused write proved and `lost()` then reported.
    pub losses_reported: usize,
}

/// Why a run could not be carried out (not a violation: the run did not get that far).
#[derive(Debug)]
pub enum RunError {
    /// The harness could not start the cluster or a proxy.
    Harness(HarnessError),
    /// A client could not connect, or the final counters could not be read.
    Coord(coord::Error),
    /// A workload task panicked.
    Worker(String),
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::Harness(e) => write!(f, "harness: {e}"),
            RunError::Coord(e) => write!(f, "client: {e}"),
            RunError::Worker(e) => write!(f, "workload task: {e}"),
        }
    }
}

impl std::error::Error for RunError {}

impl From<HarnessError> for RunError {
    fn from(e: HarnessError) -> Self {
        RunError::Harness(e)
    }
}

impl From<coord::Error> for RunError {
    fn from(e: coord::Error) -> Self {
        RunError::Coord(e)
    }
}
