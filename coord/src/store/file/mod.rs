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
//! timeout_secs = 45                              # /config/checkout/timeout_secs = 45
//! rate_limit = { per_second = 100, burst = 20 }  # /config/checkout/rate_limit = {"per_second":100,"burst":20}
//!
//! ["/config/checkout/db"]
//! url = "postgres://localhost/checkout"          # /config/checkout/db/url = "postgres://localhost/checkout"
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
//! A name given twice in one table, at any depth and in every format, is a
//! [`FileErrorKind::Syntax`] error at the line and column of the second one: a prefix written
//! twice, an entry written twice, a key written twice inside an entry's value. YAML and JSON
//! parsers would keep the last one and drop the first without a word (a repeated prefix would
//! drop a whole table); TOML refuses them itself.
//!
//! In YAML a merge key `<<` is applied, as YAML 1.1 defines it: the mapping, or each mapping of
//! a list, given to `<<` lends its entries to the mapping that holds it; that mapping's own
//! entries win, then the earlier mappings of the list. So one prefix can share another's
//! settings through an anchor (`/config/checkout-eu: {<<: *checkout, region: eu}`), which is
//! what a YAML writer means by it; stored as a literal entry named `<<` it would only be a key
//! no config reads. A `<<` whose value is not a mapping or a list of mappings, or that is given
//! twice in one mapping, is a syntax error at its line. Every `<<` key is a merge key, quoted or
//! not (the parser does not say which). JSON has no merge key: there `"<<"` is an ordinary entry.
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
//! - **An empty save is a bad save.** A save that lays out no key while keys are loaded (an
//!   empty file, whitespace or comments only, YAML `null` or `---`, JSON `{}`, tables without
//!   entries) is refused as [`FileErrorKind::Empty`], reported as above: applied, it would
//!   delete every key and put every config back to its defaults without an error, and it is
//!   what a crashed editor, a full disk or a `> file` redirect leaves behind. To empty the file
//!   on purpose, set [`FileOptions::allow_empty`] ([`LocalFile::set_options`]). A file that is
//!   empty when it is opened loads with no key.
//! - **Saves are seen however the editor writes.** The file's directory is watched (the
//!   `notify` crate), so a save that writes a temporary file and renames it over this one is
//!   seen as well as one that rewrites it in place.
//! - **A file reached through symlinks is followed through them.** Each event in a watched
//!   directory resolves the path again, and a path that now leads to another file is a save:
//!   so a Kubernetes ConfigMap volume (`app.toml -> ..data/app.toml`, updated by renaming a
//!   new `..data` link over the old one, which makes no event for `app.toml`) reloads on each
//!   update. The directory of the file the path leads to is watched as well as the path's
//!   own, so a save of a linked file in another directory is heard. A link swapped in some
//!   third directory (the path's directory itself being a link, say) is noticed only at the
//!   next event in one of those two.
//! - **A save is read once its writer is quiet.** Each change to the file restarts a wait of
//!   [`FileOptions::quiet_period`] ([`QUIET_PERIOD`], 500 ms, by default); the file is read
//!   when the wait ends, so a save written in parts up to that far apart is read whole, not
//!   after a first part that happens to parse. A save therefore reaches `Live` handles about
//!   [`DEBOUNCE`] + the quiet period (600 ms) after its last write. A writer that pauses for
//!   longer between parts is still read in between: write saves atomically (write a
//!   temporary file in the same directory, then rename it over this one, as most editors
//!   do) and they are never seen half-written, whatever their timing. A reload reads the
//!   whole file again, so a read that raced a writer is followed by another once the writer
//!   is done.
//! - **Watching ends with the `Coord`.** When the `Coord` is closed, or every handle on its
//!   store is dropped, the watch stops and its threads end ([`LocalFile::is_watching`]).

mod document;
mod follow;
mod options;
mod parse;
mod target;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify_debouncer_mini::notify::RecursiveMode;
use notify_debouncer_mini::{DebounceEventResult, new_debouncer};
use tokio::sync::mpsc;
use tracing::Instrument;

pub use crate::error::{FileError, FileErrorKind, Position};
use follow::{Follower, Shared, load};
pub use options::{FileOptions, QUIET_PERIOD};
use parse::{Format, Keys};
use target::Target;

use super::memory::MemoryStore;
use super::{Backend, Store};
use crate::sync::lock;

/// How long the watcher gathers the events of one burst on a path (a save makes several:
/// truncate, write, rename) before passing them on as one. The file is then read once it has
/// also been quiet for [`FileOptions::quiet_period`].
pub const DEBOUNCE: Duration = Duration::from_millis(100);

/// A config file followed by an embedded store: see the [module docs](self). Cheap to clone;
/// clones share the state. Get it from [`Coord::local_file`](crate::Coord::local_file).
#[derive(Clone, Debug)]
pub struct LocalFile {
    shared: Arc<Shared>,
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

    /// How saves are applied now.
    pub fn options(&self) -> FileOptions {
        lock(&self.shared.options).clone()
    }

    /// Changes how saves are applied, from the next save read on: the file is not read again
    /// for it. The first load is done by then, with [`FileOptions::default`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> coord::Result<()> {
    /// # let dir = std::env::temp_dir().join(format!("coord-set-options-doc-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir).unwrap();
    /// # let path = dir.join("coord.toml");
    /// # std::fs::write(&path, "").unwrap();
    /// use coord::store::file::FileOptions;
    ///
    /// let coord = coord::Coord::from_file(&path).await?;
    /// let file = coord.local_file().unwrap();
    /// // Emptying the file on purpose deletes every key it had.
    /// file.set_options(file.options().with_allow_empty(true));
    /// # coord.close().await?;
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok(())
    /// # }
    /// ```
    pub fn set_options(&self, options: FileOptions) {
        *lock(&self.shared.options) = options;
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
            // Where the path leads through links, followed from now on, also before the first
            // read.
            let target = Target::new(&path, name.to_owned(), debouncer.watcher());

            let keys = load(&path).await?;
            let count = keys.len();
            let memory = MemoryStore::new();
            let store = Store::from_backend(Backend::Memory(memory.clone()));
            let shared = Arc::new(Shared {
                path: path.clone(),
                last_error: Mutex::new(None),
                options: Mutex::new(FileOptions::default()),
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
                    .follow(target, events, closed, debouncer)
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
