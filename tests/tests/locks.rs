//! Distributed locks: exclusion, fencing, cancellation, crash recovery, and interop with
//! `etcdctl lock`.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use coord::store::{KeyRange, RangeOptions, Txn, TxnOp};
use coord::{Coord, Error, Store};
use futures::FutureExt;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::time::timeout;

use common::{etcd_watchers, until_watching};

const TTL: Duration = Duration::from_secs(2);
const LONG_TTL: Duration = Duration::from_secs(30);

/// The waiter keys under a lock name, oldest first.
async fn waiters(store: &Store, name: &str) -> Vec<String> {
    let mut kvs = store
        .range(
            &KeyRange::prefix(format!("{name}/")),
            RangeOptions::default().keys_only(),
        )
        .await
        .unwrap()
        .kvs;
    kvs.sort_by_key(|kv| kv.create_revision);
    kvs.into_iter().map(|kv| kv.key).collect()
}

on_both_backends!(cases:
    lock_key_uses_the_etcd_concurrency_layout,
    uncontended_lock_and_unlock_round_trips,
    unlock_parks_the_lease_until_close,
    a_parked_lease_revoked_meanwhile_is_replaced,
    try_acquire_on_a_held_lock_is_lock_held_naming_the_holder,
    lock_waiter_gets_lock_when_holder_unlocks,
    lock_waiter_gets_lock_when_holder_drops,
    fencing_tokens_strictly_increase,
    dropping_a_waiting_acquire_leaves_no_waiter_key,
    a_waiter_whose_key_vanished_is_not_granted_the_lock,
    crashed_holder_loses_lock_after_ttl_and_waiter_gets_it,
    revoking_the_lease_resolves_lost,
    deleting_the_key_resolves_lost,
    put_if_held_writes_only_while_held,
    health_lists_the_lock_session,
    bad_input_is_invalid_argument,
);

mod cases {
    use super::*;
    use crate::common::{Backend, eventually};

    pub async fn lock_key_uses_the_etcd_concurrency_layout(b: &Backend) {
        let guard = b
            .coord
            .locks()
            .acquire("/l/layout", LONG_TTL)
            .await
            .unwrap();
        assert_eq!(guard.key(), format!("/l/layout/{:x}", guard.lease_id()));
        let (kv, _) = b.store().get(guard.key()).await.unwrap();
        let kv = kv.expect("the holder key exists");
        assert_eq!(kv.lease, guard.lease_id());
        assert_eq!(kv.create_revision, guard.fencing_token());
        assert_eq!(guard.ttl(), LONG_TTL);
        guard.unlock().await.unwrap();
        assert!(waiters(b.store(), "/l/layout").await.is_empty());
    }

    pub async fn uncontended_lock_and_unlock_round_trips(b: &Backend) {
        let locks = b.coord.locks();
        let rt = || b.store().stats().round_trips();
        let before = rt();
        let guard = locks.acquire("/l/rt", LONG_TTL).await.unwrap();
        assert_eq!(rt() - before, 2, "first lock: lease grant + one txn");
        let lease = guard.lease_id();
        let before = rt();
        guard.unlock().await.unwrap();
        assert_eq!(rt() - before, 1, "unlock: one delete txn");
        assert!(waiters(b.store(), "/l/rt").await.is_empty());

        // The next lock with that TTL rides on the released lease: as cheap as etcd's Lock RPC
        // on a long-lived session.
        let before = rt();
        let guard = locks.acquire("/l/rt2", LONG_TTL).await.unwrap();
        assert_eq!(rt() - before, 1, "lock on the parked lease: one txn");
        assert_eq!(guard.lease_id(), lease);
        assert_eq!(guard.ttl(), LONG_TTL);

        // A lease is reused only for the same TTL.
        let before = rt();
        let short = locks.acquire("/l/rt", TTL).await.unwrap();
        assert_eq!(rt() - before, 2, "another TTL needs its own lease");
        short.unlock().await.unwrap();

        // Held meanwhile, so not parked: another lock of the TTL gets its own lease.
        let other = locks.acquire("/l/rt3", LONG_TTL).await.unwrap();
        assert_ne!(other.lease_id(), lease);
        other.unlock().await.unwrap();
        guard.unlock().await.unwrap();
    }

