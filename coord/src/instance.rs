//! Who a [`Coord`](crate::Coord) is: an [`Instance`] name and labels.
//!
//! Every `Coord` has an identity, fixed for its lifetime and shared by its clones. It names
//! the process in what the `Coord` reports about itself, such as the rollout status of its
//! [`Live`](crate::Live) handles (see `ConfigCenter::rollout`).
//!
//! - With [`Coord::connect`](crate::Coord::connect) it comes from the [`ClientConfig`]:
//!   `instance` (default `{hostname}-{pid}`) and `labels`, which
//!   [`ClientConfig::from_env`] reads from `COORD_INSTANCE` and `COORD_LABELS`.
//! - [`Coord::in_memory`](crate::Coord::in_memory) and
//!   [`Coord::from_store`](crate::Coord::from_store) take the default, `{hostname}-{pid}`
//!   without labels; [`Coord::from_store_as`](crate::Coord::from_store_as) takes one, for tests
//!   with several `Coord`s on one store.
//!
//!
//! # Sizes
//!
//! The name and labels go into every status key and value this `Coord` writes, so they are
//! bounded where the identity is made ([`Instance::validate`], which `Coord::connect` and
//! `Coord::from_store_as` call): a name of at most [`MAX_NAME_BYTES`] bytes (a DNS name's
//! length), label keys of at most [`MAX_LABEL_KEY_BYTES`] (a Kubernetes label name's), values
//! of at most [`MAX_LABEL_VALUE_BYTES`], and all keys and values together at most
//! [`MAX_LABELS_BYTES`]. Far under etcd's 1.5 MiB request limit: an identity that fits is
//! always written, and one that does not is refused at start, naming the limit, rather than
//! being refused by etcd at every status write.
//!
//! [`ClientConfig`]: crate::ClientConfig
//! [`ClientConfig::from_env`]: crate::ClientConfig::from_env

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The identity of one `Coord`: a name unique among the processes that share a config
/// prefix, and labels (zone, version, canary…) that say what kind of instance it is.
///
/// # Examples
///
/// ```
/// use coord::Instance;
///
/// let me = Instance::new("checkout-7f9c").label("zone", "eu-1").label("track", "canary");
/// assert_eq!(me.name, "checkout-7f9c");
/// assert_eq!(me.labels["zone"], "eu-1");
///
/// // The default name is `{hostname}-{pid}`.
/// let default = Instance::default();
/// assert!(default.name.ends_with(&format!("-{}", std::process::id())));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// The name: non-empty, without `/` or NUL. Two live `Coord`s with the same name on one
    /// prefix overwrite each other's status.
    pub name: String,
    /// Free-form labels, sorted by key.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl Default for Instance {
    /// `{hostname}-{pid}` without labels.
    fn default() -> Self {
        Instance::new(default_name())
    }
}

impl Instance {
    /// An instance called `name`, without labels. [`validate`](Self::validate) checks the name.
    pub fn new(name: impl Into<String>) -> Self {
        Instance {
            name: name.into(),
            labels: BTreeMap::new(),
        }
    }

