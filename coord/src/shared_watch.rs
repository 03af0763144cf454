//! One background watch per key, shared by everyone who asks for that key.
//!
//! The config hub (one watch per key range, for `Live` handles and the read cache) and the
//! registry's discovery cache (one watch per service name, for watchers, caches and channels)
//! both need the same machinery; [`SharedWatches`] is it, written once. What each watch
//! publishes and how it follows the store is the caller's: it supplies the shared state and
//! the start step, and [`SharedWatches`] runs the protocol around them.
//!
//! What it promises:
//! - **One watch per key.** While any handle ([`Arc<SharedWatch<S>>`]) of a key lives, every
//!   [`watch`](SharedWatches::watch) of that key returns that handle; nobody starts a second.
//! - **Nobody sees a half-started watch.** The first caller (the *starter*) runs the start
//!   step, which reads the first list and publishes it; callers who come meanwhile (*joiners*)
//!   wait for it, and every caller gets the handle only after the first list is published.
//! - **A failed start is retried by the joiners, never left behind.** If the start step fails
//!   (or the starter's future is dropped), the key is forgotten *before* the joiners are woken;
//!   the starter gets the error, and each joiner tries again: one of them becomes the new
//!   starter, the others join it. Nobody can find the dead watch again.
//! - **The task lives as long as the handles.** Dropping the last handle aborts the background
//!   task (and so closes its store watch); the next `watch` of that key starts a new one.
//! - **[`close`](SharedWatches::close) stops every task** (for `Coord::close`): handles keep
//!   whatever they last published, and see nothing more.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::watch;

use crate::error::Result;
use crate::sync::lock;

/// A shared watch: the caller's state `S` (reachable through `Deref`) and the task that keeps
/// it. Dropping the last `Arc` stops the task.
pub(crate) struct SharedWatch<S> {
    state: S,
    /// `true` once the first list is published; the sender is dropped if the start failed.
    ready: watch::Receiver<bool>,
    task: Mutex<Option<tokio::task::AbortHandle>>,
}

impl<S> SharedWatch<S> {
    fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    fn stop(&self) {
        if let Some(task) = lock(&self.task).take() {
            task.abort();
        }
    }
}

impl<S> std::ops::Deref for SharedWatch<S> {
    type Target = S;

    fn deref(&self) -> &S {
        &self.state
    }
}

impl<S: std::fmt::Debug> std::fmt::Debug for SharedWatch<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedWatch")
            .field("state", &self.state)
            .field("ready", &self.is_ready())
            .finish()
    }
}

impl<S> Drop for SharedWatch<S> {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The shared watches of one kind (ranges, service names) of one `Coord`. See the
/// [module docs](self).
pub(crate) struct SharedWatches<K, S> {
    watches: Mutex<HashMap<K, Weak<SharedWatch<S>>>>,
}

impl<K, S> std::fmt::Debug for SharedWatches<K, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedWatches")
            .field("keys", &lock(&self.watches).len())
            .finish()
    }
}