    pub async fn unlock_parks_the_lease_until_close(b: &Backend) {
        let guard = b
            .coord
            .locks()
            .acquire("/l/parked", LONG_TTL)
            .await
            .unwrap();
        let lease = guard.lease_id();
        guard.unlock().await.unwrap();
        // Released: no key, not listed as a lock, but the lease is still renewed for reuse.
        assert!(waiters(b.store(), "/l/parked").await.is_empty());
        let health = b.coord.health().await.unwrap();
        assert!(
            !health.sessions.iter().any(|s| s.lease == lease),
            "{health:?}"
        );
        b.store().lease_keep_alive(lease).await.unwrap();
        let held = b
            .coord
            .locks()
            .acquire("/l/parked-2", LONG_TTL)
            .await
            .unwrap();
        let held_lease = held.lease_id();
        // Closing the Coord revokes the held lease and the parked one before it returns; an
        // unlock after the close has nothing left to do and says so.
        let observer = coord::Coord::from_store(b.store());
        b.coord.close().await.unwrap();
        assert!(matches!(held.unlock().await, Err(Error::Closed)));
        for lease in [held_lease, lease] {
            assert!(
                matches!(
                    observer.store().lease_keep_alive(lease).await,
                    Err(Error::LeaseNotFound { .. })
                ),
                "lease {lease:x} still alive after close"
            );
        }
    }

    pub async fn a_parked_lease_revoked_meanwhile_is_replaced(b: &Backend) {
        let locks = b.coord.locks();
        let guard = locks.acquire("/l/stale", LONG_TTL).await.unwrap();
        let lease = guard.lease_id();
        guard.unlock().await.unwrap();
        // An operator revokes it; the parked session has not noticed yet (it renews every
        // TTL/3 = 10 s).
        b.store().lease_revoke(lease).await.unwrap();
        let guard = locks.acquire("/l/stale", LONG_TTL).await.unwrap();
        assert_ne!(guard.lease_id(), lease);
        let (kv, _) = b.store().get(guard.key()).await.unwrap();
        assert_eq!(kv.expect("held on the new lease").lease, guard.lease_id());
        guard.unlock().await.unwrap();
    }

    pub async fn try_acquire_on_a_held_lock_is_lock_held_naming_the_holder(b: &Backend) {
        let locks = b.coord.locks();
        let holder = locks.acquire("/l/held", LONG_TTL).await.unwrap();
        let err = locks.try_acquire("/l/held", LONG_TTL).await.unwrap_err();
        match err {
            Error::LockHeld { name, holder: key } => {
                assert_eq!(name, "/l/held");
                assert_eq!(key, holder.key());
            }
            other => panic!("expected LockHeld, got {other:?}"),
        }
        assert_eq!(
            waiters(b.store(), "/l/held").await,
            vec![holder.key().to_string()],
            "try_acquire removed its waiter key"
        );
        holder.unlock().await.unwrap();
        let again = locks.try_acquire("/l/held", LONG_TTL).await.unwrap();
        again.unlock().await.unwrap();
    }

    pub async fn lock_waiter_gets_lock_when_holder_unlocks(b: &Backend) {
        let locks = b.coord.locks();
        let holder = locks.acquire("/l/unlock", LONG_TTL).await.unwrap();
        let waiter = tokio::spawn({
            let locks = locks.clone();
            async move { locks.acquire("/l/unlock", LONG_TTL).await }
        });
        eventually(Duration::from_secs(5), "the waiter is queued", || async {
            waiters(b.store(), "/l/unlock").await.len() == 2
        })
        .await;
        until_watching(b.store(), 1, "the waiter watches the holder's key").await;
        assert!(
            !waiter.is_finished(),
            "the waiter waits while the lock is held"
        );
        let first_token = holder.fencing_token();
        holder.unlock().await.unwrap();
        let second = timeout(Duration::from_secs(10), waiter)
            .await
            .expect("the waiter gets the lock after unlock")
            .unwrap()
            .unwrap();
        assert!(second.fencing_token() > first_token);
        second.unlock().await.unwrap();
    }

