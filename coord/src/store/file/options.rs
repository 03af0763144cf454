//! How a [`LocalFile`](super::LocalFile) reads and accepts saves.

use std::time::Duration;

/// The default [`FileOptions::quiet_period`].
pub const QUIET_PERIOD: Duration = Duration::from_millis(500);

/// How saves of the file are applied: see [`LocalFile::set_options`](super::LocalFile::set_options).
///
/// ```
/// use coord::store::file::FileOptions;
///
/// let options = FileOptions::default().with_allow_empty(true);
/// assert!(options.allow_empty);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct FileOptions {
    /// Whether a save that lays out no key at all (an empty file, one of whitespace or comments
    /// only, a YAML `null`, a JSON `{}`, or tables without entries) is applied, deleting every
    /// key the file had. `false` (the default): such a save is refused as
    /// [`FileErrorKind::Empty`](super::FileErrorKind::Empty) and the last good state is kept,
    /// because an editor that crashed, a full disk or a `> file` redirect leaves exactly that,
    /// and applying it would put every field of every config back to its default without an
    /// error. A file that is empty when it is opened loads (there is nothing to keep), and an
    /// empty save while no key is loaded changes nothing either way.
    pub allow_empty: bool,
    /// How long the file must be quiet, with no event on it, before a save is read: each
    /// change heard restarts the wait. A save written in parts (a slow copy, a script that
    /// appends line by line, an editor that writes in place in chunks) is read once whole,
    /// not after its first part, which may well parse (whole lines of TOML are valid TOML)
    /// and would be applied. The price is latency: a save reaches the store about this long
    /// (plus the watcher's [`DEBOUNCE`](super::DEBOUNCE)) after its last write. A writer that
    /// pauses for longer than this between parts is still read in between; a save that writes
    /// a temporary file and renames it over this one (most editors do) is never seen
    /// half-written, whatever its timing.
    /// [`QUIET_PERIOD`] (500 ms) by default; zero reads at once after the debounce.
    pub quiet_period: Duration,
}

impl Default for FileOptions {
    fn default() -> Self {
        FileOptions {
            allow_empty: false,
            quiet_period: QUIET_PERIOD,
        }
    }
}

impl FileOptions {
    /// Sets [`allow_empty`](Self::allow_empty).
    #[must_use]
    pub fn with_allow_empty(mut self, allow: bool) -> Self {
        self.allow_empty = allow;
        self
    }

    /// Sets [`quiet_period`](Self::quiet_period).
    #[must_use]
    pub fn with_quiet_period(mut self, quiet_period: Duration) -> Self {
        self.quiet_period = quiet_period;
        self
    }
}
