//! The one error type of coord.
//!
//! Every fallible operation returns [`Result<T>`]. Messages name the key (or the endpoints, or the
//! configuration field) they are about, so a log line is enough to act on.
//!
//! # Did a failed write happen?
//!
//! A write that fails before it reaches etcd, or that etcd refuses, did not happen:
//! [`Error::Unavailable`] for a write means it was never sent (no connection could be made)
//! or etcd refused it before proposing it (no leader, too many requests). A write whose
//! answer was lost after it was sent (its deadline passed, the connection broke under it,
//! etcd timed out waiting for its proposal) may have been applied or not: that is
//! [`Error::OutcomeUnknown`], which wraps the [`Error::Timeout`] or [`Error::Unavailable`] that
//! ended it. Read the key (or send a write guarded by a compare, which is safe to repeat)
//! before retrying; a plain retry may apply it twice. Reads never return `OutcomeUnknown`.

mod file;

pub use file::{FileError, FileErrorKind, Position};

use std::time::Duration;

/// A `Result` whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in coord.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The key does not exist.
    #[error("key `{key}` not found")]
    NotFound {
        /// The key that was read.
        key: String,
    },

    /// A compare-and-set lost: the key is not at the expected version. For a release (key =
    /// the config prefix), the prefix's latest release is not the one expected: the numbers
    /// are release seqs.
    #[error("conflict on `{key}`: expected {expected}, found {current}")]
    Conflict {
        /// The key that was written, or the prefix of a release.
        key: String,
        /// The version the caller expected (0 = must not exist), or the latest release seq.
        expected: i64,
        /// The key's current version (its mod_revision; 0 = it does not exist), or the
        /// prefix's latest release seq now.
        current: i64,
    },

    /// `try_acquire` found the lock held.
    #[error("lock `{name}` is held by `{holder}`")]
    LockHeld {
        /// The lock name.
        name: String,
        /// The key of the current holder.
        holder: String,
    },

    /// Every instance ID of a service is taken.
    #[error("no free instance ID for service `{service}` (max_id {max_id})")]
    NoIdAvailable {
        /// The service whose IDs were requested.
        service: String,
        /// The configured number of IDs.
        max_id: u32,
    },

    /// [`Registry::register`](crate::Registry::register) found the instance's key held by
    /// another lease: another live registration of the same `(name, id)`, in this process or
    /// another. Nothing was written. (Lease 0 means a key written without a lease, by hand:
    /// delete it to register.)
    #[error("`{key}` is already registered by lease {lease:x}")]
    AlreadyRegistered {
        /// The instance key, `/services/{name}/{id}`.
        key: String,
        /// The lease holding the key.
        lease: i64,
    },

    /// The lease behind a session is gone (revoked, expired, or not renewed in time).
    #[error("session lost: lease {lease:x} {reason}")]
    SessionLost {
        /// The lease ID.
        lease: i64,
        /// Why the session was lost.
        reason: String,
    },

    /// A stored value is not valid JSON for the requested type.
    #[error("cannot decode `{key}`: {source}")]
    Decode {
        /// The key whose value failed to decode.
        key: String,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },

    /// A value decoded but is not acceptable (a required key is missing, validation failed).
    #[error("invalid config at `{key}`: {reason}")]
    Invalid {
        /// The key (or prefix) that is invalid.
        key: String,
        /// What is wrong.
        reason: String,
    },

    /// The operation did not finish within its deadline.
    #[error("{operation} timed out after {after:?}")]
    Timeout {
        /// What timed out, with the key it was about.
        operation: String,
        /// The deadline that passed.
        after: Duration,
    },

    /// etcd cannot be reached: no endpoint answers, the connection broke (a watch stream that
    /// ends with it included), or the members reached have no leader. Only for the store: the
    /// test harness reports its own failures as `testing::HarnessError`.
    #[error("etcd unavailable at {endpoints}: {reason}")]
    Unavailable {
        /// The endpoints that were tried, comma separated.
        endpoints: String,
        /// What the transport said.
        reason: String,
    },

    /// A write was sent, but its answer was lost (its deadline passed, the connection broke
    /// under it, etcd timed out waiting for it): it may or may not have been applied. Check
    /// before retrying: read the key, or retry only a write guarded by a compare
    /// (`compare_and_set`, create-only). See [the module docs](self#did-a-failed-write-happen).
    /// Only writes return it: `put`, `delete`, a `txn` that writes, `lease_grant`,
    /// `lease_revoke`, `compact`, and whatever is built on them.
    #[error(
        "outcome unknown: {operation} may or may not have been applied; check before retrying ({source})"
    )]
    OutcomeUnknown {
        /// The write, with its key (`put /config/a`, `lease_revoke 2a`).
        operation: String,
        /// The key it wrote (the first key of a transaction; empty for lease and cluster
        /// writes).
        key: String,
        /// What ended it: [`Error::Timeout`] or [`Error::Unavailable`].
        #[source]
        source: Box<Error>,
    },

    /// The caller passed something coord or etcd cannot accept; nothing was sent.
    #[error("invalid argument `{field}`: {reason}")]
    InvalidArgument {
        /// The argument or configuration field at fault.
        field: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The user name or password was rejected.
    #[error("authentication failed: {reason}")]
    Unauthenticated {
        /// What etcd said.
        reason: String,
    },

    /// The authenticated user may not touch this key.
    #[error("permission denied on `{key}`: {reason}")]
    PermissionDenied {
        /// The key of the refused request.
        key: String,
        /// What etcd said.
        reason: String,
    },

    /// A watch asked for a revision that has been compacted away.
    #[error("revision {requested} of `{key}` is compacted (compact revision {compact_revision})")]
    Compacted {
        /// The watched key or prefix.
        key: String,
        /// The revision the watch asked for.
        requested: i64,
        /// The store's compact revision.
        compact_revision: i64,
    },

    /// The lease does not exist (it expired or was revoked).
    #[error("lease {lease:x} not found (expired or revoked)")]
    LeaseNotFound {
        /// The lease ID.
        lease: i64,
    },

    /// An instance refused a release it was waiting for (`wait_rollout`): it keeps running
    /// its last good config.
    #[error("instance `{instance}` rejected the release{}: {reason}", key.as_ref().map(|k| format!(" at `{k}`")).unwrap_or_default())]
    Rejected {
        /// The instance that refused it.
        instance: String,
        /// The key its error names, if it names one.
        key: Option<String>,
        /// Why, as the instance's `Live::last_error` says.
        reason: String,
    },

    /// A gray release of the prefix is in the way: another one is in progress (promote or
    /// abort it first), or the release named to promote or abort is not the one in progress.
    /// Nothing was written. A conflict with the prefix's state, as [`Error::Conflict`] is,
    /// but not one that reading again resolves.
    #[error("gray release conflict on `{prefix}`: {reason}")]
    GrayConflict {
        /// The config prefix.
        prefix: String,
        /// The gray release in progress.
        in_progress: u64,
        /// What was asked and why it cannot be done.
        reason: String,
    },

    /// The prefix requires review (see `coord::access`): a change of its values is proposed
    /// and approved by another principal, not released directly. Nothing was written.
    #[error(
        "`{prefix}` requires review (rule on `{rule}`): propose the change and have another principal approve it"
    )]
    ReviewRequired {
        /// The config prefix.
        prefix: String,
        /// The prefix of the review rule that covers it.
        rule: String,
    },

    /// A proposal cannot be approved or rejected: it is the approver's own, it is no longer
    /// open (approved, rejected, expired), or its prefix changed since it was proposed (then
    /// `changed` lists the keys, secrets redacted). Nothing was written.
    #[error("proposal `{id}` of `{prefix}`: {reason}{}", if changed.is_empty() { String::new() } else { format!(" (changed since: {})", changed.join("; ")) })]
    Proposal {
        /// The config prefix.
        prefix: String,
        /// The proposal id.
        id: String,
        /// Why.
        reason: String,
        /// What changed under the prefix since the proposal was made, key by key.
        changed: Vec<String>,
    },

    /// A secret's stored value could not be opened (see [`crate::keyring`]): the error names
    /// the key and the key id it was sealed with, never the value.
    #[error("cannot open secret `{key}`{}: {reason}", key_id.as_ref().map(|id| format!(" (key id `{id}`)")).unwrap_or_default())]
    Secret {
        /// The stored key whose value did not open.
        key: String,
        /// The id of the ring key it names, if it is an envelope.
        key_id: Option<String>,
        /// Why: no such key in this process's ring, the wrong key, a damaged envelope, a plain
        /// value where a sealed one belongs.
        reason: String,
    },

    /// The `Coord` was closed.
    #[error("coord is closed")]
    Closed,

    /// [`Coord::close`](crate::Coord::close) could not release everything: the store did not
    /// answer in time. What is listed goes when its lease's TTL runs out.
    #[error("close left {} lease(s) unrevoked: {}", unreleased.len(), unreleased.join("; "))]
    CloseIncomplete {
        /// One line per lease not revoked: what held it, the lease, and why.
        unreleased: Vec<String>,
    },

    /// A local config file ([`Coord::from_file`](crate::Coord::from_file)) cannot be read,
    /// does not parse, breaks the layout rule, or cannot be watched.
    #[error(transparent)]
    File(Box<FileError>),

    /// Any other error from etcd.
    #[error("etcd error on `{key}`: {reason}")]
    Backend {
        /// The key of the failed request (empty for cluster-wide requests).
        key: String,
        /// What etcd said.
        reason: String,
    },
}

impl Error {
    /// Shorthand for [`Error::InvalidArgument`].
    pub fn invalid_argument(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidArgument {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// True for errors that may go away by retrying (the store is unreachable or slow).
    ///
    /// False for [`Error::OutcomeUnknown`]: the store was unreachable or slow too, but the
    /// write may have been applied, so it is not safe to retry blindly (see
    /// [`is_outcome_unknown`](Self::is_outcome_unknown)).
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Unavailable { .. } | Error::Timeout { .. })
    }

    /// True for [`Error::OutcomeUnknown`]: a write that may or may not have been applied.
    pub fn is_outcome_unknown(&self) -> bool {
        matches!(self, Error::OutcomeUnknown { .. })
    }

    /// The error itself, or for [`Error::OutcomeUnknown`] the error that ended the write (what
    /// it says about the connection).
    pub(crate) fn cause(&self) -> &Error {
        match self {
            Error::OutcomeUnknown { source, .. } => source,
            other => other,
        }
    }
}
