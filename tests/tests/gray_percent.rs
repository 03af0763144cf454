//! A percentage gray release end to end: twenty `Coord`s, each its own etcd connection and
//! instance identity as twenty processes would have, each with a `Live` on one prefix. The
//! instances that see the gray values are exactly those `Selector::matches` picks; every
//! other instance keeps the prefix's values (and is never even woken), checked once it is
//! current at the gray release's revision; abort returns everyone to the prefix's values,
//! promote gives everyone the new ones.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use coord::config::{Live, ReleaseKind, Selector};
use coord::testing::EtcdServer;
use coord::{Coord, CoordConfig, Instance};
use tokio::sync::watch;

use common::eventually;

const PREFIX: &str = "/config/fleet";
const FLEET: usize = 20;
/// The bound of every wait: generous, the machine running the tests may be busy. A wait
/// that passes says nothing about speed.
const WAIT: Duration = Duration::from_secs(30);

#[derive(CoordConfig, Debug, Clone, PartialEq)]
#[coord(prefix = "/config/fleet")]
struct Limits {
    rate: u32,
    #[coord(default)]
    burst: u32,
}

fn limits(rate: u32) -> Limits {
    Limits { rate, burst: 0 }
}

/// One instance of the fleet: its `Coord` and its handle on the prefix.
struct Member {
    identity: Instance,
    coord: Coord,
    live: Live<Limits>,
}

/// The operator's `Coord`, the fleet, and the etcd they share.
struct Fleet {
    _server: EtcdServer,
    operator: Coord,
    members: Vec<Member>,
}

impl Fleet {
    /// Releases `rate` as the prefix's first values, then starts [`FLEET`] instances
    /// `web-00`… (even ones labelled `zone=eu`, odd ones `zone=us`), each bound to the
    /// prefix, and waits until all of them report their status.
    async fn start(rate: u32) -> Fleet {
        let server = EtcdServer::start()
            .await
            .expect("start etcd (see the error for how to install it)");
        let operator = Coord::connect(server.client_config().with_instance(Instance::new("ops")))
            .await
            .expect("connect to the test etcd");
        operator
            .config()
            .release(&limits(rate))
            .message("first values")
            .commit()
            .await
            .unwrap();
        let mut members = Vec::with_capacity(FLEET);
        for i in 0..FLEET {
            let zone = if i % 2 == 0 { "eu" } else { "us" };
            let identity = Instance::new(format!("web-{i:02}")).label("zone", zone);
            let coord = Coord::connect(server.client_config().with_instance(identity.clone()))
                .await
                .expect("connect to the test etcd");
            let live = coord.live::<Limits>().await.unwrap();
            assert_eq!(live.load().rate, rate);
            members.push(Member {
                identity,
                coord,
                live,
            });
        }
        let fleet = Fleet {
            _server: server,
            operator,
            members,
        };
        eventually(WAIT, "every instance reports its status", || async {
            fleet.operator.config().rollout(PREFIX).await.unwrap().len() == FLEET
        })
        .await;
        fleet
    }

    /// The names `selector` picks for gray release `seq`, by `Selector::matches`.
    fn picked(&self, selector: &Selector, seq: u64) -> BTreeSet<String> {
        self.members
            .iter()
            .filter(|m| selector.matches(&m.identity.name, &m.identity.labels, seq))
            .map(|m| m.identity.name.clone())
            .collect()
    }

    /// The members named in `names`.
    fn among<'a>(&'a self, names: &'a BTreeSet<String>) -> impl Iterator<Item = &'a Member> {
        self.members
            .iter()
            .filter(move |m| names.contains(&m.identity.name))
    }

    /// The members not named in `names`.
    fn outside<'a>(&'a self, names: &'a BTreeSet<String>) -> impl Iterator<Item = &'a Member> {
        self.members
            .iter()
            .filter(move |m| !names.contains(&m.identity.name))
    }

