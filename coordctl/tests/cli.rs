//! coordctl, the real binary, against a real etcd from the test harness.

mod common;

use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::{
    chmod, env, eventually, expect_code, expect_exit, expect_ok, path_text, private_file, stderr,
    stdout, Ctl, Env,
};
use coord::testing::EtcdServer;
use coord::{ClientConfig, Coord, CoordConfig};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

#[derive(CoordConfig, Debug, Clone, PartialEq)]
struct Checkout {
    /// Seconds before a payment attempt is abandoned.
    #[coord(default = 30)]
    timeout_secs: u64,
    /// The payment provider's key.
    #[coord(secret, default)]
    api_key: coord::Secret<String>,
}

/// A struct with a key it cannot bind without.
#[derive(CoordConfig, Debug, Clone, PartialEq)]
struct Required {
    /// The payment provider.
    provider: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_set_is_refused_for_a_wrong_type_and_reaches_a_live_for_a_right_one() {
    let env = env().await;
    let prefix = "/config/checkout";
    env.coord
        .config()
        .publish_schema_at::<Checkout>(prefix)
        .await
        .unwrap();
    let live = env.coord.live_at::<Checkout>(prefix).await.unwrap();
    assert_eq!(live.load().timeout_secs, 30);

    let refused = env
        .ctl
        .run(&["config", "set", "/config/checkout/timeout_secs", "\"abc\""])
        .await;
    let message = expect_exit(&refused, 1, "expected u64");
    assert!(
        message.contains("Seconds before a payment attempt is abandoned."),
        "{message}"
    );
    let unknown = env
        .ctl
        .run(&["config", "set", "/config/checkout/timeout", "5"])
        .await;
    expect_code(&unknown, 1);
    let nothing = env.coord.config().list(prefix).await.unwrap();
    assert!(nothing.is_empty(), "nothing written: {nothing:?}");

    let dry = env
        .ctl
        .ok(&[
            "config",
            "set",
            "/config/checkout/timeout_secs",
            "45",
            "--dry-run",
        ])
        .await;
    assert!(dry.contains("dry run"), "{dry}");
    assert!(env.coord.config().list(prefix).await.unwrap().is_empty());

    env.ctl
        .ok(&["config", "set", "/config/checkout/timeout_secs", "45"])
        .await;
    eventually(Duration::from_secs(10), "the Live sees 45", || {
        live.load().timeout_secs == 45
    })
    .await;
    let got = env
        .ctl
        .json(&["config", "get", "/config/checkout/timeout_secs"])
        .await;
    assert_eq!(got["value"], 45);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_and_delete_under_a_schema_are_releases_in_history_and_roll_back() {
    let env = env().await;
    let prefix = "/config/checkout";
    let config = env.coord.config();
    config.publish_schema_at::<Checkout>(prefix).await.unwrap();
    let key = "/config/checkout/timeout_secs";

    let set = env
        .ctl
        .json(&["config", "set", key, "45", "-m", "PSP is slow"])
        .await;
    assert_eq!(set["prefix"], prefix);
    let seq = set["release"].as_u64().expect("a release seq");
    let history = config.history(prefix, 1).await.unwrap();
    assert_eq!(history[0].seq, seq);
    assert_eq!(history[0].message.as_deref(), Some("PSP is slow"));
    assert!(
        history[0]
            .author
            .as_deref()
            .is_some_and(|a| a.contains("coordctl")),
        "{:?}",
        history[0].author
    );
    assert_eq!(history[0].values["timeout_secs"], 45);
    assert_eq!(set["version"].as_i64(), Some(history[0].revision));

    // --expect-version guards the key as a compare-and-set does: an old version is exit 4.
    let stale = (history[0].revision - 1).to_string();
    let conflict = env
        .ctl
        .run(&["config", "set", key, "50", "--expect-version", &stale])
        .await;
    expect_exit(&conflict, 4, key);
    assert_eq!(config.get::<u64>(key).await.unwrap(), 45);
    let current = history[0].revision.to_string();
    env.ctl
        .ok(&["config", "set", key, "50", "--expect-version", &current])
        .await;

    // A delete is a release too, and a rollback brings the value back.
    let deleted = env.ctl.json(&["config", "delete", key]).await;
    let removed_in = deleted["release"].as_u64().expect("a release seq");
    assert!(config.get::<u64>(key).await.is_err(), "deleted");
    let latest = &config.history(prefix, 1).await.unwrap()[0];
    assert_eq!(latest.seq, removed_in);
    assert!(!latest.values.contains_key("timeout_secs"), "{latest:?}");
    env.ctl
        .ok(&["config", "rollback", prefix, &seq.to_string()])
        .await;
    assert_eq!(config.get::<u64>(key).await.unwrap(), 45);

    // A key the schema requires is deleted only with --force.
    let pay = "/config/pay-required";
    config.publish_schema_at::<Required>(pay).await.unwrap();
    config
        .release_raw(
            pay,
            std::collections::BTreeMap::from([("provider".to_owned(), serde_json::json!("psp-1"))]),
        )
        .commit()
        .await
        .unwrap();
    let provider = "/config/pay-required/provider";
    let refused = env.ctl.run(&["config", "delete", provider]).await;
    expect_exit(&refused, 1, "--force");
    assert_eq!(config.get::<String>(provider).await.unwrap(), "psp-1");
    env.ctl.ok(&["config", "delete", provider, "--force"]).await;
    assert!(config.get::<String>(provider).await.is_err(), "deleted");

    // A value forced past the schema is a plain write: no release, an unattributed entry.
    let forced = env
        .ctl
        .json(&["config", "set", key, "\"abc\"", "--force"])
        .await;
    assert!(forced["release"].is_null(), "{forced}");
    let latest = &config.history(prefix, 1).await.unwrap()[0];
    assert_eq!(latest.kind, coord::config::ReleaseKind::Unrecorded);
    assert_eq!(latest.author, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_and_list_redact_secrets_the_schema_marks() {
    let env = env().await;
    let prefix = "/config/pay";
    env.coord
        .config()
        .publish_schema_at::<Checkout>(prefix)
        .await
        .unwrap();
    env.ctl
        .ok(&["config", "set", "/config/pay/api_key", "\"hunter2\""])
        .await;
    env.ctl
        .ok(&["config", "set", "/config/pay/timeout_secs", "7"])
        .await;
    let listed = env.ctl.json(&["config", "list", prefix]).await;
    let text = listed.to_string();
    assert!(!text.contains("hunter2"), "{text}");
    assert!(text.contains("<redacted>"), "{text}");
    assert!(text.contains("\"value\":7"), "{text}");
    let got = env.ctl.ok(&["config", "get", "/config/pay/api_key"]).await;
    assert!(
        !got.contains("hunter2") && got.contains("<redacted>"),
        "{got}"
    );
}

#[derive(CoordConfig, Debug, Clone, PartialEq)]
struct Account {
    user: String,
    #[coord(secret)]
    password: coord::Secret<String>,
}

#[derive(CoordConfig, Debug, Clone, PartialEq)]
struct Vault {
    /// API tokens by partner.
    #[coord(map)]
    tokens: coord::config::Map<coord::Secret<String>>,
    /// Database accounts by name.
    #[coord(map, nested)]
    accounts: coord::config::Map<Account>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn map_secrets_and_nested_secret_fields_are_redacted_in_get_list_set_history_and_diff() {
    // Every stored secret carries it, so one search finds any that leaks.
    const MARK: &str = "s3cr3t";
    let env = env().await;
    let prefix = "/config/vault";
    let config = env.coord.config();
    config.publish_schema_at::<Vault>(prefix).await.unwrap();
    for round in ["one", "two"] {
        let values = [
            ("tokens/acme", format!("tok-{round}-{MARK}")),
            ("accounts/main/user", "ana".to_owned()),
            ("accounts/main/password", format!("pw-{round}-{MARK}")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), Value::String(v)))
        .collect();
        config.release_raw(prefix, values).commit().await.unwrap();
    }
    let hidden = |what: &str, text: &str| {
        assert!(!text.contains(MARK), "{what} shows a secret: {text}");
        assert!(text.contains("<redacted>"), "{what}: {text}");
    };
    for key in [
        "/config/vault/tokens/acme",
        "/config/vault/accounts/main/password",
    ] {
        hidden(key, &env.ctl.ok(&["config", "get", key]).await);
        hidden(
            key,
            &env.ctl.json(&["config", "get", key]).await.to_string(),
        );
    }
    let user = env
        .ctl
        .json(&["config", "get", "/config/vault/accounts/main/user"])
        .await;
    assert_eq!(user["value"], "ana");
    hidden("list", &env.ctl.ok(&["config", "list", prefix]).await);
    let listed = env.ctl.json(&["config", "list", prefix]).await;
    hidden("list -o json", &listed.to_string());
    assert!(listed.to_string().contains("\"ana\""), "{listed}");
    let history = env.ctl.json(&["config", "history", prefix]).await;
    hidden("history -o json", &history.to_string());
    hidden(
        "diff",
        &env.ctl.ok(&["config", "diff", prefix, "1", "2"]).await,
    );
    let diff = env.ctl.json(&["config", "diff", prefix, "1", "2"]).await;
    hidden("diff -o json", &diff.to_string());
    assert_eq!(
        diff.as_array().unwrap().len(),
        2,
        "both secrets changed: {diff}"
    );
    let set = env
        .ctl
        .json(&[
            "config",
            "set",
            "/config/vault/tokens/acme",
            &format!("\"tok-three-{MARK}\""),
        ])
        .await;
    hidden("set -o json", &set.to_string());
    let rollback = env
        .ctl
        .json(&["config", "rollback", prefix, "1", "-m", "back"])
        .await;
    hidden("rollback -o json", &rollback.to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_history_diff_and_rollback_round_trip() {
    let env = env().await;
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("first.json");
    let second = dir.path().join("second.json");
    std::fs::write(&first, r#"{"timeout_secs": 10, "mode": "fast"}"#).unwrap();
    std::fs::write(&second, r#"{"timeout_secs": 20}"#).unwrap();
    let prefix = "/config/h";
    env.ctl
        .ok(&[
            "config",
            "release",
            prefix,
            "-f",
            path_text(&first),
            "-m",
            "one",
        ])
        .await;
    env.ctl
        .ok(&[
            "config",
            "release",
            prefix,
            "-f",
            path_text(&second),
            "-m",
            "two",
        ])
        .await;

    let history = env.ctl.json(&["config", "history", prefix]).await;
    let seqs: Vec<u64> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [2, 1]);
    assert_eq!(history[0]["message"], "two");

    let diff = env.ctl.json(&["config", "diff", prefix, "1", "2"]).await;
    assert_eq!(diff.as_array().unwrap().len(), 1, "{diff}");
    assert_eq!(diff[0]["key"], "timeout_secs");
    assert_eq!(diff[0]["old"], 10);
    assert_eq!(diff[0]["new"], 20);

    env.ctl
        .ok(&["config", "rollback", prefix, "1", "-m", "back"])
        .await;
    assert_eq!(
        env.coord
            .config()
            .get::<u64>("/config/h/timeout_secs")
            .await
            .unwrap(),
        10
    );
    let history = env.ctl.json(&["config", "history", prefix]).await;
    assert_eq!(history[0]["seq"], 3);
    assert_eq!(history[0]["kind"], "rollback to 1");
    let table = env.ctl.ok(&["config", "history", prefix]).await;
    assert!(table.starts_with("SEQ"), "{table}");
    assert!(table.contains("rollback to 1"), "{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_ls_shows_an_etcdctl_holder_then_a_coord_waiter() {
    let env = env().await;
    let mut etcdctl = env.server.spawn_etcdctl(&["lock", "/locks/job"]).unwrap();
    let mut lines = BufReader::new(etcdctl.stdout.take().unwrap()).lines();
    let holder = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("etcdctl takes the lock")
        .unwrap()
        .expect("etcdctl prints its key");
    let locks = env.coord.locks();
    let waiter =
        tokio::spawn(async move { locks.acquire("/locks/job", Duration::from_secs(30)).await });
    let mut listed = Value::Null;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        listed = env.ctl.json(&["locks", "ls", "/locks/"]).await;
        if listed[0]["waiters"]
            .as_array()
            .is_some_and(|w| w.len() == 1)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["name"], "/locks/job");
    assert_eq!(listed[0]["holder"], holder.as_str());
    assert!(listed[0]["fencing_token"].as_i64().unwrap() > 0);
    let waiters = listed[0]["waiters"].as_array().unwrap();
    assert_eq!(waiters.len(), 1, "the coord waiter: {listed}");
    assert_ne!(waiters[0]["key"], holder.as_str());
    assert!(!waiter.is_finished(), "coord waits behind etcdctl");

    let table = env.ctl.ok(&["locks", "ls", "/locks/"]).await;
    assert!(table.contains(&holder), "{table}");

    etcdctl.start_kill().unwrap();
    let _ = etcdctl.wait().await;
    waiter.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_ls_lists_the_ids_an_allocator_holds() {
    let env = env().await;
    let allocator = env.coord.ids("worker", 16).await.unwrap();
    let a = allocator.acquire().await.unwrap();
    let b = allocator.acquire().await.unwrap();
    let listed = env.ctl.json(&["ids", "ls", "worker"]).await;
    let ids: Vec<u64> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_u64().unwrap())
        .collect();
    let mut expected = vec![u64::from(a.id()), u64::from(b.id())];
    expected.sort_unstable();
    assert_eq!(ids, expected);
    let lease = format!("{:x}", allocator.lease_id());
    assert!(listed
        .as_array()
        .unwrap()
        .iter()
        .all(|i| i["lease"] == lease.as_str()));
    let table = env.ctl.ok(&["ids", "ls", "worker"]).await;
    assert!(table.starts_with("ID"), "{table}");
    assert!(table.contains(&lease), "{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_is_exit_3_and_conflict_is_exit_4() {
    let env = env().await;
    let missing = env.ctl.run(&["config", "get", "/nope/key"]).await;
    expect_code(&missing, 3);
    let missing = env.ctl.run(&["config", "delete", "/nope/key"]).await;
    expect_code(&missing, 3);
    let missing = env.ctl.run(&["config", "rollback", "/nope", "7"]).await;
    expect_code(&missing, 3);

    env.ctl.ok(&["config", "set", "/c/k", "1"]).await;
    let (_, version) = env
        .coord
        .config()
        .get_with_version::<u64>("/c/k")
        .await
        .unwrap();
    let stale = (version - 1).to_string();
    let conflict = env
        .ctl
        .run(&["config", "set", "/c/k", "2", "--expect-version", &stale])
        .await;
    expect_code(&conflict, 4);
    assert_eq!(env.coord.config().get::<u64>("/c/k").await.unwrap(), 1);
    let current = version.to_string();
    env.ctl
        .ok(&["config", "set", "/c/k", "2", "--expect-version", &current])
        .await;

    let usage = env.ctl.run(&["config", "frobnicate"]).await;
    expect_code(&usage, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_endpoint_fails_within_the_dial_timeout_naming_it() {
    // Reserve a port, then free it: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    let out = Ctl::bare()
        .run(&[
            "--endpoints",
            &endpoint,
            "--dial-timeout",
            "1s",
            "config",
            "get",
            "/x",
        ])
        .await;
    let took = started.elapsed();
    let message = expect_exit(&out, 1, &endpoint);
    assert_eq!(message.trim().lines().count(), 1, "one line: {message}");
    // A generous bound on a failure path: the dial timeout is 1 s.
    assert!(took < Duration::from_secs(20), "took {took:?}");
}

/// The default config of the harness works with `ClientConfig` too: the binary reads
/// COORD_ENDPOINTS when no flag is given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_come_from_the_environment_without_flags() {
    let env = env().await;
    let config: ClientConfig = env.server.client_config();
    let out = Ctl::bare()
        .env("COORD_ENDPOINTS", &config.endpoints.join(","))
        .env("COORD_ENV", "test")
        .run(&["health", "-o", "json"])
        .await;
    expect_ok(&out);
    let health: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(health["reachable"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_shows_each_instance_and_waits_for_a_release() {
    let env = env().await;
    let prefix = "/config/ro";
    let dir = tempfile::tempdir().unwrap();
    let values = dir.path().join("v.json");
    std::fs::write(&values, r#"{"timeout_secs": 12}"#).unwrap();
    let config = env
        .server
        .client_config()
        .with_instance(coord::Instance::new("web-1").label("zone", "eu"));
    let instance = Coord::connect(config).await.unwrap();
    let live = instance.live_at::<Checkout>(prefix).await.unwrap();
    let file = values.to_str().unwrap();
    env.ctl.ok(&["config", "release", prefix, "-f", file]).await;
    let waited = env
        .ctl
        .run(&[
            "config",
            "rollout",
            prefix,
            "--wait",
            "1",
            "--timeout",
            "20s",
            "-o",
            "json",
        ])
        .await;
    expect_ok(&waited);
    assert_eq!(
        stderr(&waited),
        "",
        "no spinner where stderr is not a terminal"
    );
    let waited: Value =
        serde_json::from_slice(&waited.stdout).expect("stdout is one JSON document");
    assert_eq!(live.load().timeout_secs, 12);
    assert_eq!(waited[0]["instance"], "web-1");
    assert_eq!(waited[0]["release"], 1);
    let waited = env
        .ctl
        .run(&[
            "config",
            "rollout",
            prefix,
            "--wait",
            "1",
            "--timeout",
            "20s",
        ])
        .await;
    expect_ok(&waited);
    assert_eq!(
        stderr(&waited),
        "",
        "no spinner where stderr is not a terminal"
    );
    let text = String::from_utf8(waited.stdout).unwrap();
    assert!(
        !text.contains('\r') && !text.contains('\x1b'),
        "plain text: {text:?}"
    );
    assert!(
        text.starts_with("INSTANCE") && text.contains("runs release 1"),
        "{text}"
    );
    let table = env.ctl.ok(&["config", "rollout", prefix]).await;
    assert!(table.starts_with("INSTANCE"), "{table}");
    assert!(
        table.contains("web-1") && table.contains("zone=eu"),
        "{table}"
    );

    std::fs::write(&values, r#"{"timeout_secs": 99}"#).unwrap();
    env.ctl
        .ok(&[
            "config",
            "gray",
            "start",
            prefix,
            "-f",
            file,
            "--instance",
            "web-1",
        ])
        .await;
    eventually(
        Duration::from_secs(10),
        "web-1 runs the gray values",
        || live.load().timeout_secs == 99,
    )
    .await;
    assert_eq!(
        env.coord
            .config()
            .get::<u64>("/config/ro/timeout_secs")
            .await
            .unwrap(),
        12,
        "the prefix keeps its values during a gray release"
    );
    env.ctl
        .ok(&["config", "gray", "promote", prefix, "2"])
        .await;
    assert_eq!(
        env.coord
            .config()
            .get::<u64>("/config/ro/timeout_secs")
            .await
            .unwrap(),
        99
    );
    let no_selector = env
        .ctl
        .run(&["config", "gray", "start", prefix, "-f", file])
        .await;
    expect_code(&no_selector, 2);
    drop(live);
    instance.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_prints_the_published_fields() {
    let env = env().await;
    env.coord
        .config()
        .publish_schema_at::<Checkout>("/config/d")
        .await
        .unwrap();
    let table = env.ctl.ok(&["config", "describe", "/config/d"]).await;
    assert!(
        table.contains("timeout_secs") && table.contains("u64"),
        "{table}"
    );
    assert!(
        table.contains("Seconds before a payment attempt"),
        "{table}"
    );
    let doc = env.ctl.json(&["config", "describe", "/config/d"]).await;
    assert_eq!(doc["fields"][0]["key"], "timeout_secs");
    assert_eq!(doc["fields"][0]["default"], 30);
    let missing = env.ctl.run(&["config", "describe", "/config/none"]).await;
    expect_code(&missing, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_prints_one_json_object_per_change() {
    let env = env().await;
    let mut child = env
        .ctl
        .spawn(&["config", "watch", "/config/w", "-o", "json"]);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // The watch starts after the process connects; write until a line comes.
    let line = tokio::time::timeout(Duration::from_secs(20), async {
        let mut n = 0u64;
        loop {
            n += 1;
            env.coord.config().set("/config/w/n", &n).await.unwrap();
            if let Ok(line) =
                tokio::time::timeout(Duration::from_millis(300), lines.next_line()).await
            {
                return line.unwrap().expect("a line");
            }
        }
    })
    .await
    .expect("watch printed a change");
    let event: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(event["type"], "put");
    assert_eq!(event["key"], "/config/w/n");
    assert!(
        event["value"].is_u64() && event["revision"].is_i64(),
        "{event}"
    );
    child.start_kill().unwrap();
    let _ = child.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_release_needs_force_and_revokes_the_holder() {
    let env = env().await;
    let guard = env
        .coord
        .locks()
        .acquire("/locks/stuck", Duration::from_secs(60))
        .await
        .unwrap();
    let refused = env.ctl.run(&["locks", "release", "/locks/stuck"]).await;
    expect_code(&refused, 2);
    assert!(guard.is_alive());
    env.ctl
        .ok(&["locks", "release", "/locks/stuck", "--force", "--yes"])
        .await;
    tokio::time::timeout(Duration::from_secs(20), guard.lost())
        .await
        .expect("the holder learns it lost the lock");
    let missing = env
        .ctl
        .run(&["locks", "release", "/locks/stuck", "--force", "--yes"])
        .await;
    expect_code(&missing, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_ls_and_election_leader_read_the_registry_and_the_election() {
    let env = env().await;
    let _registration = env
        .coord
        .registry()
        .register(
            coord::ServiceInfo::new("checkout", "checkout-1", "10.0.0.7:50051"),
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    let all = env.ctl.json(&["services", "ls"]).await;
    assert_eq!(all["checkout"], 1);
    let instances = env.ctl.json(&["services", "ls", "checkout"]).await;
    assert_eq!(instances[0]["address"], "10.0.0.7:50051");
    let none = env
        .ctl
        .run(&["election", "leader", "/election/sched"])
        .await;
    expect_code(&none, 3);
    let _leadership = env
        .coord
        .election("/election/sched")
        .campaign("node-a")
        .await
        .unwrap();
    let leader = env
        .ctl
        .json(&["election", "leader", "/election/sched"])
        .await;
    assert_eq!(leader["value"], "node-a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_flags_reach_an_etcd_that_requires_client_certificates() {
    let server = EtcdServer::builder()
        .tls(true)
        .client_cert_auth(true)
        .start()
        .await
        .expect("start etcd with TLS and client-certificate auth");
    let coord = Coord::connect(server.client_config()).await.unwrap();
    coord
        .config()
        .set("/config/tls/mode", &"strict")
        .await
        .unwrap();
    let files = server.tls_files().expect("TLS files").clone();
    let endpoint = server.endpoint();
    assert!(endpoint.starts_with("https://"), "{endpoint}");
    let (ca, cert, key) = (
        path_text(&files.ca_file),
        path_text(&files.client_cert_file),
        path_text(&files.client_key_file),
    );

    let health = Ctl::bare()
        .run(&[
            "--endpoints",
            &endpoint,
            "--cacert",
            ca,
            "--cert",
            cert,
            "--key",
            key,
            "health",
            "-o",
            "json",
        ])
        .await;
    expect_ok(&health);
    let doc: Value = serde_json::from_slice(&health.stdout).unwrap();
    assert_eq!(doc["reachable"], true, "{doc}");
    let got = Ctl::bare()
        .run(&[
            "--endpoints",
            &endpoint,
            "--cacert",
            ca,
            "--cert",
            cert,
            "--key",
            key,
            "config",
            "get",
            "/config/tls/mode",
        ])
        .await;
    expect_ok(&got);
    assert_eq!(String::from_utf8_lossy(&got.stdout).trim(), "\"strict\"");

    // Without the CA the server's certificate cannot be checked.
    let untrusted = Ctl::bare()
        .run(&[
            "--endpoints",
            &endpoint,
            "--dial-timeout",
            "2s",
            "--cert",
            cert,
            "--key",
            key,
            "config",
            "get",
            "/config/tls/mode",
        ])
        .await;
    expect_code(&untrusted, 1);
    let message = stderr(&untrusted);
    assert_eq!(message.trim().lines().count(), 1, "one line: {message}");
    assert!(message.contains(&endpoint), "{message}");
    assert!(message.contains("UnknownIssuer"), "{message}");
    assert!(untrusted.stdout.is_empty(), "nothing on stdout");

    // Without the client certificate etcd refuses the handshake.
    let anonymous = Ctl::bare()
        .run(&[
            "--endpoints",
            &endpoint,
            "--dial-timeout",
            "2s",
            "--cacert",
            ca,
            "config",
            "get",
            "/config/tls/mode",
        ])
        .await;
    expect_code(&anonymous, 1);
    let message = stderr(&anonymous);
    assert_eq!(message.trim().lines().count(), 1, "one line: {message}");
    assert!(message.contains(&endpoint), "{message}");

    // No TLS flag at all for an https endpoint is a mistake in the flags, caught before dialing.
    let plain = Ctl::bare()
        .run(&[
            "--endpoints",
            &endpoint,
            "config",
            "get",
            "/config/tls/mode",
        ])
        .await;
    expect_code(&plain, 2);
    let message = stderr(&plain);
    assert_eq!(message.trim().lines().count(), 1, "one line: {message}");
    assert!(
        message.contains(&endpoint) && message.contains("--cacert"),
        "{message}"
    );
    coord.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_and_password_flags_log_in_and_a_wrong_password_is_refused() {
    use coord::testing::{ROOT_PASSWORD, ROOT_USER};
    let server = EtcdServer::builder()
        .auth(true)
        .start()
        .await
        .expect("start etcd with auth");
    let coord = Coord::connect(server.client_config()).await.unwrap();
    let key = "/config/auth/level";
    coord.config().set(key, &3).await.unwrap();
    let endpoint = server.endpoint();

    let root = Ctl::bare()
        .run(&[
            "--endpoints",
            &endpoint,
            "--user",
            ROOT_USER,
            "--password",
            ROOT_PASSWORD,
            "config",
            "get",
            key,
            "-o",
            "json",
        ])
        .await;
    expect_ok(&root);
    let doc: Value = serde_json::from_slice(&root.stdout).unwrap();
    assert_eq!(doc["value"], 3, "{doc}");

    let dir = tempfile::tempdir().unwrap();
    let password_file = dir.path().join("password");
    std::fs::write(&password_file, format!("{ROOT_PASSWORD}\n")).unwrap();
    let from_file = Ctl::bare()
        .run(&[
            "--endpoints",
            &endpoint,
            "--user",
            ROOT_USER,
            "--password-file",
            path_text(&password_file),
            "config",
            "set",
            key,
            "4",
        ])
        .await;
    expect_ok(&from_file);
    assert_eq!(coord.config().get::<u64>(key).await.unwrap(), 4);

    let wrong = Ctl::bare()
        .run(&[
            "--endpoints",
            &endpoint,
            "--user",
            ROOT_USER,
            "--password",
            "not-the-password",
            "config",
            "get",
            key,
        ])
        .await;
    expect_code(&wrong, 1);
    let message = stderr(&wrong);
    assert_eq!(message.trim().lines().count(), 1, "one line: {message}");
    assert!(message.contains("authentication failed"), "{message}");
    assert!(wrong.stdout.is_empty(), "nothing on stdout");

    std::fs::write(&password_file, "not-the-password\n").unwrap();
    let wrong_file = Ctl::bare()
        .run(&[
            "--endpoints",
            &endpoint,
            "--user",
            ROOT_USER,
            "--password-file",
            path_text(&password_file),
            "config",
            "get",
            key,
        ])
        .await;
    expect_code(&wrong_file, 1);
    assert_eq!(stderr(&wrong_file), message, "the same refusal");
    coord.close().await.unwrap();
}

/// The next line `lines` gives, as JSON; panics after a generous deadline.
async fn next_json_line(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    what: &str,
) -> Value {
    let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .unwrap_or_else(|_| panic!("no line within 20s: {what}"))
        .expect("read coordctl's stdout")
        .unwrap_or_else(|| panic!("coordctl closed its stdout before {what}"));
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("not one JSON object ({e}): {line}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_watch_prints_one_json_object_per_registration_change() {
    let env = env().await;
    let mut child = env
        .ctl
        .spawn(&["services", "watch", "checkout", "-o", "json"]);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let registry = env.coord.registry();
    // The watch lists the instances already there first, so this registration shows as
    // `registered` whether it lands before or after the watch starts.
    let registration = registry
        .register(
            coord::ServiceInfo::new("checkout", "checkout-1", "10.0.0.7:50051")
                .with_version("1.2.0")
                .with_metadata("zone", "eu"),
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    let registered = next_json_line(&mut lines, "the registration").await;
    assert_eq!(registered["type"], "registered", "{registered}");
    assert_eq!(registered["instance"]["id"], "checkout-1", "{registered}");
    assert_eq!(registered["instance"]["name"], "checkout", "{registered}");
    assert_eq!(
        registered["instance"]["address"], "10.0.0.7:50051",
        "{registered}"
    );
    assert_eq!(registered["instance"]["version"], "1.2.0", "{registered}");
    assert_eq!(
        registered["instance"]["metadata"]["zone"], "eu",
        "{registered}"
    );

    // Another service, even one whose name starts the same, is not this watch's business.
    let _other = registry
        .register(
            coord::ServiceInfo::new("checkout-admin", "admin-1", "10.0.0.8:50051"),
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    registration.deregister().await.unwrap();
    let unregistered = next_json_line(&mut lines, "the deregistration").await;
    assert_eq!(unregistered["type"], "unregistered", "{unregistered}");
    assert_eq!(
        unregistered["instance"]["id"], "checkout-1",
        "{unregistered}"
    );

    child.start_kill().unwrap();
    let _ = child.wait().await;
}

/// Runs `coordctl … locks release NAME --force` without `--yes`, feeding `answer` on stdin.
async fn release_answering(env: &Env, name: &str, answer: &[u8]) -> Output {
    use tokio::io::AsyncWriteExt;
    let mut child = env
        .ctl
        .command(&["locks", "release", name, "--force"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(answer).await.unwrap();
    // Closing stdin is what a pipe that has said all it has does.
    drop(stdin);
    tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("coordctl answers within 30s")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_release_asks_on_stderr_and_n_keeps_the_holder() {
    let env = env().await;
    let guard = env
        .coord
        .locks()
        .acquire("/locks/asked", Duration::from_secs(60))
        .await
        .unwrap();
    let declined = release_answering(&env, "/locks/asked", b"n\n").await;
    expect_code(&declined, 1);
    let message = stderr(&declined);
    let question = format!(
        "revoke lease {:x} of {} (fencing token {})? [y/N] ",
        guard.lease_id(),
        guard.key(),
        guard.fencing_token()
    );
    assert!(message.starts_with(&question), "the question: {message}");
    assert!(message.contains("nothing changed"), "{message}");
    assert!(declined.stdout.is_empty(), "the question is not on stdout");
    assert!(guard.is_alive());
    let listed = env.ctl.json(&["locks", "ls", "/locks/"]).await;
    assert_eq!(
        listed[0]["holder"],
        guard.key(),
        "still the holder: {listed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_release_asks_on_stderr_and_y_revokes_the_holder() {
    let env = env().await;
    let guard = env
        .coord
        .locks()
        .acquire("/locks/asked", Duration::from_secs(60))
        .await
        .unwrap();
    let confirmed = release_answering(&env, "/locks/asked", b"y\n").await;
    expect_exit(
        &confirmed,
        0,
        &format!("revoke lease {:x}", guard.lease_id()),
    );
    let stdout = stdout(&confirmed);
    assert!(
        stdout.contains(&format!("revoked lease {:x}", guard.lease_id())),
        "{stdout}"
    );
    tokio::time::timeout(Duration::from_secs(20), guard.lost())
        .await
        .expect("the holder learns it lost the lock");
    let listed = env.ctl.json(&["locks", "ls", "/locks/"]).await;
    assert_eq!(listed, serde_json::json!([]), "no lock left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_release_with_stdin_closed_changes_nothing_and_points_to_yes() {
    let env = env().await;
    let guard = env
        .coord
        .locks()
        .acquire("/locks/asked", Duration::from_secs(60))
        .await
        .unwrap();
    let unanswered = release_answering(&env, "/locks/asked", b"").await;
    let message = expect_exit(&unanswered, 1, "--yes");
    assert_eq!(
        message.lines().last().map(|l| l.starts_with("coordctl: ")),
        Some(true),
        "the error on a line of its own: {message}"
    );
    assert!(guard.is_alive());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_release_revokes_nothing_if_the_lock_changed_hands_during_the_question() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let env = env().await;
    let first = env
        .coord
        .locks()
        .acquire("/locks/moving", Duration::from_secs(60))
        .await
        .unwrap();
    let mut child = env
        .ctl
        .command(&["locks", "release", "/locks/moving", "--force"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut errors = child.stderr.take().unwrap();
    let mut asked = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), async {
        while !String::from_utf8_lossy(&asked).contains("[y/N]") {
            let mut chunk = [0u8; 256];
            let n = errors.read(&mut chunk).await.unwrap();
            assert!(n > 0, "stderr closed before the question");
            asked.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .expect("coordctl asks");
    first.unlock().await.unwrap();
    let other = Coord::connect(env.server.client_config()).await.unwrap();
    let second = other
        .locks()
        .acquire("/locks/moving", Duration::from_secs(60))
        .await
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"y\n").await.unwrap();
    drop(stdin);
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("coordctl answers within 30s")
        .unwrap();
    let mut rest = String::new();
    errors.read_to_string(&mut rest).await.unwrap();
    assert_eq!(status.code(), Some(4), "{rest}");
    assert!(rest.contains("changed hands"), "{rest}");
    assert!(second.is_alive(), "the new holder keeps the lock");
    let listed = env.ctl.json(&["locks", "ls", "/locks/"]).await;
    assert_eq!(listed[0]["holder"], second.key(), "{listed}");
    drop(second);
    other.close().await.unwrap();
}

/// A pseudo-terminal: `(the side the test reads, the terminal side a child writes to)`.
fn open_pty() -> (std::fs::File, std::os::fd::OwnedFd) {
    use std::os::fd::FromRawFd;
    let mut reader: libc::c_int = -1;
    let mut terminal: libc::c_int = -1;
    let size = libc::winsize {
        ws_row: 24,
        ws_col: 120,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: openpty writes two new descriptors through the first two pointers; a null name
    // and termios are allowed, and `size` outlives the call.
    let rc = unsafe {
        libc::openpty(
            &mut reader,
            &mut terminal,
            std::ptr::null_mut(),
            std::ptr::null(),
            &size,
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just opened and nothing else owns them.
    unsafe {
        (
            std::fs::File::from(std::os::fd::OwnedFd::from_raw_fd(reader)),
            std::os::fd::OwnedFd::from_raw_fd(terminal),
        )
    }
}

/// Everything written to the terminal side of a pty, as it arrives; ends when every writer
/// has closed it.
fn read_pty(mut reader: std::fs::File) -> tokio::sync::mpsc::UnboundedReceiver<Vec<u8>> {
    use std::io::Read;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        // Linux answers EIO, not 0, once the last writer is gone: both end the stream.
        while let Ok(n @ 1..) = reader.read(&mut chunk) {
            if tx.send(chunk[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    rx
}

/// Runs coordctl with stderr on a new pty that says it can redraw a line (`TERM`), and stdout
/// on a pipe.
fn spawn_with_terminal_stderr(
    env: &Env,
    args: &[&str],
) -> (
    tokio::process::Child,
    tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>,
) {
    let (reader, terminal) = open_pty();
    let child = env
        .ctl
        .command(args)
        .env("TERM", "xterm-256color")
        .stdout(Stdio::piped())
        .stderr(Stdio::from(terminal))
        .spawn()
        .unwrap();
    // The command (and its copy of the terminal side) is dropped here, so the reader ends
    // when the child exits.
    (child, read_pty(reader))
}

/// Pretends an instance `name` on `prefix` is current at `revision`, through the status key
/// layout `coord::config` documents (`/coord/status{prefix}//{instance}`).
async fn report_status(coord: &Coord, prefix: &str, name: &str, revision: i64) {
    let status = serde_json::json!({
        "instance": name,
        "prefix": prefix,
        "revision": revision,
        "updated_ms": 0,
    });
    coord
        .store()
        .put(
            &format!("/coord/status{prefix}//{name}"),
            status.to_string().into_bytes(),
            0,
        )
        .await
        .unwrap();
}

/// Makes release 1 of `prefix` through the CLI; returns the revision it took effect at.
async fn release_one(env: &Env, prefix: &str) -> i64 {
    let dir = tempfile::tempdir().unwrap();
    let values = dir.path().join("v.json");
    std::fs::write(&values, r#"{"timeout_secs": 12}"#).unwrap();
    env.ctl
        .ok(&["config", "release", prefix, "-f", path_text(&values)])
        .await;
    let history = env.ctl.json(&["config", "history", prefix]).await;
    history[0]["revision"].as_i64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_wait_with_no_instance_says_so_and_exits_3() {
    let env = env().await;
    let prefix = "/config/nobody";
    release_one(&env, prefix).await;
    for format in [&[][..], &["-o", "json"][..]] {
        let mut args = vec![
            "config",
            "rollout",
            prefix,
            "--wait",
            "1",
            "--timeout",
            "5s",
        ];
        args.extend_from_slice(format);
        let out = env.ctl.run(&args).await;
        let message = stderr(&out);
        assert_eq!(out.status.code(), Some(3), "{format:?}: {message}");
        assert!(
            message.contains("no instances on /config/nobody") && message.contains("release 1"),
            "{format:?}: {message}"
        );
        assert!(
            out.stdout.is_empty(),
            "{format:?}: nothing on stdout reads as a success: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    // Without --wait it is a listing, and an empty one says so.
    let table = env.ctl.ok(&["config", "rollout", prefix]).await;
    assert!(
        table.starts_with("INSTANCE") && table.contains("no instances on /config/nobody"),
        "{table}"
    );
    let json = env.ctl.json(&["config", "rollout", prefix]).await;
    assert_eq!(json, serde_json::json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_wait_spins_on_a_terminal_stderr_and_clears_the_line_when_done() {
    let env = env().await;
    let prefix = "/config/spin";
    let revision = release_one(&env, prefix).await;
    // An instance still on the config before release 1 keeps the wait going.
    report_status(&env.coord, prefix, "slow-1", revision - 1).await;

    let (child, mut terminal) = spawn_with_terminal_stderr(
        &env,
        &[
            "config",
            "rollout",
            prefix,
            "--wait",
            "1",
            "--timeout",
            "60s",
        ],
    );
    let message = format!("waiting for every instance on {prefix} to run release 1");
    let mut drawn = String::new();
    tokio::time::timeout(Duration::from_secs(20), async {
        // A frame is the message with the elapsed time after it: "(0s)", "(1s)"…
        while !drawn.contains(&format!("{message} (")) {
            let chunk = terminal
                .recv()
                .await
                .expect("the terminal stays open while waiting");
            drawn.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no spinner on the terminal: {drawn:?}"));

    report_status(&env.coord, prefix, "slow-1", revision).await;
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("the wait ends once the instance runs release 1")
        .unwrap();
    while let Some(chunk) = terminal.recv().await {
        drawn.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(out.status.success(), "{drawn:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.starts_with("INSTANCE") && stdout.contains("slow-1"),
        "{stdout}"
    );
    assert!(
        !stdout.contains('\r') && !stdout.contains('\x1b'),
        "the spinner stays off stdout: {stdout:?}"
    );
    // Each frame is drawn over the last after clearing the line (ESC [2K); the last thing
    // on the terminal is such a clear, with no frame after it.
    let last_clear = drawn
        .rfind("\x1b[2K")
        .unwrap_or_else(|| panic!("no line clear: {drawn:?}"));
    assert!(
        !drawn[last_clear..].contains(&message),
        "the spinner's line is cleared at the end: {drawn:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_wait_with_json_output_draws_no_spinner_even_on_a_terminal() {
    let env = env().await;
    let prefix = "/config/nospin";
    let revision = release_one(&env, prefix).await;
    report_status(&env.coord, prefix, "slow-1", revision - 1).await;

    // The instance never catches up: the command waits its whole timeout, time enough for
    // a spinner to draw if there were one.
    let (child, mut terminal) = spawn_with_terminal_stderr(
        &env,
        &[
            "config",
            "rollout",
            prefix,
            "--wait",
            "1",
            "--timeout",
            "1s",
            "-o",
            "json",
        ],
    );
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("the wait times out")
        .unwrap();
    let mut drawn = String::new();
    while let Some(chunk) = terminal.recv().await {
        drawn.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert_eq!(out.status.code(), Some(1), "{drawn:?}");
    assert!(drawn.contains("timed out"), "the error: {drawn:?}");
    assert!(
        !drawn.contains("waiting for") && !drawn.contains('\x1b'),
        "no spinner: {drawn:?}"
    );
    assert_eq!(drawn.trim().lines().count(), 1, "only the error: {drawn:?}");
}

/// A token file holding one token, with `mode`.
fn token_file(dir: &tempfile::TempDir, name: &str, mode: u32) -> std::path::PathBuf {
    let path = private_file(dir.path(), name, "ana:console-test-token-0123456789\n");
    chmod(&path, mode);
    path
}

/// Runs `coordctl console ARGS`, which must refuse to start (exit 2) rather than serve;
/// returns what it said.
async fn console_refused(env: &Env, args: &[&str]) -> String {
    let mut all = vec!["console"];
    all.extend(args);
    let out = tokio::time::timeout(Duration::from_secs(30), env.ctl.run(&all))
        .await
        .unwrap_or_else(|_| panic!("coordctl {all:?} served instead of refusing to start"));
    expect_code(&out, 2);
    stderr(&out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_refuses_to_listen_beyond_loopback_without_read_tokens_or_allowed_hosts() {
    let env = env().await;
    let dir = tempfile::tempdir().unwrap();
    let readers = token_file(&dir, "readers", 0o600);
    let readers = path_text(&readers);
    let said = console_refused(&env, &["--listen", "0.0.0.0:0"]).await;
    assert!(said.contains("--read-token-file"), "{said}");
    let said = console_refused(
        &env,
        &["--listen", "0.0.0.0:0", "--read-token-file", readers],
    )
    .await;
    assert!(said.contains("--allowed-host"), "{said}");
    let said = console_refused(
        &env,
        &[
            "--listen",
            "0.0.0.0:0",
            "--allowed-host",
            "console.internal",
        ],
    )
    .await;
    assert!(said.contains("--read-token-file"), "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_refuses_a_token_file_other_users_can_open() {
    let env = env().await;
    let dir = tempfile::tempdir().unwrap();
    for flag in ["--token-file", "--read-token-file"] {
        for mode in [0o644, 0o640, 0o660] {
            let path = token_file(&dir, "tokens", mode);
            let said =
                console_refused(&env, &["--listen", "127.0.0.1:0", flag, path_text(&path)]).await;
            assert!(said.contains(path_text(&path)), "{said}");
            assert!(said.contains("chmod 600"), "{said}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gray_conflicts_exit_4_coords_own_prefix_is_refused_and_history_rows_cannot_be_forged() {
    let env = env().await;
    let prefix = "/config/g";
    env.coord
        .config()
        .publish_schema_at::<Checkout>(prefix)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let values = dir.path().join("values.json");
    std::fs::write(&values, r#"{"timeout_secs": 99}"#).unwrap();
    let file = path_text(&values);
    env.ctl.ok(&["config", "release", prefix, "-f", file]).await;
    env.ctl
        .ok(&[
            "config",
            "gray",
            "start",
            prefix,
            "-f",
            file,
            "--instance",
            "web-1",
        ])
        .await;

    let second = env
        .ctl
        .run(&[
            "config",
            "gray",
            "start",
            prefix,
            "-f",
            file,
            "--instance",
            "web-2",
        ])
        .await;
    expect_exit(&second, 4, "gray release 2 is in progress");
    let wrong = env
        .ctl
        .run(&["config", "gray", "promote", prefix, "1"])
        .await;
    expect_exit(&wrong, 4, "not the gray release in progress");
    env.ctl.ok(&["config", "gray", "abort", prefix, "2"]).await;

    // coord's own keys: refused as a usage error, nothing written.
    let before = env.coord.store().status().await.unwrap().revision;
    for args in [
        vec!["config", "set", "/coord/gray/config/g", "{}", "--force"],
        vec!["config", "delete", "/coord/gray/config/g", "--force"],
        vec!["config", "release", "/coord/gray", "-f", file],
        vec!["config", "rollback", "/coord/releases", "1"],
        vec!["config", "history", "/coord"],
    ] {
        let out = env.ctl.run(&args).await;
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("reserved"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    assert_eq!(env.coord.store().status().await.unwrap().revision, before);

    // An author and a message with line breaks print as one escaped row each.
    let forged = env
        .ctl
        .env("USER", "ana\n8  release  root (coordctl)  ok")
        .run(&[
            "config",
            "set",
            "/config/g/timeout_secs",
            "7",
            "-m",
            "faster\n9  release  mallory  approved",
        ])
        .await;
    expect_ok(&forged);
    let table = env.ctl.ok(&["config", "history", prefix]).await;
    let rows: Vec<&str> = table.lines().collect();
    assert_eq!(rows.len(), 1 + 4, "a header and four releases: {table}");
    assert!(
        rows.iter()
            .all(|row| !row.starts_with('8') && !row.starts_with('9')),
        "a forged row: {table}"
    );
    assert!(
        table.contains(r"ana\n8  release") && table.contains(r"faster\n9  release"),
        "{table}"
    );
    let json = env.ctl.json(&["config", "history", prefix]).await;
    assert_eq!(
        json[0]["message"], "faster\n9  release  mallory  approved",
        "JSON keeps the text as it is"
    );
}

/// `config list`, `config release` and `config history` on a prefix over 8 MiB (12,000 values
/// of 720 bytes): every key listed, one key released and recorded alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_release_and_history_work_on_a_prefix_over_8_mib() {
    use coord::store::{Txn, TxnOp};
    const KEYS: usize = 12_000;
    let env = env().await;
    let value = serde_json::to_vec(&"x".repeat(718)).unwrap();
    for chunk in (0..KEYS).collect::<Vec<_>>().chunks(100) {
        let ops: Vec<TxnOp> = chunk
            .iter()
            .map(|i| TxnOp::put(format!("/big/k{i:05}"), value.clone()))
            .collect();
        env.coord
            .store()
            .txn(Txn::new().and_then(ops))
            .await
            .unwrap();
    }
    let listed = env.ctl.json(&["config", "list", "/big"]).await;
    let rows = listed.as_array().expect("a list");
    assert_eq!(rows.len(), KEYS, "every key of an 8.9 MB prefix");
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), r#"{"k00042": "changed"}"#).unwrap();
    let path = file.path().to_str().unwrap();
    env.ctl
        .ok(&["config", "release", "/big", "-f", path, "-m", "one key"])
        .await;
    let history = env.ctl.json(&["config", "history", "/big"]).await;
    let history = history.as_array().expect("a list");
    assert_eq!(history.len(), 2, "the prefix as found, then the release");
    let latest = &history[0];
    assert_eq!(latest["changes"].as_array().unwrap().len(), 1, "{latest}");
    assert_eq!(latest["changes"][0]["key"], "k00042");
    assert_eq!(latest["changes"][0]["new"], "changed");
    assert!(
        history[1]["message"]
            .as_str()
            .unwrap()
            .contains("12000 keys found"),
        "{}",
        history[1]
    );
}
