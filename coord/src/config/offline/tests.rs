use std::sync::atomic::AtomicU64;

use super::disk::{FIELD, create_private_file, temp_path};
use super::format::{Unusable, is_v1_name};
use super::*;
use crate::config::raw::RawValue;

const CLUSTER: &str = "endpoints http://127.0.0.1:2379";
const ORIGIN: SnapshotOrigin<'static> = SnapshotOrigin {
    cluster: CLUSTER,
    cluster_id: 0xc1,
};

fn enc(prefix: &str, revision: i64, values: &RawValues) -> Vec<u8> {
    encode(ORIGIN, prefix, revision, values)
}

fn dec(prefix: &str, bytes: &[u8]) -> Result<DiskSnapshot, Unusable> {
    decode(CLUSTER, None, prefix, bytes)
}

fn values(pairs: &[(&str, &[u8])]) -> RawValues {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), RawValue::new(*v, 0)))
        .collect()
}

fn sample() -> RawValues {
    values(&[
        ("/config/app/timeout_secs", b"45"),
        ("/config/app/name", b"\"checkout\""),
        // Raw bytes need not be UTF-8.
        ("/config/app/blob", &[0, 159, 146, 150, 255]),
    ])
}

#[test]
fn a_snapshot_reads_back_as_written() {
    let bytes = enc("/config/app", 42, &sample());
    let back = dec("/config/app", &bytes).unwrap();
    assert_eq!(back.revision, 42);
    assert_eq!(back.values, sample());
    let empty = dec("/config/app", &enc("/config/app", 7, &RawValues::new())).unwrap();
    assert_eq!((empty.revision, empty.values.len()), (7, 0));
}

#[test]
fn a_truncated_file_is_rejected() {
    let bytes = enc("/config/app", 42, &sample());
    for cut in [0, 1, bytes.len() / 2, bytes.len() - 1] {
        let error = dec("/config/app", &bytes[..cut]).unwrap_err();
        assert!(matches!(error, Unusable::Json(_)), "cut at {cut}: {error}");
    }
}

#[test]
fn another_prefixs_file_is_rejected() {
    let bytes = enc("/config/other", 42, &values(&[("/config/other/x", b"1")]));
    let error = dec("/config/app", &bytes).unwrap_err();
    assert!(
        matches!(error, Unusable::Prefix { ref found, .. } if found == "/config/other"),
        "{error}"
    );
}

#[test]
fn a_key_outside_the_prefix_is_rejected_even_with_a_good_checksum() {
    // Written by hand as the encoder would, but with a key of another prefix inside.
    let bytes = enc(
        "/config/app",
        1,
        &values(&[("/config/application/x", b"1")]),
    );
    let error = dec("/config/app", &bytes).unwrap_err();
    assert!(matches!(error, Unusable::ForeignKey(ref key) if key == "/config/application/x"));
}

#[test]
fn a_flipped_value_fails_the_checksum() {
    let bytes = enc(
        "/config/app",
        42,
        &values(&[("/config/app/timeout_secs", b"45")]),
    );
    let text = String::from_utf8(bytes).unwrap();
    // "45" is "NDU=" in base64; "46" is "NDY=".
    let corrupt = text.replace("NDU=", "NDY=");
    assert_ne!(text, corrupt);
    let error = dec("/config/app", corrupt.as_bytes()).unwrap_err();
    assert!(matches!(error, Unusable::Checksum), "{error}");
    let revision = text.replace("\"revision\":42", "\"revision\":43");
    assert!(matches!(
        dec("/config/app", revision.as_bytes()),
        Err(Unusable::Checksum)
    ));
}

