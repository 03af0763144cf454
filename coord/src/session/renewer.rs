//! One task per `Store` handle (so per `Coord`) renews the leases of all its sessions, each on
//! its own schedule.
//!
//! # What it promises
//!
//! - Each lease is renewed every third of its TTL. A renewal that fails is retried every
//!   [`RETRY_INTERVAL`] until the lease's deadline (the TTL granted by the last renewal,
//!   counted from when that renewal was sent); once the deadline passes, or the store says the
//!   lease is gone, the session is lost.
//! - Renewals of different leases run concurrently: one slow renewal delays no other lease.
//! - The task runs only while some session is kept alive: it starts with the first and ends
//!   when the last is gone, so an idle handle keeps no task (and no task keeps its store).
//!   A session costs an entry here, not a task of its own.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, Weak};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tracing::Instrument;

use crate::error::{Error, Result};
use crate::store::Store;
use crate::sync::lock;

/// How long to wait between renewal attempts when the store does not answer.
const RETRY_INTERVAL: Duration = Duration::from_millis(250);

/// The renewals of one `Store` handle's sessions.
#[derive(Debug, Default)]
pub(crate) struct Renewer {
    schedule: Mutex<Schedule>,
    /// Wakes the task: a lease was added, renewed early or removed.
    wake: Notify,
}

#[derive(Debug, Default)]
struct Schedule {
    leases: HashMap<i64, Lease>,
    /// When each lease is next due, earliest first. An entry whose lease is gone or has been
    /// rescheduled since is skipped when it comes up.
    due: BinaryHeap<Reverse<(Instant, i64)>>,
    /// The task, while one runs.
    task: Option<tokio::task::AbortHandle>,
}

#[derive(Debug)]
struct Lease {
    session: Weak<SessionInner>,
    /// A third of the TTL.
    interval: Duration,
    /// The lease is safe until then, as far as the last renewal tells.
    expires_at: Instant,
    /// When the next renewal is due.
    next: Instant,
    /// A renewal was sent and has not been answered.
    in_flight: bool,
}

impl Schedule {
    fn plan(&mut self, id: i64, at: Instant) {
        if let Some(lease) = self.leases.get_mut(&id) {
            lease.next = at;
            self.due.push(Reverse((at, id)));
        }
    }
}

/// How one renewal went: the lease, when the renewal was sent, and its answer (`None`: no
/// answer before the lease's deadline).
type Renewal = (i64, Instant, Option<Result<i64>>);

impl Renewer {
    /// Starts renewing `session`'s lease, granted for `ttl` just now, starting the task if none
    /// runs (or if it died with the runtime that spawned it). Must be called within a tokio
    /// runtime.
    pub fn add(&self, store: &Store, session: Weak<SessionInner>, id: i64, ttl: Duration) {
        let now = Instant::now();
        let interval = ttl / 3;
        let mut schedule = lock(&self.schedule);
        schedule.leases.insert(
            id,
            Lease {
                session,
                interval,
                expires_at: now + ttl,
                next: now + interval,
                in_flight: false,
            },
        );
        schedule.due.push(Reverse((now + interval, id)));
        if schedule.task.as_ref().is_none_or(|task| task.is_finished()) {
            let span = tracing::info_span!("session.keep_alive");
            schedule.task = Some(tokio::spawn(run(store.clone()).instrument(span)).abort_handle());
        } else {
            self.wake.notify_one();
        }
    }

    /// Stops renewing lease `id` (closed, abandoned, dropped or lost).
    pub fn remove(&self, id: i64) {
        let mut schedule = lock(&self.schedule);
        if schedule.leases.remove(&id).is_some() && schedule.leases.is_empty() {
            // So the task ends now rather than at the next lease's due time.
            self.wake.notify_one();
        }
    }

