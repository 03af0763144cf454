//! A registered instance ([`Registration`], whose docs say what it promises), and the
//! background task that keeps it registered.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tracing::Instrument;

use crate::context::Context;
use crate::error::{Error, Result};
use crate::registry::own_keys::OwnKeys;
use crate::session::Session;
use crate::store::{Compare, Event, EventKind, KeyValue, Store, Txn, TxnOp, TxnOpResponse};
use crate::sync::lock;

use super::ServiceInfo;
use super::own_keys::{Seen, Subscription};

/// The longest wait between two attempts to register again after a lost lease; also at most a
/// quarter of the TTL, so that after an outage the instance is back well before a lease that
/// etcd kept alive across the outage runs out.
const MAX_REREGISTER_BACKOFF: Duration = Duration::from_secs(5);

/// The first wait before reading the key again after a repair failed.
const INITIAL_BACKOFF: Duration = Duration::from_millis(100);

/// The longest wait between two reads of the key while repairs keep failing.
const MAX_REREAD_BACKOFF: Duration = Duration::from_secs(5);

/// Registers `info` (already validated, `started_at` set) on a new lease of `ttl` and starts
/// keeping it registered.
pub(super) async fn register(
    ctx: &Arc<Context>,
    own_keys: &OwnKeys,
    info: ServiceInfo,
    ttl: Duration,
) -> Result<Registration> {
    let key: Arc<str> = info.key().into();
    let value = serde_json::to_vec(&info)
        .map_err(|e| Error::invalid_argument("info", format!("cannot encode: {e}")))?;
    let span = tracing::info_span!("registry.register", key = &*key);
    // On any error below the session is dropped, which revokes its lease: nothing is left.
    let (session, held_since, own_key) = async {
        let session = ctx.session(ttl).await?;
        // Before the write, so no change after it can be missed; what the subscription tells
        // up to the write is skipped (see `held_since`).
        let own_key = own_keys.subscribe(&info.name, Arc::clone(&key)).await?;
        let held_since = claim(&ctx.store, &key, &value, session.lease_id(), None)
            .await?
            .revision();
        Ok::<_, Error>((session, held_since, own_key))
    }
    .instrument(span.clone())
    .await?;
    ctx.track_session("registration", health_name(&key), &session);
    let shared = Arc::new(Shared {
        session: Mutex::new(session),
        ended: watch::Sender::new(None),
    });
    let keeper = Keeper {
        ctx: Arc::clone(ctx),
        own_key,
        reread: None,
        reread_backoff: INITIAL_BACKOFF,
        value,
        ttl,
        shared: Arc::clone(&shared),
        held_since,
    };
    let task = tokio::spawn(keeper.run().instrument(span)).abort_handle();
    crate::metrics::registration();
    Ok(Registration {
        info,
        key,
        ctx: Arc::clone(ctx),
        shared,
        task,
    })
}

/// What `health()` calls a registration: `{name}/{id}`.
fn health_name(key: &str) -> &str {
    key.strip_prefix(super::SERVICES_PREFIX).unwrap_or(key)
}

/// A registered instance, kept registered until deregistered, dropped, or replaced by another
/// registration of the same instance.
///
/// # What it promises
///
/// - It was written only where no other lease held the key: a second live registration of the
///   same instance is refused with [`Error::AlreadyRegistered`], never swapped in silently.
///   Every write it makes is a transaction conditional on the state it was decided on, so two
///   registrations racing for one key cannot both win.
/// - While it lives, its key stays on its lease: the lease is renewed; if the lease is lost
///   anyway, the instance registers again on a new one; if the key is deleted while the lease
///   lives (an operator's [`Registry::unregister`](super::Registry::unregister), an
///   `etcdctl del`), it is put back on the same lease, with the value last stored on that
///   lease. Each repair logs a warning.
/// - If the key is written by another lease (another process registered the same id, say after
///   a partition), it does not fight over it: it ends for good, revokes its own lease, reads as
///   not alive, and [`lost`](Self::lost) resolves naming the new holder.
/// - Dropping it stops the renewals and revokes the lease in the background, so the instance
///   disappears at once (if a tokio runtime is still running; otherwise after its TTL).
#[derive(Debug)]
#[must_use = "dropping a Registration deregisters the instance at once"]
pub struct Registration {
    info: ServiceInfo,
    key: Arc<str>,
    ctx: Arc<Context>,
    shared: Arc<Shared>,
    task: tokio::task::AbortHandle,
}

