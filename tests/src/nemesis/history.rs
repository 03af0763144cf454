//! The record of a run: every operation a workload process attempted, with when it started and
//! ended (from the start of the run), how it ended, and what it carried; and every fault the
//! nemesis injected. Checkers read only this, after the run.
//!
//! An outcome is one of three, as in Jepsen: `Ok` (it happened), `Failed` (it certainly did
//! not), `Unknown` (it may or may not have: a write whose answer was lost to a timeout or a
//! broken connection). A checker must accept either fate for an unknown write.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// What an operation was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OpKind {
    /// Acquire a lock.
    Acquire,
    /// Read a counter while holding its lock.
    Read,
    /// Write counter + 1, fenced by the lock.
    Increment,
    /// Release a lock.
    Unlock,
    /// After a fenced write was refused (so the lease was certainly lost): did the guard's
    /// `lost()` report it?
    LostReported,
    /// Acquire an instance ID.
    IdAcquire,
    /// Write the marker of an ID, fenced by the ID.
    IdWrite,
    /// Release an ID.
    IdRelease,
    /// After an ID's fenced write was refused: did the guard's `lost()` report it?
    IdLostReported,
    /// Publish a config value (every field in one transaction).
    Publish,
    /// `load()` a `Live` config value.
    Load,
    /// Register a service instance.
    Register,
    /// Deregister one.
    Deregister,
    /// `discover` the service's instances.
    Discover,
    /// A registration no other lease took over: has `lost()` stayed pending, as promised?
    RegistrationKept,
    /// Campaign in the election until elected.
    Campaign,
    /// Write the leader log, fenced by the leadership.
    LeaderWrite,
    /// Resign the leadership.
    Resign,
    /// After a leader's fenced write was refused: did the leadership's `lost()` report it?
    LeaderLostReported,
    /// A release of the releases workload's prefix.
    Release,
    /// A gray release to one instance.
    GrayStart,
    /// A promote of a gray release.
    Promote,
    /// An abort of a gray release.
    Abort,
    /// A rollback to an earlier release.
    Rollback,
    /// The prefix read at an acknowledged release's revision.
    ReleaseRead,
    /// `load()` a `Live` of the releases workload's prefix.
    ReleaseLoad,
}

impl OpKind {
    /// The name in the report.
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Acquire => "acquire",
            OpKind::Read => "read",
            OpKind::Increment => "increment",
            OpKind::Unlock => "unlock",
            OpKind::LostReported => "lost-reported",
            OpKind::IdAcquire => "id-acquire",
            OpKind::IdWrite => "id-write",
            OpKind::IdRelease => "id-release",
            OpKind::IdLostReported => "id-lost-reported",
            OpKind::Publish => "publish",
            OpKind::Load => "load",
            OpKind::Register => "register",
            OpKind::Deregister => "deregister",
            OpKind::Discover => "discover",
            OpKind::RegistrationKept => "registration-kept",
            OpKind::Campaign => "campaign",
            OpKind::LeaderWrite => "leader-write",
            OpKind::Resign => "resign",
            OpKind::LeaderLostReported => "leader-lost-reported",
            OpKind::Release => "release",
            OpKind::GrayStart => "gray-start",
            OpKind::Promote => "promote",
            OpKind::Abort => "abort",
            OpKind::Rollback => "rollback",
            OpKind::ReleaseRead => "release-read",
            OpKind::ReleaseLoad => "release-load",
        }
    }
}

/// How an operation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Outcome {
    /// It happened.
    Ok,
    /// It certainly did not happen.
    Failed,
    /// It may or may not have happened.
    Unknown,
}

impl Outcome {
    /// The outcome of a write that returned `error`: the errors that can come after the
    /// request left (a deadline, a broken connection, etcd failing mid-way) leave it unknown;
    /// the others (closed, refused before sending) mean it did not happen.
    pub fn of_write_error(error: &coord::Error) -> Outcome {
        match error {
            // Unavailable stays here, though coord now says a write it was sent is
            // OutcomeUnknown: the checker does not take coord's word for what it checks.
            coord::Error::Timeout { .. }
            | coord::Error::Unavailable { .. }
            | coord::Error::OutcomeUnknown { .. }
            | coord::Error::Backend { .. } => Outcome::Unknown,
            _ => Outcome::Failed,
        }
    }
}

