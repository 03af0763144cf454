//! The stored bytes of a config key as the runtime keeps them: shared between snapshots, with
//! the revision that wrote them.

use std::sync::Arc;

/// One stored value and the revision that wrote it, shared by every snapshot that holds it
/// unchanged. Cloning it is O(1); it derefs to the value's bytes.
///
/// Equal when the bytes are: the mod revision says where a value came from (for
/// `Live::explain`), not what it is. Two snapshots that share the bytes for a key hold the
/// same write ([`RawValue::ptr_eq`]), except that a relist after an offline start keeps the
/// bytes of an unchanged value and gives them the store's mod revision.
#[derive(Clone, Debug)]
pub(crate) struct RawValue {
    bytes: Arc<[u8]>,
    /// The revision of the write that stored these bytes; 0 if unknown (a snapshot read
    /// from disk at an offline start), and for a gray release's value the gray key's.
    mod_revision: i64,
}

impl RawValue {
    pub fn new(bytes: impl Into<Arc<[u8]>>, mod_revision: i64) -> Self {
        RawValue {
            bytes: bytes.into(),
            mod_revision,
        }
    }

    /// The revision of the write that stored the value (0 if unknown).
    pub fn mod_revision(&self) -> i64 {
        self.mod_revision
    }

    /// The same bytes (shared, not copied), written at `mod_revision`.
    pub fn rewritten_at(&self, mod_revision: i64) -> Self {
        RawValue {
            bytes: Arc::clone(&self.bytes),
            mod_revision,
        }
    }

    /// True if both share their bytes (not merely equal ones): the value did not move.
    pub fn ptr_eq(&self, other: &RawValue) -> bool {
        Arc::ptr_eq(&self.bytes, &other.bytes)
    }
}

impl std::ops::Deref for RawValue {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

impl PartialEq for RawValue {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}

impl Eq for RawValue {}

/// Full key → raw value, as a persistent map: a snapshot is a cheap clone of the previous one
/// with the changed keys replaced (O(k log n) for k changes among n keys), and every value a
/// revision did not change is the same `Arc` in both, which is how a `Live` tells that its
/// keys did not move.
pub(crate) type RawValues = imbl::OrdMap<String, RawValue>;
