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

    /// Checks the name and the label keys.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] (field `instance`) for an empty name or one with `/` or NUL;
    /// (field `labels`) for an empty label key or one with `=`, `,` or NUL.
    pub fn validate(&self) -> Result<()> {
        check_name("instance", &self.name)?;
        for (key, value) in &self.labels {
            check_label("labels", key, value)?;
        }
        Ok(())
    }
}

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
    Ok(())
}

fn check_label(field: &str, key: &str, value: &str) -> Result<()> {
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