impl<K, S> Default for SharedWatches<K, S> {
    fn default() -> Self {
        SharedWatches {
            watches: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash + Clone, S> SharedWatches<K, S> {
    /// Stops every watch's task and forgets them all: handles keep their last state.
    pub fn close(&self) {
        let watches = std::mem::take(&mut *lock(&self.watches));
        for watch in watches.values().filter_map(Weak::upgrade) {
            watch.stop();
        }
    }

    /// Keys watched right now (including one whose first list is still being read).
    pub fn len(&self) -> usize {
        lock(&self.watches)
            .values()
            .filter(|w| w.strong_count() > 0)
            .count()
    }

    /// The watch of `key` if one is running and has published its first list.
    pub fn get(&self, key: &K) -> Option<Arc<SharedWatch<S>>> {
        let watch = lock(&self.watches).get(key).and_then(Weak::upgrade)?;
        watch.is_ready().then_some(watch)
    }

    /// The watch of `key`, started if needed; returns once its first list is published.
    ///
    /// If this call is the starter, `new` builds the shared state and what only the starter
    /// keeps (its senders, say), and `start` gets the latter: it reads and publishes the first
    /// list and returns the future that follows the store from there, which is spawned.
    /// A joiner calls neither.
    ///
    /// # Errors
    ///
    /// The error of `start` if this call was the starter and it failed. A joiner whose starter
    /// failed tries again (see the module docs) rather than fail.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe. A dropped starter counts as a failed start: its joiners try again.
    pub async fn watch<P, F, Fut, Run>(
        &self,
        key: &K,
        new: impl FnOnce() -> (S, P),
        start: F,
    ) -> Result<Arc<SharedWatch<S>>>
    where
        F: FnOnce(P) -> Fut,
        Fut: Future<Output = Result<Run>>,
        Run: Future<Output = ()> + Send + 'static,
    {
        let (shared, ready, private) = loop {
            let existing = {
                let mut watches = lock(&self.watches);
                match watches.get(key).and_then(Weak::upgrade) {
                    Some(existing) => existing,
                    None => {
                        let (state, private) = new();
                        let (ready_tx, ready_rx) = watch::channel(false);
                        let shared = Arc::new(SharedWatch {
                            state,
                            ready: ready_rx,
                            task: Mutex::new(None),
                        });
                        watches.retain(|_, w| w.strong_count() > 0);
                        watches.insert(key.clone(), Arc::downgrade(&shared));
                        break (shared, ready_tx, private);
                    }
                }
            };
            let mut ready = existing.ready.clone();
            if ready.wait_for(|ready| *ready).await.is_ok() {
                return Ok(existing);
            }
            // The start failed; the starter forgot the key before waking us, so this finds
            // either nothing (and we start) or a newer start to join.
        };
        // From here until `ready` is sent, dropping this future (or failing) must forget the
        // key before the joiners wake: the guard does both, in that order.
        let guard = StartGuard {
            watches: &self.watches,
            key,
            shared: &shared,
            ready: Some(ready),
        };
        let run = start(private).await?;
        let task = tokio::spawn(run);
        *lock(&shared.task) = Some(task.abort_handle());
        guard.succeed();
        Ok(shared)
    }
}

/// Undoes a start that did not complete; see [`SharedWatches::watch`].
struct StartGuard<'a, K: Eq + Hash, S> {
    watches: &'a Mutex<HashMap<K, Weak<SharedWatch<S>>>>,
    key: &'a K,
    shared: &'a Arc<SharedWatch<S>>,
    ready: Option<watch::Sender<bool>>,
}

impl<K: Eq + Hash, S> StartGuard<'_, K, S> {
    fn succeed(mut self) {
        if let Some(ready) = self.ready.take() {
            ready.send_replace(true);
        }
    }
}

impl<K: Eq + Hash, S> Drop for StartGuard<'_, K, S> {
    fn drop(&mut self) {
        let Some(ready) = self.ready.take() else {
            return;
        };
        {
            let mut watches = lock(self.watches);
            // Only our own entry: `close()` may have emptied the map, and a new start may
            // have taken the key since.
            if watches
                .get(self.key)
                .is_some_and(|w| std::ptr::eq(w.as_ptr(), Arc::as_ptr(self.shared)))
            {
                watches.remove(self.key);
            }
        }
        // Now the joiners may wake: the key is free.
        drop(ready);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;
    use crate::error::Error;

    /// The state each test watch shares: a receiver of what its task publishes.
    type State = watch::Receiver<u32>;

    fn new_state() -> (State, watch::Sender<u32>) {
        let (tx, rx) = watch::channel(0);
        (rx, tx)
    }

    /// A start step that publishes `value` and runs until aborted, holding the sender.
    async fn publish(
        tx: watch::Sender<u32>,
        value: u32,
    ) -> Result<impl Future<Output = ()> + Send + 'static> {
        tx.send_replace(value);
        Ok(async move {
            let _tx = tx;
            std::future::pending::<()>().await;
        })
    }

