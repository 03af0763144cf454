//! The canary test: distinct canary strings in every kind of secret (a `#[coord(secret)]`
//! field, an entry of a `Map<Secret<String>>`, a secret field of a nested map's entry, a
//! secret that fails to decode, secrets written by the CLI, the console and outside
//! releases) go through every output coord has, and none may show anywhere: release
//! answers, history, diffs, `explain`, `Debug` of every public value, the CLI in both output
//! modes, every console route and its event stream, `last_error` and the rollout status,
//! the `tracing` output of this process and of the console, the Prometheus render and the
//! snapshot files. Each output is also checked to hold what it should (the plain values),
//! so an empty or failed answer cannot pass for a redacted one.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{etcd, expect_ok, path_text, private_file, stderr, Ctl};
use coord::config::{Map, Selector};
use coord::rollout::RolloutPlan;
use coord::testing::EtcdServer;
use coord::{Coord, CoordConfig, Secret};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const FIELD: &str = "CANARY-FIELD-7f3a";
const MAP: &str = "CANARY-MAP-91c2";
const NESTED: &str = "CANARY-NESTED-5d0e";
const REJECTED: &str = "CANARY-REJECTED-2b8f";
const GRAY: &str = "CANARY-GRAY-c4e1";
const OUTSIDE: &str = "CANARY-OUTSIDE-0a9d";
const CLI: &str = "CANARY-CLI-e6b7";
const CONSOLE: &str = "CANARY-CONSOLE-38f0";
const PROPOSED: &str = "CANARY-PROPOSED-6c1d";
const PLANNED: &str = "CANARY-PLANNED-93ae";
const ALL: [&str; 10] = [
    FIELD, MAP, NESTED, REJECTED, GRAY, OUTSIDE, CLI, CONSOLE, PROPOSED, PLANNED,
];

const PREFIX: &str = "/config/vault";
const WRITE_TOKEN: &str = "write-token-not-a-canary-1";
const READ_TOKEN: &str = "read-token-not-a-canary-2";

#[derive(CoordConfig, Debug, Clone, PartialEq)]
struct Account {
    user: String,
    #[coord(secret)]
    password: Secret<String>,
}

#[derive(CoordConfig, Debug, Clone)]
#[coord(prefix = "/config/vault")]
struct Vault {
    #[coord(default = 30)]
    timeout_secs: u64,
    #[coord(secret)]
    api_key: Secret<String>,
    #[coord(map)]
    tokens: Map<Secret<String>>,
    #[coord(map, nested)]
    accounts: BTreeMap<String, Account>,
    /// Stored as a string it cannot decode as: the rejected secret.
    #[coord(secret, default)]
    pin: Secret<u64>,
}

fn vault(n: u64) -> Vault {
    Vault {
        timeout_secs: 30 + n,
        api_key: Secret::new(format!("{FIELD}-{n}")),
        tokens: [("acme".to_owned(), Secret::new(format!("{MAP}-{n}")))]
            .into_iter()
            .collect(),
        accounts: BTreeMap::from([(
            "main".to_owned(),
            Account {
                user: format!("user-{n}"),
                password: Secret::new(format!("{NESTED}-{n}")),
            },
        )]),
        pin: Secret::new(1234),
    }
}

/// Every output seen, by where it came from.
#[derive(Default)]
struct Outputs(Vec<(String, String)>);

impl Outputs {
    fn add(&mut self, from: impl Into<String>, text: impl Into<String>) {
        self.0.push((from.into(), text.into()));
    }

    /// Adds `text` and checks it holds `plain` (a value that is no secret): a failed or
    /// empty answer must not pass for a redacted one.
    fn add_showing(&mut self, from: impl Into<String>, text: impl Into<String>, plain: &str) {
        let (from, text) = (from.into(), text.into());
        assert!(text.contains(plain), "{from} lacks {plain:?}: {text}");
        self.add(from, text);
    }

    fn debug(&mut self, from: &str, value: &dyn std::fmt::Debug) {
        self.add(format!("Debug of {from}"), format!("{value:?}"));
    }
}

