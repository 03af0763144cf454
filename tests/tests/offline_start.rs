//! Offline start (`ClientConfig::snapshot_dir`) against a real etcd that is stopped and
//! started again: a `Live` keeps its last good values on disk, a new `Coord` binds from them
//! while etcd is down (stale), and follows etcd once it is back; bad snapshot files are
//! ignored, and without one a bind fails as it always did. The directory is private (0700,
//! files 0600), and `connect` refuses one that others could write, that is not ours, that is
//! a file, under `/proc` or not writable; a save that fails later shows in `health()`.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use coord::testing::EtcdServer;
use coord::{ClientConfig, Coord, Error};

use common::{NO_RESYNC, eventually};
use coord_tests::fixtures::{Checkout, Pair};

/// A ceiling, not a target: on a loaded machine a reconnect takes longer.
const WAIT: Duration = Duration::from_secs(20);

async fn etcd() -> EtcdServer {
    EtcdServer::start()
        .await
        .expect("start etcd (see the error for how to install it)")
}

/// The test profile's config for `server`, keeping snapshots in `dir`; no periodic relist, so
/// what a test sees came through the watch and its reconnect.
fn config(server: &EtcdServer, dir: &Path) -> ClientConfig {
    server
        .client_config()
        .with_snapshot_dir(dir)
        .with_sync_interval(NO_RESYNC)
}

fn put(server: &EtcdServer, key: &str, value: &str) {
    server.etcdctl(&["put", key, value]).unwrap();
}

fn seed_checkout(server: &EtcdServer) {
    put(
        server,
        "/config/checkout/rate-limit",
        r#"{"per_second":10,"burst":5}"#,
    );
}

/// The snapshot file in `dir` that says it holds `prefix`, with its parsed contents (not a
/// temporary file of a write under way: those start with a dot).
fn snapshot_file(dir: &Path, prefix: &str) -> Option<(PathBuf, serde_json::Value)> {
    std::fs::read_dir(dir).ok()?.find_map(|entry| {
        let path = entry.ok()?.path();
        if path.file_name()?.to_str()?.starts_with('.') {
            return None;
        }
        let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
        (json["prefix"] == prefix).then_some((path, json))
    })
}

/// Waits until `prefix`'s snapshot in `dir` is at `revision` or later; returns its file.
async fn saved_at(dir: &Path, prefix: &str, revision: i64) -> PathBuf {
    eventually(WAIT, "the snapshot is written", || async {
        snapshot_file(dir, prefix)
            .is_some_and(|(_, json)| json["revision"].as_i64() >= Some(revision))
    })
    .await;
    snapshot_file(dir, prefix).unwrap().0
}

/// A `Live` bound once leaves its values on disk; with etcd stopped a new `Coord` connects and
/// binds from them, stale; once etcd is back the handle takes what changed meanwhile (a key
/// deleted after the snapshot was written) and what changes next, and is current again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_coord_binds_from_the_snapshot_while_etcd_is_down_and_follows_it_when_back() {
    let mut server = etcd().await;
    let dir = tempfile::tempdir().unwrap();
    seed_checkout(&server);
    put(&server, "/config/checkout/timeout_secs", "45");
    let first = Coord::connect(config(&server, dir.path())).await.unwrap();
    let live = first.live::<Checkout>().await.unwrap();
    put(&server, "/config/checkout/timeout_secs", "46");
    eventually(WAIT, "the first handle follows", || async {
        live.load().timeout_secs == 46
    })
    .await;
    let revision = live.revision();
    saved_at(dir.path(), "/config/checkout", revision).await;
    first.close().await.unwrap();
    drop(live);

    // A change the snapshot never saw: the handle must drop the key once etcd answers.
    server
        .etcdctl(&["del", "/config/checkout/timeout_secs"])
        .unwrap();
    server.kill().await.unwrap();

    let second = Coord::connect(config(&server, dir.path()))
        .await
        .expect("with a snapshot dir, connect succeeds while etcd is down");
    let live = second
        .live::<Checkout>()
        .await
        .expect("bound from the snapshot");
    assert_eq!(live.load().timeout_secs, 46, "the last good value");
    assert_eq!(live.load().rate_limit.per_second, 10);
    assert_eq!(live.revision(), revision);
    assert!(live.staleness().is_some(), "started offline: stale");
    // Another handle on the prefix shares the offline range.
    let another = second.live::<Checkout>().await.unwrap();
    assert_eq!(another.load().timeout_secs, 46);

    server.restart().await.unwrap();
    eventually(WAIT, "current again once etcd answers", || async {
        live.staleness().is_none()
    })
    .await;
    assert_eq!(
        live.load().timeout_secs,
        30,
        "the key deleted while the handle was offline is gone: its default"
    );
    assert!(live.revision() > revision);

    put(&server, "/config/checkout/timeout_secs", "47");
    eventually(WAIT, "follows etcd after the offline start", || async {
        live.load().timeout_secs == 47 && another.load().timeout_secs == 47
    })
    .await;
    assert_eq!(live.staleness(), None);
    // And the snapshot follows too.
    saved_at(dir.path(), "/config/checkout", live.revision()).await;
    second.close().await.unwrap();
}

