//! The contract between `#[derive(CoordConfig)]` and the runtime.
//!
//! A `CoordConfig` struct is a set of keys under a prefix, one key per field holding that
//! field's JSON value (`{prefix}/{key}`); a `#[coord(nested)]` field is another `CoordConfig`
//! under `{prefix}/{key}/`. The derive generates the impl; the runtime (`Live<T>`, `publish`,
//! `seed_defaults`) only talks to this trait.
//!
//! The generated code is short: it calls the helpers here ([`Source::get`],
//! [`Source::get_or_else`], [`Source::resolve`] for aliases, [`Source::at`],
//! [`Source::validated`], [`Source::validated_field`], [`FieldInfo::new`],
//! [`FieldInfo::nested`], [`encode`], [`encode_nested`]), which a hand-written impl can use
//! as well.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{self, Write as _};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::config::type_name::names_secret;
use crate::error::{Error, Result};
use crate::keyring::{KeyRing, is_sealed};

/// A struct bound to keys under a prefix. Implement it with `#[derive(CoordConfig)]`.
///
/// # Examples
///
/// ```
/// use std::collections::BTreeMap;
/// use coord::config::{CoordConfig, Source};
///
/// #[derive(coord::CoordConfig, Debug, PartialEq)]
/// #[coord(prefix = "/config/checkout")]
/// struct Checkout {
///     /// Seconds before a payment attempt is abandoned.
///     #[coord(default = 30)]
///     timeout_secs: u64,
///     #[coord(key = "rate-limit")]
///     rate_limit: u32,
/// }
///
/// let values = BTreeMap::from([("/config/checkout/rate-limit".to_string(), b"100".to_vec())]);
/// let checkout = Checkout::from_source(&Source::new("/config/checkout", &values))?;
/// assert_eq!(checkout, Checkout { timeout_secs: 30, rate_limit: 100 });
/// # Ok::<(), coord::Error>(())
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a CoordConfig struct",
    label = "not a CoordConfig struct",
    note = "add #[derive(coord::CoordConfig)] to `{Self}`; a #[coord(nested)] field must be one too"
)]
pub trait CoordConfig: Sized + Send + Sync + 'static {
    /// The prefix of `#[coord(prefix = "...")]`, without a trailing `/`; `None` if the struct
    /// must be bound with `live_at`.
    const PREFIX: Option<&'static str>;

    /// Every bound key, relative to the prefix (nested structs flattened: `"db/host"`), in
    /// field order.
    fn fields() -> Vec<FieldInfo>;

    /// Builds the struct from the values under the prefix, then validates it (nested structs
    /// are validated as they are built, each under its own prefix).
    ///
    /// # Errors
    ///
    /// [`Error::Decode`](crate::Error::Decode) naming the full key for a value that is not
    /// valid JSON for its field; [`Error::Invalid`](crate::Error::Invalid) for a missing
    /// required key (naming the key) or a failed `validate` (naming the prefix). A key with a
    /// default, or of a field written `Option<T>`, is not required.
    fn from_source(source: &Source<'_>) -> Result<Self>;

    /// Builds the struct again after some of its keys changed: `self` is the value last built,
    /// and `source` may say which keys changed since ([`Source::changed_under`]). The derive
    /// uses it so a `#[coord(map)]` field re-reads only the entries that changed and keeps
    /// the rest; the default builds from scratch, which is always correct.
    ///
    /// # Errors
    ///
    /// As [`from_source`](Self::from_source).
    fn rebuild(&self, source: &Source<'_>) -> Result<Self> {
        Self::from_source(source)
    }

    /// Every field's value as JSON, keyed relative to the prefix (nested flattened).
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`](crate::Error::Invalid) if a field does not serialize.
    fn to_values(&self) -> Result<Values>;

    /// The struct's own `#[coord(validate = "...")]` check; `Ok` if it has none. Nested
    /// structs are not checked here: [`from_source`](Self::from_source) checks each one, on
    /// every bind and reload and before every `publish`.
    ///
    /// # Errors
    ///
    /// What the check says is wrong.
    fn validate(&self) -> std::result::Result<(), String> {
        Ok(())
    }
}

