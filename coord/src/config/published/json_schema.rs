//! A JSON Schema validator for the subset schemars emits, and (with the `schema` feature) the
//! probe by which `#[derive(CoordConfig)]` attaches a field's schema when its type implements
//! `schemars::JsonSchema`.
//!
//! Keywords checked: `type` (a name or a list), `enum`, `const`, `minimum`, `maximum`,
//! `exclusiveMinimum`, `exclusiveMaximum`, `minLength`, `maxLength`, `properties`, `required`,
//! `additionalProperties`, `items` (a schema, or a list for tuples), `prefixItems`,
//! `minItems`, `maxItems`, `uniqueItems`, `anyOf`, `oneOf`, `allOf`, `not`, `$ref` into the
//! root's `$defs` or `definitions`, OpenAPI's `nullable`, and the integer `format`s schemars
//! writes for Rust integers (`uint8` … `int64`), which are range-checked because a value out
//! of the type's range would not decode. Other keywords are ignored (accepted), as are
//! `$ref`s that do not resolve.
//!
//! Where JSON Schema and serde disagree, serde wins, since a value that passes must decode:
//! `"integer"` takes only numbers written without fraction or exponent (`1.0` is refused).

use serde_json::{Map, Value};

use super::by_type::at;
use super::{Mismatch, what};

/// `$ref`s followed in a row without descending into the value; past this a schema is taken
/// to loop and the value is accepted.
const MAX_REF_DEPTH: usize = 32;

/// Checks `value` against `schema` (a root schema: its `$ref`s resolve in it); `redact`
/// keeps the value's content out of the mismatch.
pub(crate) fn validate(schema: &Value, value: &Value, redact: bool) -> Result<(), Mismatch> {
    let validator = Validator {
        root: schema,
        redact,
    };
    validator.check(schema, value, &mut String::new(), 0)
}

struct Validator<'a> {
    root: &'a Value,
    redact: bool,
}

