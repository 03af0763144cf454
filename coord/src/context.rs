//! What the capabilities of one [`Coord`](crate::Coord) share, and nothing more.
//!
//! Locks, election, IDs, the registry and the config center each hold an `Arc<Context>`, not
//! the `Coord`: the root imports the capabilities and no capability imports the root. The
//! context is the store, the instance identity, the sessions (for `health()` and `close()`),
//! the background writes that fail (for `health()`), the pool of parked lock leases, and
//! whether the `Coord` is closed. It names no capability: what one capability shares between
//! its handles (config's hub and status reporters, the registry's discovery) is that
//! capability's own, built by the root beside the context.
//!
//! # What it promises
//!
//! - Every lease a capability takes is made with [`Context::session`], so `close()` can revoke
//!   it whatever handle holds it (a waiting `acquire`, an allocator with no ID out yet).
//! - [`Context::closed`] resolves once `close()` has started: background tasks (re-registration,
//!   waits in a queue) select on it and stop.

use std::sync::{Mutex, Weak};
use std::time::Duration;

use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::health::{FailingWrites, SessionTracker};
use crate::instance::Instance;
use crate::lease_pool::LeasePool;
use crate::session::{Session, SessionInner};
use crate::store::Store;
use crate::sync::lock;

/// The shared state of one `Coord`; see the [module docs](self).
#[derive(Debug)]
pub(crate) struct Context {
    pub store: Store,
    /// Who this `Coord` is; fixed for its lifetime.
    pub instance: std::sync::Arc<Instance>,
    /// The etcd user the connection logged in as, if any: its principal (see `access`).
    pub user: Option<String>,
    /// Lease-holding handles by kind and name, for `health()`.
    pub sessions: SessionTracker,
    /// Background writes (status keys, snapshot files) that are failing, for `health()`.
    pub failing_writes: std::sync::Arc<FailingWrites>,
    /// Released lock sessions kept for the next lock; see `lease_pool`.
    pub leases: LeasePool,
    /// Every session made through [`session`](Self::session) that still exists, for `close()`.
    owned: Mutex<Vec<Weak<SessionInner>>>,
    /// The longest a single request of `close()` may take.
    pub request_timeout: Duration,
    closed: watch::Sender<bool>,
    /// Held for the whole of `Coord::close`, so a second call waits for the first.
    pub closing: tokio::sync::Mutex<()>,
}

impl Context {
    pub fn new(store: Store, instance: Instance, request_timeout: Duration) -> Self {
        Context {
            instance: std::sync::Arc::new(instance),
            user: None,
            store,
            sessions: SessionTracker::default(),
            failing_writes: std::sync::Arc::default(),
            leases: LeasePool::default(),
            owned: Mutex::new(Vec::new()),
            request_timeout,
            closed: watch::Sender::new(false),
            closing: tokio::sync::Mutex::new(()),
        }
    }

    /// This context as the connection of etcd user `user`.
    pub fn with_user(mut self, user: Option<String>) -> Self {
        self.user = user;
        self
    }

    /// [`Error::Closed`] once `close()` has started.
    pub fn check_open(&self) -> Result<()> {
        if self.is_closed() {
            return Err(Error::Closed);
        }
        Ok(())
    }

    pub fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    /// Resolves once `close()` has started (at once if it has).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn closed(&self) {
        let mut rx = self.closed.subscribe();
        // The sender lives in `self`, so `wait_for` cannot see it dropped while we borrow it.
        let _ = rx.wait_for(|closed| *closed).await;
    }

    /// Marks the context closed; true if it was open until now.
    pub fn mark_closed(&self) -> bool {
        !self.closed.send_replace(true)
    }

    /// A new session (a kept-alive lease) that `close()` will revoke.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`]; otherwise as [`Session::new`].
    pub async fn session(&self, ttl: Duration) -> Result<Session> {
        self.check_open()?;
        let session = Session::new(&self.store, ttl).await?;
        {
            let mut owned = lock(&self.owned);
            // Dropped sessions are pruned when the list has doubled since the last prune, not
            // on every grant: amortized O(1) per session however many are held.
            if owned.len() == owned.capacity() {
                owned.retain(|weak| weak.strong_count() > 0);
            }
            owned.push(session.downgrade());
        }
        // close() may have taken the list between the check and the push: then nobody else
        // will revoke this one.
        if self.is_closed() {
            // Best effort: it is revoked here or, failing that, by its drop.
            let _ = session.close().await;
            return Err(Error::Closed);
        }
        Ok(session)
    }

    /// `result`, unless the context was closed meanwhile: then [`Error::Closed`], so a call
    /// that raced `close` says why rather than handing out a guard whose lease close revoked
    /// (or a `LeaseNotFound` from it).
    pub fn unless_closed<T>(&self, result: Result<T>) -> Result<T> {
        if self.is_closed() {
            return Err(Error::Closed);
        }
        result
    }

    /// Takes every live session made through [`session`](Self::session), leaving none.
    pub fn take_sessions(&self) -> Vec<Session> {
        std::mem::take(&mut *lock(&self.owned))
            .iter()
            .filter_map(Session::upgrade)
            .collect()
    }

    /// Lists `session` in `health()` under `kind`/`name` while it lives.
    pub fn track_session(&self, kind: &'static str, name: impl Into<String>, session: &Session) {
        self.sessions.track(kind, name, session);
    }
}
