//! One watch per watched service name, shared by every watcher, cache and channel of a `Coord`.
//!
//! A task runs a [`ResilientWatch`] on `/services/{name}/`, keeps the decoded instances, and
//! after every revision publishes them as a [`Snapshot`] (for `discover` and channels) and the
//! state changes of that revision as a [`Batch`] (for watchers). The task turns store events
//! into state changes, so a `Resync` after compaction yields only the real differences and a
//! re-put of an unchanged value yields nothing. When the last handle is dropped the task stops
//! and the store watch closes (the sharing itself is [`SharedWatches`]).

use std::collections::{BTreeMap, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};

use futures::{Stream, StreamExt};
use tokio::sync::{broadcast, watch};
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::BroadcastStream;
use tracing::Instrument;

use super::channel::Feed;
use super::{lock, service_prefix, ServiceEvent, ServiceInfo};
use crate::error::{Error, Result};
use crate::shared_watch::{SharedWatch, SharedWatches};
use crate::store::{Event, EventKind, KeyRange, KeyValue, Store};
use crate::watch::{ResilientWatch, WatchEvent};

/// How many revisions' changes a slow watcher may fall behind before it catches up from the
/// snapshot (reporting the differences) instead.
const EVENT_BUFFER: usize = 256;

/// The instances of one service at one revision.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    /// 0 until the first list has been read.
    pub revision: i64,
    /// id → info.
    pub instances: BTreeMap<String, ServiceInfo>,
}

/// The state changes of one revision.
#[derive(Debug)]
pub(crate) struct Batch {
    revision: i64,
    events: Vec<ServiceEvent>,
}

/// What the shared watch of one service name publishes.
#[derive(Debug)]
pub(crate) struct Service {
    snapshot: watch::Receiver<Arc<Snapshot>>,
    /// Weak: the watch task holds the only strong sender, so watchers' streams end when the
    /// task stops (on `Coord::close`) instead of waiting forever.
    events: broadcast::WeakSender<Arc<Batch>>,
    feeds: Feeds,
}

/// A watched service name. Dropping the last `Arc` stops its watch.
pub(crate) type Watched = SharedWatch<Service>;

/// The channels fed by a watch; shared with its task, which must not hold the `Watched`.
type Feeds = Arc<Mutex<Vec<Weak<Feed>>>>;

impl Service {
    /// The instances as last seen, ordered by id.
    pub fn instances(&self) -> Vec<ServiceInfo> {
        self.snapshot.borrow().instances.values().cloned().collect()
    }

    pub fn snapshot(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.snapshot.clone()
    }

    /// Starts feeding `feed` the changes of this service, beginning with the current state.
    pub fn add_feed(&self, feed: &Arc<Feed>) {
        // Under the feeds lock, which the task holds from syncing the feeds until it has
        // published the snapshot: the feed gets every snapshot from this one on.
        let mut feeds = lock(&self.feeds);
        feeds.push(Arc::downgrade(feed));
        let snapshot = Arc::clone(&self.snapshot.borrow());
        feed.sync(&snapshot);
    }
}

/// The watched service names of one `Coord`.
#[derive(Debug)]
pub(crate) struct Discovery {
    store: Store,
    names: SharedWatches<String, Service>,
}

impl Discovery {
    pub fn new(store: Store) -> Self {
        Discovery {
            store,
            names: SharedWatches::default(),
        }
    }

    /// Stops every name's watch (for `Coord::close`): caches keep their last state and
    /// watchers see no more changes.
    pub fn close(&self) {
        self.names.close();
    }

    /// The watch of `name` if one is running and has read its first list.
    pub fn get(&self, name: &str) -> Option<Arc<Watched>> {
        self.names.get(&name.to_string())
    }