    fn failure() -> Error {
        Error::Unavailable {
            endpoints: String::new(),
            reason: "first list failed".into(),
        }
    }

    /// Waits until `n` handles of the watch of `key` exist: the starter's and `n - 1` waiting
    /// joiners'.
    async fn waiting(watches: &SharedWatches<&'static str, State>, key: &'static str, n: usize) {
        while lock(&watches.watches)
            .get(key)
            .map_or(0, Weak::strong_count)
            < n
        {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn a_failed_start_is_retried_by_the_waiting_joiners() {
        let watches: SharedWatches<&str, State> = SharedWatches::default();
        let starts = &AtomicUsize::new(0);
        let (fail_tx, fail_rx) = tokio::sync::oneshot::channel::<()>();

        // The starter's first list fails once both joiners wait on it.
        let starter = watches.watch(&"k", new_state, |_tx| async move {
            starts.fetch_add(1, Ordering::SeqCst);
            let _ = fail_rx.await;
            Err::<std::future::Ready<()>, _>(failure())
        });
        let joiner = || {
            watches.watch(&"k", new_state, |tx| async move {
                starts.fetch_add(1, Ordering::SeqCst);
                publish(tx, 7).await
            })
        };
        let release = async {
            waiting(&watches, "k", 3).await;
            let _ = fail_tx.send(());
        };
        let all = async { tokio::join!(starter, joiner(), joiner(), release) };
        let (started, first, second, ()) = tokio::time::timeout(Duration::from_secs(30), all)
            .await
            .expect("the joiners neither hang nor spin on the failed start");

        assert!(matches!(started, Err(Error::Unavailable { .. })));
        let first = first.expect("a joiner retries the start itself");
        let second = second.expect("the other joins the retry");
        assert!(Arc::ptr_eq(&first, &second), "one retry, shared");
        assert_eq!(*first.borrow(), 7);
        assert_eq!(starts.load(Ordering::SeqCst), 2);
        let again = watches.get(&"k").expect("watched and ready");
        assert!(Arc::ptr_eq(&again, &first));
        assert_eq!(watches.len(), 1);
    }

    #[tokio::test]
    async fn a_dropped_starter_lets_a_joiner_start() {
        let watches: SharedWatches<&str, State> = SharedWatches::default();
        let starter = watches.watch(&"k", new_state, |_tx| async {
            std::future::pending::<()>().await;
            Ok(async {})
        });
        let joiner = watches.watch(&"k", new_state, |tx| publish(tx, 1));
        tokio::pin!(joiner);
        // The starter takes the key, the joiner waits on it, then the starter is dropped.
        tokio::select! {
            biased;
            _ = starter => unreachable!("the start never completes"),
            _ = &mut joiner => unreachable!("the joiner waits for the starter"),
            () = waiting(&watches, "k", 2) => {}
        }
        let joined = joiner.await.expect("the joiner starts it");
        assert_eq!(*joined.borrow(), 1);
    }

    #[tokio::test]
    async fn the_task_stops_with_the_last_handle_and_on_close() {
        let watches: SharedWatches<&str, State> = SharedWatches::default();
        let start = || watches.watch(&"k", new_state, |tx| publish(tx, 1));
        let first = start().await.unwrap();
        let second = start().await.unwrap();
        assert!(Arc::ptr_eq(&first, &second), "one watch per key");
        let mut rx: State = (**first).clone();
        drop((first, second));
        // The task held the sender: aborted, it drops it.
        assert!(rx.wait_for(|_| false).await.is_err());
        assert_eq!(watches.len(), 0);

        let third = start().await.unwrap();
        let mut rx: State = (**third).clone();
        watches.close();
        assert!(rx.wait_for(|_| false).await.is_err());
        assert_eq!(watches.len(), 0);
        assert!(watches.get(&"k").is_none());
    }
}
