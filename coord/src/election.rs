//! Leader election on etcd.
//!
//! [`Election`] (`coord.election(name)`) uses the layout of etcd's Go `concurrency.Election`
//! (and `etcdctl elect NAME VALUE`): each candidate puts `NAME/{lease_id:x}` holding its value
//! on its own lease; the key with the lowest create revision is the leader, and its value is
//! what the leader proclaims. Candidates queue as lock waiters do (see `queue.rs`), so coord,
//! `etcdctl elect` and Go clients take part in the same election.
//!
//! What it promises: at any store revision at most one live leader key; [`Leadership::lost`]
//! resolves once the lease is gone or the key deleted; [`Election::observe`] reports every
//! change of leader (and of its value) and goes on across etcd restarts and compaction. As
//! with locks, leadership rides on a lease: a leader paused longer than the TTL may lose it
//! without knowing, so fence writes with [`Leadership::fence`].

use std::collections::HashMap;
use std::time::Duration;

use futures::Stream;
use tracing::Instrument;

use std::sync::Arc;

use crate::context::Context;
use crate::error::{Error, Result};
use crate::queue::{self, HeldKey};
use crate::store::{Compare, EventKind, KeyRange, KeyValue, RangeOptions, Txn, TxnOp};
use crate::watch::{ResilientWatch, WatchEvent};

/// The lease TTL of a campaign unless [`Election::ttl`] sets another.
pub const DEFAULT_ELECTION_TTL: Duration = Duration::from_secs(10);

/// One named election; get one with [`Coord::election`](crate::Coord::election). Cheap to
/// clone.
#[derive(Clone, Debug)]
pub struct Election {
    ctx: Arc<Context>,
    name: String,
    ttl: Duration,
}

/// The current leader of an election.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leader {
    /// The leader's key, `{name}/{lease_id:x}`.
    pub key: String,
    /// The value it proclaims.
    pub value: Vec<u8>,
    /// The create revision of the key: strictly increasing from one leader to the next.
    pub revision: i64,
    /// The leader's lease.
    pub lease: i64,
}

impl Leader {
    fn from_kv(kv: &KeyValue) -> Self {
        Leader {
            key: kv.key.clone(),
            value: kv.value.clone(),
            revision: kv.create_revision,
            lease: kv.lease,
        }
    }

    /// The value as UTF-8 text (lossy).
    pub fn value_str(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.value)
    }
}

impl Election {
    pub(crate) fn new(ctx: Arc<Context>, name: &str) -> Self {
        Election {
            ctx,
            name: name.to_owned(),
            ttl: DEFAULT_ELECTION_TTL,
        }
    }

    /// Sets the lease TTL of the campaigns started through this handle (default
    /// [`DEFAULT_ELECTION_TTL`]); checked by [`campaign`](Self::campaign).
    #[must_use]
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// The election name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Stands for election with `value` and waits until this candidate leads.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future revokes the candidate's lease in the background, which
    /// withdraws its key.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for a bad name or a TTL under one second
    /// or over etcd's limit;
    /// [`Error::SessionLost`] if the lease was lost while waiting; [`Error::Closed`] if the
    /// `Coord` is (or gets) closed; store errors.
    pub async fn campaign(&self, value: impl Into<Vec<u8>>) -> Result<Leadership> {
        queue::check_name("name", &self.name)?;
        self.ctx.check_open()?;
        let value = value.into();
        let span = tracing::debug_span!("election.campaign", key = %self.name);
        let result = async {
            // Dropping `session` before the end (error, cancel) revokes the lease: cleanup.
            let session = self.ctx.session(self.ttl).await?;
            let prefix = queue::prefix_of(&self.name);
            let joined =
                queue::join(&self.ctx.store, &prefix, session.lease_id(), value.clone()).await?;
            let revision =
                queue::wait_turn(&self.ctx, &prefix, &joined, &session, "candidate key").await?;
            self.ctx.track_session("election", &self.name, &session);
            tracing::debug!(key = %joined.key, "leading");
            Ok(Leadership {
                name: self.name.clone(),
                held: HeldKey::new(joined.key, joined.create_revision, revision, session),
                ctx: Arc::clone(&self.ctx),
            })
        }
        .instrument(span)
        .await;
        self.ctx.unless_closed(result)
    }

