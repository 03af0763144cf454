use std::time::Duration;

use futures::StreamExt;

use crate::error::Error;
use crate::store::{
    Compare, CompareOp, CompareTarget, EventKind, KeyRange, RangeOptions, Store, Txn, TxnOp,
    TxnOpResponse, WatchResponse, WatchStream,
};

use super::{MIN_LEASE_TTL, PROGRESS_NOTIFY_INTERVAL};

async fn next(stream: &mut WatchStream) -> WatchResponse {
    tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("no watch response within 5 s")
        .expect("watch stream ended")
        .expect("watch stream failed")
}

async fn next_within(stream: &mut WatchStream, within: Duration) -> WatchResponse {
    tokio::time::timeout(within, stream.next())
        .await
        .expect("a watch response in time")
        .expect("watch stream ended")
        .expect("watch stream failed")
}

/// Asserts that nothing more arrives (paused time makes the wait instant).
async fn assert_quiet(stream: &mut WatchStream) {
    let got = tokio::time::timeout(Duration::from_millis(100), stream.next()).await;
    assert!(got.is_err(), "unexpected watch item: {got:?}");
}

fn kinds_and_keys(response: &WatchResponse) -> Vec<(EventKind, &str)> {
    response
        .events
        .iter()
        .map(|event| (event.kind, event.kv.key.as_str()))
        .collect()
}

async fn revision(store: &Store) -> i64 {
    store.status().await.unwrap().revision
}

#[tokio::test]
async fn empty_store_is_at_revision_one() {
    let store = Store::in_memory();
    let status = store.status().await.unwrap();
    assert_eq!(status.revision, 1);
    assert_eq!(status.version, "embedded");
    let (kv, rev) = store.get("a").await.unwrap();
    assert_eq!((kv, rev), (None, 1));
}

#[tokio::test]
async fn every_put_takes_the_next_revision_even_with_the_same_value() {
    let store = Store::in_memory();
    let first = store.put("a", b"1".to_vec(), 0).await.unwrap();
    assert_eq!(first.revision, 2);
    assert_eq!(first.prev_kv, None);
    let second = store.put("a", b"1".to_vec(), 0).await.unwrap();
    assert_eq!(second.revision, 3);
    assert_eq!(second.prev_kv.unwrap().mod_revision, 2);

    let (kv, rev) = store.get("a").await.unwrap();
    let kv = kv.unwrap();
    assert_eq!(rev, 3);
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 3, 2));
}

#[tokio::test]
async fn recreated_key_restarts_its_version() {
    let store = Store::in_memory();
    store.put("a", b"1".to_vec(), 0).await.unwrap();
    store.put("a", b"2".to_vec(), 0).await.unwrap();
    let deleted = store.delete(&KeyRange::key("a")).await.unwrap();
    assert_eq!((deleted.deleted, deleted.revision), (1, 4));
    assert_eq!(deleted.prev_kvs[0].value, b"2");
    store.put("a", b"3".to_vec(), 0).await.unwrap();
    let kv = store.get("a").await.unwrap().0.unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (5, 5, 1));
}

#[tokio::test]
async fn delete_of_nothing_keeps_the_revision() {
    let store = Store::in_memory();
    store.put("a", b"1".to_vec(), 0).await.unwrap();
    let response = store.delete(&KeyRange::prefix("b")).await.unwrap();
    assert_eq!((response.deleted, response.revision), (0, 2));
    assert_eq!(revision(&store).await, 2);
}

#[tokio::test]
async fn prefix_range_is_in_key_order_and_counts_past_the_limit() {
    let store = Store::in_memory();
    for key in ["p/c", "p/a", "q", "p/b", "p"] {
        store.put(key, key.as_bytes().to_vec(), 0).await.unwrap();
    }
    let all = store
        .range(&KeyRange::prefix("p/"), RangeOptions::default())
        .await
        .unwrap();
    let keys: Vec<_> = all.kvs.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["p/a", "p/b", "p/c"]);
    assert_eq!(all.count, 3);

    let limited = store
        .range(
            &KeyRange::prefix("p/"),
            RangeOptions::default().limit(2).keys_only(),
        )
        .await
        .unwrap();
    assert_eq!(limited.count, 3);
    assert_eq!(limited.kvs.len(), 2);
    assert!(limited.kvs.iter().all(|kv| kv.value.is_empty()));
    assert_eq!(limited.kvs[1].version, 1);
}

