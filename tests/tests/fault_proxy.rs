//! `coord::testing::FaultProxy` against a real etcd: a `Coord` behind healed proxies works;
//! behind a partitioned or blackholed one its calls fail as `Unavailable` or `Timeout` (not
//! hang); after a heal they work again; latency slows a call by at least what was set. A
//! write whose answer is lost (held by the proxy) says its outcome is unknown, and was in
//! fact applied; one refused before it was sent stays `Unavailable`. And the harness's
//! compaction drops the history.

mod common;

use std::time::{Duration, Instant};

use coord::store::{KeyRange, RangeOptions};
use coord::testing::{EtcdCluster, EtcdServer};
use coord::{Coord, Error};

use common::eventually;

/// Long enough for a reconnect after a heal on a busy machine; a ceiling, not an expectation.
const RECOVER: Duration = Duration::from_secs(30);

async fn server() -> EtcdServer {
    EtcdServer::start()
        .await
        .expect("start etcd (see the error for how to install it)")
}

/// A call through a cut proxy must end with an error, not hang: 10 request timeouts is the
/// alarm for a hang, not a speed expectation.
async fn must_fail<T: std::fmt::Debug>(
    call: impl std::future::Future<Output = coord::Result<T>>,
    request_timeout: Duration,
) -> Error {
    match tokio::time::timeout(10 * request_timeout, call).await {
        Ok(Ok(value)) => panic!("the call went through: {value:?}"),
        Ok(Err(e)) => e,
        Err(_) => panic!("the call hung past 10 request timeouts"),
    }
}

async fn works(coord: &Coord) -> bool {
    coord.store().put("/probe", b"x".to_vec(), 0).await.is_ok()
}

#[tokio::test]
async fn a_coord_reads_and_writes_through_healed_proxies() {
    let server = server().await;
    let proxies = server.proxies().await.unwrap();
    let coord = Coord::connect(proxies.client_config()).await.unwrap();
    assert!(proxies[0].is_healed());
    coord
        .store()
        .put("/through", b"proxy".to_vec(), 0)
        .await
        .unwrap();
    let (kv, _) = coord.store().get("/through").await.unwrap();
    assert_eq!(kv.unwrap().value, b"proxy");
    // It went through the proxy: the config names only the proxy.
    assert_eq!(
        proxies.client_config().endpoints,
        vec![proxies[0].endpoint()]
    );
    assert_ne!(proxies[0].endpoint(), server.endpoint());
}

#[tokio::test]
async fn calls_through_a_partition_fail_unavailable_or_timeout_and_work_after_heal() {
    let server = server().await;
    let proxies = server.proxies().await.unwrap();
    let config = proxies.client_config();
    let request_timeout = config.request_timeout;
    let coord = Coord::connect(config).await.unwrap();
    assert!(works(&coord).await);

    proxies.partition();
    let err = must_fail(coord.store().get("/k"), request_timeout).await;
    assert!(
        matches!(err, Error::Unavailable { .. } | Error::Timeout { .. }),
        "{err:?}"
    );
    let err = must_fail(coord.store().put("/k", b"v".to_vec(), 0), request_timeout).await;
    assert!(
        matches!(
            err,
            Error::Unavailable { .. } | Error::OutcomeUnknown { .. }
        ),
        "{err:?}"
    );
    assert!(!proxies[0].is_healed());

    proxies.heal();
    eventually(RECOVER, "calls work again after the heal", || works(&coord)).await;
}

#[tokio::test]
async fn calls_into_a_blackhole_time_out_and_work_after_heal() {
    let server = server().await;
    let proxy = server.proxies().await.unwrap();
    let config = proxy.client_config();
    let request_timeout = config.request_timeout;
    let coord = Coord::connect(config).await.unwrap();
    assert!(works(&coord).await);

    proxy[0].blackhole();
    let started = Instant::now();
    let err = must_fail(coord.store().get("/k"), request_timeout).await;
    assert!(err.is_transient(), "{err:?}");
    // Silence is not a refusal: the call waited for its deadline.
    assert!(
        started.elapsed() >= request_timeout,
        "{:?}",
        started.elapsed()
    );

    proxy[0].heal();
    eventually(RECOVER, "calls work again after the heal", || works(&coord)).await;
}

#[tokio::test]
async fn latency_slows_a_call_by_at_least_twice_the_setting() {
    let server = server().await;
    let proxy = server.proxies().await.unwrap();
    let coord = Coord::connect(proxy.client_config()).await.unwrap();
    assert!(works(&coord).await);

    let latency = Duration::from_millis(200);
    proxy[0].set_latency(latency);
    let started = Instant::now();
    coord.store().get("/k").await.unwrap();
    // The request waits on the way in, the answer on the way out.
    assert!(started.elapsed() >= 2 * latency, "{:?}", started.elapsed());

    proxy[0].heal();
    assert!(proxy[0].is_healed());
}

