//! Several etcd members started together, and the faults done to them: kill, restart,
//! pause, compaction.

use std::fs::OpenOptions;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::certs::write_certificates;
use super::options::{EtcdBuilder, TlsFiles};
use super::process::{
    clear_env, die_with_parent, find_on_path, log_tail, tempdir, terminate, wait_stopped,
};
use super::proxy::{FaultProxy, Proxies};
use super::{
    APP_PASSWORD, APP_PREFIX, APP_ROLE, APP_USER, HarnessError, ROOT_PASSWORD, ROOT_USER,
    START_TIMEOUT,
};
use crate::client_config::ClientConfig;
use crate::error::Result;
use crate::store::Store;

/// How many times a start is tried on new ports when another process took one meanwhile.
const START_ATTEMPTS: usize = 3;

impl EtcdBuilder {
    /// Starts a cluster of `members` etcd servers with these options.
    ///
    /// # Errors
    ///
    /// See [`EtcdServer::start`](super::EtcdServer::start); [`HarnessError::InvalidArgument`] for zero members.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a start dropped before it returns drops what it built, which kills every
    /// process it started and removes its directory.
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

/// Several etcd members forming one cluster. See the [module docs](super).
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
    pub(super) members: Vec<Member>,
    options: EtcdBuilder,
    etcd: PathBuf,
    token: String,
    tls: Option<TlsFiles>,
    /// True once `auth enable` ran: from then on clients log in.
    pub(super) auth_on: bool,
    /// Removed when the cluster is dropped, after every process is dead (see `Drop`), or by
    /// `stop`, which takes it.
    dir: Option<tempfile::TempDir>,
}

#[derive(Debug)]
pub(super) struct Member {
    name: String,
    client: SocketAddr,
    peer: SocketAddr,
    data_dir: PathBuf,
    pub(super) log_file: PathBuf,
    process: Option<Child>,
    /// True between `pause` and `resume` (or `kill`): the process runs but answers nothing.
    paused: bool,
}

impl EtcdCluster {
    /// Starts a plain cluster of `members` etcd servers and waits until every member serves.
    ///
    /// # Errors
    ///
    /// As [`EtcdServer::start`](super::EtcdServer::start).
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a start dropped before it returns drops what it built, which kills every
    /// process it started and removes its directory.
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

    /// `ClientConfig::profile("test")` with every endpoint; with TLS it trusts the generated
    /// CA (and presents the client certificate when client-certificate auth is on); with
    /// auth it logs in as [`ROOT_USER`](super::ROOT_USER) (use `.with_user(APP_USER, APP_PASSWORD)` for the
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
    ///
    /// A member stopped this way hands its leadership over first, as a drained node does; use
    /// [`crash`](Self::crash) for a member that dies without a word.
    ///
    /// # Errors
    ///
    /// [`HarnessError::Io`] if the process cannot be signalled or reaped.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: the member stays recorded as running until it has exited, so a `kill`
    /// dropped during the grace period can be called again (or the cluster dropped, which
    /// kills it outright).
    pub async fn kill(&mut self, i: usize) -> Result<(), HarnessError> {
        if self.members[i].paused {
            // A frozen process cannot act on SIGTERM: thaw it, so it stops as asked (and
            // hands its leadership over) rather than being killed at the end of the grace.
            self.resume(i)?;
        }
        let member = &mut self.members[i];
        let Some(child) = member.process.as_mut() else {
            return Ok(());
        };
        terminate(child, &member.name).await?;
        member.process = None;
        Ok(())
    }

    /// Kills member `i` at once with SIGKILL, as a power cut or the kernel's OOM killer
    /// would: no leadership handover, no last flush. Its data directory stays as the crash
    /// left it for [`restart`](Self::restart), where etcd recovers from its WAL. Crashing a
    /// stopped member does nothing; a paused member dies too.
    ///
    /// # Errors
    ///
    /// [`HarnessError::Io`] if the process cannot be killed or reaped.
    pub fn crash(&mut self, i: usize) -> Result<(), HarnessError> {
        let member = &mut self.members[i];
        member.paused = false;
        let Some(mut child) = member.process.take() else {
            return Ok(());
        };
        // A process already gone makes `kill` fail; reaping is what matters.
        let _ = child.kill();
        child.wait().map_err(HarnessError::io(format!(
            "cannot reap etcd member {}",
            member.name
        )))?;
        Ok(())
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

    /// Starts a [`FaultProxy`](super::FaultProxy) in front of every member (running or not) and returns them
    /// with the [`client_config`](Self::client_config) that reaches the cluster only through
    /// them. Each call makes new proxies: give each client its own to cut one client off and
    /// not the others.
    ///
    /// # Errors
    ///
    /// [`HarnessError::Io`] if a proxy port cannot be bound.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: the proxies started so far are dropped, which stops them.
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
    ///
    /// # Cancel safety
    ///
    /// Dropped after the request was sent, the compaction may or may not have happened.
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
    /// As [`EtcdServer::start`](super::EtcdServer::start). Restarting a running member is
    /// [`HarnessError::InvalidArgument`].
    ///
    /// # Cancel safety
    ///
    /// Dropped before it returns, the member may have been started and is then running, not
    /// yet known to serve: [`kill`](Self::kill) it, or drop the cluster.
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
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it owns the cluster, whose drop kills what is still running and removes
    /// the data.
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
    /// auth is on, [`ROOT_USER`](super::ROOT_USER)'s credentials; returns its standard output.
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
    pub(super) fn create(
        options: EtcdBuilder,
        etcd: PathBuf,
        members: usize,
    ) -> Result<Self, HarnessError> {
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
        let mut config = ClientConfig::profile("test").with_endpoints(endpoints);
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
    pub(super) fn spawn(&mut self, i: usize) -> Result<(), HarnessError> {
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
    pub(super) async fn wait_until_serving(
        &mut self,
        within: Duration,
    ) -> Result<(), HarnessError> {
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
    pub(super) fn lost_a_port(&self) -> bool {
        self.members.iter().any(|m| {
            std::fs::read_to_string(&m.log_file)
                .is_ok_and(|log| log.contains("address already in use"))
        })
    }

    /// Creates the users and roles of the module docs, then turns auth on.
    pub(super) fn enable_auth(&self) -> Result<(), HarnessError> {
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
        let running = match &mut self.process {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        };
        // An exited child is reaped by `try_wait`: forget it, so no later signal can reach a
        // process that reused its pid.
        if !running {
            self.process = None;
            self.paused = false;
        }
        running
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