    /// Waits until each member of `part` shows `rate`.
    async fn reach(&self, part: impl Iterator<Item = &Member>, rate: u32) {
        let deadline = tokio::time::Instant::now() + WAIT;
        for member in part {
            while member.live.load().rate != rate {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{} shows rate {} after {WAIT:?}, not {rate}",
                    member.identity.name,
                    member.live.load().rate
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    /// Waits until each member of `part` is current at `revision`, then checks it shows
    /// `rate`.
    ///
    /// A member whose value does not change at `revision` is current at it once its `Live`
    /// has taken that revision's changes and found nothing for it: what it shows then is what
    /// it runs after that revision, not a value from before the change reached it. (For a
    /// member whose value changes at `revision` this proves nothing: the revision moves just
    /// before the value is swapped. Use [`reach`](Self::reach) for those.)
    async fn hold(&self, part: impl Iterator<Item = &Member>, rate: u32, revision: i64) {
        let deadline = tokio::time::Instant::now() + WAIT;
        for member in part {
            let name = &member.identity.name;
            while member.live.revision() < revision {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{name} is not current at revision {revision} after {WAIT:?} (at {})",
                    member.live.revision()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert_eq!(
                member.live.load().rate,
                rate,
                "{name} is current at revision {revision} and shows another value"
            );
        }
    }

    /// Each instance's value watch, by name.
    fn subscribe(&self) -> BTreeMap<String, watch::Receiver<Arc<Limits>>> {
        self.members
            .iter()
            .map(|m| (m.identity.name.clone(), m.live.subscribe()))
            .collect()
    }

    async fn close(self) {
        for member in self.members {
            drop(member.live);
            member.coord.close().await.unwrap();
        }
        self.operator.close().await.unwrap();
    }
}

/// Fails unless `picked` is a real part of the fleet: a selector that picks nobody or
/// everybody would let the test pass without telling picked from not picked. The hash is
/// fixed, so this holds for these names and this release number on every run.
fn assert_a_real_part(picked: &BTreeSet<String>) {
    assert!(
        !picked.is_empty() && picked.len() < FLEET,
        "the selector picks {} of {FLEET} instances; choose another share so that both sides \
         have instances",
        picked.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_percentage_gray_release_reaches_exactly_the_matched_instances_and_abort_returns_them() {
    let fleet = Fleet::start(10).await;
    let config = fleet.operator.config();
    let updates = fleet.subscribe();

    let selector = Selector::default().percent(30);
    let gray = config
        .release(&limits(20))
        .to(selector.clone())
        .message("try 20 on 30%")
        .commit()
        .await
        .unwrap();
    assert_eq!(
        gray.kind,
        ReleaseKind::Gray {
            selector: selector.clone()
        }
    );
    let picked = fleet.picked(&selector, gray.seq);
    assert_a_real_part(&picked);
    fleet.reach(fleet.among(&picked), 20).await;
    fleet.hold(fleet.outside(&picked), 10, gray.revision).await;
    for (name, rx) in &updates {
        if !picked.contains(name) {
            assert!(
                !rx.has_changed().unwrap(),
                "{name} is not picked and was woken by the gray release"
            );
        }
    }
    // The rollout view says the same: the picked instances run the gray release, the others
    // run none, and every one of them is current at it.
    let statuses = config
        .wait_rollout(PREFIX, gray.seq, WAIT)
        .await
        .expect("the gray release reaches its instances");
    assert_eq!(statuses.len(), FLEET);
    let running: BTreeSet<String> = statuses
        .iter()
        .filter(|s| s.gray == Some(gray.seq))
        .map(|s| s.instance.clone())
        .collect();
    assert_eq!(running, picked, "the rollout names the picked instances");
    assert!(
        statuses
            .iter()
            .all(|s| s.gray.is_none() || s.gray == Some(gray.seq)),
        "{statuses:?}"
    );
    assert_eq!(
        config.get::<u32>("/config/fleet/rate").await.unwrap(),
        10,
        "the prefix keeps its value during the gray release"
    );

    let aborted = config.abort(PREFIX, gray.seq).commit().await.unwrap();
    assert_eq!(aborted.kind, ReleaseKind::Abort { gray: gray.seq });
    fleet.reach(fleet.among(&picked), 10).await;
    fleet
        .hold(fleet.outside(&picked), 10, aborted.revision)
        .await;
    for (name, rx) in &updates {
        if !picked.contains(name) {
            assert!(
                !rx.has_changed().unwrap(),
                "{name} was never picked and was woken by the abort"
            );
        }
    }
    let statuses = config
        .wait_rollout(PREFIX, aborted.seq, WAIT)
        .await
        .unwrap();
    assert_eq!(statuses.len(), FLEET);
    assert!(
        statuses.iter().all(|s| s.gray.is_none()),
        "an instance still runs the aborted gray release: {statuses:?}"
    );
    fleet.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_label_and_percentage_gray_release_reaches_its_share_of_the_zone_and_promote_reaches_all()
{
    let fleet = Fleet::start(10).await;
    let config = fleet.operator.config();
    let updates = fleet.subscribe();

    let selector = Selector::default().label("zone", "eu").percent(50);
    let gray = config
        .release(&limits(40))
        .to(selector.clone())
        .commit()
        .await
        .unwrap();
    let picked = fleet.picked(&selector, gray.seq);
    assert_a_real_part(&picked);
    let eu: BTreeSet<String> = fleet
        .members
        .iter()
        .filter(|m| m.identity.labels["zone"] == "eu")
        .map(|m| m.identity.name.clone())
        .collect();
    assert!(
        picked.is_subset(&eu) && picked.len() < eu.len(),
        "a share of the eu zone only: {picked:?}"
    );
    fleet.reach(fleet.among(&picked), 40).await;
    fleet.hold(fleet.outside(&picked), 10, gray.revision).await;
    for (name, rx) in &updates {
        if !picked.contains(name) {
            assert!(
                !rx.has_changed().unwrap(),
                "{name} is not picked and was woken by the gray release"
            );
        }
    }
    config
        .wait_rollout(PREFIX, gray.seq, WAIT)
        .await
        .expect("the gray release reaches its instances");

    // Every value each picked instance shows from here on: never the one from before the
    // gray release, promotion included.
    let mut watchers = Vec::new();
    for member in &fleet.members {
        if picked.contains(&member.identity.name) {
            let mut rx = member.live.subscribe();
            let name = member.identity.name.clone();
            watchers.push(tokio::spawn(async move {
                let mut seen = Vec::new();
                while rx.changed().await.is_ok() {
                    seen.push(rx.borrow_and_update().rate);
                }
                (name, seen)
            }));
        }
    }
    let promoted = config.promote(PREFIX, gray.seq).commit().await.unwrap();
    assert_eq!(promoted.kind, ReleaseKind::Promote { gray: gray.seq });
    fleet.reach(fleet.outside(&picked), 40).await;
    // The picked instances show 40 before and after: current at the promotion, they run it.
    fleet
        .hold(fleet.among(&picked), 40, promoted.revision)
        .await;
    let statuses = config
        .wait_rollout(PREFIX, promoted.seq, WAIT)
        .await
        .unwrap();
    assert_eq!(statuses.len(), FLEET);
    assert!(
        statuses
            .iter()
            .all(|s| s.release == Some(promoted.seq) && s.gray.is_none()),
        "{statuses:?}"
    );
    assert_eq!(config.get::<u32>("/config/fleet/rate").await.unwrap(), 40);

    fleet.close().await;
    for watcher in watchers {
        let (name, seen) = watcher.await.unwrap();
        assert!(
            seen.iter().all(|rate| *rate == 40),
            "{name} showed the values from before the gray release while it was promoted: {seen:?}"
        );
    }
}
