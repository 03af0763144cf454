//! The embedded backend: an in-process MVCC store with etcd 3.4's semantics.
//!
//! `MemoryStore` is what [`Store::in_memory`](super::Store::in_memory) runs on. The quickstart,
//! the examples and most tests use it instead of a real etcd, and the conformance suite checks
//! that it answers like one.
//!
//! What it promises, as etcd does:
//! - one global revision, 1 for an empty store; every write that changes something takes the
//!   next one, and a transaction takes exactly one for all its writes (a delete of nothing and a
//!   read-only transaction take none);
//! - reads at any revision from the compact revision (inclusive) to the current one;
//! - watches get all events of one revision in one response, in revision order; a watch that
//!   starts in the past replays the history and continues live with no gap and no duplicate;
//!   nothing is ever dropped (each watch has an unbounded queue, drained by its stream);
//! - leases expire on their own, on tokio's clock (so tests with paused time control them), and
//!   an expired or revoked lease deletes all its keys in one revision. Every operation first
//!   expires the leases that are due, so answers are exact even before the background reaper
//!   has run;
//! - progress notifications as etcd sends them to a watch that asks for them (coord's etcd
//!   backend always does): every [`PROGRESS_NOTIFY_INTERVAL`], on tokio's clock, a watch that
//!   was sent nothing since the last such tick gets an empty [`WatchResponse`] carrying the
//!   store's current revision.
//!
//! What it does not do: persist anything (dropping the last handle loses the data and ends every
//! watch stream), share state with another process, or compact on its own (the history grows
//! until `compact` is called, as with etcd's default settings). Leases expire exactly at their
//! deadline, where etcd looks for expired leases every 500 ms.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio::time::{Duration, Instant, MissedTickBehavior};
use tokio_stream::wrappers::UnboundedReceiverStream;

use super::{
    Compare, DeleteResponse, Event, EventKind, GetResponse, KeyRange, KeyValue, LeaseGrant,
    LeaseTtl, PutResponse, RangeOptions, Status, Txn, TxnOp, TxnOpResponse, TxnResponse,
    WatchResponse, WatchStream,
};
use crate::error::{Error, Result};

/// etcd's smallest lease TTL in seconds with its default election timeout; a shorter TTL is
/// raised to it silently.
pub(crate) const MIN_LEASE_TTL: i64 = 2;

/// etcd's default `--experimental-watch-progress-notify-interval`: how often a watch that was
/// sent nothing hears the current revision.
pub(crate) const PROGRESS_NOTIFY_INTERVAL: Duration = Duration::from_secs(600);

/// etcd's largest lease TTL in seconds (`lease.MaxLeaseTTL`).
const MAX_LEASE_TTL: i64 = 9_000_000_000;

/// Bytes counted per stored key-value besides its key and value, for the `db_size` estimate.
const ENTRY_OVERHEAD: usize = 64;

/// A handle to one in-memory store; clones share it.
#[derive(Clone)]
pub(crate) struct MemoryStore {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the lease reaper when a lease may now expire sooner, or when the store is gone.
    wake_reaper: Arc<Notify>,
    /// The lease reaper, once a lease has been granted inside a runtime.
    reaper: Mutex<Option<JoinHandle<()>>>,
    /// The progress notifier, once a watch has been opened.
    progress: Mutex<Option<JoinHandle<()>>>,
    /// What `status` reports as the cluster ID: random, so two stores never share one.
    cluster_id: u64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing under this lock can panic halfway through a write (no user code runs there, no
        // unwrap, no indexing), so a poisoned lock still guards a consistent state.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // The reaper holds only a `Weak`; wake it so it finds the store gone and exits.
        self.wake_reaper.notify_one();
        // The notifier would only find out at its next tick.
        let progress = self
            .progress
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(task) = progress.take() {
            task.abort();
        }
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    pub(crate) fn new() -> Self {
        MemoryStore {
            shared: Arc::new(Shared {
                state: Mutex::new(State::new()),
                wake_reaper: Arc::new(Notify::new()),
                reaper: Mutex::new(None),
                progress: Mutex::new(None),
                cluster_id: rand::random(),
            }),
        }
    }

    /// Locks the state after expiring the leases that are due, so every answer is exact even
    /// when the reaper has not run yet.
    fn state(&self) -> MutexGuard<'_, State> {
        let mut state = self.shared.lock();
        state.expire_leases(Instant::now());
        state
    }