    /// Adds (or replaces) the label `key` = `value`.
    #[must_use]
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// The identity the environment gives: the name from `COORD_INSTANCE` (default
    /// `{hostname}-{pid}`), the labels from `COORD_LABELS` (`key=value,key2=value2`).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] naming the variable if `COORD_INSTANCE` is not a valid name
    /// or `COORD_LABELS` is not a list of `key=value`.
    pub fn from_env_or_default() -> Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// [`from_env_or_default`](Self::from_env_or_default) with a custom lookup, so it can be
    /// tested without touching the process environment.
    ///
    /// ```
    /// let vars = |name: &str| match name {
    ///     "COORD_INSTANCE" => Some("api-1".to_owned()),
    ///     "COORD_LABELS" => Some("zone=eu-1, track=canary".to_owned()),
    ///     _ => None,
    /// };
    /// let me = coord::Instance::from_lookup(vars)?;
    /// assert_eq!(me, coord::Instance::new("api-1").label("zone", "eu-1").label("track", "canary"));
    /// # Ok::<(), coord::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`from_env_or_default`](Self::from_env_or_default).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let name = match lookup(INSTANCE_VAR) {
            Some(name) => {
                let name = name.trim().to_owned();
                check_name(INSTANCE_VAR, &name)?;
                name
            }
            None => default_name(),
        };
        let labels = match lookup(LABELS_VAR) {
            Some(text) => parse_labels(LABELS_VAR, &text)?,
            None => BTreeMap::new(),
        };
        Ok(Instance { name, labels })
    }

    /// Checks the name and the labels, their characters and their sizes (see the
    /// [module docs](self#sizes)).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] (field `instance`) for an empty name, one with `/` or NUL, or
    /// one over [`MAX_NAME_BYTES`]; (field `labels`) for an empty label key or one with `=`,
    /// `,` or NUL, a key over [`MAX_LABEL_KEY_BYTES`], a value over
    /// [`MAX_LABEL_VALUE_BYTES`], or labels over [`MAX_LABELS_BYTES`] in all. The reason names
    /// the label, its size and the limit.
    ///
    /// ```
    /// let huge = coord::Instance::new("api-1").label("notes", "x".repeat(2 << 20));
    /// let error = huge.validate().unwrap_err();
    /// assert!(error.to_string().contains("over the limit of 4096 bytes"), "{error}");
    /// ```
    pub fn validate(&self) -> Result<()> {
        check_name("instance", &self.name)?;
        check_labels("labels", &self.labels)
    }
}

/// The longest instance name, in bytes: a DNS name's limit (hostnames make the default).
pub const MAX_NAME_BYTES: usize = 253;
/// The longest label key, in bytes: a Kubernetes label name's limit.
pub const MAX_LABEL_KEY_BYTES: usize = 63;
/// The longest label value, in bytes: room for a version string, a commit, a short note.
pub const MAX_LABEL_VALUE_BYTES: usize = 4096;
/// The most bytes all label keys and values of one instance may hold together: every status
/// key this `Coord` writes carries them, once per bound prefix.
pub const MAX_LABELS_BYTES: usize = 64 * 1024;

/// The variable [`Instance::from_env_or_default`] and `ClientConfig::from_env` read the name
/// from.
pub(crate) const INSTANCE_VAR: &str = "COORD_INSTANCE";
/// The variable they read the labels from.
pub(crate) const LABELS_VAR: &str = "COORD_LABELS";

/// `{hostname}-{pid}`: the hostname from `/proc/sys/kernel/hostname`, else `HOSTNAME`, else
/// `localhost`.
pub(crate) fn default_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|host| host.trim().replace(['/', '\0'], "_"))
        .filter(|host| !host.is_empty())
        .unwrap_or_else(|| "localhost".to_owned());
    format!("{host}-{}", std::process::id())
}

/// An instance name goes into a key as its last segment.
pub(crate) fn check_name(field: &str, name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::invalid_argument(field, "the instance name is empty"));
    }
    if name.contains(['/', '\0']) {
        return Err(Error::invalid_argument(
            field,
            format!(
                "instance name `{}` contains `/` or NUL",
                name.escape_debug()
            ),
        ));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(Error::invalid_argument(
            field,
            format!(
                "the instance name `{}…` is {} bytes, over the limit of {MAX_NAME_BYTES} bytes",
                shown_start(name),
                name.len()
            ),
        ));
    }
    Ok(())
}

/// Checks every label and their total size.
fn check_labels(field: &str, labels: &BTreeMap<String, String>) -> Result<()> {
    let mut total = 0;
    for (key, value) in labels {
        check_label(field, key, value)?;
        total += key.len() + value.len();
    }
    if total > MAX_LABELS_BYTES {
        return Err(Error::invalid_argument(
            field,
            format!(
                "the {} labels hold {total} bytes of keys and values, over the limit of \
                 {MAX_LABELS_BYTES} bytes in all",
                labels.len()
            ),
        ));
    }
    Ok(())
}