/// A value started from disk knows no mod revisions (the file keeps none): `explain` says so,
/// and once etcd answers it names the revision that wrote each key, even though nothing
/// changed meanwhile and the value is not rebuilt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_learns_the_mod_revisions_a_snapshot_on_disk_does_not_keep() {
    use coord::config::Origin;

    let mut server = etcd().await;
    let dir = tempfile::tempdir().unwrap();
    seed_checkout(&server);
    let first = Coord::connect(config(&server, dir.path())).await.unwrap();
    let live = first.live::<Checkout>().await.unwrap();
    let rate_limit = "/config/checkout/rate-limit";
    let written = live
        .explain()
        .unwrap()
        .get(rate_limit)
        .unwrap()
        .origin
        .clone();
    assert!(
        matches!(written, Origin::Key { mod_revision } if mod_revision > 0),
        "{written:?}"
    );
    saved_at(dir.path(), "/config/checkout", live.revision()).await;
    first.close().await.unwrap();
    drop(live);
    server.kill().await.unwrap();

    let second = Coord::connect(config(&server, dir.path())).await.unwrap();
    let live = second
        .live::<Checkout>()
        .await
        .expect("bound from the snapshot");
    let offline = live.explain().unwrap();
    assert_eq!(
        offline.get(rate_limit).unwrap().origin,
        Origin::Key { mod_revision: 0 }
    );
    assert!(
        offline.to_string().contains("mod revision unknown"),
        "{offline}"
    );
    let updates = live.subscribe();

    server.restart().await.unwrap();
    eventually(WAIT, "current again once etcd answers", || async {
        live.staleness().is_none()
    })
    .await;
    assert!(
        !updates.has_changed().unwrap(),
        "nothing changed: no rebuild"
    );
    assert_eq!(
        live.explain().unwrap().get(rate_limit).unwrap().origin,
        written
    );
    second.close().await.unwrap();
}

