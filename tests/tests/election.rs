//! Leader election: campaign, proclaim, resign, failover seen by observe(), and interop with
//! `etcdctl elect`.

mod common;

use std::time::Duration;

use coord::store::{KeyRange, RangeOptions};
use coord::{Error, Leader, Store};
use futures::{FutureExt, Stream, StreamExt};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::time::timeout;

use common::{etcd_watchers, until_watching};

const TTL: Duration = Duration::from_secs(2);
const LONG_TTL: Duration = Duration::from_secs(30);

async fn candidates(store: &Store, name: &str) -> usize {
    store
        .range(
            &KeyRange::prefix(format!("{name}/")),
            RangeOptions::default().keys_only(),
        )
        .await
        .unwrap()
        .kvs
        .len()
}

/// The next leader change, within a few seconds.
async fn next_leader<S>(observe: &mut S) -> Option<Leader>
where
    S: Stream<Item = coord::Result<Option<Leader>>> + Unpin,
{
    timeout(Duration::from_secs(10), observe.next())
        .await
        .expect("observe() reports within 10 s")
        .expect("observe() does not end")
        .expect("no store error")
}

on_both_backends!(cases:
    first_candidate_leads_at_once_and_leader_reports_it,
    second_candidate_leads_after_the_first_resigns,
    proclaim_changes_the_value_observers_see,
    leader_failover_when_the_leaders_lease_is_revoked,
    dropping_a_campaign_withdraws_the_candidate,
    bad_input_is_invalid_argument,
);

mod cases {
    use super::*;
    use crate::common::{Backend, eventually};

    pub async fn first_candidate_leads_at_once_and_leader_reports_it(b: &Backend) {
        let election = b.coord.election("/e/first").ttl(LONG_TTL);
        assert_eq!(election.leader().await.unwrap(), None);
        let leadership = election.campaign("node-a").await.unwrap();
        assert_eq!(
            leadership.key(),
            format!("/e/first/{:x}", leadership.lease_id())
        );
        let leader = election.leader().await.unwrap().expect("a leader");
        assert_eq!(leader.key, leadership.key());
        assert_eq!(leader.value, b"node-a");
        assert_eq!(leader.revision, leadership.revision());
        let health = b.coord.health().await.unwrap();
        assert!(
            health
                .sessions
                .iter()
                .any(|s| s.kind == "election" && s.name == "/e/first")
        );
        leadership.resign().await.unwrap();
        assert_eq!(election.leader().await.unwrap(), None);
    }

    pub async fn second_candidate_leads_after_the_first_resigns(b: &Backend) {
        let election = b.coord.election("/e/second").ttl(LONG_TTL);
        let first = election.campaign("a").await.unwrap();
        let second = tokio::spawn({
            let election = election.clone();
            async move { election.campaign("b").await }
        });
        eventually(Duration::from_secs(5), "b is a candidate", || async {
            candidates(b.store(), "/e/second").await == 2
        })
        .await;
        until_watching(b.store(), 1, "b watches a's key").await;
        assert!(!second.is_finished(), "b waits while a leads");
        assert_eq!(election.leader().await.unwrap().unwrap().value, b"a");
        first.resign().await.unwrap();
        let second = timeout(Duration::from_secs(10), second)
            .await
            .expect("b leads after a resigns")
            .unwrap()
            .unwrap();
        assert_eq!(election.leader().await.unwrap().unwrap().value, b"b");
        second.resign().await.unwrap();
    }

    pub async fn proclaim_changes_the_value_observers_see(b: &Backend) {
        let election = b.coord.election("/e/proclaim").ttl(LONG_TTL);
        let mut observe = Box::pin(election.observe());
        assert_eq!(next_leader(&mut observe).await, None, "nobody leads yet");
        let leadership = election.campaign("v1").await.unwrap();
        assert_eq!(next_leader(&mut observe).await.unwrap().value, b"v1");
        leadership.proclaim("v2").await.unwrap();
        let seen = next_leader(&mut observe).await.unwrap();
        assert_eq!(seen.value, b"v2");
        assert_eq!(seen.key, leadership.key());
        // A proclaim by a leader whose key is gone fails.
        b.store()
            .delete(&KeyRange::key(leadership.key()))
            .await
            .unwrap();
        let err = leadership.proclaim("v3").await.unwrap_err();
        assert!(matches!(err, Error::SessionLost { .. }), "{err:?}");
    }

