//! Releases: attributed, recorded, reversible changes of a config prefix.
//!
//! A release is one atomic change of the keys under a prefix together with its record: who,
//! why, when, and the full values of the prefix after it. The change and the record commit
//! in **one transaction**, so history never misses an applied release and never records one
//! that did not apply.
//!
//! # Key layout
//!
//! - `/coord/releases{prefix}//{seq}`: release `seq` (20 digits, from 1), JSON.
//! - `/coord/releases{prefix}//head`: a copy of the latest record; every release compares it,
//!   so two releases of one prefix never take the same `seq`.
//!
//! The `//` cannot occur in a config prefix (an empty segment), so the records of `/a` and of
//! `/a/b` never share a range. Records are trimmed to the newest N (default 100, see
//! [`ConfigCenter::with_release_history`](crate::ConfigCenter::with_release_history)) in the
//! release's own transaction; the latest is never trimmed.
//!
//! # What it promises
//!
//! - **One transaction.** Values, record and head are written together, guarded by the head
//!   (no other release in between) and by every key under the prefix (nothing changed since
//!   the state the record describes was read). A refused transaction writes nothing.
//! - **Changes made elsewhere show up.** A `set`, a `batch` or an `etcdctl put` is not a
//!   release; when the next release finds the prefix different from the latest record, it
//!   first records what it found as an unattributed [`ReleaseKind::External`] entry, in its
//!   own transaction. [`history`](crate::ConfigCenter::history) shows such changes as an
//!   [`ReleaseKind::Unrecorded`] entry computed when it reads, and writes nothing.
//! - **Reads are reads.** `history`, `diff` and `rollout` never write to the store.
//! - **Rollback restores exact bytes**, removing keys added since, and is itself a release.
//!   A gray release in progress is ended by it (an [`ReleaseKind::Abort`] entry in the same
//!   transaction), so no instance stays on values newer than the ones restored.
//! - **Secrets stay out of output.** Records keep the values (a rollback needs them), but
//!   [`Release::values`] and [`KeyDiff`] show every secret value as `"<redacted>"`: decided
//!   when shown, from the typed struct or the prefix's published schema (map entries of
//!   secrets and secret fields of nested map entries included), and from the keys the record
//!   marked secret when it was written.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tracing::Instrument;

use crate::config::center::{ConfigCenter, checked_values, map_replacements};
use crate::config::gray::{GrayDoc, Selector, gray_key};
use crate::config::published::PublishedSchema;
use crate::config::redact::Redaction;
use crate::config::reserved::refuse_reserved;
use crate::config::schema::{CoordConfig, HasPrefix};
use crate::error::{Error, Result};
use crate::store::{
    Compare, CompareOp, CompareTarget, KeyRange, KeyValue, RangeOptions, Txn, TxnOp, TxnOpResponse,
};
use crate::sync::lock;

/// Records kept per prefix unless the center says otherwise.
pub(crate) const DEFAULT_HISTORY: usize = 100;
/// Per-key guards up to this many keys under a prefix; beyond, only the prefix guard (which
/// sees every put, not a delete of a key the release does not touch).
const KEY_GUARDS: usize = 100;
/// The first pause of a release that lost a race to another release of its prefix; it
/// doubles up to [`MAX_PAUSE`], each pause drawn at random below its bound (full jitter), so
/// contenders spread out instead of colliding again.
const FIRST_PAUSE: Duration = Duration::from_millis(2);
/// The longest pause between two attempts of one release.
const MAX_PAUSE: Duration = Duration::from_millis(200);

/// The reserved range of a prefix's records.
pub(crate) fn releases_of(prefix: &str) -> String {
    format!("/coord/releases{prefix}//")
}

fn head_key(prefix: &str) -> String {
    format!("{}head", releases_of(prefix))
}

fn record_key(prefix: &str, seq: u64) -> String {
    format!("{}{seq:020}", releases_of(prefix))
}

/// What kind of change a release was.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ReleaseKind {
    /// A [`release`](crate::ConfigCenter::release) or
    /// [`release_raw`](crate::ConfigCenter::release_raw).
    Release,
    /// A [`publish`](crate::ConfigCenter::publish): a release without a message.
    Publish,
    /// A [`rollback`](crate::ConfigCenter::rollback) to release `to`.
    Rollback {
        /// The release whose values were restored.
        to: u64,
    },
    /// A change made outside releases (`set`, `batch`, etcdctl), recorded by the release
    /// that found it.
    External,
    /// Changes made outside releases since the latest release and not recorded yet: only in
    /// what [`history`](crate::ConfigCenter::history) returns, never stored. The prefix's
    /// next release records them as an [`External`](Self::External) entry; until then they
    /// are no rollback target.
    Unrecorded,
    /// A gray release: only the instances `selector` picks see it (see [`Selector`]).
    Gray {
        /// Who sees it.
        selector: Selector,
    },
    /// Gray release `gray` made the prefix's values for everyone.
    Promote {
        /// The gray release promoted.
        gray: u64,
    },
    /// Gray release `gray` dropped: its instances are back on the prefix's values.
    Abort {
        /// The gray release aborted.
        gray: u64,
    },
}

/// One release of a prefix, as [`history`](crate::ConfigCenter::history) returns it.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Release {
    /// Its number: 1 for the prefix's first, one more for each after.
    pub seq: u64,
    /// The store revision it was applied at. For an external entry, the latest revision at
    /// which a key under the prefix was seen changed (a delete is seen, not dated).
    pub revision: i64,
    /// What it was.
    pub kind: ReleaseKind,
    /// Who made it (`None` for an external entry).
    pub author: Option<String>,
    /// Why.
    pub message: Option<String>,
    /// When it was made (for an external entry: when it was seen).
    pub time: SystemTime,
    /// Every key under the prefix after it (relative to the prefix), as JSON; a value that is
    /// not JSON shows as a JSON string; secrets (see
    /// [`PublishedSchema::is_secret`]) show as `"<redacted>"`. A gray release leaves
    /// the prefix as it was: its changes are in `gray_values` and `gray_removes`.
    pub values: BTreeMap<String, serde_json::Value>,
    /// What a gray release sets for its instances (shown like `values`); empty otherwise.
    pub gray_values: BTreeMap<String, serde_json::Value>,
    /// What a gray release removes for its instances; empty otherwise.
    pub gray_removes: BTreeSet<String>,
}

/// How one key differs between two releases.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Change {
    /// Not in the older release.
    Added {
        /// The value in the newer one.
        new: serde_json::Value,
    },
    /// In both, with different values.
    Changed {
        /// The older value.
        old: serde_json::Value,
        /// The newer value.
        new: serde_json::Value,
    },
    /// Not in the newer release.
    Removed {
        /// The value in the older one.
        old: serde_json::Value,
    },
}