    /// The watch of `name`, started if needed; returns once it has read its first list.
    ///
    /// # Errors
    ///
    /// The error of the first list if this call started the watch and the list failed.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe (see [`SharedWatches::watch`]).
    pub async fn watch(&self, name: &str) -> Result<Arc<Watched>> {
        let new = || {
            let (snapshot_tx, snapshot) = watch::channel(Arc::new(Snapshot::default()));
            let (events, _) = broadcast::channel(EVENT_BUFFER);
            let service = Service {
                snapshot,
                events: events.downgrade(),
                feeds: Feeds::default(),
            };
            let feeds = Arc::clone(&service.feeds);
            (service, (snapshot_tx, events, feeds))
        };
        let start = |(snapshot_tx, events, feeds)| self.start(name, snapshot_tx, events, feeds);
        self.names.watch(&name.to_string(), new, start).await
    }

    /// Reads the first list of `name` and publishes it; returns the task that follows on.
    async fn start(
        &self,
        name: &str,
        snapshot_tx: watch::Sender<Arc<Snapshot>>,
        events: broadcast::Sender<Arc<Batch>>,
        feeds: Feeds,
    ) -> Result<impl std::future::Future<Output = ()> + Send + 'static> {
        let prefix = service_prefix(name);
        let mut watch = ResilientWatch::new(self.store.clone(), KeyRange::prefix(prefix.as_str()));
        let first = watch.next().await?;
        let mut state = State {
            name: name.to_string(),
            prefix,
            instances: BTreeMap::new(),
        };
        state.apply(first);
        snapshot_tx.send_replace(Arc::new(state.snapshot(watch.revision())));
        let span = tracing::debug_span!("registry.watch", key = state.prefix.as_str());
        Ok(run(watch, state, snapshot_tx, events, feeds).instrument(span))
    }
}

/// The decoded instances of one service, as the watch task keeps them.
struct State {
    name: String,
    prefix: String,
    instances: BTreeMap<String, ServiceInfo>,
}

impl State {
    /// Applies one watch item; returns the state changes it made.
    fn apply(&mut self, item: WatchEvent) -> Vec<ServiceEvent> {
        match item {
            WatchEvent::Init { kvs, .. } => {
                // A full list: everything not in it is gone.
                let mut changes = Vec::new();
                let mut gone = std::mem::take(&mut self.instances);
                for kv in &kvs {
                    if let Some(info) = decode(&self.name, &self.prefix, kv) {
                        let previous = gone.remove(&info.id);
                        changes.extend(self.put(info, previous));
                    }
                }
                changes.extend(gone.into_values().map(ServiceEvent::Unregistered));
                changes
            }
            WatchEvent::Events { events, .. } | WatchEvent::Resync { events, .. } => {
                events.into_iter().filter_map(|e| self.event(e)).collect()
            }
            WatchEvent::Progress { .. } => Vec::new(),
        }
    }

    fn event(&mut self, event: Event) -> Option<ServiceEvent> {
        let id = instance_id(&self.prefix, &event.kv.key)?;
        match event.kind {
            EventKind::Put => match decode(&self.name, &self.prefix, &event.kv) {
                Some(info) => {
                    let previous = self.instances.remove(&info.id);
                    self.put(info, previous)
                }
                // A value that does not decode is not a usable instance.
                None => self.instances.remove(id).map(ServiceEvent::Unregistered),
            },
            EventKind::Delete => self.instances.remove(id).map(ServiceEvent::Unregistered),
        }
    }

    /// Stores `info`, which replaces `previous`; the change, if any.
    fn put(&mut self, info: ServiceInfo, previous: Option<ServiceInfo>) -> Option<ServiceEvent> {
        let change = match &previous {
            None => Some(ServiceEvent::Registered(info.clone())),
            Some(previous) if *previous != info => Some(ServiceEvent::Updated(info.clone())),
            Some(_) => None,
        };
        self.instances.insert(info.id.clone(), info);
        change
    }

    fn snapshot(&self, revision: i64) -> Snapshot {
        Snapshot {
            revision,
            instances: self.instances.clone(),
        }
    }
}

