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

mod common;

use std::time::Duration;

use common::{chmod, env, env_with_auth, expect_code, expect_exit, path_text, stdout, Env};
use coord::testing::ROOT_USER;
use coord::CoordConfig;
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

impl Env {
    async fn publish(&self) {
        self.coord
            .config()
            .publish_schema_at::<Checkout>(PREFIX)
            .await
            .unwrap();
    }
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

/// `coordctl --as ana config propose PREFIX ARGS… -o json`: the proposal.
async fn propose_as_ana(env: &Env, args: &[&str]) -> Value {
    let mut all = vec!["--as", "ana", "config", "propose", PREFIX];
    all.extend(args);
    env.ctl.json(&all).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proposal_is_listed_refused_to_its_proposer_and_released_by_another_principal() {
    let env = env().await;
    env.publish().await;

    let proposed = propose_as_ana(
        &env,
        &["timeout_secs=45", "provider=1234", "-m", "PSP is slow"],
    )
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

    let listed = env.ctl.json(&["config", "proposals", PREFIX]).await;
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(listed[0]["id"], id.as_str());
    assert_eq!(listed[0]["message"], "PSP is slow");
    let table = env.ctl.ok(&["config", "proposals", PREFIX]).await;
    assert!(table.starts_with("ID"), "{table}");
    assert!(table.contains(&id) && table.contains("open"), "{table}");
    let one = env.ctl.ok(&["config", "proposals", PREFIX, &id]).await;
    assert!(one.contains("timeout_secs") && one.contains("45"), "{one}");

    let own = env
        .ctl
        .run(&["--as", "ana", "config", "approve", PREFIX, &id])
        .await;
    expect_exit(&own, DENIED, "cannot approve");

    let approved = env
        .ctl
        .json(&["--as", "bo", "config", "approve", PREFIX, &id])
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

    let history = env.ctl.json(&["config", "history", PREFIX]).await;
    assert_eq!(history[0]["principal"], "ana", "{history}");
    assert_eq!(history[0]["approved_by"], "bo", "{history}");
    assert_eq!(history[0]["message"], "PSP is slow", "{history}");
    let table = env.ctl.ok(&["config", "history", PREFIX]).await;
    assert!(table.contains("ana, approved by bo"), "{table}");
    let listed = env.ctl.json(&["config", "proposals", PREFIX]).await;
    assert_eq!(listed[0]["state"], "approved", "{listed}");
    assert_eq!(listed[0]["decided_by"], "bo", "{listed}");

    let again = env
        .ctl
        .run(&["--as", "bo", "config", "approve", PREFIX, &id])
        .await;
    expect_code(&again, DENIED);

    let audit = env.ctl.json(&["audit", "ls", "--prefix", PREFIX]).await;
    let rows = audit_rows(&audit);
    for expected in [
        row("ana", "propose", "done"),
        row("ana", "approve", "refused"),
        row("bo", "approve", "done"),
    ] {
        assert!(rows.contains(&expected), "{expected:?} in {rows:?}");
    }
    let table = env.ctl.ok(&["audit", "ls", "--principal", "ana"]).await;
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
    let first = propose_as_ana(&env, &["timeout_secs=50"]).await;
    let first = first["id"].as_str().unwrap().to_owned();
    let no_reason = env
        .ctl
        .run(&[
            "--as", "bo", "config", "reject", PREFIX, &first, "--reason", " ",
        ])
        .await;
    expect_code(&no_reason, 2);
    let rejected = env
        .ctl
        .json(&[
            "--as", "bo", "config", "reject", PREFIX, &first, "--reason", "too slow",
        ])
        .await;
    assert_eq!(rejected["state"], "rejected", "{rejected}");
    assert_eq!(rejected["reason"], "too slow", "{rejected}");
    let late = env
        .ctl
        .run(&["--as", "bo", "config", "approve", PREFIX, &first])
        .await;
    expect_code(&late, DENIED);

    let second = propose_as_ana(&env, &["timeout_secs=60"]).await;
    let second = second["id"].as_str().unwrap().to_owned();
    // A release made since the proposal: approving it would undo what it did not see.
    env.ctl
        .ok(&[
            "--as",
            "bo",
            "config",
            "set",
            "/config/checkout/timeout_secs",
            "40",
        ])
        .await;
    let stale = env
        .ctl
        .run(&["--as", "bo", "config", "approve", PREFIX, &second])
        .await;
    expect_exit(&stale, 4, "propose again");
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
    let missing = env
        .ctl
        .run(&["auth", "apply", path_text(&policy), "--yes"])
        .await;
    expect_exit(&missing, 2, "--passwords");
    assert!(
        stdout(&missing).contains("! user ana"),
        "{}",
        stdout(&missing)
    );
    let dry = env
        .ctl
        .ok(&[
            "auth",
            "apply",
            path_text(&policy),
            "--passwords",
            path_text(&passwords),
            "--dry-run",
        ])
        .await;
    assert!(dry.contains("dry run"), "{dry}");
    let none = env.ctl.run(&["auth", "show"]).await;
    expect_code(&none, 3);

    let open = env.private_file("open.toml", "ana = \"ana-pw\"\n");
    chmod(&open, 0o644);
    let refused = env
        .ctl
        .run(&[
            "auth",
            "apply",
            path_text(&policy),
            "--passwords",
            path_text(&open),
            "--yes",
        ])
        .await;
    expect_exit(&refused, 2, "chmod 600");

    let applied = env
        .ctl
        .ok(&[
            "auth",
            "apply",
            path_text(&policy),
            "--passwords",
            path_text(&passwords),
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
        .ctl
        .ok(&[
            "auth",
            "apply",
            path_text(&policy),
            "--passwords",
            path_text(&passwords),
            "--yes",
        ])
        .await;
    assert!(again.starts_with("no changes"), "{again}");
    let again = env
        .ctl
        .json(&["auth", "apply", path_text(&policy), "--yes"])
        .await;
    assert_eq!(again["changes"], serde_json::json!([]), "{again}");
    assert_eq!(again["applied"], false, "{again}");

    let shown = env.ctl.ok(&["auth", "show"]).await;
    assert!(shown.contains("[principals.ana]"), "{shown}");
    let shown_policy = coord::access::Policy::parse_toml(&shown).unwrap();
    assert_eq!(
        shown_policy,
        coord::access::Policy::parse_toml(POLICY).unwrap()
    );

    let allowed = env
        .ctl
        .ok(&["auth", "check", "bo", "approve", PREFIX])
        .await;
    assert!(allowed.starts_with("allowed"), "{allowed}");
    let denied = env
        .ctl
        .run(&["auth", "check", "ana", "approve", "/config/checkout/db"])
        .await;
    expect_code(&denied, DENIED);
    assert!(stdout(&denied).starts_with("denied"), "{}", stdout(&denied));
    assert!(stdout(&denied).contains("editor"), "{}", stdout(&denied));
    let bad = env
        .ctl
        .run(&["auth", "check", "ana", "write", PREFIX])
        .await;
    expect_code(&bad, 2);

    // Each principal logs in as its etcd user; a claim with --as is no way around it.
    let login = |user: &str| env.ctl.login(user, &format!("{user}-pw"));
    let values = env.private_file("values.json", r#"{"timeout_secs": 45}"#);
    let direct = login("bo")
        .run(&["config", "release", PREFIX, "-f", path_text(&values)])
        .await;
    expect_exit(&direct, DENIED, "requires review");
    let not_granted = login("ana")
        .run(&["config", "release", PREFIX, "-f", path_text(&values)])
        .await;
    expect_code(&not_granted, DENIED);
    let claim = login("ana")
        .run(&[
            "--as",
            "bo",
            "config",
            "release",
            PREFIX,
            "-f",
            path_text(&values),
        ])
        .await;
    expect_code(&claim, 2);

    let proposed = login("ana")
        .json(&["config", "propose", PREFIX, "timeout_secs=45"])
        .await;
    let id = proposed["id"].as_str().unwrap();
    login("bo").ok(&["config", "approve", PREFIX, id]).await;
    let history = env.ctl.json(&["config", "history", PREFIX]).await;
    assert_eq!(history[0]["principal"], "ana", "{history}");
    assert_eq!(history[0]["approved_by"], "bo", "{history}");

    let audit = env.ctl.json(&["audit", "ls"]).await;
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
    env.ctl
        .ok(&[
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
    let unforced = env.ctl.run(&["ids", "release", "worker", &number]).await;
    expect_code(&unforced, 2);
    assert!(id.is_alive());
    let released = env
        .ctl
        .json(&[
            "--as", "ops", "ids", "release", "worker", &number, "--force", "--yes",
        ])
        .await;
    assert_eq!(released["released"], true, "{released}");
    tokio::time::timeout(Duration::from_secs(20), id.lost())
        .await
        .expect("the holder learns it lost the ID");
    let listed = env.ctl.json(&["ids", "ls", "worker"]).await;
    assert_eq!(listed, serde_json::json!([]), "{listed}");
    let missing = env
        .ctl
        .run(&["ids", "release", "worker", &number, "--force", "--yes"])
        .await;
    expect_code(&missing, 3);

    let audit = env.ctl.json(&["audit", "ls", "--principal", "ops"]).await;
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
        .ctl
        .json(&["--as", "ops", "audit", "trim", "--keep", "1"])
        .await;
    assert_eq!(kept["deleted"], 1, "{kept}");
    let left = env.ctl.json(&["audit", "ls", "--principal", "ops"]).await;
    assert_eq!(audit_rows(&left), [row("ops", "id_release", "done")]);
    let trimmed = env
        .ctl
        .json(&["--as", "ops", "audit", "trim", "--older-than", "0s"])
        .await;
    assert_eq!(trimmed["deleted"], 1, "{trimmed}");
    let nothing = env.ctl.run(&["audit", "trim"]).await;
    expect_code(&nothing, 2);
}
