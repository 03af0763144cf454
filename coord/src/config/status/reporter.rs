//! The reporter behind status keys: one task per `Coord`, fed by its `Live` handles.
//!
//! Each handle holds a [`StatusSlot`] and puts its state (revision, last rejected change) in
//! it with [`StatusSlot::report`]: a short lock and a wake-up, so a reload never waits for the
//! store. The task wakes, folds the states of every prefix that changed into one
//! [`InstanceStatus`] per prefix and writes them all in one transaction; changes made while a
//! write is in flight are seen together when it returns, and only the latest is written. A
//! lone change is reported at once; each prefix is written at most once per
//! [`MIN_WRITE_INTERVAL`] (a lost lease is written again at once), and the `Coord` sends at
//! most one status transaction per [`MIN_TXN_INTERVAL`].
//!
//! One task, not one per prefix: a service binding a thousand prefixes pays for a map entry
//! per prefix, not for a task, a channel and a key string each.
//!
//! A status that cannot be written (the store refuses it: a role without access to
//! `/coord/status/`, a full database) is retried with backoff for as long as its handles live,
//! and reported meanwhile: each such key is in `Coord::health`'s `failing_writes` from its
//! first failed write until one succeeds (or its prefix is no longer bound), and counted in
//! `coord_status_write_failures_total`.
//!
//! The statuses of a `Coord` share one lease (granted through `Context::session`, so
//! `Coord::close` revokes it, and listed in `health()` as `status`); when it is lost the task
//! takes a new one and writes every status again. When the last slot of a prefix is dropped
//! the task deletes its key (if it is still on its lease). The task ends when no prefix is
//! left and starts again with the next slot.

use crate::clock::now_ms;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::Instrument;

use super::{
    InstanceHealth, InstanceStatus, StatusError, covers_own_status, normalize, status_key,
};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::health::STATUS_WRITE;
use crate::session::Session;
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

/// The least time between two status transactions of a `Coord`: a service binding a thousand
/// prefixes in a second costs etcd a few dozen writes, not one per bind (each of which its
/// binds' linearizable reads would wait behind). The first write after a quiet spell goes at
/// once.
const MIN_TXN_INTERVAL: Duration = Duration::from_millis(50);

/// Operations per transaction: under etcd's 128.
const BATCH: usize = 100;

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

/// The status reporter of one `Coord`.
#[derive(Debug)]
pub(crate) struct StatusReporters {
    /// A handle of its own on the `Coord`'s store: status writes are not the user's writes,
    /// so they do not move the revision the read cache must reach before it answers
    /// (`Store::written_revision`), nor the `Coord`'s round-trip counters.
    store: Store,
    board: Arc<Board>,
}

/// What the handles tell the task.
#[derive(Debug, Default)]
struct Board {
    state: Mutex<BoardState>,
    wake: Notify,
}

#[derive(Debug, Default)]
struct BoardState {
    prefixes: HashMap<Arc<str>, Prefix>,
    /// Prefixes whose handles changed since the task last looked, each once.
    dirty: Vec<Arc<str>>,
    next_slot: u64,
    /// True while the task runs.
    running: bool,
}

#[derive(Debug, Default)]
struct Prefix {
    handles: Handles,
    /// What the application last said of its health on this prefix.
    health: Option<InstanceHealth>,
    /// True while the prefix is in `dirty`.
    queued: bool,
}

impl BoardState {
    /// Marks `prefix` changed. A prefix whose last slot went keeps its entry (without
    /// handles) until the task has seen it, so it is queued once like any other.
    fn touch(&mut self, prefix: &Arc<str>) {
        if let Some(entry) = self.prefixes.get_mut(prefix)
            && !entry.queued
        {
            entry.queued = true;
            self.dirty.push(Arc::clone(prefix));
        }
    }
}

/// One handle's place in its prefix's status. Dropping it removes the handle's state; the
/// prefix's status goes when its last slot does.
#[derive(Debug)]
pub(crate) struct StatusSlot {
    board: Arc<Board>,
    prefix: Arc<str>,
    id: u64,
}

impl StatusSlot {
    /// Publishes this handle's state; the reporter writes it soon. Never waits.
    pub fn report(&self, state: HandleState) {
        {
            let mut board = lock(&self.board.state);
            if let Some(entry) = board.prefixes.get_mut(&self.prefix) {
                entry.handles.insert(self.id, state);
            }
            board.touch(&self.prefix);
        }
        self.board.wake.notify_one();
    }
}

