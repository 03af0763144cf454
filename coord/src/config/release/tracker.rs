//! Which revisions wrote a prefix, as a watch tells them: how a center that released a
//! prefix knows, without reading it, that nothing but its own releases wrote it since.
//!
//! # What it promises
//!
//! - **Only what the watch delivered.** A revision counts as seen only once a watch event at
//!   it (or later) arrived; events arrive in revision order, so every write at or below the
//!   latest one delivered is known.
//! - **A broken watch says nothing.** Once its stream ends (an error, a compaction, a closed
//!   store), every question is answered "unknown" and the release falls back to its bounded
//!   chain of remembered releases (see `state.rs`).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use futures::StreamExt;

use crate::store::{KeyRange, Store};
use crate::sync::lock;

/// What the watch says about the writes since a remembered state was checked.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Every write since was one of the center's own releases, up to and including the
    /// latest: the state is checked through it.
    Clean,
    /// Someone else wrote the prefix since: read it again.
    Written,
    /// Not known (yet): the latest release's events have not arrived, or the watch is broken.
    Unknown,
}

#[derive(Debug, Default)]
struct Seen {
    /// Revisions after this one are all covered by the watch.
    from: i64,
    /// The revisions at which the prefix was written, after `from`.
    revisions: BTreeSet<i64>,
    /// Every write at or below this revision has been delivered.
    delivered: i64,
    broken: bool,
}

/// A watch on one prefix, kept by the center that releases it. Dropping it stops the watch.
#[derive(Debug)]
pub(crate) struct Tracker {
    seen: Arc<Mutex<Seen>>,
    task: tokio::task::AbortHandle,
}

impl Drop for Tracker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Tracker {
    /// Watches every key under `prefix` written after revision `after`.
    pub async fn start(store: &Store, prefix: &str, after: i64) -> crate::error::Result<Tracker> {
        let mut stream = store
            .watch(&KeyRange::prefix(format!("{prefix}/")), after + 1)
            .await?;
        let seen = Arc::new(Mutex::new(Seen {
            from: after,
            delivered: after,
            ..Seen::default()
        }));
        let shared = Arc::clone(&seen);
        let task = tokio::spawn(async move {
            while let Some(Ok(response)) = stream.next().await {
                let mut seen = lock(&shared);
                if !response.events.is_empty() {
                    seen.revisions.insert(response.revision);
                }
                seen.delivered = seen.delivered.max(response.revision);
            }
            lock(&shared).broken = true;
        });
        Ok(Tracker {
            seen,
            task: task.abort_handle(),
        })
    }

    /// True while the watch covers every write after `revision`.
    pub fn covers(&self, revision: i64) -> bool {
        let seen = lock(&self.seen);
        !seen.broken && seen.from <= revision
    }

    /// Were the writes after `checked` all made by the releases at `ours`, the latest at
    /// `latest`? Forgets what it no longer needs once the answer is [`Verdict::Clean`].
    pub fn verdict(&self, checked: i64, ours: &BTreeSet<i64>, latest: i64) -> Verdict {
        let mut seen = lock(&self.seen);
        if seen.broken || seen.from > checked {
            return Verdict::Unknown;
        }
        if seen
            .revisions
            .range(checked + 1..)
            .any(|revision| !ours.contains(revision))
        {
            return Verdict::Written;
        }
        if seen.delivered < latest {
            return Verdict::Unknown;
        }
        seen.revisions = seen.revisions.split_off(&(latest + 1));
        seen.from = seen.from.max(latest);
        Verdict::Clean
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    async fn settle(tracker: &Tracker, revision: i64) {
        for _ in 0..200 {
            if lock(&tracker.seen).delivered >= revision {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("the watch never delivered revision {revision}");
    }

    #[tokio::test]
    async fn only_the_centers_own_writes_make_a_clean_verdict() {
        let store = Store::in_memory();
        let start = store
            .put("/other", b"0".to_vec(), 0)
            .await
            .unwrap()
            .revision;
        let tracker = Tracker::start(&store, "/p", start).await.unwrap();
        let ours = store.put("/p/a", b"1".to_vec(), 0).await.unwrap().revision;
        // Not delivered yet, or delivered: never "written" for our own revision.
        assert_ne!(
            tracker.verdict(start, &BTreeSet::from([ours]), ours),
            Verdict::Written
        );
        settle(&tracker, ours).await;
        assert_eq!(
            tracker.verdict(start, &BTreeSet::from([ours]), ours),
            Verdict::Clean
        );
        // A write to another prefix is not this prefix's.
        store.put("/q/a", b"1".to_vec(), 0).await.unwrap();
        let theirs = store.put("/p/b", b"1".to_vec(), 0).await.unwrap().revision;
        settle(&tracker, theirs).await;
        assert_eq!(
            tracker.verdict(ours, &BTreeSet::new(), ours),
            Verdict::Written
        );
        // Asked about revisions it no longer covers: unknown.
        assert_eq!(
            tracker.verdict(start, &BTreeSet::new(), ours),
            Verdict::Unknown
        );
    }

    #[tokio::test]
    async fn a_watch_that_ends_answers_unknown() {
        let store = Store::in_memory();
        let tracker = Tracker::start(&store, "/p", 1).await.unwrap();
        store.close();
        for _ in 0..200 {
            if !tracker.covers(1) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(!tracker.covers(1));
        assert_eq!(tracker.verdict(1, &BTreeSet::new(), 1), Verdict::Unknown);
    }
}
