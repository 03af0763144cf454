//! The IDs workload and its checker.
//!
//! **Workload.** Each process has its own [`IdAllocator`] (its own lease) on one client and
//! loops: acquire an ID of a small space (fewer IDs than processes, so IDs pass from holder to
//! holder all the time), then a few times pause and write the ID's marker key with a
//! transaction fenced by the ID ([`IdGuard::txn`]), then release. Every marker written is
//! unique (`{token}:{n}`), so the final value names the write that put it there. As in the
//! locks workload, a holder gives its ID up after a write whose outcome is unknown, and a
//! refused fenced write (which proves the ID lost) is followed by a check that `lost()`
//! reports it.
//!
//! **What the fence guarantees.** The fence compares the ID key's create revision with the
//! holder's token. Each claim of an ID creates its key anew, so each holder's tenure is one
//! incarnation of the key, and incarnations follow each other in revision order without
//! overlap. A fenced write applies only at a revision inside its holder's incarnation. So, in
//! the order etcd applied them, the successful writes of one ID come in runs, one per holder,
//! with tokens that only go up: a write of holder B between two writes of holder A can only
//! be if the fence let a write through outside its holder's tenure. This holds whether or not
//! A's lease was lost in between (then A's second write must fail), and is exactly what the
//! checker checks, on the store revisions the write answers carry rather than on wall-clock
//! time, which would need A's tenure to be known to the client.
//!
//! **Checker.**
//! - per ID, in applied order, successful fenced writes carry tokens that never decrease
//!   (so no other holder's write comes between two writes of one holder), and each applied
//!   after its holder's claim (revision > token);
//! - each marker's final value is its ID's last applied write, or a write whose outcome is
//!   unknown (it may have applied last);
//! - every ID loss a refused write proved was reported by `lost()`.

use std::collections::BTreeMap;
use std::time::Duration;

use coord::store::{Txn, TxnOp};
use coord::{Coord, IdAllocator, IdGuard};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::check::{last_write_stored, losses_reported, tenures, Check};
use super::history::{Fenced, History, Op, OpKind, Outcome, Payload};
use super::strike::Holding;

/// Why a fenced marker write failed when its fence refused it.
pub const REFUSED: &str = "fence refused: the ID key is gone or claimed anew";

/// The service whose IDs the workload allocates.
pub const SERVICE: &str = "nemesis";

/// The settings of the IDs workload.
#[derive(Clone, Debug)]
pub struct IdWorkload {
    /// Processes per client (each with its own allocator and lease).
    pub holders_per_client: usize,
    /// How many IDs there are (`0..max_id`): fewer than the processes, so they contend.
    pub max_id: u32,
    /// The lease TTL of each allocator.
    pub ttl: Duration,
    /// How many marker writes a holder makes before it releases its ID.
    pub writes_per_hold: usize,
    /// The longest pause before each write.
    pub max_pause: Duration,
    /// How long `lost()` may take to report a loss a refused write proved.
    pub lost_bound: Duration,
    /// A call that has not answered after this long is recorded as unknown and abandoned.
    pub hang: Duration,
    /// Whether marker writes are fenced by the ID. Off only to show the checker catches what
    /// fences prevent: the runner's unfenced switch.
    pub fenced: bool,
}

impl Default for IdWorkload {
    fn default() -> Self {
        IdWorkload {
            holders_per_client: 2,
            max_id: 3,
            // etcd's minimum, as for the locks: long faults outlast it, short ones do not.
            ttl: Duration::from_secs(2),
            writes_per_hold: 3,
            max_pause: Duration::from_millis(300),
            lost_bound: Duration::from_secs(15),
            hang: Duration::from_secs(30),
            fenced: true,
        }
    }
}

/// The marker key of ID `id`.
pub fn marker_key(id: u32) -> String {
    format!("/nemesis/markers/{id}")
}

/// One process of the workload.
#[derive(Clone, Debug)]
pub struct IdProcess {
    /// Its number in the history.
    pub id: usize,
    /// Its client.
    pub coord: Coord,
    /// Where it counts itself while it holds, if a strike waits for it.
    pub holding: Option<Holding>,
}