impl Validator<'_> {
    fn check(
        &self,
        schema: &Value,
        value: &Value,
        path: &mut String,
        refs: usize,
    ) -> Result<(), Mismatch> {
        let schema = match schema {
            Value::Bool(true) => return Ok(()),
            Value::Bool(false) => return Err(Mismatch::says(path, "no value is allowed here")),
            Value::Object(schema) => schema,
            _ => return Ok(()),
        };
        if value.is_null() && schema.get("nullable") == Some(&Value::Bool(true)) {
            return Ok(());
        }
        if let Some(Value::String(reference)) = schema.get("$ref")
            && refs < MAX_REF_DEPTH
            && let Some(target) = self.resolve(reference)
        {
            self.check(target, value, path, refs + 1)?;
        }
        self.check_type(schema, value, path)?;
        if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
            && !allowed.contains(value)
        {
            return Err(Mismatch::got(
                path,
                format!("one of {}", short_list(allowed)),
                what(value, self.redact),
            ));
        }
        if let Some(constant) = schema.get("const")
            && constant != value
        {
            return Err(Mismatch::got(
                path,
                constant.to_string(),
                what(value, self.redact),
            ));
        }
        self.check_number(schema, value, path)?;
        self.check_string(schema, value, path)?;
        self.check_array(schema, value, path, refs)?;
        self.check_object(schema, value, path, refs)?;
        self.check_combinations(schema, value, path, refs)
    }

    /// `#/$defs/Name` (or any JSON pointer into the root).
    fn resolve(&self, reference: &str) -> Option<&Value> {
        let pointer = reference.strip_prefix('#')?;
        if pointer.is_empty() {
            return Some(self.root);
        }
        self.root.pointer(pointer)
    }

    fn check_type(
        &self,
        schema: &Map<String, Value>,
        value: &Value,
        path: &str,
    ) -> Result<(), Mismatch> {
        let names: Vec<&str> = match schema.get("type") {
            Some(Value::String(name)) => vec![name.as_str()],
            Some(Value::Array(names)) => names.iter().filter_map(Value::as_str).collect(),
            _ => return Ok(()),
        };
        if names.iter().any(|name| is_type(name, value)) {
            return Ok(());
        }
        let expected = match schema.get("format").and_then(Value::as_str) {
            Some(format) if names.contains(&"integer") && integer_range(format).is_some() => {
                let mut expected = rust_integer(format).to_owned();
                if names.contains(&"null") {
                    expected.push_str(" or null");
                }
                expected
            }
            _ => names.join(" or "),
        };
        Err(Mismatch::got(path, expected, what(value, self.redact)))
    }

    fn check_number(
        &self,
        schema: &Map<String, Value>,
        value: &Value,
        path: &str,
    ) -> Result<(), Mismatch> {
        let Value::Number(number) = value else {
            return Ok(());
        };
        if let Some((min, max)) = schema
            .get("format")
            .and_then(Value::as_str)
            .and_then(integer_range)
        {
            let n = number
                .as_i64()
                .map(i128::from)
                .or(number.as_u64().map(i128::from));
            if let Some(n) = n
                && !(min..=max).contains(&n)
            {
                let format = schema.get("format").and_then(Value::as_str).unwrap_or("");
                return Err(Mismatch::got(
                    path,
                    rust_integer(format),
                    format!("{}, outside {min}..={max}", what(value, self.redact)),
                ));
            }
        }
        let Some(n) = number.as_f64() else {
            return Ok(());
        };
        let bound = |key: &str| schema.get(key).and_then(Value::as_f64);
        let out_of_range = |bound_text: String| {
            Mismatch::got(
                path,
                format!("a number {bound_text}"),
                what(value, self.redact),
            )
        };
        if let Some(min) = bound("minimum").filter(|min| n < *min) {
            return Err(out_of_range(format!(">= {min}")));
        }
        if let Some(max) = bound("maximum").filter(|max| n > *max) {
            return Err(out_of_range(format!("<= {max}")));
        }
        if let Some(min) = bound("exclusiveMinimum").filter(|min| n <= *min) {
            return Err(out_of_range(format!("> {min}")));
        }
        if let Some(max) = bound("exclusiveMaximum").filter(|max| n >= *max) {
            return Err(out_of_range(format!("< {max}")));
        }
        Ok(())
    }

    fn check_string(
        &self,
        schema: &Map<String, Value>,
        value: &Value,
        path: &str,
    ) -> Result<(), Mismatch> {
        let Value::String(s) = value else {
            return Ok(());
        };
        let len = s.chars().count() as u64;
        self.check_size(schema, &STRING_LENGTH, len, value, path)
    }

    /// A length or count `size` against the schema's bounds of that kind.
    fn check_size(
        &self,
        schema: &Map<String, Value>,
        kind: &SizeBounds,
        size: u64,
        value: &Value,
        path: &str,
    ) -> Result<(), Mismatch> {
        let bound = |key: &str| schema.get(key).and_then(Value::as_u64);
        let SizeBounds {
            min,
            max,
            noun,
            unit,
        } = kind;
        let broken = match (bound(min), bound(max)) {
            (Some(least), _) if size < least => Some(format!("{noun} of at least {least} {unit}")),
            (_, Some(most)) if size > most => Some(format!("{noun} of at most {most} {unit}")),
            _ => None,
        };
        match broken {
            Some(expected) => Err(Mismatch::got(path, expected, what(value, self.redact))),
            None => Ok(()),
        }
    }

    fn check_array(
        &self,
        schema: &Map<String, Value>,
        value: &Value,
        path: &mut String,
        refs: usize,
    ) -> Result<(), Mismatch> {
        let Value::Array(items) = value else {
            return Ok(());
        };
        let count = items.len() as u64;
        self.check_size(schema, &ARRAY_LENGTH, count, value, path)?;
        if schema.get("uniqueItems") == Some(&Value::Bool(true)) {
            for (i, item) in items.iter().enumerate() {
                if items[..i].contains(item) {
                    return Err(Mismatch::says(
                        path,
                        format!("item {i} repeats an earlier item; items must be unique"),
                    ));
                }
            }
        }
        // Draft 2020-12: `prefixItems` then `items` for the rest; earlier drafts: `items` as
        // a list, then `additionalItems`.
        let (prefix, rest) = match (schema.get("prefixItems"), schema.get("items")) {
            (Some(Value::Array(prefix)), rest) => (prefix.as_slice(), rest),
            (_, Some(Value::Array(prefix))) => (prefix.as_slice(), schema.get("additionalItems")),
            (_, rest) => (&[][..], rest),
        };
        for (i, item) in items.iter().enumerate() {
            let item_schema = match prefix.get(i) {
                Some(schema) => Some(schema),
                None => rest,
            };
            if let Some(item_schema) = item_schema {
                at(path, &i.to_string(), |path| {
                    self.check(item_schema, item, path, refs)
                })?;
            }
        }
        Ok(())
    }

    fn check_object(
        &self,
        schema: &Map<String, Value>,
        value: &Value,
        path: &mut String,
        refs: usize,
    ) -> Result<(), Mismatch> {
        let Value::Object(object) = value else {
            return Ok(());
        };
        let properties = schema.get("properties").and_then(Value::as_object);
        let additional = schema.get("additionalProperties");
        for (name, item) in object {
            match properties.and_then(|properties| properties.get(name)) {
                Some(property) => at(path, name, |path| self.check(property, item, path, refs))?,
                None => match additional {
                    Some(Value::Bool(false)) => {
                        let known = properties
                            .map(|p| p.keys().map(String::as_str).collect::<Vec<_>>())
                            .unwrap_or_default();
                        return Err(Mismatch::says(
                            path,
                            format!(
                                "property `{name}` is not allowed (allowed: {})",
                                known.join(", ")
                            ),
                        ));
                    }
                    Some(additional) => {
                        at(path, name, |path| self.check(additional, item, path, refs))?;
                    }
                    None => {}
                },
            }
        }
        // After the properties given, so a wrong value is reported before a missing one.
        if let Some(required) = schema.get("required").and_then(Value::as_array) {
            for name in required.iter().filter_map(Value::as_str) {
                if !object.contains_key(name) {
                    return Err(Mismatch::says(
                        path,
                        format!("property `{name}` is missing"),
                    ));
                }
            }
        }
        Ok(())
    }

    fn check_combinations(
        &self,
        schema: &Map<String, Value>,
        value: &Value,
        path: &mut String,
        refs: usize,
    ) -> Result<(), Mismatch> {
        if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
            for branch in all {
                self.check(branch, value, path, refs)?;
            }
        }
        if let Some(any) = schema.get("anyOf").and_then(Value::as_array) {
            let mut failures = Vec::new();
            for branch in any {
                match self.check(branch, value, path, refs) {
                    Ok(()) => {
                        failures.clear();
                        break;
                    }
                    Err(mismatch) => failures.push(mismatch),
                }
            }
            if !failures.is_empty() {
                return Err(self.none_matched(path, value, failures));
            }
        }
        if let Some(one) = schema.get("oneOf").and_then(Value::as_array) {
            let mut failures = Vec::new();
            let mut matched = 0;
            for branch in one {
                match self.check(branch, value, path, refs) {
                    Ok(()) => matched += 1,
                    Err(mismatch) => failures.push(mismatch),
                }
            }
            match matched {
                1 => {}
                0 => return Err(self.none_matched(path, value, failures)),
                n => {
                    return Err(Mismatch::says(
                        path,
                        format!("the value matches {n} alternatives where exactly one must"),
                    ));
                }
            }
        }
        if let Some(not) = schema.get("not")
            && self.check(not, value, path, refs).is_ok()
        {
            return Err(Mismatch::says(path, "the value matches a forbidden schema"));
        }
        Ok(())
    }

    /// The mismatch to report when no alternative matched: the one alternative whose type the
    /// value has (an `Option<Struct>` given a bad object says what is wrong in the object),
    /// else a list of what was expected.
    fn none_matched(&self, path: &str, value: &Value, failures: Vec<Mismatch>) -> Mismatch {
        let depth = path.len();
        let (typed, untyped): (Vec<Mismatch>, Vec<Mismatch>) = failures
            .into_iter()
            .partition(|failure| failure.path.len() > depth || !failure.is_type_mismatch());
        let mut typed = typed;
        if typed.len() == 1
            && let Some(only) = typed.pop()
        {
            return only;
        }
        let mut expected: Vec<String> = Vec::new();
        for failure in untyped.iter().chain(&typed) {
            if let Some(wanted) = failure.expected()
                && !expected.iter().any(|e| e == wanted)
            {
                expected.push(wanted.to_owned());
            }
        }
        if expected.is_empty() {
            return Mismatch::says(path, "the value matches none of the alternatives");
        }
        Mismatch::got(path, expected.join(" or "), what(value, self.redact))
    }
}

