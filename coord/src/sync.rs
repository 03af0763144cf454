//! Synchronisation helpers shared by the modules.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `mutex`, going on if a panic poisoned it.
///
/// Every `std` mutex in coord guards plain data changed by single inserts, removes or
/// assignments, so a panic elsewhere cannot leave it half-written; refusing to go on would turn
/// one panic into a panic in every later caller.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