/// A snapshot saved from an etcd whose history has since restarted (a new cluster, at lower
/// revisions, under the same `cluster_name`: an etcd rebuilt behind the same name) is all an
/// offline start can find, and gives way to the new etcd's values once it answers, though
/// they are at an older revision than the snapshot's; the file then records the new cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_from_an_older_cluster_gives_way_to_the_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let config =
        |server: &EtcdServer, dir: &Path| config(server, dir).with_cluster_name("checkout");
    let old = etcd().await;
    seed_checkout(&old);
    for i in 0..20 {
        put(
            &old,
            "/config/checkout/timeout_secs",
            &(100 + i).to_string(),
        );
    }
    let first = Coord::connect(config(&old, dir.path())).await.unwrap();
    let live = first.live::<Checkout>().await.unwrap();
    assert_eq!(live.load().timeout_secs, 119);
    let saved = live.revision();
    saved_at(dir.path(), "/config/checkout", saved).await;
    first.close().await.unwrap();
    drop(old);

    let mut new = etcd().await;
    seed_checkout(&new);
    put(&new, "/config/checkout/timeout_secs", "7");
    new.kill().await.unwrap();
    let second = Coord::connect(config(&new, dir.path())).await.unwrap();
    let live = second.live::<Checkout>().await.unwrap();
    assert_eq!(
        live.load().timeout_secs,
        119,
        "from the old cluster's snapshot"
    );
    new.restart().await.unwrap();
    // Staleness clears just after the value is swapped (never before), so wait for both.
    eventually(WAIT, "the new cluster's value, current", || async {
        live.load().timeout_secs == 7 && live.staleness().is_none()
    })
    .await;
    assert!(live.revision() < saved, "{} < {saved}", live.revision());
    // The snapshot now holds the new cluster's state, at its revision, and names it.
    let new_id = format!("{:016x}", second.store().status().await.unwrap().cluster_id);
    eventually(WAIT, "the snapshot rebased", || async {
        snapshot_file(dir.path(), "/config/checkout").is_some_and(|(_, json)| {
            json["revision"].as_i64() == Some(live.revision()) && json["cluster_id"] == new_id
        })
    })
    .await;
    second.close().await.unwrap();
}

/// A value the handle rejects is not what it runs, so it is not what an offline start gets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_value_is_not_saved() {
    let mut server = etcd().await;
    let dir = tempfile::tempdir().unwrap();
    seed_checkout(&server);
    put(&server, "/config/checkout/timeout_secs", "45");
    let first = Coord::connect(config(&server, dir.path())).await.unwrap();
    let live = first.live::<Checkout>().await.unwrap();
    let good = live.revision();
    saved_at(dir.path(), "/config/checkout", good).await;
    put(&server, "/config/checkout/timeout_secs", "\"not a number\"");
    eventually(WAIT, "the bad value is rejected", || async {
        live.last_error().is_some()
    })
    .await;
    // A good change to a key the handle does not read comes after it: still not saved, as
    // the struct's keys still hold the rejected value.
    put(&server, "/config/checkout/unrelated", "1");
    // Another bad value after it is the marker: once the handle's status reports rejecting
    // it, the handle has been through the unrelated change (it takes revisions in order).
    let marker = first
        .store()
        .put(
            "/config/checkout/timeout_secs",
            b"\"still not a number\"".to_vec(),
            0,
        )
        .await
        .unwrap()
        .revision;
    eventually(WAIT, "the status reports the marker rejected", || async {
        first
            .config()
            .rollout("/config/checkout")
            .await
            .unwrap()
            .iter()
            .any(|s| s.error.as_ref().is_some_and(|e| e.revision >= marker))
    })
    .await;
    let (_, json) = snapshot_file(dir.path(), "/config/checkout").unwrap();
    assert_eq!(json["revision"].as_i64(), Some(good));
    first.close().await.unwrap();

    server.kill().await.unwrap();
    let second = Coord::connect(config(&server, dir.path())).await.unwrap();
    let live = second.live::<Checkout>().await.unwrap();
    assert_eq!(live.load().timeout_secs, 45);
    assert!(live.last_error().is_none());
    second.close().await.unwrap();
}

/// A snapshot cut short (a crash of something else that wrote it, a full disk) is ignored:
/// with etcd down the bind fails as if there were none; with etcd up it binds from etcd.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_snapshot_is_ignored() {
    let mut server = etcd().await;
    let dir = tempfile::tempdir().unwrap();
    seed_checkout(&server);
    let first = Coord::connect(config(&server, dir.path())).await.unwrap();
    let live = first.live::<Checkout>().await.unwrap();
    let file = saved_at(dir.path(), "/config/checkout", live.revision()).await;
    first.close().await.unwrap();
    server.kill().await.unwrap();

    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
    let second = Coord::connect(config(&server, dir.path())).await.unwrap();
    let error = second.live::<Checkout>().await.unwrap_err();
    assert!(
        matches!(error, Error::Unavailable { ref reason, .. } if reason.contains("no usable snapshot of `/config/checkout`")),
        "{error}"
    );

    server.restart().await.unwrap();
    let live = second
        .live::<Checkout>()
        .await
        .expect("with etcd up, it binds from etcd");
    assert_eq!(live.load().rate_limit.per_second, 10);
    assert_eq!(live.staleness(), None);
    // And the bind writes a good snapshot over the cut one.
    eventually(WAIT, "a good snapshot replaces the cut one", || async {
        snapshot_file(dir.path(), "/config/checkout").is_some()
    })
    .await;
    second.close().await.unwrap();
}

