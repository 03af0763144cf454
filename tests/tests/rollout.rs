//! Rollout status: every `Coord` with a `Live` on a prefix keeps a status key saying which
//! revision it runs and what it rejected, and `config().rollout(prefix)` lists them. Checked
//! with three `Coord`s on one store, as three processes on one etcd would be.

mod common;

use std::time::Duration;

use coord::{Coord, CoordConfig, Instance, InstanceStatus};
use futures::future::join_all;

use common::{Backend, eventually};

const PREFIX: &str = "/config/rollout";
const WAIT: Duration = Duration::from_secs(10);

/// What every instance runs.
#[derive(CoordConfig, Debug, Clone, PartialEq)]
#[coord(prefix = "/config/rollout", validate = "at_most_1000")]
struct Limits {
    #[coord(default = 10)]
    rate: u32,
}

fn at_most_1000(limits: &Limits) -> Result<(), String> {
    if limits.rate > 1000 {
        return Err(format!("rate {} is over 1000", limits.rate));
    }
    Ok(())
}

/// The same keys, read by a stricter build of the service.
#[derive(CoordConfig, Debug, Clone, PartialEq)]
#[coord(prefix = "/config/rollout", validate = "at_most_100")]
struct StrictLimits {
    #[coord(default = 10)]
    rate: u32,
}

fn at_most_100(limits: &StrictLimits) -> Result<(), String> {
    if limits.rate > 100 {
        return Err(format!("rate {} is over 100", limits.rate));
    }
    Ok(())
}

on_both_backends!(cases:
    rollout_lists_every_live_instance_with_its_labels,
    every_status_reaches_the_revision_of_a_write,
    an_instance_that_rejects_a_change_reports_it_and_the_others_do_not,
    handles_of_one_coord_share_one_status_at_the_lowest_revision,
    dropping_the_last_live_removes_the_status,
    a_burst_of_writes_costs_far_fewer_status_writes,
);

/// Another process on the same store or etcd, as `instance`.
async fn peer(b: &Backend, instance: Instance) -> Coord {
    match &b.server {
        Some(server) => Coord::connect(server.client_config().with_instance(instance))
            .await
            .expect("connect to the test etcd"),
        None => Coord::from_store_as(b.store(), instance).expect("a valid instance"),
    }
}

/// Three instances in two zones, the third a canary.
async fn three_instances(b: &Backend) -> [Coord; 3] {
    [
        peer(b, Instance::new("api-a").label("zone", "eu-1")).await,
        peer(b, Instance::new("api-b").label("zone", "eu-2")).await,
        peer(
            b,
            Instance::new("api-c")
                .label("zone", "eu-1")
                .label("track", "canary"),
        )
        .await,
    ]
}

async fn rollout(coord: &Coord) -> Vec<InstanceStatus> {
    coord.config().rollout(PREFIX).await.expect("rollout")
}

/// The status of `name`, if it is listed.
async fn status_of(coord: &Coord, name: &str) -> Option<InstanceStatus> {
    rollout(coord)
        .await
        .into_iter()
        .find(|s| s.instance == name)
}

/// Waits until `name`'s status is at `revision` or later, and returns it.
async fn status_at(coord: &Coord, name: &str, revision: i64) -> InstanceStatus {
    eventually(
        WAIT,
        &format!("{name} reports revision {revision}"),
        || async {
            status_of(coord, name)
                .await
                .is_some_and(|s| s.revision >= revision)
        },
    )
    .await;
    status_of(coord, name).await.expect("listed")
}

mod cases {
    use super::*;

