//! Local file mode: a TOML, YAML or JSON file seeds the embedded store, and every save of the
//! file becomes one transaction on it.
//!
//! A developer runs a service on a laptop with a config file instead of an etcd, and the same
//! code runs: [`Live`](crate::Live) handles, the config center, locks, IDs and the registry all
//! work on the embedded store ([`Store::in_memory`]) within the process. Open it with
//! [`Coord::from_file`](crate::Coord::from_file), or with a
//! [`ClientConfig`](crate::ClientConfig) whose `file` is set.
//!
//! # Layout
//!
//! The format is chosen by the file's extension: `.toml`, `.yaml` or `.yml`, `.json`. Each
//! top-level name is a key prefix and must start with `/`; its value must be a table (a map).
//! Each entry of that table is one key, `{prefix}/{entry}`, whose value is the entry's value
//! converted to JSON:
//!
//! ```toml
//! ["/config/checkout"]
//! timeout_secs = 45                             # /config/checkout/timeout_secs = 45
//! rate_limit = { per_sec = 100, burst = 20 }    # /config/checkout/rate_limit = {"per_sec":100,"burst":20}
//!
//! ["/config/checkout/db"]
//! url = "postgres://localhost/checkout"         # /config/checkout/db/url = "postgres://localhost/checkout"
//! ```
//!
//! In JSON or YAML the same file is `{"/config/checkout": {"timeout_secs": 45, …}, …}`. A
//! trailing `/` on a prefix is ignored. A nested table inside an entry is that key's JSON
//! object, not another prefix: a nested [`CoordConfig`](crate::CoordConfig) struct gets its own
//! top-level table, as `/config/checkout/db` above. TOML dates and times become JSON strings
//! (RFC 3339).
//!
//! A top-level name that does not start with `/`, a top-level value that is not a table, an
//! entry name that is empty, starts with `/` or holds a NUL, two entries that make the same key,
//! and a number JSON cannot hold (`nan`, `inf`) are each a [`FileError`] naming them.
//!
//! # What it promises
//!
//! - **A save is one transaction.** The keys of the new version are compared with the last
//!   version applied: keys added or whose value changed are put, keys that version had and
//!   this one lacks are deleted, all in one transaction at one revision, so a `Live` never sees
//!   half of a save. A save that changes no key writes nothing. The transaction goes straight
//!   to the embedded store, so etcd's limit of 128 operations per transaction does not apply.
//! - **Keys the file does not name are the program's.** Locks, IDs, registrations, and keys a
//!   program wrote itself are left alone by a save. A key the file names is written only when a
//!   save changes, adds or drops its entry, so a program's own write to such a key lasts until
//!   then.
//! - **A bad save keeps the last good state.** A save that cannot be read, does not parse or
//!   breaks the layout rule changes nothing; a `tracing` warning names the file, line and
//!   column (when the parser knows them), and [`LocalFile::last_error`] reports it until a good
//!   save heals it. The file must load when it is opened: there is no last good state yet.
//! - **Saves are seen however the editor writes.** The file's directory is watched (the
//!   `notify` crate), so a save that writes a temporary file
//!   and renames it over this one is seen as well as one that rewrites it in place. Events are
//!   debounced: a burst of writes is read once, after it has been quiet for [`DEBOUNCE`]. A
//!   reload reads the whole file again, so a read that raced a writer is followed by another
//!   once the writer is done.
//! - **Watching ends with the `Coord`.** When the `Coord` is closed, or every handle on its
//!   store is dropped, the watch stops and its threads end ([`LocalFile::is_watching`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify_debouncer_mini::notify::{RecommendedWatcher, RecursiveMode};
use notify_debouncer_mini::{DebounceEventResult, Debouncer, new_debouncer};
use serde_json::{Map, Value};
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use super::memory::MemoryStore;
use super::{Backend, Store, Txn, TxnOp};
use crate::sync::lock;

/// How long the file must be quiet after a change before it is read again: editors write a
/// save in several steps (truncate, write, rename), and reading between them would apply a
/// half-written file or reject it for nothing.
pub const DEBOUNCE: Duration = Duration::from_millis(100);

