//! The metrics coord records, read back through a debugging recorder: one test (the recorder
//! is process-wide), on the embedded backend.

use std::collections::HashMap;
use std::time::Duration;

use coord::{Coord, CoordConfig};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use metrics_util::{CompositeKey, MetricKind};

/// A ceiling for what should happen at once: a loaded machine is slow, and nothing here is
/// timed.
const WAIT: Duration = Duration::from_secs(10);

#[derive(CoordConfig, Debug, Clone)]
#[coord(prefix = "/config/metered")]
struct Metered {
    rate: u32,
}

/// What the recorder saw so far. A snapshot drains what was recorded since the last one
/// (gauges' increments too), so values are added up here.
struct Seen {
    snapshotter: Snapshotter,
    totals: std::sync::Mutex<HashMap<CompositeKey, f64>>,
}

impl Seen {
    /// The value of metric `name` with every one of `labels` among its labels, summed over
    /// the other labels (0 if never recorded); for a histogram, how many samples.
    fn value(&self, kind: MetricKind, name: &str, labels: &[(&str, &str)]) -> f64 {
        let mut totals = self.totals.lock().unwrap();
        for (key, _, _, value) in self.snapshotter.snapshot().into_vec() {
            let total = totals.entry(key).or_default();
            match value {
                DebugValue::Counter(n) => *total += n as f64,
                DebugValue::Gauge(g) => *total += g.into_inner(),
                DebugValue::Histogram(samples) => *total += samples.len() as f64,
            }
        }
        totals
            .iter()
            .filter(|(key, _)| key.kind() == kind && key.key().name() == name)
            .filter(|(key, _)| {
                labels.iter().all(|(k, v)| {
                    key.key()
                        .labels()
                        .any(|label| label.key() == *k && label.value() == *v)
                })
            })
            .map(|(_, total)| total)
            .sum()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_rejections_locks_ids_registrations_leases_states_and_store_requests_are_counted() {
    let recorder = DebuggingRecorder::new();
    let seen = Seen {
        snapshotter: recorder.snapshotter(),
        totals: Default::default(),
    };
    recorder
        .install()
        .expect("the only recorder of this test binary");
    let counter =
        |name: &str, labels: &[(&str, &str)]| seen.value(MetricKind::Counter, name, labels);
    let gauge = |name: &str| seen.value(MetricKind::Gauge, name, &[]);
    let histogram =
        |name: &str, labels: &[(&str, &str)]| seen.value(MetricKind::Histogram, name, labels);

    let coord = Coord::in_memory();
    let config = coord.config();
    config.set("/config/metered/rate", &1).await.unwrap();
    let live = coord.live::<Metered>().await.unwrap();
    let mut updates = live.subscribe();
    config.set("/config/metered/rate", &2).await.unwrap();
    tokio::time::timeout(WAIT, updates.changed())
        .await
        .expect("the handle applies rate 2")
        .unwrap();
    let applied = [("prefix", "/config/metered"), ("result", "applied")];
    assert_eq!(counter("coord_config_reloads_total", &applied), 1.0);

    config.set("/config/metered/rate", &"fast").await.unwrap();
    let rejected = [("prefix", "/config/metered"), ("result", "rejected")];
    let deadline = tokio::time::Instant::now() + WAIT;
    while counter("coord_config_reloads_total", &rejected) < 1.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "coord_config_reloads_total{{result=rejected}} still 0 after {WAIT:?}, expected 1 for \
             \"fast\"; the handle's last error: {:?}",
            live.last_error()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(counter("coord_config_reloads_total", &rejected), 1.0);
    assert_eq!(live.load().rate, 2, "the last good value stays");

    let guard = coord
        .locks()
        .acquire("metered", Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(gauge("coord_locks_held"), 1.0);
    assert_eq!(histogram("coord_lock_wait_seconds", &[]), 1.0);
    guard.unlock().await.unwrap();
    assert_eq!(gauge("coord_locks_held"), 0.0);

    let ids = coord.ids("metered", 4).await.unwrap();
    let id = ids.acquire().await.unwrap();
    assert_eq!(gauge("coord_ids_held"), 1.0);
    drop(id);
    assert_eq!(gauge("coord_ids_held"), 0.0);

    let info = coord::registry::ServiceInfo::new("metered", "i-1", "127.0.0.1:9");
    let registration = coord
        .registry()
        .register(info, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(counter("coord_registrations_total", &[]), 1.0);
    drop(registration);

    // A lease renewed, then revoked behind its holder's back: a lost renewal, and the
    // `Coord` goes `lost`, then `reconnected` at its next answer.
    let session = coord::Session::new(coord.store(), Duration::from_secs(3))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while counter("coord_lease_renewals_total", &[("result", "ok")]) < 1.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "coord_lease_renewals_total{{result=ok}} still 0 after {WAIT:?}, expected a renewal \
             of the 3 s lease (one every second)"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(histogram("coord_lease_renewal_duration_seconds", &[]) >= 1.0);
    coord
        .store()
        .lease_revoke(session.lease_id())
        .await
        .unwrap();
    tokio::time::timeout(WAIT, session.lost())
        .await
        .expect("the revoked session reports its loss");
    let states = "coord_connection_state_changes_total";
    assert_eq!(
        counter("coord_lease_renewals_total", &[("result", "lost")]),
        1.0
    );
    assert_eq!(counter(states, &[("state", "lost")]), 1.0);
    let mut state = coord.state();
    tokio::time::timeout(WAIT, state.wait_for(|state| state.is_connected()))
        .await
        .expect("reconnected at the next answer")
        .expect("state sender alive");
    assert_eq!(counter(states, &[("state", "reconnected")]), 1.0);
    assert_eq!(counter(states, &[("state", "suspended")]), 0.0);

    let puts = counter("coord_store_requests_total", &[("op", "put")]);
    assert!(puts >= 3.0, "{puts} puts counted");
    assert!(counter("coord_store_requests_total", &[("op", "txn")]) >= 1.0);
    let missing = config.get::<u32>("/config/metered/none").await;
    assert!(missing.is_err());
    assert!(histogram("coord_store_request_duration_seconds", &[("op", "range")]) >= 1.0);
    assert!(
        counter("coord_store_errors_total", &[("op", "range")]) == 0.0,
        "a miss is no error"
    );
    coord.close().await.unwrap();
}