#[test]
fn files_of_other_programs_and_versions_are_rejected() {
    let error = dec("/config/app", br#"{"timeout_secs": 45}"#).unwrap_err();
    assert!(
        matches!(error, Unusable::Format(ref f) if f == "none"),
        "{error}"
    );
    let error = dec("/config/app", br#"{"format": "something-else"}"#).unwrap_err();
    assert!(matches!(error, Unusable::Format(ref f) if f == "something-else"));
    let newer = String::from_utf8(enc("/config/app", 1, &sample()))
        .unwrap()
        .replace("\"version\":2", "\"version\":3");
    let error = dec("/config/app", newer.as_bytes()).unwrap_err();
    assert!(matches!(error, Unusable::Version(3)), "{error}");
    // A file of version 1 (no cluster recorded) is not read.
    let v1 = br#"{"format":"coord-live-snapshot","version":1,"prefix":"/config/app","revision":1,"checksum":"0","values":{}}"#;
    let error = dec("/config/app", v1).unwrap_err();
    assert!(matches!(error, Unusable::Version(1)), "{error}");
    assert!(matches!(
        dec("/config/app", b"[1, 2, 3]"),
        Err(Unusable::Json(_))
    ));
}

#[test]
fn file_names_are_safe_and_tell_prefixes_and_clusters_apart() {
    let name = file_name(CLUSTER, "/config/checkout");
    assert!(
        name.starts_with("config_checkout-") && name.ends_with(".json"),
        "{name}"
    );
    assert!(!is_v1_name(&name), "{name}");
    let odd = file_name(CLUSTER, "/config/../../etc/passwd\0?*");
    assert!(
        !odd.contains('/') && !odd.contains('\0') && !odd.contains('*'),
        "{odd}"
    );
    assert_ne!(
        file_name(CLUSTER, "/config/a_b"),
        file_name(CLUSTER, "/config/a/b")
    );
    let staging = cluster_key(None, &["http://10.0.0.9:2379".to_owned()]);
    assert_ne!(
        file_name(CLUSTER, "/config/checkout"),
        file_name(&staging, "/config/checkout")
    );
    let long = file_name(CLUSTER, &format!("/config/{}", "x".repeat(1000)));
    assert!(long.len() < 100, "{}", long.len());
    // What version 1 named files: one hash.
    assert!(is_v1_name("config_checkout-0123456789abcdef.json"));
    assert!(!is_v1_name(
        ".config_checkout-0123456789abcdef.json.1.2.tmp"
    ));
}

#[test]
fn version_1_files_are_found_to_be_warned_of_and_nothing_else() {
    let dir = tempfile_dir();
    let v1 = br#"{"format":"coord-live-snapshot","version":1,"prefix":"/config/app","revision":1,"checksum":"0","values":{}}"#;
    std::fs::write(dir.join("config_app-0123456789abcdef.json"), v1).unwrap();
    std::fs::write(dir.join("notes-0123456789abcdef.json"), b"{}").unwrap();
    std::fs::write(
        dir.join(file_name(CLUSTER, "/config/app")),
        enc("/config/app", 1, &sample()),
    )
    .unwrap();
    assert_eq!(warn_of_v1_files(&dir), ["config_app-0123456789abcdef.json"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_cluster_key_is_the_name_or_the_sorted_endpoints() {
    let a = cluster_key(
        None,
        &[
            " http://B:2379/".to_owned(),
            "http://a:2379".to_owned(),
            "http://b:2379".to_owned(),
        ],
    );
    assert_eq!(a, "endpoints http://a:2379,http://b:2379");
    assert_eq!(
        a,
        cluster_key(
            None,
            &["http://b:2379".to_owned(), "http://a:2379".to_owned()]
        )
    );
    assert_eq!(
        cluster_key(Some("prod-eu"), &["http://a:2379".to_owned()]),
        "name prod-eu"
    );
}

#[test]
fn another_clusters_file_is_rejected() {
    let bytes = enc("/config/app", 42, &sample());
    // Found under another cluster key (copied by hand): not ours.
    let error = decode("name staging", None, "/config/app", &bytes).unwrap_err();
    assert!(
        matches!(error, Unusable::Cluster { ref found, .. } if found == CLUSTER),
        "{error}"
    );
    // The same key, but etcd answers for another cluster: not its values.
    let error = decode(CLUSTER, Some(0xc2), "/config/app", &bytes).unwrap_err();
    assert!(
        matches!(
            error,
            Unusable::OtherCluster {
                file: 0xc1,
                live: 0xc2
            }
        ),
        "{error}"
    );
    assert!(
        error.to_string().contains("replaced at the next save"),
        "{error}"
    );
    let ours = decode(CLUSTER, Some(0xc1), "/config/app", &bytes).unwrap();
    assert_eq!(ours.cluster_id, 0xc1);
    // The recorded cluster is under the checksum.
    let text = String::from_utf8(bytes).unwrap();
    let moved = text.replace("00000000000000c1", "00000000000000c2");
    assert!(matches!(
        dec("/config/app", moved.as_bytes()),
        Err(Unusable::Checksum)
    ));
}

#[test]
fn a_write_replaces_the_file_whole_and_leaves_no_temporary_file() {
    let dir = tempfile_dir();
    write_atomic(&dir, "a.json", b"first").unwrap();
    write_atomic(&dir, "a.json", b"second").unwrap();
    assert_eq!(std::fs::read(dir.join("a.json")).unwrap(), b"second");
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["a.json"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn saves_are_coalesced_and_older_revisions_dropped() {
    let path = tempfile_dir();
    let store = Store::in_memory();
    let dir = Arc::new(
        SnapshotDir::open(path.clone(), CLUSTER.to_owned())
            .unwrap()
            .attach(&store, Arc::default()),
    );
    let prefix = "/config/app";
    let newer = values(&[("/config/app/x", b"2")]);
    dir.save(prefix, 5, &values(&[("/config/app/x", b"1")]), false);
    dir.save(prefix, 9, &newer, false);
    // Older than the newest save: dropped.
    dir.save(prefix, 7, &values(&[("/config/app/x", b"old")]), false);
    let file = path.join(file_name(CLUSTER, prefix));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let written = std::fs::read(&file).ok().map(|b| dec(prefix, &b));
        if let Some(Ok(snapshot)) = written
            && snapshot.revision == 9
        {
            assert_eq!(snapshot.values, newer);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "revision 9 never written"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    while lock(&dir.prefixes)[prefix].writing {
        assert!(
            std::time::Instant::now() < deadline,
            "the writer never stops"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let last = dec(prefix, &std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(last.revision, 9, "the older save was dropped");
    // The same values again: nothing to write.
    dir.save(prefix, 9, &newer, false);
    assert!(!lock(&dir.prefixes)[prefix].writing);
    // A rebase takes an older revision (the store's history restarted).
    dir.save(prefix, 3, &values(&[("/config/app/x", b"3")]), true);
    let loaded = loop {
        let fresh = SnapshotDir::open(path.clone(), CLUSTER.to_owned())
            .unwrap()
            .attach(&store, Arc::default());
        if let Some(loaded) = fresh.load(prefix).await.filter(|s| s.revision == 3) {
            break loaded;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the rebase never written"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    assert_eq!(&loaded.values["/config/app/x"][..], b"3");
    std::fs::remove_dir_all(&path).unwrap();
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[cfg(unix)]
fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The reason of a refusal of `snapshot_dir`; panics on anything else.
fn refusal(result: Result<SnapshotDir>) -> String {
    match result {
        Err(Error::InvalidArgument { field, reason }) if field == FIELD => reason,
        Err(other) => panic!("expected InvalidArgument on snapshot_dir, got {other:?}"),
        Ok(dir) => panic!("{} was accepted", dir.path().display()),
    }
}

#[cfg(unix)]
#[test]
fn a_new_directory_is_created_0700_and_a_saved_file_is_0600() {
    let parent = tempfile_dir();
    let path = parent.join("nested").join("snapshots");
    let dir = SnapshotDir::open(path.clone(), CLUSTER.to_owned()).unwrap();
    assert_eq!(mode(&path), 0o700);
    write_atomic(dir.path(), "a.json", b"secret").unwrap();
    assert_eq!(mode(&path.join("a.json")), 0o600);
    // Opening it again (the next start) accepts it as it is.
    SnapshotDir::open(path.clone(), CLUSTER.to_owned()).unwrap();
    assert_eq!(mode(&path), 0o700);
    std::fs::remove_dir_all(&parent).unwrap();
}

#[cfg(unix)]
#[test]
fn the_temporary_file_is_0600_before_a_byte_is_written() {
    let dir = tempfile_dir();
    let temp = temp_path(&dir, "a.json");
    let file = create_private_file(&temp).unwrap();
    assert_eq!(file.metadata().unwrap().len(), 0);
    assert_eq!(mode(&temp), 0o600);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[cfg(unix)]
#[test]
fn a_file_an_older_coord_wrote_0644_is_0600_after_the_next_save() {
    let dir = tempfile_dir();
    chmod(&dir, 0o700);
    let file = dir.join("a.json");
    std::fs::write(&file, b"old").unwrap();
    chmod(&file, 0o644);
    let snapshots = SnapshotDir::open(dir.clone(), CLUSTER.to_owned()).unwrap();
    write_atomic(snapshots.path(), "a.json", b"new").unwrap();
    assert_eq!(mode(&file), 0o600);
    assert_eq!(std::fs::read(&file).unwrap(), b"new");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[cfg(unix)]
#[test]
fn a_group_writable_directory_is_refused_naming_it_and_the_fix() {
    let dir = tempfile_dir();
    chmod(&dir, 0o770);
    let reason = refusal(SnapshotDir::open(dir.clone(), CLUSTER.to_owned()));
    assert!(reason.contains(&format!("`{}`", dir.display())), "{reason}");
    assert!(
        reason.contains("writable by its group (mode 0770)"),
        "{reason}"
    );
    assert!(
        reason.contains(&format!("`chmod 700 {}`", dir.display())),
        "{reason}"
    );
    // Refused as it is: not "fixed" behind the user's back, and nothing left in it.
    assert_eq!(mode(&dir), 0o770);
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[cfg(unix)]
#[test]
fn a_world_writable_directory_is_refused() {
    let dir = tempfile_dir();
    for (mode, writers) in [(0o703, "others"), (0o777, "group and others")] {
        chmod(&dir, mode);
        let reason = refusal(SnapshotDir::open(dir.clone(), CLUSTER.to_owned()));
        assert!(
            reason.contains(&format!("writable by {writers} (mode {mode:04o})")),
            "{reason}"
        );
        assert!(reason.contains("chmod 700"), "{reason}");
    }
    // The sticky bit (a shared /tmp) does not make it private.
    chmod(&dir, 0o1777);
    let reason = refusal(SnapshotDir::open(dir.clone(), CLUSTER.to_owned()));
    assert!(reason.contains("(mode 1777)"), "{reason}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[cfg(unix)]
#[test]
fn a_directory_only_readable_by_others_is_used() {
    // What an older coord created (0755): its files become 0600 as they are saved.
    let dir = tempfile_dir();
    chmod(&dir, 0o755);
    SnapshotDir::open(dir.clone(), CLUSTER.to_owned()).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[cfg(unix)]
#[test]
fn a_directory_owned_by_another_user_is_refused() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        // Only root can give a directory away; the check itself is the same.
        eprintln!("skipped: needs root to chown");
        return;
    }
    let dir = tempfile_dir();
    chmod(&dir, 0o700);
    std::os::unix::fs::chown(&dir, Some(65534), None).unwrap();
    let reason = refusal(SnapshotDir::open(dir.clone(), CLUSTER.to_owned()));
    assert!(
        reason.contains("is owned by uid 65534, not by this process's user (uid 0)"),
        "{reason}"
    );
    assert!(reason.contains("chmod 700"), "{reason}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_file_in_place_of_the_directory_is_refused() {
    let parent = tempfile_dir();
    let file = parent.join("snapshots");
    std::fs::write(&file, b"not a directory").unwrap();
    let reason = refusal(SnapshotDir::open(file.clone(), CLUSTER.to_owned()));
    assert!(reason.contains("is not a directory"), "{reason}");
    assert_eq!(std::fs::read(&file).unwrap(), b"not a directory");
    // Nor can a directory be made under a file.
    let reason = refusal(SnapshotDir::open(file.join("below"), CLUSTER.to_owned()));
    assert!(reason.contains("cannot be created"), "{reason}");
    std::fs::remove_dir_all(&parent).unwrap();
}

/// A fresh directory under the system temp dir (coord's tempfile dependency is for the
/// `testing` feature only).
fn tempfile_dir() -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "coord-offline-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
