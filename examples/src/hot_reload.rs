//! Live config from a real etcd: prints the bound struct, then each new version as you change
//! it with etcdctl. Bad values are rejected and reported; the last good config stays live.
//!
//! ```sh
//! etcdctl put /config/checkout/rate_limit '{"per_second":100,"burst":20}'   # no default: first
//! COORD_ENDPOINTS=http://127.0.0.1:2379 cargo run -p coord-examples --bin hot_reload
//! etcdctl put /config/checkout/timeout_secs 45
//! etcdctl put /config/checkout/rate_limit '{"per_second":50,"burst":10}'
//! etcdctl put /config/checkout/timeout_secs 'not json'   # rejected, 45 stays live
//! ```
//!
//! Connection settings come from the environment (`COORD_ENDPOINTS`, `COORD_USERNAME`,
//! `COORD_PASSWORD`, `COORD_TLS_CA`, …; see `ClientConfig::from_env`). Stop with Ctrl-C.
//!
//! Without `COORD_ENDPOINTS` it runs on the embedded store, makes the changes above itself,
//! prints what each did, and exits.

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
    let embedded = std::env::var_os("COORD_ENDPOINTS").is_none();
    let coord = if embedded {
        println!("COORD_ENDPOINTS is not set: embedded store, making the changes myself");
        Coord::in_memory()
    } else {
        Coord::connect(ClientConfig::from_env()?).await?
    };
    println!("keys bound by Checkout:\n{}", describe::<Checkout>());
    if embedded {
        // What the first etcdctl line in the module docs does: rate_limit has no default, so
        // it is written before the service binds.
        let rate_limit = r#"{"per_second":100,"burst":20}"#;
        println!("put /config/checkout/rate_limit {rate_limit}");
        coord
            .store()
            .put(
                "/config/checkout/rate_limit",
                rate_limit.as_bytes().to_vec(),
                0,
            )
            .await?;
    }
    let seeded = coord.config().seed_defaults::<Checkout>().await?;
    if !seeded.is_empty() {
        println!("wrote defaults for {seeded:?}");
    }

    let live = coord.live::<Checkout>().await?;
    println!("revision {}: {:?}", live.revision(), *live.load());
    let mut updates = live.subscribe();
    if embedded {
        // What the etcdctl lines in the module docs do by hand.
        let changes = [
            ("/config/checkout/timeout_secs", "45"),
            (
                "/config/checkout/rate_limit",
                r#"{"per_second":50,"burst":10}"#,
            ),
            ("/config/checkout/timeout_secs", "not json"),
            ("/config/checkout/timeout_secs", "60"),
        ];
        for (key, value) in changes {
            println!("put {key} {value}");
            let seen = error_of(&live);
            coord.store().put(key, value.as_bytes().to_vec(), 0).await?;
            if !report_next(&live, &mut updates, seen).await {
                break;
            }
        }
        return Ok(());
    }
    while report_next(&live, &mut updates, error_of(&live)).await {}
    Ok(())
}

/// The error the config reports now, to tell a new rejection from an old one.
fn error_of(live: &coord::Live<Checkout>) -> Option<String> {
    live.last_error().map(|e| e.to_string())
}

/// Waits for the next new version, or a rejected change (an error other than `seen`), and
/// prints it; false on Ctrl-C or once the config is no longer followed.
async fn report_next(
    live: &coord::Live<Checkout>,
    updates: &mut tokio::sync::watch::Receiver<std::sync::Arc<Checkout>>,
    seen: Option<String>,
) -> bool {
    tokio::select! {
        changed = updates.changed() => {
            if changed.is_err() {
                return false;
            }
            println!("revision {}: {:?}", live.revision(), *live.load());
            true
        }
        () = rejected(live, seen) => {
            if let Some(error) = live.last_error() {
                println!("rejected, keeping revision {}: {error}", live.revision());
            }
            true
        }
        _ = tokio::signal::ctrl_c() => false,
    }
}

/// Resolves when a change is rejected (a `last_error` other than `seen`).
async fn rejected(live: &coord::Live<Checkout>, seen: Option<String>) {
    loop {
        let now = error_of(live);
        if now.is_some() && now != seen {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
