//! Connecting to etcd: failing fast when it is not there, recovering when it comes back, and
//! riding out the loss of one member of a three-member cluster.
//!
//! These tests run real etcd servers (`coord::testing`); without the `etcd` binary they fail
//! with an error saying how to install it.
//!
//! How fast a failure comes is a benchmark's business: these tests check what happens (an
//! `Unavailable` naming the endpoint, not a hang), with a generous ceiling.

mod common;

use std::time::Duration;

use coord::store::{KeyRange, RangeOptions};
use coord::testing::{EtcdCluster, EtcdServer};
use coord::{ClientConfig, Coord, Error};
use tokio::time::timeout;

use common::proxy::Proxy;

/// A ceiling for a failure that comes within a dial or request timeout of a second or two:
/// only a hang reaches it.
const WAIT: Duration = Duration::from_secs(30);

async fn start_server() -> EtcdServer {
    EtcdServer::start()
        .await
        .expect("start etcd (the error says how to install it)")
}

async fn start_cluster(members: usize) -> EtcdCluster {
    EtcdCluster::start(members)
        .await
        .expect("start an etcd cluster (the error says how to install etcd)")
}

/// A port nothing listens on: bound once to find it, then released.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_to_closed_port_is_unavailable_naming_the_endpoint() {
    let endpoint = format!("http://127.0.0.1:{}", closed_port());
    let config = ClientConfig::profile("test").with_endpoints([endpoint.as_str()]);

    let err = timeout(WAIT, Coord::connect(config))
        .await
        .expect("connect gives up instead of hanging")
        .unwrap_err();

    match &err {
        Error::Unavailable { endpoints, reason } => {
            assert_eq!(endpoints, &endpoint);
            assert!(reason.to_lowercase().contains("refused"), "{reason}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(err.to_string().contains(&endpoint), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_with_a_short_dial_timeout_gives_up_with_unavailable() {
    let endpoint = format!("127.0.0.1:{}", closed_port());
    let config = ClientConfig::profile("production")
        .with_endpoints([endpoint.as_str()])
        .with_dial_timeout(Duration::from_millis(300));

    let err = timeout(WAIT, Coord::connect(config))
        .await
        .expect("connect gives up instead of hanging")
        .unwrap_err();

    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
}

/// `dial_timeout` is how long connect keeps trying: an etcd that starts answering later than
/// any profile's default dial timeout (5 s at most), but within this one, is waited for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_keeps_trying_for_its_whole_dial_timeout() {
    let server = start_server().await;
    let endpoint = format!("127.0.0.1:{}", closed_port());
    let config = ClientConfig::profile("production")
        .with_endpoints([endpoint.as_str()])
        .with_dial_timeout(Duration::from_secs(120));
    let connecting = tokio::spawn(Coord::connect(config));

    // At least this long: a loaded machine only makes the wait longer, never shorter.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(!connecting.is_finished(), "connect still trying");
    let _up = Proxy::start_on(&endpoint, &server.endpoint()).await;

    let coord = timeout(WAIT, connecting)
        .await
        .expect("connect returns once etcd answers")
        .unwrap()
        .expect("connected to the etcd that came up");
    coord.store().put("/late", b"1".to_vec(), 0).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_to_a_running_server_reports_it_healthy() {
    let server = start_server().await;
    let coord = Coord::connect(server.client_config()).await.unwrap();

    let written = coord
        .store()
        .put("/hello", b"world".to_vec(), 0)
        .await
        .unwrap();
    let health = coord.health().await.unwrap();

    assert!(health.reachable, "{health:?}");
    assert_eq!(health.error, None);
    assert!(health.revision >= written.revision, "{health:?}");
    assert!(health.version.starts_with("3."), "{health:?}");
    let status = coord.store().status().await.unwrap();
    assert_ne!(status.leader, 0);
    assert_eq!(
        status.leader, status.member_id,
        "a single member leads itself"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_host_port_endpoints_work_like_http_urls() {
    let server = start_server().await;
    let bare = server.endpoint().trim_start_matches("http://").to_string();
    let coord = Coord::connect(server.client_config().with_endpoints([bare]))
        .await
        .unwrap();
    coord.store().put("/bare", b"1".to_vec(), 0).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_calls_fail_while_etcd_is_down_and_recover_after_restart() {
    let mut server = start_server().await;
    let coord = Coord::connect(server.client_config()).await.unwrap();
    let store = coord.store();
    store.put("/k", b"before".to_vec(), 0).await.unwrap();

    server.kill().await.unwrap();
    let err = timeout(WAIT, store.get("/k"))
        .await
        .expect("a request to a dead etcd fails instead of hanging")
        .unwrap_err();
    assert!(
        err.is_transient(),
        "expected Unavailable or Timeout, got {err:?}"
    );
    let health = coord.health().await.unwrap();
    assert!(!health.reachable);
    assert!(health.error.is_some());

    server.restart().await.unwrap();
    let (kv, _) = store
        .get("/k")
        .await
        .expect("the same Coord works after the restart");
    assert_eq!(
        kv.unwrap().value,
        b"before",
        "the data survived the restart"
    );
    store.put("/k", b"after".to_vec(), 0).await.unwrap();
    assert!(coord.health().await.unwrap().reachable);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connection_survives_keep_alive_pings() {
    let server = start_server().await;
    let mut config = server.client_config();
    config.keep_alive_time = Duration::from_millis(500);
    config.keep_alive_timeout = Duration::from_millis(500);
    let coord = Coord::connect(config).await.unwrap();

    // Several ping intervals with nothing to do: etcd must not drop the connection for it.
    tokio::time::sleep(Duration::from_secs(4)).await;

    coord.store().put("/idle", b"1".to_vec(), 0).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_member_cluster_replicates_a_put_to_every_member() {
    let cluster = start_cluster(3).await;
    let writer = Coord::connect(cluster.member_client_config(0))
        .await
        .unwrap();
    let put = writer
        .store()
        .put("/replicated", b"v".to_vec(), 0)
        .await
        .unwrap();

    for i in 0..cluster.len() {
        let reader = Coord::connect(cluster.member_client_config(i))
            .await
            .unwrap();
        let (kv, revision) = reader.store().get("/replicated").await.unwrap();
        assert_eq!(kv.unwrap().value, b"v", "member {i}");
        assert!(revision >= put.revision);
    }
    let leaders: Vec<u64> = {
        let mut leaders = Vec::new();
        for i in 0..cluster.len() {
            let coord = Coord::connect(cluster.member_client_config(i))
                .await
                .unwrap();
            leaders.push(coord.store().status().await.unwrap().leader);
        }
        leaders
    };
    assert!(
        leaders.windows(2).all(|w| w[0] == w[1]),
        "one leader: {leaders:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_keeps_serving_with_one_member_killed_and_the_member_rejoins() {
    let mut cluster = start_cluster(3).await;
    let coord = Coord::connect(cluster.client_config()).await.unwrap();
    let store = coord.store();
    store.put("/c/0", b"0".to_vec(), 0).await.unwrap();

    cluster.kill(1).await.unwrap();
    assert!(!cluster.is_running(1));
    // Connecting with every endpoint, including the dead one, works too.
    let late = Coord::connect(cluster.client_config()).await.unwrap();
    for i in 1..=20 {
        let key = format!("/c/{i}");
        store
            .put(&key, i.to_string().into_bytes(), 0)
            .await
            .unwrap_or_else(|e| panic!("put {key} with a member down: {e}"));
        let (kv, _) = late.store().get(&key).await.unwrap();
        assert_eq!(kv.unwrap().value, i.to_string().into_bytes());
    }

    cluster.restart(1).await.unwrap();
    let rejoined = Coord::connect(cluster.member_client_config(1))
        .await
        .unwrap();
    let all = rejoined
        .store()
        .range(&KeyRange::prefix("/c/"), RangeOptions::default())
        .await
        .unwrap();
    assert_eq!(all.count, 21, "the restarted member caught up");
    let status = rejoined.store().status().await.unwrap();
    assert_ne!(status.leader, 0, "the restarted member knows the leader");
}