    pub async fn rollout_lists_every_live_instance_with_its_labels(b: &Backend) {
        let instances = three_instances(b).await;
        assert!(rollout(&b.coord).await.is_empty(), "nobody runs it yet");
        let mut lives = Vec::new();
        for coord in &instances {
            lives.push(coord.live::<Limits>().await.unwrap());
        }
        eventually(WAIT, "all three instances are listed", || async {
            rollout(&b.coord).await.len() == 3
        })
        .await;
        let statuses = rollout(&b.coord).await;
        let names: Vec<&str> = statuses.iter().map(|s| s.instance.as_str()).collect();
        assert_eq!(names, ["api-a", "api-b", "api-c"], "sorted by name");
        for (status, coord) in statuses.iter().zip(&instances) {
            assert_eq!(status.labels, coord.instance().labels);
            assert_eq!(status.prefix, PREFIX);
            assert!(status.error.is_none(), "{status:?}");
            assert!(status.updated_ms > 0);
        }
        assert_eq!(statuses[2].labels["track"], "canary");
        // One key per instance, at the documented place; another prefix lists nobody, even
        // one the prefix starts with.
        let key = b
            .store()
            .get("/coord/status/config/rollout//api-a")
            .await
            .unwrap()
            .0;
        assert!(key.is_some_and(|kv| kv.lease != 0), "on a lease");
        assert!(
            b.coord
                .config()
                .rollout("/config")
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            b.coord
                .config()
                .rollout("/config/rollout/x")
                .await
                .unwrap()
                .is_empty()
        );
    }

    pub async fn every_status_reaches_the_revision_of_a_write(b: &Backend) {
        let instances = three_instances(b).await;
        let mut lives = Vec::new();
        for coord in &instances {
            lives.push(coord.live::<Limits>().await.unwrap());
        }
        let revision = b
            .coord
            .config()
            .set(&format!("{PREFIX}/rate"), &20)
            .await
            .unwrap();
        for coord in &instances {
            let status = status_at(&b.coord, &coord.instance().name, revision).await;
            assert!(status.error.is_none(), "{status:?}");
        }
        for live in &lives {
            assert_eq!(live.load().rate, 20);
        }
    }

    pub async fn an_instance_that_rejects_a_change_reports_it_and_the_others_do_not(b: &Backend) {
        let [a, bee, canary] = three_instances(b).await;
        let _a = a.live::<Limits>().await.unwrap();
        let _b = bee.live::<Limits>().await.unwrap();
        let strict = canary.live::<StrictLimits>().await.unwrap();
        let good = b
            .coord
            .config()
            .set(&format!("{PREFIX}/rate"), &50)
            .await
            .unwrap();
        let before = status_at(&b.coord, "api-c", good).await;
        assert!(before.error.is_none());

        let rejected = b
            .coord
            .config()
            .set(&format!("{PREFIX}/rate"), &500)
            .await
            .unwrap();
        eventually(WAIT, "the canary reports the rejected change", || async {
            status_of(&b.coord, "api-c")
                .await
                .is_some_and(|s| s.error.is_some())
        })
        .await;
        let status = status_of(&b.coord, "api-c").await.expect("listed");
        let error = status.error.clone().expect("an error");
        assert_eq!(error.key.as_deref(), Some(PREFIX));
        assert!(error.message.contains("rate 500 is over 100"), "{error:?}");
        assert_eq!(error.revision, rejected);
        assert!(
            status.revision >= good && status.revision < rejected,
            "still runs the last good revision: {status:?}"
        );
        assert_eq!(strict.load().rate, 50);
        for name in ["api-a", "api-b"] {
            let status = status_at(&b.coord, name, rejected).await;
            assert!(status.error.is_none(), "{status:?}");
        }

        // The next good change heals it.
        let healed = b
            .coord
            .config()
            .set(&format!("{PREFIX}/rate"), &60)
            .await
            .unwrap();
        let status = status_at(&b.coord, "api-c", healed).await;
        assert!(status.error.is_none(), "{status:?}");
    }

