//! One etcd server: a cluster of one, with a single-server face.

use super::HarnessError;
use std::process::Command;

use super::cluster::EtcdCluster;
use super::options::{EtcdBuilder, TlsFiles};
use super::proxy::Proxies;
use crate::client_config::ClientConfig;
use crate::error::Result;

impl EtcdBuilder {
    /// Starts one etcd server with these options.
    ///
    /// # Errors
    ///
    /// See [`EtcdServer::start`].
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a start dropped before it returns drops what it built, which kills every
    /// process it started and removes its directory.
    pub async fn start(self) -> Result<EtcdServer, HarnessError> {
        Ok(EtcdServer {
            cluster: self.start_cluster(1).await?,
        })
    }
}

/// One etcd server for a test. See the [module docs](super) for what it promises.
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
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a start dropped before it returns drops what it built, which kills every
    /// process it started and removes its directory.
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

    /// A `ClientConfig::profile("test")` for this server; see [`EtcdCluster::client_config`].
    pub fn client_config(&self) -> ClientConfig {
        self.cluster.client_config()
    }

    /// The generated TLS files, if TLS is on.
    pub fn tls_files(&self) -> Option<&TlsFiles> {
        self.cluster.tls_files()
    }

    /// Stops the server (SIGTERM, SIGKILL after a second); the data stays for
    /// [`restart`](Self::restart).
    ///
    /// # Errors
    ///
    /// As [`EtcdCluster::kill`].
    ///
    /// # Cancel safety
    ///
    /// As [`EtcdCluster::kill`].
    pub async fn kill(&mut self) -> Result<(), HarnessError> {
        self.cluster.kill(0).await
    }

    /// Starts the server again on the same port and data and waits until it serves.
    ///
    /// # Errors
    ///
    /// As [`start`](Self::start).
    ///
    /// # Cancel safety
    ///
    /// As [`EtcdCluster::restart`].
    pub async fn restart(&mut self) -> Result<(), HarnessError> {
        self.cluster.restart(0).await
    }

    /// True while the etcd process runs.
    pub fn is_running(&mut self) -> bool {
        self.cluster.is_running(0)
    }

    /// Kills the server at once (SIGKILL), as a crash would; see [`EtcdCluster::crash`].
    ///
    /// # Errors
    ///
    /// As [`EtcdCluster::crash`].
    pub fn crash(&mut self) -> Result<(), HarnessError> {
        self.cluster.crash(0)
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

    /// A [`FaultProxy`](super::FaultProxy) in front of the server, with the client config through it; see
    /// [`EtcdCluster::proxies`].
    ///
    /// # Errors
    ///
    /// As [`EtcdCluster::proxies`].
    ///
    /// # Cancel safety
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
    ///
    /// # Cancel safety
    ///
    /// As [`EtcdCluster::compact`].
    pub async fn compact(&self) -> Result<i64, HarnessError> {
        self.cluster.compact().await
    }

    /// Stops the server and removes its data (what dropping it does, but gracefully and with
    /// errors reported).
    ///
    /// # Errors
    ///
    /// As [`EtcdCluster::stop`].
    ///
    /// # Cancel safety
    ///
    /// As [`EtcdCluster::stop`].
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