    pub async fn leader_failover_when_the_leaders_lease_is_revoked(b: &Backend) {
        let election = b.coord.election("/e/failover").ttl(TTL);
        let leader = election.campaign("leader").await.unwrap();
        let mut observe = Box::pin(election.observe());
        assert_eq!(next_leader(&mut observe).await.unwrap().value, b"leader");
        let follower = tokio::spawn({
            let election = election.clone();
            async move { election.campaign("follower").await }
        });
        eventually(
            Duration::from_secs(5),
            "the follower is a candidate",
            || async { candidates(b.store(), "/e/failover").await == 2 },
        )
        .await;
        b.store().lease_revoke(leader.lease_id()).await.unwrap();
        let lost = timeout(Duration::from_secs(5), leader.lost())
            .await
            .expect("the old leader learns it lost");
        assert!(matches!(lost, Error::SessionLost { .. }));
        let follower = timeout(Duration::from_secs(10), follower)
            .await
            .expect("the follower takes over")
            .unwrap()
            .unwrap();
        // observe() may or may not show the instant with no candidate first.
        let mut seen = next_leader(&mut observe).await;
        if seen.is_none() {
            seen = next_leader(&mut observe).await;
        }
        let seen = seen.expect("observe reports the new leader");
        assert_eq!(seen.value, b"follower");
        assert_eq!(seen.key, follower.key());
        assert!(seen.revision > leader.revision());
        follower.resign().await.unwrap();
    }

    pub async fn dropping_a_campaign_withdraws_the_candidate(b: &Backend) {
        let election = b.coord.election("/e/cancel").ttl(LONG_TTL);
        let leader = election.campaign("a").await.unwrap();
        {
            let waiting = election.campaign("b");
            tokio::pin!(waiting);
            // Drive the campaign until it waits (its key created, the leader's key watched),
            // then drop it.
            tokio::select! {
                r = &mut waiting => panic!("campaign returned while a leads: {r:?}"),
                () = until_watching(b.store(), 1, "b watches a's key") => {}
            }
            assert_eq!(candidates(b.store(), "/e/cancel").await, 2);
        }
        eventually(
            Duration::from_secs(5),
            "the candidate key is removed",
            || async { candidates(b.store(), "/e/cancel").await == 1 },
        )
        .await;
        leader.resign().await.unwrap();
    }

    pub async fn bad_input_is_invalid_argument(b: &Backend) {
        for name in ["", "/e/nul\0"] {
            let election = b.coord.election(name);
            let err = election.campaign("x").await.unwrap_err();
            assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
            let err = election.leader().await.unwrap_err();
            assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
            let mut observe = Box::pin(election.observe());
            let first = observe.next().await.expect("one item");
            assert!(matches!(first, Err(Error::InvalidArgument { .. })));
            assert!(observe.next().await.is_none(), "then the stream ends");
        }
        let err = b
            .coord
            .election("/e/short")
            .ttl(Duration::from_millis(500))
            .campaign("x")
            .await
            .unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
    }
}

/// While `etcdctl elect NAME VALUE` leads, `campaign` waits; it leads once etcdctl is gone,
/// and `leader()` reports etcdctl's value meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_elect_leader_blocks_campaign() {
    let backend = common::Backend::etcd().await;
    let server = backend.server.as_ref().unwrap();
    let store = backend.store();
    let mut etcdctl = server
        .spawn_etcdctl(&["elect", "/e/interop", "from-etcdctl"])
        .unwrap();
    let mut lines = BufReader::new(etcdctl.stdout.take().unwrap()).lines();
    let key = timeout(Duration::from_secs(10), lines.next_line())
        .await
        .expect("etcdctl is elected")
        .unwrap()
        .unwrap();
    let election = backend.coord.election("/e/interop").ttl(LONG_TTL);
    let leader = election.leader().await.unwrap().expect("etcdctl leads");
    assert_eq!(leader.key, key.trim());
    assert_eq!(leader.value, b"from-etcdctl");
    let campaign = tokio::spawn({
        let election = election.clone();
        async move { election.campaign("from-coord").await }
    });
    common::eventually(Duration::from_secs(5), "coord is a candidate", || async {
        candidates(store, "/e/interop").await == 2
    })
    .await;
    until_watching(store, 1, "coord watches etcdctl's key").await;
    assert!(!campaign.is_finished(), "coord waits while etcdctl leads");
    // etcdctl resigns when it is interrupted; killing it leaves its lease to expire, so
    // revoke its lease as an operator would.
    store.lease_revoke(leader.lease).await.unwrap();
    let leadership = timeout(Duration::from_secs(10), campaign)
        .await
        .expect("coord leads once etcdctl's key is gone")
        .unwrap()
        .unwrap();
    assert_eq!(
        election.leader().await.unwrap().unwrap().value,
        b"from-coord"
    );
    leadership.resign().await.unwrap();
    let _ = etcdctl.kill().await;
}

