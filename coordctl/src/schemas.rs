//! Finding the published schema a key belongs to, and which values are secret.

use coord::config::{PublishedSchema, SCHEMAS_PREFIX};
use coord::store::{KeyRange, RangeOptions};
use coord::Coord;
use serde_json::Value;

use crate::error::CliResult;
use crate::output::REDACTED;

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
    let response = coord
        .store()
        .range(&KeyRange::prefix(SCHEMAS_PREFIX), RangeOptions::default())
        .await?;
    let schemas = response
        .kvs
        .iter()
        .filter_map(|kv| serde_json::from_slice::<PublishedSchema>(&kv.value).ok())
        .collect();
    Ok(Schemas(schemas))
}

/// Published schemas, to tell which keys are secret.
pub struct Schemas(Vec<PublishedSchema>);

impl Schemas {
    /// Every schema, in key order (so by prefix).
    pub fn list(&self) -> &[PublishedSchema] {
        &self.0
    }

    /// True if the nearest schema above `key` marks its field secret.
    pub fn is_secret(&self, key: &str) -> bool {
        self.0
            .iter()
            .filter_map(|schema| {
                let rest = key
                    .strip_prefix(schema.prefix.as_str())?
                    .strip_prefix('/')?;
                Some((schema.prefix.len(), schema, rest))
            })
            .max_by_key(|(len, _, _)| *len)
            .and_then(|(_, schema, rest)| schema.field(rest))
            .is_some_and(|field| field.secret)
    }

    /// `value`, or `"<redacted>"` if `key` is secret.
    pub fn shown(&self, key: &str, value: Value) -> Value {
        if self.is_secret(key) {
            Value::String(REDACTED.to_owned())
        } else {
            value
        }
    }
}

/// A stored value as JSON; a value that is not JSON shows as a JSON string.
pub fn decode(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}
