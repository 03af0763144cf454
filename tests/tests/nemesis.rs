//! Nemesis runs as part of `cargo test`, on a real 3-member etcd with every workload (locks,
//! IDs, elections, releases and gray releases, live config, registry) from three clients and
//! the probe client the strike cuts off.
//!
//! - A fixed seed, 60 seconds of faults: no invariant may be violated, every fault must have
//!   been injected and healed, the fences must have refused at least one increment and one
//!   ID write with `lost()` reporting each loss, and every workload must have done its work.
//! - The same run on a broken build whose lock and ID writes skip their fences: the checkers
//!   must report it. A checker that passes this run would pass anything.

use std::time::Duration;

use coord_tests::nemesis::check::Check;
use coord_tests::nemesis::history::OpKind;
use coord_tests::nemesis::runner::{self, Options};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fixed_seed_fault_run_violates_no_invariant_and_proves_its_fences() {
    let options = Options {
        duration: Duration::from_secs(60),
        seed: 22,
        ..Options::default()
    };
    let report = runner::run(options)
        .await
        .expect("the run is carried out (the error says why not, e.g. etcd is not installed)");
    println!("{report}");
    assert_eq!(report.violations(), 0, "{report}");
    assert_eq!(report.shortfalls(), Vec::<String>::new(), "{report}");
    assert!(report.passed());
    for kind in [
        OpKind::Acquire,
        OpKind::Increment,
        OpKind::LostReported,
        OpKind::IdAcquire,
        OpKind::IdWrite,
        OpKind::IdLostReported,
        OpKind::Campaign,
        OpKind::LeaderWrite,
        OpKind::Resign,
        OpKind::Release,
        OpKind::GrayStart,
        OpKind::Promote,
        OpKind::Rollback,
        OpKind::ReleaseRead,
        OpKind::ReleaseLoad,
        OpKind::Publish,
        OpKind::Load,
        OpKind::Register,
        OpKind::Deregister,
        OpKind::Discover,
    ] {
        assert!(
            report.ok(kind) > 0,
            "no {} succeeded:\n{report}",
            kind.name()
        );
    }
    assert!(report.faults.contains_key("strike"), "{report}");
    let unchecked: Vec<&Check> = report.checks.iter().filter(|c| c.checked == 0).collect();
    assert!(
        unchecked.is_empty(),
        "invariants without a case: {unchecked:?}\n{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_without_fences_is_caught_by_the_checkers() {
    let options = Options {
        duration: Duration::from_secs(40),
        seed: 22,
        ..Options::default()
    }
    .unfenced();
    let report = runner::run(options)
        .await
        .expect("the run is carried out (the error says why not, e.g. etcd is not installed)");
    println!("{report}");
    assert!(!report.passed(), "{report}");
    // The violations are the ones fences prevent: a stale holder's write applied after the
    // next holder's, on a counter, an ID's marker or the leader log.
    let fenced_invariants = [
        "fencing tokens of applied writes never go back",
        "applied writes strictly increase the counter",
        "counter = acknowledged increments (+ unknown ones)",
        "ID writes of two holders never interleave",
        "each marker holds its ID's last applied write",
        "two leaders' writes never interleave",
        "the leader log holds the last applied write",
    ];
    let caught: Vec<&str> = report
        .checks
        .iter()
        .filter(|c| !c.violations.is_empty())
        .map(|c| c.name)
        .collect();
    assert!(
        caught.iter().any(|name| fenced_invariants.contains(name)),
        "no fence invariant caught the unfenced writes (caught: {caught:?}):\n{report}"
    );
    assert_eq!(report.evidence().refused_increments, 0, "nothing is fenced");
}