/// A [`CoordConfig`] whose `#[coord(prefix = "...")]` is known at compile time, so it can be
/// bound without naming a prefix (`coord.live::<T>()`). The derive implements it exactly when
/// the struct has a prefix.
#[diagnostic::on_unimplemented(
    message = "`{Self}` has no #[coord(prefix = \"...\")]",
    label = "`{Self}` is bound to no prefix",
    note = "add #[coord(prefix = \"/config/...\")] to the struct, or bind it with coord.live_at::<T>(prefix)"
)]
pub trait HasPrefix: CoordConfig {}

/// `T`'s `#[coord(prefix)]`. `HasPrefix` promises one; the error (naming `instead`, the
/// method that takes a prefix) is for a hand-written impl that breaks the promise.
pub(crate) fn prefix_of<T: HasPrefix>(instead: &str) -> crate::error::Result<&'static str> {
    T::PREFIX.ok_or_else(|| {
        crate::error::Error::invalid_argument(
            std::any::type_name::<T>(),
            format!("has no #[coord(prefix = ...)]; use {instead}"),
        )
    })
}

/// Keys (relative to a prefix) and their JSON values, as [`CoordConfig::to_values`] gives them.
pub type Values = Vec<(String, serde_json::Value)>;

/// One bound key, as the derive describes it.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct FieldInfo {
    /// The key relative to the prefix (`"timeout_secs"`, `"db/host"`).
    pub key: String,
    /// The Rust type of the field, as written (`"Vec<String>"`).
    pub type_name: &'static str,
    /// The default as JSON (`null` for an `Option` field without `#[coord(default)]`). `None`
    /// for a required field, and for a secret even when it has a default (see
    /// [`has_default`](Self::has_default)), so a secret's default is never shown or seeded.
    pub default: Option<serde_json::Value>,
    /// True if a missing key takes a default instead of failing (an `Option` field does:
    /// `None`).
    pub has_default: bool,
    /// The field's doc comment, trimmed (lines joined with `\n`).
    pub doc: &'static str,
    /// True for `#[coord(secret)]`.
    pub secret: bool,
    /// A single value, or a map whose entries live under `{key}/`.
    pub kind: FieldKind,
    /// The JSON Schema of the value (of one entry, for a `#[coord(map)]` field), when coord's
    /// `schema` feature is on and the type implements `schemars::JsonSchema`; the derive
    /// attaches it. `None` for a nested map, whose entry fields carry their own.
    pub json_schema: Option<serde_json::Value>,
    /// Older keys of the field (`#[coord(alias = "...")]`), relative to the prefix like
    /// [`key`](Self::key), in the order they are tried after it. A running `Live` reloads when
    /// any of them changes; `publish` writes only `key`.
    pub aliases: Vec<String>,
    /// The environment variable that overrides the stored value while it is set
    /// (`#[coord(env = "...")]`, see [`env_override`]).
    pub env: Option<String>,
}

/// What the key of a [`FieldInfo`] holds.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum FieldKind {
    /// One JSON value at `{prefix}/{key}`.
    Value,
    /// A `#[coord(map)]` field: each key `{prefix}/{key}/{name}` is one entry, holding JSON.
    Map,
    /// A `#[coord(map, nested)]` field: each `{prefix}/{key}/{name}/` holds one entry, a
    /// struct with these fields (keys relative to the entry).
    NestedMap(Vec<FieldInfo>),
}

impl FieldKind {
    /// True for both kinds of map.
    pub fn is_map(&self) -> bool {
        !matches!(self, FieldKind::Value)
    }

    pub(crate) fn layout(&self) -> Option<crate::config::layout::Layout> {
        use crate::config::layout::Layout;
        match self {
            FieldKind::Value => None,
            FieldKind::Map => Some(Layout::Json),
            FieldKind::NestedMap(_) => Some(Layout::Nested),
        }
    }
}

