//! A lease kept alive in the background, with a signal for when it is lost.
//!
//! A [`Session`] is what locks, instance IDs and registrations hold: a lease with a TTL that is
//! renewed in the background every third of the TTL (by one task for all the sessions of a
//! `Coord`: see `renewer.rs`). Keys written with [`Session::lease_id`] live
//! as long as the session does.
//!
//! # What it promises
//!
//! - [`Session::lost`] resolves, with [`Error::SessionLost`], once the lease is known to be gone:
//!   revoked (by anyone), expired, or not renewed before its TTL ran out because the store could
//!   not be reached. A lost session stays lost: make a new one.
//! - Renewal failures are retried until the lease's deadline passes; a short outage does not
//!   lose the session.
//! - Dropping the last clone stops the renewals and revokes the lease in the background (if a
//!   tokio runtime is still running), so the keys go at once rather than after the TTL.
//!   [`Session::close`] does the same and reports errors.

pub(crate) mod renewer;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::store::Store;
use renewer::Renewer;
pub(crate) use renewer::SessionInner;

/// A lease kept alive in the background. Cheap to clone; clones share the lease.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> coord::Result<()> {
/// use std::time::Duration;
/// let coord = coord::Coord::in_memory();
/// let session = coord::Session::new(coord.store(), Duration::from_secs(5)).await?;
/// coord.store().put("/workers/a", b"up".to_vec(), session.lease_id()).await?;
/// assert!(session.is_alive());
/// session.close().await?; // revokes the lease: /workers/a is gone
/// assert!(coord.store().get("/workers/a").await?.0.is_none());
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
#[must_use = "dropping the last handle of a session revokes its lease"]
pub struct Session {
    inner: Arc<SessionInner>,
}

impl Session {
    /// Grants a lease of `ttl` (rounded up to whole seconds; etcd raises TTLs under its minimum,
    /// 2 s by default, and [`ttl`](Self::ttl) reports what was granted) and starts renewing it.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for a TTL under one second or over etcd's limit
    /// (9,000,000,000 s); store errors from the grant.
    ///
    /// # Cancel safety
    ///
    /// Not fully: a future dropped after etcd granted the lease but before the answer arrived
    /// leaves a lease nobody renews or knows; it expires after its TTL, with no keys on it.
    /// Once `new` has returned, dropping the session revokes the lease.
    pub async fn new(store: &Store, ttl: Duration) -> Result<Session> {
        let seconds = ttl_seconds(ttl)?;
        let grant = store.lease_grant(seconds).await?;
        let granted = Duration::from_secs(u64::try_from(grant.ttl).unwrap_or(1).max(1));
        let inner = Arc::new(SessionInner {
            store: store.clone(),
            lease: grant.id,
            ttl: granted,
            lost: watch::Sender::new(None),
            finished: AtomicBool::new(false),
        });
        store
            .slot::<Renewer>()
            .add(store, Arc::downgrade(&inner), grant.id, granted);
        Ok(Session { inner })
    }

    pub(crate) fn downgrade(&self) -> std::sync::Weak<SessionInner> {
        Arc::downgrade(&self.inner)
    }

    pub(crate) fn upgrade(weak: &std::sync::Weak<SessionInner>) -> Option<Session> {
        weak.upgrade().map(|inner| Session { inner })
    }

    /// The lease ID; attach keys to it to tie them to this session.
    pub fn lease_id(&self) -> i64 {
        self.inner.lease
    }

    /// The TTL the store granted.
    pub fn ttl(&self) -> Duration {
        self.inner.ttl
    }

    /// True until the session is known to be lost.
    pub fn is_alive(&self) -> bool {
        self.inner.lost.borrow().is_none()
    }

    /// True while the lease is alive as far as known *and* its renewal task still runs (the
    /// task dies with the tokio runtime that spawned it, without a verdict).
    pub(crate) fn is_renewed(&self) -> bool {
        self.is_alive() && self.inner.store.slot::<Renewer>().is_running()
    }