    pub async fn lock_waiter_gets_lock_when_holder_drops(b: &Backend) {
        let locks = b.coord.locks();
        let holder = locks.acquire("/l/drop", LONG_TTL).await.unwrap();
        let waiter = tokio::spawn({
            let locks = locks.clone();
            async move { locks.acquire("/l/drop", LONG_TTL).await }
        });
        eventually(Duration::from_secs(5), "the waiter is queued", || async {
            waiters(b.store(), "/l/drop").await.len() == 2
        })
        .await;
        drop(holder);
        let second = timeout(Duration::from_secs(10), waiter)
            .await
            .expect("dropping the guard releases the lock")
            .unwrap()
            .unwrap();
        second.unlock().await.unwrap();
    }

    pub async fn fencing_tokens_strictly_increase(b: &Backend) {
        let locks = b.coord.locks();
        let mut last = 0;
        for _ in 0..5 {
            let guard = locks.acquire("/l/fence", LONG_TTL).await.unwrap();
            // Unrelated writes in between must not matter.
            b.store().put("/l/other", b"x".to_vec(), 0).await.unwrap();
            assert!(guard.fencing_token() > last);
            last = guard.fencing_token();
            guard.unlock().await.unwrap();
        }
    }

    /// etcd issue 11456: the wait can end because the waiter's own key went too (its lease
    /// expired, or an operator cleared the queue). A waiter without a key must not be told it
    /// holds the lock.
    pub async fn a_waiter_whose_key_vanished_is_not_granted_the_lock(b: &Backend) {
        let locks = b.coord.locks();
        let holder = locks.acquire("/l/vanish", LONG_TTL).await.unwrap();
        let waiter = tokio::spawn({
            let locks = locks.clone();
            async move { locks.acquire("/l/vanish", LONG_TTL).await }
        });
        eventually(Duration::from_secs(5), "the waiter is queued", || async {
            waiters(b.store(), "/l/vanish").await.len() == 2
        })
        .await;
        // Both keys go in one revision: the waiter's predecessor is gone, and so is its own key.
        let clear = Txn::new().and_then(
            waiters(b.store(), "/l/vanish")
                .await
                .into_iter()
                .map(TxnOp::delete),
        );
        b.store().txn(clear).await.unwrap();
        let outcome = timeout(Duration::from_secs(10), waiter)
            .await
            .expect("the waiter's acquire ends")
            .unwrap();
        assert!(
            matches!(&outcome, Err(Error::SessionLost { reason, .. }) if reason.contains("gone")),
            "{outcome:?}"
        );
        drop(holder);
    }

    pub async fn dropping_a_waiting_acquire_leaves_no_waiter_key(b: &Backend) {
        let locks = b.coord.locks();
        let holder = locks.acquire("/l/cancel", LONG_TTL).await.unwrap();
        {
            let waiting = locks.acquire("/l/cancel", LONG_TTL);
            tokio::pin!(waiting);
            // Drive the future until it waits (its key queued, the holder's key watched), then
            // drop it.
            tokio::select! {
                r = &mut waiting => panic!("acquire returned while the lock is held: {r:?}"),
                () = until_watching(b.store(), 1, "the waiter watches the holder's key") => {}
            }
            assert_eq!(waiters(b.store(), "/l/cancel").await.len(), 2);
        }
        eventually(
            Duration::from_secs(5),
            "the cancelled waiter's key is removed",
            || async { waiters(b.store(), "/l/cancel").await == vec![holder.key().to_string()] },
        )
        .await;
        holder.unlock().await.unwrap();
        assert!(waiters(b.store(), "/l/cancel").await.is_empty());
    }

