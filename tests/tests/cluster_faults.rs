//! Fault tests on a real 3-member etcd cluster: the leader dies while a watch and a `Live`
//! follow a writer, and the watch's own gRPC stream is on that leader. It dies both ways a
//! server does: stopped (SIGTERM, it hands leadership over first) and crashed (SIGKILL, the
//! others notice only when its heartbeats stop and elect a leader among themselves).

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use coord::store::{Compare, KeyRange, Status, Txn, TxnOp};
use coord::testing::EtcdCluster;
use coord::watch::{ResilientWatch, WatchEvent};
use coord::{Coord, Error};
use coord_tests::fixtures::Pair;
use tokio::time::timeout;

use common::{etcd_metric, eventually};

const WRITES: usize = 200;
/// etcd's gauge of the gRPC watch streams a member serves.
const WATCH_STREAMS: &str = "etcd_debugging_mvcc_watch_stream_total";
/// A ceiling for things that take well under a second on an idle machine.
const WAIT: Duration = Duration::from_secs(30);

/// Creates `/seq/{i}` once: a retry after an ambiguous failure cannot write it twice.
async fn create_once(coord: &Coord, i: usize) {
    let key = format!("/seq/{i:04}");
    loop {
        let txn = Txn::new()
            .when([Compare::create_revision(key.as_str(), 0)])
            .and_then([TxnOp::put(key.as_str(), i.to_string())]);
        match coord.store().txn(txn).await {
            Ok(_) => return,
            // Create-only: safe to send again even if the last one was applied.
            Err(e) if e.is_transient() || e.is_outcome_unknown() => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("write {key}: {e}"),
        }
    }
}

/// Member `i`'s own status (its member ID and the leader it knows).
async fn member_status(cluster: &EtcdCluster, i: usize) -> Status {
    let member = Coord::connect(cluster.member_client_config(i))
        .await
        .unwrap();
    member.store().status().await.unwrap()
}

/// The index of the member that leads now, if a running member says it leads.
async fn leader_index(cluster: &EtcdCluster) -> Option<usize> {
    for i in 0..cluster.len() {
        let status = member_status(cluster, i).await;
        if status.member_id == status.leader {
            return Some(i);
        }
    }
    None
}

/// etcd's count of watch streams on each member.
async fn watch_streams(cluster: &EtcdCluster) -> Vec<f64> {
    let mut streams = Vec::new();
    for i in 0..cluster.len() {
        streams.push(etcd_metric(&cluster.endpoint(i), WATCH_STREAMS).await);
    }
    streams
}

/// How the leader dies.
#[derive(Clone, Copy, Debug)]
enum Death {
    /// SIGTERM: a clean stop.
    Stopped,
    /// SIGKILL: a crash.
    Crashed,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_and_live_survive_the_leader_stopping_without_loss_or_duplicates() {
    leader_dies(Death::Stopped).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_and_live_survive_the_leader_crashing_without_loss_or_duplicates() {
    leader_dies(Death::Crashed).await;
}

async fn leader_dies(death: Death) {
    let mut cluster = EtcdCluster::start(3)
        .await
        .expect("start a 3-member etcd cluster (the error says how to install etcd)");
    // The periodic relist is out of the way: only the watch path can deliver what follows.
    let config = cluster
        .client_config()
        .with_sync_interval(Duration::from_secs(3600));
    let streams_before = watch_streams(&cluster).await;
    let coord = Coord::connect(config).await.unwrap();
    coord.config().publish(&Pair { a: 0, b: 0 }).await.unwrap();
    let live = coord.live::<Pair>().await.unwrap();
    let mut watch = ResilientWatch::new(coord.store().clone(), KeyRange::prefix("/seq/"));
    assert!(
        matches!(watch.next().await.unwrap(), WatchEvent::Init { ref kvs, .. } if kvs.is_empty())
    );
    // The Live's watch opens its store watch in the background, after its first list.
    eventually(WAIT, "Live's watch opens the shared stream", || async {
        coord.store().watch_streams() == 1
    })
    .await;

    // The client picked one member for the stream; make that member the leader, so killing
    // the leader really cuts the watch.
    let added: Vec<f64> = watch_streams(&cluster)
        .await
        .iter()
        .zip(&streams_before)
        .map(|(now, before)| now - before)
        .collect();
    let holder = added
        .iter()
        .position(|&n| n == 1.0)
        .unwrap_or_else(|| panic!("no member shows the new watch stream: {added:?}"));
    assert_eq!(added.iter().sum::<f64>(), 1.0, "one stream: {added:?}");
    if leader_index(&cluster).await != Some(holder) {
        let id = member_status(&cluster, holder).await.member_id;
        cluster
            .etcdctl(&["move-leader", &format!("{id:x}")])
            .expect("etcdctl move-leader");
    }
    eventually(WAIT, "the stream's member leads", || async {
        leader_index(&cluster).await == Some(holder)
    })
    .await;
    let opened_before = coord.store().stats().watches_opened();

    let writer = tokio::spawn({
        let coord = coord.clone();
        async move {
            for i in 0..WRITES {
                create_once(&coord, i).await;
            }
        }
    });
    let mut seen = Vec::new();
    let mut breaks = 0;
    let mut killed = false;
    while seen.len() < WRITES {
        if !killed && seen.len() >= WRITES / 4 {
            assert_eq!(
                leader_index(&cluster).await,
                Some(holder),
                "still the leader"
            );
            match death {
                Death::Stopped => cluster.kill(holder).await.unwrap(),
                Death::Crashed => cluster.crash(holder).unwrap(),
            }
            assert!(!cluster.is_running(holder), "{death:?}: the member is gone");
            killed = true;
        }
        match timeout(WAIT, watch.next())
            .await
            .expect("the watch makes progress")
        {
            Ok(WatchEvent::Events { events, .. }) => {
                seen.extend(events.into_iter().map(|e| e.kv.key));
            }
            Ok(WatchEvent::Progress { .. }) => {}
            Err(e) if e.is_transient() || matches!(e, Error::Unavailable { .. }) => breaks += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    writer.await.unwrap();
    assert!(killed, "the leader died mid-stream");
    assert!(breaks > 0, "the watch saw its stream break");
    assert!(
        coord.store().stats().watches_opened() > opened_before,
        "the watch was opened again on another member"
    );
    let expected: Vec<String> = (0..WRITES).map(|i| format!("/seq/{i:04}")).collect();
    assert_eq!(seen, expected, "every write once, in order");
    assert_eq!(seen.iter().collect::<BTreeSet<_>>().len(), WRITES);

    // The Live under the same Coord, whose watch broke with the leader too, follows changes
    // made under the new leader.
    let revision = coord.config().publish(&Pair { a: 9, b: 9 }).await.unwrap();
    eventually(WAIT, "Live sees the write", || async {
        live.revision() >= revision
    })
    .await;
    assert_eq!(*live.load(), Pair { a: 9, b: 9 });
}
