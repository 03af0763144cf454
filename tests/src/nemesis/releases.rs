//! The releases workload and its checker.
//!
//! **Workload.** On each client a releaser changes one prefix through coord's releases, at
//! random: a plain release, a gray release to one other client's instance, a promote or an
//! abort of the gray release it started, a rollback to one of its earlier releases. Every
//! operation carries a unique message (`p{process}-{n}`), so the history names the operation
//! each record came from. After each acknowledged release that changes the prefix's own keys
//! (release, promote, rollback), the releaser reads the prefix at the release's revision
//! through a client connected straight to the cluster, to compare with the record later
//! (done at once, before a compaction can take that revision away). On every client a reader
//! `load()`s a `Live` of the prefix, as the client's instance (`c{client}`) sees it.
//!
//! **Checker.**
//! - no instance outside a gray release's selector ever loaded its values, unless a promote
//!   of it had been asked for before the load (after which they are everyone's);
//! - every acknowledged operation is recorded once, as the release it returned;
//! - every record comes from an operation that may have happened (ok or unknown), never from
//!   one that certainly failed, and no operation is recorded twice;
//! - at each verified release's revision, the store held exactly the values its record says
//!   it set.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use coord::config::{Live, Release, ReleaseBuilder, ReleaseKind, Selector};
use coord::store::{KeyRange, RangeOptions};
use coord::{Coord, CoordConfig};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use tokio::sync::watch;

use super::check::{excerpt, Check};
use super::history::{History, Op, OpKind, Outcome, Payload};

/// The prefix the workload releases.
pub const PREFIX: &str = "/nemesis/releases";

/// How many records each releaser's config center keeps: more than a run makes, so every
/// record can be checked.
pub const KEEP_RECORDS: usize = 100_000;

/// The released value: `value` names the operation that set it (`main-…` or `gray-…`).
#[derive(CoordConfig, Debug, Clone, PartialEq)]
#[coord(prefix = "/nemesis/releases")]
pub struct Flags {
    /// Who set it: `main-p{process}-{n}` for a release, `gray-p{process}-{n}` for a gray one.
    pub value: String,
    /// The releaser's operation number.
    pub n: u64,
}

/// The instance name of client `c`.
pub fn instance_name(client: usize) -> String {
    format!("c{client}")
}

/// The settings of the releases workload.
#[derive(Clone, Debug)]
pub struct ReleaseWorkload {
    /// The shortest and longest wait between two operations of a releaser.
    pub every: (Duration, Duration),
    /// How often each reader loads.
    pub load_every: Duration,
    /// A call that has not answered after this long is recorded as unknown and abandoned.
    pub hang: Duration,
}

impl Default for ReleaseWorkload {
    fn default() -> Self {
        ReleaseWorkload {
            every: (Duration::from_millis(100), Duration::from_millis(400)),
            load_every: Duration::from_millis(20),
            hang: Duration::from_secs(30),
        }
    }
}

/// One releaser: client `client`, which picks gray targets among `clients` clients.
#[derive(Clone, Debug)]
pub struct Releaser {
    /// Its number in the history.
    pub id: usize,
    /// Which client it is on.
    pub client: usize,
    /// How many clients there are (gray releases go to another one).
    pub clients: usize,
    /// Its client.
    pub coord: Coord,
    /// A client connected straight to the cluster, to read what a release left.
    pub observer: Coord,
}

/// What one operation is.
enum Step {
    Release(Flags),
    Gray(Flags, String),
    Promote(u64, String),
    Abort(u64),
    Rollback(u64),
}

impl ReleaseWorkload {
    /// Makes the first release (before the readers bind, which needs every field) through
    /// `coord`, recorded as `process`'s.
    ///
    /// # Errors
    ///
    /// What the release returns.
    pub async fn seed(
        &self,
        process: usize,
        coord: &Coord,
        history: &History,
    ) -> coord::Result<()> {
        let value = Flags {
            value: format!("main-p{process}-0"),
            n: 0,
        };
        let message = format!("p{process}-0");
        let pending = history.begin(process, OpKind::Release, step_payload(&message, &value));
        let builder = coord.config().release(&value).message(message);
        match builder.commit().await {
            Ok(release) => {
                pending.ok(|p| {
                    p.seq = Some(release.seq);
                    p.revision = Some(release.revision);
                });
                Ok(())
            }
            Err(e) => {
                pending.end(Outcome::of_write_error(&e), |p| {
                    p.error = Some(e.to_string())
                });
                Err(e)
            }
        }
    }