impl FieldInfo {
    /// A required, non-secret key.
    pub fn new(key: &str, type_name: &'static str, doc: &'static str) -> Self {
        FieldInfo {
            key: key.to_owned(),
            type_name,
            default: None,
            has_default: false,
            doc,
            secret: false,
            kind: FieldKind::Value,
            json_schema: None,
            aliases: Vec::new(),
            env: None,
        }
    }

    /// A `#[coord(map)]` field: entries of JSON under `{key}/`. A missing map is empty.
    pub fn map(key: &str, type_name: &'static str, doc: &'static str) -> Self {
        FieldInfo {
            has_default: true,
            kind: FieldKind::Map,
            ..FieldInfo::new(key, type_name, doc)
        }
    }

    /// A `#[coord(map, nested)]` field whose entries are structs with `fields`.
    pub fn nested_map(
        key: &str,
        type_name: &'static str,
        doc: &'static str,
        fields: Vec<FieldInfo>,
    ) -> Self {
        FieldInfo {
            has_default: true,
            kind: FieldKind::NestedMap(fields),
            ..FieldInfo::new(key, type_name, doc)
        }
    }

    /// Marks the key secret: its default (if any) is never serialized into the description.
    #[must_use]
    pub fn secret(mut self) -> Self {
        self.secret = true;
        self.default = None;
        self
    }

    /// Gives the key a default, computed now and kept as JSON unless the key is secret (call
    /// [`secret`](Self::secret) first).
    #[must_use]
    pub fn with_default<T: Serialize>(mut self, default: impl FnOnce() -> T) -> Self {
        self.has_default = true;
        if !self.secret {
            // A default that does not serialize (a map with non-string keys) still counts as
            // a default for reading; it just cannot be shown or seeded.
            self.default = serde_json::to_value(default()).ok();
        }
        self
    }

    /// The field's older keys, tried in order when its key is missing (see
    /// [`Source::resolve`]).
    #[must_use]
    pub fn with_aliases(mut self, aliases: &[&str]) -> Self {
        self.aliases = aliases.iter().map(|alias| (*alias).to_owned()).collect();
        self
    }

    /// The environment variable that overrides the field's stored value while it is set (see
    /// [`env_override`]).
    #[must_use]
    pub fn with_env(mut self, var: &str) -> Self {
        self.env = Some(var.to_owned());
        self
    }

    /// Attaches the JSON Schema of the value (of one entry, for a map), or none.
    #[must_use]
    pub fn with_json_schema(mut self, schema: Option<serde_json::Value>) -> Self {
        self.json_schema = schema;
        self
    }

    /// A nested struct's fields (`T::fields()`) as seen from the outer struct: keys prefixed
    /// with `key/`.
    pub fn nested(key: &str, fields: Vec<FieldInfo>) -> Vec<FieldInfo> {
        fields
            .into_iter()
            .map(|mut field| {
                field.key = join(key, &field.key);
                for alias in &mut field.aliases {
                    *alias = join(key, alias);
                }
                field
            })
            .collect()
    }

    /// True if the key must exist in the store.
    pub fn required(&self) -> bool {
        !self.has_default
    }
}

/// The full alias keys whose use [`Source::resolve`] has logged.
static ALIASES_LOGGED: std::sync::Mutex<BTreeSet<String>> = std::sync::Mutex::new(BTreeSet::new());

/// Whether `key` (relative to the struct's prefix, as written: `password`, `tokens/{name}`,
/// `pools/{name}/password`) holds a secret of the struct whose fields are `fields`: a
/// `#[coord(secret)]` field, an entry of a map of secrets, or a secret field of a nested map's
/// entry. What typed writes seal (see [`crate::keyring`]).
pub(crate) fn is_secret_key(fields: &[FieldInfo], key: &str) -> bool {
    let own = |field: &FieldInfo| field.secret || names_secret(field.type_name);
    let entry = |field: &FieldInfo| {
        key.strip_prefix(field.key.as_str())
            .and_then(|rest| rest.strip_prefix('/'))
            .filter(|rest| !rest.is_empty())
    };
    fields.iter().any(|field| match &field.kind {
        FieldKind::Value => field.key == key && own(field),
        FieldKind::Map => entry(field).is_some() && own(field),
        FieldKind::NestedMap(entry_fields) => entry(field)
            .and_then(|rest| rest.split_once('/'))
            .is_some_and(|(name, entry_key)| {
                !name.is_empty() && (field.secret || is_secret_key(entry_fields, entry_key))
            }),
    })
}

