//! The file's text as keys: each format parsed, then laid out by the layout rule.

use std::collections::BTreeMap;
use std::path::Path;

use serde::de::DeserializeSeed;
use serde_json::{Map, Value};

use super::document::{MergeKey, Strict, duplicate_key};
use super::{FileError, FileErrorKind, Position};

/// The keys a file lays out: key → the value as JSON text.
pub(super) type Keys = BTreeMap<String, Vec<u8>>;

/// The file formats, by extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Format {
    Toml,
    Yaml,
    Json,
}

impl Format {
    pub(super) fn of(path: &Path) -> Option<Format> {
        let extension = path.extension()?.to_str()?.to_ascii_lowercase();
        match extension.as_str() {
            "toml" => Some(Format::Toml),
            "yaml" | "yml" => Some(Format::Yaml),
            "json" => Some(Format::Json),
            _ => None,
        }
    }
}

/// Lays out `text`, in the format `path`'s extension names, as keys.
pub(super) fn parse(path: &Path, text: &str) -> Result<Keys, FileError> {
    let error = |position, kind| FileError {
        path: path.to_owned(),
        position,
        kind,
    };
    let document = match Format::of(path) {
        None => return Err(error(None, FileErrorKind::UnknownFormat)),
        Some(Format::Toml) => toml_document(text),
        Some(Format::Yaml) => yaml_document(text),
        Some(Format::Json) => json_document(text),
    }
    .map_err(|(position, kind)| error(position, kind))?;
    let prefixes = match document {
        Value::Object(prefixes) => prefixes,
        // An empty YAML document (or JSON `null`): a file with no keys yet.
        Value::Null => Map::new(),
        _ => return Err(error(None, FileErrorKind::NotAMap)),
    };
    layout(prefixes).map_err(|kind| error(None, kind))
}

/// Why a document does not read, and where when the parser knows.
type Unread = (Option<Position>, FileErrorKind);

/// TOML refuses a repeated key or table itself.
fn toml_document(text: &str) -> Result<Value, Unread> {
    match toml::from_str::<toml::Table>(text) {
        Ok(table) => table_to_json(table)
            .map(Value::Object)
            .map_err(|(key, reason)| (None, FileErrorKind::BadValue { key, reason })),
        Err(e) => {
            let position = e.span().map(|span| Position::at(text, span.start));
            let mut message = e.message().trim().to_owned();
            // toml's message does not say which key; its span is the second one.
            let repeated = e.span().and_then(|span| text.get(span));
            if let (DUPLICATE, Some(key)) = (message.as_str(), repeated) {
                message = duplicate_key(unquoted(key));
            }
            Err((position, FileErrorKind::Syntax(message)))
        }
    }
}

/// toml's message for a key or table given twice.
const DUPLICATE: &str = "duplicate key";

/// A TOML key as written, without its quotes.
fn unquoted(key: &str) -> &str {
    let key = key.trim();
    ['"', '\'']
        .iter()
        .find_map(|quote| key.strip_prefix(*quote)?.strip_suffix(*quote))
        .unwrap_or(key)
}

fn yaml_document(text: &str) -> Result<Value, Unread> {
    let strict = Strict {
        merge_key: MergeKey::Apply,
    };
    strict
        .deserialize(serde_yaml_ng::Deserializer::from_str(text))
        .map_err(|e| {
            let position = e.location().map(|l| Position::at(text, l.index()));
            (
                position,
                FileErrorKind::Syntax(without_location(e.to_string())),
            )
        })
}

fn json_document(text: &str) -> Result<Value, Unread> {
    let strict = Strict {
        merge_key: MergeKey::Literal,
    };
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let document = strict
        .deserialize(&mut deserializer)
        // Text after the document, as `serde_json::from_str` refuses it.
        .and_then(|document| deserializer.end().map(|()| document));
    document.map_err(|e| {
        let position = Some(Position {
            line: e.line(),
            column: e.column(),
        });
        (
            position,
            FileErrorKind::Syntax(without_location(e.to_string())),
        )
    })
}