    /// The current leader, or `None` if nobody stands.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for a bad name; store errors.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it only reads, so a dropped call leaves nothing behind.
    pub async fn leader(&self) -> Result<Option<Leader>> {
        queue::check_name("name", &self.name)?;
        self.ctx.check_open()?;
        let prefix = queue::prefix_of(&self.name);
        let span = tracing::debug_span!("election.leader", key = %prefix);
        let response = self
            .ctx
            .store
            .range(&KeyRange::prefix(prefix), RangeOptions::default())
            .instrument(span)
            .await?;
        Ok(response
            .kvs
            .iter()
            .min_by_key(|kv| kv.create_revision)
            .map(Leader::from_kv))
    }

    /// Follows the leader: the first item is the leader now (`None` if nobody stands), then
    /// one item each time the leader or its proclaimed value changes.
    ///
    /// Built on [`ResilientWatch`]: it resumes after etcd restarts and relists after
    /// compaction, so it never ends. Store errors are yielded as `Err` items and it goes on.
    pub fn observe(&self) -> impl Stream<Item = Result<Option<Leader>>> + Send + 'static + use<> {
        let checked = queue::check_name("name", &self.name).and(self.ctx.check_open());
        let watch = ResilientWatch::new(
            self.ctx.store.clone(),
            KeyRange::prefix(queue::prefix_of(&self.name)),
        );
        let state = Observer {
            watch,
            candidates: HashMap::new(),
            last: None,
            first: true,
            refused: checked.err(),
            done: false,
        };
        futures::stream::unfold(state, |mut state| async move {
            let item = state.next().await?;
            Some((item, state))
        })
    }
}

/// The state behind [`Election::observe`].
struct Observer {
    watch: ResilientWatch,
    candidates: HashMap<String, KeyValue>,
    last: Option<Leader>,
    first: bool,
    /// A bad name is reported once, then the stream ends.
    refused: Option<Error>,
    done: bool,
}

impl Observer {
    /// The next change of leader; `None` ends the stream (only after a refused argument).
    async fn next(&mut self) -> Option<Result<Option<Leader>>> {
        if let Some(e) = self.refused.take() {
            self.done = true;
            return Some(Err(e));
        }
        if self.done {
            return None;
        }
        loop {
            let event = match self.watch.next().await {
                Ok(event) => event,
                // The Coord was closed: say so once, then end.
                Err(Error::Closed) => {
                    self.done = true;
                    return Some(Err(Error::Closed));
                }
                Err(e) => return Some(Err(e)),
            };
            match event {
                WatchEvent::Init { kvs, .. } => {
                    self.candidates = kvs.into_iter().map(|kv| (kv.key.clone(), kv)).collect();
                }
                WatchEvent::Events { events, .. } | WatchEvent::Resync { events, .. } => {
                    for event in events {
                        match event.kind {
                            EventKind::Put => {
                                self.candidates.insert(event.kv.key.clone(), event.kv);
                            }
                            EventKind::Delete => {
                                self.candidates.remove(&event.kv.key);
                            }
                        }
                    }
                }
                WatchEvent::Progress { .. } => continue,
            }
            let leader = self
                .candidates
                .values()
                .min_by_key(|kv| kv.create_revision)
                .map(Leader::from_kv);
            if self.first || leader != self.last {
                self.first = false;
                self.last.clone_from(&leader);
                return Some(Ok(leader));
            }
        }
    }
}

