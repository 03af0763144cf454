//! Instance-ID allocation: each live instance of a service holds a distinct small integer
//! (a worker ID for snowflake IDs, a shard number…).
//!
//! An ID is the key `/instances/{service}/{id}` on a lease. [`IdAllocator::acquire`] claims a
//! random ID with one create-only transaction (compare create revision == 0); if that ID is
//! taken, the same transaction reads 127 other IDs drawn at random (keys only), and a second
//! create-only transaction claims one of the free ones among them. So an uncontended acquire costs one or
//! two round trips **whatever `max_id` and however many IDs are taken**, and the work per
//! acquire does not grow with the fleet. Only when the probes find no free ID (a nearly full
//! space, or heavy contention) does it read every taken ID with one keys-only range and claim
//! among the gaps; with `max_id <= 128` the window is the whole space, so a probe that finds
//! nothing free is a definite [`Error::NoIdAvailable`].
//!
//! Picking at random spreads concurrent acquirers over the space, so they rarely collide; one
//! that loses a race tries another free ID it has just seen.
//!
//! # What it promises
//!
//! - IDs are `0..max_id` (`max_id` IDs; `max_id = 1024` fits in 10 bits).
//! - At any store revision no two live keys hold the same ID.
//! - A released or dropped [`IdGuard`] frees its ID at once; a crashed holder's ID comes back
//!   when its lease expires, after the TTL.
//! - As with locks, an ID rides on a lease: [`IdGuard::lost`] says when it is gone.
//!
//! # Round trips and the lease
//!
//! All IDs of one allocator share one lease (as all keys of one Go `concurrency.Session` do):
//! [`Coord::ids`](crate::Coord::ids) grants it when the allocator is made, so that grant is not part of
//! `acquire`. If the lease is lost, the next `acquire` grants a new one (one round trip more).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use tokio::sync::oneshot;
use tracing::Instrument;

use crate::context::Context;
use crate::error::{Error, Result};
use crate::queue::{self, HeldKey};
use crate::session::Session;
use crate::store::{
    Compare, KeyRange, RangeOptions, Store, Txn, TxnOp, TxnOpResponse, TxnResponse,
};
use crate::sync::lock;

/// How many IDs one probe transaction looks at: the claimed one and 127 others (a
/// transaction holds at most 128 operations per branch).
const WINDOW: u32 = 128;

/// Probes before falling back to reading every taken ID.
const MAX_PROBES: usize = 4;

/// What one claim transaction found.
enum Claim {
    Won(IdGuard),
    /// The ID was taken; `window_free` are the free IDs of the window read with it, and
    /// `whole` says the window was every ID (so empty means full, at that revision).
    Lost {
        window_free: Vec<u32>,
        whole: bool,
    },
}

/// The lease TTL of an allocator made with [`Coord::ids`](crate::Coord::ids).
pub const DEFAULT_ID_TTL: Duration = Duration::from_secs(10);

impl IdAllocator {
    /// See [`Coord::ids_with_ttl`](crate::Coord::ids_with_ttl).
    pub(crate) async fn new(
        ctx: Arc<Context>,
        service: &str,
        max_id: u32,
        ttl: Duration,
    ) -> Result<IdAllocator> {
        queue::check_name("service", service)?;
        if service.contains('/') {
            // `/instances/a/b/3` would be read as an ID of service `a` too.
            return Err(Error::invalid_argument(
                "service",
                format!("`{service}` contains `/`"),
            ));
        }
        if max_id == 0 {
            return Err(Error::invalid_argument("max_id", "must be at least 1"));
        }
        ctx.check_open()?;
        let prefix = format!("/instances/{service}/");
        let span = tracing::debug_span!("ids.new", key = %prefix, max_id);
        let session = ctx.session(ttl).instrument(span).await?;
        Ok(IdAllocator {
            inner: Arc::new(AllocatorInner {
                ctx,
                service: service.to_owned(),
                prefix,
                max_id,
                ttl,
                slot: Mutex::new(Slot::new(session)),
            }),
        })
    }
}

