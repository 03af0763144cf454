//! A config struct's schema, published to the store so that tools which do not link the
//! service's code (a CLI writing raw values, a review of a change) can check values against it.
//!
//! [`ConfigCenter::publish_schema`] writes what `T::fields()` knows, a [`PublishedSchema`], as
//! one JSON document at `/coord/schemas{prefix}` ([`PublishedSchema::key`]);
//! [`ConfigCenter::schema`] reads it back. [`PublishedSchema::check`] checks a raw value for one
//! key under the prefix against it:
//!
//! - a field with a JSON Schema (coord's `schema` feature, and a field type that implements
//!   `schemars::JsonSchema`) is checked against that schema;
//! - any other field is checked by its Rust type name where the JSON of that type is obvious
//!   (integers with their range, floats, `bool`, strings, sequences, `Option`, maps); other
//!   types (`Duration`, a struct without `JsonSchema`) are accepted, since their JSON cannot
//!   be told from the name.
//!
//! A secret's default is never in the document, and a refused secret value is described by its
//! JSON type only ("got a string"), never by its content.

mod by_type;
mod json_schema;

use crate::access::audit::{self, AuditAction};
use crate::access::{Action, Gate};
use crate::store::{Txn, TxnOp};
use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::Instrument;

use crate::config::center::ConfigCenter;
use crate::config::reserved::refuse_reserved;
use crate::config::schema::{CoordConfig, FieldInfo, FieldKind, HasPrefix, prefix_of};
use crate::config::type_name::short_type_name;
use crate::error::{Error, Result};

#[cfg(feature = "schema")]
#[doc(hidden)]
pub use json_schema::{json_schema_of, probe};

/// Where schemas are published: the schema of the struct at `/config/checkout` is the key
/// `/coord/schemas/config/checkout`.
pub const SCHEMAS_PREFIX: &str = "/coord/schemas";

/// What a [`CoordConfig`] struct bound at a prefix looks like: each key with its Rust type,
/// default, doc, whether it is secret, and a JSON Schema where one is known.
///
/// [`ConfigCenter::publish_schema`] writes it as one JSON document at
/// `/coord/schemas{prefix}` ([`key`](Self::key)), [`ConfigCenter::schema`] reads it back, and
/// [`check`](Self::check) checks a raw value for one key under the prefix against it:
///
/// - a field with a JSON Schema (coord's `schema` feature, and a field type that implements
///   `schemars::JsonSchema`) is checked against that schema;
/// - any other field is checked by its Rust type name where the JSON of that type is obvious
///   (integers with their range, floats, `bool`, strings, sequences, `Option`, maps); other
///   types (`Duration`, a struct without `JsonSchema`) are accepted, since their JSON cannot
///   be told from the name.
///
/// A secret's default is never in the document, and a refused secret value is described by
/// its JSON type only ("got a string"), never by its content.
///
/// # Examples
///
/// ```
/// use coord::config::PublishedSchema;
///
/// #[derive(coord::CoordConfig)]
/// #[coord(prefix = "/config/checkout")]
/// struct Checkout {
///     /// Seconds before a payment attempt is abandoned.
///     #[coord(default = 30)]
///     timeout_secs: u64,
/// }
///
/// let schema = PublishedSchema::of::<Checkout>("/config/checkout");
/// assert!(schema.check("timeout_secs", &serde_json::json!(45)).is_ok());
/// let refused = schema.check("timeout_secs", &serde_json::json!("abc")).unwrap_err();
/// assert_eq!(
///     refused.to_string(),
///     "invalid config at `timeout_secs`: expected u64 (Seconds before a payment attempt is \
///      abandoned.), got the string \"abc\""
/// );
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PublishedSchema {
    /// The prefix the struct is bound at, without a trailing `/`.
    pub prefix: String,
    /// The struct's Rust name, without its module path (`Checkout`).
    pub type_name: String,
    /// Every key, in field order (nested structs flattened: `db/host`).
    pub fields: Vec<PublishedField>,
    /// True if the service that published it seals its secrets (it had a key ring, see
    /// [`crate::keyring`]): a plain value for a secret key is then refused, whoever writes it,
    /// instead of being stored in clear. Absent in schemas published before sealing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sealed: bool,
}

