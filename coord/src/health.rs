//! What [`Coord::health`](crate::Coord::health) reports: whether the store answers, whether
//! each lease-holding handle (registration, lock, instance ID) still has its lease, and which
//! writes the `Coord` makes on its own (rollout status keys, snapshot files) are failing.
//!
//! Modules that hold a [`Session`] register it with `SessionTracker::track`; the tracker
//! keeps only weak references, so a dropped lock or registration leaves the report by itself.
//! Background writers record each failure and each success in `FailingWrites`: an entry stays
//! from its first failure until a write of the same target succeeds (or the target goes), so
//! a write that fails forever is reported forever, not just logged.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use crate::session::{Session, SessionInner};
use crate::sync::lock;

/// The answer of [`Coord::health`](crate::Coord::health).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Health {
    /// True if the store answered.
    pub reachable: bool,
    /// The store revision it reported.
    pub revision: i64,
    /// The server version (`"embedded"` for the in-memory store).
    pub version: String,
    /// How long the status request took.
    pub latency: Duration,
    /// Why the store did not answer, if it did not.
    pub error: Option<String>,
    /// Every live lease-holding handle of this `Coord`, oldest first.
    pub sessions: Vec<SessionHealth>,
    /// Writes this `Coord` makes by itself whose latest attempt failed, and which it keeps
    /// retrying: a rollout status key it cannot write (so `rollout` does not list this
    /// instance, or lists it out of date), a snapshot file it cannot save (so an offline start
    /// would use an older one, or none). Sorted by kind and target; empty when all is well.
    pub failing_writes: Vec<FailingWrite>,
}

impl Health {
    /// True if the store answered and every tracked session still holds its lease.
    ///
    /// [`failing_writes`](Self::failing_writes) do not make it false: the process still
    /// serves its config and holds its leases, and restarting it would not fix a refused
    /// status key or a full disk. Alert on them separately.
    pub fn is_healthy(&self) -> bool {
        self.reachable && self.sessions.iter().all(|s| s.alive)
    }
}

/// A write a `Coord` makes by itself that is failing, in a [`Health`] report.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct FailingWrite {
    /// What is written: [`STATUS_WRITE`] (an instance status key of rollout) or
    /// [`SNAPSHOT_SAVE`] (a snapshot file of offline start).
    pub kind: &'static str,
    /// Which one: the status key, or the snapshot file's path.
    pub target: String,
    /// Why the latest attempt failed.
    pub error: String,
    /// Failed attempts since the target was last written.
    pub failures: u64,
    /// When the first of those attempts failed.
    pub since: SystemTime,
}

/// [`FailingWrite::kind`] of a rollout status key.
pub const STATUS_WRITE: &str = "status";
/// [`FailingWrite::kind`] of a snapshot file.
pub const SNAPSHOT_SAVE: &str = "snapshot";

/// The failing background writes of one `Coord`, by kind and target.
#[derive(Debug, Default)]
pub(crate) struct FailingWrites {
    entries: Mutex<BTreeMap<(&'static str, String), FailingWrite>>,
}

impl FailingWrites {
    /// A write of `target` failed with `error`.
    pub fn failed(&self, kind: &'static str, target: &str, error: &dyn std::fmt::Display) {
        let mut entries = lock(&self.entries);
        let entry = entries
            .entry((kind, target.to_owned()))
            .or_insert_with(|| FailingWrite {
                kind,
                target: target.to_owned(),
                error: String::new(),
                failures: 0,
                since: SystemTime::now(),
            });
        entry.error = error.to_string();
        entry.failures += 1;
    }

    /// `target` was written (or is no longer to be written): it is not failing.
    pub fn cleared(&self, kind: &'static str, target: &str) {
        let mut entries = lock(&self.entries);
        if !entries.is_empty() {
            entries.remove(&(kind, target.to_owned()));
        }
    }

    /// Every failing write, by kind and target.
    pub fn report(&self) -> Vec<FailingWrite> {
        lock(&self.entries).values().cloned().collect()
    }
}

/// One lease-holding handle in a [`Health`] report.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionHealth {
    /// What holds the lease: `"registration"`, `"lock"`, `"id"`, `"election"`.
    pub kind: &'static str,
    /// Which one: the service id, lock name, `service/id`…
    pub name: String,
    /// The lease ID.
    pub lease: i64,
    /// False once the lease is known to be lost.
    pub alive: bool,
}

