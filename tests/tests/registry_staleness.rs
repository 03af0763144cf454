//! The registry's watched cache says how far behind it may be while etcd is down
//! (`ServiceCache::staleness`), as `Live::staleness` does for config.

mod common;

use std::time::Duration;

use coord::registry::ServiceInfo;

use common::{Backend, eventually};

/// A ceiling, not a target: on a loaded machine a reconnect takes longer.
const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_staleness_is_reported_while_etcd_is_down_and_cleared_after_the_relist() {
    let mut b = Backend::etcd_without_resync().await;
    let registry = b.coord.registry();
    let _one = registry
        .register(
            ServiceInfo::new("checkout", "checkout-1", "10.0.0.1:80"),
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    let cache = registry.cache("checkout").await.unwrap();
    assert_eq!(cache.instances().len(), 1);
    assert_eq!(cache.staleness(), None);

    let server = b.server.as_mut().unwrap();
    server.kill().await.unwrap();
    eventually(WAIT, "the cache notices the broken watch", || async {
        cache.staleness().is_some()
    })
    .await;
    let first = cache.staleness().unwrap_or_default();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        cache.staleness().unwrap_or_default() > first,
        "it grows while the outage lasts"
    );
    assert_eq!(cache.instances().len(), 1, "the last known instances stay");

    server.restart().await.unwrap();
    eventually(WAIT, "current again after the restart", || async {
        cache.staleness().is_none()
    })
    .await;
    assert_eq!(cache.instances()[0].id, "checkout-1");

    // And it follows etcd again.
    let _two = registry
        .register(
            ServiceInfo::new("checkout", "checkout-2", "10.0.0.2:80"),
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    eventually(WAIT, "the cache sees the new instance", || async {
        cache.instances().len() == 2
    })
    .await;
    assert_eq!(cache.staleness(), None);
}
