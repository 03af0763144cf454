//! A nemesis run as part of `cargo test`: a fixed seed, 60 seconds of faults on a real
//! 3-member etcd, every workload (locks, IDs, live config, registry) from three clients. No
//! invariant may be violated, and the run must have done something: every workload's
//! operations succeeded, every invariant had cases to check, and faults were injected.

use std::time::Duration;

use coord_tests::nemesis::history::OpKind;
use coord_tests::nemesis::runner::{self, Options};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fixed_seed_fault_run_violates_no_invariant() {
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
    for kind in [
        OpKind::Acquire,
        OpKind::Increment,
        OpKind::IdAcquire,
        OpKind::IdWrite,
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
    assert!(report.faults_injected() > 0, "{report}");
    // A loss proven by a refused write depends on the timing of the run; every other
    // invariant has cases in any run that did something.
    assert!(
        report
            .checks
            .iter()
            .all(|c| c.checked > 0 || c.name.contains("lost()")),
        "{report}"
    );
}
