//! Costs that must stay flat as the data grows (issue 11), each beside its raw baseline from
//! the same run, on one etcd started here.
//!
//! `cargo bench -p coord-tests --bench scale` prints:
//! - put → `Live<T>` updated, with 0, 1,000 and 10,000 keys under the prefix that no field
//!   reads: the raw etcd-client watch event on the same key and the same put is the baseline,
//!   and the table shows the median and p99 of the per-put difference (what `Live` adds), and
//!   the client CPU per update.
//!
//! Sequential, one client, loopback.

use std::time::{Duration, Instant};

use coord::testing::EtcdServer;
use coord::{Coord, CoordConfig};

const PUTS: usize = 1_000;
const WARMUP: usize = 50;
const SIZES: [usize; 3] = [0, 1_000, 10_000];

#[derive(CoordConfig, Debug, Clone, PartialEq)]
struct Cfg {
    value: u64,
    #[coord(default = 1)]
    other: u64,
}

/// CPU time (user + system) this process has used.
fn cpu_time() -> Duration {
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid pointer; the call cannot fail with these arguments.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let time = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    time(usage.ru_utime) + time(usage.ru_stime)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

struct Row {
    size: usize,
    raw_p50_us: f64,
    extra_p50_us: f64,
    extra_p99_us: f64,
    cpu_per_update_us: f64,
}

async fn live_row(server: &EtcdServer, size: usize) -> Row {
    let prefix = format!("/scale/{size}");
    let coord = Coord::connect(server.client_config())
        .await
        .expect("connect");
    let store = coord.store();
    for i in 0..size {
        store
            .put(&format!("{prefix}/unbound/{i:05}"), b"{}".to_vec(), 0)
            .await
            .expect("seed");
    }
    store
        .put(&format!("{prefix}/value"), b"0".to_vec(), 0)
        .await
        .expect("seed value");
    let live = coord.live_at::<Cfg>(&prefix).await.expect("bind");
    let mut updates = live.subscribe();
    let mut client = etcd_client::Client::connect(server.endpoints(), None)
        .await
        .expect("raw client");
    let key = format!("{prefix}/value");
    let mut raw_watch = client.watch(key.as_str(), None).await.expect("raw watch");
    let created = raw_watch.message().await.unwrap().unwrap();
    assert!(created.created());

    let mut extra = Vec::with_capacity(PUTS);
    let mut raw = Vec::with_capacity(PUTS);
    let mut cpu = Duration::ZERO;
    for n in 1..=(WARMUP + PUTS) as u64 {
        let cpu_before = cpu_time();
        let started = Instant::now();
        client.put(key.as_str(), n.to_string(), None).await.unwrap();
        let response = raw_watch.message().await.unwrap().unwrap();
        assert!(!response.events().is_empty());
        let raw_seen = started.elapsed();
        updates.changed().await.unwrap();
        let live_seen = started.elapsed();
        assert_eq!(updates.borrow_and_update().value, n);
        if n as usize > WARMUP {
            cpu += cpu_time().saturating_sub(cpu_before);
            raw.push(raw_seen.as_secs_f64() * 1e6);
            extra.push(live_seen.saturating_sub(raw_seen).as_secs_f64() * 1e6);
        }
    }
    raw.sort_by(f64::total_cmp);
    extra.sort_by(f64::total_cmp);
    Row {
        size,
        raw_p50_us: percentile(&raw, 0.5),
        extra_p50_us: percentile(&extra, 0.5),
        extra_p99_us: percentile(&extra, 0.99),
        cpu_per_update_us: cpu.as_secs_f64() * 1e6 / PUTS as f64,
    }
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let server = EtcdServer::start().await.expect("start etcd");
        let mut rows = Vec::new();
        for size in SIZES {
            rows.push(live_row(&server, size).await);
        }
        println!(
            "\n## put → `Live<T>` updated, with unbound keys under the prefix ({PUTS} puts each)\n"
        );
        println!(
            "| keys under the prefix | raw watch event p50 | `Live` beyond raw: p50 | p99 | client CPU per update | CPU vs 0 keys |"
        );
        println!("|---:|---:|---:|---:|---:|---:|");
        let base_cpu = rows[0].cpu_per_update_us;
        for row in &rows {
            println!(
                "| {} | {:.0} µs | {:.1} µs | {:.1} µs | {:.1} µs | {:.2}x |",
                row.size,
                row.raw_p50_us,
                row.extra_p50_us,
                row.extra_p99_us,
                row.cpu_per_update_us,
                row.cpu_per_update_us / base_cpu
            );
        }
        println!("\ntargets: beyond raw p50 ≤ 50 µs; CPU per update ≤ 1.5x the 0-key case");
    });
}
