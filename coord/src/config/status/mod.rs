//! Rollout status: what config each live instance runs, read with
//! [`ConfigCenter::rollout`].
//!
//! While a `Coord` has at least one [`Live`](crate::Live) handle on a prefix, it keeps one
//! status key for that prefix on a lease of its own:
//!
//! ```text
//! /coord/status{prefix}//{instance name}  →  JSON InstanceStatus
//! ```
//!
//! Config prefixes never hold an empty segment, so the `//` keeps one prefix's statuses apart
//! from a longer prefix's (`/coord/status/config//…` is not under `/coord/status/config/app//`).
//!
//! # What it promises
//!
//! - **Current.** The status says the revision the instance's config is current at (the lowest
//!   [`Live::revision`](crate::Live::revision) among the `Coord`'s handles on the prefix) and
//!   the last change it rejected, if the latest change of its keys was rejected.
//! - **Coalesced.** One reporter task per `Coord` and prefix writes the status, one write in
//!   flight at a time, and then the latest state: a burst of reloads costs a few writes, not
//!   one each, and the reloads themselves never wait for a write.
//! - **Gone with the instance.** The key is deleted when the last handle on the prefix is
//!   dropped, revoked by [`Coord::close`](crate::Coord::close), and expires with the lease
//!   (10 s) if the process dies. A lost lease is replaced and the status written again.
//! - **Quiet where it would echo.** A handle bound to a prefix that covers its own status key
//!   (`/`, `/coord`, `/coord/status`) reports nothing: each report would be a change of its
//!   own keys. [`Live::fixed`](crate::Live::fixed) handles report nothing either.

pub(crate) mod reporter;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tracing::Instrument;

use crate::config::ConfigCenter;
use crate::config::gray::{GrayDoc, Selector, gray_key};
use crate::config::release::ReleaseKind;
use crate::error::{Error, Result};
use crate::store::{KeyRange, RangeOptions};
use crate::watch::{ResilientWatch, WatchConfig};

/// Where every status key lives.
pub(crate) const STATUS_ROOT: &str = "/coord/status";

/// What one instance runs on one prefix: the value of its status key.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> coord::Result<()> {
/// use coord::{Coord, CoordConfig, Instance};
///
/// #[derive(CoordConfig, Debug, Clone)]
/// #[coord(prefix = "/config/checkout")]
/// struct Checkout {
///     #[coord(default = 30)]
///     timeout_secs: u64,
/// }
///
/// let store = coord::Store::in_memory();
/// let api = Coord::from_store_as(&store, Instance::new("api-1").label("zone", "eu-1"))?;
/// let live = api.live::<Checkout>().await?;
///
/// let revision = api.config().set("/config/checkout/timeout_secs", &45).await?;
/// // The status follows shortly after the value.
/// let status = loop {
///     let statuses = api.config().rollout("/config/checkout").await?;
///     if statuses.first().is_some_and(|s| s.revision >= revision) {
///         break statuses[0].clone();
///     }
///     tokio::task::yield_now().await;
/// };
/// assert_eq!(status.instance, "api-1");
/// assert_eq!(status.labels["zone"], "eu-1");
/// assert!(status.error.is_none());
/// # drop(live);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct InstanceStatus {
    /// The instance's name ([`Instance::name`](crate::Instance::name)).
    pub instance: String,
    /// The instance's labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The config prefix the status is about.
    pub prefix: String,
    /// The store revision the instance's config is current at: every change of its keys up
    /// to this revision is applied. With several handles on the prefix, the lowest of theirs.
    pub revision: i64,
    /// The last change the instance rejected, while its latest change is rejected.
    #[serde(default)]
    pub error: Option<StatusError>,
    /// The gray release the instance runs, if it is one of that release's instances.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gray: Option<u64>,
    /// What the application last said of its health on this prefix
    /// ([`Coord::report_health`](crate::Coord::report_health)); `None` if it never did.
    /// Rollout plans can require it healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<InstanceHealth>,
    /// The latest release of the prefix (not counting gray ones) the instance runs: the newest
    /// one whose revision it is current at. Worked out by
    /// [`rollout`](ConfigCenter::rollout) from the history, not stored.
    #[serde(default, skip_serializing)]
    pub release: Option<u64>,
    /// When the status was written, in milliseconds since the Unix epoch (the instance's clock).
    pub updated_ms: u64,
}

