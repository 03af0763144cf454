//! [`HarnessError`]: why the test harness could not run, stop or drive an etcd.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitStatus;

const INSTALL_HINT: &str = "install it with `apt-get install -y etcd-server etcd-client` \
     (building coord also needs `protobuf-compiler`), or put `etcd` and `etcdctl` on PATH";

/// Why the test harness could not start, stop or drive an etcd.
///
/// A type of its own rather than a [`coord::Error`](crate::Error): that error is about what a
/// running store did, and [`Error::Unavailable`](crate::Error::Unavailable) in particular
/// means etcd cannot be reached. A harness failure (most often: etcd is not installed) is a
/// problem with the test's machine, and says so. Both convert into
/// `Box<dyn std::error::Error>`, so a test returning that uses `?` on either.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HarnessError {
    /// `etcd` or `etcdctl` is not on PATH; the message says how to install it.
    #[error("`{program}` is not on PATH: {INSTALL_HINT}")]
    NotInstalled {
        /// The program that was looked for.
        program: String,
    },

    /// A member exited on its own, or did not serve within the start timeout.
    #[error("etcd member m{member} at {address} {what}; end of its log ({}):\n{log_tail}", .log_file.display())]
    NotServing {
        /// The member's index, as [`EtcdCluster::kill`](super::EtcdCluster::kill) takes it.
        member: usize,
        /// Its client address.
        address: SocketAddr,
        /// What happened, e.g. `exited (exit status: 1)`.
        what: String,
        /// Its log file (in the harness directory, removed with the cluster).
        log_file: PathBuf,
        /// The last lines of its log.
        log_tail: String,
    },

    /// etcdctl ran and failed.
    #[error("`etcdctl {command}` failed ({status}): {stderr}")]
    Etcdctl {
        /// The arguments it ran with, space separated.
        command: String,
        /// How it exited.
        status: ExitStatus,
        /// What it wrote to standard error.
        stderr: String,
    },

    /// A system call of the harness failed: spawning or signalling a process, a file, a port.
    #[error("{action}: {source}")]
    Io {
        /// What the harness was doing.
        action: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// The test certificates could not be generated.
    #[error("cannot generate certificates: {reason}")]
    Certificates {
        /// What the certificate generator said.
        reason: String,
    },

    /// The etcd under test did not answer a request the harness itself made (a compaction,
    /// say): the cluster has no quorum, or the member asked is paused or down.
    #[error("{action}: {source}")]
    Store {
        /// What the harness was doing.
        action: String,
        /// What the store said.
        #[source]
        source: crate::Error,
    },

    /// A harness method was given something it cannot do (a cluster of no members, restarting
    /// a running member).
    #[error("invalid argument `{field}`: {reason}")]
    InvalidArgument {
        /// The argument at fault.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl HarnessError {
    /// For `map_err`: an [`HarnessError::Io`] saying what was being done.
    pub(super) fn io(action: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let action = action.into();
        move |source| HarnessError::Io { action, source }
    }

    /// For `map_err`: a [`HarnessError::Store`] saying what was being done.
    pub(super) fn store(action: impl Into<String>) -> impl FnOnce(crate::Error) -> Self {
        let action = action.into();
        move |source| HarnessError::Store { action, source }
    }

    /// Shorthand for [`HarnessError::InvalidArgument`].
    pub(super) fn invalid_argument(field: &str, reason: impl Into<String>) -> Self {
        HarnessError::InvalidArgument {
            field: field.to_owned(),
            reason: reason.into(),
        }
    }
}