#[tokio::test]
async fn range_at_past_revision_sees_the_state_then() {
    let store = Store::in_memory();
    store.put("k/a", b"1".to_vec(), 0).await.unwrap(); // 2
    store.put("k/b", b"1".to_vec(), 0).await.unwrap(); // 3
    store.put("k/a", b"2".to_vec(), 0).await.unwrap(); // 4
    store.delete(&KeyRange::key("k/b")).await.unwrap(); // 5
    store.put("k/c", b"1".to_vec(), 0).await.unwrap(); // 6

    let at = |rev| {
        let store = store.clone();
        async move {
            store
                .range(
                    &KeyRange::prefix("k/"),
                    RangeOptions::default().at_revision(rev),
                )
                .await
                .unwrap()
        }
    };
    let at3 = at(3).await;
    assert_eq!(at3.revision, 6, "the header holds the current revision");
    let summary: Vec<_> = at3
        .kvs
        .iter()
        .map(|kv| (kv.key.as_str(), kv.value_str().into_owned(), kv.version))
        .collect();
    assert_eq!(
        summary,
        [("k/a", "1".to_owned(), 1), ("k/b", "1".to_owned(), 1)]
    );
    let at5: Vec<_> = at(5).await.kvs.into_iter().map(|kv| kv.key).collect();
    assert_eq!(at5, ["k/a"]);
    assert_eq!(at(1).await.count, 0);
    assert_eq!(at(6).await.count, 2);
}

#[tokio::test]
async fn range_at_future_revision_is_invalid() {
    let store = Store::in_memory();
    let err = store
        .range(&KeyRange::key("a"), RangeOptions::default().at_revision(2))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
}

#[tokio::test]
async fn txn_writes_share_one_revision_and_one_watch_batch() {
    let store = Store::in_memory();
    store.put("t/old", b"x".to_vec(), 0).await.unwrap(); // 2
    let mut watch = store.watch(&KeyRange::prefix("t/"), 0).await.unwrap();
    let response = store
        .txn(Txn::new().and_then([
            TxnOp::put("t/a", "1"),
            TxnOp::put("t/b", "2"),
            TxnOp::delete("t/old"),
        ]))
        .await
        .unwrap();
    assert!(response.succeeded);
    assert_eq!(response.revision, 3);
    let (a, b) = (
        store.get("t/a").await.unwrap().0,
        store.get("t/b").await.unwrap().0,
    );
    assert_eq!(a.unwrap().mod_revision, 3);
    assert_eq!(b.unwrap().mod_revision, 3);

    let batch = next(&mut watch).await;
    assert_eq!(batch.revision, 3);
    assert_eq!(
        kinds_and_keys(&batch),
        [
            (EventKind::Put, "t/a"),
            (EventKind::Put, "t/b"),
            (EventKind::Delete, "t/old")
        ]
    );
    let delete = &batch.events[2].kv;
    assert_eq!((delete.mod_revision, delete.version), (3, 0));
    assert!(delete.value.is_empty());
    assert_quiet(&mut watch).await;
}

#[tokio::test]
async fn txn_get_sees_earlier_writes_of_the_same_txn() {
    let store = Store::in_memory();
    store.put("a", b"old".to_vec(), 0).await.unwrap(); // 2
    let response = store
        .txn(Txn::new().and_then([
            TxnOp::get("a"),
            TxnOp::put("a", "new"),
            TxnOp::get("a"),
            TxnOp::Get(KeyRange::key("a"), RangeOptions::default().at_revision(2)),
        ]))
        .await
        .unwrap();
    let values: Vec<(String, i64)> = response
        .responses
        .iter()
        .filter_map(|r| match r {
            TxnOpResponse::Get(get) => Some((get.kvs[0].value_str().into_owned(), get.revision)),
            _ => None,
        })
        .collect();
    assert_eq!(
        values,
        [
            ("old".to_owned(), 2),
            ("new".to_owned(), 3),
            ("old".to_owned(), 3)
        ]
    );
}

