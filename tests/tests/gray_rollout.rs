//! Gray releases and `wait_rollout` with three `Coord`s on one store or etcd, as three
//! processes would be: a gray release reaches exactly the instances its selector picks (each
//! `Live` checked), promote reaches all, abort returns the picked ones to the main values, and
//! `wait_rollout` reports success or names the instance that rejected a release.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use coord::config::{Live, ReleaseKind, Selector};
use coord::{Coord, CoordConfig, Error, Instance};

use common::{Backend, eventually};

const PREFIX: &str = "/config/gray";
const WAIT: Duration = Duration::from_secs(10);

#[derive(CoordConfig, Debug, Clone, PartialEq)]
#[coord(prefix = "/config/gray")]
struct Limits {
    rate: u32,
    #[coord(default)]
    burst: u32,
}

/// The same keys, read by a stricter build of the service.
#[derive(CoordConfig, Debug, Clone, PartialEq)]
#[coord(prefix = "/config/gray", validate = "at_most_100")]
struct StrictLimits {
    rate: u32,
    #[coord(default)]
    burst: u32,
}

fn at_most_100(limits: &StrictLimits) -> Result<(), String> {
    if limits.rate > 100 {
        return Err(format!("rate {} is over 100", limits.rate));
    }
    Ok(())
}

on_both_backends!(cases:
    a_gray_release_reaches_exactly_the_selected_instances,
    wait_rollout_succeeds_when_all_applied_and_names_a_rejecting_instance,
    release_raw_is_checked_against_the_published_schema,
    a_rollback_during_a_gray_release_ends_it_and_wait_rollout_waits_for_every_instance,
);

async fn peer(b: &Backend, instance: Instance) -> Coord {
    match &b.server {
        Some(server) => Coord::connect(server.client_config().with_instance(instance))
            .await
            .expect("connect to the test etcd"),
        None => Coord::from_store_as(b.store(), instance).expect("a valid instance"),
    }
}

fn limits(rate: u32) -> Limits {
    Limits { rate, burst: 0 }
}

