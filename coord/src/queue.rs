//! The ordered-waiter queue that locks and election share.
//!
//! This is the layout and the algorithm of etcd's Go `concurrency` package (`Mutex` and
//! `Election`), so coord interoperates with `etcdctl lock`, `etcdctl elect` and Go clients:
//!
//! - every contender puts `{prefix}{lease_id:x}` attached to its own lease, create-only, so
//!   the etcd revision of that put orders the contenders;
//! - the one with the lowest create revision is at the head (holds the lock, leads);
//! - every other contender waits only for the key created just before its own to be deleted
//!   (Go's `waitDeletes`), then looks again: no thundering herd when the head leaves.
//!
//! Go reads "the key just before mine" with one sorted, limited range
//! (`WithLastCreate` + `WithMaxCreateRev`); the store seam reads a keys-only range of the prefix
//! and picks client-side, which costs the size of the queue per look, not a round trip more.

use std::sync::{Arc, OnceLock};

use tracing::Instrument;

use crate::context::Context;
use crate::error::{Error, Result};
use crate::session::Session;
use crate::store::{
    Compare, EventKind, KeyRange, KeyValue, RangeOptions, Store, Txn, TxnOp, TxnOpResponse,
};
use crate::watch::{ResilientWatch, WatchConfig, WatchEvent};

/// Refuses names the store could not hold or that would share a prefix ambiguously.
pub(crate) fn check_name(field: &str, name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::invalid_argument(field, "must not be empty"));
    }
    if name.contains('\0') {
        return Err(Error::invalid_argument(
            field,
            format!("`{}` contains a NUL character", name.escape_debug()),
        ));
    }
    Ok(())
}

/// The queue prefix of a lock or election name, as Go's `concurrency` package builds it.
pub(crate) fn prefix_of(name: &str) -> String {
    format!("{name}/")
}

/// My place in a queue after [`join`].
#[derive(Clone, Debug)]
pub(crate) struct Joined {
    /// My key, `{prefix}{lease:x}`.
    pub key: String,
    /// The create revision of my key: my place in the queue.
    pub create_revision: i64,
    /// The store revision the join saw.
    pub revision: i64,
    /// The queue (keys only) as of `revision`, mine included.
    pub queue: Vec<KeyValue>,
}

impl Joined {
    /// The contender at the head of the queue (lowest create revision) when I joined.
    pub fn head(&self) -> Option<&KeyValue> {
        self.queue.iter().min_by_key(|kv| kv.create_revision)
    }

    /// True if I was at the head when I joined.
    pub fn is_head(&self) -> bool {
        self.head()
            .is_none_or(|kv| kv.create_revision == self.create_revision)
    }
}

/// Puts my key under `prefix` on `lease` unless it already exists (then it is reused, as Go
/// does for a session that already holds the lock) and reads the queue, in one transaction.
pub(crate) async fn join(
    store: &Store,
    prefix: &str,
    lease: i64,
    value: Vec<u8>,
) -> Result<Joined> {
    let key = format!("{prefix}{lease:x}");
    let queue = TxnOp::Get(
        KeyRange::prefix(prefix),
        RangeOptions::default().keys_only(),
    );
    let txn = Txn::new()
        .when([Compare::create_revision(key.as_str(), 0)])
        .and_then([
            TxnOp::put_with_lease(key.as_str(), value, lease),
            queue.clone(),
        ])
        .or_else([TxnOp::get(key.as_str()), queue]);
    let response = store.txn(txn).await?;
    let mut ranges = response.responses.into_iter().filter_map(|r| match r {
        TxnOpResponse::Get(get) => Some(get),
        _ => None,
    });
    let missing = || Error::Backend {
        key: key.clone(),
        reason: "transaction answer lacks a range response".into(),
    };
    let create_revision = if response.succeeded {
        response.revision
    } else {
        let mine = ranges.next().ok_or_else(missing)?;
        match mine.kvs.first() {
            Some(kv) => kv.create_revision,
            // The key existed at the compare and is gone in the same revision: impossible in
            // one transaction, so the store answered something else.
            None => return Err(missing()),
        }
    };
    let queue = ranges.next().ok_or_else(missing)?.kvs;
    Ok(Joined {
        key,
        create_revision,
        revision: response.revision,
        queue,
    })
}

