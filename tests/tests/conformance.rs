//! The store seam's conformance suite: every case runs on the embedded backend and on a real
//! etcd started by the harness, so the two cannot drift apart.
//!
//! Only what a backend decides belongs here. What `Store` refuses before any backend sees it
//! (oversize requests, NUL in a key, a zero TTL) is tested once, in `store_refusals.rs`.

mod common;

use std::time::Duration;

use futures::StreamExt;
use tokio::time::timeout;

on_both_backends!(cases:
    put_then_get_returns_value_and_metadata,
    range_prefix_returns_keys_in_order_with_count,
    keys_only_range_leaves_values_out,
    range_limit_returns_first_keys_and_full_count,
    delete_key_and_prefix_report_what_they_deleted,
    delete_of_a_key_and_of_a_prefix_returns_the_previous_values,
    delete_of_missing_key_does_not_bump_revision,
    revisions_strictly_increase_and_versions_count_writes,
    range_at_past_revision_sees_old_state,
    txn_create_if_absent_succeeds_once,
    txn_compare_on_mod_revision_is_compare_and_set,
    txn_compare_on_value_and_version,
    txn_compare_less_and_greater_on_version_and_revisions,
    txn_compare_over_a_prefix_holds_for_every_key_under_it,
    txn_with_missing_lease_changes_nothing,
    txn_writes_answer_without_previous_values,
    multi_key_txn_events_arrive_in_one_batch,
    watch_from_past_revision_replays_in_order,
    watch_from_now_sees_only_new_writes,
    watch_from_compacted_revision_reports_compaction,
    range_at_compacted_revision_reports_compaction,
    lease_expiry_deletes_its_keys,
    lease_revoke_deletes_keys_at_once_in_one_revision,
    keep_alive_keeps_keys_past_ttl,
    lease_ttl_under_minimum_is_raised_to_two_seconds,
    put_with_unknown_lease_is_lease_not_found,
    txn_of_128_operations_is_accepted,
);

/// Progress notifications run on their own servers: the embedded store sends them every
/// 10 minutes of tokio time (etcd's default interval; the clock is paused here, so no test
/// waits for it), and etcd as often as `--experimental-watch-progress-notify-interval` says.
mod progress {
    use std::time::Duration;

    use crate::common::Backend;

    #[tokio::test(start_paused = true)]
    async fn memory() {
        let backend = Backend::memory();
        super::cases::idle_watch_hears_progress_at_the_current_revision(
            backend.store(),
            Duration::from_secs(3 * 600),
        )
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn etcd() {
        let etcd = coord::testing::EtcdServer::builder()
            .extra_args(["--experimental-watch-progress-notify-interval", "500ms"])
            .start()
            .await
            .expect("start etcd (see the error for how to install it)");
        let coord = coord::Coord::connect(etcd.client_config()).await.unwrap();
        super::cases::idle_watch_hears_progress_at_the_current_revision(
            coord.store(),
            Duration::from_secs(30),
        )
        .await;
    }
}

mod cases {
    use super::*;
    use crate::common::Backend;
    use coord::store::{
        Compare, CompareOp, CompareTarget, EventKind, KeyRange, RangeOptions, Txn, TxnOp,
        TxnOpResponse, WatchResponse,
    };
    use coord::{Error, Store};

    /// A ceiling, not a target: on a loaded machine answers take longer.
    const WAIT: Duration = Duration::from_secs(30);

    async fn next_batch(stream: &mut coord::store::WatchStream) -> WatchResponse {
        loop {
            let item = timeout(WAIT, stream.next())
                .await
                .expect("watch event in time")
                .expect("watch stream open")
                .expect("watch response");
            if !item.is_progress() {
                return item;
            }
        }
    }

    pub async fn put_then_get_returns_value_and_metadata(b: &Backend) {
        let s = b.store();
        let put = s.put("/c/a", b"1".to_vec(), 0).await.unwrap();
        let (kv, revision) = s.get("/c/a").await.unwrap();
        let kv = kv.expect("key exists");
        assert_eq!(kv.value, b"1");
        assert_eq!(kv.create_revision, put.revision);
        assert_eq!(kv.mod_revision, put.revision);
        assert_eq!(kv.version, 1);
        assert_eq!(kv.lease, 0);
        assert_eq!(revision, put.revision);
        assert!(s.get("/c/missing").await.unwrap().0.is_none());
    }