/// One key of a [`PublishedSchema`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PublishedField {
    /// The key relative to the prefix (`timeout_secs`, `db/host`); for a map, the key its
    /// entries are under.
    pub key: String,
    /// The field's Rust type as written (`u64`, `Map<Limit>`).
    pub type_name: String,
    /// The default as JSON; never present for a secret, nor for a required key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    /// True if the key must exist for the struct to bind.
    pub required: bool,
    /// The field's doc comment.
    #[serde(default)]
    pub doc: String,
    /// True for `#[coord(secret)]`.
    #[serde(default)]
    pub secret: bool,
    /// A single value or a map.
    pub kind: PublishedKind,
    /// The JSON Schema of the value (of each entry, for a map), when the field's type
    /// implements `schemars::JsonSchema` and coord's `schema` feature is on. A secret's
    /// schema carries no `default` or `examples`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json_schema: Option<Value>,
}

/// What the key of a [`PublishedField`] holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum PublishedKind {
    /// One JSON value at `{prefix}/{key}`.
    Value,
    /// A `#[coord(map)]` field: each key `{prefix}/{key}/{name}` is one entry.
    Map {
        /// The Rust type of one entry (`Limit` of `Map<Limit>`), empty if it cannot be told.
        entry_type: String,
    },
    /// A `#[coord(map, nested)]` field: each `{prefix}/{key}/{name}/` holds one entry, a
    /// struct with these fields (keys relative to the entry).
    NestedMap {
        /// The entry struct's fields.
        fields: Vec<PublishedField>,
    },
}

impl PublishedSchema {
    /// The schema of `T` bound at `prefix` (with or without a trailing `/`).
    pub fn of<T: CoordConfig>(prefix: &str) -> Self {
        PublishedSchema {
            prefix: prefix.trim_end_matches('/').to_owned(),
            type_name: short_type_name(std::any::type_name::<T>()),
            fields: T::fields().into_iter().map(PublishedField::from).collect(),
            sealed: false,
        }
    }

    /// The store key the schema of the struct at `prefix` is published at:
    /// `/coord/schemas{prefix}`, `prefix` without a trailing `/`.
    pub fn key(prefix: &str) -> String {
        format!("{SCHEMAS_PREFIX}{}", prefix.trim_end_matches('/'))
    }

    /// The field that `key` (relative to the prefix) belongs to, if any: a single-value field
    /// whose key it is, or a map field it is an entry of (`limits/acme`), or the field of a
    /// nested map's entry (`pools/main/size`, which gives the entry's `size` field).
    pub fn field(&self, key: &str) -> Option<&PublishedField> {
        resolve(&self.fields, key).map(|target| target.field)
    }

    /// The Rust type a value of `key` (relative to the prefix) is checked as: the field's own
    /// type, or a map's entry type for one of its entries (`u32` for `limits/acme` of a
    /// `Map<u32>`); `None` for a key of no field.
    pub fn type_of(&self, key: &str) -> Option<&str> {
        resolve(&self.fields, key).map(|target| target.type_name())
    }

    /// True if the value of `key` (relative to the prefix) is secret and must not be shown: a
    /// `#[coord(secret)]` field, a field whose type holds a [`Secret`](crate::config::Secret)
    /// (`Option<Secret<String>>`), an entry of a map of secrets (`tokens/acme` of a
    /// `Map<Secret<String>>`), or a secret field of a nested map's entry
    /// (`accounts/acme/password`). Every output of coord that shows values asks this.
    ///
    /// ```
    /// use coord::config::{Map, PublishedSchema, Secret};
    ///
    /// #[derive(coord::CoordConfig)]
    /// #[coord(prefix = "/config/pay")]
    /// struct Pay {
    ///     #[coord(secret)]
    ///     api_key: Secret<String>,
    ///     #[coord(map)]
    ///     tokens: Map<Secret<String>>,
    ///     region: String,
    /// }
    ///
    /// let schema = PublishedSchema::of::<Pay>("/config/pay");
    /// assert!(schema.is_secret("api_key"));
    /// assert!(schema.is_secret("tokens/acme"));
    /// assert!(!schema.is_secret("region"));
    /// ```
    pub fn is_secret(&self, key: &str) -> bool {
        secret_at(&self.fields, key)
    }