/// Waits until every handle's rate is the one given for it.
async fn rates_become(lives: &[&Live<Limits>], expected: [u32; 3]) {
    let started = std::time::Instant::now();
    loop {
        let seen: Vec<u32> = lives.iter().map(|live| live.load().rate).collect();
        if seen == expected {
            return;
        }
        assert!(
            started.elapsed() < WAIT,
            "rates {seen:?}, expected {expected:?} within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

mod cases {
    use super::*;

    pub async fn a_gray_release_reaches_exactly_the_selected_instances(b: &Backend) {
        let config = b.coord.config();
        config.release(&limits(10)).commit().await.unwrap();
        let eu = peer(b, Instance::new("api-a").label("zone", "eu-1")).await;
        let us = peer(b, Instance::new("api-b").label("zone", "us-1")).await;
        let canary = peer(b, Instance::new("api-c").label("zone", "eu-1")).await;
        let handles = [
            eu.live::<Limits>().await.unwrap(),
            us.live::<Limits>().await.unwrap(),
            canary.live::<Limits>().await.unwrap(),
        ];
        let lives: Vec<&Live<Limits>> = handles.iter().collect();
        let us_updates = lives[1].subscribe();
        eventually(WAIT, "the three instances report", || async {
            config.rollout(PREFIX).await.unwrap().len() == 3
        })
        .await;

        let gray = config
            .release(&limits(20))
            .to(Selector::default().label("zone", "eu-1"))
            .message("try 20 in eu-1")
            .commit()
            .await
            .unwrap();
        rates_become(&lives, [20, 10, 20]).await;
        let statuses = config
            .wait_rollout(PREFIX, gray.seq, WAIT)
            .await
            .expect("the gray release reaches its instances");
        let grays: BTreeMap<String, Option<u64>> = statuses
            .iter()
            .map(|s| (s.instance.clone(), s.gray))
            .collect();
        assert_eq!(grays["api-a"], Some(gray.seq));
        assert_eq!(grays["api-b"], None);
        assert_eq!(grays["api-c"], Some(gray.seq));
        assert!(
            !us_updates.has_changed().unwrap(),
            "an instance outside the gray release never changes"
        );

        // Every value a gray instance shows while the release is promoted: never the old one.
        let mut canary_updates = lives[2].subscribe();
        let seen = tokio::spawn(async move {
            let mut seen = Vec::new();
            while canary_updates.changed().await.is_ok() {
                let rate = canary_updates.borrow_and_update().rate;
                seen.push(rate);
            }
            seen
        });
        let promoted = config.promote(PREFIX, gray.seq).commit().await.unwrap();
        rates_become(&lives, [20, 20, 20]).await;
        let statuses = config
            .wait_rollout(PREFIX, promoted.seq, WAIT)
            .await
            .unwrap();
        assert!(statuses.iter().all(|s| s.release == Some(promoted.seq)));
        // The gray key's deletion reaches each handle on its own watch, next to the values.
        eventually(
            WAIT,
            "no instance runs the promoted gray release",
            || async {
                let statuses = config.rollout(PREFIX).await.unwrap();
                statuses.len() == 3 && statuses.iter().all(|s| s.gray.is_none())
            },
        )
        .await;

        // A gray release for one named instance, then aborted: it goes back to the main values.
        let next = config
            .release(&limits(30))
            .to(Selector::default().instance("api-b"))
            .commit()
            .await
            .unwrap();
        rates_become(&lives, [20, 30, 20]).await;
        let aborted = config.abort(PREFIX, next.seq).commit().await.unwrap();
        assert_eq!(aborted.kind, ReleaseKind::Abort { gray: next.seq });
        rates_become(&lives, [20, 20, 20]).await;
        config
            .wait_rollout(PREFIX, aborted.seq, WAIT)
            .await
            .unwrap();
        for coord in [eu, us, canary] {
            coord.close().await.unwrap();
        }
        drop(lives);
        drop(handles);
        let seen = seen.await.unwrap();
        assert!(
            seen.iter().all(|rate| *rate != 10),
            "the gray instance went back to the old value: {seen:?}"
        );
    }

    pub async fn wait_rollout_succeeds_when_all_applied_and_names_a_rejecting_instance(
        b: &Backend,
    ) {
        let config = b.coord.config();
        config.release(&limits(10)).commit().await.unwrap();
        let a = peer(b, Instance::new("api-a")).await;
        let strict = peer(b, Instance::new("api-strict")).await;
        let _a = a.live::<Limits>().await.unwrap();
        let _strict = strict.live::<StrictLimits>().await.unwrap();
        eventually(WAIT, "both instances report", || async {
            config.rollout(PREFIX).await.unwrap().len() == 2
        })
        .await;

        let fine = config.release(&limits(50)).commit().await.unwrap();
        let statuses = config.wait_rollout(PREFIX, fine.seq, WAIT).await.unwrap();
        assert_eq!(statuses.len(), 2);
        assert!(statuses.iter().all(|s| s.release == Some(fine.seq)));

        let too_big = config.release(&limits(500)).commit().await.unwrap();
        let refused = config.wait_rollout(PREFIX, too_big.seq, WAIT).await;
        match refused {
            Err(Error::Rejected {
                instance,
                key,
                reason,
            }) => {
                assert_eq!(instance, "api-strict");
                assert_eq!(key.as_deref(), Some(PREFIX));
                assert!(reason.contains("rate 500 is over 100"), "{reason}");
            }
            other => panic!("expected the strict instance to reject: {other:?}"),
        }
        let missing = config.wait_rollout(PREFIX, 999, WAIT).await;
        assert!(
            matches!(missing, Err(Error::NotFound { .. })),
            "{missing:?}"
        );
        // Asked again, a release an instance rejected is still reported rejected by it (the
        // rejection is in its status already), not waited for: a timeout here would mean the
        // rejection was forgotten.
        let again = config.wait_rollout(PREFIX, too_big.seq, WAIT).await;
        match again {
            Err(Error::Rejected { instance, .. }) => assert_eq!(instance, "api-strict"),
            other => panic!("expected the rejection again: {other:?}"),
        }
        a.close().await.unwrap();
        strict.close().await.unwrap();
    }

    pub async fn release_raw_is_checked_against_the_published_schema(b: &Backend) {
        let config = b.coord.config();
        config.publish_schema::<Limits>().await.unwrap();
        let refused = config
            .release_raw(
                PREFIX,
                BTreeMap::from([("rate".to_owned(), serde_json::json!("fast"))]),
            )
            .commit()
            .await;
        match &refused {
            Err(Error::Invalid { key, reason }) => {
                assert_eq!(key, "rate");
                assert!(reason.contains("u32"), "{reason}");
            }
            other => panic!("expected a type error: {other:?}"),
        }
        assert!(config.history(PREFIX, 10).await.unwrap().is_empty());
        let listed = config.list(&format!("{PREFIX}/")).await.unwrap();
        assert!(listed.is_empty(), "nothing written: {listed:?}");

        let ok = config
            .release_raw(
                PREFIX,
                BTreeMap::from([("rate".to_owned(), serde_json::json!(5))]),
            )
            .commit()
            .await
            .unwrap();
        assert_eq!(
            ok.author.as_deref(),
            Some(b.coord.instance().name.as_str()),
            "the author is the instance unless told"
        );
    }

    pub async fn a_rollback_during_a_gray_release_ends_it_and_wait_rollout_waits_for_every_instance(
        b: &Backend,
    ) {
        let config = b.coord.config();
        let first = config.release(&limits(10)).commit().await.unwrap();
        config.release(&limits(20)).commit().await.unwrap();
        let canary = peer(b, Instance::new("canary-1")).await;
        let other = peer(b, Instance::new("api-1")).await;
        let base = peer(b, Instance::new("api-2")).await;
        let handles = [
            canary.live::<Limits>().await.unwrap(),
            other.live::<Limits>().await.unwrap(),
            base.live::<Limits>().await.unwrap(),
        ];
        let lives: Vec<&Live<Limits>> = handles.iter().collect();
        eventually(WAIT, "the three instances report", || async {
            config.rollout(PREFIX).await.unwrap().len() == 3
        })
        .await;
        let gray = config
            .release(&limits(99_999))
            .to(Selector::default().instance("canary-1"))
            .commit()
            .await
            .unwrap();
        rates_become(&lives, [99_999, 20, 20]).await;

        // A release beside the gray release is not done while the canary lays the gray
        // value over it.
        let beside = config
            .release_raw(PREFIX, BTreeMap::from([("burst".to_owned(), 5.into())]))
            .commit()
            .await
            .unwrap();
        // Every instance is current at the release's revision first: from here on the
        // statuses alone decide, so a wait_rollout that ignored the gray value would be done
        // at its first read.
        eventually(
            WAIT,
            "every instance reports the release's revision",
            || async {
                let statuses = config.rollout(PREFIX).await.unwrap();
                statuses.len() == 3 && statuses.iter().all(|s| s.revision >= beside.revision)
            },
        )
        .await;
        let waited = config
            .wait_rollout(PREFIX, beside.seq, Duration::from_millis(500))
            .await;
        assert!(
            matches!(waited, Err(Error::Timeout { .. })),
            "done while the canary runs gray release {}: {waited:?}",
            gray.seq
        );

        let rollback = config.rollback(PREFIX, first.seq).commit().await.unwrap();
        rates_become(&lives, [10, 10, 10]).await;
        let statuses = config
            .wait_rollout(PREFIX, rollback.seq, WAIT)
            .await
            .unwrap();
        assert!(
            statuses
                .iter()
                .all(|s| s.gray.is_none() && s.release == Some(rollback.seq)),
            "{statuses:?}"
        );
        assert!(handles.iter().all(|live| live.load().rate == 10));
        let history = config.history(PREFIX, 3).await.unwrap();
        assert_eq!(history[0].kind, ReleaseKind::Rollback { to: first.seq });
        assert_eq!(history[1].kind, ReleaseKind::Abort { gray: gray.seq });
        assert_eq!(
            history[1].message.as_deref(),
            Some(format!("ended by the rollback to {}", first.seq).as_str())
        );
        assert_eq!(history[1].revision, rollback.revision, "one transaction");
        let gone = config.abort(PREFIX, gray.seq).commit().await;
        assert!(
            matches!(gone, Err(Error::NotFound { .. })),
            "the gray release is over: {gone:?}"
        );
        drop(lives);
        drop(handles);
        for coord in [canary, other, base] {
            coord.close().await.unwrap();
        }
    }
}
