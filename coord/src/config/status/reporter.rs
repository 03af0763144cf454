//! The reporter behind status keys: one task per `Coord` and prefix, fed by the `Live`
//! handles on that prefix.
//!
//! Each handle holds a [`StatusSlot`] and puts its state (revision, last rejected change) in
//! it with [`StatusSlot::report`]: one `watch::Sender::send_modify`, so a reload never waits
//! for the store. The prefix's task wakes on the change, folds every handle's state into one
//! [`InstanceStatus`] and writes it; changes made while a write is in flight are seen together
//! when it returns, and only the latest is written. Nothing waits on a timer, so a lone
//! change is reported at once and a burst costs about one write per write latency.
//!
//! The statuses of a `Coord` share one lease (granted through `Context::session`, so
//! `Coord::close` revokes it, and listed in `health()` as `status`); a task whose lease is
//! lost takes a new one and writes again. When the last slot of a prefix is dropped the task
//! deletes its key (if it is still on its lease) and ends; a new handle on the same prefix
//! starts a new task, which waits for that delete before its first write.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot, watch};
use tracing::Instrument;

use super::{covers_own_status, normalize, status_key, InstanceStatus, StatusError};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::session::{Session, SessionInner};
use crate::store::{Compare, Store, Txn, TxnOp};
use crate::sync::lock;

/// The TTL of the status lease: how long the statuses of a process that died without
/// closing stay listed.
pub(crate) const STATUS_TTL: Duration = Duration::from_secs(10);

/// The first wait after a failed write; it doubles up to [`MAX_BACKOFF`].
const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// The least time between two writes of one status (a lost lease is written at once): a
/// service reloading often costs etcd a few status writes a second, not one per reload, and
/// `rollout` is at most this far behind.
pub(crate) const MIN_WRITE_INTERVAL: Duration = Duration::from_millis(250);

/// What one `Live` handle reports.
#[derive(Clone, Debug)]
pub(crate) struct HandleState {
    /// `Live::revision`.
    pub revision: i64,
    /// The last change it rejected, while its latest change is rejected.
    pub rejected: Option<Rejected>,
    /// The gray release it runs, if it is one of that release's instances.
    pub gray: Option<u64>,
}

/// A change a `Live` handle rejected.
#[derive(Clone, Debug)]
pub(crate) struct Rejected {
    /// Why (`Live::last_error`).
    pub error: Arc<Error>,
    /// The revision it rejected.
    pub revision: i64,
}

/// Every handle's state on one prefix, by slot ID.
type Handles = BTreeMap<u64, HandleState>;

/// The status reporters of one `Coord`: one per prefix with a handle, and their lease.
#[derive(Debug)]
pub(crate) struct StatusReporters {
    /// A handle of its own on the `Coord`'s store: status writes are not the user's writes,
    /// so they do not move the revision the read cache must reach before it answers
    /// (`Store::written_revision`), nor the `Coord`'s round-trip counters.
    store: Store,
    prefixes: Mutex<HashMap<String, PrefixEntry>>,
    /// The lease every status key of this `Coord` is on, while a task holds it.
    lease: tokio::sync::Mutex<Weak<SessionInner>>,
    /// The task that writes every prefix's status puts, batched (started with the first).
    batcher: Mutex<Option<mpsc::UnboundedSender<PendingPut>>>,
}

/// A status put waiting for the batcher, and where its outcome goes.
#[derive(Debug)]
struct PendingPut {
    key: String,
    value: Vec<u8>,
    lease: i64,
    done: oneshot::Sender<Result<()>>,
}

/// Puts per transaction: under etcd's 128 operations.
const BATCH: usize = 100;

#[derive(Debug)]
struct PrefixEntry {
    reporter: Weak<PrefixReporter>,
    /// Held by the prefix's task for its whole life: the next task for the prefix waits
    /// until the previous one has deleted its key.
    turn: Arc<tokio::sync::Mutex<()>>,
}

#[derive(Debug)]
struct PrefixReporter {
    handles: watch::Sender<Handles>,
    next_slot: AtomicU64,
}

/// One handle's place in its prefix's status. Dropping it removes the handle's state; the
/// prefix's status goes when its last slot does.
#[derive(Debug)]
pub(crate) struct StatusSlot {
    reporter: Arc<PrefixReporter>,
    id: u64,
}

impl StatusSlot {
    /// Publishes this handle's state; the reporter writes it soon. Never waits.
    pub fn report(&self, state: HandleState) {
        self.reporter.handles.send_modify(|handles| {
            handles.insert(self.id, state);
        });
    }
}

impl Drop for StatusSlot {
    fn drop(&mut self) {
        self.reporter.handles.send_modify(|handles| {
            handles.remove(&self.id);
        });
    }
}

