//! `ConfigCenter` and `Live<T>` on both backends: typed reads and writes, CAS, hot reload,
//! last-good-value on bad input, and no torn reads.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use coord::Error;
use coord::config::{ConfigEvent, Live};
use futures::StreamExt;
use tokio::time::timeout;

use coord_tests::fixtures::{Checkout, Pair, RateLimit};

on_both_backends!(cases:
    a_change_to_an_unbound_key_neither_rebuilds_nor_wakes,
    set_then_get_round_trips_typed_values,
    get_of_missing_key_is_not_found_and_bad_json_is_decode_error,
    compare_and_set_has_exactly_one_winner_per_round,
    batch_guard_conflict_names_the_key_and_writes_nothing,
    watch_prefix_yields_typed_events_and_goes_on_after_bad_value,
    live_binds_with_defaults_and_reloads_on_change,
    live_bind_fails_naming_a_missing_required_key,
    bad_json_keeps_last_good_value_until_healed,
    deleting_a_required_key_keeps_last_good_value,
    failed_validation_keeps_last_good_value,
    publish_is_never_torn_for_concurrent_readers,
    handles_on_one_prefix_share_one_watch,
    a_handle_bound_after_a_write_sees_it_when_joining_a_shared_watch,
    seed_defaults_writes_only_missing_keys,
    cached_get_costs_no_round_trip_and_still_sees_writes,
    cache_drops_keys_not_read_within_its_ttl,
    cached_get_sees_this_coords_store_writes_at_once,
    a_write_to_another_key_costs_a_cached_key_one_round_trip,
    every_attribute_round_trips_through_the_store,
    oversized_writes_are_refused_before_sending,
);

mod cases {
    use super::*;
    use crate::common::{Backend, eventually};

    /// A second handle joins the first one's watch, which may not have delivered the write
    /// just made; the new handle still starts from a value that includes it.
    pub async fn a_handle_bound_after_a_write_sees_it_when_joining_a_shared_watch(b: &Backend) {
        seed_checkout(b).await;
        let first = b.coord.live::<Checkout>().await.unwrap();
        for timeout_secs in 1..=50u64 {
            b.coord
                .config()
                .set("/config/checkout/timeout_secs", &timeout_secs)
                .await
                .unwrap();
            let second = b.coord.live::<Checkout>().await.unwrap();
            assert_eq!(second.load().timeout_secs, timeout_secs);
        }
        drop(first);
    }

    const WAIT: Duration = Duration::from_secs(5);

    async fn seed_checkout(b: &Backend) {
        b.coord
            .config()
            .set(
                "/config/checkout/rate-limit",
                &RateLimit {
                    per_second: 10,
                    burst: 5,
                },
            )
            .await
            .unwrap();
    }

    async fn wait_for_error(live: &Live<Checkout>) -> Arc<Error> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(e) = live.last_error() {
                return e;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no last_error in time"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn wait_for_value(live: &Live<Checkout>, timeout_secs: u64) {
        eventually(WAIT, "live value updated", || async {
            live.load().timeout_secs == timeout_secs
        })
        .await;
    }

    pub async fn set_then_get_round_trips_typed_values(b: &Backend) {
        let config = b.coord.config();
        let limit = RateLimit {
            per_second: 7,
            burst: 3,
        };
        let version = config.set("/cfg/limit", &limit).await.unwrap();
        let (back, read_version) = config
            .get_with_version::<RateLimit>("/cfg/limit")
            .await
            .unwrap();
        assert_eq!(back, limit);
        assert_eq!(read_version, version);
        config.set("/cfg/other", &1).await.unwrap();
        assert_eq!(
            config.list("/cfg/").await.unwrap(),
            ["/cfg/limit", "/cfg/other"]
        );
        assert!(config.delete("/cfg/limit").await.unwrap());
        assert!(!config.delete("/cfg/limit").await.unwrap());
    }

