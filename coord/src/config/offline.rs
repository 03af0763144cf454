//! Offline start: each bound prefix's last good raw values, kept on disk.
//!
//! With [`ClientConfig::snapshot_dir`](crate::ClientConfig::snapshot_dir) set, a
//! [`Live`](crate::Live) handle hands the raw values it last built a good value from to its
//! `Coord`'s [`SnapshotDir`], which keeps one file per prefix and cluster. When etcd cannot be
//! reached as a prefix is bound, the prefix's watch starts from that file instead of failing
//! (marked stale), and follows etcd once it answers.
//!
//! # What it promises
//!
//! - **Each cluster its own snapshots.** Processes of different etcd clusters (prod and
//!   staging) may share one directory: a process only ever starts from a snapshot of its own
//!   cluster, as far as it can tell (see [Which cluster](#which-cluster)).
//! - **Never a torn file.** A snapshot is written to a temporary file in the same directory,
//!   flushed to disk, renamed over the previous one, and the directory is flushed: a crash
//!   leaves the old file or the new one, never a mix.
//! - **Never trusted blindly.** A file is used only if it parses, carries the format marker
//!   and a version this code reads, names the cluster key and the prefix asked for, was saved
//!   from the cluster etcd now answers for (when that is known), holds only keys under that
//!   prefix, and its checksum matches its contents. Anything else (truncated, corrupt, another
//!   prefix's or cluster's file, a file of some other program) is ignored with a warning.
//! - **Off the reload path.** [`SnapshotDir::save`] only records the values (O(1) but for a
//!   map lookup) and the writing happens on the blocking pool; saves that come while a write
//!   is under way are coalesced into one write of the newest values.
//! - **A failed save is not silent.** A write that fails (the directory was removed and a file
//!   put in its place, the disk is full or read-only) is logged, listed in `Coord::health`'s
//!   `failing_writes` under the file's path until a write of that file succeeds, counted in
//!   `coord_snapshot_save_failures_total`, and retried with backoff (0.5 s doubling to 30 s,
//!   the newest values each time) until it succeeds or the `Coord` is closed or dropped.
//! - **Written when the value moves.** A handle saves when it applies a new value (and once
//!   after a reconnect), not on every wake; saves of a revision older than the one already
//!   saved, or of the very values already saved, are dropped, so a thousand handles on one
//!   prefix write its file once per change.
//! - **Nothing without a directory.** A `Coord` without `snapshot_dir` has no `SnapshotDir`:
//!   no file, no task, no memory per handle.
//! - **Private.** The files hold config values as stored, secrets included (base64 is not
//!   encryption), and a process trusts them when etcd is down. So the directory is created
//!   mode 0700 and every file 0600 (the temporary file is created with that mode before a
//!   byte is written, and the rename replaces a file of an older coord, 0644, with it). A
//!   directory that is not this user's, that group or others may write, that is not a
//!   directory or that cannot be written is refused by [`SnapshotDir::open`], which
//!   `Coord::connect` calls: the user learns it at start, not during an outage.
//!
//! # Which cluster
//!
//! etcd gives every cluster an ID (in every response header; a cluster rebuilt from scratch
//! gets a new one), but an offline start is exactly when it cannot be asked. So a file is
//! found by what is known offline, the **cluster key**: the configured
//! [`ClientConfig::cluster_name`](crate::ClientConfig::cluster_name) if there is one, else the
//! endpoints (trimmed, lower-cased, without a trailing `/`, sorted and deduplicated, so their
//! order does not matter). The key is part of the file name and recorded inside, and so is the
//! cluster ID the values were read from. Then:
//!
//! - **At an offline start** the file of this cluster key is used. Two clusters with
//!   different endpoints (or names) never see each other's files. What cannot be told apart
//!   offline is a *different* cluster under the *same* key (an etcd rebuilt behind the same
//!   endpoints, two environments given one `cluster_name` or reached through one
//!   port-forward address): its snapshot is served, stale, until etcd answers.
//! - **Once etcd has answered** (at connect, or any status request since, which the snapshot
//!   writer makes itself if needed), its cluster ID is known: a file recorded from another
//!   cluster is ignored with a warning (a handle bound during a later outage fails as without a
//!   snapshot rather than serving another cluster's values), and the next save replaces it,
//!   whatever its revision.
//! - **A save waits for the cluster ID**: after an offline start, the first save asks etcd for
//!   its status before writing, so every file names the cluster its values came from.
//!
//! Endpoints-keying costs an offline start after the endpoints change (a member added): the
//! files of the old list are not found until a connected run saves new ones. Set
//! `cluster_name` to keep them across such changes.
//!
//! # The file
//!
//! One JSON object per file, named after the prefix and the cluster key (a readable part of
//! the prefix, then a hash of the cluster key and one of the prefix, so any prefix makes a
//! safe, unique file name; both are inside and checked):
//!
//! ```json
//! { "format": "coord-live-snapshot", "version": 2, "cluster": "endpoints http://10.0.0.1:2379",
//!   "cluster_id": "cdf818194e3a8c32", "prefix": "/config/checkout", "revision": 42,
//!   "checksum": "9c1d…", "values": { "/config/checkout/timeout_secs": "NDU=" } }
//! ```
//!
//! Values are the raw stored bytes in standard base64; the checksum is FNV-1a (64 bits) over
//! the cluster key, the cluster ID, the prefix, the revision and every key and value, in key
//! order, each length-prefixed.
//!
//! Version 1 files (written by coord before clusters were told apart) do not say which
//! cluster they came from, so they are not migrated: trusting them is the very mix-up
//! version 2 prevents. They have other names (one hash, not two), so they are never read;
//! [`SnapshotDir::open`] warns once if the directory holds any, saying they can be deleted. The
//! first offline start after the upgrade has no snapshot until a connected run saved one.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::config::raw::{RawValue, RawValues};
use crate::error::{Error, Result};
use crate::health::{FailingWrites, SNAPSHOT_SAVE};
use crate::store::Store;
use crate::sync::lock;

