//! A prefix as a release sees it, and the changes made to it outside releases.
//!
//! # What it promises
//!
//! - **Reads what the release touches, not the prefix.** A release reads the head, the gray
//!   release, the published schema, the keys it writes and a count of the prefix; a typed
//!   release (which may remove map entries it does not name) and a prefix whose head is of
//!   the first record format read the whole prefix, page by page at one revision.
//! - **Every change made outside releases is found** without reading the prefix. The head
//!   says up to which revision outside changes were looked for (`checked_at`, C) and how many
//!   keys the prefix held after it. A key last written after C at a revision no record was
//!   written at was written outside releases (a transaction takes one revision, so a key
//!   written at a record's revision was written by that release); a count below the recorded
//!   one says keys were removed. Their earlier values are the recorded ones: the prefix at C
//!   with the records written since laid over it. etcd answers the filter (`min_mod_revision`)
//!   by walking the prefix itself: the answer is the changed keys only, the server's work is
//!   not.
//! - **Exact, or said.** An earlier value etcd compacted away before it was recorded is
//!   marked unknown (and the names of removed keys, counted), never guessed: a rollback over
//!   it is refused.
//! - **A remembered state** (this center's own last release) needs no read. A watch on the
//!   prefix (`tracker.rs`) tells whether anyone else wrote it: if not, C moves up to the
//!   center's last release; if so, the prefix is read again. Without the watch's word, a
//!   chain of remembered releases stays short enough that every record since C is still
//!   kept, and a key the state did not know is used only if nothing wrote it since C.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use super::model::{ReleaseKind, head_key, is_record_key, releases_of};
use super::record::{KeyChange, Record, changes_between};
use super::tracker::Tracker;
use crate::access::{Gate, POLICY_KEY};
use crate::config::center::ConfigCenter;
use crate::config::gray::{GrayDoc, gray_key};
use crate::config::published::PublishedSchema;
use crate::config::redact::Redaction;
use crate::error::{Error, Result};
use crate::store::{GetResponse, KeyRange, RangeOptions, Store, Txn, TxnOp, TxnOpResponse};
use crate::sync::lock;

/// Point reads per transaction (etcd allows 128 operations).
const READS_PER_TXN: usize = 100;
/// Keys of a prefix read whole in the state's own transaction.
const FIRST_PAGE: i64 = 256;

/// Changes made outside releases since the latest record.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Drift {
    /// Each key changed, with its recorded value before.
    pub changes: BTreeMap<String, KeyChange>,
    /// Keys removed whose names could not be read.
    pub unnamed_removals: u64,
    /// The latest revision a change was seen at.
    pub seen_revision: i64,
    /// No release yet: the keys found are the prefix's starting point, not listed.
    pub baseline: Option<u64>,
}

/// The state of a prefix as a release sees it.
#[derive(Clone, Debug, Default)]
pub(crate) struct PrefixState {
    /// The store revision this state is current at (remembered: this center's last release).
    pub revision: i64,
    /// Known keys (relative) → (exact text, mod revision): every key under the prefix if
    /// `complete`, else those read (the release's keys and those changed outside releases).
    pub values: BTreeMap<String, (String, i64)>,
    /// Keys read and found absent (when not `complete`).
    pub absent: BTreeSet<String>,
    pub complete: bool,
    /// Keys under the prefix.
    pub count: u64,
    /// The latest record and the head key's mod revision.
    pub head: Option<(Record, i64)>,
    /// The gray release in progress and its key's mod revision.
    pub gray: Option<(GrayDoc, i64)>,
    /// The schema published for the prefix, if any: which keys are secret.
    pub schema: Option<Arc<PublishedSchema>>,
    /// The schema key's mod revision (0: none), so a release checked against this schema
    /// commits only while it is still the published one.
    pub schema_rev: i64,
    /// The access policy as read with the state: what the release is checked against, and
    /// the revision its transaction compares.
    pub gate: Gate,
    /// Changes made outside releases that the next record must hold first.
    pub drift: Option<Drift>,
    /// Up to which revision changes outside releases are recorded or in `drift`.
    pub checked_at: i64,
    /// Releases this center made on this state since `checked_at`.
    pub chain: u32,
    /// The revisions those releases were written at.
    pub ours: BTreeSet<i64>,
}

