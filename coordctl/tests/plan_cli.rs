//! `coordctl config plan …`, the real binary against a real etcd with real instances: `Coord`s
//! in this process, each with its own identity and a `Live` on the prefix, as services would
//! run them, while the binary drives the plan.
//!
//! - `plan start FILE` drives a 3-step plan to its end: exit 0, every step and the promotion
//!   in its output, every instance on the new values, and history shows the gray release,
//!   its widenings (`widen N → 50%`) and the promote.
//! - An instance that rejects the values aborts the plan: exit 1 naming the instance, the
//!   final plan as JSON with `-o json`, every instance back on the base values.
//! - `plan start --no-drive` leaves the plan pending; `plan drive` finishes it while
//!   `plan status --watch` follows it to the same end.
//! - `plan pause` holds a running plan (as the principal `--as` claims) and `plan resume`
//!   lets it go; `plan start` of a second plan meanwhile is a conflict; `plan cancel` asks
//!   (no answer changes nothing), then ends it: the driver exits 4, every instance is back
//!   on the base values, and a finished plan cannot be paused (exit 4).
//! - `config rollout` shows each instance's health.

mod common;

use std::process::Output;
use std::time::Duration;

use common::{etcd, expect_code, expect_exit, expect_ok, path_text, private_file, stdout, Ctl};
use coord::testing::EtcdServer;
use coord::{Coord, CoordConfig, Instance, InstanceHealth, Live};
use serde_json::Value;

const PREFIX: &str = "/config/fleet";
/// The bound of every wait (a busy machine may be slow; passing says nothing about speed).
const WAIT: Duration = Duration::from_secs(60);

#[derive(CoordConfig, Debug, Clone, PartialEq)]
#[coord(prefix = "/config/fleet")]
struct Limits {
    rate: u32,
}

/// The same key, read by a stricter build of the service.
#[derive(CoordConfig, Debug, Clone, PartialEq)]
#[coord(prefix = "/config/fleet", validate = "at_most_100")]
struct StrictLimits {
    rate: u32,
}

fn at_most_100(limits: &StrictLimits) -> Result<(), String> {
    if limits.rate > 100 {
        return Err(format!("rate {} is over 100", limits.rate));
    }
    Ok(())
}

/// An instance's `Live`: most take any rate, the strict one refuses a rate over 100.
enum Reader {
    Plain(Live<Limits>),
    Strict(Live<StrictLimits>),
}

impl Reader {
    fn rate(&self) -> u32 {
        match self {
            Reader::Plain(live) => live.load().rate,
            Reader::Strict(live) => live.load().rate,
        }
    }
}

/// An etcd, an admin connection, the instances, coordctl on the etcd (each run bounded by
/// [`WAIT`]) and a directory for plan files.
struct Env {
    _server: EtcdServer,
    /// The connection every instance shares (`Coord::from_store_as`).
    _admin: Coord,
    fleet: Vec<(String, Coord, Reader)>,
    dir: tempfile::TempDir,
    ctl: Ctl,
}

/// An etcd with release 1 of `PREFIX` (rate 10), and `plain` instances `web-0…` plus a
/// strict one `strict-0` if `strict`, every one running release 1.
async fn env(plain: usize, strict: bool) -> Env {
    let server = etcd().await;
    let admin = Coord::connect(server.client_config()).await.unwrap();
    admin
        .config()
        .release_raw(
            PREFIX,
            [("rate".to_owned(), Value::from(10))].into_iter().collect(),
        )
        .message("base")
        .commit()
        .await
        .unwrap();
    let mut fleet = Vec::new();
    for i in 0..plain {
        let name = format!("web-{i}");
        let coord = Coord::from_store_as(admin.store(), Instance::new(&name)).unwrap();
        let live = coord.live_at::<Limits>(PREFIX).await.unwrap();
        fleet.push((name, coord, Reader::Plain(live)));
    }
    if strict {
        let name = "strict-0".to_owned();
        let coord = Coord::from_store_as(admin.store(), Instance::new(&name)).unwrap();
        let live = coord.live_at::<StrictLimits>(PREFIX).await.unwrap();
        fleet.push((name, coord, Reader::Strict(live)));
    }
    admin
        .config()
        .wait_rollout(PREFIX, 1, WAIT)
        .await
        .expect("every instance runs release 1");
    Env {
        ctl: Ctl::on(server.endpoint()).within(WAIT),
        _server: server,
        _admin: admin,
        fleet,
        dir: tempfile::tempdir().unwrap(),
    }
}

