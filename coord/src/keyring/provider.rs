//! Where a process's keys come from: a file only its owner can read, an environment variable,
//! or anything else that implements [`KeyProvider`] (a KMS).

use std::fmt;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use super::ring::KeyRing;
use crate::error::{Error, Result};

/// The configuration field a provider's failures are reported under.
const FIELD: &str = "secret_keys";

/// A source of the key ring. Asked when a `Coord` starts and whenever it is told to reload
/// (a rotation hands out the new key first, then re-seals).
///
/// Implementations must never log or put key material in an error.
pub trait KeyProvider: fmt::Debug + Send + Sync {
    /// The ring, newest key first.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] (field `secret_keys`) when the keys cannot be had or are
    /// malformed; the message names the source, never a key.
    fn key_ring(&self) -> Result<KeyRing>;
}

/// Keys from a file in [`KeyRing::parse`]'s format, which must belong to this process's user
/// and be readable by nobody else (mode `0600` or `0400`), as ssh keys must: a key file others
/// can read is refused, saying how to fix it.
///
/// ```no_run
/// let ring = coord::keyring::KeyProvider::key_ring(
///     &coord::keyring::KeyFile::new("/etc/coord/secret.keys"),
/// )?;
/// # Ok::<(), coord::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyFile {
    path: PathBuf,
}

impl KeyFile {
    /// The key file at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        KeyFile { path: path.into() }
    }

    /// Where it is read from.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl KeyProvider for KeyFile {
    fn key_ring(&self) -> Result<KeyRing> {
        use std::io::Read;
        let shown = self.path.display();
        let unreadable = |e: std::io::Error| {
            Error::invalid_argument(FIELD, format!("cannot read key file {shown}: {e}"))
        };
        // One open: the file checked is the file read (no swap between a check by path and a
        // read by path), and not through a symlink someone could point elsewhere.
        let mut file = open_no_follow(&self.path).map_err(unreadable)?;
        let metadata = file.metadata().map_err(unreadable)?;
        check_private(&self.path, &metadata)?;
        let size = usize::try_from(metadata.len()).unwrap_or(0);
        let mut text = Zeroizing::new(String::with_capacity(size + 1));
        file.read_to_string(&mut text).map_err(unreadable)?;
        KeyRing::parse(&text).map_err(|e| match e {
            Error::InvalidArgument { reason, .. } => {
                Error::invalid_argument(FIELD, format!("key file {shown}: {reason}"))
            }
            other => other,
        })
    }
}

#[cfg(unix)]
fn open_no_follow(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

#[cfg(not(unix))]
fn open_no_follow(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::File::open(path)
}

#[cfg(unix)]
fn check_private(path: &Path, metadata: &std::fs::Metadata) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    let mode = metadata.mode() & 0o7777;
    let shown = path.display();
    if metadata.uid() != me {
        return Err(Error::invalid_argument(
            FIELD,
            format!(
                "key file {shown} belongs to uid {}, not to this process's user (uid {me}); \
                 run `chown {me} {shown}`",
                metadata.uid()
            ),
        ));
    }
    if mode & 0o077 != 0 {
        return Err(Error::invalid_argument(
            FIELD,
            format!(
                "key file {shown} can be read or written by others (mode {mode:04o}): anyone \
                 who reads it can open every secret; run `chmod 600 {shown}`"
            ),
        ));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_path: &Path, _metadata: &std::fs::Metadata) -> Result<()> {
    Ok(())
}

/// Keys from an environment variable in [`KeyRing::parse`]'s format (`;` between keys), for
/// platforms that hand secrets to a process that way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyEnv {
    var: String,
}

impl KeyEnv {
    /// The keys in environment variable `var` (`COORD_SECRET_KEYS`, say).
    pub fn new(var: impl Into<String>) -> Self {
        KeyEnv { var: var.into() }
    }
}

impl KeyProvider for KeyEnv {
    fn key_ring(&self) -> Result<KeyRing> {
        let text = Zeroizing::new(std::env::var(&self.var).map_err(|_| {
            Error::invalid_argument(
                FIELD,
                format!(
                    "environment variable {} is not set (or not UTF-8)",
                    self.var
                ),
            )
        })?);
        KeyRing::parse(&text).map_err(|e| match e {
            Error::InvalidArgument { reason, .. } => {
                Error::invalid_argument(FIELD, format!("{}: {reason}", self.var))
            }
            other => other,
        })
    }
}