#[tokio::test]
async fn txn_compares_choose_the_branch() {
    let store = Store::in_memory();
    store.put("a", b"1".to_vec(), 0).await.unwrap(); // 2
    let succeeded = |compare: Compare| {
        let store = store.clone();
        async move {
            store
                .txn(Txn::new().when([compare]))
                .await
                .unwrap()
                .succeeded
        }
    };
    assert!(succeeded(Compare::value("a", "1")).await);
    assert!(!succeeded(Compare::value("a", "2")).await);
    assert!(succeeded(Compare::version("a", 1)).await);
    assert!(succeeded(Compare::mod_revision("a", 2)).await);
    assert!(succeeded(Compare::create_revision("missing", 0)).await);
    assert!(succeeded(Compare::lease("a", 0)).await);
    assert!(
        succeeded(Compare::new(
            "a",
            CompareOp::Greater,
            CompareTarget::Version(0)
        ))
        .await
    );
    // A value compare on a missing key is false whatever the operator.
    assert!(
        !succeeded(Compare::new(
            "missing",
            CompareOp::NotEqual,
            CompareTarget::Value(b"x".to_vec())
        ))
        .await
    );

    let response = store
        .txn(
            Txn::new()
                .when([Compare::version("a", 5)])
                .and_then([TxnOp::put("then", "1")])
                .or_else([TxnOp::put("else", "1")]),
        )
        .await
        .unwrap();
    assert!(!response.succeeded);
    assert!(store.get("then").await.unwrap().0.is_none());
    assert!(store.get("else").await.unwrap().0.is_some());
}

#[tokio::test]
async fn txn_without_effective_writes_keeps_the_revision() {
    let store = Store::in_memory();
    store.put("a", b"1".to_vec(), 0).await.unwrap(); // 2
    let reads = store
        .txn(Txn::new().and_then([TxnOp::get("a")]))
        .await
        .unwrap();
    assert_eq!(reads.revision, 2);
    let noop = store
        .txn(Txn::new().and_then([TxnOp::delete("missing")]))
        .await
        .unwrap();
    assert_eq!(noop.revision, 2);
    assert_eq!(revision(&store).await, 2);
}

#[tokio::test]
async fn txn_with_missing_lease_changes_nothing() {
    let store = Store::in_memory();
    let err = store
        .txn(Txn::new().and_then([TxnOp::put("a", "1"), TxnOp::put_with_lease("b", "1", 12345)]))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::LeaseNotFound { lease: 12345 }),
        "{err:?}"
    );
    assert!(store.get("a").await.unwrap().0.is_none());
    assert_eq!(revision(&store).await, 1);
}

#[tokio::test]
async fn txn_rejects_duplicate_keys() {
    let store = Store::in_memory();
    for ops in [
        vec![TxnOp::put("a", "1"), TxnOp::put("a", "2")],
        vec![TxnOp::Delete(KeyRange::prefix("a")), TxnOp::put("a/b", "1")],
    ] {
        let err = store.txn(Txn::new().or_else(ops)).await.unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
    }
    assert_eq!(revision(&store).await, 1);
}

#[tokio::test]
async fn put_with_unknown_lease_is_refused() {
    let store = Store::in_memory();
    let err = store.put("a", b"1".to_vec(), 42).await.unwrap_err();
    assert!(matches!(err, Error::LeaseNotFound { lease: 42 }), "{err:?}");
    assert_eq!(revision(&store).await, 1);
}

#[tokio::test(start_paused = true)]
async fn lease_grant_raises_ttl_to_the_minimum() {
    let store = Store::in_memory();
    let lease = store.lease_grant(1).await.unwrap();
    assert_eq!(lease.ttl, MIN_LEASE_TTL);
    assert!(lease.id > 0);
    let other = store.lease_grant(10).await.unwrap();
    assert_ne!(lease.id, other.id);
    assert_eq!(other.ttl, 10);
}