/// What an instance says of its own health on a prefix: a gate of rollout plans (a canary
/// that reports `Degraded` stops the plan).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
#[non_exhaustive]
pub enum InstanceHealth {
    /// Working as it should.
    Healthy,
    /// Working worse than it should, and why (a p99 over budget, errors up).
    Degraded {
        /// Why, in the application's words.
        reason: String,
    },
}

/// A change an instance rejected: it keeps running the config of
/// [`InstanceStatus::revision`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct StatusError {
    /// The key the error is about, if it is about one (a value that does not decode, a
    /// required key deleted, a `validate` that failed names the prefix).
    #[serde(default)]
    pub key: Option<String>,
    /// The error, as `Live::last_error` displays it.
    pub message: String,
    /// The revision that was rejected.
    pub revision: i64,
}

impl StatusError {
    /// The status form of `error`, rejected at `revision`.
    pub(crate) fn of(error: &Error, revision: i64) -> Self {
        let key = match error {
            Error::Decode { key, .. } | Error::Invalid { key, .. } => Some(key.clone()),
            _ => None,
        };
        StatusError {
            key,
            message: error.to_string(),
            revision,
        }
    }
}

/// A config prefix as `Live` binds it: without trailing `/`.
pub(crate) fn normalize(prefix: &str) -> &str {
    prefix.trim_end_matches('/')
}

/// `/coord/status{prefix}//`: every status key of `prefix` is under it.
pub(crate) fn status_prefix(prefix: &str) -> String {
    format!("{STATUS_ROOT}{}//", normalize(prefix))
}

/// `/coord/status{prefix}//{instance}`: the status key of `instance` on `prefix`.
pub(crate) fn status_key(prefix: &str, instance: &str) -> String {
    format!("{}{instance}", status_prefix(prefix))
}

/// True if a handle on `prefix` would see its own status key change (and so must not report).
pub(crate) fn covers_own_status(prefix: &str, instance: &str) -> bool {
    status_key(prefix, instance).starts_with(&format!("{}/", normalize(prefix)))
}

