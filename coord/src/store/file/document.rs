//! A YAML or JSON document read into a JSON value more strictly than `serde_json::Value`
//! reads itself: a key given twice in one mapping is an error at the second one (both
//! parsers would keep the last one without a word), in YAML a merge key `<<` is applied, and a
//! number JSON cannot hold (YAML's `.nan`, `.inf`) is an error rather than a silent `null`.
//!
//! The errors are raised inside the parser's own deserializer, with `de::Error::custom`, so
//! serde_json and serde_yaml_ng give them the line and column of the node being read: the
//! repeated key, or the merge value that is not a mapping.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// How a mapping key `<<` is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum MergeKey {
    /// YAML's merge key (<https://yaml.org/type/merge.html>): the mapping, or each mapping of
    /// a list, given to `<<` lends its entries to the mapping holding it; the mapping's own
    /// entries win, then the earlier mappings of the list over the later ones.
    Apply,
    /// A key like any other (JSON has no merge key).
    Literal,
}

/// Reads any value, refusing repeated keys.
#[derive(Clone, Copy, Debug)]
pub(super) struct Strict {
    pub(super) merge_key: MergeKey,
}

impl<'de> DeserializeSeed<'de> for Strict {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom(format!("{v} is not a number JSON can hold")))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        self.deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element_seed(self)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Value, A::Error> {
        self.mapping(map).map(Value::Object)
    }
}

impl Strict {
    fn mapping<'de, A: MapAccess<'de>>(self, mut map: A) -> Result<Map<String, Value>, A::Error> {
        let mut entries = Map::new();
        // The mappings `<<` lends, in order of precedence; applied once the mapping's own
        // entries are all known, since those win wherever they stand.
        let mut lent: Option<Vec<Map<String, Value>>> = None;
        loop {
            let seed = Key {
                taken: &entries,
                merge_key: self.merge_key,
                merged: lent.is_some(),
            };
            match map.next_key_seed(seed)? {
                None => break,
                Some(KeyIs::Merge) => lent = Some(map.next_value_seed(Lent(self))?),
                Some(KeyIs::Entry(key)) => {
                    let value = map.next_value_seed(self)?;
                    entries.insert(key, value);
                }
            }
        }
        for mapping in lent.into_iter().flatten() {
            for (key, value) in mapping {
                entries.entry(key).or_insert(value);
            }
        }
        Ok(entries)
    }
}

/// What a mapping key turned out to be.
enum KeyIs {
    Merge,
    Entry(String),
}

/// Reads a mapping key, refusing one the mapping already has.
struct Key<'a> {
    taken: &'a Map<String, Value>,
    merge_key: MergeKey,
    /// Whether the mapping already had a merge key.
    merged: bool,
}

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = KeyIs;

    // As a string, as `serde_json::Value` reads keys: a YAML key `1` or `true` is the entry
    // name "1" or "true".
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<KeyIs, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key<'_> {
    type Value = KeyIs;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<KeyIs, E> {
        if self.merge_key == MergeKey::Apply && key == "<<" {
            return if self.merged {
                Err(E::custom("merge key `<<` is given twice in one mapping"))
            } else {
                Ok(KeyIs::Merge)
            };
        }
        if self.taken.contains_key(key) {
            return Err(E::custom(duplicate_key(key)));
        }
        Ok(KeyIs::Entry(key.to_owned()))
    }
}

/// Reads the value of a merge key: a mapping, or a list of mappings.
struct Lent(Strict);

impl<'de> DeserializeSeed<'de> for Lent {
    type Value = Vec<Map<String, Value>>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Lent {
    type Value = Vec<Map<String, Value>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping or a list of mappings to merge (the value of `<<`)")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        Ok(vec![self.0.mapping(map)?])
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut mappings = Vec::new();
        while let Some(mapping) = seq.next_element_seed(LentMapping(self.0))? {
            mappings.push(mapping);
        }
        Ok(mappings)
    }
}

/// Reads one mapping of a merge key's list.
struct LentMapping(Strict);

impl<'de> DeserializeSeed<'de> for LentMapping {
    type Value = Map<String, Value>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for LentMapping {
    type Value = Map<String, Value>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping to merge (each item of the list given to `<<`)")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        self.0.mapping(map)
    }
}

/// The message for a key given twice, in every format.
pub(super) fn duplicate_key(key: &str) -> String {
    format!("duplicate key `{key}` (it is given earlier in the same table)")
}
