//! The read cache of [`ConfigCenter::get`](super::ConfigCenter::get), kept fresh by watch.
//!
//! What it promises:
//! - **A cached read costs no round trip.** The first `get` of a key reads it and starts a
//!   watch on it (through the shared [`WatchHub`], so a key a `Live` already watches costs
//!   nothing more); later `get`s are answered from the watched state.
//! - **Never older than your own writes.** A read is answered from the cache only if the
//!   cached state is at or past the revision of the last write made through this `Coord`'s
//!   config center; otherwise it goes to the store.
//! - **Never stale while disconnected.** While a key's watch is broken the cache is bypassed.
//!   Writes by other clients show up within the watch's delivery latency; the hub relists
//!   every watched range each `sync_interval`, so even a lost event cannot last longer.
//! - **Bounded by use.** A key not read for `cache_ttl` is dropped, and its watch closed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::hub::{RangeWatch, Snapshot, WatchHub};
use crate::error::Result;
use crate::store::KeyRange;
use crate::sync::lock;

/// What the cache says about a key.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Cached {
    /// The key's raw value (`None`: it does not exist) at a revision at least as new as this
    /// center's writes.
    Fresh(Option<Vec<u8>>),
    /// Read the store.
    Miss,
}

#[derive(Debug)]
pub(crate) struct ReadCache {
    hub: Arc<WatchHub>,
    ttl: Duration,
    entries: Mutex<HashMap<String, Entry>>,
    /// The revision of the last write through the owning config center.
    written: Arc<AtomicI64>,
}

#[derive(Debug)]
struct Entry {
    _watch: Arc<RangeWatch>,
    rx: watch::Receiver<Snapshot>,
    last_used: Instant,
}

impl ReadCache {
    pub fn new(hub: Arc<WatchHub>, ttl: Duration, written: Arc<AtomicI64>) -> Self {
        ReadCache {
            hub,
            ttl,
            entries: Mutex::new(HashMap::new()),
            written,
        }
    }

    /// Keys cached (and watched) right now.
    pub fn len(&self) -> usize {
        lock(&self.entries).len()
    }

    /// The key from the cache, starting to cache it if it is not yet.
    pub async fn get(&self, key: &str) -> Result<Cached> {
        let now = Instant::now();
        let written = self.written.load(Ordering::Acquire);
        {
            let mut entries = lock(&self.entries);
            entries.retain(|_, e| now.duration_since(e.last_used) < self.ttl);
            if let Some(entry) = entries.get_mut(key) {
                entry.last_used = now;
                return Ok(answer(&entry.rx.borrow(), key, written));
            }
        }
        let (watch, rx, snapshot) = self.hub.watch(&KeyRange::key(key)).await?;
        let answer = answer(&snapshot, key, written);
        lock(&self.entries).insert(
            key.to_owned(),
            Entry {
                _watch: watch,
                rx,
                last_used: now,
            },
        );
        Ok(answer)
    }
}

fn answer(snapshot: &Snapshot, key: &str, written: i64) -> Cached {
    if !snapshot.connected || snapshot.revision < written {
        return Cached::Miss;
    }
    Cached::Fresh(snapshot.values.get(key).cloned())
}