    /// Checks a raw value for `key` (relative to the prefix) against the field it belongs to:
    /// its JSON Schema if it has one, else its Rust type (see [`PublishedSchema`]).
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] with `key` as given and a reason that names the expected type and
    /// the field's doc (`expected u64 (Seconds before …), got the string "abc"`), or says the
    /// key is unknown and lists the known keys. A secret's value is never shown in the reason.
    pub fn check(&self, key: &str, value: &Value) -> Result<()> {
        let Some(target) = resolve(&self.fields, key) else {
            return Err(self.unknown(key));
        };
        let field = target.field;
        let type_name = target.type_name();
        let redact = field.secret || by_type::mentions_secret(type_name);
        let checked = match &field.json_schema {
            Some(schema) => json_schema::validate(schema, value, redact),
            None => by_type::check(type_name, value, redact),
        };
        checked.map_err(|mismatch| Error::Invalid {
            key: key.to_owned(),
            reason: mismatch.reason(type_name, &field.doc),
        })
    }

    /// Checks every `(key, value)` with [`check`](Self::check), in key order. A required key
    /// that is missing from `values` is not an error here (the keys may be a partial change).
    ///
    /// # Errors
    ///
    /// The first refusal of [`check`](Self::check).
    pub fn check_all(&self, values: &BTreeMap<String, Value>) -> Result<()> {
        values
            .iter()
            .try_for_each(|(key, value)| self.check(key, value))
    }

    fn unknown(&self, key: &str) -> Error {
        const SHOWN: usize = 12;
        let mut known = Vec::new();
        known_keys("", &self.fields, &mut known);
        let more = known.len().saturating_sub(SHOWN);
        known.truncate(SHOWN);
        let mut list = known.join(", ");
        if more > 0 {
            list.push_str(&format!(" and {more} more"));
        }
        let map = self
            .fields
            .iter()
            .find(|field| field.key == key && field.kind != PublishedKind::Value);
        let reason = match map {
            Some(_) => format!(
                "`{key}` is a map: its entries are the keys under `{key}/` (known keys: {list})"
            ),
            None => format!(
                "unknown key: {} has no field `{key}` (known keys: {list})",
                self.type_name
            ),
        };
        Error::Invalid {
            key: key.to_owned(),
            reason,
        }
    }
}

impl From<FieldInfo> for PublishedField {
    fn from(field: FieldInfo) -> Self {
        let required = field.required();
        let kind = match field.kind {
            FieldKind::Value => PublishedKind::Value,
            FieldKind::Map => PublishedKind::Map {
                entry_type: by_type::map_entry_type(field.type_name).unwrap_or_default(),
            },
            FieldKind::NestedMap(fields) => PublishedKind::NestedMap {
                fields: fields.into_iter().map(PublishedField::from).collect(),
            },
        };
        let mut json_schema = field.json_schema;
        if field.secret
            && let Some(schema) = &mut json_schema
        {
            strip_examples(schema);
        }
        PublishedField {
            key: field.key,
            type_name: field.type_name.to_owned(),
            // `FieldInfo` already keeps a secret's default out; this is the second lock.
            default: if field.secret { None } else { field.default },
            required,
            doc: field.doc.to_owned(),
            secret: field.secret,
            kind,
            json_schema,
        }
    }
}

