//! Finding the published schema a key belongs to, and which values are secret.
//!
//! Every value coordctl shows, on the command line or in the console, goes through
//! [`Schemas::shown`] (or [`Under::shown`], the same for keys relative to a prefix): a key the
//! library's [`PublishedSchema::is_secret`] calls secret shows as [`REDACTED`]. Values that
//! arrive already processed elsewhere (a release's values, a diff) pass through it too, so no
//! output depends on what another layer redacted.

use std::collections::BTreeMap;

use coord::config::{PublishedField, PublishedKind, PublishedSchema, REDACTED, SCHEMAS_PREFIX};
use coord::store::{KeyRange, RangeOptions};
use coord::Coord;
use serde_json::Value;

use crate::error::CliResult;

/// Stands for any entry name when asking whether a map's entries are secret: the library
/// decides an entry's secrecy by the map's entry type (or the nested field), never by the name.
const ANY_ENTRY: &str = "entry";

/// The schema of the nearest prefix above `key` that has one, with `key` relative to it.
/// Tries each parent prefix in turn, longest first (`/a/b/c` → `/a/b`, then `/a`).
pub async fn for_key(coord: &Coord, key: &str) -> CliResult<Option<(PublishedSchema, String)>> {
    let mut prefix = key.trim_end_matches('/');
    while let Some((parent, _)) = prefix.rsplit_once('/') {
        if parent.is_empty() {
            break;
        }
        if let Some(schema) = coord.config().schema(parent).await? {
            let relative = key[parent.len() + 1..].to_owned();
            return Ok(Some((schema, relative)));
        }
        prefix = parent;
    }
    Ok(None)
}

/// Every published schema, read in one range (for redacting many keys at once).
pub async fn all(coord: &Coord) -> CliResult<Schemas> {
    // Under the folder, with its slash: what the access policy lets every principal read
    // (`/coord/schemas` without it would also span `/coord/schemas-…`, which etcd refuses).
    let response = coord
        .store()
        .range(
            &KeyRange::prefix(format!("{SCHEMAS_PREFIX}/")),
            RangeOptions::default(),
        )
        .await?;
    let schemas = response
        .kvs
        .iter()
        .filter_map(|kv| serde_json::from_slice::<PublishedSchema>(&kv.value).ok())
        .collect();
    Ok(Schemas(schemas))
}

/// Published schemas, to tell which keys are secret.
#[derive(Debug, Default)]
pub struct Schemas(Vec<PublishedSchema>);

impl Schemas {
    /// Every schema, in key order (so by prefix).
    pub fn list(&self) -> &[PublishedSchema] {
        &self.0
    }

    /// True if a schema published above `key` calls it secret. Every schema above the key is
    /// asked, not only the nearest: two schemas that overlap must not let one show what the
    /// other hides.
    pub fn is_secret(&self, key: &str) -> bool {
        self.0.iter().any(|schema| {
            key.strip_prefix(schema.prefix.as_str())
                .and_then(|rest| rest.strip_prefix('/'))
                .is_some_and(|rest| schema.is_secret(rest))
        })
    }

    /// `value`, or [`REDACTED`] if `key` is secret. The one place coordctl decides whether a
    /// value may be shown.
    pub fn shown(&self, key: &str, value: Value) -> Value {
        if self.is_secret(key) {
            Value::String(REDACTED.to_owned())
        } else {
            value
        }
    }

    /// The same questions for keys relative to `prefix` (a release's values, a diff).
    pub fn under<'a>(&'a self, prefix: &'a str) -> Under<'a> {
        Under {
            schemas: self,
            prefix: prefix.trim_end_matches('/'),
        }
    }

    /// True if any value a field of `schema` can hold is secret: the field itself, the
    /// entries of a map of secrets, a secret field of a nested map's entries. Its default
    /// (a whole map, for a map) is then not shown, and the console edits it as a secret.
    pub fn holds_secret(&self, schema: &PublishedSchema, field: &PublishedField) -> bool {
        let under = self.under(&schema.prefix);
        let key = field.key.as_str();
        match &field.kind {
            PublishedKind::Value => under.is_secret(key),
            PublishedKind::Map { .. } => {
                under.is_secret(key) || under.is_secret(&format!("{key}/{ANY_ENTRY}"))
            }
            PublishedKind::NestedMap { fields } => {
                under.is_secret(key)
                    || fields
                        .iter()
                        .any(|sub| under.entry_field_is_secret(key, &sub.key))
            }
            // A kind this coordctl does not know: hide rather than guess.
            _ => true,
        }
    }
}

