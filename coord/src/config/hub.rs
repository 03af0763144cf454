//! One watch per watched range, shared by every `Live` handle on that range.
//!
//! The hub keeps, per key range, a task that runs a [`ResilientWatch`] and publishes the
//! range's raw state as a [`RangeSnapshot`] after every revision. Handles subscribe to it; when the
//! last subscriber is dropped the task stops and the store watch closes (the sharing itself is
//! [`SharedWatches`]). So a thousand `Live` handles on one prefix are one store watch, and on
//! the etcd backend the store watches of many prefixes share one gRPC stream (see
//! `store::etcd`).
//!
//! After a break the range is listed again before the watch resumes (one range read per
//! watched range and reconnect), so its snapshot is marked current again as soon as the store
//! answers, not only at the range's next change: the read cache trusts it from then on.
//!
//! With a snapshot directory (offline start, see [`super::offline`]), a range whose first
//! list fails because the store cannot be reached may start from what the caller names
//! instead ([`Offline`]): the prefix's snapshot on disk, or nothing yet. It then publishes
//! that state marked disconnected, and its task keeps listing with backoff; the first list
//! that succeeds replaces the whole state (keys deleted meanwhile go, values equal to the
//! disk's keep their `Arc`s), marked connected.

use std::sync::Arc;

use tokio::sync::watch;
use tracing::Instrument;

use crate::config::offline::SnapshotDir;
use crate::config::raw::{RawValue, RawValues};
use crate::error::{Error, Result};
use crate::shared_watch::{SharedWatch, SharedWatches};
use crate::store::{EventKind, KeyRange, Store};
use crate::watch::{ResilientWatch, WatchEvent};

/// The raw state of a range at one revision. Cloning it is O(1).
#[derive(Clone, Debug, Default)]
pub(crate) struct RangeSnapshot {
    /// 0 until the first list has been read.
    pub revision: i64,
    /// Full key → raw value.
    pub values: RawValues,
    /// Which keys the latest revisions changed, so a handle that skipped snapshots can still
    /// learn what moved since the one it built from without comparing whole maps.
    pub changes: ChangeLog,
    /// False from the moment the watch breaks until the range has been listed again after
    /// it reconnects: meanwhile the values may be behind. True again with the relist's
    /// snapshot, whether or not anything changed (the watch resumes right after it).
    pub connected: bool,
}

/// The keys changed by a range's latest revisions: how a `Live` with map fields finds the few
/// entries to re-read among thousands (a watch channel keeps only the latest snapshot, so a
/// handle may have skipped some). Bounded: it keeps about [`ChangeLog::KEEP`] keys, and a
/// handle further behind than that builds from scratch.
#[derive(Clone, Debug, Default)]
pub(crate) struct ChangeLog {
    /// The changes after any revision from `floor` on are all in `log`.
    floor: i64,
    /// Revision → the keys put or deleted at it.
    log: imbl::OrdMap<i64, Arc<[String]>>,
    /// How many keys `log` holds.
    keys: usize,
}

impl ChangeLog {
    /// Keys kept: a few pages of changes, for handles that fell behind a burst.
    const KEEP: usize = 4096;

    /// A log that knows nothing before `revision`.
    pub fn starting_at(revision: i64) -> Self {
        let mut log = ChangeLog::default();
        log.reset(revision);
        log
    }

    /// Forgets everything before `revision` (a fresh list of the range).
    fn reset(&mut self, revision: i64) {
        *self = ChangeLog {
            floor: revision,
            ..ChangeLog::default()
        };
    }

    /// Records the keys `revision` changed; O(log n).
    fn record(&mut self, revision: i64, keys: Vec<String>) {
        if keys.is_empty() {
            return;
        }
        self.keys += keys.len();
        self.log.insert(revision, keys.into());
        while self.keys > Self::KEEP {
            let Some(oldest) = self.log.get_min().map(|(revision, _)| *revision) else {
                break;
            };
            let Some(keys) = self.log.remove(&oldest) else {
                break;
            };
            self.keys -= keys.len();
            self.floor = self.floor.max(oldest);
        }
    }

    /// The keys changed after `revision`, or `None` if that is no longer known.
    pub fn since(&self, revision: i64) -> Option<std::collections::BTreeSet<String>> {
        if revision < self.floor {
            return None;
        }
        let after = revision.checked_add(1)?;
        Some(
            self.log
                .range(after..)
                .flat_map(|(_, keys)| keys.iter().cloned())
                .collect(),
        )
    }
}

/// What the shared watch of one range publishes: its latest snapshot.
#[derive(Debug)]
pub(crate) struct RangeState {
    rx: watch::Receiver<RangeSnapshot>,
}

