//! The config center: typed key-value access, values as JSON.
//!
//! [`ConfigCenter`] reads and writes single keys as serde types, with etcd's versions for
//! optimistic concurrency, atomic multi-key writes ([`Batch`], [`ConfigCenter::publish`]) and
//! typed watches ([`Watcher`]).
//!
//! A key's *version* here is its `mod_revision`: the store revision of its last write. It
//! strictly increases with every write, so `compare_and_set` with the version you read succeeds
//! only if nobody wrote in between. Version 0 means "does not exist".

use std::collections::{BTreeMap, BTreeSet};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use futures::Stream;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::Instrument;

use crate::access::Identity;
use crate::config::cache::ReadCache;
use crate::config::hub::WatchHub;
use crate::config::layout::{Layout, names_of};
use crate::config::reserved::refuse_reserved;
use crate::config::schema::{
    CoordConfig, HasPrefix, Source, decode_stored, is_secret_key, prefix_of,
};
use crate::error::{Error, Result};
use crate::keyring::KeyRing;
use crate::store::{
    Compare, CompareOp, CompareTarget, EventKind, KeyRange, RangeOptions, Store, Txn, TxnOp,
    TxnOpResponse,
};
use crate::sync::Slots;
use crate::watch::{ResilientWatch, WatchEvent};

/// Release records kept per prefix unless the center says otherwise
/// ([`ConfigCenter::with_release_history`]).
pub(crate) const DEFAULT_RELEASE_HISTORY: usize = 100;

/// Typed access to config keys. Get it from `Coord::config()`.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> coord::Result<()> {
/// let coord = coord::Coord::in_memory();
/// let config = coord.config();
/// config.set("/config/app/replicas", &3u32).await?;
/// let (replicas, version) = config.get_with_version::<u32>("/config/app/replicas").await?;
/// assert_eq!(replicas, 3);
/// // Only succeeds if nobody wrote since we read.
/// config.compare_and_set("/config/app/replicas", &4u32, version).await?;
/// assert!(config.compare_and_set("/config/app/replicas", &5u32, version).await.is_err());
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct ConfigCenter {
    pub(crate) store: Store,
    hub: Arc<WatchHub>,
    cache: Option<Arc<ReadCache>>,
    /// What the rooms above keep per center (the releases' remembered states), shared by its
    /// clones; see [`Slots`].
    pub(crate) slots: Arc<Slots>,
    /// Release records kept per prefix.
    pub(crate) release_history: usize,
    /// A release's author unless it names one.
    pub(crate) author: Option<String>,
    /// How long a release may keep reading again while others release the same prefix,
    /// unless it says otherwise (the `Coord`'s request timeout).
    pub(crate) release_timeout: Duration,
    /// The `Coord`'s key ring: typed writes seal secret fields with it, reads open sealed
    /// values with it.
    pub(crate) keys: Arc<ArcSwapOption<KeyRing>>,
    /// Who this center's releases, proposals and approvals are checked and recorded as.
    pub(crate) identity: Identity,
}

impl ConfigCenter {
    /// A center whose `get` is cached for `cache_ttl` (zero: not cached).
    pub(crate) fn new(
        ctx: Arc<crate::context::Context>,
        hub: &Arc<WatchHub>,
        keys: &Arc<ArcSwapOption<KeyRing>>,
        cache_ttl: Duration,
    ) -> Self {
        let center = ConfigCenter {
            store: ctx.store.clone(),
            hub: Arc::clone(hub),
            keys: Arc::clone(keys),
            cache: None,
            slots: Arc::default(),
            release_history: DEFAULT_RELEASE_HISTORY,
            author: Some(ctx.instance.name.clone()),
            release_timeout: ctx.request_timeout,
            identity: Identity::of_connection(ctx.user.as_deref()),
        };
        center.with_cache(cache_ttl)
    }