/// A config file followed by an embedded store: see the [module docs](self). Cheap to clone;
/// clones share the state. Get it from [`Coord::local_file`](crate::Coord::local_file).
#[derive(Clone, Debug)]
pub struct LocalFile {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    path: PathBuf,
    last_error: Mutex<Option<FileError>>,
    revision: AtomicI64,
    watching: AtomicBool,
}

impl LocalFile {
    /// The file, as an absolute path.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Why the latest save was not applied, if it was not: with the line and column when the
    /// parser knows them. `None` once a good save has been applied.
    pub fn last_error(&self) -> Option<FileError> {
        lock(&self.shared.last_error).clone()
    }

    /// The store revision of the last save applied (of the first load, until a save changes
    /// a key; 1 if the file has never held a key). A rejected save, or one that changes no
    /// key, leaves it where it was.
    pub fn revision(&self) -> i64 {
        self.shared.revision.load(Ordering::Acquire)
    }

    /// True while the file is watched: false once the `Coord` is closed or every handle on its
    /// store is gone (or, rarely, when the watcher failed: see the logged error).
    pub fn is_watching(&self) -> bool {
        self.shared.watching.load(Ordering::Acquire)
    }

    /// Loads the file into a new embedded store and follows it until that store is closed or
    /// dropped. The watch starts before the first read, so no save is missed in between.
    ///
    /// # Errors
    ///
    /// A [`FileError`] if the file cannot be read, does not parse or breaks the layout rule,
    /// or if its directory cannot be watched.
    pub(crate) async fn open(path: &Path) -> Result<(Store, LocalFile), FileError> {
        let path = std::path::absolute(path)
            .map_err(|e| FileError::new(path, FileErrorKind::Read(e.to_string())))?;
        let span = tracing::info_span!("coord.file.open", file = %path.display());
        async {
            if Format::of(&path).is_none() {
                return Err(FileError::new(&path, FileErrorKind::UnknownFormat));
            }
            let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
                return Err(FileError::new(
                    &path,
                    FileErrorKind::Read("not a file name".to_owned()),
                ));
            };
            // Said now, or a missing directory would be reported as a watch that failed.
            tokio::fs::metadata(&path)
                .await
                .map_err(|e| FileError::new(&path, FileErrorKind::Read(e.to_string())))?;
            let (tx, events) = mpsc::unbounded_channel();
            let watch_error = |e: notify_debouncer_mini::notify::Error| {
                FileError::new(&path, FileErrorKind::Watch(e.to_string()))
            };
            // The callback runs on the debouncer's thread; a send fails only once the
            // follower is gone, and then nobody needs the event.
            let mut debouncer = new_debouncer(DEBOUNCE, move |result: DebounceEventResult| {
                let _ = tx.send(result);
            })
            .map_err(watch_error)?;
            // The directory, not the file: a save by rename replaces the file's inode, and a
            // watch on the old inode would hear nothing more.
            debouncer
                .watcher()
                .watch(dir, RecursiveMode::NonRecursive)
                .map_err(watch_error)?;

            let keys = load(&path).await?;
            let count = keys.len();
            let memory = MemoryStore::new();
            let store = Store::from_backend(Backend::Memory(memory.clone()));
            let shared = Arc::new(Shared {
                path: path.clone(),
                last_error: Mutex::new(None),
                revision: AtomicI64::new(0),
                watching: AtomicBool::new(true),
            });
            let mut follower = Follower {
                shared: Arc::clone(&shared),
                memory,
                applied: Keys::new(),
            };
            follower
                .apply(keys)
                .await
                .map_err(|e| FileError::new(&path, FileErrorKind::Apply(e.to_string())))?;
            if follower.shared.revision.load(Ordering::Acquire) == 0 {
                // An empty file wrote nothing: the store is at its first revision.
                follower.shared.revision.store(1, Ordering::Release);
            }
            // A receiver does not keep the store open: it ends when the store is closed or
            // its last handle (the Coord's, its capabilities') is dropped.
            let closed = store.closed.subscribe();
            tokio::spawn(
                follower
                    .follow(name.to_owned(), events, closed, debouncer)
                    .instrument(tracing::info_span!("coord.file.watch", file = %path.display())),
            );
            tracing::info!(
                keys = count,
                revision = shared.revision.load(Ordering::Acquire),
                "config file loaded"
            );
            Ok((store, LocalFile { shared }))
        }
        .instrument(span)
        .await
    }
}

