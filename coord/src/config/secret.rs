//! [`Secret<T>`]: a config value that never shows itself in `Debug` or `Display`.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

use crate::config::type_name::short_type_name;

/// A value that is stored and decoded like `T` but prints as `<redacted>`.
///
/// `#[coord(secret)]` fields must have this type: a derive cannot change what the struct's own
/// `#[derive(Debug)]` prints, but the field's type can, so `{:?}` of the whole config, a
/// `tracing` field or a panic message never carries the value.
///
/// In the store and over serde it is exactly `T` (`Secret<String>` is the JSON string). Read it
/// with [`expose`](Self::expose).
///
/// A stored value that does not decode is an error that says what was expected and that the
/// value is redacted, never the value (serde's own message would quote it:
/// `invalid type: string "hunter2", expected u64`). So `Live::last_error`, its warning, the
/// instance's rollout status and anything that prints the error stay clean.
///
/// There is no `Deref` to `T` on purpose: with one, `&Secret<String>` would coerce to `&str`
/// wherever a `&str` is accepted (a log macro, `format!("{}", &*s)`, a `Display` bound), and
/// the value would leak without anyone having asked for it. With `expose()` every read is
/// written out and easy to find.
///
/// # Examples
///
/// ```
/// use coord::config::Secret;
///
/// let key = Secret::new("hunter2".to_string());
/// assert_eq!(format!("{key:?} {key}"), "<redacted> <redacted>");
/// assert_eq!(key.expose(), "hunter2");
/// assert_eq!(serde_json::to_string(&key).unwrap(), r#""hunter2""#);
/// ```
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Secret<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Secret<T> {
    /// `T`'s own decoding; its error, which may quote the value, is replaced by one that
    /// names only the expected type.
    ///
    /// ```
    /// use coord::config::Secret;
    ///
    /// let error = serde_json::from_str::<Secret<u64>>(r#""hunter2""#).unwrap_err();
    /// assert!(!error.to_string().contains("hunter2"), "{error}");
    /// assert!(error.to_string().contains("expected u64"), "{error}");
    /// ```
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        T::deserialize(deserializer).map(Secret).map_err(|_| {
            serde::de::Error::custom(format_args!(
                "expected {}, got a value that does not decode (not shown: it is secret)",
                short_type_name(std::any::type_name::<T>())
            ))
        })
    }
}

/// What a secret value shows as in every output of coord: `Debug`, `Display`, release answers,
/// history, diffs, `explain`, errors, coordctl and its console.
pub const REDACTED: &str = "<redacted>";

impl<T> Secret<T> {
    /// Wraps a value.
    pub const fn new(value: T) -> Self {
        Secret(value)
    }

    /// The value itself. Keep what it returns out of logs.
    pub const fn expose(&self) -> &T {
        &self.0
    }

    /// Unwraps the value.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> From<T> for Secret<T> {
    fn from(value: T) -> Self {
        Secret(value)
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// A secret has the schema of what it holds: it is that value in the store.
#[cfg(feature = "schema")]
impl<T: schemars::JsonSchema> schemars::JsonSchema for Secret<T> {
    fn inline_schema() -> bool {
        T::inline_schema()
    }

    fn schema_name() -> std::borrow::Cow<'static, str> {
        T::schema_name()
    }

    fn schema_id() -> std::borrow::Cow<'static, str> {
        T::schema_id()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        T::json_schema(generator)
    }
}
