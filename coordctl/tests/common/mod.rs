//! What the coordctl test binaries share: an etcd from the test harness with a connection to
//! it ([`Env`]), the real binary run on it ([`Ctl`]), and the checks of what a run said
//! ([`expect_ok`], [`expect_code`], [`expect_exit`]).
//!
//! Each test binary compiles this module (`mod common;`) and uses a part of it.

#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use coord::testing::{EtcdServer, ROOT_PASSWORD, ROOT_USER};
use coord::Coord;
use serde_json::Value;

/// The environment a run of coordctl starts without, so that only its flags say where it
/// connects, as whom and with which keys.
const CLEARED: [&str; 7] = [
    "COORD_ENDPOINTS",
    "COORD_USERNAME",
    "COORD_PASSWORD",
    "COORD_TLS_CA",
    "COORD_TLS_CERT",
    "COORD_TLS_KEY",
    "COORD_SECRET_KEYS_FILE",
];

/// How a test runs the coordctl binary: `coordctl [--endpoints E --env test] [LOGIN] [FLAGS]
/// ARGS`, with none of the `COORD_*` connection variables of the test's own environment,
/// `NO_COLOR=1` and the variables it was given, stdin closed, killed if dropped.
#[derive(Clone, Debug, Default)]
pub struct Ctl {
    /// The etcd endpoint, with the test profile; `None` for a run whose args say it all.
    endpoint: Option<String>,
    /// `--user U --password P`, or nothing.
    login: Vec<String>,
    /// Global flags after the login (`--secret-keys FILE`…).
    flags: Vec<String>,
    /// Variables set for the run, after the cleared ones.
    vars: Vec<(String, String)>,
    /// How long a run may take before the test fails; `None` for no bound.
    within: Option<Duration>,
}

impl Ctl {
    /// coordctl on `endpoint` with the test profile.
    pub fn on(endpoint: impl Into<String>) -> Self {
        Ctl {
            endpoint: Some(endpoint.into()),
            ..Ctl::default()
        }
    }

    /// coordctl with no endpoint, profile or other flag added: only the args of each run.
    pub fn bare() -> Self {
        Ctl::default()
    }

    /// The same, logged in as `user` with `password` (in place of any login it had).
    pub fn login(&self, user: &str, password: &str) -> Self {
        let mut ctl = self.clone();
        ctl.login = ["--user", user, "--password", password]
            .map(str::to_owned)
            .to_vec();
        ctl
    }

    /// The same, with `flags` after the login.
    pub fn flags<S: AsRef<str>>(&self, flags: &[S]) -> Self {
        let mut ctl = self.clone();
        ctl.flags
            .extend(flags.iter().map(|flag| flag.as_ref().to_owned()));
        ctl
    }

    /// The same, with the variable `name` set to `value`.
    pub fn env(&self, name: &str, value: &str) -> Self {
        let mut ctl = self.clone();
        ctl.vars.push((name.to_owned(), value.to_owned()));
        ctl
    }

    /// The same, each run failing the test if it has not ended within `bound`.
    pub fn within(&self, bound: Duration) -> Self {
        let mut ctl = self.clone();
        ctl.within = Some(bound);
        ctl
    }

    /// The command for `args`, to change further (its stdio, a variable) before it runs.
    pub fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_coordctl"));
        if let Some(endpoint) = &self.endpoint {
            command.args(["--endpoints", endpoint, "--env", "test"]);
        }
        command.args(&self.login).args(&self.flags).args(args);
        for name in CLEARED {
            command.env_remove(name);
        }
        command
            .env("NO_COLOR", "1")
            .envs(self.vars.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .kill_on_drop(true);
        command
    }

    /// Starts coordctl in the background with stdout and stderr piped, to be collected with
    /// `wait_with_output`.
    pub fn spawn(&self, args: &[&str]) -> tokio::process::Child {
        self.command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start coordctl")
    }