/// The key created just before `create_revision` in `queue`, if any.
fn predecessor(queue: &[KeyValue], create_revision: i64) -> Option<&KeyValue> {
    queue
        .iter()
        .filter(|kv| kv.create_revision < create_revision)
        .max_by_key(|kv| kv.create_revision)
}

/// Waits until no key under `prefix` has a create revision below `create_revision`, i.e.
/// until I am at the head of the queue. Returns the store revision at which that was seen.
///
/// Starts from `joined`'s snapshot, so an uncontended caller sends nothing. Each round
/// watches only the predecessor key, from the revision the queue was read at + 1, until it is
/// gone, then reads the queue again (a predecessor leaving does not mean all are gone). A
/// broken watch is resumed, not taken for an answer: the wait goes on through an outage until
/// the predecessor goes or the store is closed (the callers also stop on a lost session).
///
/// # Cancel safety
///
/// Cancel safe: it only reads and watches; dropping it leaves the store unchanged.
pub(crate) async fn wait_for_head(store: &Store, prefix: &str, joined: &Joined) -> Result<i64> {
    let mut queue = joined.queue.clone();
    let mut revision = joined.revision;
    loop {
        let Some(before) = predecessor(&queue, joined.create_revision) else {
            return Ok(revision);
        };
        wait_gone(store, &before.key, before.create_revision, revision).await?;
        let response = store
            .range(
                &KeyRange::prefix(prefix),
                RangeOptions::default().keys_only(),
            )
            .await?;
        queue = response.kvs;
        revision = response.revision;
    }
}

/// Waits for my turn in the queue, then checks that I still hold my place, as etcd's Go
/// `Mutex.Lock` and `Election.Campaign` do after `waitDeletes` (etcd issue 11456: the lease may
/// have expired while waiting, and the wait ends then too, since my key is deleted). Returns
/// the store revision at which my key was seen at the head.
///
/// `what` names the key in errors ("lock key", "candidate key").
///
/// # Errors
///
/// [`Error::SessionLost`] if the session was lost or my key is gone; [`Error::Closed`] if the
/// `Coord` was closed meanwhile; store errors.
///
/// # Cancel safety
///
/// Cancel safe: it only reads and watches.
pub(crate) async fn wait_turn(
    ctx: &Context,
    prefix: &str,
    joined: &Joined,
    session: &Session,
    what: &str,
) -> Result<i64> {
    let store = &ctx.store;
    // Closed first: `Coord::close` revokes the session too, and the caller should learn why.
    let revision = tokio::select! {
        biased;
        () = ctx.closed() => return Err(Error::Closed),
        lost = session.lost() => return Err(lost),
        r = wait_for_head(store, prefix, joined) => r?,
    };
    ctx.check_open()?;
    let (mine, now) = store.get(&joined.key).await?;
    match mine {
        Some(kv)
            if kv.create_revision == joined.create_revision
                && kv.lease == session.lease_id()
                && session.is_alive() =>
        {
            Ok(now.max(revision))
        }
        _ => Err(Error::SessionLost {
            lease: session.lease_id(),
            reason: format!(
                "{what} `{}` is gone (lease expired while waiting)",
                joined.key
            ),
        }),
    }
}

/// Deletes `key` only if it still has `create_revision`: never someone else's key after a
/// loss.
pub(crate) fn delete_if_created_at(key: &str, create_revision: i64) -> Txn {
    Txn::new()
        .when([Compare::create_revision(key, create_revision)])
        .and_then([TxnOp::delete(key)])
}