/// What a `Registration` shares with its background task.
#[derive(Debug)]
struct Shared {
    /// The session currently holding the key (replaced when the instance registers again).
    session: Mutex<Session>,
    /// Why the registration ended for good, once it has: replaced by another lease, or the
    /// `Coord` closed.
    ended: watch::Sender<Option<String>>,
}

impl Shared {
    fn session(&self) -> Session {
        lock(&self.session).clone()
    }

    fn ended(&self) -> Option<String> {
        self.ended.borrow().clone()
    }

    /// Records the end; the first reason stays.
    fn end(&self, reason: String) {
        self.ended.send_if_modified(|ended| {
            if ended.is_some() {
                return false;
            }
            *ended = Some(reason);
            true
        });
    }
}

impl Registration {
    /// The registered info, with `started_at` set.
    pub fn info(&self) -> &ServiceInfo {
        &self.info
    }

    /// The key: `/services/{name}/{id}`.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The lease currently holding the key (it changes when the instance registers again).
    pub fn lease_id(&self) -> i64 {
        self.shared.session().lease_id()
    }

    /// The TTL the store granted.
    pub fn ttl(&self) -> Duration {
        self.shared.session().ttl()
    }

    /// False while the current lease is known to be lost (until the instance is registered
    /// again), and for good once the registration was replaced by another lease or the `Coord`
    /// closed.
    pub fn is_alive(&self) -> bool {
        self.shared.ended().is_none() && !self.ctx.is_closed() && self.shared.session().is_alive()
    }

    /// Resolves with [`Error::SessionLost`] once the registration has ended for good: another
    /// lease wrote its key (another process registered the same instance; the reason names
    /// that lease), or the `Coord` was closed. From then on [`is_alive`](Self::is_alive) is
    /// false and nothing re-registers the instance: to be discoverable again, register anew.
    ///
    /// A lost lease or a deleted key is not the end: the registration repairs those itself, and
    /// `lost()` does not resolve for them.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn lost(&self) -> Error {
        let mut ended = self.shared.ended.subscribe();
        let reason = tokio::select! {
            reason = ended.wait_for(Option::is_some) => match reason {
                Ok(reason) => reason.clone().unwrap_or_default(),
                // Unreachable: `self.shared` holds the sender.
                Err(_) => "the registration ended".to_owned(),
            },
            () = self.ctx.closed() => "the coord was closed".to_owned(),
        };
        Error::SessionLost {
            lease: self.lease_id(),
            reason,
        }
    }

    /// Stops keeping the instance registered and removes it now: deletes the key if it is
    /// still on this registration's lease, and revokes the lease.
    ///
    /// # Errors
    ///
    /// - [`Error::SessionLost`] if the registration was lost before: replaced by another lease
    ///   (whose key is left alone), or its lease gone and not yet registered again. Nothing of
    ///   this registration was registered any more; its lease is revoked all the same.
    /// - [`Error::Closed`] after `Coord::close`, which deregistered it already.
    /// - Store errors from the revoke; the lease then expires after its TTL.
    ///
    /// # Cancel safety
    ///
    /// If the future is dropped before it completes, renewals and repairs have stopped and the
    /// lease is revoked in the background (the `Registration` is dropped with it).
    pub async fn deregister(self) -> Result<()> {
        self.task.abort();
        let span = tracing::info_span!("registry.deregister", key = &*self.key);
        async {
            self.ctx.check_open()?;
            let session = self.shared.session();
            let lost = |reason: String| Error::SessionLost {
                lease: session.lease_id(),
                reason: format!("registration lost before deregister: {reason}"),
            };
            if let Some(reason) = self.shared.ended() {
                return Err(lost(reason));
            }
            if !session.is_alive() {
                // Revoke anyway, in case only this side believes the lease gone.
                if let Err(e) = session.close().await {
                    tracing::debug!(error = %e, "cannot revoke the lost lease");
                }
                return Err(lost(
                    "its lease was lost and it was not registered again yet".to_owned(),
                ));
            }
            // Delete only our own key, and learn whether someone replaced it: the watch may not
            // have told yet.
            let release = Txn::new()
                .when([Compare::lease(&*self.key, session.lease_id())])
                .and_then([TxnOp::delete(&*self.key)])
                .or_else([TxnOp::get(&*self.key)]);
            let replaced_by = match self.ctx.store.txn(release).await {
                Ok(response) if !response.succeeded => first_kv(&response).map(|kv| kv.lease),
                Ok(_) => None,
                Err(e) => {
                    tracing::debug!(error = %e, "cannot delete the key; revoking its lease");
                    None
                }
            };
            let revoked = session.close().await;
            match replaced_by {
                Some(holder) => Err(lost(replaced_reason(&self.key, holder))),
                None => revoked,
            }
        }
        .instrument(span)
        .await
    }

    /// Stops renewing without removing anything, as a crashed process would: the instance
    /// disappears when its lease's TTL runs out. For tests of crash recovery.
    pub fn abandon(self) {
        self.task.abort();
        self.shared.session().abandon();
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        // The task holds a clone of `shared`; once it is aborted the last clone of the session
        // goes and `Session`'s drop revokes the lease in the background.
        self.task.abort();
    }
}