/// Another prefix's file under this prefix's name (copied by hand, say) is not trusted, though
/// it is a well-formed snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_prefixs_snapshot_is_ignored() {
    let mut server = etcd().await;
    let dir = tempfile::tempdir().unwrap();
    seed_checkout(&server);
    put(&server, "/config/pair/a", "1");
    put(&server, "/config/pair/b", "1");
    let first = Coord::connect(config(&server, dir.path())).await.unwrap();
    let checkout = first.live::<Checkout>().await.unwrap();
    let pair = first.live::<Pair>().await.unwrap();
    let checkout_file = saved_at(dir.path(), "/config/checkout", checkout.revision()).await;
    let pair_file = saved_at(dir.path(), "/config/pair", pair.revision()).await;
    first.close().await.unwrap();
    server.kill().await.unwrap();

    std::fs::rename(&pair_file, &checkout_file).unwrap();
    let second = Coord::connect(config(&server, dir.path())).await.unwrap();
    let error = second.live::<Checkout>().await.unwrap_err();
    assert!(
        matches!(error, Error::Unavailable { ref reason, .. } if reason.contains("no usable snapshot")),
        "{error}"
    );
    // A file of some other program under the name: ignored too.
    std::fs::write(&checkout_file, br#"{"timeout_secs": 99}"#).unwrap();
    assert!(second.live::<Checkout>().await.is_err());
    second.close().await.unwrap();
}

/// Without a snapshot, a bind while etcd is down fails, and says what was missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_snapshot_live_fails_with_a_clear_error() {
    let mut server = etcd().await;
    let dir = tempfile::tempdir().unwrap();
    server.kill().await.unwrap();

    let coord = Coord::connect(config(&server, dir.path()))
        .await
        .expect("with a snapshot dir, connect succeeds while etcd is down");
    let error = coord.live::<Checkout>().await.unwrap_err();
    let Error::Unavailable {
        ref endpoints,
        ref reason,
    } = error
    else {
        panic!("not Unavailable: {error:?}");
    };
    assert!(endpoints.contains(&server.endpoint()), "{endpoints}");
    assert!(
        reason.contains("no usable snapshot of `/config/checkout`")
            && reason.contains(&dir.path().display().to_string()),
        "{reason}"
    );
    coord.close().await.unwrap();

    // Without a snapshot dir, connect itself fails fast, as it always did.
    let error = Coord::connect(server.client_config()).await.unwrap_err();
    assert!(matches!(error, Error::Unavailable { .. }), "{error}");
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The reason `connect` refused the snapshot directory; panics on anything else.
fn refused_dir(result: coord::Result<Coord>) -> String {
    match result {
        Err(Error::InvalidArgument { field, reason }) if field == "snapshot_dir" => reason,
        Err(other) => panic!("expected InvalidArgument on snapshot_dir, got {other:?}"),
        Ok(_) => panic!("connect accepted the directory"),
    }
}

/// The snapshots hold config values as stored, secrets included: `connect` creates the
/// directory 0700 and a `Live` writes its file 0600.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_snapshot_directory_is_created_0700_and_its_files_are_0600() {
    let server = etcd().await;
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("snapshots");
    seed_checkout(&server);
    let coord = Coord::connect(config(&server, &dir)).await.unwrap();
    assert_eq!(mode(&dir), 0o700, "created by connect, before any save");
    let live = coord.live::<Checkout>().await.unwrap();
    let file = saved_at(&dir, "/config/checkout", live.revision()).await;
    assert_eq!(mode(&file), 0o600);
    coord.close().await.unwrap();
}

