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

use std::time::Duration;

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

mod certs;
mod cluster;
mod options;
mod process;
mod server;

pub use cluster::EtcdCluster;
pub use options::{EtcdBuilder, TlsFiles};
pub use server::EtcdServer;

#[cfg(test)]
mod tests;
