//! The data model of the store seam, with etcd's meaning.
//!
//! Keys are UTF-8 strings (coord writes no other keys; the etcd backend converts foreign
//! non-UTF-8 keys lossily). Values are raw bytes. Revisions are etcd's: one global, strictly
//! increasing counter; every write that changes something takes the next revision.
//!
//! The store does not know which values are secret, so no `Debug` here prints a value: a
//! value shows as its length (`<12 bytes>`), so a logged key, event or transaction never
//! carries a password.

use std::fmt;

/// A value as `Debug` output shows it.
struct Bytes<'a>(&'a [u8]);

impl fmt::Debug for Bytes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} bytes>", self.0.len())
    }
}

/// A stored key with its metadata, as etcd's `mvccpb.KeyValue`. `Debug` shows the value's
/// length, not the value.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: String,
    /// The value (empty for keys-only reads and delete events).
    pub value: Vec<u8>,
    /// Revision of the write that created the key (since it last did not exist).
    pub create_revision: i64,
    /// Revision of the last write to the key.
    pub mod_revision: i64,
    /// Number of writes since the key was created (1 after the first put).
    pub version: i64,
    /// The lease the key is attached to, 0 for none.
    pub lease: i64,
}

impl fmt::Debug for KeyValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyValue")
            .field("key", &self.key)
            .field("value", &Bytes(&self.value))
            .field("create_revision", &self.create_revision)
            .field("mod_revision", &self.mod_revision)
            .field("version", &self.version)
            .field("lease", &self.lease)
            .finish()
    }
}

impl KeyValue {
    /// The value as UTF-8 text (lossy). The store cannot tell a secret: keep it out of logs
    /// unless the key is known not to hold one.
    pub fn value_str(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.value)
    }
}

/// Which keys an operation covers.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum KeyRange {
    /// Exactly one key.
    Key(String),
    /// Every key that starts with the prefix. An empty prefix covers every key.
    Prefix(String),
}

impl KeyRange {
    /// One key.
    pub fn key(key: impl Into<String>) -> Self {
        KeyRange::Key(key.into())
    }

    /// Every key under a prefix.
    pub fn prefix(prefix: impl Into<String>) -> Self {
        KeyRange::Prefix(prefix.into())
    }

    /// True if `key` is covered.
    pub fn contains(&self, key: &str) -> bool {
        match self {
            KeyRange::Key(k) => k == key,
            KeyRange::Prefix(p) => key.starts_with(p.as_str()),
        }
    }

    /// The key or prefix, for messages and tracing fields.
    pub fn as_str(&self) -> &str {
        match self {
            KeyRange::Key(k) | KeyRange::Prefix(k) => k,
        }
    }
}

/// Options of a range read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RangeOptions {
    /// Read the store as of this revision; 0 reads the latest.
    pub revision: i64,
    /// Return keys and metadata without values.
    pub keys_only: bool,
    /// At most this many keys (in key order); 0 for no limit.
    pub limit: i64,
    /// Only keys last written at or after this revision (0: all). etcd still walks every
    /// key of the range to filter: it saves the answer's bytes, not the server's work.
    pub min_mod_revision: i64,
    /// Only the count of the range: no keys.
    pub count_only: bool,
}

impl RangeOptions {
    /// Read as of `revision` (0 = latest).
    #[must_use]
    pub fn at_revision(mut self, revision: i64) -> Self {
        self.revision = revision;
        self
    }

    /// Leave values out.
    #[must_use]
    pub fn keys_only(mut self) -> Self {
        self.keys_only = true;
        self
    }

    /// Return at most `limit` keys.
    #[must_use]
    pub fn limit(mut self, limit: i64) -> Self {
        self.limit = limit;
        self
    }

    /// Return only keys last written at or after `revision`.
    #[must_use]
    pub fn modified_since(mut self, revision: i64) -> Self {
        self.min_mod_revision = revision;
        self
    }

    /// Return only how many keys the range covers.
    #[must_use]
    pub fn count_only(mut self) -> Self {
        self.count_only = true;
        self
    }
}

