//! Costs that must stay flat as the data grows (issue 11), each beside its raw baseline from
//! the same run, on one etcd started here.
//!
//! `cargo bench -p coord-tests --bench scale` prints, each section run in a process of its own
//! (`-- live`, `-- handles` or `-- registrations` runs one):
//! - put → `Live<T>` updated, with 0, 1,000 and 10,000 keys under the prefix that no field
//!   reads, and with a 10,000-entry map field (`Map<V>`, then `HashMap`) of which each put
//!   changes one entry: the raw etcd-client watch event on the same key and the same put is the baseline,
//!   and the table shows the median and p99 of the per-put difference (what `Live` adds), and
//!   the client CPU per update;
//! - 1,000 `Live` handles on 1,000 prefixes: bind time and resident memory per handle, and the
//!   gRPC watch streams they use, beside 1,000 raw etcd-client prefix watches;
//! - 1,000 registrations on one `Coord`: keep-alive and watch streams, resident memory per
//!   registration, and the client's idle CPU while they are kept alive.
//!
//! Sequential, one client, loopback.

use std::time::{Duration, Instant};

use coord::testing::EtcdServer;
use coord::{Coord, CoordConfig};
use coord_tests::measure::{percentile, rss_bytes};

const PUTS: usize = 1_000;
const WARMUP: usize = 50;
const SIZES: [usize; 3] = [0, 1_000, 10_000];

#[derive(CoordConfig, Debug, Clone, PartialEq)]
struct Cfg {
    value: u64,
    #[coord(default = 1)]
    other: u64,
}

/// A map field whose entries are all bound: one entry changes per put.
#[derive(CoordConfig, Debug, Clone, PartialEq)]
struct MapCfg {
    #[coord(default = 1)]
    other: u64,
    #[coord(map)]
    tenants: coord::config::Map<u64>,
}

/// The same with a std map, whose unchanged entries are cloned on every rebuild.
#[derive(CoordConfig, Debug, Clone, PartialEq)]
struct StdMapCfg {
    #[coord(default = 1)]
    other: u64,
    #[coord(map)]
    tenants: std::collections::HashMap<String, u64>,
}

/// What a row binds: `T` at the prefix, `size` seeded keys (`seeded(i)`, relative), and the
/// one key each put changes, read back from `T` by `current`.
struct Shape<T> {
    what: &'static str,
    size: usize,
    seeded: fn(usize) -> String,
    changed: &'static str,
    current: fn(&T) -> u64,
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

struct Row {
    what: &'static str,
    size: usize,
    raw_p50_us: f64,
    extra_p50_us: f64,
    extra_p99_us: f64,
    cpu_per_update_us: f64,
}

async fn live_row<T: CoordConfig + std::fmt::Debug>(server: &EtcdServer, shape: Shape<T>) -> Row {
    static ROWS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let row = ROWS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let prefix = format!("/scale/{row}");
    let coord = Coord::connect(server.client_config())
        .await
        .expect("connect");
    let store = coord.store();
    for i in 0..shape.size {
        store
            .put(&format!("{prefix}/{}", (shape.seeded)(i)), b"0".to_vec(), 0)
            .await
            .expect("seed");
    }
    let key = format!("{prefix}/{}", shape.changed);
    store.put(&key, b"0".to_vec(), 0).await.expect("seed value");
    let live = coord.live_at::<T>(&prefix).await.expect("bind");
    let mut updates = live.subscribe();
    let mut client = etcd_client::Client::connect(server.endpoints(), None)
        .await
        .expect("raw client");
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
        assert_eq!((shape.current)(&updates.borrow_and_update()), n);
        if n as usize > WARMUP {
            cpu += cpu_time().saturating_sub(cpu_before);
            raw.push(raw_seen.as_secs_f64() * 1e6);
            extra.push(live_seen.saturating_sub(raw_seen).as_secs_f64() * 1e6);
        }
    }
    raw.sort_by(f64::total_cmp);
    extra.sort_by(f64::total_cmp);
    Row {
        what: shape.what,
        size: shape.size,
        raw_p50_us: percentile(&raw, 0.5),
        extra_p50_us: percentile(&extra, 0.5),
        extra_p99_us: percentile(&extra, 0.99),
        cpu_per_update_us: cpu.as_secs_f64() * 1e6 / PUTS as f64,
    }
}

