//! The registry's read paths beside the raw etcd calls they are built on, at 10 and 1,000
//! instances of one service, on a real etcd started here (`coord::testing::EtcdServer`).
//!
//! 1. `discover`: the raw `store.range` of the service's prefix, `discover` with the name not
//!    watched (one range per call), and `discover` with the name watched through
//!    `registry.cache()` (no round trip), from a second `Coord` so that no keep-alive shows in
//!    its round-trip count.
//! 2. Watcher latency: from the start of a put that updates one instance until a
//!    `Registry::watch` stream yields the `Updated`, beside the same put (same value size) seen
//!    on a raw etcd-client watch of another prefix. Blocks of the two alternate, so both see
//!    the same machine over time; "beyond raw" is the difference of the medians: the work the
//!    registry adds to each change.
//!
//! The instances are written with raw puts (what a registration writes, without 1,000 leases).
//!
//! `cargo bench -p coord-tests --bench registry`

use std::future::Future;
use std::time::{Duration, Instant};

use coord::registry::{ServiceEvent, ServiceInfo};
use coord::store::{KeyRange, RangeOptions};
use coord::testing::EtcdServer;
use coord::Coord;
use futures::StreamExt;

/// The sizes measured.
const SIZES: [usize; 2] = [10, 1_000];
/// Puts per path in the latency table, in alternating blocks.
const PUTS: usize = 1_000;
const BLOCK: usize = 100;

struct Row {
    what: &'static str,
    instances: usize,
    ops: usize,
    p50: Duration,
    p99: Duration,
    round_trips: u64,
}

