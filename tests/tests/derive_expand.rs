//! What `#[derive(CoordConfig)]` generates, tested through `Source` alone (no store).

use std::collections::BTreeMap;

use coord::Error;
use coord::config::{CoordConfig, HasPrefix, Secret, Source, describe};
use serde_json::json;

use coord_tests::fixtures::full::{Checkout, Db};

#[derive(coord::CoordConfig, Debug, PartialEq)]
struct Limits {
    #[coord(default = Self::DEFAULT_BURST)]
    burst: u32,
}

impl Limits {
    const DEFAULT_BURST: u32 = 50;
}

#[derive(coord::CoordConfig)]
struct Shapes {
    #[coord(default)]
    weights: std::collections::BTreeMap<String, [u8; 2]>,
    #[coord(default)]
    pair: Option<(u8, Vec<u16>)>,
}

const PREFIX: &str = "/config/checkout";

fn values(pairs: &[(&str, serde_json::Value)]) -> BTreeMap<String, Vec<u8>> {
    pairs
        .iter()
        .map(|(key, value)| (format!("{PREFIX}/{key}"), value.to_string().into_bytes()))
        .collect()
}

fn required_only() -> BTreeMap<String, Vec<u8>> {
    values(&[
        ("rate-limit", json!({"per_second": 10, "burst": 5})),
        ("api_key", json!("sk_live_123")),
        ("db/host", json!("db.internal")),
    ])
}

fn build<T: CoordConfig>(values: &BTreeMap<String, Vec<u8>>) -> coord::Result<T> {
    T::from_source(&Source::new(PREFIX, values))
}

#[test]
fn to_values_then_from_source_gives_back_the_same_struct() {
    let original = Checkout::sample();
    let stored: BTreeMap<String, Vec<u8>> = original
        .to_values()
        .unwrap()
        .into_iter()
        .map(|(key, json)| (format!("{PREFIX}/{key}"), json.to_string().into_bytes()))
        .collect();

    assert_eq!(build::<Checkout>(&stored).unwrap(), original);
}

#[test]
fn to_values_lists_every_field_under_its_key_with_nested_flattened() {
    let keys: Vec<String> = Checkout::sample()
        .to_values()
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();

    assert_eq!(
        keys,
        [
            "timeout_secs",
            "rate-limit",
            "flags",
            "region",
            "api_key",
            "db/host",
            "db/pool_size",
            "db/tls-options/enabled",
            "db/tls-options/password",
        ]
    );
}

#[test]
fn missing_keys_with_defaults_take_the_expression_or_default_trait_value() {
    let checkout: Checkout = build(&required_only()).unwrap();

    assert_eq!(checkout.timeout_secs, 30);
    assert_eq!(checkout.flags, Vec::<String>::new());
    assert_eq!(checkout.region, "eu-west");
    assert_eq!(checkout.db.pool_size, 4);
    assert!(!checkout.db.tls.enabled);
    assert_eq!(checkout.db.tls.password.expose(), "changeit");
}

#[test]
fn default_expression_may_name_items_of_the_struct_itself() {
    let limits: Limits = build(&BTreeMap::new()).unwrap();

    assert_eq!(limits, Limits { burst: 50 });
    assert_eq!(Limits::fields()[0].default, Some(json!(50)));
}

#[test]
fn stored_values_win_over_defaults() {
    let mut stored = required_only();
    stored.extend(values(&[
        ("timeout_secs", json!(5)),
        ("region", json!("ap-south")),
    ]));

    let checkout: Checkout = build(&stored).unwrap();

    assert_eq!(checkout.timeout_secs, 5);
    assert_eq!(checkout.region, "ap-south");
}

#[test]
fn renamed_field_is_read_from_its_key_not_its_name() {
    let mut stored = required_only();
    stored.remove(&format!("{PREFIX}/rate-limit"));
    stored.extend(values(&[(
        "rate_limit",
        json!({"per_second": 1, "burst": 1}),
    )]));

    let err = build::<Checkout>(&stored).unwrap_err();

    assert!(
        matches!(&err, Error::Invalid { key, .. } if key == "/config/checkout/rate-limit"),
        "{err:?}"
    );
}

