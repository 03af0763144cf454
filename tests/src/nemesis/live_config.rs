//! The live-config workload and its checker.
//!
//! **Workload.** One writer publishes [`Split`] values (a sequence number and three fields
//! that sum to 100, each field its own key) with `publish`, one transaction per value, through
//! each client in turn, so its writes go through every client's faults. On every client a
//! reader `load()`s the client's `Live<Split>` every few milliseconds and records what it saw.
//!
//! **Checker.**
//! - every `load()` is a value that was published, whole: the fields sum to 100 and are
//!   exactly the ones published with its sequence number (a `Live` that applied half of a
//!   transaction, or mixed two, fails this);
//! - a `Live` never goes back: per reader, sequence numbers never decrease;
//! - the value in etcd at the end is the newest acknowledged publish or a later one (a
//!   publish whose answer was lost, delivered late, must not write over a newer one);
//! - during the run, a `Live` shows each acknowledged publish within
//!   [`ConfigWorkload::staleness_bound`] of its acknowledgement, or of the end of the last
//!   fault that could stall that client's watches (see
//!   [`Stalls`](super::history::Stalls)): the clients run without
//!   the periodic resync, so only the watch and its resume can deliver in time;
//! - every `Live` shows the value in etcd within the bound after the final heal (the runner
//!   measures this, see [`converged`]).

use std::collections::BTreeMap;
use std::time::Duration;

use coord::config::Live;
use coord::store::{KeyRange, RangeOptions};
use coord::{Coord, CoordConfig};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use tokio::sync::watch;

use super::check::{excerpt, Check};
use super::history::{FaultRecord, History, Op, OpKind, Outcome, Payload};

/// The prefix the workload's config lives under.
pub const PREFIX: &str = "/nemesis/config";

/// What the fields of every published value sum to.
pub const TOTAL: u64 = 100;

/// The published value: `a + b + c == TOTAL`, each field under its own key.
#[derive(CoordConfig, Debug, Clone, PartialEq)]
#[coord(prefix = "/nemesis/config")]
pub struct Split {
    /// The writer's sequence number: which publish this is.
    pub seq: u64,
    /// The first share.
    pub a: u64,
    /// The second share.
    pub b: u64,
    /// The third share.
    pub c: u64,
}

impl Split {
    /// Value number `seq`, split at random.
    pub fn random(seq: u64, rng: &mut impl Rng) -> Split {
        let a = rng.random_range(0..=TOTAL);
        let b = rng.random_range(0..=TOTAL - a);
        Split {
            seq,
            a,
            b,
            c: TOTAL - a - b,
        }
    }

    fn fields(&self) -> [u64; 3] {
        [self.a, self.b, self.c]
    }
}

/// The settings of the live-config workload.
#[derive(Clone, Debug)]
pub struct ConfigWorkload {
    /// The shortest and longest wait between two publishes.
    pub publish_every: (Duration, Duration),
    /// How often each reader loads.
    pub load_every: Duration,
    /// How long a `Live` may take to show an acknowledged publish, counted from the later of
    /// the acknowledgement and the end of the faults that stall its client's watches. It
    /// covers the watch's reconnect backoff after a heal and a keep-alive noticing a silent
    /// connection.
    pub staleness_bound: Duration,
    /// A call that has not answered after this long is recorded as unknown and abandoned.
    pub hang: Duration,
}

impl Default for ConfigWorkload {
    fn default() -> Self {
        ConfigWorkload {
            publish_every: (Duration::from_millis(100), Duration::from_millis(300)),
            load_every: Duration::from_millis(20),
            staleness_bound: Duration::from_secs(10),
            hang: Duration::from_secs(30),
        }
    }
}

impl ConfigWorkload {
    /// Publishes value 0 (before the readers bind, which needs every field) through `coord`,
    /// recorded as `process`'s first publish.
    ///
    /// # Errors
    ///
    /// What `publish` returns.
    pub async fn seed(
        &self,
        process: usize,
        coord: &Coord,
        seed: u64,
        history: &History,
    ) -> coord::Result<()> {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let value = Split::random(0, &mut rng);
        let pending = history.begin(process, OpKind::Publish, published(&value));
        match coord.config().publish(&value).await {
            Ok(revision) => {
                pending.ok(|p| p.revision = Some(revision));
                Ok(())
            }
            Err(e) => {
                pending.end(Outcome::of_write_error(&e), |p| {
                    p.error = Some(e.to_string());
                });
                Err(e)
            }
        }
    }

