//! Runs every example on the embedded backend, as the README tells users to, so the examples
//! cannot rot: each must exit successfully and print the line that shows it did its job.
//! `from_etcd` needs an etcd: `tests/readme.rs` runs it against one.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A ceiling for a run that takes well under a second: only a hang reaches it.
const CEILING: Duration = Duration::from_secs(120);

/// Runs the example binary at `path` with no `COORD_*` settings (so on the embedded store) and
/// returns its standard output; panics if it fails or does not finish.
fn run(path: &str) -> String {
    let mut command = Command::new(path);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("COORD_") {
            command.env_remove(name);
        }
    }
    let mut child = command
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {path}: {e}"));
    // Drained as the example runs, so a full pipe cannot stall it.
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("piped stdout")));
    let stderr = drain(Box::new(child.stderr.take().expect("piped stderr")));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the example") {
            break status;
        }
        if started.elapsed() > CEILING {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{path} did not finish within {CEILING:?}; output so far:\n{}",
                stdout.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = stdout.join().expect("stdout reader");
    let stderr = stderr.join().expect("stderr reader");
    assert!(
        status.success(),
        "{path} failed ({status}):\n{stdout}\n{stderr}"
    );
    stdout
}

fn assert_prints(output: &str, line_with: &[&str]) {
    assert!(
        output
            .lines()
            .any(|line| line_with.iter().all(|part| line.contains(part))),
        "no line with {line_with:?} in:\n{output}"
    );
}

#[test]
fn quickstart_reloads_rejects_a_bad_value_heals_releases_and_rolls_back() {
    let out = run(env!("CARGO_BIN_EXE_quickstart"));
    assert_prints(&out, &["reloaded at revision", "timeout_secs: 45"]);
    assert_prints(
        &out,
        &[
            "after a bad write: timeout_secs is still 45",
            "cannot decode",
        ],
    );
    assert_prints(
        &out,
        &["healed at revision", "timeout_secs: 60", "\"one-click\""],
    );
    assert_prints(&out, &["release 2 by ops: timeout_secs is 10"]);
    assert_prints(&out, &["rolled back to 1: timeout_secs is 60"]);
    assert_prints(&out, &["history #3 Rollback { to: 1 } by", "rollback to 1"]);
    assert_prints(&out, &["history #2 Release by ops shorter timeout"]);
    assert_prints(&out, &["history #1 External by (outside releases)"]);
}

#[test]
fn hot_reload_without_etcd_applies_its_own_changes_and_rejects_the_bad_one() {
    let out = run(env!("CARGO_BIN_EXE_hot_reload"));
    assert_prints(&out, &["embedded store"]);
    assert_prints(&out, &["per_second: 50, burst: 10"]);
    assert_prints(
        &out,
        &[
            "rejected, keeping revision",
            "/config/checkout/timeout_secs",
        ],
    );
    assert_prints(&out, &["timeout_secs: 60", "per_second: 50"]);
}

#[test]
fn locks_hands_the_lock_on_with_a_higher_fencing_token_and_elects_a_new_leader() {
    let out = run(env!("CARGO_BIN_EXE_locks"));
    assert_prints(&out, &["worker 1 fenced write applied: true"]);
    assert_prints(&out, &["worker 2 holds", "higher than worker 1's"]);
    assert_prints(&out, &["leader: node-a"]);
    assert_prints(&out, &["leader: node-b"]);
}

#[test]
fn ids_hands_out_every_id_once_and_reuses_a_released_one() {
    let out = run(env!("CARGO_BIN_EXE_ids"));
    let mut got: Vec<&str> = out
        .lines()
        .filter_map(|line| line.strip_prefix("instance got ID "))
        .filter_map(|rest| rest.split_whitespace().next())
        .collect();
    got.sort();
    assert_eq!(got, ["0", "1", "2", "3"], "{out}");
    assert_prints(&out, &["all 4 IDs of `api` are taken"]);
    assert_prints(&out, &["was released and is now held again"]);
}

#[test]
fn registry_moves_traffic_off_the_instance_that_left() {
    let out = run(env!("CARGO_BIN_EXE_registry"));
    assert_prints(&out, &["registered greeter-1"]);
    assert_prints(&out, &["registered greeter-2"]);
    assert_prints(&out, &["greeter-2 left"]);
    assert_prints(
        &out,
        &[
            "40 more calls",
            "greeter-1 answered 40",
            "greeter-2 answered 0",
        ],
    );
}

#[test]
fn metrics_serves_coords_counters_in_prometheus_format() {
    let out = run(env!("CARGO_BIN_EXE_metrics"));
    assert_prints(&out, &["serving metrics on http://127.0.0.1:"]);
    assert_prints(
        &out,
        &["coord_config_reloads_total{", "result=\"applied\"", "} 1"],
    );
    assert_prints(
        &out,
        &["coord_config_reloads_total{", "result=\"rejected\"", "} 1"],
    );
    assert_prints(&out, &["coord_locks_held 1"]);
    assert_prints(&out, &["coord_store_requests_total{op=\"put\"}"]);
}

#[test]
fn webhook_forwards_each_proposal_approval_rejection_and_release() {
    let out = run(env!("CARGO_BIN_EXE_webhook"));
    assert_prints(
        &out,
        &[
            "webhook received:",
            "\"event\":\"proposed\"",
            "black friday",
        ],
    );
    assert_prints(
        &out,
        &[
            "webhook received:",
            "\"event\":\"approved\"",
            "\"by\":\"bo\"",
        ],
    );
    assert_prints(
        &out,
        &[
            "webhook received:",
            "\"event\":\"released\"",
            "\"approved_by\":\"bo\"",
        ],
    );
    assert_prints(
        &out,
        &[
            "webhook received:",
            "\"event\":\"rejected\"",
            "too much at once",
        ],
    );
    assert_prints(&out, &["the receiver got every event"]);
}