/// A snapshot directory others may write into is refused by `connect` with an error naming
/// the field, the directory and the fix; done as told, the same config connects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_refuses_a_snapshot_dir_others_can_write_naming_it_and_the_fix() {
    let server = etcd().await;
    let dir = tempfile::tempdir().unwrap();
    chmod(dir.path(), 0o777);
    let result = Coord::connect(config(&server, dir.path())).await;
    let message = result.as_ref().err().map(ToString::to_string);
    let reason = refused_dir(result);
    let shown = dir.path().display();
    assert!(
        reason.contains(&format!(
            "`{shown}` is writable by group and others (mode 0777)"
        )),
        "{reason}"
    );
    assert!(reason.contains(&format!("`chmod 700 {shown}`")), "{reason}");
    assert!(
        message.is_some_and(|m| m.starts_with("invalid argument `snapshot_dir`")),
        "the message names the field"
    );

    chmod(dir.path(), 0o700);
    let coord = Coord::connect(config(&server, dir.path()))
        .await
        .expect("a private directory is accepted");
    coord.close().await.unwrap();
}

/// A snapshot directory of another user is refused by `connect` (the tests run as root, who
/// can give one away).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_refuses_a_snapshot_dir_owned_by_another_user() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: only root can chown a directory to another user");
        return;
    }
    let server = etcd().await;
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(dir.path(), Some(65534), None).unwrap();
    let reason = refused_dir(Coord::connect(config(&server, dir.path())).await);
    assert!(
        reason.contains("is owned by uid 65534, not by this process's user (uid 0)"),
        "{reason}"
    );
    assert!(
        reason.contains(&dir.path().display().to_string()),
        "{reason}"
    );
}

/// A file where the directory should be is refused at `connect`, not at the first save.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_refuses_a_file_in_place_of_the_snapshot_dir() {
    let server = etcd().await;
    let parent = tempfile::tempdir().unwrap();
    let file = parent.path().join("snapshots");
    std::fs::write(&file, b"").unwrap();
    let reason = refused_dir(Coord::connect(config(&server, &file)).await);
    assert!(reason.contains("is not a directory"), "{reason}");
}

/// `/proc` is a directory of root's that nobody, root included, can create a file in; a
/// path below it cannot even be created. Both are refused at `connect`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_refuses_a_snapshot_dir_under_proc() {
    let server = etcd().await;
    let reason = refused_dir(Coord::connect(config(&server, Path::new("/proc"))).await);
    // Root owns /proc and may not write it; another user is refused for not owning it.
    assert!(
        reason.contains("cannot be written") || reason.contains("is owned by uid 0"),
        "{reason}"
    );
    let below = PathBuf::from(format!("/proc/coord-snapshots-{}", std::process::id()));
    let reason = refused_dir(Coord::connect(config(&server, &below)).await);
    assert!(reason.contains("cannot be created"), "{reason}");
    assert!(reason.contains(&below.display().to_string()), "{reason}");
}

/// Makes a directory immutable (`chattr +i`) for as long as it lives: the one way to make a
/// directory root cannot write into without mounting anything. `None` where chattr fails
/// (not root, a file system without attributes).
struct Immutable(PathBuf);

impl Immutable {
    fn set(dir: &Path) -> Option<Immutable> {
        let status = std::process::Command::new("chattr")
            .arg("+i")
            .arg(dir)
            .status()
            .ok()?;
        status.success().then(|| Immutable(dir.to_owned()))
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chattr")
            .arg("-i")
            .arg(&self.0)
            .status();
    }
}