    /// The writer: publishes values 1, 2, … through `clients` in turn until `stop` turns
    /// true.
    pub async fn write(
        &self,
        process: usize,
        clients: Vec<Coord>,
        seed: u64,
        history: History,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed ^ (process as u64 + 1));
        let mut seq = 0;
        while !*stop.borrow_and_update() {
            seq += 1;
            let value = Split::random(seq, &mut rng);
            let coord = &clients[seq as usize % clients.len()];
            let pending = history.begin(process, OpKind::Publish, published(&value));
            match tokio::time::timeout(self.hang, coord.config().publish(&value)).await {
                Ok(Ok(revision)) => pending.ok(|p| p.revision = Some(revision)),
                Ok(Err(e)) => pending.end(Outcome::of_write_error(&e), |p| {
                    p.error = Some(e.to_string());
                }),
                Err(_) => pending.end(Outcome::Unknown, |p| {
                    p.error = Some(format!("no answer within {:?}", self.hang));
                }),
            }
            let (least, most) = self.publish_every;
            tokio::time::sleep(rng.random_range(least..=most)).await;
        }
    }

    /// A reader on client `client`: loads `live` every [`load_every`](Self::load_every) until
    /// `stop` turns true.
    pub async fn read(
        &self,
        process: usize,
        client: usize,
        live: Live<Split>,
        history: History,
        mut stop: watch::Receiver<bool>,
    ) {
        while !*stop.borrow_and_update() {
            let on_client = Payload {
                client: Some(client),
                ..Payload::default()
            };
            let pending = history.begin(process, OpKind::Load, on_client);
            let revision = live.revision();
            let value = live.load_full();
            pending.ok(|p| {
                p.value = Some(value.seq);
                p.split = Some(value.fields());
                p.revision = Some(revision);
            });
            tokio::time::sleep(self.load_every).await;
        }
    }
}

fn published(value: &Split) -> Payload {
    Payload {
        value: Some(value.seq),
        split: Some(value.fields()),
        ..Payload::default()
    }
}

/// The value stored in etcd now, read at one revision through `coord`.
///
/// # Errors
///
/// The read's error, or a description of a key that is missing or not a number.
pub async fn stored(coord: &Coord) -> Result<Split, String> {
    let response = coord
        .store()
        .range(
            &KeyRange::prefix(format!("{PREFIX}/")),
            RangeOptions::default(),
        )
        .await
        .map_err(|e| e.to_string())?;
    let field = |name: &str| {
        let key = format!("{PREFIX}/{name}");
        let kv = response
            .kvs
            .iter()
            .find(|kv| kv.key == key)
            .ok_or_else(|| format!("{key} is missing"))?;
        serde_json::from_slice::<u64>(&kv.value).map_err(|e| format!("{key}: {e}"))
    };
    Ok(Split {
        seq: field("seq")?,
        a: field("a")?,
        b: field("b")?,
        c: field("c")?,
    })
}

/// Whether every `Live` in `lives` shows `value`.
pub fn converged(lives: &[Live<Split>], value: &Split) -> bool {
    lives.iter().all(|live| *live.load_full() == *value)
}

/// Checks the live-config workload's invariants (see the [module docs](self)) over `ops`,
/// given the value stored at the end.
pub fn check(ops: &[Op], last: &Split) -> Vec<Check> {
    let mut whole = Check::new("every load() is a whole published value (sum = 100)");
    let mut forward = Check::new("a Live never goes back to an older value");
    let mut newest = Check::new("the stored value is the newest acknowledged publish");

    // Every value attempted, acknowledged or not: a load may see an unknown one.
    let publishes: BTreeMap<u64, &Op> = ops
        .iter()
        .filter(|op| op.kind == OpKind::Publish)
        .filter_map(|op| Some((op.payload.value?, op)))
        .collect();
    let mut by_reader: BTreeMap<usize, Vec<&Op>> = BTreeMap::new();
    for load in ops.iter().filter(|op| op.kind == OpKind::Load) {
        by_reader.entry(load.process).or_default().push(load);
        let published = load.payload.value.and_then(|seq| publishes.get(&seq));
        let sum: u64 = load.payload.split.map_or(0, |s| s.iter().sum());
        whole.case(
            sum == TOTAL && published.is_some_and(|p| p.payload.split == load.payload.split),
            || {
                format!(
                    "a load saw a value never published whole:\n{}",
                    excerpt(published.copied().into_iter().chain([load]))
                )
            },
        );
    }
    for loads in by_reader.values_mut() {
        loads.sort_by_key(|op| op.start);
        for pair in loads.windows(2) {
            forward.case(pair[1].payload.value >= pair[0].payload.value, || {
                format!("a Live went back:\n{}", excerpt([pair[0], pair[1]]))
            });
        }
    }

    let acknowledged = publishes.values().rfind(|op| op.outcome == Outcome::Ok);
    let stored_published = publishes
        .get(&last.seq)
        .is_some_and(|op| op.payload.split == Some(last.fields()));
    newest.case(
        stored_published && acknowledged.is_none_or(|op| op.payload.value <= Some(last.seq)),
        || {
            format!(
                "etcd holds {last:?} at the end; the newest acknowledged publish was:\n{}",
                excerpt(acknowledged.copied())
            )
        },
    );
    vec![whole, forward, newest]
}

