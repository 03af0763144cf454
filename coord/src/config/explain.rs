//! Provenance: where each value of a [`Live`](crate::Live) came from ([`Live::explain`]).
//!
//! # What it promises
//!
//! - **The value served, not a fresh read.** An [`Explanation`] describes the value the handle
//!   serves, from what that very build read: the snapshot of the prefix it was built from (with
//!   each key's mod revision) and the environment overrides that were set when it was built.
//!   Nothing is read from the store, so it costs no round trip and cannot disagree with
//!   [`Live::load`]. A reload that races the call is described either wholly before or wholly
//!   after.
//! - **Every key.** One entry per key the struct reads, by its full key: nested structs
//!   flattened (`/config/app/db/host`), map fields one entry per stored entry
//!   (`/config/app/routes/eu`).
//! - **Secrets stay secret.** Every secret value is `"<redacted>"`: a `#[coord(secret)]`
//!   field, an entry of a map of secrets, a secret field of a nested map's entry (the rule of
//!   [`PublishedSchema::is_secret`](crate::config::PublishedSchema::is_secret)).
//! - **Free until asked.** The handle keeps only the `Arc`s of what it was built from (no copy
//!   per key on a reload); the table is made when `explain` is called.
//!
//! [`Live::explain`]: crate::Live::explain
//! [`Live::load`]: crate::Live::load

use std::fmt;
use std::sync::Arc;

use crate::config::gray::{GrayDoc, gray_key};
use crate::config::hub::RangeSnapshot;
use crate::config::published::PublishedSchema;
use crate::config::redact::redacted;
use crate::config::schema::{CoordConfig, FieldInfo, FieldKind};
use crate::error::Result;

/// Where each value of a [`Live`](crate::Live) handle came from, as
/// [`Live::explain`](crate::Live::explain) gives it. Its `Display` is an aligned table.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Explanation {
    /// The prefix the struct is bound to.
    pub prefix: String,
    /// The store revision of the snapshot the value was built from (0 for
    /// [`Live::fixed`](crate::Live::fixed)). The handle may be current at a later revision that
    /// changed none of its keys (see [`Live::revision`](crate::Live::revision)).
    pub revision: i64,
    /// One entry per key, in field order.
    pub entries: Vec<Explained>,
}

/// One key of an [`Explanation`]: its value and where it came from.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Explained {
    /// The full key (`/config/checkout/timeout_secs`).
    pub key: String,
    /// The value the handle serves, as JSON; the string `"<redacted>"` for a secret.
    pub value: serde_json::Value,
    /// True for a secret value: a `#[coord(secret)]` field, an entry of a map of secrets, a
    /// secret field of a nested map's entry.
    pub secret: bool,
    /// Where the value came from.
    pub origin: Origin,
}

/// Where a value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Origin {
    /// The key itself, last written at `mod_revision` (0 if unknown: the value came from a
    /// snapshot on disk at an offline start and the store has not been read since).
    Key {
        /// The revision of the write that stored the value.
        mod_revision: i64,
    },
    /// An older key of the field (`#[coord(alias = "...")]`), the key itself being absent.
    Alias {
        /// The full alias key.
        key: String,
        /// The revision of the write that stored the value.
        mod_revision: i64,
    },
    /// An environment override (`#[coord(env = "...")]`) that was set when the value was
    /// built.
    Env {
        /// The variable's name, without `$`.
        var: String,
    },
    /// A gray release laid over the prefix for this instance (see
    /// [`Selector`](crate::config::Selector)).
    Gray {
        /// The gray release's number.
        release: u64,
        /// The key that holds the gray release.
        key: String,
        /// The revision that wrote the gray release.
        mod_revision: i64,
    },
    /// The field's default: no key, alias or override held a value.
    Default,
    /// The value given to [`Live::fixed`](crate::Live::fixed).
    Fixed,
}

