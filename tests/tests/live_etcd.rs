//! `Live<T>` against a real etcd, acted on from outside coord: etcdctl writes bad input, a raw
//! etcd transaction races readers, the server restarts, a partition hides a compaction, and a
//! thousand handles share one watch stream (checked on etcd's own metrics).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use coord::config::Live;
use coord::{Coord, CoordConfig, Error};

use common::proxy::Proxy;
use common::{Backend, NO_RESYNC, etcd_metric, eventually};

/// A ceiling, not a target: on a loaded machine changes take longer to arrive.
const WAIT: Duration = Duration::from_secs(30);

use coord_tests::fixtures::{Checkout, Pair};

/// One flag per prefix, for binding many prefixes without seeding them.
#[derive(CoordConfig, Debug, Clone, PartialEq)]
pub struct Flag {
    #[coord(default)]
    on: bool,
}

async fn bound_checkout(b: &Backend) -> Live<Checkout> {
    let server = b.server.as_ref().unwrap();
    server
        .etcdctl(&[
            "put",
            "/config/checkout/rate-limit",
            r#"{"per_second":10,"burst":5}"#,
        ])
        .unwrap();
    b.coord.live::<Checkout>().await.unwrap()
}

async fn error_of(live: &Live<Checkout>) -> Arc<Error> {
    eventually(WAIT, "the bad write is reported", || async {
        live.last_error().is_some()
    })
    .await;
    live.last_error().unwrap()
}