    /// Resolves when the session is lost, with the reason as [`Error::SessionLost`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future changes nothing.
    pub async fn lost(&self) -> Error {
        let mut rx = self.inner.lost.subscribe();
        let reason = match rx.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone().unwrap_or_default(),
            // Unreachable: the sender lives in `self.inner`.
            Err(_) => "session closed".to_string(),
        };
        Error::SessionLost {
            lease: self.inner.lease,
            reason,
        }
    }

    /// Renews the lease now (after a long pause, say) instead of waiting for the next tick.
    ///
    /// # Errors
    ///
    /// [`Error::SessionLost`] if the lease is already gone; store errors.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a dropped refresh may or may not have renewed the lease; it never shortens
    /// it.
    pub async fn refresh(&self) -> Result<()> {
        if !self.is_alive() {
            return Err(self.lost().await);
        }
        let sent_at = Instant::now();
        match self.inner.store.lease_keep_alive(self.inner.lease).await {
            Ok(ttl) => {
                self.inner
                    .store
                    .slot::<Renewer>()
                    .renewed(self.inner.lease, sent_at, ttl);
                Ok(())
            }
            Err(Error::LeaseNotFound { .. }) => {
                let reason = "was revoked or expired";
                self.inner.mark_lost(reason);
                Err(Error::SessionLost {
                    lease: self.inner.lease,
                    reason: reason.into(),
                })
            }
            Err(e) => Err(e),
        }
    }

    /// Stops renewing and revokes the lease, deleting its keys now. From then on the session
    /// reads as lost: [`is_alive`](Self::is_alive) is false and [`lost`](Self::lost) resolves.
    ///
    /// # Errors
    ///
    /// Store errors from the revoke; a lease already gone is not an error.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: until the revoke is answered, dropping the last clone still revokes the
    /// lease in the background, so a dropped `close` never leaves the lease to run its TTL.
    pub async fn close(&self) -> Result<()> {
        self.inner.store.slot::<Renewer>().remove(self.inner.lease);
        // Nobody renews it from now on: it reads as lost whether or not the revoke works.
        self.inner.lost.send_if_modified(|lost| {
            lost.get_or_insert_with(|| "was closed".to_owned());
            true
        });
        // Even on a closed store (`Coord::close` revokes through here after closing it).
        match self.inner.store.release_lease(self.inner.lease).await {
            Ok(()) | Err(Error::LeaseNotFound { .. }) => {
                // Only now: had this future been dropped mid-revoke, the drop must revoke.
                self.inner.finished.store(true, Ordering::SeqCst);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Stops renewing without revoking, as a crashed process would: the lease and its keys
    /// expire after the TTL. For tests of crash recovery. The handle reads as lost from then
    /// on: nothing keeps the lease any more.
    pub fn abandon(&self) {
        self.inner.finished.store(true, Ordering::SeqCst);
        self.inner.store.slot::<Renewer>().remove(self.inner.lease);
        self.inner.lost.send_if_modified(|lost| {
            lost.get_or_insert_with(|| "was abandoned (no longer renewed)".to_owned());
            true
        });
    }
}

/// Converts a TTL to whole seconds, rounding up; under one second is refused.
pub(crate) fn ttl_seconds(ttl: Duration) -> Result<i64> {
    if ttl < Duration::from_secs(1) {
        return Err(Error::invalid_argument(
            "ttl",
            format!("must be at least 1s, got {ttl:?}"),
        ));
    }
    // Saturating: `Duration::MAX` rounds up past u64::MAX, and is refused below all the same.
    let seconds = ttl
        .as_secs()
        .saturating_add(u64::from(ttl.subsec_nanos() > 0));
    if seconds > MAX_TTL_SECONDS {
        return Err(Error::invalid_argument(
            "ttl",
            format!("must be at most {MAX_TTL_SECONDS}s (etcd's limit), got {seconds}s"),
        ));
    }
    i64::try_from(seconds).map_err(|_| Error::invalid_argument("ttl", "too large"))
}

/// The longest lease etcd grants (`MaxLeaseTTL` in etcd's lease package); it refuses more.
const MAX_TTL_SECONDS: u64 = 9_000_000_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_is_rounded_up_and_sub_second_refused() {
        assert_eq!(ttl_seconds(Duration::from_millis(1500)).unwrap(), 2);
        assert_eq!(ttl_seconds(Duration::from_secs(3)).unwrap(), 3);
        assert!(matches!(
            ttl_seconds(Duration::from_millis(999)),
            Err(Error::InvalidArgument { .. })
        ));
        assert_eq!(
            ttl_seconds(Duration::from_secs(9_000_000_000)).unwrap(),
            9_000_000_000
        );
        assert!(matches!(
            ttl_seconds(Duration::from_secs(9_000_000_001)),
            Err(Error::InvalidArgument { .. })
        ));
        // Rounding up must not overflow.
        assert!(matches!(
            ttl_seconds(Duration::MAX),
            Err(Error::InvalidArgument { .. })
        ));
    }
}