    pub async fn crashed_holder_loses_lock_after_ttl_and_waiter_gets_it(b: &Backend) {
        let crashed = b.coord.locks().acquire("/l/crash", TTL).await.unwrap();
        let crashed_key = crashed.key().to_string();
        crashed.abandon(); // no more renewals, no release: a dead process
        assert_eq!(waiters(b.store(), "/l/crash").await, vec![crashed_key]);
        let next = timeout(
            TTL + Duration::from_secs(8),
            b.coord.locks().acquire("/l/crash", TTL),
        )
        .await
        .expect("the waiter gets the lock once the crashed holder's lease expires")
        .unwrap();
        assert_eq!(
            waiters(b.store(), "/l/crash").await,
            vec![next.key().to_string()]
        );
        next.unlock().await.unwrap();
    }

    pub async fn revoking_the_lease_resolves_lost(b: &Backend) {
        let guard = b.coord.locks().acquire("/l/revoke", TTL).await.unwrap();
        b.store().lease_revoke(guard.lease_id()).await.unwrap();
        let lost = timeout(Duration::from_secs(5), guard.lost())
            .await
            .expect("lost() resolves after the lease is revoked");
        assert!(matches!(lost, Error::SessionLost { .. }), "{lost:?}");
    }

    pub async fn deleting_the_key_resolves_lost(b: &Backend) {
        let guard = b
            .coord
            .locks()
            .acquire("/l/deleted", LONG_TTL)
            .await
            .unwrap();
        let lost = guard.lost();
        tokio::pin!(lost);
        // Polled until its watch of the key is open and a fenced write after that proves the
        // key still ours: it must not resolve meanwhile.
        tokio::select! {
            e = &mut lost => panic!("lost() resolved while held: {e:?}"),
            () = async {
                until_watching(b.store(), 1, "lost() watches the key").await;
                assert!(guard.put_if_held("/l/deleted-marker", "x").await.unwrap());
            } => {}
        }
        assert!(guard.is_alive());
        b.store().delete(&KeyRange::key(guard.key())).await.unwrap();
        let lost = timeout(Duration::from_secs(5), lost)
            .await
            .expect("lost() resolves when someone deletes the key");
        assert!(
            matches!(&lost, Error::SessionLost { reason, .. } if reason.contains("deleted")),
            "{lost:?}"
        );
    }

    pub async fn put_if_held_writes_only_while_held(b: &Backend) {
        let guard = b
            .coord
            .locks()
            .acquire("/l/fenced", LONG_TTL)
            .await
            .unwrap();
        assert!(guard.put_if_held("/l/data", "one").await.unwrap());
        // Someone else removes our key (an operator, or our lease expired).
        b.store().delete(&KeyRange::key(guard.key())).await.unwrap();
        assert!(!guard.put_if_held("/l/data", "two").await.unwrap());
        let (kv, _) = b.store().get("/l/data").await.unwrap();
        assert_eq!(kv.unwrap().value, b"one");
    }

    pub async fn health_lists_the_lock_session(b: &Backend) {
        let guard = b
            .coord
            .locks()
            .acquire("/l/health", LONG_TTL)
            .await
            .unwrap();
        let health = b.coord.health().await.unwrap();
        assert!(
            health
                .sessions
                .iter()
                .any(|s| s.kind == "lock" && s.name == "/l/health" && s.lease == guard.lease_id())
        );
        let lease = guard.lease_id();
        drop(guard);
        let health = b.coord.health().await.unwrap();
        assert!(!health.sessions.iter().any(|s| s.name == "/l/health"));
        // A dropped guard is not parked for reuse: its lease is revoked.
        eventually(Duration::from_secs(5), "drop revokes the lease", || async {
            matches!(
                b.store().lease_keep_alive(lease).await,
                Err(Error::LeaseNotFound { .. })
            )
        })
        .await;
    }

