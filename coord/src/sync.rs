//! Synchronisation helpers shared by the modules.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// Locks `mutex`, going on if a panic poisoned it.
///
/// Every `std` mutex in coord guards plain data changed by single inserts, removes or
/// assignments, so a panic elsewhere cannot leave it half-written; refusing to go on would turn
/// one panic into a panic in every later caller.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One value of each type, made with `T::default()` on first use: how a lower layer holds
/// state that layers above keep per handle (the session layer's lease renewer on a store
/// handle, the releases' remembered states on a config center) without naming it.
#[derive(Debug, Default)]
pub(crate) struct Slots {
    values: Mutex<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>,
}

impl Slots {
    /// The one `T` of these slots.
    pub(crate) fn get<T: Default + Send + Sync + 'static>(&self) -> Arc<T> {
        let mut values = lock(&self.values);
        let value = values
            .entry(TypeId::of::<T>())
            .or_insert_with(|| Arc::new(T::default()));
        Arc::clone(value)
            .downcast::<T>()
            .unwrap_or_else(|_| unreachable!("the slot of a type holds that type"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_type_has_one_value_made_on_first_use() {
        let slots = Slots::default();
        let a = slots.get::<Mutex<Vec<u8>>>();
        lock(&a).push(1);
        assert_eq!(*lock(&slots.get::<Mutex<Vec<u8>>>()), [1]);
        assert_eq!(*slots.get::<u64>(), 0);
        assert!(Arc::ptr_eq(&a, &slots.get::<Mutex<Vec<u8>>>()));
    }
}