/// A directory that is ours and private but takes no file (immutable here; a read-only
/// mount is the same to coord) is refused at `connect`: the mode bits say nothing to root,
/// so `connect` proves it by creating a file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_refuses_a_snapshot_dir_it_cannot_write() {
    let server = etcd().await;
    let dir = tempfile::tempdir().unwrap();
    chmod(dir.path(), 0o700);
    let Some(_immutable) = Immutable::set(dir.path()) else {
        eprintln!("skipped: chattr +i is not available here");
        return;
    };
    let reason = refused_dir(Coord::connect(config(&server, dir.path())).await);
    assert!(
        reason.contains(&format!("`{}` cannot be written", dir.path().display())),
        "{reason}"
    );
    assert!(reason.contains("writable file system"), "{reason}");
}

/// The process-wide debugging recorder of this test binary, installed by the first test that
/// asks (the others record into it too; a test reads only its own prefix's series).
fn recorder() -> &'static metrics_util::debugging::Snapshotter {
    static SNAPSHOTTER: std::sync::OnceLock<metrics_util::debugging::Snapshotter> =
        std::sync::OnceLock::new();
    SNAPSHOTTER.get_or_init(|| {
        let recorder = metrics_util::debugging::DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        recorder
            .install()
            .expect("the only recorder of this test binary");
        snapshotter
    })
}

/// Saves of a snapshot directory that became unusable after `connect` (here: removed and a
/// file put in its place) are listed in `health()` naming the file and the error, counted in
/// `coord_snapshot_save_failures_total`, and retried: once the directory is back, the newest
/// values are written and the entry leaves `health()`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_saves_show_in_health_and_the_metric_until_a_save_succeeds() {
    use metrics_util::debugging::DebugValue;

    const PREFIX: &str = "/config/save-failures";
    let snapshotter = recorder();
    let mut failures_seen = 0;
    let mut failures = move || {
        for (key, _, _, value) in snapshotter.snapshot().into_vec() {
            let ours = key.key().name() == "coord_snapshot_save_failures_total"
                && key
                    .key()
                    .labels()
                    .any(|l| l.key() == "prefix" && l.value() == PREFIX);
            if let (true, DebugValue::Counter(n)) = (ours, value) {
                failures_seen += n;
            }
        }
        failures_seen
    };

    let server = etcd().await;
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("snapshots");
    put(
        &server,
        &format!("{PREFIX}/rate-limit"),
        r#"{"per_second":10,"burst":5}"#,
    );
    let coord = Coord::connect(config(&server, &dir)).await.unwrap();
    let live = coord.live_at::<Checkout>(PREFIX).await.unwrap();
    let file = saved_at(&dir, PREFIX, live.revision()).await;
    assert!(coord.health().await.unwrap().failing_writes.is_empty());

    let moved = parent.path().join("moved");
    std::fs::rename(&dir, &moved).unwrap();
    std::fs::write(&dir, b"not a directory").unwrap();
    put(&server, &format!("{PREFIX}/timeout_secs"), "46");
    eventually(WAIT, "the failed save is in health()", || async {
        let health = coord.health().await.unwrap();
        health.failing_writes.iter().any(|w| {
            w.kind == coord::health::SNAPSHOT_SAVE
                && w.target == file.display().to_string()
                && w.error.to_lowercase().contains("not a directory")
        })
    })
    .await;
    assert!(coord.health().await.unwrap().is_healthy());
    assert!(failures() >= 1, "counted");
    // Retried meanwhile: counted again.
    let first = failures();
    eventually(WAIT, "the save is retried", || {
        let more = failures() > first;
        async move { more }
    })
    .await;

    std::fs::remove_file(&dir).unwrap();
    std::fs::rename(&moved, &dir).unwrap();
    eventually(WAIT, "a retry saves and health() is clear", || async {
        coord.health().await.unwrap().failing_writes.is_empty()
    })
    .await;
    let (_, json) = snapshot_file(&dir, PREFIX).unwrap();
    assert_eq!(json["revision"].as_i64(), Some(live.revision()));
    assert_eq!(live.load().timeout_secs, 46);
    coord.close().await.unwrap();
}

