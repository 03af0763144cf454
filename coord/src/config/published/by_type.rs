//! Checking a raw JSON value against a field's Rust type as written (`"Vec<u8>"`), for fields
//! without a JSON Schema.
//!
//! Only the types whose JSON is obvious are checked: integers (range included), floats,
//! `bool`, strings and `char`, sequences and sets (elements checked), `Option`, maps with
//! string keys (values checked), and the wrappers that serialize as what they hold (`Box`,
//! `Arc`, `Rc`, `Secret`). Any other type (`Duration`, a user's struct, a type alias) is
//! accepted: its JSON cannot be told from its name.

use serde_json::Value;

use super::{Mismatch, what};

/// Checks `value` against the Rust type `type_name`; `redact` keeps the value's content out of
/// the mismatch.
pub(crate) fn check(type_name: &str, value: &Value, redact: bool) -> Result<(), Mismatch> {
    let mut path = String::new();
    check_type(&parse(type_name), value, redact, &mut path)
}

/// The entry type of a map type (`V` of `Map<V>`, `HashMap<String, V>`, `BTreeMap<String, V>`),
/// as written; `None` if `type_name` is not one of those.
pub(crate) fn map_entry_type(type_name: &str) -> Option<String> {
    match parse(type_name) {
        Ty::Path { name, args } if name == "Map" && args.len() == 1 => Some(args[0].text.clone()),
        Ty::Path { name, args }
            if matches!(name.as_str(), "HashMap" | "BTreeMap") && args.len() == 2 =>
        {
            Some(args[1].text.clone())
        }
        _ => None,
    }
}

/// True if the type names `Secret` anywhere (`Secret<String>`, `Option<Secret<String>>`).
pub(crate) fn mentions_secret(type_name: &str) -> bool {
    fn any_secret(ty: &Arg) -> bool {
        match &ty.ty {
            Ty::Path { name, args } => name == "Secret" || args.iter().any(any_secret),
            Ty::Tuple(items) => items.iter().any(any_secret),
            Ty::Array(item) | Ty::Ref(item) => any_secret(item),
            Ty::Other => false,
        }
    }
    any_secret(&Arg {
        text: String::new(),
        ty: parse(type_name),
    })
}

/// A type as written, parsed just enough to check JSON against.
#[derive(Clone, Debug, PartialEq)]
enum Ty {
    /// The last segment of a path (`u8`, `Vec`, `HashMap`) and its generic type arguments.
    Path { name: String, args: Vec<Arg> },
    /// `(A, B)`: a JSON array of that many items.
    Tuple(Vec<Arg>),
    /// `[T; N]`, `[T]`.
    Array(Box<Arg>),
    /// `&T`, `&'a T`.
    Ref(Box<Arg>),
    /// Anything else (a `dyn`, a `fn`, text that does not parse).
    Other,
}

/// A type argument: its text as written (for messages) and its parse.
#[derive(Clone, Debug, PartialEq)]
struct Arg {
    text: String,
    ty: Ty,
}

fn parse(text: &str) -> Ty {
    let text = text.trim();
    if let Some(rest) = text.strip_prefix('&') {
        // `&'a T`, `&mut T`, `&T`.
        let rest = rest.trim_start();
        let rest = match rest.strip_prefix('\'') {
            Some(lifetime) => lifetime
                .trim_start_matches(|c: char| c.is_alphanumeric() || c == '_')
                .trim_start(),
            None => rest,
        };
        let rest = rest.strip_prefix("mut ").unwrap_or(rest);
        return Ty::Ref(Box::new(arg(rest)));
    }
    if let Some(inner) = text.strip_prefix('(').and_then(|t| t.strip_suffix(')')) {
        let items = split_top_level(inner, ',');
        return match items.as_slice() {
            // `(T)` is `T`.
            [one] if !inner.trim_end().ends_with(',') => parse(one),
            _ => Ty::Tuple(items.iter().map(|item| arg(item)).collect()),
        };
    }
    if let Some(inner) = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
        let item = split_top_level(inner, ';').into_iter().next().unwrap_or("");
        return Ty::Array(Box::new(arg(item)));
    }
    let (path, args) = match text.find('<') {
        Some(open) if text.ends_with('>') => (&text[..open], &text[open + 1..text.len() - 1]),
        Some(_) => return Ty::Other,
        None => (text, ""),
    };
    let name = path.rsplit("::").next().unwrap_or(path).trim();
    if name.is_empty() || !name.chars().all(|c| c.is_alphanumeric() || c == '_') {
        return Ty::Other;
    }
    let args = split_top_level(args, ',')
        .into_iter()
        // Lifetimes (`Cow<'a, str>`) are not types.
        .filter(|arg| !arg.starts_with('\''))
        .map(arg)
        .collect();
    Ty::Path {
        name: name.to_owned(),
        args,
    }
}

