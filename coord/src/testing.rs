//! Real etcd servers and clusters for tests, as Curator's `TestingServer`.
//!
//! [`EtcdServer::start`] runs the `etcd` binary on free `127.0.0.1` ports with a fresh
//! temporary data directory and returns once it answers requests and has a leader;
//! [`EtcdCluster::start`] does the same for several members. [`EtcdServer::builder`] adds TLS
//! (a CA and certificates generated on the spot), client-certificate auth, and etcd's user
//! auth with two ready-made users ([`ROOT_USER`], [`APP_USER`]).
//!
//! What the harness promises:
//! - **Nothing outlives the test.** Dropping a server or cluster kills every etcd process and
//!   removes the data directory, also when the test panics. Each etcd is started with
//!   `PR_SET_PDEATHSIG = SIGKILL`, so it dies even if the test process is killed outright
//!   (the signal follows the *thread* that started etcd: start servers from a thread that lives
//!   as long as the test, as any tokio runtime thread does); the directory such a process
//!   leaves behind is removed by the next harness that starts.
//! - **Failures say why**, as a [`HarnessError`] (not a [`coord::Error`](crate::Error): those
//!   are about a running store). A missing `etcd` binary is an error that says how to install
//!   it; an etcd that does not become healthy within 15 s is an error that shows the end of
//!   its log.
//!   The log of member `i` is kept in the temporary directory ([`EtcdCluster::log`]) and is
//!   not printed otherwise.
//! - **Faults are real.** [`kill`](EtcdCluster::kill) stops a member (SIGTERM, then SIGKILL
//!   after a second: a member without quorum may hang on SIGTERM), and
//!   [`restart`](EtcdCluster::restart) starts it again on the same ports and data, where it
//!   rejoins the cluster.
//! - **Network faults go through a proxy.** [`FaultProxy`] sits on loopback in front of one
//!   member and partitions, blackholes or delays what passes; [`EtcdCluster::proxies`] puts
//!   one in front of each member and hands the client config that goes through them.
//!   [`pause`](EtcdCluster::pause) freezes a member outright, and
//!   [`compact`](EtcdCluster::compact) drops the history up to the current revision.
//! - **etcdctl sees the same server.** [`etcdctl`](EtcdCluster::etcdctl) runs etcdctl with the
//!   endpoints, TLS files and root credentials already set, for interoperability tests.
//!
//! The harness is for Linux and other Unix systems (it signals processes). Servers run with
//! heartbeats every 50 ms and etcd's default election timeout (1 s), which keeps etcd's
//! minimum lease TTL at its production value of 2 s.
#![cfg(unix)]

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::client::{ClientConfig, TlsConfig};
use crate::error::Result;
use crate::store::Store;

mod error;
mod proxy;

pub use error::HarnessError;
pub use proxy::{FaultProxy, Proxies};

/// The etcd superuser created when auth is on (it holds the `root` role).
pub const ROOT_USER: &str = "root";
/// [`ROOT_USER`]'s password.
pub const ROOT_PASSWORD: &str = "root-pw";
/// An ordinary user created when auth is on: it may read and write under [`APP_PREFIX`] only.
pub const APP_USER: &str = "app";
/// [`APP_USER`]'s password.
pub const APP_PASSWORD: &str = "app-pw";
/// The role that gives [`APP_USER`] read-write access to [`APP_PREFIX`].
pub const APP_ROLE: &str = "app-rw";
/// The prefix [`APP_USER`] may read and write.
pub const APP_PREFIX: &str = "/app/";

/// How long a starting etcd may take to answer with a leader.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// How long `kill` waits after SIGTERM before it sends SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(1);
/// How many times a start is tried on new ports when another process took one meanwhile.
const START_ATTEMPTS: usize = 3;
/// How much of an etcd log an error shows.
const LOG_TAIL_LINES: usize = 25;

/// Options of a test server or cluster: TLS, client-certificate auth, user auth.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use coord::testing::{EtcdServer, APP_PASSWORD, APP_USER};
///
/// let server = EtcdServer::builder().tls(true).auth(true).start().await?;
/// // client_config() trusts the generated CA and logs in as root.
/// let app = server.client_config().with_user(APP_USER, APP_PASSWORD);
/// let coord = coord::Coord::connect(app).await?;
/// coord.store().put("/app/key", b"v".to_vec(), 0).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, Default)]
#[must_use]
pub struct EtcdBuilder {
    tls: bool,
    client_cert_auth: bool,
    auth: bool,
    extra_args: Vec<String>,
}

impl EtcdBuilder {
    /// Serves clients over TLS (`https://`) with a server certificate for `127.0.0.1` and
    /// `localhost`, signed by a CA generated for this server ([`TlsFiles`]).
    pub fn tls(mut self, on: bool) -> Self {
        self.tls = on;
        self
    }

    /// Requires clients to present a certificate signed by the test CA (implies TLS);
    /// [`EtcdCluster::client_config`] then includes the generated client certificate.
    pub fn client_cert_auth(mut self, on: bool) -> Self {
        self.client_cert_auth = on;
        if on {
            self.tls = true;
        }
        self
    }

    /// Turns on etcd's user auth after start, with users [`ROOT_USER`] (all access) and
    /// [`APP_USER`] (read-write under [`APP_PREFIX`] only).
    pub fn auth(mut self, on: bool) -> Self {
        self.auth = on;
        self
    }