/// The configuration field a refused directory is reported under.
const FIELD: &str = "snapshot_dir";

/// The first wait before a failed save is tried again; it doubles up to [`RETRY_MAX`].
const RETRY_FIRST: std::time::Duration = std::time::Duration::from_millis(500);
const RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(30);

/// The `format` of every snapshot file: a file without it is not one of ours.
const FORMAT: &str = "coord-live-snapshot";
/// The layout this code writes and reads: 2 records the cluster (1 did not).
const VERSION: u32 = 2;

/// A prefix's values as read back from its file.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct DiskSnapshot {
    /// The store revision the values were current at when saved.
    pub revision: i64,
    /// Full key → raw value.
    pub values: RawValues,
    /// The etcd cluster ID the values were read from.
    pub cluster_id: u64,
}

/// Why a snapshot file was not used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Unusable {
    #[error("not JSON, or cut short: {0}")]
    Json(#[from] serde_json::Error),
    #[error("not a coord snapshot (format `{0}`)")]
    Format(String),
    #[error("snapshot format version {0}, this coord reads {VERSION}")]
    Version(u32),
    #[error("holds the prefix `{found}`, not `{expected}`")]
    Prefix { expected: String, found: String },
    #[error("holds the snapshot of cluster key `{found}`, not `{expected}`")]
    Cluster { expected: String, found: String },
    #[error(
        "saved from etcd cluster {file:x}, but the endpoints answer for cluster {live:x}: \
         another cluster's values (an etcd rebuilt behind the same endpoints, or two clusters \
         under one cluster_name); replaced at the next save"
    )]
    OtherCluster { file: u64, live: u64 },
    #[error("the cluster ID `{0}` is not 16 hex digits")]
    ClusterId(String),
    #[error("holds `{0}`, which is not under its prefix")]
    ForeignKey(String),
    #[error("the value of `{key}` is not base64: {source}")]
    Value {
        key: String,
        source: base64::DecodeError,
    },
    #[error("checksum mismatch: the file is corrupt")]
    Checksum,
}

/// The file as stored.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    format: String,
    version: u32,
    cluster: String,
    cluster_id: String,
    prefix: String,
    revision: i64,
    checksum: String,
    values: BTreeMap<String, String>,
}

/// Whose snapshot a file is: the cluster key it is found by, and the etcd cluster ID its
/// values were read from.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Origin<'a> {
    pub cluster: &'a str,
    pub cluster_id: u64,
}

/// The file's bytes for `prefix`'s `values` at `revision`, read from `origin`.
pub(crate) fn encode(
    origin: Origin<'_>,
    prefix: &str,
    revision: i64,
    values: &RawValues,
) -> Vec<u8> {
    let base64 = base64::engine::general_purpose::STANDARD;
    let file = File {
        format: FORMAT.to_owned(),
        version: VERSION,
        cluster: origin.cluster.to_owned(),
        cluster_id: format!("{:016x}", origin.cluster_id),
        prefix: prefix.to_owned(),
        revision,
        checksum: format!(
            "{:016x}",
            checksum(
                origin,
                prefix,
                revision,
                values.iter().map(|(k, v)| (k, &v[..]))
            )
        ),
        values: values
            .iter()
            .map(|(key, value)| (key.clone(), base64.encode(&value[..])))
            .collect(),
    };
    // A struct of strings, integers and a string map always serializes.
    serde_json::to_vec(&file).unwrap_or_default()
}

/// Reads back a file written by [`encode`] for `prefix` under the cluster key `cluster`;
/// rejects anything else, and a file saved from another cluster than `live` (the cluster etcd
/// answers for, if known).
pub(crate) fn decode(
    cluster: &str,
    live: Option<u64>,
    prefix: &str,
    bytes: &[u8],
) -> Result<DiskSnapshot, Unusable> {
    // The marker first, from a loose parse: a file of another program says so rather than
    // "missing field".
    #[derive(Deserialize)]
    struct Marker {
        format: Option<String>,
        version: Option<u32>,
    }
    let marker: Marker = serde_json::from_slice(bytes)?;
    match marker.format.as_deref() {
        Some(FORMAT) => {}
        other => return Err(Unusable::Format(other.unwrap_or("none").to_owned())),
    }
    if let Some(version) = marker.version.filter(|v| *v != VERSION) {
        return Err(Unusable::Version(version));
    }
    let file: File = serde_json::from_slice(bytes)?;
    if file.cluster != cluster {
        return Err(Unusable::Cluster {
            expected: cluster.to_owned(),
            found: file.cluster,
        });
    }
    if file.prefix != prefix {
        return Err(Unusable::Prefix {
            expected: prefix.to_owned(),
            found: file.prefix,
        });
    }
    let cluster_id = match u64::from_str_radix(&file.cluster_id, 16) {
        Ok(id) if file.cluster_id.len() == 16 => id,
        _ => return Err(Unusable::ClusterId(file.cluster_id)),
    };
    let under = format!("{prefix}/");
    let base64 = base64::engine::general_purpose::STANDARD;
    let mut values = BTreeMap::new();
    for (key, text) in file.values {
        if !key.starts_with(&under) {
            return Err(Unusable::ForeignKey(key));
        }
        let value = base64
            .decode(text.as_bytes())
            .map_err(|source| Unusable::Value {
                key: key.clone(),
                source,
            })?;
        values.insert(key, value);
    }
    let origin = Origin {
        cluster,
        cluster_id,
    };
    let sum = checksum(
        origin,
        prefix,
        file.revision,
        values.iter().map(|(k, v)| (k, &v[..])),
    );
    if format!("{sum:016x}") != file.checksum {
        return Err(Unusable::Checksum);
    }
    // After the checksum: a corrupt ID is corruption, not another cluster.
    if let Some(live) = live.filter(|live| *live != cluster_id) {
        return Err(Unusable::OtherCluster {
            file: cluster_id,
            live,
        });
    }
    Ok(DiskSnapshot {
        cluster_id,
        revision: file.revision,
        values: values
            .into_iter()
            // The file keeps no mod revisions: 0 says unknown until the store is read.
            .map(|(key, value)| (key, RawValue::new(value, 0)))
            .collect(),
    })
}