impl PrefixState {
    pub fn seq(&self) -> u64 {
        self.head.as_ref().map_or(0, |(record, _)| record.seq)
    }

    /// The stored text of `key`, `None` if absent; an error if it was never read.
    pub fn text(&self, prefix: &str, key: &str) -> Result<Option<&str>> {
        if let Some((text, _)) = self.values.get(key) {
            return Ok(Some(text));
        }
        if self.complete || self.absent.contains(key) {
            return Ok(None);
        }
        Err(Error::invalid_argument(
            format!("{prefix}/{key}"),
            "the release did not read this key (a bug in coord)",
        ))
    }

    /// The mod revision of `key` (0: absent), for its guard.
    pub fn mod_revision(&self, key: &str) -> i64 {
        self.values.get(key).map_or(0, |(_, rev)| *rev)
    }

    /// What hides secrets of this state: its schema and the latest record's marks.
    pub fn redaction(&self) -> Redaction {
        let marked = self.head.iter().flat_map(|(record, _)| &record.secrets);
        Redaction::new(self.schema.clone()).marking(marked)
    }

    /// The drift as an unattributed entry numbered `seq`, seen at `now_ms`.
    pub fn external(&self, seq: u64, now_ms: u64) -> Option<Record> {
        let drift = self.drift.as_ref()?;
        let mut record = Record::new(seq, ReleaseKind::External, now_ms);
        record.changes = drift.changes.clone();
        record.unnamed_removals = drift.unnamed_removals;
        record.seen_revision = Some(drift.seen_revision);
        record.count = self.count;
        record.checked_at = Some(self.checked_at);
        record.secrets = self.redaction().secrets_among(drift.changes.keys());
        if let Some(found) = drift.baseline {
            record.message = Some(format!(
                "{found} keys found before the first release (not listed)"
            ));
        }
        Some(record)
    }

    /// Reads the keys of `keys` this state does not know, at the latest revision. False if
    /// one of them was written after `checked_at` by someone else: this (remembered) state
    /// no longer describes the prefix well enough, read it again.
    pub async fn learn(
        &mut self,
        center: &ConfigCenter,
        prefix: &str,
        keys: &BTreeSet<String>,
    ) -> Result<bool> {
        let missing: Vec<&String> = keys
            .iter()
            .filter(|key| !self.complete && !self.values.contains_key(*key))
            .filter(|key| !self.absent.contains(*key))
            .collect();
        for chunk in missing.chunks(READS_PER_TXN) {
            let ops = chunk
                .iter()
                .map(|key| TxnOp::get(format!("{prefix}/{key}")));
            let response = center.store.txn(Txn::new().and_then(ops)).await?;
            for (key, get) in chunk.iter().zip(gets(response.responses)) {
                match get.kvs.into_iter().next() {
                    Some(kv) if kv.mod_revision > self.checked_at => return Ok(false),
                    Some(kv) => {
                        let text = text_of(kv.value);
                        self.values.insert((*key).clone(), (text, kv.mod_revision));
                    }
                    None => {
                        self.absent.insert((*key).clone());
                    }
                }
            }
        }
        Ok(true)
    }
}

/// Per-center memory of each prefix's state after this center's own last release, so the
/// next release needs no read when nobody else wrote meanwhile (its guards prove that).
#[derive(Debug, Default)]
pub(crate) struct KnownStates {
    states: Mutex<HashMap<String, PrefixState>>,
    /// A watch per prefix this center released, which moves a remembered state's
    /// `checked_at` forward while nobody else writes the prefix.
    trackers: Mutex<HashMap<String, Arc<Tracker>>>,
}

impl KnownStates {
    pub fn tracker(&self, prefix: &str) -> Option<Arc<Tracker>> {
        lock(&self.trackers).get(prefix).cloned()
    }

    /// Makes sure a watch covers the writes to `prefix` after `checked`; a failure to start
    /// one only costs later releases a read.
    pub async fn track(&self, store: &Store, prefix: &str, checked: i64) {
        if self.tracker(prefix).is_some_and(|t| t.covers(checked)) {
            return;
        }
        match Tracker::start(store, prefix, checked).await {
            Ok(tracker) => {
                let mut trackers = lock(&self.trackers);
                if trackers.len() >= 1024 {
                    trackers.clear();
                }
                trackers.insert(prefix.to_owned(), Arc::new(tracker));
            }
            Err(e) => tracing::debug!(error = %e, "no watch for the prefix's releases"),
        }
    }