/// The first characters of a long text, for an error that must not quote megabytes.
fn shown_start(text: &str) -> String {
    text.chars()
        .take(32)
        .collect::<String>()
        .escape_debug()
        .to_string()
}

fn check_label(field: &str, key: &str, value: &str) -> Result<()> {
    // Sizes first: the messages below quote the key and value whole.
    if key.len() > MAX_LABEL_KEY_BYTES {
        return Err(Error::invalid_argument(
            field,
            format!(
                "label key `{}…` is {} bytes, over the limit of {MAX_LABEL_KEY_BYTES} bytes",
                shown_start(key),
                key.len()
            ),
        ));
    }
    if value.len() > MAX_LABEL_VALUE_BYTES {
        return Err(Error::invalid_argument(
            field,
            format!(
                "the value of label `{}` is {} bytes, over the limit of \
                 {MAX_LABEL_VALUE_BYTES} bytes",
                key.escape_debug(),
                value.len()
            ),
        ));
    }
    if key.is_empty() {
        return Err(Error::invalid_argument(
            field,
            format!("label `={value}` has an empty key"),
        ));
    }
    if key.contains(['=', ',', '\0']) || value.contains('\0') {
        return Err(Error::invalid_argument(
            field,
            format!(
                "label `{}={}`: keys may not hold `=`, `,` or NUL, values not NUL",
                key.escape_debug(),
                value.escape_debug()
            ),
        ));
    }
    Ok(())
}

