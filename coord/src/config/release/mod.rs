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
mod events;
mod history;
mod model;
mod plan;
mod proposal;
mod record;
mod review;
mod secrets;
mod state;
mod tracker;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tracing::Instrument;

pub use events::{ReleaseEvent, ReleaseEvents};
pub(crate) use history::applied_at;
pub use model::{Change, KeyDiff, Release, ReleaseKind};
pub use proposal::{Proposal, ProposalState};
pub use secrets::StoredSecret;

use self::history::read_record;
use self::model::check_prefix;
pub(crate) use self::plan::Along;
use self::plan::{Job, Plan, typed_plan};
use crate::config::center::ConfigCenter;
use crate::config::gray::Selector;
use crate::config::schema::{CoordConfig, HasPrefix, prefix_of};
use crate::error::Result;

/// A release being prepared; [`commit`](Self::commit) applies it. Made by
/// [`ConfigCenter::release`](crate::ConfigCenter::release),
/// [`release_raw`](crate::ConfigCenter::release_raw) and
/// [`rollback`](crate::ConfigCenter::rollback).
#[must_use = "a release does nothing until it is committed"]
pub struct ReleaseBuilder {
    job: Job,
    plan: Result<Plan>,
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
    /// Past it the release fails with [`Error::Timeout`](crate::Error::Timeout) naming the prefix and the attempts,
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

    /// Commits `along` in the release's own transaction (see [`plan::Along`]).
    pub(crate) fn along(mut self, along: Along) -> Self {
        self.job.along = Some(along);
        self
    }

    /// Applies the change and records it, in one transaction. Returns the release as
    /// recorded (secrets redacted).
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`](crate::Error::Invalid) / [`Error::InvalidArgument`](crate::Error::InvalidArgument) for a value that does not encode or
    /// (typed) does not build back into a valid struct, nothing written;
    /// [`Error::NotFound`](crate::Error::NotFound) for a rollback to a release that is not in history;
    /// [`Error::Conflict`](crate::Error::Conflict) naming the prefix, with the latest release seq expected and found,
    /// if the prefix changed between the read and the write of a rollback, a promote, an
    /// abort or a release with [`expect_latest`](Self::expect_latest) (or naming a key whose
    /// [`expect_version`](Self::expect_version) no longer holds); [`Error::Timeout`](crate::Error::Timeout) naming
    /// the prefix and the attempts if other writers kept changing it past the
    /// [`timeout`](Self::timeout);
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) if the release needs more than 128 operations.
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
        match prefix_of::<T>("release_at") {
            Ok(prefix) => self.release_at(prefix, value),
            Err(e) => self.builder("", Err(e), ReleaseKind::Release),
        }
    }

    /// [`release`](Self::release) under an explicit prefix.
    pub fn release_at<T: CoordConfig>(&self, prefix: &str, value: &T) -> ReleaseBuilder {
        let keys = self.keys.load();
        let plan =
            check_prefix(prefix).and_then(|prefix| typed_plan(&prefix, value, keys.as_deref()));
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
    /// instance runs the restored values. It fails with [`Error::Conflict`](crate::Error::Conflict) if the prefix
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

    /// Widens gray release `seq` in place to `selector`, which must pick every instance the
    /// gray release picks now ([`Selector::covers`]): the instances it reached keep it, the
    /// newly picked ones load it, a percentage grows over the same buckets. Recorded
    /// ([`ReleaseKind::Widen`]); [`wait_rollout`](Self::wait_rollout) of the widening waits
    /// for every instance the wider selector picks.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> coord::Result<()> {
    /// use std::collections::BTreeMap;
    /// use coord::config::Selector;
    ///
    /// let coord = coord::Coord::in_memory();
    /// let config = coord.config();
    /// let names: Vec<String> = (0..100).map(|i| format!("web-{i}")).collect();
    /// let gray = config
    ///     .release_raw("/config/app", BTreeMap::from([("limit".to_owned(), 20.into())]))
    ///     .to(Selector::default().percent(10))
    ///     .commit()
    ///     .await?;
    /// let picked = |s: &Selector| -> Vec<bool> {
    ///     names.iter().map(|n| s.matches(n, &BTreeMap::new(), gray.seq)).collect()
    /// };
    /// let ten = picked(&Selector::default().percent(10));
    /// config.widen("/config/app", gray.seq, Selector::default().percent(50)).commit().await?;
    /// let fifty = picked(&Selector::default().percent(50));
    /// assert!(ten.iter().zip(&fifty).all(|(at_10, at_50)| !at_10 || *at_50));
    /// // Narrowing is no widening.
    /// let narrower = config.widen("/config/app", gray.seq, Selector::default().percent(5));
    /// assert!(narrower.commit().await.is_err());
    /// # Ok(())
    /// # }
    /// ```
    pub fn widen(&self, prefix: &str, seq: u64, selector: Selector) -> ReleaseBuilder {
        let kind = ReleaseKind::Widen {
            gray: seq,
            selector: selector.clone(),
        };
        let plan = check_prefix(prefix).map(|_| Plan::Widen { seq, selector });
        self.builder(prefix, plan, kind)
    }

    /// The exact texts a release of `values` (removing `removes`) would store under `prefix`,
    /// planned against the prefix as it is now: secrets sealed with this center's key ring
    /// (or refused as a release would refuse them). For a room that keeps a release to make
    /// later (a rollout plan) without keeping a secret in clear.
    pub(crate) async fn planned_texts(
        &self,
        prefix: &str,
        values: BTreeMap<String, serde_json::Value>,
        removes: BTreeSet<String>,
    ) -> Result<PlannedTexts> {
        let mut builder = self.release_raw_with(prefix, values, removes);
        // Planned as a gray release, its record holds every text, changed or not.
        builder.job.gray = Some(Selector::default());
        let plan = builder.plan?;
        let (_, record, _) = builder.job.plan_only(&plan, None).await?;
        Ok(PlannedTexts {
            texts: record.gray_values,
            removes: record.gray_removes,
            secrets: record.secrets,
        })
    }

    /// A release that stores `texts` exactly (already sealed where secret) and removes
    /// `removes`: what [`planned_texts`](Self::planned_texts) planned.
    pub(crate) fn release_exact(
        &self,
        prefix: &str,
        texts: BTreeMap<String, String>,
        removes: BTreeSet<String>,
    ) -> ReleaseBuilder {
        let plan = check_prefix(prefix).map(|_| Plan::Exact {
            puts: texts,
            removes,
        });
        self.builder(prefix, plan, ReleaseKind::Release)
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
                approval: None,
                along: None,
            },
            plan,
        }
    }
}

/// What [`ConfigCenter::planned_texts`] planned. Its `Debug` names the keys, never a text
/// (a secret's is plain without a key ring).
#[derive(Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct PlannedTexts {
    /// Relative key → the exact text to store.
    pub texts: BTreeMap<String, String>,
    /// Relative keys to remove.
    pub removes: BTreeSet<String>,
    /// The keys whose texts are secret.
    pub secrets: BTreeSet<String>,
}

impl std::fmt::Debug for PlannedTexts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlannedTexts")
            .field("keys", &self.texts.keys().collect::<Vec<_>>())
            .field("removes", &self.removes)
            .field("secrets", &self.secrets)
            .finish()
    }
}

/// Release `seq` of `prefix`: the revision it was applied at, and its kind.
pub(crate) async fn applied_release(
    center: &ConfigCenter,
    prefix: &str,
    seq: u64,
) -> Result<(i64, ReleaseKind)> {
    let (record, revision) = read_record(center, prefix, seq).await?;
    Ok((revision, record.kind))
}