    pub fn take(&self, prefix: &str) -> Option<PrefixState> {
        lock(&self.states).remove(prefix)
    }

    pub fn put(&self, prefix: &str, state: PrefixState) {
        let mut states = lock(&self.states);
        // A bounded memory: it only saves a read, so forgetting is always safe.
        if states.len() >= 1024 {
            states.clear();
        }
        states.insert(prefix.to_owned(), state);
    }
}

/// The prefix's state now: the head, gray release and schema, the keys of `keys`, the count,
/// every key if `full` (or if the head needs it), and the changes made outside releases.
pub(crate) async fn read_state(
    center: &ConfigCenter,
    prefix: &str,
    keys: &BTreeSet<String>,
    full: bool,
) -> Result<PrefixState> {
    let full = full || keys.len() > READS_PER_TXN;
    let mut ops = vec![
        TxnOp::get(head_key(prefix)),
        TxnOp::get(gray_key(prefix)),
        TxnOp::get(PublishedSchema::key(prefix)),
        TxnOp::Get(
            KeyRange::prefix(format!("{prefix}/")),
            RangeOptions::default().count_only(),
        ),
        TxnOp::get(POLICY_KEY),
    ];
    if full {
        // A small prefix comes whole in the same round trip; a larger one is paged below.
        ops.push(TxnOp::Get(
            KeyRange::prefix(format!("{prefix}/")),
            RangeOptions::default().limit(FIRST_PAGE),
        ));
    } else {
        ops.extend(keys.iter().map(|key| TxnOp::get(format!("{prefix}/{key}"))));
    }
    let response = center.store.txn(Txn::new().and_then(ops)).await?;
    let revision = response.revision;
    let mut gets = gets(response.responses).into_iter();
    let (Some(head), Some(gray), Some(schema), Some(count), Some(policy)) = (
        gets.next(),
        gets.next(),
        gets.next(),
        gets.next(),
        gets.next(),
    ) else {
        return Err(Error::invalid_argument(
            prefix,
            "the store answered a read oddly",
        ));
    };
    let mut state = PrefixState {
        revision,
        checked_at: revision,
        count: u64::try_from(count.count).unwrap_or(0),
        gate: Gate::from_kv(policy.kvs.first())?,
        ..PrefixState::default()
    };
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
        state.schema_rev = kv.mod_revision;
    }
    let under = prefix.len() + 1;
    let mut first_page = None;
    if full {
        first_page = gets
            .next()
            .filter(|page| page.count <= page.kvs.len() as i64);
    }
    for (key, get) in keys.iter().zip(gets) {
        match get.kvs.into_iter().next() {
            Some(kv) => {
                state
                    .values
                    .insert(key.clone(), (text_of(kv.value), kv.mod_revision));
            }
            None => {
                state.absent.insert(key.clone());
            }
        }
    }
    let first_format = state
        .head
        .as_ref()
        .is_some_and(|(record, _)| record.values.is_some());
    // A head of the first format holds every key: telling what changed needs every key.
    if full || first_format {
        let all = match first_page {
            Some(page) => page,
            None => range_at(center, prefix, RangeOptions::default(), revision).await?,
        };
        state.values = all
            .kvs
            .into_iter()
            .map(|kv| {
                (
                    kv.key[under..].to_owned(),
                    (text_of(kv.value), kv.mod_revision),
                )
            })
            .collect();
        state.absent.clear();
        state.complete = true;
        state.count = state.values.len() as u64;
    }
    state.drift = drift(center, prefix, &mut state).await?;
    Ok(state)
}