impl RangeState {
    /// A receiver whose current value is the latest snapshot.
    pub fn subscribe(&self) -> watch::Receiver<RangeSnapshot> {
        self.rx.clone()
    }
}

/// A watched range. Dropping the last `Arc` stops its watch.
pub(crate) type RangeWatch = SharedWatch<RangeState>;

/// The shared watches of one `Coord`.
#[derive(Debug)]
pub(crate) struct WatchHub {
    store: Store,
    ranges: SharedWatches<KeyRange, RangeState>,
    /// How often each watched range is relisted in full (`None`: never).
    sync_interval: Option<std::time::Duration>,
    /// Where bound prefixes keep their last good values, with `ClientConfig::snapshot_dir`.
    snapshots: std::sync::OnceLock<Arc<SnapshotDir>>,
}

/// What a range starts from if its first list fails because the store cannot be reached
/// (only with a snapshot directory; without one the list's error is returned).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Offline<'a> {
    /// Nothing: the error is returned.
    Fail,
    /// An empty state at revision 0 (the gray releases: none known until the store answers).
    Empty,
    /// The snapshot of this prefix on disk, if a good one is there; else the error.
    Disk(&'a str),
}

impl WatchHub {
    pub fn new(store: Store, sync_interval: Option<std::time::Duration>) -> Self {
        WatchHub {
            store,
            ranges: SharedWatches::default(),
            sync_interval: sync_interval.filter(|i| !i.is_zero()),
            snapshots: std::sync::OnceLock::new(),
        }
    }

    /// Keeps snapshots of bound prefixes in `dir` (opened and checked by the caller) from now
    /// on, and starts ranges from them when the store cannot be reached. Set once, as the
    /// `Coord` is built; a second call changes nothing.
    pub fn keep_snapshots(&self, dir: SnapshotDir) {
        let _ = self.snapshots.set(Arc::new(dir));
    }

    /// The snapshot directory, if there is one.
    pub fn snapshots(&self) -> Option<&Arc<SnapshotDir>> {
        self.snapshots.get()
    }

    /// Stops every range's watch (for `Coord::close`): handles keep their last snapshot and
    /// see no more changes.
    pub fn close(&self) {
        self.ranges.close();
        if let Some(dir) = self.snapshots() {
            dir.close();
        }
    }

    /// Ranges being watched right now.
    pub fn watched_ranges(&self) -> usize {
        self.ranges.len()
    }

    /// The shared watch of `range`, started if needed, with a receiver that has seen the
    /// returned first snapshot. With `current`, that snapshot includes every write this
    /// `Coord` made before the call (a lagging shared watch costs one range read). If this
    /// call starts the watch and its first list fails for want of the store, `offline` says
    /// what to start from instead (with a snapshot directory).
    ///
    /// # Errors
    ///
    /// The error of the first list if this call started the watch, the list failed and
    /// `offline` gave nothing to start from, or of the read `current` made.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe (see [`SharedWatches::watch`]).
    pub async fn watch(
        &self,
        range: &KeyRange,
        current: bool,
        offline: Offline<'_>,
    ) -> Result<(
        Arc<RangeWatch>,
        watch::Receiver<RangeSnapshot>,
        RangeSnapshot,
    )> {
        let new = || {
            let (tx, rx) = watch::channel(RangeSnapshot::default());
            (RangeState { rx }, tx)
        };
        let start = |tx: watch::Sender<RangeSnapshot>| async move {
            let mut watch = ResilientWatch::new(self.store.clone(), range.clone());
            let mut state = State::default();
            let degraded = match watch.next().await {
                Ok(event) => {
                    tx.send_replace(state.apply(event));
                    false
                }
                Err(error) => {
                    // The watch goes on from here: its next call waits out the backoff and
                    // lists again, and that list replaces what we start from.
                    let (revision, values) = Box::pin(self.start_offline(offline, error)).await?;
                    tx.send_replace(state.seed(revision, values));
                    true
                }
            };
            let span = tracing::debug_span!("live.watch", key = range.as_str());
            Ok(run(watch, state, tx, self.sync_interval, degraded).instrument(span))
        };
        let shared = self.ranges.watch(range, new, start).await?;
        let mut rx = shared.subscribe();
        let mut snapshot = rx.borrow_and_update().clone();
        if current && snapshot.revision < self.store.written_revision() {
            // Joined a watch that has not delivered this `Coord`'s latest write yet (which may
            // be in this range): read the range once, so whatever is bound after a write sees
            // it. Later snapshots of the shared watch take over once they are newer.
            snapshot = self.read(range, snapshot.connected).await?;
        }
        Ok((shared, rx, snapshot))
    }
}

