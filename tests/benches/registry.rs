//! `discover` served from the watched cache vs a direct range, on a real etcd.
//!
//! Starts its own etcd (`coord::testing::EtcdServer`), registers 10 instances of one service
//! from one `Coord`, and measures `discover` from a second `Coord` (so the registrations'
//! keep-alives do not show in its round-trip count): first with the name not watched (one
//! range per call), then with it watched through `registry.cache()` (no round trip). The raw
//! `store.range` of the same prefix is printed beside them.
//!
//! `cargo bench -p coord-tests --bench registry`

use std::future::Future;
use std::time::{Duration, Instant};

use coord::registry::ServiceInfo;
use coord::store::{KeyRange, RangeOptions};
use coord::testing::EtcdServer;
use coord::Coord;

const INSTANCES: usize = 10;
const DIRECT_OPS: usize = 2_000;
const CACHED_OPS: usize = 200_000;

struct Row {
    what: &'static str,
    ops: usize,
    p50: Duration,
    p99: Duration,
    round_trips: u64,
}

async fn measure<F, Fut>(coord: &Coord, what: &'static str, ops: usize, mut op: F) -> Row
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
        assert_eq!(found, INSTANCES, "{what} sees every instance");
    }
    let round_trips = coord.store().stats().round_trips() - before;
    samples.sort();
    Row {
        what,
        ops,
        p50: samples[ops / 2],
        p99: samples[ops * 99 / 100],
        round_trips,
    }
}

fn micros(d: Duration) -> String {
    format!("{:.2} µs", d.as_secs_f64() * 1e6)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = EtcdServer::start().await?;
    let owner = Coord::connect(server.client_config()).await?;
    let registry = owner.registry();
    let mut registrations = Vec::new();
    for i in 0..INSTANCES {
        let info = ServiceInfo::new("bench", format!("bench-{i}"), format!("10.0.0.{i}:50051"))
            .with_version("1.0.0")
            .with_metadata("region", "eu-west");
        registrations.push(registry.register(info, Duration::from_secs(30)).await?);
    }

    let client = Coord::connect(server.client_config()).await?;
    let reader = client.registry();
    let store = client.store().clone();
    let mut rows = Vec::new();
    rows.push(
        measure(
            &client,
            "store.range of the prefix (raw etcd call)",
            DIRECT_OPS,
            || {
                let store = store.clone();
                async move {
                    store
                        .range(
                            &KeyRange::prefix("/services/bench/"),
                            RangeOptions::default(),
                        )
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
            &client,
            "discover, not watched (direct range)",
            DIRECT_OPS,
            || {
                let reader = reader.clone();
                async move { reader.discover("bench").await.map(|v| v.len()).unwrap_or(0) }
            },
        )
        .await,
    );
    let cache = reader.cache("bench").await?;
    // Its store watch opens in the background (one round trip); wait so it is not counted.
    while client.store().stats().open_watches() < 1 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    rows.push(
        measure(&client, "discover, watched (cache)", CACHED_OPS, || {
            let reader = reader.clone();
            async move { reader.discover("bench").await.map(|v| v.len()).unwrap_or(0) }
        })
        .await,
    );
    drop(cache);

    println!();
    println!("registry discover, {INSTANCES} instances, etcd on loopback");
    println!();
    println!("| path | ops | p50 | p99 | round trips |");
    println!("|---|---:|---:|---:|---:|");
    for row in &rows {
        println!(
            "| {} | {} | {} | {} | {} ({:.2} / op) |",
            row.what,
            row.ops,
            micros(row.p50),
            micros(row.p99),
            row.round_trips,
            row.round_trips as f64 / row.ops as f64
        );
    }
    let direct = &rows[1];
    let cached = &rows[2];
    println!();
    println!(
        "cached p50 is {:.0}x faster than the direct range",
        direct.p50.as_secs_f64() / cached.p50.as_secs_f64().max(1e-12)
    );

    for registration in registrations {
        registration.deregister().await?;
    }
    server.stop().await?;
    Ok(())
}
