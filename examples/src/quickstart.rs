//! The quickstart: typed live config on the embedded backend, no etcd needed.
//!
//! Run it with `bash scripts/demo.sh` (or `cargo run -p coord-examples --bin quickstart`).

use coord::{Coord, CoordConfig};
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
    let coord = Coord::in_memory();
    let config = coord.config();

    // Someone (a deploy script, an operator with etcdctl) writes the config.
    config
        .set(
            "/config/checkout/rate_limit",
            &RateLimit {
                per_second: 100,
                burst: 20,
            },
        )
        .await?;

    let live = coord.live::<Checkout>().await?;
    println!("bound at revision {}: {:?}", live.revision(), *live.load());

    // A change arrives while the service runs: the struct is swapped whole.
    let mut updates = live.subscribe();
    config.set("/config/checkout/timeout_secs", &45).await?;
    updates.changed().await.ok();
    println!(
        "reloaded at revision {}: {:?}",
        live.revision(),
        *live.load()
    );

    // A bad value is rejected; the last good config stays live.
    coord
        .store()
        .put("/config/checkout/timeout_secs", b"not json".to_vec(), 0)
        .await?;
    // The Live reports the rejection as soon as its watch delivers the write.
    while live.last_error().is_none() {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    println!(
        "after a bad write: timeout_secs is still {}; last_error: {}",
        live.load().timeout_secs,
        live.last_error().map(|e| e.to_string()).unwrap_or_default()
    );

    // Several keys change in one transaction: readers see both or neither.
    config
        .batch()
        .set("/config/checkout/timeout_secs", &60)?
        .set("/config/checkout/flags", &["one-click"])?
        .commit()
        .await?;
    updates.changed().await.ok();
    println!("healed at revision {}: {:?}", live.revision(), *live.load());

    // A release: the change and its record (who, why, the values after) in one transaction.
    // The writes above were not releases: the release records them first, unattributed.
    let next = Checkout {
        timeout_secs: 10,
        ..live.load_full().as_ref().clone()
    };
    let release = config
        .release(&next)
        .message("shorter timeout")
        .author("ops")
        .commit()
        .await?;
    updates.changed().await.ok();
    println!(
        "release {} by ops: timeout_secs is {}",
        release.seq,
        live.load().timeout_secs
    );

    // Roll back to the state before it: the exact values of the entry before, recorded too.
    config
        .rollback("/config/checkout", release.seq - 1)
        .commit()
        .await?;
    updates.changed().await.ok();
    println!(
        "rolled back to {}: timeout_secs is {}",
        release.seq - 1,
        live.load().timeout_secs
    );
    for entry in config.history("/config/checkout", 10).await? {
        println!(
            "  history #{} {:?} by {} {}",
            entry.seq,
            entry.kind,
            entry.author.as_deref().unwrap_or("(outside releases)"),
            entry.message.as_deref().unwrap_or("")
        );
    }

    // Graceful shutdown: releases every lease this Coord holds and stops its watches; the
    // Live handle keeps its last value.
    coord.close().await?;
    println!("closed; timeout_secs is still {}", live.load().timeout_secs);
    Ok(())
}
