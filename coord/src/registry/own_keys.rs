//! The watch registrations keep on their own keys, so each can put its key back if it is
//! deleted and give up if another lease takes it: one store watch per service name per
//! `Coord`, however many instances of that service the `Coord` registers.
//!
//! # What it promises
//!
//! - A [`Subscription`] taken before its registration writes its key is told of every later
//!   change to that key ([`Seen::Events`]), in revision order: the name's watch is open
//!   before [`OwnKeys::subscribe`] returns. Changes from before the write may be told too: the
//!   registration skips whatever is not newer than its own write.
//! - When the watch breaks (an etcd restart, a compaction), the gap is not replayed (it may be
//!   compacted away): the service's prefix is read again (keys only: a big service's values
//!   are not fetched for the few keys a `Coord` holds), every subscriber is told its key's
//!   state at that read ([`Seen::Listed`]), and the watch goes on from just after the read.
//! - The watch starts with the first subscription of a name and stops with the last; a
//!   subscriber costs a map entry and a mailbox, not a watch (etcd keeps one watcher per name
//!   instead of one per instance).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::Notify;
use tracing::Instrument;

use crate::error::Result;
use crate::store::{Event, KeyRange, KeyValue, RangeOptions, Store, WatchStream};
use crate::sync::lock;

/// The first wait before reading the prefix again after the watch broke.
const INITIAL_BACKOFF: Duration = Duration::from_millis(100);

/// The longest wait between two reads while the watch keeps breaking.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What a subscriber is told of its key.
#[derive(Debug)]
pub(super) enum Seen {
    /// The changes of the key at one revision.
    Events(i64, Vec<Event>),
    /// The key as read at a revision (`None`: absent).
    Now(i64, Option<KeyValue>),
    /// The same from a keys-only read of the prefix, after the watch (re)started: the value
    /// is not there (a keeper learns from it who holds the key, not what it holds).
    Listed(i64, Option<KeyValue>),
}

/// The subscribers of one `Coord`'s registrations, by service name.
#[derive(Debug)]
pub(crate) struct OwnKeys {
    store: Store,
    /// Async: held while a name's watch is being opened, so the registrations of a name that
    /// arrive meanwhile wait for that watch rather than open their own.
    names: tokio::sync::Mutex<HashMap<String, Weak<NameWatch>>>,
}

