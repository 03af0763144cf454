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

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use crate::config::raw::RawValues;
use crate::error::{Error, Result};
use crate::health::{FailingWrites, SNAPSHOT_SAVE};
use crate::store::Store;
use crate::sync::lock;

/// The first wait before a failed save is tried again; it doubles up to [`RETRY_MAX`].
const RETRY_FIRST: std::time::Duration = std::time::Duration::from_millis(500);
const RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(30);

mod disk;
mod format;

use disk::{
    check_private, create_private_dir, probe_write, refused, warn_of_v1_files, write_atomic,
};
pub(crate) use format::cluster_key;
use format::{DiskSnapshot, SnapshotOrigin, decode, encode, file_name};

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
        let origin = SnapshotOrigin {
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

#[cfg(test)]
mod tests;
