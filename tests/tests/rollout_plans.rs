//! Rollout plans on a real etcd with 20 instances, each a real `Live`: the steps reach
//! exactly the instances their selectors pick and keep the earlier ones, a rejection or a
//! failing gate aborts the plan with every instance back on the base values, and a driver
//! cut off mid-plan is replaced, once its lease expires, by another that resumes at the
//! recorded step while the first cannot move the plan any more. A driver that judges a step
//! after its rollout timeout passed still lets it pass, a compacted history makes no driver
//! spin, a gray release ended outside the plan ends the plan. On the embedded store: plans
//! take `release` on their prefix under an access policy, and are audited.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use coord::access::audit::{list, AuditAction, AuditQuery, Outcome};
use coord::access::Policy;
use coord::config::{ReleaseKind, Selector};
use coord::rollout::{GateContext, Gates, PlanState, RolloutPlan};
use coord::testing::EtcdServer;
use coord::{Coord, Error, Instance, InstanceHealth, Live};

const PREFIX: &str = "/config/limits";
const BASE: i64 = 10;
const NEW: i64 = 20;

#[derive(coord::CoordConfig, Debug, Clone, PartialEq)]
struct Limits {
    limit: i64,
}

/// An instance that refuses a limit over 15: the new values are a bad change to it.
#[derive(coord::CoordConfig, Debug, Clone, PartialEq)]
#[coord(validate = "at_most_15")]
struct PickyLimits {
    limit: i64,
}

