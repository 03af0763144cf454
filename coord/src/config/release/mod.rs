//! Releases: attributed, recorded, reversible changes of a config prefix.
//!
//! A release is one atomic change of the keys under a prefix together with its record: who,
//! why, when, and what it changed, key by key (the exact stored text before and after). The
//! change and the record commit in **one transaction**, so history never misses an applied
//! release and never records one that did not apply.
//!
//! # Key layout
//!
//! - `/coord/releases{prefix}//{seq}`: release `seq` (20 digits, from 1), JSON (see
//!   `record.rs`).
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
//! - **Proportional to the change.** A record holds the keys its release changed, so a
//!   release of one key of a prefix of 100,000 writes that key, its record and the head. A
//!   release reads the keys it writes, not the prefix (a typed release reads the prefix: it
//!   removes map entries it does not name).
//! - **One transaction.** Values, record and head are written together, guarded by the head
//!   (no other release in between), the gray release, and each key the release writes
//!   (unchanged since it was read, so its recorded value before is exact). A refused
//!   transaction writes nothing.
//! - **Changes made elsewhere show up.** A `set`, a `batch` or an `etcdctl put` is not a
//!   release; the next release finds it without reading the prefix (see `state.rs`) and
//!   first records it as an unattributed [`ReleaseKind::External`] entry, in its own
//!   transaction. [`history`](crate::ConfigCenter::history) shows such changes as an
//!   [`ReleaseKind::Unrecorded`] entry computed when it reads, and writes nothing.
//! - **Reads are reads.** `history`, `diff` and `rollout` never write to the store.
//! - **Rollback restores exact bytes** of every key changed since (keys added since are
//!   removed) in one transaction, and is itself a release; when that is more than one
//!   transaction can carry (etcd's `--max-txn-ops` and `--max-request-bytes`), or a value to
//!   restore was compacted away before it was recorded, it is refused with nothing written.
//!   A gray release in progress is ended by it (an [`ReleaseKind::Abort`] entry in the same
//!   transaction), so no instance stays on values newer than the ones restored.
//! - **Secrets stay out of output.** Records keep the values (a rollback needs them), but
//!   [`Release::values`] and [`KeyDiff`] show every secret value as `"<redacted>"`: decided
//!   when shown, from the typed struct or the prefix's published schema (map entries of
//!   secrets and secret fields of nested map entries included), and from the keys the records
//!   marked secret when they were written.

mod history;
mod record;
mod state;
mod tracker;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tracing::Instrument;

pub(crate) use history::applied_at;
pub(crate) use state::KnownStates;

use self::history::{Entry, entries, read_record, values_at};
use self::record::{KeyChange, Record};
use self::state::{PrefixState, read_state, records_since};
use self::tracker::Verdict;
use crate::config::center::{ConfigCenter, MapReplace, checked_values, map_replacements};
use crate::config::gray::{GrayDoc, Selector, gray_key};
use crate::config::published::PublishedSchema;
use crate::config::redact::Redaction;
use crate::config::reserved::refuse_reserved;
use crate::config::schema::{CoordConfig, HasPrefix};
use crate::error::{Error, Result};
use crate::store::{Compare, CompareOp, CompareTarget, KeyRange, RangeOptions, Txn, TxnOp};

/// Records kept per prefix unless the center says otherwise.
pub(crate) const DEFAULT_HISTORY: usize = 100;
/// The first pause of a release that lost a race to another release of its prefix; it
/// doubles up to [`MAX_PAUSE`], each pause drawn at random below its bound (full jitter), so
/// contenders spread out instead of colliding again.
const FIRST_PAUSE: Duration = Duration::from_millis(2);
/// The longest pause between two attempts of one release.
const MAX_PAUSE: Duration = Duration::from_millis(200);
/// Releases a center makes from its remembered state before it reads the prefix again: the
/// records since the last read must all still be kept (see `state.rs`), so at most half the
/// history.
const MAX_CHAIN: u32 = 32;

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