/// The keys a file lays out: key → the value as JSON text.
type Keys = BTreeMap<String, Vec<u8>>;

/// The task that applies each save to the store.
struct Follower {
    shared: Arc<Shared>,
    memory: MemoryStore,
    /// The keys of the last version applied.
    applied: Keys,
}

impl Follower {
    /// Applies saves until the store is closed or dropped; then drops the watcher, which ends
    /// its threads.
    async fn follow(
        mut self,
        name: std::ffi::OsString,
        mut events: mpsc::UnboundedReceiver<DebounceEventResult>,
        mut closed: watch::Receiver<bool>,
        debouncer: Debouncer<RecommendedWatcher>,
    ) {
        loop {
            let reload = tokio::select! {
                // Closed or dropped: either way nobody reads this store any more.
                _ = closed.wait_for(|closed| *closed) => break,
                event = events.recv() => match event {
                    Some(Ok(events)) => events
                        .iter()
                        .any(|event| event.path.file_name() == Some(name.as_os_str())),
                    Some(Err(error)) => {
                        // The watcher may have dropped events (a full inotify queue): read the
                        // file anyway, in case one of them was a save.
                        tracing::warn!(%error, "watching the config file failed; reading it again");
                        true
                    }
                    None => {
                        tracing::warn!("the config file watcher stopped; saves are no longer applied");
                        break;
                    }
                },
            };
            if reload && !*closed.borrow() {
                self.reload().await;
            }
        }
        drop(debouncer);
        self.shared.watching.store(false, Ordering::Release);
        tracing::debug!("stopped watching the config file");
    }

    /// Reads the file and applies it, or keeps the last good state and says why.
    async fn reload(&mut self) {
        let path = self.shared.path.clone();
        let result = match load(&path).await {
            Ok(keys) => self
                .apply(keys)
                .await
                .map_err(|e| FileError::new(&path, FileErrorKind::Apply(e.to_string()))),
            Err(error) => Err(error),
        };
        match result {
            Ok(()) => *lock(&self.shared.last_error) = None,
            Err(error) => {
                tracing::warn!(
                    file = %path.display(),
                    line = error.position.map(|p| p.line),
                    column = error.position.map(|p| p.column),
                    error = %error.kind,
                    "config file not applied; keeping the last good state"
                );
                *lock(&self.shared.last_error) = Some(error);
            }
        }
    }

    /// Writes the difference between the last version applied and `keys` in one transaction.
    async fn apply(&mut self, keys: Keys) -> crate::Result<()> {
        let puts = keys
            .iter()
            .filter(|(key, value)| self.applied.get(*key) != Some(*value))
            .map(|(key, value)| TxnOp::put(key.clone(), value.clone()));
        let deletes = self
            .applied
            .keys()
            .filter(|key| !keys.contains_key(*key))
            .map(|key| TxnOp::delete(key.clone()));
        let ops: Vec<TxnOp> = puts.chain(deletes).collect();
        if ops.is_empty() {
            tracing::debug!("config file saved without a change");
            return Ok(());
        }
        let changed = ops.len();
        let response = self.memory.txn(Txn::new().and_then(ops)).await?;
        self.applied = keys;
        self.shared
            .revision
            .store(response.revision, Ordering::Release);
        tracing::info!(changed, revision = response.revision, "config file applied");
        Ok(())
    }
}

/// Reads and lays out the file.
async fn load(path: &Path) -> Result<Keys, FileError> {
    let text = tokio::fs::read_to_string(path)
        .await
        .map_err(|e| FileError::new(path, FileErrorKind::Read(e.to_string())))?;
    parse(path, &text)
}

/// The file formats, by extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Toml,
    Yaml,
    Json,
}

impl Format {
    fn of(path: &Path) -> Option<Format> {
        let extension = path.extension()?.to_str()?.to_ascii_lowercase();
        match extension.as_str() {
            "toml" => Some(Format::Toml),
            "yaml" | "yml" => Some(Format::Yaml),
            "json" => Some(Format::Json),
            _ => None,
        }
    }
}