/// While coord leads, `etcdctl elect` waits, and `etcdctl elect -l` observes coord's value;
/// after coord resigns, etcdctl is elected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coord_leader_blocks_etcdctl_elect() {
    let backend = common::Backend::etcd().await;
    let server = backend.server.as_ref().unwrap();
    let store = backend.store();
    let election = backend.coord.election("/e/reverse").ttl(LONG_TTL);
    let leadership = election.campaign("from-coord").await.unwrap();

    let watching = etcd_watchers(&server.endpoint()).await;
    let mut listener = server
        .spawn_etcdctl(&["elect", "-l", "/e/reverse"])
        .unwrap();
    let mut observed = BufReader::new(listener.stdout.take().unwrap()).lines();
    let first = timeout(Duration::from_secs(10), observed.next_line())
        .await
        .expect("etcdctl elect -l reports the leader")
        .unwrap()
        .unwrap();
    assert_eq!(first.trim(), leadership.key());
    let value = observed.next_line().await.unwrap().unwrap();
    assert_eq!(value.trim(), "from-coord");

    let mut etcdctl = server
        .spawn_etcdctl(&["elect", "/e/reverse", "from-etcdctl"])
        .unwrap();
    let mut lines = BufReader::new(etcdctl.stdout.take().unwrap()).lines();
    common::eventually(
        Duration::from_secs(10),
        "etcdctl is a candidate",
        || async { candidates(store, "/e/reverse").await == 2 },
    )
    .await;
    // One watcher is the listener's (it watches the leader's key), one the candidate's.
    common::eventually(
        Duration::from_secs(10),
        "etcdctl watches our key (it waits)",
        || async { etcd_watchers(&server.endpoint()).await >= watching + 2.0 },
    )
    .await;
    // etcdctl prints its key when it is elected: waiting, it has not, and only the delete of
    // our key ends its wait.
    assert!(
        lines.next_line().now_or_never().is_none(),
        "etcdctl was elected while coord leads"
    );
    leadership.resign().await.unwrap();
    let key = timeout(Duration::from_secs(10), lines.next_line())
        .await
        .expect("etcdctl is elected after coord resigns")
        .unwrap()
        .unwrap();
    assert_eq!(election.leader().await.unwrap().unwrap().key, key.trim());
    let _ = etcdctl.kill().await;
    let _ = listener.kill().await;
}

/// observe() goes on across an etcd restart and reports the leader elected after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observe_survives_an_etcd_restart() {
    let mut backend = common::Backend::etcd().await;
    let coord = backend.coord.clone();
    let election = coord.election("/e/restart").ttl(LONG_TTL);
    let first = election.campaign("before").await.unwrap();
    let mut observe = Box::pin(election.observe());
    assert_eq!(next_leader(&mut observe).await.unwrap().value, b"before");

    let server = backend.server.as_mut().unwrap();
    server.kill().await.unwrap();
    server.restart().await.unwrap();

    // Unary calls recover by themselves; retry the revoke until the client has reconnected.
    let store = coord.store().clone();
    let lease = first.lease_id();
    common::eventually(Duration::from_secs(15), "revoke after restart", || {
        let store = store.clone();
        async move {
            matches!(
                store.lease_revoke(lease).await,
                Ok(()) | Err(Error::LeaseNotFound { .. })
            )
        }
    })
    .await;
    let second = timeout(Duration::from_secs(15), election.campaign("after"))
        .await
        .expect("a new leader after the restart")
        .unwrap();
    // The stream may yield errors while it reconnects, and "nobody" in between.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let item = timeout(Duration::from_secs(20), observe.next())
            .await
            .expect("observe() goes on after the restart")
            .expect("observe() never ends");
        if let Ok(Some(leader)) = item {
            if leader.value == b"after" {
                assert_eq!(leader.key, second.key());
                break;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "observe never reported the new leader"
        );
    }
    drop(first);
    second.resign().await.unwrap();
}