/// A slot in the status of `prefix` for a handle now in `state`, starting the prefix's
/// reporter if it has none; `None` for a prefix that covers its own status key (reporting
/// would change the handle's own keys, and so on forever).
pub(crate) fn slot(ctx: &Arc<Context>, prefix: &str, state: HandleState) -> Option<StatusSlot> {
    let prefix = normalize(prefix);
    if covers_own_status(prefix, &ctx.instance.name) {
        tracing::debug!(
            prefix,
            "the prefix covers the status keys; this handle reports no status"
        );
        return None;
    }
    let reporter = {
        let mut prefixes = lock(&ctx.status.prefixes);
        // Entries of prefixes nobody reports on any more are pruned when the map has doubled,
        // not on every bind.
        if prefixes.len() == prefixes.capacity() {
            prefixes.retain(|_, entry| {
                entry.reporter.strong_count() > 0 || Arc::strong_count(&entry.turn) > 1
            });
        }
        let entry = prefixes
            .entry(prefix.to_owned())
            .or_insert_with(|| PrefixEntry {
                reporter: Weak::new(),
                turn: Arc::default(),
            });
        match entry.reporter.upgrade() {
            Some(reporter) => reporter,
            None => {
                let (handles, rx) = watch::channel(Handles::new());
                let reporter = Arc::new(PrefixReporter {
                    handles,
                    next_slot: AtomicU64::new(0),
                });
                entry.reporter = Arc::downgrade(&reporter);
                let span = tracing::debug_span!(
                    "status.reporter",
                    key = status_key(prefix, &ctx.instance.name)
                );
                tokio::spawn(
                    run(
                        Arc::clone(ctx),
                        prefix.to_owned(),
                        rx,
                        Arc::clone(&entry.turn),
                    )
                    .instrument(span),
                );
                reporter
            }
        }
    };
    let id = reporter.next_slot.fetch_add(1, Ordering::Relaxed);
    let slot = StatusSlot { reporter, id };
    slot.report(state);
    Some(slot)
}

/// What the status says, without who and when: a write is due when this changes.
#[derive(Clone, Debug, PartialEq)]
struct Report {
    revision: i64,
    error: Option<StatusError>,
    gray: Option<u64>,
}

/// The status of a prefix from its handles' states: the lowest revision and the latest
/// rejection. `None` without handles.
fn aggregate(handles: &Handles) -> Option<Report> {
    let revision = handles.values().map(|h| h.revision).min()?;
    let error = handles
        .values()
        .filter_map(|h| h.rejected.as_ref())
        .max_by_key(|rejected| rejected.revision)
        .map(|rejected| StatusError::of(&rejected.error, rejected.revision));
    let gray = handles.values().filter_map(|h| h.gray).max();
    Some(Report {
        revision,
        error,
        gray,
    })
}