/// The layout rule: top-level names are prefixes, their entries keys.
fn layout(prefixes: Map<String, Value>) -> Result<Keys, FileErrorKind> {
    let mut keys = Keys::new();
    for (prefix, table) in prefixes {
        if !prefix.starts_with('/') {
            return Err(FileErrorKind::NotAPrefix { name: prefix });
        }
        let Value::Object(entries) = table else {
            return Err(FileErrorKind::NotATable { name: prefix });
        };
        let base = prefix.trim_end_matches('/');
        for (entry, value) in entries {
            let reason = if entry.is_empty() {
                Some("is empty")
            } else if entry.starts_with('/') {
                Some("starts with `/` (write the entry without it)")
            } else if entry.contains('\0') {
                Some("contains a NUL character")
            } else {
                None
            };
            if let Some(reason) = reason {
                return Err(FileErrorKind::BadEntry {
                    prefix,
                    entry,
                    reason: reason.to_owned(),
                });
            }
            let key = format!("{base}/{entry}");
            // Serializing a `Value` cannot fail: its map keys are strings and its numbers
            // finite (checked when the document was converted).
            let json = serde_json::to_vec(&value).map_err(|e| FileErrorKind::BadValue {
                key: key.clone(),
                reason: e.to_string(),
            })?;
            if keys.insert(key.clone(), json).is_some() {
                return Err(FileErrorKind::DuplicateKey { key });
            }
        }
    }
    Ok(keys)
}

/// A TOML table as a JSON object; `Err((key, reason))` for a value JSON cannot hold.
fn table_to_json(table: toml::Table) -> Result<Map<String, Value>, (String, String)> {
    table
        .into_iter()
        .map(|(key, value)| match toml_to_json(value) {
            Ok(json) => Ok((key, json)),
            Err(reason) => Err((key, reason)),
        })
        .collect()
}

