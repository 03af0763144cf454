//! Map fields: `#[coord(map)]` and `#[coord(map, nested)]`.
//!
//! A map field binds every key under `{prefix}/{key}/` as one entry: per-tenant limits,
//! feature-flag sets, anything keyed by a name that is not known at compile time.
//!
//! - `#[coord(map)]`: each key `{prefix}/{key}/{name}` is one entry, its value the JSON of
//!   `V` (the name is the rest of the key, and may itself hold `/`).
//! - `#[coord(map, nested)]`: each name under `{prefix}/{key}/{name}/...` is one entry, a
//!   `CoordConfig` struct `V` read from the keys under it (validated like any nested struct).
//!
//! # What it promises
//!
//! - **A missing map is empty**, never an error; so is a map whose keys were all deleted.
//! - **One bad entry keeps the last good map.** An entry that does not decode (or, nested,
//!   does not validate) fails the whole build with an error naming that entry's key, so a
//!   `Live` keeps its last good value, as for any other field.
//! - **Updating one entry decodes that entry only.** When a `Live` rebuilds after a change,
//!   it is told which keys moved, and a map field starts from the previous map and
//!   re-reads just the entries those keys belong to. With [`Map<V>`] (a persistent map) the
//!   new struct shares every unchanged entry with the old one and a change of k entries
//!   costs O(k log n); with a `HashMap` or `BTreeMap` the unchanged entries are cloned (no
//!   decoding, but O(n)), so prefer [`Map<V>`] for large maps.
//! - **`publish` writes the whole map**: entries of the new value are written and stored
//!   entries it does not have are deleted, in the same transaction, guarded so that an entry
//!   written meanwhile fails the publish rather than survive it unseen.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::BuildHasher;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::config::layout::Layout;
use crate::config::schema::{CoordConfig, Source, Values, nested_values};
use crate::error::{Error, Result};

/// A persistent map from entry name to `V` for `#[coord(map)]` fields: cloning it is O(1),
/// an update copies only the path to the changed entry, and two versions share every entry
/// neither changed. Reads are those of a `BTreeMap` (entries in name order).
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> coord::Result<()> {
/// use coord::config::Map;
/// use coord::{Coord, CoordConfig};
///
/// #[derive(CoordConfig, Debug, Clone)]
/// struct Pool {
///     size: u32,
/// }
///
/// #[derive(CoordConfig, Debug, Clone)]
/// #[coord(prefix = "/config/limits")]
/// struct Limits {
///     /// Requests per second, per tenant: `/config/limits/tenants/{tenant}`.
///     #[coord(map)]
///     tenants: Map<u32>,
///     /// One struct per pool: `/config/limits/pools/{pool}/size`.
///     #[coord(map, nested)]
///     pools: Map<Pool>,
/// }
///
/// let coord = Coord::in_memory();
/// coord.config().set("/config/limits/tenants/acme", &100).await?;
/// coord.config().set("/config/limits/pools/main/size", &4).await?;
/// let live = coord.live::<Limits>().await?;
/// assert_eq!(live.load().tenants.get("acme"), Some(&100));
/// assert_eq!(live.load().pools.get("main").map(|pool| pool.size), Some(4));
///
/// let before = live.load_full();
/// let mut updates = live.subscribe();
/// coord.config().set("/config/limits/tenants/globex", &5).await?;
/// updates.changed().await.expect("live handle open");
/// let after = live.load_full();
/// assert_eq!(after.tenants.len(), 2);
/// // The unchanged entry is the very same allocation in both versions.
/// assert!(std::sync::Arc::ptr_eq(
///     before.tenants.get_arc("acme").unwrap(),
///     after.tenants.get_arc("acme").unwrap(),
/// ));
/// # Ok(())
/// # }
/// ```
pub struct Map<V> {
    entries: imbl::OrdMap<String, Arc<V>>,
}

impl<V> Map<V> {
    /// An empty map.
    pub fn new() -> Self {
        Map {
            entries: imbl::OrdMap::new(),
        }
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True if there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry named `name`.
    pub fn get(&self, name: &str) -> Option<&V> {
        self.entries.get(name).map(|value| &**value)
    }

    /// The entry named `name` as the shared `Arc` every version of the map that did not
    /// change it holds: keep it as long as you like, or compare it with [`Arc::ptr_eq`].
    pub fn get_arc(&self, name: &str) -> Option<&Arc<V>> {
        self.entries.get(name)
    }

    /// True if there is an entry named `name`.
    pub fn contains_key(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// The entries in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &V)> + '_ {
        self.entries
            .iter()
            .map(|(name, value)| (name.as_str(), &**value))
    }

    /// The names in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> + '_ {
        self.entries.keys().map(String::as_str)
    }

    /// The values in name order.
    pub fn values(&self) -> impl Iterator<Item = &V> + '_ {
        self.entries.values().map(|value| &**value)
    }

    /// Sets the entry `name`; returns the one it replaced.
    pub fn insert(&mut self, name: impl Into<String>, value: V) -> Option<Arc<V>> {
        self.entries.insert(name.into(), Arc::new(value))
    }

    /// Removes the entry `name`; returns it.
    pub fn remove(&mut self, name: &str) -> Option<Arc<V>> {
        self.entries.remove(name)
    }
}

