//! Published config schemas on both backends: `publish_schema` writes what `T::fields()` knows
//! at `/coord/schemas{prefix}` (never a secret's default), `schema(prefix)` reads it back equal,
//! and `check` refuses a raw value of the wrong type naming the key, the expected type and the
//! doc, refuses unknown keys, and accepts map entries and nested-map entry fields. With the
//! `schema` feature (on in CI's `--all-features`), a field whose type implements
//! `schemars::JsonSchema` is checked against its schema.

mod common;

use std::collections::BTreeMap;

use coord::config::{Map, PublishedKind, PublishedSchema, Secret};
use coord::{CoordConfig, Error};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

on_both_backends!(cases:
    a_published_schema_reads_back_equal,
    a_secret_default_never_reaches_the_store,
    a_prefix_without_a_published_schema_has_none,
    check_refuses_a_string_for_u64_naming_key_type_and_doc,
    check_refuses_an_unknown_key_listing_the_known_ones,
    check_accepts_map_entries_and_nested_map_entry_fields,
    check_refuses_bad_map_entries_and_nested_map_entry_fields,
    a_refused_secret_is_not_shown,
);

/// The default API key; it must never reach the store.
const DEFAULT_API_KEY: &str = "sk_default_do_not_publish";

fn default_api_key() -> Secret<String> {
    Secret::new(DEFAULT_API_KEY.to_owned())
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
struct RateLimit {
    per_second: u32,
    burst: u32,
}

#[derive(CoordConfig, Debug, Clone)]
struct Db {
    /// Database host name.
    host: String,
    #[coord(default = 5432)]
    port: u16,
}

#[derive(CoordConfig, Debug, Clone)]
struct Pool {
    /// Connections in the pool.
    size: u32,
}

#[derive(CoordConfig, Debug, Clone)]
#[coord(prefix = "/config/checkout")]
struct Checkout {
    /// Seconds before a payment attempt is abandoned.
    #[coord(default = 30)]
    timeout_secs: u64,
    /// The payment provider's API key.
    #[coord(secret, default = default_api_key())]
    api_key: Secret<String>,
    #[coord(nested)]
    db: Db,
    /// Per-tenant request limits.
    #[coord(map)]
    limits: Map<RateLimit>,
    #[coord(map, nested)]
    pools: BTreeMap<String, Pool>,
    /// Checkout-wide request limit.
    rate_limit: RateLimit,
    /// Payment methods offered, in order.
    #[coord(default)]
    methods: Vec<String>,
}

const P: &str = "/config/checkout";

/// `check`'s refusal as `(key, reason)`.
fn refusal(schema: &PublishedSchema, key: &str, value: Value) -> (String, String) {
    match schema.check(key, &value) {
        Err(Error::Invalid { key, reason }) => (key, reason),
        Err(other) => panic!("{key} = {value}: not Invalid but {other}"),
        Ok(()) => panic!("{key} = {value} was accepted"),
    }
}

#[test]
fn fields_become_published_fields_in_order_with_kinds() {
    let schema = PublishedSchema::of::<Checkout>(P);
    let keys: Vec<&str> = schema.fields.iter().map(|f| f.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "timeout_secs",
            "api_key",
            "db/host",
            "db/port",
            "limits",
            "pools",
            "rate_limit",
            "methods"
        ]
    );
    assert_eq!(schema.type_name, "Checkout");
    assert_eq!(schema.prefix, P);

    let timeout = &schema.fields[0];
    assert_eq!(timeout.type_name, "u64");
    assert_eq!(timeout.default, Some(json!(30)));
    assert!(!timeout.required && !timeout.secret);
    assert_eq!(
        timeout.doc,
        "Seconds before a payment attempt is abandoned."
    );

    let api_key = &schema.fields[1];
    assert!(api_key.secret && !api_key.required);
    assert_eq!(api_key.default, None);

    assert!(schema.fields[2].required, "db/host has no default");
    assert_eq!(
        schema.fields[4].kind,
        PublishedKind::Map {
            entry_type: "RateLimit".to_owned()
        }
    );
    let PublishedKind::NestedMap { fields } = &schema.fields[5].kind else {
        panic!("pools is not a nested map: {:?}", schema.fields[5].kind);
    };
    assert_eq!(fields[0].key, "size");
    assert_eq!(fields[0].doc, "Connections in the pool.");
}

