//! Templates: a config struct's keys written out as an example document, with each field's
//! doc comment, type and default, from which a new service's config can be written.
//!
//! # What it promises
//!
//! - **Every key.** Each field of `T` (nested structs' fields under their own table, map
//!   fields as an empty table with a comment on their entries) appears once, in declaration
//!   order, under the prefix `T` is bound to.
//! - **Loads as it is.** The TOML and JSON documents are in the layout of the local file mode
//!   (`crate::store::file`): top-level tables are prefixes, entries are keys. Fields with a
//!   default carry it, so a struct whose fields all have defaults binds from the template
//!   unchanged; required fields are commented out in TOML (and `null` in JSON, which has no
//!   comments): fill them in.
//! - **Secrets stay out.** A `#[coord(secret)]` field is listed commented out, never with its
//!   default.

use std::fmt::Write as _;

use super::schema::{CoordConfig, FieldInfo, FieldKind};

/// The format of a [`template`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TemplateFormat {
    /// TOML, each field preceded by its doc comment, type and default as `#` comments.
    Toml,
    /// JSON (no comments: JSON has none): defaults, and `null` for what must be filled in.
    Json,
}

/// Where a struct without `#[coord(prefix)]` is put in its template.
const NO_PREFIX: &str = "/your/prefix";

/// A template of `T`'s config in `format`: its keys written out as an example document, with
/// each field's doc comment, type and default, from which a new service's config can be
/// written.
///
/// - **Every key.** Each field of `T` (nested structs' fields under their own table, map
///   fields as an empty table with a comment on their entries) appears once, in declaration
///   order, under the prefix `T` is bound to (`/your/prefix` for a struct without one).
/// - **Loads as it is.** The TOML and JSON documents are in the layout of the local file mode
///   ([`LocalFile`](crate::store::file::LocalFile)): top-level tables are prefixes, entries
///   are keys. Fields with a default carry it, so a struct whose fields all have defaults
///   binds from the template unchanged; required fields are commented out in TOML (and
///   `null` in JSON, which has no comments): fill them in.
/// - **Secrets stay out.** A `#[coord(secret)]` field is listed commented out, never with its
///   default.
///
/// ```
/// use coord::config::{template, TemplateFormat};
///
/// #[derive(coord::CoordConfig, Debug, Clone)]
/// #[coord(prefix = "/config/checkout")]
/// struct Checkout {
///     /// Seconds before a payment attempt is abandoned.
///     #[coord(default = 30)]
///     timeout_secs: u64,
///     /// Requests per second per client.
///     rate_limit: u32,
/// }
///
/// let toml = template::<Checkout>(TemplateFormat::Toml);
/// assert!(toml.contains("[\"/config/checkout\"]"));
/// assert!(toml.contains("# Seconds before a payment attempt is abandoned.\n# u64, default 30\ntimeout_secs = 30\n"));
/// assert!(toml.contains("# rate_limit = ...\n"), "a required field is to be filled in");
/// ```
pub fn template<T: CoordConfig>(format: TemplateFormat) -> String {
    let prefix = T::PREFIX.unwrap_or(NO_PREFIX).trim_end_matches('/');
    let mut tables = Tables::default();
    tables.fields(prefix, T::fields());
    match format {
        TemplateFormat::Toml => tables.toml(T::PREFIX.is_none()),
        TemplateFormat::Json => tables.json(),
    }
}

/// The template's tables, in the order their first field appears.
#[derive(Default)]
struct Tables(Vec<(String, Vec<FieldInfo>)>);

impl Tables {
    /// Files each field under the table of its key's directory (`db/host` under `{prefix}/db`).
    fn fields(&mut self, prefix: &str, fields: Vec<FieldInfo>) {
        for mut field in fields {
            let (table, name) = match field.key.rsplit_once('/') {
                Some((dir, name)) => (format!("{prefix}/{dir}"), name.to_owned()),
                None => (prefix.to_owned(), field.key.clone()),
            };
            field.key = name;
            match self.0.iter_mut().find(|(t, _)| *t == table) {
                Some((_, fields)) => fields.push(field),
                None => self.0.push((table, vec![field])),
            }
        }
    }