fn arg(text: &str) -> Arg {
    Arg {
        text: text.trim().to_owned(),
        ty: parse(text),
    }
}

/// `text` split at `sep` outside of `<>`, `()` and `[]`; empty parts dropped.
fn split_top_level(text: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '<' | '(' | '[' => depth += 1,
            // `->` in a fn type is not a closing bracket.
            '>' if text[..i].ends_with('-') => {}
            '>' | ')' | ']' => depth -= 1,
            c if c == sep && depth == 0 => {
                parts.push(&text[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
        .into_iter()
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .collect()
}

fn check_type(ty: &Ty, value: &Value, redact: bool, path: &mut String) -> Result<(), Mismatch> {
    match ty {
        Ty::Path { name, args } => check_path(name, args, value, redact, path),
        Ty::Tuple(items) => {
            let Value::Array(values) = value else {
                return Err(Mismatch::got(path, "an array", what(value, redact)));
            };
            if values.len() != items.len() {
                return Err(Mismatch::got(
                    path,
                    format!("an array of {}", items.len()),
                    what(value, redact),
                ));
            }
            for (i, (item, value)) in items.iter().zip(values).enumerate() {
                at(path, &i.to_string(), |path| {
                    check_type(&item.ty, value, redact, path)
                })?;
            }
            Ok(())
        }
        Ty::Array(item) => check_items(item, value, redact, path),
        Ty::Ref(inner) => check_type(&inner.ty, value, redact, path),
        Ty::Other => Ok(()),
    }
}

fn check_path(
    name: &str,
    args: &[Arg],
    value: &Value,
    redact: bool,
    path: &mut String,
) -> Result<(), Mismatch> {
    let single = |args: &[Arg]| match args {
        [one] => Some(one.ty.clone()),
        _ => None,
    };
    match name {
        "u8" => integer(name, value, 0, u8::MAX.into(), redact, path),
        "u16" => integer(name, value, 0, u16::MAX.into(), redact, path),
        "u32" => integer(name, value, 0, u32::MAX.into(), redact, path),
        "u64" | "u128" | "usize" => integer(name, value, 0, u64::MAX.into(), redact, path),
        "i8" => integer(name, value, i8::MIN.into(), i8::MAX.into(), redact, path),
        "i16" => integer(name, value, i16::MIN.into(), i16::MAX.into(), redact, path),
        "i32" => integer(name, value, i32::MIN.into(), i32::MAX.into(), redact, path),
        "i64" | "i128" | "isize" => {
            integer(name, value, i64::MIN.into(), i64::MAX.into(), redact, path)
        }
        "f32" | "f64" if value.is_number() => Ok(()),
        "f32" | "f64" => Err(Mismatch::got(path, "a number", what(value, redact))),
        "bool" if value.is_boolean() => Ok(()),
        "bool" => Err(Mismatch::got(path, "a boolean", what(value, redact))),
        "String" | "str" if value.is_string() => Ok(()),
        "String" | "str" => Err(Mismatch::got(path, "a string", what(value, redact))),
        "char" => match value.as_str() {
            Some(s) if s.chars().count() == 1 => Ok(()),
            _ => Err(Mismatch::got(
                path,
                "a string of one character",
                what(value, redact),
            )),
        },
        "Option" => match (value, single(args)) {
            (Value::Null, _) => Ok(()),
            (_, Some(inner)) => check_type(&inner, value, redact, path),
            (_, None) => Ok(()),
        },
        "Box" | "Arc" | "Rc" | "Secret" => match single(args) {
            Some(inner) => check_type(&inner, value, redact, path),
            None => Ok(()),
        },
        "Vec" | "VecDeque" | "HashSet" | "BTreeSet" | "LinkedList" => match args {
            [item] => check_items(item, value, redact, path),
            _ => Ok(()),
        },
        "HashMap" | "BTreeMap" => {
            let Value::Object(entries) = value else {
                return Err(Mismatch::got(path, "an object", what(value, redact)));
            };
            if let [_, entry] = args {
                for (name, value) in entries {
                    at(path, name, |path| {
                        check_type(&entry.ty, value, redact, path)
                    })?;
                }
            }
            Ok(())
        }
        // `Duration` (with humantime-serde or not), user types, aliases: cannot tell.
        _ => Ok(()),
    }
}

fn check_items(item: &Arg, value: &Value, redact: bool, path: &mut String) -> Result<(), Mismatch> {
    let Value::Array(values) = value else {
        return Err(Mismatch::got(path, "an array", what(value, redact)));
    };
    for (i, value) in values.iter().enumerate() {
        at(path, &i.to_string(), |path| {
            check_type(&item.ty, value, redact, path)
        })?;
    }
    Ok(())
}

/// An integer within `min..=max`; JSON numbers with a fraction or exponent are refused, as
/// serde refuses them for integer types.
fn integer(
    name: &str,
    value: &Value,
    min: i128,
    max: i128,
    redact: bool,
    path: &str,
) -> Result<(), Mismatch> {
    let n = match value {
        Value::Number(n) => n.as_i64().map(i128::from).or(n.as_u64().map(i128::from)),
        _ => None,
    };
    match n {
        Some(n) if (min..=max).contains(&n) => Ok(()),
        Some(_) => Err(Mismatch::got(
            path,
            name,
            format!("{}, outside {min}..={max}", what(value, redact)),
        )),
        None => Err(Mismatch::got(path, name, what(value, redact))),
    }
}

/// Runs `check` with `segment` pushed on the JSON pointer `path`.
pub(super) fn at<T>(path: &mut String, segment: &str, check: impl FnOnce(&mut String) -> T) -> T {
    let len = path.len();
    path.push('/');
    path.push_str(&segment.replace('~', "~0").replace('/', "~1"));
    let result = check(path);
    path.truncate(len);
    result
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn refused(type_name: &str, value: Value) -> Mismatch {
        match check(type_name, &value, false) {
            Err(mismatch) => mismatch,
            Ok(()) => panic!("{type_name} accepted {value}"),
        }
    }

    fn accepted(type_name: &str, value: Value) {
        if let Err(mismatch) = check(type_name, &value, false) {
            panic!("{type_name} refused {value}: {mismatch:?}");
        }
    }

    #[test]
    fn integers_are_range_checked() {
        accepted("u8", json!(255));
        accepted("u64", json!(u64::MAX));
        accepted("i8", json!(-128));
        accepted("i64", json!(i64::MIN));
        accepted("usize", json!(0));
        let too_big = refused("u8", json!(300));
        assert_eq!(
            too_big.to_string(),
            "expected u8, got the number 300, outside 0..=255"
        );
        refused("i8", json!(128));
        refused("u32", json!(u64::from(u32::MAX) + 1));
        refused("i64", json!(u64::MAX));
    }

    #[test]
    fn unsigned_integers_refuse_negatives() {
        for ty in ["u8", "u16", "u32", "u64", "usize"] {
            refused(ty, json!(-1));
        }
    }

    #[test]
    fn integers_refuse_fractions_strings_and_null() {
        assert_eq!(
            refused("u64", json!("abc")).to_string(),
            r#"expected u64, got the string "abc""#
        );
        refused("u64", json!(1.5));
        refused("i32", json!(1.0));
        refused("i32", Value::Null);
        refused("isize", json!(true));
    }

    #[test]
    fn floats_take_any_number_and_only_numbers() {
        accepted("f64", json!(1.5));
        accepted("f32", json!(3));
        refused("f64", json!("1.5"));
    }

    #[test]
    fn bools_and_strings() {
        accepted("bool", json!(false));
        refused("bool", json!("true"));
        accepted("String", json!("x"));
        accepted("std::string::String", json!(""));
        accepted("&'static str", json!("x"));
        refused("String", json!(1));
        accepted("char", json!("é"));
        refused("char", json!("ab"));
        refused("char", json!(""));
    }

    #[test]
    fn sequences_check_each_element_and_name_its_index() {
        accepted("Vec<u8>", json!([1, 2, 255]));
        accepted("std::collections::BTreeSet<String>", json!(["a"]));
        accepted("HashSet<u16>", json!([]));
        let bad = refused("Vec<u8>", json!([1, 2, 300]));
        assert_eq!(bad.path, "/2");
        refused("Vec<String>", json!("a"));
        refused("Vec<Vec<bool>>", json!([[true], [1]]));
        accepted("[u8; 4]", json!([1, 2, 3, 4]));
        refused("[u8; 4]", json!([1, 2, 3, -4]));
        accepted("(u8, String)", json!([1, "a"]));
        refused("(u8, String)", json!([1]));
        refused("(u8, String)", json!(["a", 1]));
    }

    #[test]
    fn options_take_null_or_the_inner_type() {
        accepted("Option<u32>", Value::Null);
        accepted("Option<u32>", json!(7));
        refused("Option<u32>", json!("7"));
        accepted("Option<Vec<u8>>", json!([1]));
        refused("core::option::Option<Vec<u8>>", json!([-1]));
    }

    #[test]
    fn maps_are_objects_whose_values_are_checked() {
        accepted("HashMap<String, u32>", json!({"a": 1}));
        accepted("std::collections::BTreeMap<String, bool>", json!({}));
        let bad = refused("BTreeMap<String, u32>", json!({"a/b": "x"}));
        assert_eq!(bad.path, "/a~1b");
        refused("HashMap<String, u32>", json!([1]));
    }

    #[test]
    fn wrappers_are_checked_as_what_they_hold() {
        accepted("Secret<String>", json!("pw"));
        refused("coord::Secret<String>", json!(1));
        refused("Box<u8>", json!(-1));
        accepted("Arc<Vec<String>>", json!(["x"]));
    }

    #[test]
    fn types_whose_json_is_unknowable_are_accepted() {
        accepted("Duration", json!("30s"));
        accepted("std::time::Duration", json!({"secs": 1, "nanos": 0}));
        accepted("RateLimit", json!("anything"));
        accepted("Cow<'static, str>", json!(1));
        accepted("fn(u8) -> u8", json!(1));
        accepted("", json!(1));
    }

    #[test]
    fn redacted_mismatches_do_not_show_the_value() {
        let Err(mismatch) = check("Secret<u32>", &json!("hunter2"), true) else {
            panic!("accepted a string for u32");
        };
        assert!(!mismatch.to_string().contains("hunter2"), "{mismatch}");
        let Err(mismatch) = check("u8", &json!(4242), true) else {
            panic!("accepted 4242 for u8");
        };
        assert!(!mismatch.to_string().contains("4242"), "{mismatch}");
    }

    #[test]
    fn map_entry_types_and_secrets_are_found_in_the_name() {
        assert_eq!(map_entry_type("Map<Limit>").as_deref(), Some("Limit"));
        assert_eq!(
            map_entry_type("coord::config::Map<Vec<u8>>").as_deref(),
            Some("Vec<u8>")
        );
        assert_eq!(
            map_entry_type("HashMap<String, Secret<String>>").as_deref(),
            Some("Secret<String>")
        );
        assert_eq!(map_entry_type("Vec<u8>"), None);
        assert!(mentions_secret("Option<coord::Secret<String>>"));
        assert!(!mentions_secret("Option<String>"));
    }
}