#[test]
fn the_schema_key_is_under_the_reserved_prefix() {
    assert_eq!(
        PublishedSchema::key("/config/checkout/"),
        "/coord/schemas/config/checkout"
    );
}

/// With the `schema` feature, a field (or map entry) whose type does not implement
/// `schemars::JsonSchema` still compiles and gets no schema, while a `u8` beside it gets one;
/// without the feature no field has one.
#[test]
fn a_field_whose_type_has_no_json_schema_gets_none() {
    #[derive(Serialize, Deserialize, Debug, Clone)]
    struct Opaque {
        inner: u8,
    }

    #[derive(CoordConfig, Debug, Clone)]
    struct WithOpaque {
        opaque: Opaque,
        #[coord(map)]
        opaques: Map<Opaque>,
        count: u8,
    }

    let fields = WithOpaque::fields();
    assert_eq!(fields[0].json_schema, None);
    assert_eq!(fields[1].json_schema, None);
    assert_eq!(fields[2].json_schema.is_some(), cfg!(feature = "schema"));
}

mod cases {
    use super::*;
    use crate::common::Backend;

    async fn published(b: &Backend) -> PublishedSchema {
        b.coord
            .config()
            .publish_schema::<Checkout>()
            .await
            .expect("publish the schema");
        b.coord
            .config()
            .schema(P)
            .await
            .expect("read the schema")
            .expect("a schema is published")
    }

    pub async fn a_published_schema_reads_back_equal(b: &Backend) {
        let revision = b.coord.config().publish_schema::<Checkout>().await.unwrap();
        assert!(revision > 0);

        let read = b.coord.config().schema(P).await.unwrap();
        assert_eq!(read, Some(PublishedSchema::of::<Checkout>(P)));
        // One key, under the reserved prefix, holding the JSON document.
        let keys = b.coord.config().list("/coord/schemas/").await.unwrap();
        assert_eq!(keys, ["/coord/schemas/config/checkout"]);
    }

    pub async fn a_secret_default_never_reaches_the_store(b: &Backend) {
        b.coord.config().publish_schema::<Checkout>().await.unwrap();

        let (stored, _) = b
            .store()
            .get("/coord/schemas/config/checkout")
            .await
            .unwrap();
        let stored = String::from_utf8(stored.expect("the schema key").value).unwrap();
        assert!(!stored.contains(DEFAULT_API_KEY), "{stored}");
        // The non-secret default is there, so the check above is not vacuous.
        let document: Value = serde_json::from_str(&stored).unwrap();
        assert_eq!(document["fields"][0]["default"], json!(30));
        assert_eq!(document["fields"][1]["secret"], json!(true));
    }

    pub async fn a_prefix_without_a_published_schema_has_none(b: &Backend) {
        assert_eq!(
            b.coord.config().schema("/config/other").await.unwrap(),
            None
        );
        assert!(matches!(
            b.coord.config().schema("config/relative").await,
            Err(Error::InvalidArgument { .. })
        ));
    }

    pub async fn check_refuses_a_string_for_u64_naming_key_type_and_doc(b: &Backend) {
        let schema = published(b).await;

        let (key, reason) = refusal(&schema, "timeout_secs", json!("abc"));
        assert_eq!(key, "timeout_secs");
        assert_eq!(
            reason,
            "expected u64 (Seconds before a payment attempt is abandoned.), got the string \"abc\""
        );
        assert!(schema.check("timeout_secs", &json!(45)).is_ok());

        let (key, reason) = refusal(&schema, "db/port", json!(70000));
        assert_eq!(key, "db/port");
        assert!(reason.starts_with("expected u16"), "{reason}");
        let (_, reason) = refusal(&schema, "methods", json!(["card", 3]));
        assert!(reason.contains("at /1"), "{reason}");
    }

    pub async fn check_refuses_an_unknown_key_listing_the_known_ones(b: &Backend) {
        let schema = published(b).await;

        let (key, reason) = refusal(&schema, "timeout", json!(30));
        assert_eq!(key, "timeout");
        assert!(reason.starts_with("unknown key"), "{reason}");
        assert!(
            reason.contains("timeout_secs, api_key, db/host, db/port, limits/{name}"),
            "{reason}"
        );
        assert!(reason.contains("pools/{name}/size"), "{reason}");
        // A nested map's entry has only the entry struct's fields.
        refusal(&schema, "pools/main/sized", json!(1));
        refusal(&schema, "pools/main", json!({"size": 1}));
    }