    /// Who this center's releases, proposals and approvals are checked against the access
    /// policy as, and recorded as in the audit log (see [`crate::access`]).
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// This center as principal `name`, on a connection without etcd auth (the embedded
    /// store, a plain etcd): a claim the access policy takes at its word, for tools and tests.
    /// A connection logged in as an etcd user is that user.
    ///
    /// ```
    /// let coord = coord::Coord::in_memory();
    /// let ana = coord.config().as_principal("ana")?;
    /// assert_eq!(ana.identity().principal, "ana");
    /// assert_eq!(coord.config().identity().principal, "anonymous");
    /// # Ok::<(), coord::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for a name the policy cannot hold, or on a connection logged
    /// in as another etcd user.
    pub fn as_principal(&self, name: &str) -> Result<ConfigCenter> {
        let mut center = self.clone();
        center.identity = self.identity.claim(name)?;
        Ok(center)
    }

    /// This center acting for principal `name`: its releases, proposals and approvals are
    /// checked against `name`'s grants and recorded as `name`'s, via this center's principal,
    /// which the policy must mark `delegate` (the web console, mapping its tokens to
    /// principals). Without a policy, nothing is checked.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for a name the policy cannot hold.
    pub fn on_behalf_of(&self, name: &str) -> Result<ConfigCenter> {
        let mut center = self.clone();
        center.identity = self.identity.acting_for(name)?;
        Ok(center)
    }

    /// This center with a read cache for [`get`](Self::get) that keeps each key read within
    /// the last `ttl` watched, so repeated reads cost no round trip (zero turns it off).
    /// `Coord::connect` sets it from `ClientConfig::cache_ttl`.
    ///
    /// A cached read is never older than a write made through this `Coord`: through the
    /// config center or any other capability, or directly with `coord.store()` (a put, a
    /// delete, a transaction, a lease revoke and the deletions it makes). Until the key's watch has
    /// caught up with such a write, the read goes to the store (once per key: a store answer
    /// that matches the watched value vouches for it). A cached read is not served while the
    /// key's watch is broken; once the watch reconnects, the key is listed again and trusted
    /// from then on, changed or not. Other clients' writes appear after the watch delivers
    /// them (about half a millisecond on loopback), and every watched range is relisted each
    /// `ClientConfig::sync_interval` as a safety net.
    /// [`get_with_version`](Self::get_with_version) always reads the store: its version feeds
    /// [`compare_and_set`](Self::compare_and_set).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> coord::Result<()> {
    /// use std::time::Duration;
    /// let coord = coord::Coord::in_memory();
    /// let config = coord.config().with_cache(Duration::from_secs(5));
    /// config.set("/config/app/replicas", &3u32).await?;
    /// assert_eq!(config.get::<u32>("/config/app/replicas").await?, 3); // reads, starts watching
    /// let before = coord.store().stats().round_trips();
    /// assert_eq!(config.get::<u32>("/config/app/replicas").await?, 3); // from the cache
    /// assert_eq!(coord.store().stats().round_trips(), before);
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn with_cache(&self, ttl: Duration) -> ConfigCenter {
        let cache = (!ttl.is_zero()).then(|| {
            Arc::new(ReadCache::new(
                Arc::clone(&self.hub),
                self.store.clone(),
                ttl,
            ))
        });
        ConfigCenter {
            cache,
            ..self.clone()
        }
    }

    /// This center keeping the newest `count` release records per prefix (default 100; at
    /// least 1: the latest is never trimmed). Trimming happens in each release's own
    /// transaction.
    #[must_use]
    pub fn with_release_history(&self, count: usize) -> ConfigCenter {
        ConfigCenter {
            release_history: count.max(1),
            ..self.clone()
        }
    }

    /// Keys held by the read cache right now (0 without a cache).
    pub fn cached_keys(&self) -> usize {
        self.cache.as_ref().map_or(0, |cache| cache.len())
    }