fn toml_to_json(value: toml::Value) -> Result<Value, String> {
    Ok(match value {
        toml::Value::String(s) => Value::String(s),
        toml::Value::Integer(i) => Value::from(i),
        toml::Value::Float(f) => serde_json::Number::from_f64(f)
            .map(Value::Number)
            .ok_or_else(|| format!("{f} is not a number JSON can hold"))?,
        toml::Value::Boolean(b) => Value::Bool(b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(items) => Value::Array(
            items
                .into_iter()
                .map(toml_to_json)
                .collect::<Result<_, _>>()?,
        ),
        toml::Value::Table(table) => Value::Object(
            table_to_json(table).map_err(|(key, reason)| format!("`{key}`: {reason}"))?,
        ),
    })
}

/// serde_json and serde_yaml put " at line L column C" in their messages; the position is kept
/// apart, so it is not said twice.
fn without_location(message: String) -> String {
    let digits =
        |text: &str| text.len() - text.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let Some(at) = message.find(" at line ") else {
        return message;
    };
    let rest = &message[at + " at line ".len()..];
    let line = digits(rest);
    let Some(column_part) = rest[line..].strip_prefix(" column ") else {
        return message;
    };
    let column = digits(column_part);
    if line == 0 || column == 0 {
        return message;
    }
    format!("{}{}", &message[..at], &column_part[column..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(name: &str, text: &str) -> Keys {
        parse(Path::new(name), text).unwrap()
    }

    fn kind(name: &str, text: &str) -> FileErrorKind {
        parse(Path::new(name), text).unwrap_err().kind
    }

    fn text(keys: &Keys, key: &str) -> String {
        String::from_utf8(keys[key].clone()).unwrap()
    }

    const TOML: &str = r#"
["/config/checkout"]
timeout_secs = 45
rate_limit = { per_second = 100, burst = 20 }
tags = ["a", "b"]
started = 1979-05-27T07:32:00Z

["/config/checkout/db"]
url = "postgres://localhost/checkout"
"#;

    #[test]
    fn toml_tables_are_prefixes_and_entries_are_json_keys() {
        let keys = keys("coord.toml", TOML);
        assert_eq!(
            keys.keys().collect::<Vec<_>>(),
            [
                "/config/checkout/db/url",
                "/config/checkout/rate_limit",
                "/config/checkout/started",
                "/config/checkout/tags",
                "/config/checkout/timeout_secs",
            ]
        );
        assert_eq!(text(&keys, "/config/checkout/timeout_secs"), "45");
        let rate_limit: Value =
            serde_json::from_slice(&keys["/config/checkout/rate_limit"]).unwrap();
        assert_eq!(
            rate_limit,
            serde_json::json!({"per_second": 100, "burst": 20})
        );
        assert_eq!(text(&keys, "/config/checkout/tags"), r#"["a","b"]"#);
        assert_eq!(
            text(&keys, "/config/checkout/started"),
            r#""1979-05-27T07:32:00Z""#
        );
        assert_eq!(
            text(&keys, "/config/checkout/db/url"),
            r#""postgres://localhost/checkout""#
        );
    }

    #[test]
    fn yaml_and_json_lay_out_like_toml() {
        let yaml =
            "/config/checkout:\n  timeout_secs: 45\n  rate_limit: {per_second: 100, burst: 20}\n";
        let json = r#"{"/config/checkout": {"timeout_secs": 45, "rate_limit": {"per_second": 100, "burst": 20}}}"#;
        let from_yaml = keys("coord.yaml", yaml);
        assert_eq!(from_yaml, keys("coord.yml", yaml));
        assert_eq!(from_yaml, keys("coord.json", json));
        assert_eq!(from_yaml, keys("COORD.JSON", json));
        assert_eq!(text(&from_yaml, "/config/checkout/timeout_secs"), "45");
        assert_eq!(from_yaml.len(), 2);
    }

    #[test]
    fn a_trailing_slash_and_slashes_inside_an_entry_are_kept_apart() {
        let keys = keys("c.json", r#"{"/a/": {"b": 1, "c/d": 2}, "/": {"e": 3}}"#);
        assert_eq!(keys.keys().collect::<Vec<_>>(), ["/a/b", "/a/c/d", "/e"]);
    }

    #[test]
    fn empty_files_have_no_keys_except_in_json() {
        assert!(keys("c.toml", "").is_empty());
        assert!(keys("c.yaml", "").is_empty());
        assert!(keys("c.yaml", "# nothing yet\n").is_empty());
        assert!(keys("c.json", "{}").is_empty());
        assert!(matches!(kind("c.json", ""), FileErrorKind::Syntax(_)));
    }

    #[test]
    fn a_name_without_a_slash_is_not_a_prefix() {
        assert_eq!(
            kind("c.toml", "title = \"x\"\n"),
            FileErrorKind::NotAPrefix {
                name: "title".into()
            }
        );
        assert_eq!(
            kind("c.toml", "[config]\na = 1\n"),
            FileErrorKind::NotAPrefix {
                name: "config".into()
            }
        );
        assert_eq!(
            kind("c.yaml", "config:\n  a: 1\n"),
            FileErrorKind::NotAPrefix {
                name: "config".into()
            }
        );
        let error = parse(Path::new("c.json"), r#"{"config": {}}"#).unwrap_err();
        assert!(
            error.to_string().contains("`config` is not a key prefix"),
            "{error}"
        );
    }

    #[test]
    fn a_top_level_value_that_is_not_a_table_is_refused_by_name() {
        assert_eq!(
            kind("c.toml", "\"/config/x\" = 5\n"),
            FileErrorKind::NotATable {
                name: "/config/x".into()
            }
        );
        assert_eq!(
            kind("c.json", r#"{"/config/x": [1, 2]}"#),
            FileErrorKind::NotATable {
                name: "/config/x".into()
            }
        );
        assert_eq!(kind("c.json", "[1, 2]"), FileErrorKind::NotAMap);
        assert_eq!(kind("c.yaml", "- a\n- b\n"), FileErrorKind::NotAMap);
    }

    #[test]
    fn bad_entries_and_duplicate_keys_are_refused() {
        assert!(matches!(
            kind("c.json", r#"{"/a": {"": 1}}"#),
            FileErrorKind::BadEntry { entry, .. } if entry.is_empty()
        ));
        assert!(matches!(
            kind("c.json", r#"{"/a": {"/b": 1}}"#),
            FileErrorKind::BadEntry { entry, .. } if entry == "/b"
        ));
        assert!(matches!(
            kind("c.json", r#"{"/a": {"b\u0000": 1}}"#),
            FileErrorKind::BadEntry { prefix, .. } if prefix == "/a"
        ));
        assert_eq!(
            kind("c.json", r#"{"/a": {"b/c": 1}, "/a/b": {"c": 2}}"#),
            FileErrorKind::DuplicateKey {
                key: "/a/b/c".into()
            }
        );
        assert!(matches!(
            kind("c.toml", "[\"/a\"]\nx = nan\n"),
            FileErrorKind::BadValue { key, .. } if key == "/a"
        ));
    }

    #[test]
    fn syntax_errors_say_line_and_column_in_every_format() {
        let cases = [
            ("c.toml", "[\"/a\"]\nx = 1\ny = = 2\n", 3),
            ("c.yaml", "/a:\n  x: 1\n  y: [1, 2\n", 4),
            ("c.json", "{\"/a\": {\n  \"x\": 1,\n  \"y\": }\n}", 3),
        ];
        for (name, text, line) in cases {
            let error = parse(Path::new(name), text).unwrap_err();
            let position = error.position.unwrap_or_else(|| panic!("{name}: {error}"));
            assert_eq!(position.line, line, "{name}: {error}");
            assert!(position.column >= 1, "{name}: {error}");
            assert!(
                matches!(error.kind, FileErrorKind::Syntax(_)),
                "{name}: {error}"
            );
            let message = error.to_string();
            assert!(
                message.contains(&format!("line {line}, column ")),
                "{message}"
            );
            let again = format!("at line {line} column {}", position.column);
            assert!(!message.contains(&again), "said twice: {message}");
        }
    }

    /// The error's line, after checking it is a syntax error that names `key`.
    fn line_of_repeated(name: &str, text: &str, key: &str) -> usize {
        let error = parse(Path::new(name), text).unwrap_err();
        let FileErrorKind::Syntax(message) = &error.kind else {
            panic!("{name}: not a syntax error: {error:?}");
        };
        assert!(message.contains(&format!("`{key}`")), "{name}: {message}");
        error
            .position
            .unwrap_or_else(|| panic!("{name}: {error}"))
            .line
    }

    #[test]
    fn a_key_given_twice_is_refused_at_its_line_in_every_format() {
        let cases = [
            ("c.toml", "[\"/a\"]\nx = 1\nx = 2\n", "x", 3),
            ("c.yaml", "/a:\n  x: 1\n  x: 2\n", "x", 3),
            ("c.json", "{\"/a\": {\n  \"x\": 1,\n  \"x\": 2\n}}", "x", 3),
            // Deeper down, inside an entry's value.
            ("c.yaml", "/a:\n  x: {k: 1,\n      k: 2}\n", "k", 3),
            (
                "c.json",
                "{\"/a\": {\"x\": {\n  \"k\": 1, \"k\": 2}}}",
                "k",
                2,
            ),
        ];
        for (name, text, key, line) in cases {
            assert_eq!(line_of_repeated(name, text, key), line, "{name}: {text}");
        }
    }

    #[test]
    fn a_prefix_given_twice_is_refused_rather_than_dropping_the_first_table() {
        let cases = [
            ("c.toml", "[\"/a\"]\nx = 1\n\n[\"/a\"]\ny = 2\n", 4),
            ("c.yaml", "/a:\n  x: 1\n/a:\n  y: 2\n", 3),
            ("c.json", "{\"/a\": {\"x\": 1},\n \"/a\": {\"y\": 2}}", 2),
        ];
        for (name, text, line) in cases {
            assert_eq!(line_of_repeated(name, text, "/a"), line, "{name}: {text}");
        }
    }

    #[test]
    fn yaml_merge_keys_lend_their_entries_and_the_mappings_own_win() {
        let yaml = "\
/config/base: &base
  timeout_secs: 30
  region: eu
  rate_limit: &rate {per_second: 100, burst: 20}
/config/checkout:
  <<: *base
  timeout_secs: 45
  rate_limit: {<<: *rate, burst: 5}
";
        let keys = keys("c.yaml", yaml);
        assert_eq!(
            keys.keys().collect::<Vec<_>>(),
            [
                "/config/base/rate_limit",
                "/config/base/region",
                "/config/base/timeout_secs",
                "/config/checkout/rate_limit",
                "/config/checkout/region",
                "/config/checkout/timeout_secs",
            ]
        );
        assert_eq!(text(&keys, "/config/checkout/timeout_secs"), "45");
        assert_eq!(text(&keys, "/config/checkout/region"), r#""eu""#);
        let rate_limit: Value =
            serde_json::from_slice(&keys["/config/checkout/rate_limit"]).unwrap();
        assert_eq!(
            rate_limit,
            serde_json::json!({"per_second": 100, "burst": 5})
        );
    }

    #[test]
    fn in_a_list_of_merged_mappings_the_earlier_wins() {
        let yaml = "\
/x: &x {a: 1, b: 1}
/y: &y {b: 2, c: 2}
/z:
  <<: [*x, *y]
  c: 3
";
        let keys = keys("c.yaml", yaml);
        assert_eq!(text(&keys, "/z/a"), "1");
        assert_eq!(text(&keys, "/z/b"), "1");
        assert_eq!(text(&keys, "/z/c"), "3");
        assert_eq!(keys.keys().filter(|k| k.starts_with("/z/")).count(), 3);
    }

    #[test]
    fn a_merge_key_that_cannot_merge_is_refused_at_its_line() {
        let cases = [
            ("/a:\n  x: 1\n  <<: 5\n", 3),
            ("/a:\n  <<: [{x: 1},\n    5]\n", 3),
            ("/a:\n  <<: {x: 1}\n  <<: {y: 1}\n", 3),
        ];
        for (text, line) in cases {
            let error = parse(Path::new("c.yaml"), text).unwrap_err();
            assert!(
                matches!(&error.kind, FileErrorKind::Syntax(m) if m.contains("`<<`")),
                "{text}: {error}"
            );
            assert_eq!(
                error.position.map(|p| p.line),
                Some(line),
                "{text}: {error}"
            );
        }
    }

    #[test]
    fn in_json_a_merge_key_is_a_key_like_any_other() {
        let keys = keys("c.json", r#"{"/a": {"<<": {"x": 1}, "x": 2}}"#);
        assert_eq!(keys.keys().collect::<Vec<_>>(), ["/a/<<", "/a/x"]);
        assert_eq!(text(&keys, "/a/<<"), r#"{"x":1}"#);
    }

    #[test]
    fn yaml_keys_are_read_as_strings_and_numbers_json_cannot_hold_are_refused() {
        let keys = keys(
            "c.yaml",
            "/a:\n  1: one\n  true: yes\n  x: [1, -2, 2.5, null]\n",
        );
        assert_eq!(keys.keys().collect::<Vec<_>>(), ["/a/1", "/a/true", "/a/x"]);
        assert_eq!(text(&keys, "/a/x"), "[1,-2,2.5,null]");
        let error = parse(Path::new("c.yaml"), "/a:\n  x: .nan\n").unwrap_err();
        assert!(matches!(error.kind, FileErrorKind::Syntax(_)), "{error}");
        assert_eq!(error.position.map(|p| p.line), Some(2), "{error}");
    }

    #[test]
    fn text_after_a_json_document_is_refused() {
        assert!(matches!(
            kind("c.json", r#"{"/a": {}} {"/b": {}}"#),
            FileErrorKind::Syntax(_)
        ));
    }

    #[test]
    fn unknown_extensions_are_refused() {
        assert_eq!(kind("coord.ini", "a=1"), FileErrorKind::UnknownFormat);
        assert_eq!(kind("coord", "{}"), FileErrorKind::UnknownFormat);
    }
}