/// The raw values under one prefix, as the derive's generated `from_source` reads them.
/// `Debug` shows the prefix and the keys, never a value (it cannot tell a secret).
#[derive(Clone)]
pub struct Source<'a> {
    prefix: Cow<'a, str>,
    values: Raw<'a>,
    /// The full keys that changed since the value being rebuilt was built, if known.
    changes: Option<&'a BTreeSet<String>>,
    /// The key ring sealed values are opened with (see [`crate::keyring`]).
    keys: Option<&'a KeyRing>,
    /// The struct's root prefix and fields, to tell its secrets: with a ring, a plain value
    /// for one is refused (unless `accept_plain`), so no one who can write etcd sets a secret.
    secrets: Option<(&'a str, &'a [FieldInfo])>,
    /// Plain values for secrets are accepted (a migration in progress).
    accept_plain: bool,
}

impl fmt::Debug for Source<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Source")
            .field("prefix", &self.prefix)
            .field("keys", &self.keys_under().collect::<Vec<_>>())
            .field("changes", &self.changes)
            .finish()
    }
}

/// Where a [`Source`] reads: a plain map (tests, `publish`'s check) or a watched range's
/// shared snapshot (`Live`), which is not copied to be read.
#[derive(Clone, Copy)]
enum Raw<'a> {
    Plain(&'a BTreeMap<String, Vec<u8>>),
    Shared(&'a crate::config::raw::RawValues),
}

impl<'a> Source<'a> {
    /// Values keyed by full key; `prefix` is the struct's prefix with or without a trailing
    /// `/`. Keys outside the prefix are never read.
    pub fn new(prefix: &'a str, values: &'a BTreeMap<String, Vec<u8>>) -> Self {
        Source {
            prefix: Cow::Borrowed(prefix.trim_end_matches('/')),
            values: Raw::Plain(values),
            changes: None,
            keys: None,
            secrets: None,
            accept_plain: false,
        }
    }

    /// The values of a watched range's snapshot.
    pub(crate) fn shared(prefix: &'a str, values: &'a crate::config::raw::RawValues) -> Self {
        Source {
            prefix: Cow::Borrowed(prefix.trim_end_matches('/')),
            values: Raw::Shared(values),
            changes: None,
            keys: None,
            secrets: None,
            accept_plain: false,
        }
    }

    /// The same values, with sealed ones opened with `keys` (see [`crate::keyring`]). Without
    /// a ring, a sealed value is an [`Error::Secret`] when read.
    #[must_use]
    pub fn with_keys(mut self, keys: Option<&'a KeyRing>) -> Self {
        self.keys = keys;
        self
    }

    /// The same values, read as the struct whose fields are `fields`: with a key ring, a plain
    /// value for one of its secrets is an [`Error::Secret`] unless `accept_plain`.
    #[must_use]
    pub(crate) fn with_secrets(mut self, fields: &'a [FieldInfo], accept_plain: bool) -> Self {
        self.secrets = Some((self.prefix_str(), fields));
        self.accept_plain = accept_plain;
        self
    }

    fn prefix_str(&self) -> &'a str {
        match &self.prefix {
            Cow::Borrowed(prefix) => prefix,
            // Only `at` makes an owned prefix, and `with_secrets` is called on the root.
            Cow::Owned(_) => "",
        }
    }

    /// The same values, with the full keys that changed since the value being rebuilt (see
    /// [`CoordConfig::rebuild`]).
    #[must_use]
    pub fn with_changes(mut self, changes: &'a BTreeSet<String>) -> Self {
        self.changes = Some(changes);
        self
    }

    /// The full keys under `{prefix}/{key}/` that changed since the value being rebuilt was
    /// built; `None` if the source does not know (then everything must be read).
    pub fn changed_under(&self, key: &str) -> Option<impl Iterator<Item = &'a str> + 'a + use<'a>> {
        let under = format!("{}/", self.full_key(key));
        let changes = self.changes?;
        Some(
            changes
                .range(under.clone()..)
                .map(String::as_str)
                .take_while(move |changed| changed.starts_with(&under)),
        )
    }

    /// The full keys and values under `{prefix}/`, in key order.
    fn keys_under(&self) -> Box<dyn Iterator<Item = &'a str> + 'a> {
        let under = format!("{}/", self.prefix);
        let keys: Box<dyn Iterator<Item = &'a String>> = match self.values {
            Raw::Plain(values) => Box::new(values.range(under.clone()..).map(|(key, _)| key)),
            Raw::Shared(values) => Box::new(values.range(under.clone()..).map(|(key, _)| key)),
        };
        Box::new(
            keys.map(String::as_str)
                .take_while(move |key| key.starts_with(&under)),
        )
    }

    /// True if any key is stored under `{prefix}/`.
    pub(crate) fn has_keys(&self) -> bool {
        self.keys_under().next().is_some()
    }

    /// The names of the entries stored under `{prefix}/`, seen as a map.
    pub(crate) fn names(&self, layout: crate::config::layout::Layout) -> BTreeSet<String> {
        let skip = self.prefix.len() + 1;
        crate::config::layout::names_of(self.keys_under().map(|key| &key[skip..]), layout)
    }

    /// The names of the entries under `{prefix}/` that changed, if the source knows.
    pub(crate) fn changed_names(
        &self,
        layout: crate::config::layout::Layout,
    ) -> Option<BTreeSet<String>> {
        let under = format!("{}/", self.prefix);
        let changes = self.changes?;
        let changed = changes
            .range(under.clone()..)
            .take_while(|changed| changed.starts_with(&under))
            .map(|changed| &changed[under.len()..]);
        Some(crate::config::layout::names_of(changed, layout))
    }

    /// The prefix, without a trailing `/`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The full key of a relative key.
    pub fn full_key(&self, key: &str) -> String {
        join(&self.prefix, key)
    }

    /// The raw value of a relative key.
    pub fn raw(&self, key: &str) -> Option<&'a [u8]> {
        let key = self.full_key(key);
        match self.values {
            Raw::Plain(values) => values.get(&key).map(Vec::as_slice),
            Raw::Shared(values) => values.get(&key).map(|value| &value[..]),
        }
    }

    /// The same values seen from `{prefix}/{key}`, for a nested struct's `from_source`.
    pub fn at(&self, key: &str) -> Source<'a> {
        Source {
            prefix: Cow::Owned(self.full_key(key)),
            values: self.values,
            changes: self.changes,
            keys: self.keys,
            secrets: self.secrets,
            accept_plain: self.accept_plain,
        }
    }

    /// The key a field with older names reads: `key` if it is stored, else the first of
    /// `aliases` that is, else `key` (so a missing key is reported, or defaulted, by its new
    /// name). Reading an alias is logged as a warning once per process for each full alias key,
    /// however many handles and reloads read it: an operator learns that the key still has to
    /// be moved without a warning on every reload.
    pub fn resolve<'k>(&self, key: &'k str, aliases: &[&'k str]) -> &'k str {
        if self.raw(key).is_some() {
            return key;
        }
        let Some(alias) = aliases.iter().find(|alias| self.raw(alias).is_some()) else {
            return key;
        };
        let full = self.full_key(alias);
        if crate::sync::lock(&ALIASES_LOGGED).insert(full.clone()) {
            tracing::warn!(
                key = %self.full_key(key),
                alias = %full,
                "config key read from its alias (an older name); write the value under the key \
                 (publish does) to finish the move"
            );
        }
        alias
    }

    /// Hands back a field's value if its `#[coord(validate = "...")]` check, run on that
    /// value, passed.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] naming the field's full key, with the check's message as the reason.
    pub fn validated_field<T>(
        &self,
        key: &str,
        value: T,
        check: std::result::Result<(), String>,
    ) -> Result<T> {
        match check {
            Ok(()) => Ok(value),
            Err(reason) => Err(Error::Invalid {
                key: self.full_key(key),
                reason,
            }),
        }
    }

    /// Decodes a required key.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] naming the full key if it is missing, [`Error::Decode`] naming it if
    /// its value is not JSON for `T`.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<T> {
        match self.decode(key)? {
            Some(value) => Ok(value),
            None => Err(Error::Invalid {
                key: self.full_key(key),
                reason: "required key is missing".to_owned(),
            }),
        }
    }

    /// Decodes a key, or calls `default` if it is missing.
    ///
    /// # Errors
    ///
    /// [`Error::Decode`] naming the full key if its value is not JSON for `T`.
    pub fn get_or_else<T: DeserializeOwned>(
        &self,
        key: &str,
        default: impl FnOnce() -> T,
    ) -> Result<T> {
        Ok(self.decode(key)?.unwrap_or_else(default))
    }

    /// Runs `value`'s [`CoordConfig::validate`] and hands the value back if it passes.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] naming this prefix, with the check's message as the reason.
    pub fn validated<T: CoordConfig>(&self, value: T) -> Result<T> {
        match value.validate() {
            Ok(()) => Ok(value),
            Err(reason) => Err(Error::Invalid {
                key: self.prefix.clone().into_owned(),
                reason,
            }),
        }
    }

    /// The full keys under the prefix that no field reads, in key order; the runtime logs them
    /// at debug level (they are ignored, not an error, so old and new versions of a service
    /// can share a prefix).
    pub fn unknown_keys(&self, fields: &[FieldInfo]) -> Vec<&'a str> {
        let (maps, values): (Vec<&FieldInfo>, Vec<&FieldInfo>) =
            fields.iter().partition(|f| f.kind.is_map());
        let known: BTreeSet<String> = values
            .iter()
            .flat_map(|f| std::iter::once(&f.key).chain(&f.aliases))
            .map(|key| self.full_key(key))
            .collect();
        let maps: Vec<String> = maps
            .iter()
            .map(|f| format!("{}/", self.full_key(&f.key)))
            .collect();
        self.keys_under()
            .filter(|key| !known.contains(*key))
            .filter(|key| !maps.iter().any(|map| key.starts_with(map.as_str())))
            .collect()
    }

    fn decode<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        let Some(raw) = self.raw(key) else {
            return Ok(None);
        };
        self.decode_raw(&self.full_key(key), raw).map(Some)
    }

    /// Decodes the stored value of full key `key`, opening it first if it is sealed.
    ///
    /// # Errors
    ///
    /// [`Error::Secret`] for a sealed value this source's key ring cannot open (or with no
    /// ring); [`Error::Decode`] naming `key` for a value that is not JSON for `T`.
    pub fn decode_raw<T: DeserializeOwned>(&self, key: &str, raw: &[u8]) -> Result<T> {
        if let (Some(_), Some((root, fields)), false) = (self.keys, self.secrets, self.accept_plain)
        {
            let relative = key
                .strip_prefix(root)
                .and_then(|rest| rest.strip_prefix('/'))
                .unwrap_or(key);
            if is_secret_key(fields, relative) && !is_sealed(raw) {
                return Err(plain_secret(key));
            }
        }
        decode_stored(self.keys, key, raw)
    }
}

