//! Instance-ID allocation: each instance of a service gets a distinct small integer, e.g. a
//! snowflake worker ID.
//!
//! Run it with `cargo run -p coord-examples --bin ids`: on the embedded backend (no etcd), or
//! on etcd when `COORD_ENDPOINTS` is set.

use coord::{ClientConfig, Coord, Error};

#[tokio::main]
async fn main() -> coord::Result<()> {
    let coord = if std::env::var_os("COORD_ENDPOINTS").is_some() {
        Coord::connect(ClientConfig::from_env()?).await?
    } else {
        Coord::in_memory()
    };
    // IDs 0..4 of service "api", on a lease granted now and kept alive in the background.
    let ids = coord.ids("api", 4).await?;

    let mut held = Vec::new();
    loop {
        match ids.acquire().await {
            Ok(guard) => {
                println!("instance got ID {} ({})", guard.id(), guard.key());
                held.push(guard);
            }
            Err(Error::NoIdAvailable { service, max_id }) => {
                println!("all {max_id} IDs of `{service}` are taken");
                break;
            }
            Err(e) => return Err(e),
        }
    }

    // An instance shuts down: its ID is free again at once.
    let leaving = held.remove(0);
    let freed = leaving.id();
    leaving.release().await?;
    let again = ids.acquire().await?;
    println!(
        "ID {freed} was released and is now held again as ID {}",
        again.id()
    );
    Ok(())
}