/// Hands out distinct IDs of one service; made by [`Coord::ids`](crate::Coord::ids). Cheap to
/// clone.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> coord::Result<()> {
/// let coord = coord::Coord::in_memory();
/// let ids = coord.ids("api", 1024).await?;
/// let a = ids.acquire().await?;
/// let b = ids.acquire().await?;
/// assert_ne!(a.id(), b.id());
/// assert!(a.id() < 1024);
/// a.release().await?; // or drop it
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct IdAllocator {
    inner: Arc<AllocatorInner>,
}

#[derive(Debug)]
struct AllocatorInner {
    ctx: Arc<Context>,
    service: String,
    prefix: String,
    max_id: u32,
    ttl: Duration,
    slot: Mutex<Slot>,
}

/// The allocator's current lease, and whether it was abandoned (then guards must not delete
/// their keys on drop: a crashed process would not).
#[derive(Clone, Debug)]
struct Slot {
    session: Session,
    abandoned: Arc<AtomicBool>,
}

impl Slot {
    fn new(session: Session) -> Self {
        Slot {
            session,
            abandoned: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl IdAllocator {
    /// The service name.
    pub fn service(&self) -> &str {
        &self.inner.service
    }

    /// The number of IDs: they are `0..max_id`.
    pub fn max_id(&self) -> u32 {
        self.inner.max_id
    }

    /// The lease ID the allocator's IDs ride on now.
    pub fn lease_id(&self) -> i64 {
        lock(&self.inner.slot).session.lease_id()
    }

    /// Claims a free ID.
    ///
    /// Uncontended: one transaction if the random ID is free, two if it was taken (the first
    /// also reads 127 other IDs; the second claims a free one of them), whatever `max_id`.
    /// After a few probes that find nothing free it reads every taken ID with one keys-only
    /// range and claims among the gaps (one transaction per lost race), reading once more
    /// before giving up. See the [module docs](self).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: each claim transaction runs in its own task, and an answer that claimed
    /// an ID but never reached this future (dropped meanwhile) releases the ID again. One case
    /// remains: a claim that etcd applied but whose answer did not arrive within the request
    /// timeout leaves its ID taken on the allocator's lease until that lease ends (the
    /// allocator is dropped, or the lease is lost), as no answer says it was ours.
    ///
    /// # Errors
    ///
    /// [`Error::NoIdAvailable`] if every ID is taken; store errors.
    pub async fn acquire(&self) -> Result<IdGuard> {
        let inner = &self.inner;
        inner.ctx.check_open()?;
        let span = tracing::debug_span!("ids.acquire", key = %inner.prefix, max_id = inner.max_id);
        let result = async {
            let mut slot = self.live_slot(None).await?;
            // Probes: each claims one ID and, if it is taken, reads the window after it.
            let mut free: Vec<u32> = Vec::new();
            for _ in 0..MAX_PROBES {
                let id = if free.is_empty() {
                    rand::rng().random_range(0..inner.max_id)
                } else {
                    free.swap_remove(rand::rng().random_range(0..free.len()))
                };
                match self.claim(&mut slot, id, true).await? {
                    Claim::Won(guard) => return Ok(guard),
                    Claim::Lost { window_free, whole } => {
                        if window_free.is_empty() && whole {
                            return Err(self.full());
                        }
                        // Empty: probe again at random (or fall back after MAX_PROBES).
                        free = window_free;
                    }
                }
            }
            // Crowded (or contended): read every taken ID once, then claim among the gaps.
            let mut taken = self.taken(&inner.ctx.store).await?;
            let mut reread = false;
            loop {
                let free = u64::from(inner.max_id) - taken.len() as u64;
                if free == 0 {
                    if reread {
                        return Err(self.full());
                    }
                    // Every ID we thought free was claimed meanwhile; some may be back.
                    reread = true;
                    taken = self.taken(&inner.ctx.store).await?;
                    continue;
                }
                let id = nth_free(&taken, rand::rng().random_range(0..free));
                match self.claim(&mut slot, id, false).await? {
                    Claim::Won(guard) => return Ok(guard),
                    Claim::Lost { .. } => {
                        tracing::debug!(id, "lost the race for an ID; trying another");
                        taken.insert(id);
                    }
                }
            }
        }
        .instrument(span)
        .await;
        inner.ctx.unless_closed(result)
    }

    fn full(&self) -> Error {
        Error::NoIdAvailable {
            service: self.inner.service.clone(),
            max_id: self.inner.max_id,
        }
    }

    /// One create-only transaction for `id`; if it is taken and `probe` is set, the same
    /// transaction reads a window of other IDs (every other ID when `max_id <= WINDOW`, else
    /// `WINDOW - 1` drawn at random) and reports which of them are free. A lease that turns out to be gone is replaced once.
    async fn claim(&self, slot: &mut Slot, id: u32, probe: bool) -> Result<Claim> {
        let inner = &self.inner;
        let store = &inner.ctx.store;
        let width = inner.max_id.min(WINDOW);
        let window: Vec<u32> = if !probe {
            Vec::new()
        } else if width == inner.max_id {
            // A small space: the window is every other ID, so the answer is complete.
            (0..inner.max_id).filter(|other| *other != id).collect()
        } else {
            // IDs drawn at random over the whole space rather than the next ones: taken IDs
            // come in runs (the low ones, usually), and a random sample sees free ones unless
            // nearly the whole space is taken.
            rand::seq::index::sample(&mut rand::rng(), inner.max_id as usize, width as usize)
                .into_iter()
                .filter_map(|other| u32::try_from(other).ok())
                .filter(|other| *other != id)
                .take(width as usize - 1)
                .collect()
        };
        let mut renewed = false;
        loop {
            let lease = slot.session.lease_id();
            let key = format!("{}{id}", inner.prefix);
            let txn = Txn::new()
                .when([Compare::create_revision(key.as_str(), 0)])
                .and_then([TxnOp::put_with_lease(
                    key.as_str(),
                    format!("{lease:x}"),
                    lease,
                )])
                .or_else(window.iter().map(|other| {
                    TxnOp::Get(
                        KeyRange::key(format!("{}{other}", inner.prefix)),
                        RangeOptions::default().keys_only(),
                    )
                }));
            let response = match claim_txn(store, txn, &key).await {
                Ok(response) => response,
                // The lease went before the session noticed (revoked by an operator, say):
                // claim on a new one, once.
                Err(Error::LeaseNotFound { .. }) if !renewed => {
                    renewed = true;
                    *slot = self.live_slot(Some(lease)).await?;
                    continue;
                }
                Err(e) => return Err(e),
            };
            if response.succeeded {
                let health = Arc::new(());
                inner.ctx.sessions.track_owned(
                    "id",
                    format!("{}/{id}", inner.service),
                    &slot.session,
                    &health,
                );
                tracing::debug!(key = %key, "ID acquired");
                return Ok(Claim::Won(IdGuard {
                    id,
                    held: HeldKey::new(
                        key,
                        response.revision,
                        response.revision,
                        slot.session.clone(),
                    ),
                    ctx: Arc::clone(&inner.ctx),
                    abandoned: Arc::clone(&slot.abandoned),
                    released: false,
                    _health: health,
                    _metric: crate::metrics::id_held(),
                }));
            }
            let window_free = window
                .iter()
                .zip(&response.responses)
                .filter_map(|(other, r)| match r {
                    TxnOpResponse::Get(get) if get.kvs.is_empty() => Some(*other),
                    _ => None,
                })
                .collect();
            return Ok(Claim::Lost {
                window_free,
                whole: probe && width == inner.max_id,
            });
        }
    }

    /// Stops renewing the allocator's lease without releasing anything, as a crashed process
    /// would: every ID acquired through it expires after the TTL. For crash-recovery tests.
    pub fn abandon(&self) {
        let slot = lock(&self.inner.slot).clone();
        slot.abandoned.store(true, Ordering::SeqCst);
        slot.session.abandon();
    }

    /// The current lease, or a new one if it was lost (or is `gone`, known lost).
    async fn live_slot(&self, gone: Option<i64>) -> Result<Slot> {
        let current = lock(&self.inner.slot).clone();
        let known_gone = gone == Some(current.session.lease_id());
        if current.session.is_alive() && !current.abandoned.load(Ordering::SeqCst) && !known_gone {
            return Ok(current);
        }
        let session = self.inner.ctx.session(self.inner.ttl).await?;
        let fresh = Slot::new(session);
        *lock(&self.inner.slot) = fresh.clone();
        Ok(fresh)
    }

    /// The IDs below `max_id` taken now, read with one keys-only range.
    async fn taken(&self, store: &Store) -> Result<BTreeSet<u32>> {
        let response = store
            .range(
                &KeyRange::prefix(self.inner.prefix.as_str()),
                RangeOptions::default().keys_only(),
            )
            .await?;
        Ok(response
            .kvs
            .iter()
            .filter_map(|kv| kv.key.strip_prefix(self.inner.prefix.as_str()))
            .filter_map(|id| id.parse::<u32>().ok())
            .filter(|id| *id < self.inner.max_id)
            .collect())
    }
}

/// The `n`-th (from 0) ID not in `taken`; `n` must be below the number of free IDs.
fn nth_free(taken: &BTreeSet<u32>, n: u64) -> u32 {
    // Walk the taken IDs in order: each one at or below the candidate pushes it up by one.
    let mut candidate = n;
    for &t in taken {
        if u64::from(t) <= candidate {
            candidate += 1;
        } else {
            break;
        }
    }
    // n < max_id - taken.len(), so candidate < max_id <= u32::MAX.
    u32::try_from(candidate).unwrap_or(u32::MAX)
}

/// A held instance ID. Dropping it releases the ID in the background.
///
/// The ID is held as long as its lease: a holder paused longer than the TTL may lose it while
/// another instance takes it, so watch [`lost`](Self::lost), and fence the writes that must
/// come from the ID's one holder with [`txn`](Self::txn) (or [`fence`](Self::fence)).
#[derive(Debug)]
#[must_use = "dropping an IdGuard releases the ID at once"]
pub struct IdGuard {
    id: u32,
    held: HeldKey,
    ctx: Arc<Context>,
    abandoned: Arc<AtomicBool>,
    released: bool,
    /// Lists this ID in `Coord::health` while the guard lives (the session is shared).
    _health: Arc<()>,
    /// One of the IDs-held gauge while the guard lives.
    _metric: crate::metrics::GaugeUnit,
}

impl IdGuard {
    /// The ID, in `0..max_id`.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The key holding the ID, `/instances/{service}/{id}`.
    pub fn key(&self) -> &str {
        &self.held.key
    }

    /// The lease the ID rides on (shared by the allocator's IDs).
    pub fn lease_id(&self) -> i64 {
        self.held.session.lease_id()
    }

    /// The create revision of [`key`](Self::key): strictly greater than the token of every
    /// earlier holder of this ID. Pass it to the resource you protect, as with
    /// [`LockGuard::fencing_token`](crate::LockGuard::fencing_token).
    pub fn fencing_token(&self) -> i64 {
        self.held.create_revision
    }

    /// The compare that holds only while this guard holds the ID (its key exists with its
    /// create revision): add it to any transaction to fence it. A compare on the lease would
    /// not do: the allocator's IDs share one lease, so a guard that released this ID would
    /// pass it again once the same allocator hands the ID out anew.
    pub fn fence(&self) -> Compare {
        self.held.fence()
    }

    /// Runs `txn` with [`fence`](Self::fence) added to its compares: the `success` branch runs
    /// only while the ID is still held and the other compares hold, so a holder that lost its
    /// ID (paused past the TTL, say) cannot write over its successor's data.
    ///
    /// # Errors
    ///
    /// Store errors; a lost ID is not an error but `succeeded == false`.
    ///
    /// # Cancel safety
    ///
    /// As [`Store::txn`](crate::Store::txn): a dropped future may or may not have applied it.
    pub async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        let span = tracing::debug_span!("ids.txn", key = %self.held.key);
        self.ctx
            .store
            .txn(txn.when([self.fence()]))
            .instrument(span)
            .await
    }

    /// True until the ID is known to be lost (see
    /// [`LockGuard::is_alive`](crate::LockGuard::is_alive), which follows the same rule).
    pub fn is_alive(&self) -> bool {
        self.held.is_alive()
    }

    /// Resolves with [`Error::SessionLost`] once the ID is lost: the lease is gone or the key
    /// was deleted by someone else. From then on [`is_alive`](Self::is_alive) is false.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn lost(&self) -> Error {
        self.held.lost(&self.ctx.store, "instance ID").await
    }

    /// Releases the ID now (deletes its key if it is still ours).
    ///
    /// # Errors
    ///
    /// [`Error::SessionLost`] if the ID was already lost (the lease gone, or the key deleted or
    /// taken over): there was nothing to release. [`Error::Closed`] after `Coord::close`,
    /// which released it already. Store errors; the key then goes when the allocator's lease
    /// ends.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: if the future is dropped before the delete is answered, the guard's drop
    /// deletes the key in the background.
    pub async fn release(mut self) -> Result<()> {
        if let Err(e) = self.held.check_release(&self.ctx, "release") {
            // Nothing for the drop to do either: closed (close released it) or already lost.
            self.released = true;
            return Err(e);
        }
        let deleted = release(&self.ctx.store, &self.held.key, self.held.create_revision).await?;
        self.released = true;
        if deleted {
            Ok(())
        } else {
            Err(self.held.lost_error(format!(
                "ID key `{}` was gone before release",
                self.held.key
            )))
        }
    }
}

impl Drop for IdGuard {
    fn drop(&mut self) {
        if self.released || self.abandoned.load(Ordering::SeqCst) || self.ctx.is_closed() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime: the key goes with the lease.
            return;
        };
        let (store, key, revision) = (
            self.ctx.store.clone(),
            self.held.key.clone(),
            self.held.create_revision,
        );
        runtime.spawn(async move {
            if let Err(e) = release(&store, &key, revision).await {
                tracing::debug!(key = %key, error = %e, "release on drop failed; the ID goes with the lease");
            }
        });
    }
}

