//! One watch per watched service name, shared by every watcher, cache and channel of a `Coord`.
//!
//! A task runs a [`ResilientWatch`] on `/services/{name}/`, keeps the decoded instances, and
//! after every revision publishes them as a [`ServiceSnapshot`] (for `discover` and channels) and the
//! state changes of that revision as a [`ServiceBatch`] (for watchers). The task turns store events
//! into state changes, so a `Resync` after compaction yields only the real differences and a
//! re-put of an unchanged value yields nothing. When the last handle is dropped the task stops
//! and the store watch closes (the sharing itself is [`SharedWatches`]).
//!
//! While the watch is broken the snapshot says since when ([`ServiceCache::staleness`]); after
//! a break the service is listed again before the watch resumes, so it is known current again
//! as soon as the store answers, not only at the service's next change.

use std::collections::{HashSet, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::task::{Context, Poll};

use futures::{Stream, StreamExt};
use imbl::OrdMap;
use imbl::ordmap::DiffItem;
use tokio::sync::{broadcast, watch};
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tracing::Instrument;

use super::instances::Instances;
use super::service::{ServiceEvent, ServiceInfo, service_prefix};
use crate::error::{Error, Result};
use crate::shared_watch::{SharedWatch, SharedWatches};
use crate::store::{Event, EventKind, KeyRange, KeyValue, Store};
use crate::sync::lock;
use crate::watch::{ResilientWatch, WatchEvent};

/// How many revisions' changes a slow watcher may fall behind before it catches up from the
/// snapshot (reporting the differences) instead.
const EVENT_BUFFER: usize = 256;

/// id → info, persistent: a copy shares every node with the original, and changing k
/// instances of a copy costs O(k log n) and leaves the other instances' `Arc`s shared.
pub(crate) type InstanceMap = OrdMap<String, Arc<ServiceInfo>>;

/// The instances of one service at one revision.
#[derive(Debug, Default)]
pub(crate) struct ServiceSnapshot {
    /// 0 until the first list has been read.
    pub revision: i64,
    pub instances: InstanceMap,
    /// The instances as `discover` hands them out, made on the first call after a change and
    /// then shared by every call until the next one.
    view: OnceLock<Instances>,
    /// Since when the watch has been broken, while it is (until the relist after it
    /// reconnects): the instances may be that far behind.
    stale_since: Option<std::time::Instant>,
}

impl ServiceSnapshot {
    pub(crate) fn new(revision: i64, instances: InstanceMap) -> Self {
        ServiceSnapshot {
            revision,
            instances,
            view: OnceLock::new(),
            stale_since: None,
        }
    }

    /// This snapshot, marked behind since `since`.
    fn stale(&self, since: std::time::Instant) -> Self {
        ServiceSnapshot {
            stale_since: Some(since),
            ..ServiceSnapshot::new(self.revision, self.instances.clone())
        }
    }

    /// The instances as a shared view: the first call copies n pointers (no instance), the
    /// others nothing.
    pub(crate) fn view(&self) -> Instances {
        self.view
            .get_or_init(|| Instances::from_sorted(self.instances.values().cloned()))
            .clone()
    }
}

/// The state changes of one revision.
#[derive(Debug)]
pub(crate) struct ServiceBatch {
    revision: i64,
    events: Vec<ServiceEvent>,
    /// The instances after this revision (sharing the snapshot's nodes), so a watcher takes
    /// them in without applying the events to a map of its own.
    instances: InstanceMap,
}

/// What the shared watch of one service name publishes.
#[derive(Debug)]
pub(crate) struct Service {
    snapshot: watch::Receiver<Arc<ServiceSnapshot>>,
    /// Weak: the watch task holds the only strong sender, so watchers' streams end when the
    /// task stops (on `Coord::close`) instead of waiting forever.
    events: broadcast::WeakSender<Arc<ServiceBatch>>,
    feeds: Feeds,
}

/// A watched service name. Dropping the last `Arc` stops its watch.
pub(crate) type Watched = SharedWatch<Service>;

/// The channels fed by a watch; shared with its task, which must not hold the `Watched`.
type Feeds = Arc<Mutex<Vec<Weak<dyn Follower>>>>;

/// Something that follows a watched service's snapshots in step with its watch task (a
/// balanced channel's endpoint feed, see `channel.rs`): told each snapshot before anyone can
/// see it.
pub(crate) trait Follower: Send + Sync {
    /// Takes `snapshot`; false once it wants no more.
    fn sync(&self, snapshot: &ServiceSnapshot) -> bool;
}

impl Service {
    /// The instances as last seen, ordered by id.
    pub fn instances(&self) -> Instances {
        // Out of the borrow first: making the view must not hold up the watch task.
        let snapshot = Arc::clone(&self.snapshot.borrow());
        snapshot.view()
    }

    pub fn snapshot(&self) -> watch::Receiver<Arc<ServiceSnapshot>> {
        self.snapshot.clone()
    }

    /// Starts feeding `feed` the changes of this service, beginning with the current state.
    pub fn add_feed(&self, feed: Arc<dyn Follower>) {
        // Under the feeds lock, which the task holds from syncing the feeds until it has
        // published the snapshot: the feed gets every snapshot from this one on.
        let mut feeds = lock(&self.feeds);
        feeds.push(Arc::downgrade(&feed));
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
            let (snapshot_tx, snapshot) = watch::channel(Arc::new(ServiceSnapshot::default()));
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
        snapshot_tx: watch::Sender<Arc<ServiceSnapshot>>,
        events: broadcast::Sender<Arc<ServiceBatch>>,
        feeds: Feeds,
    ) -> Result<impl std::future::Future<Output = ()> + Send + 'static + use<>> {
        let prefix = service_prefix(name);
        let mut watch = ResilientWatch::new(self.store.clone(), KeyRange::prefix(prefix.as_str()));
        let first = watch.next().await?;
        let mut state = State {
            name: name.to_string(),
            prefix,
            instances: InstanceMap::new(),
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
    instances: InstanceMap,
}

impl State {
    /// Applies one watch item; returns the state changes it made.
    fn apply(&mut self, item: WatchEvent) -> Vec<ServiceEvent> {
        match item {
            WatchEvent::Init { kvs, .. } => {
                // A full list: everything not in it is gone. Applied in place, so unchanged
                // instances keep their `Arc`s and the map its shared nodes.
                let mut changes = Vec::new();
                let mut listed = HashSet::with_capacity(kvs.len());
                for kv in &kvs {
                    if let Some(info) = decode(&self.name, &self.prefix, kv) {
                        listed.insert(info.id.clone());
                        changes.extend(self.put(info));
                    }
                }
                let gone: Vec<String> = self
                    .instances
                    .keys()
                    .filter(|id| !listed.contains(*id))
                    .cloned()
                    .collect();
                for id in gone {
                    changes.extend(self.remove(&id));
                }
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
                Some(info) => self.put(info),
                // A value that does not decode is not a usable instance.
                None => self.remove(id),
            },
            EventKind::Delete => self.remove(id),
        }
    }

    /// Stores `info`; the change, if any. An unchanged instance keeps its `Arc`.
    fn put(&mut self, info: ServiceInfo) -> Option<ServiceEvent> {
        let change = match self.instances.get(&info.id) {
            None => ServiceEvent::Registered(info.clone()),
            Some(previous) if **previous != info => ServiceEvent::Updated(info.clone()),
            Some(_) => return None,
        };
        self.instances.insert(info.id.clone(), Arc::new(info));
        Some(change)
    }

    fn remove(&mut self, id: &str) -> Option<ServiceEvent> {
        let gone = self.instances.remove(id)?;
        Some(ServiceEvent::Unregistered(Arc::unwrap_or_clone(gone)))
    }

    /// The instances now; O(1), sharing the whole map.
    fn snapshot(&self, revision: i64) -> ServiceSnapshot {
        ServiceSnapshot::new(revision, self.instances.clone())
    }
}

/// Follows the service until the task is aborted (the last handle dropped) or the store is
/// closed.
async fn run(
    mut watch: ResilientWatch,
    mut state: State,
    snapshot: watch::Sender<Arc<ServiceSnapshot>>,
    events: broadcast::Sender<Arc<ServiceBatch>>,
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
                    let _ = events.send(Arc::new(ServiceBatch {
                        revision,
                        events: changes,
                        instances: state.instances.clone(),
                    }));
                }
            }
            // Only after `Coord::close`, which also stops this task: the watch never recovers.
            Err(Error::Closed) => return,
            Err(e) => {
                // Come back through a relist, not by resuming the stream: on a quiet service a
                // resumed stream says nothing, so nothing would tell when the cache is current
                // again; the list does, and the watch resumes right after it.
                watch.resync();
                if !degraded {
                    tracing::warn!(error = %e, "registry watch broken; serving the last known instances while it reconnects");
                    degraded = true;
                    // Not a change of instances: channels and watchers are not told.
                    snapshot.send_modify(|current| {
                        *current = Arc::new(current.stale(std::time::Instant::now()));
                    });
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
/// unregistrations. Skips the nodes the two maps share, so when `to` is a later version of
/// `from` it costs O(k log n) for k changes, not O(n).
fn diff(from: &InstanceMap, to: &InstanceMap) -> Vec<ServiceEvent> {
    let mut changes = Vec::new();
    let mut gone = Vec::new();
    for item in from.diff(to) {
        match item {
            DiffItem::Add(_, info) => changes.push(ServiceEvent::Registered((**info).clone())),
            DiffItem::Update { new: (_, info), .. } => {
                changes.push(ServiceEvent::Updated((**info).clone()));
            }
            DiffItem::Remove(_, info) => gone.push(ServiceEvent::Unregistered((**info).clone())),
        }
    }
    changes.extend(gone);
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
    stream: BroadcastStream<Arc<ServiceBatch>>,
    /// What this watcher has reported, for the diff after a lag.
    known: InstanceMap,
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
                .map(|info| ServiceEvent::Registered((**info).clone()))
                .collect(),
            watched,
        }
    }

    /// The instances as this watcher has reported them so far (including queued events),
    /// ordered by id. Copies n pointers, no instance.
    pub fn instances(&self) -> Instances {
        Instances::from_sorted(self.known.values().cloned())
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
                    // O(1): the batch's map shares the watch task's nodes.
                    this.known = batch.instances.clone();
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

    /// The instances as last seen, ordered by id. No round trip, and no copy of any instance:
    /// two calls without a change in between return views of the same shared instances.
    pub fn instances(&self) -> Instances {
        self.watched.instances()
    }

    /// The store revision the cache is at.
    pub fn revision(&self) -> i64 {
        self.watched.snapshot.borrow().revision
    }

    /// `None` while the cache follows a connected watch; while the watch is broken (etcd
    /// unreachable, the connection reset), how long it has been: the instances may be that
    /// far behind (an instance that crashed meanwhile is still listed, one that registered is
    /// not). It is `None` again once the service has been listed after the reconnect, as
    /// [`Live::staleness`](crate::Live::staleness) is for config.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> coord::Result<()> {
    /// let coord = coord::Coord::in_memory();
    /// let cache = coord.registry().cache("checkout").await?;
    /// assert_eq!(cache.staleness(), None);
    /// # Ok(())
    /// # }
    /// ```
    pub fn staleness(&self) -> Option<std::time::Duration> {
        self.watched
            .snapshot
            .borrow()
            .stale_since
            .map(|since| since.elapsed())
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
        if reached { Ok(()) } else { Err(Error::Closed) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: &str, version: &str) -> ServiceInfo {
        ServiceInfo::new("api", id, "h:1").with_version(version)
    }

    fn map(infos: &[ServiceInfo]) -> InstanceMap {
        infos
            .iter()
            .map(|i| (i.id.clone(), Arc::new(i.clone())))
            .collect()
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

    /// A watch's state after its first list held `n` instances, `i0000`…
    fn listed(n: usize) -> State {
        let mut state = State {
            name: "api".into(),
            prefix: "/services/api/".into(),
            instances: InstanceMap::new(),
        };
        let kvs = (0..n)
            .map(|i| put(&info(&format!("i{i:04}"), "1")).kv)
            .collect();
        state.apply(WatchEvent::Init { revision: 1, kvs });
        state
    }

    #[test]
    fn a_change_to_one_instance_of_1000_shares_the_other_999() {
        let mut state = listed(1000);
        let before = state.snapshot(1);
        let changes = state.apply(WatchEvent::Events {
            revision: 2,
            events: vec![put(&info("i0500", "2"))],
        });
        assert_eq!(changes, vec![ServiceEvent::Updated(info("i0500", "2"))]);
        let after = state.snapshot(2);
        assert_eq!(after.instances.len(), 1000);
        let mut shared = 0;
        for (id, old) in &before.instances {
            let new = &after.instances[id];
            if id == "i0500" {
                assert!(!Arc::ptr_eq(old, new));
                assert_eq!(new.version, "2");
            } else {
                assert!(Arc::ptr_eq(old, new), "{id} was copied");
                shared += 1;
            }
        }
        assert_eq!(shared, 999);
        // The views `discover` hands out share them too.
        let (old_view, new_view) = (before.view(), after.view());
        let copied = old_view
            .as_slice()
            .iter()
            .zip(new_view.as_slice())
            .filter(|(a, b)| !Arc::ptr_eq(a, b))
            .count();
        assert_eq!(copied, 1);
        // And a watcher that fell behind finds just that change.
        assert_eq!(
            diff(&before.instances, &after.instances),
            vec![ServiceEvent::Updated(info("i0500", "2"))]
        );
    }

    #[test]
    fn views_of_an_unchanged_snapshot_share_every_instance() {
        let state = listed(1000);
        let snapshot = state.snapshot(1);
        let (first, second) = (snapshot.view(), snapshot.view());
        assert_eq!(first.len(), 1000);
        assert!(
            first
                .as_slice()
                .iter()
                .zip(second.as_slice())
                .all(|(a, b)| Arc::ptr_eq(a, b))
        );
        assert!(std::ptr::eq(first.as_slice(), second.as_slice()));
    }

    #[test]
    fn a_relist_keeps_unchanged_instances_shared() {
        let mut state = listed(3);
        let before = state.snapshot(1);
        let kvs = vec![put(&info("i0000", "1")).kv, put(&info("i0001", "2")).kv];
        let changes = state.apply(WatchEvent::Init { revision: 5, kvs });
        assert_eq!(
            changes,
            vec![
                ServiceEvent::Updated(info("i0001", "2")),
                ServiceEvent::Unregistered(info("i0002", "1")),
            ]
        );
        assert!(Arc::ptr_eq(
            &before.instances["i0000"],
            &state.instances["i0000"]
        ));
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
            instances: InstanceMap::new(),
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
