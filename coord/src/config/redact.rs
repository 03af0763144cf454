//! Which stored values an output may show.
//!
//! # What it promises
//!
//! - **Decided when shown.** Whether a key is secret is asked at output time of the schema
//!   known then: the typed struct where the caller has one, else the schema published for the
//!   prefix ([`PublishedSchema::is_secret`]: `#[coord(secret)]` fields, types holding a
//!   [`Secret`](crate::config::Secret), entries of a `Map<Secret<T>>`, secret fields of nested
//!   map entries). A key that a record marked secret when it was written stays secret, even if
//!   the schema has changed since or is gone.
//! - **One rule for every output.** Release answers, history, diffs and `explain` all show a
//!   value through [`Redaction::show_marked`]; a secret shows as [`REDACTED`].

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::Value;

use crate::config::published::PublishedSchema;
use crate::config::secret::REDACTED;

/// The secret keys (relative to one prefix) an output hides.
#[derive(Clone, Debug, Default)]
pub(crate) struct Redaction {
    /// Shared: a redaction is cloned for each release and record shown.
    schemas: Vec<Arc<PublishedSchema>>,
    marked: BTreeSet<String>,
}

impl Redaction {
    /// Hides what `schema` says is secret (nothing, without one).
    pub(crate) fn new(schema: Option<Arc<PublishedSchema>>) -> Self {
        Redaction {
            schemas: schema.into_iter().collect(),
            marked: BTreeSet::new(),
        }
    }

    /// Also hides what `schema` says is secret: a typed struct's schema beside the published
    /// one, which may be older or newer.
    pub(crate) fn with_schema(mut self, schema: Arc<PublishedSchema>) -> Self {
        self.schemas.push(schema);
        self
    }

    /// Also hides these keys, whatever the schema says.
    pub(crate) fn marking<'k>(mut self, keys: impl IntoIterator<Item = &'k String>) -> Self {
        self.marked.extend(keys.into_iter().cloned());
        self
    }

    /// True if the value of `key` (relative to the prefix) must not be shown.
    pub(crate) fn is_secret(&self, key: &str) -> bool {
        self.marked.contains(key) || self.schemas.iter().any(|schema| schema.is_secret(key))
    }

    /// The keys of `keys` that are secret: what a record written now marks.
    pub(crate) fn secrets_among<'k>(
        &self,
        keys: impl IntoIterator<Item = &'k String>,
    ) -> BTreeSet<String> {
        keys.into_iter()
            .filter(|key| self.is_secret(key))
            .cloned()
            .collect()
    }

    /// `text`, the stored value of `key`, as output shows it: its JSON, a JSON string if it is
    /// not JSON, [`REDACTED`] if the key is secret here or in `marked` (a record's own marks,
    /// given apart so no redaction is copied per record).
    pub(crate) fn show_marked(&self, marked: &BTreeSet<String>, key: &str, text: &str) -> Value {
        if marked.contains(key) || self.is_secret(key) {
            return redacted();
        }
        serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
    }
}

/// What a secret value shows as, as JSON.
pub(crate) fn redacted() -> Value {
    Value::String(REDACTED.to_owned())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::config::published::{PublishedField, PublishedKind, field};

    fn pay() -> PublishedSchema {
        PublishedSchema {
            sealed: false,
            prefix: "/config/pay".to_owned(),
            type_name: "Pay".to_owned(),
            fields: vec![
                PublishedField {
                    secret: true,
                    ..field("api_key", "Secret<String>", PublishedKind::Value)
                },
                field(
                    "tokens",
                    "Map<Secret<String>>",
                    PublishedKind::Map {
                        entry_type: "Secret<String>".to_owned(),
                    },
                ),
                field("region", "String", PublishedKind::Value),
            ],
        }
    }

    #[test]
    fn the_schema_and_the_marks_both_hide() {
        let redaction = Redaction::new(Some(Arc::new(pay()))).marking(&["old_password".to_owned()]);
        assert_eq!(
            redaction.show_marked(&BTreeSet::new(), "api_key", "\"k\""),
            json!(REDACTED)
        );
        assert_eq!(
            redaction.show_marked(&BTreeSet::new(), "tokens/acme", "\"t\""),
            json!(REDACTED)
        );
        assert_eq!(
            redaction.show_marked(&BTreeSet::new(), "old_password", "\"p\""),
            json!(REDACTED)
        );
        assert_eq!(
            redaction.show_marked(&BTreeSet::new(), "region", "\"eu\""),
            json!("eu")
        );
        assert_eq!(
            redaction.show_marked(&BTreeSet::new(), "region", "not json"),
            json!("not json")
        );
    }

    #[test]
    fn without_a_schema_only_marked_keys_hide() {
        let redaction = Redaction::new(None).marking(&["pw".to_owned()]);
        assert!(redaction.is_secret("pw"));
        assert!(!redaction.is_secret("api_key"));
        let keys = ["pw".to_owned(), "x".to_owned()];
        assert_eq!(
            redaction.secrets_among(&keys),
            BTreeSet::from(["pw".to_owned()])
        );
    }
}