    pub async fn get_of_missing_key_is_not_found_and_bad_json_is_decode_error(b: &Backend) {
        let config = b.coord.config();
        let missing = config.get::<u32>("/cfg/none").await.unwrap_err();
        assert!(matches!(missing, Error::NotFound { ref key } if key == "/cfg/none"));
        b.store()
            .put("/cfg/bad", b"not json".to_vec(), 0)
            .await
            .unwrap();
        let bad = config.get::<u32>("/cfg/bad").await.unwrap_err();
        assert!(matches!(bad, Error::Decode { ref key, .. } if key == "/cfg/bad"));
        assert!(bad.to_string().contains("/cfg/bad"));
    }

    pub async fn compare_and_set_has_exactly_one_winner_per_round(b: &Backend) {
        let config = b.coord.config().clone();
        config.set("/cfg/counter", &0u64).await.unwrap();
        for round in 0..20u64 {
            let (value, version) = config
                .get_with_version::<u64>("/cfg/counter")
                .await
                .unwrap();
            assert_eq!(value, round);
            let (c1, c2) = (config.clone(), config.clone());
            let next = round + 1;
            let (r1, r2) = tokio::join!(
                c1.compare_and_set("/cfg/counter", &next, version),
                c2.compare_and_set("/cfg/counter", &next, version),
            );
            let wins = [&r1, &r2].iter().filter(|r| r.is_ok()).count();
            assert_eq!(wins, 1, "round {round}: {r1:?} {r2:?}");
            let loser = if r1.is_err() { r1 } else { r2 };
            assert!(
                matches!(loser, Err(Error::Conflict { current, .. }) if current > version),
                "{loser:?}"
            );
        }
        let missing = config.compare_and_set("/cfg/fresh", &1, 0).await.unwrap();
        assert!(missing > 0, "version 0 means create");
        let again = config.compare_and_set("/cfg/fresh", &2, 0).await;
        assert!(matches!(again, Err(Error::Conflict { current, .. }) if current == missing));
    }