impl WatchHub {
    /// What a range starts from after its first list failed with `error`: see [`Offline`].
    async fn start_offline(&self, offline: Offline<'_>, error: Error) -> Result<(i64, RawValues)> {
        let Some(dir) = self.snapshots().filter(|_| error.is_transient()) else {
            return Err(error);
        };
        match offline {
            Offline::Fail => Err(error),
            Offline::Empty => Ok((0, RawValues::new())),
            Offline::Disk(prefix) => match dir.load(prefix).await {
                Some(snapshot) => {
                    tracing::warn!(
                        prefix,
                        revision = snapshot.revision,
                        %error,
                        "store unreachable; starting from the snapshot on disk, marked stale"
                    );
                    Ok((snapshot.revision, snapshot.values))
                }
                None => Err(match error {
                    Error::Unavailable { endpoints, reason } => Error::Unavailable {
                        endpoints,
                        reason: format!(
                            "{reason}; and no usable snapshot of `{prefix}` in {} to start from",
                            dir.path().display()
                        ),
                    },
                    other => other,
                }),
            },
        }
    }

    /// The range as one read sees it, as a snapshot of its own (no values shared with the
    /// watch's snapshots, a change log starting at the read).
    pub async fn read(&self, range: &KeyRange, connected: bool) -> Result<RangeSnapshot> {
        let response = self
            .store
            .range(range, crate::store::RangeOptions::default())
            .await?;
        let mut changes = ChangeLog::default();
        changes.reset(response.revision);
        Ok(RangeSnapshot {
            revision: response.revision,
            values: response
                .kvs
                .into_iter()
                .map(|kv| (kv.key, RawValue::new(kv.value, kv.mod_revision)))
                .collect(),
            changes,
            connected,
        })
    }
}

