//! Instance IDs: distinct under concurrency, NoIdAvailable when full, reuse after release or
//! crash, and two round trips per uncontended acquire whatever max_id.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use coord::store::{KeyRange, RangeOptions, Txn, TxnOp};
use coord::{Coord, Error};
use tokio::time::timeout;

const TTL: Duration = Duration::from_secs(2);
const LONG_TTL: Duration = Duration::from_secs(60);

/// The keys of the IDs of `service` held now.
async fn taken(store: &coord::Store, service: &str) -> Vec<String> {
    store
        .range(
            &KeyRange::prefix(format!("/instances/{service}/")),
            RangeOptions::default().keys_only(),
        )
        .await
        .unwrap()
        .kvs
        .into_iter()
        .map(|kv| kv.key)
        .collect()
}

on_both_backends!(cases:
    uncontended_acquire_takes_at_most_two_round_trips_whatever_max_id,
    ids_are_distinct_and_in_range_until_full,
    the_last_free_id_of_a_crowded_space_is_found,
    released_and_dropped_ids_can_be_acquired_again,
    crashed_holders_id_comes_back_after_ttl,
    revoking_the_lease_resolves_lost_and_next_acquire_gets_a_new_lease,
    health_lists_each_id,
    dropped_acquire_and_release_futures_leak_no_id,
    a_fenced_write_by_a_holder_whose_id_moved_on_is_refused,
    bad_input_is_invalid_argument,
);

mod cases {
    use super::*;
    use crate::common::{Backend, eventually};

    pub async fn uncontended_acquire_takes_at_most_two_round_trips_whatever_max_id(b: &Backend) {
        for (service, max_id) in [("rt16", 16), ("rt1024", 1024), ("rt65536", 65_536)] {
            // Some IDs are already taken (by keys without a lease), as in a running fleet.
            let taken = (0..10).map(|i| TxnOp::put(format!("/instances/{service}/{i}"), "x"));
            b.store().txn(Txn::new().and_then(taken)).await.unwrap();
            let ids = b
                .coord
                .ids_with_ttl(service, max_id, LONG_TTL)
                .await
                .unwrap();
            let stats = b.store().stats();
            let before = stats.round_trips();
            let guard = ids.acquire().await.unwrap();
            let spent = stats.round_trips() - before;
            assert!(
                (1..=2).contains(&spent),
                "max_id {max_id}: a probe txn (+ one claim txn if the probed ID was taken), \
                 took {spent}"
            );
            assert!((10..max_id).contains(&guard.id()), "{}", guard.id());
            guard.release().await.unwrap();
        }
    }

    pub async fn ids_are_distinct_and_in_range_until_full(b: &Backend) {
        let ids = b.coord.ids_with_ttl("full", 8, LONG_TTL).await.unwrap();
        let mut guards = Vec::new();
        for _ in 0..8 {
            guards.push(ids.acquire().await.unwrap());
        }
        let got: HashSet<u32> = guards.iter().map(|g| g.id()).collect();
        assert_eq!(got, (0..8).collect());
        for g in &guards {
            assert_eq!(g.key(), format!("/instances/full/{}", g.id()));
        }
        let err = ids.acquire().await.unwrap_err();
        assert!(
            matches!(&err, Error::NoIdAvailable { service, max_id: 8 } if service == "full"),
            "{err:?}"
        );
    }

    pub async fn the_last_free_id_of_a_crowded_space_is_found(b: &Backend) {
        // 1,000 IDs, all taken but 617: the probes mostly find nothing free, so acquire
        // falls back to reading every taken ID.
        let all: Vec<u32> = (0..1000).filter(|i| *i != 617).collect();
        for chunk in all.chunks(128) {
            let ops = chunk
                .iter()
                .map(|i| TxnOp::put(format!("/instances/crowded/{i}"), "x"));
            b.store().txn(Txn::new().and_then(ops)).await.unwrap();
        }
        let ids = b
            .coord
            .ids_with_ttl("crowded", 1000, LONG_TTL)
            .await
            .unwrap();
        let guard = ids.acquire().await.unwrap();
        assert_eq!(guard.id(), 617);
        let err = ids.acquire().await.unwrap_err();
        assert!(
            matches!(err, Error::NoIdAvailable { max_id: 1000, .. }),
            "{err:?}"
        );
    }

