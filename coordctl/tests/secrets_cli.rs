//! `coordctl secrets …` and `config set` of a secret, the real binary against a real etcd, with
//! a service's `Live` in this process: plain secrets are found and sealed (one release), a
//! rotation seals them under the new key while the service keeps its value, a rollback
//! restores the exact envelope. No output shows a plaintext, and after the migration nothing
//! in etcd does but the release records made before it, which `secrets status` names.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use coord::keyring::{key_id_of, KeyRing};
use coord::testing::EtcdServer;
use coord::{Coord, CoordConfig, Secret};
use serde_json::Value;

const K1: &str = "k1 AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
const K2: &str = "k2 AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=";
const CANARY: &str = "canary-cli-secret-c0ffee";
const WAIT: Duration = Duration::from_secs(30);

#[derive(CoordConfig, Debug, Clone, PartialEq)]
#[coord(prefix = "/config/db")]
struct Db {
    user: String,
    #[coord(secret)]
    password: Secret<String>,
}

struct Env {
    server: EtcdServer,
    dir: tempfile::TempDir,
}

impl Env {
    fn key_file(&self, name: &str, keys: &[&str]) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, keys.join("\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path
    }

    async fn ctl(&self, keys: Option<&Path>, args: &[&str]) -> Output {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_coordctl"));
        command
            .args(["--endpoints", &self.server.endpoint(), "--env", "test"])
            .env_remove("COORD_ENDPOINTS")
            .env_remove("COORD_SECRET_KEYS_FILE")
            .env("NO_COLOR", "1")
            .kill_on_drop(true);
        if let Some(keys) = keys {
            command.arg("--secret-keys").arg(keys);
        }
        let out = command.args(args).output().await.unwrap();
        for stream in [&out.stdout, &out.stderr] {
            let text = String::from_utf8_lossy(stream);
            assert!(
                !text.contains("canary"),
                "coordctl {args:?} printed a secret:\n{text}"
            );
        }
        out
    }

    fn stored_password(&self) -> String {
        self.server
            .etcdctl(&["get", "--print-value-only", "/config/db/password"])
            .unwrap()
    }

    /// Nothing in etcd shows a secret but the release records `before` (made while the
    /// secrets were plain).
    fn assert_etcd_holds_no_plaintext(&self, before: &[u64]) {
        let all = self.server.etcdctl(&["get", "--prefix", ""]).unwrap();
        let mut lines = all.lines();
        while let (Some(key), Some(value)) = (lines.next(), lines.next()) {
            let old_record = before
                .iter()
                .any(|seq| key == format!("/coord/releases/config/db//{seq:020}"));
            if old_record {
                continue;
            }
            assert!(!value.contains("canary"), "{key} shows a secret: {value}");
        }
    }
}

