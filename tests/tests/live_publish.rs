//! `publish` runs the checks a `Live<T>` bind runs (encode, decode back, every `validate`) and
//! writes nothing when they fail, so a bad publish cannot block the next deploy.

mod common;

use coord::config::Live;
use coord::{CoordConfig, Error};
use serde::{Deserialize, Serialize};

use coord_tests::fixtures::Pair;
use coord_tests::fixtures::full::{Checkout, Db};

/// Serializes its field as `a` but reads it from `b`: what it writes never reads back.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Lopsided {
    #[serde(rename(serialize = "a", deserialize = "b"))]
    pub x: u32,
}

#[derive(CoordConfig, Debug, Clone, PartialEq)]
#[coord(prefix = "/config/lopsided")]
pub struct HoldsLopsided {
    pub name: String,
    pub odd: Lopsided,
}

/// A map with non-string keys has no JSON form: it cannot be encoded.
#[derive(CoordConfig, Debug, Clone, PartialEq)]
pub struct Unencodable {
    pub by_pair: std::collections::BTreeMap<(u8, u8), u32>,
}

#[derive(CoordConfig, Debug, Clone, PartialEq)]
#[coord(prefix = "/config/outer")]
pub struct Outer {
    #[coord(nested)]
    pub inner: Unencodable,
}

impl Outer {
    fn unencodable() -> Outer {
        Outer {
            inner: Unencodable {
                by_pair: [((1, 2), 3)].into(),
            },
        }
    }
}

#[test]
fn an_encoding_error_inside_a_nested_struct_names_the_key_from_the_outer_struct() {
    let err = Outer::unencodable().to_values().unwrap_err();

    assert!(
        matches!(&err, Error::Invalid { key, .. } if key == "inner/by_pair"),
        "{err:?}"
    );
}

on_both_backends!(cases:
    publish_refuses_a_struct_whose_validate_fails_and_writes_nothing,
    publish_refuses_a_struct_whose_nested_validate_fails,
    publish_refuses_a_value_that_does_not_read_back,
    publish_refuses_a_value_that_does_not_encode_naming_its_full_key,
    publish_at_checks_a_struct_without_a_prefix,
    refused_publish_leaves_the_previous_value_live,
    valid_publish_writes_every_key_in_one_revision,
    batch_publish_checks_each_struct_and_commits_all_in_one_revision,
);

mod cases {
    use super::*;
    use crate::common::{Backend, eventually};

    const WAIT: std::time::Duration = std::time::Duration::from_secs(10);

    /// Every key under `prefix` with its mod_revision.
    async fn stored(b: &Backend, prefix: &str) -> Vec<(String, i64)> {
        let config = b.coord.config();
        let mut out = Vec::new();
        for key in config.list(prefix).await.unwrap() {
            let (_, version) = config
                .get_with_version::<serde_json::Value>(&key)
                .await
                .unwrap();
            out.push((key, version));
        }
        out
    }

    fn assert_invalid_at(err: &Error, want_key: &str, want_reason: &str) {
        assert!(
            matches!(err, Error::Invalid { key, reason } if key == want_key && reason.contains(want_reason)),
            "want Invalid at {want_key} ({want_reason}), got {err:?}"
        );
    }

    pub async fn publish_refuses_a_struct_whose_validate_fails_and_writes_nothing(b: &Backend) {
        let mut bad = Checkout::sample();
        bad.timeout_secs = 0;

        let err = b.coord.config().publish(&bad).await.unwrap_err();

        assert_invalid_at(&err, "/config/checkout", "timeout_secs must be positive");
        assert_eq!(stored(b, "/config/checkout/").await, []);
    }

    pub async fn publish_refuses_a_struct_whose_nested_validate_fails(b: &Backend) {
        let mut bad = Checkout::sample();
        bad.db.pool_size = 0;

        let err = b.coord.config().publish(&bad).await.unwrap_err();

        assert_invalid_at(&err, "/config/checkout/db", "pool_size must be at least 1");
        assert_eq!(stored(b, "/config/checkout/").await, []);
    }

