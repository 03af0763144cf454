//! Distributed locks on etcd, with fencing tokens.
//!
//! [`Locks`] (`coord.locks()`) hands out [`LockGuard`]s. The layout is etcd's own (Go's
//! `concurrency.Mutex`, `etcdctl lock NAME`): each contender puts `NAME/{lease_id:x}` on its
//! own lease; the key with the lowest create revision holds the lock; every other contender
//! watches only the key just before its own. coord, `etcdctl lock` and Go clients therefore
//! exclude each other. As in that layout, the queue of `NAME` is every key under `NAME/`, so
//! no lock name may be another one followed by `/` (`jobs` and `jobs/nightly`).
//!
//! Each lock rides on its own lease, but [`LockGuard::unlock`] deletes only the key and keeps
//! the lease renewed for a few seconds, and the next lock with the same TTL on this `Coord`
//! reuses it. A loop of `acquire` + `unlock` then costs one transaction each way, as etcd's Lock
//! RPC on a long-lived session does, instead of also granting and revoking a lease every time.
//!
//! # What a lock promises, and what it does not
//!
//! A lease lock is **not mutual exclusion on its own**. The holder's lease can expire while it
//! is paused (a GC pause, a stalled VM, a partition) and another contender then gets the lock;
//! the first one may wake up and write, believing it still holds the lock. What a lock does
//! promise:
//!
//! - at any revision of the store, at most one live key holds the lock;
//! - [`LockGuard::fencing_token`] (the create revision of the holder's key) strictly increases
//!   from one holder to the next, so a resource that remembers the highest token it has seen can
//!   refuse a stale holder;
//! - a write to etcd made with [`LockGuard::txn`] or [`LockGuard::put_if_held`] happens only if
//!   the lock is still held at that revision (etcd checks it atomically, like Go's `IsOwner()`);
//! - [`LockGuard::lost`] resolves once the lease is revoked, expires, cannot be renewed in time,
//!   or the key is deleted by someone else.

use std::sync::Arc;
use std::time::Duration;

use tracing::Instrument;

use crate::context::Context;
use crate::error::{Error, Result};
use crate::queue::{self, HeldKey};
use crate::session::{self, Session};
use crate::store::{Compare, Txn, TxnOp, TxnResponse};

/// Hands out distributed locks; get one with [`Coord::locks`](crate::Coord::locks). Cheap to
/// clone.
#[derive(Clone, Debug)]
pub struct Locks {
    ctx: Arc<Context>,
}

impl Locks {
    pub(crate) fn new(ctx: Arc<Context>) -> Self {
        Locks { ctx }
    }

    /// Waits until the lock `name` is held, on a new lease of `ttl` kept alive in the
    /// background, and returns the guard.
    ///
    /// Uncontended it costs one transaction that puts the key and reads the queue, plus a lease
    /// grant unless a lock with the same TTL was [unlocked](LockGuard::unlock) on this `Coord`
    /// in the last few seconds (its lease is reused). Contended, it watches only the key just
    /// before its own, then reads its own key once more before returning, so a lock is never
    /// granted on a lease that expired while waiting (etcd issue 11456).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future while it waits revokes its lease in the background,
    /// which deletes its waiter key, so nothing is left in the queue.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for an empty name, a name with NUL, or a TTL under one
    /// second or over etcd's limit; [`Error::SessionLost`] if the lease was lost while waiting;
    /// [`Error::Closed`] if the `Coord` is (or gets) closed; store errors.
    pub async fn acquire(&self, name: &str, ttl: Duration) -> Result<LockGuard> {
        self.lock(name, ttl, true).await
    }

    /// Takes the lock `name` if it is free, or fails at once.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`acquire`](Self::acquire).
    ///
    /// # Errors
    ///
    /// [`Error::LockHeld`] naming the holder's key if the lock is held (the waiter key this
    /// call put is removed first); otherwise as [`acquire`](Self::acquire).
    pub async fn try_acquire(&self, name: &str, ttl: Duration) -> Result<LockGuard> {
        self.lock(name, ttl, false).await
    }

