//! Secrets sealed at rest, on a real etcd, tried the way someone with read (or write) access
//! to etcd would: what etcdctl, the release records and the snapshot files show; a process
//! without the key or with the wrong one; an envelope copied to another key; a rotation; a
//! rollback across it.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use coord::keyring::key_id_of;
use coord::testing::EtcdServer;
use coord::{ClientConfig, Coord, CoordConfig, Error, Secret, SecretKeys};

use common::eventually;

const K1: &str = "k1 AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
const K2: &str = "k2 AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=";
const PASSWORD: &str = "canary-password-5e1f";
const API_KEY: &str = "canary-api-key-93bd";
const WAIT: Duration = Duration::from_secs(10);

#[derive(CoordConfig, Debug, Clone, PartialEq)]
#[coord(prefix = "/config/db")]
struct Db {
    user: String,
    #[coord(secret)]
    password: Secret<String>,
    #[coord(secret)]
    api_key: Secret<String>,
}

fn db(user: &str, password: &str) -> Db {
    Db {
        user: user.into(),
        password: Secret::new(password.into()),
        api_key: Secret::new(API_KEY.into()),
    }
}

/// A real etcd, and a directory for key files.
async fn setup() -> (EtcdServer, tempfile::TempDir) {
    let server = EtcdServer::start()
        .await
        .expect("etcd (the error says how to install it)");
    (server, tempfile::tempdir().unwrap())
}