/// One key of a [`diff`](crate::ConfigCenter::diff).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct KeyDiff {
    /// The key, relative to the prefix.
    pub key: String,
    /// How it changed.
    pub change: Change,
}

/// The stored form of a release.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Record {
    seq: u64,
    #[serde(flatten)]
    kind: ReleaseKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    author: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    message: Option<String>,
    time_ms: u64,
    /// Relative key → the exact stored text.
    values: BTreeMap<String, String>,
    /// A gray release's values (relative key → text), laid over `values` for its instances.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    gray_values: BTreeMap<String, String>,
    /// The keys a gray release removes for its instances.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    gray_removes: BTreeSet<String>,
    /// Relative keys whose values are secret.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    secrets: BTreeSet<String>,
    /// For an external entry: the latest mod revision seen under the prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    seen_revision: Option<i64>,
}

impl Record {
    fn decode(kv: &KeyValue) -> Result<Record> {
        serde_json::from_slice(&kv.value).map_err(|source| Error::Decode {
            key: kv.key.clone(),
            source,
        })
    }

    /// The revision the release took effect at, its record written at `written`: for an
    /// external entry, the latest change it saw.
    fn applied_at(&self, written: i64) -> i64 {
        self.seen_revision.unwrap_or(written)
    }

    fn encode(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(self)
            .map_err(|e| Error::invalid_argument("release record", format!("cannot encode: {e}")))
    }

    /// The record as output shows it, hiding what `redaction` and the record's own marks say
    /// is secret.
    fn public(&self, applied_at: i64, redaction: &Redaction) -> Release {
        let show = |key: &str, text: &str| redaction.show_marked(&self.secrets, key, text);
        Release {
            seq: self.seq,
            revision: self.applied_at(applied_at),
            kind: self.kind.clone(),
            author: self.author.clone(),
            message: self.message.clone(),
            time: UNIX_EPOCH + Duration::from_millis(self.time_ms),
            values: self
                .values
                .iter()
                .map(|(key, text)| (key.clone(), show(key, text)))
                .collect(),
            gray_values: self
                .gray_values
                .iter()
                .map(|(key, text)| (key.clone(), show(key, text)))
                .collect(),
            gray_removes: self.gray_removes.clone(),
        }
    }
}

/// The state of a prefix as a release sees it: its values and its latest record.
#[derive(Clone, Debug, Default)]
pub(crate) struct PrefixState {
    /// The store revision this state is current at.
    revision: i64,
    /// Relative key → (stored text, mod revision).
    values: BTreeMap<String, (String, i64)>,
    /// The latest record and the head key's mod revision.
    head: Option<(Record, i64)>,
    /// The gray release in progress and its key's mod revision.
    gray: Option<(GrayDoc, i64)>,
    /// The schema published for the prefix, if any: which keys are secret.
    schema: Option<Arc<PublishedSchema>>,
}

impl PrefixState {
    fn texts(&self) -> BTreeMap<String, String> {
        self.values
            .iter()
            .map(|(key, (text, _))| (key.clone(), text.clone()))
            .collect()
    }

    fn seq(&self) -> u64 {
        self.head.as_ref().map_or(0, |(record, _)| record.seq)
    }

    /// True if the values are not those of the latest record (changed outside releases).
    fn drifted(&self) -> bool {
        match &self.head {
            Some((record, _)) => record.values != self.texts(),
            None => !self.values.is_empty(),
        }
    }

    /// What hides secrets of this state: its schema and the latest record's marks.
    fn redaction(&self) -> Redaction {
        let marked = self.head.iter().flat_map(|(record, _)| &record.secrets);
        Redaction::new(self.schema.clone()).marking(marked)
    }

    /// The compares that hold only while the prefix is as this state says: no other release
    /// (the head), no key created or changed (a prefix compare), no key deleted (each key's
    /// mod revision, up to [`KEY_GUARDS`] keys), the same gray release.
    fn guards(&self, prefix: &str) -> Vec<Compare> {
        let mut compares = vec![
            match &self.head {
                Some((_, rev)) => Compare::mod_revision(head_key(prefix), *rev),
                None => Compare::create_revision(head_key(prefix), 0),
            },
            Compare::new(
                format!("{prefix}/"),
                CompareOp::Less,
                CompareTarget::ModRevision(self.revision.saturating_add(1)),
            )
            .over_prefix(),
            match &self.gray {
                Some((_, rev)) => Compare::mod_revision(gray_key(prefix), *rev),
                None => Compare::create_revision(gray_key(prefix), 0),
            },
        ];
        if self.values.len() <= KEY_GUARDS {
            compares.extend(
                self.values
                    .iter()
                    .map(|(key, (_, rev))| Compare::mod_revision(format!("{prefix}/{key}"), *rev)),
            );
        }
        compares
    }

    /// This state as an unattributed entry numbered `seq`, seen at `now_ms`.
    fn external(&self, seq: u64, now_ms: u64) -> Record {
        let secrets = self.redaction().secrets_among(self.values.keys());
        Record {
            seq,
            kind: ReleaseKind::External,
            author: None,
            message: None,
            time_ms: now_ms,
            values: self.texts(),
            gray_values: BTreeMap::new(),
            gray_removes: BTreeSet::new(),
            secrets,
            seen_revision: Some(self.last_modified()),
        }
    }

    /// The latest mod revision under the prefix (0 if empty).
    fn last_modified(&self) -> i64 {
        self.values.values().map(|(_, rev)| *rev).max().unwrap_or(0)
    }
}

/// Per-center memory of each prefix's state after this center's own last release, so the
/// next release needs no read when nobody else wrote meanwhile (its guards prove that).
#[derive(Debug, Default)]
pub(crate) struct KnownStates {
    states: Mutex<HashMap<String, PrefixState>>,
}

impl KnownStates {
    fn take(&self, prefix: &str) -> Option<PrefixState> {
        lock(&self.states).remove(prefix)
    }

    fn put(&self, prefix: &str, state: PrefixState) {
        let mut states = lock(&self.states);
        // A bounded memory: it only saves a read, so forgetting is always safe.
        if states.len() >= 1024 {
            states.clear();
        }
        states.insert(prefix.to_owned(), state);
    }
}

/// What a release changes.
enum Plan {
    /// Full keys → bytes to put, plus a rule for which stored keys go.
    Typed {
        values: BTreeMap<String, Vec<u8>>,
        gone: Box<dyn Fn(&str) -> bool + Send + Sync>,
        /// The struct's own schema: which keys are secret.
        schema: Arc<PublishedSchema>,
    },
    /// Relative keys → JSON to put; relative keys to delete.
    Raw {
        values: BTreeMap<String, serde_json::Value>,
        remove: BTreeSet<String>,
    },
    /// Back to release `seq`'s exact values.
    Rollback { seq: u64 },
    /// Gray release `seq`'s values to everyone.
    Promote { seq: u64 },
    /// Gray release `seq` dropped.
    Abort { seq: u64 },
}

