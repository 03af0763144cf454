//! Why a config file, or a save of it, was not applied.

use std::path::{Path, PathBuf};

/// Where in a file, both counted from 1 (the column in characters).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    /// The line, from 1.
    pub line: usize,
    /// The column, from 1.
    pub column: usize,
}

impl Position {
    /// The position of byte `offset` of `text`.
    pub(crate) fn at(text: &str, offset: usize) -> Position {
        // A parser's offset is a char boundary; should one not be, count the whole text.
        let before = text.get(..offset).unwrap_or(text);
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Position {
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
        }
    }
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

/// Why a config file (or a save of it) was not applied; see [`LocalFile::last_error`](crate::store::file::LocalFile::last_error). As a
/// [`crate::Error`] it is [`Error::File`](crate::Error::File).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("config file `{}`{}: {kind}", path.display(), position.map(|p| format!(" at {p}")).unwrap_or_default())]
pub struct FileError {
    /// The file.
    pub path: PathBuf,
    /// Where in the file, when the parser knows (syntax errors).
    pub position: Option<Position>,
    /// What is wrong.
    pub kind: FileErrorKind,
}

impl FileError {
    pub(crate) fn new(path: &Path, kind: FileErrorKind) -> Self {
        FileError {
            path: path.to_owned(),
            position: None,
            kind,
        }
    }
}

/// What is wrong with a config file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FileErrorKind {
    /// The file cannot be read (it is missing, unreadable, or not UTF-8).
    #[error("cannot read it: {0}")]
    Read(String),
    /// The extension is not `.toml`, `.yaml`, `.yml` or `.json`.
    #[error("unknown format: name it .toml, .yaml, .yml or .json")]
    UnknownFormat,
    /// The file does not parse in its format.
    #[error("{0}")]
    Syntax(String),
    /// The top level is not a table (a JSON array, say).
    #[error("the top level must be a table of key prefixes")]
    NotAMap,
    /// A top-level name does not start with `/`.
    #[error("top-level name `{name}` is not a key prefix: it must start with `/`")]
    NotAPrefix {
        /// The name.
        name: String,
    },
    /// A top-level value is not a table.
    #[error("`{name}` must be a table of keys (one entry per key under the prefix)")]
    NotATable {
        /// The top-level name.
        name: String,
    },
    /// An entry name cannot make a key.
    #[error("entry `{entry}` under `{prefix}` {reason}")]
    BadEntry {
        /// The prefix (the top-level name) it is under.
        prefix: String,
        /// The entry name.
        entry: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Two entries make the same key (`["/a"] "b/c"` and `["/a/b"] c`).
    #[error("key `{key}` is given twice")]
    DuplicateKey {
        /// The key.
        key: String,
    },
    /// A value JSON cannot hold (a TOML `nan` or `inf`).
    #[error("`{key}`: {reason}")]
    BadValue {
        /// The entry (or key) holding it.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A save lays out no key while keys are loaded (it is empty, blank, comments only, or
    /// its tables have no entries): applying it would delete them all. Refused unless
    /// [`FileOptions::allow_empty`](crate::store::file::FileOptions::allow_empty) is set.
    #[error(
        "it lays out no key: applying it would delete every key it had (to empty it on purpose, set `FileOptions::allow_empty`)"
    )]
    Empty,
    /// The file's directory cannot be watched.
    #[error("cannot watch it: {0}")]
    Watch(String),
    /// The embedded store refused the transaction.
    #[error("cannot apply it: {0}")]
    Apply(String),
}

impl From<FileError> for crate::error::Error {
    fn from(error: FileError) -> Self {
        crate::error::Error::File(Box::new(error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_count_lines_and_characters_from_one() {
        let text = "ab\ncdé\nf";
        assert_eq!(Position::at(text, 0), Position { line: 1, column: 1 });
        assert_eq!(Position::at(text, 3), Position { line: 2, column: 1 });
        // "é" is two bytes and one column.
        assert_eq!(Position::at(text, 7), Position { line: 2, column: 4 });
        assert_eq!(Position::at(text, 8), Position { line: 3, column: 1 });
    }
}