    /// Reads and decodes a key (from the read cache if there is one; see
    /// [`with_cache`](Self::with_cache)).
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] if the key does not exist; [`Error::Decode`] naming the key if its
    /// value is not JSON of type `T`.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it only reads, so a dropped call leaves nothing behind.
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<T> {
        if let Some(cache) = &self.cache {
            crate::store::check_key("key", key, false)?;
            // A closed Coord's cache stopped following the store: never answer from it.
            if self.store.is_closed() {
                return Err(Error::Closed);
            }
            return match cache.get(key).await? {
                Some(value) => decode_stored(self.keys.load().as_deref(), key, &value),
                None => Err(Error::NotFound {
                    key: key.to_string(),
                }),
            };
        }
        self.get_with_version(key).await.map(|(value, _)| value)
    }

    /// Reads and decodes a key, with its version (mod_revision) for
    /// [`compare_and_set`](Self::compare_and_set). Always reads the store.
    ///
    /// # Errors
    ///
    /// As [`get`](Self::get).
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it only reads, so a dropped call leaves nothing behind.
    pub async fn get_with_version<T: DeserializeOwned>(&self, key: &str) -> Result<(T, i64)> {
        let (kv, _) = self.store.get(key).await?;
        let kv = kv.ok_or_else(|| Error::NotFound {
            key: key.to_string(),
        })?;
        let value = decode_stored(self.keys.load().as_deref(), &kv.key, &kv.value)?;
        Ok((value, kv.mod_revision))
    }

    /// The keys under a prefix, in key order.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it only reads, so a dropped call leaves nothing behind.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let response = self
            .store
            .range(
                &KeyRange::prefix(prefix),
                RangeOptions::default().keys_only(),
            )
            .await?;
        Ok(response.kvs.into_iter().map(|kv| kv.key).collect())
    }

    /// Writes a key; returns its new version.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] if the value does not serialize or is too large for etcd.
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe: once the request is sent, a dropped call may or may not have written
    /// (read the key to know). It never leaves half a write.
    pub async fn set<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<i64> {
        refuse_reserved("key", key)?;
        let bytes = encode(key, value)?;
        Ok(self.store.put(key, bytes, 0).await?.revision)
    }

    /// Deletes a key; returns whether it existed.
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe: once the request is sent, a dropped call may or may not have written
    /// (read the key to know). It never leaves half a write.
    pub async fn delete(&self, key: &str) -> Result<bool> {
        refuse_reserved("key", key)?;
        let response = self.store.delete(&KeyRange::key(key)).await?;
        Ok(response.deleted > 0)
    }

    /// Writes a key only if its version is still `expected_version` (0 = only if it does not
    /// exist); returns the new version.
    ///
    /// # Errors
    ///
    /// [`Error::Conflict`] with the current version if someone else wrote first.
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe: once the request is sent, a dropped call may or may not have written
    /// (read the key to know). It never leaves half a write. Retry only after reading the key
    /// again: a repeat of a write that did apply is refused as a conflict.
    pub async fn compare_and_set<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        expected_version: i64,
    ) -> Result<i64> {
        self.batch()
            .expect_version(key, expected_version)
            .set(key, value)?
            .commit()
            .await
    }

    /// A multi-key atomic write.
    pub fn batch(&self) -> Batch {
        Batch {
            store: self.store.clone(),
            keys: self.keys.load_full(),
            guards: Vec::new(),
            ops: Vec::new(),
            maps: Vec::new(),
        }
    }

    /// Writes every field of a [`CoordConfig`] value under its prefix in one transaction, so a
    /// `Live<T>` never sees half of it. Returns the revision of the write.
    ///
    /// The value is first checked as a `Live<T>` bind would check it: every field is encoded,
    /// the encoded keys are built back into a `T` with [`CoordConfig::from_source`] (so each
    /// nested struct's `validate` runs, and defaults and secrets read as on bind), and `T`'s
    /// own `validate` runs. If any step fails nothing is written: a value that running
    /// instances would refuse, and that new instances could not bind, never reaches the store.
    /// A `None` in an `Option` field is written as JSON `null`, which reads back as `None`.
    /// Keys under the prefix that `T` does not have are left alone, except under a map field:
    /// a `#[coord(map)]` field is written whole, so stored entries the value does not have are
    /// deleted in the same transaction (a guard over the map's keys retries the publish if
    /// an entry is written meanwhile, so none is left behind unseen). A map too large for
    /// one transaction (128 operations) is changed entry by entry with `set` and `delete`.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] naming the full key (a field that does not encode, or whose JSON does
    /// not decode back) or the prefix of the struct whose `validate` failed, with the reason;
    /// [`Error::InvalidArgument`] if `T` has no prefix (use [`publish_at`](Self::publish_at)),
    /// if the struct has more than 128 keys, or a value is too large.
    ///
    /// # Cancel safety
    ///
    /// As [`Batch::commit`]: dropping the future may or may not leave the whole struct
    /// written, never part of it.
    pub async fn publish<T: HasPrefix>(&self, value: &T) -> Result<i64> {
        self.publish_at(prefix_of::<T>("publish_at")?, value).await
    }

    /// [`publish`](Self::publish) under an explicit prefix.
    ///
    /// # Errors
    ///
    /// As [`publish`](Self::publish).
    ///
    /// # Cancel safety
    ///
    /// As [`publish`](Self::publish).
    pub async fn publish_at<T: CoordConfig>(&self, prefix: &str, value: &T) -> Result<i64> {
        let span = tracing::debug_span!("config.publish", key = prefix);
        let release = self.publish_release(prefix, value).commit();
        Ok(release.instrument(span).await?.revision)
    }

    /// Writes the default of every field of `T` whose key does not exist yet, in one
    /// transaction; existing keys are left alone, and so is a field whose value is still
    /// stored under one of its aliases. Returns the keys written.
    ///
    /// # Cancel safety
    ///
    /// As [`seed_defaults_at`](Self::seed_defaults_at).
    pub async fn seed_defaults<T: HasPrefix>(&self) -> Result<Vec<String>> {
        let prefix = prefix_of::<T>("seed_defaults_at")?;
        self.seed_defaults_at::<T>(prefix).await
    }

    /// [`seed_defaults`](Self::seed_defaults) under an explicit prefix.
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe: a dropped call may or may not have written its one transaction, never
    /// part of it. Calling it again is safe: it writes only what is still missing.
    pub async fn seed_defaults_at<T: CoordConfig>(&self, prefix: &str) -> Result<Vec<String>> {
        let prefix = prefix.trim_end_matches('/');
        loop {
            let existing = self.list(&format!("{prefix}/")).await?;
            let mut batch = self.batch();
            let mut written = Vec::new();
            for field in T::fields() {
                let Some(default) = field.default else {
                    continue;
                };
                let key = format!("{prefix}/{}", field.key);
                // A value under an alias is the field's value until it is moved; a default
                // under the key would shadow it.
                let stored = std::iter::once(&field.key)
                    .chain(&field.aliases)
                    .any(|key| existing.contains(&format!("{prefix}/{key}")));
                if stored {
                    continue;
                }
                batch = batch.expect_version(&key, 0).set(&key, &default)?;
                written.push(key);
            }
            if written.is_empty() {
                return Ok(written);
            }
            match batch.commit().await {
                Ok(_) => return Ok(written),
                // Someone created one of the keys since we listed: look again.
                Err(Error::Conflict { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Watches one key for changes made after this call returns.
    ///
    /// # Errors
    ///
    /// Store errors from the first read, which fixes the revision the watch starts after.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a dropped call leaves no watcher behind.
    pub async fn watch<T: DeserializeOwned + Send + 'static>(
        &self,
        key: &str,
    ) -> Result<Watcher<T>> {
        let watch = ResilientWatch::new(self.store.clone(), KeyRange::key(key));
        Watcher::start(watch, Arc::clone(&self.keys)).await
    }

    /// Watches every key under a prefix for changes made after this call returns.
    ///
    /// # Errors
    ///
    /// As [`watch`](Self::watch).
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a dropped call leaves no watcher behind.
    pub async fn watch_prefix<T: DeserializeOwned + Send + 'static>(
        &self,
        prefix: &str,
    ) -> Result<Watcher<T>> {
        Watcher::start(
            ResilientWatch::new(self.store.clone(), KeyRange::prefix(prefix)),
            Arc::clone(&self.keys),
        )
        .await
    }
}

/// A multi-key atomic write: every `set` and `delete` happens in one revision, or none does if
/// a version guard fails. At most 128 operations (etcd's limit).
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> coord::Result<()> {
/// let coord = coord::Coord::in_memory();
/// let revision = coord.config().batch()
///     .set("/config/db/primary", "db-2:5432")?
///     .set("/config/db/replica", "db-1:5432")?
///     .delete("/config/db/failover_in_progress")
///     .commit()
///     .await?;
/// assert!(revision > 0);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
#[must_use = "a batch does nothing until committed"]
pub struct Batch {
    store: Store,
    /// The key ring its typed publishes seal secret fields with.
    keys: Option<Arc<KeyRing>>,
    guards: Vec<(String, i64)>,
    ops: Vec<TxnOp>,
    /// Map fields published whole: their stored entries that are not written are deleted.
    maps: Vec<MapReplace>,
}

/// A published map field: every entry under `under` whose name is not in `keep` goes.
#[derive(Debug)]
pub(crate) struct MapReplace {
    /// `{prefix}/{key}/`.
    pub(crate) under: String,
    layout: Layout,
    keep: BTreeSet<String>,
}

impl MapReplace {
    /// True if the stored (full) key belongs to an entry the published map does not have.
    pub(crate) fn gone(&self, key: &str) -> bool {
        key.strip_prefix(self.under.as_str())
            .and_then(|rest| self.layout.entry_name(rest))
            .is_some_and(|name| !self.keep.contains(name))
    }
}

/// The map fields of `T` published as `values` (full keys): what each keeps.
pub(crate) fn map_replacements<T: CoordConfig>(
    prefix: &str,
    values: &BTreeMap<String, Vec<u8>>,
) -> Vec<MapReplace> {
    let mut maps = Vec::new();
    for field in T::fields() {
        let Some(layout) = field.kind.layout() else {
            continue;
        };
        let under = format!("{prefix}/{}/", field.key);
        let written = values
            .range(under.clone()..)
            .map(|(key, _)| key)
            .take_while(|key| key.starts_with(&under))
            .map(|key| &key[under.len()..]);
        let keep = names_of(written, layout);
        maps.push(MapReplace {
            under,
            layout,
            keep,
        });
    }
    maps
}

impl Batch {
    /// Writes `key`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] if the value does not serialize.
    pub fn set<T: Serialize + ?Sized>(mut self, key: &str, value: &T) -> Result<Self> {
        self.ops.push(TxnOp::put(key, encode(key, value)?));
        Ok(self)
    }

    /// Deletes `key` (nothing happens if it does not exist).
    pub fn delete(mut self, key: &str) -> Self {
        self.ops.push(TxnOp::delete(key));
        self
    }

    /// Commits only if `key` is at `version` (its mod_revision; 0 = it must not exist).
    pub fn expect_version(mut self, key: &str, version: i64) -> Self {
        self.guards.push((key.to_string(), version));
        self
    }

    /// Writes every field of a [`CoordConfig`] value under its `#[coord(prefix)]`, with the
    /// checks of [`ConfigCenter::publish`]: the value is refused here, before anything is
    /// sent, if it would not bind. Several structs in one batch are published atomically.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] as [`ConfigCenter::publish`]; [`Error::InvalidArgument`] if `T` has
    /// no prefix (use [`publish_at`](Self::publish_at)). The batch is consumed either way, so
    /// a refused value cannot be committed by mistake.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> coord::Result<()> {
    /// #[derive(coord::CoordConfig)]
    /// #[coord(prefix = "/config/db", validate = "has_host")]
    /// struct Db {
    ///     host: String,
    /// }
    ///
    /// fn has_host(db: &Db) -> Result<(), String> {
    ///     if db.host.is_empty() {
    ///         return Err("host must not be empty".into());
    ///     }
    ///     Ok(())
    /// }
    ///
    /// let coord = coord::Coord::in_memory();
    /// coord.config().batch()
    ///     .publish(&Db { host: "db-2:5432".into() })?
    ///     .set("/config/checkout/db_name", "db-2")?
    ///     .commit()
    ///     .await?;
    ///
    /// let refused = coord.config().batch().publish(&Db { host: String::new() });
    /// assert!(matches!(refused, Err(coord::Error::Invalid { .. })));
    /// # Ok(())
    /// # }
    /// ```
    pub fn publish<T: HasPrefix>(self, value: &T) -> Result<Self> {
        self.publish_at(prefix_of::<T>("publish_at")?, value)
    }

    /// [`publish`](Self::publish) under an explicit prefix.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] as [`ConfigCenter::publish`].
    pub fn publish_at<T: CoordConfig>(mut self, prefix: &str, value: &T) -> Result<Self> {
        let prefix = prefix.trim_end_matches('/');
        let values = checked_values(prefix, value, self.keys.as_deref())?;
        self.maps.extend(map_replacements::<T>(prefix, &values));
        self.ops.extend(
            values
                .into_iter()
                .map(|(key, bytes)| TxnOp::put(key, bytes)),
        );
        Ok(self)
    }

    /// Runs the batch; returns the revision it was written at.
    ///
    /// # Errors
    ///
    /// [`Error::Conflict`] naming the first guarded key that moved, with its current version;
    /// [`Error::InvalidArgument`] for more than 128 operations or a request over 1.5 MiB.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before it completes leaves the batch either applied or not, and
    /// there is no telling which: the transaction may already be on its way to etcd. It is
    /// never half-applied, since etcd applies a transaction whole. To learn the outcome, read
    /// the keys back (or guard the batch with [`expect_version`](Self::expect_version) and
    /// retry, which then fails with [`Error::Conflict`] if the first attempt went through).
    pub async fn commit(self) -> Result<i64> {
        // Other writers of a published map can keep it moving; give up after a few reads.
        const MAP_READS: usize = 8;
        for op in &self.ops {
            refuse_reserved("key", op.key())?;
        }
        for (key, _) in &self.guards {
            refuse_reserved("key", key)?;
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (map_guards, deletes, read) = self.map_changes().await?;
            let compares = self
                .guards
                .iter()
                .map(|(key, version)| Compare::mod_revision(key.as_str(), *version))
                .chain(map_guards);
            // On failure, read the guarded keys back to say which one moved.
            let reads = self.guards.iter().map(|(key, _)| TxnOp::get(key.as_str()));
            let ops = self.ops.iter().cloned().chain(deletes);
            let txn = Txn::new().when(compares).and_then(ops).or_else(reads);
            let response = self.store.txn(txn).await?;
            if response.succeeded {
                return Ok(response.revision);
            }
            for ((key, expected), read) in self.guards.iter().zip(&response.responses) {
                let current = match read {
                    TxnOpResponse::Get(get) => get.kvs.first().map_or(0, |kv| kv.mod_revision),
                    _ => continue,
                };
                if current != *expected {
                    return Err(Error::Conflict {
                        key: key.clone(),
                        expected: *expected,
                        current,
                    });
                }
            }
            if let Some(map) = self.maps.first() {
                if attempt < MAP_READS {
                    // An entry of a published map was written since it was read: read again,
                    // so the publish still replaces the whole map.
                    tracing::debug!(attempt, "a published map changed under the batch; retrying");
                    continue;
                }
                return Err(Error::Conflict {
                    key: map.under.clone(),
                    expected: read,
                    current: response.revision,
                });
            }
            // Every guard matched on re-read: the key moved and moved back between compare
            // and read; report the first guard as the conflict.
            let (key, expected) = self.guards.first().cloned().unwrap_or_default();
            return Err(Error::Conflict {
                key,
                expected,
                current: expected,
            });
        }
    }

    /// For each published map: the stored entries the value does not have, as deletes, and
    /// a guard that fails if anything under the map moved since they were read.
    /// Also the revision of the oldest read (0 without maps).
    async fn map_changes(&self) -> Result<(Vec<Compare>, Vec<TxnOp>, i64)> {
        let mut guards = Vec::new();
        let mut deletes = Vec::new();
        let mut read = 0;
        for map in &self.maps {
            let stored = self
                .store
                .range(
                    &KeyRange::prefix(map.under.as_str()),
                    RangeOptions::default().keys_only(),
                )
                .await?;
            for kv in &stored.kvs {
                if map.gone(&kv.key) {
                    deletes.push(TxnOp::delete(kv.key.as_str()));
                }
            }
            if read == 0 {
                read = stored.revision;
            }
            let unchanged_since_read = stored.revision.saturating_add(1);
            guards.push(
                Compare::new(
                    map.under.as_str(),
                    CompareOp::Less,
                    CompareTarget::ModRevision(unchanged_since_read),
                )
                .over_prefix(),
            );
        }
        Ok((guards, deletes, read))
    }
}

/// A change to a watched config key.
#[derive(Clone, Debug, PartialEq)]
pub enum ConfigEvent<T> {
    /// The key was written.
    Put {
        /// The key.
        key: String,
        /// The decoded value.
        value: T,
        /// The revision of the write (the key's new version).
        revision: i64,
    },
    /// The key was deleted.
    Delete {
        /// The key.
        key: String,
        /// The revision of the delete.
        revision: i64,
    },
}

impl<T> ConfigEvent<T> {
    /// The key of the event.
    pub fn key(&self) -> &str {
        match self {
            ConfigEvent::Put { key, .. } | ConfigEvent::Delete { key, .. } => key,
        }
    }

    /// The revision of the event.
    pub fn revision(&self) -> i64 {
        match self {
            ConfigEvent::Put { revision, .. } | ConfigEvent::Delete { revision, .. } => *revision,
        }
    }
}

/// A typed watch: a `Stream` of [`ConfigEvent`]s for changes made after it started.
///
/// It rides on [`ResilientWatch`], so it survives etcd restarts and compaction: after a
/// compaction the changes missed are delivered as puts and deletes of the difference. A value
/// that does not decode is an `Err(Error::Decode)` item naming the key, and the stream goes on;
/// so are connection errors while it reconnects. It ends only after [`close`](Self::close), or
/// after yielding [`Error::Closed`] once its `Coord` is closed.
pub struct Watcher<T> {
    stream: Pin<Box<dyn Stream<Item = Result<ConfigEvent<T>>> + Send>>,
    closed: bool,
}

impl<T> std::fmt::Debug for Watcher<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher")
            .field("closed", &self.closed)
            .finish()
    }
}

impl<T: DeserializeOwned + Send + 'static> Watcher<T> {
    /// Reads the current state (the revision to start after), then streams changes.
    async fn start(mut watch: ResilientWatch, keys: Arc<ArcSwapOption<KeyRing>>) -> Result<Self> {
        watch.next().await?;
        let stream = futures::stream::unfold(
            (watch, std::collections::VecDeque::new(), false, keys),
            |(mut watch, mut pending, mut closed, keys)| async move {
                loop {
                    if let Some(item) = pending.pop_front() {
                        return Some((item, (watch, pending, closed, keys)));
                    }
                    if closed {
                        return None;
                    }
                    match watch.next().await {
                        Ok(WatchEvent::Init { .. } | WatchEvent::Progress { .. }) => {}
                        Ok(
                            WatchEvent::Events { events, .. } | WatchEvent::Resync { events, .. },
                        ) => {
                            pending.extend(events.into_iter().map(|event| {
                                match event.kind {
                                    EventKind::Put => decode_stored(
                                        keys.load().as_deref(),
                                        &event.kv.key,
                                        &event.kv.value,
                                    )
                                    .map(|value| ConfigEvent::Put {
                                        revision: event.kv.mod_revision,
                                        key: event.kv.key,
                                        value,
                                    }),
                                    EventKind::Delete => Ok(ConfigEvent::Delete {
                                        key: event.kv.key,
                                        revision: event.kv.mod_revision,
                                    }),
                                }
                            }));
                        }
                        // The Coord was closed: say so once, then end.
                        Err(Error::Closed) => {
                            closed = true;
                            pending.push_back(Err(Error::Closed));
                        }
                        Err(e) => pending.push_back(Err(e)),
                    }
                }
            },
        );
        Ok(Watcher {
            stream: Box::pin(stream),
            closed: false,
        })
    }

    /// Stops the watch: the stream ends and the store watch is released.
    pub fn close(&mut self) {
        self.closed = true;
        self.stream = Box::pin(futures::stream::empty());
    }
}