async fn healed(live: &Live<Checkout>, timeout_secs: u64) {
    eventually(WAIT, "a good write heals the config", || async {
        live.load().timeout_secs == timeout_secs && live.last_error().is_none()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_bad_json_keeps_the_last_good_value_and_names_the_key() {
    let b = Backend::etcd().await;
    let live = bound_checkout(&b).await;
    let etcdctl = |args: &[&str]| b.server.as_ref().unwrap().etcdctl(args).unwrap();
    etcdctl(&["put", "/config/checkout/timeout_secs", "45"]);
    healed(&live, 45).await;
    let good = live.load_full();

    etcdctl(&["put", "/config/checkout/timeout_secs", "not json"]);
    let err = error_of(&live).await;
    assert!(
        matches!(*err, Error::Decode { ref key, .. } if key == "/config/checkout/timeout_secs"),
        "{err:?}"
    );
    assert!(err.to_string().contains("/config/checkout/timeout_secs"));
    assert_eq!(live.load_full(), good, "the last good value stays live");

    etcdctl(&["put", "/config/checkout/timeout_secs", "50"]);
    healed(&live, 50).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_deleting_a_required_key_keeps_the_last_good_value() {
    let b = Backend::etcd().await;
    let live = bound_checkout(&b).await;
    let etcdctl = |args: &[&str]| b.server.as_ref().unwrap().etcdctl(args).unwrap();
    etcdctl(&["del", "/config/checkout/rate-limit"]);
    let err = error_of(&live).await;
    assert!(
        matches!(*err, Error::Invalid { ref key, .. } if key == "/config/checkout/rate-limit"),
        "{err:?}"
    );
    assert_eq!(live.load().rate_limit.per_second, 10);

    etcdctl(&[
        "put",
        "/config/checkout/rate-limit",
        r#"{"per_second":20,"burst":5}"#,
    ]);
    eventually(WAIT, "healed by the put", || async {
        live.load().rate_limit.per_second == 20 && live.last_error().is_none()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_value_failing_validate_keeps_the_last_good_value() {
    let b = Backend::etcd().await;
    let live = bound_checkout(&b).await;
    let etcdctl = |args: &[&str]| b.server.as_ref().unwrap().etcdctl(args).unwrap();
    etcdctl(&["put", "/config/checkout/timeout_secs", "0"]);
    let err = error_of(&live).await;
    assert!(
        matches!(*err, Error::Invalid { ref reason, .. } if reason.contains("must be positive")),
        "{err:?}"
    );
    assert_eq!(live.load().timeout_secs, 30);
    etcdctl(&["put", "/config/checkout/timeout_secs", "7"]);
    healed(&live, 7).await;
}

/// A writer outside coord updates both keys in one etcd transaction; readers never see them
/// differ.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_etcd_transaction_is_never_torn_for_live_readers() {
    use etcd_client::{Client, Txn, TxnOp};
    const WRITES: u64 = 1_000;
    let b = Backend::etcd().await;
    let server = b.server.as_ref().unwrap();
    let mut raw = Client::connect(server.endpoints(), None).await.unwrap();
    let write = |i: u64| {
        Txn::new().and_then([
            TxnOp::put("/config/pair/a", i.to_string(), None),
            TxnOp::put("/config/pair/b", i.to_string(), None),
        ])
    };
    raw.txn(write(0)).await.unwrap();
    let live = b.coord.live::<Pair>().await.unwrap();

    let done = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (live, done, reads) = (live.clone(), Arc::clone(&done), Arc::clone(&reads));
            std::thread::spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    let pair = live.load();
                    assert_eq!(pair.a, pair.b, "torn read");
                    reads.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for i in 1..=WRITES {
        raw.txn(write(i)).await.unwrap();
    }
    eventually(WAIT, "the last transaction is applied", || async {
        live.load().a == WRITES
    })
    .await;
    done.store(true, Ordering::Relaxed);
    for reader in readers {
        reader.join().expect("no reader saw a torn value");
    }
    assert!(reads.load(Ordering::Relaxed) > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_follows_changes_made_after_an_etcd_restart() {
    let mut b = Backend::etcd_without_resync().await;
    let live = bound_checkout(&b).await;
    let before = live.revision();
    let server = b.server.as_mut().unwrap();
    server.kill().await.unwrap();
    server.restart().await.unwrap();
    // Unary calls recover by themselves; the watch under the Live must be re-established.
    let written = b
        .coord
        .config()
        .set("/config/checkout/timeout_secs", &99)
        .await
        .unwrap();
    healed(&live, 99).await;
    assert!(live.revision() >= written && written > before);
}

/// While etcd is down the value is stale, and says for how long; after the restart it is
/// current again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staleness_is_reported_while_etcd_is_down_and_cleared_after() {
    let mut b = Backend::etcd_without_resync().await;
    let live = bound_checkout(&b).await;
    assert_eq!(live.staleness(), None);
    let server = b.server.as_mut().unwrap();
    server.kill().await.unwrap();
    eventually(WAIT, "the handle notices the broken watch", || async {
        live.staleness().is_some()
    })
    .await;
    let first = live.staleness().unwrap_or_default();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        live.staleness().unwrap_or_default() > first,
        "it grows while the outage lasts"
    );
    server.restart().await.unwrap();
    eventually(
        Duration::from_secs(30),
        "current again after the restart",
        || async { live.staleness().is_none() },
    )
    .await;
    assert_eq!(live.load().timeout_secs, 30, "nothing changed meanwhile");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_while_partitioned_ends_with_the_latest_state() {
    let b = Backend::etcd().await;
    let server = b.server.as_ref().unwrap();
    let proxy = Proxy::start(&server.endpoint()).await;
    let config = server
        .client_config()
        .with_endpoints([proxy.endpoint()])
        .with_sync_interval(NO_RESYNC);
    let behind = Coord::connect(config).await.unwrap();
    let direct = &b.coord;
    direct.config().publish(&Pair { a: 1, b: 1 }).await.unwrap();
    let live = behind.live::<Pair>().await.unwrap();
    assert_eq!(live.load().a, 1);

    proxy.cut();
    // While `behind` cannot reach etcd: changes, then the history it would resume from goes.
    direct.config().publish(&Pair { a: 2, b: 2 }).await.unwrap();
    direct.config().delete("/config/pair/b").await.unwrap();
    direct.config().set("/config/pair/b", &3u64).await.unwrap();
    let last = direct.config().set("/config/pair/a", &3u64).await.unwrap();
    direct.store().compact(last).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(live.load().a, 1, "partitioned: still the old value");

    proxy.restore();
    eventually(WAIT, "resynced after the partition", || async {
        *live.load() == Pair { a: 3, b: 3 }
    })
    .await;
    assert!(live.revision() >= last);
    assert!(live.last_error().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_live_handles_on_a_thousand_prefixes_share_one_watch_stream() {
    const HANDLES: usize = 1_000;
    let b = Backend::etcd().await;
    let endpoint = b.server.as_ref().unwrap().endpoint();
    let streams_before = etcd_metric(&endpoint, "etcd_debugging_mvcc_watch_stream_total").await;
    let prefixes: Vec<String> = (0..HANDLES).map(|i| format!("/many/{i:04}/")).collect();
    let handles: Vec<Live<Flag>> = futures::future::try_join_all(
        prefixes
            .iter()
            .map(|prefix| b.coord.live_at::<Flag>(prefix)),
    )
    .await
    .unwrap();
    // One per prefix, and one for the gray releases of every prefix.
    assert_eq!(b.coord.watched_ranges(), HANDLES + 1);
    eventually(WAIT, "every prefix is watched", || async {
        b.store().stats().open_watches() == HANDLES as i64 + 1
    })
    .await;

    assert_eq!(
        b.store().watch_streams(),
        1,
        "coord's count of gRPC streams"
    );
    let streams = etcd_metric(&endpoint, "etcd_debugging_mvcc_watch_stream_total").await;
    assert_eq!(
        streams - streams_before,
        1.0,
        "etcd's count of watch streams"
    );
    let watchers = etcd_metric(&endpoint, "etcd_debugging_mvcc_watcher_total").await;
    assert!(watchers >= HANDLES as f64, "{watchers} watchers");

    // Each watcher on the shared stream still gets only its own prefix's events.
    b.coord.config().set("/many/0999/on", &true).await.unwrap();
    eventually(WAIT, "the last handle sees its change", || async {
        handles[999].load().on
    })
    .await;
    assert!(!handles[998].load().on);

    drop(handles);
    eventually(WAIT, "the stream closes with the last watch", || async {
        b.store().watch_streams() == 0
            && etcd_metric(&endpoint, "etcd_debugging_mvcc_watch_stream_total").await
                == streams_before
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_config_turns_on_the_cache_and_the_periodic_resync() {
    let b = Backend::etcd().await;
    let server = b.server.as_ref().unwrap();
    let config = server
        .client_config()
        .with_cache_ttl(Duration::from_secs(30))
        .with_sync_interval(Duration::from_millis(300));
    let coord = Coord::connect(config).await.unwrap();
    coord.config().set("/cfg/x", &1).await.unwrap();
    assert_eq!(coord.config().get::<i32>("/cfg/x").await.unwrap(), 1);
    assert_eq!(
        coord.config().cached_keys(),
        1,
        "cache_ttl > 0 caches reads"
    );

    // The key's store watch opens in the background and counts as a round trip: wait for it
    // so that only relists are counted below.
    eventually(WAIT, "the key's watch is open", || async {
        coord.store().stats().open_watches() == 1
    })
    .await;
    // Idle, the watched range is still relisted every sync_interval: one range each time.
    let round_trips = || coord.store().stats().round_trips();
    let before = round_trips();
    let started = std::time::Instant::now();
    eventually(WAIT, "two relists while idle", || async {
        round_trips() - before >= 2
    })
    .await;
    // Not a hot loop: no more relists than intervals have passed (a slow machine only lets
    // fewer happen).
    let relists = round_trips() - before;
    let intervals = started.elapsed().as_millis() / 300;
    assert!(
        u128::from(relists) <= intervals + 1,
        "{relists} relists in {intervals} intervals"
    );
    assert_eq!(coord.config().get::<i32>("/cfg/x").await.unwrap(), 1);
}

/// A `Coord` with a read cache that reaches `b`'s etcd only through a proxy the test can cut,
/// and no periodic relist within the test's time (production relists every 5 min).
async fn cached_behind_proxy(b: &Backend) -> (Coord, Proxy) {
    let server = b.server.as_ref().unwrap();
    let proxy = Proxy::start(&server.endpoint()).await;
    let mut config = server
        .client_config()
        .with_cache_ttl(Duration::from_secs(60))
        .with_sync_interval(Duration::from_secs(600));
    config.endpoints = vec![proxy.endpoint()];
    (Coord::connect(config).await.unwrap(), proxy)
}

/// Whether a cached read of `key` answers `value` without a round trip.
async fn read_from_cache(coord: &Coord, key: &str, value: i32) -> bool {
    let before = coord.store().stats().round_trips();
    let read = coord.config().get::<i32>(key).await;
    matches!(read, Ok(v) if v == value) && coord.store().stats().round_trips() == before
}

/// Waits until a cached read of `key` fails: the cache knows its watch is down and goes to
/// the store, which it cannot reach.
async fn cache_sees_the_break(coord: &Coord, key: &str) {
    eventually(
        Duration::from_secs(30),
        "a cached read goes to the unreachable store",
        || async { coord.config().get::<i32>(key).await.is_err() },
    )
    .await;
}

/// A `Coord` behind a proxy whose cached reads of `key` (= 1) come from the cache, then the
/// proxy cut and the cache seen to know it.
async fn cached_then_cut(b: &Backend, key: &str) -> (Coord, Proxy) {
    let (behind, proxy) = cached_behind_proxy(b).await;
    b.coord.config().set(key, &1).await.unwrap();
    assert_eq!(behind.config().get::<i32>(key).await.unwrap(), 1);
    eventually(WAIT, "reads come from the cache", || {
        read_from_cache(&behind, key, 1)
    })
    .await;
    proxy.cut();
    cache_sees_the_break(&behind, key).await;
    (behind, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_reads_are_free_again_once_the_watch_reconnects_on_a_quiet_key() {
    const KEY: &str = "/cfg/quiet";
    let b = Backend::etcd().await;
    let (behind, proxy) = cached_then_cut(&b, KEY).await;
    proxy.restore();
    // Nothing is written anywhere: only the reconnected watch can make the cache trusted again.
    eventually(
        Duration::from_secs(30),
        "cached reads cost no round trip again",
        || read_from_cache(&behind, KEY, 1),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_get_does_not_answer_from_the_cache_while_the_watch_is_down() {
    const KEY: &str = "/cfg/moving";
    let b = Backend::etcd().await;
    let (behind, proxy) = cached_then_cut(&b, KEY).await;
    // Changed by a client that still reaches etcd; `behind`'s watch cannot see it.
    b.coord.config().set(KEY, &2).await.unwrap();
    for _ in 0..5 {
        let read = behind.config().get::<i32>(KEY).await;
        assert!(
            !matches!(read, Ok(1)),
            "the old value was answered from the cache while its watch was down"
        );
    }

    proxy.restore();
    eventually(
        Duration::from_secs(30),
        "the cache follows the new value again",
        || read_from_cache(&behind, KEY, 2),
    )
    .await;
}