    fn toml(&self, placeholder_prefix: bool) -> String {
        let mut out = String::new();
        if placeholder_prefix {
            let _ = writeln!(
                out,
                "# This struct has no #[coord(prefix)]: put the prefix you bind it to in place \
                 of {NO_PREFIX}."
            );
        }
        for (table, fields) in &self.0 {
            let mut maps = String::new();
            let _ = writeln!(out, "[{}]", toml_key(table));
            for field in fields {
                match &field.kind {
                    FieldKind::Value => toml_value(&mut out, field),
                    FieldKind::Map | FieldKind::NestedMap(_) => {
                        toml_map(&mut maps, table, field);
                    }
                }
            }
            out.push('\n');
            out.push_str(&maps);
        }
        out
    }

    fn json(&self) -> String {
        let mut document = serde_json::Map::new();
        for (table, fields) in &self.0 {
            let mut entries = serde_json::Map::new();
            for field in fields {
                match &field.kind {
                    FieldKind::Value => {
                        let value = field
                            .default
                            .clone()
                            .filter(|_| field.has_default && !field.secret)
                            .unwrap_or(serde_json::Value::Null);
                        entries.insert(field.key.clone(), value);
                    }
                    FieldKind::Map | FieldKind::NestedMap(_) => {
                        document.insert(
                            format!("{table}/{}", field.key),
                            serde_json::Value::Object(serde_json::Map::new()),
                        );
                    }
                }
            }
            document.insert(table.clone(), serde_json::Value::Object(entries));
        }
        let mut text =
            serde_json::to_string_pretty(&serde_json::Value::Object(document)).unwrap_or_default();
        text.push('\n');
        text
    }
}

/// The field's doc comment, then a line with its type and default, as `#` comments.
fn toml_comments(out: &mut String, field: &FieldInfo, default: &str) {
    for line in field.doc.lines() {
        let _ = writeln!(out, "# {}", line.trim());
    }
    let _ = writeln!(out, "# {}, {default}", field.type_name);
}

fn toml_value(out: &mut String, field: &FieldInfo) {
    let key = toml_key(&field.key);
    let value = field
        .default
        .as_ref()
        .filter(|_| field.has_default && !field.secret)
        .and_then(|json| toml::Value::try_from(json).ok());
    match value {
        Some(value) => {
            let default = format!("default {value}");
            toml_comments(out, field, &default);
            let _ = writeln!(out, "{key} = {value}");
        }
        None => {
            let why = if field.secret {
                "secret: set it here only on a laptop, never in a committed file"
            } else if field.has_default {
                // An `Option` field without a default (`null` has no TOML form).
                "optional"
            } else {
                "required"
            };
            toml_comments(out, field, why);
            let _ = writeln!(out, "# {key} = ...");
        }
    }
}

/// A map field: its own table, empty, with a comment on what an entry is.
fn toml_map(out: &mut String, table: &str, field: &FieldInfo) {
    let map_table = format!("{table}/{}", field.key);
    for line in field.doc.lines() {
        let _ = writeln!(out, "# {}", line.trim());
    }
    let _ = writeln!(out, "# {}: one entry per key", field.type_name);
    match &field.kind {
        FieldKind::NestedMap(entry_fields) => {
            let _ = writeln!(
                out,
                "# Each entry is a table [\"{map_table}/NAME\"] with these keys:"
            );
            for entry_field in entry_fields {
                let _ = writeln!(out, "#   {} ({})", entry_field.key, entry_field.type_name);
            }
        }
        _ => {
            let _ = writeln!(out, "[{}]", toml_key(&map_table));
            let _ = writeln!(out, "# NAME = value");
        }
    }
    out.push('\n');
}

/// A key as TOML writes it: bare when it can be, quoted otherwise.
fn toml_key(key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        key.to_owned()
    } else {
        toml::Value::String(key.to_owned()).to_string()
    }
}
