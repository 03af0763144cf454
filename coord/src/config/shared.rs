//! What the config capability of one [`Coord`](crate::Coord) shares between its handles: the
//! watch hub (one store watch per prefix, however many `Live`s read it, and the snapshot
//! files), the rollout status reporters and the key ring secrets are sealed with.
//!
//! # What it promises
//!
//! - **Built and closed by the root.** `Coord` makes one on the core context and closes it in
//!   the order `Coord::close` states: the status reporters with the store (no status is
//!   written after the close began), the hub after (every `Live` keeps its last value).

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use arc_swap::ArcSwapOption;

use crate::config::hub::WatchHub;
use crate::config::status::reporter::StatusReporters;
use crate::keyring::KeyRing;
use crate::store::Store;

/// The config capability's shared state; see the [module docs](self).
#[derive(Debug)]
pub(crate) struct ConfigShared {
    pub hub: Arc<WatchHub>,
    /// The rollout status keys of the `Live` handles.
    pub status: StatusReporters,
    /// The key ring secrets are sealed and opened with (`None`: secrets are written plain and
    /// a sealed value does not open). Swapped whole when a rotation hands out a new ring.
    pub keys: Arc<ArcSwapOption<KeyRing>>,
    /// Plain values for secrets are read as they are (a migration in progress); otherwise,
    /// with a key ring, a plain secret is refused.
    pub accept_plain: Arc<AtomicBool>,
}

impl ConfigShared {
    pub fn new(store: &Store, sync_interval: Option<Duration>) -> Self {
        ConfigShared {
            hub: Arc::new(WatchHub::new(store.clone(), sync_interval)),
            status: StatusReporters::new(store),
            keys: Arc::default(),
            accept_plain: Arc::default(),
        }
    }
}