impl Explanation {
    /// The entry of a full key.
    pub fn get(&self, key: &str) -> Option<&Explained> {
        self.entries.iter().find(|entry| entry.key == key)
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Key { mod_revision: 0 } => {
                write!(f, "key, mod revision unknown (snapshot on disk)")
            }
            Origin::Key { mod_revision } => write!(f, "key, mod revision {mod_revision}"),
            Origin::Alias { key, mod_revision } => {
                write!(f, "alias {key}, mod revision {mod_revision}")
            }
            Origin::Env { var } => write!(f, "env ${var}"),
            Origin::Gray {
                release,
                key,
                mod_revision,
            } => write!(
                f,
                "gray release {release} ({key}, mod revision {mod_revision})"
            ),
            Origin::Default => f.write_str("default"),
            Origin::Fixed => f.write_str("Live::fixed"),
        }
    }
}

impl fmt::Display for Explanation {
    /// A header line (prefix and revision), then `KEY  VALUE  SOURCE`, columns aligned.
    /// Values longer than 60 characters are cut short with `…`; the entries hold them whole.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const WIDEST: usize = 60;
        writeln!(f, "{}/ at revision {}", self.prefix, self.revision)?;
        let rows: Vec<[String; 3]> = std::iter::once(["KEY", "VALUE", "SOURCE"].map(str::to_owned))
            .chain(self.entries.iter().map(|entry| {
                let mut value = entry.value.to_string();
                if value.chars().count() > WIDEST {
                    value = value.chars().take(WIDEST - 1).chain(['…']).collect();
                }
                [entry.key.clone(), value, entry.origin.to_string()]
            }))
            .collect();
        let mut widths = [0; 2];
        for row in &rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        for [key, value, source] in &rows {
            writeln!(
                f,
                "{key:<w0$}  {value:<w1$}  {source}",
                w0 = widths[0],
                w1 = widths[1]
            )?;
        }
        Ok(())
    }
}

/// What a handle's current value was built from; swapped in with the value.
pub(crate) struct Built<T> {
    pub value: Arc<T>,
    /// The (overlaid) snapshot of the prefix the value was built from.
    pub snapshot: RangeSnapshot,
    /// The environment overrides that were set at the build.
    pub env: Vec<String>,
    /// The gray release laid over the snapshot, if any.
    pub gray: Option<Arc<GrayDoc>>,
}

impl<T> Clone for Built<T> {
    fn clone(&self) -> Self {
        Built {
            value: Arc::clone(&self.value),
            snapshot: self.snapshot.clone(),
            env: self.env.clone(),
            gray: self.gray.clone(),
        }
    }
}

/// The environment variables of `fields`, nested map entries' included: what a build
/// checks to tell which overrides it applied.
pub(crate) fn env_vars(fields: &[FieldInfo]) -> Vec<String> {
    let mut vars = Vec::new();
    for field in fields {
        vars.extend(field.env.iter().cloned());
        if let FieldKind::NestedMap(entry) = &field.kind {
            vars.extend(env_vars(entry));
        }
    }
    vars.sort();
    vars.dedup();
    vars
}

/// The explanation of a value built from `built` under `prefix`.
pub(crate) fn explain<T: CoordConfig>(prefix: &str, built: &Built<T>) -> Result<Explanation> {
    let fields = T::fields();
    let schema = PublishedSchema::of::<T>(prefix);
    let lookup = Lookup {
        prefix,
        snapshot: &built.snapshot,
        env: &built.env,
        gray: built.gray.as_deref().map(|doc| (doc, gray_key(prefix))),
    };
    let entries = built
        .value
        .to_values()?
        .into_iter()
        .map(|(relative, value)| {
            let full = format!("{prefix}/{relative}");
            let origin = match locate(&fields, &relative) {
                Some((field, base)) => lookup.origin(field, &base, &relative, &full),
                // Every key `to_values` gives is a field's; an impl that disagrees with its
                // own `fields()` still gets its value shown, from the key if stored.
                None => lookup.stored(&relative, &full).unwrap_or(Origin::Default),
            };
            let secret = schema.is_secret(&relative);
            Explained {
                key: full,
                value: if secret { redacted() } else { value },
                secret,
                origin,
            }
        })
        .collect();
    Ok(Explanation {
        prefix: prefix.to_owned(),
        revision: built.snapshot.revision,
        entries,
    })
}