/// A plain value where a process with keys expects a sealed secret: refused, so no one who
/// can write etcd sets a secret (a migration opts out with `accept_plain_secrets`).
pub(crate) fn plain_secret(key: &str) -> Error {
    Error::Secret {
        key: key.to_owned(),
        key_id: None,
        reason: "a plain value where a sealed secret belongs (seal the prefix's secrets with \
                 `coordctl secrets encrypt`, or accept plain ones while migrating: \
                 ClientConfig::accept_plain_secrets)"
            .to_owned(),
    }
}

/// Decodes the stored value of `key`, opening it with `keys` first if it is sealed.
///
/// # Errors
///
/// [`Error::Secret`] for a sealed value `keys` cannot open (or with no ring: the error says the
/// process has no key ring); [`Error::Decode`] naming `key` for a value that is not JSON for
/// `T`.
pub(crate) fn decode_stored<T: DeserializeOwned>(
    keys: Option<&KeyRing>,
    key: &str,
    raw: &[u8],
) -> Result<T> {
    let decode = |bytes: &[u8]| {
        serde_json::from_slice(bytes).map_err(|source| Error::Decode {
            key: key.to_owned(),
            source,
        })
    };
    match keys {
        Some(keys) => match keys.open_if_sealed(key, raw)? {
            // serde's message may quote the value: a sealed one is a secret.
            Some(plaintext) => serde_json::from_slice(&plaintext).map_err(|_| Error::Invalid {
                key: key.to_owned(),
                reason: format!(
                    "expected {}, got a sealed value that does not decode (not shown: it is \
                     secret)",
                    crate::config::type_name::short_type_name(std::any::type_name::<T>())
                ),
            }),
            None => decode(raw),
        },
        None if is_sealed(raw) => Err(Error::Secret {
            key: key.to_owned(),
            key_id: crate::keyring::key_id_of(raw),
            reason: "the value is sealed and this process has no key ring \
                     (ClientConfig::secret_keys)"
                .to_owned(),
        }),
        None => decode(raw),
    }
}