fn at_most_15(limits: &PickyLimits) -> Result<(), String> {
    if limits.limit > 15 {
        return Err(format!("limit {} is over this instance's 15", limits.limit));
    }
    Ok(())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// An instance's `Live`: most accept the new values, the picky one refuses them.
enum Reader {
    Plain(Live<Limits>),
    Picky(Live<PickyLimits>),
}

impl Reader {
    fn limit(&self) -> i64 {
        match self {
            Reader::Plain(live) => live.load().limit,
            Reader::Picky(live) => live.load().limit,
        }
    }
}

/// What a probe gate saw at each step: the step, who ran the gray release, its seq.
type Judged = Arc<Mutex<Vec<(usize, BTreeSet<String>, u64)>>>;

/// Every value each instance loaded, with when.
type Seen = Arc<Mutex<Vec<(String, i64, u64)>>>;

struct Fleet {
    server: EtcdServer,
    admin: Coord,
    instances: Vec<(Coord, Reader)>,
    seen: Seen,
}

fn name(i: usize) -> String {
    format!("web-{i:02}")
}

impl Fleet {
    /// 20 instances on `PREFIX` at the base values (release 1); `picky` names the instance
    /// that rejects the new values.
    async fn start(picky: Option<&str>) -> Fleet {
        let server = EtcdServer::start()
            .await
            .expect("start etcd (the error says how to install etcd)");
        let admin = Coord::connect(server.client_config()).await.unwrap();
        admin
            .config()
            .release_raw(PREFIX, values(BASE))
            .message("base")
            .commit()
            .await
            .unwrap();
        let seen: Seen = Arc::default();
        let mut instances = Vec::new();
        for i in 0..20 {
            let who = name(i);
            let coord = Coord::from_store_as(admin.store(), Instance::new(&who)).unwrap();
            if picky == Some(who.as_str()) {
                let live = coord.live_at::<PickyLimits>(PREFIX).await.unwrap();
                watch(&live, &who, &seen, |v| v.limit);
                instances.push((coord, Reader::Picky(live)));
            } else {
                let live = coord.live_at::<Limits>(PREFIX).await.unwrap();
                watch(&live, &who, &seen, |v| v.limit);
                instances.push((coord, Reader::Plain(live)));
            }
        }
        // Every instance reports the base values before the plan starts.
        admin
            .config()
            .wait_rollout(PREFIX, 1, Duration::from_secs(20))
            .await
            .unwrap();
        Fleet {
            server,
            admin,
            instances,
            seen,
        }
    }

    /// The kinds of the prefix's releases, oldest first.
    async fn kinds(&self) -> Vec<String> {
        let history = self.admin.config().history(PREFIX, 10).await.unwrap();
        history
            .iter()
            .rev()
            .map(|r| {
                let kind = format!("{:?}", r.kind);
                kind.split([' ', '{']).next().unwrap().to_owned()
            })
            .collect()
    }

    fn values_now(&self) -> BTreeMap<String, i64> {
        self.instances
            .iter()
            .map(|(coord, reader)| (coord.instance().name.clone(), reader.limit()))
            .collect()
    }

    /// After the plan: no instance loaded the new values before a step whose selector picks
    /// it had been released (nor, before promotion, outside every step).
    async fn check_no_early_loads(&self) {
        let history = self.admin.config().history(PREFIX, 100).await.unwrap();
        let mut steps: Vec<(u64, Selector, u64)> = Vec::new();
        let mut promoted_at = None;
        let mut gray_seq = 0;
        for release in history.iter().rev() {
            let at = release.time.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
            match &release.kind {
                ReleaseKind::Gray { selector } => {
                    gray_seq = release.seq;
                    steps.push((at, selector.clone(), release.seq));
                }
                ReleaseKind::Widen { selector, .. } => steps.push((at, selector.clone(), gray_seq)),
                ReleaseKind::Promote { .. } => promoted_at = Some(at),
                _ => {}
            }
        }
        let seen = self.seen.lock().unwrap().clone();
        for (who, value, at) in seen {
            if value != NEW || promoted_at.is_some_and(|p| at >= p) {
                continue;
            }
            let current = steps.iter().rev().find(|(t, _, _)| *t <= at);
            let picked = current
                .is_some_and(|(_, selector, seq)| selector.matches(&who, &BTreeMap::new(), *seq));
            assert!(
                picked,
                "{who} loaded the gray values at {at} outside its step's selector: {steps:?}"
            );
        }
    }
}

/// Runs `driver` to the end within `secs` seconds (`what` says what should make it end) and
/// requires the plan promoted.
async fn promoted_by(
    driver: coord::rollout::Driver,
    secs: u64,
    what: &str,
) -> coord::rollout::PlanStatus {
    let done = tokio::time::timeout(Duration::from_secs(secs), driver.run())
        .await
        .expect(what)
        .unwrap();
    assert!(
        matches!(done.state, PlanState::Promoted { .. }),
        "{:?}",
        done.state
    );
    done
}

/// Waits until the plan runs step `step`; returns its gray release.
async fn running_step(rollouts: &coord::rollout::Rollouts, step: usize) -> u64 {
    let wait = async {
        loop {
            let status = rollouts.status(PREFIX).await.unwrap();
            match status.map(|s| s.state) {
                Some(PlanState::Running {
                    step: now, gray, ..
                }) if now == step => return gray,
                _ => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), wait)
        .await
        .expect("the plan reaches the step")
}

fn values(limit: i64) -> BTreeMap<String, serde_json::Value> {
    BTreeMap::from([("limit".to_owned(), limit.into())])
}

fn watch<T: coord::CoordConfig + Clone + Send + Sync + 'static>(
    live: &Live<T>,
    who: &str,
    seen: &Seen,
    limit: fn(&T) -> i64,
) {
    let mut changes = live.subscribe();
    let (who, seen) = (who.to_owned(), Arc::clone(seen));
    seen.lock()
        .unwrap()
        .push((who.clone(), limit(&changes.borrow()), now_ms()));
    tokio::spawn(async move {
        while changes.changed().await.is_ok() {
            let value = limit(&changes.borrow_and_update());
            seen.lock().unwrap().push((who.clone(), value, now_ms()));
        }
    });
}

/// New values to half the instances, then everyone, each step baking `bake`.
fn half_then_everyone(bake: Duration) -> RolloutPlan {
    RolloutPlan::new(PREFIX, values(NEW))
        .step(Selector::default().percent(50), bake)
        .step(Selector::default(), Duration::ZERO)
}

fn plan() -> RolloutPlan {
    RolloutPlan::new(PREFIX, values(NEW))
        .message("double the limit")
        .step(Selector::default().percent(10), Duration::from_millis(300))
        .step(Selector::default().percent(50), Duration::from_millis(300))
        .step(Selector::default(), Duration::from_millis(100))
}

/// The instances `selector` picks for gray release `seq`.
fn picks(selector: &Selector, seq: u64) -> BTreeSet<String> {
    (0..20)
        .map(name)
        .filter(|n| selector.matches(n, &BTreeMap::new(), seq))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_reaches_exactly_each_steps_instances_keeps_earlier_picks_and_promotes() {
    let fleet = Fleet::start(None).await;
    let rollouts = fleet.admin.rollouts();
    rollouts.start(plan()).await.unwrap();
    // A gate that records who runs the gray release when each step is judged.
    let on_gray: Judged = Arc::default();
    let record = Arc::clone(&on_gray);
    let done = rollouts
        .driver(PREFIX)
        .gate("probe", move |ctx: GateContext| {
            let record = Arc::clone(&record);
            async move {
                let PlanState::Running { gray, .. } = ctx.plan.state else {
                    return Err("not running".into());
                };
                let running: BTreeSet<String> = ctx
                    .statuses
                    .iter()
                    .filter(|s| s.gray == Some(gray))
                    .map(|s| s.instance.clone())
                    .collect();
                record.lock().unwrap().push((ctx.step, running, gray));
                Ok(())
            }
        })
        .run()
        .await
        .unwrap();
    assert!(
        matches!(done.state, PlanState::Promoted { .. }),
        "{:?}",
        done.state
    );

    let judged = on_gray.lock().unwrap().clone();
    assert_eq!(judged.len(), 3, "each step judged once");
    let mut before = BTreeSet::new();
    for (step, running, gray) in &judged {
        let selector = &plan().steps[*step].selector;
        assert_eq!(
            running,
            &picks(selector, *gray),
            "step {step} reaches exactly its picks"
        );
        assert!(
            before.is_subset(running),
            "step {step} keeps the earlier picks"
        );
        before = running.clone();
    }
    assert!(
        !picks(&plan().steps[0].selector, judged[0].2).is_empty(),
        "10% of 20 picks someone here"
    );
    assert_eq!(before.len(), 20);

    // Everyone ends on the new values, as a plain release (no gray layer left).
    fleet
        .admin
        .config()
        .wait_rollout(PREFIX, done_seq(&done), Duration::from_secs(20))
        .await
        .unwrap();
    assert!(
        fleet.values_now().values().all(|v| *v == NEW),
        "{:?}",
        fleet.values_now()
    );
    let kinds = fleet.kinds().await;
    assert_eq!(kinds, ["Release", "Gray", "Widen", "Widen", "Promote"]);
    fleet.check_no_early_loads().await;
}

fn done_seq(status: &coord::rollout::PlanStatus) -> u64 {
    match status.state {
        PlanState::Promoted { seq } => seq,
        PlanState::Aborted { seq: Some(seq), .. } => seq,
        _ => panic!("not finished: {:?}", status.state),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejecting_instance_in_step_two_aborts_the_plan_and_everyone_is_back_on_the_base() {
    // The gray release will be release 2: pick an instance in its 50% but not its 10%.
    let picky = (0..20)
        .map(name)
        .find(|n| {
            let labels = BTreeMap::new();
            Selector::default().percent(50).matches(n, &labels, 2)
                && !Selector::default().percent(10).matches(n, &labels, 2)
        })
        .expect("some instance is in the 50% and not the 10%");
    let fleet = Fleet::start(Some(&picky)).await;
    let rollouts = fleet.admin.rollouts();
    rollouts.start(plan()).await.unwrap();
    let done = rollouts.driver(PREFIX).run().await.unwrap();
    let PlanState::Aborted { reason, .. } = &done.state else {
        panic!("{:?}", done.state);
    };
    assert!(reason.contains("step 2/3"), "{reason}");
    assert!(
        reason.contains(&picky) && reason.contains("over this instance's 15"),
        "{reason}"
    );

    fleet
        .admin
        .config()
        .wait_rollout(PREFIX, done_seq(&done), Duration::from_secs(20))
        .await
        .unwrap();
    assert!(
        fleet.values_now().values().all(|v| *v == BASE),
        "{:?}",
        fleet.values_now()
    );
    let latest = &fleet.admin.config().history(PREFIX, 1).await.unwrap()[0];
    assert!(matches!(latest.kind, ReleaseKind::Abort { .. }));
    let message = latest.message.as_deref().unwrap_or_default();
    assert!(
        message.contains(&picky) && message.contains("rejected"),
        "history says who and why: {message}"
    );
    fleet.check_no_early_loads().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_user_gate_or_a_degraded_instance_aborts_the_plan() {
    let fleet = Fleet::start(None).await;
    let rollouts = fleet.admin.rollouts();
    rollouts.start(plan()).await.unwrap();
    let done = rollouts
        .driver(PREFIX)
        .gate("error rate", |ctx: GateContext| async move {
            if ctx.step == 1 {
                Err("5xx at 3.2% over the 1% budget".to_owned())
            } else {
                Ok(())
            }
        })
        .run()
        .await
        .unwrap();
    let PlanState::Aborted { reason, .. } = &done.state else {
        panic!("{:?}", done.state);
    };
    assert!(reason.contains("gate error rate: 5xx at 3.2%"), "{reason}");
    let latest = &fleet.admin.config().history(PREFIX, 1).await.unwrap()[0];
    assert!(latest
        .message
        .as_deref()
        .unwrap_or_default()
        .contains("error rate"));
    fleet
        .admin
        .config()
        .wait_rollout(PREFIX, done_seq(&done), Duration::from_secs(20))
        .await
        .unwrap();
    assert!(fleet.values_now().values().all(|v| *v == BASE));

    // A second plan: one picked instance says it is degraded while the step bakes.
    rollouts
        .start(half_then_everyone(Duration::from_secs(30)))
        .await
        .unwrap();
    let driver = tokio::spawn(rollouts.driver(PREFIX).run());
    let gray = running_step(&rollouts, 0).await;
    let sick = picks(&Selector::default().percent(50), gray)
        .into_iter()
        .next()
        .expect("50% of 20 picks someone");
    let (coord, _) = fleet
        .instances
        .iter()
        .find(|(c, _)| c.instance().name == sick)
        .unwrap();
    assert!(coord.report_health(
        PREFIX,
        InstanceHealth::Degraded {
            reason: "p99 1.8 s".into()
        }
    ));
    let done = tokio::time::timeout(Duration::from_secs(20), driver)
        .await
        .expect("the plan ends long before its 30 s bake")
        .unwrap()
        .unwrap();
    let PlanState::Aborted { reason, .. } = &done.state else {
        panic!("{:?}", done.state);
    };
    assert!(
        reason.contains(&sick) && reason.contains("degraded: p99 1.8 s"),
        "{reason}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_cut_off_mid_plan_is_replaced_when_its_lease_expires_and_cannot_move_the_plan_after(
) {
    let fleet = Fleet::start(None).await;
    let rollouts = fleet.admin.rollouts();
    rollouts
        .start(
            RolloutPlan::new(PREFIX, values(NEW))
                .step(Selector::default().percent(10), Duration::from_millis(200))
                .step(Selector::default().percent(50), Duration::from_secs(3))
                .step(Selector::default(), Duration::from_millis(100)),
        )
        .await
        .unwrap();
    // Driver A reaches etcd through a proxy, with a 2 s leadership.
    let proxies = fleet.server.proxies().await.unwrap();
    let a = Coord::connect(proxies.client_config()).await.unwrap();
    let first = tokio::spawn(
        a.rollouts()
            .driver(PREFIX)
            .ttl(Duration::from_secs(2))
            .run(),
    );
    running_step(&rollouts, 1).await;
    // A is cut off during step 2's bake: it neither resigns nor renews; etcd hears nothing
    // more from it, and what it sends from now on is held until the heal.
    proxies[0].blackhole();

    // Driver B, on a connection of its own, leads once A's lease expires, and resumes at
    // step 2.
    let b = Coord::connect(fleet.server.client_config()).await.unwrap();
    let done = tokio::time::timeout(Duration::from_secs(30), b.rollouts().driver(PREFIX).run())
        .await
        .expect("B finishes the plan")
        .unwrap();
    assert!(
        matches!(done.state, PlanState::Promoted { .. }),
        "{:?}",
        done.state
    );

    // A's run ends with its leadership, which it could not renew. Healed, A's held requests
    // reach etcd: its fence refuses them.
    proxies[0].heal();
    let ended = tokio::time::timeout(Duration::from_secs(20), first)
        .await
        .expect("A's run ends")
        .unwrap();
    assert!(
        matches!(ended, Err(Error::SessionLost { .. })),
        "A cannot finish a plan it lost: {ended:?}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let kinds = fleet.kinds().await;
    assert_eq!(
        kinds,
        ["Release", "Gray", "Widen", "Widen", "Promote"],
        "each step once"
    );
    let now = rollouts.status(PREFIX).await.unwrap().unwrap();
    assert_eq!(
        now.revision, done.revision,
        "nothing moved the plan after B"
    );
    fleet
        .admin
        .config()
        .wait_rollout(PREFIX, done_seq(&done), Duration::from_secs(20))
        .await
        .unwrap();
    assert!(fleet.values_now().values().all(|v| *v == NEW));
    fleet.check_no_early_loads().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_that_takes_over_after_the_rollout_timeout_finishes_the_step_and_so_does_a_resume()
{
    let fleet = Fleet::start(None).await;
    let rollouts = fleet.admin.rollouts();
    rollouts
        .start(
            half_then_everyone(Duration::from_millis(2500)).gates(Gates {
                rollout_timeout: Duration::from_secs(1),
                ..Gates::default()
            }),
        )
        .await
        .unwrap();
    let first = tokio::spawn(rollouts.driver(PREFIX).run());
    running_step(&rollouts, 0).await;
    // Paused past the rollout timeout, then resumed: the step starts again.
    rollouts.pause(PREFIX).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1300)).await;
    rollouts.resume(PREFIX).await.unwrap();
    // The first driver goes in the bake, after the resumed step's rollout timeout passed.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let baking = rollouts.status(PREFIX).await.unwrap().unwrap();
    assert!(
        matches!(baking.state, PlanState::Running { step: 0, .. }),
        "a resumed step is not judged against its old deadline: {:?}",
        baking.state
    );
    first.abort();
    let _ = first.await;

    // The second judges the step afresh: its instances run it, so it passes.
    promoted_by(
        rollouts.driver(PREFIX),
        20,
        "the second driver finishes the plan",
    )
    .await;
    assert_eq!(fleet.kinds().await, ["Release", "Gray", "Widen", "Promote"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_compaction_a_paused_plan_does_not_spin_and_a_baking_one_finishes() {
    let fleet = Fleet::start(None).await;
    let rollouts = fleet.admin.rollouts();
    rollouts
        .start(half_then_everyone(Duration::from_millis(1500)))
        .await
        .unwrap();
    let first = tokio::spawn(rollouts.driver(PREFIX).run());
    running_step(&rollouts, 0).await;
    rollouts.pause(PREFIX).await.unwrap();
    first.abort();
    let _ = first.await;
    // The history up to after the pause is compacted away.
    let compact_past_the_plan = || async {
        for i in 0..3 {
            fleet
                .admin
                .store()
                .put("/elsewhere", format!("{i}").into_bytes(), 0)
                .await
                .unwrap();
        }
        fleet.server.compact().await.unwrap();
    };
    compact_past_the_plan().await;

    // A driver of the paused plan waits; it does not read and relist in a loop.
    let d = Coord::connect(fleet.server.client_config()).await.unwrap();
    let second = tokio::spawn(d.rollouts().driver(PREFIX).run());
    tokio::time::sleep(Duration::from_millis(700)).await;
    let before = d.store().stats().round_trips();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let spent = d.store().stats().round_trips() - before;
    // A lease renewal at most: a round of the drive loop (read, open a watch, relist) is 3.
    assert!(
        spent <= 2,
        "{spent} round trips in a second of a paused plan"
    );
    assert!(!second.is_finished());

    // Resumed, it goes on; cut off in the bake, with the history compacted past the
    // resume, a third driver finishes the bake and the plan.
    rollouts.resume(PREFIX).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    second.abort();
    let _ = second.await;
    compact_past_the_plan().await;
    promoted_by(
        rollouts.driver(PREFIX),
        20,
        "the bake ends and the plan with it",
    )
    .await;
    assert_eq!(fleet.kinds().await, ["Release", "Gray", "Widen", "Promote"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gray_release_ended_outside_the_plan_ends_the_plan_and_a_cancel_still_succeeds() {
    let fleet = Fleet::start(None).await;
    let rollouts = fleet.admin.rollouts();
    let long = || half_then_everyone(Duration::from_secs(30));
    rollouts.start(long()).await.unwrap();
    let driver = tokio::spawn(rollouts.driver(PREFIX).run());
    let gray = running_step(&rollouts, 0).await;
    // A rollback mid-plan ends the gray release (recorded as its abort).
    fleet
        .admin
        .config()
        .rollback(PREFIX, 1)
        .commit()
        .await
        .unwrap();
    let done = tokio::time::timeout(Duration::from_secs(10), driver)
        .await
        .expect("the driver ends the plan long before its 30 s bake")
        .unwrap()
        .unwrap();
    let PlanState::Aborted { reason, seq: None } = &done.state else {
        panic!("{:?}", done.state);
    };
    assert!(
        reason.starts_with(&format!(
            "gray release {gray} ended outside the plan (aborted as release"
        )) && reason.contains("rollback to 1"),
        "{reason}"
    );

    // A new plan starts; its gray release is aborted by hand with no driver around: cancel
    // ends it all the same, and the next plan can start.
    rollouts.start(long()).await.unwrap();
    let driver = tokio::spawn(rollouts.driver(PREFIX).run());
    let gray = running_step(&rollouts, 0).await;
    driver.abort();
    let _ = driver.await;
    fleet
        .admin
        .config()
        .abort(PREFIX, gray)
        .commit()
        .await
        .unwrap();
    let cancelled = rollouts.cancel(PREFIX).await.unwrap();
    assert!(
        matches!(cancelled.state, PlanState::Cancelled { seq: None, .. }),
        "{:?}",
        cancelled.state
    );
    let last = cancelled.log.last().unwrap();
    assert!(
        last.text.contains(&format!(
            "gray release {gray} had ended outside the plan (aborted"
        )),
        "{}",
        last.text
    );
    rollouts.start(long()).await.unwrap();
    rollouts.cancel(PREFIX).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_plan_holds_its_step_and_a_cancelled_one_puts_everyone_back() {
    let fleet = Fleet::start(None).await;
    let rollouts = fleet.admin.rollouts();
    rollouts
        .start(half_then_everyone(Duration::from_millis(200)))
        .await
        .unwrap();
    let driver = tokio::spawn(rollouts.driver(PREFIX).run());
    running_step(&rollouts, 0).await;
    rollouts.pause(PREFIX).await.unwrap();
    // Well past the bake: still at step 1.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let held = rollouts.status(PREFIX).await.unwrap().unwrap();
    assert!(
        matches!(held.state, PlanState::Running { step: 0, .. }),
        "{:?}",
        held.state
    );
    assert!(held.paused);

    let cancelled = rollouts.cancel(PREFIX).await.unwrap();
    assert!(matches!(
        cancelled.state,
        PlanState::Cancelled { seq: Some(_), .. }
    ));
    let ended = tokio::time::timeout(Duration::from_secs(10), driver)
        .await
        .expect("the driver sees the cancel")
        .unwrap()
        .unwrap();
    assert!(matches!(ended.state, PlanState::Cancelled { .. }));
    fleet
        .admin
        .config()
        .wait_rollout(
            PREFIX,
            done_seq_cancelled(&cancelled),
            Duration::from_secs(20),
        )
        .await
        .unwrap();
    assert!(fleet.values_now().values().all(|v| *v == BASE));
    assert!(held.log.iter().any(|l| l.text.contains("paused by")));
}

fn done_seq_cancelled(status: &coord::rollout::PlanStatus) -> u64 {
    match status.state {
        PlanState::Cancelled { seq: Some(seq), .. } => seq,
        _ => panic!("{:?}", status.state),
    }
}

const POLICY: &str = r#"
[principals.ana]
roles = ["editor"]
[principals.bo]
roles = ["owner"]

[roles.editor]
grants = [{ prefix = "/config", actions = ["propose"] }]
[roles.owner]
grants = [{ prefix = "/config", actions = ["release", "approve"] }]

[review."/config/reviewed"]
"#;

#[tokio::test]
async fn plans_take_release_on_their_prefix_are_refused_under_review_and_are_audited() {
    let coord = Coord::in_memory();
    let access = coord.access();
    let policy = access
        .plan(&Policy::parse_toml(POLICY).unwrap(), &BTreeMap::new())
        .await
        .unwrap();
    access.apply(&policy).await.unwrap();
    let bo = coord.rollouts().as_principal("bo").unwrap();
    let ana = coord.rollouts().as_principal("ana").unwrap();
    coord
        .config()
        .as_principal("bo")
        .unwrap()
        .release_raw(PREFIX, values(BASE))
        .commit()
        .await
        .unwrap();
    let plan = || half_then_everyone(Duration::from_secs(30));
    let denied = |r: coord::Result<coord::rollout::PlanStatus>| {
        matches!(r, Err(Error::PermissionDenied { .. }))
    };

    assert!(denied(ana.start(plan()).await), "ana only proposes");
    assert!(
        denied(coord.rollouts().start(plan()).await),
        "anonymous has no grant"
    );
    bo.start(plan()).await.unwrap();
    assert!(denied(ana.pause(PREFIX).await));
    bo.pause(PREFIX).await.unwrap();
    assert!(denied(ana.resume(PREFIX).await));
    bo.resume(PREFIX).await.unwrap();
    // Driven as bo to its first step, then cancelled.
    let driver = tokio::spawn(bo.driver(PREFIX).run());
    let gray = loop {
        if let Some(PlanState::Running { gray, .. }) =
            bo.status(PREFIX).await.unwrap().map(|s| s.state)
        {
            break gray;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let history = coord.config().history(PREFIX, 1).await.unwrap();
    assert_eq!(
        history[0].principal.as_deref(),
        Some("bo"),
        "the driver releases as bo"
    );
    assert!(denied(ana.cancel(PREFIX).await));
    let cancelled = bo.cancel(PREFIX).await.unwrap();
    assert!(matches!(
        cancelled.state,
        PlanState::Cancelled { seq: Some(_), .. }
    ));
    driver.await.unwrap().unwrap();

    // A prefix that requires review takes no plan: its values are proposed, not released.
    let reviewed =
        RolloutPlan::new("/config/reviewed", values(NEW)).step(Selector::default(), Duration::ZERO);
    assert!(matches!(
        bo.start(reviewed).await,
        Err(Error::ReviewRequired { .. })
    ));

    let records = list(coord.store(), &AuditQuery::default()).await.unwrap();
    let plans: Vec<(String, AuditAction, Outcome)> = records
        .iter()
        .filter(|r| r.action.as_str().starts_with("plan_"))
        .map(|r| (r.principal.clone(), r.action, r.outcome))
        .collect();
    let refused = |who: &str, action| (who.to_owned(), action, Outcome::Refused);
    let done = |action| ("bo".to_owned(), action, Outcome::Done);
    assert_eq!(
        plans,
        [
            refused("ana", AuditAction::PlanStart),
            refused("anonymous", AuditAction::PlanStart),
            done(AuditAction::PlanStart),
            refused("ana", AuditAction::PlanPause),
            done(AuditAction::PlanPause),
            refused("ana", AuditAction::PlanResume),
            done(AuditAction::PlanResume),
            refused("ana", AuditAction::PlanCancel),
            done(AuditAction::PlanCancel),
            refused("bo", AuditAction::PlanStart),
        ]
    );
    let cancel = records
        .iter()
        .find(|r| r.action == AuditAction::PlanCancel && r.outcome == Outcome::Done)
        .unwrap();
    assert!(
        cancel
            .detail
            .as_deref()
            .unwrap()
            .contains(&format!("gray release {gray} aborted as release")),
        "{cancel:?}"
    );
    assert_eq!(
        cancel.revision,
        {
            let abort = &coord.config().history(PREFIX, 1).await.unwrap()[0];
            abort.revision
        },
        "the cancel's record is written with its abort"
    );
}

#[tokio::test]
async fn a_plan_keeps_no_secret_in_clear_and_releases_it_sealed() {
    #[derive(coord::CoordConfig, Debug, Clone)]
    #[coord(prefix = "/config/pay")]
    struct Pay {
        #[coord(default = 1)]
        retries: u32,
        #[coord(secret)]
        api_key: coord::Secret<String>,
    }
    let coord = Coord::in_memory();
    coord.set_key_ring(
        coord::keyring::KeyRing::parse("k1 AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=").unwrap(),
    );
    coord.config().publish_schema::<Pay>().await.unwrap();
    coord
        .config()
        .publish(&Pay {
            retries: 1,
            api_key: coord::Secret::new("old-key".into()),
        })
        .await
        .unwrap();
    let live = coord.live::<Pay>().await.unwrap();
    let plan = RolloutPlan::new(
        "/config/pay",
        BTreeMap::from([
            ("api_key".to_owned(), "hunter2".into()),
            ("retries".to_owned(), 3.into()),
        ]),
    )
    .step(Selector::default(), Duration::ZERO);
    let started = coord.rollouts().start(plan).await.unwrap();
    assert_eq!(started.plan.values["api_key"], "<redacted>");
    let (stored, _) = coord.store().get("/coord/plans/config/pay").await.unwrap();
    let stored = String::from_utf8(stored.unwrap().value).unwrap();
    assert!(
        !stored.contains("hunter2"),
        "the plan key holds the secret sealed: {stored}"
    );

    promoted_by(coord.rollouts().driver("/config/pay"), 10, "the plan ends").await;
    let (value, _) = coord.store().get("/config/pay/api_key").await.unwrap();
    assert!(
        coord::keyring::is_sealed(&value.unwrap().value),
        "stored sealed"
    );
    let mut changes = live.subscribe();
    tokio::time::timeout(Duration::from_secs(5), async {
        while changes.borrow_and_update().retries != 3 {
            changes.changed().await.unwrap();
        }
    })
    .await
    .unwrap();
    assert_eq!(live.load().api_key.expose(), "hunter2");
}

#[tokio::test]
async fn without_a_key_ring_a_plans_secret_is_in_no_output() {
    #[derive(coord::CoordConfig, Debug, Clone)]
    #[coord(prefix = "/config/pay")]
    struct Pay {
        #[coord(secret)]
        api_key: coord::Secret<String>,
    }
    let coord = Coord::in_memory();
    coord.config().publish_schema::<Pay>().await.unwrap();
    let plan = RolloutPlan::new(
        "/config/pay",
        BTreeMap::from([("api_key".to_owned(), "hunter2".into())]),
    )
    .step(Selector::default(), Duration::ZERO);
    let started = coord.rollouts().start(plan).await.unwrap();
    let status = coord
        .rollouts()
        .status("/config/pay")
        .await
        .unwrap()
        .unwrap();
    for shown in [&started, &status] {
        let json = serde_json::to_string(shown).unwrap();
        assert!(!json.contains("hunter2"), "{json}");
        assert!(!format!("{shown:?}").contains("hunter2"));
        assert_eq!(shown.plan.values["api_key"], "<redacted>");
    }
    promoted_by(coord.rollouts().driver("/config/pay"), 10, "the plan ends").await;
    let live = coord.live::<Pay>().await.unwrap();
    assert_eq!(
        live.load().api_key.expose(),
        "hunter2",
        "released as planned"
    );
}