/// The explanation of a [`Live::fixed`](crate::Live::fixed) value: every key `Fixed`.
pub(crate) fn fixed<T: CoordConfig>(value: &T) -> Result<Explanation> {
    let prefix = T::PREFIX.unwrap_or("");
    let schema = PublishedSchema::of::<T>(prefix);
    let entries = value
        .to_values()?
        .into_iter()
        .map(|(relative, value)| {
            let secret = schema.is_secret(&relative);
            Explained {
                key: format!("{prefix}/{relative}"),
                value: if secret { redacted() } else { value },
                secret,
                origin: Origin::Fixed,
            }
        })
        .collect();
    Ok(Explanation {
        prefix: prefix.to_owned(),
        revision: 0,
        entries,
    })
}

/// The field a relative key (as `to_values` gives it) belongs to, and the key of the nested
/// map entry it is in (`"routes/eu/"`; empty outside nested maps), which the field's own key
/// and aliases are relative to.
fn locate<'f>(fields: &'f [FieldInfo], key: &str) -> Option<(&'f FieldInfo, String)> {
    for field in fields {
        match &field.kind {
            FieldKind::Value if field.key == key => return Some((field, String::new())),
            FieldKind::Value => {}
            FieldKind::Map => {
                if key
                    .strip_prefix(field.key.as_str())
                    .is_some_and(|rest| rest.starts_with('/'))
                {
                    return Some((field, String::new()));
                }
            }
            FieldKind::NestedMap(entry_fields) => {
                let Some(rest) = key
                    .strip_prefix(field.key.as_str())
                    .and_then(|rest| rest.strip_prefix('/'))
                else {
                    continue;
                };
                let Some((name, inner)) = rest.split_once('/') else {
                    continue;
                };
                if let Some((inner_field, inner_base)) = locate(entry_fields, inner) {
                    let base = format!("{}/{name}/{inner_base}", field.key);
                    return Some((inner_field, base));
                }
            }
        }
    }
    None
}

/// What a build read, to tell where each value came from.
struct Lookup<'a> {
    prefix: &'a str,
    snapshot: &'a RangeSnapshot,
    env: &'a [String],
    /// The gray release laid over the snapshot, and the key that holds it.
    gray: Option<(&'a GrayDoc, String)>,
}

impl Lookup<'_> {
    /// Where `field`'s value (at relative key `relative`, full key `full`, in the nested map
    /// entry `base`) came from, in the order the generated code reads: an override that was
    /// set, else the key, else the first stored alias, else the default.
    fn origin(&self, field: &FieldInfo, base: &str, relative: &str, full: &str) -> Origin {
        if let Some(var) = field.env.as_ref().filter(|var| self.env.contains(var)) {
            return Origin::Env { var: var.clone() };
        }
        if let Some(origin) = self.stored(relative, full) {
            return origin;
        }
        for alias in &field.aliases {
            let key = format!("{}/{base}{alias}", self.prefix);
            if let Some(value) = self.snapshot.values.get(&key) {
                return Origin::Alias {
                    key,
                    mod_revision: value.mod_revision(),
                };
            }
        }
        Origin::Default
    }

    /// The origin of a key stored in the snapshot: the key, or the gray release that set it.
    fn stored(&self, relative: &str, full: &str) -> Option<Origin> {
        let value = self.snapshot.values.get(full)?;
        if let Some((doc, key)) = &self.gray
            && doc.values.contains_key(relative)
        {
            return Some(Origin::Gray {
                release: doc.seq,
                key: key.clone(),
                mod_revision: value.mod_revision(),
            });
        }
        Some(Origin::Key {
            mod_revision: value.mod_revision(),
        })
    }
}