    /// Lease `id` was renewed outside the schedule (`Session::refresh`), by a renewal sent at
    /// `sent_at` that granted `ttl` seconds: its deadline and next renewal move on.
    pub fn renewed(&self, id: i64, sent_at: Instant, ttl: i64) {
        let mut schedule = lock(&self.schedule);
        let Some(lease) = schedule.leases.get_mut(&id) else {
            return;
        };
        lease.expires_at = lease.expires_at.max(sent_at + granted(ttl));
        if !lease.in_flight {
            let at = sent_at + lease.interval;
            schedule.plan(id, at);
            self.wake.notify_one();
        }
    }

    /// True while the task runs (it dies with the runtime that spawned it).
    pub fn is_running(&self) -> bool {
        lock(&self.schedule)
            .task
            .as_ref()
            .is_some_and(|task| !task.is_finished())
    }
}

fn granted(ttl: i64) -> Duration {
    Duration::from_secs(u64::try_from(ttl).unwrap_or(0))
}

/// Renews each lease when it is due until no lease is left.
async fn run(store: Store) {
    let renewer = store.slot::<Renewer>();
    let mut renewals: FuturesUnordered<Pin<Box<dyn Future<Output = Renewal> + Send>>> =
        FuturesUnordered::new();
    loop {
        let mut lost = Vec::new();
        let wake_at = {
            let mut schedule = lock(&renewer.schedule);
            let now = Instant::now();
            while let Some(&Reverse((at, id))) = schedule.due.peek() {
                if at > now {
                    break;
                }
                schedule.due.pop();
                let Some(lease) = schedule.leases.get_mut(&id) else {
                    continue;
                };
                if lease.next != at || lease.in_flight {
                    continue;
                }
                if now >= lease.expires_at {
                    let session = lease.session.clone();
                    schedule.leases.remove(&id);
                    lost.push((id, session, "was not renewed before its TTL ran out"));
                    continue;
                }
                lease.in_flight = true;
                let deadline = lease.expires_at;
                let store = store.clone();
                renewals.push(Box::pin(async move {
                    let sent_at = Instant::now();
                    let answer =
                        tokio::time::timeout_at(deadline, store.lease_keep_alive(id)).await;
                    (id, sent_at, answer.ok())
                }));
            }
            if schedule.leases.is_empty() && renewals.is_empty() {
                // Under the lock: a lease added from now on finds no task and starts one.
                schedule.task = None;
                None
            } else {
                Some(schedule.due.peek().map(|&Reverse((at, _))| at))
            }
        };
        for (id, session, reason) in lost {
            report_lost(id, &session, reason);
        }
        let Some(wake_at) = wake_at else {
            return;
        };
        let sleep = async {
            match wake_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = sleep => {}
            () = renewer.wake.notified() => {}
            Some(renewal) = renewals.next() => {
                let id = renewal.0;
                if let Some((session, reason)) = answered(&renewer, renewal) {
                    report_lost(id, &session, reason);
                }
            }
        }
    }
}

fn report_lost(id: i64, session: &Weak<SessionInner>, reason: &'static str) {
    tracing::warn!(lease = format_args!("{id:x}"), reason, "session lost");
    if let Some(session) = session.upgrade() {
        session.mark_lost(reason);
    }
}

/// Books one renewal's answer; the session and the reason if it says the lease is lost.
fn answered(
    renewer: &Renewer,
    (id, sent_at, answer): Renewal,
) -> Option<(Weak<SessionInner>, &'static str)> {
    let mut schedule = lock(&renewer.schedule);
    // Gone meanwhile (closed, dropped): nothing to book.
    let lease = schedule.leases.get_mut(&id)?;
    lease.in_flight = false;
    let next = match answer {
        Some(Ok(ttl)) => {
            crate::metrics::lease_renewal("ok", sent_at.elapsed());
            lease.expires_at = sent_at + granted(ttl);
            sent_at + lease.interval
        }
        Some(Err(Error::LeaseNotFound { .. })) => {
            crate::metrics::lease_renewal("lost", sent_at.elapsed());
            let session = lease.session.clone();
            schedule.leases.remove(&id);
            return Some((session, "was revoked or expired"));
        }
        Some(Err(e)) => {
            crate::metrics::lease_renewal("failed", sent_at.elapsed());
            tracing::debug!(lease = format_args!("{id:x}"), error = %e, "lease renewal failed; retrying until the TTL runs out");
            (Instant::now() + RETRY_INTERVAL).min(lease.expires_at)
        }
        None => {
            crate::metrics::lease_renewal("failed", sent_at.elapsed());
            lease.expires_at
        }
    };
    schedule.plan(id, next);
    None
}