const HANDLES: usize = 1_000;

struct HandlesRow {
    what: &'static str,
    per_handle_bind_us: f64,
    per_handle_kib: f64,
    streams: String,
}

async fn handles_rows(server: &EtcdServer) -> [HandlesRow; 2] {
    let coord = Coord::connect(server.client_config())
        .await
        .expect("connect");
    for i in 0..HANDLES {
        coord
            .store()
            .put(&format!("/handles/{i:04}/value"), b"1".to_vec(), 0)
            .await
            .expect("seed");
    }
    let rss = rss_bytes();
    let started = Instant::now();
    let mut lives = Vec::with_capacity(HANDLES);
    for i in 0..HANDLES {
        lives.push(
            coord
                .live_at::<Cfg>(&format!("/handles/{i:04}"))
                .await
                .expect("bind"),
        );
    }
    let ours = HandlesRow {
        what: "`coord.live_at::<T>(prefix)`",
        per_handle_bind_us: started.elapsed().as_secs_f64() * 1e6 / HANDLES as f64,
        per_handle_kib: rss_bytes().saturating_sub(rss) as f64 / 1024.0 / HANDLES as f64,
        streams: coord.store().watch_streams().to_string(),
    };

    let client = etcd_client::Client::connect(server.endpoints(), None)
        .await
        .expect("raw client");
    let rss = rss_bytes();
    let started = Instant::now();
    let mut raws = Vec::with_capacity(HANDLES);
    for i in 0..HANDLES {
        let mut client = client.clone();
        let options = etcd_client::WatchOptions::new().with_prefix();
        let mut stream = client
            .watch(format!("/handles/{i:04}/"), Some(options))
            .await
            .expect("raw watch");
        let created = stream.message().await.unwrap().unwrap();
        assert!(created.created());
        raws.push(stream);
    }
    let raw = HandlesRow {
        what: "raw etcd-client prefix watch",
        per_handle_bind_us: started.elapsed().as_secs_f64() * 1e6 / HANDLES as f64,
        per_handle_kib: rss_bytes().saturating_sub(rss) as f64 / 1024.0 / HANDLES as f64,
        streams: format!("{HANDLES} (one per watch)"),
    };
    assert!(lives.iter().all(|live| live.load().value == 1));
    [ours, raw]
}

/// 1,000 registrations with a 6 s TTL (renewed every 2 s): streams, memory, idle CPU.
async fn registrations_row(server: &EtcdServer) -> String {
    const IDLE: Duration = Duration::from_secs(10);
    let coord = Coord::connect(server.client_config())
        .await
        .expect("connect");
    let registry = coord.registry();
    let rss = rss_bytes();
    let mut held = Vec::with_capacity(HANDLES);
    for i in 0..HANDLES {
        let info = coord::registry::ServiceInfo::new("scale", format!("i-{i}"), "127.0.0.1:9");
        held.push(
            registry
                .register(info, Duration::from_secs(6))
                .await
                .expect("register"),
        );
    }
    let per_registration = rss_bytes().saturating_sub(rss) as f64 / 1024.0 / HANDLES as f64;
    let cpu = cpu_time();
    tokio::time::sleep(IDLE).await;
    let idle_cpu = cpu_time().saturating_sub(cpu).as_secs_f64() / IDLE.as_secs_f64();
    assert!(held.iter().all(|r| r.is_alive()));
    format!(
        "| {HANDLES} registrations, TTL 6 s | {} | {} | {per_registration:.1} KiB | {:.1}% of one core |",
        coord.store().keep_alive_streams(),
        coord.store().watch_streams(),
        idle_cpu * 100.0
    )
}