impl ConfigCenter {
    /// Every live instance with a [`Live`](crate::Live) handle on `prefix` and what it runs,
    /// sorted by instance name: one range read of the prefix's status keys (see
    /// [`InstanceStatus`] for an example).
    ///
    /// An instance appears while it holds a handle on the prefix and its `Coord` is open; one
    /// that died without closing disappears when its status lease expires (10 s).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for a prefix with NUL; [`Error::Decode`] naming the key if a
    /// status is not an [`InstanceStatus`]; store errors.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn rollout(&self, prefix: &str) -> Result<Vec<InstanceStatus>> {
        crate::config::reserved::refuse_reserved("prefix", prefix)?;
        let range = KeyRange::prefix(status_prefix(prefix));
        crate::store::check_key("prefix", range.as_str(), true)?;
        let span = tracing::debug_span!("config.rollout", key = range.as_str());
        let response = self
            .store
            .range(&range, RangeOptions::default())
            .instrument(span)
            .await?;
        let mut statuses = response
            .kvs
            .iter()
            .map(|kv| {
                serde_json::from_slice::<InstanceStatus>(&kv.value).map_err(|source| {
                    Error::Decode {
                        key: kv.key.clone(),
                        source,
                    }
                })
            })
            .collect::<Result<Vec<_>>>()?;
        statuses.sort_by(|a, b| a.instance.cmp(&b.instance));
        let releases = crate::config::release::applied_at(self, normalize(prefix)).await?;
        for status in &mut statuses {
            status.release = releases
                .iter()
                .filter(|(_, revision)| *revision <= status.revision)
                .map(|(seq, _)| *seq)
                .max();
        }
        Ok(statuses)
    }

    /// Waits until every live instance on `prefix` runs release `seq`, and returns their
    /// statuses. For a gray release, the instances its selector picks must run it (their
    /// status names it in `gray`) and the others must be current at its revision; for any
    /// other release every instance must be current at its revision and run no gray release
    /// started before it (so a release made beside a gray release is not done while an
    /// instance still lays the gray values over it). An instance that
    /// rejected a change at or after that revision ends the wait. Instances that appear while
    /// waiting are waited for too; with none live, it returns at once. A gray release's
    /// selector is read once, when the wait starts: a widening made during the wait is
    /// waited for by waiting for the widening.
    ///
    /// It reads the statuses again each time one is written (a watch of the prefix's status
    /// keys), and at least every 50 ms at first, backing off to every 500 ms.
    ///
    /// # Errors
    ///
    /// [`Error::Rejected`] naming the instance, the key its error names and why;
    /// [`Error::NotFound`] if release `seq` is not in history; [`Error::Timeout`] when
    /// `timeout` passes first.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it only reads and waits; a dropped wait changes nothing.
    pub async fn wait_rollout(
        &self,
        prefix: &str,
        seq: u64,
        timeout: std::time::Duration,
    ) -> Result<Vec<InstanceStatus>> {
        crate::config::reserved::refuse_reserved("prefix", prefix)?;
        let prefix = normalize(prefix).to_owned();
        let span = tracing::info_span!("config.wait_rollout", prefix = %prefix, seq);
        let wait = async {
            let release = target(self, &prefix, seq).await?;
            // Woken by every status write; the growing pause is the fallback while the watch
            // cannot be opened or is broken.
            let mut changes = ResilientWatch::from_now(
                self.store.clone(),
                KeyRange::prefix(status_prefix(&prefix)),
                WatchConfig::default(),
            )
            .await
            .ok();
            let mut pause = std::time::Duration::from_millis(50);
            loop {
                let statuses = self.rollout(&prefix).await?;
                let mut done = true;
                for status in &statuses {
                    if let Some(error) = status
                        .error
                        .as_ref()
                        .filter(|e| e.revision >= release.revision)
                    {
                        return Err(Error::Rejected {
                            instance: status.instance.clone(),
                            key: error.key.clone(),
                            reason: error.message.clone(),
                        });
                    }
                    done &= release.reached_by(status);
                }
                if done {
                    return Ok(statuses);
                }
                match &mut changes {
                    Some(watch) => {
                        tokio::select! {
                            changed = watch.next() => {
                                if changed.is_err() {
                                    changes = None;
                                }
                            }
                            () = tokio::time::sleep(pause) => {}
                        }
                    }
                    None => tokio::time::sleep(pause).await,
                }
                pause = (pause * 2).min(std::time::Duration::from_millis(500));
            }
        };
        match tokio::time::timeout(timeout, wait.instrument(span)).await {
            Ok(result) => result,
            Err(_) => Err(Error::Timeout {
                operation: format!("wait_rollout of {prefix} release {seq}"),
                after: timeout,
            }),
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
    pub fn reached_by(&self, status: &InstanceStatus) -> bool {
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
async fn target(center: &ConfigCenter, prefix: &str, seq: u64) -> Result<Target> {
    let (revision, kind) = crate::config::release::applied_release(center, prefix, seq).await?;
    let (seq, selector) = match kind {
        ReleaseKind::Gray { selector } => (seq, selector),
        // A widening is its gray release, at the widening's revision, to the wider selector.
        ReleaseKind::Widen { gray, selector } => (gray, selector),
        _ => {
            return Ok(Target {
                seq,
                revision,
                selector: None,
            });
        }
    };
    // Widened since: the instances to wait for are those it reaches now.
    let (current, _) = center.store.get(&gray_key(prefix)).await?;
    let selector = current
        .and_then(|kv| serde_json::from_slice::<GrayDoc>(&kv.value).ok())
        .filter(|doc| doc.seq == seq)
        .map_or(selector, |doc| doc.selector);
    Ok(Target {
        seq,
        revision,
        selector: Some(selector),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_keys_of_one_prefix_are_apart_from_a_longer_prefix() {
        assert_eq!(
            status_key("/config/app", "api-1"),
            "/coord/status/config/app//api-1"
        );
        assert_eq!(
            status_key("/config/app/", "api-1"),
            "/coord/status/config/app//api-1"
        );
        let range = KeyRange::prefix(status_prefix("/config"));
        assert!(range.contains(&status_key("/config", "a")));
        assert!(!range.contains(&status_key("/config/app", "a")));
    }

    #[test]
    fn only_prefixes_above_the_status_root_cover_their_own_status() {
        for prefix in ["", "/", "/coord", "/coord/", "/coord/status"] {
            assert!(covers_own_status(prefix, "a"), "{prefix}");
        }
        for prefix in ["/config", "/coord/stat", "/coord/status/x", "/coordx"] {
            assert!(!covers_own_status(prefix, "a"), "{prefix}");
        }
    }

    #[test]
    fn a_status_error_names_the_key_of_config_errors() {
        let invalid = Error::Invalid {
            key: "/config/app".into(),
            reason: "too big".into(),
        };
        let status = StatusError::of(&invalid, 7);
        assert_eq!(status.key.as_deref(), Some("/config/app"));
        assert_eq!(status.message, invalid.to_string());
        assert_eq!(status.revision, 7);
        assert_eq!(StatusError::of(&Error::Closed, 8).key, None);
    }
}
