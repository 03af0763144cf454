//! `#[derive(CoordConfig)]` for the `coord` crate. Use it through `coord::CoordConfig`.
//!
//! The work is split as in serde_derive: `ast` reads the input into a small model, `attr`
//! parses every `#[coord(...)]` once, `check` applies the rules between fields, `expand`
//! generates the impl. Errors are collected in a `Ctxt` and reported together, each at the
//! token that is wrong.

mod ast;
mod attr;
mod check;
mod ctxt;
mod expand;
mod symbol;

use proc_macro::TokenStream;
use syn::{parse_macro_input, DeriveInput};

/// Derives `coord::config::CoordConfig` (and `HasPrefix` when a prefix is given) for a struct
/// with named fields: each field is one key under the prefix holding its JSON value. A field's
/// doc comment is its description (shown by `coord::config::describe`).
///
/// # Struct attributes
///
/// - `#[coord(prefix = "/config/name")]`: the keys live at `{prefix}/{key}`. Without it the
///   struct can only be bound with `live_at(prefix)` / `publish_at(prefix, ..)`.
/// - `#[coord(validate = "path::to::check")]` with `fn check(&Self) -> Result<(), String>`:
///   run on every value built from the store and on every value published; a value it refuses
///   is never made live and never written.
/// - `#[coord(crate = "path::to::coord")]`: the path generated code names the coord crate by,
///   for crates that use coord through a re-export (`crate = "my_platform::coord"`), as
///   `#[serde(crate = "...")]` does. Default `::coord`.
///
/// # Field attributes
///
/// - `#[coord(key = "other-name")]`: the key, instead of the field name. One path segment.
/// - `#[coord(default = EXPR)]`: the value when the key is missing; `#[coord(default)]` uses
///   `Default::default()`. Without either, a missing key is an error at bind time (the last
///   good value stays live on a running `Live`).
/// - `#[coord(secret)]`: the type must be `coord::Secret<T>`; never shown by `Debug`, logs or
///   `describe`, and its default is never seeded.
/// - `#[coord(nested)]`: the type is another `CoordConfig`, stored under `{prefix}/{key}/`,
///   with its own defaults and `validate`.
/// - `#[coord(map)]`: the type is `coord::config::Map<V>`, `HashMap<String, V>` or
///   `BTreeMap<String, V>`, and every key `{prefix}/{key}/{name}` is one entry, holding `V` as
///   JSON. A missing map is empty. `#[coord(map, nested)]`: each `{prefix}/{key}/{name}/` is
///   one entry, a `CoordConfig` struct `V`. A reload re-reads only the entries whose keys
///   changed; `Map<V>` shares the others with the previous value (see `coord::config::Map`).
///   A bad entry keeps the last good value and names its key; `publish` writes the whole map
///   and deletes stored entries it does not have.
///   `coord::config::Map` has an example of both.
///
/// # `Option` fields
///
/// A field whose type is written `Option<T>`, `std::option::Option<T>` or
/// `core::option::Option<T>` is `None` when its key is missing, as serde treats an absent
/// `Option` field; it needs no `#[coord(default)]` and is listed as not required, with default
/// JSON `null`. `publish` writes `None` as JSON `null`, which reads back as `None`. The type is
/// recognized by how it is written, as serde does: a type alias of `Option` is not seen through
/// and such a field stays required (add `#[coord(default)]` to it).
#[proc_macro_derive(CoordConfig, attributes(coord))]
pub fn derive_coord_config(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand::derive(&input).into()
}