/// What an operation carried. Fields an operation has no use for are `None`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Payload {
    /// Which lock (and counter) of the workload.
    pub lock: Option<usize>,
    /// The holder's fencing token.
    pub token: Option<i64>,
    /// The counter value read, or written.
    pub value: Option<u64>,
    /// The store revision of the answer (for a write: the revision it was applied at).
    pub revision: Option<i64>,
    /// The instance ID held (the IDs workload).
    pub id: Option<u32>,
    /// The marker text an ID's holder wrote, or a registered instance's id.
    pub text: Option<String>,
    /// The config fields `a`, `b`, `c` published or loaded (`value` is the sequence number).
    pub split: Option<[u64; 3]>,
    /// The instance ids a `discover` returned, sorted.
    pub found: Option<Vec<String>>,
    /// The client a `load()` was made on (the staleness check judges each client against
    /// the faults that stall it).
    pub client: Option<usize>,
    /// The release an operation made (its seq in the prefix's history).
    pub seq: Option<u64>,
    /// The release an operation acts on (a promote's or abort's gray release, a rollback's
    /// target).
    pub target: Option<u64>,
    /// The message a release was made with: unique, so the history names the operation.
    pub message: Option<String>,
    /// The error, for an operation that did not end `Ok`.
    pub error: Option<String>,
}

/// One recorded operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Op {
    /// The workload process that attempted it.
    pub process: usize,
    /// What it was.
    pub kind: OpKind,
    /// When it was invoked, from the start of the run.
    pub start: Duration,
    /// When its answer came, from the start of the run.
    pub end: Duration,
    /// How it ended.
    pub outcome: Outcome,
    /// What it carried.
    pub payload: Payload,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{:>8.3}s..{:>8.3}s] p{} {} {:?}",
            self.start.as_secs_f64(),
            self.end.as_secs_f64(),
            self.process,
            self.kind.name(),
            self.outcome
        )?;
        let p = &self.payload;
        if let Some(lock) = p.lock {
            write!(f, " lock={lock}")?;
        }
        if let Some(token) = p.token {
            write!(f, " token={token}")?;
        }
        if let Some(value) = p.value {
            write!(f, " value={value}")?;
        }
        if let Some(id) = p.id {
            write!(f, " id={id}")?;
        }
        if let Some(text) = &p.text {
            write!(f, " text={text}")?;
        }
        if let Some(split) = p.split {
            write!(f, " split={split:?}")?;
        }
        if let Some(found) = &p.found {
            write!(f, " found={found:?}")?;
        }
        if let Some(client) = p.client {
            write!(f, " client=c{client}")?;
        }
        if let Some(seq) = p.seq {
            write!(f, " seq={seq}")?;
        }
        if let Some(target) = p.target {
            write!(f, " target={target}")?;
        }
        if let Some(message) = &p.message {
            write!(f, " message={message}")?;
        }
        if let Some(revision) = p.revision {
            write!(f, " rev={revision}")?;
        }
        if let Some(error) = &p.error {
            write!(f, " error={error:?}")?;
        }
        Ok(())
    }
}

/// Whose watches a fault may stall for as long as it lasts (and until the client notices:
/// a silent connection is found dead only by its keep-alive), so that a `Live` there may
/// fall behind without anything being wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stalls {
    /// Nobody's: the watch breaks at once and resumes on a member that serves (a member
    /// killed or crashed, a connection reset), or it only slows (latency), or it must resync
    /// (compaction), all of which a `Live` rides through within the staleness bound.
    Nobody,
    /// Client `c`'s: it cannot reach a quorum, or its stream's member went silent.
    Client(usize),
    /// Every client's: a member went silent (paused), and any client's stream may be on it.
    Everyone,
}

impl Stalls {
    /// Whether client `c`'s watches may stall.
    pub fn client(self, c: usize) -> bool {
        match self {
            Stalls::Nobody => false,
            Stalls::Client(stalled) => stalled == c,
            Stalls::Everyone => true,
        }
    }
}

/// One injected fault: what, when, and whether injecting or healing it failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultRecord {
    /// The fault's kind, as the report names it.
    pub kind: &'static str,
    /// The fault, described.
    pub description: String,
    /// Whose watches it may stall.
    pub stalls: Stalls,
    /// When it was injected.
    pub injected: Duration,
    /// When it was healed (`None` if the run ended first; the final heal covers it).
    pub healed: Option<Duration>,
    /// Why injecting or healing failed, if it did.
    pub error: Option<String>,
}

