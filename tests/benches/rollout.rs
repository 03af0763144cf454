//! How long a rollout plan's step takes to reach its instances: 20 instances, each a real
//! `Live` on its own handle, on one etcd started here.
//!
//! `cargo bench -p coord-tests --bench rollout` runs 30 rounds of a plan's moves, each timed
//! from the moment the step's release commits: a gray release to 10%, a widening to 50%, a
//! widening to everyone; and beside them the baseline, a plain release to all 20. Each row
//! gives two times: until every selected instance has *loaded* the values (its `Live`
//! swapped) and until [`wait_rollout`] *reports* it (their statuses written and read back:
//! what a plan's gate waits for before the bake starts).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use coord::config::Selector;
use coord::testing::EtcdServer;
use coord::{Coord, CoordConfig, Instance, Live};
use coord_tests::measure::percentile;

const PREFIX: &str = "/bench/rollout";
const INSTANCES: usize = 20;
const ROUNDS: usize = 30;

#[derive(CoordConfig, Debug, Clone, PartialEq)]
struct Limits {
    limit: i64,
}

fn values(limit: i64) -> BTreeMap<String, serde_json::Value> {
    BTreeMap::from([("limit".to_owned(), limit.into())])
}

/// Waits until every instance `selected` picks loads `limit`.
async fn loaded(lives: &[(String, Live<Limits>)], selected: impl Fn(&str) -> bool, limit: i64) {
    for (name, live) in lives {
        if !selected(name) {
            continue;
        }
        let mut changes = live.subscribe();
        while changes.borrow_and_update().limit != limit {
            changes.changed().await.expect("live");
        }
    }
}

#[derive(Default)]
struct Row {
    loaded: Vec<f64>,
    reported: Vec<f64>,
}

impl Row {
    fn print(&mut self, what: &str, baseline: Option<f64>) -> f64 {
        self.loaded.sort_by(f64::total_cmp);
        self.reported.sort_by(f64::total_cmp);
        let p50 = percentile(&self.loaded, 0.5);
        let ratio = baseline.map_or("1.00x (baseline)".to_owned(), |b| {
            format!("{:.2}x", p50 / b)
        });
        println!(
            "| {what} | {:.1} | {:.1} | {:.1} | {:.1} | {ratio} |",
            p50,
            percentile(&self.loaded, 0.99),
            percentile(&self.reported, 0.5),
            percentile(&self.reported, 0.99),
        );
        p50
    }
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let server = EtcdServer::start().await.expect("start etcd");
        let admin = Coord::connect(server.client_config()).await.expect("connect");
        let config = admin.config();
        config
            .release_raw(PREFIX, values(0))
            .commit()
            .await
            .expect("base");
        let mut coords = Vec::new();
        let mut lives = Vec::new();
        for i in 0..INSTANCES {
            let name = format!("web-{i:02}");
            let coord = Coord::from_store_as(admin.store(), Instance::new(&name)).expect("coord");
            lives.push((name, coord.live_at::<Limits>(PREFIX).await.expect("live")));
            coords.push(coord);
        }
        let steps = [
            ("gray release to 10%", Selector::default().percent(10)),
            ("widen to 50%", Selector::default().percent(50)),
            ("widen to everyone", Selector::default()),
        ];
        let mut rows: [Row; 4] = Default::default();
        let mut limit = 0;
        let ms = |started: Instant| started.elapsed().as_secs_f64() * 1e3;
        for _ in 0..ROUNDS {
            // Baseline: a plain release to all.
            limit += 1;
            let started = Instant::now();
            let release = config.release_raw(PREFIX, values(limit)).commit().await.expect("release");
            loaded(&lives, |_| true, limit).await;
            rows[0].loaded.push(ms(started));
            config
                .wait_rollout(PREFIX, release.seq, Duration::from_secs(30))
                .await
                .expect("rollout");
            rows[0].reported.push(ms(started));

            limit += 1;
            let mut gray = 0;
            for (i, (_, selector)) in steps.iter().enumerate() {
                let started = Instant::now();
                let seq = if i == 0 {
                    let release = config
                        .release_raw(PREFIX, values(limit))
                        .to(selector.clone())
                        .commit()
                        .await
                        .expect("gray");
                    gray = release.seq;
                    gray
                } else {
                    config
                        .widen(PREFIX, gray, selector.clone())
                        .commit()
                        .await
                        .expect("widen")
                        .seq
                };
                loaded(&lives, |name| selector.matches(name, &BTreeMap::new(), gray), limit).await;
                rows[i + 1].loaded.push(ms(started));
                config
                    .wait_rollout(PREFIX, seq, Duration::from_secs(30))
                    .await
                    .expect("rollout");
                rows[i + 1].reported.push(ms(started));
            }
            config.promote(PREFIX, gray).commit().await.expect("promote");
        }
        println!(
            "{INSTANCES} instances, {ROUNDS} rounds; ms from the step's commit until every selected instance"
        );
        println!("| step | loaded p50 | loaded p99 | reported p50 | reported p99 | loaded vs a plain release |");
        println!("|---|---|---|---|---|---|");
        let baseline = rows[0].print("plain release to all 20 (baseline)", None);
        for (row, (what, _)) in rows[1..].iter_mut().zip(steps) {
            row.print(what, Some(baseline));
        }
        drop(lives);
        drop(coords);
    });
}
