//! Offline start: each bound prefix's last good raw values, kept on disk.
//!
//! With [`ClientConfig::snapshot_dir`](crate::ClientConfig::snapshot_dir) set, a
//! [`Live`](crate::Live) handle hands the raw values it last built a good value from to its
//! `Coord`'s [`SnapshotDir`], which keeps one file per prefix. When etcd cannot be reached as a prefix
//! is bound, the prefix's watch starts from that file instead of failing (marked stale), and
//! follows etcd once it answers.
//!
//! # What it promises
//!
//! - **Never a torn file.** A snapshot is written to a temporary file in the same directory,
//!   flushed to disk, renamed over the previous one, and the directory is flushed: a crash
//!   leaves the old file or the new one, never a mix.
//! - **Never trusted blindly.** A file is used only if it parses, carries the format marker
//!   and a version this code reads, names the prefix asked for, holds only keys under that
//!   prefix, and its checksum matches its contents. Anything else (truncated, corrupt, another
//!   prefix's file, a file of some other program) is ignored with a warning.
//! - **Off the reload path.** [`SnapshotDir::save`] only records the values (O(1) but for a
//!   map lookup) and the writing happens on the blocking pool; saves that come while a write
//!   is under way are coalesced into one write of the newest values.
//! - **Written when the value moves.** A handle saves when it applies a new value (and once
//!   after a reconnect), not on every wake; saves of a revision older than the one already
//!   saved, or of the very values already saved, are dropped, so a thousand handles on one
//!   prefix write its file once per change.
//! - **Nothing without a directory.** A `Coord` without `snapshot_dir` has no `SnapshotDir`:
//!   no file, no task, no memory per handle.
//!
//! # The file
//!
//! One JSON object per file, named after the prefix (a readable part and a hash, so any
//! prefix makes a safe, unique file name; the prefix itself is inside and checked):
//!
//! ```json
//! { "format": "coord-live-snapshot", "version": 1, "prefix": "/config/checkout",
//!   "revision": 42, "checksum": "9c1d…", "values": { "/config/checkout/timeout_secs": "NDU=" } }
//! ```
//!
//! Values are the raw stored bytes in standard base64; the checksum is FNV-1a (64 bits) over
//! the prefix, the revision and every key and value, in key order, each length-prefixed.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::config::hub::{RawValue, RawValues};
use crate::sync::lock;

/// The `format` of every snapshot file: a file without it is not one of ours.
const FORMAT: &str = "coord-live-snapshot";
/// The layout this code writes and reads.
const VERSION: u32 = 1;

/// A prefix's values as read back from its file.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct DiskSnapshot {
    /// The store revision the values were current at when saved.
    pub revision: i64,
    /// Full key → raw value.
    pub values: RawValues,
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
    prefix: String,
    revision: i64,
    checksum: String,
    values: BTreeMap<String, String>,
}

/// The file's bytes for `prefix`'s `values` at `revision`.
pub(crate) fn encode(prefix: &str, revision: i64, values: &RawValues) -> Vec<u8> {
    let base64 = base64::engine::general_purpose::STANDARD;
    let file = File {
        format: FORMAT.to_owned(),
        version: VERSION,
        prefix: prefix.to_owned(),
        revision,
        checksum: format!(
            "{:016x}",
            checksum(prefix, revision, values.iter().map(|(k, v)| (k, &v[..])))
        ),
        values: values
            .iter()
            .map(|(key, value)| (key.clone(), base64.encode(&value[..])))
            .collect(),
    };
    // A struct of strings, integers and a string map always serializes.
    serde_json::to_vec(&file).unwrap_or_default()
}

