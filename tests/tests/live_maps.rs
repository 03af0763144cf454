//! `#[coord(map)]` and `#[coord(map, nested)]` fields on both backends: every entry under the
//! map's key is bound, one changed entry is re-read alone and the rest are shared with the
//! previous value, a bad entry keeps the last good map and names its key, and `publish`
//! replaces the whole map.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use coord::config::{Live, Map};
use coord::{CoordConfig, Error};
use serde::{Deserialize, Serialize};
use tokio::time::timeout;

on_both_backends!(cases:
    every_entry_under_a_map_is_bound_and_followed,
    one_changed_entry_leaves_every_other_entry_shared,
    a_bad_entry_keeps_the_last_good_map_and_names_its_key,
    a_key_outside_every_map_neither_rebuilds_nor_wakes,
    publish_replaces_the_whole_map_and_nothing_else,
    publish_is_refused_when_an_entry_does_not_validate,
);

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Limit {
    per_second: u32,
}

fn positive_size(pool: &Pool) -> Result<(), String> {
    if pool.size == 0 {
        return Err("size must be positive".into());
    }
    Ok(())
}

#[derive(CoordConfig, Debug, Clone, PartialEq)]
#[coord(validate = "positive_size")]
struct Pool {
    size: u32,
    #[coord(default)]
    host: String,
}

#[derive(CoordConfig, Debug, Clone, PartialEq)]
#[coord(prefix = "/config/tenancy")]
struct Tenancy {
    #[coord(default = 1)]
    version: u32,
    /// Per-tenant limits.
    #[coord(map)]
    limits: Map<Limit>,
    #[coord(map, key = "feature-flags")]
    flags: HashMap<String, bool>,
    #[coord(map, nested)]
    pools: BTreeMap<String, Pool>,
    #[coord(map, nested)]
    shared_pools: Map<Pool>,
}

#[test]
fn describe_lists_map_entries_and_their_fields() {
    let table = coord::config::describe::<Tenancy>();
    let keys: Vec<&str> = table
        .lines()
        .skip(2)
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    assert_eq!(
        keys,
        [
            "version",
            "limits/{name}",
            "feature-flags/{name}",
            "pools/{name}",
            "pools/{name}/size",
            "pools/{name}/host",
            "shared_pools/{name}",
            "shared_pools/{name}/size",
            "shared_pools/{name}/host",
        ],
        "{table}"
    );
    assert!(table.contains("Per-tenant limits."), "{table}");
}

mod cases {
    use super::*;
    use crate::common::{Backend, eventually};

    const WAIT: Duration = Duration::from_secs(5);
    const P: &str = "/config/tenancy";

    async fn set<T: Serialize + ?Sized>(b: &Backend, key: &str, value: &T) {
        b.coord
            .config()
            .set(&format!("{P}/{key}"), value)
            .await
            .unwrap();
    }

    async fn delete(b: &Backend, key: &str) {
        b.coord
            .config()
            .delete(&format!("{P}/{key}"))
            .await
            .unwrap();
    }

    /// Waits for the next swap and returns the new value.
    async fn next(updates: &mut tokio::sync::watch::Receiver<Arc<Tenancy>>) -> Arc<Tenancy> {
        timeout(WAIT, updates.changed())
            .await
            .expect("a new value within 5 s")
            .expect("live handle open");
        Arc::clone(&updates.borrow_and_update())
    }

