//! Fault tests on a real 3-member etcd cluster: the leader dies while a watch and a `Live`
//! follow a writer.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use coord::store::{Compare, KeyRange, Txn, TxnOp};
use coord::testing::EtcdCluster;
use coord::watch::{ResilientWatch, WatchEvent};
use coord::{Coord, Error};
use coord_tests::fixtures::Pair;
use tokio::time::timeout;

use common::eventually;

const WRITES: usize = 200;

/// Creates `/seq/{i}` once: a retry after an ambiguous failure cannot write it twice.
async fn create_once(coord: &Coord, i: usize) {
    let key = format!("/seq/{i:04}");
    loop {
        let txn = Txn::new()
            .when([Compare::create_revision(key.as_str(), 0)])
            .and_then([TxnOp::put(key.as_str(), i.to_string())]);
        match coord.store().txn(txn).await {
            Ok(_) => return,
            Err(e) if e.is_transient() => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(e) => panic!("write {key}: {e}"),
        }
    }
}

/// The index of the member that leads now.
async fn leader_index(cluster: &EtcdCluster) -> usize {
    for i in 0..cluster.len() {
        let member = Coord::connect(cluster.member_client_config(i))
            .await
            .unwrap();
        let status = member.store().status().await.unwrap();
        if status.member_id == status.leader {
            return i;
        }
    }
    panic!("no member says it leads");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_and_live_survive_the_leader_dying_without_loss_or_duplicates() {
    let mut cluster = EtcdCluster::start(3)
        .await
        .expect("start a 3-member etcd cluster (the error says how to install etcd)");
    let coord = Coord::connect(cluster.client_config()).await.unwrap();
    coord.config().publish(&Pair { a: 0, b: 0 }).await.unwrap();
    let live = coord.live::<Pair>().await.unwrap();
    let mut watch = ResilientWatch::new(coord.store().clone(), KeyRange::prefix("/seq/"));
    assert!(
        matches!(watch.next().await.unwrap(), WatchEvent::Init { ref kvs, .. } if kvs.is_empty())
    );

    let writer = tokio::spawn({
        let coord = coord.clone();
        async move {
            for i in 0..WRITES {
                create_once(&coord, i).await;
            }
        }
    });
    let mut seen = Vec::new();
    let mut killed = None;
    while seen.len() < WRITES {
        if killed.is_none() && seen.len() >= WRITES / 4 {
            let leader = leader_index(&cluster).await;
            cluster.kill(leader).await.unwrap();
            killed = Some(leader);
        }
        match timeout(Duration::from_secs(30), watch.next())
            .await
            .expect("the watch makes progress")
        {
            Ok(WatchEvent::Events { events, .. }) => {
                seen.extend(events.into_iter().map(|e| e.kv.key));
            }
            Ok(WatchEvent::Progress { .. }) | Err(Error::Unavailable { .. }) => {}
            Err(e) if e.is_transient() => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    writer.await.unwrap();
    assert!(killed.is_some(), "the leader was killed mid-stream");
    let expected: Vec<String> = (0..WRITES).map(|i| format!("/seq/{i:04}")).collect();
    assert_eq!(seen, expected, "every write once, in order");
    assert_eq!(seen.iter().collect::<BTreeSet<_>>().len(), WRITES);

    // The Live under the same Coord follows changes made under the new leader.
    let revision = coord.config().publish(&Pair { a: 9, b: 9 }).await.unwrap();
    eventually(Duration::from_secs(15), "Live sees the write", || async {
        live.revision() >= revision
    })
    .await;
    assert_eq!(*live.load(), Pair { a: 9, b: 9 });
}
