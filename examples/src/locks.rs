//! Distributed locks with fencing, and leader election.
//!
//! Run it with `cargo run -p coord-examples --bin locks`: on the embedded backend (no etcd), or
//! on etcd when `COORD_ENDPOINTS` is set.

use std::time::Duration;

use coord::{ClientConfig, Coord};
use futures::StreamExt;

#[tokio::main]
async fn main() -> coord::Result<()> {
    let coord = if std::env::var_os("COORD_ENDPOINTS").is_some() {
        Coord::connect(ClientConfig::from_env()?).await?
    } else {
        Coord::in_memory()
    };
    let ttl = Duration::from_secs(10);

    // Two workers want the same lock; the second waits until the first unlocks.
    let first = coord.locks().acquire("/locks/nightly-report", ttl).await?;
    println!(
        "worker 1 holds {} (fencing token {})",
        first.key(),
        first.fencing_token()
    );
    let waiter = tokio::spawn({
        let locks = coord.locks();
        async move { locks.acquire("/locks/nightly-report", ttl).await }
    });

    // A fenced write: applied only while the lock is still held.
    let written = first
        .put_if_held("/reports/nightly", "written by worker 1")
        .await?;
    println!("worker 1 fenced write applied: {written}");
    first.unlock().await?;

    let second = waiter.await.expect("the waiting task does not panic")?;
    println!(
        "worker 2 holds {} (fencing token {}, higher than worker 1's)",
        second.key(),
        second.fencing_token()
    );
    drop(second); // releases in the background

    // Leader election: observe the leader while two candidates take turns.
    let election = coord.election("/elections/scheduler").ttl(ttl);
    let mut leaders = Box::pin(election.observe());
    // The first item is the leader now: nobody yet. Observing starts with it.
    print_leader(leaders.next().await);
    let a = election.campaign("node-a").await?;
    a.proclaim("node-a (ready)").await?;
    a.resign().await?;
    let b = election.campaign("node-b").await?;
    // node-a, node-a (ready), nobody, node-b: one item per change.
    for _ in 0..4 {
        match tokio::time::timeout(Duration::from_secs(5), leaders.next()).await {
            Ok(item) => print_leader(item),
            Err(_) => break,
        }
    }
    b.resign().await?;
    Ok(())
}

fn print_leader(item: Option<coord::Result<Option<coord::Leader>>>) {
    match item {
        Some(Ok(Some(leader))) => println!("leader: {}", leader.value_str()),
        Some(Ok(None)) => println!("leader: nobody"),
        Some(Err(e)) => println!("observe error: {e}"),
        None => println!("observe ended"),
    }
}