impl<T> Stream for Watcher<T> {
    type Item = Result<ConfigEvent<T>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.closed {
            return Poll::Ready(None);
        }
        self.stream.as_mut().poll_next(cx)
    }
}

/// `value`'s keys under `prefix` and the bytes to write to each, once the bytes are known to
/// build back into a valid `T` (the same `from_source` a `Live<T>` bind runs). With a key
/// ring, the value of each `#[coord(secret)]` field is sealed for its key (see
/// [`crate::keyring`]): what is written, and so every release record of it, holds only the
/// envelope.
pub(crate) fn checked_values<T: CoordConfig>(
    prefix: &str,
    value: &T,
    keys: Option<&KeyRing>,
) -> Result<BTreeMap<String, Vec<u8>>> {
    let full_key = |key: &str| format!("{prefix}/{key}");
    let values = value.to_values().map_err(|e| match e {
        // `to_values` names keys relative to the struct.
        Error::Invalid { key, reason } => Error::Invalid {
            key: full_key(&key),
            reason,
        },
        other => other,
    })?;
    let fields = if keys.is_some() {
        T::fields()
    } else {
        Vec::new()
    };
    let mut encoded = BTreeMap::new();
    for (relative, json) in values {
        let key = full_key(&relative);
        let mut bytes = encode(&key, &json)?;
        if let Some(keys) = keys.filter(|_| is_secret_key(&fields, &relative)) {
            bytes = keys.seal(&key, &zeroize::Zeroizing::new(bytes))?;
        }
        encoded.insert(key, bytes);
    }
    match T::from_source(&Source::new(prefix, &encoded).with_keys(keys)) {
        Ok(_) => Ok(encoded),
        // The JSON `T` wrote is not JSON `T` reads (a custom `Serialize` and `Deserialize`
        // that disagree): stored, it would fail every bind.
        Err(Error::Decode { key, source }) => Err(Error::Invalid {
            key,
            reason: format!("the published value does not read back: {source}"),
        }),
        Err(e) => Err(e),
    }
}

fn encode<T: Serialize + ?Sized>(key: &str, value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value)
        .map_err(|e| Error::invalid_argument(key, format!("cannot encode: {e}")))
}