    /// Runs coordctl to its end.
    pub async fn run(&self, args: &[&str]) -> Output {
        let output = self.command(args).output();
        let output = match self.within {
            Some(bound) => tokio::time::timeout(bound, output)
                .await
                .unwrap_or_else(|_| panic!("coordctl {args:?} ends within {bound:?}")),
            None => output.await,
        };
        output.expect("run coordctl")
    }

    /// Runs coordctl; it must succeed. Returns its stdout.
    pub async fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args).await;
        assert!(
            out.status.success(),
            "coordctl {args:?} failed: {}",
            said(&out)
        );
        String::from_utf8(out.stdout).expect("coordctl prints UTF-8")
    }

    /// Runs coordctl with `-o json`; it must succeed and print one JSON document.
    pub async fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        let text = self.ok(&all).await;
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    }
}

/// An etcd from the test harness, a connection to it, coordctl on it ([`Ctl`]), and a
/// directory for files the commands read.
pub struct Env {
    pub server: EtcdServer,
    pub coord: Coord,
    /// coordctl on this etcd with the test profile (logged in as root with auth on).
    pub ctl: Ctl,
    pub dir: tempfile::TempDir,
}

/// A plain etcd (no auth).
pub async fn env() -> Env {
    let server = etcd().await;
    let coord = Coord::connect(server.client_config())
        .await
        .expect("connect to the test etcd");
    let ctl = Ctl::on(server.endpoint());
    Env::of(server, coord, ctl)
}

/// An etcd with auth on; the connection and coordctl log in as root.
pub async fn env_with_auth() -> Env {
    let server = EtcdServer::builder()
        .auth(true)
        .start()
        .await
        .expect("start etcd with auth (see the error for how to install etcd)");
    let coord = Coord::connect(server.client_config())
        .await
        .expect("connect to the test etcd as root");
    let ctl = Ctl::on(server.endpoint()).login(ROOT_USER, ROOT_PASSWORD);
    Env::of(server, coord, ctl)
}

/// A plain etcd from the test harness.
pub async fn etcd() -> EtcdServer {
    EtcdServer::start()
        .await
        .expect("start etcd (see the error for how to install it)")
}

impl Env {
    fn of(server: EtcdServer, coord: Coord, ctl: Ctl) -> Env {
        Env {
            server,
            coord,
            ctl,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// A file in this env's directory holding `text`, mode 0600, by path.
    pub fn private_file(&self, name: &str, text: &str) -> PathBuf {
        private_file(self.dir.path(), name, text)
    }
}

/// A file `dir/name` holding `text`, readable by its owner only (mode 0600), by path.
pub fn private_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    chmod(&path, 0o600);
    path
}

/// Sets the mode of `path`.
pub fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A temporary path as the text an argument takes.
pub fn path_text(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 temporary path")
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// How a run ended and both its streams, for a failure message.
fn said(out: &Output) -> String {
    format!(
        "{:?}\nstdout: {}\nstderr: {}",
        out.status,
        stdout(out),
        stderr(out)
    )
}

/// Asserts `out` succeeded (printing both streams if not); returns its stdout.
pub fn expect_ok(out: &Output) -> String {
    assert!(out.status.success(), "coordctl failed: {}", said(out));
    stdout(out)
}

/// Asserts `out` exited with `code`, printing both streams if not.
pub fn expect_code(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "coordctl's exit code: {}",
        said(out)
    );
}

/// Asserts `out` exited with `code` and that its stderr says `says`, printing both streams
/// if not; returns its stderr.
pub fn expect_exit(out: &Output, code: i32, says: &str) -> String {
    expect_code(out, code);
    let message = stderr(out);
    assert!(
        message.contains(says),
        "stderr does not say {says:?}: {}",
        said(out)
    );
    message
}

/// Polls `check` every 50 ms until it is true; panics after `within`, naming `what`.
pub async fn eventually<F: FnMut() -> bool>(within: Duration, what: &str, mut check: F) {
    let deadline = tokio::time::Instant::now() + within;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within {within:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