impl ConfigCenter {
    /// Publishes the schema of `T` at `/coord/schemas{T::PREFIX}` (see [`PublishedSchema`]);
    /// returns the revision of the write.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] if `T`'s prefix does not start with `/`, or the document is
    /// too large for etcd; store errors.
    ///
    /// # Cancel safety
    ///
    /// One put: dropping the future may or may not leave the schema written.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> coord::Result<()> {
    /// #[derive(coord::CoordConfig)]
    /// #[coord(prefix = "/config/checkout")]
    /// struct Checkout {
    ///     /// Seconds before a payment attempt is abandoned.
    ///     #[coord(default = 30)]
    ///     timeout_secs: u64,
    /// }
    ///
    /// let coord = coord::Coord::in_memory();
    /// coord.config().publish_schema::<Checkout>().await?;
    /// let schema = coord.config().schema("/config/checkout").await?.expect("published");
    /// assert!(schema.check("timeout_secs", &serde_json::json!("abc")).is_err());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn publish_schema<T: HasPrefix>(&self) -> Result<i64> {
        let prefix = prefix_of::<T>("publish_schema_at")?;
        self.publish_schema_at::<T>(prefix).await
    }

    /// [`publish_schema`](Self::publish_schema) for `T` bound at `prefix`.
    ///
    /// # Errors
    ///
    /// As [`publish_schema`](Self::publish_schema).
    ///
    /// # Cancel safety
    ///
    /// As [`publish_schema`](Self::publish_schema).
    pub async fn publish_schema_at<T: CoordConfig>(&self, prefix: &str) -> Result<i64> {
        check_prefix(prefix)?;
        // Once a prefix's secrets are sealed, a process without keys (an old build, a pod
        // without its key file) republishing the schema must not turn that off.
        let was_sealed = self
            .schema(prefix)
            .await?
            .is_some_and(|stored| stored.sealed);
        let schema = PublishedSchema {
            sealed: was_sealed || self.keys.load().is_some(),
            ..PublishedSchema::of::<T>(prefix)
        };
        let key = PublishedSchema::key(prefix);
        let span = tracing::debug_span!("config.publish_schema", key = key.as_str());
        // Under `/coord/schemas`, which `set` refuses to users: written here directly, with
        // its audit record, under the policy it was admitted by.
        let bytes = serde_json::to_vec(&schema)
            .map_err(|e| Error::invalid_argument(&key, format!("cannot encode: {e}")))?;
        let identity = &self.identity;
        let record = identity.record(AuditAction::SchemaPublish, prefix.trim_end_matches('/'));
        async {
            loop {
                let gate = Gate::read(&self.store).await?;
                if let Err(e) = gate.allow(identity, Action::Admin, prefix) {
                    audit::append(&self.store, identity.writer(), &record.clone().refused(&e))
                        .await;
                    return Err(e);
                }
                let txn = Txn::new().when([gate.compare()]).and_then([
                    TxnOp::put(&key, bytes.clone()),
                    record.op(identity.writer())?,
                ]);
                let response = audit::send(&self.store, identity.writer(), &record, txn).await?;
                if response.succeeded {
                    return Ok(response.revision);
                }
                // The policy changed between the check and the write: check again, after a
                // pause (a policy rewritten in a loop must not make this one spin).
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
        .instrument(span)
        .await
    }

    /// The schema published for the struct at `prefix`, or `None` if none was.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] if `prefix` does not start with `/`; [`Error::Decode`]
    /// naming the key if what is stored there is not a schema; store errors.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it only reads, so a dropped call leaves nothing behind.
    pub async fn schema(&self, prefix: &str) -> Result<Option<PublishedSchema>> {
        check_prefix(prefix)?;
        let key = PublishedSchema::key(prefix);
        let span = tracing::debug_span!("config.schema", key = key.as_str());
        match self
            .get_with_version::<PublishedSchema>(&key)
            .instrument(span)
            .await
        {
            Ok((schema, _)) => Ok(Some(schema)),
            Err(Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

fn check_prefix(prefix: &str) -> Result<()> {
    refuse_reserved("prefix", prefix)?;
    if !prefix.starts_with('/') || prefix.trim_end_matches('/').is_empty() {
        return Err(Error::invalid_argument(
            "prefix",
            format!("`{prefix}` must start with `/` and name more than the root"),
        ));
    }
    Ok(())
}

/// The field a key belongs to, and for a map entry the entry's type name.
struct Target<'a> {
    field: &'a PublishedField,
    /// The type to check by name, if not the field's own (a map entry's).
    type_name: Option<&'a str>,
}

impl<'a> Target<'a> {
    fn type_name(&self) -> &'a str {
        self.type_name.unwrap_or(&self.field.type_name)
    }
}

fn resolve<'a>(fields: &'a [PublishedField], key: &str) -> Option<Target<'a>> {
    if let Some(field) = fields
        .iter()
        .find(|field| field.key == key && field.kind == PublishedKind::Value)
    {
        return Some(Target {
            field,
            type_name: None,
        });
    }
    fields.iter().find_map(|field| {
        let rest = key.strip_prefix(field.key.as_str())?.strip_prefix('/')?;
        match &field.kind {
            PublishedKind::Value => None,
            PublishedKind::Map { entry_type } => (!rest.is_empty()).then_some(Target {
                field,
                type_name: Some(entry_type.as_str()),
            }),
            PublishedKind::NestedMap { fields } => {
                let (name, entry_key) = rest.split_once('/')?;
                if name.is_empty() {
                    return None;
                }
                resolve(fields, entry_key)
            }
        }
    })
}

/// See [`PublishedSchema::is_secret`]. A secret field makes everything under it secret (a
/// secret map's entries, a secret nested map's entry fields).
fn secret_at(fields: &[PublishedField], key: &str) -> bool {
    let own = |field: &PublishedField, type_name: &str| {
        field.secret || by_type::mentions_secret(type_name)
    };
    fields.iter().any(|field| match &field.kind {
        PublishedKind::Value => field.key == key && own(field, &field.type_name),
        PublishedKind::Map { entry_type } => key
            .strip_prefix(field.key.as_str())
            .and_then(|rest| rest.strip_prefix('/'))
            .is_some_and(|rest| {
                !rest.is_empty()
                    && (own(field, &field.type_name) || by_type::mentions_secret(entry_type))
            }),
        PublishedKind::NestedMap { fields } => key
            .strip_prefix(field.key.as_str())
            .and_then(|rest| rest.strip_prefix('/'))
            .and_then(|rest| rest.split_once('/'))
            .is_some_and(|(name, entry_key)| {
                !name.is_empty() && (field.secret || secret_at(fields, entry_key))
            }),
    })
}

/// Every key as a user writes it: `timeout_secs`, `limits/{name}`, `pools/{name}/size`.
fn known_keys(under: &str, fields: &[PublishedField], out: &mut Vec<String>) {
    for field in fields {
        match &field.kind {
            PublishedKind::Value => out.push(format!("{under}{}", field.key)),
            PublishedKind::Map { .. } => out.push(format!("{under}{}/{{name}}", field.key)),
            PublishedKind::NestedMap { fields } => {
                known_keys(&format!("{under}{}/{{name}}/", field.key), fields, out);
            }
        }
    }
}

/// Removes `default` and `examples` everywhere in a secret's schema: they are values, and a
/// secret's values are not published.
fn strip_examples(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            map.remove("default");
            map.remove("examples");
            map.values_mut().for_each(strip_examples);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_examples),
        _ => {}
    }
}

