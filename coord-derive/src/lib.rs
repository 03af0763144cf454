//! `#[derive(CoordConfig)]` for the `coord` crate. Use it through `coord::CoordConfig`.
//!
//! The work is split as in serde_derive: `ast` reads the input into a small model, `attr`
//! parses every `#[coord(...)]` once, `check` applies the rules between fields, `expand`
//! generates the impl. Errors are collected in a `Ctxt` and reported together, each at the
//! token that is wrong.

mod ast;
mod attr;
mod case;
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
/// - `#[coord(rename_all = "kebab-case")]`: the key of each field without `key = "..."` is its
///   name in that case, as `#[serde(rename_all = "...")]` renames it: `"lowercase"`,
///   `"UPPERCASE"`, `"PascalCase"`, `"camelCase"`, `"snake_case"`, `"SCREAMING_SNAKE_CASE"`,
///   `"kebab-case"` or `"SCREAMING-KEBAB-CASE"`. Nested and map fields' keys too (not the keys
///   inside them: a nested struct has its own `rename_all`), and not aliases, which are keys as
///   written.
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
/// - `#[coord(alias = "old-key")]`, repeatable: an older key of the field, for moving a key
///   without a flag day. The field reads the first of its key and its aliases (in the order
///   written) that is stored, its own key first; a change of an alias reloads a running `Live`
///   like a change of the key. Reading an alias logs a warning once per process for each full
///   alias key. `publish` writes only the key and leaves the alias alone (instances still
///   running the old version read it), and `seed_defaults` seeds no default over a field still
///   stored under an alias. One segment, like `key`; no two fields may read one key or alias.
///   Not on a `nested` or `map` field, whose value is many keys: alias their inner fields.
/// - `#[coord(validate = "path::to::check")]` with `fn check(&FieldType) -> Result<(), String>`
///   (or any function a `&FieldType` coerces to, such as `fn(&str)` for a `String`):
///   runs on the field's value (read, aliased or defaulted) wherever the struct's own
///   `validate` runs (bind, every reload, `publish`), before it; a refusal is
///   `coord::Error::Invalid` naming the field's full key.
/// - `#[coord(env = "CHECKOUT_TIMEOUT_SECS")]`: an environment override. While the variable is
///   set, its text is the field's value at every build (bind and every reload), over the
///   stored value, its aliases and its default: read as JSON (`45`, `true`, `{"a":1}`), or,
///   for a type a plain string decodes into (a `String`), as that string. A text that is
///   neither is `coord::Error::Invalid` naming `$CHECKOUT_TIMEOUT_SECS`, so the bind fails
///   rather than run on a value nobody meant. `publish` of a struct built this way writes the
///   override like any value. A shell name (letters, digits, `_`); one variable per field;
///   not on `nested` / `map` fields (override their inner fields).
///
/// # Generic structs
///
/// A struct may have type and const parameters (`struct Limits<T> { max: T }`); each instance
/// (`Limits<u32>`, `Limits<String>`) is its own config type with the struct's prefix, bound
/// and published like any other. As serde_derive does, the impl adds the bounds the generated
/// code needs: every type parameter `Send + Sync + 'static`, and each field whose type names a
/// parameter bounded by its use (`DeserializeOwned + Serialize` for a value, `CoordConfig`
/// for `nested`, `MapField` with such entries for `map`, `Default` for `#[coord(default)]`),
/// so `Limits<NotSerde>` is simply no `CoordConfig`. Such a field is described by the
/// instance's type (`core::any::type_name`, `u32` for `Limits<u32>`) and carries no JSON
/// Schema. Lifetime parameters are a compile error: a live value must own its data.
///
/// ```
/// #[derive(coord::CoordConfig, Debug)]
/// #[coord(prefix = "/config/limits")]
/// struct Limits<T> {
///     max: T,
///     #[coord(default)]
///     floor: T,
/// }
///
/// use coord::config::{CoordConfig, Source};
/// let values = std::collections::BTreeMap::from([("/config/limits/max".to_string(), b"7".to_vec())]);
/// let limits = Limits::<u32>::from_source(&Source::new("/config/limits", &values))?;
/// assert_eq!((limits.max, limits.floor), (7, 0));
/// assert_eq!(Limits::<String>::fields()[0].type_name, "alloc::string::String");
/// # Ok::<(), coord::Error>(())
/// ```
///
/// # `Option` fields
///
/// A field whose type is written `Option<T>`, `std::option::Option<T>` or
/// `core::option::Option<T>` is `None` when its key is missing, as serde treats an absent
/// `Option` field; it needs no `#[coord(default)]` and is listed as not required, with default
/// JSON `null`. `publish` writes `None` as JSON `null`, which reads back as `None`. The type is
/// recognized by how it is written, as serde does: a type alias of `Option` is not seen through
/// and such a field stays required (add `#[coord(default)]` to it).
///
/// # Examples
///
/// ```
/// use std::collections::BTreeMap;
/// use coord::config::{CoordConfig, Source};
///
/// fn at_most_a_minute(secs: &u64) -> Result<(), String> {
///     if *secs > 60 {
///         return Err(format!("{secs} s is more than a minute"));
///     }
///     Ok(())
/// }
///
/// #[derive(coord::CoordConfig, Debug, PartialEq)]
/// #[coord(prefix = "/config/checkout", rename_all = "kebab-case")]
/// struct Checkout {
///     // Key `timeout-secs`; still read from `timeout` while that is the only one stored.
///     #[coord(alias = "timeout", validate = "at_most_a_minute")]
///     timeout_secs: u64,
///     // `key` wins over `rename_all`.
///     #[coord(key = "RETRIES", default = 3)]
///     retries: u32,
/// }
///
/// let values = BTreeMap::from([("/config/checkout/timeout".to_string(), b"20".to_vec())]);
/// let checkout = Checkout::from_source(&Source::new("/config/checkout", &values))?;
/// assert_eq!(checkout, Checkout { timeout_secs: 20, retries: 3 });
///
/// let too_long = BTreeMap::from([("/config/checkout/timeout-secs".to_string(), b"90".to_vec())]);
/// let err = Checkout::from_source(&Source::new("/config/checkout", &too_long)).unwrap_err();
/// assert!(matches!(err, coord::Error::Invalid { key, .. } if key == "/config/checkout/timeout-secs"));
/// # Ok::<(), coord::Error>(())
/// ```
#[proc_macro_derive(CoordConfig, attributes(coord))]
pub fn derive_coord_config(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand::derive(&input).into()
}
