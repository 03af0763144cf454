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
use std::time::Duration;

use futures::StreamExt;
use tracing::Instrument;

use crate::context::Context;
use crate::error::{Error, Result};
use crate::session::Session;
use crate::store::{
    Compare, EventKind, KeyRange, KeyValue, RangeOptions, Store, Txn, TxnOp, TxnOpResponse,
};

/// How long to pause after a watch broke before reading the queue again.
const BROKEN_WATCH_PAUSE: Duration = Duration::from_millis(100);

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
/// deleted, then reads the queue again (a predecessor leaving does not mean all are gone).
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
        wait_deleted(store, &before.key, revision).await?;
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
pub(crate) struct Held {
    pub key: String,
    pub create_revision: i64,
    /// A store revision at which the key was known to be held.
    pub seen_at: i64,
    pub session: Session,
    /// Why the key is known to be gone, once it is.
    gone: Arc<OnceLock<String>>,
}

impl Held {
    pub fn new(key: String, create_revision: i64, seen_at: i64, session: Session) -> Self {
        Held {
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
            reason = wait_key_gone(store, &self.key, self.create_revision, self.seen_at) => {
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

/// Waits until `key`, which existed at `revision`, is deleted after it.
///
/// A watch that breaks (etcd restarted, say) is not an answer: the caller reads the queue
/// again, which tells whether the key is gone.
pub(crate) async fn wait_deleted(store: &Store, key: &str, revision: i64) -> Result<()> {
    let span = tracing::debug_span!("queue.wait_deleted", key, revision);
    async {
        let mut stream = store.watch(&KeyRange::key(key), revision + 1).await?;
        while let Some(batch) = stream.next().await {
            match batch {
                Ok(batch) => {
                    if batch.events.iter().any(|e| e.kind == EventKind::Delete) {
                        return Ok(());
                    }
                }
                // The history since `revision` is gone: re-reading the queue tells.
                Err(Error::Compacted { .. }) => return Ok(()),
                Err(e) => {
                    tracing::debug!(key, error = %e, "watch on the predecessor broke; re-reading the queue");
                    break;
                }
            }
        }
        // A broken stream: pause a little so a store that keeps breaking watches is not
        // hammered; the caller's range fails if the store is really down.
        tokio::time::sleep(BROKEN_WATCH_PAUSE).await;
        Ok(())
    }
    .instrument(span)
    .await
}

/// Waits until `key`, which existed with `create_revision` at `revision`, is gone: deleted,
/// expired with its lease, or replaced by a key with another create revision. Returns a
/// sentence saying what happened.
///
/// A broken watch is not an answer: it reads the key, and watches again if it is still there.
///
/// # Cancel safety
///
/// Cancel safe: it only reads and watches.
pub(crate) async fn wait_key_gone(
    store: &Store,
    key: &str,
    create_revision: i64,
    revision: i64,
) -> String {
    let span = tracing::debug_span!("queue.wait_key_gone", key, create_revision);
    async {
        let mut from = revision + 1;
        loop {
            if let Ok(mut stream) = store.watch(&KeyRange::key(key), from).await {
                while let Some(Ok(batch)) = stream.next().await {
                    for event in &batch.events {
                        if event.kind == EventKind::Delete {
                            return format!("key `{key}` was deleted");
                        }
                        if event.kv.create_revision != create_revision {
                            return format!("key `{key}` was replaced");
                        }
                    }
                    from = batch.revision + 1;
                }
            }
            // The watch broke or could not start (or its history was compacted): look at the
            // key itself before watching again.
            tokio::time::sleep(BROKEN_WATCH_PAUSE).await;
            match store.get(key).await {
                Ok((None, _)) => return format!("key `{key}` was deleted"),
                Ok((Some(kv), _)) if kv.create_revision != create_revision => {
                    return format!("key `{key}` was replaced");
                }
                Ok((Some(_), now)) => from = now + 1,
                // The Coord was closed (its close revoked the lease): nothing will answer.
                Err(Error::Closed) => return format!("key `{key}` was released by close"),
                Err(e) => {
                    tracing::debug!(key, error = %e, "cannot read the key; retrying");
                }
            }
        }
    }
    .instrument(span)
    .await
}
