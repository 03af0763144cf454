//! Rollout plans on a real etcd with 20 instances, each a real `Live`: the steps reach
//! exactly the instances their selectors pick and keep the earlier ones, a rejection or a
//! failing gate aborts the plan with every instance back on the base values, and a driver
//! killed mid-plan is replaced by another that resumes at the recorded step.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use coord::config::{ReleaseKind, Selector};
use coord::rollout::{GateContext, PlanState, RolloutPlan};
use coord::testing::EtcdServer;
use coord::{Coord, Instance, InstanceHealth, Live};

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
    let kinds: Vec<String> = fleet
        .admin
        .config()
        .history(PREFIX, 10)
        .await
        .unwrap()
        .iter()
        .rev()
        .map(|r| {
            format!("{:?}", r.kind)
                .split([' ', '{'])
                .next()
                .unwrap()
                .to_owned()
        })
        .collect();
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
    assert!(
        latest
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("error rate")
    );
    fleet
        .admin
        .config()
        .wait_rollout(PREFIX, done_seq(&done), Duration::from_secs(20))
        .await
        .unwrap();
    assert!(fleet.values_now().values().all(|v| *v == BASE));

    // A second plan: one picked instance says it is degraded while the step bakes.
    rollouts
        .start(
            RolloutPlan::new(PREFIX, values(NEW))
                .step(Selector::default().percent(50), Duration::from_secs(30))
                .step(Selector::default(), Duration::ZERO),
        )
        .await
        .unwrap();
    let driver = tokio::spawn(rollouts.driver(PREFIX).run());
    let gray = loop {
        let status = rollouts.status(PREFIX).await.unwrap();
        if let Some(PlanState::Running { gray, .. }) = status.map(|s| s.state) {
            break gray;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
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
async fn a_driver_killed_mid_plan_is_replaced_and_no_step_is_applied_twice() {
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
    // Driver A, on a connection of its own, dies hard during step 2's bake.
    let a = Coord::connect(fleet.server.client_config()).await.unwrap();
    let first = tokio::spawn(a.rollouts().driver(PREFIX).run());
    loop {
        let status = rollouts.status(PREFIX).await.unwrap().unwrap();
        if matches!(status.state, PlanState::Running { step: 1, .. }) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.abort();
    let _ = first.await;
    drop(a);

    // Driver B waits for A's leadership to go, then resumes at step 2.
    let b = Coord::connect(fleet.server.client_config()).await.unwrap();
    let done = tokio::time::timeout(Duration::from_secs(60), b.rollouts().driver(PREFIX).run())
        .await
        .expect("B finishes the plan")
        .unwrap();
    assert!(
        matches!(done.state, PlanState::Promoted { .. }),
        "{:?}",
        done.state
    );

    let kinds: Vec<String> = fleet
        .admin
        .config()
        .history(PREFIX, 10)
        .await
        .unwrap()
        .iter()
        .rev()
        .map(|r| {
            format!("{:?}", r.kind)
                .split([' ', '{'])
                .next()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        kinds,
        ["Release", "Gray", "Widen", "Widen", "Promote"],
        "each step once"
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
async fn a_paused_plan_holds_its_step_and_a_cancelled_one_puts_everyone_back() {
    let fleet = Fleet::start(None).await;
    let rollouts = fleet.admin.rollouts();
    rollouts
        .start(
            RolloutPlan::new(PREFIX, values(NEW))
                .step(Selector::default().percent(50), Duration::from_millis(200))
                .step(Selector::default(), Duration::ZERO),
        )
        .await
        .unwrap();
    let driver = tokio::spawn(rollouts.driver(PREFIX).run());
    loop {
        let status = rollouts.status(PREFIX).await.unwrap().unwrap();
        if matches!(status.state, PlanState::Running { step: 0, .. }) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
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