/// A release being prepared; [`commit`](Self::commit) applies it. Made by
/// [`ConfigCenter::release`](crate::ConfigCenter::release),
/// [`release_raw`](crate::ConfigCenter::release_raw) and
/// [`rollback`](crate::ConfigCenter::rollback).
#[must_use = "a release does nothing until it is committed"]
pub struct ReleaseBuilder {
    job: Job,
    plan: Result<Plan>,
}

/// Everything about a release but its plan.
struct Job {
    center: ConfigCenter,
    prefix: String,
    kind: ReleaseKind,
    message: Option<String>,
    author: Option<String>,
    expect: Option<u64>,
    /// Relative key → the mod revision it must still have (0: absent).
    expect_versions: BTreeMap<String, i64>,
    /// A gray release to these instances instead of a release to all.
    gray: Option<Selector>,
    /// How long to keep trying against other releases (default: the center's).
    timeout: Option<Duration>,
}

impl std::fmt::Debug for ReleaseBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReleaseBuilder")
            .field("prefix", &self.job.prefix)
            .field("kind", &self.job.kind)
            .field("message", &self.job.message)
            .field("author", &self.job.author)
            .field("expect", &self.job.expect)
            .field("expect_versions", &self.job.expect_versions)
            .finish_non_exhaustive()
    }
}

impl ReleaseBuilder {
    /// Why: shown in history.
    pub fn message(mut self, message: impl Into<String>) -> Self {
        self.job.message = Some(message.into());
        self
    }

    /// Who (default: the `Coord`'s instance name).
    pub fn author(mut self, author: impl Into<String>) -> Self {
        self.job.author = Some(author.into());
        self
    }

    /// Commit only if the latest release of the prefix is still `seq` (0: there is none):
    /// optimistic concurrency for tools that showed a person the current state. Without it a
    /// release that finds the prefix changed meanwhile reads it again and goes on (as
    /// `publish` does), pausing a random, growing while between attempts, until its
    /// [`timeout`](Self::timeout); a rollback never does.
    pub fn expect_latest(mut self, seq: u64) -> Self {
        self.job.expect = Some(seq);
        self
    }

    /// Commit only if the key `key` (relative to the prefix) is still at `version`, its mod
    /// revision (0: the key must not exist): the compare-and-set of one key, as a release.
    /// Other keys may have changed meanwhile; the release reads the prefix and goes on as
    /// usual. May be given for several keys.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> coord::Result<()> {
    /// use std::collections::BTreeMap;
    ///
    /// let coord = coord::Coord::in_memory();
    /// let config = coord.config();
    /// let first = config
    ///     .release_raw("/config/app", BTreeMap::from([("port".into(), 8080.into())]))
    ///     .commit()
    ///     .await?;
    /// // Someone read port at the first release's revision; a release from that view goes in.
    /// config
    ///     .release_raw("/config/app", BTreeMap::from([("port".into(), 8081.into())]))
    ///     .expect_version("port", first.revision)
    ///     .commit()
    ///     .await?;
    /// // A second writer with the same, now old, view is refused.
    /// let late = config
    ///     .release_raw("/config/app", BTreeMap::from([("port".into(), 9090.into())]))
    ///     .expect_version("port", first.revision)
    ///     .commit()
    ///     .await;
    /// assert!(matches!(late, Err(coord::Error::Conflict { .. })));
    /// assert_eq!(config.get::<u16>("/config/app/port").await?, 8081);
    /// # Ok(())
    /// # }
    /// ```
    pub fn expect_version(mut self, key: impl Into<String>, version: i64) -> Self {
        self.job.expect_versions.insert(key.into(), version);
        self
    }

    /// How long the release may keep trying while other releases of the prefix win the race
    /// (default: the `Coord`'s `ClientConfig::request_timeout`; 5 s on the embedded store).
    /// Past it the release fails with [`Error::Timeout`] naming the prefix and the attempts,
    /// nothing written.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.job.timeout = Some(timeout);
        self
    }

    /// Makes this a gray release: only the instances `selector` picks see it, until
    /// [`promote`](crate::ConfigCenter::promote) or [`abort`](crate::ConfigCenter::abort).
    /// The prefix's own keys do not change. Refused while another gray release of the prefix
    /// is in progress. Only for `release` and `release_raw`.
    pub fn to(mut self, selector: Selector) -> Self {
        self.job.gray = Some(selector);
        self
    }

    /// Applies the change and records it, in one transaction. Returns the release as
    /// recorded (secrets redacted).
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] / [`Error::InvalidArgument`] for a value that does not encode or
    /// (typed) does not build back into a valid struct, nothing written;
    /// [`Error::NotFound`] for a rollback to a release that is not in history;
    /// [`Error::Conflict`] naming the prefix, with the latest release seq expected and found,
    /// if the prefix changed between the read and the write of a rollback, a promote, an
    /// abort or a release with [`expect_latest`](Self::expect_latest) (or naming a key whose
    /// [`expect_version`](Self::expect_version) no longer holds); [`Error::Timeout`] naming
    /// the prefix and the attempts if other writers kept changing it past the
    /// [`timeout`](Self::timeout);
    /// [`Error::InvalidArgument`] if the release needs more than 128 operations.
    ///
    /// # Cancel safety
    ///
    /// As [`Batch::commit`](crate::config::Batch::commit): dropped mid-way, the release is
    /// applied with its record or not at all.
    pub async fn commit(self) -> Result<Release> {
        let job = self.job;
        let span = tracing::info_span!("config.release", prefix = %job.prefix, kind = ?job.kind);
        job.run(self.plan?).instrument(span).await
    }
}

