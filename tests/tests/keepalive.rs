//! Every lease of one `Coord` renews over one etcd `LeaseKeepAlive` stream, each on its own
//! schedule; a broken stream is replaced by the next renewal; a revoked lease is told apart
//! from the others on the stream.

mod common;

use std::time::Duration;

use coord::testing::EtcdServer;
use coord::{Coord, Error, Session};
use futures::future::join_all;

use common::{etcd_metric, eventually};

/// A ceiling for what should take a second or so: a test waits for the event, not a time.
const WAIT: Duration = Duration::from_secs(30);

/// How many `LeaseKeepAlive` streams etcd has seen opened since it started.
const KEEP_ALIVE_STREAMS_STARTED: &str = "grpc_server_started_total{grpc_method=\"LeaseKeepAlive\",grpc_service=\"etcdserverpb.Lease\",grpc_type=\"bidi_stream\"}";

async fn start() -> (EtcdServer, Coord) {
    let server = EtcdServer::start()
        .await
        .expect("start etcd (see the error for how to install it)");
    let coord = Coord::connect(server.client_config())
        .await
        .expect("connect to the test etcd");
    (server, coord)
}

async fn sessions(coord: &Coord, n: usize, ttl: Duration) -> Vec<Session> {
    join_all((0..n).map(|_| Session::new(coord.store(), ttl)))
        .await
        .into_iter()
        .collect::<Result<_, _>>()
        .expect("grant the sessions' leases")
}

/// Renews every session now, so each has sent at least one keep-alive.
async fn refresh_all(sessions: &[Session]) -> Result<(), Error> {
    join_all(sessions.iter().map(Session::refresh))
        .await
        .into_iter()
        .collect()
}

/// True if etcd still holds the lease (with time left on it).
async fn lease_alive(coord: &Coord, lease: i64) -> bool {
    coord
        .store()
        .lease_ttl(lease)
        .await
        .expect("read the lease's TTL")
        .ttl
        > 0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_sessions_renew_over_one_stream() {
    let (server, coord) = start().await;
    let ttl = Duration::from_secs(2);
    let sessions = sessions(&coord, 200, ttl).await;
    refresh_all(&sessions).await.expect("every lease renews");

    assert_eq!(coord.store().keep_alive_streams(), 1);
    assert_eq!(
        etcd_metric(&server.endpoint(), KEEP_ALIVE_STREAMS_STARTED).await,
        1.0,
        "etcd saw one keep-alive stream"
    );

    // Two TTLs: only renewals keep the leases.
    tokio::time::sleep(2 * ttl).await;
    for session in &sessions {
        assert!(session.is_alive(), "lease {:x} lost", session.lease_id());
        assert!(lease_alive(&coord, session.lease_id()).await);
    }
    assert_eq!(coord.store().keep_alive_streams(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewals_resume_on_one_new_stream_after_etcd_restarts() {
    let (mut server, coord) = start().await;
    // Long enough to outlast the restart.
    let sessions = sessions(&coord, 20, Duration::from_secs(10)).await;
    refresh_all(&sessions).await.expect("every lease renews");
    assert_eq!(coord.store().keep_alive_streams(), 1);

    server.kill().await.expect("kill etcd");
    eventually(WAIT, "the broken keep-alive stream is closed", || async {
        coord.store().keep_alive_streams() == 0
    })
    .await;
    server.restart().await.expect("restart etcd");

    // The first renewals after the restart may still meet the reconnecting channel.
    eventually(WAIT, "every lease renews after the restart", || async {
        refresh_all(&sessions).await.is_ok()
    })
    .await;
    assert_eq!(coord.store().keep_alive_streams(), 1);
    // etcd's counters start again with the process: one stream since the restart.
    assert_eq!(
        etcd_metric(&server.endpoint(), KEEP_ALIVE_STREAMS_STARTED).await,
        1.0
    );
    for session in &sessions {
        assert!(session.is_alive(), "lease {:x} lost", session.lease_id());
        assert!(lease_alive(&coord, session.lease_id()).await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_lease_is_lost_while_the_others_on_the_stream_renew() {
    let (_server, coord) = start().await;
    let ttl = Duration::from_secs(3);
    let sessions = sessions(&coord, 5, ttl).await;
    refresh_all(&sessions).await.expect("every lease renews");
    let (revoked, others) = sessions.split_first().expect("five sessions");

    coord
        .store()
        .lease_revoke(revoked.lease_id())
        .await
        .expect("revoke one lease");
    assert!(matches!(
        coord.store().lease_keep_alive(revoked.lease_id()).await,
        Err(Error::LeaseNotFound { lease }) if lease == revoked.lease_id()
    ));
    assert!(matches!(
        revoked.refresh().await,
        Err(Error::SessionLost { .. })
    ));
    let lost = tokio::time::timeout(WAIT, revoked.lost())
        .await
        .expect("the revoked session reports lost");
    assert!(matches!(lost, Error::SessionLost { .. }));

    refresh_all(others).await.expect("the others renew");
    // Past a TTL: the others are kept by their own renewals on the same stream.
    tokio::time::sleep(2 * ttl).await;
    for session in others {
        assert!(session.is_alive(), "lease {:x} lost", session.lease_id());
        assert!(lease_alive(&coord, session.lease_id()).await);
    }
    assert_eq!(coord.store().keep_alive_streams(), 1);
}