    pub(crate) async fn range(
        &self,
        range: &KeyRange,
        options: RangeOptions,
    ) -> Result<GetResponse> {
        let state = self.state();
        state.check_range_revision(range, options.revision)?;
        Ok(state.read(range, options, &[]))
    }

    pub(crate) async fn put(&self, key: &str, value: Vec<u8>, lease: i64) -> Result<PutResponse> {
        let mut state = self.state();
        state.check_lease(lease)?;
        let mut changes = Vec::with_capacity(1);
        let response = state.put(key, value, lease, &mut changes);
        state.commit(changes);
        Ok(response)
    }

    pub(crate) async fn delete(&self, range: &KeyRange) -> Result<DeleteResponse> {
        let mut state = self.state();
        let mut changes = Vec::new();
        let response = state.delete(range, &mut changes);
        state.commit(changes);
        Ok(response)
    }

    pub(crate) async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        // etcd checks both branches for conflicting keys before it looks at the store.
        check_txn_keys(&txn.success)?;
        check_txn_keys(&txn.failure)?;
        self.state().txn(txn)
    }

    pub(crate) async fn lease_grant(&self, ttl: i64) -> Result<LeaseGrant> {
        if ttl > MAX_LEASE_TTL {
            return Err(Error::invalid_argument(
                "ttl",
                format!("too large lease TTL: {ttl} seconds (etcd allows at most {MAX_LEASE_TTL})"),
            ));
        }
        let ttl = ttl.max(MIN_LEASE_TTL);
        let grant = {
            let mut state = self.state();
            let id = state.new_lease_id();
            state.leases.insert(
                id,
                Lease {
                    granted_ttl: ttl,
                    deadline: deadline_after(ttl),
                    keys: BTreeSet::new(),
                },
            );
            LeaseGrant {
                id,
                ttl,
                revision: state.revision,
            }
        };
        self.ensure_reaper();
        // The new lease may be due before the deadline the reaper sleeps until.
        self.shared.wake_reaper.notify_one();
        Ok(grant)
    }

    pub(crate) async fn lease_keep_alive(&self, id: i64) -> Result<i64> {
        let mut state = self.state();
        let lease = state
            .leases
            .get_mut(&id)
            .ok_or(Error::LeaseNotFound { lease: id })?;
        // A later deadline needs no wake-up: the reaper wakes at the old one and sleeps again.
        lease.deadline = deadline_after(lease.granted_ttl);
        Ok(lease.granted_ttl)
    }

    /// Revokes the lease; returns the store revision after it (its keys' deletion).
    pub(crate) async fn lease_revoke(&self, id: i64) -> Result<i64> {
        let mut state = self.state();
        if state.revoke(id) {
            Ok(state.revision)
        } else {
            Err(Error::LeaseNotFound { lease: id })
        }
    }

    pub(crate) async fn lease_ttl(&self, id: i64) -> Result<LeaseTtl> {
        let state = self.state();
        Ok(match state.leases.get(&id) {
            Some(lease) => {
                let left = lease.deadline.saturating_duration_since(Instant::now());
                LeaseTtl {
                    id,
                    // etcd truncates the remaining time to whole seconds.
                    ttl: i64::try_from(left.as_secs()).unwrap_or(i64::MAX),
                    granted_ttl: lease.granted_ttl,
                    keys: lease.keys.iter().cloned().collect(),
                }
            }
            None => LeaseTtl {
                id,
                ttl: -1,
                granted_ttl: 0,
                keys: Vec::new(),
            },
        })
    }

    pub(crate) async fn watch(&self, range: &KeyRange, start_revision: i64) -> Result<WatchStream> {
        let mut state = self.state();
        // etcd 3.4 (watchable store): a watch may start AT the compact revision, not before it.
        if start_revision != 0 && start_revision < state.compact_revision {
            let error = Error::Compacted {
                key: range.as_str().to_owned(),
                requested: start_revision,
                compact_revision: state.compact_revision,
            };
            return Ok(Box::pin(futures::stream::iter([Err(error)])));
        }
        let from = if start_revision == 0 {
            state.revision + 1
        } else {
            start_revision
        };
        let (tx, rx) = mpsc::unbounded_channel();
        // Replaying and registering under one lock: no commit can fall between the two.
        let first = state
            .history
            .partition_point(|commit| commit.revision < from);
        let mut quiet = true;
        for commit in state.history.range(first..) {
            if let Some(response) = commit.events_in(range) {
                // Cannot fail: `rx` is alive until it is returned below.
                let _ = tx.send(Ok(response));
                quiet = false;
            }
        }
        state.watchers.push(Watcher {
            range: range.clone(),
            from,
            tx,
            quiet,
        });
        drop(state);
        self.ensure_progress_notifier();
        Ok(Box::pin(UnboundedReceiverStream::new(rx)))
    }

    pub(crate) async fn compact(&self, revision: i64) -> Result<()> {
        self.state().compact(revision)
    }

    pub(crate) async fn status(&self) -> Result<Status> {
        let state = self.state();
        Ok(Status {
            revision: state.revision,
            version: "embedded".into(),
            leader: 0,
            member_id: 0,
            db_size: state.db_size(),
            cluster_id: self.shared.cluster_id,
        })
    }

    /// The cluster ID `status` reports.
    pub(crate) fn cluster_id(&self) -> u64 {
        self.shared.cluster_id
    }

    /// Starts the lease reaper on the runtime of a `lease_grant` (`new` may run outside any
    /// runtime), and again if that runtime has shut down. Until a reaper runs, leases still
    /// expire, lazily, at the next operation.
    fn ensure_reaper(&self) {
        keep_running(&self.shared.reaper, || {
            reap_leases(
                Arc::downgrade(&self.shared),
                Arc::clone(&self.shared.wake_reaper),
            )
        });
    }
}

