//! Where the config file's path leads through symlinks, followed as the links change.
//!
//! Kubernetes mounts a ConfigMap key as a link, `app.toml -> ..data/app.toml`, with
//! `..data -> ..2026_12_07_00_00_00.123`, and publishes an update by writing a new timestamped
//! directory and renaming a new `..data_tmp` link over `..data`: not one event names
//! `app.toml`. So every event heard in a watched directory resolves the path again, and a path
//! that now leads to another file is a change. The directory of the file it leads to is
//! watched too (when it is not the path's own), so a save of a linked file elsewhere is heard.
//! Links are followed from the path's directory: a link swapped in a third directory (a link
//! to a link elsewhere) is seen at the next event in one of the two.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use notify_debouncer_mini::notify::{RecursiveMode, Watcher};

/// The path, the file it leads to, and the directories watched for them.
#[derive(Debug)]
pub(super) struct Target {
    /// The path as given (absolute): links are resolved from it each time.
    path: PathBuf,
    /// Its own name, which an in-place or rename save of it makes events for.
    name: OsString,
    /// Its directory, resolved: watched for the whole life of the follower.
    home: Option<PathBuf>,
    /// The file it leads to now, through every link (itself when it is no link); `None`
    /// while it leads nowhere (a link being replaced by a save that is not atomic).
    resolved: Option<PathBuf>,
    /// The resolved file's directory, when that is not `home`: watched as well.
    away: Option<PathBuf>,
}

impl Target {
    /// Resolves `path` and watches the directory it leads to, when that is not its own (which
    /// the caller watches).
    pub(super) fn new(path: &Path, name: OsString, watcher: &mut dyn Watcher) -> Self {
        let home = path
            .parent()
            .and_then(|dir| std::fs::canonicalize(dir).ok());
        let mut target = Target {
            path: path.to_owned(),
            name,
            home,
            resolved: None,
            away: None,
        };
        target.resolve(watcher);
        target
    }

    /// Whether an event on `event` may be a change to the file: one naming the path itself,
    /// or the file it leads to.
    pub(super) fn is_about(&self, event: &Path) -> bool {
        let Some(name) = event.file_name() else {
            return false;
        };
        // By name, not by whole path: a watcher may report a directory by another spelling
        // (one through a link, as macOS's `/tmp`). A namesake elsewhere in a watched
        // directory costs one reload that changes nothing.
        name == self.name || self.resolved.as_deref().and_then(Path::file_name) == Some(name)
    }

    /// Resolves the path again, and moves the second watch to the directory it now leads to.
    /// True if it leads to another file than before (or now leads nowhere, or somewhere again).
    ///
    /// Blocking, as watching is: a few system calls on a local path.
    pub(super) fn resolve(&mut self, watcher: &mut dyn Watcher) -> bool {
        let resolved = std::fs::canonicalize(&self.path).ok();
        if resolved == self.resolved {
            return false;
        }
        let away = resolved
            .as_deref()
            .and_then(Path::parent)
            .filter(|dir| Some(*dir) != self.home.as_deref())
            .map(Path::to_owned);
        if away != self.away {
            if let Some(old) = self.away.take() {
                // A directory already removed (Kubernetes removes the old one) took its watch
                // with it: the error only says so.
                if let Err(error) = watcher.unwatch(&old) {
                    tracing::debug!(dir = %old.display(), %error, "no watch to remove");
                }
            }
            if let Some(dir) = &away {
                match watcher.watch(dir, RecursiveMode::NonRecursive) {
                    Ok(()) => self.away = away,
                    // It may be gone already, replaced by the next one: the event that says
                    // so resolves the path again.
                    Err(error) => tracing::warn!(
                        dir = %dir.display(),
                        %error,
                        "cannot watch the directory the config file links to; saves made there are not heard"
                    ),
                }
            }
        }
        tracing::debug!(
            from = ?self.resolved,
            to = ?resolved,
            "the config file's path leads to another file"
        );
        self.resolved = resolved;
        true
    }
}
