//! `Coord::close` is the graceful-shutdown call: it releases everything the `Coord` holds,
//! stops its watches and refuses every later call. Checked from a second `Coord` on the same
//! store, as another process would see it.

mod common;

use std::time::Duration;

use coord::registry::ServiceInfo;
use coord::{Coord, CoordConfig, Error};
use futures::StreamExt;

use common::Backend;

const TTL: Duration = Duration::from_secs(30);

#[derive(CoordConfig, Debug, Clone, PartialEq)]
#[coord(prefix = "/config/close")]
struct Limits {
    #[coord(default = 10)]
    rate: u32,
}

on_both_backends!(cases:
    close_releases_every_key_and_lease_at_once,
    every_call_after_close_is_refused,
    live_keeps_its_last_value_and_watches_end,
    a_waiting_acquire_ends_with_closed,
    close_is_idempotent_and_spares_other_coords,
    concurrent_closes_both_return_after_everything_is_released,
    registry_watchers_end_and_caches_stop_waiting,
    the_instance_status_goes_at_once,
);

/// The guards of every kind of lease-holding handle, held by one `Coord`.
struct Holdings {
    lock: coord::LockGuard,
    id: coord::IdGuard,
    leadership: coord::Leadership,
    registration: coord::Registration,
    /// Lease of an allocator with no ID out, which close must revoke too.
    idle_allocator: coord::IdAllocator,
}

impl Holdings {
    /// The key of every held handle.
    fn keys(&self) -> [String; 4] {
        [
            self.lock.key().to_owned(),
            self.id.key().to_owned(),
            self.leadership.key().to_owned(),
            self.registration.key().to_owned(),
        ]
    }
}

async fn hold_everything(coord: &Coord) -> Holdings {
    let lock = coord.locks().acquire("/close/lock", TTL).await.unwrap();
    let ids = coord.ids_with_ttl("close-svc", 16, TTL).await.unwrap();
    let id = ids.acquire().await.unwrap();
    let idle_allocator = coord.ids_with_ttl("close-idle", 16, TTL).await.unwrap();
    let leadership = coord
        .election("/close/election")
        .ttl(TTL)
        .campaign("me")
        .await
        .unwrap();
    let registration = coord
        .registry()
        .register(ServiceInfo::new("close-svc", "i-1", "127.0.0.1:7000"), TTL)
        .await
        .unwrap();
    Holdings {
        lock,
        id,
        leadership,
        registration,
        idle_allocator,
    }
}

mod cases {
    use super::*;

    pub async fn close_releases_every_key_and_lease_at_once(b: &Backend) {
        let observer = Coord::from_store(b.store());
        let held = hold_everything(&b.coord).await;
        let keys = held.keys();
        let leases = [
            held.lock.lease_id(),
            held.id.lease_id(),
            held.leadership.lease_id(),
            held.registration.lease_id(),
        ];
        for key in &keys {
            assert!(
                observer.store().get(key).await.unwrap().0.is_some(),
                "{key}"
            );
        }

        b.coord.close().await.unwrap();

        // Gone when close returns, not after a TTL: every key and every lease.
        for key in &keys {
            assert!(
                observer.store().get(key).await.unwrap().0.is_none(),
                "{key} outlived close"
            );
        }
        for lease in leases {
            let ttl = observer.store().lease_ttl(lease).await.unwrap();
            assert_eq!(ttl.ttl, -1, "lease {lease:x} outlived close");
        }
        // No key of any lease is left anywhere.
        let response = observer
            .store()
            .range(
                &coord::store::KeyRange::prefix("/"),
                coord::store::RangeOptions::default(),
            )
            .await
            .unwrap();
        assert!(
            response.kvs.iter().all(|kv| kv.lease == 0),
            "keys on a lease outlived close: {:?}",
            response.kvs
        );

        // The handles know.
        assert!(!held.lock.is_alive());
        assert!(!held.id.is_alive());
        assert!(!held.leadership.is_alive());
        assert!(matches!(held.lock.lost().await, Error::SessionLost { .. }));
        assert!(matches!(held.id.lost().await, Error::SessionLost { .. }));
        assert!(matches!(
            held.leadership.lost().await,
            Error::SessionLost { .. }
        ));
        // And their explicit releases report that close did it already.
        assert!(matches!(held.lock.unlock().await, Err(Error::Closed)));
        assert!(matches!(held.id.release().await, Err(Error::Closed)));
        assert!(matches!(held.leadership.resign().await, Err(Error::Closed)));
        assert!(matches!(
            held.registration.deregister().await,
            Err(Error::Closed)
        ));
        assert!(matches!(
            held.idle_allocator.acquire().await,
            Err(Error::Closed)
        ));
    }

