//! What a checker reports: one [`Check`] per invariant, with how many cases it looked at and
//! the history excerpt of each violation.

use super::history::{Op, OpKind, Outcome};

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

/// Checks that the acknowledged fenced writes of one subject (an ID's marker, an election's
/// log), each carrying its holder's fencing token (the create revision of the holder's key),
/// come in the order etcd applied them in runs of one holder at a time with tokens that only
/// go up, each after its holder's claim. A fenced write applies only inside its holder's
/// tenure, and tenures follow each other without overlap, so a write of holder B between two
/// of holder A means a fence let a write through outside its tenure. `writes` is sorted by
/// revision here.
pub fn tenures(check: &mut Check, subject: &str, writes: &mut [&Op]) {
    writes.sort_by_key(|op| op.payload.revision);
    for write in writes.iter() {
        check.case(write.payload.revision > write.payload.token, || {
            format!(
                "{subject}: a fenced write applied before its holder's claim:\n{}",
                excerpt([*write])
            )
        });
    }
    for pair in writes.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        check.case(b.payload.token >= a.payload.token, || {
            format!(
                "{subject}: an earlier holder's write applied after a later holder's:\n{}",
                excerpt([a, b])
            )
        });
    }
}

/// Checks that `stored`, the text a subject holds at the end, is its newest acknowledged
/// write (`newest`, by revision) or a write among `attempted` whose outcome is unknown and
/// whose holder is at least as new as the newest acknowledged one's: a fenced write applies
/// inside its holder's tenure, so an older holder's late write would have been overwritten.
/// `written` tells whether an operation wrote `stored`.
pub fn last_write_stored<'a>(
    check: &mut Check,
    subject: &str,
    stored: Option<&str>,
    newest: Option<&'a Op>,
    attempted: impl IntoIterator<Item = &'a Op>,
    written: impl Fn(&Op, &str) -> bool,
) {
    let Some(stored) = stored else {
        check.case(newest.is_none(), || {
            format!(
                "{subject}: missing after an acknowledged write:\n{}",
                excerpt(newest)
            )
        });
        return;
    };
    let by_newest = newest.is_some_and(|op| written(op, stored));
    let newest_token = newest.and_then(|op| op.payload.token);
    let by_unknown = attempted.into_iter().any(|op| {
        op.outcome == Outcome::Unknown && written(op, stored) && op.payload.token >= newest_token
    });
    check.case(by_newest || by_unknown, || {
        format!(
            "{subject}: holds {stored:?}, neither the last applied write nor an unknown one of a \
             holder at least as new; last applied:\n{}",
            excerpt(newest)
        )
    });
}

/// Checks that every loss a refused fenced write proved was reported by `lost()` in time:
/// each operation of `kind` (which a workload records after a refusal, ended ok once `lost()`
/// resolved) must be ok. `what` names what was lost, for the message.
pub fn losses_reported(ops: &[Op], kind: OpKind, name: &'static str, what: &str) -> Check {
    let mut check = Check::new(name);
    for op in ops.iter().filter(|op| op.kind == kind) {
        check.case(op.outcome == Outcome::Ok, || {
            format!(
                "a lost {what} was not reported:\n{}",
                excerpt(
                    ops.iter()
                        .filter(|o| o.process == op.process && o.payload.token == op.payload.token)
                )
            )
        });
    }
    check
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
