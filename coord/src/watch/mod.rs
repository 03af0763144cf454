//! A watch that does not break: list, then watch, resume after a disconnect, relist after
//! compaction.
//!
//! etcd-client's watch stream ends when the connection does (an etcd restart, a leader
//! change); [`ResilientWatch`] turns it into a stream that never ends. It is an explicit state
//! machine, as kube-runtime's `watcher`:
//!
//! 1. **List**: one range of the key or prefix at one revision, yielded as
//!    [`WatchEvent::Init`].
//! 2. **Watch** from that revision + 1, yielding every batch as [`WatchEvent::Events`].
//! 3. When the stream breaks, wait (exponential backoff with jitter, capped) and watch again from
//!    the last delivered revision + 1: no event is lost or delivered twice.
//! 4. When that revision has been compacted away, relist at the current revision and yield the
//!    differences from what was known as one [`WatchEvent::Resync`], then watch on.
//!
//! Errors are yielded as `Err` items (so callers can log or count them) and the watch goes on;
//! the stream itself never ends until dropped.
//!
//! The states, and the step each takes at [`next`](ResilientWatch::next):
//!
//! | state | step | then |
//! |---|---|---|
//! | `Listing` | read the range; yield `Init` (or `Resync`) | `Connecting` from the read + 1 |
//! | `Connecting { from }` | open a store watch from `from` | `Watching` |
//! | `Watching { stream }` | yield the stream's next batch | `Watching`; `Listing` if compacted; `Backoff` if broken |
//! | `Backoff { until, then }` | wait until `until` | `then` |
//! | `Closed` | yield [`Error::Closed`] | `Closed` |
//!
//! A failed list or open waits in `Backoff` and takes the same step again; a broken stream waits
//! and resumes (`Connecting` from the last delivered revision + 1), or relists if it has
//! delivered no revision yet. Once the store is closed every step is `Closed`.
//!
//! Not every watcher wants the whole range first. [`starting_after`](ResilientWatch::starting_after)
//! skips the first list and follows the changes after a revision the caller read itself (a lock
//! waiter that read its queue); [`from_now`](ResilientWatch::from_now) follows the changes from
//! the moment it returns (a registration about to write its key). With nothing listed, such a
//! watch's first relist yields the whole range as `Init`. [`WatchConfig::keys_only`] reads keys
//! without values, and [`Relist::Whole`] makes every relist an `Init`, so the watch keeps no map
//! of the range's keys (for a consumer that needs a few keys of a large range).

use std::collections::HashMap;
use std::time::Duration;

use futures::{Stream, StreamExt};
use rand::Rng;
use tokio::time::Instant;
use tracing::Instrument;

use crate::error::{Error, Result};
use crate::store::{
    Event, EventKind, GetResponse, KeyRange, KeyValue, RangeOptions, Store, WatchResponse,
    WatchStream,
};

/// Where a retry goes when its backoff would overflow the clock: never, in practice.
const FAR_FUTURE: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// What a relist of a [`ResilientWatch`] yields (after a compaction, or
/// [`resync`](ResilientWatch::resync)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Relist {
    /// The differences from what the watch delivered, as one [`WatchEvent::Resync`]; the watch
    /// remembers the mod revision of every key of the range to compute them.
    #[default]
    Diff,
    /// The whole range again, as [`WatchEvent::Init`]; the watch remembers no keys.
    Whole,
}

/// Settings of a [`ResilientWatch`]: its backoff and how it lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatchConfig {
    /// The first wait after a failure.
    pub initial_backoff: Duration,
    /// The longest wait between attempts.
    pub max_backoff: Duration,
    /// Lists (the first and every relist) read keys and metadata without values; events still
    /// carry values.
    pub keys_only: bool,
    /// What a relist yields.
    pub relist: Relist,
}

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            keys_only: false,
            relist: Relist::Diff,
        }
    }
}

impl WatchConfig {
    /// Sets the first wait after a failure.
    #[must_use]
    pub fn initial_backoff(mut self, backoff: Duration) -> Self {
        self.initial_backoff = backoff;
        self
    }

