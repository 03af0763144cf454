//! coordctl's gray releases and `rollout --wait`, the real binary against a real etcd with
//! real instances: `Coord`s in this process, each with its own connection and identity and a
//! `Live` on the prefix, as services would run them.
//!
//! - `config gray start --percent N` picks exactly the instances `Selector::matches` picks:
//!   those see the gray values, the others keep the prefix's, and `rollout --wait` reports the
//!   same split.
//! - `config rollout --wait SEQ` exits 1 when an instance rejects release SEQ (its `Live`
//!   fails validation), naming that instance and its error, for a release and for a
//!   percentage gray release that picks it; it exits 0 once a rollback or an abort has
//!   brought every instance back to values it accepts.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{env, eventually, expect_exit, path_text, Env};
use coord::config::Selector;
use coord::{Coord, CoordConfig, Instance, Live};
use serde_json::Value;

const PREFIX: &str = "/config/fleet";
/// The bound of every wait (a busy machine may be slow; passing says nothing about speed).
const WAIT: Duration = Duration::from_secs(30);

#[derive(CoordConfig, Debug, Clone, PartialEq)]
#[coord(prefix = "/config/fleet")]
struct Limits {
    rate: u32,
    #[coord(default)]
    burst: u32,
}

/// The same keys, read by a stricter build of the service.
#[derive(CoordConfig, Debug, Clone, PartialEq)]
#[coord(prefix = "/config/fleet", validate = "at_most_100")]
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

impl Env {
    /// A values file holding `json`, by path.
    fn values(&self, name: &str, json: &str) -> String {
        path_text(&self.private_file(name, json)).to_owned()
    }

    /// An instance called `name` (its own connection), bound to the prefix as `T`.
    async fn instance<T: CoordConfig>(&self, name: &str) -> (Coord, Live<T>) {
        let config = self
            .server
            .client_config()
            .with_instance(Instance::new(name));
        let coord = Coord::connect(config)
            .await
            .expect("connect to the test etcd");
        let live = coord.live_at::<T>(PREFIX).await.unwrap();
        (coord, live)
    }