/// Lays out `text`, in the format `path`'s extension names, as keys.
fn parse(path: &Path, text: &str) -> Result<Keys, FileError> {
    let error = |position, kind| FileError {
        path: path.to_owned(),
        position,
        kind,
    };
    let document =
        match Format::of(path) {
            None => return Err(error(None, FileErrorKind::UnknownFormat)),
            Some(Format::Toml) => match toml::from_str::<toml::Table>(text) {
                Ok(table) => Value::Object(table_to_json(table).map_err(|(key, reason)| {
                    error(None, FileErrorKind::BadValue { key, reason })
                })?),
                Err(e) => {
                    let position = e.span().map(|span| Position::at(text, span.start));
                    return Err(error(
                        position,
                        FileErrorKind::Syntax(e.message().trim().to_owned()),
                    ));
                }
            },
            Some(Format::Yaml) => serde_yaml_ng::from_str::<Value>(text).map_err(|e| {
                let position = e.location().map(|l| Position::at(text, l.index()));
                error(
                    position,
                    FileErrorKind::Syntax(without_location(e.to_string())),
                )
            })?,
            Some(Format::Json) => serde_json::from_str::<Value>(text).map_err(|e| {
                let position = Some(Position {
                    line: e.line(),
                    column: e.column(),
                });
                error(
                    position,
                    FileErrorKind::Syntax(without_location(e.to_string())),
                )
            })?,
        };
    let prefixes = match document {
        Value::Object(prefixes) => prefixes,
        // An empty YAML document (or JSON `null`): a file with no keys yet.
        Value::Null => Map::new(),
        _ => return Err(error(None, FileErrorKind::NotAMap)),
    };
    layout(prefixes).map_err(|kind| error(None, kind))
}

/// The layout rule: top-level names are prefixes, their entries keys.
fn layout(prefixes: Map<String, Value>) -> Result<Keys, FileErrorKind> {
    let mut keys = Keys::new();
    for (prefix, table) in prefixes {
        if !prefix.starts_with('/') {
            return Err(FileErrorKind::NotAPrefix { name: prefix });
        }
        let Value::Object(entries) = table else {
            return Err(FileErrorKind::NotATable { name: prefix });
        };
        let base = prefix.trim_end_matches('/');
        for (entry, value) in entries {
            let reason = if entry.is_empty() {
                Some("is empty")
            } else if entry.starts_with('/') {
                Some("starts with `/` (write the entry without it)")
            } else if entry.contains('\0') {
                Some("contains a NUL character")
            } else {
                None
            };
            if let Some(reason) = reason {
                return Err(FileErrorKind::BadEntry {
                    prefix,
                    entry,
                    reason: reason.to_owned(),
                });
            }
            let key = format!("{base}/{entry}");
            // Serializing a `Value` cannot fail: its map keys are strings and its numbers
            // finite (checked when the document was converted).
            let json = serde_json::to_vec(&value).map_err(|e| FileErrorKind::BadValue {
                key: key.clone(),
                reason: e.to_string(),
            })?;
            if keys.insert(key.clone(), json).is_some() {
                return Err(FileErrorKind::DuplicateKey { key });
            }
        }
    }
    Ok(keys)
}

/// A TOML table as a JSON object; `Err((key, reason))` for a value JSON cannot hold.
fn table_to_json(table: toml::Table) -> Result<Map<String, Value>, (String, String)> {
    table
        .into_iter()
        .map(|(key, value)| match toml_to_json(value) {
            Ok(json) => Ok((key, json)),
            Err(reason) => Err((key, reason)),
        })
        .collect()
}