    pub async fn batch_guard_conflict_names_the_key_and_writes_nothing(b: &Backend) {
        let config = b.coord.config();
        let v = config.set("/cfg/guarded", &1).await.unwrap();
        config.set("/cfg/guarded", &2).await.unwrap();
        let err = config
            .batch()
            .expect_version("/cfg/guarded", v)
            .set("/cfg/x", &1)
            .unwrap()
            .commit()
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::Conflict { ref key, expected, .. } if key == "/cfg/guarded" && expected == v)
        );
        assert!(matches!(
            config.get::<u32>("/cfg/x").await,
            Err(Error::NotFound { .. })
        ));
    }

    pub async fn watch_prefix_yields_typed_events_and_goes_on_after_bad_value(b: &Backend) {
        let config = b.coord.config();
        config.set("/cfg/w/before", &0).await.unwrap();
        let mut watcher = config.watch_prefix::<u32>("/cfg/w/").await.unwrap();
        let first = config.set("/cfg/w/a", &1).await.unwrap();
        let event = timeout(WAIT, watcher.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(
            event,
            ConfigEvent::Put {
                key: "/cfg/w/a".into(),
                value: 1,
                revision: first
            },
            "only changes after the watch started"
        );
        b.store()
            .put("/cfg/w/b", b"{oops".to_vec(), 0)
            .await
            .unwrap();
        config.delete("/cfg/w/a").await.unwrap();
        let mut saw_decode_error = false;
        loop {
            match timeout(WAIT, watcher.next()).await.unwrap().unwrap() {
                Err(Error::Decode { key, .. }) => {
                    assert_eq!(key, "/cfg/w/b");
                    saw_decode_error = true;
                }
                Ok(ConfigEvent::Delete { key, .. }) => {
                    assert_eq!(key, "/cfg/w/a");
                    break;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(saw_decode_error);
        watcher.close();
        assert!(watcher.next().await.is_none());
    }

    pub async fn live_binds_with_defaults_and_reloads_on_change(b: &Backend) {
        seed_checkout(b).await;
        let live = b.coord.live::<Checkout>().await.unwrap();
        assert_eq!(live.load().timeout_secs, 30, "default");
        assert_eq!(live.load().rate_limit.burst, 5);
        let bound_at = live.revision();
        let mut updates = live.subscribe();
        let written = b
            .coord
            .config()
            .set("/config/checkout/timeout_secs", &45)
            .await
            .unwrap();
        timeout(WAIT, updates.changed()).await.unwrap().unwrap();
        assert_eq!(updates.borrow().timeout_secs, 45);
        assert_eq!(live.load().timeout_secs, 45);
        assert_eq!(live.revision(), written);
        assert!(written > bound_at);
        assert!(live.last_error().is_none());
    }

    pub async fn a_change_to_an_unbound_key_neither_rebuilds_nor_wakes(b: &Backend) {
        seed_checkout(b).await;
        let live = b.coord.live::<Checkout>().await.unwrap();
        let built = live.load_full();
        let mut updates = live.subscribe();
        // A key under the prefix that no field reads: the struct would be the same.
        let config = b.coord.config();
        let mut written = 0;
        for i in 0..20 {
            written = config.set("/config/checkout/unbound", &i).await.unwrap();
        }
        eventually(
            WAIT,
            "the Live is current at the unrelated write",
            || async { live.revision() >= written },
        )
        .await;
        assert!(
            Arc::ptr_eq(&built, &live.load_full()),
            "the struct was rebuilt for a key it does not read"
        );
        assert!(!updates.has_changed().unwrap(), "subscribers were woken");
        // A bound key still rebuilds, swaps and wakes.
        let written = config
            .set("/config/checkout/timeout_secs", &46)
            .await
            .unwrap();
        timeout(WAIT, updates.changed()).await.unwrap().unwrap();
        assert_eq!(live.load().timeout_secs, 46);
        assert_eq!(live.revision(), written);
        assert!(!Arc::ptr_eq(&built, &live.load_full()));
    }

    pub async fn live_bind_fails_naming_a_missing_required_key(b: &Backend) {
        let err = b.coord.live::<Checkout>().await.unwrap_err();
        assert!(
            matches!(err, Error::Invalid { ref key, .. } if key == "/config/checkout/rate-limit"),
            "{err:?}"
        );
    }

    pub async fn bad_json_keeps_last_good_value_until_healed(b: &Backend) {
        seed_checkout(b).await;
        let live = b.coord.live::<Checkout>().await.unwrap();
        let good = live.load_full();
        b.store()
            .put("/config/checkout/timeout_secs", b"not json".to_vec(), 0)
            .await
            .unwrap();
        let err = wait_for_error(&live).await;
        assert!(
            matches!(*err, Error::Decode { ref key, .. } if key == "/config/checkout/timeout_secs"),
            "{err:?}"
        );
        assert_eq!(*live.load_full(), *good, "the last good value stays live");
        b.coord
            .config()
            .set("/config/checkout/timeout_secs", &12)
            .await
            .unwrap();
        wait_for_value(&live, 12).await;
        assert!(live.last_error().is_none(), "a good revision heals it");
    }

    pub async fn deleting_a_required_key_keeps_last_good_value(b: &Backend) {
        seed_checkout(b).await;
        let live = b.coord.live::<Checkout>().await.unwrap();
        b.coord
            .config()
            .delete("/config/checkout/rate-limit")
            .await
            .unwrap();
        let err = wait_for_error(&live).await;
        assert!(
            matches!(*err, Error::Invalid { ref key, .. } if key == "/config/checkout/rate-limit"),
            "{err:?}"
        );
        assert_eq!(live.load().rate_limit.per_second, 10);
        seed_checkout(b).await;
        eventually(WAIT, "healed", || async { live.last_error().is_none() }).await;
    }

    pub async fn failed_validation_keeps_last_good_value(b: &Backend) {
        seed_checkout(b).await;
        let live = b.coord.live::<Checkout>().await.unwrap();
        b.coord
            .config()
            .set("/config/checkout/timeout_secs", &0)
            .await
            .unwrap();
        let err = wait_for_error(&live).await;
        assert!(
            matches!(*err, Error::Invalid { ref reason, .. } if reason.contains("timeout_secs must be positive")),
            "{err:?}"
        );
        assert_eq!(live.load().timeout_secs, 30);
        b.coord
            .config()
            .set("/config/checkout/timeout_secs", &5)
            .await
            .unwrap();
        wait_for_value(&live, 5).await;
    }

    pub async fn publish_is_never_torn_for_concurrent_readers(b: &Backend) {
        const WRITES: u64 = 1_000;
        let config = b.coord.config().clone();
        config.publish(&Pair { a: 0, b: 0 }).await.unwrap();
        let live = b.coord.live::<Pair>().await.unwrap();
        let done = Arc::new(AtomicBool::new(false));
        let reads = Arc::new(AtomicUsize::new(0));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (live, done, reads) = (live.clone(), done.clone(), reads.clone());
                std::thread::spawn(move || {
                    let mut reader = live.reader();
                    while !done.load(Ordering::Relaxed) {
                        let pair = live.load();
                        assert_eq!(pair.a, pair.b, "torn read via load()");
                        let cached = reader.load();
                        assert_eq!(cached.a, cached.b, "torn read via reader()");
                        reads.fetch_add(1, Ordering::Relaxed);
                    }
                    // The per-thread cache still follows the value.
                    reader.load().a
                })
            })
            .collect();
        for i in 1..=WRITES {
            config.publish(&Pair { a: i, b: i }).await.unwrap();
        }
        eventually(Duration::from_secs(10), "last write applied", || async {
            live.load().a == WRITES
        })
        .await;
        done.store(true, Ordering::Relaxed);
        for reader in readers {
            let last = reader.join().expect("reader saw no torn value");
            assert_eq!(last, WRITES, "reader() sees the last write");
        }
        assert!(reads.load(Ordering::Relaxed) > 0);
    }

    pub async fn handles_on_one_prefix_share_one_watch(b: &Backend) {
        b.coord
            .config()
            .publish(&Pair { a: 1, b: 1 })
            .await
            .unwrap();
        let before = b.store().stats().watches_opened();
        let handles: Vec<Live<Pair>> =
            futures::future::try_join_all((0..100).map(|_| b.coord.live::<Pair>()))
                .await
                .unwrap();
        // The shared watch opens its store stream in the background after the first list.
        b.coord
            .config()
            .publish(&Pair { a: 2, b: 2 })
            .await
            .unwrap();
        eventually(WAIT, "every handle sees the update", || async {
            handles.iter().all(|h| h.load().a == 2)
        })
        .await;
        // One for the prefix, one for the gray releases of every prefix.
        assert_eq!(b.store().stats().watches_opened() - before, 2);
        assert_eq!(b.coord.watched_ranges(), 2);
        drop(handles);
        eventually(WAIT, "watch closed with the last handle", || async {
            b.coord.watched_ranges() == 0
        })
        .await;
    }

    pub async fn seed_defaults_writes_only_missing_keys(b: &Backend) {
        let config = b.coord.config();
        config
            .set("/config/checkout/timeout_secs", &99)
            .await
            .unwrap();
        let written = config.seed_defaults::<Checkout>().await.unwrap();
        assert!(
            written.is_empty(),
            "timeout_secs exists, rate-limit has no default: {written:?}"
        );
        config
            .delete("/config/checkout/timeout_secs")
            .await
            .unwrap();
        let written = config.seed_defaults::<Checkout>().await.unwrap();
        assert_eq!(written, ["/config/checkout/timeout_secs"]);
        assert_eq!(
            config
                .get::<u64>("/config/checkout/timeout_secs")
                .await
                .unwrap(),
            30
        );
    }

    pub async fn cached_get_costs_no_round_trip_and_still_sees_writes(b: &Backend) {
        let config = b.coord.config().with_cache(Duration::from_secs(30));
        let stats = b.store().stats();
        config.set("/cfg/cached", &1).await.unwrap();
        assert_eq!(config.get::<i32>("/cfg/cached").await.unwrap(), 1);
        // The first read lists the key and opens its watch in the background.
        eventually(WAIT, "the cached key is watched", || async {
            stats.open_watches() == 1
        })
        .await;
        let before = stats.round_trips();
        for _ in 0..10 {
            assert_eq!(config.get::<i32>("/cfg/cached").await.unwrap(), 1);
        }
        assert_eq!(
            stats.round_trips(),
            before,
            "repeat reads come from the cache"
        );

        // Our own write is read back at once, not after the watch catches up.
        config.set("/cfg/cached", &2).await.unwrap();
        assert_eq!(config.get::<i32>("/cfg/cached").await.unwrap(), 2);
        // Another writer's change arrives through the watch.
        b.store()
            .put("/cfg/cached", b"3".to_vec(), 0)
            .await
            .unwrap();
        eventually(WAIT, "the cache sees the other writer", || async {
            config.get::<i32>("/cfg/cached").await.unwrap() == 3
        })
        .await;
        b.store()
            .delete(&coord::store::KeyRange::key("/cfg/cached"))
            .await
            .unwrap();
        eventually(WAIT, "the cache sees the delete", || async {
            matches!(
                config.get::<i32>("/cfg/cached").await,
                Err(Error::NotFound { .. })
            )
        })
        .await;
        b.store()
            .put("/cfg/cached", b"oops".to_vec(), 0)
            .await
            .unwrap();
        eventually(WAIT, "a bad value is a decode error naming the key", || async {
            matches!(config.get::<i32>("/cfg/cached").await, Err(Error::Decode { key, .. }) if key == "/cfg/cached")
        })
        .await;
        assert_eq!(config.cached_keys(), 1);
    }

    /// A cached config center over `b`, with `key` read once and its watch open, so that the
    /// next reads of `key` come from the cache.
    async fn cached(b: &Backend, key: &str) -> coord::config::ConfigCenter {
        let config = b.coord.config().with_cache(Duration::from_secs(30));
        let stats = b.store().stats();
        let watches = stats.open_watches();
        config.set(key, &0).await.unwrap();
        assert_eq!(config.get::<i32>(key).await.unwrap(), 0);
        // The key's store watch opens in the background after its first list, and opening it
        // counts as a round trip: wait for it, so callers count only their own.
        eventually(WAIT, "the key's watch is open", || async {
            stats.open_watches() > watches
        })
        .await;
        eventually(WAIT, "reads of the key come from the cache", || async {
            let before = stats.round_trips();
            config.get::<i32>(key).await.unwrap();
            stats.round_trips() == before
        })
        .await;
        config
    }

    pub async fn cached_get_sees_this_coords_store_writes_at_once(b: &Backend) {
        const KEY: &str = "/cfg/own-writes";
        let config = cached(b, KEY).await;
        let store = b.store();
        // Each write through the same Coord's store, not its config center, is read back at
        // once: the cache does not answer before its watch has caught up.
        for i in 1..=50 {
            store.put(KEY, i.to_string().into_bytes(), 0).await.unwrap();
            assert_eq!(config.get::<i32>(KEY).await.unwrap(), i, "after put {i}");
        }
        store
            .delete(&coord::store::KeyRange::key(KEY))
            .await
            .unwrap();
        assert!(matches!(
            config.get::<i32>(KEY).await,
            Err(Error::NotFound { .. })
        ));
        let txn = coord::store::Txn::new().and_then([coord::store::TxnOp::put(KEY, "99")]);
        assert!(store.txn(txn).await.unwrap().succeeded);
        assert_eq!(config.get::<i32>(KEY).await.unwrap(), 99);
        // A lease revoke deletes its keys: also a write of this Coord.
        for i in 0..20 {
            let lease = store.lease_grant(60).await.unwrap().id;
            store.put(KEY, b"7".to_vec(), lease).await.unwrap();
            assert_eq!(config.get::<i32>(KEY).await.unwrap(), 7, "round {i}");
            store.lease_revoke(lease).await.unwrap();
            assert!(
                matches!(config.get::<i32>(KEY).await, Err(Error::NotFound { .. })),
                "round {i}: a key deleted by this Coord's revoke is not served from the cache"
            );
        }
    }

    pub async fn a_write_to_another_key_costs_a_cached_key_one_round_trip(b: &Backend) {
        const KEY: &str = "/cfg/quiet";
        let config = cached(b, KEY).await;
        let stats = b.store().stats();
        // The quiet key's watch never sees this write, so its revision stays behind it.
        config.set("/cfg/elsewhere", &1).await.unwrap();
        b.store()
            .put("/cfg/elsewhere", b"2".to_vec(), 0)
            .await
            .unwrap();
        let before = stats.round_trips();
        for _ in 0..10 {
            assert_eq!(config.get::<i32>(KEY).await.unwrap(), 0);
        }
        let cost = stats.round_trips() - before;
        assert!(
            cost <= 1,
            "{cost} round trips for 10 reads of an unchanged key"
        );
    }

    pub async fn cache_drops_keys_not_read_within_its_ttl(b: &Backend) {
        let config = b.coord.config().with_cache(Duration::from_millis(300));
        config.set("/cfg/a", &1).await.unwrap();
        config.set("/cfg/b", &2).await.unwrap();
        assert_eq!(config.get::<i32>("/cfg/a").await.unwrap(), 1);
        assert_eq!(b.coord.watched_ranges(), 1);
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(config.get::<i32>("/cfg/b").await.unwrap(), 2);
        assert_eq!(config.cached_keys(), 1, "/cfg/a was dropped");
        eventually(WAIT, "the dropped key's watch closes", || async {
            b.coord.watched_ranges() == 1
        })
        .await;
    }

    pub async fn every_attribute_round_trips_through_the_store(b: &Backend) {
        use coord_tests::fixtures::full;
        let config = b.coord.config();
        // Only the required keys: every default fills in, nested two levels down.
        config
            .set(
                "/config/checkout/rate-limit",
                &RateLimit {
                    per_second: 1,
                    burst: 1,
                },
            )
            .await
            .unwrap();
        config.set("/config/checkout/api_key", "k").await.unwrap();
        config.set("/config/checkout/db/host", "h").await.unwrap();
        let live = b.coord.live::<full::Checkout>().await.unwrap();
        let bound = live.load_full();
        assert_eq!((bound.timeout_secs, bound.region.as_str()), (30, "eu-west"));
        assert_eq!(bound.db.pool_size, 4);
        assert_eq!(bound.db.tls.password.expose(), "changeit");

        // publish writes every key in one revision; the Live gets the same struct back.
        let sample = full::Checkout::sample();
        let revision = config.publish(&sample).await.unwrap();
        eventually(WAIT, "the published struct is live", || async {
            live.revision() >= revision
        })
        .await;
        assert_eq!(*live.load_full(), sample);
        assert_eq!(
            live.revision(),
            revision,
            "one revision for the whole struct"
        );
        assert_eq!(
            config
                .get::<String>("/config/checkout/db/tls-options/password")
                .await
                .unwrap(),
            "s3cret"
        );
        let printed = format!("{:?}", *live.load());
        assert!(
            !printed.contains("sk_live_123") && !printed.contains("s3cret"),
            "{printed}"
        );

        // A nested validate failing keeps the last good value and names the nested prefix.
        config
            .set("/config/checkout/db/pool_size", &0)
            .await
            .unwrap();
        eventually(WAIT, "the nested validate rejects it", || async {
            live.last_error().is_some()
        })
        .await;
        let err = live.last_error().unwrap();
        assert!(
            matches!(*err, Error::Invalid { ref key, .. } if key == "/config/checkout/db"),
            "{err:?}"
        );
        assert_eq!(live.load().db.pool_size, 8);
    }

    pub async fn oversized_writes_are_refused_before_sending(b: &Backend) {
        let config = b.coord.config();
        let before = b.store().stats().round_trips();
        let mut batch = config.batch();
        for i in 0..129 {
            batch = batch.set(&format!("/cfg/many/{i}"), &i).unwrap();
        }
        let err = batch.commit().await.unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
        let huge = "x".repeat(1_600_000);
        let err = config.set("/cfg/huge", &huge).await.unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
        assert_eq!(b.store().stats().round_trips(), before, "nothing was sent");
        assert!(config.list("/cfg/").await.unwrap().is_empty());
    }
}