    /// The releaser: operates until `stop` turns true.
    pub async fn release(
        &self,
        releaser: Releaser,
        seed: u64,
        history: History,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed ^ (releaser.id as u64 + 1));
        let config = releaser.coord.config().with_release_history(KEEP_RECORDS);
        let mut mine: Vec<u64> = Vec::new();
        let mut gray: Option<(u64, String)> = None;
        let mut n = 0;
        while !*stop.borrow_and_update() {
            n += 1;
            let message = format!("p{}-{n}", releaser.id);
            let main = Flags {
                value: format!("main-p{}-{n}", releaser.id),
                n,
            };
            let roll: f64 = rng.random();
            let step = match &gray {
                Some((seq, value)) if roll < 0.4 => Step::Promote(*seq, value.clone()),
                Some((seq, _)) if roll < 0.7 => Step::Abort(*seq),
                _ if roll < 0.15 && !mine.is_empty() => {
                    Step::Rollback(mine[rng.random_range(0..mine.len())])
                }
                None if roll < 0.35 && releaser.clients > 1 => {
                    let others = releaser.clients - 1;
                    let target =
                        (releaser.client + 1 + rng.random_range(0..others)) % releaser.clients;
                    let value = Flags {
                        value: format!("gray-p{}-{n}", releaser.id),
                        n,
                    };
                    Step::Gray(value, instance_name(target))
                }
                _ => Step::Release(main),
            };
            let (kind, payload, builder): (OpKind, Payload, ReleaseBuilder) = match &step {
                Step::Release(value) => (
                    OpKind::Release,
                    step_payload(&message, value),
                    config.release(value),
                ),
                Step::Gray(value, target) => (
                    OpKind::GrayStart,
                    Payload {
                        found: Some(vec![target.clone()]),
                        ..step_payload(&message, value)
                    },
                    config
                        .release(value)
                        .to(Selector::default().instance(target.clone())),
                ),
                Step::Promote(seq, value) => (
                    OpKind::Promote,
                    Payload {
                        target: Some(*seq),
                        text: Some(value.clone()),
                        message: Some(message.clone()),
                        ..Payload::default()
                    },
                    config.promote(PREFIX, *seq),
                ),
                Step::Abort(seq) => (
                    OpKind::Abort,
                    Payload {
                        target: Some(*seq),
                        message: Some(message.clone()),
                        ..Payload::default()
                    },
                    config.abort(PREFIX, *seq),
                ),
                Step::Rollback(seq) => (
                    OpKind::Rollback,
                    Payload {
                        target: Some(*seq),
                        message: Some(message.clone()),
                        ..Payload::default()
                    },
                    config.rollback(PREFIX, *seq),
                ),
            };
            let pending = history.begin(releaser.id, kind, payload);
            let committed =
                tokio::time::timeout(self.hang, builder.message(message).commit()).await;
            match committed {
                Ok(Ok(release)) => {
                    let (seq, revision) = (release.seq, release.revision);
                    pending.ok(|p| {
                        p.seq = Some(seq);
                        p.revision = Some(revision);
                    });
                    match step {
                        Step::Release(_) | Step::Rollback(_) => mine.push(seq),
                        Step::Gray(value, _) => gray = Some((seq, value.value)),
                        Step::Promote(..) | Step::Abort(_) => gray = None,
                    }
                    if !matches!(kind, OpKind::GrayStart | OpKind::Abort) {
                        self.verify(&releaser, &release, &history).await;
                    }
                }
                Ok(Err(e)) => {
                    let outcome = Outcome::of_write_error(&e);
                    // A gray release that is gone (ended by someone's rollback) or may be:
                    // stop steering it.
                    if matches!(step, Step::Promote(..) | Step::Abort(_)) {
                        gray = None;
                    }
                    pending.end(outcome, |p| p.error = Some(e.to_string()));
                }
                Err(_) => {
                    if matches!(step, Step::Promote(..) | Step::Abort(_)) {
                        gray = None;
                    }
                    pending.end(Outcome::Unknown, |p| {
                        p.error = Some(format!("no answer within {:?}", self.hang));
                    });
                }
            }
            let (least, most) = self.every;
            tokio::time::sleep(rng.random_range(least..=most)).await;
        }
    }

    /// Reads the prefix at `release`'s revision through the observer and records it.
    async fn verify(&self, releaser: &Releaser, release: &Release, history: &History) {
        let pending = history.begin(
            releaser.id,
            OpKind::ReleaseRead,
            Payload {
                seq: Some(release.seq),
                revision: Some(release.revision),
                ..Payload::default()
            },
        );
        let read = releaser
            .observer
            .store()
            .range(
                &KeyRange::prefix(format!("{PREFIX}/")),
                RangeOptions::default().at_revision(release.revision),
            )
            .await;
        match read {
            Ok(response) => {
                let found = response
                    .kvs
                    .iter()
                    .map(|kv| {
                        let key = kv
                            .key
                            .strip_prefix(&format!("{PREFIX}/"))
                            .unwrap_or(&kv.key);
                        format!("{key}={}", String::from_utf8_lossy(&kv.value))
                    })
                    .collect();
                pending.ok(|p| p.found = Some(found));
            }
            // Compacted meanwhile, or the observer's member went away: nothing to compare.
            Err(e) => pending.failed(e),
        }
    }

    /// A reader on client `client`: loads `live` every [`load_every`](Self::load_every) until
    /// `stop` turns true.
    pub async fn read(
        &self,
        process: usize,
        client: usize,
        live: Live<Flags>,
        history: History,
        mut stop: watch::Receiver<bool>,
    ) {
        while !*stop.borrow_and_update() {
            let pending = history.begin(
                process,
                OpKind::ReleaseLoad,
                Payload {
                    client: Some(client),
                    ..Payload::default()
                },
            );
            let value = live.load_full();
            pending.ok(|p| p.text = Some(value.value.clone()));
            tokio::time::sleep(self.load_every).await;
        }
    }
}