/// Spawns `task()` on the current runtime unless the task in `slot` still runs. The store's
/// background tasks only finish on their own once the store is gone, so a finished one means
/// its runtime shut down; outside any runtime nothing is spawned (the next call tries again).
fn keep_running<F>(slot: &Mutex<Option<JoinHandle<()>>>, task: impl FnOnce() -> F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let mut running = slot.lock().unwrap_or_else(PoisonError::into_inner);
    if running.as_ref().is_some_and(|task| !task.is_finished()) {
        return;
    }
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        *running = Some(runtime.spawn(task()));
    }
}

impl MemoryStore {
    /// Starts the progress notifier on the runtime of a `watch`, and again if that runtime has
    /// shut down (as [`ensure_reaper`](Self::ensure_reaper) does).
    fn ensure_progress_notifier(&self) {
        keep_running(&self.shared.progress, || {
            notify_progress(Arc::downgrade(&self.shared))
        });
    }
}

/// Sends progress notifications every [`PROGRESS_NOTIFY_INTERVAL`], as etcd's watch server
/// does: one ticker for all watches, and a tick reaches only the watches sent nothing since
/// the previous one. Exits once the store is dropped.
async fn notify_progress(store: Weak<Shared>) {
    let mut ticks = tokio::time::interval_at(
        Instant::now() + PROGRESS_NOTIFY_INTERVAL,
        PROGRESS_NOTIFY_INTERVAL,
    );
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(shared) = store.upgrade() else {
            return;
        };
        let mut state = shared.lock();
        // The revision announced must count the expiries that are due.
        state.expire_leases(Instant::now());
        let revision = state.revision;
        state
            .watchers
            .retain_mut(|watcher| watcher.progress(revision));
    }
}

