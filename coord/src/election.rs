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

use crate::error::{Error, Result};
use crate::queue;
use crate::session::Session;
use crate::store::{Compare, EventKind, KeyRange, KeyValue, RangeOptions, Store, Txn, TxnOp};
use crate::watch::{ResilientWatch, WatchEvent};
use crate::Coord;

/// The lease TTL of a campaign unless [`Election::ttl`] sets another.
pub const DEFAULT_ELECTION_TTL: Duration = Duration::from_secs(10);

/// One named election; get one with [`Coord::election`]. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Election {
    coord: Coord,
    name: String,
    ttl: Duration,
}

impl Coord {
    /// The election `name`; see [`Election`]. Nothing is sent until a method is called, and
    /// a bad name is reported by those methods as [`Error::InvalidArgument`].
    pub fn election(&self, name: &str) -> Election {
        Election {
            coord: self.clone(),
            name: name.to_owned(),
            ttl: DEFAULT_ELECTION_TTL,
        }
    }
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
    /// [`Error::SessionLost`] if the lease was lost while waiting; store errors.
    pub async fn campaign(&self, value: impl Into<Vec<u8>>) -> Result<Leadership> {
        queue::check_name("name", &self.name)?;
        self.coord.check_open()?;
        let value = value.into();
        let span = tracing::debug_span!("election.campaign", key = %self.name);
        async {
            let store = self.coord.store();
            // Dropping `session` before the end (error, cancel) revokes the lease: cleanup.
            let session = Session::new(store, self.ttl).await?;
            let prefix = queue::prefix_of(&self.name);
            let joined = queue::join(store, &prefix, session.lease_id(), value.clone()).await?;
            let revision = tokio::select! {
                r = queue::wait_for_head(store, &prefix, &joined) => r?,
                lost = session.lost() => return Err(lost),
            };
            // As for locks: only a key that is still there after the wait is leadership.
            let (mine, now) = store.get(&joined.key).await?;
            if !matches!(&mine, Some(kv) if kv.create_revision == joined.create_revision)
                || !session.is_alive()
            {
                return Err(Error::SessionLost {
                    lease: session.lease_id(),
                    reason: format!("candidate key `{}` is gone", joined.key),
                });
            }
            self.coord.track_session("election", &self.name, &session);
            tracing::debug!(key = %joined.key, "leading");
            Ok(Leadership {
                name: self.name.clone(),
                key: joined.key,
                revision: joined.create_revision,
                seen_at: now.max(revision),
                store: store.clone(),
                session,
            })
        }
        .instrument(span)
        .await
    }

    /// The current leader, or `None` if nobody stands.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for a bad name; store errors.
    pub async fn leader(&self) -> Result<Option<Leader>> {
        queue::check_name("name", &self.name)?;
        self.coord.check_open()?;
        let prefix = queue::prefix_of(&self.name);
        let span = tracing::debug_span!("election.leader", key = %prefix);
        let response = self
            .coord
            .store()
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
    pub fn observe(&self) -> impl Stream<Item = Result<Option<Leader>>> + Send + 'static {
        let checked = queue::check_name("name", &self.name).and(self.coord.check_open());
        let watch = ResilientWatch::new(
            self.coord.store().clone(),
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
pub struct Leadership {
    name: String,
    key: String,
    revision: i64,
    seen_at: i64,
    store: Store,
    // The only strong handle: dropping the leadership revokes the lease, deleting the key.
    session: Session,
}

impl Leadership {
    /// The election name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The leader key, `{name}/{lease_id:x}`.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The create revision of the leader key: strictly increasing from leader to leader.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// The lease the leadership rides on.
    pub fn lease_id(&self) -> i64 {
        self.session.lease_id()
    }

    /// The compare that holds only while this leadership holds.
    pub fn fence(&self) -> Compare {
        Compare::create_revision(self.key.as_str(), self.revision)
    }

    /// Proclaims a new value without giving up leadership (observers see it).
    ///
    /// # Errors
    ///
    /// [`Error::SessionLost`] if this is no longer the leader; store errors.
    pub async fn proclaim(&self, value: impl Into<Vec<u8>>) -> Result<()> {
        let span = tracing::debug_span!("election.proclaim", key = %self.key);
        let txn = Txn::new()
            .when([self.fence()])
            .and_then([TxnOp::put_with_lease(
                self.key.as_str(),
                value,
                self.session.lease_id(),
            )]);
        let response = self.store.txn(txn).instrument(span).await?;
        if !response.succeeded {
            return Err(Error::SessionLost {
                lease: self.session.lease_id(),
                reason: format!("leader key `{}` is gone", self.key),
            });
        }
        Ok(())
    }

    /// Resolves with [`Error::SessionLost`] once leadership is lost: the lease is gone or the
    /// key was deleted by someone else.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn lost(&self) -> Error {
        tokio::select! {
            e = self.session.lost() => e,
            reason = queue::wait_key_gone(&self.store, &self.key, self.revision, self.seen_at) => {
                tracing::warn!(key = %self.key, %reason, "leadership lost");
                Error::SessionLost { lease: self.session.lease_id(), reason }
            }
        }
    }

    /// Steps down now: revokes the lease, which deletes the key, so the next candidate leads.
    ///
    /// # Errors
    ///
    /// Store errors from the revoke (the lease then expires after its TTL).
    pub async fn resign(self) -> Result<()> {
        let span = tracing::debug_span!("election.resign", key = %self.key);
        self.session.close().instrument(span).await
    }

    /// Stops renewing the lease without resigning, as a crashed process would. For tests.
    pub fn abandon(self) {
        self.session.abandon();
    }
}