/// The answer to a range read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GetResponse {
    /// The keys found, in key order.
    pub kvs: Vec<KeyValue>,
    /// How many keys the range covers (may exceed `kvs.len()` when limited).
    pub count: i64,
    /// The store revision the read saw.
    pub revision: i64,
}

/// The answer to a put.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PutResponse {
    /// The revision of this write.
    pub revision: i64,
    /// The key as it was before the put, if it existed.
    pub prev_kv: Option<KeyValue>,
}

/// The answer to a delete.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeleteResponse {
    /// The revision after the delete (unchanged if nothing was deleted).
    pub revision: i64,
    /// How many keys were deleted.
    pub deleted: i64,
    /// The deleted keys as they were.
    pub prev_kvs: Vec<KeyValue>,
}

/// What a compare looks at. `Debug` shows a value's length, not the value.
#[derive(Clone, PartialEq, Eq)]
pub enum CompareTarget {
    /// The value (a missing key never equals any value).
    Value(Vec<u8>),
    /// The version (0 for a missing key).
    Version(i64),
    /// The create revision (0 for a missing key).
    CreateRevision(i64),
    /// The mod revision (0 for a missing key).
    ModRevision(i64),
    /// The lease ID (0 for none or a missing key).
    Lease(i64),
}

impl fmt::Debug for CompareTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CompareTarget::Value(value) => f.debug_tuple("Value").field(&Bytes(value)).finish(),
            CompareTarget::Version(v) => f.debug_tuple("Version").field(v).finish(),
            CompareTarget::CreateRevision(r) => f.debug_tuple("CreateRevision").field(r).finish(),
            CompareTarget::ModRevision(r) => f.debug_tuple("ModRevision").field(r).finish(),
            CompareTarget::Lease(l) => f.debug_tuple("Lease").field(l).finish(),
        }
    }
}

/// How a compare compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompareOp {
    /// `==`
    Equal,
    /// `!=`
    NotEqual,
    /// `>`
    Greater,
    /// `<`
    Less,
}

/// One condition of a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compare {
    /// The key compared, or the prefix if `prefix` is set.
    pub key: String,
    /// The comparison.
    pub op: CompareOp,
    /// The field and the operand.
    pub target: CompareTarget,
    /// Compare every key starting with `key` (etcd's range compare): the compare holds if it
    /// holds for each of them; with none, it is made against a missing key (so
    /// `mod_revision < r` holds for an empty prefix, and a value compare never does).
    pub prefix: bool,
}

impl Compare {
    /// A compare on `key`.
    pub fn new(key: impl Into<String>, op: CompareOp, target: CompareTarget) -> Self {
        Compare {
            key: key.into(),
            op,
            target,
            prefix: false,
        }
    }

    /// The same compare over every key starting with `self.key` (see
    /// [`prefix`](Self::prefix)). `Compare::new(p, CompareOp::Less,
    /// CompareTarget::ModRevision(r + 1)).over_prefix()` says "nothing under `p` changed or
    /// appeared after revision `r`".
    #[must_use]
    pub fn over_prefix(mut self) -> Self {
        self.prefix = true;
        self
    }

    /// `key`'s value equals `value`.
    pub fn value(key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        Self::new(key, CompareOp::Equal, CompareTarget::Value(value.into()))
    }

    /// `key`'s version equals `version`.
    pub fn version(key: impl Into<String>, version: i64) -> Self {
        Self::new(key, CompareOp::Equal, CompareTarget::Version(version))
    }

    /// `key`'s create revision equals `revision` (0 = the key does not exist).
    pub fn create_revision(key: impl Into<String>, revision: i64) -> Self {
        Self::new(
            key,
            CompareOp::Equal,
            CompareTarget::CreateRevision(revision),
        )
    }

    /// `key`'s mod revision equals `revision` (0 = the key does not exist).
    pub fn mod_revision(key: impl Into<String>, revision: i64) -> Self {
        Self::new(key, CompareOp::Equal, CompareTarget::ModRevision(revision))
    }

    /// `key` is attached to `lease`.
    pub fn lease(key: impl Into<String>, lease: i64) -> Self {
        Self::new(key, CompareOp::Equal, CompareTarget::Lease(lease))
    }

