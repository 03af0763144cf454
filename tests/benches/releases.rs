//! A release (values + record + head in one guarded transaction) against the bare
//! transaction that writes the same keys, on one etcd started here, same run.
//!
//! `cargo bench -p coord-tests --bench releases` prints one row per path: p50 and p99 of
//! 1,000 sequential writes of a 4-key struct from one `Coord`, and the ratio of each p50 to
//! the bare transaction's. Issue 12's target: a release ≤ 1.3x the bare transaction.

use std::time::Instant;

use coord::testing::EtcdServer;
use coord::{Coord, CoordConfig};

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

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

async fn measure<F, Fut>(mut write: F) -> (f64, f64)
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut samples = Vec::with_capacity(WRITES);
    for n in 0..(WARMUP + WRITES) as u64 {
        let started = Instant::now();
        write(n).await;
        if n as usize >= WARMUP {
            samples.push(started.elapsed().as_secs_f64() * 1e6);
        }
    }
    samples.sort_by(f64::total_cmp);
    (percentile(&samples, 0.5), percentile(&samples, 0.99))
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let server = EtcdServer::start().await.expect("start etcd");
        let coord = Coord::connect(server.client_config())
            .await
            .expect("connect");
        let config = coord.config();

        let bare = measure(|n| {
            let batch = config.batch().publish(&value(n)).expect("valid");
            async move {
                batch.commit().await.expect("bare txn");
            }
        })
        .await;
        let release = measure(|n| async move {
            config
                .release(&value(n))
                .message("bench")
                .commit()
                .await
                .expect("release");
        })
        .await;
        let publish = measure(|n| async move {
            config.publish(&value(n)).await.expect("publish");
        })
        .await;

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