/// FNV-1a, 64 bits: stable across builds and platforms (std's hasher is not), and enough to
/// catch a flipped byte or a value cut short. Every field is length-prefixed, so moving
/// bytes from one field to the next changes the sum.
fn checksum<'a>(
    origin: Origin<'_>,
    prefix: &str,
    revision: i64,
    values: impl Iterator<Item = (&'a String, &'a [u8])>,
) -> u64 {
    let mut hash = Fnv::default();
    hash.field(origin.cluster.as_bytes());
    hash.field(&origin.cluster_id.to_le_bytes());
    hash.field(prefix.as_bytes());
    hash.field(&revision.to_le_bytes());
    for (key, value) in values {
        hash.field(key.as_bytes());
        hash.field(value);
    }
    hash.0
}

struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn bytes(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn field(&mut self, bytes: &[u8]) {
        self.bytes(&(bytes.len() as u64).to_le_bytes());
        self.bytes(bytes);
    }
}

/// The cluster key snapshot files are found by (see [Which cluster](self#which-cluster)):
/// `name {cluster_name}` if one is configured, else `endpoints {e1},{e2}` with the endpoints
/// trimmed, lower-cased, without a trailing `/`, sorted and deduplicated.
pub(crate) fn cluster_key(cluster_name: Option<&str>, endpoints: &[String]) -> String {
    if let Some(name) = cluster_name {
        return format!("name {}", name.trim());
    }
    let mut endpoints: Vec<String> = endpoints
        .iter()
        .map(|e| e.trim().trim_end_matches('/').to_lowercase())
        .collect();
    endpoints.sort();
    endpoints.dedup();
    format!("endpoints {}", endpoints.join(","))
}

/// The file name of `prefix`'s snapshot under the cluster key `cluster`: the prefix's
/// letters, digits, `-`, `_` and `.` (others become `_`, at most 48 kept) for whoever lists
/// the directory, then a hash of the cluster key and one of the whole prefix (32 hex digits),
/// so two prefixes or clusters never share a name in practice (and if they did, the cluster
/// key and prefix inside tell).
pub(crate) fn file_name(cluster: &str, prefix: &str) -> String {
    let readable: String = prefix
        .trim_start_matches('/')
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .take(48)
        .collect();
    let mut of_cluster = Fnv::default();
    of_cluster.bytes(cluster.as_bytes());
    let mut of_prefix = Fnv::default();
    of_prefix.bytes(prefix.as_bytes());
    format!("{readable}-{:016x}{:016x}.json", of_cluster.0, of_prefix.0)
}

/// True for the name of a version 1 file: one 16-digit hash after the last `-`, where
/// version 2 names have 32.
fn is_v1_name(name: &str) -> bool {
    !name.starts_with('.')
        && name.strip_suffix(".json").is_some_and(|stem| {
            stem.rsplit_once('-').is_some_and(|(_, hash)| {
                hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit())
            })
        })
}

/// The snapshot files of one `Coord`: where they live, and the saves not written yet. See the
/// [module docs](self).
#[derive(Debug)]
pub(crate) struct SnapshotDir {
    dir: PathBuf,
    /// The cluster key files are found by.
    cluster: String,
    /// A handle on the `Coord`'s store, to learn the cluster ID (once [`attach`](Self::attach)ed).
    store: Option<Store>,
    prefixes: Mutex<HashMap<String, Slot>>,
    /// Where failed saves are reported (the `Coord`'s, once [`attach`](Self::attach)ed).
    failures: Arc<FailingWrites>,
    /// Set at `Coord::close`: failed saves are no longer retried.
    closed: std::sync::atomic::AtomicBool,
}

/// What one prefix's file holds or is about to.
#[derive(Debug, Default)]
struct Slot {
    /// The newest values handed to the writer (or read from the file).
    saved: Option<Saved>,
    /// The cluster ID of the file on disk, as last read or written.
    on_disk: Option<u64>,
    /// Values waiting for the writer.
    pending: Option<(i64, RawValues)>,
    /// True while a task writes this prefix's file, or waits to retry a failed write.
    writing: bool,
}

/// Values handed to the writer or read from the file.
#[derive(Debug)]
struct Saved {
    revision: i64,
    values: RawValues,
    /// The cluster they came from, if known when they were handed in.
    cluster_id: Option<u64>,
}

/// Tells temporary files of one process apart (two `Coord`s may share a directory).
static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

