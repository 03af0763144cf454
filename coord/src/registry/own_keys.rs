//! The watch registrations keep on their own keys, so each can put its key back if it is
//! deleted and give up if another lease takes it: one store watch per service name per
//! `Coord`, however many instances of that service the `Coord` registers.
//!
//! # What it promises
//!
//! - A [`Subscription`] taken before its registration writes its key is told of every later
//!   change to that key ([`Seen::Events`]), in revision order. Changes from before the write
//!   may be told too: the registration skips whatever is not newer than its own write.
//! - When the watch breaks (an etcd restart, a compaction), the gap is not replayed (it may be
//!   compacted away): the service's prefix is read again, every subscriber is told its key's
//!   state at that read ([`Seen::Now`]), and the watch goes on from just after the read. The
//!   first read, when the watch starts, is told the same way.
//! - The watch starts with the first subscription of a name and stops with the last; a
//!   subscriber costs a map entry and a mailbox, not a watch (etcd keeps one watcher per name
//!   instead of one per instance).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::Notify;
use tracing::Instrument;

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
    /// The key as read at a revision (`None`: absent), after the watch (re)started.
    Now(i64, Option<KeyValue>),
}

/// The subscribers of one `Coord`'s registrations, by service name.
#[derive(Debug)]
pub(crate) struct OwnKeys {
    store: Store,
    names: Mutex<HashMap<String, Weak<NameWatch>>>,
}

impl OwnKeys {
    pub fn new(store: Store) -> Self {
        OwnKeys {
            store,
            names: Mutex::new(HashMap::new()),
        }
    }

    /// Subscribes to the changes of `key`, an instance key of service `name`, starting the
    /// name's watch if it is not running. Must be called within a tokio runtime.
    pub(super) fn subscribe(&self, name: &str, key: &str) -> Subscription {
        let watch = {
            let mut names = lock(&self.names);
            match names.get(name).and_then(Weak::upgrade) {
                Some(watch) => watch,
                None => {
                    names.retain(|_, watch| watch.strong_count() > 0);
                    let watch = NameWatch::start(&self.store, name);
                    names.insert(name.to_owned(), Arc::downgrade(&watch));
                    watch
                }
            }
        };
        let mailbox = Arc::new(Mailbox::default());
        lock(&watch.subscribers)
            .entry(key.to_owned())
            .or_default()
            .push(Arc::clone(&mailbox));
        Subscription {
            watch,
            key: key.to_owned(),
            mailbox,
        }
    }

    /// Store watches open for registrations right now (one per service name).
    #[cfg(test)]
    fn watches(&self) -> usize {
        lock(&self.names)
            .values()
            .filter(|watch| watch.strong_count() > 0)
            .count()
    }
}

/// Subscribers by key. Usually one per key; two for a moment when a second registration of
/// a key this `Coord` holds is being refused.
type Subscribers = Mutex<HashMap<String, Vec<Arc<Mailbox>>>>;

/// The watch of one service name, shared by its subscribers; it stops when the last goes.
#[derive(Debug)]
struct NameWatch {
    subscribers: Arc<Subscribers>,
    task: tokio::task::AbortHandle,
}

impl NameWatch {
    fn start(store: &Store, name: &str) -> Arc<Self> {
        let subscribers = Arc::new(Subscribers::default());
        let prefix = super::service_prefix(name);
        let span = tracing::debug_span!("registry.own_keys", prefix = prefix.as_str());
        let task =
            tokio::spawn(run(store.clone(), prefix, Arc::clone(&subscribers)).instrument(span))
                .abort_handle();
        Arc::new(NameWatch { subscribers, task })
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
    key: String,
    mailbox: Arc<Mailbox>,
}

impl Subscription {
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
        if let Some(mailboxes) = subscribers.get_mut(&self.key) {
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

/// Reads the prefix and watches it from just after the read, again after every break, telling
/// each subscriber what concerns its key. Never ends by itself: the last subscription's drop
/// aborts it.
async fn run(store: Store, prefix: String, subscribers: Arc<Subscribers>) {
    let range = KeyRange::prefix(prefix.as_str());
    let mut backoff = INITIAL_BACKOFF;
    let mut first = true;
    loop {
        if !first {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        first = false;
        // Boxed: rare, and inline they would make the task's future kilobytes bigger.
        let Some(mut stream) = Box::pin(relist(&store, &range, &subscribers)).await else {
            continue;
        };
        loop {
            match stream.next().await {
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
    let read = match store.range(range, RangeOptions::default()).await {
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
            .binary_search_by(|kv| kv.key.as_str().cmp(key))
            .ok()
            .map(|at| &read.kvs[at]);
        for mailbox in mailboxes {
            mailbox.push(Seen::Now(read.revision, kv.cloned()));
        }
    }
    Some(stream)
}

/// Tells each subscriber the events of `revision` on its key.
fn tell(subscribers: &Subscribers, revision: i64, events: Vec<Event>) {
    let subscribers = lock(subscribers);
    for event in events {
        if let Some(mailboxes) = subscribers.get(&event.kv.key) {
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
        let a = own.subscribe("svc", "/services/svc/a");
        let b = own.subscribe("svc", "/services/svc/b");
        let other = own.subscribe("other", "/services/other/a");
        assert_eq!(own.watches(), 2);
        // The first read, once the watch is open: nothing there yet.
        for subscription in [&a, &b, &other] {
            assert!(matches!(next(subscription).await, Seen::Now(_, None)));
        }
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
        assert!(tokio::time::timeout(Duration::from_millis(200), a.next())
            .await
            .is_err());
        drop(a);
        drop(b);
        assert_eq!(
            own.watches(),
            1,
            "the name's watch goes with its last subscriber"
        );
        drop(other);
        assert_eq!(own.watches(), 0);
    }

    #[tokio::test]
    async fn a_second_subscriber_of_a_key_leaving_does_not_silence_the_first() {
        let store = Store::in_memory();
        let own = OwnKeys::new(store.clone());
        let first = own.subscribe("svc", "/services/svc/a");
        let refused = own.subscribe("svc", "/services/svc/a");
        drop(refused);
        assert!(matches!(next(&first).await, Seen::Now(_, None)));
        store
            .put("/services/svc/a", b"1".to_vec(), 0)
            .await
            .unwrap();
        assert!(matches!(next(&first).await, Seen::Events(_, _)));
    }
}
