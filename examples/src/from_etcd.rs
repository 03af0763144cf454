//! The README's "Point it at etcd" program, word for word (`examples/tests/readme.rs` checks
//! that the two agree and runs this one against a real etcd): live config from etcd, printed
//! at start and at every change.
//!
//! ```sh
//! etcdctl put /config/checkout/rate_limit '{"per_second":100,"burst":20}'
//! COORD_ENDPOINTS=http://127.0.0.1:2379 cargo run -p coord-examples --bin from_etcd
//! etcdctl put /config/checkout/timeout_secs 45    # the program prints the new struct
//! ```
//!
//! Unlike the other examples it needs an etcd: without one it fails, naming the endpoint.

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
    // The production profile, with COORD_ENDPOINTS (and any other COORD_* variable) over it.
    let coord = Coord::connect(ClientConfig::for_env("production")?).await?;
    // Writes the default of each key that is not there yet: timeout_secs and flags.
    // rate_limit has no default, so it must be written before the service binds.
    let seeded = coord.config().seed_defaults::<Checkout>().await?;
    println!("seeded {seeded:?}");
    // The fields' types, defaults and docs, for coordctl and the console to check values by.
    coord.config().publish_schema::<Checkout>().await?;

    let live = coord.live::<Checkout>().await?;
    println!("bound at revision {}: {:?}", live.revision(), *live.load());
    let mut changes = live.subscribe();
    while changes.changed().await.is_ok() {
        println!(
            "reloaded at revision {}: {:?}",
            live.revision(),
            *live.load()
        );
    }
    Ok(())
}