    pub async fn every_call_after_close_is_refused(b: &Backend) {
        let coord = &b.coord;
        coord.config().set("/config/close/rate", &5).await.unwrap();
        let lock = coord.locks().acquire("/close/fenced", TTL).await.unwrap();
        coord.close().await.unwrap();

        let closed = |r: Result<(), Error>, what: &str| {
            assert!(matches!(r, Err(Error::Closed)), "{what}: {r:?}");
        };
        closed(
            lock.put_if_held("/close/x", "1").await.map(drop),
            "put_if_held",
        );
        closed(
            coord
                .config()
                .get::<u32>("/config/close/rate")
                .await
                .map(drop),
            "config get",
        );
        closed(
            coord.config().set("/config/close/rate", &6).await.map(drop),
            "config set",
        );
        closed(
            coord.config().list("/config/").await.map(drop),
            "config list",
        );
        closed(
            coord.store().get("/config/close/rate").await.map(drop),
            "store get",
        );
        closed(
            coord.locks().acquire("/close/l2", TTL).await.map(drop),
            "acquire",
        );
        closed(
            coord.locks().try_acquire("/close/l2", TTL).await.map(drop),
            "try_acquire",
        );
        closed(coord.ids("close-svc", 4).await.map(drop), "ids");
        closed(
            coord.election("/close/e").leader().await.map(drop),
            "leader",
        );
        closed(
            coord.election("/close/e").campaign("x").await.map(drop),
            "campaign",
        );
        closed(
            coord
                .registry()
                .register(ServiceInfo::new("s", "1", "127.0.0.1:1"), TTL)
                .await
                .map(drop),
            "register",
        );
        closed(coord.registry().discover("s").await.map(drop), "discover");
        closed(coord.live::<Limits>().await.map(drop), "live");
        closed(coord.health().await.map(drop), "health");
    }

    pub async fn live_keeps_its_last_value_and_watches_end(b: &Backend) {
        let observer = Coord::from_store(b.store());
        observer
            .config()
            .set("/config/close/rate", &7)
            .await
            .unwrap();
        let live = b.coord.live::<Limits>().await.unwrap();
        let revision = live.revision();
        let mut watcher = b
            .coord
            .config()
            .watch_prefix::<u32>("/config/close/")
            .await
            .unwrap();
        let mut leaders = Box::pin(b.coord.election("/close/e").observe());
        assert_eq!(leaders.next().await.unwrap().unwrap(), None);

        b.coord.close().await.unwrap();
        // Written by someone else after the close: this Coord follows no more.
        observer
            .config()
            .set("/config/close/rate", &8)
            .await
            .unwrap();

        let ceiling = Duration::from_secs(30);
        let item = tokio::time::timeout(ceiling, watcher.next())
            .await
            .expect("watcher ends");
        assert!(matches!(item, Some(Err(Error::Closed))), "{item:?}");
        let end = tokio::time::timeout(ceiling, watcher.next()).await.unwrap();
        assert!(end.is_none(), "{end:?}");
        let item = tokio::time::timeout(ceiling, leaders.next()).await.unwrap();
        assert!(matches!(item, Some(Err(Error::Closed))), "{item:?}");
        assert!(
            tokio::time::timeout(ceiling, leaders.next())
                .await
                .unwrap()
                .is_none()
        );

        // The observer's own watch sees the write, so a Live still following would have too.
        let seen = observer.live::<Limits>().await.unwrap();
        assert_eq!(seen.load().rate, 8);
        tokio::task::yield_now().await;
        assert_eq!(
            live.load().rate,
            7,
            "a closed Coord's Live keeps its last value"
        );
        assert_eq!(live.revision(), revision);
        assert_eq!(b.coord.watched_ranges(), 0);
        // No store watch of the closed Coord is left open (the Live's, the watcher's, the
        // observer's): nothing follows the store any more.
        common::eventually(Duration::from_secs(30), "every watch closed", || async {
            b.coord.store().stats().open_watches() == 0
        })
        .await;
    }

