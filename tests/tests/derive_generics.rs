//! Generic config structs: `#[derive(coord::CoordConfig)]` on `Limits<T>` bounds `T` by what the
//! fields need, and each instance (`Limits<u32>`, `Limits<String>`) binds, reloads and
//! publishes as its own type, on both backends.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use coord::Error;
use coord::config::{CoordConfig, FieldKind};
use serde_json::json;

use common::{Backend, eventually};

const WAIT: Duration = Duration::from_secs(10);

/// A parameter in a plain field, an `Option`, a defaulted field, a map and a nested struct.
#[derive(coord::CoordConfig, Debug, Clone, PartialEq)]
#[coord(prefix = "/config/limits")]
struct Limits<T> {
    max: T,
    fallback: Option<T>,
    #[coord(default)]
    floor: T,
    #[coord(map)]
    per_route: BTreeMap<String, T>,
    #[coord(nested)]
    burst: Burst<T>,
    #[coord(default = 5)]
    retries: u32,
}

#[derive(coord::CoordConfig, Debug, Clone, PartialEq)]
struct Burst<T> {
    size: T,
}

/// A const parameter needs no bound.
#[derive(coord::CoordConfig, Debug, Clone, PartialEq)]
#[coord(prefix = "/config/window")]
struct Window<const N: usize> {
    samples: [u32; N],
}

#[test]
fn each_instance_describes_its_own_types() {
    let fields = <Limits<u32> as CoordConfig>::fields();
    let types: BTreeMap<&str, &str> = fields
        .iter()
        .map(|field| (field.key.as_str(), field.type_name))
        .collect();
    assert_eq!(types["max"], "u32");
    assert_eq!(types["fallback"], "core::option::Option<u32>");
    assert_eq!(types["burst/size"], "u32");
    assert_eq!(types["retries"], "u32");
    assert_eq!(
        <Limits<String> as CoordConfig>::fields()[0].type_name,
        "alloc::string::String"
    );
    assert!(
        fields
            .iter()
            .any(|f| f.key == "per_route" && f.kind == FieldKind::Map)
    );
    assert_eq!(<Limits<u32> as CoordConfig>::PREFIX, Some("/config/limits"));
}

on_both_backends!(cases:
    limits_of_u32_and_of_string_bind_and_reload_each_with_its_type,
    a_value_of_the_wrong_instance_type_is_a_decode_error_naming_the_key,
    a_generic_struct_publishes_and_binds_by_its_prefix,
    a_const_generic_struct_binds,
);

mod cases {
    use super::*;

    async fn put(b: &Backend, key: &str, value: serde_json::Value) {
        b.coord.config().set(key, &value).await.unwrap();
    }

    pub async fn limits_of_u32_and_of_string_bind_and_reload_each_with_its_type(b: &Backend) {
        put(b, "/config/numbers/max", json!(100)).await;
        put(b, "/config/numbers/per_route/eu", json!(7)).await;
        put(b, "/config/numbers/burst/size", json!(20)).await;
        put(b, "/config/names/max", json!("large")).await;
        put(b, "/config/names/fallback", json!("medium")).await;
        put(b, "/config/names/burst/size", json!("small")).await;

        let numbers = b
            .coord
            .live_at::<Limits<u32>>("/config/numbers")
            .await
            .unwrap();
        let names = b
            .coord
            .live_at::<Limits<String>>("/config/names")
            .await
            .unwrap();
        assert_eq!(
            *numbers.load_full(),
            Limits {
                max: 100,
                fallback: None,
                floor: 0,
                per_route: BTreeMap::from([("eu".to_owned(), 7)]),
                burst: Burst { size: 20 },
                retries: 5,
            }
        );
        assert_eq!(
            *names.load_full(),
            Limits {
                max: "large".to_owned(),
                fallback: Some("medium".to_owned()),
                floor: String::new(),
                per_route: BTreeMap::new(),
                burst: Burst {
                    size: "small".to_owned()
                },
                retries: 5,
            }
        );

        put(b, "/config/numbers/max", json!(200)).await;
        put(b, "/config/names/per_route/us", json!("tiny")).await;
        eventually(WAIT, "both instances reload", || async {
            numbers.load().max == 200
                && names.load().per_route.get("us").map(String::as_str) == Some("tiny")
        })
        .await;
    }

    pub async fn a_value_of_the_wrong_instance_type_is_a_decode_error_naming_the_key(b: &Backend) {
        put(b, "/config/wrong/max", json!("large")).await;
        put(b, "/config/wrong/burst/size", json!(1)).await;
        let error = b
            .coord
            .live_at::<Limits<u32>>("/config/wrong")
            .await
            .unwrap_err();
        assert!(
            matches!(&error, Error::Decode { key, .. } if key == "/config/wrong/max"),
            "{error}"
        );
    }

    pub async fn a_generic_struct_publishes_and_binds_by_its_prefix(b: &Backend) {
        let value = Limits {
            max: 1.5_f64,
            fallback: Some(0.5),
            floor: 0.25,
            per_route: BTreeMap::from([("eu".to_owned(), 2.0)]),
            burst: Burst { size: 3.0 },
            retries: 1,
        };
        b.coord.config().publish(&value).await.unwrap();
        assert_eq!(
            b.coord
                .config()
                .get::<f64>("/config/limits/burst/size")
                .await
                .unwrap(),
            3.0
        );
        let live = b.coord.live::<Limits<f64>>().await.unwrap();
        assert_eq!(*live.load_full(), value);
    }

    pub async fn a_const_generic_struct_binds(b: &Backend) {
        put(b, "/config/window/samples", json!([1, 2, 3])).await;
        let live = b.coord.live::<Window<3>>().await.unwrap();
        assert_eq!(live.load().samples, [1, 2, 3]);
        let error = b.coord.live::<Window<2>>().await.unwrap_err();
        assert!(
            matches!(&error, Error::Decode { key, .. } if key == "/config/window/samples"),
            "{error}"
        );
    }
}