    pub async fn bad_input_is_invalid_argument(b: &Backend) {
        let locks = b.coord.locks();
        for (name, ttl) in [
            ("", LONG_TTL),
            ("/l/nul\0", LONG_TTL),
            ("/l/short", Duration::from_millis(500)),
        ] {
            let err = locks.acquire(name, ttl).await.unwrap_err();
            assert!(
                matches!(err, Error::InvalidArgument { .. }),
                "{name:?}: {err:?}"
            );
            let err = locks.try_acquire(name, ttl).await.unwrap_err();
            assert!(
                matches!(err, Error::InvalidArgument { .. }),
                "{name:?}: {err:?}"
            );
        }
        assert!(waiters(b.store(), "/l/short").await.is_empty());
    }
}

/// 3 clients × 4 tasks do a non-atomic read-sleep-write increment 100 times in all under the
/// lock: the count is exact and successive holders' fencing tokens strictly increase.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_exclusion_across_three_clients_and_twelve_tasks() {
    let backend = common::Backend::etcd().await;
    let config = backend.server.as_ref().unwrap().client_config();
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(Coord::connect(config.clone()).await.unwrap());
    }
    let tickets = Arc::new(AtomicUsize::new(0));
    let tokens = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for client in &clients {
        for _ in 0..4 {
            let (client, tickets, tokens) = (client.clone(), tickets.clone(), tokens.clone());
            tasks.push(tokio::spawn(async move {
                while tickets.fetch_add(1, Ordering::SeqCst) < 100 {
                    let guard = client
                        .locks()
                        .acquire("/l/counter", LONG_TTL)
                        .await
                        .unwrap();
                    tokens.lock().unwrap().push(guard.fencing_token());
                    let store = client.store();
                    let (kv, _) = store.get("/counter").await.unwrap();
                    let n: u64 = kv.map_or(0, |kv| {
                        String::from_utf8(kv.value).unwrap().parse().unwrap()
                    });
                    // Widens the window in which a second holder would lose an increment.
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    store
                        .put("/counter", (n + 1).to_string().into_bytes(), 0)
                        .await
                        .unwrap();
                    guard.unlock().await.unwrap();
                }
            }));
        }
    }
    for task in tasks {
        task.await.unwrap();
    }
    let (kv, _) = backend.store().get("/counter").await.unwrap();
    assert_eq!(kv.unwrap().value, b"100", "no increment was lost");
    let tokens = tokens.lock().unwrap();
    assert_eq!(tokens.len(), 100);
    assert!(
        tokens.windows(2).all(|w| w[0] < w[1]),
        "fencing tokens strictly increase from holder to holder: {tokens:?}"
    );
}

/// While `etcdctl lock NAME -- sleep 3` holds the lock, `try_acquire` fails naming etcdctl's
/// key and `acquire` returns only after etcdctl releases.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_lock_holder_excludes_coord() {
    let backend = common::Backend::etcd().await;
    let server = backend.server.as_ref().unwrap();
    let store = backend.store();
    let mut etcdctl = server
        .spawn_etcdctl(&["lock", "/l/interop", "--", "sleep", "3"])
        .unwrap();
    common::eventually(
        Duration::from_secs(10),
        "etcdctl holds the lock",
        || async { waiters(store, "/l/interop").await.len() == 1 },
    )
    .await;
    let etcdctl_key = waiters(store, "/l/interop").await.remove(0);
    let err = backend
        .coord
        .locks()
        .try_acquire("/l/interop", LONG_TTL)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::LockHeld { holder, .. } if *holder == etcdctl_key),
        "{err:?}"
    );
    let guard = timeout(
        Duration::from_secs(15),
        backend.coord.locks().acquire("/l/interop", LONG_TTL),
    )
    .await
    .expect("acquire returns once etcdctl releases")
    .unwrap();
    // Checked the moment acquire returns, before anything else can happen.
    assert!(
        store.get(&etcdctl_key).await.unwrap().0.is_none(),
        "coord got the lock only after etcdctl's key was gone"
    );
    assert_eq!(
        waiters(store, "/l/interop").await,
        vec![guard.key().to_string()]
    );
    let status = etcdctl.wait().await.unwrap();
    assert!(status.success(), "etcdctl ran its command under the lock");
    guard.unlock().await.unwrap();
}

