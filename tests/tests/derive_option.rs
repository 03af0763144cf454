//! An `Option<T>` field: a missing key is `None` without `#[coord(default)]`, as serde treats
//! an absent `Option` field; `publish` writes `None` as JSON `null`, which reads back as `None`.

mod common;

use std::collections::BTreeMap;

use coord::config::Source;
use coord::{CoordConfig, Error};
use serde_json::json;

const PREFIX: &str = "/config/optional";

/// Every spelling of `Option` the derive recognizes, beside a required field and an `Option`
/// with a default of its own.
#[derive(CoordConfig, Debug, Clone, PartialEq)]
#[coord(prefix = "/config/optional")]
pub struct Optional {
    name: String,
    plain: Option<u32>,
    #[coord(key = "full-std")]
    full_std: std::option::Option<String>,
    full_core: ::core::option::Option<Vec<u8>>,
    #[coord(default = Some(7))]
    with_default: Option<u32>,
}

impl Optional {
    fn only_name() -> Self {
        Optional {
            name: "n".into(),
            plain: None,
            full_std: None,
            full_core: None,
            with_default: Some(7),
        }
    }

    fn all_some() -> Self {
        Optional {
            name: "n".into(),
            plain: Some(1),
            full_std: Some("s".into()),
            full_core: Some(vec![1, 2]),
            with_default: Some(9),
        }
    }
}

type MaybeU32 = Option<u32>;

/// A type alias of `Option` is not seen through: the field stays required.
#[derive(CoordConfig, Debug)]
struct Aliased {
    value: MaybeU32,
}

fn build<T: CoordConfig>(pairs: &[(&str, serde_json::Value)]) -> coord::Result<T> {
    let values: BTreeMap<String, Vec<u8>> = pairs
        .iter()
        .map(|(key, value)| (format!("{PREFIX}/{key}"), value.to_string().into_bytes()))
        .collect();
    T::from_source(&Source::new(PREFIX, &values))
}

#[test]
fn missing_option_keys_build_as_none() {
    let built: Optional = build(&[("name", json!("n"))]).unwrap();

    assert_eq!(built, Optional::only_name());
}

#[test]
fn null_reads_as_none_and_a_value_as_some() {
    let built: Optional = build(&[
        ("name", json!("n")),
        ("plain", json!(null)),
        ("full-std", json!("s")),
        ("with_default", json!(null)),
    ])
    .unwrap();

    assert_eq!(built.plain, None);
    assert_eq!(built.full_std.as_deref(), Some("s"));
    assert_eq!(
        built.with_default, None,
        "a stored null wins over the default"
    );
}

#[test]
fn option_fields_are_listed_as_not_required_with_a_null_default() {
    let fields = Optional::fields();
    let by_key = |key: &str| fields.iter().find(|f| f.key == key).unwrap();

    for key in ["plain", "full-std", "full_core"] {
        let field = by_key(key);
        assert!(!field.required(), "{key}");
        assert!(field.has_default, "{key}");
        assert_eq!(field.default, Some(json!(null)), "{key}");
    }
    assert_eq!(by_key("with_default").default, Some(json!(7)));
    assert!(by_key("name").required());
}

#[test]
fn none_is_encoded_as_json_null() {
    let values = Optional::only_name().to_values().unwrap();

    assert!(
        values.contains(&("plain".to_string(), json!(null))),
        "{values:?}"
    );
}

#[test]
fn an_alias_of_option_is_still_required() {
    let err = build::<Aliased>(&[]).unwrap_err();

    assert!(
        matches!(&err, Error::Invalid { key, .. } if key == "/config/optional/value"),
        "{err:?}"
    );
    assert!(Aliased::fields()[0].required());
}

on_both_backends!(cases:
    live_binds_with_option_keys_absent,
    published_options_round_trip_through_the_store,
);

mod cases {
    use super::*;
    use crate::common::{Backend, eventually};

    const WAIT: std::time::Duration = std::time::Duration::from_secs(10);

    pub async fn live_binds_with_option_keys_absent(b: &Backend) {
        b.coord
            .config()
            .set("/config/optional/name", "n")
            .await
            .unwrap();

        let live = b.coord.live::<Optional>().await.unwrap();

        assert_eq!(*live.load_full(), Optional::only_name());
        assert!(live.last_error().is_none());
    }

    pub async fn published_options_round_trip_through_the_store(b: &Backend) {
        let config = b.coord.config();

        config.publish(&Optional::all_some()).await.unwrap();
        let live = b.coord.live::<Optional>().await.unwrap();
        assert_eq!(*live.load_full(), Optional::all_some());

        // Publishing `None` overwrites the `Some` with `null`, which reads as `None`.
        let mut cleared = Optional::only_name();
        cleared.with_default = None;
        let revision = config.publish(&cleared).await.unwrap();
        assert_eq!(
            config
                .get::<serde_json::Value>("/config/optional/plain")
                .await
                .unwrap(),
            json!(null)
        );
        eventually(WAIT, "the published struct is live", || async {
            live.revision() >= revision
        })
        .await;
        assert_eq!(*live.load_full(), cleared);
        assert!(live.last_error().is_none());
    }
}
