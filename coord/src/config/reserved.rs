//! `/coord/` is coord's own: release records, gray releases, instance statuses, published
//! schemas, and what comes next (plans, policies) live under it.
//!
//! # What it promises
//!
//! No public entry point of the config center takes a key or prefix under `/coord` for a
//! write, a release or a release read: `set`, `delete`, `compare_and_set`, batches,
//! `publish`, every release (`release`, `release_raw`, `rollback`, `promote`, `abort`),
//! `history`, `diff`, `rollout`, `wait_rollout` and schemas. A release under
//! `/coord/gray/config` would otherwise write a record that breaks every later release of
//! `/config`, and `history("/coord")` would read (or once, record) the records themselves.
//! Plain reads (`get`, `list`, `watch`) stay open: looking at coord's keys harms nothing.

use crate::error::{Error, Result};

/// The root of coord's own keys.
pub const RESERVED_ROOT: &str = "/coord";

/// True if `key` (a key or a prefix, with or without a trailing `/`) is `/coord` or under it.
pub(crate) fn is_reserved(key: &str) -> bool {
    key.strip_prefix(RESERVED_ROOT)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Refuses `key` (named `field` in the error) if it is coord's own.
///
/// # Errors
///
/// [`Error::InvalidArgument`] naming `field`, the key and why.
pub(crate) fn refuse_reserved(field: &str, key: &str) -> Result<()> {
    if is_reserved(key) {
        return Err(Error::invalid_argument(
            field,
            format!(
                "`{key}` is under `{RESERVED_ROOT}/`, which is reserved for coord's own records \
                 (releases, gray releases, statuses, schemas); use another prefix"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coord_and_everything_under_it_is_reserved() {
        for key in [
            "/coord",
            "/coord/",
            "/coord/gray/config",
            "/coord/releases/a//head",
        ] {
            assert!(is_reserved(key), "{key}");
            assert!(refuse_reserved("prefix", key).is_err(), "{key}");
        }
        for key in ["/coordinates", "/config/coord", "/", "/coordx/a"] {
            assert!(!is_reserved(key), "{key}");
        }
    }
}