    pub async fn range_prefix_returns_keys_in_order_with_count(b: &Backend) {
        let s = b.store();
        for key in ["/r/b", "/r/a", "/r/c", "/rx", "/q"] {
            s.put(key, key.as_bytes().to_vec(), 0).await.unwrap();
        }
        let resp = s
            .range(&KeyRange::prefix("/r/"), RangeOptions::default())
            .await
            .unwrap();
        let keys: Vec<_> = resp.kvs.iter().map(|kv| kv.key.as_str()).collect();
        assert_eq!(keys, ["/r/a", "/r/b", "/r/c"]);
        assert_eq!(resp.count, 3);
        assert_eq!(resp.kvs[1].value, b"/r/b");
        let all = s
            .range(&KeyRange::prefix(""), RangeOptions::default())
            .await
            .unwrap();
        assert!(
            all.count >= 5,
            "empty prefix covers every key: {}",
            all.count
        );
    }

    pub async fn keys_only_range_leaves_values_out(b: &Backend) {
        let s = b.store();
        s.put("/k/a", b"value".to_vec(), 0).await.unwrap();
        let resp = s
            .range(
                &KeyRange::prefix("/k/"),
                RangeOptions::default().keys_only(),
            )
            .await
            .unwrap();
        assert_eq!(resp.kvs.len(), 1);
        assert_eq!(resp.kvs[0].key, "/k/a");
        assert!(resp.kvs[0].value.is_empty());
        assert!(resp.kvs[0].mod_revision > 0);
    }

    pub async fn range_limit_returns_first_keys_and_full_count(b: &Backend) {
        let s = b.store();
        for i in 0..5 {
            s.put(&format!("/l/{i}"), vec![], 0).await.unwrap();
        }
        let resp = s
            .range(&KeyRange::prefix("/l/"), RangeOptions::default().limit(2))
            .await
            .unwrap();
        let keys: Vec<_> = resp.kvs.iter().map(|kv| kv.key.as_str()).collect();
        assert_eq!(keys, ["/l/0", "/l/1"]);
        assert_eq!(resp.count, 5);
    }

    pub async fn delete_key_and_prefix_report_what_they_deleted(b: &Backend) {
        let s = b.store();
        for key in ["/d/a", "/d/b", "/d/c"] {
            s.put(key, b"x".to_vec(), 0).await.unwrap();
        }
        let one = s.delete(&KeyRange::key("/d/a")).await.unwrap();
        assert_eq!(one.deleted, 1);
        let rest = s.delete(&KeyRange::prefix("/d/")).await.unwrap();
        assert_eq!(rest.deleted, 2);
        assert!(rest.revision > one.revision);
        let left = s
            .range(&KeyRange::prefix("/d/"), RangeOptions::default())
            .await
            .unwrap();
        assert_eq!(left.count, 0);
    }

    pub async fn delete_of_a_key_and_of_a_prefix_returns_the_previous_values(b: &Backend) {
        let s = b.store();
        let a = s.put("/pd/a", b"1".to_vec(), 0).await.unwrap();
        s.put("/pd/a", b"2".to_vec(), 0).await.unwrap();
        let lease = s.lease_grant(60).await.unwrap();
        let bb = s.put("/pd/b", b"3".to_vec(), lease.id).await.unwrap();
        let c = s.put("/pd/c", b"4".to_vec(), 0).await.unwrap();

        let one = s.delete(&KeyRange::key("/pd/a")).await.unwrap();
        match &one.prev_kvs[..] {
            [prev] => {
                assert_eq!(prev.key, "/pd/a");
                assert_eq!(prev.value, b"2", "the value just before the delete");
                assert_eq!(prev.create_revision, a.revision);
                assert_eq!(prev.version, 2);
            }
            other => panic!("expected the one deleted key, got {other:?}"),
        }

        let rest = s.delete(&KeyRange::prefix("/pd/")).await.unwrap();
        let prev: Vec<_> = rest
            .prev_kvs
            .iter()
            .map(|kv| {
                (
                    kv.key.as_str(),
                    kv.value.as_slice(),
                    kv.mod_revision,
                    kv.lease,
                )
            })
            .collect();
        assert_eq!(
            prev,
            [
                ("/pd/b", &b"3"[..], bb.revision, lease.id),
                ("/pd/c", &b"4"[..], c.revision, 0),
            ],
            "every deleted key, in key order"
        );
        let none = s.delete(&KeyRange::prefix("/pd/")).await.unwrap();
        assert!(none.prev_kvs.is_empty());
    }