impl SnapshotDir {
    /// The snapshot directory `dir`, created (mode 0700, its missing parents as the umask
    /// says) if it does not exist, and checked: it must be a directory, owned by this
    /// process's effective user, not writable by group or others, and writable by us (a file
    /// is created and removed to prove it). One readable by group or others is used, with a
    /// warning: the files in it are 0600 from their next save, but their names (the bound
    /// prefixes) can be listed. Blocking: call it on the blocking pool.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] naming `snapshot_dir`, the directory, what is wrong and what
    /// to do (`chmod 700 DIR`).
    ///
    /// Files are found by the cluster key `cluster` ([`cluster_key`]). Version 1 files in the
    /// directory are reported once, with a warning: they are never read.
    pub fn open(dir: PathBuf, cluster: String) -> Result<Self> {
        create_private_dir(&dir).map_err(|e| {
            refused(
                &dir,
                format!("cannot be created: {e}; create it (mode 0700) or choose another"),
            )
        })?;
        let metadata =
            std::fs::metadata(&dir).map_err(|e| refused(&dir, format!("cannot be read: {e}")))?;
        if !metadata.is_dir() {
            return Err(refused(
                &dir,
                "is not a directory; remove it or choose another path".to_owned(),
            ));
        }
        check_private(&dir, &metadata)?;
        probe_write(&dir).map_err(|e| {
            refused(
                &dir,
                format!(
                    "cannot be written: {e}; run `chmod 700 {}`, or choose a directory on a \
                     writable file system",
                    dir.display()
                ),
            )
        })?;
        let _ = warn_of_v1_files(&dir);
        Ok(SnapshotDir {
            dir,
            cluster,
            store: None,
            prefixes: Mutex::new(HashMap::new()),
            failures: Arc::default(),
            closed: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Learns the cluster ID through `store` (a handle of its own: its status requests are
    /// not the user's round trips) and reports failed saves to `failures` (the `Coord`'s,
    /// for `health()`).
    #[must_use]
    pub fn attach(mut self, store: &Store, failures: Arc<FailingWrites>) -> Self {
        self.store = Some(store.new_handle());
        self.failures = failures;
        self
    }

    /// Stops retrying failed saves (for `Coord::close`).
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        if let Some(store) = &self.store {
            store.close();
        }
    }

    /// The cluster etcd answers for, if it has answered a status request.
    fn cluster_id(&self) -> Option<u64> {
        self.store.as_ref()?.cluster_id()
    }

    /// The cluster ID, asking etcd for its status if it is not known yet.
    async fn learn_cluster_id(&self) -> Result<u64> {
        if let Some(id) = self.cluster_id() {
            return Ok(id);
        }
        let store = self.store.as_ref().ok_or_else(|| {
            Error::invalid_argument("snapshot_dir", "no store to learn the cluster ID from")
        })?;
        let span = tracing::debug_span!("snapshot.cluster_id");
        let status = tracing::Instrument::instrument(store.status(), span).await?;
        Ok(status.cluster_id)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// `prefix`'s snapshot, if its file exists and holds a good one; a bad file is logged and
    /// ignored. Reads on the blocking pool.
    pub async fn load(&self, prefix: &str) -> Option<DiskSnapshot> {
        let path = self.dir.join(file_name(&self.cluster, prefix));
        let read = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || std::fs::read(path)).await
        };
        let bytes = match read {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::debug!(prefix, path = %path.display(), "no snapshot to start from");
                return None;
            }
            Ok(Err(e)) => {
                tracing::warn!(prefix, path = %path.display(), error = %e, "snapshot unreadable; ignored");
                return None;
            }
            Err(e) => {
                tracing::warn!(prefix, error = %e, "snapshot read did not complete");
                return None;
            }
        };
        match decode(&self.cluster, self.cluster_id(), prefix, &bytes) {
            Ok(snapshot) => {
                // What the file holds is saved already: the same values need no new write.
                let mut prefixes = lock(&self.prefixes);
                let slot = prefixes.entry(prefix.to_owned()).or_default();
                slot.saved = Some(Saved {
                    revision: snapshot.revision,
                    values: snapshot.values.clone(),
                    cluster_id: Some(snapshot.cluster_id),
                });
                slot.on_disk = Some(snapshot.cluster_id);
                Some(snapshot)
            }
            Err(reason) => {
                tracing::warn!(prefix, path = %path.display(), %reason, "snapshot file ignored");
                None
            }
        }
    }

    /// Records `values` as `prefix`'s last good values at `revision`; a blocking task writes
    /// them soon. Dropped if the file already has (or is about to have) a newer revision or
    /// these very values of this cluster, unless `rebase`: the store's revisions restarted (a
    /// new etcd cluster) and this older revision is the newest there is. Values of another
    /// cluster than the saved ones are never dropped.
    pub fn save(self: &Arc<Self>, prefix: &str, revision: i64, values: &RawValues, rebase: bool) {
        let mut prefixes = lock(&self.prefixes);
        if !prefixes.contains_key(prefix) {
            prefixes.insert(prefix.to_owned(), Slot::default());
        }
        let Some(slot) = prefixes.get_mut(prefix) else {
            return;
        };
        let live = self.cluster_id();
        if let Some(saved) = &slot.saved {
            let other_cluster =
                matches!((saved.cluster_id, live), (Some(was), Some(is)) if was != is);
            let older = revision < saved.revision && !rebase && !other_cluster;
            // Handles sharing the prefix's snapshot hand in the same map; handles with a gray
            // release laid over build their own, equal one. Unknown clusters are not the same.
            let same = revision == saved.revision
                && live.is_some()
                && !other_cluster
                && (saved.values.ptr_eq(values) || saved.values == *values);
            if older || same {
                return;
            }
        }
        slot.saved = Some(Saved {
            revision,
            values: values.clone(),
            cluster_id: live,
        });
        slot.pending = Some((revision, values.clone()));
        if slot.writing {
            // The running write picks these up when it is done.
            return;
        }
        slot.writing = true;
        drop(prefixes);
        tokio::spawn(Self::write_loop(Arc::clone(self), prefix.to_owned()));
    }

    /// Writes `prefix`'s pending values on the blocking pool until none are left, once the
    /// cluster they came from is known; after a failed write, waits and tries the newest
    /// values again, until a write succeeds or the directory is closed or dropped (no `Coord`
    /// left to use it).
    async fn write_loop(dir: Arc<Self>, prefix: String) {
        let mut dir = dir;
        let mut backoff = RETRY_FIRST;
        loop {
            let drained = match dir.learn_cluster_id().await {
                Ok(cluster_id) => {
                    let dir = Arc::clone(&dir);
                    let prefix = prefix.clone();
                    tokio::task::spawn_blocking(move || dir.drain(&prefix, cluster_id)).await
                }
                Err(Error::Closed) => return dir.stop_writing(&prefix),
                Err(e) => {
                    let reason = format!(
                        "not saved before etcd says which cluster it is (its status request \
                         failed: {e})"
                    );
                    dir.save_failed(&prefix, &reason);
                    Ok(Drained::Failed)
                }
            };
            match drained {
                Ok(Drained::Done) => return,
                Ok(Drained::Failed) => {}
                // The runtime is shutting down: nobody is left to write for.
                Err(_) => return dir.stop_writing(&prefix),
            }
            // Held weakly while waiting, so a dropped `Coord` does not keep retrying.
            let weak = Arc::downgrade(&dir);
            drop(dir);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(RETRY_MAX);
            match weak.upgrade() {
                Some(alive) if !alive.closed.load(Ordering::Acquire) => dir = alive,
                Some(closed) => return closed.stop_writing(&prefix),
                None => return,
            }
        }
    }

    fn stop_writing(&self, prefix: &str) {
        if let Some(slot) = lock(&self.prefixes).get_mut(prefix) {
            slot.writing = false;
        }
    }

    /// Logs, reports and counts a failed save of `prefix`.
    fn save_failed(&self, prefix: &str, error: &dyn std::fmt::Display) {
        let target = self.dir.join(file_name(&self.cluster, prefix));
        let target = target.display().to_string();
        tracing::warn!(
            prefix,
            file = %target,
            error = %error,
            "snapshot not saved; an offline start would use an older one; retrying"
        );
        self.failures.failed(SNAPSHOT_SAVE, &target, error);
        crate::metrics::snapshot_save_failed(prefix);
    }

    /// Writes `prefix`'s pending values, read from cluster `cluster_id`, until none are left,
    /// or until a write fails: its values are then pending again (unless newer ones came
    /// meanwhile) for the retry.
    fn drain(&self, prefix: &str, cluster_id: u64) -> Drained {
        let name = file_name(&self.cluster, prefix);
        let target = self.dir.join(&name).display().to_string();
        let origin = Origin {
            cluster: &self.cluster,
            cluster_id,
        };
        loop {
            let pending = {
                let mut prefixes = lock(&self.prefixes);
                let Some(slot) = prefixes.get_mut(prefix) else {
                    return Drained::Done;
                };
                match slot.pending.take() {
                    Some(pending) => pending,
                    None => {
                        slot.writing = false;
                        return Drained::Done;
                    }
                }
            };
            let (revision, values) = pending;
            let bytes = encode(origin, prefix, revision, &values);
            match write_atomic(&self.dir, &name, &bytes) {
                Ok(()) => {
                    tracing::debug!(prefix, revision, "snapshot saved");
                    self.failures.cleared(SNAPSHOT_SAVE, &target);
                    let replaced = lock(&self.prefixes)
                        .get_mut(prefix)
                        .and_then(|slot| slot.on_disk.replace(cluster_id));
                    if let Some(other) = replaced.filter(|other| *other != cluster_id) {
                        tracing::warn!(
                            prefix,
                            file = %target,
                            was = format_args!("{other:x}"),
                            now = format_args!("{cluster_id:x}"),
                            "replaced a snapshot of another etcd cluster with this cluster's values"
                        );
                    }
                }
                Err(e) => {
                    self.save_failed(prefix, &e);
                    if let Some(slot) = lock(&self.prefixes).get_mut(prefix) {
                        slot.pending.get_or_insert((revision, values));
                    }
                    return Drained::Failed;
                }
            }
        }
    }
}

/// How a [`SnapshotDir::drain`] ended.
enum Drained {
    /// Nothing is left to write.
    Done,
    /// A write failed; its values are pending again.
    Failed,
}

/// Replaces `dir/name` with `bytes` so that a reader (or a crash) sees the old file or the new
/// one, never a mix: a temporary file in the same directory (so the rename is atomic), flushed
/// before the rename, and the directory flushed after it (so the rename itself survives).
pub(crate) fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    // Removed since it was opened (by hand, by a cleanup job): put it back, private again.
    create_private_dir(dir)?;
    let temp = temp_path(dir, name);
    let written = (|| {
        let mut file = create_private_file(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temp, dir.join(name))
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temp);
        return Err(e);
    }
    sync_dir(dir)
}