    pub async fn released_and_dropped_ids_can_be_acquired_again(b: &Backend) {
        let ids = b.coord.ids_with_ttl("reuse", 1, LONG_TTL).await.unwrap();
        let first = ids.acquire().await.unwrap();
        assert_eq!(first.id(), 0);
        assert!(matches!(
            ids.acquire().await,
            Err(Error::NoIdAvailable { .. })
        ));
        first.release().await.unwrap();
        let second = ids.acquire().await.unwrap();
        assert_eq!(second.id(), 0, "a released ID comes back at once");
        drop(second);
        eventually(
            Duration::from_secs(5),
            "the dropped guard's ID is free",
            || {
                let ids = ids.clone();
                async move { ids.acquire().await.is_ok() }
            },
        )
        .await;
    }

    pub async fn crashed_holders_id_comes_back_after_ttl(b: &Backend) {
        let crashed = b.coord.ids_with_ttl("crash", 1, TTL).await.unwrap();
        let guard = crashed.acquire().await.unwrap();
        crashed.abandon(); // no more renewals, no release: a dead process
        drop(guard);
        let other = b.coord.ids_with_ttl("crash", 1, TTL).await.unwrap();
        assert!(
            matches!(other.acquire().await, Err(Error::NoIdAvailable { .. })),
            "the crashed holder keeps its ID until its lease expires"
        );
        eventually(
            TTL + Duration::from_secs(6),
            "the ID comes back after the TTL",
            || {
                let other = other.clone();
                async move {
                    match other.acquire().await {
                        Ok(_guard) => true,
                        Err(Error::NoIdAvailable { .. }) => false,
                        Err(e) => panic!("{e:?}"),
                    }
                }
            },
        )
        .await;
    }

    pub async fn revoking_the_lease_resolves_lost_and_next_acquire_gets_a_new_lease(b: &Backend) {
        let ids = b.coord.ids_with_ttl("revoke", 4, TTL).await.unwrap();
        let guard = ids.acquire().await.unwrap();
        let old_lease = guard.lease_id();
        b.store().lease_revoke(old_lease).await.unwrap();
        let lost = timeout(Duration::from_secs(5), guard.lost())
            .await
            .expect("lost() resolves after a revoke");
        assert!(matches!(lost, Error::SessionLost { .. }), "{lost:?}");
        // The allocator notices the lease is gone and claims the ID on a new one.
        let again = ids.acquire().await.unwrap();
        assert_ne!(again.lease_id(), old_lease);
        let (kv, _) = b.store().get(again.key()).await.unwrap();
        assert_eq!(kv.unwrap().lease, again.lease_id());
    }

    pub async fn a_fenced_write_by_a_holder_whose_id_moved_on_is_refused(b: &Backend) {
        let ids = b.coord.ids_with_ttl("fence", 1, LONG_TTL).await.unwrap();
        let first = ids.acquire().await.unwrap();
        let marker = "/nemesis-test/fence/0";
        let write = |text: &str| Txn::new().and_then([TxnOp::put(marker, text)]);
        assert!(first.txn(write("first")).await.unwrap().succeeded);
        // The key goes (an operator, an expiry seen by etcd but not yet by the holder) and the
        // same allocator, on the same lease, hands the ID out again.
        b.store().delete(&KeyRange::key(first.key())).await.unwrap();
        let second = ids.acquire().await.unwrap();
        assert_eq!((second.id(), second.lease_id()), (0, first.lease_id()));
        assert!(second.fencing_token() > first.fencing_token());

        assert!(
            !first.txn(write("stale")).await.unwrap().succeeded,
            "the old holder's fence fails although its lease is the new holder's"
        );
        assert!(second.txn(write("second")).await.unwrap().succeeded);
        let (kv, _) = b.store().get(marker).await.unwrap();
        assert_eq!(kv.unwrap().value, b"second");
    }

    pub async fn health_lists_each_id(b: &Backend) {
        let ids = b.coord.ids_with_ttl("health", 4, LONG_TTL).await.unwrap();
        let id_entries = || async {
            let health = b.coord.health().await.unwrap();
            health
                .sessions
                .into_iter()
                .filter(|s| s.kind == "id")
                .map(|s| (s.name, s.alive))
                .collect::<Vec<_>>()
        };
        // Released IDs leave the report even though the allocator's lease lives on.
        for _ in 0..5 {
            ids.acquire().await.unwrap().release().await.unwrap();
        }
        assert!(id_entries().await.is_empty(), "{:?}", id_entries().await);
        let guard = ids.acquire().await.unwrap();
        let other = ids.acquire().await.unwrap();
        let mut listed = id_entries().await;
        listed.sort();
        let mut expected = vec![
            (format!("health/{}", guard.id()), true),
            (format!("health/{}", other.id()), true),
        ];
        expected.sort();
        assert_eq!(listed, expected);
        drop(other);
        assert_eq!(
            id_entries().await,
            vec![(format!("health/{}", guard.id()), true)]
        );
    }

