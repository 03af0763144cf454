//! Released lock sessions parked for the next lock with the same TTL.
//!
//! Granting a lease is a consensus write and a round trip. A service that takes and releases
//! locks in a loop would pay it on every `acquire`, which makes coord slower than etcd's own
//! Lock RPC used on a long-lived session. So [`LockGuard::unlock`](crate::LockGuard::unlock)
//! deletes only its key and parks the still-renewed session here, and the next `acquire` with
//! the same TTL takes it: one round trip to lock, one to unlock, as with the Lock RPC.
//!
//! # What it promises
//!
//! - A parked session holds no lock key (keys its user put on the lease themselves stay: see
//!   `LockGuard::unlock`), and a session is handed out at most once: `take` removes it.
//! - At most one session per requested TTL is parked, for [`PARK_FOR`] to 1.5 × `PARK_FOR`;
//!   then it is dropped, which revokes its lease. [`LeasePool::clear`] (on `Coord::close`)
//!   drops them all, and a closed `Coord` parks nothing.
//! - A session whose renewals stopped (its tokio runtime shut down) is neither parked nor
//!   handed out.
//! - A session known to be lost is never handed out. One lost but not yet noticed (revoked by
//!   an operator a moment ago) can be: the caller must treat `LeaseNotFound` on its first write
//!   as "take a fresh lease".

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::time::Instant;

use crate::session::Session;
use crate::sync::lock;

/// How long a released session waits for its next lock before its lease is revoked. Long
/// enough for a loop that locks every few seconds to reuse it, short enough that an idle
/// process does not renew a lease for nothing.
pub(crate) const PARK_FOR: Duration = Duration::from_secs(10);

/// Parked sessions of one `Coord`, by requested TTL in whole seconds. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub(crate) struct LeasePool {
    state: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    parked: HashMap<i64, (Session, Instant)>,
    /// True while a task is dropping sessions parked for longer than `PARK_FOR`.
    reaper: bool,
}

impl LeasePool {
    /// Takes the session parked for `ttl_seconds`, if it is still alive.
    pub fn take(&self, ttl_seconds: i64) -> Option<Session> {
        let (session, _) = lock(&self.state).parked.remove(&ttl_seconds)?;
        // A lost one (or one whose renewals died with their runtime) is dropped here, outside
        // the lock.
        session.is_renewed().then_some(session)
    }

    /// Parks `session`, which must hold no key, for the next lock of `ttl_seconds`.
    pub fn park(&self, ttl_seconds: i64, session: Session) {
        if !session.is_renewed() {
            return;
        }
        let replaced = {
            let mut state = lock(&self.state);
            let replaced = state.parked.insert(ttl_seconds, (session, Instant::now()));
            if !state.reaper {
                state.reaper = true;
                let state = Arc::downgrade(&self.state);
                // The guard lives in the task's future from the start, so even a task that is
                // dropped before its first poll (its runtime ends) clears the flag.
                tokio::spawn(reap(state.clone(), ReaperRunning(Some(state))));
            }
            replaced
        };
        // Dropped outside the lock: the drop spawns the revoke of the older lease.
        drop(replaced);
    }

    /// Drops every parked session, revoking their leases.
    #[cfg(test)]
    pub fn clear(&self) {
        drop(self.drain());
    }

    /// Takes every parked session out of the pool (for `Coord::close`, which revokes them
    /// itself to report failures).
    pub fn drain(&self) -> Vec<Session> {
        std::mem::take(&mut lock(&self.state).parked)
            .into_values()
            .map(|(session, _)| session)
            .collect()
    }
}

/// Drops sessions parked for longer than [`PARK_FOR`]; ends when none is left.
///
/// If the task is cancelled (its runtime shuts down), `running` clears the flag on drop so that
/// the next `park` starts another.
async fn reap(state: Weak<Mutex<State>>, mut running: ReaperRunning) {
    loop {
        tokio::time::sleep(PARK_FOR / 2).await;
        let Some(state) = state.upgrade() else { return };
        let mut guard = lock(&state);
        let now = Instant::now();
        let (stale, kept): (HashMap<_, _>, HashMap<_, _>) = std::mem::take(&mut guard.parked)
            .into_iter()
            .partition(|(_, (session, since))| {
                now.duration_since(*since) >= PARK_FOR || !session.is_renewed()
            });
        guard.parked = kept;
        let done = guard.parked.is_empty();
        if done {
            // Under the lock, so a concurrent `park` either sees this and starts a reaper, or
            // parked before and is reaped here.
            guard.reaper = false;
            running.0 = None;
        }
        drop(guard);
        // Dropped outside the lock: each drop spawns the revoke of its lease.
        drop(stale);
        if done {
            return;
        }
    }
}

/// Clears `State::reaper` if the reaper task ends other than by finding nothing parked.
struct ReaperRunning(Option<Weak<Mutex<State>>>);

impl Drop for ReaperRunning {
    fn drop(&mut self) {
        if let Some(state) = self.0.take().and_then(|weak| weak.upgrade()) {
            lock(&state).reaper = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    #[tokio::test(start_paused = true)]
    async fn a_parked_session_is_handed_out_once_then_revoked_when_idle() {
        let store = Store::in_memory();
        let pool = LeasePool::default();
        let session = Session::new(&store, Duration::from_secs(5)).await.unwrap();
        let lease = session.lease_id();
        pool.park(5, session);
        assert!(pool.take(6).is_none(), "another TTL does not match");
        let again = pool.take(5).expect("parked");
        assert_eq!(again.lease_id(), lease);
        assert!(pool.take(5).is_none(), "handed out once");

        pool.park(5, again);
        tokio::time::sleep(PARK_FOR * 2).await;
        assert!(pool.take(5).is_none(), "dropped after PARK_FOR");
        // The drop revoked the lease (in a spawned task): give it a turn.
        tokio::task::yield_now().await;
        assert!(matches!(
            store.lease_keep_alive(lease).await,
            Err(crate::Error::LeaseNotFound { .. })
        ));
    }

    #[tokio::test]
    async fn clear_revokes_and_lost_sessions_are_not_parked() {
        let store = Store::in_memory();
        let pool = LeasePool::default();
        let session = Session::new(&store, Duration::from_secs(5)).await.unwrap();
        let lease = session.lease_id();
        pool.park(5, session);
        pool.clear();
        assert!(pool.take(5).is_none());
        // The revoke runs in a spawned task.
        let deadline = Instant::now() + Duration::from_secs(2);
        while store.lease_keep_alive(lease).await.is_ok() {
            assert!(Instant::now() < deadline, "lease not revoked by clear");
            tokio::task::yield_now().await;
        }

        let lost = Session::new(&store, Duration::from_secs(5)).await.unwrap();
        store.lease_revoke(lost.lease_id()).await.unwrap();
        lost.refresh().await.unwrap_err();
        lost.lost().await;
        pool.park(5, lost);
        assert!(pool.take(5).is_none());
    }
}