/// The sessions of one `Coord`, held weakly.
#[derive(Debug, Default)]
pub(crate) struct SessionTracker {
    entries: Mutex<Vec<Entry>>,
}

#[derive(Debug)]
struct Entry {
    kind: &'static str,
    name: String,
    session: Weak<SessionInner>,
    /// For handles that share a session (the IDs of one allocator): the entry goes when this
    /// handle's token does, not when the shared session does.
    owner: Option<Weak<()>>,
}

impl Entry {
    fn is_live(&self) -> bool {
        self.session.strong_count() > 0
            && self
                .owner
                .as_ref()
                .is_none_or(|owner| owner.strong_count() > 0)
    }
}

impl SessionTracker {
    /// Reports `session` under `kind`/`name` for as long as any clone of it lives.
    pub fn track(&self, kind: &'static str, name: impl Into<String>, session: &Session) {
        self.push(kind, name.into(), session, None);
    }

    /// Reports `session` under `kind`/`name` while `owner` (a token the handle holds) lives:
    /// for a handle that shares its session with others.
    pub fn track_owned(
        &self,
        kind: &'static str,
        name: impl Into<String>,
        session: &Session,
        owner: &Arc<()>,
    ) {
        self.push(kind, name.into(), session, Some(Arc::downgrade(owner)));
    }

    fn push(&self, kind: &'static str, name: String, session: &Session, owner: Option<Weak<()>>) {
        let mut entries = lock(&self.entries);
        entries.retain(Entry::is_live);
        entries.push(Entry {
            kind,
            name,
            session: session.downgrade(),
            owner,
        });
    }

    /// Stops reporting `session` under any name.
    pub fn untrack(&self, session: &Session) {
        let weak = session.downgrade();
        lock(&self.entries).retain(|e| e.is_live() && !e.session.ptr_eq(&weak));
    }

    /// The tracked sessions that still exist.
    pub fn report(&self) -> Vec<SessionHealth> {
        let mut entries = lock(&self.entries);
        entries.retain(Entry::is_live);
        entries
            .iter()
            .filter_map(|e| {
                let session = Session::upgrade(&e.session)?;
                Some(SessionHealth {
                    kind: e.kind,
                    name: e.name.clone(),
                    lease: session.lease_id(),
                    alive: session.is_alive(),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    #[test]
    fn a_failing_write_is_reported_until_its_target_is_written() {
        let writes = FailingWrites::default();
        writes.failed(STATUS_WRITE, "/coord/status/a//me", &"permission denied");
        writes.failed(STATUS_WRITE, "/coord/status/a//me", &"still denied");
        writes.failed(SNAPSHOT_SAVE, "/snap/a.json", &"read-only file system");
        let report = writes.report();
        assert_eq!(report.len(), 2);
        let status = report.iter().find(|w| w.kind == STATUS_WRITE).unwrap();
        assert_eq!(
            (status.failures, status.error.as_str()),
            (2, "still denied")
        );
        writes.cleared(STATUS_WRITE, "/coord/status/a//me");
        let report = writes.report();
        assert_eq!(report.len(), 1);
        assert_eq!(report[0].target, "/snap/a.json");
    }

    #[tokio::test]
    async fn reports_live_sessions_and_forgets_dropped_ones() {
        let store = Store::in_memory();
        let tracker = SessionTracker::default();
        let a = Session::new(&store, Duration::from_secs(5)).await.unwrap();
        let b = Session::new(&store, Duration::from_secs(5)).await.unwrap();
        tracker.track("lock", "jobs", &a);
        tracker.track("id", "api/3", &b);
        let report = tracker.report();
        assert_eq!(report.len(), 2);
        assert!(report.iter().all(|s| s.alive));
        assert_eq!(report[0].name, "jobs");
        assert_eq!(report[1].lease, b.lease_id());

        store.lease_revoke(a.lease_id()).await.unwrap();
        let lost = a.lost().await;
        assert!(matches!(lost, crate::Error::SessionLost { .. }));
        let report = tracker.report();
        assert!(!report[0].alive, "a revoked lease shows as not alive");

        drop(b);
        assert_eq!(
            tracker.report().len(),
            1,
            "a dropped session leaves the report"
        );
    }
}
