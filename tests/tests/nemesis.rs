//! A short nemesis run as part of `cargo test`: a fixed seed, 20 seconds of faults on a real
//! 3-member etcd, the locks workload from three clients. No invariant may be violated, and the
//! run must have done something: operations succeeded and faults were injected.

use std::time::Duration;

use coord_tests::nemesis::history::OpKind;
use coord_tests::nemesis::runner::{self, Options};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fixed_seed_fault_run_violates_no_invariant() {
    let options = Options {
        duration: Duration::from_secs(20),
        // Six kinds of fault in 20 s, among them a client frozen for 3 s (longer than the
        // 2 s lease), so a stale holder's write reaches etcd after the lock moved on.
        seed: 22,
        ..Options::default()
    };
    let report = runner::run(options)
        .await
        .expect("the run is carried out (the error says why not, e.g. etcd is not installed)");
    println!("{report}");
    assert_eq!(report.violations(), 0, "{report}");
    assert!(report.ok(OpKind::Increment) > 0, "{report}");
    assert!(report.ok(OpKind::Acquire) > 0, "{report}");
    assert!(report.faults_injected() > 0, "{report}");
    assert!(
        report
            .checks
            .iter()
            .all(|c| c.checked > 0 || c.name.contains("lost()")),
        "{report}"
    );
}