/// The value of a `#[coord(env = "VAR")]` field's variable, if it is set: its text as JSON
/// (`30`, `true`, `{"a":1}`, `"quoted"`), or else, for a type a string decodes into (`String`,
/// an enum of unit variants), the text itself. Read at every build, so it wins over the stored
/// value (and its aliases and default) for as long as it is set.
///
/// # Errors
///
/// [`Error::Invalid`] naming the variable (`$VAR`) if it is set but not valid UTF-8 or not a
/// value of `T`.
///
/// ```standalone_crate
/// // SAFETY: this example runs in its own process, on one thread.
/// unsafe { std::env::set_var("DOC_TIMEOUT_SECS", "45") };
/// let value = coord::config::env_override::<u64>("DOC_TIMEOUT_SECS").unwrap();
/// assert_eq!(value, Some(45));
/// assert_eq!(coord::config::env_override::<u64>("DOC_UNSET_VARIABLE").unwrap(), None);
/// unsafe { std::env::set_var("DOC_TIMEOUT_SECS", "soon") };
/// let error = coord::config::env_override::<u64>("DOC_TIMEOUT_SECS").unwrap_err();
/// assert!(error.to_string().contains("$DOC_TIMEOUT_SECS"), "{error}");
/// ```
pub fn env_override<T: DeserializeOwned>(var: &str) -> Result<Option<T>> {
    let Some(text) = std::env::var_os(var) else {
        return Ok(None);
    };
    let key = format!("${var}");
    let Some(text) = text.to_str() else {
        return Err(Error::Invalid {
            key,
            reason: "the environment override is not valid UTF-8".into(),
        });
    };
    match serde_json::from_str::<T>(text) {
        Ok(value) => Ok(Some(value)),
        Err(as_json) => serde_json::from_value::<T>(serde_json::Value::String(text.to_owned()))
            .map(Some)
            .map_err(|_| Error::Invalid {
                key,
                // A secret's override is the secret: never quoted.
                reason: if names_secret(std::any::type_name::<T>()) {
                    format!("the environment override is not a valid value (not shown: it is secret): {as_json}")
                } else {
                    format!("the environment override `{text}` is not a valid value: {as_json}")
                },
            }),
    }
}