impl Job {
    async fn run(self, plan: Plan) -> Result<Release> {
        let mut known = self.center.releases.take(&self.prefix);
        if !self.expect_versions.is_empty() {
            // A key's version is checked against the prefix as it is now, never a
            // remembered (possibly old) state: an old one would refuse a current view.
            known = None;
        }
        // The first state may be remembered from this center's last release, and old.
        let mut remembered = known.is_some();
        let timeout = self.timeout.unwrap_or(self.center.release_timeout);
        let deadline = tokio::time::Instant::now() + timeout;
        let mut bound = FIRST_PAUSE;
        let mut attempts = 0_u32;
        loop {
            attempts += 1;
            let state = match known.take() {
                Some(state) => state,
                None => read_state(&self.center, &self.prefix).await?,
            };
            if let Some(expected) = self.expect
                && state.seq() != expected
            {
                return Err(self.conflict(expected, state.seq()));
            }
            // The transaction's prefix guard fails if any key changes after this read, and
            // the next attempt checks again: no key is written over a version it did not expect.
            for (key, &expected) in &self.expect_versions {
                let current = state.values.get(key).map_or(0, |(_, rev)| *rev);
                if current != expected {
                    return Err(Error::Conflict {
                        key: format!("{}/{key}", self.prefix),
                        expected,
                        current,
                    });
                }
            }
            let (txn, records, after, redaction) = self.plan_txn(&plan, &state).await?;
            let txn = txn.or_else(state_reads(&self.prefix));
            let response = self
                .center
                .store
                .txn(txn)
                .await
                .map_err(|e| too_large(&self.prefix, &state, e))?;
            if response.succeeded {
                let revision = response.revision;
                let Some(last) = records.last() else {
                    return Err(Error::invalid_argument(&self.prefix, "nothing to record"));
                };
                let head = last.clone();
                let mut after = after;
                for (_, rev) in after.values.values_mut() {
                    if *rev == 0 {
                        *rev = revision;
                    }
                }
                after.revision = revision;
                after.head = Some((head, revision));
                after.schema = state.schema;
                if let Some((_, rev)) = &mut after.gray {
                    *rev = revision;
                }
                self.center.releases.put(&self.prefix, after);
                return Ok(last.public(revision, &redaction));
            }
            // The failure branch read the prefix as it is now.
            let now = parse_state(&self.prefix, response.revision, response.responses)?;
            // A remembered state may simply be old: that is no conflict.
            if std::mem::take(&mut remembered) {
                known = Some(now);
                continue;
            }
            let strict = self.expect.is_some()
                || matches!(
                    plan,
                    Plan::Rollback { .. } | Plan::Promote { .. } | Plan::Abort { .. }
                );
            if strict {
                return Err(self.conflict(state.seq(), now.seq()));
            }
            known = Some(now);
            // Another writer won this round: wait a random while below a growing bound, so
            // writers that collided spread out rather than collide again at once.
            let pause = bound.mul_f64(rand::random::<f64>());
            bound = (bound * 2).min(MAX_PAUSE);
            if tokio::time::Instant::now() + pause >= deadline {
                return Err(Error::Timeout {
                    operation: format!(
                        "release of `{}`: other releases kept changing it through {attempts} \
                         attempts",
                        self.prefix
                    ),
                    after: timeout,
                });
            }
            tracing::debug!(
                attempts,
                ?pause,
                "the prefix changed under the release; reading it again"
            );
            tokio::time::sleep(pause).await;
        }
    }

    fn conflict(&self, expected: u64, current: u64) -> Error {
        Error::Conflict {
            key: self.prefix.clone(),
            expected: i64::try_from(expected).unwrap_or(i64::MAX),
            current: i64::try_from(current).unwrap_or(i64::MAX),
        }
    }

