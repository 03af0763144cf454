//! The resilient watch on a real etcd: restarts, compaction while disconnected, and the same
//! list-then-watch behaviour on both backends.

mod common;

use common::proxy::Proxy;

use std::collections::BTreeMap;
use std::time::Duration;

use coord::store::{Compare, EventKind, KeyRange, Txn, TxnOp};
use coord::watch::{ResilientWatch, WatchConfig, WatchEvent};
use coord::{Coord, Error};
use tokio::time::timeout;

on_both_backends!(cases:
    first_item_is_the_whole_state_then_changes_follow,
    progress_never_goes_backwards,
);

mod cases {
    use super::*;
    use crate::common::Backend;

    pub async fn first_item_is_the_whole_state_then_changes_follow(b: &Backend) {
        let s = b.store();
        s.put("/rw/a", b"1".to_vec(), 0).await.unwrap();
        s.put("/rw/b", b"2".to_vec(), 0).await.unwrap();
        let mut watch = ResilientWatch::new(s.clone(), KeyRange::prefix("/rw/"));
        match watch.next().await.unwrap() {
            WatchEvent::Init { kvs, revision } => {
                assert_eq!(kvs.len(), 2);
                assert_eq!(revision, s.status().await.unwrap().revision);
            }
            other => panic!("expected Init, got {other:?}"),
        }
        let put = s.put("/rw/c", b"3".to_vec(), 0).await.unwrap();
        let next = loop {
            match timeout(Duration::from_secs(5), watch.next())
                .await
                .unwrap()
                .unwrap()
            {
                WatchEvent::Progress { .. } => continue,
                other => break other,
            }
        };
        assert_eq!(next.revision(), put.revision);
        assert!(
            matches!(next, WatchEvent::Events { ref events, .. } if events[0].kv.key == "/rw/c")
        );
    }

    pub async fn progress_never_goes_backwards(b: &Backend) {
        let s = b.store();
        let mut watch = ResilientWatch::new(s.clone(), KeyRange::prefix("/pg/"));
        let mut last = watch.next().await.unwrap().revision();
        for i in 0..20u8 {
            s.put("/pg/a", vec![i], 0).await.unwrap();
            let item = timeout(Duration::from_secs(5), watch.next())
                .await
                .unwrap()
                .unwrap();
            assert!(item.revision() > last, "{item:?} after {last}");
            last = item.revision();
        }
    }
}