    pub async fn every_entry_under_a_map_is_bound_and_followed(b: &Backend) {
        let empty = b.coord.live::<Tenancy>().await.unwrap();
        let value = empty.load_full();
        assert!(value.limits.is_empty() && value.flags.is_empty() && value.pools.is_empty());
        drop(empty);

        set(b, "limits/acme", &Limit { per_second: 100 }).await;
        set(b, "limits/eu/globex", &Limit { per_second: 5 }).await;
        set(b, "feature-flags/dark-mode", &true).await;
        set(b, "pools/main/size", &4).await;
        set(b, "pools/main/host", "db-1").await;
        set(b, "pools/spare/size", &1).await;
        // A key right under a nested map is no entry's field; it is ignored.
        set(b, "pools/README", "notes").await;

        let live = b.coord.live::<Tenancy>().await.unwrap();
        let value = live.load_full();
        assert_eq!(value.limits.get("acme"), Some(&Limit { per_second: 100 }));
        assert_eq!(
            value.limits.get("eu/globex"),
            Some(&Limit { per_second: 5 }),
            "a JSON entry's name is the rest of its key"
        );
        assert_eq!(value.flags, HashMap::from([("dark-mode".to_owned(), true)]));
        assert_eq!(
            value.pools,
            BTreeMap::from([
                (
                    "main".to_owned(),
                    Pool {
                        size: 4,
                        host: "db-1".into()
                    }
                ),
                (
                    "spare".to_owned(),
                    Pool {
                        size: 1,
                        host: String::new()
                    }
                ),
            ])
        );

        let mut updates = live.subscribe();
        set(b, "limits/acme", &Limit { per_second: 7 }).await;
        let value = next(&mut updates).await;
        assert_eq!(value.limits.get("acme"), Some(&Limit { per_second: 7 }));
        assert_eq!(value.limits.len(), 2);

        delete(b, "pools/spare/size").await;
        let value = next(&mut updates).await;
        assert_eq!(
            value.pools.keys().collect::<Vec<_>>(),
            ["main"],
            "an entry with no keys left is gone"
        );

        b.coord
            .config()
            .batch()
            .delete(&format!("{P}/limits/acme"))
            .set(&format!("{P}/feature-flags/beta"), &false)
            .unwrap()
            .set(&format!("{P}/shared_pools/x/size"), &2)
            .unwrap()
            .commit()
            .await
            .unwrap();
        let value = next(&mut updates).await;
        assert_eq!(value.limits.keys().collect::<Vec<_>>(), ["eu/globex"]);
        assert_eq!(value.flags.get("beta"), Some(&false));
        assert_eq!(value.shared_pools.get("x").map(|p| p.size), Some(2));
        assert!(live.last_error().is_none());
    }

    pub async fn one_changed_entry_leaves_every_other_entry_shared(b: &Backend) {
        let mut batch = b.coord.config().batch();
        for i in 0..100 {
            batch = batch
                .set(&format!("{P}/limits/t{i:03}"), &Limit { per_second: i })
                .unwrap();
        }
        batch.commit().await.unwrap();
        set(b, "shared_pools/a/size", &1).await;
        set(b, "shared_pools/b/size", &2).await;
        let live = b.coord.live::<Tenancy>().await.unwrap();
        let before = live.load_full();
        assert_eq!(before.limits.len(), 100);

        let mut updates = live.subscribe();
        set(b, "limits/t042", &Limit { per_second: 4200 }).await;
        let after = next(&mut updates).await;
        assert_eq!(after.limits.get("t042"), Some(&Limit { per_second: 4200 }));
        for (name, old) in before.limits.iter() {
            if name == "t042" {
                continue;
            }
            let new = after.limits.get_arc(name).expect("entry kept");
            assert!(
                std::ptr::eq(old, &**new),
                "entry {name} was decoded again instead of shared"
            );
        }

        set(b, "shared_pools/b/host", "db-2").await;
        let later = next(&mut updates).await;
        assert!(
            Arc::ptr_eq(
                after.shared_pools.get_arc("a").unwrap(),
                later.shared_pools.get_arc("a").unwrap()
            ),
            "the nested entry that did not change is shared"
        );
        assert_eq!(later.shared_pools.get("b").unwrap().host, "db-2");
        assert!(
            Arc::ptr_eq(
                after.limits.get_arc("t000").unwrap(),
                later.limits.get_arc("t000").unwrap()
            ),
            "another map's entries are shared too"
        );
    }

    async fn wait_for_error(live: &Live<Tenancy>) -> Arc<Error> {
        let mut found = None;
        eventually(WAIT, "the bad entry is reported", || {
            found = live.last_error();
            let seen = found.is_some();
            async move { seen }
        })
        .await;
        found.expect("an error")
    }

