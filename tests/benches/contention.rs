//! Releases of one prefix under contention against the same writers doing bare guarded
//! transactions, on a 3-member etcd cluster started here, same run.
//!
//! `cargo bench -p coord-tests --bench contention` runs 16 writers (one `Coord` each, every
//! member's endpoint given) that each commit 20 changes of one shared prefix, first as
//! releases (`release_raw` of the writer's own key, no `expect_latest`: a lost race reads
//! again after a jittered pause), then as the bare optimistic loop a client would write by
//! hand (read the head key's version, one transaction guarded by it that writes the key and
//! the head, retry at once on a lost race). It prints commits per second and the p50 / p99
//! of a commit (from the first attempt to success) for both. Issue 24's target: every release
//! commits and releases reach ≥ 0.5x the bare throughput.

use std::time::{Duration, Instant};

use coord::store::{Compare, KeyRange, RangeOptions, Txn, TxnOp};
use coord::testing::EtcdCluster;
use coord::Coord;
use coord_tests::measure::percentile;
use serde_json::json;

const WRITERS: usize = 16;
const CHANGES: usize = 20;

/// Commits per second and each commit's time in µs, sorted.
struct Run {
    per_second: f64,
    times: Vec<f64>,
}

async fn releases(coords: &[Coord]) -> Run {
    let started = Instant::now();
    let writers = coords.iter().enumerate().map(|(w, coord)| async move {
        // Every record kept, so the history can be checked whole.
        let config = coord.config().with_release_history(WRITERS * CHANGES);
        let mut times = Vec::new();
        for n in 0..CHANGES {
            let one = Instant::now();
            config
                .release_raw(
                    "/bench/contention/release",
                    [(format!("w{w}"), json!(n))].into_iter().collect(),
                )
                .timeout(Duration::from_secs(60))
                .commit()
                .await
                .expect("every release commits");
            times.push(one.elapsed().as_secs_f64() * 1e6);
        }
        times
    });
    finish(started, futures::future::join_all(writers).await)
}

async fn bare(coords: &[Coord]) -> Run {
    let head = "/bench/contention/bare/head";
    let started = Instant::now();
    let writers = coords.iter().enumerate().map(|(w, coord)| async move {
        let store = coord.store();
        let mut times = Vec::new();
        for n in 0..CHANGES {
            let one = Instant::now();
            loop {
                let read = store
                    .range(&KeyRange::key(head), RangeOptions::default())
                    .await
                    .expect("read the head");
                let version = read.kvs.first().map_or(0, |kv| kv.mod_revision);
                let txn = Txn::new()
                    .when([Compare::mod_revision(head, version)])
                    .and_then([
                        TxnOp::put(format!("/bench/contention/bare/w{w}"), n.to_string()),
                        TxnOp::put(head, format!("{w}/{n}")),
                    ]);
                if store.txn(txn).await.expect("bare txn").succeeded {
                    break;
                }
            }
            times.push(one.elapsed().as_secs_f64() * 1e6);
        }
        times
    });
    finish(started, futures::future::join_all(writers).await)
}

fn finish(started: Instant, per_writer: Vec<Vec<f64>>) -> Run {
    let elapsed = started.elapsed().as_secs_f64();
    let mut times: Vec<f64> = per_writer.into_iter().flatten().collect();
    times.sort_by(f64::total_cmp);
    Run {
        per_second: times.len() as f64 / elapsed,
        times,
    }
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let cluster = EtcdCluster::start(3).await.expect("start a 3-member etcd");
        let mut coords = Vec::new();
        for _ in 0..WRITERS {
            coords.push(
                Coord::connect(cluster.client_config())
                    .await
                    .expect("connect"),
            );
        }
        let bare = bare(&coords).await;
        let release = releases(&coords).await;
        let history = coords[0]
            .config()
            .history("/bench/contention/release", 1000)
            .await
            .expect("history");
        assert_eq!(
            history.len(),
            WRITERS * CHANGES,
            "every release recorded once"
        );

        println!("\n## {WRITERS} writers x {CHANGES} changes of one prefix, 3-member cluster\n");
        println!("| path | commits/s | p50 | p99 | throughput vs bare |");
        println!("|---|---:|---:|---:|---:|");
        for (what, run) in [
            ("bare guarded transaction, retried at once", &bare),
            ("`release_raw(..).commit()`, jittered retries", &release),
        ] {
            println!(
                "| {what} | {:.0} | {:.1} ms | {:.1} ms | {:.2}x |",
                run.per_second,
                percentile(&run.times, 0.5) / 1e3,
                percentile(&run.times, 0.99) / 1e3,
                run.per_second / bare.per_second
            );
        }
        println!("\ntarget: every release commits; releases >= 0.5x the bare throughput");
        for coord in coords {
            coord.close().await.expect("close");
        }
    });
}