impl OwnKeys {
    pub fn new(store: Store) -> Self {
        OwnKeys {
            store,
            names: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// Subscribes to the changes of `key`, an instance key of service `name`, opening the
    /// name's watch if it is not open.
    ///
    /// # Errors
    ///
    /// Store errors from opening the watch.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a watch opened for a dropped call is closed.
    pub(super) async fn subscribe(&self, name: &str, key: Arc<str>) -> Result<Subscription> {
        let watch = {
            let mut names = self.names.lock().await;
            match names.get(name).and_then(Weak::upgrade) {
                Some(watch) => watch,
                None => {
                    names.retain(|_, watch| watch.strong_count() > 0);
                    let watch = NameWatch::start(&self.store, name).await?;
                    names.insert(name.to_owned(), Arc::downgrade(&watch));
                    watch
                }
            }
        };
        let mailbox = Arc::new(Mailbox::default());
        lock(&watch.subscribers)
            .entry(Arc::clone(&key))
            .or_default()
            .push(Arc::clone(&mailbox));
        Ok(Subscription {
            watch,
            key,
            mailbox,
        })
    }

    /// Store watches open for registrations right now (one per service name).
    #[cfg(test)]
    async fn watches(&self) -> usize {
        self.names
            .lock()
            .await
            .values()
            .filter(|watch| watch.strong_count() > 0)
            .count()
    }
}

/// Subscribers by key. Usually one per key; two for a moment when a second registration of
/// a key this `Coord` holds is being refused.
type Subscribers = Mutex<HashMap<Arc<str>, Vec<Arc<Mailbox>>>>;

/// The watch of one service name, shared by its subscribers; it stops when the last goes.
#[derive(Debug)]
struct NameWatch {
    subscribers: Arc<Subscribers>,
    task: tokio::task::AbortHandle,
}

impl NameWatch {
    /// Opens the watch of `name`'s instances from now on, and starts the task that follows it.
    async fn start(store: &Store, name: &str) -> Result<Arc<Self>> {
        let prefix = super::service_prefix(name);
        let range = KeyRange::prefix(prefix.as_str());
        let stream = store.watch(&range, 0).await?;
        let subscribers = Arc::new(Subscribers::default());
        let span = tracing::debug_span!("registry.own_keys", prefix = prefix.as_str());
        let task = tokio::spawn(
            run(store.clone(), range, stream, Arc::clone(&subscribers)).instrument(span),
        )
        .abort_handle();
        Ok(Arc::new(NameWatch { subscribers, task }))
    }
}

impl Drop for NameWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One registration's view of its key: what [`OwnKeys::subscribe`] returns.
#[derive(Debug)]
pub(super) struct Subscription {
    watch: Arc<NameWatch>,
    /// Shared with the map entry and the registration: one copy of the key.
    key: Arc<str>,
    mailbox: Arc<Mailbox>,
}

impl Subscription {
    /// The key subscribed to.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The next thing seen of the key.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: nothing is taken from the mailbox unless it is returned.
    pub async fn next(&self) -> Seen {
        loop {
            if let Some(seen) = lock(&self.mailbox.queue).pop_front() {
                return seen;
            }
            // A push between the pop above and this wait leaves a permit: no wake-up is lost.
            self.mailbox.notify.notified().await;
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut subscribers = lock(&self.watch.subscribers);
        if let Some(mailboxes) = subscribers.get_mut(&*self.key) {
            mailboxes.retain(|mailbox| !Arc::ptr_eq(mailbox, &self.mailbox));
            if mailboxes.is_empty() {
                subscribers.remove(&self.key);
            }
        }
    }
}

/// What the watch has told a subscriber and it has not taken yet: empty almost always, so
/// it allocates nothing.
#[derive(Debug, Default)]
struct Mailbox {
    queue: Mutex<VecDeque<Seen>>,
    notify: Notify,
}

impl Mailbox {
    fn push(&self, seen: Seen) {
        lock(&self.queue).push_back(seen);
        self.notify.notify_one();
    }
}

/// Follows the watch; after every break reads the prefix and watches it from just after the
/// read, telling each subscriber what concerns its key. Never ends by itself: the last
/// subscription's drop aborts it.
async fn run(store: Store, range: KeyRange, first: WatchStream, subscribers: Arc<Subscribers>) {
    let mut backoff = INITIAL_BACKOFF;
    let mut stream = Some(first);
    loop {
        let Some(mut open) = stream.take() else {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
            // Boxed: rare, and inline it would make the task's future bigger.
            stream = Box::pin(relist(&store, &range, &subscribers)).await;
            continue;
        };
        loop {
            match open.next().await {
                Some(Ok(batch)) if batch.is_progress() => {}
                Some(Ok(batch)) => {
                    backoff = INITIAL_BACKOFF;
                    tell(&subscribers, batch.revision, batch.events);
                }
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "registrations' watch broke; reading the prefix again");
                    break;
                }
                None => {
                    tracing::debug!("registrations' watch ended; reading the prefix again");
                    break;
                }
            }
        }
    }
}

/// Reads the prefix, tells every subscriber its key's state, and watches on from just after the
/// read; `None` (logged) if either fails.
async fn relist(store: &Store, range: &KeyRange, subscribers: &Subscribers) -> Option<WatchStream> {
    let read = match store
        .range(range, RangeOptions::default().keys_only())
        .await
    {
        Ok(read) => read,
        Err(e) => {
            tracing::debug!(error = %e, "cannot read the registrations' prefix; retrying");
            return None;
        }
    };
    let stream = match store.watch(range, read.revision + 1).await {
        Ok(stream) => stream,
        Err(e) => {
            tracing::debug!(error = %e, "cannot watch the registrations' prefix; retrying");
            return None;
        }
    };
    // Told only once the watch is open: whoever acts on the state read is then sure to hear of
    // what follows it.
    for (key, mailboxes) in lock(subscribers).iter() {
        // A range answers in key order.
        let kv = read
            .kvs
            .binary_search_by(|kv| kv.key.as_str().cmp(&**key))
            .ok()
            .map(|at| &read.kvs[at]);
        for mailbox in mailboxes {
            mailbox.push(Seen::Listed(read.revision, kv.cloned()));
        }
    }
    Some(stream)
}

/// Tells each subscriber the events of `revision` on its key.
fn tell(subscribers: &Subscribers, revision: i64, events: Vec<Event>) {
    let subscribers = lock(subscribers);
    for event in events {
        if let Some(mailboxes) = subscribers.get(event.kv.key.as_str()) {
            for mailbox in mailboxes {
                mailbox.push(Seen::Events(revision, vec![event.clone()]));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn next(subscription: &Subscription) -> Seen {
        tokio::time::timeout(Duration::from_secs(5), subscription.next())
            .await
            .expect("something is seen")
    }

    #[tokio::test]
    async fn one_watch_per_name_each_subscriber_told_only_of_its_key() {
        let store = Store::in_memory();
        let own = OwnKeys::new(store.clone());
        let a = own
            .subscribe("svc", "/services/svc/a".into())
            .await
            .unwrap();
        let b = own
            .subscribe("svc", "/services/svc/b".into())
            .await
            .unwrap();
        let other = own
            .subscribe("other", "/services/other/a".into())
            .await
            .unwrap();
        assert_eq!(own.watches().await, 2);
        let put = store
            .put("/services/svc/b", b"1".to_vec(), 0)
            .await
            .unwrap();
        match next(&b).await {
            Seen::Events(revision, events) => {
                assert_eq!(revision, put.revision);
                assert_eq!(events.len(), 1);
                assert_eq!(events[0].kv.key, "/services/svc/b");
            }
            seen => panic!("{seen:?}"),
        }
        // Nothing for the others: a change of another key is not theirs.
        assert!(
            tokio::time::timeout(Duration::from_millis(200), a.next())
                .await
                .is_err()
        );
        drop(a);
        drop(b);
        assert_eq!(
            own.watches().await,
            1,
            "the name's watch goes with its last subscriber"
        );
        drop(other);
        assert_eq!(own.watches().await, 0);
    }

    #[tokio::test]
    async fn a_second_subscriber_of_a_key_leaving_does_not_silence_the_first() {
        let store = Store::in_memory();
        let own = OwnKeys::new(store.clone());
        let first = own
            .subscribe("svc", "/services/svc/a".into())
            .await
            .unwrap();
        let refused = own
            .subscribe("svc", "/services/svc/a".into())
            .await
            .unwrap();
        drop(refused);
        store
            .put("/services/svc/a", b"1".to_vec(), 0)
            .await
            .unwrap();
        assert!(matches!(next(&first).await, Seen::Events(_, _)));
    }
}