/// The changes made outside releases since the head (see the module's promises).
async fn drift(
    center: &ConfigCenter,
    prefix: &str,
    state: &mut PrefixState,
) -> Result<Option<Drift>> {
    let Some((head, head_rev)) = state.head.clone() else {
        // Nothing recorded yet: what is there is where the history starts.
        let found = state.count;
        let seen_revision = match state.complete {
            true => last_modified(&state.values),
            false => state.revision,
        };
        return Ok((found > 0).then_some(Drift {
            seen_revision,
            baseline: Some(found),
            ..Drift::default()
        }));
    };
    if let Some(recorded) = &head.values {
        // First format: the head holds every key.
        let changes = changes_between(recorded, &texts(&state.values));
        if changes.is_empty() {
            return Ok(None);
        }
        let seen = changes
            .keys()
            .filter_map(|key| state.values.get(key).map(|(_, rev)| *rev))
            .max()
            .unwrap_or(state.revision);
        return Ok(Some(Drift {
            changes,
            seen_revision: seen,
            ..Drift::default()
        }));
    }
    let checked = head.checked_at.unwrap_or(head_rev);
    let under = prefix.len() + 1;
    // Keys written since C, as they are now.
    let written: Vec<(String, String, i64)> = if state.complete {
        state
            .values
            .iter()
            .filter(|(_, (_, rev))| *rev > checked)
            .map(|(key, (text, rev))| (key.clone(), text.clone(), *rev))
            .collect()
    } else {
        let options = RangeOptions::default().modified_since(checked + 1);
        range_at(center, prefix, options, state.revision)
            .await?
            .kvs
            .into_iter()
            .map(|kv| {
                let rev = kv.mod_revision;
                (kv.key[under..].to_owned(), text_of(kv.value), rev)
            })
            .collect()
    };
    let only_head = written.iter().all(|(_, _, rev)| *rev == head_rev);
    if only_head && state.count == head.count {
        return Ok(None);
    }
    // The records since C, oldest first: which revisions are releases', and what they set.
    let since = records_since(center, prefix, checked, state.revision).await?;
    let release_revs: BTreeSet<i64> = since.iter().map(|(_, rev)| *rev).collect();
    let external: Vec<(String, String, i64)> = written
        .into_iter()
        .filter(|(_, _, rev)| !release_revs.contains(rev))
        .collect();
    for (key, text, rev) in &external {
        state.values.insert(key.clone(), (text.clone(), *rev));
        state.absent.remove(key);
    }
    // The recorded value of a key: the last record since C that set it, else its value at C.
    let mut recorded: BTreeMap<String, Option<String>> = BTreeMap::new();
    for (record, _) in &since {
        for (key, change) in &record.changes {
            recorded.insert(key.clone(), change.new.clone());
        }
    }
    // Keys the records since C do not name: their recorded value is their value at C.
    let unknown_at_c: Vec<&String> = external
        .iter()
        .map(|(key, _, _)| key)
        .filter(|key| !recorded.contains_key(*key))
        .collect();
    let mut at_checked: BTreeMap<String, Option<String>> = BTreeMap::new();
    let mut compacted = false;
    for chunk in unknown_at_c.chunks(READS_PER_TXN) {
        let ops = chunk.iter().map(|key| {
            TxnOp::Get(
                KeyRange::key(format!("{prefix}/{key}")),
                RangeOptions::default().at_revision(checked),
            )
        });
        match center.store.txn(Txn::new().and_then(ops)).await {
            Ok(response) => {
                for (key, get) in chunk.iter().zip(gets(response.responses)) {
                    let old = get.kvs.into_iter().next().map(|kv| text_of(kv.value));
                    at_checked.insert((*key).clone(), old);
                }
            }
            Err(Error::Compacted { .. }) => {
                compacted = true;
                break;
            }
            Err(e) => return Err(e),
        }
    }
    let mut changes = BTreeMap::new();
    let mut created_outside = 0_u64;
    for (key, text, _) in &external {
        let old = recorded.get(key).or_else(|| at_checked.get(key));
        let change = match old {
            Some(old) => {
                if old.is_none() {
                    created_outside += 1;
                }
                KeyChange::new(old.clone(), Some(text.clone()))
            }
            None => KeyChange {
                old: None,
                new: Some(text.clone()),
                old_unknown: true,
            },
        };
        if change.old_unknown || change.old.as_deref() != Some(text.as_str()) {
            changes.insert(key.clone(), change);
        }
    }
    // Fewer keys than recorded, once those created outside are counted: keys were removed.
    let expected = i128::from(head.count);
    let removed = (expected + i128::from(created_outside) - i128::from(state.count)).max(0);
    let mut unnamed = 0_u64;
    if removed > 0 {
        let all = if compacted {
            None
        } else {
            match range_at(center, prefix, RangeOptions::default(), checked).await {
                Ok(all) => Some(all),
                Err(Error::Compacted { .. }) => None,
                Err(e) => return Err(e),
            }
        };
        match all {
            Some(all) => {
                // The recorded keys: those at C with the records since laid over them.
                let mut keys: BTreeMap<String, String> = all
                    .kvs
                    .into_iter()
                    .map(|kv| (kv.key[under..].to_owned(), text_of(kv.value)))
                    .collect();
                for (key, new) in &recorded {
                    match new {
                        Some(text) => keys.insert(key.clone(), text.clone()),
                        None => keys.remove(key),
                    };
                }
                let now = current_keys(center, prefix, state).await?;
                for (key, old) in keys {
                    if !now.contains(&key) {
                        changes.insert(key, KeyChange::new(Some(old), None));
                    }
                }
            }
            None => unnamed = u64::try_from(removed).unwrap_or(u64::MAX),
        }
    }
    if changes.is_empty() && unnamed == 0 {
        return Ok(None);
    }
    let seen_revision = external
        .iter()
        .map(|(_, _, rev)| *rev)
        .max()
        .filter(|_| removed == 0)
        .unwrap_or(state.revision);
    Ok(Some(Drift {
        changes,
        unnamed_removals: unnamed,
        seen_revision,
        baseline: None,
    }))
}

