//! coordctl's access commands, the real binary against a real etcd: review before release
//! (`config propose|proposals|approve|reject`), the policy (`auth apply|check|show`), the
//! audit log (`audit ls|trim`), and taking a lock or an ID from a stuck holder
//! (`locks release --force`, `ids release --force`), each recorded in the audit log.
//!
//! - On a plain etcd, `--as` claims a principal (no etcd auth: a claim): a proposal lists,
//!   its proposer cannot approve it (exit 6), another principal can, and history shows both.
//! - On an etcd with auth on, each principal logs in as its etcd user: `auth apply` creates
//!   them (then finds nothing to change), a prefix under review refuses a direct release
//!   (exit 6), and `auth check` answers with exit 0 or 6.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use coord::testing::{EtcdServer, ROOT_PASSWORD, ROOT_USER};
use coord::{Coord, CoordConfig};
use serde_json::Value;

const PREFIX: &str = "/config/checkout";
/// Exit code: refused by the access policy.
const DENIED: i32 = 6;

#[derive(CoordConfig, Debug, Clone, PartialEq)]
struct Checkout {
    /// Seconds before a payment attempt is abandoned.
    #[coord(default = 30)]
    timeout_secs: u64,
    /// The payment provider.
    #[coord(default)]
    provider: String,
}

const POLICY: &str = r#"
[principals.ana]
roles = ["editor"]
[principals.bo]
roles = ["owner"]

[roles.editor]
grants = [{ prefix = "/config/checkout", actions = ["propose"] }]
[roles.owner]
grants = [{ prefix = "/config/checkout", actions = ["release", "approve"] }]

[review."/config/checkout"]
"#;

/// An etcd, a connection to it, and a directory for files the commands read.
struct Env {
    server: EtcdServer,
    coord: Coord,
    dir: tempfile::TempDir,
    /// Login flags every command gets (`--user root --password …` with auth on).
    login: Vec<String>,
}

async fn env() -> Env {
    let server = EtcdServer::start()
        .await
        .expect("start etcd (see the error for how to install it)");
    let coord = Coord::connect(server.client_config())
        .await
        .expect("connect to the test etcd");
    Env {
        server,
        coord,
        dir: tempfile::tempdir().unwrap(),
        login: Vec::new(),
    }
}

/// An etcd with auth on; commands log in as root unless they say otherwise.
async fn env_with_auth() -> Env {
    let server = EtcdServer::builder()
        .auth(true)
        .start()
        .await
        .expect("start etcd with auth (see the error for how to install etcd)");
    let coord = Coord::connect(server.client_config())
        .await
        .expect("connect to the test etcd as root");
    Env {
        server,
        coord,
        dir: tempfile::tempdir().unwrap(),
        login: vec![
            "--user".into(),
            ROOT_USER.into(),
            "--password".into(),
            ROOT_PASSWORD.into(),
        ],
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Env {
    /// Runs coordctl on this etcd with the test profile, as `login` says.
    async fn ctl_as(&self, login: &[String], args: &[&str]) -> Output {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_coordctl"))
            .args(["--endpoints", &self.server.endpoint(), "--env", "test"])
            .args(login)
            .args(args)
            .env_remove("COORD_ENDPOINTS")
            .env_remove("COORD_USERNAME")
            .env_remove("COORD_PASSWORD")
            .env("NO_COLOR", "1")
            .kill_on_drop(true)
            .output()
            .await
            .expect("run coordctl")
    }

    async fn ctl(&self, args: &[&str]) -> Output {
        self.ctl_as(&self.login, args).await
    }

    async fn ctl_ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args).await;
        assert!(
            out.status.success(),
            "coordctl {args:?} failed: {:?}\nstderr: {}",
            out.status,
            stderr(&out)
        );
        stdout(&out)
    }

    async fn ctl_json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        let text = self.ctl_ok(&all).await;
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    }

    /// A file holding `text`, mode 0600, by path.
    fn private_file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path
    }

    async fn publish(&self) {
        self.coord
            .config()
            .publish_schema_at::<Checkout>(PREFIX)
            .await
            .unwrap();
    }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 temporary path")
}

/// `(principal, action, outcome)` of each record, oldest first.
fn audit_rows(records: &Value) -> Vec<(String, String, String)> {
    records
        .as_array()
        .expect("an array of records")
        .iter()
        .map(|r| {
            let field = |name: &str| r[name].as_str().unwrap_or_default().to_owned();
            (field("principal"), field("action"), field("outcome"))
        })
        .collect()
}