/// Runs a claim transaction so that dropping the caller cannot leak the ID: the transaction
/// runs in its own task and hands its answer over as a [`ClaimAnswer`], which releases the ID
/// if it is dropped unread (the caller went away before or after the hand-over).
async fn claim_txn(store: &Store, txn: Txn, key: &str) -> Result<TxnResponse> {
    let (answer, answered) = oneshot::channel();
    let (store, owned_key) = (store.clone(), key.to_owned());
    tokio::spawn(
        async move {
            let answer_or_error = store.txn(txn).await.map(|response| ClaimAnswer {
                response: Some(response),
                store,
                key: owned_key,
            });
            // Refused when the caller is gone: dropping the answer then releases the ID.
            drop(answer.send(answer_or_error));
        }
        .in_current_span(),
    );
    let answer = answered.await.map_err(|_| Error::Backend {
        key: key.to_owned(),
        reason: "the claim task ended without an answer (runtime shutting down)".into(),
    })??;
    Ok(answer.into_response())
}

/// A claim transaction's answer on its way to `acquire`. Dropped unread, it releases the ID
/// the transaction claimed, so an `acquire` dropped at any point leaves no ID taken.
struct ClaimAnswer {
    response: Option<TxnResponse>,
    store: Store,
    key: String,
}

impl ClaimAnswer {
    /// Reads the answer; from here on the caller owns the claim.
    fn into_response(mut self) -> TxnResponse {
        self.response.take().unwrap_or_default()
    }
}