/// The lease behind a [`Session`](super::Session) and its clones: what the renewer renews
/// and tells of a loss; dropping the last handle revokes it.
#[derive(Debug)]
pub(crate) struct SessionInner {
    pub(super) store: Store,
    pub(super) lease: i64,
    pub(super) ttl: Duration,
    /// `Some(reason)` once the lease is known to be gone: set by the renewer, and by `close`
    /// and `abandon` too, so a closed session reads as lost.
    pub(super) lost: watch::Sender<Option<String>>,
    /// Set by `close`/`abandon`: the drop must not revoke again.
    pub(super) finished: AtomicBool,
}

impl SessionInner {
    /// The lease is gone (`reason` says how): the session reads as lost from now on, and its
    /// store's connection state says so. The first reason stays.
    pub(super) fn mark_lost(&self, reason: &str) {
        self.store.slot::<Renewer>().remove(self.lease);
        self.lost.send_if_modified(|lost| {
            if lost.is_some() {
                return false;
            }
            *lost = Some(reason.to_owned());
            // Inside, so before anyone waiting on `lost()` is woken: whoever learns of the
            // loss finds the connection state (and its metric) saying so already.
            self.store.lease_lost();
            true
        });
    }
}

impl Drop for SessionInner {
    fn drop(&mut self) {
        self.store.slot::<Renewer>().remove(self.lease);
        if self.finished.load(Ordering::SeqCst) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime to revoke from: the lease expires after its TTL.
            return;
        };
        let store = self.store.clone();
        let lease = self.lease;
        runtime.spawn(async move {
            // Even on a closed store: a session dropped just before `Coord::close` gives its
            // lease back rather than leave its keys for the TTL.
            if let Err(e) = store.release_lease(lease).await
                && !matches!(e, Error::LeaseNotFound { .. }) {
                    tracing::debug!(lease = format_args!("{lease:x}"), error = %e, "revoke on drop failed; the lease will expire");
                }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::Renewer;
    use crate::session::Session;
    use crate::store::Store;

    #[tokio::test]
    async fn the_task_runs_while_a_session_is_renewed_and_ends_with_the_last() {
        let store = Store::in_memory();
        assert!(!store.slot::<Renewer>().is_running());
        let first = Session::new(&store, Duration::from_secs(5)).await.unwrap();
        let second = Session::new(&store, Duration::from_secs(5)).await.unwrap();
        assert!(store.slot::<Renewer>().is_running());
        drop(first);
        tokio::task::yield_now().await;
        assert!(store.slot::<Renewer>().is_running(), "one session is left");
        second.close().await.unwrap();
        for _ in 0..100 {
            if !store.slot::<Renewer>().is_running() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            !store.slot::<Renewer>().is_running(),
            "no session left, no task"
        );
        // And a new session starts it again.
        let third = Session::new(&store, Duration::from_secs(5)).await.unwrap();
        assert!(store.slot::<Renewer>().is_running());
        assert!(third.is_alive());
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_the_store_no_longer_knows_is_lost_at_its_next_renewal() {
        let store = Store::in_memory();
        let kept = Session::new(&store, Duration::from_secs(3)).await.unwrap();
        let revoked = Session::new(&store, Duration::from_secs(3)).await.unwrap();
        store.lease_revoke(revoked.lease_id()).await.unwrap();
        // Within one renewal interval (a third of the TTL), on the paused clock.
        tokio::time::timeout(Duration::from_secs(2), revoked.lost())
            .await
            .expect("lost at the next renewal");
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(kept.is_alive(), "renewed all along");
    }
}