/// Why a value does not fit, at a JSON pointer inside it (empty: the value itself).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Mismatch {
    /// A JSON pointer (`/per_second`, `/2`), empty for the value itself.
    pub(crate) path: String,
    problem: Problem,
}

#[derive(Clone, Debug, PartialEq)]
enum Problem {
    /// The value is not of the expected type or range.
    Got { expected: String, got: String },
    /// Anything else, as a sentence (`property `burst` is missing`).
    Says(String),
}

impl Mismatch {
    /// `got` (a [`what`], perhaps with more) where `expected` was expected.
    pub(crate) fn got(path: &str, expected: impl Into<String>, got: String) -> Self {
        Mismatch {
            path: path.to_owned(),
            problem: Problem::Got {
                expected: expected.into(),
                got,
            },
        }
    }

    pub(crate) fn says(path: &str, sentence: impl Into<String>) -> Self {
        Mismatch {
            path: path.to_owned(),
            problem: Problem::Says(sentence.into()),
        }
    }

    pub(crate) fn is_type_mismatch(&self) -> bool {
        matches!(self.problem, Problem::Got { .. })
    }

    pub(crate) fn expected(&self) -> Option<&str> {
        match &self.problem {
            Problem::Got { expected, .. } => Some(expected),
            Problem::Says(_) => None,
        }
    }