/// How a [`claim`] went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Claim {
    /// The value was written at this revision.
    Wrote(i64),
    /// The key already held the value on the lease at this revision: nothing was written.
    Had(i64),
}

impl Claim {
    /// A revision at which the key is known to hold the value on the lease.
    fn revision(self) -> i64 {
        match self {
            Claim::Wrote(revision) | Claim::Had(revision) => revision,
        }
    }
}

/// Puts `value` at `key` on `lease`, unless another lease holds the key.
///
/// The key is ours to write when it does not exist, or when `lease` (re-putting on the same
/// lease) or `previous` (the lease this registration held before, still holding the key after
/// it was lost on our side only) holds it. Any other holder, a key without a lease included,
/// is [`Error::AlreadyRegistered`].
///
/// Each write is a transaction conditional on the state it was decided on (the key absent, or
/// the exact revision read), so a concurrent registration is never overwritten; if the key
/// changes in between, it decides again. (One transaction cannot say "absent or on my lease":
/// etcd's compares are a conjunction.)
async fn claim(
    store: &Store,
    key: &str,
    value: &[u8],
    lease: i64,
    previous: Option<i64>,
) -> Result<Claim> {
    let put = || TxnOp::put_with_lease(key, value.to_vec(), lease);
    loop {
        let create = Txn::new()
            .when([Compare::create_revision(key, 0)])
            .and_then([put()])
            .or_else([TxnOp::get(key)]);
        let response = store.txn(create).await?;
        if response.succeeded {
            return Ok(Claim::Wrote(response.revision));
        }
        // The compare failed, so the key existed when the read in the same transaction ran;
        // `None` would only mean a backend broke that, and deciding again is then still right.
        let Some(holder) = first_kv(&response) else {
            continue;
        };
        let ours = holder.lease == lease || previous == Some(holder.lease);
        if !ours {
            return Err(Error::AlreadyRegistered {
                key: key.to_owned(),
                lease: holder.lease,
            });
        }
        if holder.lease == lease && holder.value == value {
            return Ok(Claim::Had(response.revision));
        }
        let overwrite = Txn::new()
            .when([Compare::mod_revision(key, holder.mod_revision)])
            .and_then([put()]);
        let response = store.txn(overwrite).await?;
        if response.succeeded {
            return Ok(Claim::Wrote(response.revision));
        }
    }
}

/// The key read by the first operation of a transaction's branch, if it exists.
fn first_kv(response: &crate::store::TxnResponse) -> Option<&KeyValue> {
    match response.responses.first() {
        Some(TxnOpResponse::Get(get)) => get.kvs.first(),
        _ => None,
    }
}

fn replaced_reason(key: &str, holder: i64) -> String {
    if holder == 0 {
        format!("`{key}` was overwritten without a lease")
    } else {
        format!("`{key}` was replaced by lease {holder:x}")
    }
}

/// What the registration saw of its key.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// On the current lease.
    Ours,
    /// Gone while the lease may live: put it back.
    Deleted,
    /// Written by another lease (0: without a lease).
    Replaced(i64),
}

/// Why the task stopped keeping the instance registered.
enum Ending {
    Closed,
    Replaced(i64),
}

/// The background task of one [`Registration`]: renews nothing itself (the session does),
/// but re-registers after a lost lease, puts a deleted key back, and gives up when replaced.
struct Keeper {
    ctx: Arc<Context>,
    /// What to put back: the last value stored on our lease (someone may have updated it on
    /// the same lease, which is allowed).
    value: Vec<u8>,
    ttl: Duration,
    shared: Arc<Shared>,
    /// The changes of the key, from the `Coord`'s watch of the service's instances.
    own_key: Subscription,
    /// After a failed repair: when to read the key again (which leads to the repair again if
    /// it is still needed).
    reread: Option<tokio::time::Instant>,
    /// The wait before the read after the next failed repair.
    reread_backoff: Duration,
    /// A revision at which the current lease held the key. What is seen of the key up to it
    /// is history from before the current lease (re)took the key.
    held_since: i64,
}