#[tokio::test(start_paused = true)]
async fn expired_lease_deletes_its_keys_in_one_revision() {
    let store = Store::in_memory();
    let lease = store.lease_grant(10).await.unwrap().id;
    store.put("l/b", b"1".to_vec(), lease).await.unwrap(); // 2
    store.put("l/a", b"1".to_vec(), lease).await.unwrap(); // 3
    store.put("l/c", b"1".to_vec(), 0).await.unwrap(); // 4
    let mut watch = store.watch(&KeyRange::prefix("l/"), 0).await.unwrap();

    tokio::time::sleep(Duration::from_secs(9)).await;
    assert_eq!(store.lease_ttl(lease).await.unwrap().ttl, 1);
    assert_quiet(&mut watch).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    // The reaper deleted the keys without any call to the store.
    let batch = next(&mut watch).await;
    assert_eq!(batch.revision, 5);
    assert_eq!(
        kinds_and_keys(&batch),
        [(EventKind::Delete, "l/a"), (EventKind::Delete, "l/b")]
    );
    assert_quiet(&mut watch).await;
    let left = store
        .range(&KeyRange::prefix("l/"), RangeOptions::default())
        .await
        .unwrap();
    assert_eq!(left.kvs.len(), 1);
    assert_eq!(left.revision, 5);
    assert_eq!(store.lease_ttl(lease).await.unwrap().ttl, -1);
    let err = store.lease_keep_alive(lease).await.unwrap_err();
    assert!(matches!(err, Error::LeaseNotFound { .. }), "{err:?}");
}

#[tokio::test(start_paused = true)]
async fn keep_alive_extends_the_lease() {
    let store = Store::in_memory();
    let lease = store.lease_grant(5).await.unwrap().id;
    store.put("a", b"1".to_vec(), lease).await.unwrap();
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(store.lease_keep_alive(lease).await.unwrap(), 5);
    }
    assert!(store.get("a").await.unwrap().0.is_some());
    let ttl = store.lease_ttl(lease).await.unwrap();
    assert_eq!((ttl.ttl, ttl.granted_ttl), (5, 5));
    assert_eq!(ttl.keys, ["a"]);

    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(store.get("a").await.unwrap().0.is_none());
}

#[tokio::test(start_paused = true)]
async fn revoke_deletes_keys_at_once() {
    let store = Store::in_memory();
    let lease = store.lease_grant(60).await.unwrap().id;
    store.put("a", b"1".to_vec(), lease).await.unwrap(); // 2
    store.put("b", b"1".to_vec(), lease).await.unwrap(); // 3
    store.lease_revoke(lease).await.unwrap();
    assert_eq!(revision(&store).await, 4);
    let left = store
        .range(&KeyRange::prefix(""), RangeOptions::default())
        .await
        .unwrap();
    assert_eq!(left.count, 0);
    let err = store.lease_revoke(lease).await.unwrap_err();
    assert!(matches!(err, Error::LeaseNotFound { .. }), "{err:?}");
}

#[tokio::test(start_paused = true)]
async fn overwritten_key_leaves_its_old_lease() {
    let store = Store::in_memory();
    let lease = store.lease_grant(60).await.unwrap().id;
    store.put("a", b"1".to_vec(), lease).await.unwrap();
    store.put("a", b"2".to_vec(), 0).await.unwrap();
    assert!(store.lease_ttl(lease).await.unwrap().keys.is_empty());
    store.lease_revoke(lease).await.unwrap();
    assert!(store.get("a").await.unwrap().0.is_some());
    assert_eq!(revision(&store).await, 3, "revoking a lease without keys");
}