    pub async fn delete_of_missing_key_does_not_bump_revision(b: &Backend) {
        let s = b.store();
        let put = s.put("/m/a", vec![], 0).await.unwrap();
        let del = s.delete(&KeyRange::key("/m/none")).await.unwrap();
        assert_eq!(del.deleted, 0);
        assert_eq!(del.revision, put.revision);
    }

    pub async fn revisions_strictly_increase_and_versions_count_writes(b: &Backend) {
        let s = b.store();
        let mut last = s.status().await.unwrap().revision;
        for i in 0..5 {
            let put = s.put("/v/a", vec![i], 0).await.unwrap();
            assert!(put.revision > last, "{} > {last}", put.revision);
            last = put.revision;
        }
        let kv = s.get("/v/a").await.unwrap().0.unwrap();
        assert_eq!(kv.version, 5);
        assert!(kv.create_revision < kv.mod_revision);
        s.delete(&KeyRange::key("/v/a")).await.unwrap();
        let again = s.put("/v/a", vec![9], 0).await.unwrap();
        let kv = s.get("/v/a").await.unwrap().0.unwrap();
        assert_eq!(kv.version, 1, "version restarts after a delete");
        assert_eq!(kv.create_revision, again.revision);
    }

    pub async fn range_at_past_revision_sees_old_state(b: &Backend) {
        let s = b.store();
        let first = s.put("/h/a", b"old".to_vec(), 0).await.unwrap();
        s.put("/h/a", b"new".to_vec(), 0).await.unwrap();
        s.put("/h/b", b"later".to_vec(), 0).await.unwrap();
        let past = s
            .range(
                &KeyRange::prefix("/h/"),
                RangeOptions::default().at_revision(first.revision),
            )
            .await
            .unwrap();
        assert_eq!(past.kvs.len(), 1);
        assert_eq!(past.kvs[0].value, b"old");
        assert!(
            past.revision > first.revision,
            "header carries the current revision"
        );
        let future = s
            .range(
                &KeyRange::key("/h/a"),
                RangeOptions::default().at_revision(past.revision + 100),
            )
            .await;
        assert!(
            matches!(future, Err(Error::InvalidArgument { .. })),
            "{future:?}"
        );
    }

    pub async fn txn_create_if_absent_succeeds_once(b: &Backend) {
        let s = b.store();
        let create = || {
            Txn::new()
                .when([Compare::create_revision("/t/owner", 0)])
                .and_then([TxnOp::put("/t/owner", "me")])
                .or_else([TxnOp::get("/t/owner")])
        };
        let first = s.txn(create()).await.unwrap();
        assert!(first.succeeded);
        let second = s.txn(create()).await.unwrap();
        assert!(!second.succeeded);
        assert_eq!(
            second.revision, first.revision,
            "a failed txn writes nothing"
        );
        match &second.responses[..] {
            [TxnOpResponse::Get(get)] => assert_eq!(get.kvs[0].value, b"me"),
            other => panic!("expected one get response, got {other:?}"),
        }
    }

    pub async fn txn_writes_answer_without_previous_values(b: &Backend) {
        let s = b.store();
        s.put("/t/prev/a", b"old".to_vec(), 0).await.unwrap();
        s.put("/t/prev/b", b"old".to_vec(), 0).await.unwrap();
        let txn = Txn::new().and_then([
            TxnOp::get("/t/prev/a"),
            TxnOp::put("/t/prev/a", "new"),
            TxnOp::delete("/t/prev/b"),
        ]);
        let response = s.txn(txn).await.unwrap();
        match &response.responses[..] {
            [
                TxnOpResponse::Get(old),
                TxnOpResponse::Put(put),
                TxnOpResponse::Delete(delete),
            ] => {
                assert_eq!(old.kvs[0].value, b"old", "a Get reads the old value");
                assert_eq!(put.prev_kv, None);
                assert_eq!(put.revision, response.revision);
                assert_eq!(delete.deleted, 1);
                assert!(delete.prev_kvs.is_empty());
            }
            other => panic!("expected get, put, delete answers, got {other:?}"),
        }
        // Outside a transaction the previous value is still reported.
        let put = s.put("/t/prev/a", b"newer".to_vec(), 0).await.unwrap();
        assert_eq!(put.prev_kv.unwrap().value, b"new");
    }