    /// True if the compare holds for `kv` (`None` = the key does not exist).
    pub fn matches(&self, kv: Option<&KeyValue>) -> bool {
        use std::cmp::Ordering;
        let ordering = match (&self.target, kv) {
            // etcd: a compare on the value of a missing key is false whatever the operator.
            (CompareTarget::Value(_), None) => return false,
            (CompareTarget::Value(v), Some(kv)) => kv.value.as_slice().cmp(v.as_slice()),
            (CompareTarget::Version(n), kv) => kv.map_or(0, |kv| kv.version).cmp(n),
            (CompareTarget::CreateRevision(n), kv) => kv.map_or(0, |kv| kv.create_revision).cmp(n),
            (CompareTarget::ModRevision(n), kv) => kv.map_or(0, |kv| kv.mod_revision).cmp(n),
            (CompareTarget::Lease(n), kv) => kv.map_or(0, |kv| kv.lease).cmp(n),
        };
        match self.op {
            CompareOp::Equal => ordering == Ordering::Equal,
            CompareOp::NotEqual => ordering != Ordering::Equal,
            CompareOp::Greater => ordering == Ordering::Greater,
            CompareOp::Less => ordering == Ordering::Less,
        }
    }
}

/// One operation inside a transaction branch. `Debug` shows a put's value length, not the
/// value.
#[derive(Clone, PartialEq, Eq)]
pub enum TxnOp {
    /// Write a key, optionally attached to a lease (0 = none).
    Put {
        /// The key.
        key: String,
        /// The value.
        value: Vec<u8>,
        /// The lease, 0 for none.
        lease: i64,
    },
    /// Delete a key or every key under a prefix.
    Delete(KeyRange),
    /// Read a key or prefix.
    Get(KeyRange, RangeOptions),
}

impl fmt::Debug for TxnOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TxnOp::Put { key, value, lease } => f
                .debug_struct("Put")
                .field("key", key)
                .field("value", &Bytes(value))
                .field("lease", lease)
                .finish(),
            TxnOp::Delete(range) => f.debug_tuple("Delete").field(range).finish(),
            TxnOp::Get(range, options) => f.debug_tuple("Get").field(range).field(options).finish(),
        }
    }
}

impl TxnOp {
    /// A put without a lease.
    pub fn put(key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        TxnOp::Put {
            key: key.into(),
            value: value.into(),
            lease: 0,
        }
    }

    /// A put attached to `lease`.
    pub fn put_with_lease(key: impl Into<String>, value: impl Into<Vec<u8>>, lease: i64) -> Self {
        TxnOp::Put {
            key: key.into(),
            value: value.into(),
            lease,
        }
    }

    /// Delete one key.
    pub fn delete(key: impl Into<String>) -> Self {
        TxnOp::Delete(KeyRange::Key(key.into()))
    }

    /// Read one key.
    pub fn get(key: impl Into<String>) -> Self {
        TxnOp::Get(KeyRange::Key(key.into()), RangeOptions::default())
    }

    /// The key or prefix the operation touches.
    pub fn key(&self) -> &str {
        match self {
            TxnOp::Put { key, .. } => key,
            TxnOp::Delete(range) | TxnOp::Get(range, _) => range.as_str(),
        }
    }
}

/// A transaction: if every compare holds, run `success`, else run `failure`; atomically.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Txn {
    /// The conditions, all of which must hold.
    pub compares: Vec<Compare>,
    /// Run when every compare holds.
    pub success: Vec<TxnOp>,
    /// Run otherwise.
    pub failure: Vec<TxnOp>,
}

impl Txn {
    /// An empty transaction.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds conditions.
    #[must_use]
    pub fn when(mut self, compares: impl IntoIterator<Item = Compare>) -> Self {
        self.compares.extend(compares);
        self
    }

    /// Adds operations to the success branch.
    #[must_use]
    pub fn and_then(mut self, ops: impl IntoIterator<Item = TxnOp>) -> Self {
        self.success.extend(ops);
        self
    }

    /// Adds operations to the failure branch.
    #[must_use]
    pub fn or_else(mut self, ops: impl IntoIterator<Item = TxnOp>) -> Self {
        self.failure.extend(ops);
        self
    }

