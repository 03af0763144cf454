//! What [`Coord::health`](crate::Coord::health) reports: whether the store answers, and whether
//! each lease-holding handle (registration, lock, instance ID) still has its lease.
//!
//! Modules that hold a [`Session`] register it with `SessionTracker::track`; the tracker
//! keeps only weak references, so a dropped lock or registration leaves the report by itself.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

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
}

impl Health {
    /// True if the store answered and every tracked session still holds its lease.
    pub fn is_healthy(&self) -> bool {
        self.reachable && self.sessions.iter().all(|s| s.alive)
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