/// Leadership of an election, won by [`Election::campaign`]. Dropping it resigns in the
/// background.
///
/// Like a [`LockGuard`](crate::lock::LockGuard), leadership rides on a lease and is not
/// exclusive on its own: fence writes with [`fence`](Self::fence) or pass
/// [`revision`](Self::revision) as a fencing token.
#[derive(Debug)]
#[must_use = "dropping a Leadership resigns at once"]
pub struct Leadership {
    name: String,
    // Holds the only strong handle of the session: dropping the leadership revokes the lease,
    // deleting the key.
    held: HeldKey,
    ctx: Arc<Context>,
}

impl Leadership {
    /// The election name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The leader key, `{name}/{lease_id:x}`.
    pub fn key(&self) -> &str {
        &self.held.key
    }

    /// The create revision of the leader key: strictly increasing from leader to leader.
    pub fn revision(&self) -> i64 {
        self.held.create_revision
    }

    /// The lease the leadership rides on.
    pub fn lease_id(&self) -> i64 {
        self.held.session.lease_id()
    }

    /// True until leadership is known to be lost (see
    /// [`LockGuard::is_alive`](crate::LockGuard::is_alive), which follows the same rule).
    pub fn is_alive(&self) -> bool {
        self.held.is_alive()
    }

    /// The compare that holds only while this leadership holds.
    pub fn fence(&self) -> Compare {
        self.held.fence()
    }

    /// Proclaims a new value without giving up leadership (observers see it).
    ///
    /// # Errors
    ///
    /// [`Error::SessionLost`] if this is no longer the leader; store errors.
    ///
    /// # Cancel safety
    ///
    /// A dropped future may or may not have proclaimed the value.
    pub async fn proclaim(&self, value: impl Into<Vec<u8>>) -> Result<()> {
        let span = tracing::debug_span!("election.proclaim", key = %self.held.key);
        let txn = Txn::new()
            .when([self.fence()])
            .and_then([TxnOp::put_with_lease(
                self.held.key.as_str(),
                value,
                self.lease_id(),
            )]);
        let response = self.ctx.store.txn(txn).instrument(span).await?;
        if !response.succeeded {
            let reason = format!("leader key `{}` is gone", self.held.key);
            self.held.mark_gone(reason.clone());
            return Err(self.held.lost_error(reason));
        }
        Ok(())
    }

    /// Resolves with [`Error::SessionLost`] once leadership is lost: the lease is gone or the
    /// key was deleted by someone else. From then on [`is_alive`](Self::is_alive) is false.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn lost(&self) -> Error {
        self.held.lost(&self.ctx.store, "leadership").await
    }

    /// Steps down now: deletes the leader key if it is still ours (as Go's `Resign`), then
    /// revokes the lease, so the next candidate leads at once.
    ///
    /// # Errors
    ///
    /// [`Error::SessionLost`] if leadership was already lost (the lease gone, or the key
    /// deleted or replaced by someone else): there was nothing to resign. [`Error::Closed`]
    /// after `Coord::close`, which resigned already. Store errors from the revoke (the lease
    /// then expires after its TTL).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the leadership moves into the future, so dropping it drops the
    /// leadership, which revokes the lease in the background.
    pub async fn resign(self) -> Result<()> {
        let span = tracing::debug_span!("election.resign", key = %self.held.key);
        async {
            self.held.check_release(&self.ctx, "resign")?;
            let step_down = self.held.delete_if_held();
            let held = self.ctx.store.txn(step_down).await.map(|r| r.succeeded);
            // Whatever the answer, the lease goes: nothing of this candidate is left.
            let revoked = self.held.session.close().await;
            match held {
                Ok(true) => revoked,
                Ok(false) => Err(self.held.lost_error(format!(
                    "leader key `{}` was gone before resign",
                    self.held.key
                ))),
                // The delete failed, but a revoke that worked deleted the key all the same.
                Err(e) => revoked.map_err(|_| e),
            }
        }
        .instrument(span)
        .await
    }

    /// Stops renewing the lease without resigning, as a crashed process would. For tests.
    pub fn abandon(self) {
        self.held.session.abandon();
    }
}