    pub async fn concurrent_closes_both_return_after_everything_is_released(b: &Backend) {
        let observer = Coord::from_store(b.store());
        let held = hold_everything(&b.coord).await;
        let keys = held.keys();
        let clone = b.coord.clone();
        let (first, second) = tokio::join!(b.coord.close(), clone.close());
        first.unwrap();
        second.unwrap();
        // Whichever returned, both did so after the release.
        for key in &keys {
            assert!(
                observer.store().get(key).await.unwrap().0.is_none(),
                "{key} outlived close"
            );
        }
        drop(held);
    }

    pub async fn registry_watchers_end_and_caches_stop_waiting(b: &Backend) {
        let registry = b.coord.registry();
        let mut watcher = registry.watch("close-watched").await.unwrap();
        let cache = registry.cache("close-watched").await.unwrap();
        b.coord.close().await.unwrap();
        let end = tokio::time::timeout(Duration::from_secs(30), watcher.next())
            .await
            .expect("a registry watcher ends after close");
        assert!(end.is_none(), "{end:?}");
        let waited =
            tokio::time::timeout(Duration::from_secs(30), cache.wait_for_revision(i64::MAX))
                .await
                .expect("wait_for_revision returns after close");
        assert!(matches!(waited, Err(Error::Closed)), "{waited:?}");
    }

    pub async fn a_waiting_acquire_ends_with_closed(b: &Backend) {
        let observer = Coord::from_store(b.store());
        let holder = observer.locks().acquire("/close/queue", TTL).await.unwrap();
        let waiting = {
            let coord = b.coord.clone();
            tokio::spawn(async move { coord.locks().acquire("/close/queue", TTL).await })
        };
        // Wait until the waiter's key is in the queue.
        common::eventually(Duration::from_secs(30), "waiter queued", || async {
            observer.config().list("/close/queue/").await.unwrap().len() == 2
        })
        .await;
        b.coord.close().await.unwrap();
        let result = tokio::time::timeout(Duration::from_secs(30), waiting)
            .await
            .expect("the waiting acquire ends")
            .unwrap();
        assert!(matches!(result, Err(Error::Closed)), "{result:?}");
        // Its waiter key went with its lease; the holder is untouched.
        assert_eq!(
            observer.config().list("/close/queue/").await.unwrap(),
            vec![holder.key().to_owned()]
        );
        assert!(holder.is_alive());
        holder.unlock().await.unwrap();
    }

    pub async fn the_instance_status_goes_at_once(b: &Backend) {
        let observer = Coord::from_store_as(b.store(), coord::Instance::new("observer")).unwrap();
        let me = b.coord.instance().name.clone();
        let _live = b.coord.live::<Limits>().await.unwrap();
        common::eventually(Duration::from_secs(10), "the status is listed", || async {
            let statuses = observer.config().rollout("/config/close").await.unwrap();
            statuses.iter().any(|s| s.instance == me)
        })
        .await;
        let health = b.coord.health().await.unwrap();
        assert!(
            health.sessions.iter().any(|s| s.kind == "status"),
            "{health:?}"
        );

        b.coord.close().await.unwrap();

        // Revoked with the Coord's other leases, not left for its TTL.
        let statuses = observer.config().rollout("/config/close").await.unwrap();
        assert!(statuses.is_empty(), "status outlived close: {statuses:?}");
    }