impl Drop for StatusSlot {
    fn drop(&mut self) {
        {
            let mut board = lock(&self.board.state);
            if let Some(entry) = board.prefixes.get_mut(&self.prefix) {
                entry.handles.remove(&self.id);
            }
            board.touch(&self.prefix);
        }
        self.board.wake.notify_one();
    }
}

impl StatusReporters {
    /// Sets what the application says of its health on `prefix`, written with the prefix's
    /// status; false (nothing to write it with) while no `Live` handle is on the prefix.
    pub fn set_health(&self, prefix: &str, health: InstanceHealth) -> bool {
        let prefix = normalize(prefix);
        let found = {
            let mut state = lock(&self.board.state);
            let key = state
                .prefixes
                .get_key_value(prefix)
                .map(|(k, _)| Arc::clone(k));
            match key {
                Some(key) => {
                    if let Some(entry) = state.prefixes.get_mut(&key) {
                        entry.health = Some(health);
                    }
                    state.touch(&key);
                    true
                }
                None => false,
            }
        };
        if found {
            self.board.wake.notify_one();
        }
        found
    }
}

/// A slot in the status of `prefix` for a handle now in `state`, starting the `Coord`'s
/// reporter if it is not running; `None` for a prefix that covers its own status key
/// (reporting would change the handle's own keys, and so on forever).
pub(crate) fn slot(
    ctx: &Arc<Context>,
    reporters: &StatusReporters,
    prefix: &str,
    state: HandleState,
) -> Option<StatusSlot> {
    let prefix = normalize(prefix);
    if covers_own_status(prefix, &ctx.instance.name) {
        tracing::debug!(
            prefix,
            "the prefix covers the status keys; this handle reports no status"
        );
        return None;
    }
    let board = &reporters.board;
    let slot = {
        let mut state_now = lock(&board.state);
        let prefix: Arc<str> = match state_now.prefixes.get_key_value(prefix) {
            Some((key, _)) => Arc::clone(key),
            None => Arc::from(prefix),
        };
        let id = state_now.next_slot;
        state_now.next_slot += 1;
        state_now
            .prefixes
            .entry(Arc::clone(&prefix))
            .or_default()
            .handles
            .insert(id, state);
        state_now.touch(&prefix);
        if !state_now.running {
            state_now.running = true;
            let span = tracing::debug_span!("status.reporter", instance = %ctx.instance.name);
            let (store, board) = (reporters.store.clone(), Arc::clone(board));
            tokio::spawn(run(Arc::clone(ctx), store, board).instrument(span));
        }
        StatusSlot {
            board: Arc::clone(board),
            prefix,
            id,
        }
    };
    board.wake.notify_one();
    Some(slot)
}

/// What the status says, without who and when: a write is due when this changes.
#[derive(Clone, Debug, PartialEq)]
struct Report {
    revision: i64,
    error: Option<StatusError>,
    gray: Option<u64>,
    health: Option<InstanceHealth>,
}

/// The status of a prefix from its handles' states: the lowest revision and the latest
/// rejection. `None` without handles.
fn aggregate(handles: &Handles, health: Option<&InstanceHealth>) -> Option<Report> {
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
        health: health.cloned(),
    })
}

/// The reporter's own view: what each key says and what is still to write.
struct Writer {
    ctx: Arc<Context>,
    /// The reporters' own store handle (see [`StatusReporters`]).
    store: Store,
    session: Option<Session>,
    /// A lease the store said it does not know: the next write takes another one.
    stale_lease: Option<i64>,
    /// What each prefix's key says, and when it was written.
    written: HashMap<Arc<str>, (Report, Instant)>,
    /// Reports not written yet: held back by [`MIN_WRITE_INTERVAL`] or a failed write.
    pending: HashMap<Arc<str>, Report>,
    backoff: Duration,
    /// No write before this instant after a failed one.
    retry_at: Option<Instant>,
    /// When the last transaction was sent.
    last_txn: Option<Instant>,
}