    /// Sets the longest wait between attempts.
    #[must_use]
    pub fn max_backoff(mut self, backoff: Duration) -> Self {
        self.max_backoff = backoff;
        self
    }

    /// Lists read keys and metadata only, not values.
    #[must_use]
    pub fn keys_only(mut self) -> Self {
        self.keys_only = true;
        self
    }

    /// Sets what a relist yields.
    #[must_use]
    pub fn relist(mut self, relist: Relist) -> Self {
        self.relist = relist;
        self
    }
}

/// What a [`ResilientWatch`] yields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchEvent {
    /// The whole state of the range at `revision`: the first item of a watch that lists first,
    /// and any relist with nothing to diff against ([`Relist::Whole`], or the first relist of a
    /// watch that did not list first).
    Init {
        /// The revision the list was read at.
        revision: i64,
        /// Every key in the range, in key order.
        kvs: Vec<KeyValue>,
    },
    /// The changes of one revision.
    Events {
        /// The revision of every event in the batch.
        revision: i64,
        /// The events, in the order they were applied.
        events: Vec<Event>,
    },
    /// The history the watch needed was compacted; this is the difference between what was
    /// known and the state at `revision`: a put for each new or changed key, a delete for each
    /// key that is gone.
    Resync {
        /// The revision of the relist.
        revision: i64,
        /// The differences, puts first in key order, then deletes.
        events: Vec<Event>,
    },
    /// Nothing changed in the range up to `revision`.
    Progress {
        /// The store revision the watch is known to be current at.
        revision: i64,
    },
}

impl WatchEvent {
    /// The revision this item brings the watcher to.
    pub fn revision(&self) -> i64 {
        match self {
            WatchEvent::Init { revision, .. }
            | WatchEvent::Events { revision, .. }
            | WatchEvent::Resync { revision, .. }
            | WatchEvent::Progress { revision } => *revision,
        }
    }
}

/// Where a [`ResilientWatch`] stands: the step its next call takes. See the
/// [module docs](self) for the transitions.
enum State {
    /// Read the whole range. `open` is a store watch kept open across a
    /// [`resync`](ResilientWatch::resync): its batches up to the read are skipped as covered.
    Listing { open: Option<WatchStream> },
    /// Open a store watch from revision `from` (0: from the moment it opens).
    Connecting { from: i64 },
    /// Follow an open store watch.
    Watching { stream: WatchStream },
    /// After a failure: wait until `until`, then take the step of `then`.
    Backoff { until: Instant, then: Box<State> },
    /// The store was closed: nothing will answer again.
    Closed,
}

impl State {
    fn name(&self) -> &'static str {
        match self {
            State::Listing { .. } => "listing",
            State::Connecting { .. } => "connecting",
            State::Watching { .. } => "watching",
            State::Backoff { .. } => "backoff",
            State::Closed => "closed",
        }
    }

    /// The state that lists at its next step, keeping an open stream open.
    fn relisting(self) -> State {
        match self {
            State::Watching { stream } => State::Listing { open: Some(stream) },
            State::Connecting { .. } => State::Listing { open: None },
            State::Backoff { until, then } => State::Backoff {
                until,
                then: Box::new(then.relisting()),
            },
            listing_or_closed => listing_or_closed,
        }
    }
}

/// A watch over a key or prefix that survives disconnects and compaction. See the
/// [module docs](self).
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> coord::Result<()> {
/// use coord::store::KeyRange;
/// use coord::watch::{ResilientWatch, WatchEvent};
///
/// let coord = coord::Coord::in_memory();
/// let store = coord.store();
/// store.put("/jobs/1", b"a".to_vec(), 0).await?;
/// let mut watch = ResilientWatch::new(store.clone(), KeyRange::prefix("/jobs/"));
/// assert!(matches!(watch.next().await?, WatchEvent::Init { ref kvs, .. } if kvs.len() == 1));
/// store.put("/jobs/2", b"b".to_vec(), 0).await?;
/// assert!(matches!(watch.next().await?, WatchEvent::Events { ref events, .. } if events[0].kv.key == "/jobs/2"));
/// # Ok(())
/// # }
/// ```
pub struct ResilientWatch {
    store: Store,
    range: KeyRange,
    config: WatchConfig,
    state: State,
    /// The last revision delivered (or the one the watch started after); 0 while there is
    /// nothing to resume from.
    revision: i64,
    /// Key → mod_revision of every key the consumer has been told about, once it has been told
    /// the whole range (with [`Relist::Diff`]): what a relist diffs against. `None`: a relist
    /// yields the whole range.
    known: Option<HashMap<String, i64>>,
    /// Failures in a row, for the backoff; reset whenever the store answers.
    failures: u32,
}

impl std::fmt::Debug for ResilientWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResilientWatch")
            .field("range", &self.range)
            .field("revision", &self.revision)
            .field("state", &self.state.name())
            .finish()
    }
}