#[tokio::test]
async fn watch_replays_from_past_revision_then_continues_live() {
    let store = Store::in_memory();
    store.put("w/a", b"1".to_vec(), 0).await.unwrap(); // 2
    store.put("other", b"1".to_vec(), 0).await.unwrap(); // 3
    store.put("w/b", b"1".to_vec(), 0).await.unwrap(); // 4
    store.delete(&KeyRange::key("w/a")).await.unwrap(); // 5

    let mut watch = store.watch(&KeyRange::prefix("w/"), 3).await.unwrap();
    store.put("w/c", b"1".to_vec(), 0).await.unwrap(); // 6

    let revisions = [
        next(&mut watch).await,
        next(&mut watch).await,
        next(&mut watch).await,
    ]
    .map(|r| (r.revision, r.events[0].kind, r.events[0].kv.key.clone()));
    assert_eq!(
        revisions,
        [
            (4, EventKind::Put, "w/b".to_owned()),
            (5, EventKind::Delete, "w/a".to_owned()),
            (6, EventKind::Put, "w/c".to_owned()),
        ]
    );
    assert_quiet(&mut watch).await;
}

#[tokio::test]
async fn watch_from_now_sees_only_new_events() {
    let store = Store::in_memory();
    store.put("a", b"1".to_vec(), 0).await.unwrap(); // 2
    let mut watch = store.watch(&KeyRange::key("a"), 0).await.unwrap();
    store.put("a", b"2".to_vec(), 0).await.unwrap(); // 3
    let response = next(&mut watch).await;
    assert_eq!(response.revision, 3);
    assert_eq!(response.events[0].kv.value, b"2");
    assert_eq!(response.events[0].kv.version, 2);
}

#[tokio::test]
async fn watch_from_future_revision_waits_for_it() {
    let store = Store::in_memory();
    let mut watch = store.watch(&KeyRange::key("a"), 4).await.unwrap();
    for value in ["2", "3", "4"] {
        store.put("a", value.into(), 0).await.unwrap();
    }
    assert_eq!(next(&mut watch).await.revision, 4);
}

#[tokio::test]
async fn compaction_keeps_its_revision_readable_and_refuses_older_ones() {
    let store = Store::in_memory();
    store.put("a", b"1".to_vec(), 0).await.unwrap(); // 2
    store.put("a", b"2".to_vec(), 0).await.unwrap(); // 3
    store.delete(&KeyRange::key("a")).await.unwrap(); // 4
    store.put("a", b"3".to_vec(), 0).await.unwrap(); // 5
    store.compact(4).await.unwrap();

    let err = store
        .range(&KeyRange::key("a"), RangeOptions::default().at_revision(3))
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            Error::Compacted { key, requested: 3, compact_revision: 4 } if key == "a"
        ),
        "{err:?}"
    );
    let at4 = store
        .range(&KeyRange::key("a"), RangeOptions::default().at_revision(4))
        .await
        .unwrap();
    assert_eq!(at4.count, 0);

    // A watch may start at the compact revision: it replays it, the delete included.
    let mut watch = store.watch(&KeyRange::key("a"), 4).await.unwrap();
    let first = next(&mut watch).await;
    assert_eq!(
        (first.revision, first.events[0].kind),
        (4, EventKind::Delete)
    );
    assert_eq!(next(&mut watch).await.revision, 5);
}

