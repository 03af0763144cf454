//! How much `Live<T>` costs beside what it is built from, printed as tables.
//!
//! 1. Reads: `Live::load()` and `live.reader().load()` against a raw `ArcSwap::load()`,
//!    `arc_swap::Cache::load()` and an `RwLock<Arc<T>>` read, on 1 and 2 threads.
//! 2. Reload latency on a real etcd (started here): from the start of a put until a `Live`
//!    holds the new value, against the same put seen on a raw etcd-client watch.
//!
//! `cargo bench -p coord-tests --bench live`

use std::hint::black_box;
use std::sync::{Arc, Barrier, RwLock};
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, Cache};
use coord::testing::EtcdServer;
use coord::{Coord, CoordConfig, Live};

#[derive(CoordConfig, Debug, Clone, PartialEq)]
#[coord(prefix = "/bench/cfg")]
struct Cfg {
    #[coord(default = 1)]
    value: u64,
    #[coord(default)]
    name: String,
}

const READS: u64 = 20_000_000;
const RUNS: usize = 5;

/// Median ns per read of `read` on `threads` threads, each with its own state from `make`.
fn per_read<S, M, R>(threads: usize, make: M, read: R) -> f64
where
    M: Fn() -> S + Sync,
    R: Fn(&mut S) -> u64 + Sync,
{
    let mut runs: Vec<f64> = (0..RUNS)
        .map(|_| {
            let barrier = Barrier::new(threads);
            let totals: Vec<f64> = std::thread::scope(|scope| {
                let handles: Vec<_> = (0..threads)
                    .map(|_| {
                        scope.spawn(|| {
                            let mut state = make();
                            barrier.wait();
                            let started = Instant::now();
                            let mut sum = 0u64;
                            for _ in 0..READS {
                                sum = sum.wrapping_add(read(black_box(&mut state)));
                            }
                            black_box(sum);
                            started.elapsed().as_nanos() as f64 / READS as f64
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            totals.iter().sum::<f64>() / threads as f64
        })
        .collect();
    runs.sort_by(f64::total_cmp);
    runs[RUNS / 2]
}

fn read_table(live: &Live<Cfg>) {
    let value = Arc::new(live.load_full().as_ref().clone());
    let swap = Arc::new(ArcSwap::new(Arc::clone(&value)));
    let lock = Arc::new(RwLock::new(Arc::clone(&value)));
    println!("\n## Reads (ns per read, median of {RUNS} runs of {READS} reads per thread)\n");
    println!("| read | 1 thread | 2 threads |");
    println!("|---|---|---|");
    type Measure<'a> = Box<dyn Fn(usize) -> f64 + 'a>;
    let rows: [(&str, Measure); 5] = [
        (
            "`ArcSwap::load()` (raw)",
            Box::new(|t| per_read(t, || (), |_| swap.load().value)),
        ),
        (
            "`Live::load()`",
            Box::new(|t| per_read(t, || (), |_| live.load().value)),
        ),
        (
            "`arc_swap::Cache::load()` (raw)",
            Box::new(|t| per_read(t, || Cache::new(Arc::clone(&swap)), |c| c.load().value)),
        ),
        (
            "`LiveReader::load()`",
            Box::new(|t| per_read(t, || live.reader(), |r| r.load().value)),
        ),
        (
            "`RwLock<Arc<T>>` read",
            Box::new(|t| per_read(t, || (), |_| lock.read().unwrap().value)),
        ),
    ];
    for (name, measure) in rows {
        println!("| {name} | {:.2} | {:.2} |", measure(1), measure(2));
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

async fn reload_table() {
    const PUTS: usize = 2_000;
    const BLOCK: usize = 200;
    let server = EtcdServer::start().await.expect("start etcd");
    let coord = Coord::connect(server.client_config())
        .await
        .expect("connect");
    let live = coord.live::<Cfg>().await.expect("bind");
    let mut updates = live.subscribe();
    let mut client = etcd_client::Client::connect(server.endpoints(), None)
        .await
        .expect("raw client");
    let mut raw_watch = client.watch("/bench/raw", None).await.expect("raw watch");
    let created = raw_watch.message().await.unwrap().unwrap();
    assert!(created.created());

    let (mut raw, mut ours) = (Vec::new(), Vec::new());
    let mut n = 0u64;
    // Alternate blocks so both paths see the same machine over time.
    for _ in 0..PUTS / BLOCK {
        for _ in 0..BLOCK {
            n += 1;
            let started = Instant::now();
            client.put("/bench/raw", n.to_string(), None).await.unwrap();
            let response = raw_watch.message().await.unwrap().unwrap();
            assert!(!response.events().is_empty());
            raw.push(started.elapsed());
        }
        for _ in 0..BLOCK {
            n += 1;
            let started = Instant::now();
            client
                .put("/bench/cfg/value", n.to_string(), None)
                .await
                .unwrap();
            updates.changed().await.unwrap();
            ours.push(started.elapsed());
            assert_eq!(updates.borrow_and_update().value, n);
        }
    }
    raw.sort();
    ours.sort();
    println!("\n## Reload latency on etcd (start of put → value seen; {PUTS} puts each)\n");
    println!("| path | p50 | p99 |");
    println!("|---|---|---|");
    for (name, samples) in [
        ("raw etcd-client watch event", &raw),
        ("`Live<T>` updated (`subscribe()` woken)", &ours),
    ] {
        println!(
            "| {name} | {:.0} µs | {:.0} µs |",
            percentile(samples, 0.5).as_secs_f64() * 1e6,
            percentile(samples, 0.99).as_secs_f64() * 1e6
        );
    }
    let ratio = percentile(&ours, 0.5).as_secs_f64() / percentile(&raw, 0.5).as_secs_f64();
    println!("\np50 ratio Live / raw: {ratio:.2} (target ≤ 1.2)");
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let coord = Coord::in_memory();
    let live = runtime.block_on(coord.live::<Cfg>()).expect("bind");
    read_table(&live);
    runtime.block_on(reload_table());
}