    pub async fn publish_refuses_a_value_that_does_not_read_back(b: &Backend) {
        let lopsided = HoldsLopsided {
            name: "n".into(),
            odd: Lopsided { x: 1 },
        };

        let err = b.coord.config().publish(&lopsided).await.unwrap_err();

        assert_invalid_at(&err, "/config/lopsided/odd", "does not read back");
        assert_eq!(stored(b, "/config/lopsided/").await, []);
    }

    pub async fn publish_refuses_a_value_that_does_not_encode_naming_its_full_key(b: &Backend) {
        let err = b
            .coord
            .config()
            .publish(&Outer::unencodable())
            .await
            .unwrap_err();

        assert_invalid_at(&err, "/config/outer/inner/by_pair", "cannot encode");
        assert_eq!(stored(b, "/config/outer/").await, []);
    }

    pub async fn publish_at_checks_a_struct_without_a_prefix(b: &Backend) {
        let mut db = Checkout::sample().db;
        db.pool_size = 0;

        let err = b
            .coord
            .config()
            .publish_at("/config/other-db/", &db)
            .await
            .unwrap_err();

        assert_invalid_at(&err, "/config/other-db", "pool_size must be at least 1");
        assert_eq!(stored(b, "/config/other-db/").await, []);
    }

    pub async fn refused_publish_leaves_the_previous_value_live(b: &Backend) {
        let config = b.coord.config();
        config.publish(&Checkout::sample()).await.unwrap();
        let before = stored(b, "/config/checkout/").await;
        let live: Live<Checkout> = b.coord.live().await.unwrap();

        let mut bad = Checkout::sample();
        bad.region = "elsewhere".into();
        bad.timeout_secs = 0;
        config.publish(&bad).await.unwrap_err();

        assert_eq!(stored(b, "/config/checkout/").await, before);
        // A new instance still binds, to the last good value.
        let fresh: Live<Checkout> = b.coord.live().await.unwrap();
        assert_eq!(*fresh.load_full(), Checkout::sample());
        assert_eq!(*live.load_full(), Checkout::sample());
        assert!(live.last_error().is_none());
    }

    pub async fn valid_publish_writes_every_key_in_one_revision(b: &Backend) {
        let sample = Checkout::sample();

        let revision = b.coord.config().publish(&sample).await.unwrap();

        let written = stored(b, "/config/checkout/").await;
        let keys: Vec<String> = Checkout::fields()
            .into_iter()
            .map(|f| format!("/config/checkout/{}", f.key))
            .collect();
        let mut expected: Vec<(String, i64)> = keys.into_iter().map(|k| (k, revision)).collect();
        expected.sort();
        assert_eq!(written, expected);
        let live: Live<Checkout> = b.coord.live().await.unwrap();
        assert_eq!(*live.load_full(), sample);
    }

    pub async fn batch_publish_checks_each_struct_and_commits_all_in_one_revision(b: &Backend) {
        let config = b.coord.config();
        let mut bad_db: Db = Checkout::sample().db;
        bad_db.pool_size = 0;

        let err = config
            .batch()
            .publish(&Pair { a: 1, b: 1 })
            .unwrap()
            .publish_at("/config/db", &bad_db)
            .unwrap_err();
        assert_invalid_at(&err, "/config/db", "pool_size must be at least 1");
        assert_eq!(stored(b, "/config/").await, [], "the batch was dropped");

        let revision = config
            .batch()
            .publish(&Pair { a: 2, b: 2 })
            .unwrap()
            .publish(&Checkout::sample())
            .unwrap()
            .commit()
            .await
            .unwrap();
        let written = stored(b, "/config/").await;
        assert_eq!(written.len(), 2 + Checkout::fields().len(), "{written:?}");
        assert!(written.iter().all(|(_, r)| *r == revision), "{written:?}");
        let pair: Live<Pair> = b.coord.live().await.unwrap();
        eventually(WAIT, "the pair is live", || async {
            pair.revision() >= revision
        })
        .await;
        assert_eq!(*pair.load_full(), Pair { a: 2, b: 2 });
    }
}