    /// The transaction applying `plan` over `state`, the records it writes (last: the
    /// release), the state after it (new keys' mod revisions still 0) and what hides its
    /// secrets.
    async fn plan_txn(
        &self,
        plan: &Plan,
        state: &PrefixState,
    ) -> Result<(Txn, Vec<Record>, PrefixState, Redaction)> {
        let prefix = &self.prefix;
        let full = |key: &str| format!("{prefix}/{key}");
        // Secrets stay secret across untyped releases that do not know the struct: the
        // latest record's marks carry over.
        let mut redaction = state.redaction();
        let (puts, deletes): (BTreeMap<String, Vec<u8>>, BTreeSet<String>) = match plan {
            Plan::Typed {
                values,
                gone,
                schema,
            } => {
                let under = format!("{prefix}/");
                let puts = values
                    .iter()
                    .map(|(key, bytes)| (key[under.len()..].to_owned(), bytes.clone()))
                    .collect();
                let deletes = state
                    .values
                    .keys()
                    .filter(|key| gone(&full(key)))
                    .cloned()
                    .collect();
                redaction = redaction.with_schema(Arc::clone(schema));
                (puts, deletes)
            }
            Plan::Raw { values, remove } => {
                // A published schema refuses a wrong value before anything is written,
                // and says which keys are secret.
                if let Some(schema) = self.center.schema(prefix).await? {
                    schema.check_all(values)?;
                    redaction = redaction.with_schema(Arc::new(schema));
                }
                let mut puts = BTreeMap::new();
                for (key, json) in values {
                    check_relative(prefix, key)?;
                    let bytes = serde_json::to_vec(json).map_err(|e| {
                        Error::invalid_argument(full(key), format!("cannot encode: {e}"))
                    })?;
                    puts.insert(key.clone(), bytes);
                }
                let deletes = remove
                    .iter()
                    .filter(|key| state.values.contains_key(*key))
                    .cloned()
                    .collect();
                (puts, deletes)
            }
            Plan::Rollback { seq } => {
                let (record, _) = read_record(&self.center, prefix, *seq).await?;
                let puts = record
                    .values
                    .iter()
                    .map(|(key, text)| (key.clone(), text.clone().into_bytes()))
                    .collect();
                let deletes = state
                    .values
                    .keys()
                    .filter(|key| !record.values.contains_key(*key))
                    .cloned()
                    .collect();
                redaction = redaction.marking(&record.secrets);
                (puts, deletes)
            }
            Plan::Promote { seq } => {
                let gray = in_progress(state, prefix, *seq)?;
                let puts = gray
                    .values
                    .iter()
                    .map(|(key, text)| (key.clone(), text.clone().into_bytes()))
                    .collect();
                let deletes = gray
                    .removes
                    .iter()
                    .filter(|key| state.values.contains_key(*key))
                    .cloned()
                    .collect();
                (puts, deletes)
            }
            Plan::Abort { seq } => {
                in_progress(state, prefix, *seq)?;
                (BTreeMap::new(), BTreeSet::new())
            }
        };
        let gray_release = match (&self.gray, plan) {
            (None, _) => None,
            (Some(selector), Plan::Typed { .. } | Plan::Raw { .. }) => {
                if let Some((gray, _)) = &state.gray {
                    return Err(Error::GrayConflict {
                        prefix: prefix.clone(),
                        in_progress: gray.seq,
                        reason: format!(
                            "gray release {} is in progress; promote or abort it first",
                            gray.seq
                        ),
                    });
                }
                Some(selector.clone())
            }
            (Some(_), _) => {
                return Err(Error::invalid_argument(
                    prefix,
                    "only a release or a raw release can be a gray release",
                ));
            }
        };
        let mut texts = BTreeMap::new();
        for (key, bytes) in &puts {
            let text = String::from_utf8(bytes.clone()).map_err(|_| {
                Error::invalid_argument(full(key), "a released value must be UTF-8 text")
            })?;
            texts.insert(key.clone(), text);
        }
        // What the release's instances see after it: for a gray release, the prefix's values
        // with the gray ones laid over; the prefix itself is `after` only for other releases.
        let mut seen = state.clone();
        for key in &deletes {
            seen.values.remove(key);
        }
        for (key, text) in &texts {
            seen.values.insert(key.clone(), (text.clone(), 0));
        }
        let mut after = if gray_release.is_some() {
            state.clone()
        } else {
            seen.clone()
        };
        // A rollback restores what everyone ran at release `to`: a gray release in progress
        // would keep its instances on values of after it, so the rollback ends it, recorded
        // as an abort in the same transaction.
        let ended_gray = match (plan, &state.gray) {
            (Plan::Rollback { .. }, Some((gray, _))) => Some(gray.seq),
            _ => None,
        };
        if matches!(plan, Plan::Promote { .. } | Plan::Abort { .. }) || ended_gray.is_some() {
            after.gray = None;
        }

        let now = now_ms();
        let mut records = Vec::new();
        let mut seq = state.seq();
        if state.drifted() {
            seq += 1;
            records.push(state.external(seq, now));
        }
        let author = self.author.clone().or_else(|| self.center.author.clone());
        if let (Some(gray), Plan::Rollback { seq: to }) = (ended_gray, plan) {
            seq += 1;
            records.push(Record {
                seq,
                kind: ReleaseKind::Abort { gray },
                author: author.clone(),
                message: Some(format!("ended by the rollback to {to}")),
                time_ms: now,
                values: state.texts(),
                gray_values: BTreeMap::new(),
                gray_removes: BTreeSet::new(),
                secrets: redaction.secrets_among(state.values.keys()),
                seen_revision: None,
            });
        }
        seq += 1;
        let message = match (&self.message, plan) {
            (Some(message), _) => Some(message.clone()),
            (None, Plan::Rollback { seq }) => Some(format!("rollback to {seq}")),
            (None, _) => None,
        };
        let kind = match (&gray_release, plan) {
            (Some(selector), _) => ReleaseKind::Gray {
                selector: selector.clone(),
            },
            (None, Plan::Promote { seq }) => ReleaseKind::Promote { gray: *seq },
            (None, Plan::Abort { seq }) => ReleaseKind::Abort { gray: *seq },
            (None, _) => self.kind.clone(),
        };
        let secrets = redaction.secrets_among(after.values.keys().chain(texts.keys()));
        let release = Record {
            seq,
            kind,
            author,
            message,
            time_ms: now,
            values: after.texts(),
            gray_values: if gray_release.is_some() {
                texts.clone()
            } else {
                BTreeMap::new()
            },
            gray_removes: if gray_release.is_some() {
                deletes.clone()
            } else {
                BTreeSet::new()
            },
            secrets,
            seen_revision: None,
        };
        records.push(release.clone());
        if let Some(selector) = &gray_release {
            after.gray = Some((
                GrayDoc {
                    seq,
                    selector: selector.clone(),
                    values: texts.clone(),
                    removes: deletes.clone(),
                },
                0,
            ));
        }

        let compares = state.guards(prefix);
        let mut ops: Vec<TxnOp> = Vec::new();
        match &after.gray {
            Some((gray, _)) if gray_release.is_some() => {
                let doc = serde_json::to_vec(gray).map_err(|e| {
                    Error::invalid_argument(gray_key(prefix), format!("cannot encode: {e}"))
                })?;
                ops.push(TxnOp::put(gray_key(prefix), doc));
            }
            _ => {
                ops.extend(
                    puts.into_iter()
                        .map(|(key, bytes)| TxnOp::put(full(&key), bytes))
                        .chain(deletes.iter().map(|key| TxnOp::delete(full(key)))),
                );
            }
        }
        if matches!(plan, Plan::Promote { .. } | Plan::Abort { .. }) || ended_gray.is_some() {
            ops.push(TxnOp::delete(gray_key(prefix)));
        }
        for record in &records {
            ops.push(TxnOp::put(record_key(prefix, record.seq), record.encode()?));
        }
        ops.push(TxnOp::put(head_key(prefix), release.encode()?));
        let keep = self.center.release_history.max(1) as u64;
        let oldest_kept = seq.saturating_sub(keep) + 1;
        let first_gone = state.seq().saturating_sub(keep) + 1;
        for old in first_gone.max(1)..oldest_kept {
            ops.push(TxnOp::delete(record_key(prefix, old)));
        }
        Ok((
            Txn::new().when(compares).and_then(ops),
            records,
            after,
            redaction,
        ))
    }
}

/// A release the store refused before sending (over etcd's request size or operation
/// count), told in the user's terms: the prefix, what it holds, the limit; not the internal
/// key the request happened to start with. Other errors pass through.
fn too_large(prefix: &str, state: &PrefixState, e: Error) -> Error {
    match e {
        // The store refuses a request with InvalidArgument only for its size or its count of
        // operations (the keys and values of a release are checked before).
        Error::InvalidArgument { reason, .. } => {
            let bytes: usize = state
                .values
                .iter()
                .map(|(key, (text, _))| prefix.len() + 1 + key.len() + text.len())
                .sum();
            Error::InvalidArgument {
                field: prefix.to_owned(),
                reason: format!(
                    "a release of `{prefix}` cannot be sent: {reason}. The prefix holds {} keys \
                     ({bytes} bytes), and a release writes its changes plus the prefix's values \
                     twice (its record and the head)",
                    state.values.len()
                ),
            }
        }
        other => other,
    }
}

/// A history read whose answer is over what the client decodes (tonic's 4 MiB), told in the
/// user's terms. tonic says so only in its message, hence the match on it.
fn history_too_large(prefix: &str, e: Error) -> Error {
    match e {
        Error::Backend { reason, .. } if reason.contains("too large") => Error::Backend {
            key: prefix.to_owned(),
            reason: format!(
                "the history of `{prefix}` is too large to read in one answer ({reason}): each \
                 release record holds the prefix's values; keep fewer records \
                 (ConfigCenter::with_release_history) or split the prefix"
            ),
        },
        other => other,
    }
}