fn is_type(name: &str, value: &Value) -> bool {
    match name {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "object" => value.is_object(),
        "array" => value.is_array(),
        "number" => value.is_number(),
        "string" => value.is_string(),
        // As serde reads integers: no fraction, no exponent.
        "integer" => value.is_i64() || value.is_u64(),
        _ => true,
    }
}

/// The range of the integer `format`s schemars writes for Rust integers.
fn integer_range(format: &str) -> Option<(i128, i128)> {
    Some(match format {
        "uint8" => (0, u8::MAX.into()),
        "uint16" => (0, u16::MAX.into()),
        "uint32" => (0, u32::MAX.into()),
        "uint64" | "uint" | "uint128" => (0, u64::MAX.into()),
        "int8" => (i8::MIN.into(), i8::MAX.into()),
        "int16" => (i16::MIN.into(), i16::MAX.into()),
        "int32" => (i32::MIN.into(), i32::MAX.into()),
        "int64" | "int" | "int128" => (i64::MIN.into(), i64::MAX.into()),
        _ => return None,
    })
}

/// The Rust type schemars writes a `format` for.
fn rust_integer(format: &str) -> &str {
    match format {
        "uint8" => "u8",
        "uint16" => "u16",
        "uint32" => "u32",
        "uint64" => "u64",
        "uint128" => "u128",
        "uint" => "usize",
        "int8" => "i8",
        "int16" => "i16",
        "int32" => "i32",
        "int64" => "i64",
        "int128" => "i128",
        "int" => "isize",
        _ => "integer",
    }
}