    async fn lock(&self, name: &str, ttl: Duration, wait: bool) -> Result<LockGuard> {
        queue::check_name("name", name)?;
        self.ctx.check_open()?;
        let span = tracing::debug_span!("lock.acquire", key = name, wait);
        let started = std::time::Instant::now();
        let result = async {
            let ttl_seconds = session::ttl_seconds(ttl)?;
            // From here on, dropping `session` (an error, a cancelled future) revokes the lease
            // in the background, which deletes the waiter key: that is the cleanup guard.
            let (session, joined) = self.join(name, ttl, ttl_seconds).await?;
            let prefix = queue::prefix_of(name);
            let revision = if joined.is_head() {
                joined.revision
            } else if !wait {
                let holder = joined.head().map(|kv| kv.key.clone()).unwrap_or_default();
                if let Err(e) = session.close().await {
                    tracing::debug!(key = %joined.key, error = %e, "cannot revoke the waiter lease; it will expire");
                }
                return Err(Error::LockHeld {
                    name: name.to_owned(),
                    holder,
                });
            } else {
                queue::wait_turn(&self.ctx, &prefix, &joined, &session, "lock key").await?
            };
            self.ctx.track_session("lock", name, &session);
            tracing::debug!(key = %joined.key, fencing_token = joined.create_revision, "lock acquired");
            Ok(LockGuard {
                name: name.to_owned(),
                held: HeldKey::new(joined.key, joined.create_revision, revision, session),
                ttl_seconds,
                ctx: Arc::clone(&self.ctx),
                _metric: crate::metrics::lock_acquired(started.elapsed()),
            })
        }
        .instrument(span)
        .await;
        self.ctx.unless_closed(result)
    }

    /// Joins the queue of `name` on a parked session of this TTL if there is one (no grant),
    /// else on a new lease.
    async fn join(
        &self,
        name: &str,
        ttl: Duration,
        ttl_seconds: i64,
    ) -> Result<(Session, queue::Joined)> {
        let store = &self.ctx.store;
        let prefix = queue::prefix_of(name);
        if let Some(session) = self.ctx.leases.take(ttl_seconds) {
            match queue::join(store, &prefix, session.lease_id(), Vec::new()).await {
                Ok(joined) => return Ok((session, joined)),
                // Revoked while parked, before its renewals noticed: take a new lease.
                Err(Error::LeaseNotFound { .. }) => {
                    tracing::debug!(
                        lease = format_args!("{:x}", session.lease_id()),
                        "parked lease is gone; granting a new one"
                    );
                }
                Err(e) => return Err(e),
            }
        }
        let session = self.ctx.session(ttl).await?;
        let joined = queue::join(store, &prefix, session.lease_id(), Vec::new()).await?;
        Ok((session, joined))
    }
}

/// A held distributed lock. Dropping it releases the lock in the background.
///
/// # A lease lock is not mutual exclusion
///
/// The lock is held only as long as its lease: a holder paused longer than the TTL (GC, swap,
/// a partition) loses it without knowing and may still act. Protect the resource with the
/// [`fencing_token`](Self::fencing_token) — it strictly increases from one holder to the next —
/// or, for data in etcd, write through [`txn`](Self::txn) / [`put_if_held`](Self::put_if_held),
/// which etcd applies only while this key still holds the lock.
///
/// # Examples
///
/// The fencing pattern: the write is applied only while the lock is held, and the token
/// travels with it so any other resource can refuse an older holder.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> coord::Result<()> {
/// use std::time::Duration;
/// let coord = coord::Coord::in_memory();
/// let lock = coord.locks().acquire("/locks/report", Duration::from_secs(10)).await?;
/// let token = lock.fencing_token();
///
/// // A write to etcd that happens only if we still hold the lock at that revision.
/// assert!(lock.put_if_held("/reports/latest", format!("by token {token}")).await?);
///
/// // Elsewhere, a resource keeps the highest token it has seen and refuses lower ones.
/// let mut highest_seen = 0;
/// assert!(token > highest_seen, "a newer holder");
/// highest_seen = token;
/// # let _ = highest_seen;
///
/// lock.unlock().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
#[must_use = "dropping a LockGuard releases the lock at once"]
pub struct LockGuard {
    name: String,
    // Holds the only strong handle of the session: dropping the guard drops it, which revokes
    // the lease in the background and so deletes the key.
    held: HeldKey,
    /// The TTL asked for, in seconds: the key under which `unlock` parks the session.
    ttl_seconds: i64,
    ctx: Arc<Context>,
    /// One of the locks-held gauge while the guard lives.
    _metric: crate::metrics::GaugeUnit,
}

