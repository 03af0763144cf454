//! Local file mode: a TOML, YAML or JSON file seeds the embedded store, its saves (by atomic
//! rename or in place) reach `Live` handles as single transactions, a bad save keeps the last
//! good state and says where it is wrong, and locks, IDs, the registry and elections work as on
//! any store.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use coord::store::file::{FileErrorKind, FileOptions, LocalFile, QUIET_PERIOD};
use coord::store::KeyRange;
use coord::{ClientConfig, Coord, CoordConfig, Error, Instance, Live};
use serde::{Deserialize, Serialize};
use serde_json::json;

use common::eventually;

/// Generous: a reload takes the debounce (100 ms), the quiet period (500 ms) and a read; a
/// loaded CI machine may be slow.
const WITHIN: Duration = Duration::from_secs(10);

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct RateLimit {
    per_sec: u32,
    burst: u32,
}

#[derive(CoordConfig, Debug, Clone, PartialEq)]
#[coord(prefix = "/config/checkout")]
struct Checkout {
    #[coord(default = 30)]
    timeout_secs: u64,
    rate_limit: RateLimit,
    #[coord(default)]
    region: String,
}

#[derive(CoordConfig, Debug, Clone, PartialEq)]
#[coord(prefix = "/config/checkout/db")]
struct Db {
    url: String,
}

fn checkout_toml(timeout_secs: u64, per_sec: u32, burst: u32) -> String {
    format!(
        r#"["/config/checkout"]
timeout_secs = {timeout_secs}
rate_limit = {{ per_sec = {per_sec}, burst = {burst} }}

["/config/checkout/db"]
url = "postgres://localhost/checkout"
"#
    )
}

fn checkout(timeout_secs: u64, per_sec: u32, burst: u32) -> Checkout {
    Checkout {
        timeout_secs,
        rate_limit: RateLimit { per_sec, burst },
        region: String::new(),
    }
}