    pub async fn a_bad_entry_keeps_the_last_good_map_and_names_its_key(b: &Backend) {
        set(b, "limits/acme", &Limit { per_second: 1 }).await;
        set(b, "pools/main/size", &3).await;
        let live = b.coord.live::<Tenancy>().await.unwrap();
        let good = live.load_full();

        set(b, "limits/broken", "not a limit").await;
        let error = wait_for_error(&live).await;
        assert!(
            matches!(&*error, Error::Decode { key, .. } if key == "/config/tenancy/limits/broken"),
            "{error}"
        );
        assert_eq!(live.load_full(), good, "the last good map stays");

        // Another entry changes while the bad one is still there: still refused.
        set(b, "limits/acme", &Limit { per_second: 2 }).await;
        set(b, "version", &2).await;
        eventually(WAIT, "the later revision is seen", || {
            let error = live.last_error();
            async move {
                error.is_some_and(|e| e.to_string().contains("/config/tenancy/limits/broken"))
            }
        })
        .await;
        assert_eq!(live.load_full().limits.get("acme").unwrap().per_second, 1);

        let mut updates = live.subscribe();
        delete(b, "limits/broken").await;
        let healed = next(&mut updates).await;
        assert!(live.last_error().is_none());
        assert_eq!(healed.limits.get("acme").unwrap().per_second, 2);
        assert_eq!(healed.version, 2);

        // A nested entry that fails its own validate names the entry.
        set(b, "pools/empty/size", &0).await;
        let error = wait_for_error(&live).await;
        assert!(
            matches!(&*error, Error::Invalid { key, .. } if key == "/config/tenancy/pools/empty"),
            "{error}"
        );
        assert!(!live.load_full().pools.contains_key("empty"));
        set(b, "pools/empty/size", &1).await;
        let healed = next(&mut updates).await;
        assert_eq!(healed.pools.len(), 2);
    }

    pub async fn a_key_outside_every_map_neither_rebuilds_nor_wakes(b: &Backend) {
        set(b, "limits/acme", &Limit { per_second: 1 }).await;
        let live = b.coord.live::<Tenancy>().await.unwrap();
        let before = live.load_full();
        let updates = live.subscribe();
        // Next to a map's key, not under it; and an unknown key.
        set(b, "limits", &Limit { per_second: 9 }).await;
        set(b, "limitsx/acme", &1).await;
        let last = b
            .coord
            .config()
            .set(&format!("{P}/unrelated"), &1)
            .await
            .unwrap();
        eventually(WAIT, "the handle reaches the last revision", || {
            let revision = live.revision();
            async move { revision >= last }
        })
        .await;
        assert!(!updates.has_changed().unwrap(), "nobody was woken");
        assert!(Arc::ptr_eq(&before, &live.load_full()), "nothing rebuilt");
    }

    pub async fn publish_replaces_the_whole_map_and_nothing_else(b: &Backend) {
        set(b, "limits/old", &Limit { per_second: 1 }).await;
        set(b, "limits/kept", &Limit { per_second: 1 }).await;
        set(b, "pools/gone/size", &1).await;
        set(b, "pools/stays/size", &1).await;
        set(b, "pools/stays/unknown-field", "left alone").await;
        set(b, "pools/README", "left alone").await;
        set(b, "unrelated", "left alone").await;

        let value = Tenancy {
            version: 3,
            limits: [
                ("kept", Limit { per_second: 2 }),
                ("new", Limit { per_second: 3 }),
            ]
            .into_iter()
            .collect(),
            flags: HashMap::new(),
            pools: BTreeMap::from([(
                "stays".to_owned(),
                Pool {
                    size: 5,
                    host: "h".into(),
                },
            )]),
            shared_pools: Map::new(),
        };
        b.coord.config().publish(&value).await.unwrap();

        let keys = b.coord.config().list(&format!("{P}/")).await.unwrap();
        let relative: Vec<&str> = keys.iter().map(|k| &k[P.len() + 1..]).collect();
        assert_eq!(
            relative,
            [
                "limits/kept",
                "limits/new",
                "pools/README",
                "pools/stays/host",
                "pools/stays/size",
                "pools/stays/unknown-field",
                "unrelated",
                "version",
            ]
        );
        let live = b.coord.live::<Tenancy>().await.unwrap();
        assert_eq!(*live.load_full(), value);
    }

    pub async fn publish_is_refused_when_an_entry_does_not_validate(b: &Backend) {
        set(b, "pools/main/size", &1).await;
        let value = Tenancy {
            version: 1,
            limits: Map::new(),
            flags: HashMap::new(),
            pools: BTreeMap::from([(
                "bad".to_owned(),
                Pool {
                    size: 0,
                    host: String::new(),
                },
            )]),
            shared_pools: Map::new(),
        };
        let err = b.coord.config().publish(&value).await.unwrap_err();
        assert!(
            matches!(&err, Error::Invalid { key, .. } if key == "/config/tenancy/pools/bad"),
            "{err}"
        );
        let keys = b.coord.config().list(&format!("{P}/")).await.unwrap();
        assert_eq!(
            keys,
            ["/config/tenancy/pools/main/size"],
            "nothing written or deleted"
        );
    }
}