/// A key held on a session: what a [`LockGuard`](crate::LockGuard), a
/// [`Leadership`](crate::Leadership) and an [`IdGuard`](crate::IdGuard) share to know whether
/// they still hold it.
///
/// It is held while the session is alive and the key still exists with the create revision it
/// was created with. Once [`lost`](Self::lost) has seen otherwise, or a fenced write has failed,
/// [`is_alive`](Self::is_alive) reads false for good.
#[derive(Debug)]
pub(crate) struct HeldKey {
    pub key: String,
    pub create_revision: i64,
    /// A store revision at which the key was known to be held.
    pub seen_at: i64,
    pub session: Session,
    /// Why the key is known to be gone, once it is.
    gone: Arc<OnceLock<String>>,
}

impl HeldKey {
    pub fn new(key: String, create_revision: i64, seen_at: i64, session: Session) -> Self {
        HeldKey {
            key,
            create_revision,
            seen_at,
            session,
            gone: Arc::default(),
        }
    }

    /// True until the session is known lost or the key known gone.
    pub fn is_alive(&self) -> bool {
        self.session.is_alive() && self.gone.get().is_none()
    }

    /// The compare that holds only while the key is still this holder's.
    pub fn fence(&self) -> Compare {
        Compare::create_revision(self.key.as_str(), self.create_revision)
    }

    /// Records that the key is gone (a fenced write failed, say).
    pub fn mark_gone(&self, reason: impl Into<String>) {
        let _ = self.gone.set(reason.into());
    }

    /// What `unlock`, `release` and `resign` check before sending anything:
    /// [`Error::Closed`] after `Coord::close` (which released the key already), or
    /// [`Error::SessionLost`] if the key is already known to be lost.
    pub fn check_release(&self, ctx: &Context, action: &str) -> Result<()> {
        ctx.check_open()?;
        match self.lost_before(action) {
            Some(lost) => Err(lost),
            None => Ok(()),
        }
    }

    /// The transaction that deletes the key only while it is still this holder's; it fails
    /// (`succeeded == false`) if the key was deleted or taken over.
    pub fn delete_if_held(&self) -> Txn {
        delete_if_created_at(&self.key, self.create_revision)
    }

    /// The error to return from `action` ("unlock", "release"…) if the key is already known to
    /// be lost.
    pub fn lost_before(&self, action: &str) -> Option<Error> {
        let reason = match self.gone.get() {
            Some(reason) => reason.clone(),
            None if !self.session.is_alive() => "its lease is gone".to_owned(),
            None => return None,
        };
        Some(self.lost_error(format!("lost before {action}: {reason}")))
    }

    pub fn lost_error(&self, reason: String) -> Error {
        Error::SessionLost {
            lease: self.session.lease_id(),
            reason,
        }
    }

    /// Resolves once the key is lost: the session is lost, or the key deleted or replaced.
    /// `what` names the thing held in the warning ("lock", "leadership", "instance ID").
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn lost(&self, store: &Store, what: &str) -> Error {
        let error = tokio::select! {
            e = self.session.lost() => e,
            gone = wait_gone(store, &self.key, self.create_revision, self.seen_at) => {
                // Only a closed store ends the wait early, and its close revoked the lease.
                let reason = gone
                    .unwrap_or_else(|_| format!("key `{}` was released by close", self.key));
                tracing::warn!(key = %self.key, %reason, "{what} lost");
                self.mark_gone(reason.clone());
                self.lost_error(reason)
            }
        };
        if let Error::SessionLost { reason, .. } = &error {
            self.mark_gone(reason.clone());
        }
        error
    }
}

