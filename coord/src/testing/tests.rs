use super::certs::write_certificates;
use super::process::{
    DIR_PREFIX, LOG_TAIL_LINES, OWNER_FILE, find_on_path, log_tail, remove_orphaned_dirs, tempdir,
};
use std::process::Command;

use super::*;

#[test]
fn a_missing_program_says_how_to_install_it() {
    let err = find_on_path("etcd-that-does-not-exist").unwrap_err();
    assert!(
        matches!(&err, HarnessError::NotInstalled { program } if program == "etcd-that-does-not-exist"),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("apt-get install -y etcd-server etcd-client"),
        "{text}"
    );
    assert!(text.contains("protobuf-compiler"), "{text}");
}

#[tokio::test]
async fn an_etcd_that_exits_is_a_harness_error_naming_the_member() {
    // `false` exits at once, as an etcd refusing its flags would.
    let etcd = find_on_path("false").unwrap();
    let mut cluster = EtcdCluster::create(EtcdBuilder::default(), etcd, 1).unwrap();
    std::fs::write(&cluster.members[0].log_file, "last words\n").unwrap();
    cluster.spawn(0).unwrap();
    let err = cluster.wait_until_serving(START_TIMEOUT).await.unwrap_err();
    match &err {
        HarnessError::NotServing {
            member,
            what,
            log_tail,
            ..
        } => {
            assert_eq!(*member, 0);
            assert!(what.starts_with("exited"), "{what}");
            assert_eq!(log_tail, "last words");
        }
        other => panic!("expected NotServing, got {other:?}"),
    }
    let text = err.to_string();
    assert!(text.starts_with("etcd member m0 at 127.0.0.1:"), "{text}");
}

#[test]
fn certificates_are_pem_files() {
    let dir = tempfile::tempdir().unwrap();
    let files = write_certificates(dir.path()).unwrap();
    for path in [
        &files.ca_file,
        &files.server_cert_file,
        &files.client_key_file,
    ] {
        crate::client_config::read_pem("test", path).unwrap();
    }
    files.with_client_identity().validate().unwrap();
}

#[test]
fn directories_of_dead_test_processes_are_removed() {
    let mut dead = Command::new("true").spawn().unwrap();
    let dead_pid = dead.id();
    dead.wait().unwrap();
    let orphan = tempfile::Builder::new()
        .prefix(DIR_PREFIX)
        .tempdir()
        .unwrap();
    std::fs::write(orphan.path().join(OWNER_FILE), dead_pid.to_string()).unwrap();
    let mine = tempdir().unwrap();

    remove_orphaned_dirs();

    assert!(
        !orphan.path().exists(),
        "the dead process's directory is gone"
    );
    assert!(mine.path().exists(), "a live process's directory stays");
}

#[test]
fn log_tail_keeps_the_last_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    let text: String = (0..100).map(|i| format!("line {i}\n")).collect();
    std::fs::write(&path, text).unwrap();
    let tail = log_tail(&path);
    assert!(tail.ends_with("line 99"), "{tail}");
    assert_eq!(tail.lines().count(), LOG_TAIL_LINES);
    assert_eq!(log_tail(&dir.path().join("missing")), "(no log)");
}
