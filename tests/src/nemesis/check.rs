//! What a checker reports: one [`Check`] per invariant, with how many cases it looked at and
//! the history excerpt of each violation.

use super::history::Op;

/// One invariant over a history: how many cases it looked at and which broke it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    /// What it checks.
    pub name: &'static str,
    /// How many cases it checked (counters, pairs of writes, reads, losses).
    pub checked: usize,
    /// One entry per violation, with the history excerpt that shows it.
    pub violations: Vec<String>,
}

impl Check {
    /// An invariant not checked yet.
    pub fn new(name: &'static str) -> Self {
        Check {
            name,
            checked: 0,
            violations: Vec::new(),
        }
    }

    /// Counts one case, and a violation described by `violation` if `holds` is false.
    pub fn case(&mut self, holds: bool, violation: impl FnOnce() -> String) {
        self.checked += 1;
        if !holds {
            self.violations.push(violation());
        }
    }
}

/// `ops`, one indented line each, for a violation's message.
pub fn excerpt<'a>(ops: impl IntoIterator<Item = &'a Op>) -> String {
    ops.into_iter()
        .map(|op| format!("    {op}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The invariants `checks` found broken, with how many violations each: what a checker's unit
/// test compares.
#[cfg(test)]
pub fn broken(checks: Vec<Check>) -> Vec<(&'static str, usize)> {
    checks
        .into_iter()
        .filter(|c| !c.violations.is_empty())
        .map(|c| (c.name, c.violations.len()))
        .collect()
}