/// What woke the keeper.
enum Wake {
    LeaseLost(Session, Error),
    Seen(Seen),
}

// The keeper's repairs and the watch's re-read are boxed: they are rare, and inline they would
// make every registration's task (one per registration, all alive at once) kilobytes bigger.
impl Keeper {
    async fn run(mut self) {
        let ending = loop {
            let session = self.shared.session();
            // No wait on `Coord::close` of its own: close marks every session made through
            // the context lost (before revoking it), which wakes this select, and the check
            // below then ends the task.
            let wake = tokio::select! {
                lost = session.lost() => Wake::LeaseLost(session.clone(), lost),
                seen = self.own_key.next() => Wake::Seen(seen),
                seen = reread(&self.ctx.store, self.own_key.key(), self.reread) => {
                    self.reread = None;
                    Wake::Seen(seen)
                }
            };
            if self.ctx.is_closed() {
                break Ending::Closed;
            }
            let step = match wake {
                Wake::LeaseLost(lost_session, error) => {
                    Box::pin(self.register_again(&lost_session, &error)).await
                }
                Wake::Seen(seen) => match self.judge(seen, session.lease_id()) {
                    Verdict::Ours => Ok(()),
                    Verdict::Deleted => Box::pin(self.restore(&session)).await,
                    Verdict::Replaced(holder) => Err(Ending::Replaced(holder)),
                },
            };
            if let Err(ending) = step {
                break ending;
            }
        };
        match ending {
            Ending::Closed => self.shared.end("the coord was closed".to_owned()),
            Ending::Replaced(holder) => {
                let reason = replaced_reason(self.own_key.key(), holder);
                tracing::warn!(
                    %reason,
                    "registration replaced by another; not fighting it: this instance is no longer registered by this process"
                );
                self.shared.end(reason);
                // Only our own lease: the key is the new holder's and stays.
                if let Err(e) = Box::pin(self.shared.session().close()).await {
                    tracing::debug!(error = %e, "cannot revoke the replaced registration's lease; it will expire");
                }
            }
        }
    }

    /// What `seen` says about the key, as held by `lease`.
    fn judge(&mut self, seen: Seen, lease: i64) -> Verdict {
        match seen {
            // From before the current lease took the key: what it did since is known.
            Seen::Now(revision, _) | Seen::Listed(revision, _) | Seen::Events(revision, _)
                if revision <= self.held_since =>
            {
                Verdict::Ours
            }
            Seen::Now(_, kv) => self.judge_kv(kv.as_ref(), lease),
            // Who holds the key, not what it holds: the value to restore stays the last one
            // seen (a same-lease update hidden by a relist is learnt only from its next
            // change).
            Seen::Listed(_, kv) => match kv {
                Some(kv) if kv.lease != lease => Verdict::Replaced(kv.lease),
                Some(_) => Verdict::Ours,
                None => Verdict::Deleted,
            },
            Seen::Events(_, events) => {
                let mut verdict = Verdict::Ours;
                for Event { kind, kv } in &events {
                    let kv = (*kind == EventKind::Put).then_some(kv);
                    verdict = self.judge_kv(kv, lease);
                    if matches!(verdict, Verdict::Replaced(_)) {
                        break;
                    }
                }
                verdict
            }
        }
    }

    fn judge_kv(&mut self, kv: Option<&KeyValue>, lease: i64) -> Verdict {
        match kv {
            None => Verdict::Deleted,
            Some(kv) if kv.lease == lease => {
                self.value.clone_from(&kv.value);
                Verdict::Ours
            }
            Some(kv) => Verdict::Replaced(kv.lease),
        }
    }