/// Follows the range for as long as anyone subscribes.
async fn run(
    mut watch: ResilientWatch,
    mut state: State,
    tx: watch::Sender<RangeSnapshot>,
    sync_interval: Option<std::time::Duration>,
    // True if the range started offline: it is not following the store yet.
    mut degraded: bool,
) {
    let period = sync_interval.unwrap_or(std::time::Duration::MAX);
    let mut next_sync = tokio::time::Instant::now().checked_add(period);
    loop {
        let sync_at = next_sync;
        let event = tokio::select! {
            event = watch.next() => event,
            () = tx.closed() => return,
            () = async {
                match sync_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => {
                watch.resync();
                next_sync = tokio::time::Instant::now().checked_add(period);
                continue;
            }
        };
        match event {
            Ok(WatchEvent::Progress { .. }) => {}
            Ok(event) => {
                if matches!(event, WatchEvent::Resync { .. }) {
                    crate::metrics::watch_relist();
                }
                if degraded {
                    tracing::info!("watch recovered");
                    degraded = false;
                }
                match event {
                    // A relist that found nothing new (the periodic one, or after a
                    // reconnect): the state is current at a later revision, but no value
                    // changed, so `Live` handles are not woken to rebuild the same struct.
                    WatchEvent::Resync { revision, events } if events.is_empty() => {
                        // Handles are woken only if they were told the watch was broken:
                        // they then drop their staleness (their values are the same Arcs,
                        // so nothing is rebuilt).
                        tx.send_if_modified(|snapshot| {
                            snapshot.revision = snapshot.revision.max(revision);
                            !std::mem::replace(&mut snapshot.connected, true)
                        });
                    }
                    event => {
                        tx.send_replace(state.apply(event));
                    }
                }
            }
            // Only after `Coord::close`, which also stops this task: the watch never recovers.
            Err(Error::Closed) => return,
            Err(e) => {
                // Come back through a relist, not by resuming the stream: a resumed stream
                // first replays what it missed, and on a quiet range it says nothing at all
                // (etcd's progress notifications come every ten minutes), so no answer of
                // it would tell us when we are current again; a list read after the outage
                // does, and the watch then resumes right after the list's revision.
                watch.resync();
                crate::metrics::watch_reconnect();
                if !degraded {
                    tracing::warn!(error = %e, "watch broken; serving the last known state while it reconnects");
                    degraded = true;
                    tx.send_modify(|snapshot| snapshot.connected = false);
                }
            }
        }
    }
}

/// A range's state as its watch task keeps it.
#[derive(Default)]
struct State {
    values: RawValues,
    changes: ChangeLog,
}

impl State {
    /// Applies one watch item and returns the new snapshot: O(k log n) for k changed keys,
    /// the unchanged values shared with the previous snapshot.
    fn apply(&mut self, event: WatchEvent) -> RangeSnapshot {
        let revision = event.revision();
        match event {
            WatchEvent::Init { kvs, .. } => {
                // `known` is empty but after an offline start; then a value equal to the one
                // started from keeps its `Arc`, so handles whose keys did not move meanwhile
                // rebuild nothing (the mod revision, unknown on disk, is the store's now).
                let known = std::mem::take(&mut self.values);
                self.values = kvs
                    .into_iter()
                    .map(|kv| {
                        let value = match known.get(&kv.key) {
                            Some(known) if **known == kv.value[..] => {
                                known.rewritten_at(kv.mod_revision)
                            }
                            _ => RawValue::new(kv.value, kv.mod_revision),
                        };
                        (kv.key, value)
                    })
                    .collect();
                self.changes.reset(revision);
            }
            WatchEvent::Events { events, .. } | WatchEvent::Resync { events, .. } => {
                let mut changed = Vec::with_capacity(events.len());
                for event in events {
                    changed.push(event.kv.key.clone());
                    match event.kind {
                        EventKind::Put => {
                            self.values.insert(
                                event.kv.key,
                                RawValue::new(event.kv.value, event.kv.mod_revision),
                            );
                        }
                        EventKind::Delete => {
                            self.values.remove(&event.kv.key);
                        }
                    }
                }
                self.changes.record(revision, changed);
            }
            WatchEvent::Progress { .. } => {}
        }
        RangeSnapshot {
            revision,
            values: self.values.clone(),
            changes: self.changes.clone(),
            connected: true,
        }
    }

    /// Starts from `values` at `revision` without the store (offline start): the snapshot is
    /// marked disconnected, and the first list replaces it whole.
    fn seed(&mut self, revision: i64, values: RawValues) -> RangeSnapshot {
        self.values = values;
        self.changes.reset(revision);
        RangeSnapshot {
            revision,
            values: self.values.clone(),
            changes: self.changes.clone(),
            connected: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Event, KeyValue};

    fn put(key: &str, value: &str) -> Event {
        Event {
            kind: EventKind::Put,
            kv: KeyValue {
                key: key.to_owned(),
                value: value.as_bytes().to_vec(),
                ..KeyValue::default()
            },
        }
    }

    #[test]
    fn a_revision_shares_every_value_it_did_not_change() {
        let kvs = (0..10_000)
            .map(|i| KeyValue {
                key: format!("/p/{i:05}"),
                value: i.to_string().into_bytes(),
                ..KeyValue::default()
            })
            .collect();
        let mut state = State::default();
        let first = state.apply(WatchEvent::Init { revision: 1, kvs });
        let second = state.apply(WatchEvent::Events {
            revision: 2,
            events: vec![put("/p/00042", "changed")],
        });
        assert_eq!(second.values.len(), 10_000);
        assert_eq!(&second.values["/p/00042"][..], b"changed");
        assert_eq!(
            &first.values["/p/00042"][..],
            b"42",
            "the old snapshot is untouched"
        );
        for (key, old) in &first.values {
            if key != "/p/00042" {
                assert!(old.ptr_eq(&second.values[key]), "{key} was copied");
            }
        }
    }

    fn keys(changes: Option<std::collections::BTreeSet<String>>) -> Option<Vec<String>> {
        changes.map(|keys| keys.into_iter().collect())
    }

    #[test]
    fn the_change_log_says_what_moved_since_any_revision_it_still_covers() {
        let mut state = State::default();
        state.apply(WatchEvent::Init {
            revision: 10,
            kvs: Vec::new(),
        });
        state.apply(WatchEvent::Events {
            revision: 11,
            events: vec![put("/p/a", "1"), put("/p/b", "1")],
        });
        let snapshot = state.apply(WatchEvent::Events {
            revision: 12,
            events: vec![put("/p/a", "2")],
        });
        let log = &snapshot.changes;
        assert_eq!(keys(log.since(12)), Some(vec![]));
        assert_eq!(keys(log.since(11)), Some(vec!["/p/a".to_owned()]));
        assert_eq!(
            keys(log.since(10)),
            Some(vec!["/p/a".to_owned(), "/p/b".to_owned()])
        );
        assert_eq!(keys(log.since(9)), None, "before the first list");

        // A burst bigger than the log: handles behind it must build from scratch.
        let burst = (0..ChangeLog::KEEP + 1)
            .map(|i| put(&format!("/p/{i}"), "x"))
            .collect();
        let snapshot = state.apply(WatchEvent::Events {
            revision: 13,
            events: burst,
        });
        assert_eq!(keys(snapshot.changes.since(12)), None);
        assert_eq!(keys(snapshot.changes.since(13)), Some(vec![]));
    }
}