    pub async fn handles_of_one_coord_share_one_status_at_the_lowest_revision(b: &Backend) {
        let coord = peer(b, Instance::new("api-a")).await;
        let lenient = coord.live::<Limits>().await.unwrap();
        let strict = coord.live::<StrictLimits>().await.unwrap();
        let good = b
            .coord
            .config()
            .set(&format!("{PREFIX}/rate"), &50)
            .await
            .unwrap();
        status_at(&b.coord, "api-a", good).await;
        let rejected = b
            .coord
            .config()
            .set(&format!("{PREFIX}/rate"), &500)
            .await
            .unwrap();
        eventually(WAIT, "the lenient handle applies it", || async {
            lenient.revision() >= rejected
        })
        .await;
        eventually(
            WAIT,
            "the status shows the strict handle's rejection",
            || async {
                status_of(&b.coord, "api-a")
                    .await
                    .is_some_and(|s| s.error.is_some())
            },
        )
        .await;
        let statuses = rollout(&b.coord).await;
        assert_eq!(statuses.len(), 1, "one status per Coord: {statuses:?}");
        let status = &statuses[0];
        assert_eq!(
            status.revision,
            strict.revision(),
            "the lowest revision of the two handles"
        );
        assert!(status.revision < rejected);
        assert_eq!(status.error.as_ref().map(|e| e.revision), Some(rejected));

        // Without the strict handle, what is left runs the latest revision.
        drop(strict);
        eventually(WAIT, "the status follows the remaining handle", || async {
            status_of(&b.coord, "api-a")
                .await
                .is_some_and(|s| s.revision >= rejected && s.error.is_none())
        })
        .await;
    }

    pub async fn dropping_the_last_live_removes_the_status(b: &Backend) {
        let [a, bee, _] = three_instances(b).await;
        let first = a.live::<Limits>().await.unwrap();
        let second = a.live::<StrictLimits>().await.unwrap();
        let _other = bee.live::<Limits>().await.unwrap();
        eventually(WAIT, "both instances are listed", || async {
            rollout(&b.coord).await.len() == 2
        })
        .await;
        drop(first);
        let revision = b
            .coord
            .config()
            .set(&format!("{PREFIX}/rate"), &20)
            .await
            .unwrap();
        // Still listed while one handle is left, and still reporting.
        status_at(&b.coord, "api-a", revision).await;
        drop(second);
        eventually(WAIT, "api-a is no longer listed", || async {
            status_of(&b.coord, "api-a").await.is_none()
        })
        .await;
        assert!(status_of(&b.coord, "api-b").await.is_some());

        // A new handle lists it again.
        let _again = a.live::<Limits>().await.unwrap();
        status_at(&b.coord, "api-a", revision).await;
    }

    pub async fn a_burst_of_writes_costs_far_fewer_status_writes(b: &Backend) {
        let coord = peer(b, Instance::new("api-a")).await;
        let live = coord.live::<Limits>().await.unwrap();
        let key = "/coord/status/config/rollout//api-a";
        let first = b
            .coord
            .config()
            .set(&format!("{PREFIX}/rate"), &1)
            .await
            .unwrap();
        status_at(&b.coord, "api-a", first).await;
        // A key's version counts the writes to it since it was created.
        let version = |kv: Option<coord::store::KeyValue>| kv.expect("status key").version;
        let before = version(b.store().get(key).await.unwrap().0);

        let config = b.coord.config();
        let key_of_rate = format!("{PREFIX}/rate");
        let values: Vec<u32> = (0..200).collect();
        let revisions = join_all(values.iter().map(|i| config.set(&key_of_rate, i)))
            .await
            .into_iter()
            .collect::<coord::Result<Vec<i64>>>()
            .unwrap();
        let last = revisions.iter().copied().max().expect("200 writes");
        let status = status_at(&b.coord, "api-a", last).await;
        assert_eq!(
            status.revision, last,
            "the final status has the final revision"
        );
        assert_eq!(live.revision(), last);
        assert!(status.error.is_none());

        let status_writes = version(b.store().get(key).await.unwrap().0) - before;
        println!("200 writes in a burst: {status_writes} status writes");
        assert!(
            (1..100).contains(&status_writes),
            "200 reloads took {status_writes} status writes"
        );
    }
}