fn json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_secrets_are_found_sealed_rotated_and_rolled_back_without_showing_one() {
    let env = Env {
        server: EtcdServer::start()
            .await
            .expect("start etcd (see the error for how to install it)"),
        dir: tempfile::tempdir().unwrap(),
    };
    // A service from before encryption: its secret is stored plain.
    let service = Coord::connect(env.server.client_config()).await.unwrap();
    service.config().publish_schema::<Db>().await.unwrap();
    service
        .config()
        .publish(&Db {
            user: "app".into(),
            password: Secret::new(CANARY.into()),
        })
        .await
        .unwrap();
    let status = json(
        &env.ctl(None, &["-o", "json", "secrets", "status", "/config/db"])
            .await,
    );
    assert_eq!(status["secrets"][0]["key"], "password");
    assert_eq!(status["secrets"][0]["sealed"], false);
    let table = env.ctl(None, &["secrets", "status", "/config/db"]).await;
    let text = String::from_utf8_lossy(&table.stdout).into_owned()
        + &String::from_utf8_lossy(&table.stderr);
    assert!(
        text.contains("plain") && text.contains("secrets encrypt"),
        "{text}"
    );

    // Without keys there is nothing to seal with: a usage error, nothing written.
    let keyless = env.ctl(None, &["secrets", "encrypt", "/config/db"]).await;
    assert!(!keyless.status.success());
    assert!(
        String::from_utf8_lossy(&keyless.stderr).contains("--secret-keys"),
        "{}",
        String::from_utf8_lossy(&keyless.stderr)
    );

    // The migration: every process that reads the prefix gets the key first.
    let k1 = env.key_file("k1", &[K1]);
    let both = env.key_file("both", &[K2, K1]);
    service.set_key_ring(KeyRing::parse(K1).unwrap());
    // Until the migration is done, the service reads the plain value as it is.
    service.accept_plain_secrets(true);
    let live = service.live::<Db>().await.unwrap();
    let encrypted = json(
        &env.ctl(
            Some(&k1),
            &["-o", "json", "secrets", "encrypt", "/config/db"],
        )
        .await,
    );
    let first_sealed = encrypted["seq"].as_u64().expect("a release");
    let sealed_k1 = env.stored_password();
    assert_eq!(
        key_id_of(sealed_k1.trim().as_bytes()).as_deref(),
        Some("k1")
    );
    env.assert_etcd_holds_no_plaintext(&[1]);
    let again = json(
        &env.ctl(
            Some(&k1),
            &["-o", "json", "secrets", "encrypt", "/config/db"],
        )
        .await,
    );
    assert_eq!(again["written"], false, "nothing left to seal");

    // The rotation: the service gets the new ring, then the secrets are sealed anew.
    service.set_key_ring(KeyRing::parse(&format!("{K2}\n{K1}")).unwrap());
    json(
        &env.ctl(
            Some(&both),
            &[
                "-o",
                "json",
                "secrets",
                "rotate",
                "/config/db",
                "-m",
                "rotate",
            ],
        )
        .await,
    );
    assert_eq!(
        key_id_of(env.stored_password().trim().as_bytes()).as_deref(),
        Some("k2")
    );
    let status = json(
        &env.ctl(
            Some(&both),
            &["-o", "json", "secrets", "status", "/config/db"],
        )
        .await,
    );
    assert_eq!(status["secrets"][0]["key_id"], "k2");
    // `config set` of a secret under the schema seals it too.
    let set = env
        .ctl(
            Some(&both),
            &[
                "config",
                "set",
                "/config/db/password",
                "\"canary-set-by-cli\"",
                "-m",
                "set",
            ],
        )
        .await;
    assert!(
        set.status.success(),
        "{}",
        String::from_utf8_lossy(&set.stderr)
    );
    assert_eq!(
        key_id_of(env.stored_password().trim().as_bytes()).as_deref(),
        Some("k2")
    );
    env.assert_etcd_holds_no_plaintext(&[1]);
    // `--force` past the schema would be a plain write: a secret is not written that way.
    let stored = env.stored_password();
    let forced = env
        .ctl(
            Some(&both),
            &["config", "set", "/config/db/password", "12345", "--force"],
        )
        .await;
    assert!(!forced.status.success());
    assert!(
        String::from_utf8_lossy(&forced.stderr).contains("is a secret"),
        "{}",
        String::from_utf8_lossy(&forced.stderr)
    );
    assert_eq!(env.stored_password(), stored, "nothing written");
    let deadline = tokio::time::Instant::now() + WAIT;
    while live.load().password.expose() != "canary-set-by-cli" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the service sees the set value"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A rollback to the migration's release restores its envelope byte for byte.
    let rolled = env
        .ctl(
            Some(&both),
            &[
                "config",
                "rollback",
                "/config/db",
                &first_sealed.to_string(),
                "-m",
                "back",
            ],
        )
        .await;
    assert!(
        rolled.status.success(),
        "{}",
        String::from_utf8_lossy(&rolled.stderr)
    );
    assert_eq!(env.stored_password(), sealed_k1);
    while live.load().password.expose() != CANARY {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the service reads the restored value"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    env.assert_etcd_holds_no_plaintext(&[1]);
}
