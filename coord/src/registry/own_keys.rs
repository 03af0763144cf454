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
//! - The watch is a [`ResilientWatch`] from that moment on. When it breaks (an etcd restart) it
//!   resumes after the last revision it delivered, so the changes of the gap are told as
//!   events. When there is nothing to resume from (its history was compacted, or it broke
//!   before it delivered any revision) the service's prefix is read again (keys only: a big
//!   service's values are not fetched for the few keys a `Coord` holds, and no map of its keys
//!   is kept), every subscriber is told its key's state at that read ([`Seen::Listed`]), and
//!   the watch goes on from just after the read.
//! - The watch starts with the first subscription of a name and stops with the last (it is a
//!   [`SharedWatches`] entry); a subscriber costs a map entry and a mailbox, not a watch (etcd
//!   keeps one watcher per name instead of one per instance).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tracing::Instrument;

use crate::error::{Error, Result};
use crate::shared_watch::{SharedWatch, SharedWatches};
use crate::store::{Event, EventKind, KeyRange, KeyValue, Store};
use crate::sync::lock;
use crate::watch::{Relist, ResilientWatch, WatchConfig, WatchEvent};

/// What a subscriber is told of its key.
#[derive(Debug)]
pub(super) enum Seen {
    /// The changes of the key at one revision.
    Events(i64, Vec<Event>),
    /// The key as read at a revision (`None`: absent).
    Now(i64, Option<KeyValue>),
    /// The same from a keys-only read of the prefix, after the watch relisted: the value is
    /// not there (a keeper learns from it who holds the key, not what it holds).
    Listed(i64, Option<KeyValue>),
}

/// The subscribers of one `Coord`'s registrations, by service name.
#[derive(Debug)]
pub(crate) struct OwnKeys {
    store: Store,
    names: SharedWatches<String, Name>,
}

impl OwnKeys {
    pub fn new(store: Store) -> Self {
        OwnKeys {
            store,
            names: SharedWatches::default(),
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
    /// Cancel safe: a watch opened for a dropped call is closed (see
    /// [`SharedWatches::watch`]).
    pub(super) async fn subscribe(&self, name: &str, key: Arc<str>) -> Result<Subscription> {
        let new = || {
            let subscribers = Arc::new(Subscribers::default());
            let name = Name {
                subscribers: Arc::clone(&subscribers),
            };
            (name, subscribers)
        };
        let start = |subscribers| self.start(name, subscribers);
        let watch = self.names.watch(&name.to_owned(), new, start).await?;
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

    /// Opens the watch of `name`'s instances from now on; returns the task that follows it.
    async fn start(
        &self,
        name: &str,
        subscribers: Arc<Subscribers>,
    ) -> Result<impl Future<Output = ()> + Send + 'static + use<>> {
        let prefix = super::service::service_prefix(name);
        let config = WatchConfig::default().keys_only().relist(Relist::Whole);
        let range = KeyRange::prefix(prefix.as_str());
        let watch = ResilientWatch::from_now(self.store.clone(), range, config).await?;
        let span = tracing::debug_span!("registry.own_keys", prefix = prefix.as_str());
        Ok(run(watch, subscribers).instrument(span))
    }

    /// Store watches open for registrations right now (one per service name).
    #[cfg(test)]
    fn watches(&self) -> usize {
        self.names.len()
    }
}

/// Subscribers by key. Usually one per key; two for a moment when a second registration of
/// a key this `Coord` holds is being refused.
type Subscribers = Mutex<HashMap<Arc<str>, Vec<Arc<Mailbox>>>>;

/// What the watch of one service name shares with its subscriptions; the watch stops when the
/// last subscription goes.
#[derive(Debug)]
struct Name {
    /// Also held by the watch's task, which tells them.
    subscribers: Arc<Subscribers>,
}

/// One registration's view of its key: what [`OwnKeys::subscribe`] returns.
#[derive(Debug)]
pub(super) struct Subscription {
    watch: Arc<SharedWatch<Name>>,
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

/// Follows the name's watch, telling each subscriber what concerns its key, until the store
/// is closed. The last subscription's drop aborts it before that, as a rule.
async fn run(mut watch: ResilientWatch, subscribers: Arc<Subscribers>) {
    loop {
        match watch.next().await {
            Ok(WatchEvent::Events { revision, events }) => {
                tell(&subscribers, revision, events, false);
            }
            Ok(WatchEvent::Init { revision, kvs }) => tell_listed(&subscribers, revision, &kvs),
            // Not with whole relists; a keys-only difference would be a listing all the same.
            Ok(WatchEvent::Resync { revision, events }) => {
                tell(&subscribers, revision, events, true);
            }
            Ok(WatchEvent::Progress { .. }) => {}
            Err(Error::Closed) => return,
            // The watch retries by itself, with backoff.
            Err(e) => tracing::debug!(error = %e, "registrations' watch broke; resuming"),
        }
    }
}

/// Tells every subscriber its key's state in a keys-only read of the prefix at `revision`.
fn tell_listed(subscribers: &Subscribers, revision: i64, kvs: &[KeyValue]) {
    for (key, mailboxes) in lock(subscribers).iter() {
        // A range answers in key order.
        let kv = kvs
            .binary_search_by(|kv| kv.key.as_str().cmp(&**key))
            .ok()
            .map(|at| &kvs[at]);
        for mailbox in mailboxes {
            mailbox.push(Seen::Listed(revision, kv.cloned()));
        }
    }
}

/// Tells each subscriber the events of `revision` on its key: as they are, or (`listed`) as
/// its state in a keys-only read.
fn tell(subscribers: &Subscribers, revision: i64, events: Vec<Event>, listed: bool) {
    let subscribers = lock(subscribers);
    for event in events {
        if let Some(mailboxes) = subscribers.get(event.kv.key.as_str()) {
            for mailbox in mailboxes {
                let seen = if listed {
                    let kv = (event.kind == EventKind::Put).then(|| event.kv.clone());
                    Seen::Listed(revision, kv)
                } else {
                    Seen::Events(revision, vec![event.clone()])
                };
                mailbox.push(seen);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

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
        assert_eq!(own.watches(), 2);
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