fn is_record_key(prefix: &str, key: &str) -> bool {
    key.strip_prefix(&releases_of(prefix))
        .is_some_and(|rest| rest.len() == 20 && rest.bytes().all(|b| b.is_ascii_digit()))
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
    /// Each key it added or changed (relative to the prefix) with its new value, as JSON; a
    /// value that is not JSON shows as a JSON string; secrets (see
    /// [`PublishedSchema::is_secret`]) show as `"<redacted>"`. A gray release leaves
    /// the prefix as it was: its changes are in `gray_values` and `gray_removes`.
    pub values: BTreeMap<String, serde_json::Value>,
    /// What it changed, key by key, in key order (shown like `values`).
    pub changes: Vec<KeyDiff>,
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
    /// Set to `new` by a change made outside releases, after etcd had compacted away what it
    /// held before (or, in the oldest record kept from before changes were recorded key by
    /// key, set to `new` from a value not kept).
    Set {
        /// The value after.
        new: serde_json::Value,
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

/// What a release changes.
enum Plan {
    /// Full keys → bytes to put, plus a rule for which stored keys go.
    Typed {
        values: BTreeMap<String, Vec<u8>>,
        /// The struct's maps: which stored entries go.
        maps: Vec<MapReplace>,
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

/// A transaction ready to send, with what it records and what the prefix is after it.
struct Planned {
    txn: Txn,
    /// The records it writes, the release last.
    records: Vec<Record>,
    /// The state after it (keys it writes still at mod revision 0).
    after: PrefixState,
    redaction: Redaction,
    /// Keys it changes and their bytes: for a refusal in the user's terms.
    size: (usize, usize),
}

impl Job {
    async fn run(self, plan: Plan) -> Result<Release> {
        let typed = matches!(plan, Plan::Typed { .. });
        let mut known = self.center.releases.take(&self.prefix);
        if let Some(state) = &mut known
            && let Some(tracker) = self.center.releases.tracker(&self.prefix)
        {
            match tracker.verdict(state.checked_at, &state.ours, state.revision) {
                Verdict::Clean => {
                    state.checked_at = state.revision;
                    state.ours.clear();
                    state.chain = 0;
                }
                Verdict::Written => known = None,
                Verdict::Unknown => {}
            }
        }
        let mut known = known.filter(|state| {
            // A key's version is checked against the prefix as it is now, never a
            // remembered (possibly old) state: an old one would refuse a current view.
            self.expect_versions.is_empty()
                && state.chain < MAX_CHAIN.min(self.center.release_history as u32 / 2)
                && (state.complete || !typed)
                // A rollback undoes every change since its target, those made outside
                // releases and not recorded yet included: only a fresh read finds them.
                && !matches!(plan, Plan::Rollback { .. })
        });
        let timeout = self.timeout.unwrap_or(self.center.release_timeout);
        let deadline = tokio::time::Instant::now() + timeout;
        let mut bound = FIRST_PAUSE;
        let mut attempts = 0_u32;
        loop {
            attempts += 1;
            // A remembered state may simply be old: finding so is no conflict.
            let remembered = known.is_some();
            let keys = plan.keys(&self);
            let mut state = match known.take() {
                Some(state) => state,
                None => read_state(&self.center, &self.prefix, &keys, typed).await?,
            };
            // A remembered state reads the keys it does not know; if someone else wrote one
            // since, the prefix is read again.
            if remembered && !state.learn(&self.center, &self.prefix, &keys).await? {
                continue;
            }
            if let Some(expected) = self.expect
                && state.seq() != expected
            {
                if remembered {
                    continue;
                }
                return Err(self.conflict(expected, state.seq()));
            }
            for (key, &expected) in &self.expect_versions {
                let current = state.mod_revision(key);
                if current != expected {
                    return Err(Error::Conflict {
                        key: format!("{}/{key}", self.prefix),
                        expected,
                        current,
                    });
                }
            }
            let lost = match self.plan_txn(&plan, &mut state).await? {
                // A key the plan needed was written after the state was read.
                None => true,
                Some(mut planned) => {
                    let txn = std::mem::take(&mut planned.txn);
                    let response = self
                        .center
                        .store
                        .txn(txn)
                        .await
                        .map_err(|e| too_large(&self.prefix, planned.size, e))?;
                    if response.succeeded {
                        let checked = planned.after.checked_at;
                        let release = self.committed(response.revision, planned)?;
                        self.center
                            .releases
                            .track(&self.center.store, &self.prefix, checked)
                            .await;
                        return Ok(release);
                    }
                    !remembered
                }
            };
            if !lost {
                continue;
            }
            let strict = self.expect.is_some()
                || matches!(
                    plan,
                    Plan::Rollback { .. } | Plan::Promote { .. } | Plan::Abort { .. }
                );
            if strict {
                let now = latest_seq(&self.center, &self.prefix).await?;
                if now != state.seq() {
                    return Err(self.conflict(state.seq(), now));
                }
            }
            // Another writer won this round: wait a random while below a growing bound, so
            // writers that collided spread out rather than collide again at once.
            let pause = bound.mul_f64(rand::random::<f64>());
            bound = (bound * 2).min(MAX_PAUSE);
            if tokio::time::Instant::now() + pause >= deadline {
                return Err(Error::Timeout {
                    operation: format!(
                        "release of `{}`: other writers kept changing it through {attempts} \
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

    /// Remembers the state after a committed release and answers it.
    fn committed(&self, revision: i64, planned: Planned) -> Result<Release> {
        let Planned {
            records,
            mut after,
            redaction,
            ..
        } = planned;
        let Some(last) = records.last() else {
            return Err(Error::invalid_argument(&self.prefix, "nothing to record"));
        };
        for (_, rev) in after.values.values_mut() {
            if *rev == 0 {
                *rev = revision;
            }
        }
        after.revision = revision;
        after.ours.insert(revision);
        after.head = Some((last.head(), revision));
        if let Some((_, rev)) = &mut after.gray {
            *rev = revision;
        }
        let answer = last.public(revision, &last.changes, &redaction);
        self.center.releases.put(&self.prefix, after);
        Ok(answer)
    }

    fn conflict(&self, expected: u64, current: u64) -> Error {
        Error::Conflict {
            key: self.prefix.clone(),
            expected: i64::try_from(expected).unwrap_or(i64::MAX),
            current: i64::try_from(current).unwrap_or(i64::MAX),
        }
    }

    /// The transaction applying `plan` over `state`; `None` if a key it needed was written
    /// after the state was read (read it again).
    async fn plan_txn(&self, plan: &Plan, state: &mut PrefixState) -> Result<Option<Planned>> {
        let prefix = &self.prefix;
        let full = |key: &str| format!("{prefix}/{key}");
        // Secrets stay secret across untyped releases that do not know the struct: the
        // latest record's marks carry over.
        let mut redaction = state.redaction();
        let (puts, deletes): (BTreeMap<String, Vec<u8>>, BTreeSet<String>) = match plan {
            Plan::Typed {
                values,
                maps,
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
                    .filter(|key| maps.iter().any(|map| map.gone(&full(key))))
                    .cloned()
                    .collect();
                redaction = redaction.with_schema(Arc::clone(schema));
                (puts, deletes)
            }
            Plan::Raw { values, remove } => {
                // A published schema refuses a wrong value before anything is written,
                // and says which keys are secret.
                if let Some(schema) = &state.schema {
                    schema.check_all(values)?;
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
                let records = records_since(&self.center, prefix, 0, state.revision).await?;
                let mut entries = entries(records);
                if let Some(external) = state.external(state.seq() + 1, now_ms()) {
                    entries.push(Entry {
                        changes: external.changes.clone(),
                        record: external,
                        written: state.revision,
                    });
                }
                let Some(target) = entries.iter().position(|e| e.record.seq == *seq) else {
                    return Err(Error::NotFound {
                        key: record_key(prefix, *seq),
                    });
                };
                if entries[target].record.kind == ReleaseKind::External
                    && entries[target].record.seq > state.seq()
                {
                    return Err(Error::NotFound {
                        key: record_key(prefix, *seq),
                    });
                }
                let restore = values_at(&entries, target).map_err(|why| why.error(prefix, *seq))?;
                let keys = restore.keys().cloned().collect();
                if !state.learn(&self.center, prefix, &keys).await? {
                    return Ok(None);
                }
                redaction = redaction.marking(entries.iter().flat_map(|e| &e.record.secrets));
                let mut puts = BTreeMap::new();
                let mut deletes = BTreeSet::new();
                for (key, old) in restore {
                    let now = state.text(prefix, &key)?;
                    match old {
                        Some(text) if now != Some(text.as_str()) => {
                            puts.insert(key, text.into_bytes());
                        }
                        None if now.is_some() => {
                            deletes.insert(key);
                        }
                        _ => {}
                    }
                }
                (puts, deletes)
            }
            Plan::Promote { seq } => {
                let gray = in_progress(state, prefix, *seq)?.clone();
                let keys = gray.values.keys().chain(&gray.removes).cloned().collect();
                if !state.learn(&self.center, prefix, &keys).await? {
                    return Ok(None);
                }
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
        // What the release changes, key by key, and the prefix after it. A gray release
        // changes no key of the prefix: its values are in its record and gray key.
        let mut changes = BTreeMap::new();
        let mut after = state.clone();
        after.drift = None;
        after.chain = state.chain + 1;
        if gray_release.is_none() {
            for (key, text) in &texts {
                let old = state.text(prefix, key)?.map(str::to_owned);
                if old.is_none() {
                    after.count += 1;
                }
                if old.as_deref() != Some(text.as_str()) {
                    changes.insert(key.clone(), KeyChange::new(old, Some(text.clone())));
                }
                after.absent.remove(key);
                after.values.insert(key.clone(), (text.clone(), 0));
            }
            for key in &deletes {
                let old = state.text(prefix, key)?.map(str::to_owned);
                if old.is_some() {
                    after.count = after.count.saturating_sub(1);
                    changes.insert(key.clone(), KeyChange::new(old, None));
                }
                after.values.remove(key);
                after.absent.insert(key.clone());
            }
        }
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
        if let Some(external) = state.external(seq + 1, now) {
            seq += 1;
            records.push(external);
        }
        let author = self.author.clone().or_else(|| self.center.author.clone());
        if let (Some(gray), Plan::Rollback { seq: to }) = (ended_gray, plan) {
            seq += 1;
            let mut abort = Record::new(seq, ReleaseKind::Abort { gray }, now);
            abort.author = author.clone();
            abort.message = Some(format!("ended by the rollback to {to}"));
            abort.count = state.count;
            abort.checked_at = Some(state.checked_at);
            records.push(abort);
        }
        seq += 1;
        let kind = match (&gray_release, plan) {
            (Some(selector), _) => ReleaseKind::Gray {
                selector: selector.clone(),
            },
            (None, Plan::Promote { seq }) => ReleaseKind::Promote { gray: *seq },
            (None, Plan::Abort { seq }) => ReleaseKind::Abort { gray: *seq },
            (None, _) => self.kind.clone(),
        };
        let mut release = Record::new(seq, kind, now);
        release.author = author;
        release.message = match (&self.message, plan) {
            (Some(message), _) => Some(message.clone()),
            (None, Plan::Rollback { seq }) => Some(format!("rollback to {seq}")),
            (None, _) => None,
        };
        release.secrets = redaction.secrets_among(changes.keys().chain(texts.keys()));
        release.changes = changes;
        release.count = after.count;
        release.checked_at = Some(state.checked_at);
        if gray_release.is_some() {
            release.gray_values = texts.clone();
            release.gray_removes = deletes.clone();
        }
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

        // Guards: no other release, the same gray release, and every key written unchanged
        // since it was read (so each recorded value before is exact).
        let mut compares = vec![
            match &state.head {
                Some((_, rev)) => Compare::mod_revision(head_key(prefix), *rev),
                None => Compare::create_revision(head_key(prefix), 0),
            },
            match &state.gray {
                Some((_, rev)) => Compare::mod_revision(gray_key(prefix), *rev),
                None => Compare::create_revision(gray_key(prefix), 0),
            },
            // The published schema the values were checked against (and that says which
            // are secret) is still the one published.
            match state.schema_rev {
                0 => Compare::create_revision(PublishedSchema::key(prefix), 0),
                rev => Compare::mod_revision(PublishedSchema::key(prefix), rev),
            },
        ];
        let guarded: BTreeSet<&String> = if gray_release.is_some() {
            BTreeSet::new()
        } else {
            puts.keys().chain(&deletes).collect()
        };
        for key in guarded {
            compares.push(match state.mod_revision(key) {
                0 => Compare::create_revision(full(key), 0),
                rev => Compare::mod_revision(full(key), rev),
            });
        }
        // A typed release replaces its maps whole: no entry may appear unseen (etcd walks
        // the map's keys for this compare; only typed releases of maps pay it).
        if let Plan::Typed { maps, .. } = plan {
            compares.extend(maps.iter().map(|map| {
                Compare::new(
                    map.under.clone(),
                    CompareOp::Less,
                    CompareTarget::ModRevision(state.revision.saturating_add(1)),
                )
                .over_prefix()
            }));
        }
        let size = (
            release.changes.len(),
            release
                .changes
                .iter()
                .map(|(key, c)| {
                    key.len()
                        + c.old.as_ref().map_or(0, String::len)
                        + c.new.as_ref().map_or(0, String::len)
                })
                .sum(),
        );
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
        ops.push(TxnOp::put(head_key(prefix), release.head().encode()?));
        let keep = self.center.release_history.max(1) as u64;
        let oldest_kept = seq.saturating_sub(keep) + 1;
        let first_gone = state.seq().saturating_sub(keep) + 1;
        for old in first_gone.max(1)..oldest_kept {
            ops.push(TxnOp::delete(record_key(prefix, old)));
        }
        Ok(Some(Planned {
            txn: Txn::new().when(compares).and_then(ops),
            records,
            after,
            redaction,
            size,
        }))
    }
}

impl Plan {
    /// The keys (relative) a release of this plan writes, read with the state (others it
    /// learns once the state says which).
    fn keys(&self, job: &Job) -> BTreeSet<String> {
        let mut keys: BTreeSet<String> = job.expect_versions.keys().cloned().collect();
        if let Plan::Raw { values, remove } = self {
            keys.extend(values.keys().cloned());
            keys.extend(remove.iter().cloned());
        }
        keys
    }
}

/// The latest release's seq, from the head alone.
async fn latest_seq(center: &ConfigCenter, prefix: &str) -> Result<u64> {
    let response = center
        .store
        .range(&KeyRange::key(head_key(prefix)), RangeOptions::default())
        .await?;
    match response.kvs.first() {
        Some(kv) => Ok(Record::decode(kv)?.seq),
        None => Ok(0),
    }
}

/// A release the store refused before sending (over etcd's request size or operation
/// count), told in the user's terms: the prefix, how much it changes, the limit; not the
/// internal key the request happened to start with. Other errors pass through.
fn too_large(prefix: &str, (keys, bytes): (usize, usize), e: Error) -> Error {
    match e {
        // The store refuses a request with InvalidArgument only for its size or its count of
        // operations (the keys and values of a release are checked before).
        Error::InvalidArgument { reason, .. } => Error::InvalidArgument {
            field: prefix.to_owned(),
            reason: format!(
                "a release of `{prefix}` cannot be sent in one transaction: {reason}. It \
                 changes {keys} keys ({bytes} bytes before and after, each written with its \
                 record); nothing was written"
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

impl ConfigCenter {
    /// A release of a typed value: every field of `value` written under `T`'s prefix (maps
    /// whole, as [`publish`](Self::publish)), recorded with the keys whose values it changed.
    /// Checked like `publish` before anything is written.
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

fn typed_plan<T: CoordConfig>(prefix: &str, value: &T) -> Result<Plan> {
    let values = checked_values(prefix, value)?;
    let maps = map_replacements::<T>(prefix, &values);
    Ok(Plan::Typed {
        values,
        maps,
        schema: Arc::new(PublishedSchema::of::<T>(prefix)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_keys_of_a_prefix_never_match_another_prefix() {
        assert!(is_record_key("/a", &record_key("/a", 7)));
        assert!(!is_record_key("/a", &record_key("/a/b", 7)));
        assert!(!is_record_key("/a", &head_key("/a")));
        assert!(!releases_of("/a/b").starts_with(&releases_of("/a")));
    }
}
