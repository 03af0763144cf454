//! What the config capability of one [`Coord`](crate::Coord) shares between its handles: the
//! watch hub (one store watch per prefix, however many `Live`s read it, and the snapshot
//! files) and the rollout status reporters.
//!
//! # What it promises
//!
//! - **Built and closed by the root.** `Coord` makes one on the core context and closes it in
//!   the order `Coord::close` states: the status reporters with the store (no status is
//!   written after the close began), the hub after (every `Live` keeps its last value).

use std::sync::Arc;
use std::time::Duration;

use crate::config::hub::WatchHub;
use crate::config::status::reporter::StatusReporters;
use crate::store::Store;

/// The config capability's shared state; see the [module docs](self).
#[derive(Debug)]
pub(crate) struct ConfigShared {
    pub hub: Arc<WatchHub>,
    /// The rollout status keys of the `Live` handles.
    pub status: StatusReporters,
}

impl ConfigShared {
    pub fn new(store: &Store, sync_interval: Option<Duration>) -> Self {
        ConfigShared {
            hub: Arc::new(WatchHub::new(store.clone(), sync_interval)),
            status: StatusReporters::new(store),
        }
    }
}