/// Waits until `key`, which existed with `create_revision` at `revision`, is gone: deleted
/// (expired with its lease included), or replaced by a key with another create revision.
/// Returns a sentence saying which.
///
/// It follows the key with a [`ResilientWatch`] from `revision` + 1: a broken watch is resumed
/// where it stopped (as Go's client watch does under `waitDeletes`), and a compacted history is
/// answered by reading the key. So only a closed store ends the wait early.
///
/// # Errors
///
/// [`Error::Closed`] once the store is closed.
///
/// # Cancel safety
///
/// Cancel safe: it only reads and watches.
async fn wait_gone(
    store: &Store,
    key: &str,
    create_revision: i64,
    revision: i64,
) -> Result<String> {
    let span = tracing::debug_span!("queue.wait_gone", key, create_revision, revision);
    async {
        // Keys only: a relist needs the create revision, not the value.
        let config = WatchConfig::default().keys_only();
        let mut watch = ResilientWatch::with_config(store.clone(), KeyRange::key(key), config)
            .starting_after(revision);
        loop {
            let states = match watch.next().await {
                Ok(item) => key_states(item),
                Err(Error::Closed) => return Err(Error::Closed),
                // The watch retries by itself, with backoff.
                Err(e) => {
                    tracing::debug!(error = %e, "watch on the key broke; resuming");
                    continue;
                }
            };
            for state in states {
                match state {
                    None => return Ok(format!("key `{key}` was deleted")),
                    Some(kv) if kv.create_revision != create_revision => {
                        return Ok(format!("key `{key}` was replaced"));
                    }
                    Some(_) => {}
                }
            }
        }
    }
    .instrument(span)
    .await
}

/// What a watch item of a single key says of it: the key after each change, in order (`None`:
/// absent).
fn key_states(item: WatchEvent) -> Vec<Option<KeyValue>> {
    match item {
        WatchEvent::Init { kvs, .. } => vec![kvs.into_iter().next()],
        WatchEvent::Events { events, .. } | WatchEvent::Resync { events, .. } => events
            .into_iter()
            .map(|event| (event.kind == EventKind::Put).then_some(event.kv))
            .collect(),
        WatchEvent::Progress { .. } => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    async fn gone(store: &Store, key: &str, create_revision: i64, revision: i64) -> String {
        tokio::time::timeout(
            Duration::from_secs(5),
            wait_gone(store, key, create_revision, revision),
        )
        .await
        .expect("the wait ends")
        .expect("the store is open")
    }

    #[tokio::test]
    async fn a_wait_ends_when_the_key_is_deleted_and_not_before() {
        let store = Store::in_memory();
        let created = store.put("/q/a", Vec::new(), 0).await.unwrap().revision;
        // A new value on the same key is not its going.
        store.put("/q/a", b"x".to_vec(), 0).await.unwrap();
        store.delete(&KeyRange::key("/q/a")).await.unwrap();
        assert_eq!(
            gone(&store, "/q/a", created, created).await,
            "key `/q/a` was deleted"
        );
    }

    #[tokio::test]
    async fn a_key_recreated_in_a_compacted_history_is_found_replaced() {
        let store = Store::in_memory();
        let created = store.put("/q/a", Vec::new(), 0).await.unwrap().revision;
        store.delete(&KeyRange::key("/q/a")).await.unwrap();
        let again = store.put("/q/a", Vec::new(), 0).await.unwrap().revision;
        store.compact(again).await.unwrap();
        // The delete is compacted away: the relist sees a key of another create revision.
        assert_eq!(
            gone(&store, "/q/a", created, created).await,
            "key `/q/a` was replaced"
        );
    }

    #[tokio::test]
    async fn a_closed_store_ends_the_wait_with_closed() {
        let store = Store::in_memory();
        let created = store.put("/q/a", Vec::new(), 0).await.unwrap().revision;
        let wait = wait_gone(&store, "/q/a", created, created);
        tokio::pin!(wait);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), &mut wait)
                .await
                .is_err(),
            "the key is still there"
        );
        store.close();
        let ended = tokio::time::timeout(Duration::from_secs(5), wait)
            .await
            .expect("the wait ends");
        assert!(matches!(ended, Err(Error::Closed)), "{ended:?}");
    }
}
