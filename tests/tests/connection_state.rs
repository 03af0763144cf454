//! `Coord::state()` against a real etcd: an outage suspends, a restart reconnects, an outage
//! longer than a lease's TTL loses the lease (and the lock on it), and a single slow call
//! changes nothing.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use coord::testing::EtcdServer;
use coord::{ConnectionState, Coord, CoordConfig};

const WAIT: Duration = Duration::from_secs(20);

#[derive(CoordConfig, Debug, Clone)]
#[coord(prefix = "/config/state")]
struct Cfg {
    #[coord(default = 1)]
    value: u64,
}

/// Every state `coord` enters from now on, by name, in order.
fn record(coord: &Coord) -> Arc<Mutex<Vec<&'static str>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut rx = coord.state();
    let log = Arc::clone(&seen);
    tokio::spawn(async move {
        while rx.changed().await.is_ok() {
            let state = *rx.borrow_and_update();
            log.lock().unwrap().push(state.name());
        }
    });
    seen
}

async fn until_state(coord: &Coord, name: &str) {
    let mut rx = coord.state();
    tokio::time::timeout(WAIT, rx.wait_for(|state| state.name() == name))
        .await
        .unwrap_or_else(|_| panic!("never {name}; now {:?}", *coord.state().borrow()))
        .expect("state sender alive");
}

/// The states recorded, once `n` are (the recording task may trail the state a moment).
async fn states(seen: &Mutex<Vec<&'static str>>, n: usize) -> Vec<&'static str> {
    let deadline = tokio::time::Instant::now() + WAIT;
    while seen.lock().unwrap().len() < n && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    seen.lock().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_etcd_suspends_and_restarting_it_reconnects() {
    let mut server = EtcdServer::start().await.unwrap();
    let coord = Coord::connect(server.client_config()).await.unwrap();
    let _live = coord.live::<Cfg>().await.unwrap();
    assert_eq!(*coord.state().borrow(), ConnectionState::Connected);
    let seen = record(&coord);

    server.kill().await.unwrap();
    // Nothing is called: the broken watch stream alone says so.
    until_state(&coord, "suspended").await;
    let ConnectionState::Suspended { since } = *coord.state().borrow() else {
        panic!("not suspended");
    };
    assert!(since.elapsed() < WAIT);

    server.restart().await.unwrap();
    until_state(&coord, "reconnected").await;
    assert!(coord.state().borrow().is_connected());
    coord.config().set("/config/state/value", &2).await.unwrap();
    assert_eq!(states(&seen, 2).await, ["suspended", "reconnected"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_longer_than_the_ttl_loses_the_lock_and_says_so() {
    let mut server = EtcdServer::start().await.unwrap();
    let coord = Coord::connect(server.client_config()).await.unwrap();
    let guard = coord
        .locks()
        .acquire("/locks/state", Duration::from_secs(2))
        .await
        .unwrap();
    let seen = record(&coord);

    server.kill().await.unwrap();
    until_state(&coord, "lost").await;
    // The holder learns it from its guard too, and the state says it no later than that.
    let lost = tokio::time::timeout(WAIT, guard.lost())
        .await
        .expect("the guard reports the loss");
    assert!(matches!(lost, coord::Error::SessionLost { .. }), "{lost}");

    server.restart().await.unwrap();
    until_state(&coord, "reconnected").await;
    assert_eq!(states(&seen, 3).await, ["suspended", "lost", "reconnected"]);
    // Reconnected: the lock can be taken again (once etcd, which restarted every lease's
    // clock when it came back, has expired the lost one).
    let again = tokio::time::timeout(
        WAIT,
        coord
            .locks()
            .acquire("/locks/state", Duration::from_secs(2)),
    )
    .await
    .expect("the lock is free again")
    .unwrap();
    assert!(again.is_alive());
}

/// A lease revoked behind the holder's back (an operator) while etcd is fine: `Lost`, then
/// `Reconnected` at the next answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_revoked_by_an_operator_is_lost_then_reconnected() {
    let server = EtcdServer::start().await.unwrap();
    let coord = Coord::connect(server.client_config()).await.unwrap();
    let guard = coord
        .locks()
        .acquire("/locks/revoked", Duration::from_secs(3))
        .await
        .unwrap();
    let seen = record(&coord);
    server
        .etcdctl(&["lease", "revoke", &format!("{:x}", guard.lease_id())])
        .unwrap();
    // The next renewal (a third of the TTL) finds it gone.
    until_state(&coord, "lost").await;
    guard.lost().await;
    coord.config().set("/config/state/value", &3).await.unwrap();
    until_state(&coord, "reconnected").await;
    assert_eq!(states(&seen, 2).await, ["lost", "reconnected"]);
}

/// A request that times out on a frozen etcd is one slow call: no suspension, no flapping.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_slow_call_changes_nothing() {
    let mut server = EtcdServer::start().await.unwrap();
    let config = server
        .client_config()
        .with_request_timeout(Duration::from_millis(300));
    let coord = Coord::connect(config).await.unwrap();
    let live = coord.live::<Cfg>().await.unwrap();
    let mut values = live.subscribe();
    // Marks every state change from here on, however brief, as unseen.
    let state = coord.state();

    server.pause().unwrap();
    let slow = coord.config().get::<u64>("/config/state/value").await;
    server.resume().unwrap();
    assert!(
        matches!(slow, Err(coord::Error::Timeout { .. })),
        "{slow:?}"
    );
    coord.config().set("/config/state/value", &4).await.unwrap();
    // The write after the pause reaches the handle: its watch came through the pause. A watch
    // broken by it would have suspended the Coord before it could deliver this.
    tokio::time::timeout(WAIT, values.wait_for(|value| value.value == 4))
        .await
        .expect("the handle sees the write after the pause")
        .unwrap();
    assert!(
        !state.has_changed().unwrap(),
        "the state changed: now {:?}",
        *state.borrow()
    );
    assert_eq!(*coord.state().borrow(), ConnectionState::Connected);
}

#[tokio::test]
async fn the_embedded_store_is_connected_until_a_lease_is_lost() {
    let coord = Coord::in_memory();
    assert_eq!(*coord.state().borrow(), ConnectionState::Connected);
    let guard = coord
        .locks()
        .acquire("/locks/memory", Duration::from_secs(2))
        .await
        .unwrap();
    coord.store().lease_revoke(guard.lease_id()).await.unwrap();
    until_state(&coord, "lost").await;
    coord.config().set("/config/state/value", &5).await.unwrap();
    until_state(&coord, "reconnected").await;
}

/// A `Coord` started offline (from a snapshot) is `Suspended` from its first failed call, and
/// `Reconnected` once etcd is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coord_started_offline_is_suspended_until_etcd_answers() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = EtcdServer::start().await.unwrap();
    let config = server.client_config().with_snapshot_dir(dir.path());
    {
        let first = Coord::connect(config.clone()).await.unwrap();
        first.config().set("/config/state/value", &7).await.unwrap();
        let live = first.live::<Cfg>().await.unwrap();
        assert_eq!(live.load().value, 7);
        // The snapshot is written off the reload path: wait for it.
        let deadline = tokio::time::Instant::now() + WAIT;
        while std::fs::read_dir(dir.path()).unwrap().count() == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no snapshot written"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        first.close().await.unwrap();
    }
    server.kill().await.unwrap();

    let coord = Coord::connect(config).await.unwrap();
    let live = coord.live::<Cfg>().await.unwrap();
    assert_eq!(live.load().value, 7);
    until_state(&coord, "suspended").await;
    server.restart().await.unwrap();
    until_state(&coord, "reconnected").await;
}
