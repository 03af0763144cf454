//! A handle whose lease or key is gone says so: `is_alive()` turns false once the loss is
//! seen, and releasing what is no longer held (`unlock`, `release`, `resign`) is an error that
//! says it was lost before, not a silent `Ok`. Durations a user passes never panic.

mod common;

use std::time::Duration;

use coord::registry::ServiceInfo;
use coord::{ClientConfig, Coord, Error};

use common::Backend;

const TTL: Duration = Duration::from_secs(30);

on_both_backends!(cases:
    unlock_after_the_lease_was_revoked_is_session_lost,
    unlock_after_the_key_was_deleted_is_session_lost,
    is_alive_is_false_once_lost_fired,
    a_failed_put_if_held_marks_the_lock_lost,
    remaining_ttl_reads_the_lease_and_fails_once_it_is_gone,
    release_of_a_lost_id_is_session_lost,
    resign_of_lost_leadership_is_session_lost,
    duration_max_is_an_error_not_a_panic,
);

fn assert_lost_before(result: Result<(), Error>, action: &str) {
    match result {
        Err(Error::SessionLost { reason, .. }) => {
            assert!(reason.contains(action), "reason names {action}: {reason}");
        }
        other => panic!("expected SessionLost for {action}, got {other:?}"),
    }
}

mod cases {
    use super::*;

    pub async fn unlock_after_the_lease_was_revoked_is_session_lost(b: &Backend) {
        let lock = b.coord.locks().acquire("/lost/a", TTL).await.unwrap();
        b.store().lease_revoke(lock.lease_id()).await.unwrap();
        let _ = lock.lost().await;
        assert_lost_before(lock.unlock().await, "unlock");
    }

    pub async fn unlock_after_the_key_was_deleted_is_session_lost(b: &Backend) {
        // Nobody called lost(): the unlock itself finds the key gone.
        let lock = b.coord.locks().acquire("/lost/b", TTL).await.unwrap();
        b.store()
            .delete(&coord::store::KeyRange::key(lock.key()))
            .await
            .unwrap();
        assert!(lock.is_alive(), "nothing has looked yet");
        assert_lost_before(lock.unlock().await, "unlock");
    }

    pub async fn is_alive_is_false_once_lost_fired(b: &Backend) {
        let lock = b.coord.locks().acquire("/lost/c", TTL).await.unwrap();
        b.store()
            .delete(&coord::store::KeyRange::key(lock.key()))
            .await
            .unwrap();
        // The lease is fine, the key is gone: lost() sees it, and is_alive follows.
        let lost = tokio::time::timeout(Duration::from_secs(30), lock.lost())
            .await
            .expect("lost() resolves");
        assert!(matches!(lost, Error::SessionLost { .. }), "{lost:?}");
        assert!(!lock.is_alive());
    }

    pub async fn a_failed_put_if_held_marks_the_lock_lost(b: &Backend) {
        let lock = b.coord.locks().acquire("/lost/d", TTL).await.unwrap();
        b.store()
            .delete(&coord::store::KeyRange::key(lock.key()))
            .await
            .unwrap();
        assert!(!lock.put_if_held("/lost/d-data", "x").await.unwrap());
        assert!(!lock.is_alive());
    }

    pub async fn remaining_ttl_reads_the_lease_and_fails_once_it_is_gone(b: &Backend) {
        let lock = b.coord.locks().acquire("/lost/e", TTL).await.unwrap();
        let left = lock.remaining_ttl().await.unwrap();
        assert!(left <= lock.ttl(), "{left:?} > {:?}", lock.ttl());
        assert!(left >= lock.ttl() / 2, "just acquired: {left:?}");
        b.store().lease_revoke(lock.lease_id()).await.unwrap();
        assert!(matches!(
            lock.remaining_ttl().await,
            Err(Error::SessionLost { .. })
        ));
        assert!(!lock.is_alive());
    }

    pub async fn release_of_a_lost_id_is_session_lost(b: &Backend) {
        let ids = b.coord.ids_with_ttl("lost-svc", 8, TTL).await.unwrap();
        let id = ids.acquire().await.unwrap();
        b.store()
            .delete(&coord::store::KeyRange::key(id.key()))
            .await
            .unwrap();
        assert_lost_before(id.release().await, "release");

        let id = ids.acquire().await.unwrap();
        b.store().lease_revoke(id.lease_id()).await.unwrap();
        let _ = id.lost().await;
        assert!(!id.is_alive());
        assert_lost_before(id.release().await, "release");
    }