fn short_list(values: &[Value]) -> String {
    const SHOWN: usize = 8;
    let mut out: Vec<String> = values.iter().take(SHOWN).map(Value::to_string).collect();
    if values.len() > SHOWN {
        out.push(format!("… {} more", values.len() - SHOWN));
    }
    format!("[{}]", out.join(", "))
}

/// The JSON Schema of `T` as schemars generates it (draft 2020-12, definitions under
/// `$defs`), as the derive attaches it to
/// [`FieldInfo::json_schema`](crate::config::FieldInfo::json_schema); for hand-written
/// [`CoordConfig`](crate::config::CoordConfig) impls. Needs coord's `schema` feature.
#[cfg(feature = "schema")]
pub fn json_schema_of<T: schemars::JsonSchema + ?Sized>() -> serde_json::Value {
    schemars::SchemaGenerator::default()
        .into_root_schema_for::<T>()
        .to_value()
}

/// With the `schema` feature: the autoref-specialization probe behind
/// `__field_json_schema!`. `(&&Probe::<T>::new()).json_schema()` finds [`ViaJsonSchema`]
/// (one reference fewer to take) when `T: JsonSchema`, and [`NoJsonSchema`] otherwise.
#[cfg(feature = "schema")]
#[doc(hidden)]
pub mod probe {
    use std::marker::PhantomData;