/// A key file holding `keys` (lines of `ID BASE64`), private to this user.
fn key_file(dir: &Path, name: &str, keys: &[&str]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, keys.join("\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

async fn connect(server: &EtcdServer, keys: Option<&Path>) -> Coord {
    let mut config: ClientConfig = server.client_config();
    if let Some(path) = keys {
        config = config.with_secret_keys(SecretKeys::File(path.to_owned()));
    }
    Coord::connect(config).await.unwrap()
}

/// The value stored at `key`, as etcdctl prints it.
fn stored(server: &EtcdServer, key: &str) -> String {
    server
        .etcdctl(&["get", "--print-value-only", key])
        .expect("etcdctl get")
}

/// The key id the value at `key` is sealed under (`None`: plain or absent).
fn sealed_under(server: &EtcdServer, key: &str) -> Option<String> {
    key_id_of(stored(server, key).trim().as_bytes())
}

/// Everything etcd holds, as etcdctl prints it.
fn everything(server: &EtcdServer) -> String {
    server
        .etcdctl(&["get", "--prefix", ""])
        .expect("etcdctl get --prefix")
}

/// Waits until `live` has refused a change (what `what` says it is waiting for) and returns
/// the error, as its last error says it.
async fn refusal(live: &coord::Live<Db>, what: &str) -> String {
    eventually(WAIT, what, || async { live.last_error().is_some() }).await;
    live.last_error().unwrap().to_string()
}

fn assert_no_canary(what: &str, text: &str) {
    for canary in [PASSWORD, API_KEY, "canary-"] {
        assert!(!text.contains(canary), "{what} shows {canary:?}:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_its_release_records_and_the_snapshot_files_hold_only_envelopes() {
    let (server, dir) = setup().await;
    let keys = key_file(dir.path(), "secret.keys", &[K1]);
    let snapshots = dir.path().join("snapshots");
    let config = server
        .client_config()
        .with_secret_keys(SecretKeys::File(keys.clone()))
        .with_snapshot_dir(&snapshots);
    let coord = Coord::connect(config).await.unwrap();
    coord
        .config()
        .release(&db("app", PASSWORD))
        .message("first")
        .commit()
        .await
        .unwrap();
    let live = coord.live::<Db>().await.unwrap();
    assert_eq!(live.load().password.expose(), PASSWORD);
    assert_eq!(live.load().api_key.expose(), API_KEY);
    // A second release, so the records hold a change of each secret too.
    coord
        .config()
        .release(&db("app", "canary-second-password"))
        .message("second")
        .commit()
        .await
        .unwrap();
    eventually(WAIT, "the Live sees the second password", || async {
        live.load().password.expose() == "canary-second-password"
    })
    .await;

    let stored = everything(&server);
    assert_no_canary("etcd", &stored);
    assert!(
        stored.contains("/coord/releases/config/db//"),
        "records are there:\n{stored}"
    );
    assert!(
        stored.contains("\"user\"") || stored.contains("app"),
        "{stored}"
    );
    assert_eq!(
        sealed_under(&server, "/config/db/password").as_deref(),
        Some("k1")
    );
    // History shows the secrets redacted, and holds no plaintext either.
    let history = coord.config().history("/config/db", 10).await.unwrap();
    assert_no_canary("history", &format!("{history:?}"));

    // The snapshot file of offline start holds what etcd does.
    eventually(WAIT, "the snapshot file is written", || async {
        std::fs::read_dir(&snapshots).is_ok_and(|mut entries| entries.next().is_some())
    })
    .await;
    for entry in std::fs::read_dir(&snapshots).unwrap() {
        let text =
            String::from_utf8_lossy(&std::fs::read(entry.unwrap().path()).unwrap()).into_owned();
        assert_no_canary("a snapshot file", &text);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_without_the_key_or_with_another_fails_to_bind_naming_the_key() {
    let (server, dir) = setup().await;
    let writer = connect(&server, Some(&key_file(dir.path(), "k1", &[K1]))).await;
    writer.config().publish(&db("app", PASSWORD)).await.unwrap();

    let keyless = connect(&server, None).await;
    match keyless.live::<Db>().await {
        Err(Error::Secret {
            key,
            key_id,
            reason,
        }) => {
            assert!(key.starts_with("/config/db/"), "{key}");
            assert_eq!(key_id.as_deref(), Some("k1"));
            assert!(reason.contains("no key ring"), "{reason}");
        }
        other => panic!("expected Error::Secret, got {other:?}"),
    }
    // Another key under the same id.
    let impostor_keys = key_file(dir.path(), "impostor", &[&K2.replacen("k2", "k1", 1)]);
    let impostor = connect(&server, Some(&impostor_keys)).await;
    let error = impostor.live::<Db>().await.unwrap_err();
    assert!(
        matches!(&error, Error::Secret { key_id: Some(id), .. } if id == "k1"),
        "{error}"
    );
    assert_no_canary("the error", &error.to_string());
    // A plain `get` of a typed secret opens it with the key, and fails without.
    let password: Secret<String> = writer.config().get("/config/db/password").await.unwrap();
    assert_eq!(password.expose(), PASSWORD);
    let refused = keyless
        .config()
        .get::<Secret<String>>("/config/db/password")
        .await;
    assert!(matches!(refused, Err(Error::Secret { .. })), "{refused:?}");
    // A key file others can read is refused at connect, before anything is dialed.
    let open = key_file(dir.path(), "open", &[K1]);
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
    let refused = Coord::connect(
        server
            .client_config()
            .with_secret_keys(SecretKeys::File(open)),
    )
    .await;
    assert!(
        matches!(&refused, Err(Error::InvalidArgument { field, .. }) if field == "secret_keys"),
        "{refused:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_envelope_copied_to_another_key_is_refused_and_the_live_keeps_its_value() {
    let (server, dir) = setup().await;
    let coord = connect(&server, Some(&key_file(dir.path(), "k1", &[K1]))).await;
    coord.config().publish(&db("app", PASSWORD)).await.unwrap();
    let live = coord.live::<Db>().await.unwrap();
    // Someone with write access to etcd moves the password's envelope over the API key, to
    // have it shown where the API key is used.
    let envelope = stored(&server, "/config/db/password");
    server
        .etcdctl(&["put", "/config/db/api_key", envelope.trim()])
        .unwrap();
    let error = refusal(&live, "the Live rejects the moved envelope").await;
    assert!(
        error.contains("/config/db/api_key") && error.contains("k1"),
        "{error}"
    );
    assert_eq!(
        live.load().api_key.expose(),
        API_KEY,
        "the last good value stays"
    );
    assert_no_canary("the error", &error);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_keeps_every_process_serving_and_rollback_restores_the_exact_envelope() {
    let (server, dir) = setup().await;
    let old = connect(&server, Some(&key_file(dir.path(), "old", &[K1]))).await;
    let first = old
        .config()
        .release(&db("app", PASSWORD))
        .message("sealed with k1")
        .commit()
        .await
        .unwrap();
    let sealed_with_k1 = stored(&server, "/config/db/password");
    // Publishing the same value again changes nothing: the envelope stays as it is.
    let again = old
        .config()
        .release(&db("app", PASSWORD))
        .message("unchanged")
        .commit()
        .await
        .unwrap();
    assert!(again.changes.is_empty(), "{:?}", again.changes);
    let old_live = old.live::<Db>().await.unwrap();

    // Step 1: every process gets the ring with the new key first; they still read k1's values.
    let both = connect(&server, Some(&key_file(dir.path(), "both", &[K2, K1]))).await;
    let both_live = both.live::<Db>().await.unwrap();
    assert_eq!(both_live.load().password.expose(), PASSWORD);
    // Step 2: a release seals every secret under the newest key, as one recorded change.
    let rotated = both
        .config()
        .release(&db("app", PASSWORD))
        .message("rotate to k2")
        .commit()
        .await
        .unwrap();
    let changed: Vec<&str> = rotated.changes.iter().map(|c| c.key.as_str()).collect();
    assert_eq!(changed, ["api_key", "password"], "the secrets, re-sealed");
    assert_eq!(
        sealed_under(&server, "/config/db/password").as_deref(),
        Some("k2")
    );
    // A process with only the new key binds; one left on the old ring keeps its value and
    // says which key it lacks.
    let new = connect(&server, Some(&key_file(dir.path(), "new", &[K2]))).await;
    assert_eq!(
        new.live::<Db>().await.unwrap().load().password.expose(),
        PASSWORD
    );
    eventually(
        WAIT,
        "the old-ring Live reports the missing key",
        || async { old_live.last_error().is_some() },
    )
    .await;
    let error = old_live.last_error().unwrap().to_string();
    assert!(error.contains("no key `k2`"), "{error}");
    assert_eq!(old_live.load().password.expose(), PASSWORD);

    // A rollback across the rotation restores the exact envelope of the first release.
    both.config()
        .rollback("/config/db", first.seq)
        .message("back")
        .commit()
        .await
        .unwrap();
    let restored = stored(&server, "/config/db/password");
    assert_eq!(restored, sealed_with_k1, "byte for byte");
    eventually(
        WAIT,
        "the two-key Live reads the restored value",
        || async { both_live.revision() > rotated.revision && both_live.last_error().is_none() },
    )
    .await;
    assert_eq!(both_live.load().password.expose(), PASSWORD);
}

#[derive(CoordConfig, Debug, Clone, PartialEq)]
struct Account {
    user: String,
    #[coord(secret)]
    password: Secret<String>,
}

#[derive(CoordConfig, Debug, Clone, PartialEq)]
#[coord(prefix = "/config/vault")]
struct Vault {
    #[coord(map)]
    tokens: coord::config::Map<Secret<String>>,
    #[coord(map, nested)]
    accounts: std::collections::BTreeMap<String, Account>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_of_a_map_of_secrets_and_secret_fields_of_nested_entries_are_sealed() {
    let (server, dir) = setup().await;
    let coord = connect(&server, Some(&key_file(dir.path(), "k1", &[K1]))).await;
    let mut tokens = coord::config::Map::new();
    tokens.insert("ci".to_owned(), Secret::new("canary-token-ci".to_owned()));
    let vault = Vault {
        tokens,
        accounts: [(
            "ops".to_owned(),
            Account {
                user: "ops-user".into(),
                password: Secret::new("canary-ops-password".into()),
            },
        )]
        .into(),
    };
    coord.config().publish(&vault).await.unwrap();
    let stored = everything(&server);
    assert_no_canary("etcd", &stored);
    // The user is no secret: it is stored as it is.
    assert!(stored.contains("ops-user"), "{stored}");
    for key in [
        "/config/vault/tokens/ci",
        "/config/vault/accounts/ops/password",
    ] {
        assert_eq!(sealed_under(&server, key).as_deref(), Some("k1"), "{key}");
    }
    let live = coord.live::<Vault>().await.unwrap();
    assert_eq!(
        live.load().tokens.get("ci").unwrap().expose(),
        "canary-token-ci"
    );
    assert_eq!(
        live.load().accounts["ops"].password.expose(),
        "canary-ops-password"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_without_keys_cannot_write_a_secret_back_in_clear() {
    let (server, dir) = setup().await;
    let sealed = connect(&server, Some(&key_file(dir.path(), "k1", &[K1]))).await;
    sealed.config().publish_schema::<Db>().await.unwrap();
    sealed.config().publish(&db("app", PASSWORD)).await.unwrap();
    let before = everything(&server);

    let keyless = connect(&server, None).await;
    // A typed publish, and a raw release of the secret key: both refused, naming the key.
    let typed = keyless
        .config()
        .publish(&db("app", "canary-downgrade"))
        .await;
    assert!(
        matches!(&typed, Err(Error::Secret { key, key_id: Some(id), .. }) if key.starts_with("/config/db/") && id == "k1"),
        "{typed:?}"
    );
    let raw = keyless
        .config()
        .release_raw(
            "/config/db",
            [("password".to_owned(), serde_json::json!("canary-downgrade"))].into(),
        )
        .commit()
        .await;
    assert!(
        matches!(&raw, Err(Error::Secret { key, .. }) if key == "/config/db/password"),
        "{raw:?}"
    );
    assert_eq!(everything(&server), before, "nothing was written");
    // The schema says the secrets are sealed: a plain value is refused even where nothing is
    // stored yet to compare with.
    let schema = sealed.config().schema("/config/db").await.unwrap().unwrap();
    assert!(schema.sealed);
    server.etcdctl(&["del", "/config/db/password"]).unwrap();
    let fresh = keyless
        .config()
        .release_raw(
            "/config/db",
            [("password".to_owned(), serde_json::json!("canary-downgrade"))].into(),
        )
        .commit()
        .await;
    match &fresh {
        Err(Error::Secret { key, reason, .. }) => {
            assert_eq!(key, "/config/db/password");
            assert!(
                reason.contains("schema says its secrets are sealed"),
                "{reason}"
            );
        }
        other => panic!("expected Error::Secret, got {other:?}"),
    }
    assert!(!everything(&server).contains("canary"));
    // A key that is no secret still changes.
    keyless
        .config()
        .release_raw(
            "/config/db",
            [("user".to_owned(), serde_json::json!("ops"))].into(),
        )
        .commit()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gray_release_of_a_secret_is_sealed_and_reaches_only_its_instance() {
    let (server, dir) = setup().await;
    let keys = key_file(dir.path(), "k1", &[K1]);
    let as_instance = |name: &str| {
        server
            .client_config()
            .with_secret_keys(SecretKeys::File(keys.clone()))
            .with_instance(coord::Instance::new(name))
    };
    let canary_coord = Coord::connect(as_instance("canary")).await.unwrap();
    let other = Coord::connect(as_instance("other")).await.unwrap();
    canary_coord
        .config()
        .publish(&db("app", PASSWORD))
        .await
        .unwrap();
    let (canary_live, other_live) = (
        canary_coord.live::<Db>().await.unwrap(),
        other.live::<Db>().await.unwrap(),
    );
    let gray = canary_coord
        .config()
        .release(&db("app", "canary-gray-password"))
        .to(coord::config::Selector::default().instance("canary"))
        .message("try the new password on one instance")
        .commit()
        .await
        .unwrap();
    eventually(
        WAIT,
        "the picked instance sees the gray password",
        || async { canary_live.load().password.expose() == "canary-gray-password" },
    )
    .await;
    eventually(WAIT, "the other instance is current", || async {
        other_live.revision() >= gray.revision
    })
    .await;
    assert_eq!(other_live.load().password.expose(), PASSWORD);
    assert_no_canary("etcd, gray key included", &everything(&server));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_release_path_writes_a_secret_sealed_or_not_at_all() {
    let (server, dir) = setup().await;
    let keys = key_file(dir.path(), "k1", &[K1]);
    // Before encryption: a release with the secret plain, then one changed outside releases.
    let plain = connect(&server, None).await;
    let before = plain
        .config()
        .release(&db("app", PASSWORD))
        .message("plain")
        .commit()
        .await
        .unwrap();
    server
        .etcdctl(&["put", "/config/db/api_key", "\"canary-set-outside\""])
        .unwrap();
    let keyed = connect(&server, Some(&keys)).await;
    keyed.config().publish_schema::<Db>().await.unwrap();
    // The migration also records the change made outside releases: sealed, both sides.
    keyed
        .config()
        .seal_secrets("/config/db")
        .await
        .unwrap()
        .expect("plain secrets")
        .message("seal")
        .commit()
        .await
        .unwrap();
    let record = server
        .etcdctl(&[
            "get",
            "--prefix",
            "--print-value-only",
            "/coord/releases/config/db//0",
        ])
        .unwrap();
    let newest = record.lines().last().unwrap();
    assert!(!newest.contains("canary"), "{newest}");
    // A raw release of a secret the schema does not need to name: its stored value is sealed.
    let schema_key = "/coord/schemas/config/db";
    server.etcdctl(&["del", schema_key]).unwrap();
    keyed
        .config()
        .release_raw(
            "/config/db",
            [("password".to_owned(), serde_json::json!("canary-raw"))].into(),
        )
        .commit()
        .await
        .unwrap();
    let password = stored(&server, "/config/db/password");
    assert!(
        key_id_of(password.trim().as_bytes()).is_some(),
        "{password}"
    );
    // A rollback to the plain release, even from a process without keys, restores the old
    // values sealed: the records after it keep them sealed, and nothing goes back in clear.
    for (who, coord) in [("without keys", &plain), ("with keys", &keyed)] {
        coord
            .config()
            .rollback("/config/db", before.seq)
            .message("back")
            .commit()
            .await
            .unwrap();
        for key in ["/config/db/password", "/config/db/api_key"] {
            assert_eq!(
                sealed_under(&server, key).as_deref(),
                Some("k1"),
                "{who}: {key}"
            );
        }
    }
    let live = keyed.live::<Db>().await.unwrap();
    assert_eq!(live.load().password.expose(), PASSWORD);
    // Only the records made before the migration hold a plaintext.
    let old = keyed.config().plain_secrets_in_history("/config/db").await;
    // (The schema was removed above: put it back to ask.)
    assert!(old.is_err());
    keyed.config().publish_schema::<Db>().await.unwrap();
    let old = keyed
        .config()
        .plain_secrets_in_history("/config/db")
        .await
        .unwrap();
    assert_eq!(old, vec![before.seq]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealed_value_that_does_not_decode_is_never_quoted() {
    let (server, dir) = setup().await;
    let coord = connect(&server, Some(&key_file(dir.path(), "k1", &[K1]))).await;
    coord.config().publish(&db("app", PASSWORD)).await.unwrap();
    // The password read as a number: the error names the key and the type, not the value.
    let error = coord
        .config()
        .get::<u64>("/config/db/password")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("/config/db/password") && error.contains("u64"),
        "{error}"
    );
    assert_no_canary("the error", &error);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_value_put_where_a_secret_is_sealed_is_refused_by_readers_with_keys() {
    let (server, dir) = setup().await;
    let coord = connect(&server, Some(&key_file(dir.path(), "k1", &[K1]))).await;
    coord.config().publish(&db("app", PASSWORD)).await.unwrap();
    let live = coord.live::<Db>().await.unwrap();
    // Someone who can write etcd sets the password to a value of their choosing.
    server
        .etcdctl(&["put", "/config/db/password", "\"canary-forged\""])
        .unwrap();
    let error = refusal(&live, "the Live refuses the plain password").await;
    assert!(
        error.contains("/config/db/password") && error.contains("plain"),
        "{error}"
    );
    assert_eq!(
        live.load().password.expose(),
        PASSWORD,
        "the last good value stays"
    );
    assert!(matches!(
        coord.live::<Db>().await,
        Err(Error::Secret { .. })
    ));
    // A migration in progress reads plain secrets as they are, when told to.
    coord.accept_plain_secrets(true);
    assert_eq!(
        coord.live::<Db>().await.unwrap().load().password.expose(),
        "canary-forged"
    );
}