/// Reads back a file written by [`encode`] for `prefix`; rejects anything else.
pub(crate) fn decode(prefix: &str, bytes: &[u8]) -> Result<DiskSnapshot, Unusable> {
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
    if file.prefix != prefix {
        return Err(Unusable::Prefix {
            expected: prefix.to_owned(),
            found: file.prefix,
        });
    }
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
    let sum = checksum(
        prefix,
        file.revision,
        values.iter().map(|(k, v)| (k, &v[..])),
    );
    if format!("{sum:016x}") != file.checksum {
        return Err(Unusable::Checksum);
    }
    Ok(DiskSnapshot {
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
    prefix: &str,
    revision: i64,
    values: impl Iterator<Item = (&'a String, &'a [u8])>,
) -> u64 {
    let mut hash = Fnv::default();
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

/// The file name of `prefix`'s snapshot: its letters, digits, `-`, `_` and `.` (others become
/// `_`, at most 64 kept) for whoever lists the directory, then a hash of the whole prefix,
/// so two prefixes never share a name in practice (and if they did, the prefix inside tells).
pub(crate) fn file_name(prefix: &str) -> String {
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
        .take(64)
        .collect();
    let mut hash = Fnv::default();
    hash.bytes(prefix.as_bytes());
    format!("{readable}-{:016x}.json", hash.0)
}

/// The snapshot files of one `Coord`: where they live, and the saves not written yet. See the
/// [module docs](self).
#[derive(Debug)]
pub(crate) struct SnapshotDir {
    dir: PathBuf,
    prefixes: Mutex<HashMap<String, Slot>>,
}

/// What one prefix's file holds or is about to.
#[derive(Debug, Default)]
struct Slot {
    /// The newest values handed to the writer (or read from the file), and their revision.
    saved: Option<(i64, RawValues)>,
    /// Values waiting for the writer.
    pending: Option<(i64, RawValues)>,
    /// True while a blocking task writes this prefix's file.
    writing: bool,
}

/// Tells temporary files of one process apart (two `Coord`s may share a directory).
static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

impl SnapshotDir {
    pub fn new(dir: PathBuf) -> Self {
        SnapshotDir {
            dir,
            prefixes: Mutex::new(HashMap::new()),
        }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// `prefix`'s snapshot, if its file exists and holds a good one; a bad file is logged and
    /// ignored. Reads on the blocking pool.
    pub async fn load(&self, prefix: &str) -> Option<DiskSnapshot> {
        let path = self.dir.join(file_name(prefix));
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
        match decode(prefix, &bytes) {
            Ok(snapshot) => {
                // What the file holds is saved already: the same values need no new write.
                lock(&self.prefixes)
                    .entry(prefix.to_owned())
                    .or_default()
                    .saved = Some((snapshot.revision, snapshot.values.clone()));
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
    /// these very values, unless `rebase`: the store's revisions restarted (a new etcd
    /// cluster) and this older revision is the newest there is.
    pub fn save(self: &Arc<Self>, prefix: &str, revision: i64, values: &RawValues, rebase: bool) {
        let mut prefixes = lock(&self.prefixes);
        if !prefixes.contains_key(prefix) {
            prefixes.insert(prefix.to_owned(), Slot::default());
        }
        let Some(slot) = prefixes.get_mut(prefix) else {
            return;
        };
        if let Some((saved, held)) = &slot.saved {
            let older = revision < *saved && !rebase;
            // Handles sharing the prefix's snapshot hand in the same map; handles with a gray
            // release laid over build their own, equal one.
            let same = revision == *saved && (held.ptr_eq(values) || held == values);
            if older || same {
                return;
            }
        }
        slot.saved = Some((revision, values.clone()));
        slot.pending = Some((revision, values.clone()));
        if slot.writing {
            // The running write picks these up when it is done.
            return;
        }
        slot.writing = true;
        drop(prefixes);
        let dir = Arc::clone(self);
        let prefix = prefix.to_owned();
        tokio::task::spawn_blocking(move || dir.drain(&prefix));
    }

    /// Writes `prefix`'s pending values until none are left.
    fn drain(&self, prefix: &str) {
        loop {
            let pending = {
                let mut prefixes = lock(&self.prefixes);
                let Some(slot) = prefixes.get_mut(prefix) else {
                    return;
                };
                match slot.pending.take() {
                    Some(pending) => pending,
                    None => {
                        slot.writing = false;
                        return;
                    }
                }
            };
            let (revision, values) = pending;
            let bytes = encode(prefix, revision, &values);
            match write_atomic(&self.dir, &file_name(prefix), &bytes) {
                Ok(()) => tracing::debug!(prefix, revision, "snapshot saved"),
                Err(e) => tracing::warn!(
                    prefix,
                    revision,
                    dir = %self.dir.display(),
                    error = %e,
                    "snapshot not saved; an offline start would use an older one"
                ),
            }
        }
    }
}

/// Replaces `dir/name` with `bytes` so that a reader (or a crash) sees the old file or the new
/// one, never a mix: a temporary file in the same directory (so the rename is atomic), flushed
/// before the rename, and the directory flushed after it (so the rename itself survives).
pub(crate) fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let seq = TEMP_SEQ.fetch_add(1, Ordering::Relaxed);
    let temp = dir.join(format!(".{name}.{}.{seq}.tmp", std::process::id()));
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)?;
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
        let bytes = encode("/config/app", 42, &sample());
        let back = decode("/config/app", &bytes).unwrap();
        assert_eq!(back.revision, 42);
        assert_eq!(back.values, sample());
        let empty = decode("/config/app", &encode("/config/app", 7, &RawValues::new())).unwrap();
        assert_eq!((empty.revision, empty.values.len()), (7, 0));
    }

    #[test]
    fn a_truncated_file_is_rejected() {
        let bytes = encode("/config/app", 42, &sample());
        for cut in [0, 1, bytes.len() / 2, bytes.len() - 1] {
            let error = decode("/config/app", &bytes[..cut]).unwrap_err();
            assert!(matches!(error, Unusable::Json(_)), "cut at {cut}: {error}");
        }
    }

    #[test]
    fn another_prefixs_file_is_rejected() {
        let bytes = encode("/config/other", 42, &values(&[("/config/other/x", b"1")]));
        let error = decode("/config/app", &bytes).unwrap_err();
        assert!(
            matches!(error, Unusable::Prefix { ref found, .. } if found == "/config/other"),
            "{error}"
        );
    }

    #[test]
    fn a_key_outside_the_prefix_is_rejected_even_with_a_good_checksum() {
        // Written by hand as the encoder would, but with a key of another prefix inside.
        let bytes = encode(
            "/config/app",
            1,
            &values(&[("/config/application/x", b"1")]),
        );
        let error = decode("/config/app", &bytes).unwrap_err();
        assert!(matches!(error, Unusable::ForeignKey(ref key) if key == "/config/application/x"));
    }

    #[test]
    fn a_flipped_value_fails_the_checksum() {
        let bytes = encode(
            "/config/app",
            42,
            &values(&[("/config/app/timeout_secs", b"45")]),
        );
        let text = String::from_utf8(bytes).unwrap();
        // "45" is "NDU=" in base64; "46" is "NDY=".
        let corrupt = text.replace("NDU=", "NDY=");
        assert_ne!(text, corrupt);
        let error = decode("/config/app", corrupt.as_bytes()).unwrap_err();
        assert!(matches!(error, Unusable::Checksum), "{error}");
        let revision = text.replace("\"revision\":42", "\"revision\":43");
        assert!(matches!(
            decode("/config/app", revision.as_bytes()),
            Err(Unusable::Checksum)
        ));
    }

    #[test]
    fn files_of_other_programs_and_versions_are_rejected() {
        let error = decode("/config/app", br#"{"timeout_secs": 45}"#).unwrap_err();
        assert!(
            matches!(error, Unusable::Format(ref f) if f == "none"),
            "{error}"
        );
        let error = decode("/config/app", br#"{"format": "something-else"}"#).unwrap_err();
        assert!(matches!(error, Unusable::Format(ref f) if f == "something-else"));
        let newer = String::from_utf8(encode("/config/app", 1, &sample()))
            .unwrap()
            .replace("\"version\":1", "\"version\":2");
        let error = decode("/config/app", newer.as_bytes()).unwrap_err();
        assert!(matches!(error, Unusable::Version(2)), "{error}");
        assert!(matches!(
            decode("/config/app", b"[1, 2, 3]"),
            Err(Unusable::Json(_))
        ));
    }

    #[test]
    fn file_names_are_safe_and_tell_prefixes_apart() {
        let name = file_name("/config/checkout");
        assert!(
            name.starts_with("config_checkout-") && name.ends_with(".json"),
            "{name}"
        );
        let odd = file_name("/config/../../etc/passwd\0?*");
        assert!(
            !odd.contains('/') && !odd.contains('\0') && !odd.contains('*'),
            "{odd}"
        );
        assert_ne!(file_name("/config/a_b"), file_name("/config/a/b"));
        let long = file_name(&format!("/config/{}", "x".repeat(1000)));
        assert!(long.len() < 100, "{}", long.len());
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
        let dir = Arc::new(SnapshotDir::new(path.clone()));
        let prefix = "/config/app";
        let newer = values(&[("/config/app/x", b"2")]);
        dir.save(prefix, 5, &values(&[("/config/app/x", b"1")]), false);
        dir.save(prefix, 9, &newer, false);
        // Older than the newest save: dropped.
        dir.save(prefix, 7, &values(&[("/config/app/x", b"old")]), false);
        let file = path.join(file_name(prefix));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let written = std::fs::read(&file).ok().map(|b| decode(prefix, &b));
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
        let last = decode(prefix, &std::fs::read(&file).unwrap()).unwrap();
        assert_eq!(last.revision, 9, "the older save was dropped");
        // The same values again: nothing to write.
        dir.save(prefix, 9, &newer, false);
        assert!(!lock(&dir.prefixes)[prefix].writing);
        // A rebase takes an older revision (the store's history restarted).
        dir.save(prefix, 3, &values(&[("/config/app/x", b"3")]), true);
        let loaded = loop {
            let fresh = SnapshotDir::new(path.clone());
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