/// Follows the service until the task is aborted (the last handle dropped) or the store is
/// closed.
async fn run(
    mut watch: ResilientWatch,
    mut state: State,
    snapshot: watch::Sender<Arc<Snapshot>>,
    events: broadcast::Sender<Arc<Batch>>,
    feeds: Feeds,
) {
    let mut degraded = false;
    loop {
        match watch.next().await {
            Ok(WatchEvent::Progress { .. }) => {}
            Ok(item) => {
                if degraded {
                    tracing::info!("registry watch recovered");
                    degraded = false;
                }
                let revision = item.revision();
                let changes = state.apply(item);
                let next = Arc::new(state.snapshot(revision));
                {
                    // Channels first, so no reader sees the change before the channels have it
                    // queued; dropped channels leave the list.
                    let mut feeds = lock(&feeds);
                    feeds.retain(|feed| feed.upgrade().is_some_and(|feed| feed.sync(&next)));
                    // Then the snapshot: a watcher that subscribes and then reads the snapshot
                    // either gets this batch or a snapshot that already holds it (see
                    // `ServiceWatcher::new`).
                    snapshot.send_replace(next);
                }
                if !changes.is_empty() {
                    // No receivers is fine: nobody is watching events right now.
                    let _ = events.send(Arc::new(Batch {
                        revision,
                        events: changes,
                    }));
                }
            }
            // Only after `Coord::close`, which also stops this task: the watch never recovers.
            Err(Error::Closed) => return,
            Err(e) => {
                if !degraded {
                    tracing::warn!(error = %e, "registry watch broken; serving the last known instances while it reconnects");
                    degraded = true;
                }
            }
        }
    }
}

/// The id of an instance key under `prefix`; `None` for keys that are not `{prefix}{id}`.
fn instance_id<'a>(prefix: &str, key: &'a str) -> Option<&'a str> {
    key.strip_prefix(prefix)
        .filter(|id| !id.is_empty() && !id.contains('/'))
}

/// Decodes a stored instance; `None` (with a warning) if it is not one.
pub(crate) fn decode(name: &str, prefix: &str, kv: &KeyValue) -> Option<ServiceInfo> {
    let Some(id) = instance_id(prefix, &kv.key) else {
        tracing::debug!(key = kv.key.as_str(), "not an instance key; ignored");
        return None;
    };
    match serde_json::from_slice::<ServiceInfo>(&kv.value) {
        Ok(info) if info.id == id && info.name == name => Some(info),
        Ok(info) => {
            tracing::warn!(
                key = kv.key.as_str(),
                id = info.id.as_str(),
                name = info.name.as_str(),
                "stored instance does not match its key; ignored"
            );
            None
        }
        Err(e) => {
            tracing::warn!(key = kv.key.as_str(), error = %e, "stored instance does not decode; ignored");
            None
        }
    }
}

/// The changes that turn `from` into `to`: registrations and updates in id order, then
/// unregistrations.
fn diff(
    from: &BTreeMap<String, ServiceInfo>,
    to: &BTreeMap<String, ServiceInfo>,
) -> Vec<ServiceEvent> {
    let mut changes = Vec::new();
    for (id, info) in to {
        match from.get(id) {
            None => changes.push(ServiceEvent::Registered(info.clone())),
            Some(old) if old != info => changes.push(ServiceEvent::Updated(info.clone())),
            Some(_) => {}
        }
    }
    for (id, info) in from {
        if !to.contains_key(id) {
            changes.push(ServiceEvent::Unregistered(info.clone()));
        }
    }
    changes
}

/// The stream [`Registry::watch`](super::Registry::watch) returns: every state change of one
/// service, in order, starting with `Registered` for each instance already there.
///
/// It never ends while the watcher lives: etcd outages are retried in the background (the
/// stream just waits), and after a compaction or if this watcher falls more than 256
/// revisions behind, it reports the differences from what it last reported. Dropping it
/// stops the store watch if nothing else of this `Coord` watches the name.
///
/// # Cancel safety
///
/// `next()` is cancel safe: an event is either returned or stays queued.
pub struct ServiceWatcher {
    watched: Arc<Watched>,
    stream: BroadcastStream<Arc<Batch>>,
    /// What this watcher has reported, for the diff after a lag.
    known: BTreeMap<String, ServiceInfo>,
    revision: i64,
    pending: VecDeque<ServiceEvent>,
}

