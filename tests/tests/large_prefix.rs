//! A prefix larger than one gRPC answer (16 MiB as coord sets it; tonic's default is 4 MiB) on a real
//! etcd: ranges are read in pages at one revision, so a read of any size returns every key
//! of one consistent state, and a `Live` binds a map of tens of thousands of entries.

mod common;

use std::time::Duration;

use coord::CoordConfig;
use coord::config::Map;
use coord::store::{KeyRange, RangeOptions, Txn, TxnOp};

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

/// The value a filled key holds, exactly as `fill` wrote it.
fn filled() -> serde_json::Value {
    serde_json::Value::String("x".repeat(VALUE - 2))
}

/// On a prefix over 8 MiB (18.5 MB): ten releases of one key each reach a bound `Live`; their
/// history, a diff and a rollback to the prefix as it was found work and restore exact
/// values; the snapshot on disk holds the whole prefix, and a new `Coord` binds from it while
/// etcd is down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn releases_history_diff_rollback_and_snapshots_work_on_a_prefix_over_8_mib() {
    use std::collections::BTreeMap;

    use coord::Coord;
    use coord::config::{Change, ReleaseKind};

    let mut server = coord::testing::EtcdServer::start()
        .await
        .expect("start etcd (see the error for how to install it)");
    let dir = tempfile::tempdir().unwrap();
    let profile = server
        .client_config()
        .with_snapshot_dir(dir.path())
        .with_sync_interval(common::NO_RESYNC);
    let coord = Coord::connect(profile.clone()).await.unwrap();
    fill(coord.store()).await;
    let live = coord.live::<Tenants>().await.expect("bind 25,000 entries");
    let config = coord.config();
    let name = |i: usize| format!("t{i:06}");

    let mut seqs = Vec::new();
    for i in 0..10 {
        let release = config
            .release_raw(
                "/big",
                BTreeMap::from([(
                    format!("tenants/{}", name(i)),
                    serde_json::json!(format!("v{i}")),
                )]),
            )
            .message(format!("r{i}"))
            .commit()
            .await
            .expect("a release of one key of an 18.5 MB prefix");
        assert_eq!(release.changes.len(), 1);
        seqs.push(release.seq);
        common::eventually(Duration::from_secs(20), "the Live reloads", || async {
            live.load().tenants.get(&name(i)).map(String::as_str) == Some(&format!("v{i}")[..])
        })
        .await;
    }

    let history = config.history("/big", 100).await.unwrap();
    assert_eq!(history.len(), 11, "the prefix as found, then ten releases");
    let found = history.last().unwrap();
    assert_eq!(found.kind, ReleaseKind::External);
    assert!(
        found
            .message
            .as_deref()
            .unwrap_or("")
            .contains(&KEYS.to_string()),
        "{found:?}"
    );
    let diff = config.diff("/big", seqs[0], seqs[9]).await.unwrap();
    assert_eq!(diff.len(), 9, "the keys released after the first");
    assert_eq!(diff[0].key, format!("tenants/{}", name(1)));
    assert_eq!(
        diff[0].change,
        Change::Changed {
            old: filled(),
            new: serde_json::json!("v1")
        }
    );

    let rollback = config
        .rollback("/big", found.seq)
        .commit()
        .await
        .expect("undo ten releases in one transaction");
    assert_eq!(rollback.changes.len(), 10);
    common::eventually(
        Duration::from_secs(20),
        "the Live is rolled back",
        || async { live.load().tenants.get(&name(9)).map(String::as_str) == filled().as_str() },
    )
    .await;
    let value = coord
        .store()
        .range(&KeyRange::key(key(3)), RangeOptions::default())
        .await
        .unwrap();
    assert_eq!(
        value.kvs[0].value,
        serde_json::to_vec(&filled()).unwrap(),
        "exact bytes"
    );

    // The snapshot on disk follows, and a new Coord binds from it with etcd down.
    let revision = live.revision();
    assert!(revision >= rollback.revision);
    common::eventually(
        Duration::from_secs(30),
        "the snapshot is written",
        || async {
            std::fs::read_dir(dir.path()).unwrap().any(|entry| {
                let path = entry.unwrap().path();
                !path.file_name().unwrap().to_str().unwrap().starts_with('.')
                    && std::fs::read(&path).is_ok_and(|bytes| {
                        serde_json::from_slice::<serde_json::Value>(&bytes)
                            .is_ok_and(|json| json["revision"].as_i64() >= Some(revision))
                    })
            })
        },
    )
    .await;
    coord.close().await.unwrap();
    drop(live);
    server.kill().await.unwrap();
    let offline = Coord::connect(profile).await.expect("connect offline");
    let live = offline
        .live::<Tenants>()
        .await
        .expect("bound from the snapshot");
    assert_eq!(live.load().tenants.len(), KEYS);
    assert_eq!(
        live.load().tenants.get(&name(0)).map(String::as_str),
        filled().as_str()
    );
}
