//! What a prefix's size costs: a bind, a reload and a release of one key under prefixes of
//! 0, 10,000 and 100,000 keys (100-byte values), each beside its baseline from the same run,
//! on one etcd started here.
//!
//! `cargo bench -p coord-tests --bench prefix_sizes` prints, per size:
//!
//! - bind: the time of `live_at` (a map of every key) and resident memory per key after it;
//! - reload: a put of one map entry seen by a raw etcd-client watch and by the `Live`, and
//!   the difference per put (issue 24's target: ≤ 50 µs beyond the raw event);
//! - release: `release_raw` of one key (p50, p99) beside a bare transaction guarded by that
//!   key's mod revision (target ≤ 1.3x at every size), and the bytes each writes to etcd.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use coord::config::Map;
use coord::store::{KeyRange, RangeOptions, Txn, TxnOp};
use coord::testing::EtcdServer;
use coord::{Coord, CoordConfig};
use coord_tests::measure::{percentile, rss_bytes};
use etcd_client::{Compare, CompareOp};

#[derive(CoordConfig, Debug, Clone)]
struct Tenants {
    #[coord(map)]
    tenants: Map<String>,
}

const SIZES: [usize; 3] = [0, 10_000, 100_000];
const RELOADS: usize = 400;
const RELEASES: usize = 400;
/// Each value is a JSON string of 100 bytes.
fn value(n: usize) -> Vec<u8> {
    serde_json::to_vec(&format!("{n:098}")).unwrap()
}

fn stats(mut samples: Vec<f64>) -> (f64, f64) {
    samples.sort_by(f64::total_cmp);
    (percentile(&samples, 0.5), percentile(&samples, 0.99))
}

struct Row {
    size: usize,
    bind_ms: f64,
    bytes_per_key: Option<f64>,
    raw_event: (f64, f64),
    beyond: (f64, f64),
    bare: (f64, f64),
    release: (f64, f64),
    bare_bytes: usize,
    release_bytes: usize,
}

async fn fill(coord: &Coord, prefix: &str, size: usize) {
    for chunk in (0..size).collect::<Vec<_>>().chunks(100) {
        let ops: Vec<TxnOp> = chunk
            .iter()
            .map(|&i| TxnOp::put(format!("{prefix}/tenants/t{i:06}"), value(i)))
            .collect();
        coord.store().txn(Txn::new().and_then(ops)).await.unwrap();
    }
}