/// Writes `/seq/{i:04}` create-only, retrying through outages; a retried write that had in
/// fact landed is not written twice.
async fn write_sequence(coord: Coord, count: usize) {
    let store = coord.store();
    for i in 0..count {
        let key = format!("/seq/{i:04}");
        loop {
            let txn = Txn::new()
                .when([Compare::create_revision(key.as_str(), 0)])
                .and_then([TxnOp::put(key.as_str(), i.to_string())]);
            match store.txn(txn).await {
                Ok(_) => break,
                // Create-only: safe to send again even if the last one was applied.
                Err(e) if e.is_transient() || e.is_outcome_unknown() => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(e) => panic!("write {key}: {e}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Collects put events of `/seq/` until `count` keys are seen; panics on a duplicate.
async fn collect_sequence(watch: &mut ResilientWatch, count: usize) -> (Vec<String>, usize) {
    let mut keys = Vec::new();
    let mut errors = 0;
    let mut last_revision = 0;
    while keys.len() < count {
        match timeout(Duration::from_secs(30), watch.next())
            .await
            .expect("watch keeps delivering")
        {
            Ok(WatchEvent::Events { revision, events })
            | Ok(WatchEvent::Resync { revision, events }) => {
                assert!(
                    revision > last_revision,
                    "revision {revision} after {last_revision}"
                );
                last_revision = revision;
                for event in events {
                    assert_eq!(event.kind, EventKind::Put);
                    assert!(
                        !keys.contains(&event.kv.key),
                        "duplicate event for {}",
                        event.kv.key
                    );
                    keys.push(event.kv.key);
                }
            }
            Ok(WatchEvent::Init { .. }) => panic!("Init twice"),
            Ok(WatchEvent::Progress { revision }) => assert!(revision >= last_revision),
            Err(_) => errors += 1,
        }
    }
    (keys, errors)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_is_seen_exactly_once_in_order_across_an_etcd_restart() {
    const WRITES: usize = 300;
    let mut backend = common::Backend::etcd().await;
    let config = WatchConfig::default().max_backoff(Duration::from_millis(500));
    let mut watch =
        ResilientWatch::with_config(backend.store().clone(), KeyRange::prefix("/seq/"), config);
    assert!(
        matches!(watch.next().await.unwrap(), WatchEvent::Init { ref kvs, .. } if kvs.is_empty())
    );

    let writer = tokio::spawn(write_sequence(backend.coord.clone(), WRITES));
    let reader = tokio::spawn(async move {
        let result = collect_sequence(&mut watch, WRITES).await;
        (result, watch)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let server = backend.server.as_mut().unwrap();
    server.kill().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.restart().await.unwrap();

    writer.await.unwrap();
    let ((keys, errors), _watch) = reader.await.unwrap();
    let expected: Vec<String> = (0..WRITES).map(|i| format!("/seq/{i:04}")).collect();
    assert_eq!(keys, expected, "every write once, in order");
    assert!(errors > 0, "the restart was noticed by the watch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_while_disconnected_relists_to_the_right_state() {
    let backend = common::Backend::etcd().await;
    let direct = backend.store().clone();
    for key in ["keep", "change", "remove"] {
        direct
            .put(&format!("/cmp/{key}"), b"0".to_vec(), 0)
            .await
            .unwrap();
    }
    // The watch reaches etcd through a proxy that the test cuts: it stays disconnected for as
    // long as the test says, whatever its backoff, while the history it needs is compacted.
    let server = backend.server.as_ref().unwrap();
    let proxy = Proxy::start(&server.endpoint()).await;
    let through_proxy = Coord::connect(server.client_config().with_endpoints([proxy.endpoint()]))
        .await
        .unwrap();
    let config = WatchConfig::default()
        .initial_backoff(Duration::from_millis(50))
        .max_backoff(Duration::from_millis(200));
    let mut watch = ResilientWatch::with_config(
        through_proxy.store().clone(),
        KeyRange::prefix("/cmp/"),
        config,
    );
    let WatchEvent::Init { kvs, .. } = watch.next().await.unwrap() else {
        panic!("expected Init")
    };
    let mut state: BTreeMap<String, Vec<u8>> =
        kvs.into_iter().map(|kv| (kv.key, kv.value)).collect();

    proxy.cut();
    let broken = timeout(Duration::from_secs(30), watch.next())
        .await
        .expect("the break is reported");
    assert!(broken.is_err(), "{broken:?}");

    let s = &direct;
    s.put("/cmp/change", b"1".to_vec(), 0).await.unwrap();
    s.delete(&KeyRange::key("/cmp/remove")).await.unwrap();
    s.put("/cmp/new", b"1".to_vec(), 0).await.unwrap();
    let last = s.put("/cmp/change", b"2".to_vec(), 0).await.unwrap();
    s.compact(last.revision).await.unwrap();
    // Retries fail while cut; they must not give up.
    for _ in 0..3 {
        let retry = timeout(Duration::from_secs(30), watch.next())
            .await
            .expect("a failed retry is reported");
        assert!(retry.is_err(), "{retry:?}");
    }
    proxy.restore();

    let resync = loop {
        match timeout(Duration::from_secs(20), watch.next())
            .await
            .expect("watch recovers")
        {
            Ok(event @ WatchEvent::Resync { .. }) => break event,
            Ok(WatchEvent::Progress { .. }) | Err(_) => continue,
            Ok(other) => panic!("expected a resync, got {other:?}"),
        }
    };
    let WatchEvent::Resync { revision, events } = resync else {
        unreachable!()
    };
    assert!(revision >= last.revision);
    for event in events {
        match event.kind {
            EventKind::Put => state.insert(event.kv.key, event.kv.value),
            EventKind::Delete => state.remove(&event.kv.key),
        };
    }
    let expected: BTreeMap<String, Vec<u8>> = [
        ("/cmp/change", b"2"),
        ("/cmp/keep", b"0"),
        ("/cmp/new", b"1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_vec()))
    .collect();
    assert_eq!(state, expected);

    // And it watches on after the resync.
    let put = s.put("/cmp/after", b"x".to_vec(), 0).await.unwrap();
    loop {
        match timeout(Duration::from_secs(10), watch.next())
            .await
            .unwrap()
        {
            Ok(WatchEvent::Events { revision, .. }) => {
                assert_eq!(revision, put.revision);
                break;
            }
            Ok(_) | Err(Error::Unavailable { .. }) => continue,
            Err(e) => panic!("{e}"),
        }
    }
}