/// A temporary file name in `dir` for a write of `name`: hidden, and unique across the
/// processes and `Coord`s that may share the directory.
fn temp_path(dir: &Path, name: &str) -> PathBuf {
    let seq = TEMP_SEQ.fetch_add(1, Ordering::Relaxed);
    dir.join(format!(".{name}.{}.{seq}.tmp", std::process::id()))
}

/// Creates the new file `path`, readable and writable by its owner only from its first
/// moment: the mode is given to `open`, so no byte is ever in a file others may read.
fn create_private_file(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

/// Creates `dir` mode 0700 if it is missing (its missing parents with the usual mode: they
/// are the user's to choose); an existing `dir` is left as it is, for [`check_private`].
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    match builder.create(dir) {
        // Made meanwhile (another `Coord` on the same directory), or a file: the caller's
        // check tells.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        other => other,
    }
}

/// Refuses a directory someone else could read from or write into: not owned by this
/// process's effective user, or writable by group or others. Warns if it is only readable
/// by them (what an older coord created: 0755).
#[cfg(unix)]
fn check_private(dir: &Path, metadata: &std::fs::Metadata) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    let mode = metadata.mode() & 0o7777;
    let shown = dir.display();
    if metadata.uid() != me {
        return Err(refused(
            dir,
            format!(
                "is owned by uid {}, not by this process's user (uid {me}): that user could read \
                 the config values (secrets included) kept there and replace the snapshots this \
                 process starts from; use a directory of this user's, or run \
                 `chown {me} {shown} && chmod 700 {shown}`",
                metadata.uid()
            ),
        ));
    }
    let writers = match (mode & 0o020 != 0, mode & 0o002 != 0) {
        (true, true) => Some("group and others"),
        (true, false) => Some("its group"),
        (false, true) => Some("others"),
        (false, false) => None,
    };
    if let Some(writers) = writers {
        return Err(refused(
            dir,
            format!(
                "is writable by {writers} (mode {mode:04o}): they could replace the snapshots \
                 this process starts from when etcd is down; run `chmod 700 {shown}`"
            ),
        ));
    }
    if mode & 0o077 != 0 {
        tracing::warn!(
            dir = %shown,
            mode = format_args!("{mode:04o}"),
            "snapshot directory is readable by group or others: its files are private (0600) \
             from their next save, but which prefixes are kept can be listed; run `chmod 700` on it"
        );
    }
    Ok(())
}