/// The reporter of one prefix: writes the latest status whenever it changed or the lease was
/// lost, one write at a time and at most one per [`MIN_WRITE_INTERVAL`] (the latest state
/// then), until the prefix's last slot is dropped or the `Coord` closes.
async fn run(
    ctx: Arc<Context>,
    prefix: String,
    mut handles: watch::Receiver<Handles>,
    turn: Arc<tokio::sync::Mutex<()>>,
) {
    let _turn = turn.lock_owned().await;
    let key = status_key(&prefix, &ctx.instance.name);
    let mut session: Option<Session> = None;
    // A lease the store said it does not know: the next write takes another one.
    let mut stale_lease = None;
    let mut written: Option<Report> = None;
    let mut backoff = INITIAL_BACKOFF;
    let mut failed = false;
    // No write before this instant, unless the lease was lost.
    let mut quiet_until = tokio::time::Instant::now();
    loop {
        let report = aggregate(&handles.borrow_and_update());
        let lease_alive = session.as_ref().is_some_and(Session::is_alive);
        let due = report.filter(|r| !lease_alive || written.as_ref() != Some(r));
        let held_back = due.is_some() && lease_alive && tokio::time::Instant::now() < quiet_until;
        if let Some(report) = due.filter(|_| !held_back) {
            quiet_until = tokio::time::Instant::now() + MIN_WRITE_INTERVAL;
            match write(&ctx, &key, &prefix, &report, stale_lease).await {
                Ok(used) => {
                    session = Some(used);
                    written = Some(report);
                    failed = false;
                    backoff = INITIAL_BACKOFF;
                }
                Err(Error::Closed) => return,
                Err(error) => {
                    if let Error::LeaseNotFound { lease } = error {
                        stale_lease = Some(lease);
                    }
                    tracing::warn!(%error, ?backoff, "writing the instance status failed; retrying");
                    failed = true;
                }
            }
        }
        tokio::select! {
            changed = handles.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            error = lost(session.as_ref()) => {
                tracing::warn!(%error, "status lease lost; writing the status again on a new one");
                session = None;
                written = None;
            }
            () = tokio::time::sleep(backoff), if failed => {
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            () = tokio::time::sleep_until(quiet_until), if held_back => {}
            () = ctx.closed() => return,
        }
    }
    // The last handle on the prefix is gone.
    if let Some(session) = session.filter(Session::is_alive) {
        delete_own(&ctx, &key, &session).await;
    }
}

/// Resolves when `session` is lost; never without one.
async fn lost(session: Option<&Session>) -> Error {
    match session {
        Some(session) => session.lost().await,
        None => std::future::pending().await,
    }
}

/// Writes the status on the `Coord`'s status lease; returns the session it used.
async fn write(
    ctx: &Arc<Context>,
    key: &str,
    prefix: &str,
    report: &Report,
    stale_lease: Option<i64>,
) -> Result<Session> {
    let session = ctx.status.lease(ctx, stale_lease).await?;
    let status = InstanceStatus {
        instance: ctx.instance.name.clone(),
        labels: ctx.instance.labels.clone(),
        prefix: prefix.to_owned(),
        revision: report.revision,
        error: report.error.clone(),
        gray: report.gray,
        release: None,
        updated_ms: now_ms(),
    };
    let value = serde_json::to_vec(&status)
        .map_err(|e| Error::invalid_argument(key, format!("cannot encode the status: {e}")))?;
    let span = tracing::debug_span!("status.write", key, revision = report.revision);
    ctx.status
        .put(key, value, session.lease_id())
        .instrument(span)
        .await?;
    Ok(session)
}

/// The batcher: takes every put waiting (up to [`BATCH`]) and writes them in one
/// transaction; if that fails (a lease another reporter no longer has), each is written
/// alone, so every put gets its own outcome. Ends when the last sender is gone.
async fn write_batches(store: Store, mut pending: mpsc::UnboundedReceiver<PendingPut>) {
    while let Some(first) = pending.recv().await {
        // Let the reporters that are ready run first, so a burst lands in one batch.
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match pending.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let puts = batch
            .iter()
            .map(|p| TxnOp::put_with_lease(p.key.as_str(), p.value.clone(), p.lease));
        let span = tracing::debug_span!("status.batch", puts = batch.len());
        let together = store.txn(Txn::new().and_then(puts)).instrument(span).await;
        if together.is_ok() {
            for put in batch {
                let _ = put.done.send(Ok(()));
            }
            continue;
        }
        for put in batch {
            let alone = store.put(&put.key, put.value, put.lease).await.map(|_| ());
            let _ = put.done.send(alone);
        }
    }
}

/// Deletes `key` if it is still on `session`'s lease.
async fn delete_own(ctx: &Context, key: &str, session: &Session) {
    let txn = Txn::new()
        .when([Compare::lease(key, session.lease_id())])
        .and_then([TxnOp::delete(key)]);
    let span = tracing::debug_span!("status.delete", key);
    if let Err(error) = ctx.status.store.txn(txn).instrument(span).await {
        // Closed or unreachable: the lease's revoke or expiry deletes it instead.
        tracing::debug!(%error, "could not delete the instance status; it goes with its lease");
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

impl StatusReporters {
    /// Reporters that write through their own handle on `store`.
    pub fn new(store: &Store) -> Self {
        StatusReporters {
            store: store.new_handle(),
            prefixes: Mutex::default(),
            lease: tokio::sync::Mutex::default(),
            batcher: Mutex::default(),
        }
    }

    /// Writes one status through the batcher: every put waiting when the batcher is free
    /// goes in one transaction, so a service binding many prefixes at once (each with its
    /// reporter) costs etcd a few transactions, not a put each.
    async fn put(&self, key: &str, value: Vec<u8>, lease: i64) -> Result<()> {
        let (done, outcome) = oneshot::channel();
        let pending = PendingPut {
            key: key.to_owned(),
            value,
            lease,
            done,
        };
        let sender = {
            let mut batcher = lock(&self.batcher);
            match batcher.as_ref().filter(|tx| !tx.is_closed()) {
                Some(tx) => tx.clone(),
                None => {
                    let (tx, rx) = mpsc::unbounded_channel();
                    tokio::spawn(write_batches(self.store.clone(), rx));
                    *batcher = Some(tx.clone());
                    tx
                }
            }
        };
        if let Err(mpsc::error::SendError(pending)) = sender.send(pending) {
            // The batcher just stopped: write this one alone.
            return self.store.put(key, pending.value, lease).await.map(|_| ());
        }
        outcome.await.unwrap_or(Err(Error::Closed))
    }

    /// Refuses every later status write (for `Coord::close`, which revokes the status lease).
    pub fn close(&self) {
        self.store.close();
    }

    /// The status lease, granted now if no task holds a live one (or the one held is
    /// `stale`: the store no longer knows it).
    async fn lease(&self, ctx: &Context, stale: Option<i64>) -> Result<Session> {
        let mut current = self.lease.lock().await;
        if let Some(session) = Session::upgrade(&current) {
            if session.is_alive() && Some(session.lease_id()) != stale {
                return Ok(session);
            }
        }
        let session = ctx.session(STATUS_TTL).await?;
        ctx.track_session("status", ctx.instance.name.clone(), &session);
        *current = session.downgrade();
        Ok(session)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::status::status_key;

    fn state(revision: i64, rejected: Option<i64>) -> HandleState {
        HandleState {
            revision,
            gray: None,
            rejected: rejected.map(|revision| Rejected {
                error: Arc::new(Error::Invalid {
                    key: format!("/p/{revision}"),
                    reason: "no".into(),
                }),
                revision,
            }),
        }
    }

    /// The status key's value and version (writes since it was created), once `done` holds.
    async fn status_when(
        coord: &crate::Coord,
        key: &str,
        done: impl Fn(&InstanceStatus) -> bool,
    ) -> (InstanceStatus, i64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(kv) = coord.store().get(key).await.unwrap().0 {
                let status: InstanceStatus = serde_json::from_slice(&kv.value).unwrap();
                if done(&status) {
                    return (status, kv.version);
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no such status of {key}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_prefixes_bound_at_once_share_transactions() {
        let coord =
            crate::Coord::from_store_as(&crate::Store::in_memory(), crate::Instance::new("me"))
                .unwrap();
        let ctx = &coord.inner.ctx;
        let slots: Vec<StatusSlot> = (0..300)
            .map(|i| slot(ctx, &format!("/p{i}"), state(1, None)).expect("a slot"))
            .collect();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let listed = coord
                .store()
                .range(
                    &crate::store::KeyRange::prefix("/coord/status/"),
                    crate::store::RangeOptions::default().keys_only(),
                )
                .await
                .unwrap();
            if listed.kvs.len() == 300 {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "statuses missing");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The status store's round trips: a lease grant and the batched transactions.
        let trips = ctx.status.store.stats().round_trips();
        assert!(trips <= 20, "300 statuses took {trips} round trips");
        drop(slots);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_of_reports_is_written_as_the_latest_one() {
        let coord =
            crate::Coord::from_store_as(&crate::Store::in_memory(), crate::Instance::new("me"))
                .unwrap();
        let ctx = &coord.inner.ctx;
        let key = status_key("/p", "me");
        let slot = slot(ctx, "/p", state(1, None)).expect("a slot");
        let (_, first) = status_when(&coord, &key, |s| s.revision == 1).await;
        // 200 reloads, each a report, as fast as a follow loop makes them: while one write is
        // in flight the reports pile up, and only the latest is written next.
        for revision in 2..=201 {
            slot.report(state(revision, None));
        }
        let (status, version) = status_when(&coord, &key, |s| s.revision == 201).await;
        assert_eq!(
            (status.instance.as_str(), status.prefix.as_str()),
            ("me", "/p")
        );
        let writes = version - first;
        assert!(
            (1..=3).contains(&writes),
            "200 reports took {writes} writes"
        );

        // A rejection is written with its revision; the last slot's drop deletes the key.
        slot.report(state(201, Some(202)));
        let (status, _) = status_when(&coord, &key, |s| s.error.is_some()).await;
        assert_eq!(status.error.map(|e| e.revision), Some(202));
        drop(slot);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while coord.store().get(&key).await.unwrap().0.is_some() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "status outlived its slot"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[test]
    fn the_status_of_several_handles_is_the_lowest_revision_and_the_latest_rejection() {
        assert_eq!(aggregate(&Handles::new()), None);
        let handles: Handles = [
            (0, state(9, None)),
            (1, state(5, Some(7))),
            (2, state(8, Some(8))),
        ]
        .into_iter()
        .collect();
        let report = aggregate(&handles).expect("handles");
        assert_eq!(report.revision, 5);
        let error = report.error.expect("a rejection");
        assert_eq!((error.key.as_deref(), error.revision), (Some("/p/8"), 8));
        let healthy: Handles = [(0, state(9, None)), (1, state(12, None))]
            .into_iter()
            .collect();
        assert_eq!(
            aggregate(&healthy),
            Some(Report {
                revision: 9,
                error: None,
                gray: None,
            })
        );
    }
}
