//! `coordctl secrets …` and `config set` of a secret, the real binary against a real etcd, with
//! a service's `Live` in this process: plain secrets are found and sealed (one release), a
//! rotation seals them under the new key while the service keeps its value, a rollback
//! restores the exact envelope. No output shows a plaintext, and after the migration nothing
//! in etcd does but the release records made before it, which `secrets status` names.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use common::{env, eventually, expect_ok, path_text, stderr, stdout, Env};
use coord::keyring::{key_id_of, KeyRing};
use coord::{CoordConfig, Secret};
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

impl Env {
    fn key_file(&self, name: &str, keys: &[&str]) -> PathBuf {
        self.private_file(name, &keys.join("\n"))
    }

    /// Runs coordctl with the key file `keys` (`--secret-keys`), if any; nothing it prints
    /// may show a secret.
    async fn run(&self, keys: Option<&Path>, args: &[&str]) -> Output {
        let ctl = match keys {
            Some(keys) => self.ctl.flags(&["--secret-keys", path_text(keys)]),
            None => self.ctl.clone(),
        };
        let out = ctl.run(args).await;
        for text in [stdout(&out), stderr(&out)] {
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
    serde_json::from_str(&expect_ok(out)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_secrets_are_found_sealed_rotated_and_rolled_back_without_showing_one() {
    let env = env().await;
    // A service from before encryption: its secret is stored plain.
    let service = &env.coord;
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
        &env.run(None, &["-o", "json", "secrets", "status", "/config/db"])
            .await,
    );
    assert_eq!(status["secrets"][0]["key"], "password");
    assert_eq!(status["secrets"][0]["sealed"], false);
    let table = env.run(None, &["secrets", "status", "/config/db"]).await;
    let text = stdout(&table) + &stderr(&table);
    assert!(
        text.contains("plain") && text.contains("secrets encrypt"),
        "{text}"
    );

    // Without keys there is nothing to seal with: a usage error, nothing written.
    let keyless = env.run(None, &["secrets", "encrypt", "/config/db"]).await;
    assert!(!keyless.status.success());
    assert!(
        stderr(&keyless).contains("--secret-keys"),
        "{}",
        stderr(&keyless)
    );

    // The migration: every process that reads the prefix gets the key first.
    let k1 = env.key_file("k1", &[K1]);
    let both = env.key_file("both", &[K2, K1]);
    service.set_key_ring(KeyRing::parse(K1).unwrap());
    // Until the migration is done, the service reads the plain value as it is.
    service.accept_plain_secrets(true);
    let live = service.live::<Db>().await.unwrap();
    let encrypted = json(
        &env.run(
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
        &env.run(
            Some(&k1),
            &["-o", "json", "secrets", "encrypt", "/config/db"],
        )
        .await,
    );
    assert_eq!(again["written"], false, "nothing left to seal");

    // The rotation: the service gets the new ring, then the secrets are sealed anew.
    service.set_key_ring(KeyRing::parse(&format!("{K2}\n{K1}")).unwrap());
    json(
        &env.run(
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
        &env.run(
            Some(&both),
            &["-o", "json", "secrets", "status", "/config/db"],
        )
        .await,
    );
    assert_eq!(status["secrets"][0]["key_id"], "k2");
    // `config set` of a secret under the schema seals it too.
    let set = env
        .run(
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
    expect_ok(&set);
    assert_eq!(
        key_id_of(env.stored_password().trim().as_bytes()).as_deref(),
        Some("k2")
    );
    env.assert_etcd_holds_no_plaintext(&[1]);
    // `--force` past the schema would be a plain write: a secret is not written that way.
    let stored = env.stored_password();
    let forced = env
        .run(
            Some(&both),
            &["config", "set", "/config/db/password", "12345", "--force"],
        )
        .await;
    assert!(!forced.status.success());
    assert!(
        stderr(&forced).contains("is a secret"),
        "{}",
        stderr(&forced)
    );
    assert_eq!(env.stored_password(), stored, "nothing written");
    eventually(WAIT, "the service sees the set value", || {
        live.load().password.expose() == "canary-set-by-cli"
    })
    .await;

    // A rollback to the migration's release restores its envelope byte for byte.
    let rolled = env
        .run(
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
    expect_ok(&rolled);
    assert_eq!(env.stored_password(), sealed_k1);
    eventually(WAIT, "the service reads the restored value", || {
        live.load().password.expose() == CANARY
    })
    .await;
    env.assert_etcd_holds_no_plaintext(&[1]);
}