/// A `tracing` writer into a shared buffer, so this process's logs can be searched.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs `ctl`, which must succeed; returns all it printed, stdout then stderr.
async fn ctl(ctl: &Ctl, args: &[&str]) -> String {
    let out = ctl.run(args).await;
    format!("{}\n--- stderr ---\n{}", expect_ok(&out), stderr(&out))
}

/// One HTTP/1.1 exchange with the console; `read_for` bounds a stream that does not end.
async fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&serde_json::Value>,
    read_for: Duration,
) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("reach the console");
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() {
        request.push_str("Content-Type: application/json\r\n");
    }
    request.push_str("\r\n");
    request.push_str(&body);
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(read_for, stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_output_path_shows_a_secret() {
    let logs = Captured::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();
    let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .expect("install the Prometheus recorder");

    let server = etcd().await;
    // coordctl on it, logging everything it does (searched for secrets like its output).
    let cli = Ctl::on(server.endpoint()).env("RUST_LOG", "trace");
    let scratch = tempfile::tempdir().unwrap();
    let snapshots = scratch.path().join("snapshots");
    let coord = Coord::connect(
        server
            .client_config()
            .with_snapshot_dir(&snapshots)
            .with_instance(coord::Instance::new("canary-1").label("zone", "canary")),
    )
    .await
    .expect("connect to the test etcd");
    let config = coord.config();
    let mut out = Outputs::default();

    // The library: release answers, Live, explain, diff, gray, history.
    config.publish_schema::<Vault>().await.unwrap();
    let first = config
        .release(&vault(1))
        .message("launch")
        .commit()
        .await
        .unwrap();
    out.add_showing("the first release's answer", format!("{first:?}"), "user-1");
    let live = coord.live::<Vault>().await.unwrap();
    out.add_showing("Live::load", format!("{:?}", *live.load()), "user-1");
    out.debug("the Live handle", &live);
    let explanation = live.explain().unwrap();
    out.add_showing("explain (Display)", explanation.to_string(), "user-1");
    out.debug("explain", &explanation);
    let second = config.release(&vault(2)).commit().await.unwrap();
    out.debug("the second release's answer", &second);
    let diff = config.diff(PREFIX, first.seq, second.seq).await.unwrap();
    out.add_showing("diff", format!("{diff:?}"), "user-2");
    let gray = config
        .release_raw(
            PREFIX,
            BTreeMap::from([("tokens/acme".to_owned(), json!(GRAY))]),
        )
        .to(Selector::default().label("zone", "canary"))
        .commit()
        .await
        .unwrap();
    out.debug("the gray release's answer", &gray);
    let mut seen = live.subscribe();
    tokio::time::timeout(Duration::from_secs(10), async {
        while seen
            .borrow_and_update()
            .tokens
            .get("acme")
            .map(|t| t.expose().as_str())
            != Some(GRAY)
        {
            seen.changed().await.unwrap();
        }
    })
    .await
    .expect("the gray value reaches the canary instance");
    out.debug("explain under a gray release", &live.explain().unwrap());
    out.debug(
        "history with a gray release",
        &config.history(PREFIX, 10).await.unwrap(),
    );
    out.debug(
        "the abort's answer",
        &config.abort(PREFIX, gray.seq).commit().await.unwrap(),
    );

    // A secret that does not decode: last_error, the warning, the rollout status.
    config
        .set(&format!("{PREFIX}/pin"), &REJECTED)
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while live.last_error().is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the bad pin is never reported"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let error = live.last_error().unwrap();
    out.add_showing("last_error", error.to_string(), "expected u64");
    out.debug("last_error", &error);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let statuses = loop {
        let statuses = config.rollout(PREFIX).await.unwrap();
        if statuses.iter().any(|s| s.error.is_some()) {
            break statuses;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no rollout status with the error"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    out.add_showing(
        "the rollout status",
        format!("{statuses:?}"),
        "/config/vault/pin",
    );

    // Changes made outside releases: unrecorded in history, then recorded.
    config
        .set(&format!("{PREFIX}/tokens/outside"), &OUTSIDE)
        .await
        .unwrap();
    let history = config.history(PREFIX, 20).await.unwrap();
    out.add_showing(
        "history with an unrecorded change",
        format!("{history:?}"),
        "Unrecorded",
    );
    let unrecorded = history[0].seq;
    out.debug(
        "a diff to the unrecorded entry",
        &config.diff(PREFIX, second.seq, unrecorded).await.unwrap(),
    );
    out.debug("the schema", &config.schema(PREFIX).await.unwrap());

    // A proposal and a rollout plan (not driven) that carry secrets.
    let proposal = config
        .release_raw(
            PREFIX,
            BTreeMap::from([("tokens/proposed".to_owned(), json!(PROPOSED))]),
        )
        .message("proposed")
        .propose()
        .await
        .unwrap();
    out.debug("the proposal", &proposal);
    out.debug("the proposals", &config.proposals(PREFIX).await.unwrap());
    let plan = coord
        .rollouts()
        .start(
            RolloutPlan::new(
                PREFIX,
                BTreeMap::from([("tokens/planned".to_owned(), json!(PLANNED))]),
            )
            .step(Selector::default(), Duration::from_secs(3600)),
        )
        .await
        .unwrap();
    out.debug("the plan", &plan);
    out.add_showing(
        "the plan as JSON",
        serde_json::to_string(&plan).unwrap(),
        "tokens/planned",
    );

    // The CLI, both output modes.
    ctl(
        &cli,
        &[
            "config",
            "set",
            &format!("{PREFIX}/tokens/cli"),
            &format!("\"{CLI}\""),
            "-m",
            "by the cli",
        ],
    )
    .await;
    for format in ["table", "json"] {
        for args in [
            vec!["config", "get", "/config/vault/api_key"],
            vec!["config", "get", "/config/vault/tokens/acme"],
            vec!["config", "get", "/config/vault/tokens/cli"],
            vec!["config", "get", "/config/vault/accounts/main/password"],
            vec!["config", "get", "/config/vault/pin"],
            vec!["config", "list", PREFIX],
            vec!["config", "describe", PREFIX],
            vec!["config", "history", PREFIX],
            vec!["config", "diff", PREFIX, "1", "2"],
            vec!["config", "rollout", PREFIX],
            vec!["secrets", "status", PREFIX],
            vec!["config", "proposals", PREFIX],
            vec!["config", "proposals", PREFIX, proposal.id.as_str()],
            vec!["config", "plan", "status", PREFIX],
            vec!["audit", "ls"],
        ] {
            let mut args = args.clone();
            args.extend(["-o", format]);
            let text = ctl(&cli, &args).await;
            out.add(format!("coordctl {}", args.join(" ")), text);
        }
    }
    let listed = ctl(&cli, &["config", "list", PREFIX]).await;
    out.add_showing("coordctl config list", listed, "user-2");

    // The console: every route, its event stream, a write, and its own log.
    let write_tokens = private_file(scratch.path(), "write", &format!("ana:{WRITE_TOKEN}\n"));
    let read_tokens = private_file(scratch.path(), "read", &format!("viewer:{READ_TOKEN}\n"));
    let mut console = cli.spawn(&[
        "console",
        "--listen",
        "127.0.0.1:0",
        "--token-file",
        path_text(&write_tokens),
        "--read-token-file",
        path_text(&read_tokens),
    ]);
    // Read the log as it comes: a full pipe would stop the console mid-write.
    let mut stderr = console.stderr.take().unwrap();
    let console_log = tokio::spawn(async move {
        let mut log = String::new();
        let _ = stderr.read_to_string(&mut log).await;
        log
    });
    let mut stdout = BufReader::new(console.stdout.take().unwrap());
    let mut line = String::new();
    tokio::time::timeout(Duration::from_secs(15), stdout.read_line(&mut line))
        .await
        .expect("the console says where it listens")
        .unwrap();
    let addr = line
        .split_whitespace()
        .find_map(|word| word.strip_prefix("http://"))
        .unwrap_or_else(|| panic!("no URL in {line:?}"))
        .trim_end_matches('/')
        .to_owned();
    let read = [("X-Coord-Token", READ_TOKEN)];
    let quick = Duration::from_secs(5);
    let page = http(&addr, "GET", "/", &read, None, quick).await;
    let csrf = page
        .split("name=\"csrf-token\" content=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the page carries its CSRF token")
        .to_owned();
    out.add("console GET /", page);
    for path in [
        "/api/prefixes",
        "/api/config?prefix=/config/vault",
        "/api/history?prefix=/config/vault",
        "/api/rollout?prefix=/config/vault",
        "/api/locks",
        "/api/ids",
        "/api/services",
        "/api/proposals?prefix=/config/vault",
        "/api/plan?prefix=/config/vault",
        "/api/audit",
        "/assets/app.js",
    ] {
        out.add(
            format!("console GET {path}"),
            http(&addr, "GET", path, &read, None, quick).await,
        );
    }
    let config_page = http(
        &addr,
        "GET",
        "/api/config?prefix=/config/vault",
        &read,
        None,
        quick,
    )
    .await;
    out.add_showing("console config", config_page, "user-2");
    let write = [
        ("X-Coord-Token", WRITE_TOKEN),
        ("X-CSRF-Token", csrf.as_str()),
        ("Origin", &format!("http://{addr}")),
    ];
    let released = http(
        &addr,
        "POST",
        "/api/release",
        &write,
        Some(&json!({
            "prefix": PREFIX,
            "values": { "tokens/console": CONSOLE },
            "message": "from the console",
        })),
        quick,
    )
    .await;
    out.add_showing("console POST /api/release", released, "200 OK");
    let events = http(
        &addr,
        "GET",
        "/api/rollout/events?prefix=/config/vault",
        &read,
        None,
        Duration::from_secs(2),
    )
    .await;
    out.add_showing("console event stream", events, "event");
    out.add(
        "console history after its release",
        http(
            &addr,
            "GET",
            "/api/history?prefix=/config/vault",
            &read,
            None,
            quick,
        )
        .await,
    );
    console.start_kill().unwrap();
    let console_log = console_log.await.unwrap();
    assert!(
        console_log.contains("console"),
        "the console logged nothing: {console_log}"
    );
    out.add("the console's log", console_log);

    // The Prometheus render, the snapshot files and this process's log.
    out.add_showing("the Prometheus render", prometheus.render(), "coord_");
    let mut files = 0;
    for entry in std::fs::read_dir(&snapshots).unwrap() {
        let path = entry.unwrap().path();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{} is mode {mode:o}", path.display());
        out.add(
            format!("snapshot file {}", path.display()),
            std::fs::read_to_string(&path).unwrap(),
        );
        files += 1;
    }
    assert!(files > 0, "no snapshot file was written");
    let mode = std::fs::metadata(&snapshots).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "the snapshot directory is mode {mode:o}");
    coord.close().await.unwrap();
    let log = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    out.add_showing("this process's tracing output", log, "config.release");

    let leaks: Vec<String> = out
        .0
        .iter()
        .flat_map(|(from, text)| {
            ALL.iter()
                .filter(|canary| text.contains(*canary))
                .map(move |canary| format!("{canary} in {from}:\n{text}\n"))
        })
        .collect();
    assert!(leaks.is_empty(), "secrets shown:\n{}", leaks.join("\n"));
    // The canaries were really written: a redaction that hides everything would pass above.
    assert_eq!(
        config_value(&server, "/config/vault/tokens/console").await,
        format!("\"{CONSOLE}\"")
    );
    assert_eq!(
        config_value(&server, "/config/vault/tokens/cli").await,
        format!("\"{CLI}\"")
    );
}

async fn config_value(server: &EtcdServer, key: &str) -> String {
    let out = server.etcdctl(&["get", key, "--print-value-only"]).unwrap();
    out.trim().to_owned()
}