    /// The first key the transaction touches, for messages and tracing.
    pub fn first_key(&self) -> &str {
        self.compares
            .first()
            .map(|c| c.key.as_str())
            .or_else(|| self.success.first().map(TxnOp::key))
            .or_else(|| self.failure.first().map(TxnOp::key))
            .unwrap_or("")
    }
}

/// The result of one transaction operation, in the order of the branch that ran.
///
/// Inside a transaction, writes do not return the previous values (`prev_kv` is `None`,
/// `prev_kvs` is empty, `deleted` is still counted): etcd would read every overwritten key for
/// them, which costs a few microseconds per transaction on loopback (measured: 3–5 µs per
/// lock + unlock pair) and no coord module needs. Put a `Get` before the write in the same branch to read the old value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnOpResponse {
    /// A put's answer (without `prev_kv`).
    Put(PutResponse),
    /// A delete's answer (without `prev_kvs`).
    Delete(DeleteResponse),
    /// A read's answer.
    Get(GetResponse),
}

/// The answer to a transaction.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TxnResponse {
    /// True if the compares held and `success` ran.
    pub succeeded: bool,
    /// The store revision after the transaction.
    pub revision: i64,
    /// One answer per operation of the branch that ran.
    pub responses: Vec<TxnOpResponse>,
}

/// A granted lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseGrant {
    /// The lease ID.
    pub id: i64,
    /// The TTL the server granted in seconds (etcd raises a TTL under its minimum silently).
    pub ttl: i64,
    /// The store revision when granted.
    pub revision: i64,
}

/// A lease's remaining time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseTtl {
    /// The lease ID.
    pub id: i64,
    /// Seconds left; -1 if the lease does not exist (expired or revoked).
    pub ttl: i64,
    /// The TTL the lease was granted with.
    pub granted_ttl: i64,
    /// The keys attached to the lease.
    pub keys: Vec<String>,
}

/// What happened to a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// The key was created or written.
    Put,
    /// The key was deleted (or its lease expired).
    Delete,
}

/// One change seen by a watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Put or delete.
    pub kind: EventKind,
    /// The key after the change. For a delete: the key, with `mod_revision` the revision of the
    /// delete and everything else empty or zero.
    pub kv: KeyValue,
}

/// A batch of watch events that share one revision, or a progress notification.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchResponse {
    /// The revision: every event in the batch has this `mod_revision`. For a progress
    /// notification (no events) it is the store revision the watch is known to be current at.
    pub revision: i64,
    /// The events of one revision, in the order they were applied. Empty for progress.
    pub events: Vec<Event>,
}

impl WatchResponse {
    /// True if this is a progress notification (no events).
    pub fn is_progress(&self) -> bool {
        self.events.is_empty()
    }
}

/// The store's state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Status {
    /// The current revision.
    pub revision: i64,
    /// The server version ("embedded" for the in-memory store).
    pub version: String,
    /// The member ID of the current leader (0 in memory).
    pub leader: u64,
    /// The member ID that answered (0 in memory).
    pub member_id: u64,
    /// The backend database size in bytes (an estimate in memory).
    pub db_size: i64,
    /// The ID of the cluster that answered: etcd's cluster ID, the same from every member and
    /// different for every cluster (a cluster rebuilt from scratch gets a new one). In
    /// memory, a random ID drawn when the store is made, shared by its handles.
    pub cluster_id: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_a_value() {
        let kv = KeyValue {
            key: "/config/pay/api_key".into(),
            value: b"\"canary\"".to_vec(),
            ..KeyValue::default()
        };
        let put = TxnOp::put("/k", "canary");
        let compare = CompareTarget::Value(b"canary".to_vec());
        for shown in [
            format!("{kv:?}"),
            format!("{put:?}"),
            format!("{compare:?}"),
        ] {
            assert!(!shown.contains("canary"), "{shown}");
            assert!(!shown.contains("99, 97"), "bytes as numbers: {shown}");
        }
        assert!(format!("{kv:?}").contains("<8 bytes>"), "{kv:?}");
    }
}