/// The shared, append-only record of a run. Cheap to clone.
#[derive(Clone, Debug)]
pub struct History {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    began: Instant,
    ops: Mutex<Vec<Op>>,
    faults: Mutex<Vec<FaultRecord>>,
}

impl Default for History {
    fn default() -> Self {
        Self::new()
    }
}

impl History {
    /// An empty history whose clock starts now.
    pub fn new() -> Self {
        History {
            inner: Arc::new(Inner {
                began: Instant::now(),
                ops: Mutex::default(),
                faults: Mutex::default(),
            }),
        }
    }

    /// The time since the run started.
    pub fn now(&self) -> Duration {
        self.inner.began.elapsed()
    }

    /// Starts recording an operation of `process`; end it with [`Pending::ok`],
    /// [`Pending::failed`] or [`Pending::end`]. Dropped without an end, it is recorded as
    /// unknown (the future running it was cancelled mid-way).
    pub fn begin(&self, process: usize, kind: OpKind, payload: Payload) -> Pending {
        Pending {
            history: self.clone(),
            op: Some(Op {
                process,
                kind,
                start: self.now(),
                end: Duration::ZERO,
                outcome: Outcome::Unknown,
                payload,
            }),
        }
    }

    /// Appends a finished operation.
    pub fn record(&self, op: Op) {
        lock(&self.inner.ops).push(op);
    }

    /// Appends a fault; returns its index for [`healed`](Self::healed).
    pub fn fault(&self, record: FaultRecord) -> usize {
        let mut faults = lock(&self.inner.faults);
        faults.push(record);
        faults.len() - 1
    }

    /// Marks fault `index` healed now, with the heal's error if it failed.
    pub fn healed(&self, index: usize, error: Option<String>) {
        let now = self.now();
        if let Some(record) = lock(&self.inner.faults).get_mut(index) {
            record.healed = Some(now);
            if record.error.is_none() {
                record.error = error;
            }
        }
    }

    /// Every operation so far, in the order they ended.
    pub fn ops(&self) -> Vec<Op> {
        lock(&self.inner.ops).clone()
    }

    /// Every fault so far, in the order they were injected.
    pub fn faults(&self) -> Vec<FaultRecord> {
        lock(&self.inner.faults).clone()
    }

    /// The whole history as text, faults and operations merged in time order: one line each.
    pub fn dump(&self) -> String {
        let mut lines: Vec<(Duration, String)> = self
            .faults()
            .into_iter()
            .map(|f| {
                let healed = f.healed.map_or_else(
                    || "the end".to_owned(),
                    |t| format!("{:.3}s", t.as_secs_f64()),
                );
                let error = f.error.map(|e| format!(" error={e:?}")).unwrap_or_default();
                (
                    f.injected,
                    format!(
                        "[{:>8.3}s] nemesis: {} until {healed}{error}",
                        f.injected.as_secs_f64(),
                        f.description
                    ),
                )
            })
            .collect();
        lines.extend(self.ops().into_iter().map(|op| (op.start, op.to_string())));
        lines.sort_by_key(|(at, _)| *at);
        lines.into_iter().map(|(_, line)| line + "\n").collect()
    }

    /// Operations per kind: (ok, failed, unknown).
    pub fn outcome_counts(&self) -> BTreeMap<OpKind, [usize; 3]> {
        let mut counts: BTreeMap<OpKind, [usize; 3]> = BTreeMap::new();
        for op in lock(&self.inner.ops).iter() {
            let slot = match op.outcome {
                Outcome::Ok => 0,
                Outcome::Failed => 1,
                Outcome::Unknown => 2,
            };
            counts.entry(op.kind).or_default()[slot] += 1;
        }
        counts
    }
}

/// A poisoned lock only means a recording thread panicked; the record itself is still whole
/// (every push is one call), so the run goes on and reports.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// An operation that has started; see [`History::begin`].
#[derive(Debug)]
#[must_use = "an operation that is never ended is recorded as unknown"]
pub struct Pending {
    history: History,
    op: Option<Op>,
}

impl Pending {
    /// Ends it `Ok`, with what the answer adds to the payload.
    pub fn ok(self, add: impl FnOnce(&mut Payload)) {
        self.end(Outcome::Ok, add);
    }

    /// Ends it `Failed`, with the reason.
    pub fn failed(self, error: impl fmt::Display) {
        let error = error.to_string();
        self.end(Outcome::Failed, |p| p.error = Some(error));
    }

