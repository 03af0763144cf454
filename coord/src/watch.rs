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

use std::collections::HashMap;
use std::time::Duration;

use futures::{Stream, StreamExt};
use rand::Rng;
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::store::{Event, EventKind, KeyRange, KeyValue, RangeOptions, Store, WatchStream};

/// Where a retry goes when its backoff would overflow the clock: never, in practice.
const FAR_FUTURE: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Backoff settings of a [`ResilientWatch`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatchConfig {
    /// The first wait after a failure.
    pub initial_backoff: Duration,
    /// The longest wait between attempts.
    pub max_backoff: Duration,
}

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
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
}

/// What a [`ResilientWatch`] yields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchEvent {
    /// The whole state of the range at `revision`; always the first item.
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
    /// Key → mod_revision of every key the consumer has been told about, for the diff after a
    /// compaction.
    known: HashMap<String, i64>,
    /// The last revision delivered; 0 before the first list.
    revision: i64,
    relist: bool,
    stream: Option<WatchStream>,
    failures: u32,
    retry_at: Option<Instant>,
}

impl std::fmt::Debug for ResilientWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResilientWatch")
            .field("range", &self.range)
            .field("revision", &self.revision)
            .field("connected", &self.stream.is_some())
            .finish()
    }
}

impl ResilientWatch {
    /// A watch over `range` with the default backoff. Nothing is sent until the first
    /// [`next`](Self::next).
    pub fn new(store: Store, range: KeyRange) -> Self {
        Self::with_config(store, range, WatchConfig::default())
    }

    /// A watch over `range` with custom backoff.
    pub fn with_config(store: Store, range: KeyRange, config: WatchConfig) -> Self {
        ResilientWatch {
            store,
            range,
            config,
            known: HashMap::new(),
            revision: 0,
            relist: true,
            stream: None,
            failures: 0,
            retry_at: None,
        }
    }

    /// The watched key or prefix.
    pub fn range(&self) -> &KeyRange {
        &self.range
    }

    /// The last revision delivered (0 before the first item).
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// Relists the whole range at the next call and yields what changed as a
    /// [`WatchEvent::Resync`]: a safety net against an event lost by anyone (a periodic full
    /// sync, as etcd's and Consul's caching clients do). The open stream stays open; its events
    /// up to the relist's revision are skipped as already covered.
    pub fn resync(&mut self) {
        if self.revision > 0 {
            self.relist = true;
        }
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
            // A closed store never answers again: no backoff, no retry.
            if self.store.is_closed() {
                self.stream = None;
                return Err(Error::Closed);
            }
            if let Some(at) = self.retry_at.take() {
                // Put the deadline back first, so a cancelled sleep is not forgotten.
                self.retry_at = Some(at);
                tokio::time::sleep_until(at).await;
                self.retry_at = None;
            }
            // The list and the reconnect are boxed: they are rare, and their futures would
            // otherwise make every watching task's state (one per watched range) kilobytes big.
            if self.relist {
                return match Box::pin(self.list()).await {
                    Ok(event) => Ok(event),
                    Err(e) => Err(self.failed(e)),
                };
            }
            let Some(stream) = self.stream.as_mut() else {
                match Box::pin(self.store.watch(&self.range, self.revision + 1)).await {
                    Ok(stream) => self.stream = Some(stream),
                    Err(e) => return Err(self.failed(e)),
                }
                continue;
            };
            match stream.next().await {
                Some(Ok(response)) if response.is_progress() => {
                    self.failures = 0;
                    if response.revision > self.revision {
                        self.revision = response.revision;
                        return Ok(WatchEvent::Progress {
                            revision: response.revision,
                        });
                    }
                }
                Some(Ok(response)) => {
                    self.failures = 0;
                    // A resumed watch starts after `revision`, so this only guards against a
                    // backend that replays: never deliver a revision twice.
                    if response.revision <= self.revision {
                        continue;
                    }
                    self.revision = response.revision;
                    for event in &response.events {
                        self.remember(event);
                    }
                    return Ok(WatchEvent::Events {
                        revision: response.revision,
                        events: response.events,
                    });
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
                    self.stream = None;
                    self.relist = true;
                }
                Some(Err(e)) => {
                    self.stream = None;
                    return Err(self.failed(e));
                }
                None => {
                    self.stream = None;
                    return Err(self.failed(Error::Unavailable {
                        endpoints: String::new(),
                        reason: format!("watch on `{}` ended", self.range.as_str()),
                    }));
                }
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

    /// Reads the whole range; the first time as `Init`, after a compaction (or
    /// [`resync`](Self::resync)) as a `Resync` diff.
    async fn list(&mut self) -> Result<WatchEvent> {
        let response = self
            .store
            .range(&self.range, RangeOptions::default())
            .await?;
        let revision = response.revision;
        let first = self.revision == 0;
        self.relist = false;
        self.failures = 0;
        self.revision = revision;
        if first {
            self.known = response
                .kvs
                .iter()
                .map(|kv| (kv.key.clone(), kv.mod_revision))
                .collect();
            return Ok(WatchEvent::Init {
                revision,
                kvs: response.kvs,
            });
        }
        let mut gone = std::mem::take(&mut self.known);
        let mut events = Vec::new();
        for kv in response.kvs {
            let seen = gone.remove(&kv.key);
            self.known.insert(kv.key.clone(), kv.mod_revision);
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
        Ok(WatchEvent::Resync { revision, events })
    }

    fn remember(&mut self, event: &Event) {
        match event.kind {
            EventKind::Put => {
                self.known
                    .insert(event.kv.key.clone(), event.kv.mod_revision);
            }
            EventKind::Delete => {
                self.known.remove(&event.kv.key);
            }
        }
    }

    /// Schedules the next attempt after a jittered exponential backoff; returns the error.
    fn failed(&mut self, error: Error) -> Error {
        if self.store.is_closed() {
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
        self.retry_at = Some(now.checked_add(wait).unwrap_or(now + FAR_FUTURE));
        error
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_backoff_of_duration_max_does_not_overflow() {
        let config = WatchConfig::default()
            .initial_backoff(Duration::MAX)
            .max_backoff(Duration::MAX);
        let mut watch =
            ResilientWatch::with_config(Store::in_memory(), KeyRange::key("/k"), config);
        for _ in 0..3 {
            let error = watch.failed(Error::Backend {
                key: "/k".into(),
                reason: "test".into(),
            });
            assert!(matches!(error, Error::Backend { .. }));
            assert!(watch.retry_at.is_some_and(|at| at > Instant::now()));
        }
    }
}