impl ResilientWatch {
    /// A watch over `range` with the default backoff. Nothing is sent until the first
    /// [`next`](Self::next).
    pub fn new(store: Store, range: KeyRange) -> Self {
        Self::with_config(store, range, WatchConfig::default())
    }

    /// A watch over `range` with custom settings.
    pub fn with_config(store: Store, range: KeyRange, config: WatchConfig) -> Self {
        ResilientWatch {
            store,
            range,
            config,
            state: State::Listing { open: None },
            revision: 0,
            known: None,
            failures: 0,
        }
    }

    /// Skips the first list: the watch yields the changes after `revision`, a revision the
    /// caller read the range at itself (from the store's history, then live). 0 means "from
    /// whenever the store watch opens".
    ///
    /// Nothing was listed, so the first relist (after a compaction, say) yields the whole range
    /// as [`WatchEvent::Init`]; so does a break before the watch delivered any revision, since
    /// there is nothing to resume from.
    #[must_use]
    pub fn starting_after(mut self, revision: i64) -> Self {
        let revision = revision.max(0);
        self.revision = revision;
        self.known = None;
        self.state = State::Connecting {
            from: if revision > 0 { revision + 1 } else { 0 },
        };
        self
    }

    /// A watch of the changes of `range` from now on, without a first list: its store watch is
    /// open when this returns, so every change made after that is delivered. See
    /// [`starting_after`](Self::starting_after) for what its relists yield.
    ///
    /// # Errors
    ///
    /// The store's, from opening the watch.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a dropped call leaves no store watch behind.
    pub async fn from_now(store: Store, range: KeyRange, config: WatchConfig) -> Result<Self> {
        let mut watch = Self::with_config(store, range, config).starting_after(0);
        let stream = watch.open(0).await?;
        watch.state = State::Watching { stream };
        Ok(watch)
    }

    /// The watched key or prefix.
    pub fn range(&self) -> &KeyRange {
        &self.range
    }

    /// The last revision delivered (0 before the first item; for a watch made with
    /// [`starting_after`](Self::starting_after), the revision it started after).
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// Relists the whole range at the next call and yields what changed as a
    /// [`WatchEvent::Resync`] (or the whole range as an `Init`, with nothing to diff against):
    /// a safety net against an event lost by anyone (a periodic full
    /// sync, as etcd's and Consul's caching clients do). The open stream stays open; its events
    /// up to the relist's revision are skipped as already covered. A pending backoff is still
    /// waited out first.
    pub fn resync(&mut self) {
        let state = std::mem::replace(&mut self.state, State::Closed);
        self.state = state.relisting();
    }

    /// The next item. Never returns "end": on failure it yields the error and, at the next call,
    /// waits out the backoff and tries again. Once the store is closed (`Coord::close`) it
    /// returns [`Error::Closed`] at once, every time: stop calling then.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: if the future is dropped before it completes, no item is lost; the next call
    /// picks up where this one stopped.
    pub async fn next(&mut self) -> Result<WatchEvent> {
        loop {
            if let Some(item) = self.step().await {
                return item;
            }
        }
    }