impl Env {
    /// A plan file for `PREFIX` setting rate to `rate`, with `steps` (TOML selector, bake).
    fn plan(&self, name: &str, rate: u32, steps: &[(&str, &str)]) -> String {
        let mut text = format!(
            "prefix = \"{PREFIX}\"\nmessage = \"rate {rate}\"\nvalues = {{ rate = {rate} }}\n\n\
             [gates]\nrollout_timeout = \"30s\"\n"
        );
        for (selector, bake) in steps {
            text.push_str(&format!(
                "\n[[steps]]\nselector = {selector}\nbake = \"{bake}\"\n"
            ));
        }
        path_text(&private_file(self.dir.path(), name, &text)).to_owned()
    }

    /// The plan's state, as `plan status -o json` says.
    async fn state(&self) -> Value {
        self.ctl.json(&["config", "plan", "status", PREFIX]).await
    }

    /// Waits until `plan status` says the plan is in `state`.
    async fn until_state(&self, state: &str) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let plan = self.state().await;
            if plan["state"] == state {
                return plan;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the plan is not {state} after {WAIT:?}: {plan}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until every instance shows `rate`.
    async fn all_at(&self, rate: u32) {
        let deadline = tokio::time::Instant::now() + WAIT;
        for (name, _, reader) in &self.fleet {
            while reader.rate() != rate {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{name} shows rate {} after {WAIT:?}, not {rate}",
                    reader.rate()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// Waits for a coordctl started in the background to end.
async fn ended(child: tokio::process::Child) -> Output {
    tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .expect("coordctl ends within the wait")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_start_drives_every_step_to_the_promotion_and_history_shows_the_widenings() {
    let env = env(4, false).await;
    let file = env.plan(
        "raise.toml",
        20,
        &[
            ("{ percent = 25 }", "200ms"),
            ("{ percent = 50 }", "200ms"),
            ("{}", "0s"),
        ],
    );
    let out = env.ctl.ok(&["config", "plan", "start", &file]).await;
    for expected in [
        "step 1/3 (25%): gray release 2",
        "step 1/3 (25%) passed",
        "step 2/3 (50%)",
        "step 3/3 (everyone)",
        "promoted as release 5",
        "promoted as release 5: every instance runs the new values",
    ] {
        assert!(out.contains(expected), "`{expected}` in:\n{out}");
    }
    env.all_at(20).await;

    let history = env.ctl.ok(&["config", "history", PREFIX]).await;
    for kind in [
        "gray [25%]",
        "widen 2 → 50%",
        "widen 2 → everyone",
        "promote 2",
    ] {
        assert!(history.contains(kind), "`{kind}` in:\n{history}");
    }
    let kinds: Vec<String> = env
        .ctl
        .json(&["config", "history", PREFIX])
        .await
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kind"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        kinds,
        [
            "promote 2",
            "widen 2 → everyone",
            "widen 2 → 50%",
            "gray [25%]",
            "release"
        ],
        "newest first"
    );
    let plan = env.state().await;
    assert_eq!(plan["state"], "promoted", "{plan}");
    assert_eq!(plan["seq"], 5, "{plan}");
    assert_eq!(plan["steps"][2]["state"], "done", "{plan}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_an_instance_rejects_exits_1_naming_it_with_everyone_back_on_the_base() {
    let env = env(3, true).await;
    let file = env.plan(
        "too-high.toml",
        200,
        &[("{ percent = 50 }", "100ms"), ("{}", "0s")],
    );
    let out = env
        .ctl
        .run(&["config", "plan", "start", &file, "-o", "json"])
        .await;
    let error = expect_exit(&out, 1, "aborted");
    assert!(error.contains("instance strict-0 rejected it"), "{error}");
    assert!(error.contains("rate 200 is over 100"), "{error}");
    let plan: Value = serde_json::from_str(&stdout(&out))
        .unwrap_or_else(|e| panic!("the final plan as JSON ({e}): {}", stdout(&out)));
    assert_eq!(plan["state"], "aborted", "{plan}");
    assert!(
        plan["reason"].as_str().unwrap().contains("strict-0"),
        "{plan}"
    );
    env.all_at(10).await;
    let status = env.ctl.ok(&["config", "plan", "status", PREFIX]).await;
    assert!(status.contains("aborted as release"), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_started_without_driving_stays_pending_until_plan_drive_finishes_it() {
    let env = env(3, false).await;
    let file = env.plan(
        "later.toml",
        30,
        &[("{ percent = 50 }", "200ms"), ("{}", "0s")],
    );
    let out = env
        .ctl
        .ok(&["config", "plan", "start", &file, "--no-drive"])
        .await;
    assert!(out.contains("pending"), "{out}");
    assert!(
        out.contains("coordctl config plan drive /config/fleet"),
        "{out}"
    );
    let plan = env.state().await;
    assert_eq!(plan["state"], "pending", "{plan}");
    assert_eq!(plan["steps"][0]["describe"], "50%", "{plan}");
    assert_eq!(plan["steps"][0]["state"], "pending", "{plan}");
    env.all_at(10).await;

    let watch = env
        .ctl
        .spawn(&["config", "plan", "status", PREFIX, "--watch"]);
    let drive = env.ctl.ok(&["config", "plan", "drive", PREFIX]).await;
    assert!(drive.contains("step 1/2 (50%): gray release 2"), "{drive}");
    assert!(drive.contains("promoted as release 4"), "{drive}");
    env.all_at(30).await;
    let watched = expect_ok(&ended(watch).await);
    assert!(watched.contains("promoted as release 4"), "{watched}");
    assert_eq!(env.state().await["state"], "promoted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_holds_a_running_plan_resume_lets_it_go_and_cancel_ends_it() {
    let env = env(3, false).await;
    let none = env.ctl.run(&["config", "plan", "pause", PREFIX]).await;
    expect_code(&none, 3);

    let file = env.plan("slow.toml", 40, &[("{ percent = 50 }", "1h"), ("{}", "0s")]);
    env.ctl
        .ok(&["config", "plan", "start", &file, "--no-drive"])
        .await;
    let driver = env.ctl.spawn(&["config", "plan", "drive", PREFIX]);
    env.until_state("running").await;
    let busy = env.ctl.run(&["config", "plan", "start", &file]).await;
    expect_exit(&busy, 4, "has not ended");

    let paused = env
        .ctl
        .ok(&["--as", "ops", "config", "plan", "pause", PREFIX])
        .await;
    assert!(paused.contains("paused plan"), "{paused}");
    let plan = env.state().await;
    assert_eq!(plan["paused"], true, "{plan}");
    assert_eq!(plan["steps"][0]["state"], "paused", "{plan}");
    let again = env.ctl.ok(&["config", "plan", "pause", PREFIX]).await;
    assert!(again.contains("already paused"), "{again}");
    let resumed = env.ctl.ok(&["config", "plan", "resume", PREFIX]).await;
    assert!(resumed.contains("resumed plan"), "{resumed}");
    let plan = env.state().await;
    assert_eq!(plan["paused"], false, "{plan}");
    let log: Vec<&str> = plan["log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["text"].as_str().unwrap())
        .collect();
    assert!(
        log.iter().any(|l| l.starts_with("paused by ops")),
        "{log:?}"
    );
    assert!(log.iter().any(|l| l.starts_with("resumed by")), "{log:?}");

    // Asked on stderr: no answer (stdin closed) changes nothing.
    let unanswered = env.ctl.run(&["config", "plan", "cancel", PREFIX]).await;
    let asked = expect_exit(&unanswered, 1, "cancel plan");
    assert!(asked.contains("--yes"), "{asked}");
    assert_eq!(env.state().await["state"], "running");

    let cancelled = env
        .ctl
        .ok(&["config", "plan", "cancel", PREFIX, "--yes"])
        .await;
    assert!(cancelled.contains("cancelled plan"), "{cancelled}");
    let driven = ended(driver).await;
    expect_exit(&driven, 4, "cancelled by");
    env.all_at(10).await;
    let finished = env.ctl.run(&["config", "plan", "pause", PREFIX]).await;
    expect_code(&finished, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_rollout_shows_each_instances_health() {
    let env = env(2, false).await;
    let (_, web0, _) = &env.fleet[0];
    assert!(web0.report_health(
        PREFIX,
        InstanceHealth::Degraded {
            reason: "p99 over budget".into()
        }
    ));
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let out = env.ctl.ok(&["config", "rollout", PREFIX]).await;
        if out.contains("degraded: p99 over budget") {
            assert!(out.contains("HEALTH"), "{out}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no health shown: {out}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rollout = env.ctl.json(&["config", "rollout", PREFIX]).await;
    let web0 = rollout
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["instance"] == "web-0")
        .unwrap();
    assert_eq!(web0["health"]["state"], "degraded", "{rollout}");
}
