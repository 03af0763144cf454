//! Locks and instance IDs beside their baselines, on one etcd started here.
//!
//! `cargo bench -p coord-tests --bench locks` prints one table:
//! - uncontended lock acquire+release: coord (`acquire` + `unlock`; after the first lock the
//!   released lease is reused, so one txn each way) vs etcd's own Lock RPC
//!   (`lock` + `unlock` with a lease granted once beforehand, as a client holding a session
//!   would; without a lease the RPC makes a 60 s lease nobody renews);
//! - ID acquire at max_id 16 / 1,024 / 65,536 with the low half already taken: coord (a
//!   random create-only probe that also reads 127 random IDs, then at most one claim txn;
//!   the row shows the mean round trips) vs a naive scan that tries IDs from 0 one by one
//!   with create-only txns (the approach of the original design).
//!
//! Sequential, one client, loopback: latency percentiles and throughput = ops / time spent in
//! the timed operation.

use std::time::{Duration, Instant};

use coord::store::{Compare, KeyRange, Txn, TxnOp};
use coord::testing::EtcdServer;
use coord::{Coord, Locks};
use etcd_client::{Client, LockOptions};

const LOCK_SAMPLES: usize = 1500;
const WARMUP: usize = 50;

struct Row {
    what: String,
    samples: Vec<Duration>,
    wall: Duration,
}

impl Row {
    fn new(what: impl Into<String>, mut samples: Vec<Duration>, wall: Duration) -> Self {
        samples.sort();
        Row {
            what: what.into(),
            samples,
            wall,
        }
    }

    fn percentile(&self, p: f64) -> Duration {
        let i = ((self.samples.len() as f64 - 1.0) * p).round() as usize;
        self.samples[i]
    }

    fn print(&self) {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "| {:<52} | {:>5} | {:>9.3} | {:>9.3} | {:>9.0} |",
            self.what,
            self.samples.len(),
            ms(self.percentile(0.5)),
            ms(self.percentile(0.99)),
            self.samples.len() as f64 / self.wall.as_secs_f64()
        );
    }
}

/// The key prefix of the benchmark service with `max_id` IDs, half of them taken.
fn id_prefix(max_id: u32) -> String {
    format!("/instances/bench{max_id}/")
}

async fn coord_lock_unlock(locks: &Locks) {
    let guard = locks
        .acquire("/bench/lock", Duration::from_secs(10))
        .await
        .unwrap();
    guard.unlock().await.unwrap();
}

async fn rpc_lock_unlock(etcd: &mut Client, lease: i64) {
    let key = etcd
        .lock("/bench/rpc", Some(LockOptions::new().with_lease(lease)))
        .await
        .unwrap()
        .key()
        .to_vec();
    etcd.unlock(key).await.unwrap();
}

