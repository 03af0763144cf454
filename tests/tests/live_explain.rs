//! `Live::explain`: each key's value and where it came from (the key and the revision that
//! wrote it, an alias, an environment override, a gray release, the default), describing the
//! value the handle serves, on both backends.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use coord::config::{Explanation, Origin, Selector};
use coord::{Coord, CoordConfig, Instance, Live, Secret};
use serde_json::json;

use common::{Backend, eventually};

const PREFIX: &str = "/config/explained";
const WAIT: Duration = Duration::from_secs(10);
/// Set by this file alone, always to the same value (the cases of both backends run at once).
const RETRIES_VAR: &str = "COORD_TEST_EXPLAINED_RETRIES";

/// One field per origin: a key, an alias, an override, a default, a secret, a nested struct
/// and a map.
#[derive(CoordConfig, Debug, Clone)]
#[coord(prefix = "/config/explained")]
struct Checkout {
    timeout_secs: u64,
    #[coord(alias = "zone", default = "eu".to_string())]
    region: String,
    #[coord(default = 3, env = "COORD_TEST_EXPLAINED_RETRIES")]
    retries: u32,
    #[coord(default = 10)]
    burst: u32,
    #[coord(secret)]
    api_key: Secret<String>,
    #[coord(nested)]
    db: Db,
    #[coord(map)]
    routes: BTreeMap<String, String>,
}

#[derive(CoordConfig, Debug, Clone)]
struct Db {
    host: String,
}

fn key(relative: &str) -> String {
    format!("{PREFIX}/{relative}")
}

/// The entry of `relative`, which must be there.
fn entry<'e>(explanation: &'e Explanation, relative: &str) -> &'e coord::config::Explained {
    explanation
        .get(&key(relative))
        .unwrap_or_else(|| panic!("no entry for {relative} in\n{explanation}"))
}

/// Writes the stored keys of a `Checkout`; returns the revision each write made.
async fn seed(b: &Backend) -> BTreeMap<&'static str, i64> {
    std::env::set_var(RETRIES_VAR, "7");
    let config = b.coord.config();
    let mut written = BTreeMap::new();
    for (relative, value) in [
        ("timeout_secs", json!(30)),
        ("zone", json!("us-east")),
        ("api_key", json!("s3cr3t-value")),
        ("db/host", json!("db.internal")),
        ("routes/eu", json!("https://eu.example")),
        ("routes/us", json!("https://us.example")),
    ] {
        written.insert(relative, config.set(&key(relative), &value).await.unwrap());
    }
    written
}

on_both_backends!(cases:
    each_key_names_where_its_value_came_from,
    a_reload_shows_the_new_mod_revision_and_keeps_the_untouched_ones,
    a_rejected_change_leaves_the_explanation_of_the_value_still_served,
    a_gray_value_names_its_release,
);

mod cases {
    use super::*;