/// While coord holds the lock, `etcdctl lock NAME` waits; it gets the lock after unlock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coord_lock_holder_excludes_etcdctl() {
    let backend = common::Backend::etcd().await;
    let server = backend.server.as_ref().unwrap();
    let store = backend.store();
    let guard = backend
        .coord
        .locks()
        .acquire("/l/reverse", LONG_TTL)
        .await
        .unwrap();
    let watching = etcd_watchers(&server.endpoint()).await;
    let mut etcdctl = server.spawn_etcdctl(&["lock", "/l/reverse"]).unwrap();
    let mut lines = BufReader::new(etcdctl.stdout.take().unwrap()).lines();
    common::eventually(Duration::from_secs(10), "etcdctl is queued", || async {
        waiters(store, "/l/reverse").await.len() == 2
    })
    .await;
    common::eventually(
        Duration::from_secs(10),
        "etcdctl watches our key (it waits)",
        || async { etcd_watchers(&server.endpoint()).await > watching },
    )
    .await;
    // etcdctl prints its key when it holds the lock: waiting, it has not, and only the
    // delete of our key ends its wait.
    assert!(
        lines.next_line().now_or_never().is_none(),
        "etcdctl claimed the lock while coord held it"
    );
    let etcdctl_key = waiters(store, "/l/reverse").await.remove(1);
    guard.unlock().await.unwrap();
    let line = timeout(Duration::from_secs(10), lines.next_line())
        .await
        .expect("etcdctl gets the lock after coord unlocks")
        .unwrap()
        .unwrap();
    assert_eq!(line.trim(), etcdctl_key);
    etcdctl.kill().await.unwrap();
}

/// `etcdctl lease revoke` on the holder's lease makes `lost()` resolve.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_lease_revoke_resolves_lock_lost() {
    let backend = common::Backend::etcd().await;
    let server = backend.server.as_ref().unwrap();
    let guard = backend
        .coord
        .locks()
        .acquire("/l/etcdctl-revoke", TTL)
        .await
        .unwrap();
    server
        .etcdctl(&["lease", "revoke", &format!("{:x}", guard.lease_id())])
        .unwrap();
    let lost = timeout(Duration::from_secs(5), guard.lost())
        .await
        .expect("lost() resolves after etcdctl revokes the lease");
    assert!(matches!(lost, Error::SessionLost { .. }), "{lost:?}");
    assert!(!guard.put_if_held("/l/after", "x").await.unwrap());
}

/// A `Coord` outlives the tokio runtime it first ran on: a lease parked there has lost its
/// renewals and must not be reused, and parked leases on the next runtime are still reaped.
#[test]
fn a_lease_parked_on_a_runtime_that_ended_is_not_reused() {
    let coord = Coord::in_memory();
    let first_lease = {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let guard = coord.locks().acquire("/l/rt-a", LONG_TTL).await.unwrap();
            let lease = guard.lease_id();
            guard.unlock().await.unwrap();
            lease
        })
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    runtime.block_on(async {
        let guard = coord.locks().acquire("/l/rt-b", LONG_TTL).await.unwrap();
        assert_ne!(
            guard.lease_id(),
            first_lease,
            "the parked lease has nobody renewing it"
        );
        let lease = guard.lease_id();
        guard.unlock().await.unwrap();
        // The reaper of the first runtime died with it; this park must have started another,
        // which revokes the lease 10-15 s from now (a generous ceiling: load only delays it).
        common::eventually(
            Duration::from_secs(60),
            "the parked lease is reaped",
            || async {
                matches!(
                    coord.store().lease_keep_alive(lease).await,
                    Err(Error::LeaseNotFound { .. })
                )
            },
        )
        .await;
    });
}