fn row(principal: &str, action: &str, outcome: &str) -> (String, String, String) {
    (principal.into(), action.into(), outcome.into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proposal_is_listed_refused_to_its_proposer_and_released_by_another_principal() {
    let env = env().await;
    env.publish().await;

    let proposed = env
        .ctl_json(&[
            "--as",
            "ana",
            "config",
            "propose",
            PREFIX,
            "timeout_secs=45",
            "provider=1234",
            "-m",
            "PSP is slow",
        ])
        .await;
    let id = proposed["id"].as_str().expect("an id").to_owned();
    assert_eq!(proposed["state"], "open", "{proposed}");
    assert_eq!(proposed["proposer"], "ana", "{proposed}");
    let changes = proposed["changes"].to_string();
    assert!(changes.contains("timeout_secs"), "{changes}");
    assert!(
        env.coord
            .config()
            .get::<u64>("/config/checkout/timeout_secs")
            .await
            .is_err(),
        "nothing released yet"
    );

    let listed = env.ctl_json(&["config", "proposals", PREFIX]).await;
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(listed[0]["id"], id.as_str());
    assert_eq!(listed[0]["message"], "PSP is slow");
    let table = env.ctl_ok(&["config", "proposals", PREFIX]).await;
    assert!(table.starts_with("ID"), "{table}");
    assert!(table.contains(&id) && table.contains("open"), "{table}");
    let one = env.ctl_ok(&["config", "proposals", PREFIX, &id]).await;
    assert!(one.contains("timeout_secs") && one.contains("45"), "{one}");

    let own = env
        .ctl(&["--as", "ana", "config", "approve", PREFIX, &id])
        .await;
    assert_eq!(own.status.code(), Some(DENIED), "{}", stderr(&own));
    assert!(stderr(&own).contains("cannot approve"), "{}", stderr(&own));

    let approved = env
        .ctl_json(&["--as", "bo", "config", "approve", PREFIX, &id])
        .await;
    assert_eq!(approved["principal"], "ana", "{approved}");
    assert_eq!(approved["approved_by"], "bo", "{approved}");
    assert_eq!(approved["proposal"], id.as_str(), "{approved}");
    let config = env.coord.config();
    assert_eq!(
        config
            .get::<u64>("/config/checkout/timeout_secs")
            .await
            .unwrap(),
        45
    );
    // A string-typed key takes the text as typed, though it reads as a JSON number.
    assert_eq!(
        config
            .get::<String>("/config/checkout/provider")
            .await
            .unwrap(),
        "1234"
    );

    let history = env.ctl_json(&["config", "history", PREFIX]).await;
    assert_eq!(history[0]["principal"], "ana", "{history}");
    assert_eq!(history[0]["approved_by"], "bo", "{history}");
    assert_eq!(history[0]["message"], "PSP is slow", "{history}");
    let table = env.ctl_ok(&["config", "history", PREFIX]).await;
    assert!(table.contains("ana, approved by bo"), "{table}");
    let listed = env.ctl_json(&["config", "proposals", PREFIX]).await;
    assert_eq!(listed[0]["state"], "approved", "{listed}");
    assert_eq!(listed[0]["decided_by"], "bo", "{listed}");

    let again = env
        .ctl(&["--as", "bo", "config", "approve", PREFIX, &id])
        .await;
    assert_eq!(again.status.code(), Some(DENIED), "{}", stderr(&again));

    let audit = env.ctl_json(&["audit", "ls", "--prefix", PREFIX]).await;
    let rows = audit_rows(&audit);
    for expected in [
        row("ana", "propose", "done"),
        row("ana", "approve", "refused"),
        row("bo", "approve", "done"),
    ] {
        assert!(rows.contains(&expected), "{expected:?} in {rows:?}");
    }
    let table = env.ctl_ok(&["audit", "ls", "--principal", "ana"]).await;
    assert!(table.starts_with("TIME"), "{table}");
    assert!(
        table.contains("propose") && !table.contains(" bo "),
        "{table}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_proposal_is_never_released_and_a_stale_one_is_a_conflict() {
    let env = env().await;
    env.publish().await;
    let first = env
        .ctl_json(&[
            "--as",
            "ana",
            "config",
            "propose",
            PREFIX,
            "timeout_secs=50",
        ])
        .await;
    let first = first["id"].as_str().unwrap().to_owned();
    let no_reason = env
        .ctl(&[
            "--as", "bo", "config", "reject", PREFIX, &first, "--reason", " ",
        ])
        .await;
    assert_eq!(no_reason.status.code(), Some(2), "{}", stderr(&no_reason));
    let rejected = env
        .ctl_json(&[
            "--as", "bo", "config", "reject", PREFIX, &first, "--reason", "too slow",
        ])
        .await;
    assert_eq!(rejected["state"], "rejected", "{rejected}");
    assert_eq!(rejected["reason"], "too slow", "{rejected}");
    let late = env
        .ctl(&["--as", "bo", "config", "approve", PREFIX, &first])
        .await;
    assert_eq!(late.status.code(), Some(DENIED), "{}", stderr(&late));

    let second = env
        .ctl_json(&[
            "--as",
            "ana",
            "config",
            "propose",
            PREFIX,
            "timeout_secs=60",
        ])
        .await;
    let second = second["id"].as_str().unwrap().to_owned();
    // A release made since the proposal: approving it would undo what it did not see.
    env.ctl_ok(&[
        "--as",
        "bo",
        "config",
        "set",
        "/config/checkout/timeout_secs",
        "40",
    ])
    .await;
    let stale = env
        .ctl(&["--as", "bo", "config", "approve", PREFIX, &second])
        .await;
    assert_eq!(stale.status.code(), Some(4), "{}", stderr(&stale));
    assert!(
        stderr(&stale).contains("propose again"),
        "{}",
        stderr(&stale)
    );
    assert_eq!(
        env.coord
            .config()
            .get::<u64>("/config/checkout/timeout_secs")
            .await
            .unwrap(),
        40
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_apply_creates_the_users_then_finds_nothing_to_change_and_the_policy_holds() {
    let env = env_with_auth().await;
    env.publish().await;
    let policy = env.private_file("policy.toml", POLICY);
    let passwords = env.private_file("passwords.toml", "ana = \"ana-pw\"\nbo = \"bo-pw\"\n");

    // Without passwords the users cannot be created: nothing is applied.
    let missing = env.ctl(&["auth", "apply", path(&policy), "--yes"]).await;
    assert_eq!(missing.status.code(), Some(2), "{}", stderr(&missing));
    assert!(
        stdout(&missing).contains("! user ana"),
        "{}",
        stdout(&missing)
    );
    assert!(
        stderr(&missing).contains("--passwords"),
        "{}",
        stderr(&missing)
    );
    let dry = env
        .ctl_ok(&[
            "auth",
            "apply",
            path(&policy),
            "--passwords",
            path(&passwords),
            "--dry-run",
        ])
        .await;
    assert!(dry.contains("dry run"), "{dry}");
    let none = env.ctl(&["auth", "show"]).await;
    assert_eq!(none.status.code(), Some(3), "{}", stderr(&none));

    let open = env.private_file("open.toml", "ana = \"ana-pw\"\n");
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
    let refused = env
        .ctl(&[
            "auth",
            "apply",
            path(&policy),
            "--passwords",
            path(&open),
            "--yes",
        ])
        .await;
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("chmod 600"),
        "{}",
        stderr(&refused)
    );

    let applied = env
        .ctl_ok(&[
            "auth",
            "apply",
            path(&policy),
            "--passwords",
            path(&passwords),
            "--yes",
        ])
        .await;
    assert!(applied.contains("+ user ana"), "{applied}");
    assert!(applied.contains("+ role coord:editor"), "{applied}");
    assert!(applied.contains("~ /coord/policy: created"), "{applied}");
    assert!(
        !applied.contains("ana-pw"),
        "no password printed: {applied}"
    );
    let again = env
        .ctl_ok(&[
            "auth",
            "apply",
            path(&policy),
            "--passwords",
            path(&passwords),
            "--yes",
        ])
        .await;
    assert!(again.starts_with("no changes"), "{again}");
    let again = env
        .ctl_json(&["auth", "apply", path(&policy), "--yes"])
        .await;
    assert_eq!(again["changes"], serde_json::json!([]), "{again}");
    assert_eq!(again["applied"], false, "{again}");

    let shown = env.ctl_ok(&["auth", "show"]).await;
    assert!(shown.contains("[principals.ana]"), "{shown}");
    let shown_policy = coord::access::Policy::parse_toml(&shown).unwrap();
    assert_eq!(
        shown_policy,
        coord::access::Policy::parse_toml(POLICY).unwrap()
    );

    let allowed = env.ctl(&["auth", "check", "bo", "approve", PREFIX]).await;
    assert!(allowed.status.success(), "{}", stderr(&allowed));
    assert!(
        stdout(&allowed).starts_with("allowed"),
        "{}",
        stdout(&allowed)
    );
    let denied = env
        .ctl(&["auth", "check", "ana", "approve", "/config/checkout/db"])
        .await;
    assert_eq!(denied.status.code(), Some(DENIED), "{}", stderr(&denied));
    assert!(stdout(&denied).starts_with("denied"), "{}", stdout(&denied));
    assert!(stdout(&denied).contains("editor"), "{}", stdout(&denied));
    let bad = env.ctl(&["auth", "check", "ana", "write", PREFIX]).await;
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));

    // Each principal logs in as its etcd user; a claim with --as is no way around it.
    let login = |user: &str| -> Vec<String> {
        vec![
            "--user".into(),
            user.into(),
            "--password".into(),
            format!("{user}-pw"),
        ]
    };
    let values = env.private_file("values.json", r#"{"timeout_secs": 45}"#);
    let direct = env
        .ctl_as(
            &login("bo"),
            &["config", "release", PREFIX, "-f", path(&values)],
        )
        .await;
    assert_eq!(direct.status.code(), Some(DENIED), "{}", stderr(&direct));
    assert!(
        stderr(&direct).contains("requires review"),
        "{}",
        stderr(&direct)
    );
    let not_granted = env
        .ctl_as(
            &login("ana"),
            &["config", "release", PREFIX, "-f", path(&values)],
        )
        .await;
    assert_eq!(
        not_granted.status.code(),
        Some(DENIED),
        "{}",
        stderr(&not_granted)
    );
    let claim = env
        .ctl_as(
            &login("ana"),
            &[
                "--as",
                "bo",
                "config",
                "release",
                PREFIX,
                "-f",
                path(&values),
            ],
        )
        .await;
    assert_eq!(claim.status.code(), Some(2), "{}", stderr(&claim));

    let proposed = env
        .ctl_as(
            &login("ana"),
            &["config", "propose", PREFIX, "timeout_secs=45", "-o", "json"],
        )
        .await;
    assert!(proposed.status.success(), "{}", stderr(&proposed));
    let proposed: Value = serde_json::from_slice(&proposed.stdout).unwrap();
    let id = proposed["id"].as_str().unwrap();
    let approved = env
        .ctl_as(&login("bo"), &["config", "approve", PREFIX, id])
        .await;
    assert!(approved.status.success(), "{}", stderr(&approved));
    let history = env.ctl_json(&["config", "history", PREFIX]).await;
    assert_eq!(history[0]["principal"], "ana", "{history}");
    assert_eq!(history[0]["approved_by"], "bo", "{history}");

    let audit = env.ctl_json(&["audit", "ls"]).await;
    let rows = audit_rows(&audit);
    for expected in [
        row(ROOT_USER, "policy_change", "done"),
        row("bo", "release", "refused"),
        row("ana", "release", "refused"),
        row("ana", "propose", "done"),
        row("bo", "approve", "done"),
    ] {
        assert!(rows.contains(&expected), "{expected:?} in {rows:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_broken_and_an_id_released_by_force_are_audited_and_their_holders_told() {
    let env = env().await;
    let guard = env
        .coord
        .locks()
        .acquire("/locks/stuck", Duration::from_secs(60))
        .await
        .unwrap();
    env.ctl_ok(&[
        "--as",
        "ops",
        "locks",
        "release",
        "/locks/stuck",
        "--force",
        "--yes",
    ])
    .await;
    tokio::time::timeout(Duration::from_secs(20), guard.lost())
        .await
        .expect("the holder learns it lost the lock");

    let allocator = env.coord.ids("worker", 16).await.unwrap();
    let id = allocator.acquire().await.unwrap();
    let number = id.id().to_string();
    let unforced = env.ctl(&["ids", "release", "worker", &number]).await;
    assert_eq!(unforced.status.code(), Some(2), "{}", stderr(&unforced));
    assert!(id.is_alive());
    let released = env
        .ctl_json(&[
            "--as", "ops", "ids", "release", "worker", &number, "--force", "--yes",
        ])
        .await;
    assert_eq!(released["released"], true, "{released}");
    tokio::time::timeout(Duration::from_secs(20), id.lost())
        .await
        .expect("the holder learns it lost the ID");
    let listed = env.ctl_json(&["ids", "ls", "worker"]).await;
    assert_eq!(listed, serde_json::json!([]), "{listed}");
    let missing = env
        .ctl(&["ids", "release", "worker", &number, "--force", "--yes"])
        .await;
    assert_eq!(missing.status.code(), Some(3), "{}", stderr(&missing));

    let audit = env.ctl_json(&["audit", "ls", "--principal", "ops"]).await;
    let rows = audit_rows(&audit);
    assert_eq!(
        rows,
        [
            row("ops", "lock_break", "done"),
            row("ops", "id_release", "done")
        ],
        "{audit}"
    );
    assert_eq!(audit[1]["target"], format!("worker/{number}"), "{audit}");

    // Each principal trims its own folder: ops's two records go, nobody else's.
    let kept = env
        .ctl_json(&["--as", "ops", "audit", "trim", "--keep", "1"])
        .await;
    assert_eq!(kept["deleted"], 1, "{kept}");
    let left = env.ctl_json(&["audit", "ls", "--principal", "ops"]).await;
    assert_eq!(audit_rows(&left), [row("ops", "id_release", "done")]);
    let trimmed = env
        .ctl_json(&["--as", "ops", "audit", "trim", "--older-than", "0s"])
        .await;
    assert_eq!(trimmed["deleted"], 1, "{trimmed}");
    let nothing = env.ctl(&["audit", "trim"]).await;
    assert_eq!(nothing.status.code(), Some(2), "{}", stderr(&nothing));
}
