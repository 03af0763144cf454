//! What a [`LocalFile`](super::LocalFile) accepts from a save.

/// How saves of the file are applied: see [`LocalFile::set_options`](super::LocalFile::set_options).
///
/// ```
/// use coord::store::file::FileOptions;
///
/// let options = FileOptions::default().with_allow_empty(true);
/// assert!(options.allow_empty);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
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
}

impl FileOptions {
    /// Sets [`allow_empty`](Self::allow_empty).
    #[must_use]
    pub fn with_allow_empty(mut self, allow: bool) -> Self {
        self.allow_empty = allow;
        self
    }
}