fn step_payload(message: &str, value: &Flags) -> Payload {
    Payload {
        text: Some(value.value.clone()),
        message: Some(message.to_owned()),
        ..Payload::default()
    }
}

/// What the checker needs of one record of the history.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    /// Its number.
    pub seq: u64,
    /// Its message: the operation's, or the library's own for an abort a rollback made.
    pub message: Option<String>,
    /// An abort recorded by a rollback that ended a gray release.
    pub ended_by_rollback: bool,
    /// What it set on the prefix's own keys.
    pub values: BTreeMap<String, serde_json::Value>,
}

impl From<&Release> for Record {
    fn from(release: &Release) -> Self {
        let message = release.message.clone();
        Record {
            seq: release.seq,
            ended_by_rollback: matches!(release.kind, ReleaseKind::Abort { .. })
                && message
                    .as_deref()
                    .is_some_and(|m| m.starts_with("ended by the rollback")),
            message,
            values: release.values.clone(),
        }
    }
}

/// The kinds of operation that make a release.
const RELEASING: [OpKind; 5] = [
    OpKind::Release,
    OpKind::GrayStart,
    OpKind::Promote,
    OpKind::Abort,
    OpKind::Rollback,
];

/// Checks the releases workload's invariants (see the [module docs](self)) over `ops`, given
/// the prefix's whole history read at the end.
pub fn check(ops: &[Op], records: &[Record]) -> Vec<Check> {
    let mut contained = Check::new("no instance outside a gray selector loads its values");
    let mut recorded = Check::new("every acknowledged release is recorded once");
    let mut real = Check::new("every record is of a release that may have happened");
    let mut stored = Check::new("the store at a release's revision holds its record");

    let of = |kind: OpKind| ops.iter().filter(move |op| op.kind == kind);
    let grays: BTreeMap<&str, &Op> = of(OpKind::GrayStart)
        .filter(|op| op.outcome != Outcome::Failed)
        .filter_map(|op| Some((op.payload.text.as_deref()?, op)))
        .collect();
    for load in of(OpKind::ReleaseLoad) {
        let (Some(value), Some(client)) = (load.payload.text.as_deref(), load.payload.client)
        else {
            continue;
        };
        if !value.starts_with("gray-") {
            continue;
        }
        let gray = grays.get(value);
        let selected = gray
            .and_then(|op| op.payload.found.as_ref())
            .is_some_and(|picked| picked.contains(&instance_name(client)));
        let promoted = of(OpKind::Promote).any(|op| {
            op.outcome != Outcome::Failed
                && op.payload.text.as_deref() == Some(value)
                && op.start < load.end
        });
        contained.case(selected || promoted, || {
            format!(
                "c{client} loaded a gray value it was not picked for, before any promote:\n{}",
                excerpt(gray.copied().into_iter().chain([load]))
            )
        });
    }

    let mut by_message: BTreeMap<&str, Vec<&Record>> = BTreeMap::new();
    for record in records {
        if let Some(message) = record.message.as_deref() {
            by_message.entry(message).or_default().push(record);
        }
    }
    let releasing: Vec<&Op> = ops
        .iter()
        .filter(|op| RELEASING.contains(&op.kind))
        .collect();
    for op in releasing.iter().filter(|op| op.outcome == Outcome::Ok) {
        let message = op.payload.message.as_deref().unwrap_or_default();
        let found = by_message.get(message).map_or(&[][..], Vec::as_slice);
        recorded.case(
            found.len() == 1 && Some(found[0].seq) == op.payload.seq,
            || {
                format!(
                    "acknowledged as release {:?}, recorded {} times ({:?}):\n{}",
                    op.payload.seq,
                    found.len(),
                    found.iter().map(|r| r.seq).collect::<Vec<_>>(),
                    excerpt([*op])
                )
            },
        );
    }
    let ours: BTreeMap<&str, &Op> = releasing
        .iter()
        .filter_map(|op| Some((op.payload.message.as_deref()?, *op)))
        .collect();
    let by_seq: BTreeMap<u64, &Record> = records.iter().map(|r| (r.seq, r)).collect();
    for record in records {
        let message = record.message.as_deref().unwrap_or_default();
        // A rollback that ends a gray release records the abort first, in its own words, and
        // itself as the very next record: that record must be a rollback that may have
        // happened.
        let ended_by_rollback = record.ended_by_rollback
            && by_seq
                .get(&(record.seq + 1))
                .and_then(|next| ours.get(next.message.as_deref().unwrap_or_default()))
                .is_some_and(|op| op.kind == OpKind::Rollback && op.outcome != Outcome::Failed);
        let op = ours.get(message);
        let count = by_message.get(message).map_or(0, Vec::len);
        real.case(
            ended_by_rollback || (op.is_some_and(|op| op.outcome != Outcome::Failed) && count == 1),
            || {
                format!(
                    "release {} ({message:?}) recorded {count} times, of an operation that \
                     {}:\n{}",
                    record.seq,
                    if op.is_some() {
                        "failed"
                    } else {
                        "no releaser made"
                    },
                    excerpt(op.copied())
                )
            },
        );
    }

    for read in of(OpKind::ReleaseRead).filter(|op| op.outcome == Outcome::Ok) {
        let Some(record) = read.payload.seq.and_then(|seq| by_seq.get(&seq)) else {
            stored.case(false, || {
                format!("a verified release is not in history:\n{}", excerpt([read]))
            });
            continue;
        };
        let held: BTreeMap<&str, serde_json::Value> = read
            .payload
            .found
            .iter()
            .flatten()
            .filter_map(|pair| pair.split_once('='))
            .filter_map(|(key, value)| Some((key, serde_json::from_str(value).ok()?)))
            .collect();
        let set: BTreeSet<&str> = record.values.keys().map(String::as_str).collect();
        let differs: Vec<&str> = set
            .iter()
            .copied()
            .filter(|key| held.get(key) != record.values.get(*key))
            .collect();
        // A release that changed nothing (a rollback to the values there already) set nothing.
        stored.case(differs.is_empty(), || {
            format!(
                "release {} says it set {:?}, the store at its revision held {held:?} (differs \
                 at {differs:?}):\n{}",
                record.seq,
                record.values,
                excerpt([read])
            )
        });
    }
    vec![contained, recorded, real, stored]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(kind: OpKind, at: u64, outcome: Outcome, payload: Payload) -> Op {
        Op {
            process: 0,
            kind,
            start: Duration::from_millis(at),
            end: Duration::from_millis(at + 1),
            outcome,
            payload,
        }
    }

    fn made(kind: OpKind, at: u64, message: &str, seq: u64, text: &str) -> Op {
        op(
            kind,
            at,
            Outcome::Ok,
            Payload {
                message: Some(message.into()),
                seq: Some(seq),
                text: Some(text.into()),
                ..Payload::default()
            },
        )
    }

    fn load(at: u64, client: usize, value: &str) -> Op {
        op(
            OpKind::ReleaseLoad,
            at,
            Outcome::Ok,
            Payload {
                client: Some(client),
                text: Some(value.into()),
                ..Payload::default()
            },
        )
    }

    fn record(seq: u64, message: &str, value: &str) -> Record {
        let mut values = BTreeMap::new();
        if !value.is_empty() {
            values.insert("value".to_owned(), serde_json::Value::from(value));
            values.insert("n".to_owned(), serde_json::Value::from(seq));
        }
        Record {
            seq,
            message: Some(message.into()),
            ended_by_rollback: false,
            values,
        }
    }

    /// Release 1, then a gray release 2 to c1, which c1 loads, then its promote 3 after which
    /// c0 loads it too; release 1 verified against the store.
    fn clean() -> (Vec<Op>, Vec<Record>) {
        let mut gray = made(OpKind::GrayStart, 20, "p0-2", 2, "gray-p0-2");
        gray.payload.found = Some(vec!["c1".into()]);
        let mut promote = made(OpKind::Promote, 40, "p0-3", 3, "gray-p0-2");
        promote.payload.target = Some(2);
        let read = op(
            OpKind::ReleaseRead,
            12,
            Outcome::Ok,
            Payload {
                seq: Some(1),
                found: Some(vec!["n=1".into(), "value=\"main-p0-1\"".into()]),
                ..Payload::default()
            },
        );
        let ops = vec![
            made(OpKind::Release, 10, "p0-1", 1, "main-p0-1"),
            read,
            gray,
            load(30, 1, "gray-p0-2"),
            load(31, 0, "main-p0-1"),
            promote,
            load(50, 0, "gray-p0-2"),
        ];
        let records = vec![
            record(1, "p0-1", "main-p0-1"),
            record(2, "p0-2", ""),
            record(3, "p0-3", "gray-p0-2"),
        ];
        (ops, records)
    }

    fn violations(ops: &[Op], records: &[Record]) -> Vec<(&'static str, usize)> {
        crate::nemesis::check::broken(check(ops, records))
    }

    #[test]
    fn a_clean_history_passes_every_invariant() {
        let (ops, records) = clean();
        assert_eq!(violations(&ops, &records), vec![]);
        assert!(check(&ops, &records).iter().all(|c| c.checked > 0));
    }

    #[test]
    fn a_gray_value_loaded_outside_its_selector_before_a_promote_is_a_violation() {
        let (mut ops, records) = clean();
        ops.push(load(35, 2, "gray-p0-2"));
        assert_eq!(
            violations(&ops, &records),
            vec![("no instance outside a gray selector loads its values", 1)]
        );
    }

    #[test]
    fn an_acknowledged_release_missing_or_recorded_twice_is_a_violation() {
        let (ops, mut records) = clean();
        records.remove(0);
        assert_eq!(
            violations(&ops, &records),
            vec![
                ("every acknowledged release is recorded once", 1),
                ("the store at a release's revision holds its record", 1),
            ]
        );
        let (ops, mut records) = clean();
        records.push(record(4, "p0-1", "main-p0-1"));
        assert_eq!(
            violations(&ops, &records),
            vec![
                ("every acknowledged release is recorded once", 1),
                ("every record is of a release that may have happened", 2),
            ]
        );
    }

    #[test]
    fn a_record_of_a_failed_operation_is_a_violation_and_of_an_unknown_one_is_not() {
        // Failed: it must not be in history.
        let (mut ops, mut records) = clean();
        let mut failed = made(OpKind::Release, 60, "p0-4", 0, "main-p0-4");
        failed.outcome = Outcome::Failed;
        ops.push(failed);
        records.push(record(4, "p0-4", "main-p0-4"));
        assert_eq!(
            violations(&ops, &records),
            vec![("every record is of a release that may have happened", 1)]
        );
        // Unknown: it may be.
        let (mut ops, mut records) = clean();
        let mut unknown = made(OpKind::Release, 60, "p0-4", 0, "main-p0-4");
        unknown.outcome = Outcome::Unknown;
        ops.push(unknown);
        records.push(record(4, "p0-4", "main-p0-4"));
        assert_eq!(violations(&ops, &records), vec![]);
    }

    #[test]
    fn a_store_that_differs_from_the_record_at_its_revision_is_a_violation() {
        let (mut ops, records) = clean();
        ops[1].payload.found = Some(vec!["n=1".into(), "value=\"main-p9-9\"".into()]);
        assert_eq!(
            violations(&ops, &records),
            vec![("the store at a release's revision holds its record", 1)]
        );
    }

    #[test]
    fn an_abort_said_to_be_made_by_a_rollback_must_be_followed_by_one() {
        let (mut ops, mut records) = clean();
        let abort = Record {
            seq: 4,
            message: Some("ended by the rollback to 1".into()),
            ended_by_rollback: true,
            values: BTreeMap::new(),
        };
        // No rollback after it: a record of nothing that happened.
        records.push(abort.clone());
        assert_eq!(
            violations(&ops, &records),
            vec![("every record is of a release that may have happened", 1)]
        );
        // Followed by the rollback that made it: fine.
        let mut rollback = made(OpKind::Rollback, 60, "p0-4", 5, "");
        rollback.payload.target = Some(1);
        ops.push(rollback);
        records.push(record(5, "p0-4", "main-p0-1"));
        assert_eq!(violations(&ops, &records), vec![]);
    }
}
