//! Gray releases: a release that only some instances see until it is promoted or aborted.
//!
//! A gray release of a prefix is one key, `/coord/gray{prefix}`, holding the values
//! it changes (and the keys it removes) and a [`Selector`] of the instances that see it. The
//! prefix's own keys do not change, so every other instance sees nothing. A selected
//! instance's `Live` overlays the gray values on the prefix's values and builds one struct
//! from both, so the gray release is applied whole, like any revision. Promoting writes the
//! gray values to the prefix and deletes the gray key in one transaction; aborting deletes
//! the gray key. One gray release per prefix at a time.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// Where every gray release is kept: one key per prefix, so that one watch per `Coord` (not
/// one per prefix) tells every `Live` about gray releases; they are rare.
pub(crate) const GRAY_ROOT: &str = "/coord/gray";

/// The key of a prefix's gray release.
pub(crate) fn gray_key(prefix: &str) -> String {
    format!("{GRAY_ROOT}{prefix}")
}

/// Which instances see a gray release: those named, and those whose labels match every
/// label given (any instance, if none is given) and whose stable bucket for this release
/// falls under the percentage (every one, if none is given).
///
/// ```
/// use std::collections::BTreeMap;
/// use coord::config::Selector;
///
/// let canary = Selector::default().label("zone", "eu-1").percent(50);
/// let eu = BTreeMap::from([("zone".to_owned(), "eu-1".to_owned())]);
/// let us = BTreeMap::from([("zone".to_owned(), "us-1".to_owned())]);
/// assert!(!canary.matches("web-7", &us, 12));
/// // An instance's bucket is fixed for one release: asking again gives the same answer.
/// assert_eq!(canary.matches("web-7", &eu, 12), canary.matches("web-7", &eu, 12));
/// assert!(Selector::default().instance("web-7").matches("web-7", &us, 12));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selector {
    /// Labels an instance must all have.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The share of the label-matching instances that see it, 0-100 (`None`: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<u8>,
    /// Instances that see it whatever their labels.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub instances: BTreeSet<String>,
}

impl Selector {
    /// Also requires the label `key` = `value`.
    #[must_use]
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// Only `percent` (capped at 100) of the matching instances, chosen by a stable hash of
    /// the instance name and the release.
    #[must_use]
    pub fn percent(mut self, percent: u8) -> Self {
        self.percent = Some(percent.min(100));
        self
    }

    /// Also the instance named `name`.
    #[must_use]
    pub fn instance(mut self, name: impl Into<String>) -> Self {
        self.instances.insert(name.into());
        self
    }

    /// True if every instance `narrower` picks (for any release) this selector picks too:
    /// its names are among these, and unless it picks by name only, these labels are among
    /// its labels and this percentage is at least its.
    ///
    /// ```
    /// use coord::config::Selector;
    ///
    /// let ten = Selector::default().label("zone", "eu-1").percent(10);
    /// assert!(Selector::default().label("zone", "eu-1").percent(50).covers(&ten));
    /// assert!(Selector::default().covers(&ten), "everyone");
    /// assert!(!Selector::default().percent(50).label("tier", "web").covers(&ten));
    /// assert!(!Selector::default().instance("web-1").covers(&ten));
    /// assert!(Selector::default().covers(&Selector::default().instance("web-1")));
    /// ```
    pub fn covers(&self, narrower: &Selector) -> bool {
        let by_name_only =
            |s: &Selector| !s.instances.is_empty() && s.labels.is_empty() && s.percent.is_none();
        // No labels and the whole percentage: every instance, names or not.
        let everyone = self.labels.is_empty() && self.percent.unwrap_or(100) >= 100;
        if everyone && !by_name_only(self) {
            return true;
        }
        let names = narrower.instances.is_subset(&self.instances);
        if by_name_only(narrower) {
            return names;
        }
        names
            && !by_name_only(self)
            && self
                .labels
                .iter()
                .all(|(key, value)| narrower.labels.get(key) == Some(value))
            && self.percent.unwrap_or(100) >= narrower.percent.unwrap_or(100)
    }

    /// True if the instance `name` with `labels` sees gray release `seq`.
    pub fn matches(&self, name: &str, labels: &BTreeMap<String, String>, seq: u64) -> bool {
        if self.instances.contains(name) {
            return true;
        }
        if !self.instances.is_empty() && self.labels.is_empty() && self.percent.is_none() {
            return false;
        }
        let labelled = self
            .labels
            .iter()
            .all(|(key, value)| labels.get(key) == Some(value));
        labelled
            && self
                .percent
                .is_none_or(|percent| bucket(name, seq) < percent)
    }
}

/// An instance's bucket (0-99) for one release: FNV-1a of `{seq}/{name}`, so it is the same
/// on every process and stays put for the release (widening it in place keeps every pick),
/// and a new release reshuffles.
fn bucket(name: &str, seq: u64) -> u8 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in format!("{seq}/{name}").bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    // `% 100` fits a u8.
    u8::try_from(hash % 100).unwrap_or(0)
}

/// The stored gray release.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct GrayDoc {
    /// Its release number.
    pub seq: u64,
    pub selector: Selector,
    /// Relative key → stored text, laid over the prefix's values.
    pub values: BTreeMap<String, String>,
    /// Relative keys the selected instances see removed.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub removes: BTreeSet<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn labels_must_all_match_and_names_always_do() {
        let selector = Selector::default().label("zone", "eu").label("tier", "web");
        assert!(selector.matches("a", &labels(&[("zone", "eu"), ("tier", "web")]), 1));
        assert!(!selector.matches("a", &labels(&[("zone", "eu")]), 1));
        assert!(Selector::default().matches("anyone", &BTreeMap::new(), 1));
        let named = Selector::default().instance("b");
        assert!(named.matches("b", &BTreeMap::new(), 1));
        assert!(
            !named.matches("a", &BTreeMap::new(), 1),
            "a name list alone selects only those"
        );
    }

    #[test]
    fn a_percentage_selects_about_that_share_stably_per_release() {
        let selector = Selector::default().percent(30);
        let names: Vec<String> = (0..2000).map(|i| format!("host-{i}")).collect();
        let chosen = |seq| {
            names
                .iter()
                .filter(|name| selector.matches(name, &BTreeMap::new(), seq))
                .count()
        };
        let share = chosen(7);
        assert!((450..750).contains(&share), "{share} of 2000 for 30%");
        assert_eq!(chosen(7), share, "the same instances for one release");
        let first: Vec<bool> = names
            .iter()
            .map(|n| selector.matches(n, &BTreeMap::new(), 7))
            .collect();
        let next: Vec<bool> = names
            .iter()
            .map(|n| selector.matches(n, &BTreeMap::new(), 8))
            .collect();
        assert_ne!(first, next, "another release draws again");
        assert!(
            !Selector::default()
                .percent(0)
                .matches("x", &BTreeMap::new(), 1)
        );
        assert_eq!(Selector::default().percent(200).percent, Some(100));
    }
}