/// The reporter task: writes every prefix's latest status whenever it changed or the lease
/// was lost, until no prefix is left or the `Coord` closes.
async fn run(ctx: Arc<Context>, store: Store, board: Arc<Board>) {
    let mut writer = Writer {
        ctx,
        store,
        session: None,
        stale_lease: None,
        written: HashMap::new(),
        pending: HashMap::new(),
        backoff: INITIAL_BACKOFF,
        retry_at: None,
        last_txn: None,
    };
    loop {
        let gone = writer.take_changes(&board);
        writer.delete(gone).await;
        let next_due = match writer.write_due().await {
            Ok(next_due) => next_due,
            Err(Error::Closed) => break,
            Err(_) => None,
        };
        if writer.pending.is_empty() {
            let mut state = lock(&board.state);
            if state.prefixes.is_empty() && state.dirty.is_empty() {
                state.running = false;
                return;
            }
        }
        tokio::select! {
            () = board.wake.notified() => {}
            // At once if the lease was lost already: every status is written again.
            error = lost(writer.session.as_ref()) => {
                tracing::warn!(%error, "status lease lost; writing every status again on a new one");
                writer.lease_gone();
            }
            () = sleep_until(next_due) => {}
            () = sleep_until(writer.retry_at) => {}
            () = writer.ctx.closed() => break,
        }
    }
    lock(&board.state).running = false;
}

/// Resolves at `at`; never without one.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Resolves when `session` is lost; never without one.
async fn lost(session: Option<&Session>) -> Error {
    match session {
        Some(session) => session.lost().await,
        None => std::future::pending().await,
    }
}

impl Writer {
    fn lease_alive(&self) -> bool {
        self.session.as_ref().is_some_and(Session::is_alive)
    }

    /// The lease is gone, and every key written on it: write them all again on a new one.
    fn lease_gone(&mut self) {
        self.session = None;
        for (prefix, (report, _)) in self.written.drain() {
            // A newer report of the prefix, if one is pending, stays.
            self.pending.entry(prefix).or_insert(report);
        }
    }

    /// Takes the latest report of every prefix that changed; returns the prefixes whose last
    /// handle went and whose key is written.
    fn take_changes(&mut self, board: &Board) -> Vec<Arc<str>> {
        let changed: Vec<(Arc<str>, Option<Report>)> = {
            let mut state = lock(&board.state);
            let dirty = std::mem::take(&mut state.dirty);
            dirty
                .into_iter()
                .map(|prefix| {
                    let report = state.prefixes.get_mut(&prefix).and_then(|entry| {
                        entry.queued = false;
                        aggregate(&entry.handles, entry.health.as_ref())
                    });
                    if report.is_none() {
                        // Its last slot went: the entry goes, and its key below.
                        state.prefixes.remove(&prefix);
                    }
                    (prefix, report)
                })
                .collect()
        };
        let mut gone = Vec::new();
        for (prefix, report) in changed {
            match report {
                Some(report) => {
                    self.pending.insert(prefix, report);
                }
                None => {
                    // No handle left to report: a write that was failing is no longer due.
                    self.ctx
                        .failing_writes
                        .cleared(STATUS_WRITE, &status_key(&prefix, &self.ctx.instance.name));
                    self.pending.remove(&prefix);
                    if self.written.remove(&prefix).is_some() {
                        gone.push(prefix);
                    }
                }
            }
        }
        gone
    }

    /// Writes every pending report that is due, in as few transactions as it takes; returns
    /// when the next held-back one is due.
    async fn write_due(&mut self) -> Result<Option<Instant>> {
        let now = Instant::now();
        let alive = self.lease_alive();
        let written = &self.written;
        // A report the key already holds needs no write while its lease lives.
        self.pending.retain(|prefix, report| {
            !(alive && written.get(prefix).is_some_and(|(w, _)| w == report))
        });
        if self.pending.is_empty() || self.retry_at.is_some_and(|at| now < at) {
            return Ok(None);
        }
        let mut next_due: Option<Instant> = None;
        let mut due = Vec::new();
        for (prefix, report) in &self.pending {
            let quiet_until = written.get(prefix).map(|(_, at)| *at + MIN_WRITE_INTERVAL);
            match quiet_until {
                Some(at) if alive && now < at => {
                    next_due = Some(next_due.map_or(at, |next| next.min(at)));
                }
                _ => due.push((Arc::clone(prefix), report.clone())),
            }
        }
        if due.is_empty() {
            return Ok(next_due);
        }
        if let Some(at) = self
            .last_txn
            .map(|last| last + MIN_TXN_INTERVAL)
            .filter(|at| now < *at)
        {
            return Ok(Some(next_due.map_or(at, |next| next.min(at))));
        }
        self.last_txn = Some(now);
        match self.write(&due).await {
            Ok(session) => {
                self.session = Some(session);
                self.retry_at = None;
                self.backoff = INITIAL_BACKOFF;
                for (prefix, report) in due {
                    self.ctx
                        .failing_writes
                        .cleared(STATUS_WRITE, &status_key(&prefix, &self.ctx.instance.name));
                    self.pending.remove(&prefix);
                    self.written.insert(prefix, (report, now));
                }
                Ok(next_due)
            }
            Err(Error::Closed) => Err(Error::Closed),
            Err(error) => {
                for (prefix, _) in &due {
                    let key = status_key(prefix, &self.ctx.instance.name);
                    self.ctx.failing_writes.failed(STATUS_WRITE, &key, &error);
                }
                crate::metrics::status_write_failed(due.len());
                if let Error::LeaseNotFound { lease } = error {
                    self.stale_lease = Some(lease);
                    self.lease_gone();
                }
                tracing::warn!(%error, backoff = ?self.backoff, "writing the instance statuses failed; retrying");
                self.retry_at = Some(Instant::now() + self.backoff);
                self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                Err(error)
            }
        }
    }