async fn measure(server: &EtcdServer, size: usize) -> Row {
    let prefix = format!("/bench/n{size}");
    let filler = Coord::connect(server.client_config()).await.unwrap();
    fill(&filler, &prefix, size).await;
    filler.close().await.unwrap();

    // Bind, on a Coord of its own, with its memory.
    let coord = Coord::connect(server.client_config()).await.unwrap();
    let before = rss_bytes();
    let started = Instant::now();
    let live = coord.live_at::<Tenants>(&prefix).await.expect("bind");
    let bind_ms = started.elapsed().as_secs_f64() * 1e3;
    assert_eq!(live.load().tenants.len(), size);
    let after = rss_bytes();
    let bytes_per_key = (size > 0).then(|| after.saturating_sub(before) as f64 / size as f64);

    // Reload: one put of one entry, seen by a raw etcd-client watch on that key (another
    // connection) and by the Live; "beyond raw" is the difference per put.
    let mut client = etcd_client::Client::connect(server.endpoints(), None)
        .await
        .unwrap();
    let entry = format!("{prefix}/tenants/hot");
    let mut raw_watch = client.watch(entry.as_str(), None).await.unwrap();
    assert!(raw_watch.message().await.unwrap().unwrap().created());
    let mut updates = live.subscribe();
    let (mut raw, mut beyond) = (Vec::new(), Vec::new());
    for n in 0..RELOADS {
        let started = Instant::now();
        client.put(entry.as_str(), value(n), None).await.unwrap();
        let response = raw_watch.message().await.unwrap().unwrap();
        assert!(!response.events().is_empty());
        let raw_seen = started.elapsed();
        updates.changed().await.unwrap();
        let live_seen = started.elapsed();
        assert_eq!(
            updates
                .borrow_and_update()
                .tenants
                .get("hot")
                .map(String::as_str),
            Some(&format!("{n:098}")[..])
        );
        raw.push(raw_seen.as_secs_f64() * 1e6);
        beyond.push(live_seen.saturating_sub(raw_seen).as_secs_f64() * 1e6);
    }

    // A release of one key against a transaction guarded by that key's mod revision.
    let config = coord.config();
    let bare_key = format!("/bench/bare{size}");
    let mut bare_rev = client
        .put(bare_key.as_str(), value(0), None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    let released = "tenants/t000000".to_owned();
    let (mut bare, mut release) = (Vec::new(), Vec::new());
    for n in 0..RELEASES {
        let started = Instant::now();
        let txn = etcd_client::Txn::new()
            .when([Compare::mod_revision(
                bare_key.as_str(),
                CompareOp::Equal,
                bare_rev,
            )])
            .and_then([etcd_client::TxnOp::put(bare_key.as_str(), value(n), None)]);
        let response = client.txn(txn).await.unwrap();
        assert!(response.succeeded());
        bare_rev = response.header().unwrap().revision();
        bare.push(started.elapsed().as_secs_f64() * 1e6);

        let started = Instant::now();
        config
            .release_raw(
                &prefix,
                BTreeMap::from([(released.clone(), serde_json::json!(format!("{n:098}")))]),
            )
            .commit()
            .await
            .expect("release");
        release.push(started.elapsed().as_secs_f64() * 1e6);
    }
    // Bytes one release wrote: its key, its record and the head.
    let key_bytes = |kvs: &[coord::store::KeyValue]| -> usize {
        kvs.iter().map(|kv| kv.key.len() + kv.value.len()).sum()
    };
    let released_kv = coord
        .store()
        .range(
            &KeyRange::key(format!("{prefix}/{released}")),
            RangeOptions::default(),
        )
        .await
        .unwrap();
    let records = coord
        .store()
        .range(
            &KeyRange::prefix(format!("/coord/releases{prefix}//")),
            RangeOptions::default(),
        )
        .await
        .unwrap();
    let head = records
        .kvs
        .iter()
        .find(|kv| kv.key.ends_with("//head"))
        .unwrap();
    let latest = records
        .kvs
        .iter()
        .filter(|kv| !kv.key.ends_with("//head"))
        .max_by_key(|kv| kv.mod_revision)
        .unwrap();
    let release_bytes = key_bytes(&released_kv.kvs)
        + key_bytes(std::slice::from_ref(head))
        + key_bytes(std::slice::from_ref(latest));
    let bare_bytes = bare_key.len() + value(0).len();
    coord.close().await.unwrap();
    Row {
        size,
        bind_ms,
        bytes_per_key,
        raw_event: stats(raw),
        beyond: stats(beyond),
        bare: stats(bare),
        release: stats(release),
        bare_bytes,
        release_bytes,
    }
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let server = EtcdServer::start().await.expect("start etcd");
        let mut rows = Vec::new();
        for size in SIZES {
            rows.push(measure(&server, size).await);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        println!("\n## bind and reload by prefix size (100-byte values)\n");
        println!(
            "| keys | bind | memory per key | raw watch event p50 / p99 | `Live` beyond raw p50 / p99 |"
        );
        println!("|---:|---:|---:|---:|---:|");
        for row in &rows {
            println!(
                "| {} | {:.1} ms | {} | {:.0} / {:.0} µs | {:.1} / {:.1} µs |",
                row.size,
                row.bind_ms,
                row.bytes_per_key
                    .map_or("–".to_owned(), |b| format!("{b:.0} B")),
                row.raw_event.0,
                row.raw_event.1,
                row.beyond.0,
                row.beyond.1,
            );
        }
        println!("\ntarget: put → Live ≤ 50 µs beyond the raw event at every size");
        println!("\n## a release of one key vs a bare guarded transaction ({RELEASES} each)\n");
        println!(
            "| keys | bare txn p50 / p99 | `release_raw` p50 / p99 | p50 vs bare | bytes written (bare / release) |"
        );
        println!("|---:|---:|---:|---:|---:|");
        for row in &rows {
            println!(
                "| {} | {:.0} / {:.0} µs | {:.0} / {:.0} µs | {:.2}x | {} / {} |",
                row.size,
                row.bare.0,
                row.bare.1,
                row.release.0,
                row.release.1,
                row.release.0 / row.bare.0,
                row.bare_bytes,
                row.release_bytes,
            );
        }
        println!("\ntarget: a release of one key ≤ 1.3x the bare transaction at every size");
    });
}
