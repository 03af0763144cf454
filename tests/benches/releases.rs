//! A release (values + record + head in one guarded transaction) against the bare
//! transaction that writes the same keys, on one etcd started here, same run.
//!
//! `cargo bench -p coord-tests --bench releases` prints one row per path: p50 and p99 of
//! 1,000 sequential writes of a 4-key struct from one `Coord` (the three paths take turns,
//! write after write, so the machine's load falls on all alike), and the ratio of each p50 to
//! the bare transaction's. Issue 12's target: a release ≤ 1.3x the bare transaction.

use std::time::Instant;

use coord::testing::EtcdServer;
use coord::{Coord, CoordConfig};
use coord_tests::measure::percentile;

const WRITES: usize = 1_000;
const WARMUP: usize = 50;

#[derive(CoordConfig, Debug, Clone, PartialEq)]
#[coord(prefix = "/bench/releases")]
struct Checkout {
    timeout_secs: u64,
    retries: u32,
    region: String,
    rate_limit: u32,
}

fn value(n: u64) -> Checkout {
    Checkout {
        timeout_secs: n,
        retries: 3,
        region: "eu-west-1".into(),
        rate_limit: 1_000,
    }
}

/// Runs the three paths in turn, write after write, so drift in the machine's load falls on
/// all three alike, each on its own prefix (a write to a prefix between two releases of it
/// would cost the second one a retry); returns each path's (p50, p99) in µs.
async fn measure(config: &coord::config::ConfigCenter) -> [(f64, f64); 3] {
    let mut samples: [Vec<f64>; 3] = Default::default();
    for n in 0..(WARMUP + WRITES) as u64 {
        let mut times = [0.0; 3];
        let started = Instant::now();
        let batch = config
            .batch()
            .publish_at("/bench/bare", &value(n))
            .expect("valid");
        batch.commit().await.expect("bare txn");
        times[0] = started.elapsed().as_secs_f64() * 1e6;
        let started = Instant::now();
        config
            .release_at("/bench/release", &value(n))
            .message("bench")
            .commit()
            .await
            .expect("release");
        times[1] = started.elapsed().as_secs_f64() * 1e6;
        let started = Instant::now();
        config
            .publish_at("/bench/publish", &value(n))
            .await
            .expect("publish");
        times[2] = started.elapsed().as_secs_f64() * 1e6;
        if n as usize >= WARMUP {
            for (path, time) in samples.iter_mut().zip(times) {
                path.push(time);
            }
        }
    }
    samples.map(|mut path| {
        path.sort_by(f64::total_cmp);
        (percentile(&path, 0.5), percentile(&path, 0.99))
    })
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let server = EtcdServer::start().await.expect("start etcd");
        let coord = Coord::connect(server.client_config())
            .await
            .expect("connect");
        let config = coord.config();

        let [bare, release, publish] = measure(config).await;

        println!(
            "\n## a release vs the bare transaction writing the same keys ({WRITES} writes each)\n"
        );
        println!("| path | p50 | p99 | p50 vs bare |");
        println!("|---|---:|---:|---:|");
        let rows = [
            (
                "bare transaction of the 4 keys (`batch().publish(..)`)",
                bare,
            ),
            ("`release(..).message(..).commit()`", release),
            ("`publish(..)` (a release without a message)", publish),
        ];
        for (what, (p50, p99)) in rows {
            println!(
                "| {what} | {p50:.0} µs | {p99:.0} µs | {:.2}x |",
                p50 / bare.0
            );
        }
        println!("\ntarget: a release ≤ 1.3x the bare transaction");
    });
}