/// Expires leases at their deadline even when nobody calls the store, so their keys vanish and
/// watchers see the deletes on time. Exits once the store is dropped.
async fn reap_leases(store: Weak<Shared>, wake: Arc<Notify>) {
    loop {
        // Registered before reading the deadline, so a grant in between is not missed.
        let woken = wake.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        let next_deadline = {
            let Some(shared) = store.upgrade() else {
                return;
            };
            let mut state = shared.lock();
            state.expire_leases(Instant::now());
            state.next_deadline()
        };
        match next_deadline {
            Some(deadline) => {
                tokio::select! {
                    () = tokio::time::sleep_until(deadline) => {}
                    () = &mut woken => {}
                }
            }
            None => woken.await,
        }
    }
}

fn deadline_after(ttl: i64) -> Instant {
    // `ttl` is at most MAX_LEASE_TTL (about 285 years), which an Instant can hold.
    Instant::now() + Duration::from_secs(u64::try_from(ttl).unwrap_or(0))
}

fn future_revision(requested: i64, current: i64) -> Error {
    Error::invalid_argument(
        "revision",
        format!("required revision {requested} is a future revision (current revision {current})"),
    )
}

fn to_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// etcd refuses a branch that puts a key twice, or puts a key it also deletes ("duplicate key
/// given in txn request"), before anything runs.
fn check_txn_keys(ops: &[TxnOp]) -> Result<()> {
    let deletes: Vec<&KeyRange> = ops
        .iter()
        .filter_map(|op| match op {
            TxnOp::Delete(range) => Some(range),
            _ => None,
        })
        .collect();
    let mut puts = HashSet::new();
    for op in ops {
        let TxnOp::Put { key, .. } = op else {
            continue;
        };
        let deleted = deletes.iter().any(|range| match range {
            // An empty prefix goes to etcd as the range ["\0", "\0"), which etcd's overlap check
            // sees as empty although the delete covers every key.
            KeyRange::Prefix(prefix) if prefix.is_empty() => false,
            range => range.contains(key),
        });
        if deleted || !puts.insert(key.as_str()) {
            return Err(Error::invalid_argument(
                key.as_str(),
                "duplicate key given in txn request",
            ));
        }
    }
    Ok(())
}

/// Everything the store holds, behind one lock.
struct State {
    revision: i64,
    /// Reads and watches before this revision fail; -1 until the first compaction, as in etcd.
    compact_revision: i64,
    kvs: BTreeMap<String, KeyValue>,
    /// Every commit from the compact revision on, oldest first: the source of past reads (undo
    /// from the current state) and of watch replays.
    history: VecDeque<Commit>,
    leases: HashMap<i64, Lease>,
    watchers: Vec<Watcher>,
}

/// The changes of one revision.
struct Commit {
    revision: i64,
    changes: Vec<Change>,
}

struct Change {
    event: Event,
    /// The key before the change; `None` if it did not exist.
    prev: Option<KeyValue>,
}

struct Lease {
    granted_ttl: i64,
    deadline: Instant,
    /// Invariant: exactly the stored keys whose `lease` is this lease.
    keys: BTreeSet<String>,
}

struct Watcher {
    range: KeyRange,
    /// The first revision this watcher wants.
    from: i64,
    tx: mpsc::UnboundedSender<Result<WatchResponse>>,
    /// Sent nothing since the last progress tick.
    quiet: bool,
}

impl Commit {
    /// The events of this commit that `range` covers, as one watch response.
    fn events_in(&self, range: &KeyRange) -> Option<WatchResponse> {
        let events: Vec<Event> = self
            .changes
            .iter()
            .filter(|change| range.contains(&change.event.kv.key))
            .map(|change| change.event.clone())
            .collect();
        (!events.is_empty()).then_some(WatchResponse {
            revision: self.revision,
            events,
        })
    }
}

impl Watcher {
    /// Sends this watcher its part of `commit`; false once its stream is gone.
    fn deliver(&mut self, commit: &Commit) -> bool {
        if commit.revision >= self.from
            && let Some(response) = commit.events_in(&self.range)
        {
            self.quiet = false;
            return self.tx.send(Ok(response)).is_ok();
        }
        !self.tx.is_closed()
    }

