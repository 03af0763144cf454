//! Live config from a real etcd: prints the bound struct, then each new version as you change
//! it with etcdctl. Bad values are rejected and reported; the last good config stays live.
//!
//! ```sh
//! COORD_ENDPOINTS=http://127.0.0.1:2379 cargo run -p coord-examples --bin hot_reload
//! etcdctl put /config/checkout/timeout_secs 45
//! etcdctl put /config/checkout/rate-limit '{"per_second":50,"burst":10}'
//! etcdctl put /config/checkout/timeout_secs 'not json'   # rejected, 45 stays live
//! ```
//!
//! Connection settings come from the environment (`COORD_ENDPOINTS`, `COORD_USERNAME`,
//! `COORD_PASSWORD`, `COORD_TLS_CA`, …; see `ClientConfig::from_env`). Stop with Ctrl-C.

use coord::config::describe;
use coord::{ClientConfig, Coord, CoordConfig};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct RateLimit {
    per_second: u32,
    burst: u32,
}

/// Settings of the checkout service.
#[derive(CoordConfig, Debug, Clone, PartialEq)]
#[coord(prefix = "/config/checkout")]
struct Checkout {
    /// Seconds before a payment attempt is abandoned.
    #[coord(default = 30)]
    timeout_secs: u64,
    /// Requests allowed per client.
    #[coord(key = "rate-limit", default = RateLimit { per_second: 100, burst: 20 })]
    rate_limit: RateLimit,
    /// Feature flags turned on.
    #[coord(default)]
    flags: Vec<String>,
}

#[tokio::main]
async fn main() -> coord::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let coord = Coord::connect(ClientConfig::from_env()?).await?;
    println!("keys bound by Checkout:\n{}", describe::<Checkout>());
    let seeded = coord.config().seed_defaults::<Checkout>().await?;
    if !seeded.is_empty() {
        println!("wrote defaults for {seeded:?}");
    }

    let live = coord.live::<Checkout>().await?;
    println!("revision {}: {:?}", live.revision(), *live.load());
    let mut updates = live.subscribe();
    loop {
        tokio::select! {
            changed = updates.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                println!("revision {}: {:?}", live.revision(), *live.load());
            }
            () = rejected(&live) => {
                if let Some(error) = live.last_error() {
                    println!("rejected, keeping revision {}: {error}", live.revision());
                }
            }
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

/// Resolves when a change is rejected (a new `last_error`).
async fn rejected(live: &coord::Live<Checkout>) {
    let seen = live.last_error().map(|e| e.to_string());
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let now = live.last_error().map(|e| e.to_string());
        if now.is_some() && now != seen {
            return;
        }
    }
}