    /// Stands for the type `T` in method lookup.
    pub struct Probe<T: ?Sized>(PhantomData<T>);

    impl<T: ?Sized> Probe<T> {
        /// The probe of `T`.
        pub const fn new() -> Self {
            Probe(PhantomData)
        }
    }

    impl<T: ?Sized> Default for Probe<T> {
        fn default() -> Self {
            Self::new()
        }
    }

    /// Chosen when `T: JsonSchema`.
    pub trait ViaJsonSchema {
        /// `T`'s JSON Schema.
        fn json_schema(&self) -> Option<serde_json::Value>;
    }

    impl<T: schemars::JsonSchema + ?Sized> ViaJsonSchema for &Probe<T> {
        fn json_schema(&self) -> Option<serde_json::Value> {
            Some(super::json_schema_of::<T>())
        }
    }

    /// Chosen otherwise.
    pub trait NoJsonSchema {
        /// `None`.
        fn json_schema(&self) -> Option<serde_json::Value>;
    }

    impl<T: ?Sized> NoJsonSchema for Probe<T> {
        fn json_schema(&self) -> Option<serde_json::Value> {
            None
        }
    }
}

/// `Some(schema)` of the type if it implements `schemars::JsonSchema` and coord's `schema`
/// feature is on, else `None`. Used by `#[derive(CoordConfig)]`; not a public API.
#[cfg(feature = "schema")]
#[doc(hidden)]
#[macro_export]
macro_rules! __field_json_schema {
    ($ty:ty) => {{
        #[allow(unused_imports)]
        use $crate::__private::{NoJsonSchema as _, ViaJsonSchema as _};
        (&&$crate::__private::Probe::<$ty>::new()).json_schema()
    }};
}

/// `Some(schema)` of the type if it implements `schemars::JsonSchema` and coord's `schema`
/// feature is on, else `None`. Used by `#[derive(CoordConfig)]`; not a public API.
#[cfg(not(feature = "schema"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __field_json_schema {
    ($ty:ty) => {
        ::core::option::Option::None::<$crate::__private::serde_json::Value>
    };
}

/// The keywords bounding a string's length or an array's size, and how a refusal says it.
struct SizeBounds {
    min: &'static str,
    max: &'static str,
    noun: &'static str,
    unit: &'static str,
}

const STRING_LENGTH: SizeBounds = SizeBounds {
    min: "minLength",
    max: "maxLength",
    noun: "a string",
    unit: "characters",
};