/// An identity too big to write is refused where it is made, naming the limit: before the
/// bound, a 2 MiB label made every status write of the instance fail at etcd (request too
/// large), retried forever, and the instance never appeared in `rollout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_label_is_refused_at_connect_naming_the_limit() {
    let server = coord::testing::EtcdServer::start().await.unwrap();
    let huge = Instance::new("api-a").label("notes", "x".repeat(2 << 20));
    let refused = Coord::connect(server.client_config().with_instance(huge.clone())).await;
    match refused {
        Err(coord::Error::InvalidArgument { field, reason }) => {
            assert_eq!(field, "labels");
            assert!(
                reason.contains("label `notes` is 2097152 bytes, over the limit of 4096 bytes"),
                "{reason}"
            );
        }
        Err(other) => panic!("expected InvalidArgument on labels, got {other:?}"),
        Ok(_) => panic!("a 2 MiB label was accepted"),
    }
    let long_key = Instance::new("api-a").label("k".repeat(64), "v");
    let error = Coord::from_store_as(&coord::Store::in_memory(), long_key).unwrap_err();
    assert!(
        error.to_string().contains("over the limit of 63 bytes"),
        "{error}"
    );
    // At the limits it connects and reports its status.
    let fits =
        Instance::new("api-a").label("notes", "x".repeat(coord::instance::MAX_LABEL_VALUE_BYTES));
    let coord = Coord::connect(server.client_config().with_instance(fits))
        .await
        .unwrap();
    let _live = coord.live::<Limits>().await.unwrap();
    eventually(WAIT, "the instance is listed", || async {
        status_of(&coord, "api-a").await.is_some()
    })
    .await;
    coord.close().await.unwrap();
}

/// A status key the store refuses (here: etcd's RBAC gives the user no access to
/// `/coord/status/`) is listed in `health()` while it fails, naming the key and the reason,
/// and leaves the list once a write of it succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_the_store_refuses_is_reported_in_health_until_written() {
    use coord::testing::{APP_PASSWORD, APP_ROLE, APP_USER, EtcdServer};

    let server = EtcdServer::builder().auth(true).start().await.unwrap();
    // What a `Live` reads besides its prefix (gray releases), but not the status keys.
    let grant = |permission: &str, prefix: &str| {
        server
            .etcdctl(&[
                "role",
                "grant-permission",
                "--prefix=true",
                APP_ROLE,
                permission,
                prefix,
            ])
            .unwrap();
    };
    grant("read", "/coord/gray/");
    let app = server
        .client_config()
        .with_user(APP_USER, APP_PASSWORD)
        .with_instance(Instance::new("api-a"));
    let coord = Coord::connect(app).await.unwrap();
    let live = coord.live_at::<Limits>("/app/rollout").await.unwrap();
    assert_eq!(live.load().rate, 10);
    let key = "/coord/status/app/rollout//api-a";
    eventually(WAIT, "the refused status is in health()", || async {
        let health = coord.health().await.unwrap();
        health.failing_writes.iter().any(|w| {
            w.kind == coord::health::STATUS_WRITE
                && w.target == key
                && w.error.contains("permission denied")
                && w.failures >= 2
        })
    })
    .await;
    let health = coord.health().await.unwrap();
    assert!(
        health.is_healthy(),
        "serving and holding its leases: {health:?}"
    );

    // The operator grants the role the status keys: the next retry writes it.
    grant("readwrite", "/coord/status/");
    eventually(Duration::from_secs(20), "the status is written", || async {
        coord.health().await.unwrap().failing_writes.is_empty()
    })
    .await;
    let (written, _) = coord.store().get(key).await.unwrap();
    assert!(written.is_some(), "the status key is written");
    coord.close().await.unwrap();
}