/// The raw value of `key` in a snapshot file's JSON, decoded, if it holds the key.
fn value_in(json: &serde_json::Value, key: &str) -> Option<String> {
    use base64::Engine;
    let text = json["values"][key].as_str()?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .ok()?;
    String::from_utf8(bytes).ok()
}

/// Waits until some snapshot file in `dir` holds `value` for `key`, whatever its name or
/// format.
async fn saved_value(dir: &Path, key: &str, value: &str) {
    eventually(
        WAIT,
        &format!("a snapshot holds {key} = {value}"),
        || async {
            std::fs::read_dir(dir).unwrap().any(|entry| {
                let path = entry.unwrap().path();
                std::fs::read(&path)
                    .ok()
                    .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
                    .is_some_and(|json| value_in(&json, key).as_deref() == Some(value))
            })
        },
    )
    .await;
}

const TIMEOUT_KEY: &str = "/config/checkout/timeout_secs";

/// Prod and staging (two etcd clusters) keep snapshots of the same prefix in one directory:
/// each, restarted with its etcd down, starts from its own values, never the other's (before
/// clusters were told apart, the last save of either won and prod served staging's values).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clusters_sharing_a_snapshot_dir_each_start_offline_from_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let mut prod = etcd().await;
    let mut staging = etcd().await;
    for (server, timeout) in [(&prod, "45"), (&staging, "99")] {
        seed_checkout(server);
        put(server, TIMEOUT_KEY, timeout);
    }
    // Prod saves first, staging after it.
    for (server, timeout) in [(&prod, "45"), (&staging, "99")] {
        let coord = Coord::connect(config(server, dir.path())).await.unwrap();
        let live = coord.live::<Checkout>().await.unwrap();
        assert_eq!(live.load().timeout_secs.to_string(), timeout);
        saved_value(dir.path(), TIMEOUT_KEY, timeout).await;
        coord.close().await.unwrap();
    }

    prod.kill().await.unwrap();
    let coord = Coord::connect(config(&prod, dir.path())).await.unwrap();
    let live = coord
        .live::<Checkout>()
        .await
        .expect("bound from prod's snapshot");
    assert!(live.staleness().is_some());
    assert_eq!(
        live.load().timeout_secs,
        45,
        "prod's value, not staging's 99"
    );
    coord.close().await.unwrap();

    staging.kill().await.unwrap();
    let coord = Coord::connect(config(&staging, dir.path())).await.unwrap();
    let live = coord
        .live::<Checkout>()
        .await
        .expect("bound from staging's snapshot");
    assert_eq!(
        live.load().timeout_secs,
        99,
        "staging's value, not prod's 45"
    );
    coord.close().await.unwrap();
}

/// Two clusters given one `cluster_name` (a misconfiguration offline start cannot see) share
/// a file; but a `Coord` that has reached its etcd knows its cluster ID, so when etcd goes
/// away a handle bound meanwhile does not start from the other cluster's snapshot: it fails
/// as without one, and the warning says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_connected_a_snapshot_of_another_cluster_under_the_same_name_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let named = |server: &EtcdServer| config(server, dir.path()).with_cluster_name("prod");
    let mut prod = etcd().await;
    let staging = etcd().await;
    for (server, timeout) in [(&prod, "45"), (&staging, "99")] {
        seed_checkout(server);
        put(server, TIMEOUT_KEY, timeout);
    }
    let coord = Coord::connect(named(&staging)).await.unwrap();
    let live = coord.live::<Checkout>().await.unwrap();
    assert_eq!(live.load().timeout_secs, 99);
    saved_value(dir.path(), TIMEOUT_KEY, "99").await;
    coord.close().await.unwrap();

    let coord = Coord::connect(named(&prod)).await.unwrap();
    prod.kill().await.unwrap();
    let error = coord.live::<Checkout>().await.unwrap_err();
    assert!(
        matches!(error, Error::Unavailable { ref reason, .. } if reason.contains("no usable snapshot of `/config/checkout`")),
        "staging's snapshot must not be served to prod: {error}"
    );
    coord.close().await.unwrap();
}