const ARRAY_LENGTH: SizeBounds = SizeBounds {
    min: "minItems",
    max: "maxItems",
    noun: "an array",
    unit: "items",
};

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn refused(schema: Value, value: Value) -> Mismatch {
        match validate(&schema, &value, false) {
            Err(mismatch) => mismatch,
            Ok(()) => panic!("{schema} accepted {value}"),
        }
    }

    fn accepted(schema: Value, value: Value) {
        if let Err(mismatch) = validate(&schema, &value, false) {
            panic!("{schema} refused {value}: {mismatch:?}");
        }
    }

    #[test]
    fn type_names_and_lists() {
        accepted(json!({"type": "string"}), json!("x"));
        let bad = refused(json!({"type": "string"}), json!(1));
        assert_eq!(bad.to_string(), "expected string, got the number 1");
        accepted(json!({"type": ["integer", "null"]}), Value::Null);
        accepted(json!({"type": ["integer", "null"]}), json!(3));
        refused(json!({"type": ["integer", "null"]}), json!("3"));
        refused(json!({"type": "integer"}), json!(1.5));
        refused(json!({"type": "integer"}), json!(1.0));
        accepted(json!({"type": "number"}), json!(1.5));
        accepted(json!({"type": "boolean"}), json!(true));
        refused(json!({"type": "object"}), json!([]));
        refused(json!({"type": "array"}), json!({}));
        accepted(json!(true), json!({"any": "thing"}));
        refused(json!(false), json!(null));
    }

    #[test]
    fn integer_formats_are_range_checked_and_named_as_rust_types() {
        let u8_schema = json!({"type": "integer", "format": "uint8", "minimum": 0, "maximum": 255});
        accepted(u8_schema.clone(), json!(255));
        refused(u8_schema, json!(300));
        let u32_schema = json!({"type": "integer", "format": "uint32", "minimum": 0});
        let bad = refused(u32_schema.clone(), json!(u64::from(u32::MAX) + 1));
        assert!(bad.to_string().starts_with("expected u32, got"), "{bad}");
        let bad = refused(u32_schema, json!("x"));
        assert_eq!(bad.to_string(), r#"expected u32, got the string "x""#);
        refused(json!({"type": "integer", "format": "int8"}), json!(-129));
    }

    #[test]
    fn bounds() {
        let schema = json!({"minimum": 1, "maximum": 10});
        accepted(schema.clone(), json!(1));
        accepted(schema.clone(), json!(10));
        refused(schema.clone(), json!(0));
        refused(schema, json!(11));
        let exclusive = json!({"exclusiveMinimum": 0, "exclusiveMaximum": 1});
        accepted(exclusive.clone(), json!(0.5));
        refused(exclusive.clone(), json!(0));
        refused(exclusive, json!(1));
        let char_schema = json!({"type": "string", "minLength": 1, "maxLength": 1});
        accepted(char_schema.clone(), json!("é"));
        refused(char_schema.clone(), json!(""));
        refused(char_schema, json!("ab"));
    }

    #[test]
    fn enum_and_const() {
        let schema = json!({"type": "string", "enum": ["fast", "safe"]});
        accepted(schema.clone(), json!("safe"));
        let bad = refused(schema, json!("slow"));
        assert_eq!(
            bad.to_string(),
            r#"expected one of ["fast", "safe"], got the string "slow""#
        );
        accepted(json!({"const": 3}), json!(3));
        refused(json!({"const": 3}), json!(4));
    }

    #[test]
    fn objects_check_properties_required_and_additional() {
        let schema = json!({
            "type": "object",
            "properties": {
                "per_second": {"type": "integer", "format": "uint32", "minimum": 0},
                "burst": {"type": "integer", "format": "uint32", "minimum": 0}
            },
            "required": ["per_second", "burst"],
            "additionalProperties": false
        });
        accepted(schema.clone(), json!({"per_second": 1, "burst": 2}));
        let bad = refused(schema.clone(), json!({"per_second": "x", "burst": 2}));
        assert_eq!(bad.path, "/per_second");
        assert_eq!(bad.to_string(), r#"expected u32, got the string "x""#);
        let bad = refused(schema.clone(), json!({"per_second": 1}));
        assert_eq!(bad.to_string(), "property `burst` is missing");
        // A wrong value is reported before a missing property.
        let bad = refused(schema.clone(), json!({"per_second": "x"}));
        assert_eq!(bad.path, "/per_second");
        let bad = refused(schema, json!({"per_second": 1, "burst": 2, "extra": 0}));
        assert!(bad.to_string().contains("`extra` is not allowed"), "{bad}");
        let map = json!({"type": "object", "additionalProperties": {"type": "boolean"}});
        accepted(map.clone(), json!({"a": true}));
        assert_eq!(refused(map, json!({"a": 1})).path, "/a");
    }

    #[test]
    fn arrays_check_items_counts_and_uniqueness() {
        let schema = json!({"type": "array", "items": {"type": "string"}, "uniqueItems": true});
        accepted(schema.clone(), json!(["a", "b"]));
        assert_eq!(refused(schema.clone(), json!(["a", 1])).path, "/1");
        refused(schema, json!(["a", "a"]));
        let tuple = json!({
            "type": "array",
            "prefixItems": [{"type": "integer"}, {"type": "string"}],
            "minItems": 2, "maxItems": 2
        });
        accepted(tuple.clone(), json!([1, "a"]));
        refused(tuple.clone(), json!([1]));
        refused(tuple.clone(), json!([1, "a", 2]));
        assert_eq!(refused(tuple, json!(["a", "a"])).path, "/0");
        let draft7_tuple = json!({"items": [{"type": "integer"}], "additionalItems": false});
        accepted(draft7_tuple.clone(), json!([1]));
        refused(draft7_tuple, json!([1, 2]));
    }

    #[test]
    fn any_of_one_of_all_of_and_not() {
        let any = json!({"anyOf": [{"type": "string"}, {"type": "integer"}]});
        accepted(any.clone(), json!(1));
        accepted(any.clone(), json!("a"));
        let bad = refused(any, json!(true));
        assert_eq!(bad.to_string(), "expected string or integer, got true");
        let one = json!({"oneOf": [{"type": "integer"}, {"type": "number"}]});
        accepted(one.clone(), json!(1.5));
        refused(one, json!(1));
        let all = json!({"allOf": [{"minimum": 0}, {"maximum": 5}]});
        accepted(all.clone(), json!(3));
        refused(all, json!(6));
        refused(json!({"not": {"type": "null"}}), Value::Null);
    }

    #[test]
    fn nullable_takes_null() {
        let schema = json!({"type": "string", "nullable": true});
        accepted(schema.clone(), Value::Null);
        refused(schema, json!(1));
    }

    #[test]
    fn refs_resolve_into_defs_and_definitions_nested() {
        let schema = json!({
            "$ref": "#/$defs/Outer",
            "$defs": {
                "Outer": {
                    "type": "object",
                    "properties": {"inner": {"$ref": "#/$defs/Inner"}},
                    "required": ["inner"]
                },
                "Inner": {
                    "type": "object",
                    "properties": {"size": {"type": "integer", "format": "uint8"}},
                    "required": ["size"]
                }
            }
        });
        accepted(schema.clone(), json!({"inner": {"size": 3}}));
        let bad = refused(schema.clone(), json!({"inner": {"size": 300}}));
        assert_eq!(bad.path, "/inner/size");
        let bad = refused(schema, json!({"inner": {}}));
        assert_eq!(bad.path, "/inner");
        assert_eq!(bad.to_string(), "property `size` is missing");
        let draft7 = json!({
            "type": "array",
            "items": {"$ref": "#/definitions/Flag"},
            "definitions": {"Flag": {"type": "boolean"}}
        });
        accepted(draft7.clone(), json!([true]));
        assert_eq!(refused(draft7, json!([true, "no"])).path, "/1");
    }

    #[test]
    fn an_option_of_a_struct_reports_what_is_wrong_inside() {
        let schema = json!({
            "anyOf": [{"$ref": "#/$defs/Limit"}, {"type": "null"}],
            "$defs": {"Limit": {
                "type": "object",
                "properties": {"burst": {"type": "integer"}},
                "required": ["burst"]
            }}
        });
        accepted(schema.clone(), Value::Null);
        let bad = refused(schema, json!({"burst": "x"}));
        assert_eq!(bad.path, "/burst");
    }

    #[test]
    fn a_ref_loop_or_an_unknown_ref_does_not_hang_or_refuse() {
        let looping = json!({"$ref": "#/$defs/A", "$defs": {"A": {"$ref": "#/$defs/A"}}});
        accepted(looping, json!(1));
        accepted(json!({"$ref": "#/$defs/Missing"}), json!(1));
        accepted(json!({"$ref": "https://example.invalid/schema"}), json!(1));
    }

    #[test]
    fn redacted_mismatches_do_not_show_the_value() {
        let Err(bad) = validate(&json!({"type": "integer"}), &json!("hunter2"), true) else {
            panic!("accepted a string for an integer");
        };
        assert!(!bad.to_string().contains("hunter2"), "{bad}");
    }
}