    pub async fn dropped_acquire_and_release_futures_leak_no_id(b: &Backend) {
        const MAX_ID: u32 = 8;
        let ids = b
            .coord
            .ids_with_ttl("dropped", MAX_ID, LONG_TTL)
            .await
            .unwrap();
        // The allocator's lease and its renewals exist from the first acquire on: counted
        // before the tasks below are.
        ids.acquire().await.unwrap().release().await.unwrap();
        let tasks = || {
            tokio::runtime::Handle::current()
                .metrics()
                .num_alive_tasks()
        };
        let before = tasks();
        // Callers give up at every point of the acquire and release round trips, as a timeout
        // or a `select!` would. (The embedded store answers within one poll, so there it mostly
        // checks that nothing breaks; the etcd run is the one with requests in flight.)
        for i in 0..200u64 {
            let limit = Duration::from_micros(i * 13 % 1500);
            if let Ok(Ok(guard)) = timeout(limit, ids.acquire()).await {
                let _ = timeout(limit, guard.release()).await;
            }
        }
        // Each claim runs in a task of its own, and so does the release of a claim nobody
        // read or of a guard dropped mid-release: once the runtime is back to the tasks it had,
        // no claim is in flight and every release is done, so a claim that landed late has
        // been released too.
        eventually(
            Duration::from_secs(10),
            "every claim and release task has ended",
            || async { tasks() <= before },
        )
        .await;
        assert!(
            taken(b.store(), "dropped").await.is_empty(),
            "a dropped acquire or release leaked its ID: {:?}",
            taken(b.store(), "dropped").await
        );
        let all: Vec<_> = futures::future::try_join_all((0..MAX_ID).map(|_| ids.acquire()))
            .await
            .unwrap();
        assert_eq!(all.len(), MAX_ID as usize);
    }

    pub async fn bad_input_is_invalid_argument(b: &Backend) {
        for (service, max_id, ttl) in [
            ("", 4, LONG_TTL),
            ("nul\0", 4, LONG_TTL),
            ("a/b", 4, LONG_TTL),
            ("zero", 0, LONG_TTL),
            ("short", 4, Duration::from_millis(500)),
            // Longer than etcd grants (it would answer "too large lease TTL").
            ("long", 4, Duration::from_secs(9_000_000_001)),
        ] {
            let err = b
                .coord
                .ids_with_ttl(service, max_id, ttl)
                .await
                .unwrap_err();
            assert!(
                matches!(err, Error::InvalidArgument { .. }),
                "{service:?} {max_id} {ttl:?}: {err:?}"
            );
        }
        let err = b.coord.ids("zero", 0).await.unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
    }
}

/// 64 concurrent acquirers from 4 clients with max_id 64 get 64 distinct IDs; the 65th gets
/// `NoIdAvailable`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_concurrent_acquirers_from_four_clients_get_distinct_ids() {
    let backend = common::Backend::etcd().await;
    let config = backend.server.as_ref().unwrap().client_config();
    let mut allocators = Vec::new();
    for _ in 0..4 {
        let client = Coord::connect(config.clone()).await.unwrap();
        allocators.push(client.ids_with_ttl("fleet", 64, LONG_TTL).await.unwrap());
    }
    let mut tasks = Vec::new();
    for allocator in &allocators {
        for _ in 0..16 {
            let allocator = allocator.clone();
            tasks.push(tokio::spawn(async move { allocator.acquire().await }));
        }
    }
    let mut guards = Vec::new();
    for task in tasks {
        guards.push(task.await.unwrap().unwrap());
    }
    let ids: HashSet<u32> = guards.iter().map(|g| g.id()).collect();
    assert_eq!(ids.len(), 64, "64 distinct IDs");
    assert!(ids.iter().all(|id| *id < 64));
    let keys = backend
        .store()
        .range(
            &KeyRange::prefix("/instances/fleet/"),
            RangeOptions::default().keys_only(),
        )
        .await
        .unwrap();
    assert_eq!(keys.count, 64);
    let err = allocators[0].acquire().await.unwrap_err();
    assert!(
        matches!(err, Error::NoIdAvailable { max_id: 64, .. }),
        "{err:?}"
    );
}