impl std::fmt::Debug for ServiceWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceWatcher")
            .field("revision", &self.revision)
            .field("instances", &self.known.len())
            .field("pending", &self.pending.len())
            .finish()
    }
}

impl ServiceWatcher {
    pub(crate) fn new(watched: Arc<Watched>) -> Self {
        // Subscribe before reading the snapshot: every batch newer than the snapshot is then
        // received, and older ones are skipped by revision.
        let receiver = match watched.events.upgrade() {
            Some(sender) => sender.subscribe(),
            // The watch task is gone (the Coord was closed): a stream that ends at once.
            None => broadcast::channel(1).1,
        };
        let stream = BroadcastStream::new(receiver);
        let snapshot = Arc::clone(&watched.snapshot.borrow());
        ServiceWatcher {
            stream,
            known: snapshot.instances.clone(),
            revision: snapshot.revision,
            pending: snapshot
                .instances
                .values()
                .cloned()
                .map(ServiceEvent::Registered)
                .collect(),
            watched,
        }
    }

    /// The instances as this watcher has reported them so far (including queued events).
    pub fn instances(&self) -> Vec<ServiceInfo> {
        self.known.values().cloned().collect()
    }

    /// The store revision of the last change this watcher has taken in.
    pub fn revision(&self) -> i64 {
        self.revision
    }
}

impl Stream for ServiceWatcher {
    type Item = ServiceEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ServiceEvent>> {
        let this = &mut *self;
        loop {
            if let Some(event) = this.pending.pop_front() {
                return Poll::Ready(Some(event));
            }
            match std::task::ready!(this.stream.poll_next_unpin(cx)) {
                // The watch task is gone: only `Coord::close` stops it while this watcher
                // holds the watch.
                None => return Poll::Ready(None),
                Some(Ok(batch)) => {
                    if batch.revision <= this.revision {
                        continue;
                    }
                    this.revision = batch.revision;
                    for event in &batch.events {
                        match event {
                            ServiceEvent::Registered(info) | ServiceEvent::Updated(info) => {
                                this.known.insert(info.id.clone(), info.clone());
                            }
                            ServiceEvent::Unregistered(info) => {
                                this.known.remove(&info.id);
                            }
                        }
                    }
                    this.pending.extend(batch.events.iter().cloned());
                }
                Some(Err(BroadcastStreamRecvError::Lagged(skipped))) => {
                    let snapshot = Arc::clone(&this.watched.snapshot.borrow());
                    tracing::debug!(
                        skipped,
                        revision = snapshot.revision,
                        "service watcher fell behind; reporting the differences"
                    );
                    this.pending.extend(diff(&this.known, &snapshot.instances));
                    this.known = snapshot.instances.clone();
                    this.revision = snapshot.revision;
                }
            }
        }
    }
}

/// A watch-fed cache of one service, from [`Registry::cache`](super::Registry::cache). While
/// it lives, [`Registry::discover`](super::Registry::discover) of that name needs no round
/// trip.
#[derive(Debug, Clone)]
pub struct ServiceCache {
    watched: Arc<Watched>,
}

impl ServiceCache {
    pub(crate) fn new(watched: Arc<Watched>) -> Self {
        ServiceCache { watched }
    }

    /// The instances as last seen, ordered by id. No round trip.
    pub fn instances(&self) -> Vec<ServiceInfo> {
        self.watched.instances()
    }

    /// The store revision the cache is at.
    pub fn revision(&self) -> i64 {
        self.watched.snapshot.borrow().revision
    }