    /// Passes more flags to every member's `etcd` (after the harness's own), for behaviour
    /// the builder has no option for, such as
    /// `--experimental-watch-progress-notify-interval 500ms`.
    pub fn extra_args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.extra_args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Starts one etcd server with these options.
    ///
    /// # Errors
    ///
    /// See [`EtcdServer::start`].
    pub async fn start(self) -> Result<EtcdServer, HarnessError> {
        Ok(EtcdServer {
            cluster: self.start_cluster(1).await?,
        })
    }

    /// Starts a cluster of `members` etcd servers with these options.
    ///
    /// # Errors
    ///
    /// See [`EtcdServer::start`]; [`HarnessError::InvalidArgument`] for zero members.
    pub async fn start_cluster(self, members: usize) -> Result<EtcdCluster, HarnessError> {
        if members == 0 {
            return Err(HarnessError::invalid_argument(
                "members",
                "a cluster needs at least one member",
            ));
        }
        let etcd = find_on_path("etcd")?;
        // `.client_cert_auth(true).tls(false)` still needs TLS.
        let options = EtcdBuilder {
            tls: self.tls || self.client_cert_auth,
            ..self
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut cluster = EtcdCluster::create(options.clone(), etcd.clone(), members)?;
            let started = async {
                for i in 0..members {
                    cluster.spawn(i)?;
                }
                cluster.wait_until_serving(START_TIMEOUT).await
            };
            match started.await {
                Ok(()) => {
                    if options.auth {
                        cluster.enable_auth()?;
                        cluster.auth_on = true;
                    }
                    return Ok(cluster);
                }
                // Free ports are found by binding port 0 and letting go: another process may
                // take one before etcd binds it. New ports, new try.
                Err(_) if attempt < START_ATTEMPTS && cluster.lost_a_port() => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

/// Where the generated TLS material is: PEM files in the server's temporary directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The CA that signed every certificate below.
    pub ca_file: PathBuf,
    /// The server certificate (for `127.0.0.1` and `localhost`).
    pub server_cert_file: PathBuf,
    /// The server certificate's key.
    pub server_key_file: PathBuf,
    /// A client certificate signed by the CA (for `--client-cert-auth`).
    pub client_cert_file: PathBuf,
    /// The client certificate's key.
    pub client_key_file: PathBuf,
}

impl TlsFiles {
    /// Client TLS settings trusting the CA, without a client certificate.
    pub fn ca_only(&self) -> TlsConfig {
        TlsConfig::with_ca(&self.ca_file)
    }

    /// Client TLS settings trusting the CA and presenting the client certificate.
    pub fn with_client_identity(&self) -> TlsConfig {
        self.ca_only()
            .with_client_identity(&self.client_cert_file, &self.client_key_file)
    }
}

/// One etcd server for a test. See the [module docs](self) for what it promises.
#[derive(Debug)]
pub struct EtcdServer {
    cluster: EtcdCluster,
}

impl EtcdServer {
    /// Starts a plain etcd (no TLS, no auth) on a free port and waits until it serves.
    ///
    /// # Errors
    ///
    /// [`HarnessError::NotInstalled`] if `etcd` is not on PATH (the message says how to
    /// install it); [`HarnessError::Io`] if it cannot be spawned (or its directory, ports or
    /// log file cannot be had); [`HarnessError::NotServing`] if it exits or does not answer
    /// with a leader within 15 s (the message shows the end of its log).
    ///
    /// # Examples
    ///
    /// ```
    /// use coord::testing::EtcdServer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = EtcdServer::start().await?;
    /// let coord = coord::Coord::connect(server.client_config()).await?;
    /// coord.store().put("/greeting", b"hello".to_vec(), 0).await?;
    /// let value = server.etcdctl(&["get", "--print-value-only", "/greeting"])?;
    /// assert_eq!(value.trim(), "hello");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn start() -> Result<Self, HarnessError> {
        Self::builder().start().await
    }

    /// Options: TLS, client-certificate auth, user auth.
    pub fn builder() -> EtcdBuilder {
        EtcdBuilder::default()
    }

    /// The client URL, `http://127.0.0.1:<port>` (`https://` with TLS).
    pub fn endpoint(&self) -> String {
        self.cluster.endpoint(0)
    }

    /// The client URLs (one).
    pub fn endpoints(&self) -> Vec<String> {
        self.cluster.endpoints()
    }

    /// A `ClientConfig::for_env("test")` for this server; see [`EtcdCluster::client_config`].
    pub fn client_config(&self) -> ClientConfig {
        self.cluster.client_config()
    }

    /// The generated TLS files, if TLS is on.
    pub fn tls_files(&self) -> Option<&TlsFiles> {
        self.cluster.tls_files()
    }

    /// Stops the server (SIGTERM, SIGKILL after a second); the data stays for
    /// [`restart`](Self::restart).
    pub async fn kill(&mut self) -> Result<(), HarnessError> {
        self.cluster.kill(0).await
    }

    /// Starts the server again on the same port and data and waits until it serves.
    ///
    /// # Errors
    ///
    /// As [`start`](Self::start).
    pub async fn restart(&mut self) -> Result<(), HarnessError> {
        self.cluster.restart(0).await
    }

    /// True while the etcd process runs.
    pub fn is_running(&mut self) -> bool {
        self.cluster.is_running(0)
    }

    /// Freezes the server (SIGSTOP) until [`resume`](Self::resume): it keeps its sockets and
    /// answers nothing.
    ///
    /// # Errors
    ///
    /// As [`EtcdCluster::pause`].
    pub fn pause(&mut self) -> Result<(), HarnessError> {
        self.cluster.pause(0)
    }

    /// Thaws the server after [`pause`](Self::pause).
    ///
    /// # Errors
    ///
    /// As [`EtcdCluster::resume`].
    pub fn resume(&mut self) -> Result<(), HarnessError> {
        self.cluster.resume(0)
    }

    /// A [`FaultProxy`] in front of the server, with the client config through it; see
    /// [`EtcdCluster::proxies`].
    ///
    /// # Errors
    ///
    /// As [`EtcdCluster::proxies`].
    pub async fn proxies(&self) -> Result<Proxies, HarnessError> {
        self.cluster.proxies().await
    }

    /// Compacts the history at the current revision; see [`EtcdCluster::compact`].
    ///
    /// # Errors
    ///
    /// As [`EtcdCluster::compact`].
    pub async fn compact(&self) -> Result<i64, HarnessError> {
        self.cluster.compact().await
    }

    /// Stops the server and removes its data (what dropping it does, but gracefully and with
    /// errors reported).
    pub async fn stop(self) -> Result<(), HarnessError> {
        self.cluster.stop().await
    }

    /// Runs etcdctl against this server; see [`EtcdCluster::etcdctl`].
    pub fn etcdctl(&self, args: &[&str]) -> Result<String, HarnessError> {
        self.cluster.etcdctl(args)
    }

    /// An etcdctl command against this server, not yet run; see
    /// [`EtcdCluster::etcdctl_command`].
    pub fn etcdctl_command(&self, args: &[&str]) -> Result<Command, HarnessError> {
        self.cluster.etcdctl_command(args)
    }

    /// Starts etcdctl in the background; see [`EtcdCluster::spawn_etcdctl`].
    pub fn spawn_etcdctl(&self, args: &[&str]) -> Result<tokio::process::Child, HarnessError> {
        self.cluster.spawn_etcdctl(args)
    }

    /// etcd's log so far.
    pub fn log(&self) -> String {
        self.cluster.log(0)
    }

    /// The cluster of one member behind this server, for the few things only clusters offer.
    pub fn as_cluster(&mut self) -> &mut EtcdCluster {
        &mut self.cluster
    }
}

/// Several etcd members forming one cluster. See the [module docs](self).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let mut cluster = coord::testing::EtcdCluster::start(3).await?;
/// let coord = coord::Coord::connect(cluster.client_config()).await?;
/// cluster.kill(0).await?;
/// coord.store().put("/still", b"serving".to_vec(), 0).await?;
/// cluster.restart(0).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct EtcdCluster {
    members: Vec<Member>,
    options: EtcdBuilder,
    etcd: PathBuf,
    token: String,
    tls: Option<TlsFiles>,
    /// True once `auth enable` ran: from then on clients log in.
    auth_on: bool,
    /// Removed when the cluster is dropped, after every process is dead (see `Drop`), or by
    /// `stop`, which takes it.
    dir: Option<tempfile::TempDir>,
}

#[derive(Debug)]
struct Member {
    name: String,
    client: SocketAddr,
    peer: SocketAddr,
    data_dir: PathBuf,
    log_file: PathBuf,
    process: Option<Child>,
    /// True between `pause` and `resume` (or `kill`): the process runs but answers nothing.
    paused: bool,
}

impl EtcdCluster {
    /// Starts a plain cluster of `members` etcd servers and waits until every member serves.
    ///
    /// # Errors
    ///
    /// As [`EtcdServer::start`].
    pub async fn start(members: usize) -> Result<Self, HarnessError> {
        EtcdBuilder::default().start_cluster(members).await
    }