/// One field's `(key, JSON value)` for [`CoordConfig::to_values`].
///
/// # Errors
///
/// [`Error::Invalid`] naming the (relative) key if the value does not serialize.
pub fn encode<T: Serialize>(key: &str, value: &T) -> Result<(String, serde_json::Value)> {
    match serde_json::to_value(value) {
        Ok(json) => Ok((key.to_owned(), json)),
        Err(e) => Err(Error::Invalid {
            key: key.to_owned(),
            reason: format!("cannot encode as JSON: {e}"),
        }),
    }
}

/// A nested struct's values (its `to_values()`) as seen from the outer struct: keys prefixed
/// with `key/`.
pub fn encode_nested(key: &str, values: Values) -> Values {
    values
        .into_iter()
        .map(|(k, json)| (join(key, &k), json))
        .collect()
}

/// A nested struct's `to_values()` result as seen from the outer struct: its keys, and the key
/// an [`Error::Invalid`] names, prefixed with `key/`.
///
/// # Errors
///
/// The nested struct's error, its key made relative to the outer struct.
pub fn nested_values(key: &str, values: Result<Values>) -> Result<Values> {
    match values {
        Ok(values) => Ok(encode_nested(key, values)),
        Err(Error::Invalid { key: inner, reason }) => Err(Error::Invalid {
            key: join(key, &inner),
            reason,
        }),
        Err(e) => Err(e),
    }
}