#[test]
fn nested_structs_read_two_levels_down() {
    let mut stored = required_only();
    stored.extend(values(&[
        ("db/pool_size", json!(16)),
        ("db/tls-options/enabled", json!(true)),
    ]));

    let db = build::<Checkout>(&stored).unwrap().db;

    assert_eq!(db.host, "db.internal");
    assert_eq!(db.pool_size, 16);
    assert!(db.tls.enabled);
}

#[test]
fn debug_never_shows_a_secret_but_expose_returns_it() {
    let checkout = Checkout::sample();

    let printed = format!("{checkout:?} {checkout:#?}");

    assert!(!printed.contains("sk_live_123"), "{printed}");
    assert!(!printed.contains("s3cret"), "{printed}");
    assert!(printed.contains("<redacted>"));
    assert_eq!(checkout.api_key.expose(), "sk_live_123");
    assert_eq!(checkout.db.tls.password.expose(), "s3cret");
}

#[test]
fn failed_validate_is_invalid_naming_the_prefix() {
    let mut stored = required_only();
    stored.extend(values(&[("timeout_secs", json!(0))]));

    let err = build::<Checkout>(&stored).unwrap_err();

    match err {
        Error::Invalid { key, reason } => {
            assert_eq!(key, PREFIX);
            assert_eq!(reason, "timeout_secs must be positive");
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn failed_validate_of_a_nested_struct_names_the_nested_prefix() {
    let mut stored = required_only();
    stored.extend(values(&[("db/pool_size", json!(0))]));

    let err = build::<Checkout>(&stored).unwrap_err();

    match err {
        Error::Invalid { key, reason } => {
            assert_eq!(key, "/config/checkout/db");
            assert_eq!(reason, "pool_size must be at least 1");
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn missing_required_key_is_invalid_naming_the_full_key() {
    let mut stored = required_only();
    stored.remove(&format!("{PREFIX}/db/host"));

    let err = build::<Checkout>(&stored).unwrap_err();

    match err {
        Error::Invalid { key, reason } => {
            assert_eq!(key, "/config/checkout/db/host");
            assert_eq!(reason, "required key is missing");
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn value_that_is_not_json_for_the_field_is_decode_naming_the_full_key() {
    let mut stored = required_only();
    stored.insert(
        format!("{PREFIX}/db/tls-options/enabled"),
        b"\"yes\"".to_vec(),
    );

    let err = build::<Checkout>(&stored).unwrap_err();

    assert!(
        matches!(&err, Error::Decode { key, .. } if key == "/config/checkout/db/tls-options/enabled"),
        "{err:?}"
    );
}

#[test]
fn unknown_keys_under_the_prefix_are_ignored_and_reported() {
    let mut stored = required_only();
    stored.extend(values(&[("retired_setting", json!(true))]));
    stored.insert("/config/other/x".into(), b"1".to_vec());

    assert!(build::<Checkout>(&stored).is_ok());
    let source = Source::new(PREFIX, &stored);
    assert_eq!(
        source.unknown_keys(&Checkout::fields()),
        ["/config/checkout/retired_setting"]
    );
}

#[test]
fn prefix_is_set_only_when_given() {
    fn has_prefix<T: HasPrefix>() -> Option<&'static str> {
        T::PREFIX
    }

    assert_eq!(has_prefix::<Checkout>(), Some("/config/checkout"));
    assert_eq!(Db::PREFIX, None);
}

#[test]
fn fields_describe_keys_types_defaults_docs_and_secrets() {
    let fields = Checkout::fields();
    let field = |key: &str| {
        fields
            .iter()
            .find(|f| f.key == key)
            .unwrap_or_else(|| panic!("no field {key}"))
    };

    let timeout = field("timeout_secs");
    assert_eq!(timeout.type_name, "u64");
    assert_eq!(timeout.default, Some(json!(30)));
    assert_eq!(
        timeout.doc,
        "Seconds before a payment attempt is abandoned."
    );
    assert!(!timeout.required() && !timeout.secret);

    let rate_limit = field("rate-limit");
    assert_eq!(rate_limit.type_name, "RateLimit");
    assert_eq!(rate_limit.default, None);
    assert!(rate_limit.required());

    assert_eq!(field("flags").type_name, "Vec<String>");
    assert_eq!(field("flags").default, Some(json!([])));
    assert_eq!(field("region").default, Some(json!("eu-west")));
    assert_eq!(field("region").doc, "");

    let api_key = field("api_key");
    assert_eq!(api_key.type_name, "Secret<String>");
    assert!(api_key.secret && api_key.required());
}

#[test]
fn type_name_is_the_type_as_written_with_rust_spacing() {
    let names: Vec<&str> = Shapes::fields().iter().map(|f| f.type_name).collect();

    assert_eq!(
        names,
        [
            "std::collections::BTreeMap<String, [u8; 2]>",
            "Option<(u8, Vec<u16>)>"
        ]
    );
}

#[test]
fn fields_flatten_nested_structs_under_their_key() {
    let keys: Vec<String> = Checkout::fields().into_iter().map(|f| f.key).collect();

    assert_eq!(
        &keys[5..],
        [
            "db/host",
            "db/pool_size",
            "db/tls-options/enabled",
            "db/tls-options/password"
        ]
    );
    let host = &Checkout::fields()[5];
    assert_eq!(host.doc, "Database host name.");
}

#[test]
fn fields_never_carry_a_secret_default_but_mark_it_optional() {
    let fields = Checkout::fields();
    let password = fields
        .iter()
        .find(|f| f.key == "db/tls-options/password")
        .unwrap();

    assert!(password.secret);
    assert!(password.has_default && !password.required());
    assert_eq!(password.default, None);
}

#[test]
fn describe_lists_every_key_with_type_default_and_doc() {
    let table = describe::<Checkout>();

    for field in Checkout::fields() {
        assert!(
            table.contains(&field.key),
            "{} missing from\n{table}",
            field.key
        );
    }
    assert!(table.contains("Seconds before a payment attempt is abandoned."));
    assert!(table.contains("required"));
    assert!(!table.contains("changeit"), "{table}");
    let timeout_row = table
        .lines()
        .find(|l| l.starts_with("timeout_secs"))
        .unwrap();
    assert!(timeout_row.contains("u64"));
    assert!(timeout_row.contains("30"));
}

#[test]
fn describe_aligns_its_columns() {
    let table = describe::<Checkout>();
    let rows: Vec<&str> = table.lines().skip(1).collect();

    let type_column = rows[0].find("TYPE").unwrap();
    assert_eq!(rows[1].find("u64"), Some(type_column), "{table}");
    assert_eq!(rows[2].find("RateLimit"), Some(type_column), "{table}");
}

#[test]
fn secret_serializes_as_its_value_and_prints_redacted() {
    let secret: Secret<String> = serde_json::from_str("\"hunter2\"").unwrap();

    assert_eq!(serde_json::to_string(&secret).unwrap(), "\"hunter2\"");
    assert_eq!(format!("{secret} {secret:?}"), "<redacted> <redacted>");
    assert_eq!(Secret::from("hunter2".to_string()), secret);
}

mod hygiene {
    //! The derive names everything by absolute path, so user items called `Result`, `Option`,
    //! `Vec` or `coord` do not confuse it.

    #[allow(dead_code)]
    type Result = ();
    #[allow(dead_code)]
    struct Option;
    #[allow(dead_code)]
    struct Vec;
    #[allow(dead_code)]
    mod core {}

    #[derive(::coord::CoordConfig)]
    #[coord(prefix = "/config/hygiene")]
    pub struct Shadowed {
        #[coord(default = 1)]
        pub r#type: u8,
    }

    #[test]
    fn raw_identifier_field_uses_the_bare_name_as_key() {
        use ::coord::config::CoordConfig as _;
        let keys: ::std::vec::Vec<::std::string::String> =
            Shadowed::fields().into_iter().map(|f| f.key).collect();
        assert_eq!(keys, ["type"]);
    }
}