    pub async fn txn_compare_on_mod_revision_is_compare_and_set(b: &Backend) {
        let s = b.store();
        let put = s.put("/t/cas", b"1".to_vec(), 0).await.unwrap();
        let cas = |rev: i64, value: &'static str| {
            Txn::new()
                .when([Compare::mod_revision("/t/cas", rev)])
                .and_then([TxnOp::put("/t/cas", value)])
        };
        let won = s.txn(cas(put.revision, "2")).await.unwrap();
        assert!(won.succeeded);
        let lost = s.txn(cas(put.revision, "3")).await.unwrap();
        assert!(!lost.succeeded);
        assert_eq!(s.get("/t/cas").await.unwrap().0.unwrap().value, b"2");
        let greater = Txn::new().when([Compare::new(
            "/t/cas",
            CompareOp::Greater,
            CompareTarget::ModRevision(put.revision),
        )]);
        assert!(s.txn(greater).await.unwrap().succeeded);
    }

    pub async fn txn_compare_on_value_and_version(b: &Backend) {
        let s = b.store();
        s.put("/t/v", b"blue".to_vec(), 0).await.unwrap();
        let on_value = |v: &'static str| {
            Txn::new()
                .when([Compare::value("/t/v", v)])
                .and_then([TxnOp::put("/t/hit", v)])
        };
        assert!(!s.txn(on_value("red")).await.unwrap().succeeded);
        assert!(s.txn(on_value("blue")).await.unwrap().succeeded);
        let missing = Txn::new().when([Compare::new(
            "/t/none",
            CompareOp::NotEqual,
            CompareTarget::Value(b"x".to_vec()),
        )]);
        assert!(
            !s.txn(missing).await.unwrap().succeeded,
            "a value compare on a missing key is false"
        );
        assert!(
            s.txn(Txn::new().when([Compare::version("/t/v", 1)]))
                .await
                .unwrap()
                .succeeded
        );
        assert!(
            s.txn(Txn::new().when([Compare::version("/t/none", 0)]))
                .await
                .unwrap()
                .succeeded
        );
    }

    /// coord's ordered queue and fencing compare revisions and versions with `<` and `>`.
    pub async fn txn_compare_less_and_greater_on_version_and_revisions(b: &Backend) {
        let s = b.store();
        let first = s.put("/t/ord", b"1".to_vec(), 0).await.unwrap();
        let second = s.put("/t/ord", b"2".to_vec(), 0).await.unwrap();
        // Now: version 2, create_revision = first, mod_revision = second.
        let holds = |op: CompareOp, target: CompareTarget| {
            let txn = Txn::new().when([Compare::new("/t/ord", op, target)]);
            async move { s.txn(txn).await.unwrap().succeeded }
        };
        use CompareOp::{Greater, Less};
        use CompareTarget::{CreateRevision, ModRevision, Version};
        let cases = [
            (Less, Version(3), true),
            (Less, Version(2), false),
            (Greater, Version(1), true),
            (Greater, Version(2), false),
            (Less, CreateRevision(first.revision + 1), true),
            (Less, CreateRevision(first.revision), false),
            (Greater, CreateRevision(first.revision - 1), true),
            (Greater, CreateRevision(first.revision), false),
            (Less, ModRevision(second.revision + 1), true),
            (Less, ModRevision(second.revision), false),
            (Greater, ModRevision(first.revision), true),
            (Greater, ModRevision(second.revision), false),
        ];
        for (op, target, expected) in cases {
            assert_eq!(
                holds(op, target.clone()).await,
                expected,
                "{op:?} {target:?} on version 2, created at {}, modified at {}",
                first.revision,
                second.revision
            );
        }
        // A missing key compares as 0 on all three.
        let missing = |op: CompareOp, target: CompareTarget| {
            let txn = Txn::new().when([Compare::new("/t/none", op, target)]);
            async move { s.txn(txn).await.unwrap().succeeded }
        };
        assert!(missing(Less, Version(1)).await);
        assert!(missing(Less, CreateRevision(1)).await);
        assert!(missing(Less, ModRevision(1)).await);
        assert!(!missing(Greater, ModRevision(0)).await);
    }

    /// `publish` of a map field guards the entries it read with one prefix compare, so an
    /// entry written meanwhile is never silently left behind.
    pub async fn txn_compare_over_a_prefix_holds_for_every_key_under_it(b: &Backend) {
        let s = b.store();
        use CompareOp::Less;
        use CompareTarget::{ModRevision, Value};
        let holds = |compare: Compare| {
            let txn = Txn::new().when([compare.over_prefix()]);
            async move { s.txn(txn).await.unwrap().succeeded }
        };
        let unchanged_since = |revision: i64| Compare::new("/pc/", Less, ModRevision(revision + 1));
        // Nothing under the prefix: compared as a missing key.
        assert!(holds(unchanged_since(0)).await);
        assert!(
            !holds(Compare::new(
                "/pc/",
                CompareOp::NotEqual,
                Value(b"x".to_vec())
            ))
            .await
        );

        s.put("/pc/a", b"1".to_vec(), 0).await.unwrap();
        let read = s.put("/pc/b", b"1".to_vec(), 0).await.unwrap().revision;
        s.put("/pcx", b"outside".to_vec(), 0).await.unwrap();
        assert!(
            holds(unchanged_since(read)).await,
            "a key next to the prefix is not under it"
        );
        assert!(holds(Compare::value("/pc/", "1")).await, "both keys hold 1");

        s.put("/pc/c", b"2".to_vec(), 0).await.unwrap();
        assert!(!holds(unchanged_since(read)).await, "a key appeared");
        assert!(
            !holds(Compare::value("/pc/", "1")).await,
            "one key of three differs"
        );
        // A single-key compare on the prefix string itself is unaffected.
        let txn = Txn::new().when([unchanged_since(0)]);
        assert!(s.txn(txn).await.unwrap().succeeded, "no key named /pc/");
    }

    pub async fn txn_with_missing_lease_changes_nothing(b: &Backend) {
        let s = b.store();
        let before = s.status().await.unwrap().revision;
        let txn = Txn::new().and_then([
            TxnOp::put("/t/ok", "1"),
            TxnOp::put_with_lease("/t/leased", "1", 0x7777_7777),
        ]);
        let err = s.txn(txn).await.unwrap_err();
        assert!(matches!(err, Error::LeaseNotFound { .. }), "{err:?}");
        assert!(s.get("/t/ok").await.unwrap().0.is_none());
        assert_eq!(s.status().await.unwrap().revision, before);
    }

    pub async fn multi_key_txn_events_arrive_in_one_batch(b: &Backend) {
        let s = b.store();
        let mut watch = s.watch(&KeyRange::prefix("/batch/"), 0).await.unwrap();
        let txn = Txn::new().and_then([
            TxnOp::put("/batch/a", "1"),
            TxnOp::put("/batch/b", "2"),
            TxnOp::delete("/batch/none"),
        ]);
        let resp = s.txn(txn).await.unwrap();
        let batch = next_batch(&mut watch).await;
        assert_eq!(batch.revision, resp.revision);
        let keys: Vec<_> = batch.events.iter().map(|e| e.kv.key.as_str()).collect();
        assert_eq!(keys, ["/batch/a", "/batch/b"]);
        assert!(
            batch
                .events
                .iter()
                .all(|e| e.kv.mod_revision == resp.revision)
        );
    }

    pub async fn watch_from_past_revision_replays_in_order(b: &Backend) {
        let s = b.store();
        let first = s.put("/w/a", b"1".to_vec(), 0).await.unwrap();
        s.put("/w/b", b"2".to_vec(), 0).await.unwrap();
        s.delete(&KeyRange::key("/w/a")).await.unwrap();
        let mut watch = s
            .watch(&KeyRange::prefix("/w/"), first.revision)
            .await
            .unwrap();
        let mut seen = Vec::new();
        for _ in 0..3 {
            let batch = next_batch(&mut watch).await;
            for e in batch.events {
                seen.push((e.kind, e.kv.key, e.kv.mod_revision));
            }
        }
        assert_eq!(seen[0], (EventKind::Put, "/w/a".into(), first.revision));
        assert_eq!(seen[1].1, "/w/b");
        assert_eq!((seen[2].0, seen[2].1.as_str()), (EventKind::Delete, "/w/a"));
        assert!(seen.windows(2).all(|w| w[0].2 < w[1].2), "{seen:?}");
        // The watch goes on live after the replay.
        let live = s.put("/w/c", b"3".to_vec(), 0).await.unwrap();
        assert_eq!(next_batch(&mut watch).await.revision, live.revision);
    }

    pub async fn watch_from_now_sees_only_new_writes(b: &Backend) {
        let s = b.store();
        s.put("/n/old", vec![], 0).await.unwrap();
        let mut watch = s.watch(&KeyRange::key("/n/new"), 0).await.unwrap();
        s.put("/n/other", vec![], 0).await.unwrap();
        let put = s.put("/n/new", b"x".to_vec(), 0).await.unwrap();
        let batch = next_batch(&mut watch).await;
        assert_eq!(batch.revision, put.revision);
        assert_eq!(batch.events.len(), 1);
        assert_eq!(batch.events[0].kv.value, b"x");
    }

    pub async fn watch_from_compacted_revision_reports_compaction(b: &Backend) {
        let s = b.store();
        let first = s.put("/cw/a", b"1".to_vec(), 0).await.unwrap();
        let last = s.put("/cw/a", b"2".to_vec(), 0).await.unwrap();
        s.compact(last.revision).await.unwrap();
        let mut watch = s
            .watch(&KeyRange::prefix("/cw/"), first.revision)
            .await
            .unwrap();
        let item = timeout(WAIT, watch.next()).await.expect("answer in time");
        match item {
            Some(Err(Error::Compacted {
                compact_revision, ..
            })) => assert_eq!(compact_revision, last.revision),
            other => panic!("expected Compacted, got {other:?}"),
        }
        // The compacted revision itself is still readable and watchable.
        let mut at = s
            .watch(&KeyRange::prefix("/cw/"), last.revision)
            .await
            .unwrap();
        assert_eq!(next_batch(&mut at).await.revision, last.revision);
    }

    pub async fn range_at_compacted_revision_reports_compaction(b: &Backend) {
        let s = b.store();
        let first = s.put("/cr/a", b"1".to_vec(), 0).await.unwrap();
        let last = s.put("/cr/a", b"2".to_vec(), 0).await.unwrap();
        s.compact(last.revision).await.unwrap();
        let old = s
            .range(
                &KeyRange::key("/cr/a"),
                RangeOptions::default().at_revision(first.revision),
            )
            .await;
        assert!(matches!(old, Err(Error::Compacted { .. })), "{old:?}");
        let again = s.compact(first.revision).await;
        assert!(matches!(again, Err(Error::Compacted { .. })), "{again:?}");
    }

    pub async fn lease_expiry_deletes_its_keys(b: &Backend) {
        let s = b.store();
        let lease = s.lease_grant(2).await.unwrap();
        s.put("/le/a", b"1".to_vec(), lease.id).await.unwrap();
        s.put("/le/b", b"1".to_vec(), lease.id).await.unwrap();
        let mut watch = s.watch(&KeyRange::prefix("/le/"), 0).await.unwrap();
        assert!(s.get("/le/a").await.unwrap().0.is_some());
        // etcd promises expiry after the TTL, within the TTL plus its check interval.
        let batch = timeout(Duration::from_secs(5), next_batch(&mut watch))
            .await
            .expect("keys deleted within TTL + 2 s");
        assert_eq!(batch.events.len(), 2, "both keys go in one revision");
        assert!(batch.events.iter().all(|e| e.kind == EventKind::Delete));
        assert!(s.get("/le/a").await.unwrap().0.is_none());
        let ttl = s.lease_ttl(lease.id).await.unwrap();
        assert_eq!(ttl.ttl, -1);
    }

    pub async fn lease_revoke_deletes_keys_at_once_in_one_revision(b: &Backend) {
        let s = b.store();
        let lease = s.lease_grant(60).await.unwrap();
        s.put("/lr/a", b"1".to_vec(), lease.id).await.unwrap();
        s.put("/lr/b", b"1".to_vec(), lease.id).await.unwrap();
        let ttl = s.lease_ttl(lease.id).await.unwrap();
        assert_eq!(ttl.granted_ttl, 60);
        assert!(ttl.ttl > 0 && ttl.ttl <= 60);
        let mut keys = ttl.keys.clone();
        keys.sort();
        assert_eq!(keys, ["/lr/a", "/lr/b"]);
        let mut watch = s.watch(&KeyRange::prefix("/lr/"), 0).await.unwrap();
        s.lease_revoke(lease.id).await.unwrap();
        let resp = s
            .range(&KeyRange::prefix("/lr/"), RangeOptions::default())
            .await
            .unwrap();
        assert_eq!(resp.count, 0);
        let batch = next_batch(&mut watch).await;
        assert_eq!(batch.events.len(), 2);
        let again = s.lease_revoke(lease.id).await;
        assert!(
            matches!(again, Err(Error::LeaseNotFound { .. })),
            "{again:?}"
        );
        let renew = s.lease_keep_alive(lease.id).await;
        assert!(
            matches!(renew, Err(Error::LeaseNotFound { .. })),
            "{renew:?}"
        );
    }

    pub async fn keep_alive_keeps_keys_past_ttl(b: &Backend) {
        let s = b.store();
        let lease = s.lease_grant(2).await.unwrap();
        s.put("/ka/a", b"1".to_vec(), lease.id).await.unwrap();
        for _ in 0..8 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let ttl = s.lease_keep_alive(lease.id).await.unwrap();
            assert_eq!(ttl, 2);
        }
        assert!(
            s.get("/ka/a").await.unwrap().0.is_some(),
            "kept alive for 4 s, twice the TTL"
        );
    }

    pub async fn lease_ttl_under_minimum_is_raised_to_two_seconds(b: &Backend) {
        let s = b.store();
        let lease = s.lease_grant(1).await.unwrap();
        assert_eq!(lease.ttl, 2);
        assert_eq!(s.lease_ttl(lease.id).await.unwrap().granted_ttl, 2);
    }

    pub async fn put_with_unknown_lease_is_lease_not_found(b: &Backend) {
        let err = b
            .store()
            .put("/ul/a", vec![], 0x1234_5678)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::LeaseNotFound { .. }), "{err:?}");
    }

    /// etcd's `--max-txn-ops` is 128: a transaction of exactly that many is served.
    pub async fn txn_of_128_operations_is_accepted(b: &Backend) {
        let s = b.store();
        let ops = (0..128).map(|i| TxnOp::put(format!("/many/{i:03}"), "x"));
        let txn = s.txn(Txn::new().and_then(ops)).await.unwrap();
        assert!(txn.succeeded);
        let all = s
            .range(&KeyRange::prefix("/many/"), RangeOptions::default())
            .await
            .unwrap();
        assert_eq!(all.count, 128);
        assert!(all.kvs.iter().all(|kv| kv.mod_revision == txn.revision));
    }

    /// A watch on a range nobody writes to hears, with no events, the store's current
    /// revision (moved by writes elsewhere), and goes on delivering events afterwards.
    pub async fn idle_watch_hears_progress_at_the_current_revision(s: &Store, within: Duration) {
        async fn next_item(
            watch: &mut coord::store::WatchStream,
            within: Duration,
        ) -> WatchResponse {
            timeout(within, watch.next())
                .await
                .expect("a watch response in time")
                .expect("watch stream open")
                .expect("watch response")
        }
        let mut watch = s.watch(&KeyRange::prefix("/pr/"), 0).await.unwrap();
        let put = s.put("/pr/a", b"1".to_vec(), 0).await.unwrap();
        let event = loop {
            let item = next_item(&mut watch, within).await;
            if !item.is_progress() {
                break item;
            }
        };
        assert_eq!(event.revision, put.revision);
        let elsewhere = s.put("/elsewhere", b"1".to_vec(), 0).await.unwrap();
        let progress = loop {
            let item = next_item(&mut watch, within).await;
            assert!(item.is_progress(), "no events outside the range: {item:?}");
            assert!(item.events.is_empty());
            assert!(
                item.revision >= put.revision,
                "progress never goes behind a delivered event: {item:?}"
            );
            // One sent before the write elsewhere may still be on its way.
            if item.revision >= elsewhere.revision {
                break item;
            }
        };
        assert_eq!(
            progress.revision, elsewhere.revision,
            "the current revision"
        );
        let after = s.put("/pr/b", b"2".to_vec(), 0).await.unwrap();
        let event = loop {
            let item = next_item(&mut watch, within).await;
            if !item.is_progress() {
                break item;
            }
        };
        assert_eq!(event.revision, after.revision);
        assert_eq!(event.events[0].kv.key, "/pr/b");
    }
}