    /// Ends it with `outcome`, with what the answer adds to the payload.
    pub fn end(mut self, outcome: Outcome, add: impl FnOnce(&mut Payload)) {
        if let Some(mut op) = self.op.take() {
            op.end = self.history.now();
            op.outcome = outcome;
            add(&mut op.payload);
            self.history.record(op);
        }
    }
}

/// How a fenced transaction went (see [`Pending::fenced_txn`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fenced {
    /// Applied.
    Applied,
    /// Refused by its fence: what it was fenced by (a lock, an ID) is lost.
    Refused,
    /// Failed or unanswered without proving anything: stop writing with this holder.
    Stopped,
}

impl Pending {
    /// Ends it with how a fenced transaction went: ok with its revision; failed if the fence
    /// refused it (`refused` says why); otherwise by its error, or unknown if it had not
    /// answered within `hang`.
    pub async fn fenced_txn(
        self,
        hang: Duration,
        refused: &str,
        call: impl std::future::Future<Output = coord::Result<coord::store::TxnResponse>>,
    ) -> Fenced {
        match tokio::time::timeout(hang, call).await {
            Ok(Ok(response)) if response.succeeded => {
                self.ok(|p| p.revision = Some(response.revision));
                Fenced::Applied
            }
            Ok(Ok(response)) => {
                self.end(Outcome::Failed, |p| {
                    p.revision = Some(response.revision);
                    p.error = Some(refused.to_owned());
                });
                Fenced::Refused
            }
            Ok(Err(e)) => {
                self.end(Outcome::of_write_error(&e), |p| {
                    p.error = Some(e.to_string())
                });
                Fenced::Stopped
            }
            Err(_) => {
                self.end(Outcome::Unknown, |p| {
                    p.error = Some(format!("no answer within {hang:?}"));
                });
                Fenced::Stopped
            }
        }
    }

    /// Ends it with how a release (an unlock, an ID's release, a deregister) went: failed
    /// with `SessionLost` (nothing was held any more), otherwise by its error, or unknown if
    /// it had not answered within `hang`.
    pub async fn released(
        self,
        hang: Duration,
        call: impl std::future::Future<Output = coord::Result<()>>,
    ) {
        match tokio::time::timeout(hang, call).await {
            Ok(Ok(())) => self.ok(|_| {}),
            Ok(Err(e @ coord::Error::SessionLost { .. })) => self.failed(e),
            Ok(Err(e)) => self.end(Outcome::of_write_error(&e), |p| {
                p.error = Some(e.to_string());
            }),
            Err(_) => self.end(Outcome::Unknown, |p| {
                p.error = Some(format!("no answer within {hang:?}"));
            }),
        }
    }

    /// Ends it, in a task of its own, ok once `lost` resolves within `bound` and failed if
    /// it does not: for a holder whose fenced write was refused, which proved the loss.
    pub fn reported_lost(
        self,
        bound: Duration,
        lost: impl std::future::Future + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            match tokio::time::timeout(bound, lost).await {
                Ok(_) => self.ok(|_| {}),
                Err(_) => self.failed(format!(
                    "lost() had not resolved {bound:?} after a fenced write was refused"
                )),
            }
        })
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(mut op) = self.op.take() {
            op.end = self.history.now();
            op.payload.error = Some("cancelled before it answered".into());
            self.history.record(op);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_operation_dropped_before_it_ends_is_unknown() {
        let history = History::new();
        history
            .begin(0, OpKind::Acquire, Payload::default())
            .ok(|_| {});
        drop(history.begin(1, OpKind::Increment, Payload::default()));
        let ops = history.ops();
        assert_eq!(ops[0].outcome, Outcome::Ok);
        assert_eq!(ops[1].outcome, Outcome::Unknown);
        assert_eq!(
            history.outcome_counts()[&OpKind::Increment],
            [0, 0, 1],
            "ok, failed, unknown"
        );
    }

    #[test]
    fn a_timed_out_write_is_unknown_and_a_closed_one_failed() {
        let timeout = coord::Error::Timeout {
            operation: "txn".into(),
            after: Duration::from_secs(2),
        };
        assert_eq!(Outcome::of_write_error(&timeout), Outcome::Unknown);
        let lost = coord::Error::OutcomeUnknown {
            operation: "txn /k".into(),
            key: "/k".into(),
            source: Box::new(timeout),
        };
        assert_eq!(Outcome::of_write_error(&lost), Outcome::Unknown);
        assert_eq!(
            Outcome::of_write_error(&coord::Error::Closed),
            Outcome::Failed
        );
    }
}