    pub async fn each_key_names_where_its_value_came_from(b: &Backend) {
        let written = seed(b).await;
        let live = b.coord.live::<Checkout>().await.unwrap();
        let explanation = live.explain().unwrap();

        assert_eq!(explanation.prefix, PREFIX);
        assert_eq!(explanation.revision, live.revision());
        let timeout = entry(&explanation, "timeout_secs");
        assert_eq!(timeout.value, json!(30));
        assert_eq!(
            timeout.origin,
            Origin::Key {
                mod_revision: written["timeout_secs"]
            }
        );
        let region = entry(&explanation, "region");
        assert_eq!(region.value, json!("us-east"));
        assert_eq!(
            region.origin,
            Origin::Alias {
                key: key("zone"),
                mod_revision: written["zone"]
            }
        );
        let retries = entry(&explanation, "retries");
        assert_eq!(retries.value, json!(7));
        assert_eq!(
            retries.origin,
            Origin::Env {
                var: RETRIES_VAR.to_owned()
            }
        );
        let burst = entry(&explanation, "burst");
        assert_eq!(
            (&burst.value, &burst.origin),
            (&json!(10), &Origin::Default)
        );
        let api_key = entry(&explanation, "api_key");
        assert_eq!(api_key.value, json!("<redacted>"));
        assert!(api_key.secret);
        assert_eq!(
            api_key.origin,
            Origin::Key {
                mod_revision: written["api_key"]
            }
        );
        assert_eq!(
            entry(&explanation, "db/host").origin,
            Origin::Key {
                mod_revision: written["db/host"]
            }
        );
        for route in ["routes/eu", "routes/us"] {
            assert_eq!(
                entry(&explanation, route).origin,
                Origin::Key {
                    mod_revision: written[route]
                }
            );
        }
        let keys: Vec<&str> = explanation.entries.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "timeout_secs",
                "region",
                "retries",
                "burst",
                "api_key",
                "db/host",
                "routes/eu",
                "routes/us"
            ]
            .map(key),
            "one entry per key, in field order"
        );

        let table = explanation.to_string();
        assert!(!table.contains("s3cr3t"), "a secret leaked:\n{table}");
        assert_aligned(&table);
        assert!(
            table.contains(&format!(
                "alias {}, mod revision {}",
                key("zone"),
                written["zone"]
            )),
            "{table}"
        );
        assert!(
            table.contains("env $COORD_TEST_EXPLAINED_RETRIES"),
            "{table}"
        );
    }

    pub async fn a_reload_shows_the_new_mod_revision_and_keeps_the_untouched_ones(b: &Backend) {
        let written = seed(b).await;
        let live = b.coord.live::<Checkout>().await.unwrap();
        let mut updates = live.subscribe();

        let rewritten = b
            .coord
            .config()
            .set(&key("timeout_secs"), &45)
            .await
            .unwrap();
        tokio::time::timeout(WAIT, updates.changed())
            .await
            .expect("the reload within the wait")
            .unwrap();
        // Read right after the value is announced: the explanation is of that value.
        let explanation = live.explain().unwrap();
        let timeout = entry(&explanation, "timeout_secs");
        assert_eq!(timeout.value, json!(45));
        assert_eq!(
            timeout.origin,
            Origin::Key {
                mod_revision: rewritten
            }
        );
        assert_eq!(explanation.revision, rewritten);
        assert_eq!(
            entry(&explanation, "region").origin,
            Origin::Alias {
                key: key("zone"),
                mod_revision: written["zone"]
            },
            "an untouched key keeps the revision that wrote it"
        );

        // The key appears: it wins over the alias from then on.
        let moved = b.coord.config().set(&key("region"), &"ap").await.unwrap();
        eventually(WAIT, "the key replaces the alias", || async {
            live.load().region == "ap"
        })
        .await;
        assert_eq!(
            entry(&live.explain().unwrap(), "region").origin,
            Origin::Key {
                mod_revision: moved
            }
        );
    }

    pub async fn a_rejected_change_leaves_the_explanation_of_the_value_still_served(b: &Backend) {
        let written = seed(b).await;
        let live = b.coord.live::<Checkout>().await.unwrap();
        b.coord
            .config()
            .set(&key("timeout_secs"), &"not a number")
            .await
            .unwrap();
        eventually(WAIT, "the bad value is rejected", || async {
            live.last_error().is_some()
        })
        .await;

        let timeout = entry(&live.explain().unwrap(), "timeout_secs").clone();
        assert_eq!(
            timeout.value,
            json!(30),
            "the value served, not the store's"
        );
        assert_eq!(
            timeout.origin,
            Origin::Key {
                mod_revision: written["timeout_secs"]
            }
        );
    }

    pub async fn a_gray_value_names_its_release(b: &Backend) {
        let config = b.coord.config();
        config.release(&Limits { rate: 10 }).commit().await.unwrap();
        let canary = peer(b, Instance::new("canary")).await;
        let live = canary.live::<Limits>().await.unwrap();
        let gray = config
            .release(&Limits { rate: 20 })
            .to(Selector::default().instance("canary"))
            .commit()
            .await
            .unwrap();
        eventually(WAIT, "the gray value reaches the canary", || async {
            live.load().rate == 20
        })
        .await;

        let explanation = live.explain().unwrap();
        let rate = explanation.get("/config/explained_gray/rate").unwrap();
        assert_eq!(rate.value, json!(20));
        assert_eq!(
            rate.origin,
            Origin::Gray {
                release: gray.seq,
                key: "/coord/gray/config/explained_gray".to_owned(),
                mod_revision: gray.revision,
            }
        );
    }
}

#[derive(CoordConfig, Debug, Clone, PartialEq)]
#[coord(prefix = "/config/explained_gray")]
struct Limits {
    rate: u32,
}

/// Another instance on the same store.
async fn peer(b: &Backend, instance: Instance) -> Coord {
    match &b.server {
        Some(server) => Coord::connect(server.client_config().with_instance(instance))
            .await
            .expect("connect to the test etcd"),
        None => Coord::from_store_as(b.store(), instance).expect("a valid instance"),
    }
}

/// Every row's value and source columns start where the header's do.
fn assert_aligned(table: &str) {
    let mut lines = table.lines().skip(1);
    let header = lines.next().expect("a header row");
    let value_at = header.find("VALUE").expect("a VALUE column");
    let source_at = header.find("SOURCE").expect("a SOURCE column");
    for line in lines {
        let chars: Vec<char> = line.chars().collect();
        assert!(
            chars[value_at - 2..value_at] == [' ', ' '] && chars[value_at] != ' ',
            "value column misaligned in\n{table}"
        );
        assert!(
            chars[source_at - 2..source_at] == [' ', ' '] && chars[source_at] != ' ',
            "source column misaligned in\n{table}"
        );
    }
}

#[test]
fn a_fixed_value_is_explained_as_fixed_with_its_secrets_redacted() {
    let live = Live::fixed(Checkout {
        timeout_secs: 1,
        region: "eu".into(),
        retries: 2,
        burst: 3,
        api_key: Secret::new("hidden".into()),
        db: Db { host: "h".into() },
        routes: BTreeMap::new(),
    });
    let explanation = live.explain().unwrap();
    assert_eq!(explanation.revision, 0);
    assert!(
        explanation
            .entries
            .iter()
            .all(|entry| entry.origin == Origin::Fixed)
    );
    assert_eq!(entry(&explanation, "timeout_secs").value, json!(1));
    assert_eq!(entry(&explanation, "api_key").value, json!("<redacted>"));
    assert!(!explanation.to_string().contains("hidden"));
}
