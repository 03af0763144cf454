//! Private files and directories: atomic replacement, owner-only permissions, and the checks
//! a snapshot directory must pass before it is used.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Deserialize;

use super::format::{FORMAT, is_v1_name};
use crate::error::{Error, Result};

/// The configuration field a refused directory is reported under.
pub(super) const FIELD: &str = "snapshot_dir";

/// Tells temporary files of one process apart (two `Coord`s may share a directory).
static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

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
pub(super) fn temp_path(dir: &Path, name: &str) -> PathBuf {
    let seq = TEMP_SEQ.fetch_add(1, Ordering::Relaxed);
    dir.join(format!(".{name}.{}.{seq}.tmp", std::process::id()))
}

/// Creates the new file `path`, readable and writable by its owner only from its first
/// moment: the mode is given to `open`, so no byte is ever in a file others may read.
pub(super) fn create_private_file(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

/// Creates `dir` mode 0700 if it is missing (its missing parents with the usual mode: they
/// are the user's to choose); an existing `dir` is left as it is, for [`check_private`].
pub(super) fn create_private_dir(dir: &Path) -> std::io::Result<()> {
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
pub(super) fn check_private(dir: &Path, metadata: &std::fs::Metadata) -> Result<()> {
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
pub(super) fn check_private(_dir: &Path, _metadata: &std::fs::Metadata) -> Result<()> {
    Ok(())
}

/// Warns once if `dir` holds snapshot files of version 1 (no cluster recorded): they are
/// never read, and can be deleted. Returns their names.
pub(super) fn warn_of_v1_files(dir: &Path) -> Vec<String> {
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
pub(super) fn probe_write(dir: &Path) -> std::io::Result<()> {
    let probe = temp_path(dir, "probe");
    create_private_file(&probe)?;
    std::fs::remove_file(&probe)
}

/// `snapshot_dir` refused: `dir` and what is wrong with it.
pub(super) fn refused(dir: &Path, reason: String) -> Error {
    Error::invalid_argument(
        FIELD,
        format!("the snapshot directory `{}` {reason}", dir.display()),
    )
}

#[cfg(unix)]
pub(super) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Elsewhere a directory cannot be opened to be flushed; the rename is as durable as the
/// platform makes it.
#[cfg(not(unix))]
pub(super) fn sync_dir(_dir: &Path) -> std::io::Result<()> {
    Ok(())
}