/// A temp dir holding `name` with `text`.
fn file_with(name: &str, text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

/// How most editors save: write a temp file beside it, then rename it over the file.
fn save_by_rename(path: &Path, text: &str) {
    let temp = path.with_extension("tmp~");
    std::fs::write(&temp, text).unwrap();
    std::fs::rename(&temp, path).unwrap();
}

/// How some editors save: truncate the file and write it again.
fn save_in_place(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

fn local_file(coord: &Coord) -> &LocalFile {
    coord.local_file().expect("a Coord from a file has one")
}

async fn until_live_is<T: CoordConfig + PartialEq + std::fmt::Debug>(live: &Live<T>, want: &T) {
    eventually(WITHIN, &format!("the Live becomes {want:?}"), || async {
        *live.load_full() == *want
    })
    .await;
}

async fn until_file_error(file: &LocalFile) -> coord::store::file::FileError {
    eventually(WITHIN, "the bad save is reported", || async {
        file.last_error().is_some()
    })
    .await;
    file.last_error().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_toml_file_seeds_the_store_under_its_prefixes() {
    let (_dir, path) = file_with("coord.toml", &checkout_toml(45, 100, 20));
    let coord = Coord::from_file(&path).await.unwrap();
    let config = coord.config();
    assert_eq!(
        config
            .get::<u64>("/config/checkout/timeout_secs")
            .await
            .unwrap(),
        45
    );
    assert_eq!(
        config
            .get::<serde_json::Value>("/config/checkout/rate_limit")
            .await
            .unwrap(),
        json!({"per_sec": 100, "burst": 20})
    );
    assert_eq!(
        config
            .get::<String>("/config/checkout/db/url")
            .await
            .unwrap(),
        "postgres://localhost/checkout"
    );
    assert_eq!(
        config.list("/config/").await.unwrap(),
        [
            "/config/checkout/db/url",
            "/config/checkout/rate_limit",
            "/config/checkout/timeout_secs"
        ]
    );
    let file = local_file(&coord);
    assert_eq!(file.path(), path);
    assert!(file.last_error().is_none());
    assert!(file.is_watching());
    coord.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn toml_yaml_and_json_files_seed_the_same_config() {
    let yaml = r#"
/config/checkout:
  timeout_secs: 45
  rate_limit: { per_sec: 100, burst: 20 }
"/config/checkout/db":
  url: postgres://localhost/checkout
"#;
    let json = r#"{
  "/config/checkout": {"timeout_secs": 45, "rate_limit": {"per_sec": 100, "burst": 20}},
  "/config/checkout/db": {"url": "postgres://localhost/checkout"}
}"#;
    let files = [
        ("coord.toml", checkout_toml(45, 100, 20)),
        ("coord.yaml", yaml.to_owned()),
        ("coord.yml", yaml.to_owned()),
        ("coord.json", json.to_owned()),
    ];
    for (name, text) in files {
        let (_dir, path) = file_with(name, &text);
        let coord = Coord::from_file(&path).await.unwrap();
        let live = coord.live::<Checkout>().await.unwrap();
        assert_eq!(*live.load(), checkout(45, 100, 20), "{name}");
        let db = coord.live::<Db>().await.unwrap();
        assert_eq!(db.load().url, "postgres://localhost/checkout", "{name}");
        coord.close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_reloads_when_the_file_is_replaced_by_rename() {
    let (_dir, path) = file_with("coord.toml", &checkout_toml(45, 100, 20));
    let coord = Coord::from_file(&path).await.unwrap();
    let live = coord.live::<Checkout>().await.unwrap();
    assert_eq!(*live.load(), checkout(45, 100, 20));

    save_by_rename(&path, &checkout_toml(60, 100, 20));
    until_live_is(&live, &checkout(60, 100, 20)).await;
    // And again: the watch follows the new file, not the inode the first rename replaced.
    save_by_rename(&path, &checkout_toml(75, 100, 20));
    until_live_is(&live, &checkout(75, 100, 20)).await;
    assert!(local_file(&coord).last_error().is_none());
    coord.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_reloads_when_the_file_is_rewritten_in_place() {
    let (_dir, path) = file_with("coord.toml", &checkout_toml(45, 100, 20));
    let coord = Coord::from_file(&path).await.unwrap();
    let live = coord.live::<Checkout>().await.unwrap();

    save_in_place(&path, &checkout_toml(50, 100, 20));
    until_live_is(&live, &checkout(50, 100, 20)).await;
    save_in_place(&path, &checkout_toml(55, 100, 20));
    until_live_is(&live, &checkout(55, 100, 20)).await;
    coord.close().await.unwrap();
}

/// Publishes `text` as `app.toml` in a ConfigMap volume at `mount` the way kubelet's
/// AtomicWriter does: the files go into a new timestamped directory `..{stamp}`, a symlink
/// `..data_tmp` to it is renamed over `..data` (an atomic swap), and the old directory is
/// removed. The first time, the user-visible `app.toml -> ..data/app.toml` is created too.
#[cfg(unix)]
fn kubelet_publish(mount: &Path, stamp: &str, text: &str, old_stamp: Option<&str>) {
    let new_dir = mount.join(format!("..{stamp}"));
    std::fs::create_dir(&new_dir).unwrap();
    std::fs::write(new_dir.join("app.toml"), text).unwrap();
    std::os::unix::fs::symlink(format!("..{stamp}"), mount.join("..data_tmp")).unwrap();
    std::fs::rename(mount.join("..data_tmp"), mount.join("..data")).unwrap();
    let visible = mount.join("app.toml");
    if std::fs::symlink_metadata(&visible).is_err() {
        std::os::unix::fs::symlink("..data/app.toml", &visible).unwrap();
    }
    if let Some(old) = old_stamp {
        std::fs::remove_dir_all(mount.join(format!("..{old}"))).unwrap();
    }
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubernetes_configmap_update_by_symlink_swap_reaches_the_live() {
    let mount = tempfile::tempdir().unwrap();
    let stamps = [
        "2026_12_07_00_00_00.123",
        "2026_12_07_00_05_00.456",
        "2026_12_07_00_10_00.789",
    ];
    kubelet_publish(mount.path(), stamps[0], &checkout_toml(45, 100, 20), None);
    let coord = Coord::from_file(mount.path().join("app.toml"))
        .await
        .unwrap();
    let live = coord.live::<Checkout>().await.unwrap();
    assert_eq!(*live.load(), checkout(45, 100, 20));

    // No event names `app.toml`: only `..data_tmp`, `..data` and the timestamped directories.
    kubelet_publish(
        mount.path(),
        stamps[1],
        &checkout_toml(60, 100, 20),
        Some(stamps[0]),
    );
    until_live_is(&live, &checkout(60, 100, 20)).await;
    // And again: the second swap replaces the directory the first one led to.
    kubelet_publish(
        mount.path(),
        stamps[2],
        &checkout_toml(75, 100, 20),
        Some(stamps[1]),
    );
    until_live_is(&live, &checkout(75, 100, 20)).await;
    assert_eq!(local_file(&coord).last_error(), None);
    coord.close().await.unwrap();
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_save_of_the_file_a_symlink_leads_to_in_another_directory_reaches_the_live() {
    let root = tempfile::tempdir().unwrap();
    let (app, shared) = (root.path().join("app"), root.path().join("shared"));
    std::fs::create_dir(&app).unwrap();
    std::fs::create_dir(&shared).unwrap();
    let target = shared.join("checkout.toml");
    std::fs::write(&target, checkout_toml(45, 100, 20)).unwrap();
    std::os::unix::fs::symlink(&target, app.join("coord.toml")).unwrap();
    let coord = Coord::from_file(app.join("coord.toml")).await.unwrap();
    let live = coord.live::<Checkout>().await.unwrap();

    // Nothing happens in `app/`: the saves are in `shared/`.
    save_by_rename(&target, &checkout_toml(60, 100, 20));
    until_live_is(&live, &checkout(60, 100, 20)).await;
    save_in_place(&target, &checkout_toml(65, 100, 20));
    until_live_is(&live, &checkout(65, 100, 20)).await;
    coord.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_save_that_does_not_parse_keeps_the_last_value_and_says_line_and_column() {
    let (_dir, path) = file_with("coord.toml", &checkout_toml(45, 100, 20));
    let coord = Coord::from_file(&path).await.unwrap();
    let live = coord.live::<Checkout>().await.unwrap();
    let file = local_file(&coord);
    let revision = file.revision();

    // Line 2, column 16: the value is missing.
    save_by_rename(
        &path,
        "[\"/config/checkout\"]\ntimeout_secs = \nrate_limit = { per_sec = 1, burst = 1 }\n",
    );
    let error = until_file_error(file).await;
    assert!(matches!(error.kind, FileErrorKind::Syntax(_)), "{error:?}");
    let position = error.position.expect("a syntax error has a position");
    assert_eq!((position.line, position.column), (2, 16), "{error}");
    assert_eq!(error.path, path);
    assert!(error.to_string().contains("line 2, column 16"), "{error}");

    // Nothing of it was applied.
    assert_eq!(*live.load(), checkout(45, 100, 20));
    assert_eq!(file.revision(), revision);
    assert_eq!(
        coord
            .config()
            .get::<u64>("/config/checkout/timeout_secs")
            .await
            .unwrap(),
        45
    );
    assert!(
        live.last_error().is_none(),
        "the store never saw the bad save"
    );

    // The next good save heals it.
    save_by_rename(&path, &checkout_toml(46, 100, 20));
    until_live_is(&live, &checkout(46, 100, 20)).await;
    assert_eq!(file.last_error(), None);
    coord.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_save_that_breaks_the_layout_keeps_the_last_good_state_and_names_it() {
    let (_dir, path) = file_with("coord.toml", &checkout_toml(45, 100, 20));
    let coord = Coord::from_file(&path).await.unwrap();
    let live = coord.live::<Checkout>().await.unwrap();
    let file = local_file(&coord);

    // A valid TOML file whose first table is not a key prefix; the other changes nothing.
    save_in_place(
        &path,
        &format!(
            "[checkout]\ntimeout_secs = 1\n\n{}",
            checkout_toml(99, 1, 1)
        ),
    );
    let error = until_file_error(file).await;
    assert_eq!(
        error.kind,
        FileErrorKind::NotAPrefix {
            name: "checkout".into()
        }
    );
    assert_eq!(*live.load(), checkout(45, 100, 20));

    save_in_place(&path, "\"/config/checkout\" = 5\n");
    eventually(WITHIN, "the second bad save is reported", || async {
        matches!(file.last_error(), Some(e) if matches!(e.kind, FileErrorKind::NotATable { .. }))
    })
    .await;
    assert_eq!(
        file.last_error().unwrap().kind,
        FileErrorKind::NotATable {
            name: "/config/checkout".into()
        }
    );
    assert_eq!(*live.load(), checkout(45, 100, 20));
    coord.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_save_that_repeats_a_prefix_or_a_key_is_refused_at_its_line_in_yaml_and_json() {
    let yaml_ok =
        "/config/checkout:\n  timeout_secs: 45\n  rate_limit: {per_sec: 100, burst: 20}\n";
    let json_ok = r#"{"/config/checkout": {"timeout_secs": 45, "rate_limit": {"per_sec": 100, "burst": 20}}}"#;
    // Each parser alone would keep the last: the first table (or value) would be dropped.
    let cases = [
        (
            "coord.yaml",
            yaml_ok,
            "/config/checkout:\n  timeout_secs: 60\n/config/checkout:\n  rate_limit: {per_sec: 1, burst: 1}\n",
            3,
            "/config/checkout",
        ),
        (
            "coord.yaml",
            yaml_ok,
            "/config/checkout:\n  timeout_secs: 60\n  rate_limit: {per_sec: 1, burst: 1}\n  timeout_secs: 61\n",
            4,
            "timeout_secs",
        ),
        (
            "coord.json",
            json_ok,
            "{\"/config/checkout\": {\"timeout_secs\": 60},\n \"/config/checkout\": {\"rate_limit\": {\"per_sec\": 1, \"burst\": 1}}}",
            2,
            "/config/checkout",
        ),
        (
            "coord.json",
            json_ok,
            "{\"/config/checkout\": {\n  \"timeout_secs\": 60,\n  \"rate_limit\": {\"per_sec\": 1, \"burst\": 1},\n  \"timeout_secs\": 61}}",
            4,
            "timeout_secs",
        ),
    ];
    for (name, first, save, line, repeated) in cases {
        let (_dir, path) = file_with(name, first);
        let coord = Coord::from_file(&path).await.unwrap();
        let live = coord.live::<Checkout>().await.unwrap();
        let file = local_file(&coord);
        let revision = file.revision();

        save_by_rename(&path, save);
        let error = until_file_error(file).await;
        assert!(matches!(error.kind, FileErrorKind::Syntax(_)), "{error:?}");
        assert_eq!(
            error.position.map(|p| p.line),
            Some(line),
            "{name}: {error}"
        );
        assert!(
            error
                .to_string()
                .contains(&format!("duplicate key `{repeated}`")),
            "{error}"
        );
        assert_eq!(*live.load(), checkout(45, 100, 20), "{name}: {save}");
        assert_eq!(file.revision(), revision);
        coord.close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_yaml_merge_key_lends_its_mapping_to_another_prefix() {
    let yaml = "\
/config/shared: &shared
  timeout_secs: 45
  rate_limit: {per_sec: 100, burst: 20}
/config/checkout:
  <<: *shared
  region: eu-1
";
    let (_dir, path) = file_with("coord.yaml", yaml);
    let coord = Coord::from_file(&path).await.unwrap();
    let live = coord.live::<Checkout>().await.unwrap();
    assert_eq!(
        *live.load(),
        Checkout {
            region: "eu-1".into(),
            ..checkout(45, 100, 20)
        }
    );
    assert!(
        coord
            .config()
            .list("/config/checkout/")
            .await
            .unwrap()
            .iter()
            .all(|k| !k.contains("<<")),
        "no literal `<<` key"
    );
    coord.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_save_keeps_the_last_good_state_and_is_reported() {
    let yaml = "/config/checkout:\n  timeout_secs: 45\n  rate_limit: {per_sec: 100, burst: 20}\n";
    let cases = [
        ("coord.toml", checkout_toml(45, 100, 20), ""),
        ("coord.toml", checkout_toml(45, 100, 20), "  \n\n\t\n"),
        ("coord.toml", checkout_toml(45, 100, 20), "# all of it, gone\n"),
        // A save cut short after its first line lays out no key either.
        ("coord.toml", checkout_toml(45, 100, 20), "[\"/config/checkout\"]\n"),
        ("coord.yaml", yaml.to_owned(), ""),
        ("coord.yaml", yaml.to_owned(), "# nothing here\n"),
        ("coord.yaml", yaml.to_owned(), "---\n"),
        ("coord.json", json!({"/config/checkout": {"timeout_secs": 45, "rate_limit": {"per_sec": 100, "burst": 20}}}).to_string(), "{}"),
    ];
    for (name, first, save) in cases {
        let (_dir, path) = file_with(name, &first);
        let coord = Coord::from_file(&path).await.unwrap();
        let live = coord.live::<Checkout>().await.unwrap();
        let file = local_file(&coord);
        let revision = file.revision();
        let keys = coord.config().list("/config/").await.unwrap();

        save_in_place(&path, save);
        let error = until_file_error(file).await;
        assert_eq!(error.kind, FileErrorKind::Empty, "{name}: {save:?}");
        assert_eq!(error.path, path);
        assert!(error.to_string().contains("allow_empty"), "{error}");
        assert_eq!(*live.load(), checkout(45, 100, 20), "{name}: {save:?}");
        assert_eq!(file.revision(), revision);
        assert_eq!(
            coord.config().list("/config/").await.unwrap(),
            keys,
            "{name}: {save:?}: the keys are kept"
        );
        coord.close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_save_deletes_every_key_with_allow_empty() {
    for (name, first) in [
        ("coord.toml", checkout_toml(45, 100, 20)),
        (
            "coord.yaml",
            "/config/checkout:\n  timeout_secs: 45\n".to_owned(),
        ),
    ] {
        let (_dir, path) = file_with(name, &first);
        let coord = Coord::from_file(&path).await.unwrap();
        let file = local_file(&coord);
        assert!(!file.options().allow_empty, "refused unless asked for");
        file.set_options(FileOptions::default().with_allow_empty(true));
        let revision = file.revision();
        coord
            .config()
            .set("/config/checkout/region", &"eu-1")
            .await
            .unwrap();

        save_in_place(&path, "# emptied on purpose\n");
        eventually(WITHIN, "the file's keys are deleted", || async {
            coord.config().list("/config/").await.unwrap() == ["/config/checkout/region"]
        })
        .await;
        assert!(file.revision() > revision, "{name}");
        assert_eq!(file.last_error(), None, "{name}");
        coord.close().await.unwrap();
    }
}

/// The options can come with the `ClientConfig` (and so from a config file) of `connect`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_options_come_from_the_client_config() {
    let (_dir, path) = file_with("coord.toml", &checkout_toml(45, 100, 20));
    let config: ClientConfig = serde_json::from_value(serde_json::json!({
        "file": path,
        "fileAllowEmpty": true,
        "file_quiet_period": "200ms",
    }))
    .unwrap();
    let coord = Coord::connect(config).await.unwrap();
    let file = local_file(&coord);
    assert_eq!(
        file.options(),
        FileOptions::default()
            .with_allow_empty(true)
            .with_quiet_period(Duration::from_millis(200))
    );
    save_in_place(&path, "");
    eventually(WITHIN, "the empty save is applied", || async {
        coord.config().list("/config/").await.unwrap().is_empty()
    })
    .await;
    coord.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_empty_when_opened_loads_and_its_first_keys_apply() {
    let (_dir, path) = file_with("coord.toml", "");
    let coord = Coord::from_file(&path).await.unwrap();
    let file = local_file(&coord);
    assert_eq!(file.revision(), 1);
    // Still empty: nothing to delete, so nothing to refuse.
    save_in_place(&path, "# soon\n");
    save_by_rename(&path, &checkout_toml(45, 100, 20));
    let live_config = coord.config();
    eventually(WITHIN, "the first keys are applied", || async {
        live_config.list("/config/").await.unwrap().len() == 3
    })
    .await;
    assert_eq!(file.last_error(), None);
    coord.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_key_save_lands_whole_in_one_revision() {
    let (_dir, path) = file_with("coord.toml", &checkout_toml(45, 100, 20));
    let coord = Coord::from_file(&path).await.unwrap();
    let live = coord.live::<Checkout>().await.unwrap();
    let before = checkout(45, 100, 20);
    let after = checkout(90, 200, 40);
    assert_eq!(*live.load(), before);

    // Every value the handle publishes, until the new one.
    let mut values = live.subscribe();
    let want = after.clone();
    let seen = tokio::spawn(async move {
        let mut seen: Vec<Arc<Checkout>> = Vec::new();
        while values.changed().await.is_ok() {
            let value = Arc::clone(&values.borrow_and_update());
            let done = *value == want;
            seen.push(value);
            if done {
                break;
            }
        }
        seen
    });
    let mut events = coord
        .store()
        .watch(&KeyRange::prefix("/config/checkout/"), 0)
        .await
        .unwrap();

    save_by_rename(&path, &checkout_toml(90, 200, 40));
    let seen = tokio::time::timeout(WITHIN, seen)
        .await
        .expect("the save reaches the Live")
        .unwrap();
    for value in &seen {
        assert!(
            **value == before || **value == after,
            "a half-applied save was seen: {value:?}"
        );
    }
    assert_eq!(**seen.last().unwrap(), after);

    // Both keys changed in one store revision, which the watch delivered as one batch.
    let batch = loop {
        let response = tokio::time::timeout(WITHIN, futures::StreamExt::next(&mut events))
            .await
            .expect("the save's events")
            .unwrap()
            .unwrap();
        if !response.is_progress() {
            break response;
        }
    };
    let mut keys: Vec<&str> = batch.events.iter().map(|e| e.kv.key.as_str()).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "/config/checkout/rate_limit",
            "/config/checkout/timeout_secs"
        ]
    );
    let file = local_file(&coord);
    assert_eq!(file.revision(), batch.revision);
    assert_eq!(live.revision(), batch.revision);
    for key in [
        "/config/checkout/rate_limit",
        "/config/checkout/timeout_secs",
    ] {
        let (kv, _) = coord.store().get(key).await.unwrap();
        assert_eq!(kv.unwrap().mod_revision, batch.revision, "{key}");
    }
    // The unchanged key was not written again.
    let (db, _) = coord.store().get("/config/checkout/db/url").await.unwrap();
    assert!(db.unwrap().mod_revision < batch.revision);
    coord.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_save_written_in_two_parts_400ms_apart_is_applied_whole() {
    let (_dir, path) = file_with("coord.toml", &checkout_toml(45, 100, 20));
    let coord = Coord::from_file(&path).await.unwrap();
    let live = coord.live::<Checkout>().await.unwrap();
    let before = checkout(45, 100, 20);
    let whole = Checkout {
        region: "eu-1".into(),
        ..checkout(90, 200, 40)
    };
    let (db, _) = coord.store().get("/config/checkout/db/url").await.unwrap();
    let db_revision = db.unwrap().mod_revision;

    // Every value the handle publishes, until the whole save.
    let mut values = live.subscribe();
    let want = whole.clone();
    let seen = tokio::spawn(async move {
        let mut seen: Vec<Arc<Checkout>> = Vec::new();
        while values.changed().await.is_ok() {
            let value = Arc::clone(&values.borrow_and_update());
            let done = *value == want;
            seen.push(value);
            if done {
                break;
            }
        }
        seen
    });

    // The first part alone is a complete TOML file (its lines are whole): no parse error can
    // tell that it is cut short, and applied it would delete the db table's key.
    let first =
        "[\"/config/checkout\"]\ntimeout_secs = 90\nrate_limit = { per_sec = 200, burst = 40 }\n";
    let second =
        "region = \"eu-1\"\n\n[\"/config/checkout/db\"]\nurl = \"postgres://localhost/checkout\"\n";
    let mut writer = std::fs::File::create(&path).unwrap();
    std::io::Write::write_all(&mut writer, first.as_bytes()).unwrap();
    // The writer's pause is the case under test, not a wait for anything: shorter than the
    // quiet period, so the first part alone must not be read.
    let pause = Duration::from_millis(400);
    assert!(pause < QUIET_PERIOD);
    tokio::time::sleep(pause).await;
    std::io::Write::write_all(&mut writer, second.as_bytes()).unwrap();
    drop(writer);

    let seen = tokio::time::timeout(WITHIN, seen)
        .await
        .expect("the whole save reaches the Live")
        .unwrap();
    for value in &seen {
        assert!(
            **value == before || **value == whole,
            "the first part alone was applied: {value:?}"
        );
    }
    assert_eq!(**seen.last().unwrap(), whole);
    let (db, _) = coord.store().get("/config/checkout/db/url").await.unwrap();
    assert_eq!(
        db.unwrap().mod_revision,
        db_revision,
        "the db key was never deleted"
    );
    assert_eq!(local_file(&coord).last_error(), None);
    coord.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_removed_from_the_file_is_deleted_and_its_field_falls_back() {
    let text = format!(
        "{}\n[\"/config/extra\"]\nflag = true\n",
        checkout_toml(45, 100, 20)
    );
    let (_dir, path) = file_with("coord.toml", &text);
    let coord = Coord::from_file(&path).await.unwrap();
    let live = coord.live::<Checkout>().await.unwrap();
    assert_eq!(live.load().timeout_secs, 45);
    // A key the program wrote itself, which no version of the file names.
    coord
        .config()
        .set("/config/checkout/region", &"eu-1")
        .await
        .unwrap();
    until_live_is(
        &live,
        &Checkout {
            region: "eu-1".into(),
            ..checkout(45, 100, 20)
        },
    )
    .await;

    // timeout_secs and the whole /config/extra table are gone from the file.
    save_by_rename(
        &path,
        "[\"/config/checkout\"]\nrate_limit = { per_sec = 100, burst = 20 }\n",
    );
    until_live_is(
        &live,
        &Checkout {
            region: "eu-1".into(),
            ..checkout(30, 100, 20)
        },
    )
    .await;
    let config = coord.config();
    for gone in [
        "/config/checkout/timeout_secs",
        "/config/extra/flag",
        "/config/checkout/db/url",
    ] {
        assert!(
            matches!(
                config.get::<serde_json::Value>(gone).await,
                Err(Error::NotFound { .. })
            ),
            "{gone} should be deleted"
        );
    }
    assert_eq!(
        config
            .get::<String>("/config/checkout/region")
            .await
            .unwrap(),
        "eu-1",
        "a save leaves the keys the file never named alone"
    );
    coord.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_works_in_file_mode() {
    let (_dir, path) = file_with("coord.toml", &checkout_toml(45, 100, 20));
    let coord = Coord::from_file(&path).await.unwrap();
    let ttl = Duration::from_secs(30);
    let guard = coord
        .locks()
        .acquire("/locks/file-mode", ttl)
        .await
        .unwrap();
    assert!(guard.key().starts_with("/locks/file-mode/"));
    let first_token = guard.fencing_token();

    // Another holder in the same process waits its turn.
    let other = Coord::from_store(coord.store());
    match other.locks().try_acquire("/locks/file-mode", ttl).await {
        Err(Error::LockHeld { holder, .. }) => assert_eq!(holder, guard.key()),
        other => panic!("expected LockHeld, got {other:?}"),
    }
    let waiter = tokio::spawn({
        let locks = other.locks();
        async move { locks.acquire("/locks/file-mode", ttl).await }
    });
    guard.unlock().await.unwrap();
    let second = tokio::time::timeout(WITHIN, waiter)
        .await
        .expect("the waiter gets the lock")
        .unwrap()
        .unwrap();
    assert!(second.fencing_token() > first_token);
    second.unlock().await.unwrap();

    // A save of the file leaves the lock keys alone, and IDs work too.
    let ids = coord.ids("file-svc", 4).await.unwrap();
    let id = ids.acquire().await.unwrap();
    save_by_rename(&path, &checkout_toml(46, 100, 20));
    let live = coord.live::<Checkout>().await.unwrap();
    until_live_is(&live, &checkout(46, 100, 20)).await;
    let (kv, _) = coord.store().get(id.key()).await.unwrap();
    assert!(kv.is_some(), "the ID key survives a save");
    other.close().await.unwrap();
    coord.close().await.unwrap();
}

/// The watch's next event, within `WITHIN`.
async fn next_event<S>(events: &mut S, what: &str) -> coord::ServiceEvent
where
    S: futures::Stream<Item = coord::ServiceEvent> + Unpin,
{
    tokio::time::timeout(WITHIN, futures::StreamExt::next(events))
        .await
        .unwrap_or_else(|_| panic!("the watch yields {what} within {WITHIN:?}"))
        .expect("the watch is open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_and_an_election_work_in_file_mode_and_a_save_leaves_them_alone() {
    let (_dir, path) = file_with("coord.toml", &checkout_toml(45, 100, 20));
    let coord = Coord::from_file(&path).await.unwrap();
    let ttl = Duration::from_secs(30);
    let registry = coord.registry();
    let registration = registry
        .register(
            coord::ServiceInfo::new("checkout", "laptop-1", "127.0.0.1:7001"),
            ttl,
        )
        .await
        .unwrap();
    let mut events = registry.watch("checkout").await.unwrap();
    let first = next_event(&mut events, "the registration").await;
    assert!(
        matches!(first, coord::ServiceEvent::Registered(ref i) if i.id == "laptop-1"),
        "{first:?}"
    );

    // A second process's view in the same program: another Coord on the same store.
    let other = Coord::from_store(coord.store());
    let leadership = coord
        .election("/elect/file-mode")
        .ttl(ttl)
        .campaign("laptop-1")
        .await
        .unwrap();
    let rival = tokio::spawn({
        let election = other.election("/elect/file-mode").ttl(ttl);
        async move { election.campaign("laptop-2").await }
    });
    let leader = other.election("/elect/file-mode").leader().await.unwrap();
    assert_eq!(leader.map(|l| l.value), Some(b"laptop-1".to_vec()));

    // A save of the file touches neither the registration nor the leadership.
    save_by_rename(&path, &checkout_toml(46, 100, 20));
    let live = coord.live::<Checkout>().await.unwrap();
    until_live_is(&live, &checkout(46, 100, 20)).await;
    let found = other.registry().discover("checkout").await.unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].address, "127.0.0.1:7001");
    assert!(leadership.is_alive());
    assert!(!rival.is_finished(), "the rival still waits");

    // Resigning hands the leadership over; deregistering is seen by the watch.
    leadership.resign().await.unwrap();
    let second = tokio::time::timeout(WITHIN, rival)
        .await
        .expect("the rival becomes leader")
        .unwrap()
        .unwrap();
    assert!(second.revision() > 0);
    registration.deregister().await.unwrap();
    let gone = next_event(&mut events, "the deregistration").await;
    assert!(
        matches!(gone, coord::ServiceEvent::Unregistered(ref i) if i.id == "laptop-1"),
        "{gone:?}"
    );
    assert!(other
        .registry()
        .discover("checkout")
        .await
        .unwrap()
        .is_empty());
    second.resign().await.unwrap();
    other.close().await.unwrap();
    coord.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_config_with_a_file_connects_in_file_mode() {
    let (_dir, path) = file_with("coord.json", r#"{"/config/app": {"port": 8080}}"#);
    // Nothing listens there: file mode must not dial.
    let config = ClientConfig::profile("test")
        .with_endpoints(["http://127.0.0.1:1"])
        .with_instance(Instance::new("laptop-1"))
        .with_file(&path);
    let coord = Coord::connect(config).await.unwrap();
    assert!(coord.store().is_memory());
    assert_eq!(coord.instance().name, "laptop-1");
    assert_eq!(local_file(&coord).path(), path);
    assert_eq!(
        coord.client_config().and_then(|c| c.file.clone()),
        Some(path.clone())
    );
    assert_eq!(
        coord.config().get::<u16>("/config/app/port").await.unwrap(),
        8080
    );
    save_by_rename(&path, r#"{"/config/app": {"port": 9090}}"#);
    eventually(WITHIN, "the save reaches the store", || async {
        coord.config().get::<u16>("/config/app/port").await.ok() == Some(9090)
    })
    .await;
    coord.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_does_not_load_fails_to_open_naming_the_problem() {
    let (dir, path) = file_with("coord.yaml", "config:\n  port: 1\n");
    match Coord::from_file(&path).await {
        Err(Error::File(error)) => {
            assert_eq!(
                error.kind,
                FileErrorKind::NotAPrefix {
                    name: "config".into()
                }
            );
            assert!(error.to_string().contains("`config`"), "{error}");
        }
        other => panic!("expected a file error, got {other:?}"),
    }
    let missing = dir.path().join("missing.toml");
    match Coord::from_file(&missing).await {
        Err(Error::File(error)) => {
            assert!(matches!(error.kind, FileErrorKind::Read(_)), "{error:?}");
            assert_eq!(error.path, missing);
        }
        other => panic!("expected a file error, got {other:?}"),
    }
    let in_missing_dir = dir.path().join("nowhere").join("coord.toml");
    match Coord::from_file(&in_missing_dir).await {
        Err(Error::File(error)) => {
            assert!(matches!(error.kind, FileErrorKind::Read(_)), "{error:?}")
        }
        other => panic!("expected a file error, got {other:?}"),
    }
    let ini = dir.path().join("coord.ini");
    std::fs::write(&ini, "a = 1").unwrap();
    match Coord::from_file(&ini).await {
        Err(Error::File(error)) => assert_eq!(error.kind, FileErrorKind::UnknownFormat),
        other => panic!("expected a file error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_the_coord_stops_watching_the_file() {
    let (_dir, path) = file_with("coord.toml", &checkout_toml(45, 100, 20));
    let coord = Coord::from_file(&path).await.unwrap();
    let live = coord.live::<Checkout>().await.unwrap();
    let file = local_file(&coord).clone();
    coord.close().await.unwrap();
    eventually(WITHIN, "the watch stops", || async { !file.is_watching() }).await;

    // A save after the close changes nothing, even once a reload would have read it: a
    // second Coord still following the file is the witness that it would have.
    let witness = Coord::from_file(&path).await.unwrap();
    let witness_live = witness.live::<Checkout>().await.unwrap();
    save_by_rename(&path, &checkout_toml(60, 100, 20));
    until_live_is(&witness_live, &checkout(60, 100, 20)).await;
    assert_eq!(live.load().timeout_secs, 45);
    assert_eq!(file.last_error(), None);
    witness.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_coord_stops_watching_the_file() {
    let (_dir, path) = file_with("coord.toml", &checkout_toml(45, 100, 20));
    let coord = Coord::from_file(&path).await.unwrap();
    let file = local_file(&coord).clone();
    drop(coord);
    eventually(WITHIN, "the watch stops", || async { !file.is_watching() }).await;
}