#[tokio::test]
async fn watch_before_compact_revision_yields_compacted_and_ends() {
    let store = Store::in_memory();
    store.put("a", b"1".to_vec(), 0).await.unwrap(); // 2
    store.put("a", b"2".to_vec(), 0).await.unwrap(); // 3
    let mut before = store.watch(&KeyRange::key("a"), 2).await.unwrap();
    store.compact(3).await.unwrap();

    let mut watch = store.watch(&KeyRange::key("a"), 2).await.unwrap();
    let err = watch.next().await.unwrap().unwrap_err();
    assert!(
        matches!(
            err,
            Error::Compacted {
                requested: 2,
                compact_revision: 3,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(watch.next().await.is_none());

    // A watch opened before the compaction keeps going.
    assert_eq!(next(&mut before).await.revision, 2);
    assert_eq!(next(&mut before).await.revision, 3);
}

#[tokio::test]
async fn compact_refuses_future_and_already_compacted_revisions() {
    let store = Store::in_memory();
    store.put("a", b"1".to_vec(), 0).await.unwrap(); // 2
    store.put("a", b"2".to_vec(), 0).await.unwrap(); // 3
    let err = store.compact(4).await.unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
    store.compact(3).await.unwrap();
    for revision in [2, 3] {
        let err = store.compact(revision).await.unwrap_err();
        assert!(
            matches!(
                err,
                Error::Compacted {
                    compact_revision: 3,
                    ..
                }
            ),
            "{err:?}"
        );
    }
    assert_eq!(store.get("a").await.unwrap().0.unwrap().value, b"2");
}

#[test]
fn operations_can_move_between_threads() {
    fn assert_send<T: Send>(_: T) {}
    let store = Store::in_memory();
    let range = KeyRange::prefix("a");
    assert_send(store.range(&range, RangeOptions::default()));
    assert_send(store.put("a", Vec::new(), 0));
    assert_send(store.delete(&range));
    assert_send(store.txn(Txn::new()));
    assert_send(store.lease_grant(5));
    assert_send(store.lease_keep_alive(1));
    assert_send(store.lease_revoke(1));
    assert_send(store.lease_ttl(1));
    assert_send(store.watch(&range, 0));
    assert_send(store.compact(1));
    assert_send(store.status());
}

#[test]
fn leases_expire_on_their_own_after_the_first_runtime_shut_down() {
    let store = Store::in_memory();
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap()
    };
    runtime().block_on(async {
        store.lease_grant(5).await.unwrap();
    });
    runtime().block_on(async {
        let lease = store.lease_grant(2).await.unwrap().id;
        store.put("a", b"1".to_vec(), lease).await.unwrap();
        let mut watch = store.watch(&KeyRange::key("a"), 0).await.unwrap();
        let batch = next(&mut watch).await;
        assert_eq!(batch.events[0].kind, EventKind::Delete);
    });
}

#[tokio::test(start_paused = true)]
async fn idle_watch_hears_the_current_revision_each_progress_interval() {
    let store = Store::in_memory();
    let mut watch = store.watch(&KeyRange::prefix("/idle/"), 0).await.unwrap();
    let elsewhere = store.put("/other", b"1".to_vec(), 0).await.unwrap();
    let started = tokio::time::Instant::now();
    let progress = next_within(&mut watch, PROGRESS_NOTIFY_INTERVAL * 2).await;
    assert!(progress.is_progress(), "{progress:?}");
    assert_eq!(progress.revision, elsewhere.revision);
    assert_eq!(started.elapsed(), PROGRESS_NOTIFY_INTERVAL, "paused clock");
    let again = next_within(&mut watch, PROGRESS_NOTIFY_INTERVAL * 2).await;
    assert!(again.is_progress(), "every interval: {again:?}");
}

#[tokio::test(start_paused = true)]
async fn a_watch_sent_events_since_the_last_tick_gets_no_progress() {
    let store = Store::in_memory();
    let mut busy = store.watch(&KeyRange::prefix("/busy/"), 0).await.unwrap();
    tokio::time::sleep(PROGRESS_NOTIFY_INTERVAL / 2).await;
    let put = store.put("/busy/a", b"1".to_vec(), 0).await.unwrap();
    assert_eq!(next(&mut busy).await.revision, put.revision);
    // The first tick passes this watch over; the next one, after a quiet interval, does not.
    let started = tokio::time::Instant::now();
    let progress = next_within(&mut busy, PROGRESS_NOTIFY_INTERVAL * 3).await;
    assert!(progress.is_progress(), "{progress:?}");
    assert_eq!(progress.revision, put.revision);
    assert_eq!(
        started.elapsed(),
        PROGRESS_NOTIFY_INTERVAL / 2 + PROGRESS_NOTIFY_INTERVAL,
        "the second tick"
    );
}

#[tokio::test(start_paused = true)]
async fn dropping_the_store_ends_its_watches_and_reaper() {
    let store = Store::in_memory();
    store.lease_grant(60).await.unwrap();
    let mut watch = store.watch(&KeyRange::prefix(""), 0).await.unwrap();
    drop(store);
    let end = tokio::time::timeout(Duration::from_secs(1), watch.next()).await;
    assert!(matches!(end, Ok(None)), "{end:?}");
}
