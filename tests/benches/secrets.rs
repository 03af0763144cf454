//! What sealed secrets cost, printed as tables beside their baseline from the same run.
//!
//! 1. Reload: from the start of a write until a `Live` holds the new value, for a struct of
//!    ten `#[coord(secret)]` fields sealed at rest (each rebuild opens all ten) and for the
//!    same struct with the ten fields plain; on a real etcd (started here) and on the
//!    embedded store (where nothing but the rebuild costs, the worst case for the ratio).
//! 2. `Live::load()` of each: the values are opened once per change, never per load.
//! 3. One seal and one open of a 32-byte value.
//!
//! One runtime thread: the `Live` rebuilds on the thread that waits for it, so a reload is
//! timed without a second thread waking up.
//!
//! `cargo bench -p coord-tests --bench secrets`

use std::hint::black_box;
use std::time::{Duration, Instant};

use coord::keyring::KeyRing;
use coord::testing::EtcdServer;
use coord::{Coord, CoordConfig, Live, Secret};
use coord_tests::measure::percentile;

const KEYS: &str = "k1 AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
const RELOADS: usize = 1000;
const LOADS: u64 = 20_000_000;

macro_rules! ten_fields {
    ($name:ident, $prefix:literal, $ty:ty $(, $attr:meta)?) => {
        #[derive(CoordConfig, Debug, Clone)]
        #[coord(prefix = $prefix)]
        struct $name {
            n: u64,
            $(#[$attr])? s0: $ty,
            $(#[$attr])? s1: $ty,
            $(#[$attr])? s2: $ty,
            $(#[$attr])? s3: $ty,
            $(#[$attr])? s4: $ty,
            $(#[$attr])? s5: $ty,
            $(#[$attr])? s6: $ty,
            $(#[$attr])? s7: $ty,
            $(#[$attr])? s8: $ty,
            $(#[$attr])? s9: $ty,
        }

        impl $name {
            fn sample(value: &str) -> Self {
                let v = || <$ty>::from(value.to_owned());
                $name {
                    n: 0,
                    s0: v(),
                    s1: v(),
                    s2: v(),
                    s3: v(),
                    s4: v(),
                    s5: v(),
                    s6: v(),
                    s7: v(),
                    s8: v(),
                    s9: v(),
                }
            }
        }
    };
}

ten_fields!(Plain, "/bench/plain", String);
ten_fields!(Sealed, "/bench/sealed", Secret<String>, coord(secret));

trait Counted: CoordConfig + coord::config::HasPrefix + Clone {
    fn n(&self) -> u64;
}
impl Counted for Plain {
    fn n(&self) -> u64 {
        self.n
    }
}
impl Counted for Sealed {
    fn n(&self) -> u64 {
        self.n
    }
}

/// Microseconds from the start of a put of `n` until the `Live` shows it, per reload.
async fn reloads<T: Counted>(coord: &Coord, value: T) -> Vec<f64> {
    let prefix = T::PREFIX.unwrap();
    coord.config().publish(&value).await.unwrap();
    let live: Live<T> = coord.live::<T>().await.unwrap();
    let key = format!("{prefix}/n");
    let mut took = Vec::with_capacity(RELOADS);
    for n in 1..=RELOADS as u64 {
        let started = Instant::now();
        coord
            .store()
            .put(&key, n.to_string().into_bytes(), 0)
            .await
            .unwrap();
        while live.load().n() != n {
            tokio::task::yield_now().await;
        }
        took.push(started.elapsed().as_secs_f64() * 1e6);
    }
    took.sort_by(f64::total_cmp);
    took
}

fn ns_per_load<T: Counted>(live: &Live<T>) -> f64 {
    let started = Instant::now();
    let mut sum = 0u64;
    for _ in 0..LOADS {
        sum = sum.wrapping_add(black_box(live).load().n());
    }
    black_box(sum);
    started.elapsed().as_nanos() as f64 / LOADS as f64
}

async fn table(name: &str, plain_coord: &Coord, sealed_coord: &Coord) {
    let plain = reloads(plain_coord, Plain::sample("a value of 24 characters")).await;
    let sealed = reloads(sealed_coord, Sealed::sample("a value of 24 characters")).await;
    println!("\n### Reload on {name} (µs, {RELOADS} reloads each)\n");
    println!("| struct | p50 | p99 | p50 ratio |");
    println!("|---|---|---|---|");
    let (p50, p99) = (percentile(&plain, 0.5), percentile(&plain, 0.99));
    println!("| 10 plain fields (baseline) | {p50:.1} | {p99:.1} | 1.00x |");
    let (s50, s99) = (percentile(&sealed, 0.5), percentile(&sealed, 0.99));
    println!(
        "| 10 sealed secrets | {s50:.1} | {s99:.1} | {:.2}x |",
        s50 / p50
    );
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let ring = KeyRing::parse(KEYS).unwrap();
    println!("# Sealed secrets");

    let memory = Coord::in_memory();
    memory.set_key_ring(ring.clone());
    table("the embedded store", &memory, &memory).await;

    let server = EtcdServer::start()
        .await
        .expect("etcd (the error says how to install it)");
    let etcd = Coord::connect(server.client_config()).await.unwrap();
    etcd.set_key_ring(ring.clone());
    table("etcd (loopback)", &etcd, &etcd).await;

    let plain: Live<Plain> = memory.live().await.unwrap();
    let sealed: Live<Sealed> = memory.live().await.unwrap();
    println!("\n### `Live::load()` (ns per load, {LOADS} loads)\n");
    println!("| struct | ns |");
    println!("|---|---|");
    println!(
        "| 10 plain fields (baseline) | {:.2} |",
        ns_per_load(&plain)
    );
    println!("| 10 sealed secrets | {:.2} |", ns_per_load(&sealed));

    let key = "/bench/one/secret";
    let value = [7u8; 32];
    let runs = 100_000;
    let started = Instant::now();
    let mut sealed_value = Vec::new();
    for _ in 0..runs {
        sealed_value = ring.seal(key, black_box(&value)).unwrap();
    }
    let seal = started.elapsed() / runs;
    let started = Instant::now();
    for _ in 0..runs {
        black_box(ring.open(key, black_box(&sealed_value)).unwrap());
    }
    let open = started.elapsed() / runs;
    println!("\n### One 32-byte value\n");
    println!("| step | µs |");
    println!("|---|---|");
    println!(
        "| seal (XChaCha20-Poly1305, fresh nonce, JSON envelope) | {:.2} |",
        micros(seal)
    );
    println!("| open | {:.2} |", micros(open));
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