/// Elsewhere there are no Unix modes or owners to check; the directory's ACLs are the
/// user's to set.
#[cfg(not(unix))]
fn check_private(_dir: &Path, _metadata: &std::fs::Metadata) -> Result<()> {
    Ok(())
}

/// Warns once if `dir` holds snapshot files of version 1 (no cluster recorded): they are
/// never read, and can be deleted. Returns their names.
fn warn_of_v1_files(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let old: Vec<String> = entries
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            if !is_v1_name(&name) {
                return None;
            }
            #[derive(Deserialize)]
            struct Marker {
                format: Option<String>,
                version: Option<u32>,
            }
            let bytes = std::fs::read(dir.join(&name)).ok()?;
            let marker: Marker = serde_json::from_slice(&bytes).ok()?;
            (marker.format.as_deref() == Some(FORMAT) && marker.version == Some(1)).then_some(name)
        })
        .collect();
    if let Some(first) = old.first() {
        tracing::warn!(
            dir = %dir.display(),
            files = old.len(),
            example = %first,
            "snapshot files of format version 1 (from an older coord, which did not record the \
             etcd cluster they came from) are ignored: an offline start uses only files saved \
             since; delete them"
        );
    }
    old
}

/// Proves `dir` takes a new file (the mode bits say nothing to root, or on a read-only
/// mount): creates one, private, and removes it.
fn probe_write(dir: &Path) -> std::io::Result<()> {
    let probe = temp_path(dir, "probe");
    create_private_file(&probe)?;
    std::fs::remove_file(&probe)
}