/// The keys under the prefix at the state's revision.
async fn current_keys(
    center: &ConfigCenter,
    prefix: &str,
    state: &PrefixState,
) -> Result<BTreeSet<String>> {
    if state.complete {
        return Ok(state.values.keys().cloned().collect());
    }
    let under = prefix.len() + 1;
    let all = range_at(
        center,
        prefix,
        RangeOptions::default().keys_only(),
        state.revision,
    )
    .await?;
    Ok(all
        .kvs
        .into_iter()
        .map(|kv| kv.key[under..].to_owned())
        .collect())
}

/// The records of the prefix written after revision `after`, oldest first, with the
/// revision each was written at; read at `revision`.
pub(crate) async fn records_since(
    center: &ConfigCenter,
    prefix: &str,
    after: i64,
    revision: i64,
) -> Result<Vec<(Record, i64)>> {
    let response = center
        .store
        .range(
            &KeyRange::prefix(releases_of(prefix)),
            RangeOptions::default().at_revision(revision),
        )
        .await?;
    let mut records = Vec::new();
    for kv in &response.kvs {
        if kv.mod_revision > after && is_record_key(prefix, &kv.key) {
            records.push((Record::decode(kv)?, kv.mod_revision));
        }
    }
    Ok(records)
}

/// Every key under `prefix` (with `options`) at `revision`, paged.
async fn range_at(
    center: &ConfigCenter,
    prefix: &str,
    options: RangeOptions,
    revision: i64,
) -> Result<GetResponse> {
    center
        .store
        .range(
            &KeyRange::prefix(format!("{prefix}/")),
            options.at_revision(revision),
        )
        .await
}

/// The get answers of a transaction, in order.
fn gets(responses: Vec<TxnOpResponse>) -> Vec<GetResponse> {
    responses
        .into_iter()
        .filter_map(|r| match r {
            TxnOpResponse::Get(get) => Some(get),
            _ => None,
        })
        .collect()
}

/// A stored value as text. Kept lossy: a value that is not UTF-8 then differs from its
/// record, which shows as a change.
pub(crate) fn text_of(value: Vec<u8>) -> String {
    String::from_utf8(value).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

fn texts(values: &BTreeMap<String, (String, i64)>) -> BTreeMap<String, String> {
    values
        .iter()
        .map(|(key, (text, _))| (key.clone(), text.clone()))
        .collect()
}

/// The latest mod revision among `values` (0 if none).
fn last_modified(values: &BTreeMap<String, (String, i64)>) -> i64 {
    values.values().map(|(_, rev)| *rev).max().unwrap_or(0)
}