async fn measure<F, Fut>(
    coord: &Coord,
    what: &'static str,
    instances: usize,
    ops: usize,
    mut op: F,
) -> Row
where
    F: FnMut() -> Fut,
    Fut: Future<Output = usize>,
{
    // Warm up (connections, caches) outside the measurement.
    for _ in 0..ops.min(200) {
        op().await;
    }
    let mut samples = Vec::with_capacity(ops);
    let before = coord.store().stats().round_trips();
    for _ in 0..ops {
        let started = Instant::now();
        let found = op().await;
        samples.push(started.elapsed());
        assert_eq!(found, instances, "{what} sees every instance");
    }
    let round_trips = coord.store().stats().round_trips() - before;
    samples.sort();
    Row {
        what,
        instances,
        ops,
        p50: percentile(&samples, 0.5),
        p99: percentile(&samples, 0.99),
        round_trips,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn micros(d: Duration) -> String {
    format!("{:.2} µs", d.as_secs_f64() * 1e6)
}

fn instance(name: &str, i: usize, version: u64) -> ServiceInfo {
    ServiceInfo::new(
        name,
        format!("{name}-{i:04}"),
        format!("10.0.{}.{}:50051", i / 256, i % 256),
    )
    .with_version(version.to_string())
    .with_metadata("region", "eu-west")
}

async fn put(client: &mut etcd_client::Client, info: &ServiceInfo) {
    let value = serde_json::to_vec(info).expect("encode");
    client.put(info.key(), value, None).await.expect("put");
}

/// The `discover` rows for a service of `n` instances.
async fn discover_rows(client: &Coord, service: &'static str, n: usize) -> Vec<Row> {
    let (direct_ops, cached_ops) = if n <= 10 {
        (2_000, 200_000)
    } else {
        (300, 50_000)
    };
    let reader = client.registry();
    let store = client.store().clone();
    let mut rows = Vec::new();
    let prefix = format!("/services/{service}/");
    rows.push(
        measure(
            client,
            "`store.range` of the prefix (raw etcd call)",
            n,
            direct_ops,
            || {
                let (store, prefix) = (store.clone(), prefix.clone());
                async move {
                    store
                        .range(&KeyRange::prefix(prefix.as_str()), RangeOptions::default())
                        .await
                        .map(|r| r.kvs.len())
                        .unwrap_or(0)
                }
            },
        )
        .await,
    );
    rows.push(
        measure(
            client,
            "`discover`, name not watched (direct range)",
            n,
            direct_ops,
            || {
                let reader = reader.clone();
                async move { reader.discover(service).await.map(|v| v.len()).unwrap_or(0) }
            },
        )
        .await,
    );
    let watches = client.store().stats().open_watches();
    let cache = reader.cache(service).await.expect("cache");
    // Its store watch opens in the background (one round trip); wait so it is not counted.
    while client.store().stats().open_watches() <= watches {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    rows.push(
        measure(
            client,
            "`discover`, name watched (cache)",
            n,
            cached_ops,
            || {
                let reader = reader.clone();
                async move { reader.discover(service).await.map(|v| v.len()).unwrap_or(0) }
            },
        )
        .await,
    );
    drop(cache);
    rows
}

/// p50 and p99 from the start of a put to the change seen: on a raw watch, then on a
/// `Registry::watch` of a service of `n` instances.
async fn latency(
    server: &EtcdServer,
    client: &Coord,
    service: &'static str,
    n: usize,
) -> [(Duration, Duration); 2] {
    let mut raw_client = etcd_client::Client::connect(server.endpoints(), None)
        .await
        .expect("raw client");
    let raw_key = format!("/bench-raw/{service}/");
    let options = etcd_client::WatchOptions::new().with_prefix();
    let mut raw_watch = raw_client
        .watch(raw_key.as_str(), Some(options))
        .await
        .expect("raw watch");
    let created = raw_watch.message().await.expect("watch").expect("created");
    assert!(created.created());
    let mut watcher = client.registry().watch(service).await.expect("watch");
    for _ in 0..n {
        assert!(matches!(
            watcher.next().await,
            Some(ServiceEvent::Registered(_))
        ));
    }

    let changed = n / 2;
    let (mut raw, mut ours) = (Vec::new(), Vec::new());
    let mut version = 1_000u64;
    for _ in 0..PUTS / BLOCK {
        for _ in 0..BLOCK {
            version += 1;
            // The same value as below, under a key no registry watch covers.
            let info = instance(service, changed, version);
            let value = serde_json::to_vec(&info).expect("encode");
            let started = Instant::now();
            raw_client
                .put(format!("{raw_key}{}", info.id), value, None)
                .await
                .expect("put");
            let response = raw_watch.message().await.expect("watch").expect("event");
            assert!(!response.events().is_empty());
            raw.push(started.elapsed());
        }
        for _ in 0..BLOCK {
            version += 1;
            let info = instance(service, changed, version);
            let started = Instant::now();
            put(&mut raw_client, &info).await;
            match watcher.next().await {
                Some(ServiceEvent::Updated(seen)) => assert_eq!(seen.version, info.version),
                other => panic!("expected the update, got {other:?}"),
            }
            ours.push(started.elapsed());
        }
    }
    raw.sort();
    ours.sort();
    [
        (percentile(&raw, 0.5), percentile(&raw, 0.99)),
        (percentile(&ours, 0.5), percentile(&ours, 0.99)),
    ]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = EtcdServer::start().await?;
    let mut writer = etcd_client::Client::connect(server.endpoints(), None).await?;
    let services: [&'static str; 2] = ["bench", "bench1k"];
    for (service, n) in services.into_iter().zip(SIZES) {
        for i in 0..n {
            put(&mut writer, &instance(service, i, 1)).await;
        }
    }

    let client = Coord::connect(server.client_config()).await?;
    let mut rows = Vec::new();
    for (service, n) in services.into_iter().zip(SIZES) {
        rows.extend(discover_rows(&client, service, n).await);
    }
    println!();
    println!("## registry discover, etcd on loopback");
    println!();
    println!("| path | instances | ops | p50 | p99 | round trips |");
    println!("|---|---:|---:|---:|---:|---:|");
    for row in &rows {
        println!(
            "| {} | {} | {} | {} | {} | {} ({:.2} / op) |",
            row.what,
            row.instances,
            row.ops,
            micros(row.p50),
            micros(row.p99),
            row.round_trips,
            row.round_trips as f64 / row.ops as f64
        );
    }
    println!();
    for group in rows.chunks(3) {
        let (direct, cached) = (&group[1], &group[2]);
        println!(
            "{} instances: cached p50 is {:.0}x faster than the direct range",
            cached.instances,
            direct.p50.as_secs_f64() / cached.p50.as_secs_f64().max(1e-12)
        );
    }

    let mut latencies = Vec::new();
    for (service, n) in services.into_iter().zip(SIZES) {
        latencies.push((n, latency(&server, &client, service, n).await));
    }
    println!();
    println!("## watcher latency (start of put → change seen; {PUTS} puts per path)");
    println!();
    println!("| instances | raw etcd-client watch event p50 / p99 | `Registry::watch` `Updated` p50 / p99 | beyond raw (p50) |");
    println!("|---:|---:|---:|---:|");
    for (n, [(raw50, raw99), (ours50, ours99)]) in latencies {
        let beyond = ours50.as_secs_f64() - raw50.as_secs_f64();
        println!(
            "| {n} | {} / {} | {} / {} | {:+.2} µs |",
            micros(raw50),
            micros(raw99),
            micros(ours50),
            micros(ours99),
            beyond * 1e6
        );
    }

    server.stop().await?;
    Ok(())
}