/// `snapshot_dir` refused: `dir` and what is wrong with it.
fn refused(dir: &Path, reason: String) -> Error {
    Error::invalid_argument(
        FIELD,
        format!("the snapshot directory `{}` {reason}", dir.display()),
    )
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Elsewhere a directory cannot be opened to be flushed; the rename is as durable as the
/// platform makes it.
#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLUSTER: &str = "endpoints http://127.0.0.1:2379";
    const ORIGIN: Origin<'static> = Origin {
        cluster: CLUSTER,
        cluster_id: 0xc1,
    };

    fn enc(prefix: &str, revision: i64, values: &RawValues) -> Vec<u8> {
        encode(ORIGIN, prefix, revision, values)
    }

    fn dec(prefix: &str, bytes: &[u8]) -> Result<DiskSnapshot, Unusable> {
        decode(CLUSTER, None, prefix, bytes)
    }

    fn values(pairs: &[(&str, &[u8])]) -> RawValues {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), RawValue::new(*v, 0)))
            .collect()
    }

    fn sample() -> RawValues {
        values(&[
            ("/config/app/timeout_secs", b"45"),
            ("/config/app/name", b"\"checkout\""),
            // Raw bytes need not be UTF-8.
            ("/config/app/blob", &[0, 159, 146, 150, 255]),
        ])
    }

    #[test]
    fn a_snapshot_reads_back_as_written() {
        let bytes = enc("/config/app", 42, &sample());
        let back = dec("/config/app", &bytes).unwrap();
        assert_eq!(back.revision, 42);
        assert_eq!(back.values, sample());
        let empty = dec("/config/app", &enc("/config/app", 7, &RawValues::new())).unwrap();
        assert_eq!((empty.revision, empty.values.len()), (7, 0));
    }

    #[test]
    fn a_truncated_file_is_rejected() {
        let bytes = enc("/config/app", 42, &sample());
        for cut in [0, 1, bytes.len() / 2, bytes.len() - 1] {
            let error = dec("/config/app", &bytes[..cut]).unwrap_err();
            assert!(matches!(error, Unusable::Json(_)), "cut at {cut}: {error}");
        }
    }

    #[test]
    fn another_prefixs_file_is_rejected() {
        let bytes = enc("/config/other", 42, &values(&[("/config/other/x", b"1")]));
        let error = dec("/config/app", &bytes).unwrap_err();
        assert!(
            matches!(error, Unusable::Prefix { ref found, .. } if found == "/config/other"),
            "{error}"
        );
    }

    #[test]
    fn a_key_outside_the_prefix_is_rejected_even_with_a_good_checksum() {
        // Written by hand as the encoder would, but with a key of another prefix inside.
        let bytes = enc(
            "/config/app",
            1,
            &values(&[("/config/application/x", b"1")]),
        );
        let error = dec("/config/app", &bytes).unwrap_err();
        assert!(matches!(error, Unusable::ForeignKey(ref key) if key == "/config/application/x"));
    }

    #[test]
    fn a_flipped_value_fails_the_checksum() {
        let bytes = enc(
            "/config/app",
            42,
            &values(&[("/config/app/timeout_secs", b"45")]),
        );
        let text = String::from_utf8(bytes).unwrap();
        // "45" is "NDU=" in base64; "46" is "NDY=".
        let corrupt = text.replace("NDU=", "NDY=");
        assert_ne!(text, corrupt);
        let error = dec("/config/app", corrupt.as_bytes()).unwrap_err();
        assert!(matches!(error, Unusable::Checksum), "{error}");
        let revision = text.replace("\"revision\":42", "\"revision\":43");
        assert!(matches!(
            dec("/config/app", revision.as_bytes()),
            Err(Unusable::Checksum)
        ));
    }

    #[test]
    fn files_of_other_programs_and_versions_are_rejected() {
        let error = dec("/config/app", br#"{"timeout_secs": 45}"#).unwrap_err();
        assert!(
            matches!(error, Unusable::Format(ref f) if f == "none"),
            "{error}"
        );
        let error = dec("/config/app", br#"{"format": "something-else"}"#).unwrap_err();
        assert!(matches!(error, Unusable::Format(ref f) if f == "something-else"));
        let newer = String::from_utf8(enc("/config/app", 1, &sample()))
            .unwrap()
            .replace("\"version\":2", "\"version\":3");
        let error = dec("/config/app", newer.as_bytes()).unwrap_err();
        assert!(matches!(error, Unusable::Version(3)), "{error}");
        // A file of version 1 (no cluster recorded) is not read.
        let v1 = br#"{"format":"coord-live-snapshot","version":1,"prefix":"/config/app","revision":1,"checksum":"0","values":{}}"#;
        let error = dec("/config/app", v1).unwrap_err();
        assert!(matches!(error, Unusable::Version(1)), "{error}");
        assert!(matches!(
            dec("/config/app", b"[1, 2, 3]"),
            Err(Unusable::Json(_))
        ));
    }

    #[test]
    fn file_names_are_safe_and_tell_prefixes_and_clusters_apart() {
        let name = file_name(CLUSTER, "/config/checkout");
        assert!(
            name.starts_with("config_checkout-") && name.ends_with(".json"),
            "{name}"
        );
        assert!(!is_v1_name(&name), "{name}");
        let odd = file_name(CLUSTER, "/config/../../etc/passwd\0?*");
        assert!(
            !odd.contains('/') && !odd.contains('\0') && !odd.contains('*'),
            "{odd}"
        );
        assert_ne!(
            file_name(CLUSTER, "/config/a_b"),
            file_name(CLUSTER, "/config/a/b")
        );
        let staging = cluster_key(None, &["http://10.0.0.9:2379".to_owned()]);
        assert_ne!(
            file_name(CLUSTER, "/config/checkout"),
            file_name(&staging, "/config/checkout")
        );
        let long = file_name(CLUSTER, &format!("/config/{}", "x".repeat(1000)));
        assert!(long.len() < 100, "{}", long.len());
        // What version 1 named files: one hash.
        assert!(is_v1_name("config_checkout-0123456789abcdef.json"));
        assert!(!is_v1_name(
            ".config_checkout-0123456789abcdef.json.1.2.tmp"
        ));
    }

    #[test]
    fn version_1_files_are_found_to_be_warned_of_and_nothing_else() {
        let dir = tempfile_dir();
        let v1 = br#"{"format":"coord-live-snapshot","version":1,"prefix":"/config/app","revision":1,"checksum":"0","values":{}}"#;
        std::fs::write(dir.join("config_app-0123456789abcdef.json"), v1).unwrap();
        std::fs::write(dir.join("notes-0123456789abcdef.json"), b"{}").unwrap();
        std::fs::write(
            dir.join(file_name(CLUSTER, "/config/app")),
            enc("/config/app", 1, &sample()),
        )
        .unwrap();
        assert_eq!(warn_of_v1_files(&dir), ["config_app-0123456789abcdef.json"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_cluster_key_is_the_name_or_the_sorted_endpoints() {
        let a = cluster_key(
            None,
            &[
                " http://B:2379/".to_owned(),
                "http://a:2379".to_owned(),
                "http://b:2379".to_owned(),
            ],
        );
        assert_eq!(a, "endpoints http://a:2379,http://b:2379");
        assert_eq!(
            a,
            cluster_key(
                None,
                &["http://b:2379".to_owned(), "http://a:2379".to_owned()]
            )
        );
        assert_eq!(
            cluster_key(Some("prod-eu"), &["http://a:2379".to_owned()]),
            "name prod-eu"
        );
    }

    #[test]
    fn another_clusters_file_is_rejected() {
        let bytes = enc("/config/app", 42, &sample());
        // Found under another cluster key (copied by hand): not ours.
        let error = decode("name staging", None, "/config/app", &bytes).unwrap_err();
        assert!(
            matches!(error, Unusable::Cluster { ref found, .. } if found == CLUSTER),
            "{error}"
        );
        // The same key, but etcd answers for another cluster: not its values.
        let error = decode(CLUSTER, Some(0xc2), "/config/app", &bytes).unwrap_err();
        assert!(
            matches!(
                error,
                Unusable::OtherCluster {
                    file: 0xc1,
                    live: 0xc2
                }
            ),
            "{error}"
        );
        assert!(
            error.to_string().contains("replaced at the next save"),
            "{error}"
        );
        let ours = decode(CLUSTER, Some(0xc1), "/config/app", &bytes).unwrap();
        assert_eq!(ours.cluster_id, 0xc1);
        // The recorded cluster is under the checksum.
        let text = String::from_utf8(bytes).unwrap();
        let moved = text.replace("00000000000000c1", "00000000000000c2");
        assert!(matches!(
            dec("/config/app", moved.as_bytes()),
            Err(Unusable::Checksum)
        ));
    }

    #[test]
    fn a_write_replaces_the_file_whole_and_leaves_no_temporary_file() {
        let dir = tempfile_dir();
        write_atomic(&dir, "a.json", b"first").unwrap();
        write_atomic(&dir, "a.json", b"second").unwrap();
        assert_eq!(std::fs::read(dir.join("a.json")).unwrap(), b"second");
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["a.json"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn saves_are_coalesced_and_older_revisions_dropped() {
        let path = tempfile_dir();
        let store = Store::in_memory();
        let dir = Arc::new(
            SnapshotDir::open(path.clone(), CLUSTER.to_owned())
                .unwrap()
                .attach(&store, Arc::default()),
        );
        let prefix = "/config/app";
        let newer = values(&[("/config/app/x", b"2")]);
        dir.save(prefix, 5, &values(&[("/config/app/x", b"1")]), false);
        dir.save(prefix, 9, &newer, false);
        // Older than the newest save: dropped.
        dir.save(prefix, 7, &values(&[("/config/app/x", b"old")]), false);
        let file = path.join(file_name(CLUSTER, prefix));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let written = std::fs::read(&file).ok().map(|b| dec(prefix, &b));
            if let Some(Ok(snapshot)) = written
                && snapshot.revision == 9
            {
                assert_eq!(snapshot.values, newer);
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "revision 9 never written"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        while lock(&dir.prefixes)[prefix].writing {
            assert!(
                std::time::Instant::now() < deadline,
                "the writer never stops"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let last = dec(prefix, &std::fs::read(&file).unwrap()).unwrap();
        assert_eq!(last.revision, 9, "the older save was dropped");
        // The same values again: nothing to write.
        dir.save(prefix, 9, &newer, false);
        assert!(!lock(&dir.prefixes)[prefix].writing);
        // A rebase takes an older revision (the store's history restarted).
        dir.save(prefix, 3, &values(&[("/config/app/x", b"3")]), true);
        let loaded = loop {
            let fresh = SnapshotDir::open(path.clone(), CLUSTER.to_owned())
                .unwrap()
                .attach(&store, Arc::default());
            if let Some(loaded) = fresh.load(prefix).await.filter(|s| s.revision == 3) {
                break loaded;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the rebase never written"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        };
        assert_eq!(&loaded.values["/config/app/x"][..], b"3");
        std::fs::remove_dir_all(&path).unwrap();
    }

    #[cfg(unix)]
    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[cfg(unix)]
    fn chmod(path: &Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    /// The reason of a refusal of `snapshot_dir`; panics on anything else.
    fn refusal(result: Result<SnapshotDir>) -> String {
        match result {
            Err(Error::InvalidArgument { field, reason }) if field == FIELD => reason,
            Err(other) => panic!("expected InvalidArgument on snapshot_dir, got {other:?}"),
            Ok(dir) => panic!("{} was accepted", dir.path().display()),
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_new_directory_is_created_0700_and_a_saved_file_is_0600() {
        let parent = tempfile_dir();
        let path = parent.join("nested").join("snapshots");
        let dir = SnapshotDir::open(path.clone(), CLUSTER.to_owned()).unwrap();
        assert_eq!(mode(&path), 0o700);
        write_atomic(dir.path(), "a.json", b"secret").unwrap();
        assert_eq!(mode(&path.join("a.json")), 0o600);
        // Opening it again (the next start) accepts it as it is.
        SnapshotDir::open(path.clone(), CLUSTER.to_owned()).unwrap();
        assert_eq!(mode(&path), 0o700);
        std::fs::remove_dir_all(&parent).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn the_temporary_file_is_0600_before_a_byte_is_written() {
        let dir = tempfile_dir();
        let temp = temp_path(&dir, "a.json");
        let file = create_private_file(&temp).unwrap();
        assert_eq!(file.metadata().unwrap().len(), 0);
        assert_eq!(mode(&temp), 0o600);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn a_file_an_older_coord_wrote_0644_is_0600_after_the_next_save() {
        let dir = tempfile_dir();
        chmod(&dir, 0o700);
        let file = dir.join("a.json");
        std::fs::write(&file, b"old").unwrap();
        chmod(&file, 0o644);
        let snapshots = SnapshotDir::open(dir.clone(), CLUSTER.to_owned()).unwrap();
        write_atomic(snapshots.path(), "a.json", b"new").unwrap();
        assert_eq!(mode(&file), 0o600);
        assert_eq!(std::fs::read(&file).unwrap(), b"new");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn a_group_writable_directory_is_refused_naming_it_and_the_fix() {
        let dir = tempfile_dir();
        chmod(&dir, 0o770);
        let reason = refusal(SnapshotDir::open(dir.clone(), CLUSTER.to_owned()));
        assert!(reason.contains(&format!("`{}`", dir.display())), "{reason}");
        assert!(
            reason.contains("writable by its group (mode 0770)"),
            "{reason}"
        );
        assert!(
            reason.contains(&format!("`chmod 700 {}`", dir.display())),
            "{reason}"
        );
        // Refused as it is: not "fixed" behind the user's back, and nothing left in it.
        assert_eq!(mode(&dir), 0o770);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn a_world_writable_directory_is_refused() {
        let dir = tempfile_dir();
        for (mode, writers) in [(0o703, "others"), (0o777, "group and others")] {
            chmod(&dir, mode);
            let reason = refusal(SnapshotDir::open(dir.clone(), CLUSTER.to_owned()));
            assert!(
                reason.contains(&format!("writable by {writers} (mode {mode:04o})")),
                "{reason}"
            );
            assert!(reason.contains("chmod 700"), "{reason}");
        }
        // The sticky bit (a shared /tmp) does not make it private.
        chmod(&dir, 0o1777);
        let reason = refusal(SnapshotDir::open(dir.clone(), CLUSTER.to_owned()));
        assert!(reason.contains("(mode 1777)"), "{reason}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn a_directory_only_readable_by_others_is_used() {
        // What an older coord created (0755): its files become 0600 as they are saved.
        let dir = tempfile_dir();
        chmod(&dir, 0o755);
        SnapshotDir::open(dir.clone(), CLUSTER.to_owned()).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn a_directory_owned_by_another_user_is_refused() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            // Only root can give a directory away; the check itself is the same.
            eprintln!("skipped: needs root to chown");
            return;
        }
        let dir = tempfile_dir();
        chmod(&dir, 0o700);
        std::os::unix::fs::chown(&dir, Some(65534), None).unwrap();
        let reason = refusal(SnapshotDir::open(dir.clone(), CLUSTER.to_owned()));
        assert!(
            reason.contains("is owned by uid 65534, not by this process's user (uid 0)"),
            "{reason}"
        );
        assert!(reason.contains("chmod 700"), "{reason}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_file_in_place_of_the_directory_is_refused() {
        let parent = tempfile_dir();
        let file = parent.join("snapshots");
        std::fs::write(&file, b"not a directory").unwrap();
        let reason = refusal(SnapshotDir::open(file.clone(), CLUSTER.to_owned()));
        assert!(reason.contains("is not a directory"), "{reason}");
        assert_eq!(std::fs::read(&file).unwrap(), b"not a directory");
        // Nor can a directory be made under a file.
        let reason = refusal(SnapshotDir::open(file.join("below"), CLUSTER.to_owned()));
        assert!(reason.contains("cannot be created"), "{reason}");
        std::fs::remove_dir_all(&parent).unwrap();
    }

    /// A fresh directory under the system temp dir (coord's tempfile dependency is for the
    /// `testing` feature only).
    fn tempfile_dir() -> PathBuf {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "coord-offline-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
