//! The task that follows the file: it hears the watcher's events and applies each save.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use notify_debouncer_mini::notify::RecommendedWatcher;
use notify_debouncer_mini::{DebounceEventResult, Debouncer};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::parse::{Keys, parse};
use super::target::Target;
use super::{FileError, FileErrorKind, FileOptions};
use crate::store::memory::MemoryStore;
use crate::store::{Txn, TxnOp};
use crate::sync::lock;

/// What a [`LocalFile`](super::LocalFile) and its follower share: the file, the options its
/// saves are applied with, and what the latest save did.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) path: PathBuf,
    pub(super) last_error: Mutex<Option<FileError>>,
    pub(super) options: Mutex<FileOptions>,
    pub(super) revision: AtomicI64,
    pub(super) watching: AtomicBool,
}

/// What the follower heard while it waited.
enum Heard {
    /// The file changed (or may have): it is read once it has been quiet for a while.
    Change,
    /// It has been quiet for the quiet period since the last change.
    Quiet,
    /// Something else in its directory changed.
    Nothing,
}

/// The task that applies each save to the store.
pub(super) struct Follower {
    pub(super) shared: Arc<Shared>,
    pub(super) memory: MemoryStore,
    /// The keys of the last version applied.
    pub(super) applied: Keys,
}

impl Follower {
    /// Applies saves until the store is closed or dropped; then drops the watcher, which ends
    /// its threads.
    pub(super) async fn follow(
        mut self,
        mut target: Target,
        mut events: mpsc::UnboundedReceiver<DebounceEventResult>,
        mut closed: watch::Receiver<bool>,
        mut debouncer: Debouncer<RecommendedWatcher>,
    ) {
        // When the file is next read: set by an event on it and pushed back by each later one,
        // so a save is read once its writer has been quiet for the quiet period, not between
        // two parts of it (which may each parse).
        let mut due: Option<Instant> = None;
        loop {
            let quiet = async {
                match due {
                    Some(due) => tokio::time::sleep_until(due).await,
                    None => std::future::pending().await,
                }
            };
            let heard = tokio::select! {
                // Closed or dropped: either way nobody reads this store any more.
                _ = closed.wait_for(|closed| *closed) => break,
                () = quiet => Heard::Quiet,
                event = events.recv() => match event {
                    Some(Ok(events)) => {
                        // Any event in a watched directory may be a link swapped under the
                        // path (a Kubernetes ConfigMap update names no file of ours).
                        let moved = target.resolve(debouncer.watcher());
                        if moved || events.iter().any(|event| target.is_about(&event.path)) {
                            Heard::Change
                        } else {
                            Heard::Nothing
                        }
                    }
                    Some(Err(error)) => {
                        // The watcher may have dropped events (a full inotify queue): read the
                        // file anyway, in case one of them was a save.
                        tracing::warn!(%error, "watching the config file failed; reading it again");
                        target.resolve(debouncer.watcher());
                        Heard::Change
                    }
                    None => {
                        tracing::warn!("the config file watcher stopped; saves are no longer applied");
                        break;
                    }
                },
            };
            match heard {
                Heard::Change => {
                    let quiet_period = lock(&self.shared.options).quiet_period;
                    due = Some(Instant::now() + quiet_period);
                }
                Heard::Quiet => {
                    due = None;
                    if !*closed.borrow() {
                        self.reload().await;
                    }
                }
                Heard::Nothing => {}
            }
        }
        drop(debouncer);
        self.shared.watching.store(false, Ordering::Release);
        tracing::debug!("stopped watching the config file");
    }

    /// Reads the file and applies it, or keeps the last good state and says why.
    async fn reload(&mut self) {
        let path = self.shared.path.clone();
        let allow_empty = lock(&self.shared.options).allow_empty;
        let result = match load(&path).await {
            // Only while keys are loaded: with none, an empty save has nothing to lose.
            Ok(keys) if keys.is_empty() && !self.applied.is_empty() && !allow_empty => {
                Err(FileError::new(&path, FileErrorKind::Empty))
            }
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
    pub(super) async fn apply(&mut self, keys: Keys) -> crate::error::Result<()> {
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
pub(super) async fn load(path: &Path) -> Result<Keys, FileError> {
    let text = tokio::fs::read_to_string(path)
        .await
        .map_err(|e| FileError::new(path, FileErrorKind::Read(e.to_string())))?;
    parse(path, &text)
}