const SECTIONS: [&str; 3] = ["live", "handles", "registrations"];

/// The section filter (`cargo bench --bench scale -- handles`, as `cargo bench` filters).
fn filter() -> Option<String> {
    std::env::args().skip(1).find(|arg| !arg.starts_with('-'))
}

/// True if the section named `name` runs in this process.
fn selected(name: &str) -> bool {
    filter().is_some_and(|filter| name.contains(filter.as_str()))
}

fn main() {
    if filter().is_none() {
        // Each section in a process of its own: a resident-memory delta means something only
        // in a process whose allocator has no pages left free by an earlier section.
        let me = std::env::current_exe().expect("the bench's own path");
        for section in SECTIONS {
            let status = std::process::Command::new(&me)
                .arg(section)
                .status()
                .expect("run a section");
            assert!(status.success(), "section {section} failed");
        }
        return;
    }
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let server = EtcdServer::start().await.expect("start etcd");
        if selected("live") {
            live_tables(&server).await;
        }
        if selected("handles") {
            println!("\n## {HANDLES} handles on {HANDLES} prefixes\n");
            println!("| what | bind per handle | resident memory per handle | gRPC watch streams |");
            println!("|---|---:|---:|---:|");
            for row in handles_rows(&server).await {
                println!(
                    "| {} | {:.0} µs | {:.1} KiB | {} |",
                    row.what, row.per_handle_bind_us, row.per_handle_kib, row.streams
                );
            }
        }
        if selected("registrations") {
            println!("\n## Registrations kept alive\n");
            println!(
                "| what | keep-alive streams | watch streams | resident memory per registration | client CPU while idle |"
            );
            println!("|---|---:|---:|---:|---:|");
            println!("{}", registrations_row(&server).await);
        }
    });
}

/// put → `Live` at every size, and for the map fields.
async fn live_tables(server: &EtcdServer) {
    let mut rows = Vec::new();
    for size in SIZES {
        let shape = Shape::<Cfg> {
            what: "unbound keys",
            size,
            seeded: |i| format!("unbound/{i:05}"),
            changed: "value",
            current: |cfg| cfg.value,
        };
        rows.push(live_row(server, shape).await);
    }
    let entry = |i: usize| format!("tenants/{i:05}");
    let shape = Shape::<MapCfg> {
        what: "`Map<u64>` entries",
        size: SIZES[2],
        seeded: entry,
        changed: "tenants/04242",
        current: |cfg| cfg.tenants.get("04242").copied().unwrap_or_default(),
    };
    rows.push(live_row(server, shape).await);
    let shape = Shape::<StdMapCfg> {
        what: "`HashMap<String, u64>` entries",
        size: SIZES[2],
        seeded: entry,
        changed: "tenants/04242",
        current: |cfg| cfg.tenants.get("04242").copied().unwrap_or_default(),
    };
    rows.push(live_row(server, shape).await);
    println!("\n## put → `Live<T>` updated, with many keys under the prefix ({PUTS} puts each)\n");
    println!(
            "| keys under the prefix | raw watch event p50 | `Live` beyond raw: p50 | p99 | client CPU per update | CPU vs 0 keys |"
        );
    println!("|---|---:|---:|---:|---:|---:|");
    let base_cpu = rows[0].cpu_per_update_us;
    for row in &rows {
        println!(
            "| {} {} | {:.0} µs | {:.1} µs | {:.1} µs | {:.1} µs | {:.2}x |",
            row.size,
            row.what,
            row.raw_p50_us,
            row.extra_p50_us,
            row.extra_p99_us,
            row.cpu_per_update_us,
            row.cpu_per_update_us / base_cpu
        );
    }
    println!("\ntargets: beyond raw p50 ≤ 50 µs; CPU per update ≤ 1.5x the 0-key case");
}
