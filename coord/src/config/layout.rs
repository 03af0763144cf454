//! How a map field's stored keys split into its entries: the one rule both the model (which
//! keys a struct reads) and the maps (which entries they hold) follow.

use std::collections::BTreeSet;

/// How a map's stored keys split into entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Layout {
    /// `{map}/{name}` holds the entry's JSON; the name is the whole rest of the key.
    Json,
    /// `{map}/{name}/{field...}` hold the entry struct's keys.
    Nested,
}

impl Layout {
    /// The entry a key under the map belongs to (`rest` is the key after `{map}/`), or
    /// `None` if it belongs to none (an empty name; a key directly under a nested map).
    pub(crate) fn entry_name(self, rest: &str) -> Option<&str> {
        let name = match self {
            Layout::Json => rest,
            Layout::Nested => rest.split_once('/')?.0,
        };
        (!name.is_empty()).then_some(name)
    }
}

/// The distinct names of `keys` (each the part of a key after `{map}/`), in order.
pub(crate) fn names_of<'k>(
    keys: impl Iterator<Item = &'k str>,
    layout: Layout,
) -> BTreeSet<String> {
    keys.filter_map(|rest| layout.entry_name(rest))
        .map(str::to_owned)
        .collect()
}