    /// This watch as a `Stream` that ends only after yielding [`Error::Closed`] once (its
    /// `Coord` was closed).
    pub fn into_stream(self) -> impl Stream<Item = Result<WatchEvent>> + Send + 'static {
        futures::stream::unfold(Some(self), |watch| async move {
            let mut watch = watch?;
            let item = watch.next().await;
            let closed = matches!(item, Err(Error::Closed));
            Some((item, (!closed).then_some(watch)))
        })
    }

    /// Takes the step of the current state; `None` if it yields nothing (a stream opened, a
    /// backoff waited out, a batch already covered skipped).
    ///
    /// Every await leaves the state as it was until it completes, so a dropped step loses
    /// nothing: that is what makes [`next`](Self::next) cancel safe.
    async fn step(&mut self) -> Option<Result<WatchEvent>> {
        // A closed store never answers again: no backoff, no retry.
        if self.store.is_closed() {
            self.state = State::Closed;
        }
        match &mut self.state {
            State::Closed => Some(Err(Error::Closed)),
            State::Backoff { until, .. } => {
                tokio::time::sleep_until(*until).await;
                self.state = match std::mem::replace(&mut self.state, State::Closed) {
                    State::Backoff { then, .. } => *then,
                    other => other,
                };
                None
            }
            // The list and the open are boxed: they are rare, and their futures would otherwise
            // make every watching task's state (one per watched range) kilobytes big.
            State::Listing { .. } => Some(match Box::pin(self.list()).await {
                Ok(response) => Ok(self.listed(response)),
                Err(e) => Err(self.retry(e)),
            }),
            State::Connecting { from } => {
                let from = *from;
                match Box::pin(self.open(from)).await {
                    Ok(stream) => {
                        self.state = State::Watching { stream };
                        None
                    }
                    Err(e) => Some(Err(self.retry(e))),
                }
            }
            State::Watching { stream } => {
                let batch = stream.next().await;
                self.watched(batch)
            }
        }
    }

    /// Reads the whole range (one network round trip). (`&mut self` although it changes
    /// nothing: a `&ResilientWatch` held across an await would need it to be `Sync`, which its
    /// stream is not.)
    async fn list(&mut self) -> Result<GetResponse> {
        let options = RangeOptions {
            keys_only: self.config.keys_only,
            ..RangeOptions::default()
        };
        let span = tracing::debug_span!(
            "watch.list",
            key = self.range.as_str(),
            after = self.revision
        );
        self.store
            .range(&self.range, options)
            .instrument(span)
            .await
    }

    /// Opens a store watch from `from` (one network round trip). (`&mut self`: as
    /// [`list`](Self::list).)
    async fn open(&mut self, from: i64) -> Result<WatchStream> {
        let span = tracing::debug_span!("watch.open", key = self.range.as_str(), from);
        self.store.watch(&self.range, from).instrument(span).await
    }

    /// Delivers a list: the whole range if there is nothing to diff against, else the
    /// differences; the watch goes on from just after it.
    fn listed(&mut self, response: GetResponse) -> WatchEvent {
        let revision = response.revision;
        self.failures = 0;
        self.revision = revision;
        self.state = match std::mem::replace(&mut self.state, State::Closed) {
            State::Listing { open: Some(stream) } => State::Watching { stream },
            _ => State::Connecting { from: revision + 1 },
        };
        match self.known.as_mut() {
            Some(known) => WatchEvent::Resync {
                revision,
                events: diff(known, response.kvs, revision),
            },
            None => {
                if self.config.relist == Relist::Diff {
                    self.known = Some(
                        response
                            .kvs
                            .iter()
                            .map(|kv| (kv.key.clone(), kv.mod_revision))
                            .collect(),
                    );
                }
                WatchEvent::Init {
                    revision,
                    kvs: response.kvs,
                }
            }
        }
    }

    /// Handles what the open stream gave.
    fn watched(&mut self, batch: Option<Result<WatchResponse>>) -> Option<Result<WatchEvent>> {
        match batch {
            Some(Ok(response)) if response.is_progress() => {
                self.failures = 0;
                if response.revision <= self.revision {
                    return None;
                }
                self.revision = response.revision;
                Some(Ok(WatchEvent::Progress {
                    revision: response.revision,
                }))
            }
            Some(Ok(response)) => {
                self.failures = 0;
                // A resumed watch starts after `revision`, so this skips only what a resync's
                // list already covered, or a backend that replays: never deliver a revision
                // twice.
                if response.revision <= self.revision {
                    return None;
                }
                self.revision = response.revision;
                if let Some(known) = self.known.as_mut() {
                    for event in &response.events {
                        remember(known, event);
                    }
                }
                Some(Ok(WatchEvent::Events {
                    revision: response.revision,
                    events: response.events,
                }))
            }
            Some(Err(Error::Compacted {
                compact_revision, ..
            })) => {
                tracing::warn!(
                    key = self.range.as_str(),
                    revision = self.revision,
                    compact_revision,
                    "watch history compacted; relisting"
                );
                self.state = State::Listing { open: None };
                None
            }
            Some(Err(e)) => Some(Err(self.broke(e))),
            None => {
                let ended = Error::Unavailable {
                    endpoints: String::new(),
                    reason: format!("watch on `{}` ended", self.range.as_str()),
                };
                Some(Err(self.broke(ended)))
            }
        }
    }

    /// The stream broke: after a backoff, resume from the last delivered revision + 1, or
    /// relist if none was delivered. Returns the error.
    fn broke(&mut self, error: Error) -> Error {
        let then = if self.revision > 0 {
            State::Connecting {
                from: self.revision + 1,
            }
        } else {
            State::Listing { open: None }
        };
        self.back_off(error, then)
    }

    /// A list or an open failed: take the same step again after a backoff. Returns the error.
    fn retry(&mut self, error: Error) -> Error {
        let then = std::mem::replace(&mut self.state, State::Closed);
        self.back_off(error, then)
    }

    /// Waits a jittered exponential backoff before `then`; returns the error.
    fn back_off(&mut self, error: Error, then: State) -> Error {
        if self.store.is_closed() {
            self.state = State::Closed;
            return Error::Closed;
        }
        let exponent = self.failures.min(16);
        self.failures = self.failures.saturating_add(1);
        let base = self
            .config
            .initial_backoff
            .saturating_mul(1 << exponent)
            .min(self.config.max_backoff);
        // Jitter of ±20% keeps many watchers from reconnecting in lockstep after a restart.
        let jitter = rand::rng().random_range(0.8..1.2);
        // Checked: a backoff near Duration::MAX means "do not retry soon", not a panic.
        let wait = Duration::try_from_secs_f64(base.as_secs_f64() * jitter)
            .unwrap_or(self.config.max_backoff)
            .min(self.config.max_backoff);
        tracing::debug!(key = self.range.as_str(), error = %error, ?wait, "watch failed; retrying");
        let now = Instant::now();
        self.state = State::Backoff {
            until: now.checked_add(wait).unwrap_or(now + FAR_FUTURE),
            then: Box::new(then),
        };
        error
    }
}

/// The differences between `known` and the range read at `revision` (`kvs`), puts first in key
/// order, then deletes; `known` becomes the range.
fn diff(known: &mut HashMap<String, i64>, kvs: Vec<KeyValue>, revision: i64) -> Vec<Event> {
    let mut gone = std::mem::take(known);
    let mut events = Vec::new();
    for kv in kvs {
        let seen = gone.remove(&kv.key);
        known.insert(kv.key.clone(), kv.mod_revision);
        if seen != Some(kv.mod_revision) {
            events.push(Event {
                kind: EventKind::Put,
                kv,
            });
        }
    }
    let mut deleted: Vec<String> = gone.into_keys().collect();
    deleted.sort();
    events.extend(deleted.into_iter().map(|key| Event {
        kind: EventKind::Delete,
        kv: KeyValue {
            key,
            mod_revision: revision,
            ..KeyValue::default()
        },
    }));
    events
}

fn remember(known: &mut HashMap<String, i64>, event: &Event) {
    match event.kind {
        EventKind::Put => {
            known.insert(event.kv.key.clone(), event.kv.mod_revision);
        }
        EventKind::Delete => {
            known.remove(&event.kv.key);
        }
    }
}

#[cfg(test)]
mod tests;
