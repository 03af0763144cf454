//! What the registry capability of one [`Coord`](crate::Coord) shares between its handles:
//! the watched discovery cache (one watch per service name) and the watches registrations
//! keep on their own keys.
//!
//! # What it promises
//!
//! - **Built and closed by the root.** `Coord` makes one on the core context; `Coord::close`
//!   stops its watches after the store refuses new calls.

use crate::registry::discovery::Discovery;
use crate::registry::own_keys::OwnKeys;
use crate::store::Store;

/// The registry capability's shared state; see the [module docs](self).
#[derive(Debug)]
pub(crate) struct RegistryShared {
    pub discovery: Discovery,
    /// The watches registrations keep on their own keys, one per service name.
    pub own_keys: OwnKeys,
}

impl RegistryShared {
    pub fn new(store: &Store) -> Self {
        RegistryShared {
            discovery: Discovery::new(store.clone()),
            own_keys: OwnKeys::new(store.clone()),
        }
    }
}