    /// The status lease: the one held while it lives (and the store has not called it
    /// unknown), else a new one.
    async fn lease(&self) -> Result<Session> {
        let held = self
            .session
            .as_ref()
            .filter(|s| s.is_alive() && Some(s.lease_id()) != self.stale_lease);
        if let Some(session) = held {
            return Ok(session.clone());
        }
        let ctx = &self.ctx;
        let session = ctx.session(STATUS_TTL).await?;
        ctx.track_session("status", ctx.instance.name.clone(), &session);
        Ok(session)
    }

    /// Writes `due` on the `Coord`'s status lease; returns the session it used.
    async fn write(&self, due: &[(Arc<str>, Report)]) -> Result<Session> {
        let ctx = &self.ctx;
        let session = self.lease().await?;
        let updated_ms = now_ms();
        let mut puts = Vec::with_capacity(due.len());
        for (prefix, report) in due {
            let key = status_key(prefix, &ctx.instance.name);
            let status = InstanceStatus {
                instance: ctx.instance.name.clone(),
                labels: ctx.instance.labels.clone(),
                prefix: prefix.to_string(),
                revision: report.revision,
                error: report.error.clone(),
                gray: report.gray,
                health: report.health.clone(),
                release: None,
                updated_ms,
            };
            let value = serde_json::to_vec(&status).map_err(|e| {
                Error::invalid_argument(&key, format!("cannot encode the status: {e}"))
            })?;
            puts.push((key, value));
        }
        for chunk in puts.chunks(BATCH) {
            let ops = chunk.iter().map(|(key, value)| {
                TxnOp::put_with_lease(key.as_str(), value.clone(), session.lease_id())
            });
            let span = tracing::debug_span!("status.write", puts = chunk.len());
            self.store
                .txn(Txn::new().and_then(ops))
                .instrument(span)
                .await?;
        }
        Ok(session)
    }

    /// Deletes the keys of `prefixes` that are still on this task's lease (a key on another
    /// lease was written by another process of the same name since).
    async fn delete(&self, prefixes: Vec<Arc<str>>) {
        let Some(session) = self.session.as_ref().filter(|s| s.is_alive()) else {
            // No lease: the keys went with it, or go when it expires.
            return;
        };
        let keys: Vec<String> = prefixes
            .iter()
            .map(|prefix| status_key(prefix, &self.ctx.instance.name))
            .collect();
        let store = &self.store;
        let guarded = |keys: &[String]| {
            Txn::new()
                .when(
                    keys.iter()
                        .map(|key| Compare::lease(key, session.lease_id())),
                )
                .and_then(keys.iter().map(TxnOp::delete))
        };
        for chunk in keys.chunks(BATCH / 2) {
            let span = tracing::debug_span!("status.delete", keys = chunk.len());
            let outcome = store.txn(guarded(chunk)).instrument(span).await;
            match outcome {
                Ok(response) if response.succeeded => {}
                // Some key is on another lease: delete those still ours one by one.
                Ok(_) => {
                    for key in chunk {
                        if let Err(error) = store.txn(guarded(std::slice::from_ref(key))).await {
                            tracing::debug!(%error, key, "could not delete the instance status; it goes with its lease");
                        }
                    }
                }
                // Closed or unreachable: the lease's revoke or expiry deletes them instead.
                Err(error) => {
                    tracing::debug!(%error, "could not delete the instance statuses; they go with their lease");
                }
            }
        }
    }
}

impl StatusReporters {
    /// A reporter that writes through its own handle on `store`.
    pub fn new(store: &Store) -> Self {
        StatusReporters {
            store: store.new_handle(),
            board: Arc::default(),
        }
    }