/// With member 0 partitioned (a client of member 0 alone sees its calls fail), a client of
/// the three is served by the other two; after the heal member 0 serves again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cut_from_one_member_is_served_by_the_others() {
    let cluster = EtcdCluster::start(3)
        .await
        .expect("start a 3-member etcd cluster");
    let proxies = cluster.proxies().await.unwrap();
    assert_eq!(proxies.len(), 3);
    let config = proxies.client_config();
    let request_timeout = config.request_timeout;
    let coord = Coord::connect(config.clone()).await.unwrap();
    // A client of member 0 alone, to see the partition bite.
    let member_0 = Coord::connect(config.with_endpoints([proxies[0].endpoint()]))
        .await
        .unwrap();
    assert!(works(&member_0).await);
    proxies[0].partition();
    let err = must_fail(member_0.store().get("/k"), request_timeout).await;
    assert!(
        matches!(err, Error::Unavailable { .. } | Error::Timeout { .. }),
        "{err:?}"
    );
    eventually(RECOVER, "the other two members serve the client", || {
        works(&coord)
    })
    .await;
    proxies[1].blackhole();
    proxies[1].heal();
    proxies[0].heal();
    assert!(proxies.iter().all(|p| p.is_healed()));
    eventually(RECOVER, "member 0 serves again after the heal", || {
        works(&member_0)
    })
    .await;
}

#[tokio::test]
async fn compact_drops_the_history_below_the_current_revision() {
    let server = server().await;
    let coord = Coord::connect(server.client_config()).await.unwrap();
    let first = coord
        .store()
        .put("/c", b"1".to_vec(), 0)
        .await
        .unwrap()
        .revision;
    coord.store().put("/c", b"2".to_vec(), 0).await.unwrap();

    let compacted_at = server.compact().await.unwrap();
    assert!(compacted_at > first, "{compacted_at} > {first}");

    let old = coord
        .store()
        .range(
            &KeyRange::key("/c"),
            RangeOptions::default().at_revision(first),
        )
        .await;
    assert!(matches!(old, Err(Error::Compacted { .. })), "{old:?}");
}

#[tokio::test]
async fn compact_with_every_member_paused_is_an_invalid_argument() {
    let mut server = server().await;
    server.pause().unwrap();
    let err = server.compact().await.unwrap_err();
    server.resume().unwrap();
    assert!(
        matches!(&err, coord::testing::HarnessError::InvalidArgument { .. }),
        "{err:?}"
    );
}

/// The member applies a write whose answer the proxy holds, so the client's deadline passes:
/// coord cannot know whether it happened and says so (`OutcomeUnknown`, around the
/// `Timeout`), and it did happen. A read in the same state is a plain `Timeout`: nothing to
/// check before reading again.
#[tokio::test]
async fn a_write_whose_answer_is_lost_has_an_unknown_outcome_and_was_applied() {
    let server = server().await;
    let proxy = server.proxies().await.unwrap();
    let request_timeout = Duration::from_millis(500);
    let config = proxy.client_config().with_request_timeout(request_timeout);
    let coord = Coord::connect(config).await.unwrap();
    assert!(works(&coord).await);

    proxy[0].hold_answers();
    let err = must_fail(
        coord.store().put("/lost", b"applied".to_vec(), 0),
        request_timeout,
    )
    .await;
    match &err {
        Error::OutcomeUnknown {
            operation,
            key,
            source,
        } => {
            assert_eq!((operation.as_str(), key.as_str()), ("put /lost", "/lost"));
            assert!(matches!(**source, Error::Timeout { .. }), "{source:?}");
        }
        other => panic!("expected OutcomeUnknown, got {other:?}"),
    }
    assert!(!err.is_transient(), "not to be retried blindly");
    assert!(
        err.to_string().contains("may or may not have been applied"),
        "{err}"
    );
    // The typed config write says the same.
    let err = must_fail(coord.config().set("/config/lost", &7), request_timeout).await;
    assert!(err.is_outcome_unknown(), "{err:?}");
    // A read is not a write: a timeout, as before.
    let read = must_fail(coord.store().get("/lost"), request_timeout).await;
    assert!(matches!(read, Error::Timeout { .. }), "{read:?}");

    // Both writes were applied: etcd, asked directly, has them.
    assert_eq!(
        server
            .etcdctl(&["get", "--print-value-only", "/lost"])
            .unwrap()
            .trim(),
        "applied"
    );
    assert_eq!(
        server
            .etcdctl(&["get", "--print-value-only", "/config/lost"])
            .unwrap()
            .trim(),
        "7"
    );
    proxy[0].heal();
    eventually(RECOVER, "calls work again after the heal", || works(&coord)).await;
}

/// A write to an etcd that is down cannot be sent (the connection is refused): it did not
/// happen, and stays `Unavailable`, as a read does.
#[tokio::test]
async fn a_write_refused_before_it_is_sent_stays_unavailable() {
    let mut server = server().await;
    let coord = Coord::connect(server.client_config()).await.unwrap();
    assert!(works(&coord).await);
    server.kill().await.unwrap();
    let request_timeout = coord.client_config().unwrap().request_timeout;
    // The first call after the kill may still go out on the old connection, and its
    // outcome is then unknown indeed; once the client knows the connection is gone, every
    // call is refused before it is sent.
    eventually(RECOVER, "a read is refused", || async {
        matches!(
            coord.store().get("/k").await,
            Err(Error::Unavailable { .. })
        )
    })
    .await;
    let err = must_fail(coord.store().put("/k", b"v".to_vec(), 0), request_timeout).await;
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    let err = must_fail(coord.config().set("/config/k", &1), request_timeout).await;
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    let err = must_fail(coord.store().get("/k"), request_timeout).await;
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    server.restart().await.unwrap();
    assert_eq!(
        server
            .etcdctl(&["get", "--print-value-only", "/k"])
            .unwrap()
            .trim(),
        "",
        "the refused write did not happen"
    );
}