/// Checks that every reader's `Live` showed each acknowledged publish within `bound` of the
/// later of its acknowledgement and the end of the last fault in `faults` that could stall
/// the reader's client (see the [module docs](self)). A publish whose deadline falls after
/// the reader's last load is not judged here: the convergence after the final heal is.
pub fn staleness(ops: &[Op], faults: &[FaultRecord], bound: Duration) -> Check {
    let mut check = Check::new("a Live shows each acknowledged publish within the bound");
    let acknowledged: Vec<&Op> = ops
        .iter()
        .filter(|op| op.kind == OpKind::Publish && op.outcome == Outcome::Ok)
        .collect();
    let mut by_client: BTreeMap<usize, Vec<&Op>> = BTreeMap::new();
    for load in ops.iter().filter(|op| op.kind == OpKind::Load) {
        if let Some(client) = load.payload.client {
            by_client.entry(client).or_default().push(load);
        }
    }
    for (client, loads) in &mut by_client {
        loads.sort_by_key(|op| op.start);
        let Some(last) = loads.last().map(|op| op.start) else {
            continue;
        };
        for publish in &acknowledged {
            let deadline = deadline(publish.end, *client, faults, bound);
            if deadline > last {
                continue;
            }
            let first_after = loads[loads.partition_point(|op| op.start < deadline)];
            check.case(first_after.payload.value >= publish.payload.value, || {
                format!(
                    "c{client}'s Live had not shown a publish {:.3} s after the deadline \
                     (bound {bound:?}, stalls counted):\n{}",
                    (first_after.start.saturating_sub(publish.end)).as_secs_f64(),
                    excerpt([*publish, first_after])
                )
            });
        }
    }
    check
}

