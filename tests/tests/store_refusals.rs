//! What `Store` refuses itself, before any backend sees the request: requests etcd would refuse
//! for size, a NUL in a key, a lease TTL under one second. These checks sit in front of both
//! backends, so they are tested once, on the embedded store; the round-trip counter shows that
//! nothing reached it.

use coord::store::{KeyRange, MAX_REQUEST_BYTES, MAX_TXN_OPS, Txn, TxnOp};
use coord::{Error, Store};

fn assert_invalid<T: std::fmt::Debug>(result: coord::Result<T>, field: &str) {
    match result {
        Err(Error::InvalidArgument { field: f, .. }) => assert_eq!(f, field),
        other => panic!("expected InvalidArgument on `{field}`, got {other:?}"),
    }
}

#[tokio::test]
async fn a_value_over_etcds_request_limit_is_refused_naming_the_key() {
    let store = Store::in_memory();
    let big = vec![b'x'; MAX_REQUEST_BYTES];
    assert_invalid(store.put("/big", big, 0).await, "/big");
    assert_eq!(store.stats().round_trips(), 0, "nothing was sent");
    assert!(store.get("/big").await.unwrap().0.is_none());
}

#[tokio::test]
async fn a_txn_over_the_size_limit_is_refused() {
    let store = Store::in_memory();
    let half = vec![b'x'; MAX_REQUEST_BYTES / 2];
    let txn = Txn::new().and_then([
        TxnOp::put("/half/a", half.clone()),
        TxnOp::put("/half/b", half),
    ]);
    let err = store.txn(txn).await.unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
    assert_eq!(store.stats().round_trips(), 0, "nothing was sent");
}

#[tokio::test]
async fn a_txn_over_128_operations_is_refused() {
    let store = Store::in_memory();
    let ops = (0..=MAX_TXN_OPS).map(|i| TxnOp::put(format!("/many/{i}"), "x"));
    let err = store.txn(Txn::new().and_then(ops)).await.unwrap_err();
    assert!(
        matches!(err, Error::InvalidArgument { ref reason, .. } if reason.contains("129")),
        "{err:?}"
    );
    assert_eq!(store.stats().round_trips(), 0, "nothing was sent");
    // The same transaction one operation shorter is served (on both backends: conformance).
    let ops = (0..MAX_TXN_OPS).map(|i| TxnOp::put(format!("/many/{i}"), "x"));
    assert!(store.txn(Txn::new().and_then(ops)).await.unwrap().succeeded);
}

#[tokio::test]
async fn a_nul_in_a_key_is_refused_everywhere_a_key_goes() {
    let store = Store::in_memory();
    assert_invalid(store.put("/a\0b", vec![], 0).await, "key");
    assert_invalid(store.get("/a\0b").await, "key");
    assert_invalid(store.delete(&KeyRange::prefix("/a\0")).await, "key");
    assert!(store.watch(&KeyRange::key("/a\0b"), 0).await.is_err());
    let txn = Txn::new().and_then([TxnOp::put("/ok", "1"), TxnOp::put("/a\0b", "1")]);
    assert_invalid(store.txn(txn).await, "key");
    assert_eq!(store.stats().round_trips(), 0, "nothing was sent");
    assert!(store.get("/ok").await.unwrap().0.is_none());
}

#[tokio::test]
async fn an_empty_key_is_refused_but_an_empty_prefix_means_every_key() {
    let store = Store::in_memory();
    assert_invalid(store.put("", vec![], 0).await, "key");
    assert_eq!(store.stats().round_trips(), 0, "nothing was sent");
    store.put("/any", vec![], 0).await.unwrap();
    let all = store
        .range(&KeyRange::prefix(""), Default::default())
        .await
        .unwrap();
    assert_eq!(all.count, 1);
}

#[tokio::test]
async fn a_lease_ttl_under_one_second_is_refused() {
    let store = Store::in_memory();
    assert_invalid(store.lease_grant(0).await, "ttl");
    assert_invalid(store.lease_grant(-5).await, "ttl");
    assert_eq!(store.stats().round_trips(), 0, "nothing was sent");
    // One second is allowed, and raised to etcd's minimum (conformance checks both backends).
    assert_eq!(store.lease_grant(1).await.unwrap().ttl, 2);
}