/// What an etcd permission allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PermissionKind {
    /// Reads (range, watch).
    Read,
    /// Writes (put, delete, the writes of a transaction).
    Write,
    /// Both.
    ReadWrite,
}

/// One etcd role permission: a kind on a key or a key range, as etcd stores it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Permission {
    /// The first key.
    pub key: String,
    /// The end of the range (exclusive); empty: `key` alone.
    pub range_end: String,
    /// What it allows.
    pub kind: PermissionKind,
}

impl Permission {
    /// `kind` on every key under `prefix`.
    pub fn prefix(kind: PermissionKind, prefix: &str) -> Self {
        Permission {
            key: prefix.to_owned(),
            range_end: prefix_end(prefix),
            kind,
        }
    }

    /// `kind` on `key` alone.
    pub fn key(kind: PermissionKind, key: &str) -> Self {
        Permission {
            key: key.to_owned(),
            range_end: String::new(),
            kind,
        }
    }

    /// The range as etcdctl would name it: the key, or `prefix*`.
    pub fn describe(&self) -> String {
        let kind = match self.kind {
            PermissionKind::Read => "read",
            PermissionKind::Write => "write",
            PermissionKind::ReadWrite => "readwrite",
        };
        if self.range_end.is_empty() {
            format!("{kind} {}", self.key)
        } else if self.range_end == prefix_end(&self.key) {
            format!("{kind} {}*", self.key)
        } else {
            format!("{kind} [{}, {})", self.key, self.range_end)
        }
    }
}

/// The first key after every key that starts with `prefix` (etcd's `GetPrefixRangeEnd`);
/// `"\0"` (every key) for an empty prefix.
pub fn prefix_end(prefix: &str) -> String {
    let mut bytes = prefix.as_bytes().to_vec();
    while let Some(last) = bytes.pop() {
        if last < 0xff {
            bytes.push(last + 1);
            return String::from_utf8_lossy(&bytes).into_owned();
        }
    }
    "\0".to_owned()
}

/// etcd's users and roles, as [`Store::auth_state`](super::Store::auth_state) reads them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthState {
    /// Users and the roles each holds.
    pub users: std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
    /// Roles and their permissions.
    pub roles: std::collections::BTreeMap<String, std::collections::BTreeSet<Permission>>,
}

/// One change of etcd's users and roles (etcd's auth API; the connection must hold `root`).
#[derive(Clone, PartialEq, Eq)]
pub enum AuthChange {
    /// Creates a role.
    AddRole(String),
    /// Deletes a role (and revokes it from every user).
    DeleteRole(String),
    /// Adds a permission to a role (or changes the kind of the same range's).
    Grant {
        /// The role.
        role: String,
        /// The permission.
        permission: Permission,
    },
    /// Removes the permission on a range from a role.
    Revoke {
        /// The role.
        role: String,
        /// The permission (its kind is not compared).
        permission: Permission,
    },
    /// Creates a user with a password.
    AddUser {
        /// The user.
        name: String,
        /// Its password (never shown by `Debug` or `Display`).
        password: String,
    },
    /// Gives a user a role.
    GrantRole {
        /// The user.
        user: String,
        /// The role.
        role: String,
    },
    /// Takes a role from a user.
    RevokeRole {
        /// The user.
        user: String,
        /// The role.
        role: String,
    },
}

impl std::fmt::Display for AuthChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthChange::AddRole(role) => write!(f, "+ role {role}"),
            AuthChange::DeleteRole(role) => write!(f, "- role {role}"),
            AuthChange::Grant { role, permission } => {
                write!(f, "+ role {role}: {}", permission.describe())
            }
            AuthChange::Revoke { role, permission } => {
                write!(f, "- role {role}: {}", permission.describe())
            }
            AuthChange::AddUser { name, .. } => write!(f, "+ user {name}"),
            AuthChange::GrantRole { user, role } => write!(f, "+ user {user}: role {role}"),
            AuthChange::RevokeRole { user, role } => write!(f, "- user {user}: role {role}"),
        }
    }
}

impl std::fmt::Debug for AuthChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AuthChange({self})")
    }
}