    pub async fn resign_of_lost_leadership_is_session_lost(b: &Backend) {
        let election = b.coord.election("/lost/election").ttl(TTL);
        let leadership = election.campaign("a").await.unwrap();
        b.store()
            .delete(&coord::store::KeyRange::key(leadership.key()))
            .await
            .unwrap();
        assert_lost_before(leadership.resign().await, "resign");

        let leadership = election.campaign("b").await.unwrap();
        b.store().lease_revoke(leadership.lease_id()).await.unwrap();
        let _ = leadership.lost().await;
        assert!(!leadership.is_alive());
        assert_lost_before(leadership.resign().await, "resign");
        // A leadership still held resigns cleanly.
        let leadership = election.campaign("c").await.unwrap();
        leadership.resign().await.unwrap();
        assert_eq!(election.leader().await.unwrap(), None);
    }

    pub async fn duration_max_is_an_error_not_a_panic(b: &Backend) {
        let max = Duration::MAX;
        let invalid = |r: Result<(), Error>, what: &str| {
            assert!(
                matches!(r, Err(Error::InvalidArgument { .. })),
                "{what}: {r:?}"
            );
        };
        invalid(
            coord::Session::new(b.store(), max).await.map(drop),
            "session",
        );
        invalid(
            b.coord.locks().acquire("/lost/max", max).await.map(drop),
            "acquire",
        );
        invalid(
            b.coord
                .locks()
                .try_acquire("/lost/max", max)
                .await
                .map(drop),
            "try_acquire",
        );
        invalid(b.coord.ids_with_ttl("max", 4, max).await.map(drop), "ids");
        invalid(
            b.coord
                .election("/lost/max-e")
                .ttl(max)
                .campaign("x")
                .await
                .map(drop),
            "campaign",
        );
        invalid(
            b.coord
                .registry()
                .register(ServiceInfo::new("max", "1", "127.0.0.1:1"), max)
                .await
                .map(drop),
            "register",
        );
        // A read cache or a watch backoff of Duration::MAX is allowed: it means "never".
        let config = b.coord.config().with_cache(max);
        config.set("/lost/max-key", &1).await.unwrap();
        assert_eq!(config.get::<i32>("/lost/max-key").await.unwrap(), 1);
        let mut watch = coord::watch::ResilientWatch::with_config(
            b.store().clone(),
            coord::store::KeyRange::key("/lost/max-key"),
            coord::watch::WatchConfig::default()
                .initial_backoff(max)
                .max_backoff(max),
        );
        watch.next().await.unwrap();
    }
}

/// Every duration of a client configuration may be `Duration::MAX`: connecting then either
/// works or is refused with a clear error, never a panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_durations_of_duration_max_do_not_panic() {
    let server = coord::testing::EtcdServer::start()
        .await
        .expect("start etcd (see the error for how to install it)");
    let base = server.client_config();
    type Setter = fn(&mut ClientConfig);
    let setters: [(&str, Setter); 6] = [
        ("dial_timeout", |c| c.dial_timeout = Duration::MAX),
        ("keep_alive_time", |c| c.keep_alive_time = Duration::MAX),
        ("keep_alive_timeout", |c| {
            c.keep_alive_timeout = Duration::MAX
        }),
        ("request_timeout", |c| c.request_timeout = Duration::MAX),
        ("sync_interval", |c| c.sync_interval = Duration::MAX),
        ("cache_ttl", |c| c.cache_ttl = Duration::MAX),
    ];
    for (field, set) in setters {
        let mut config = base.clone();
        set(&mut config);
        let connect = tokio::spawn(Coord::connect(config));
        match connect.await {
            Ok(Ok(coord)) => {
                coord.config().set("/lost/durations", &field).await.unwrap();
                assert_eq!(
                    coord
                        .config()
                        .get::<String>("/lost/durations")
                        .await
                        .unwrap(),
                    field
                );
                coord.close().await.unwrap();
            }
            Ok(Err(Error::InvalidArgument { field: named, .. })) => {
                assert_eq!(named, field, "the error names the field");
            }
            Ok(Err(e)) => panic!("{field}: unexpected error {e:?}"),
            Err(join) => panic!("{field}: connect panicked: {join}"),
        }
    }
}