/// A table of `T`'s keys: key, type, default (`required` if none) and doc, one row per key,
/// columns aligned. Secrets' defaults show as `<redacted>`.
///
/// ```
/// #[derive(coord::CoordConfig)]
/// #[coord(prefix = "/config/checkout")]
/// struct Checkout {
///     /// Seconds before a payment attempt is abandoned.
///     #[coord(default = 30)]
///     timeout_secs: u64,
/// }
///
/// let table = coord::config::describe::<Checkout>();
/// assert!(table.contains("timeout_secs  u64   30"));
/// ```
pub fn describe<T: CoordConfig>() -> String {
    let header = ["KEY", "TYPE", "DEFAULT", "DOC"].map(str::to_owned);
    let mut rows = vec![header];
    describe_rows("", T::fields(), &mut rows);
    let mut widths = [0; 3];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    if let Some(prefix) = T::PREFIX {
        let _ = writeln!(out, "{prefix}/");
    }
    for [key, type_name, default, doc] in &rows {
        let line = format!(
            "{key:<w0$}  {type_name:<w1$}  {default:<w2$}  {doc}",
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2]
        );
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// One row per key of `fields`, keys under `under`; a map is a row `{key}/{name}` (empty
/// by default) and, nested, a row per field of its entries.
fn describe_rows(under: &str, fields: Vec<FieldInfo>, rows: &mut Vec<[String; 4]>) {
    for field in fields {
        let key = format!("{under}{}", field.key);
        let doc = field
            .doc
            .lines()
            .map(str::trim)
            .collect::<Vec<_>>()
            .join(" ");
        let default = match (&field.kind, &field.default, field.has_default) {
            (FieldKind::Map | FieldKind::NestedMap(_), _, _) => "empty".to_owned(),
            (_, _, false) => "required".to_owned(),
            (_, _, true) if field.secret => "<redacted>".to_owned(),
            (_, Some(json), true) => json.to_string(),
            (_, None, true) => "<not JSON>".to_owned(),
        };
        let entry = format!("{key}/{{name}}");
        match field.kind {
            FieldKind::Value => rows.push([key, field.type_name.to_owned(), default, doc]),
            FieldKind::Map => rows.push([entry, field.type_name.to_owned(), default, doc]),
            FieldKind::NestedMap(entry_fields) => {
                rows.push([entry.clone(), field.type_name.to_owned(), default, doc]);
                describe_rows(&format!("{entry}/"), entry_fields, rows);
            }
        }
    }
}

fn join(prefix: &str, key: &str) -> String {
    format!("{prefix}/{key}")
}