    pub async fn close_is_idempotent_and_spares_other_coords(b: &Backend) {
        let other = Coord::from_store(b.store());
        let theirs = other.locks().acquire("/close/theirs", TTL).await.unwrap();
        let clone = b.coord.clone();
        b.coord.close().await.unwrap();
        clone.close().await.unwrap();
        b.coord.close().await.unwrap();
        assert!(matches!(clone.health().await, Err(Error::Closed)));
        // Another Coord on the same store keeps its lock and works.
        assert!(theirs.put_if_held("/close/still", "yes").await.unwrap());
        assert!(theirs.is_alive());
        other.health().await.unwrap();
        theirs.unlock().await.unwrap();
    }
}

/// With the store gone, close cannot revoke: it says which leases it left, and is closed all
/// the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_reports_the_leases_it_could_not_revoke() {
    let server = coord::testing::EtcdServer::start()
        .await
        .expect("start etcd (see the error for how to install it)");
    let mut config = server.client_config();
    config.request_timeout = Duration::from_millis(500);
    let coord = Coord::connect(config).await.unwrap();
    let lock = coord.locks().acquire("/close/orphan", TTL).await.unwrap();
    let lease = lock.lease_id();
    let mut server = server;
    server.kill().await.unwrap();

    let err = coord.close().await.unwrap_err();
    let Error::CloseIncomplete { unreleased } = &err else {
        panic!("expected CloseIncomplete, got {err:?}");
    };
    assert_eq!(unreleased.len(), 1, "{unreleased:?}");
    assert!(
        unreleased[0].contains("/close/orphan") && unreleased[0].contains(&format!("{lease:x}")),
        "names the lock and its lease: {unreleased:?}"
    );
    assert!(matches!(
        coord.config().get::<u32>("/x").await,
        Err(Error::Closed)
    ));
    // Nobody renews the lease any more: the guard says it is lost.
    assert!(!lock.is_alive());
    let lost = tokio::time::timeout(Duration::from_secs(30), lock.lost())
        .await
        .expect("lost() resolves after an incomplete close");
    assert!(matches!(lost, Error::SessionLost { .. }), "{lost:?}");
}

/// A guard dropped just before `close` revokes its lease in the background; closing the store
/// right after must not make that revoke fail (its keys would stay for the TTL). On a
/// current-thread runtime the spawned revoke can only run after `close` has closed the store.
async fn dropped_just_before_close(b: &Backend) {
    const LONG: Duration = Duration::from_secs(600);
    let observer = Coord::from_store(b.store());
    let lock = b
        .coord
        .locks()
        .acquire("/close/dropped", LONG)
        .await
        .unwrap();
    let key = lock.key().to_owned();
    let leadership = b
        .coord
        .election("/close/dropped-e")
        .ttl(LONG)
        .campaign("x")
        .await
        .unwrap();
    let leader_key = leadership.key().to_owned();
    drop(lock);
    drop(leadership);
    b.coord.close().await.unwrap();
    for key in [key, leader_key] {
        common::eventually(
            Duration::from_secs(20),
            "the dropped guard's key goes",
            || {
                let observer = observer.clone();
                let key = key.clone();
                async move { observer.store().get(&key).await.unwrap().0.is_none() }
            },
        )
        .await;
    }
}

#[tokio::test]
async fn memory_a_guard_dropped_just_before_close_is_still_released() {
    dropped_just_before_close(&Backend::memory()).await;
}

#[tokio::test]
async fn etcd_a_guard_dropped_just_before_close_is_still_released() {
    dropped_just_before_close(&Backend::etcd().await).await;
}
