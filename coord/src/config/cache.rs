//! The read cache of [`ConfigCenter::get`](super::ConfigCenter::get), kept fresh by watch.
//!
//! What it promises:
//! - **A cached read costs no round trip.** The first `get` of a key reads it and starts a
//!   watch on it (through the shared [`WatchHub`], so a key a `Live` already watches costs
//!   nothing more); later `get`s are answered from the watched state.
//! - **Never older than your own writes.** A read is answered from the cache only if the
//!   cached state is known good at or past the revision of the last write made through this
//!   `Coord`'s store ([`Store::written_revision`]: the config center, every other capability,
//!   and `coord.store()` alike); otherwise it goes to the store. A quiet key's watch never
//!   moves past a write to another key, so a store answer that equals the watched value
//!   vouches for that value up to the answer's revision: after a write elsewhere, each cached
//!   key costs one round trip, not one per read.
//! - **Never stale while disconnected.** While a key's watch is broken the cache is bypassed;
//!   once the watch has relisted after reconnecting, it is trusted again (see the hub).
//!   Writes by other clients show up within the watch's delivery latency; the hub relists
//!   every watched range each `sync_interval`, so even a lost event cannot last longer.
//! - **Bounded by use.** A key not read for `cache_ttl` is dropped, and its watch closed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::hub::{Offline, RangeSnapshot, RangeWatch, WatchHub};
use crate::error::Result;
use crate::store::{KeyRange, Store};
use crate::sync::lock;

#[derive(Debug)]
pub(crate) struct ReadCache {
    hub: Arc<WatchHub>,
    /// The owning `Coord`'s store: reads on a miss, and the revision of its own writes.
    store: Store,
    ttl: Duration,
    entries: Mutex<HashMap<String, Entry>>,
}

#[derive(Debug)]
struct Entry {
    _watch: Arc<RangeWatch>,
    rx: watch::Receiver<RangeSnapshot>,
    last_used: Instant,
    /// `(s, r)`: while the snapshot is still at revision `s`, its value of the key is the
    /// store's at revision `r` (a store read at `r` answered the same).
    vouched: Option<(i64, i64)>,
}

impl Entry {
    /// The key's raw value (`None`: it does not exist) if the snapshot can answer for a state
    /// at or past `written`.
    fn answer(&self, key: &str, written: i64) -> Option<Option<Vec<u8>>> {
        let snapshot = self.rx.borrow();
        if !snapshot.connected {
            return None;
        }
        let good_at = match self.vouched {
            Some((at, read)) if at == snapshot.revision => read.max(at),
            _ => snapshot.revision,
        };
        (good_at >= written).then(|| snapshot.values.get(key).map(|value| value.to_vec()))
    }
}

impl ReadCache {
    pub fn new(hub: Arc<WatchHub>, store: Store, ttl: Duration) -> Self {
        ReadCache {
            hub,
            store,
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Keys cached (and watched) right now.
    pub fn len(&self) -> usize {
        lock(&self.entries).len()
    }

    /// The key's raw value (`None`: it does not exist): from the cache if it is fresh enough,
    /// from the store otherwise; starts caching the key if it is not yet.
    ///
    /// # Errors
    ///
    /// As `Store::get` (or the first list of the key's watch) when the cache cannot answer.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let now = Instant::now();
        let written = self.store.written_revision();
        let cached = {
            let mut entries = lock(&self.entries);
            entries.retain(|_, e| now.duration_since(e.last_used) < self.ttl);
            entries.get_mut(key).map(|entry| {
                entry.last_used = now;
                entry.answer(key, written)
            })
        };
        match cached {
            Some(Some(value)) => return Ok(value),
            Some(None) => {}
            None => {
                let (watch, rx, _) = self
                    .hub
                    .watch(&KeyRange::key(key), false, Offline::Fail)
                    .await?;
                let entry = Entry {
                    _watch: watch,
                    rx,
                    last_used: now,
                    vouched: None,
                };
                let answer = entry.answer(key, written);
                lock(&self.entries).insert(key.to_owned(), entry);
                if let Some(value) = answer {
                    return Ok(value);
                }
            }
        }
        let (kv, revision) = self.store.get(key).await?;
        let value = kv.map(|kv| kv.value);
        if let Some(entry) = lock(&self.entries).get_mut(key) {
            let snapshot = entry.rx.borrow();
            if snapshot.connected && snapshot.values.get(key).map(|v| &v[..]) == value.as_deref() {
                let vouched = (snapshot.revision, revision);
                drop(snapshot);
                entry.vouched = Some(vouched);
            }
        }
        Ok(value)
    }
}