    /// The reason of an [`Error::Invalid`] for a field of type `type_name` documented `doc`:
    /// `expected u64 (Seconds …), got the string "abc"`, or for a mismatch inside the value
    /// `expected RateLimit (…); at /burst: expected u32, got the string "x"`.
    fn reason(&self, type_name: &str, doc: &str) -> String {
        let doc = doc.split_whitespace().collect::<Vec<_>>().join(" ");
        let mut reason = format!("expected {type_name}");
        if !doc.is_empty() {
            reason.push_str(&format!(" ({doc})"));
        }
        match (&self.problem, self.path.is_empty()) {
            (Problem::Got { got, .. }, true) => reason.push_str(&format!(", got {got}")),
            (Problem::Says(sentence), true) => reason.push_str(&format!(": {sentence}")),
            (_, false) => reason.push_str(&format!("; at {}: {self}", self.path)),
        }
        reason
    }
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.problem {
            Problem::Got { expected, got } => write!(f, "expected {expected}, got {got}"),
            Problem::Says(sentence) => f.write_str(sentence),
        }
    }
}

/// A value as a reason shows it: `the string "abc"`, `the number 3`, `an object`. With
/// `redact`, only its JSON type (`a string`).
pub(crate) fn what(value: &Value, redact: bool) -> String {
    const LONGEST: usize = 40;
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(_) if redact => "a boolean".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(_) if redact => "a number".to_owned(),
        Value::Number(n) => format!("the number {n}"),
        Value::String(_) if redact => "a string".to_owned(),
        Value::String(s) if s.chars().count() > LONGEST => {
            let head: String = s.chars().take(LONGEST).collect();
            format!("the string {}…", Value::String(head))
        }
        Value::String(s) => format!("the string {}", Value::String(s.clone())),
        Value::Array(items) => format!("an array of {} items", items.len()),
        Value::Object(_) => "an object".to_owned(),
    }
}