    /// Puts the deleted key back on `session`'s lease.
    async fn restore(&mut self, session: &Session) -> Result<(), Ending> {
        if !session.is_alive() {
            // The lease is gone: the next turn registers again.
            return Ok(());
        }
        let claimed = claim(
            &self.ctx.store,
            self.own_key.key(),
            &self.value,
            session.lease_id(),
            None,
        )
        .await;
        match claimed {
            Ok(claim) => {
                if let Claim::Wrote(_) = claim {
                    crate::metrics::reregistration();
                    tracing::warn!(
                        lease = format_args!("{:x}", session.lease_id()),
                        "registration key was deleted while its lease lives; put it back on the same lease"
                    );
                }
                self.held_since = claim.revision();
                self.reread_backoff = INITIAL_BACKOFF;
                Ok(())
            }
            Err(Error::AlreadyRegistered { lease, .. }) => Err(Ending::Replaced(lease)),
            // The lease is gone though the session has not seen it yet.
            Err(Error::LeaseNotFound { .. }) => {
                let lost = Error::SessionLost {
                    lease: session.lease_id(),
                    reason: "was revoked or expired (its key went with it)".to_owned(),
                };
                self.register_again(session, &lost).await
            }
            Err(Error::Closed) => Err(Ending::Closed),
            Err(e) => {
                tracing::warn!(error = %e, "cannot put the deleted registration key back; retrying");
                // Read the key again after a backoff, which leads here again if still needed.
                self.reread = Some(tokio::time::Instant::now() + self.reread_backoff);
                self.reread_backoff = (self.reread_backoff * 2).min(MAX_REREAD_BACKOFF);
                Ok(())
            }
        }
    }

    /// Registers the same value again on a new lease, retrying with backoff until it succeeds,
    /// the `Coord` closes, or another lease is found holding the key.
    async fn register_again(&mut self, lost: &Session, error: &Error) -> Result<(), Ending> {
        tracing::warn!(%error, "registration lost its lease; registering again");
        let max_backoff = (self.ttl / 4).clamp(INITIAL_BACKOFF, MAX_REREGISTER_BACKOFF);
        let mut backoff = INITIAL_BACKOFF;
        loop {
            match self.register_once(lost.lease_id()).await {
                Ok((session, claim)) => {
                    crate::metrics::reregistration();
                    tracing::warn!(
                        lease = format_args!("{:x}", session.lease_id()),
                        "registered again with a new lease"
                    );
                    self.ctx.track_session(
                        "registration",
                        health_name(self.own_key.key()),
                        &session,
                    );
                    self.held_since = claim.revision();
                    // The old session is dropped after the key moved to the new lease, so its
                    // revoke (if the old lease still exists) cannot delete the key.
                    let old = std::mem::replace(&mut *lock(&self.shared.session), session);
                    drop(old);
                    return Ok(());
                }
                Err(Error::AlreadyRegistered { lease, .. }) => return Err(Ending::Replaced(lease)),
                Err(Error::Closed) => return Err(Ending::Closed),
                Err(e) => {
                    tracing::warn!(error = %e, ?backoff, "registering again failed; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = self.ctx.closed() => return Err(Ending::Closed),
                    }
                    backoff = (backoff * 2).min(max_backoff);
                }
            }
        }
    }

    /// One attempt: a new lease, and the key claimed on it (taking it over from `previous`,
    /// the lost lease, if etcd still has the key there). On failure the new lease is revoked
    /// (by the session's drop). (`&mut self` although it writes nothing: a `&Keeper` held across
    /// an await would need `Keeper: Sync`, which its watch stream is not.)
    async fn register_once(&mut self, previous: i64) -> Result<(Session, Claim)> {
        let session = self.ctx.session(self.ttl).await?;
        let claim = claim(
            &self.ctx.store,
            self.own_key.key(),
            &self.value,
            session.lease_id(),
            Some(previous),
        )
        .await?;
        Ok((session, claim))
    }
}

/// Reads `key` once `at` (set after a failed repair) has come, retrying with backoff until
/// the read works; pending forever while `at` is `None`.
async fn reread(store: &Store, key: &str, at: Option<tokio::time::Instant>) -> Seen {
    match at {
        // Boxed: this future waits in every keeper's select, nearly always for nothing.
        Some(at) => Box::pin(reread_at(store, key, at)).await,
        None => std::future::pending().await,
    }
}

async fn reread_at(store: &Store, key: &str, at: tokio::time::Instant) -> Seen {
    tokio::time::sleep_until(at).await;
    let mut backoff = INITIAL_BACKOFF;
    loop {
        match store.get(key).await {
            Ok((kv, revision)) => return Seen::Now(revision, kv),
            Err(e) => {
                tracing::debug!(key, error = %e, "cannot read the registration key; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_REREAD_BACKOFF);
            }
        }
    }
}