impl<V> Default for Map<V> {
    fn default() -> Self {
        Map::new()
    }
}

impl<V> Clone for Map<V> {
    /// O(1): the clone shares every entry.
    fn clone(&self) -> Self {
        Map {
            entries: self.entries.clone(),
        }
    }
}

impl<V: fmt::Debug> fmt::Debug for Map<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<V: PartialEq> PartialEq for Map<V> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len()
            && self
                .iter()
                .zip(other.iter())
                .all(|((a, x), (b, y))| a == b && x == y)
    }
}

impl<V: Eq> Eq for Map<V> {}

impl<K: Into<String>, V> FromIterator<(K, V)> for Map<V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut map = Map::new();
        for (name, value) in iter {
            map.insert(name, value);
        }
        map
    }
}

impl<V: Serialize> Serialize for Map<V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for Map<V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let entries = BTreeMap::<String, V>::deserialize(deserializer)?;
        Ok(entries.into_iter().collect())
    }
}

/// A type a `#[coord(map)]` field can have: [`Map<V>`] (entries shared between versions),
/// `HashMap<String, V>` or `BTreeMap<String, V>` (unchanged entries cloned on a rebuild, so
/// `V: Clone`).
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a #[coord(map)] field",
    label = "not a map of String to a value",
    note = "a map field is a coord::config::Map<V>, HashMap<String, V> or BTreeMap<String, V>; in a std map V must be Clone, since unchanged entries are carried over on every reload"
)]
pub trait MapField: Clone + Send + Sync + 'static {
    /// The entry type.
    type Value;

    /// An empty map.
    fn empty() -> Self;

    /// Sets one entry.
    fn set_entry(&mut self, name: String, value: Self::Value);

    /// Removes one entry (if there is one).
    fn remove_entry(&mut self, name: &str);

    /// Every entry, in any order.
    fn entries(&self) -> Box<dyn Iterator<Item = (&str, &Self::Value)> + '_>;
}

impl<V: Send + Sync + 'static> MapField for Map<V> {
    type Value = V;

    fn empty() -> Self {
        Map::new()
    }

    fn set_entry(&mut self, name: String, value: V) {
        self.insert(name, value);
    }

    fn remove_entry(&mut self, name: &str) {
        self.remove(name);
    }

    fn entries(&self) -> Box<dyn Iterator<Item = (&str, &V)> + '_> {
        Box::new(self.iter())
    }
}

impl<V, S> MapField for HashMap<String, V, S>
where
    V: Clone + Send + Sync + 'static,
    S: BuildHasher + Default + Clone + Send + Sync + 'static,
{
    type Value = V;

    fn empty() -> Self {
        HashMap::default()
    }

    fn set_entry(&mut self, name: String, value: V) {
        self.insert(name, value);
    }

    fn remove_entry(&mut self, name: &str) {
        self.remove(name);
    }

    fn entries(&self) -> Box<dyn Iterator<Item = (&str, &V)> + '_> {
        Box::new(self.iter().map(|(name, value)| (name.as_str(), value)))
    }
}

impl<V: Clone + Send + Sync + 'static> MapField for BTreeMap<String, V> {
    type Value = V;

    fn empty() -> Self {
        BTreeMap::new()
    }

    fn set_entry(&mut self, name: String, value: V) {
        self.insert(name, value);
    }

    fn remove_entry(&mut self, name: &str) {
        self.remove(name);
    }

    fn entries(&self) -> Box<dyn Iterator<Item = (&str, &V)> + '_> {
        Box::new(self.iter().map(|(name, value)| (name.as_str(), value)))
    }
}