impl LockGuard {
    /// The lock name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key that holds the lock, `{name}/{lease_id:x}`.
    pub fn key(&self) -> &str {
        &self.held.key
    }

    /// The create revision of [`key`](Self::key): strictly greater than the token of every
    /// earlier holder of this lock name. Pass it to the resource you protect.
    pub fn fencing_token(&self) -> i64 {
        self.held.create_revision
    }

    /// The lease ID the lock rides on. [`unlock`](Self::unlock) keeps the lease for the next
    /// lock, so keys you attach to it yourself outlive `unlock`; dropping the guard revokes it.
    pub fn lease_id(&self) -> i64 {
        self.held.session.lease_id()
    }

    /// The TTL the store granted for the lease.
    pub fn ttl(&self) -> Duration {
        self.held.session.ttl()
    }

    /// The time left on the lease, as the store reports it now (one round trip). Renewals
    /// run every third of the TTL, so a held lock reads between two thirds of the TTL and the
    /// TTL.
    ///
    /// # Errors
    ///
    /// [`Error::SessionLost`] if the lease is gone (and the lock with it); store errors.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn remaining_ttl(&self) -> Result<Duration> {
        let lease = self.lease_id();
        let span = tracing::debug_span!("lock.remaining_ttl", key = %self.held.key);
        let ttl = self.ctx.store.lease_ttl(lease).instrument(span).await?;
        match u64::try_from(ttl.ttl) {
            Ok(seconds) => Ok(Duration::from_secs(seconds)),
            Err(_) => {
                self.held.mark_gone("its lease expired or was revoked");
                Err(self
                    .held
                    .lost_error("its lease expired or was revoked".into()))
            }
        }
    }

    /// True until the lock is known to be lost: its lease is gone, or [`lost`](Self::lost),
    /// a fenced write ([`put_if_held`](Self::put_if_held)) or [`remaining_ttl`](Self::remaining_ttl)
    /// saw that the key is gone. It sends nothing: a key deleted by someone else is noticed by
    /// `lost()`, which watches it.
    pub fn is_alive(&self) -> bool {
        self.held.is_alive()
    }

    /// Renews the lease now, to the TTL it was granted with. etcd cannot change a lease's TTL,
    /// so `refresh` takes none (the original design's `Refresh(ttl)` could not honour one
    /// either): to hold a lock on another TTL, acquire it anew.
    ///
    /// # Errors
    ///
    /// [`Error::SessionLost`] if the lease is already gone; store errors.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a renewal that is dropped simply did not happen, or happened once.
    pub async fn refresh(&self) -> Result<()> {
        self.held.session.refresh().await
    }

    /// Resolves with [`Error::SessionLost`] once the lock is lost: the lease expired, was
    /// revoked or could not be renewed in time, or the key was deleted by someone else. From
    /// then on [`is_alive`](Self::is_alive) is false.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn lost(&self) -> Error {
        self.held.lost(&self.ctx.store, "lock").await
    }

    /// The compare that holds only while this guard holds the lock (its key exists with its
    /// create revision): add it to any transaction to fence it.
    pub fn fence(&self) -> Compare {
        self.held.fence()
    }

    /// Runs `txn` with [`fence`](Self::fence) added to its compares: the `success` branch runs
    /// only if the lock is still held and the other compares hold.
    ///
    /// # Errors
    ///
    /// Store errors; a lost lock is not an error but `succeeded == false`.
    ///
    /// # Cancel safety
    ///
    /// As [`Store::txn`](crate::Store::txn): a dropped future may or may not have applied it.
    pub async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        self.ctx.store.txn(txn.when([self.fence()])).await
    }

    /// Writes `key` only if the lock is still held; returns whether it was written. A `false`
    /// means the lock is lost, and [`is_alive`](Self::is_alive) reads false from then on.
    ///
    /// # Errors
    ///
    /// Store errors.
    ///
    /// # Cancel safety
    ///
    /// As [`txn`](Self::txn).
    pub async fn put_if_held(&self, key: &str, value: impl Into<Vec<u8>>) -> Result<bool> {
        let txn = Txn::new().and_then([TxnOp::put(key, value)]);
        let written = self.txn(txn).await?.succeeded;
        if !written {
            self.held
                .mark_gone(format!("lock key `{}` is gone", self.held.key));
        }
        Ok(written)
    }

    /// Releases the lock now: deletes its key (if it is still this holder's) in one round
    /// trip, and keeps the lease renewed for a few seconds so that the next
    /// [`acquire`](Locks::acquire) with the same TTL on this `Coord` needs no lease grant.
    /// If the delete fails, it revokes the lease instead.
    ///
    /// Keys you put on [`lease_id`](Self::lease_id) yourself are therefore *not* deleted by
    /// `unlock`: they would ride on to the next lock that reuses the lease. Delete them first,
    /// or drop the guard instead, which revokes the lease (one round trip more for the next
    /// lock).
    ///
    /// # Errors
    ///
    /// [`Error::SessionLost`] if the lock was already lost (its lease gone, or its key deleted
    /// or replaced by someone else): nothing was released because nothing was held, and the
    /// error says so. [`Error::Closed`] after `Coord::close`, which released it already. Store
    /// errors from the revoke when the delete failed too (the lease then expires after its
    /// TTL); a lease already gone is not an error.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the guard moves into the future, so dropping it drops the guard, which
    /// revokes the lease in the background.
    pub async fn unlock(self) -> Result<()> {
        let span = tracing::debug_span!("lock.unlock", key = %self.held.key);
        async {
            self.held.check_release(&self.ctx, "unlock")?;
            let session = &self.held.session;
            match self.ctx.store.txn(self.held.delete_if_held()).await {
                Ok(response) if response.succeeded => {
                    self.ctx.sessions.untrack(session);
                    // A closed Coord keeps no lease renewed: dropping revokes it.
                    if !self.ctx.is_closed() {
                        self.ctx.leases.park(self.ttl_seconds, session.clone());
                    }
                    Ok(())
                }
                Ok(_) => {
                    // Someone else deleted or replaced the key: the lock was lost before.
                    let reason = format!("lock key `{}` was gone before unlock", self.held.key);
                    tracing::warn!(key = %self.held.key, "{reason}");
                    if let Err(e) = session.close().await {
                        tracing::debug!(error = %e, "cannot revoke the lease; it will expire");
                    }
                    Err(self.held.lost_error(reason))
                }
                Err(e) => {
                    tracing::debug!(error = %e, "cannot delete the lock key; revoking its lease");
                    session.close().await
                }
            }
        }
        .instrument(span)
        .await
    }

    /// Stops renewing the lease without releasing, as a crashed process would: the lock is
    /// freed when the lease expires, after its TTL. For crash-recovery tests.
    pub fn abandon(self) {
        self.held.session.abandon();
    }
}