/// `bound` after `acknowledged`, moved to `bound` after the heal of every fault that could
/// stall client `client` and overlaps the wait.
fn deadline(
    acknowledged: Duration,
    client: usize,
    faults: &[FaultRecord],
    bound: Duration,
) -> Duration {
    let after = |at: Duration| at.checked_add(bound).unwrap_or(Duration::MAX);
    let mut deadline = after(acknowledged);
    loop {
        let later = faults
            .iter()
            .filter(|f| f.stalls.client(client) && f.injected <= deadline)
            .map(|f| after(f.healed.unwrap_or(Duration::MAX)))
            .filter(|&end| end > deadline)
            .max();
        match later {
            Some(end) => deadline = end,
            None => return deadline,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nemesis::history::Stalls;

    fn op(process: usize, kind: OpKind, at: u64, outcome: Outcome, value: &Split) -> Op {
        Op {
            process,
            kind,
            start: Duration::from_millis(at),
            end: Duration::from_millis(at + 1),
            outcome,
            payload: published(value),
        }
    }

    fn split(seq: u64, a: u64, b: u64) -> Split {
        Split {
            seq,
            a,
            b,
            c: TOTAL - a - b,
        }
    }

    fn violations(ops: &[Op], last: &Split) -> Vec<(&'static str, usize)> {
        crate::nemesis::check::broken(check(ops, last))
    }

    /// Values 0 and 1 acknowledged, 2 unknown; a reader sees 0, 1, 2.
    fn clean() -> Vec<Op> {
        vec![
            op(0, OpKind::Publish, 0, Outcome::Ok, &split(0, 50, 50)),
            op(1, OpKind::Load, 1, Outcome::Ok, &split(0, 50, 50)),
            op(0, OpKind::Publish, 2, Outcome::Ok, &split(1, 10, 20)),
            op(0, OpKind::Publish, 4, Outcome::Unknown, &split(2, 30, 30)),
            op(1, OpKind::Load, 5, Outcome::Ok, &split(1, 10, 20)),
            op(1, OpKind::Load, 6, Outcome::Ok, &split(2, 30, 30)),
        ]
    }

    #[test]
    fn a_clean_history_passes_every_invariant() {
        assert_eq!(violations(&clean(), &split(2, 30, 30)), vec![]);
        // The unknown publish may also not have applied.
        assert_eq!(violations(&clean()[..5], &split(1, 10, 20)), vec![]);
        assert!(check(&clean(), &split(2, 30, 30))
            .iter()
            .all(|c| c.checked > 0));
    }

    #[test]
    fn a_torn_load_is_a_violation() {
        let mut ops = clean();
        // Value 1's `a` with value 2's other fields: sums to 100 all the same.
        let mut torn = op(2, OpKind::Load, 7, Outcome::Ok, &split(2, 30, 30));
        torn.payload.split = Some([10, 30, 60]);
        ops.push(torn);
        // Half of a publish: the sum is off.
        let mut half = op(2, OpKind::Load, 8, Outcome::Ok, &split(2, 30, 30));
        half.payload.split = Some([10, 30, 40]);
        ops.push(half);
        assert_eq!(
            violations(&ops, &split(2, 30, 30)),
            vec![("every load() is a whole published value (sum = 100)", 2)]
        );
    }

    #[test]
    fn a_live_going_back_is_a_violation() {
        let mut ops = clean();
        ops.push(op(1, OpKind::Load, 9, Outcome::Ok, &split(1, 10, 20)));
        assert_eq!(
            violations(&ops, &split(2, 30, 30)),
            vec![("a Live never goes back to an older value", 1)]
        );
    }

    #[test]
    fn an_older_value_stored_at_the_end_is_a_violation() {
        // A late publish of value 0 overwrote the acknowledged value 1.
        assert_eq!(
            violations(&clean()[..5], &split(0, 50, 50)),
            vec![("the stored value is the newest acknowledged publish", 1)]
        );
    }

    /// A reader on client 1 that loads every 100 ms from 0 to 20 s, seeing value 0 until
    /// `caught_up_at` (ms) and value 1 from then on; value 1 is acknowledged at 1 s.
    fn lagging(caught_up_at: u64) -> Vec<Op> {
        let mut ops = vec![op(0, OpKind::Publish, 999, Outcome::Ok, &split(1, 10, 20))];
        for at in (0..20_000).step_by(100) {
            let seen = if at < caught_up_at {
                split(0, 50, 50)
            } else {
                split(1, 10, 20)
            };
            let mut load = op(1, OpKind::Load, at, Outcome::Ok, &seen);
            load.payload.client = Some(1);
            ops.push(load);
        }
        ops
    }

    fn stall(stalls: Stalls, from_ms: u64, to_ms: u64) -> FaultRecord {
        FaultRecord {
            kind: "partition-all",
            description: "test".into(),
            stalls,
            injected: Duration::from_millis(from_ms),
            healed: Some(Duration::from_millis(to_ms)),
            error: None,
        }
    }

    const BOUND: Duration = Duration::from_secs(3);

    fn stale(ops: &[Op], faults: &[FaultRecord]) -> usize {
        staleness(ops, faults, BOUND).violations.len()
    }

    #[test]
    fn a_live_that_shows_a_publish_within_the_bound_passes() {
        let check = staleness(&lagging(1_100), &[], BOUND);
        assert_eq!(check.checked, 1);
        assert!(check.violations.is_empty(), "{:?}", check.violations);
    }

    #[test]
    fn a_live_behind_for_longer_than_the_bound_outside_stalls_is_a_violation() {
        // Acknowledged at 1 s, shown at 5 s: 4 s late with nothing in the way.
        assert_eq!(stale(&lagging(5_000), &[]), 1);
        // A fault that stalls another client, or one that stalls nobody, is no excuse.
        assert_eq!(
            stale(&lagging(5_000), &[stall(Stalls::Client(0), 500, 4_000)]),
            1
        );
        assert_eq!(
            stale(&lagging(5_000), &[stall(Stalls::Nobody, 500, 4_000)]),
            1
        );
        // A stall of this client that ended long before the publish is none either.
        assert_eq!(
            stale(&lagging(5_000), &[stall(Stalls::Client(1), 0, 100)]),
            1
        );
    }

    #[test]
    fn a_stall_of_the_client_moves_the_deadline_to_the_bound_after_its_heal() {
        // Stalled from 0.5 s to 4 s: the Live has until 7 s.
        let this_client = [stall(Stalls::Client(1), 500, 4_000)];
        assert_eq!(stale(&lagging(6_500), &this_client), 0);
        assert_eq!(stale(&lagging(7_500), &this_client), 1);
        assert_eq!(
            stale(&lagging(6_500), &[stall(Stalls::Everyone, 500, 4_000)]),
            0
        );
        // Two stalls in a row, the second before the first's deadline: 3 s after the second.
        let chained = [
            stall(Stalls::Client(1), 500, 4_000),
            stall(Stalls::Everyone, 6_000, 9_000),
        ];
        assert_eq!(stale(&lagging(11_500), &chained), 0);
        assert_eq!(stale(&lagging(12_500), &chained), 1);
    }

    #[test]
    fn a_deadline_after_the_last_load_is_left_to_the_final_convergence() {
        // Stalled until the run's end: nothing to judge during the run.
        let check = staleness(
            &lagging(30_000),
            &[stall(Stalls::Client(1), 500, 19_000)],
            BOUND,
        );
        assert_eq!(check.checked, 0);
    }
}