fn toml_to_json(value: toml::Value) -> Result<Value, String> {
    Ok(match value {
        toml::Value::String(s) => Value::String(s),
        toml::Value::Integer(i) => Value::from(i),
        toml::Value::Float(f) => serde_json::Number::from_f64(f)
            .map(Value::Number)
            .ok_or_else(|| format!("{f} is not a number JSON can hold"))?,
        toml::Value::Boolean(b) => Value::Bool(b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(items) => Value::Array(
            items
                .into_iter()
                .map(toml_to_json)
                .collect::<Result<_, _>>()?,
        ),
        toml::Value::Table(table) => Value::Object(
            table_to_json(table).map_err(|(key, reason)| format!("`{key}`: {reason}"))?,
        ),
    })
}

/// serde_json and serde_yaml put " at line L column C" in their messages; the position is kept
/// apart, so it is not said twice.
fn without_location(message: String) -> String {
    let digits =
        |text: &str| text.len() - text.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let Some(at) = message.find(" at line ") else {
        return message;
    };
    let rest = &message[at + " at line ".len()..];
    let line = digits(rest);
    let Some(column_part) = rest[line..].strip_prefix(" column ") else {
        return message;
    };
    let column = digits(column_part);
    if line == 0 || column == 0 {
        return message;
    }
    format!("{}{}", &message[..at], &column_part[column..])
}

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
    fn at(text: &str, offset: usize) -> Position {
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

/// Why a config file (or a save of it) was not applied; see [`LocalFile::last_error`]. As a
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
    fn new(path: &Path, kind: FileErrorKind) -> Self {
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
    /// The file's directory cannot be watched.
    #[error("cannot watch it: {0}")]
    Watch(String),
    /// The embedded store refused the transaction.
    #[error("cannot apply it: {0}")]
    Apply(String),
}

impl From<FileError> for crate::Error {
    fn from(error: FileError) -> Self {
        crate::Error::File(Box::new(error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(name: &str, text: &str) -> Keys {
        parse(Path::new(name), text).unwrap()
    }

    fn kind(name: &str, text: &str) -> FileErrorKind {
        parse(Path::new(name), text).unwrap_err().kind
    }

    fn text(keys: &Keys, key: &str) -> String {
        String::from_utf8(keys[key].clone()).unwrap()
    }

    const TOML: &str = r#"
["/config/checkout"]
timeout_secs = 45
rate_limit = { per_sec = 100, burst = 20 }
tags = ["a", "b"]
started = 1979-05-27T07:32:00Z

["/config/checkout/db"]
url = "postgres://localhost/checkout"
"#;

    #[test]
    fn toml_tables_are_prefixes_and_entries_are_json_keys() {
        let keys = keys("coord.toml", TOML);
        assert_eq!(
            keys.keys().collect::<Vec<_>>(),
            [
                "/config/checkout/db/url",
                "/config/checkout/rate_limit",
                "/config/checkout/started",
                "/config/checkout/tags",
                "/config/checkout/timeout_secs",
            ]
        );
        assert_eq!(text(&keys, "/config/checkout/timeout_secs"), "45");
        let rate_limit: Value =
            serde_json::from_slice(&keys["/config/checkout/rate_limit"]).unwrap();
        assert_eq!(rate_limit, serde_json::json!({"per_sec": 100, "burst": 20}));
        assert_eq!(text(&keys, "/config/checkout/tags"), r#"["a","b"]"#);
        assert_eq!(
            text(&keys, "/config/checkout/started"),
            r#""1979-05-27T07:32:00Z""#
        );
        assert_eq!(
            text(&keys, "/config/checkout/db/url"),
            r#""postgres://localhost/checkout""#
        );
    }

    #[test]
    fn yaml_and_json_lay_out_like_toml() {
        let yaml =
            "/config/checkout:\n  timeout_secs: 45\n  rate_limit: {per_sec: 100, burst: 20}\n";
        let json = r#"{"/config/checkout": {"timeout_secs": 45, "rate_limit": {"per_sec": 100, "burst": 20}}}"#;
        let from_yaml = keys("coord.yaml", yaml);
        assert_eq!(from_yaml, keys("coord.yml", yaml));
        assert_eq!(from_yaml, keys("coord.json", json));
        assert_eq!(from_yaml, keys("COORD.JSON", json));
        assert_eq!(text(&from_yaml, "/config/checkout/timeout_secs"), "45");
        assert_eq!(from_yaml.len(), 2);
    }

    #[test]
    fn a_trailing_slash_and_slashes_inside_an_entry_are_kept_apart() {
        let keys = keys("c.json", r#"{"/a/": {"b": 1, "c/d": 2}, "/": {"e": 3}}"#);
        assert_eq!(keys.keys().collect::<Vec<_>>(), ["/a/b", "/a/c/d", "/e"]);
    }

    #[test]
    fn empty_files_have_no_keys_except_in_json() {
        assert!(keys("c.toml", "").is_empty());
        assert!(keys("c.yaml", "").is_empty());
        assert!(keys("c.yaml", "# nothing yet\n").is_empty());
        assert!(keys("c.json", "{}").is_empty());
        assert!(matches!(kind("c.json", ""), FileErrorKind::Syntax(_)));
    }

    #[test]
    fn a_name_without_a_slash_is_not_a_prefix() {
        assert_eq!(
            kind("c.toml", "title = \"x\"\n"),
            FileErrorKind::NotAPrefix {
                name: "title".into()
            }
        );
        assert_eq!(
            kind("c.toml", "[config]\na = 1\n"),
            FileErrorKind::NotAPrefix {
                name: "config".into()
            }
        );
        assert_eq!(
            kind("c.yaml", "config:\n  a: 1\n"),
            FileErrorKind::NotAPrefix {
                name: "config".into()
            }
        );
        let error = parse(Path::new("c.json"), r#"{"config": {}}"#).unwrap_err();
        assert!(
            error.to_string().contains("`config` is not a key prefix"),
            "{error}"
        );
    }

    #[test]
    fn a_top_level_value_that_is_not_a_table_is_refused_by_name() {
        assert_eq!(
            kind("c.toml", "\"/config/x\" = 5\n"),
            FileErrorKind::NotATable {
                name: "/config/x".into()
            }
        );
        assert_eq!(
            kind("c.json", r#"{"/config/x": [1, 2]}"#),
            FileErrorKind::NotATable {
                name: "/config/x".into()
            }
        );
        assert_eq!(kind("c.json", "[1, 2]"), FileErrorKind::NotAMap);
        assert_eq!(kind("c.yaml", "- a\n- b\n"), FileErrorKind::NotAMap);
    }

    #[test]
    fn bad_entries_and_duplicate_keys_are_refused() {
        assert!(matches!(
            kind("c.json", r#"{"/a": {"": 1}}"#),
            FileErrorKind::BadEntry { entry, .. } if entry.is_empty()
        ));
        assert!(matches!(
            kind("c.json", r#"{"/a": {"/b": 1}}"#),
            FileErrorKind::BadEntry { entry, .. } if entry == "/b"
        ));
        assert!(matches!(
            kind("c.json", r#"{"/a": {"b\u0000": 1}}"#),
            FileErrorKind::BadEntry { prefix, .. } if prefix == "/a"
        ));
        assert_eq!(
            kind("c.json", r#"{"/a": {"b/c": 1}, "/a/b": {"c": 2}}"#),
            FileErrorKind::DuplicateKey {
                key: "/a/b/c".into()
            }
        );
        assert!(matches!(
            kind("c.toml", "[\"/a\"]\nx = nan\n"),
            FileErrorKind::BadValue { key, .. } if key == "/a"
        ));
    }

    #[test]
    fn syntax_errors_say_line_and_column_in_every_format() {
        let cases = [
            ("c.toml", "[\"/a\"]\nx = 1\ny = = 2\n", 3),
            ("c.yaml", "/a:\n  x: 1\n  y: [1, 2\n", 4),
            ("c.json", "{\"/a\": {\n  \"x\": 1,\n  \"y\": }\n}", 3),
        ];
        for (name, text, line) in cases {
            let error = parse(Path::new(name), text).unwrap_err();
            let position = error.position.unwrap_or_else(|| panic!("{name}: {error}"));
            assert_eq!(position.line, line, "{name}: {error}");
            assert!(position.column >= 1, "{name}: {error}");
            assert!(
                matches!(error.kind, FileErrorKind::Syntax(_)),
                "{name}: {error}"
            );
            let message = error.to_string();
            assert!(
                message.contains(&format!("line {line}, column ")),
                "{message}"
            );
            let again = format!("at line {line} column {}", position.column);
            assert!(!message.contains(&again), "said twice: {message}");
        }
    }

    #[test]
    fn unknown_extensions_are_refused() {
        assert_eq!(kind("coord.ini", "a=1"), FileErrorKind::UnknownFormat);
        assert_eq!(kind("coord", "{}"), FileErrorKind::UnknownFormat);
    }

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