impl IdWorkload {
    /// Runs `process` until `stop` turns true, then releases what it holds. Returns the
    /// `id-lost-reported` checks still waiting; the caller awaits them before checking.
    pub async fn run(
        &self,
        process: IdProcess,
        seed: u64,
        history: History,
        mut stop: watch::Receiver<bool>,
    ) -> Vec<JoinHandle<()>> {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed ^ (process.id as u64 + 1));
        let mut lost_checks = Vec::new();
        let mut allocator = None;
        while !*stop.borrow_and_update() {
            let ids = match &allocator {
                Some(ids) => ids,
                // Granting the allocator's lease fails while the client is cut off; retry.
                None => match process
                    .coord
                    .ids_with_ttl(SERVICE, self.max_id, self.ttl)
                    .await
                {
                    Ok(ids) => allocator.insert(ids),
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let guard = match self.acquire(&process, ids, &history).await {
                Acquired::Held(guard) => guard,
                Acquired::Not(outcome) => {
                    if outcome == Outcome::Unknown {
                        // A claim etcd applied whose answer was lost stays taken on the
                        // allocator's lease for as long as it lives (see `acquire`); with
                        // a few IDs that would starve everyone, so let the lease go.
                        allocator = None;
                    }
                    // Every ID taken, or the client cut off: let the holders move on.
                    let wait = rng.random_range(100..=300);
                    tokio::time::sleep(Duration::from_millis(wait)).await;
                    continue;
                }
            };
            let holding = process.holding.as_ref().map(Holding::enter);
            let held = self.hold(&process, &guard, &history, &mut rng, &stop).await;
            drop(holding);
            match held {
                Held::Refused => lost_checks.push(self.check_lost(&process, guard, &history)),
                Held::Done => self.release(&process, guard, &history).await,
            }
        }
        lost_checks
    }

    async fn acquire(&self, process: &IdProcess, ids: &IdAllocator, history: &History) -> Acquired {
        let pending = history.begin(process.id, OpKind::IdAcquire, Payload::default());
        match tokio::time::timeout(self.hang, ids.acquire()).await {
            Ok(Ok(guard)) => {
                let (id, token) = (guard.id(), guard.fencing_token());
                pending.ok(|p| {
                    p.id = Some(id);
                    p.token = Some(token);
                });
                Acquired::Held(guard)
            }
            Ok(Err(e)) => {
                let outcome = match e {
                    coord::Error::NoIdAvailable { .. } => Outcome::Failed,
                    _ => Outcome::of_write_error(&e),
                };
                pending.end(outcome, |p| p.error = Some(e.to_string()));
                Acquired::Not(outcome)
            }
            Err(_) => {
                pending.end(Outcome::Unknown, |p| {
                    p.error = Some(format!("no answer within {:?}", self.hang));
                });
                Acquired::Not(Outcome::Unknown)
            }
        }
    }

    async fn hold(
        &self,
        process: &IdProcess,
        guard: &IdGuard,
        history: &History,
        rng: &mut Xoshiro256PlusPlus,
        stop: &watch::Receiver<bool>,
    ) -> Held {
        let held = held(guard);
        let marker = marker_key(guard.id());
        for n in 0..self.writes_per_hold {
            if *stop.borrow() {
                break;
            }
            let pause = rng.random_range(Duration::ZERO..=self.max_pause);
            tokio::time::sleep(pause).await;
            let text = format!("{}:{n}", guard.fencing_token());
            let write = history.begin(
                process.id,
                OpKind::IdWrite,
                Payload {
                    text: Some(text.clone()),
                    ..held.clone()
                },
            );
            let txn = Txn::new().and_then([TxnOp::put(marker.as_str(), text)]);
            let sent = async {
                if self.fenced {
                    guard.txn(txn).await
                } else {
                    process.coord.store().txn(txn).await
                }
            };
            match write.fenced_txn(self.hang, REFUSED, sent).await {
                Fenced::Applied => {}
                Fenced::Refused => return Held::Refused,
                Fenced::Stopped => break,
            }
        }
        Held::Done
    }

    /// Waits (in the background) for `guard.lost()` after a refused write proved the loss.
    fn check_lost(&self, process: &IdProcess, guard: IdGuard, history: &History) -> JoinHandle<()> {
        let pending = history.begin(process.id, OpKind::IdLostReported, held(&guard));
        pending.reported_lost(self.lost_bound, async move { guard.lost().await })
    }

    async fn release(&self, process: &IdProcess, guard: IdGuard, history: &History) {
        let pending = history.begin(process.id, OpKind::IdRelease, held(&guard));
        pending.released(self.hang, guard.release()).await;
    }
}

fn held(guard: &IdGuard) -> Payload {
    Payload {
        id: Some(guard.id()),
        token: Some(guard.fencing_token()),
        ..Payload::default()
    }
}

/// How an acquire ended.
enum Acquired {
    Held(IdGuard),
    /// No ID: `Failed` (every ID taken, or refused) or `Unknown` (a claim may have applied).
    Not(Outcome),
}

/// How a hold ended.
enum Held {
    /// Every write was made, or one failed without proving the ID lost.
    Done,
    /// A fenced write was refused: the ID is lost.
    Refused,
}

/// Checks the IDs workload's invariants (see the [module docs](self)) over `ops`, given each
/// marker's final value (`finals[id]`, `None` if never written).
pub fn check(ops: &[Op], finals: &[Option<String>]) -> Vec<Check> {
    let mut tenures_check = Check::new("ID writes of two holders never interleave");
    let mut last = Check::new("each marker holds its ID's last applied write");

    let writes = |outcome| {
        ops.iter()
            .filter(move |op| op.kind == OpKind::IdWrite && op.outcome == outcome)
    };
    let mut applied: BTreeMap<u32, Vec<&Op>> = BTreeMap::new();
    for op in writes(Outcome::Ok) {
        if let Some(id) = op.payload.id {
            applied.entry(id).or_default().push(op);
        }
    }
    for (id, writes) in &mut applied {
        tenures(&mut tenures_check, &format!("ID {id}"), writes);
    }

    for (id, stored) in finals.iter().enumerate() {
        let id = u32::try_from(id).unwrap_or(u32::MAX);
        let newest = applied.get(&id).and_then(|writes| writes.last()).copied();
        last_write_stored(
            &mut last,
            &format!("ID {id}'s marker"),
            stored.as_deref(),
            newest,
            writes(Outcome::Unknown),
            |op, stored| op.payload.id == Some(id) && op.payload.text.as_deref() == Some(stored),
        );
    }

    let losses = losses_reported(
        ops,
        OpKind::IdLostReported,
        "every ID loss is reported by lost()",
        "ID",
    );
    vec![tenures_check, last, losses]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(process: usize, outcome: Outcome, token: i64, n: u32, revision: i64) -> Op {
        Op {
            process,
            kind: OpKind::IdWrite,
            start: Duration::from_millis(revision as u64),
            end: Duration::from_millis(revision as u64 + 1),
            outcome,
            payload: Payload {
                id: Some(0),
                token: Some(token),
                text: Some(format!("{token}:{n}")),
                revision: Some(revision),
                ..Payload::default()
            },
        }
    }

    fn violations(ops: &[Op], finals: &[Option<String>]) -> Vec<(&'static str, usize)> {
        crate::nemesis::check::broken(check(ops, finals))
    }

    /// Holder 10 writes twice, then holder 20 (who claimed the ID after it) writes once.
    fn clean() -> Vec<Op> {
        vec![
            write(0, Outcome::Ok, 10, 0, 11),
            write(0, Outcome::Ok, 10, 1, 12),
            write(0, Outcome::Unknown, 10, 2, 0),
            write(1, Outcome::Ok, 20, 0, 21),
        ]
    }

    #[test]
    fn a_clean_history_passes_every_invariant() {
        assert_eq!(violations(&clean(), &[Some("20:0".into())]), vec![]);
        let checks = check(&clean(), &[Some("20:0".into())]);
        assert!(checks
            .iter()
            .all(|c| c.checked > 0 || c.name.contains("lost()")));
    }

    #[test]
    fn another_holders_write_between_two_of_one_holder_is_a_violation() {
        let mut ops = clean();
        // Holder 10 kept writing after holder 20's write applied: the fence let it through.
        ops.push(write(0, Outcome::Ok, 10, 3, 22));
        assert_eq!(
            violations(&ops, &[Some("10:3".into())]),
            vec![("ID writes of two holders never interleave", 1)]
        );
    }

    #[test]
    fn a_write_before_its_holders_claim_is_a_violation() {
        let ops = vec![write(1, Outcome::Ok, 20, 0, 15)];
        assert_eq!(
            violations(&ops, &[Some("20:0".into())]),
            vec![("ID writes of two holders never interleave", 1)]
        );
    }

    #[test]
    fn a_marker_that_is_not_the_last_write_is_a_violation() {
        // The first holder's acknowledged write is stored although the second one's applied
        // after it; a missing marker is as wrong.
        assert_eq!(
            violations(&clean(), &[Some("10:1".into())]),
            vec![("each marker holds its ID's last applied write", 1)]
        );
        assert_eq!(
            violations(&clean(), &[None]),
            vec![("each marker holds its ID's last applied write", 1)]
        );
    }

    #[test]
    fn a_stale_holders_unknown_write_stored_last_is_a_violation() {
        // Holder 10's write of unknown outcome can only have applied inside its tenure, which
        // ended before holder 20's acknowledged write: stored last, it slipped past the fence.
        assert_eq!(
            violations(&clean(), &[Some("10:2".into())]),
            vec![("each marker holds its ID's last applied write", 1)]
        );
        // The newest holder's own unknown write may have applied after its acknowledged one.
        let mut ops = clean();
        ops.push(write(1, Outcome::Unknown, 20, 1, 0));
        assert_eq!(violations(&ops, &[Some("20:1".into())]), vec![]);
        // With nothing acknowledged, any unknown write may be the one stored.
        let unknown_only = vec![write(0, Outcome::Unknown, 10, 0, 0)];
        assert_eq!(violations(&unknown_only, &[Some("10:0".into())]), vec![]);
    }

    #[test]
    fn an_unreported_loss_is_a_violation() {
        let mut ops = clean();
        let mut lost = write(1, Outcome::Failed, 20, 0, 0);
        lost.kind = OpKind::IdLostReported;
        ops.push(lost);
        assert_eq!(
            violations(&ops, &[Some("20:0".into())]),
            vec![("every ID loss is reported by lost()", 1)]
        );
    }
}