/// The gray release in progress, if it is release `seq`.
fn in_progress<'s>(state: &'s PrefixState, prefix: &str, seq: u64) -> Result<&'s GrayDoc> {
    match &state.gray {
        Some((gray, _)) if gray.seq == seq => Ok(gray),
        Some((gray, _)) => Err(Error::GrayConflict {
            prefix: prefix.to_owned(),
            in_progress: gray.seq,
            reason: format!(
                "release {seq} is not the gray release in progress ({})",
                gray.seq
            ),
        }),
        None => Err(Error::NotFound {
            key: format!("{} (gray release {seq})", gray_key(prefix)),
        }),
    }
}

fn check_relative(prefix: &str, key: &str) -> Result<()> {
    if key.is_empty() || key.starts_with('/') || key.contains("//") || key.contains('\0') {
        return Err(Error::invalid_argument(
            format!("{prefix}/{key}"),
            "a released key is relative to the prefix: non-empty, no leading `/`, no empty segment",
        ));
    }
    Ok(())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn check_prefix(prefix: &str) -> Result<String> {
    refuse_reserved("prefix", prefix)?;
    let trimmed = prefix.trim_end_matches('/');
    if !trimmed.starts_with('/') || trimmed.contains("//") || trimmed.contains('\0') {
        return Err(Error::invalid_argument(
            prefix,
            "a release prefix is absolute (`/config/name`) with no empty segment",
        ));
    }
    Ok(trimmed.to_owned())
}

/// The prefix's values and latest record, in one round trip.
async fn read_state(center: &ConfigCenter, prefix: &str) -> Result<PrefixState> {
    let response = center
        .store
        .txn(Txn::new().and_then(state_reads(prefix)))
        .await?;
    parse_state(prefix, response.revision, response.responses)
}

/// The reads that give a prefix's state: its values, the head, the gray release, the
/// published schema. Also the failure branch of every release, so a release that finds the
/// prefix moved has the new state without another round trip.
fn state_reads(prefix: &str) -> [TxnOp; 4] {
    [
        TxnOp::Get(
            KeyRange::prefix(format!("{prefix}/")),
            RangeOptions::default(),
        ),
        TxnOp::get(head_key(prefix)),
        TxnOp::get(gray_key(prefix)),
        TxnOp::get(PublishedSchema::key(prefix)),
    ]
}

/// The state [`state_reads`] answered, at `revision`.
fn parse_state(prefix: &str, revision: i64, responses: Vec<TxnOpResponse>) -> Result<PrefixState> {
    let mut gets = responses.into_iter().filter_map(|r| match r {
        TxnOpResponse::Get(get) => Some(get),
        _ => None,
    });
    let (Some(values), Some(head), Some(gray), Some(schema)) =
        (gets.next(), gets.next(), gets.next(), gets.next())
    else {
        return Err(Error::invalid_argument(
            prefix,
            "the store answered a read oddly",
        ));
    };
    let under = prefix.len() + 1;
    let mut state = PrefixState {
        revision,
        ..PrefixState::default()
    };
    for kv in values.kvs {
        let text = String::from_utf8(kv.value).unwrap_or_else(|e| {
            // Kept lossy: the record then differs from the bytes, which shows as drift.
            String::from_utf8_lossy(e.as_bytes()).into_owned()
        });
        state
            .values
            .insert(kv.key[under..].to_owned(), (text, kv.mod_revision));
    }
    if let Some(kv) = head.kvs.first() {
        state.head = Some((Record::decode(kv)?, kv.mod_revision));
    }
    if let Some(kv) = gray.kvs.first() {
        let doc = serde_json::from_slice(&kv.value).map_err(|source| Error::Decode {
            key: kv.key.clone(),
            source,
        })?;
        state.gray = Some((doc, kv.mod_revision));
    }
    if let Some(kv) = schema.kvs.first() {
        // A schema that does not parse would leave secrets unknown: refuse, naming its key.
        let schema: PublishedSchema =
            serde_json::from_slice(&kv.value).map_err(|source| Error::Decode {
                key: kv.key.clone(),
                source,
            })?;
        state.schema = Some(Arc::new(schema));
    }
    Ok(state)
}

/// Release `seq` and the revision it was applied at.
async fn read_record(center: &ConfigCenter, prefix: &str, seq: u64) -> Result<(Record, i64)> {
    let key = record_key(prefix, seq);
    let response = center
        .store
        .range(&KeyRange::key(key.as_str()), RangeOptions::default())
        .await?;
    match response.kvs.first() {
        Some(kv) => {
            let record = Record::decode(kv)?;
            let revision = record.applied_at(kv.mod_revision);
            Ok((record, revision))
        }
        None => Err(Error::NotFound { key }),
    }
}

impl ConfigCenter {
    /// A release of a typed value: every field of `value` written under `T`'s prefix (maps
    /// whole, as [`publish`](Self::publish)), recorded with the full values of the prefix
    /// after it. Checked like `publish` before anything is written.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> coord::Result<()> {
    /// use coord::config::ReleaseKind;
    ///
    /// #[derive(coord::CoordConfig, Debug, Clone, PartialEq)]
    /// #[coord(prefix = "/config/checkout")]
    /// struct Checkout {
    ///     timeout_secs: u64,
    /// }
    ///
    /// let coord = coord::Coord::in_memory();
    /// let config = coord.config();
    /// let first = config.release(&Checkout { timeout_secs: 30 }).message("launch").commit().await?;
    /// config.release(&Checkout { timeout_secs: 5 }).message("too slow").author("ana").commit().await?;
    ///
    /// let history = config.history("/config/checkout", 10).await?;
    /// assert_eq!(history[0].message.as_deref(), Some("too slow"));
    /// assert_eq!(history[1].seq, first.seq);
    ///
    /// config.rollback("/config/checkout", first.seq).commit().await?;
    /// assert_eq!(config.get::<u64>("/config/checkout/timeout_secs").await?, 30);
    /// assert_eq!(config.history("/config/checkout", 1).await?[0].kind, ReleaseKind::Rollback { to: 1 });
    /// # Ok(())
    /// # }
    /// ```
    pub fn release<T: HasPrefix>(&self, value: &T) -> ReleaseBuilder {
        match T::PREFIX {
            Some(prefix) => self.release_at(prefix, value),
            None => self.builder(
                "",
                Err(Error::invalid_argument(
                    std::any::type_name::<T>(),
                    "has no #[coord(prefix = ...)]; use release_at",
                )),
                ReleaseKind::Release,
            ),
        }
    }

    /// [`release`](Self::release) under an explicit prefix.
    pub fn release_at<T: CoordConfig>(&self, prefix: &str, value: &T) -> ReleaseBuilder {
        let plan = check_prefix(prefix).and_then(|prefix| typed_plan(&prefix, value));
        self.builder(prefix, plan, ReleaseKind::Release)
    }

    /// A release of raw values: each key (relative to `prefix`) set to its JSON; keys not
    /// named are left as they are (to remove keys, use
    /// [`release_raw_with`](Self::release_raw_with)). If a schema is published for the prefix
    /// (see [`publish_schema`](Self::publish_schema)), every value is checked against it
    /// first and a wrong one is refused with nothing written.
    pub fn release_raw(
        &self,
        prefix: &str,
        values: BTreeMap<String, serde_json::Value>,
    ) -> ReleaseBuilder {
        self.release_raw_with(prefix, values, BTreeSet::new())
    }

    /// [`release_raw`](Self::release_raw) that also deletes the keys in `remove` (relative).
    pub fn release_raw_with(
        &self,
        prefix: &str,
        values: BTreeMap<String, serde_json::Value>,
        remove: BTreeSet<String>,
    ) -> ReleaseBuilder {
        let plan = check_prefix(prefix).map(|_| Plan::Raw { values, remove });
        self.builder(prefix, plan, ReleaseKind::Release)
    }

    /// A release that restores exactly the values of release `seq` (keys added since are
    /// removed), recorded as "rollback to `seq`". A gray release in progress ends with it,
    /// recorded first as an abort ("ended by the rollback to `seq`"): after a rollback every
    /// instance runs the restored values. It fails with [`Error::Conflict`] if the prefix
    /// changes between its read and its write.
    pub fn rollback(&self, prefix: &str, seq: u64) -> ReleaseBuilder {
        let plan = check_prefix(prefix).map(|_| Plan::Rollback { seq });
        self.builder(prefix, plan, ReleaseKind::Rollback { to: seq })
    }

    /// Makes gray release `seq` the prefix's values for every instance, in one transaction
    /// with its record ("promote"); the gray key goes.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> coord::Result<()> {
    /// use std::collections::BTreeMap;
    /// use coord::config::Selector;
    ///
    /// let coord = coord::Coord::in_memory();
    /// let config = coord.config();
    /// config.set("/config/app/limit", &10).await?;
    /// let gray = config
    ///     .release_raw("/config/app", BTreeMap::from([("limit".to_owned(), 20.into())]))
    ///     .to(Selector::default().label("zone", "eu-1"))
    ///     .commit()
    ///     .await?;
    /// assert_eq!(config.get::<i32>("/config/app/limit").await?, 10, "not for everyone yet");
    /// config.promote("/config/app", gray.seq).commit().await?;
    /// assert_eq!(config.get::<i32>("/config/app/limit").await?, 20);
    /// # Ok(())
    /// # }
    /// ```
    pub fn promote(&self, prefix: &str, seq: u64) -> ReleaseBuilder {
        let plan = check_prefix(prefix).map(|_| Plan::Promote { seq });
        self.builder(prefix, plan, ReleaseKind::Promote { gray: seq })
    }

    /// Drops gray release `seq`: its instances go back to the prefix's values. Recorded.
    pub fn abort(&self, prefix: &str, seq: u64) -> ReleaseBuilder {
        let plan = check_prefix(prefix).map(|_| Plan::Abort { seq });
        self.builder(prefix, plan, ReleaseKind::Abort { gray: seq })
    }

    /// `publish` as a release without a message.
    pub(crate) fn publish_release<T: CoordConfig>(
        &self,
        prefix: &str,
        value: &T,
    ) -> ReleaseBuilder {
        let mut builder = self.release_at(prefix, value);
        builder.job.kind = ReleaseKind::Publish;
        builder
    }

    fn builder(&self, prefix: &str, plan: Result<Plan>, kind: ReleaseKind) -> ReleaseBuilder {
        ReleaseBuilder {
            job: Job {
                center: self.clone(),
                prefix: prefix.trim_end_matches('/').to_owned(),
                kind,
                message: None,
                author: None,
                expect: None,
                expect_versions: BTreeMap::new(),
                gray: None,
                timeout: None,
            },
            plan,
        }
    }

    /// The newest `limit` releases of `prefix`, newest first. If the prefix changed outside
    /// releases since the latest one, the first entry is a [`ReleaseKind::Unrecorded`] one
    /// with the values as they are now (numbered as the entry the next release will record
    /// them as). Secret values show as `"<redacted>"` (see [`Release::values`]).
    ///
    /// Writes nothing: the prefix, its records and the store revision stay as they were.
    ///
    /// # Errors
    ///
    /// Store errors; [`Error::Decode`] naming a record that is not a release record, or a
    /// published schema that does not parse.
    pub async fn history(&self, prefix: &str, limit: usize) -> Result<Vec<Release>> {
        let prefix = check_prefix(prefix)?;
        let span = tracing::debug_span!("config.history", prefix = %prefix);
        async {
            // The prefix's state and its records at one revision, so an unrecorded change
            // is told from what the records hold, never from a later write.
            let mut reads = state_reads(&prefix).to_vec();
            reads.push(TxnOp::Get(
                KeyRange::prefix(releases_of(&prefix)),
                RangeOptions::default(),
            ));
            let response = self
                .store
                .txn(Txn::new().and_then(reads))
                .await
                .map_err(|e| history_too_large(&prefix, e))?;
            let mut responses = response.responses;
            let records = match responses.pop() {
                Some(TxnOpResponse::Get(records)) => records,
                _ => {
                    return Err(Error::invalid_argument(
                        &prefix,
                        "the store answered a read oddly",
                    ));
                }
            };
            let state = parse_state(&prefix, response.revision, responses)?;
            let redaction = state.redaction();
            let mut releases = Vec::new();
            if state.drifted() && limit > 0 {
                let mut unrecorded = state.external(state.seq() + 1, now_ms());
                unrecorded.kind = ReleaseKind::Unrecorded;
                releases.push(unrecorded.public(response.revision, &redaction));
            }
            let head = head_key(&prefix);
            for kv in records.kvs.iter().rev() {
                if kv.key == head || !is_record_key(&prefix, &kv.key) {
                    continue;
                }
                if releases.len() == limit {
                    break;
                }
                releases.push(Record::decode(kv)?.public(kv.mod_revision, &redaction));
            }
            Ok(releases)
        }
        .instrument(span)
        .await
    }

    /// How each key differs from release `from` to release `to` (either order), in key order.
    /// Either may be the [`ReleaseKind::Unrecorded`] entry [`history`](Self::history) shows
    /// (the values as they are now). Secret values show as `"<redacted>"` (a changed secret
    /// is listed, its values not). Writes nothing.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] naming a release that is not (or no longer) in history.
    pub async fn diff(&self, prefix: &str, from: u64, to: u64) -> Result<Vec<KeyDiff>> {
        let prefix = check_prefix(prefix)?;
        let span = tracing::debug_span!("config.diff", prefix = %prefix, from, to);
        async {
            let state = read_state(self, &prefix).await?;
            // The unrecorded entry `history` shows has the number the next release records
            // it as: the values as they are now.
            let unrecorded = (state.drifted()).then(|| state.external(state.seq() + 1, now_ms()));
            let mut records = Vec::with_capacity(2);
            for seq in [from, to] {
                records.push(
                    match unrecorded.as_ref().filter(|record| record.seq == seq) {
                        Some(record) => record.clone(),
                        None => read_record(self, &prefix, seq).await?.0,
                    },
                );
            }
            let (old, new) = (&records[0], &records[1]);
            Ok(diff_records(old, new, &state.redaction()))
        }
        .instrument(span)
        .await
    }
}

/// Every recorded release of `prefix` but gray ones, as (seq, the revision it was applied
/// at): what an instance current at a revision runs.
pub(crate) async fn applied_at(center: &ConfigCenter, prefix: &str) -> Result<Vec<(u64, i64)>> {
    let response = center
        .store
        .range(
            &KeyRange::prefix(releases_of(prefix)),
            RangeOptions::default(),
        )
        .await?;
    let mut applied = Vec::new();
    for kv in &response.kvs {
        if !is_record_key(prefix, &kv.key) {
            continue;
        }
        let record = Record::decode(kv)?;
        if !matches!(record.kind, ReleaseKind::Gray { .. }) {
            applied.push((record.seq, record.applied_at(kv.mod_revision)));
        }
    }
    Ok(applied)
}

/// What [`wait_rollout`](ConfigCenter::wait_rollout) waits for.
pub(crate) struct Target {
    seq: u64,
    /// The revision the release was applied at.
    pub revision: i64,
    selector: Option<Selector>,
}

impl Target {
    /// True if the instance of `status` runs the release and nothing else: current at its
    /// revision, on it if it is a gray release that picks the instance, and otherwise on no
    /// gray release older than it (one started later is a newer release).
    pub fn reached_by(&self, status: &crate::config::status::InstanceStatus) -> bool {
        if status.revision < self.revision {
            return false;
        }
        match &self.selector {
            Some(selector) if selector.matches(&status.instance, &status.labels, self.seq) => {
                status.gray == Some(self.seq)
            }
            _ => status.gray.is_none_or(|gray| gray > self.seq),
        }
    }
}

/// Release `seq` of `prefix` as a target to wait for.
pub(crate) async fn target(center: &ConfigCenter, prefix: &str, seq: u64) -> Result<Target> {
    let (record, revision) = read_record(center, prefix, seq).await?;
    let selector = match record.kind {
        ReleaseKind::Gray { selector } => Some(selector),
        _ => None,
    };
    Ok(Target {
        seq,
        revision,
        selector,
    })
}

fn is_record_key(prefix: &str, key: &str) -> bool {
    key.strip_prefix(&releases_of(prefix))
        .is_some_and(|rest| rest.len() == 20 && rest.bytes().all(|b| b.is_ascii_digit()))
}

/// How `new` differs from `old`, hiding what `redaction` or either record marks secret (a
/// key secret in either release is hidden in both).
fn diff_records(old: &Record, new: &Record, redaction: &Redaction) -> Vec<KeyDiff> {
    let redaction = redaction
        .clone()
        .marking(&old.secrets)
        .marking(&new.secrets);
    let keys: BTreeSet<&String> = old.values.keys().chain(new.values.keys()).collect();
    let mut diffs = Vec::new();
    for key in keys {
        let show = |text: &str| redaction.show(key, text);
        let change = match (old.values.get(key), new.values.get(key)) {
            (None, Some(text)) => Change::Added { new: show(text) },
            (Some(text), None) => Change::Removed { old: show(text) },
            (Some(a), Some(b)) if a != b => Change::Changed {
                old: show(a),
                new: show(b),
            },
            _ => continue,
        };
        diffs.push(KeyDiff {
            key: key.clone(),
            change,
        });
    }
    diffs
}

fn typed_plan<T: CoordConfig>(prefix: &str, value: &T) -> Result<Plan> {
    let values = checked_values(prefix, value)?;
    let maps = map_replacements::<T>(prefix, &values);
    let maps = Arc::new(maps);
    Ok(Plan::Typed {
        values,
        gone: Box::new(move |key: &str| maps.iter().any(|map| map.gone(key))),
        schema: Arc::new(PublishedSchema::of::<T>(prefix)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::redact::redacted;

    fn record(values: &[(&str, &str)], secrets: &[&str]) -> Record {
        Record {
            seq: 1,
            kind: ReleaseKind::Release,
            author: None,
            message: None,
            time_ms: 0,
            values: values
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            gray_values: BTreeMap::new(),
            gray_removes: BTreeSet::new(),
            secrets: secrets.iter().map(|k| (*k).to_owned()).collect(),
            seen_revision: None,
        }
    }

    #[test]
    fn record_keys_of_a_prefix_never_match_another_prefix() {
        assert!(is_record_key("/a", &record_key("/a", 7)));
        assert!(!is_record_key("/a", &record_key("/a/b", 7)));
        assert!(!is_record_key("/a", &head_key("/a")));
        assert!(!releases_of("/a/b").starts_with(&releases_of("/a")));
    }

    #[test]
    fn a_diff_lists_added_changed_and_removed_keys_and_hides_secrets() {
        let old = record(&[("a", "1"), ("b", "\"x\""), ("pw", "\"old\"")], &["pw"]);
        let new = record(&[("a", "2"), ("c", "true"), ("pw", "\"new\"")], &["pw"]);
        let diffs = diff_records(&old, &new, &Redaction::default());
        use serde_json::json;
        assert_eq!(
            diffs,
            vec![
                KeyDiff {
                    key: "a".into(),
                    change: Change::Changed {
                        old: json!(1),
                        new: json!(2)
                    }
                },
                KeyDiff {
                    key: "b".into(),
                    change: Change::Removed { old: json!("x") }
                },
                KeyDiff {
                    key: "c".into(),
                    change: Change::Added { new: json!(true) }
                },
                KeyDiff {
                    key: "pw".into(),
                    change: Change::Changed {
                        old: redacted(),
                        new: redacted()
                    }
                },
            ]
        );
    }

    #[test]
    fn a_record_round_trips_and_shows_non_json_as_a_string() {
        let record = record(&[("a", "not json"), ("pw", "\"s\"")], &["pw"]);
        let back: Record = serde_json::from_slice(&record.encode().unwrap()).unwrap();
        assert_eq!(back, record);
        let public = back.public(42, &Redaction::default());
        assert_eq!(public.revision, 42);
        assert_eq!(public.values["a"], serde_json::json!("not json"));
        assert_eq!(public.values["pw"], redacted());
    }
}