/// Reads a `#[coord(map)]` field stored under `key`. With `prev` (the field as last built)
/// and a source that knows which keys changed since, only those entries are decoded.
///
/// # Errors
///
/// [`Error::Decode`] naming the entry's full key if its value is not JSON for `V`.
pub fn read_map<M>(source: &Source<'_>, key: &str, prev: Option<&M>) -> Result<M>
where
    M: MapField,
    M::Value: DeserializeOwned,
{
    read(source, key, prev, Layout::Json, |map, name| {
        let full_key = map.full_key(name);
        let raw = map.raw(name)?;
        Some(map.decode_raw(&full_key, raw))
    })
}

/// Reads a `#[coord(map, nested)]` field stored under `key` (see [`read_map`]).
///
/// # Errors
///
/// The entry struct's error (a key that does not decode, a missing required key, a failed
/// `validate`), naming keys under the entry.
pub fn read_nested_map<M>(source: &Source<'_>, key: &str, prev: Option<&M>) -> Result<M>
where
    M: MapField,
    M::Value: CoordConfig,
{
    read(source, key, prev, Layout::Nested, |map, name| {
        let entry = map.at(name);
        entry
            .has_keys()
            .then(|| <M::Value as CoordConfig>::from_source(&entry))
    })
}

/// The shared walk of both layouts. `decode(map_source, name)` reads one entry, `None` if
/// it has no keys (so is not in the map).
fn read<M: MapField>(
    source: &Source<'_>,
    key: &str,
    prev: Option<&M>,
    layout: Layout,
    decode: impl Fn(&Source<'_>, &str) -> Option<Result<M::Value>>,
) -> Result<M> {
    let map_source = source.at(key);
    if let (Some(prev), Some(changed)) = (prev, map_source.changed_names(layout)) {
        let mut map = prev.clone();
        for name in changed {
            match decode(&map_source, &name) {
                Some(value) => map.set_entry(name, value?),
                None => map.remove_entry(&name),
            }
        }
        return Ok(map);
    }
    let mut map = M::empty();
    for name in map_source.names(layout) {
        if let Some(value) = decode(&map_source, &name) {
            map.set_entry(name, value?);
        }
    }
    Ok(map)
}

/// A `#[coord(map)]` field's values for [`CoordConfig::to_values`]: `{key}/{name}` per entry.
///
/// # Errors
///
/// [`Error::Invalid`] naming the entry's (relative) key if its value does not serialize.
pub fn write_map<M>(key: &str, map: &M) -> Result<Values>
where
    M: MapField,
    M::Value: Serialize,
{
    let mut values = Values::new();
    for (name, value) in map.entries() {
        check_name(key, name, Layout::Json)?;
        values.push(crate::config::schema::encode(
            &format!("{key}/{name}"),
            value,
        )?);
    }
    Ok(values)
}

/// A `#[coord(map, nested)]` field's values: each entry's keys under `{key}/{name}/`.
///
/// # Errors
///
/// The entry struct's error, its key made relative to the outer struct.
pub fn write_nested_map<M>(key: &str, map: &M) -> Result<Values>
where
    M: MapField,
    M::Value: CoordConfig,
{
    let mut values = Values::new();
    for (name, value) in map.entries() {
        check_name(key, name, Layout::Nested)?;
        values.extend(nested_values(&format!("{key}/{name}"), value.to_values())?);
    }
    Ok(values)
}

/// An entry name that would not read back as itself is refused before anything is written.
fn check_name(key: &str, name: &str, layout: Layout) -> Result<()> {
    let problem = if name.is_empty() {
        "is empty"
    } else if layout == Layout::Nested && name.contains('/') {
        "contains `/`, which would make it part of the entry's field keys"
    } else if name.contains('\0') {
        "contains a NUL character"
    } else {
        return Ok(());
    };
    Err(Error::Invalid {
        key: format!("{key}/{name}"),
        reason: format!("the map entry's name {problem}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_names_follow_the_layout() {
        assert_eq!(Layout::Json.entry_name("acme"), Some("acme"));
        assert_eq!(Layout::Json.entry_name("eu/acme"), Some("eu/acme"));
        assert_eq!(Layout::Json.entry_name(""), None);
        assert_eq!(Layout::Nested.entry_name("acme/limit"), Some("acme"));
        assert_eq!(Layout::Nested.entry_name("acme/db/host"), Some("acme"));
        assert_eq!(Layout::Nested.entry_name("acme"), None);
        assert_eq!(Layout::Nested.entry_name("/limit"), None);
    }

    #[test]
    fn map_round_trips_through_json_in_name_order() {
        let map: Map<u32> = [("b", 2), ("a", 1)].into_iter().collect();
        let json = serde_json::to_string(&map).unwrap();
        assert_eq!(json, r#"{"a":1,"b":2}"#);
        let back: Map<u32> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, map);
        assert_ne!(back, Map::from_iter([("a", 1)]));
    }

    #[test]
    fn a_clone_shares_entries_until_one_side_changes_them() {
        let mut first: Map<String> = [("a", "x".to_owned()), ("b", "y".to_owned())]
            .into_iter()
            .collect();
        let second = first.clone();
        first.insert("a", "changed".to_owned());
        assert_eq!(second.get("a").map(String::as_str), Some("x"));
        assert!(Arc::ptr_eq(
            first.get_arc("b").unwrap(),
            second.get_arc("b").unwrap()
        ));
    }

    #[test]
    fn entry_names_that_would_not_read_back_are_refused() {
        let map: Map<u32> = [("", 1)].into_iter().collect();
        let err = write_map("tenants", &map).unwrap_err();
        assert!(
            matches!(&err, Error::Invalid { key, .. } if key == "tenants/"),
            "{err:?}"
        );
        assert!(write_map("tenants", &Map::from_iter([("eu/acme", 1)])).is_ok());
    }
}