/// A required, non-secret field of a schema made by hand, for tests.
#[cfg(test)]
pub(crate) fn field(key: &str, type_name: &str, kind: PublishedKind) -> PublishedField {
    PublishedField {
        key: key.to_owned(),
        type_name: type_name.to_owned(),
        default: None,
        required: true,
        doc: String::new(),
        secret: false,
        kind,
        json_schema: None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn values_are_shown_short_and_secrets_not_at_all() {
        assert_eq!(what(&json!("abc"), false), r#"the string "abc""#);
        assert_eq!(what(&json!("abc"), true), "a string");
        assert_eq!(what(&json!(1), true), "a number");
        let long = "x".repeat(100);
        assert_eq!(
            what(&json!(long), false),
            format!("the string \"{}\"…", "x".repeat(40))
        );
    }

    #[test]
    fn a_secret_schema_loses_its_defaults_and_examples() {
        let mut schema = json!({
            "type": "object",
            "default": {"password": "hunter2"},
            "properties": {"password": {"type": "string", "examples": ["hunter2"]}}
        });
        strip_examples(&mut schema);
        assert!(!schema.to_string().contains("hunter2"), "{schema}");
    }

    fn sample() -> PublishedSchema {
        PublishedSchema {
            sealed: false,
            prefix: "/config/x".to_owned(),
            type_name: "X".to_owned(),
            fields: vec![
                field("db/port", "u16", PublishedKind::Value),
                field(
                    "limits",
                    "Map<u8>",
                    PublishedKind::Map {
                        entry_type: "u8".to_owned(),
                    },
                ),
                field(
                    "pools",
                    "BTreeMap<String, Pool>",
                    PublishedKind::NestedMap {
                        fields: vec![field("size", "u32", PublishedKind::Value)],
                    },
                ),
            ],
        }
    }

    #[test]
    fn keys_resolve_to_fields_map_entries_and_nested_map_entry_fields() {
        let schema = sample();
        assert_eq!(
            schema.field("db/port").map(|f| f.key.as_str()),
            Some("db/port")
        );
        assert_eq!(
            schema.field("limits/a/b").map(|f| f.key.as_str()),
            Some("limits")
        );
        assert_eq!(
            schema.field("pools/main/size").map(|f| f.key.as_str()),
            Some("size")
        );
        for unknown in [
            "db",
            "limits",
            "limits/",
            "pools/main",
            "pools//size",
            "pools/main/x",
        ] {
            assert!(schema.field(unknown).is_none(), "{unknown}");
        }
    }

    #[test]
    fn secrets_are_found_in_fields_map_entries_and_nested_map_entries() {
        let mut schema = sample();
        let mut secret = field("password", "Secret<String>", PublishedKind::Value);
        secret.secret = true;
        schema.fields.push(secret.clone());
        schema.fields.push(field(
            "tokens",
            "Map<Secret<String>>",
            PublishedKind::Map {
                entry_type: "Secret<String>".to_owned(),
            },
        ));
        schema
            .fields
            .push(field("hint", "Option<Secret<u32>>", PublishedKind::Value));
        schema.fields.push(field(
            "accounts",
            "BTreeMap<String, Account>",
            PublishedKind::NestedMap {
                fields: vec![field("user", "String", PublishedKind::Value), secret],
            },
        ));
        for key in [
            "password",
            "tokens/acme",
            "tokens/a/b",
            "hint",
            "accounts/acme/password",
        ] {
            assert!(schema.is_secret(key), "{key} shown");
        }
        for key in [
            "db/port",
            "limits/a",
            "pools/main/size",
            "tokens",
            "tokens/",
            "accounts/acme/user",
            "accounts//password",
            "passwords",
            "nope",
        ] {
            assert!(!schema.is_secret(key), "{key} hidden");
        }
    }

    #[test]
    fn map_entries_are_checked_as_the_entry_type() {
        let schema = sample();
        assert!(schema.check("limits/acme", &json!(200)).is_ok());
        let Err(Error::Invalid { key, reason }) = schema.check("limits/acme", &json!(300)) else {
            panic!("300 accepted for a u8 entry");
        };
        assert_eq!(key, "limits/acme");
        assert_eq!(reason, "expected u8, got the number 300, outside 0..=255");
        assert!(schema.check("pools/main/size", &json!(-1)).is_err());
        assert_eq!(schema.type_of("limits/acme"), Some("u8"));
        assert_eq!(
            schema.type_of("limits"),
            None,
            "a map's own key is no value"
        );
        assert_eq!(schema.type_of("nope"), None);
    }

    #[test]
    fn unknown_keys_are_refused_with_the_known_keys() {
        let Err(Error::Invalid { key, reason }) = sample().check("dbport", &json!(1)) else {
            panic!("unknown key accepted");
        };
        assert_eq!(key, "dbport");
        assert_eq!(
            reason,
            "unknown key: X has no field `dbport` (known keys: db/port, limits/{name}, \
             pools/{name}/size)"
        );
        let Err(Error::Invalid { reason, .. }) = sample().check("limits", &json!({})) else {
            panic!("a map's own key accepted");
        };
        assert!(
            reason.contains("its entries are the keys under `limits/`"),
            "{reason}"
        );
    }

    #[test]
    fn check_all_refuses_the_first_bad_value_and_ignores_missing_keys() {
        let schema = sample();
        let good = BTreeMap::from([("limits/a".to_owned(), json!(1))]);
        assert!(schema.check_all(&good).is_ok());
        let bad = BTreeMap::from([
            ("db/port".to_owned(), json!("x")),
            ("limits/a".to_owned(), json!(1)),
        ]);
        assert!(matches!(
            schema.check_all(&bad),
            Err(Error::Invalid { key, .. }) if key == "db/port"
        ));
    }

    #[test]
    fn a_mismatch_inside_the_value_names_where() {
        let mismatch = Mismatch::got("/burst", "u32", what(&json!("x"), false));
        assert_eq!(
            mismatch.reason("RateLimit", "Token bucket.\n  Per tenant."),
            r#"expected RateLimit (Token bucket. Per tenant.); at /burst: expected u32, got the string "x""#
        );
    }
}