/// [`Schemas`] asked about keys relative to one prefix.
#[derive(Clone, Copy)]
pub struct Under<'a> {
    schemas: &'a Schemas,
    prefix: &'a str,
}

impl Under<'_> {
    /// True if `relative` (a key under the prefix) is secret.
    pub fn is_secret(&self, relative: &str) -> bool {
        self.schemas
            .is_secret(&format!("{}/{relative}", self.prefix))
    }

    /// `value`, or [`REDACTED`] if `relative` is secret.
    pub fn shown(&self, relative: &str, value: Value) -> Value {
        self.schemas
            .shown(&format!("{}/{relative}", self.prefix), value)
    }

    /// Every value of a release's map (relative key → value), each as [`Self::shown`].
    pub fn values(&self, values: &BTreeMap<String, Value>) -> BTreeMap<String, Value> {
        values
            .iter()
            .map(|(key, value)| (key.clone(), self.shown(key, value.clone())))
            .collect()
    }

    /// True if field `field` of the entries of nested map `map` is secret.
    pub fn entry_field_is_secret(&self, map: &str, field: &str) -> bool {
        self.is_secret(&format!("{map}/{ANY_ENTRY}/{field}"))
    }
}

/// A stored value as JSON; a value that is not JSON shows as a JSON string.
pub fn decode(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

#[cfg(test)]
mod tests {
    use coord::config::{Map, Secret};
    use serde_json::json;

    use super::*;

    #[derive(coord::CoordConfig)]
    struct Account {
        user: String,
        #[coord(secret)]
        password: Secret<String>,
    }

    #[derive(coord::CoordConfig)]
    struct Vault {
        region: String,
        #[coord(map)]
        tokens: Map<Secret<String>>,
        #[coord(map, nested)]
        accounts: Map<Account>,
        #[coord(map)]
        limits: Map<u32>,
    }

    fn vault() -> Schemas {
        Schemas(vec![PublishedSchema::of::<Vault>("/config/vault")])
    }

    #[test]
    fn map_entries_of_secrets_and_secret_fields_of_nested_entries_are_redacted() {
        let schemas = vault();
        let shown = |key: &str| schemas.shown(key, json!("clear"));
        assert_eq!(shown("/config/vault/tokens/acme"), json!(REDACTED));
        assert_eq!(
            shown("/config/vault/accounts/main/password"),
            json!(REDACTED)
        );
        assert_eq!(shown("/config/vault/accounts/main/user"), json!("clear"));
        assert_eq!(shown("/config/vault/region"), json!("clear"));
        assert_eq!(shown("/config/vault/limits/eu"), json!("clear"));
        assert_eq!(shown("/config/other/tokens/acme"), json!("clear"));
        let under = schemas.under("/config/vault/");
        let values = BTreeMap::from([
            ("tokens/acme".to_owned(), json!("t-1")),
            ("region".to_owned(), json!("eu")),
        ]);
        assert_eq!(
            under.values(&values),
            BTreeMap::from([
                ("tokens/acme".to_owned(), json!(REDACTED)),
                ("region".to_owned(), json!("eu")),
            ])
        );
    }

    #[test]
    fn a_field_holds_a_secret_if_any_value_under_it_is_one() {
        let schemas = vault();
        let schema = &schemas.list()[0];
        let holds: Vec<(&str, bool)> = schema
            .fields
            .iter()
            .map(|f| (f.key.as_str(), schemas.holds_secret(schema, f)))
            .collect();
        assert_eq!(
            holds,
            [
                ("region", false),
                ("tokens", true),
                ("accounts", true),
                ("limits", false)
            ]
        );
    }

    #[test]
    fn a_key_is_secret_if_any_schema_above_it_says_so() {
        let mut schemas = vault();
        // A schema deeper than the vault's that knows nothing of secrets does not unhide.
        #[derive(coord::CoordConfig)]
        struct Plain {
            acme: String,
        }
        schemas
            .0
            .push(PublishedSchema::of::<Plain>("/config/vault/tokens"));
        assert!(schemas.is_secret("/config/vault/tokens/acme"));
    }
}
