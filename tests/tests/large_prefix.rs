//! A prefix larger than one gRPC answer (16 MiB as coord sets it; tonic's default is 4 MiB) on a real
//! etcd: ranges are read in pages at one revision, so a read of any size returns every key
//! of one consistent state, and a `Live` binds a map of tens of thousands of entries.

mod common;

use std::time::Duration;

use coord::config::Map;
use coord::store::{KeyRange, RangeOptions, Txn, TxnOp};
use coord::CoordConfig;

const KEYS: usize = 25_000;
/// 25,000 values of 720 bytes and their keys: about 18.5 MB, over what one answer may hold
/// (16 MiB here, tonic's default 4 MiB).
const VALUE: usize = 720;

#[derive(CoordConfig, Debug, Clone)]
#[coord(prefix = "/big")]
struct Tenants {
    #[coord(map)]
    tenants: Map<String>,
}

fn key(i: usize) -> String {
    format!("/big/tenants/t{i:06}")
}

async fn fill(store: &coord::Store) {
    let value = serde_json::to_vec(&"x".repeat(VALUE - 2)).unwrap();
    for chunk in (0..KEYS).collect::<Vec<_>>().chunks(100) {
        let ops: Vec<TxnOp> = chunk
            .iter()
            .map(|&i| TxnOp::put(key(i), value.clone()))
            .collect();
        store.txn(Txn::new().and_then(ops)).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_over_one_answer_is_read_whole_at_one_revision_and_binds() {
    let b = common::Backend::etcd().await;
    let store = b.store();
    fill(store).await;

    let all = store
        .range(&KeyRange::prefix("/big/"), RangeOptions::default())
        .await
        .expect("an 18.5 MB prefix is read in pages");
    assert_eq!(all.kvs.len(), KEYS);
    assert_eq!(all.count, KEYS as i64);
    assert!(
        all.kvs.windows(2).all(|w| w[0].key < w[1].key),
        "in key order, once each"
    );
    assert!(all.kvs.iter().all(|kv| kv.mod_revision <= all.revision));
    let keys_only = store
        .range(
            &KeyRange::prefix("/big/"),
            RangeOptions::default().keys_only(),
        )
        .await
        .unwrap();
    assert_eq!(keys_only.kvs.len(), KEYS);

    let live = b
        .coord
        .live::<Tenants>()
        .await
        .expect("bind 25,000 entries");
    assert_eq!(live.load().tenants.len(), KEYS);
    assert_eq!(
        b.coord.config().list("/big/tenants").await.unwrap().len(),
        KEYS
    );

    // Two keys at either end of the prefix always change together: a read that mixed
    // revisions would see them differ.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let store = store.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut n = 0_u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                let both = vec![
                    TxnOp::put("/big/a-first", n.to_string()),
                    TxnOp::put("/big/zz-last", n.to_string()),
                ];
                store.txn(Txn::new().and_then(both)).await.unwrap();
            }
            n
        })
    };
    for _ in 0..3 {
        let read = store
            .range(&KeyRange::prefix("/big/"), RangeOptions::default())
            .await
            .unwrap();
        let value = |k: &str| {
            read.kvs
                .iter()
                .find(|kv| kv.key == k)
                .map(|kv| kv.value.clone())
        };
        assert_eq!(value("/big/a-first"), value("/big/zz-last"), "a torn read");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let writes = tokio::time::timeout(Duration::from_secs(10), writer)
        .await
        .unwrap()
        .unwrap();
    assert!(
        writes > 3,
        "the writer wrote while the reads ran ({writes} writes)"
    );
}