/// Parses `key=value,key2=value2` (spaces around items ignored, empty items skipped); a
/// malformed item or a repeated key is [`Error::InvalidArgument`] naming `field`.
pub(crate) fn parse_labels(field: &str, text: &str) -> Result<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    for item in text
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
    {
        let Some((key, value)) = item.split_once('=') else {
            return Err(Error::invalid_argument(
                field,
                format!("`{item}` is not key=value (expected `key=value,key2=value2`)"),
            ));
        };
        let (key, value) = (key.trim(), value.trim());
        check_label(field, key, value)?;
        if labels.insert(key.to_owned(), value.to_owned()).is_some() {
            return Err(Error::invalid_argument(
                field,
                format!("label `{key}` is given twice"),
            ));
        }
    }
    check_labels(field, &labels)?;
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(err: Error) -> String {
        match err {
            Error::InvalidArgument { field, .. } => field,
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    fn vars(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn labels_parse_with_spaces_and_trailing_commas() {
        let labels = parse_labels(LABELS_VAR, " zone=eu-1 , track = canary,,version=1.2=rc,")
            .expect("well-formed labels");
        let expected: BTreeMap<String, String> =
            [("track", "canary"), ("version", "1.2=rc"), ("zone", "eu-1")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
        assert_eq!(labels, expected);
        assert!(parse_labels(LABELS_VAR, "").unwrap().is_empty());
        assert_eq!(parse_labels(LABELS_VAR, "empty=").unwrap()["empty"], "");
    }

    #[test]
    fn malformed_labels_name_the_variable() {
        for bad in ["zone", "zone=eu,track", "=eu", "zone=a,zone=b"] {
            let err = parse_labels(LABELS_VAR, bad).expect_err(bad);
            let text = err.to_string();
            assert_eq!(field_of(err), LABELS_VAR, "{bad}: {text}");
        }
        let err = Instance::from_lookup(vars(&[("COORD_LABELS", "zone:eu")])).unwrap_err();
        assert!(err.to_string().contains("zone:eu"), "{err}");
        assert_eq!(field_of(err), "COORD_LABELS");
    }

    #[test]
    fn the_default_name_is_host_dash_pid() {
        let name = default_name();
        let suffix = format!("-{}", std::process::id());
        let host = name.strip_suffix(&suffix).expect("ends with -pid");
        assert!(!host.is_empty() && !host.contains('/'), "{name}");
        assert_eq!(Instance::default(), Instance::new(name.clone()));
        // Without variables the environment gives the default too.
        assert_eq!(
            Instance::from_lookup(|_| None).unwrap(),
            Instance::new(name)
        );
    }

    #[test]
    fn the_environment_names_and_labels_the_instance() {
        let me = Instance::from_lookup(vars(&[
            ("COORD_INSTANCE", " api-1 "),
            ("COORD_LABELS", "zone=eu-1"),
        ]))
        .unwrap();
        assert_eq!(me, Instance::new("api-1").label("zone", "eu-1"));
        for bad in ["", "a/b"] {
            let err =
                Instance::from_lookup(|name| (name == "COORD_INSTANCE").then(|| bad.to_owned()))
                    .expect_err(bad);
            assert_eq!(field_of(err), "COORD_INSTANCE");
        }
    }

    #[test]
    fn validate_checks_the_name_and_label_keys() {
        assert!(Instance::new("a").label("zone", "x").validate().is_ok());
        assert_eq!(
            field_of(Instance::new("").validate().unwrap_err()),
            "instance"
        );
        assert_eq!(
            field_of(Instance::new("a/b").validate().unwrap_err()),
            "instance"
        );
        assert_eq!(
            field_of(Instance::new("a").label("", "x").validate().unwrap_err()),
            "labels"
        );
        assert_eq!(
            field_of(Instance::new("a").label("k=v", "x").validate().unwrap_err()),
            "labels"
        );
    }

    /// The reason of an `InvalidArgument` on `field`.
    fn reason_of(err: Error, field: &str) -> String {
        match err {
            Error::InvalidArgument { field: f, reason } if f == field => reason,
            other => panic!("expected InvalidArgument on {field}, got {other:?}"),
        }
    }

    #[test]
    fn label_sizes_are_bounded_and_the_error_names_the_limit() {
        let at_limits = Instance::new("n".repeat(MAX_NAME_BYTES)).label(
            "k".repeat(MAX_LABEL_KEY_BYTES),
            "v".repeat(MAX_LABEL_VALUE_BYTES),
        );
        assert!(at_limits.validate().is_ok());

        let long_value = Instance::new("a").label("notes", "x".repeat(2 << 20));
        let reason = reason_of(long_value.validate().unwrap_err(), "labels");
        assert!(
            reason.contains("label `notes` is 2097152 bytes, over the limit of 4096 bytes"),
            "{reason}"
        );
        assert!(reason.len() < 200, "the value is not quoted: {reason}");

        let long_key = Instance::new("a").label("k".repeat(64), "v");
        let reason = reason_of(long_key.validate().unwrap_err(), "labels");
        assert!(
            reason.contains("is 64 bytes, over the limit of 63 bytes"),
            "{reason}"
        );

        let many = (0..17).fold(Instance::new("a"), |me, i| {
            me.label(format!("k{i:02}"), "v".repeat(MAX_LABEL_VALUE_BYTES - 3))
        });
        let reason = reason_of(many.validate().unwrap_err(), "labels");
        assert!(
            reason.contains("the 17 labels hold 69632 bytes")
                && reason.contains("65536 bytes in all"),
            "{reason}"
        );

        let long_name = Instance::new("n".repeat(MAX_NAME_BYTES + 1));
        let reason = reason_of(long_name.validate().unwrap_err(), "instance");
        assert!(reason.contains("over the limit of 253 bytes"), "{reason}");

        // The environment's labels are held to the same limits.
        let text = format!("notes={}", "x".repeat(MAX_LABEL_VALUE_BYTES + 1));
        let reason = reason_of(parse_labels(LABELS_VAR, &text).unwrap_err(), LABELS_VAR);
        assert!(reason.contains("over the limit of 4096 bytes"), "{reason}");
    }

    #[test]
    fn serde_round_trips_and_labels_default_to_none() {
        let me = Instance::new("a").label("zone", "x");
        let text = serde_json::to_string(&me).unwrap();
        assert_eq!(text, r#"{"name":"a","labels":{"zone":"x"}}"#);
        assert_eq!(serde_json::from_str::<Instance>(&text).unwrap(), me);
        assert_eq!(
            serde_json::from_str::<Instance>(r#"{"name":"b"}"#).unwrap(),
            Instance::new("b")
        );
    }
}