    /// At a progress tick: tells a watcher sent nothing since the last tick that it is current
    /// at `revision`. False once its stream is gone.
    fn progress(&mut self, revision: i64) -> bool {
        if std::mem::replace(&mut self.quiet, true) {
            let notification = WatchResponse {
                revision,
                events: Vec::new(),
            };
            return self.tx.send(Ok(notification)).is_ok();
        }
        !self.tx.is_closed()
    }
}

impl State {
    fn new() -> Self {
        State {
            revision: 1,
            compact_revision: -1,
            kvs: BTreeMap::new(),
            history: VecDeque::new(),
            leases: HashMap::new(),
            watchers: Vec::new(),
        }
    }

    /// The stored keys `range` covers, in key order.
    fn scan<'a>(&'a self, range: &'a KeyRange) -> impl Iterator<Item = &'a KeyValue> + 'a {
        // The keys a range covers are contiguous in key order and start at its key or prefix.
        self.kvs
            .range::<str, _>((Bound::Included(range.as_str()), Bound::Unbounded))
            .map(|(_, kv)| kv)
            .take_while(move |kv| range.contains(&kv.key))
    }

    fn compacted(&self, range: &KeyRange, requested: i64) -> Error {
        Error::Compacted {
            key: range.as_str().to_owned(),
            requested,
            compact_revision: self.compact_revision,
        }
    }

    /// etcd's check of a plain read: a future revision first; 0 or less then means the latest.
    fn check_range_revision(&self, range: &KeyRange, revision: i64) -> Result<()> {
        if revision > self.revision {
            return Err(future_revision(revision, self.revision));
        }
        if revision > 0 && revision < self.compact_revision {
            return Err(self.compacted(range, revision));
        }
        Ok(())
    }

    /// etcd's check of the reads of a transaction, made before it runs: any revision but 0
    /// below the compact revision fails.
    fn check_txn_read_revision(&self, range: &KeyRange, revision: i64) -> Result<()> {
        if revision == 0 {
            return Ok(());
        }
        if revision > self.revision {
            return Err(future_revision(revision, self.revision));
        }
        if revision < self.compact_revision {
            return Err(self.compacted(range, revision));
        }
        Ok(())
    }

    fn check_lease(&self, lease: i64) -> Result<()> {
        if lease == 0 || self.leases.contains_key(&lease) {
            Ok(())
        } else {
            Err(Error::LeaseNotFound { lease })
        }
    }

    /// Answers a read. `pending` are the changes an open transaction has already applied to
    /// `kvs`: a read at the latest revision sees them, a read at an explicit revision does not.
    fn read(&self, range: &KeyRange, options: RangeOptions, pending: &[Change]) -> GetResponse {
        // Like etcd's write transaction: its reads happen at the revision it is writing.
        let latest = if pending.is_empty() {
            self.revision
        } else {
            self.revision + 1
        };
        let limit = match usize::try_from(options.limit) {
            Ok(limit) if limit > 0 => limit,
            _ => usize::MAX,
        };
        // As etcd: `count` is of the whole range, the filter and the limit apply to the keys.
        let since = options.min_mod_revision;
        let limit = if options.count_only { 0 } else { limit };
        let (count, mut kvs): (usize, Vec<KeyValue>) =
            if options.revision <= 0 || options.revision >= latest {
                let count = self.scan(range).count();
                let kvs = self.scan(range).filter(|kv| kv.mod_revision >= since);
                (count, kvs.take(limit).cloned().collect())
            } else {
                let view = self.snapshot(range, options.revision, pending);
                let count = view.len();
                let kvs = view.into_values().filter(|kv| kv.mod_revision >= since);
                (count, kvs.take(limit).collect())
            };
        if options.keys_only {
            for kv in &mut kvs {
                kv.value = Vec::new();
            }
        }
        GetResponse {
            kvs,
            count: to_i64(count),
            revision: latest,
        }
    }

    /// The keys `range` covered at `revision`, rebuilt by undoing every later change.
    fn snapshot(
        &self,
        range: &KeyRange,
        revision: i64,
        pending: &[Change],
    ) -> BTreeMap<String, KeyValue> {
        let mut view: BTreeMap<String, KeyValue> = self
            .scan(range)
            .map(|kv| (kv.key.clone(), kv.clone()))
            .collect();
        let later = self
            .history
            .iter()
            .rev()
            .take_while(|commit| commit.revision > revision)
            .flat_map(|commit| commit.changes.iter().rev());
        for change in pending.iter().rev().chain(later) {
            let key = &change.event.kv.key;
            if !range.contains(key) {
                continue;
            }
            match &change.prev {
                Some(prev) => view.insert(key.clone(), prev.clone()),
                None => view.remove(key),
            };
        }
        view
    }

    /// Writes a key at the next revision; the caller commits `changes`.
    fn put(
        &mut self,
        key: &str,
        value: Vec<u8>,
        lease: i64,
        changes: &mut Vec<Change>,
    ) -> PutResponse {
        let revision = self.revision + 1;
        let prev = self.kvs.get(key).cloned();
        if let Some(prev) = &prev {
            self.detach(prev);
        }
        if let Some(attached) = self.leases.get_mut(&lease) {
            attached.keys.insert(key.to_owned());
        }
        let kv = KeyValue {
            key: key.to_owned(),
            value,
            create_revision: prev.as_ref().map_or(revision, |p| p.create_revision),
            mod_revision: revision,
            version: prev.as_ref().map_or(0, |p| p.version) + 1,
            lease,
        };
        self.kvs.insert(key.to_owned(), kv.clone());
        changes.push(Change {
            event: Event {
                kind: EventKind::Put,
                kv,
            },
            prev: prev.clone(),
        });
        PutResponse {
            revision,
            prev_kv: prev,
        }
    }

    /// Deletes the keys `range` covers at the next revision; the caller commits `changes`.
    fn delete(&mut self, range: &KeyRange, changes: &mut Vec<Change>) -> DeleteResponse {
        let revision = self.revision + 1;
        let keys: Vec<String> = self.scan(range).map(|kv| kv.key.clone()).collect();
        let mut prev_kvs = Vec::with_capacity(keys.len());
        for key in keys {
            let Some(prev) = self.kvs.remove(&key) else {
                continue;
            };
            self.detach(&prev);
            changes.push(Change {
                event: Event {
                    kind: EventKind::Delete,
                    kv: KeyValue {
                        key,
                        mod_revision: revision,
                        ..KeyValue::default()
                    },
                },
                prev: Some(prev.clone()),
            });
            prev_kvs.push(prev);
        }
        DeleteResponse {
            // etcd: the revision being written once anything changed, else the current one.
            revision: if changes.is_empty() {
                self.revision
            } else {
                revision
            },
            deleted: to_i64(prev_kvs.len()),
            prev_kvs,
        }
    }

    fn detach(&mut self, kv: &KeyValue) {
        if let Some(lease) = self.leases.get_mut(&kv.lease) {
            lease.keys.remove(&kv.key);
        }
    }

    /// Makes `changes` one new revision and tells the watchers; nothing at all if empty.
    fn commit(&mut self, changes: Vec<Change>) {
        if changes.is_empty() {
            return;
        }
        self.revision += 1;
        let commit = Commit {
            revision: self.revision,
            changes,
        };
        self.watchers.retain_mut(|watcher| watcher.deliver(&commit));
        self.history.push_back(commit);
    }

    /// etcd's `applyCompare`: a prefix compare must hold for every key under it, and for a
    /// missing key if there are none.
    fn holds(&self, compare: &Compare) -> bool {
        if !compare.prefix {
            return compare.matches(self.kvs.get(&compare.key));
        }
        let mut under = self
            .kvs
            .range(compare.key.clone()..)
            .take_while(|(key, _)| key.starts_with(&compare.key))
            .peekable();
        if under.peek().is_none() {
            return compare.matches(None);
        }
        under.all(|(_, kv)| compare.matches(Some(kv)))
    }

    fn txn(&mut self, txn: Txn) -> Result<TxnResponse> {
        let succeeded = txn.compares.iter().all(|compare| self.holds(compare));
        let ops = if succeeded { txn.success } else { txn.failure };
        // Checked before anything runs, puts before reads as etcd does, so a refused
        // transaction changes nothing.
        for op in &ops {
            if let TxnOp::Put { lease, .. } = op {
                self.check_lease(*lease)?;
            }
        }
        for op in &ops {
            if let TxnOp::Get(range, options) = op {
                self.check_txn_read_revision(range, options.revision)?;
            }
        }
        let mut changes = Vec::new();
        let responses = ops
            .into_iter()
            .map(|op| match op {
                // No previous values in a transaction, as the etcd backend: see `TxnOpResponse`.
                TxnOp::Put { key, value, lease } => TxnOpResponse::Put(PutResponse {
                    prev_kv: None,
                    ..self.put(&key, value, lease, &mut changes)
                }),
                TxnOp::Delete(range) => TxnOpResponse::Delete(DeleteResponse {
                    prev_kvs: Vec::new(),
                    ..self.delete(&range, &mut changes)
                }),
                TxnOp::Get(range, options) => {
                    TxnOpResponse::Get(self.read(&range, options, &changes))
                }
            })
            .collect();
        self.commit(changes);
        Ok(TxnResponse {
            succeeded,
            revision: self.revision,
            responses,
        })
    }

    fn new_lease_id(&self) -> i64 {
        loop {
            // Positive, like etcd's: 0 means "no lease".
            let id = rand::random::<i64>() & i64::MAX;
            if id != 0 && !self.leases.contains_key(&id) {
                return id;
            }
        }
    }

    /// Revokes a lease, deleting its keys in one revision (in key order, as etcd does).
    /// False if there is no such lease.
    fn revoke(&mut self, id: i64) -> bool {
        let Some(lease) = self.leases.remove(&id) else {
            return false;
        };
        let mut changes = Vec::with_capacity(lease.keys.len());
        for key in lease.keys {
            self.delete(&KeyRange::Key(key), &mut changes);
        }
        self.commit(changes);
        true
    }

    /// Revokes every lease due at `now`, earliest deadline first.
    fn expire_leases(&mut self, now: Instant) {
        let mut due: Vec<(Instant, i64)> = self
            .leases
            .iter()
            .filter(|(_, lease)| lease.deadline <= now)
            .map(|(id, lease)| (lease.deadline, *id))
            .collect();
        due.sort_unstable();
        for (_, id) in due {
            let keys = self.leases.get(&id).map_or(0, |lease| lease.keys.len());
            self.revoke(id);
            tracing::debug!(lease = id, keys, "lease expired");
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.leases.values().map(|lease| lease.deadline).min()
    }

    fn compact(&mut self, revision: i64) -> Result<()> {
        // etcd checks in this order: already compacted, then future.
        if revision <= self.compact_revision {
            return Err(Error::Compacted {
                key: String::new(),
                requested: revision,
                compact_revision: self.compact_revision,
            });
        }
        if revision > self.revision {
            return Err(future_revision(revision, self.revision));
        }
        self.compact_revision = revision;
        // The commit AT the compact revision stays: it can still be read and watched, including
        // its deletes (etcd keeps that tombstone since etcd-io/etcd#18274).
        let obsolete = self
            .history
            .partition_point(|commit| commit.revision < revision);
        self.history.drain(..obsolete);
        Ok(())
    }

    fn db_size(&self) -> i64 {
        let size = |kv: &KeyValue| kv.key.len() + kv.value.len() + ENTRY_OVERHEAD;
        let live: usize = self.kvs.values().map(size).sum();
        let history: usize = self
            .history
            .iter()
            .flat_map(|commit| &commit.changes)
            .map(|change| size(&change.event.kv) + change.prev.as_ref().map_or(0, size))
            .sum();
        to_i64(live + history)
    }
}

#[cfg(test)]
mod tests;