    /// `config rollout PREFIX -o json` until it lists `count` instances.
    async fn until_reported(&self, count: usize) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let rollout = self.ctl.json(&["config", "rollout", PREFIX]).await;
            let seen = rollout.as_array().map_or(0, Vec::len);
            if seen == count {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{seen} of {count} instances reported within {WAIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn seq_of(release: &Value) -> u64 {
    release["seq"]
        .as_u64()
        .unwrap_or_else(|| panic!("no seq in {release}"))
}

/// Waits until `live` shows `rate`.
async fn reaches(name: &str, live: &Live<Limits>, rate: u32) {
    let what = format!("{name} shows rate {rate}");
    eventually(WAIT, &what, || live.load().rate == rate).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gray_start_with_percent_picks_exactly_the_instances_selector_matches() {
    let env = env().await;
    let first = env.values("first.json", r#"{"rate": 10}"#);
    env.ctl
        .json(&["config", "release", PREFIX, "-f", &first])
        .await;
    let mut fleet = Vec::new();
    for i in 0..16 {
        let name = format!("api-{i:02}");
        let (coord, live) = env.instance::<Limits>(&name).await;
        fleet.push((name, coord, live));
    }
    env.until_reported(fleet.len()).await;

    let gray_values = env.values("gray.json", r#"{"rate": 20}"#);
    let gray = env
        .ctl
        .json(&[
            "config",
            "gray",
            "start",
            PREFIX,
            "-f",
            &gray_values,
            "--percent",
            "40",
            "-m",
            "try 20 on 40%",
        ])
        .await;
    assert_eq!(gray["kind"], "gray [40%]", "{gray}");
    let seq = seq_of(&gray);
    let revision = gray["revision"].as_i64().expect("a revision");
    let selector = Selector::default().percent(40);
    let picked: BTreeSet<String> = fleet
        .iter()
        .map(|(name, _, _)| name.clone())
        .filter(|name| selector.matches(name, &Default::default(), seq))
        .collect();
    assert!(
        !picked.is_empty() && picked.len() < fleet.len(),
        "40% picks {} of {} here; a test that cannot tell picked from not picked proves nothing",
        picked.len(),
        fleet.len()
    );

    // What the instances run: the picked ones the gray value; the others, once current at
    // the gray release's revision (it moves without a new value), still the prefix's.
    for (name, _, live) in &fleet {
        if picked.contains(name) {
            reaches(name, live, 20).await;
        } else {
            let what = format!("{name} is current at revision {revision}");
            eventually(WAIT, &what, || live.revision() >= revision).await;
            assert_eq!(live.load().rate, 10, "{name} is not picked");
        }
    }
    // What the operator sees: the same split.
    let seq_text = seq.to_string();
    let statuses = env
        .ctl
        .json(&[
            "config",
            "rollout",
            PREFIX,
            "--wait",
            &seq_text,
            "--timeout",
            "30s",
        ])
        .await;
    let statuses = statuses.as_array().expect("an array of statuses");
    assert_eq!(statuses.len(), fleet.len());
    let running: BTreeSet<String> = statuses
        .iter()
        .filter(|s| s["gray"] == seq)
        .map(|s| s["instance"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(running, picked);
    assert!(
        statuses
            .iter()
            .all(|s| s["gray"] == seq || s["gray"].is_null()),
        "{statuses:?}"
    );

    for (_, coord, live) in fleet {
        drop(live);
        coord.close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_wait_exits_1_naming_the_instance_that_rejects_a_release_and_0_after_a_rollback() {
    let env = env().await;
    let fine = env.values("fine.json", r#"{"rate": 10}"#);
    let first = seq_of(
        &env.ctl
            .json(&["config", "release", PREFIX, "-f", &fine])
            .await,
    );
    let (a, a_live) = env.instance::<Limits>("api-a").await;
    let (b, b_live) = env.instance::<Limits>("api-b").await;
    let (strict, strict_live) = env.instance::<StrictLimits>("api-strict").await;
    env.until_reported(3).await;

    let too_big = env.values("too-big.json", r#"{"rate": 500}"#);
    let release = seq_of(
        &env.ctl
            .json(&["config", "release", PREFIX, "-f", &too_big])
            .await,
    );
    let waited = env
        .ctl
        .run(&[
            "config",
            "rollout",
            PREFIX,
            "--wait",
            &release.to_string(),
            "--timeout",
            "60s",
        ])
        .await;
    let said = expect_exit(&waited, 1, "instance `api-strict` rejected the release");
    assert!(said.contains("rate 500 is over 100"), "{said}");
    assert!(
        !said.contains("api-a") && !said.contains("api-b"),
        "only the rejecting instance is named: {said}"
    );
    // It keeps its last good value; the others run the release.
    reaches("api-a", &a_live, 500).await;
    reaches("api-b", &b_live, 500).await;
    assert_eq!(strict_live.load().rate, 10);
    // The rollout (no wait) shows the error on its row.
    let rows = env.ctl.json(&["config", "rollout", PREFIX]).await;
    let strict_row = rows
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["instance"] == "api-strict"))
        .unwrap_or_else(|| panic!("no api-strict row: {rows}"))
        .clone();
    let error = strict_row["error"]["message"].as_str().unwrap_or_default();
    assert!(error.contains("rate 500 is over 100"), "{strict_row}");

    // Rolling back heals it: a wait for the rollback succeeds.
    let rollback = seq_of(
        &env.ctl
            .json(&["config", "rollback", PREFIX, &first.to_string()])
            .await,
    );
    let statuses = env
        .ctl
        .json(&[
            "config",
            "rollout",
            PREFIX,
            "--wait",
            &rollback.to_string(),
            "--timeout",
            "30s",
        ])
        .await;
    assert!(
        statuses
            .as_array()
            .is_some_and(|s| s.len() == 3 && s.iter().all(|s| s["error"].is_null())),
        "{statuses}"
    );
    assert_eq!(strict_live.load().rate, 10);
    drop((a_live, b_live, strict_live));
    for coord in [a, b, strict] {
        coord.close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_wait_exits_1_when_a_percentage_gray_release_picks_an_instance_that_rejects_it() {
    let env = env().await;
    let fine = env.values("fine.json", r#"{"rate": 10}"#);
    env.ctl
        .json(&["config", "release", PREFIX, "-f", &fine])
        .await;
    // The gray release will be release 2 of the prefix; its picks are known in advance, so
    // the strict build runs on an instance 50% picks and a lenient one on an instance it
    // does not.
    let selector = Selector::default().percent(50);
    let picks = |name: &String| selector.matches(name, &Default::default(), 2);
    let names: Vec<String> = (0..64).map(|i| format!("api-{i:02}")).collect();
    let strict_name = names.iter().find(|n| picks(n)).expect("a picked name");
    let lenient_name = names.iter().find(|n| !picks(n)).expect("a name not picked");
    let (strict, strict_live) = env.instance::<StrictLimits>(strict_name).await;
    let (lenient, lenient_live) = env.instance::<Limits>(lenient_name).await;
    env.until_reported(2).await;

    let too_big = env.values("too-big.json", r#"{"rate": 500}"#);
    let gray = env
        .ctl
        .json(&[
            "config",
            "gray",
            "start",
            PREFIX,
            "-f",
            &too_big,
            "--percent",
            "50",
        ])
        .await;
    assert_eq!(seq_of(&gray), 2, "the gray release is release 2: {gray}");
    let waited = env
        .ctl
        .run(&[
            "config",
            "rollout",
            PREFIX,
            "--wait",
            "2",
            "--timeout",
            "60s",
        ])
        .await;
    let said = expect_exit(
        &waited,
        1,
        &format!("instance `{strict_name}` rejected the release"),
    );
    assert!(said.contains("rate 500 is over 100"), "{said}");
    assert_eq!(strict_live.load().rate, 10, "the last good value stays");
    assert_eq!(lenient_live.load().rate, 10, "not picked");

    // Aborting the gray release heals the strict instance: a wait for the abort succeeds.
    let abort = seq_of(
        &env.ctl
            .json(&["config", "gray", "abort", PREFIX, "2"])
            .await,
    );
    let statuses = env
        .ctl
        .json(&[
            "config",
            "rollout",
            PREFIX,
            "--wait",
            &abort.to_string(),
            "--timeout",
            "30s",
        ])
        .await;
    assert!(
        statuses.as_array().is_some_and(|s| s.len() == 2
            && s.iter()
                .all(|s| s["error"].is_null() && s["gray"].is_null())),
        "{statuses}"
    );
    drop((strict_live, lenient_live));
    strict.close().await.unwrap();
    lenient.close().await.unwrap();
}