    /// Options: TLS, client-certificate auth, user auth; then
    /// [`start_cluster`](EtcdBuilder::start_cluster).
    pub fn builder() -> EtcdBuilder {
        EtcdBuilder::default()
    }

    /// The number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Always false: a cluster has at least one member.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The client URL of member `i`.
    ///
    /// # Panics
    ///
    /// If there is no member `i`.
    pub fn endpoint(&self, i: usize) -> String {
        self.members[i].endpoint(self.tls.is_some())
    }

    /// The client URLs of every member, running or not.
    pub fn endpoints(&self) -> Vec<String> {
        (0..self.members.len()).map(|i| self.endpoint(i)).collect()
    }

    /// `ClientConfig::for_env("test")` with every endpoint; with TLS it trusts the generated
    /// CA (and presents the client certificate when client-certificate auth is on); with
    /// auth it logs in as [`ROOT_USER`] (use `.with_user(APP_USER, APP_PASSWORD)` for the
    /// restricted user).
    pub fn client_config(&self) -> ClientConfig {
        self.config_for(self.endpoints())
    }

    /// [`client_config`](Self::client_config) with member `i`'s endpoint only.
    pub fn member_client_config(&self, i: usize) -> ClientConfig {
        self.config_for(vec![self.endpoint(i)])
    }

    /// The generated TLS files, if TLS is on.
    pub fn tls_files(&self) -> Option<&TlsFiles> {
        self.tls.as_ref()
    }

    /// The temporary directory holding data, logs and certificates.
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().map_or(Path::new(""), |dir| dir.path())
    }

    /// True while member `i`'s process runs.
    pub fn is_running(&mut self, i: usize) -> bool {
        self.members[i].is_running()
    }