/// The same RPCs for a client that gives every lock its own lease.
async fn rpc_lock_unlock_own_lease(etcd: &mut Client) {
    let lease = etcd.lease_grant(10, None).await.unwrap().id();
    rpc_lock_unlock(etcd, lease).await;
    etcd.lease_revoke(lease).await.unwrap();
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let server = EtcdServer::start().await.expect("start etcd");
    let coord = Coord::connect(server.client_config())
        .await
        .expect("connect");
    let mut etcd = Client::connect([server.endpoint()], None)
        .await
        .expect("etcd-client connect");
    let mut rows = Vec::new();

    // --- Locks -----------------------------------------------------------------------------
    // The three variants take turns, and which goes first rotates, so a compaction, an fsync
    // stall or a noisy neighbour hits them alike instead of whichever row runs at that moment.
    let locks = coord.locks();
    let lease = etcd.lease_grant(600, None).await.unwrap().id();
    let mut lock_rows: [Vec<Duration>; 3] = Default::default();
    for round in 0..WARMUP + LOCK_SAMPLES {
        for turn in 0..3 {
            let variant = (round + turn) % 3;
            let t = Instant::now();
            match variant {
                0 => coord_lock_unlock(&locks).await,
                1 => rpc_lock_unlock(&mut etcd, lease).await,
                _ => rpc_lock_unlock_own_lease(&mut etcd).await,
            }
            if round >= WARMUP {
                lock_rows[variant].push(t.elapsed());
            }
        }
    }
    let [ours, rpc, rpc_own_lease] = lock_rows;
    // Rounds are close in time, so the median of per-round differences is steadier than the
    // difference of the two medians when the machine's speed drifts.
    let mut paired: Vec<f64> = ours
        .iter()
        .zip(&rpc)
        .map(|(a, b)| (a.as_secs_f64() - b.as_secs_f64()) * 1e6)
        .collect();
    paired.sort_by(f64::total_cmp);
    let paired_median = paired[paired.len() / 2];
    for (what, samples) in [
        ("lock: coord acquire + unlock (lease reused)", ours),
        ("lock: etcd Lock RPC + Unlock (existing lease)", rpc),
        (
            "lock: etcd LeaseGrant + Lock + Unlock + LeaseRevoke",
            rpc_own_lease,
        ),
    ] {
        let busy = samples.iter().sum();
        rows.push(Row::new(what, samples, busy));
    }

    // --- IDs -------------------------------------------------------------------------------
    // Every service is set up first, so all coord rows see the same database size, and the
    // coord rows take turns as the lock rows do.
    const SIZES: [(u32, usize); 3] = [(16, 200), (1024, 20), (65_536, 2)];
    const ID_SAMPLES: usize = 600;
    let store = coord.store();
    let mut allocators = Vec::new();
    for (max_id, _) in SIZES {
        let prefix = id_prefix(max_id);
        // The low half is taken, as in a fleet at half its size.
        let half = max_id / 2;
        let mut next = 0;
        while next < half {
            let end = (next + 128).min(half);
            let ops = (next..end).map(|i| TxnOp::put(format!("{prefix}{i}"), "taken"));
            store.txn(Txn::new().and_then(ops)).await.unwrap();
            next = end;
        }
        allocators.push(coord.ids(&format!("bench{max_id}"), max_id).await.unwrap());
    }
    let mut id_rows: [(Vec<Duration>, u64); 3] = Default::default();
    for round in 0..WARMUP + ID_SAMPLES {
        for turn in 0..3 {
            let size = (round + turn) % 3;
            // Acquire is timed; the release (one txn) happens after each sample, untimed.
            let round_trips = store.stats().round_trips();
            let t = Instant::now();
            let guard = allocators[size].acquire().await.unwrap();
            let took = t.elapsed();
            let round_trips = store.stats().round_trips() - round_trips;
            guard.release().await.unwrap();
            if round >= WARMUP {
                id_rows[size].0.push(took);
                id_rows[size].1 += round_trips;
            }
        }
    }
    for ((max_id, naive_samples), (samples, round_trips)) in SIZES.into_iter().zip(id_rows) {
        let busy = samples.iter().sum();
        let per_op = round_trips as f64 / samples.len() as f64;
        rows.push(Row::new(
            format!("ids: coord acquire, max_id {max_id} ({per_op:.2} round trips)"),
            samples,
            busy,
        ));

        let prefix = id_prefix(max_id);
        let mut samples = Vec::new();
        for _ in 0..naive_samples {
            let t = Instant::now();
            let mut claimed = None;
            for id in 0..max_id {
                let key = format!("{prefix}{id}");
                let txn = Txn::new()
                    .when([Compare::create_revision(key.as_str(), 0)])
                    .and_then([TxnOp::put(key.as_str(), "naive")]);
                if store.txn(txn).await.unwrap().succeeded {
                    claimed = Some(key);
                    break;
                }
            }
            samples.push(t.elapsed());
            let key = claimed.expect("a free ID");
            store.delete(&KeyRange::key(key)).await.unwrap();
        }
        let busy = samples.iter().sum();
        rows.push(Row::new(
            format!("ids: naive scan from 0, max_id {max_id}"),
            samples,
            busy,
        ));
    }

    println!();
    println!(
        "| {:<52} | {:>5} | {:>9} | {:>9} | {:>9} |",
        "operation (etcd 3.4 on loopback, sequential)", "n", "p50 ms", "p99 ms", "ops/s"
    );
    println!(
        "|{:-<54}|{:->7}|{:->11}|{:->11}|{:->11}|",
        "", "", "", "", ""
    );
    for row in &rows {
        row.print();
    }
    println!();
    println!("lock: median of per-round differences, coord − Lock RPC: {paired_median:+.1} µs");
}