    pub async fn check_accepts_map_entries_and_nested_map_entry_fields(b: &Backend) {
        let schema = published(b).await;

        schema
            .check("limits/acme", &json!({"per_second": 10, "burst": 20}))
            .unwrap();
        schema.check("pools/main/size", &json!(4)).unwrap();
        schema
            .check_all(&BTreeMap::from([
                ("db/host".to_owned(), json!("db-1")),
                ("pools/spare/size".to_owned(), json!(1)),
                ("api_key".to_owned(), json!("sk_live")),
            ]))
            .unwrap();
    }

    pub async fn check_refuses_bad_map_entries_and_nested_map_entry_fields(b: &Backend) {
        let schema = published(b).await;

        let (key, reason) = refusal(&schema, "pools/main/size", json!("four"));
        assert_eq!(key, "pools/main/size");
        assert_eq!(
            reason,
            "expected u32 (Connections in the pool.), got the string \"four\""
        );
        let refused = schema.check_all(&BTreeMap::from([
            ("db/host".to_owned(), json!("db-1")),
            ("pools/spare/size".to_owned(), json!(-1)),
        ]));
        assert!(
            matches!(&refused, Err(Error::Invalid { key, .. }) if key == "pools/spare/size"),
            "{refused:?}"
        );
    }

    pub async fn a_refused_secret_is_not_shown(b: &Backend) {
        let schema = published(b).await;

        let (key, reason) = refusal(&schema, "api_key", json!(4242424242u64));
        assert_eq!(key, "api_key");
        assert!(!reason.contains("4242424242"), "{reason}");
        assert!(reason.contains("got a number"), "{reason}");
    }
}

/// With the `schema` feature: JSON Schema per field, checked.
#[cfg(feature = "schema")]
mod with_json_schema {
    use super::*;

    on_both_backends!(cases:
        a_json_schema_field_refuses_a_wrong_property_and_a_missing_one,
        a_map_entry_is_checked_against_the_entry_schema,
    );

    #[test]
    fn fields_whose_types_implement_json_schema_carry_it() {
        let schema = PublishedSchema::of::<Checkout>(P);
        let rate_limit = schema.field("rate_limit").unwrap();
        let json_schema = rate_limit.json_schema.as_ref().expect("RateLimit's schema");
        assert_eq!(
            json_schema["required"],
            json!(["per_second", "burst"]),
            "{json_schema}"
        );
        // Secret<String> has String's schema, without a default.
        let api_key = schema.field("api_key").unwrap();
        assert_eq!(
            api_key.json_schema.as_ref().map(|s| &s["type"]),
            Some(&json!("string"))
        );
        // A map field carries its entry's schema.
        let limits = schema.field("limits/acme").unwrap();
        assert_eq!(limits.json_schema, rate_limit.json_schema);
    }

    mod cases {
        use super::*;
        use crate::common::Backend;

        pub async fn a_json_schema_field_refuses_a_wrong_property_and_a_missing_one(b: &Backend) {
            b.coord.config().publish_schema::<Checkout>().await.unwrap();
            let schema = b.coord.config().schema(P).await.unwrap().unwrap();

            schema
                .check("rate_limit", &json!({"per_second": 1, "burst": 2}))
                .unwrap();
            let (key, reason) = refusal(&schema, "rate_limit", json!({"per_second": "x"}));
            assert_eq!(key, "rate_limit");
            assert_eq!(
                reason,
                "expected RateLimit (Checkout-wide request limit.); at /per_second: expected \
                 u32, got the string \"x\""
            );
            let (_, reason) = refusal(&schema, "rate_limit", json!({"per_second": 1}));
            assert_eq!(
                reason,
                "expected RateLimit (Checkout-wide request limit.): property `burst` is missing"
            );
        }

        pub async fn a_map_entry_is_checked_against_the_entry_schema(b: &Backend) {
            b.coord.config().publish_schema::<Checkout>().await.unwrap();
            let schema = b.coord.config().schema(P).await.unwrap().unwrap();

            schema
                .check("limits/acme", &json!({"per_second": 1, "burst": 2}))
                .unwrap();
            let (key, reason) = refusal(&schema, "limits/acme", json!({"burst": 2}));
            assert_eq!(key, "limits/acme");
            assert!(reason.contains("`per_second` is missing"), "{reason}");
        }
    }
}