    /// Member `i`'s log so far (etcd's zap JSON lines).
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.members[i].log_file).unwrap_or_default()
    }

    /// Stops member `i`: SIGTERM, then SIGKILL if it has not exited within a second (a member
    /// that lost its quorum can hang on SIGTERM). Its data stays for
    /// [`restart`](Self::restart). Stopping a stopped member does nothing.
    pub async fn kill(&mut self, i: usize) -> Result<(), HarnessError> {
        let member = &mut self.members[i];
        member.paused = false;
        let Some(mut child) = member.process.take() else {
            return Ok(());
        };
        terminate(&mut child, &member.name).await
    }

    /// Freezes member `i` (SIGSTOP): its process and sockets stay, it answers nothing, as in a
    /// long GC or VM pause. [`resume`](Self::resume) thaws it.
    ///
    /// # Errors
    ///
    /// [`HarnessError::InvalidArgument`] if the member is not running.
    pub fn pause(&mut self, i: usize) -> Result<(), HarnessError> {
        let pid = self.signal(i, libc::SIGSTOP)?;
        self.members[i].paused = true;
        wait_stopped(pid);
        Ok(())
    }

    /// Thaws member `i` after [`pause`](Self::pause) (SIGCONT).
    ///
    /// # Errors
    ///
    /// [`HarnessError::InvalidArgument`] if the member is not running.
    pub fn resume(&mut self, i: usize) -> Result<(), HarnessError> {
        self.signal(i, libc::SIGCONT)?;
        self.members[i].paused = false;
        Ok(())
    }

    /// True between [`pause`](Self::pause) and [`resume`](Self::resume).
    pub fn is_paused(&self, i: usize) -> bool {
        self.members[i].paused
    }

    /// Starts a [`FaultProxy`] in front of every member (running or not) and returns them
    /// with the [`client_config`](Self::client_config) that reaches the cluster only through
    /// them. Each call makes new proxies: give each client its own to cut one client off and
    /// not the others.
    ///
    /// # Errors
    ///
    /// [`HarnessError::Io`] if a proxy port cannot be bound.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let cluster = coord::testing::EtcdCluster::start(3).await?;
    /// let proxies = cluster.proxies().await?;
    /// let coord = coord::Coord::connect(proxies.client_config()).await?;
    /// proxies[0].partition(); // this client loses member 0; the others still serve it
    /// // A call that was on member 0's connection fails (`Unavailable`, not retried: it may
    /// // have been applied); the next calls go to the members left.
    /// let mut tries = 0;
    /// while let Err(e) = coord.store().put("/still", b"serving".to_vec(), 0).await {
    ///     tries += 1;
    ///     assert!(tries < 50, "{e}");
    ///     tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn proxies(&self) -> Result<Proxies, HarnessError> {
        let mut proxies = Vec::with_capacity(self.members.len());
        for i in 0..self.members.len() {
            proxies.push(FaultProxy::start(&self.endpoint(i)).await?);
        }
        let config = self.config_for(proxies.iter().map(FaultProxy::endpoint).collect());
        Ok(Proxies::new(proxies, config))
    }

    /// Compacts the history at the current revision, as etcd's auto-compaction or an
    /// operator's `etcdctl compaction` would: a watch that resumes from an older revision has
    /// to relist. Asks the members that run and are not paused; returns the revision.
    ///
    /// # Errors
    ///
    /// [`HarnessError::InvalidArgument`] if no member runs unpaused; [`HarnessError::Store`]
    /// if the members do not answer (no quorum, say).
    pub async fn compact(&self) -> Result<i64, HarnessError> {
        let endpoints: Vec<String> = (0..self.members.len())
            .filter(|&i| self.members[i].process.is_some() && !self.members[i].paused)
            .map(|i| self.endpoint(i))
            .collect();
        if endpoints.is_empty() {
            return Err(HarnessError::invalid_argument(
                "cluster",
                "no member runs unpaused",
            ));
        }
        let options = self
            .config_for(endpoints)
            .etcd_options()
            .map_err(HarnessError::store("cannot connect to compact"))?;
        let store = Store::connect(&options)
            .await
            .map_err(HarnessError::store("cannot connect to compact"))?;
        let revision = store
            .status()
            .await
            .map_err(HarnessError::store(
                "cannot read the revision to compact at",
            ))?
            .revision;
        store
            .compact(revision)
            .await
            .map_err(HarnessError::store(format!("cannot compact at {revision}")))?;
        Ok(revision)
    }

    /// Sends `signal` to member `i`'s process; returns its pid.
    fn signal(&mut self, i: usize, signal: libc::c_int) -> Result<libc::pid_t, HarnessError> {
        let member = &mut self.members[i];
        let pid = member
            .process
            .as_ref()
            .and_then(|child| libc::pid_t::try_from(child.id()).ok())
            .ok_or_else(|| {
                HarnessError::invalid_argument("member", format!("{} is not running", member.name))
            })?;
        // SAFETY: `kill` only sends a signal; `pid` is our own child, not reaped while we
        // hold its `Child`, so it cannot have been reused.
        if unsafe { libc::kill(pid, signal) } != 0 {
            return Err(HarnessError::io(format!(
                "cannot signal etcd member {}",
                member.name
            ))(std::io::Error::last_os_error()));
        }
        Ok(pid)
    }

    /// Starts member `i` again on the same ports and data directory. With its data present,
    /// etcd ignores the initial-cluster flags and rejoins the cluster it was part of.
    ///
    /// Waits until the member answers, and, if a majority of members runs, until it knows
    /// the leader, so the cluster serves when this returns.
    ///
    /// # Errors
    ///
    /// As [`EtcdServer::start`]. Restarting a running member is
    /// [`HarnessError::InvalidArgument`].
    pub async fn restart(&mut self, i: usize) -> Result<(), HarnessError> {
        if self.members[i].is_running() {
            return Err(HarnessError::invalid_argument(
                "member",
                format!("{} is running; kill it first", self.members[i].name),
            ));
        }
        self.spawn(i)?;
        self.members[i].paused = false;
        let deadline = Instant::now() + START_TIMEOUT;
        let running = (0..self.members.len())
            .filter(|&m| self.members[m].is_running())
            .count();
        if running * 2 > self.members.len() {
            self.wait_member_serving(i, deadline).await
        } else {
            // Without a quorum there is no leader to wait for: answering is all it can do.
            self.wait_member_listening(i, deadline).await
        }
    }

    /// Stops every member (SIGTERM, then SIGKILL after a second) and removes the data.
    ///
    /// # Errors
    ///
    /// [`HarnessError::Io`] if a process could not be signalled or the directory not
    /// removed.
    pub async fn stop(mut self) -> Result<(), HarnessError> {
        let mut first_error = None;
        for i in 0..self.members.len() {
            if let Err(e) = self.kill(i).await {
                first_error.get_or_insert(e);
            }
        }
        if let Some(Err(e)) = self.dir.take().map(tempfile::TempDir::close) {
            first_error.get_or_insert(HarnessError::io("cannot remove the test data")(e));
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Runs `etcdctl args…` (API v3) against the running members, with TLS files and, when
    /// auth is on, [`ROOT_USER`]'s credentials; returns its standard output.
    ///
    /// # Errors
    ///
    /// [`HarnessError::Etcdctl`] naming the command with etcdctl's standard error if it
    /// fails; [`HarnessError::NotInstalled`] if etcdctl is not on PATH.
    pub fn etcdctl(&self, args: &[&str]) -> Result<String, HarnessError> {
        self.run_etcdctl(args, self.auth_on)
    }

    /// The etcdctl command [`etcdctl`](Self::etcdctl) runs, not yet started: for tests
    /// that need its exit status, its output as it comes, or their own stdio. It dies with
    /// the test process as etcd does.
    ///
    /// # Errors
    ///
    /// [`HarnessError::NotInstalled`] if etcdctl is not on PATH.
    pub fn etcdctl_command(&self, args: &[&str]) -> Result<Command, HarnessError> {
        self.etcdctl_command_with(args, self.auth_on)
    }

    /// Starts `etcdctl args…` in the background (e.g. `lock NAME -- sleep 3`), with its
    /// standard output and error piped. It is killed when the handle is dropped.
    ///
    /// # Errors
    ///
    /// [`HarnessError::NotInstalled`] if etcdctl is not on PATH, [`HarnessError::Io`] if it
    /// cannot be started.
    pub fn spawn_etcdctl(&self, args: &[&str]) -> Result<tokio::process::Child, HarnessError> {
        let mut command = tokio::process::Command::from(self.etcdctl_command(args)?);
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
            .spawn()
            .map_err(HarnessError::io("cannot start etcdctl"))
    }

    /// Sets up the directory, ports and certificates of a cluster; starts nothing.
    fn create(options: EtcdBuilder, etcd: PathBuf, members: usize) -> Result<Self, HarnessError> {
        static CLUSTERS: AtomicUsize = AtomicUsize::new(0);
        let dir = tempdir()?;
        // All ports are held until all are chosen, so they differ from each other.
        let listeners = (0..members * 2)
            .map(|_| TcpListener::bind("127.0.0.1:0"))
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(HarnessError::io("cannot find free ports"))?;
        let addrs = listeners
            .iter()
            .map(TcpListener::local_addr)
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(HarnessError::io("cannot find free ports"))?;
        drop(listeners);
        let members = (0..members)
            .map(|i| Member {
                name: format!("m{i}"),
                client: addrs[2 * i],
                peer: addrs[2 * i + 1],
                data_dir: dir.path().join(format!("m{i}.etcd")),
                log_file: dir.path().join(format!("m{i}.log")),
                process: None,
                paused: false,
            })
            .collect();
        let tls = if options.tls {
            Some(write_certificates(dir.path())?)
        } else {
            None
        };
        Ok(EtcdCluster {
            members,
            token: format!(
                "coord-test-{}-{}",
                std::process::id(),
                CLUSTERS.fetch_add(1, Ordering::Relaxed)
            ),
            options,
            etcd,
            tls,
            auth_on: false,
            dir: Some(dir),
        })
    }

    fn config_for(&self, endpoints: Vec<String>) -> ClientConfig {
        let mut config = ClientConfig::for_env("test").with_endpoints(endpoints);
        if let Some(tls) = &self.tls {
            config = config.with_tls(if self.options.client_cert_auth {
                tls.with_client_identity()
            } else {
                tls.ca_only()
            });
        }
        if self.auth_on {
            config = config.with_user(ROOT_USER, ROOT_PASSWORD);
        }
        config
    }

    /// Spawns member `i`'s etcd process.
    fn spawn(&mut self, i: usize) -> Result<(), HarnessError> {
        let tls = self.tls.is_some();
        let initial_cluster = self
            .members
            .iter()
            .map(|m| format!("{}=http://{}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",");
        let member = &self.members[i];
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&member.log_file)
            .map_err(HarnessError::io(format!(
                "cannot create {}",
                member.log_file.display()
            )))?;
        let log_err = log
            .try_clone()
            .map_err(HarnessError::io("cannot share the log file"))?;
        let client_url = member.endpoint(tls);
        let peer_url = format!("http://{}", member.peer);
        let mut command = Command::new(&self.etcd);
        // Settings from the test's environment (ETCD_*) would override these flags.
        clear_env(&mut command, "ETCD_");
        command
            .arg("--name")
            .arg(&member.name)
            .arg("--data-dir")
            .arg(&member.data_dir)
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &initial_cluster])
            .args(["--initial-cluster-token", &self.token])
            .args(["--initial-cluster-state", "new"])
            // Heartbeats twice as often as by default, so a lost leader is noticed sooner.
            // The election timeout stays at etcd's default: etcd derives its minimum lease
            // TTL from it (1.5 election timeouts, rounded up), and tests expect the 2 s of a
            // production etcd.
            .args(["--heartbeat-interval", "50", "--election-timeout", "1000"])
            // The log goes to a file (stderr is redirected there, so flag errors and panics
            // land in it too): shown when something fails, never spammed.
            .args(["--logger", "zap", "--log-outputs", "stderr"])
            .args(&self.options.extra_args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        if let Some(files) = &self.tls {
            command
                .arg("--cert-file")
                .arg(&files.server_cert_file)
                .arg("--key-file")
                .arg(&files.server_key_file);
            // etcd requires a client certificate from everyone as soon as it has a trusted CA.
            if self.options.client_cert_auth {
                command
                    .arg("--client-cert-auth")
                    .arg("--trusted-ca-file")
                    .arg(&files.ca_file);
            }
        }
        die_with_parent(&mut command);
        let child = command.spawn().map_err(HarnessError::io(format!(
            "cannot start {}",
            self.etcd.display()
        )))?;
        self.members[i].process = Some(child);
        Ok(())
    }

    /// Waits until every member answers a status request and knows the leader.
    async fn wait_until_serving(&mut self, within: Duration) -> Result<(), HarnessError> {
        let deadline = Instant::now() + within;
        for i in 0..self.members.len() {
            self.wait_member_serving(i, deadline).await?;
        }
        Ok(())
    }

    async fn wait_member_serving(
        &mut self,
        i: usize,
        deadline: Instant,
    ) -> Result<(), HarnessError> {
        let config = self
            .member_client_config(i)
            .with_dial_timeout(Duration::from_millis(500));
        loop {
            self.check_alive(i)?;
            let last = match async { Store::connect(&config.etcd_options()?).await }.await {
                Ok(store) => match store.status().await {
                    Ok(status) if status.leader != 0 => return Ok(()),
                    Ok(_) => String::from("no leader yet"),
                    Err(e) => e.to_string(),
                },
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                return Err(self.not_healthy(i, &last));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn wait_member_listening(
        &mut self,
        i: usize,
        deadline: Instant,
    ) -> Result<(), HarnessError> {
        let addr = self.members[i].client;
        loop {
            self.check_alive(i)?;
            let last = match tokio::net::TcpStream::connect(addr).await {
                Ok(_) => return Ok(()),
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                return Err(self.not_healthy(i, &last));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// An error if member `i` exited on its own.
    fn check_alive(&mut self, i: usize) -> Result<(), HarnessError> {
        let member = &mut self.members[i];
        let exited = match &mut member.process {
            Some(child) => child.try_wait().ok().flatten(),
            None => None,
        };
        match exited {
            Some(status) => {
                member.process = None;
                Err(member.not_serving(i, format!("exited ({status})")))
            }
            None => Ok(()),
        }
    }

    fn not_healthy(&self, i: usize, last: &str) -> HarnessError {
        self.members[i].not_serving(
            i,
            format!("did not serve within {START_TIMEOUT:?} (last: {last})"),
        )
    }

    /// True if a member could not bind its ports because someone else took them.
    fn lost_a_port(&self) -> bool {
        self.members.iter().any(|m| {
            std::fs::read_to_string(&m.log_file)
                .is_ok_and(|log| log.contains("address already in use"))
        })
    }

    /// Creates the users and roles of the module docs, then turns auth on.
    fn enable_auth(&self) -> Result<(), HarnessError> {
        let steps: [&[&str]; 7] = [
            &[
                "user",
                "add",
                ROOT_USER,
                "--new-user-password",
                ROOT_PASSWORD,
            ],
            &["user", "grant-role", ROOT_USER, "root"],
            &["role", "add", APP_ROLE],
            &[
                "role",
                "grant-permission",
                APP_ROLE,
                "--prefix=true",
                "readwrite",
                APP_PREFIX,
            ],
            &["user", "add", APP_USER, "--new-user-password", APP_PASSWORD],
            &["user", "grant-role", APP_USER, APP_ROLE],
            &["auth", "enable"],
        ];
        // Until `auth enable` has run there is nobody to log in as.
        for args in steps {
            self.run_etcdctl(args, false)?;
        }
        Ok(())
    }

    /// Runs etcdctl, logged in as root if `login`; its standard output.
    fn run_etcdctl(&self, args: &[&str], login: bool) -> Result<String, HarnessError> {
        let output = self
            .etcdctl_command_with(args, login)?
            .stdin(Stdio::null())
            .output()
            .map_err(HarnessError::io("cannot run etcdctl"))?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(HarnessError::Etcdctl {
                command: args.join(" "),
                status: output.status,
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            })
        }
    }

    fn etcdctl_command_with(&self, args: &[&str], login: bool) -> Result<Command, HarnessError> {
        let mut command = Command::new(find_on_path("etcdctl")?);
        clear_env(&mut command, "ETCDCTL_");
        command.env("ETCDCTL_API", "3");
        let running: Vec<String> = (0..self.members.len())
            .filter(|&i| self.members[i].process.is_some())
            .map(|i| self.endpoint(i))
            .collect();
        let endpoints = if running.is_empty() {
            self.endpoints()
        } else {
            running
        };
        command.arg(format!("--endpoints={}", endpoints.join(",")));
        if let Some(tls) = &self.tls {
            command.arg(format!("--cacert={}", tls.ca_file.display()));
            if self.options.client_cert_auth {
                command.arg(format!("--cert={}", tls.client_cert_file.display()));
                command.arg(format!("--key={}", tls.client_key_file.display()));
            }
        }
        if login {
            command.arg(format!("--user={ROOT_USER}:{ROOT_PASSWORD}"));
        }
        command.args(args);
        die_with_parent(&mut command);
        Ok(command)
    }
}

impl Member {
    fn endpoint(&self, tls: bool) -> String {
        let scheme = if tls { "https" } else { "http" };
        format!("{scheme}://{}", self.client)
    }

    fn is_running(&mut self) -> bool {
        match &mut self.process {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The error of member `i`, which did not come up: `what` happened, with the end of its
    /// log.
    fn not_serving(&self, i: usize, what: String) -> HarnessError {
        HarnessError::NotServing {
            member: i,
            address: self.client,
            what,
            log_file: self.log_file.clone(),
            log_tail: log_tail(&self.log_file),
        }
    }
}

impl Drop for EtcdCluster {
    /// Kills every member and waits for it, so the data directory (removed right after, by
    /// `dir`'s own drop) is no longer in use. SIGKILL: a test that is over (or panicking)
    /// has no use for a graceful stop.
    fn drop(&mut self) {
        for member in &mut self.members {
            if let Some(mut child) = member.process.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// SIGTERM, a grace period, then SIGKILL; reaps the process.
async fn terminate(child: &mut Child, name: &str) -> Result<(), HarnessError> {
    let pid = libc::pid_t::try_from(child.id()).map_err(|_| {
        HarnessError::io(format!("cannot signal etcd member {name}"))(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "its process id does not fit a pid_t",
        ))
    })?;
    // SAFETY: `kill` only sends a signal. `pid` is our own child, which has not been reaped
    // (we hold its `Child` and wait for it only below), so the pid cannot have been reused.
    if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
        // Already gone: reaping below is all that is left.
        let _ = child.wait();
        return Ok(());
    }
    let deadline = Instant::now() + TERM_GRACE;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child
        .kill()
        .map_err(HarnessError::io(format!("cannot kill etcd member {name}")))?;
    child
        .wait()
        .map_err(HarnessError::io(format!("cannot reap etcd member {name}")))?;
    Ok(())
}

/// Makes the child die with SIGKILL when the thread that spawned it exits (with the test).
fn die_with_parent(command: &mut Command) {
    #[cfg(target_os = "linux")]
    {
        let parent = std::process::id();
        // SAFETY: the closure runs in the forked child before exec, where only
        // async-signal-safe functions may be called: `prctl` and `getppid` are system calls
        // that touch no memory of the parent, and `from_raw_os_error` / `last_os_error` build
        // an error without allocating.
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent may have died between fork and prctl: then no signal will come.
                if u32::try_from(libc::getppid()) != Ok(parent) {
                    return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = command;
}

fn clear_env(command: &mut Command, prefix: &str) {
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with(prefix) {
            command.env_remove(name);
        }
    }
}

/// The path of `program` on PATH, or an error that says how to install it.
fn find_on_path(program: &str) -> Result<PathBuf, HarnessError> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
        .ok_or_else(|| HarnessError::NotInstalled {
            program: program.to_owned(),
        })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The prefix of every harness directory in the temporary directory.
const DIR_PREFIX: &str = "coord-etcd-";
/// The file in a harness directory naming the process that owns it.
const OWNER_FILE: &str = "owner.pid";

/// A fresh directory under the system's temporary directory (`TMPDIR`; point it at a tmpfs
/// such as `/dev/shm` for faster tests, at the price of about 64 MB of memory per member for
/// etcd's preallocated WAL), marked with the pid of this process.
///
/// Directories of test processes that were killed (so never dropped theirs) are removed
/// first.
fn tempdir() -> Result<tempfile::TempDir, HarnessError> {
    remove_orphaned_dirs();
    let dir = tempfile::Builder::new()
        .prefix(DIR_PREFIX)
        .tempdir()
        .map_err(HarnessError::io("cannot create a temporary directory"))?;
    std::fs::write(dir.path().join(OWNER_FILE), std::process::id().to_string()).map_err(
        HarnessError::io(format!("cannot write to {}", dir.path().display())),
    )?;
    Ok(dir)
}

/// Removes harness directories whose owner process no longer exists. Best effort: a directory
/// that cannot be read or removed is left alone.
fn remove_orphaned_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(DIR_PREFIX) {
            continue;
        }
        let path = entry.path();
        // No owner file yet: a directory another process is just creating.
        let Ok(owner) = std::fs::read_to_string(path.join(OWNER_FILE)) else {
            continue;
        };
        let Ok(pid) = owner.trim().parse::<libc::pid_t>() else {
            continue;
        };
        if pid > 0 && !process_exists(pid) {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

fn process_exists(pid: libc::pid_t) -> bool {
    // SAFETY: signal 0 sends nothing; `kill` only checks that the process exists and that we
    // may signal it.
    if unsafe { libc::kill(pid, 0) } == 0 {
        return true;
    }
    // EPERM: it exists but belongs to someone else.
    std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// Generates a CA, a server certificate for 127.0.0.1 and localhost, and a client
/// certificate, and writes them as PEM files into `dir`.
fn write_certificates(dir: &Path) -> Result<TlsFiles, HarnessError> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let tls_error = |e: rcgen::Error| HarnessError::Certificates {
        reason: e.to_string(),
    };

    let ca_key = KeyPair::generate().map_err(tls_error)?;
    let mut ca_params = CertificateParams::new(Vec::new()).map_err(tls_error)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "coord test CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key).map_err(tls_error)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let leaf = |names: Vec<String>, common_name: &str, usages: Vec<ExtendedKeyUsagePurpose>| {
        let key = KeyPair::generate().map_err(tls_error)?;
        let mut params = CertificateParams::new(names).map_err(tls_error)?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = usages;
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &issuer).map_err(tls_error)?;
        Ok::<_, HarnessError>((cert.pem(), key.serialize_pem()))
    };
    let (server_cert, server_key) = leaf(
        vec!["127.0.0.1".into(), "localhost".into()],
        "127.0.0.1",
        // etcd's gateway also dials etcd itself with the server certificate.
        vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
    )?;
    let (client_cert, client_key) = leaf(
        Vec::new(),
        "coord-test-client",
        vec![ExtendedKeyUsagePurpose::ClientAuth],
    )?;

    let files = TlsFiles {
        ca_file: dir.join("ca.pem"),
        server_cert_file: dir.join("server.pem"),
        server_key_file: dir.join("server-key.pem"),
        client_cert_file: dir.join("client.pem"),
        client_key_file: dir.join("client-key.pem"),
    };
    for (path, pem) in [
        (&files.ca_file, ca_cert.pem()),
        (&files.server_cert_file, server_cert),
        (&files.server_key_file, server_key),
        (&files.client_cert_file, client_cert),
        (&files.client_key_file, client_key),
    ] {
        std::fs::write(path, pem)
            .map_err(HarnessError::io(format!("cannot write {}", path.display())))?;
    }
    Ok(files)
}

/// The last lines of a log file, read from its end.
fn log_tail(path: &Path) -> String {
    const MAX_BYTES: u64 = 16 * 1024;
    let Ok(mut file) = File::open(path) else {
        return String::from("(no log)");
    };
    let len = file.metadata().map_or(0, |m| m.len());
    if file
        .seek(SeekFrom::Start(len.saturating_sub(MAX_BYTES)))
        .is_err()
    {
        return String::from("(unreadable log)");
    }
    let mut bytes = Vec::new();
    if file.read_to_end(&mut bytes).is_err() {
        return String::from("(unreadable log)");
    }
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}

/// Waits (up to a second) until every thread of `pid` is stopped. `kill` only marks SIGSTOP
/// pending: a thread that is running handles it when it is next scheduled, and on a loaded
/// machine a request sent right after `pause` was seen answered by an etcd about to stop.
/// Where `/proc` cannot be read it returns at once.
fn wait_stopped(pid: libc::pid_t) {
    let stopped = || -> Option<bool> {
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
        let mut all = true;
        for task in tasks {
            let stat = std::fs::read_to_string(task.ok()?.path().join("stat")).ok()?;
            // The state follows the command name's closing parenthesis: `T` or `t` stopped.
            let state = stat.rsplit_once(") ")?.1.chars().next()?;
            all &= matches!(state, 'T' | 't');
        }
        Some(all)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    while stopped() == Some(false) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_program_says_how_to_install_it() {
        let err = find_on_path("etcd-that-does-not-exist").unwrap_err();
        assert!(
            matches!(&err, HarnessError::NotInstalled { program } if program == "etcd-that-does-not-exist"),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(
            text.contains("apt-get install -y etcd-server etcd-client"),
            "{text}"
        );
        assert!(text.contains("protobuf-compiler"), "{text}");
    }

    #[tokio::test]
    async fn an_etcd_that_exits_is_a_harness_error_naming_the_member() {
        // `false` exits at once, as an etcd refusing its flags would.
        let etcd = find_on_path("false").unwrap();
        let mut cluster = EtcdCluster::create(EtcdBuilder::default(), etcd, 1).unwrap();
        std::fs::write(&cluster.members[0].log_file, "last words\n").unwrap();
        cluster.spawn(0).unwrap();
        let err = cluster.wait_until_serving(START_TIMEOUT).await.unwrap_err();
        match &err {
            HarnessError::NotServing {
                member,
                what,
                log_tail,
                ..
            } => {
                assert_eq!(*member, 0);
                assert!(what.starts_with("exited"), "{what}");
                assert_eq!(log_tail, "last words");
            }
            other => panic!("expected NotServing, got {other:?}"),
        }
        let text = err.to_string();
        assert!(text.starts_with("etcd member m0 at 127.0.0.1:"), "{text}");
    }

    #[test]
    fn certificates_are_pem_files() {
        let dir = tempfile::tempdir().unwrap();
        let files = write_certificates(dir.path()).unwrap();
        for path in [
            &files.ca_file,
            &files.server_cert_file,
            &files.client_key_file,
        ] {
            crate::client::read_pem("test", path).unwrap();
        }
        files.with_client_identity().validate().unwrap();
    }

    #[test]
    fn directories_of_dead_test_processes_are_removed() {
        let mut dead = Command::new("true").spawn().unwrap();
        let dead_pid = dead.id();
        dead.wait().unwrap();
        let orphan = tempfile::Builder::new()
            .prefix(DIR_PREFIX)
            .tempdir()
            .unwrap();
        std::fs::write(orphan.path().join(OWNER_FILE), dead_pid.to_string()).unwrap();
        let mine = tempdir().unwrap();

        remove_orphaned_dirs();

        assert!(
            !orphan.path().exists(),
            "the dead process's directory is gone"
        );
        assert!(mine.path().exists(), "a live process's directory stays");
    }

    #[test]
    fn log_tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let text: String = (0..100).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&path, text).unwrap();
        let tail = log_tail(&path);
        assert!(tail.ends_with("line 99"), "{tail}");
        assert_eq!(tail.lines().count(), LOG_TAIL_LINES);
        assert_eq!(log_tail(&dir.path().join("missing")), "(no log)");
    }
}