    /// Refuses every later status write (for `Coord::close`, which revokes the status lease).
    pub fn close(&self) {
        self.store.close();
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
        let reporters = &coord.inner.config_shared.status;
        let slots: Vec<StatusSlot> = (0..300)
            .map(|i| slot(ctx, reporters, &format!("/p{i}"), state(1, None)).expect("a slot"))
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
        let trips = reporters.store.stats().round_trips();
        assert!(trips <= 20, "300 statuses took {trips} round trips");
        drop(slots);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_of_reports_is_written_as_the_latest_one() {
        let coord =
            crate::Coord::from_store_as(&crate::Store::in_memory(), crate::Instance::new("me"))
                .unwrap();
        let ctx = &coord.inner.ctx;
        let reporters = &coord.inner.config_shared.status;
        let key = status_key("/p", "me");
        let slot = slot(ctx, reporters, "/p", state(1, None)).expect("a slot");
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
        until_present(&coord, &key, false).await;
    }

    /// Waits until `key` is absent (`present == false`) or present.
    async fn until_present(coord: &crate::Coord, key: &str, present: bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while coord.store().get(key).await.unwrap().0.is_some() != present {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{key} never became present={present}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lost_status_lease_is_replaced_and_every_status_written_again() {
        let coord =
            crate::Coord::from_store_as(&crate::Store::in_memory(), crate::Instance::new("me"))
                .unwrap();
        let ctx = &coord.inner.ctx;
        let reporters = &coord.inner.config_shared.status;
        let slots: Vec<StatusSlot> = (0..3)
            .map(|i| slot(ctx, reporters, &format!("/p{i}"), state(1, None)).expect("a slot"))
            .collect();
        let keys: Vec<String> = (0..3)
            .map(|i| status_key(&format!("/p{i}"), "me"))
            .collect();
        for key in &keys {
            until_present(&coord, key, true).await;
        }
        let lease = coord.store().get(&keys[0]).await.unwrap().0.unwrap().lease;
        // Someone (an operator, an expiry) takes the lease and with it every status key.
        coord.store().lease_revoke(lease).await.unwrap();
        for key in &keys {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            loop {
                let kv = coord.store().get(key).await.unwrap().0;
                if kv.is_some_and(|kv| kv.lease != lease) {
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{key} not rewritten"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        drop(slots);
        for key in &keys {
            until_present(&coord, key, false).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_prefix_bound_again_after_its_last_handle_went_keeps_its_status() {
        let coord =
            crate::Coord::from_store_as(&crate::Store::in_memory(), crate::Instance::new("me"))
                .unwrap();
        let ctx = &coord.inner.ctx;
        let reporters = &coord.inner.config_shared.status;
        let key = status_key("/p", "me");
        for round in 0..20 {
            let first = slot(ctx, reporters, "/p", state(round, None)).expect("a slot");
            until_present(&coord, &key, true).await;
            // The last handle goes and a new one comes before, or while, the delete is made.
            drop(first);
            let again = slot(ctx, reporters, "/p", state(round + 1, None)).expect("a slot");
            status_when(&coord, &key, |s| s.revision == round + 1).await;
            // Once the reporter has caught up, the key must still be there for the new handle.
            tokio::time::sleep(Duration::from_millis(20)).await;
            until_present(&coord, &key, true).await;
            drop(again);
            until_present(&coord, &key, false).await;
        }
        // With no prefix left the task ends, and the next slot starts it again.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while lock(&reporters.board.state).running {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the reporter never ended"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _last = slot(ctx, reporters, "/p", state(99, None)).expect("a slot");
        status_when(&coord, &key, |s| s.revision == 99).await;
    }

    #[test]
    fn the_status_of_several_handles_is_the_lowest_revision_and_the_latest_rejection() {
        assert_eq!(aggregate(&Handles::new(), None), None);
        let handles: Handles = [
            (0, state(9, None)),
            (1, state(5, Some(7))),
            (2, state(8, Some(8))),
        ]
        .into_iter()
        .collect();
        let report = aggregate(&handles, None).expect("handles");
        assert_eq!(report.revision, 5);
        let error = report.error.expect("a rejection");
        assert_eq!((error.key.as_deref(), error.revision), (Some("/p/8"), 8));
        let healthy: Handles = [(0, state(9, None)), (1, state(12, None))]
            .into_iter()
            .collect();
        assert_eq!(
            aggregate(&healthy, None),
            Some(Report {
                revision: 9,
                error: None,
                gray: None,
                health: None,
            })
        );
    }
}