impl Drop for ClaimAnswer {
    fn drop(&mut self) {
        let Some(response) = self.response.take() else {
            return;
        };
        if !response.succeeded {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime: the key goes with the lease.
            return;
        };
        let (store, key) = (self.store.clone(), std::mem::take(&mut self.key));
        tracing::debug!(key = %key, "acquire dropped after its claim; releasing the ID");
        runtime.spawn(async move {
            if let Err(e) = release(&store, &key, response.revision).await {
                tracing::debug!(key = %key, error = %e, "release failed; the ID goes with the lease");
            }
        });
    }
}

/// Deletes `key` if it is still the one we created (never someone else's after a loss);
/// returns whether it was.
async fn release(store: &Store, key: &str, create_revision: i64) -> Result<bool> {
    let span = tracing::debug_span!("ids.release", key);
    let txn = queue::delete_if_created_at(key, create_revision);
    Ok(store.txn(txn).instrument(span).await?.succeeded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nth_free_skips_taken_ids() {
        let taken: BTreeSet<u32> = [0, 1, 3, 7].into_iter().collect();
        let free: Vec<u32> = (0..6).map(|n| nth_free(&taken, n)).collect();
        assert_eq!(free, vec![2, 4, 5, 6, 8, 9]);
        assert_eq!(nth_free(&BTreeSet::new(), 5), 5);
    }
}