    /// Waits until the cache is at `revision` or later (e.g. the revision of a write, to read
    /// your own writes).
    ///
    /// # Errors
    ///
    /// [`Error::Closed`](crate::Error::Closed) if the `Coord` was closed before the cache got
    /// there (its watch stopped).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn wait_for_revision(&self, revision: i64) -> Result<()> {
        let mut rx = self.watched.snapshot();
        // The sender lives until the cache's task stops, which, while this handle lives, only
        // `Coord::close` does.
        let reached = rx.wait_for(|s| s.revision >= revision).await.is_ok();
        if reached {
            Ok(())
        } else {
            Err(crate::Error::Closed)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: &str, version: &str) -> ServiceInfo {
        ServiceInfo::new("api", id, "h:1").with_version(version)
    }

    fn map(infos: &[ServiceInfo]) -> BTreeMap<String, ServiceInfo> {
        infos.iter().map(|i| (i.id.clone(), i.clone())).collect()
    }

    /// The store event of `i` registering under `/services/api/`.
    fn put(i: &ServiceInfo) -> Event {
        Event {
            kind: EventKind::Put,
            kv: KeyValue {
                key: format!("/services/api/{}", i.id),
                value: serde_json::to_vec(i).unwrap(),
                ..KeyValue::default()
            },
        }
    }

    #[test]
    fn diff_reports_only_changes() {
        let from = map(&[info("a", "1"), info("b", "1"), info("c", "1")]);
        let to = map(&[info("a", "1"), info("b", "2"), info("d", "1")]);
        assert_eq!(
            diff(&from, &to),
            vec![
                ServiceEvent::Updated(info("b", "2")),
                ServiceEvent::Registered(info("d", "1")),
                ServiceEvent::Unregistered(info("c", "1")),
            ]
        );
        assert!(diff(&to, &to).is_empty());
    }

    #[test]
    fn state_turns_store_events_into_state_changes() {
        let mut state = State {
            name: "api".into(),
            prefix: "/services/api/".into(),
            instances: BTreeMap::new(),
        };
        let events = |events| WatchEvent::Events {
            revision: 1,
            events,
        };
        assert_eq!(
            state.apply(events(vec![put(&info("a", "1"))])),
            vec![ServiceEvent::Registered(info("a", "1"))]
        );
        // The same value again (a re-registration): no change.
        assert!(state.apply(events(vec![put(&info("a", "1"))])).is_empty());
        assert_eq!(
            state.apply(events(vec![put(&info("a", "2"))])),
            vec![ServiceEvent::Updated(info("a", "2"))]
        );
        let garbage = Event {
            kind: EventKind::Put,
            kv: KeyValue {
                key: "/services/api/a".into(),
                value: b"not json".to_vec(),
                ..KeyValue::default()
            },
        };
        assert_eq!(
            state.apply(events(vec![garbage])),
            vec![ServiceEvent::Unregistered(info("a", "2"))]
        );
        let nested = Event {
            kind: EventKind::Put,
            kv: KeyValue {
                key: "/services/api/a/extra".into(),
                value: serde_json::to_vec(&info("a", "1")).unwrap(),
                ..KeyValue::default()
            },
        };
        assert!(state.apply(events(vec![nested])).is_empty());
    }

    #[test]
    fn a_resync_yields_only_the_differences() {
        let mut state = State {
            name: "api".into(),
            prefix: "/services/api/".into(),
            instances: map(&[info("a", "1"), info("b", "1"), info("c", "1")]),
        };
        // After a compaction the watch relists and reports every key whose mod_revision moved,
        // even if its value ended up the same (a re-registration), and every deleted key.
        let resync = WatchEvent::Resync {
            revision: 9,
            events: vec![
                put(&info("a", "1")),
                put(&info("b", "2")),
                put(&info("d", "1")),
                Event {
                    kind: EventKind::Delete,
                    kv: KeyValue {
                        key: "/services/api/c".into(),
                        ..KeyValue::default()
                    },
                },
            ],
        };
        assert_eq!(
            state.apply(resync),
            vec![
                ServiceEvent::Updated(info("b", "2")),
                ServiceEvent::Registered(info("d", "1")),
                ServiceEvent::Unregistered(info("c", "1")),
            ]
        );
    }
}
