//! The locks workload and its checker.
//!
//! **Workload.** Each process (one per client and lock) loops: acquire lock `l`, then a few
//! times read counter `l`, pause (long enough for a fault to take the lease meanwhile), and
//! write the value read + 1 in a transaction fenced by the lock ([`LockGuard::txn`]: etcd
//! applies it only while the holder's key still exists with its create revision); then
//! unlock. Every step is recorded with the holder's fencing token. After a write whose outcome
//! is unknown the holder gives the lock up: that write may still be on its way, and a second
//! write under the same key could otherwise land before it.
//!
//! A refused fenced write proves the lease was lost (only its expiry or revocation deletes
//! the key); the process then checks that the guard's [`lost`](LockGuard::lost) reports it,
//! and records that as a `lost-reported` operation.
//!
//! **Checker.** Over the history and the counters' final values (read after the final heal):
//! - each counter lies within [ok, ok + unknown] increments (an unknown one may have applied);
//! - in the order etcd applied them, acknowledged increments carry fencing tokens that never
//!   decrease (a new holder's token is higher) and write strictly increasing values (no
//!   update was lost or applied twice);
//! - a read that began after an increment was acknowledged sees at least its value;
//! - every lease loss proven by a refused write was reported by `lost()`.

use std::time::Duration;

use coord::store::{Txn, TxnOp};
use coord::{Coord, LockGuard};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::check::{excerpt, losses_reported, Check};
use super::history::{Fenced, History, Op, OpKind, Outcome, Payload};
use super::strike::Holding;

/// Why a fenced increment failed when its fence refused it.
pub const REFUSED: &str = "fence refused: the lock key is gone";

/// The settings of the locks workload.
#[derive(Clone, Debug)]
pub struct LockWorkload {
    /// How many locks (each with its own counter).
    pub locks: usize,
    /// The lease TTL of each lock.
    pub ttl: Duration,
    /// How many increments a holder makes before it unlocks.
    pub increments_per_hold: usize,
    /// The longest pause between reading the counter and writing it.
    pub max_pause: Duration,
    /// How long an acquire may wait before it is given up (and cancelled).
    pub acquire_wait: Duration,
    /// How long `lost()` may take to report a loss a refused write proved.
    pub lost_bound: Duration,
    /// A call that has not answered after this long is recorded as unknown and abandoned
    /// (every call has a shorter deadline of its own: this only catches hangs).
    pub hang: Duration,
    /// Whether increments are fenced by the lock. Off only to show the checker catches what
    /// fences prevent: the runner's unfenced switch.
    pub fenced: bool,
}

impl Default for LockWorkload {
    fn default() -> Self {
        LockWorkload {
            locks: 2,
            // etcd's minimum: faults of up to 4 s outlast it, shorter ones do not.
            ttl: Duration::from_secs(2),
            increments_per_hold: 3,
            max_pause: Duration::from_millis(300),
            acquire_wait: Duration::from_secs(5),
            lost_bound: Duration::from_secs(15),
            hang: Duration::from_secs(30),
            fenced: true,
        }
    }
}

/// The name of lock `l`.
pub fn lock_name(lock: usize) -> String {
    format!("/nemesis/locks/{lock}")
}

/// The key of counter `l`.
pub fn counter_key(lock: usize) -> String {
    format!("/nemesis/counters/{lock}")
}

/// A counter's value as stored (decimal text); a missing key is 0.
pub fn parse_counter(value: Option<&[u8]>) -> Result<u64, String> {
    match value {
        None => Ok(0),
        Some(bytes) => std::str::from_utf8(bytes)
            .ok()
            .and_then(|text| text.parse().ok())
            .ok_or_else(|| format!("counter holds {:?}", String::from_utf8_lossy(bytes))),
    }
}

/// One process of the workload: `coord` contending for lock `lock`.
#[derive(Clone, Debug)]
pub struct Process {
    /// Its number in the history.
    pub id: usize,
    /// The lock it works on.
    pub lock: usize,
    /// Its client (connected through that client's proxies).
    pub coord: Coord,
    /// Where it counts itself while it holds, if a strike waits for it.
    pub holding: Option<Holding>,
}

impl LockWorkload {
    /// Runs `process` until `stop` turns true, then releases what it holds. Returns the
    /// `lost-reported` checks still waiting; the caller awaits them before checking.
    pub async fn run(
        &self,
        process: Process,
        seed: u64,
        history: History,
        mut stop: watch::Receiver<bool>,
    ) -> Vec<JoinHandle<()>> {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed ^ (process.id as u64 + 1));
        let mut lost_checks = Vec::new();
        while !*stop.borrow_and_update() {
            let Some(guard) = self.acquire(&process, &history).await else {
                // Fails fast while the client is cut off: do not spin.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let holding = process.holding.as_ref().map(Holding::enter);
            let held = self.hold(&process, &guard, &history, &mut rng, &stop).await;
            drop(holding);
            match held {
                Held::Refused => lost_checks.push(self.check_lost(&process, guard, &history)),
                Held::Done => self.unlock(&process, guard, &history).await,
            }
        }
        lost_checks
    }

    async fn acquire(&self, process: &Process, history: &History) -> Option<LockGuard> {
        let pending = history.begin(process.id, OpKind::Acquire, self.payload(process));
        let (locks, name) = (process.coord.locks(), lock_name(process.lock));
        let acquire = locks.acquire(&name, self.ttl);
        match tokio::time::timeout(self.acquire_wait, acquire).await {
            Ok(Ok(guard)) => {
                let token = guard.fencing_token();
                pending.ok(|p| p.token = Some(token));
                Some(guard)
            }
            Ok(Err(e)) => {
                pending.end(Outcome::of_write_error(&e), |p| {
                    p.error = Some(e.to_string());
                });
                None
            }
            // Dropping the acquire cancels it and takes its waiter key away.
            Err(_) => {
                pending.failed(format!("still waiting after {:?}", self.acquire_wait));
                None
            }
        }
    }

    async fn hold(
        &self,
        process: &Process,
        guard: &LockGuard,
        history: &History,
        rng: &mut Xoshiro256PlusPlus,
        stop: &watch::Receiver<bool>,
    ) -> Held {
        let counter = counter_key(process.lock);
        let held = Payload {
            token: Some(guard.fencing_token()),
            ..self.payload(process)
        };
        for _ in 0..self.increments_per_hold {
            if *stop.borrow() {
                break;
            }
            let read = history.begin(process.id, OpKind::Read, held.clone());
            let value =
                match tokio::time::timeout(self.hang, process.coord.store().get(&counter)).await {
                    Ok(Ok((kv, revision))) => {
                        match parse_counter(kv.as_ref().map(|kv| kv.value.as_slice())) {
                            Ok(value) => {
                                read.ok(|p| {
                                    p.value = Some(value);
                                    p.revision = Some(revision);
                                });
                                value
                            }
                            Err(e) => {
                                read.failed(e);
                                break;
                            }
                        }
                    }
                    Ok(Err(e)) => {
                        read.failed(e);
                        break;
                    }
                    Err(_) => {
                        read.failed(format!("no answer within {:?}", self.hang));
                        break;
                    }
                };
            let pause = rng.random_range(Duration::ZERO..=self.max_pause);
            tokio::time::sleep(pause).await;

            let next = value + 1;
            let write = history.begin(
                process.id,
                OpKind::Increment,
                Payload {
                    value: Some(next),
                    ..held.clone()
                },
            );
            let txn = Txn::new().and_then([TxnOp::put(counter.as_str(), next.to_string())]);
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
    fn check_lost(&self, process: &Process, guard: LockGuard, history: &History) -> JoinHandle<()> {
        let pending = history.begin(
            process.id,
            OpKind::LostReported,
            Payload {
                token: Some(guard.fencing_token()),
                ..self.payload(process)
            },
        );
        pending.reported_lost(self.lost_bound, async move { guard.lost().await })
    }

    async fn unlock(&self, process: &Process, guard: LockGuard, history: &History) {
        let pending = history.begin(
            process.id,
            OpKind::Unlock,
            Payload {
                token: Some(guard.fencing_token()),
                ..self.payload(process)
            },
        );
        pending.released(self.hang, guard.unlock()).await;
    }

    fn payload(&self, process: &Process) -> Payload {
        Payload {
            lock: Some(process.lock),
            ..Payload::default()
        }
    }
}

/// How a hold ended.
enum Held {
    /// Every increment was made, or one failed without proving the lock lost.
    Done,
    /// A fenced write was refused: the lock is lost.
    Refused,
}

/// Checks the locks workload's invariants (see the [module docs](self)) over `ops`, given
/// each counter's final value (`finals[l]` for lock `l`).
pub fn check(ops: &[Op], finals: &[u64]) -> Vec<Check> {
    let mut counters = Check::new("counter = acknowledged increments (+ unknown ones)");
    let mut tokens = Check::new("fencing tokens of applied writes never go back");
    let mut values = Check::new("applied writes strictly increase the counter");
    let mut reads = Check::new("reads see every increment acknowledged before them");

    for (lock, &last) in finals.iter().enumerate() {
        let of_lock = |kind| {
            ops.iter()
                .filter(move |op| op.kind == kind && op.payload.lock == Some(lock))
        };
        let mut applied: Vec<&Op> = of_lock(OpKind::Increment)
            .filter(|op| op.outcome == Outcome::Ok)
            .collect();
        let unknown = of_lock(OpKind::Increment)
            .filter(|op| op.outcome == Outcome::Unknown)
            .count();

        counters.checked += 1;
        let ok = applied.len() as u64;
        if last < ok || last > ok + unknown as u64 {
            counters.violations.push(format!(
                "lock {lock}: the counter is {last}, but {ok} increments were acknowledged and \
                 {unknown} are unknown; last acknowledged:\n{}",
                excerpt(applied.iter().rev().take(3).rev().copied())
            ));
        }

        applied.sort_by_key(|op| op.payload.revision);
        for pair in applied.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            tokens.checked += 1;
            if b.payload.token < a.payload.token {
                tokens.violations.push(format!(
                    "lock {lock}: a lower token was applied after a higher one:\n{}",
                    excerpt([a, b])
                ));
            }
            values.checked += 1;
            if b.payload.value <= a.payload.value {
                values.violations.push(format!(
                    "lock {lock}: an applied write did not raise the counter:\n{}",
                    excerpt([a, b])
                ));
            }
        }

        // The highest value acknowledged before each instant, to compare reads against.
        let mut acknowledged: Vec<&Op> = applied.clone();
        acknowledged.sort_by_key(|op| op.end);
        let mut highest: Vec<(Duration, u64, &Op)> = Vec::with_capacity(acknowledged.len());
        for op in acknowledged {
            let value = op.payload.value.unwrap_or(0);
            match highest.last() {
                Some(&(_, top, _)) if top >= value => {}
                _ => highest.push((op.end, value, op)),
            }
        }
        for read in of_lock(OpKind::Read).filter(|op| op.outcome == Outcome::Ok) {
            reads.checked += 1;
            let before = highest.partition_point(|&(end, _, _)| end < read.start);
            if let Some(&(_, value, write)) = before.checked_sub(1).map(|i| &highest[i]) {
                if read.payload.value < Some(value) {
                    reads.violations.push(format!(
                        "lock {lock}: a read missed an acknowledged increment:\n{}",
                        excerpt([write, read])
                    ));
                }
            }
        }
    }

    let losses = losses_reported(
        ops,
        OpKind::LostReported,
        "every lease loss is reported by lost()",
        "lease",
    );
    vec![counters, tokens, values, reads, losses]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn op(
        process: usize,
        kind: OpKind,
        span: (u64, u64),
        outcome: Outcome,
        token: i64,
        value: u64,
        revision: i64,
    ) -> Op {
        Op {
            process,
            kind,
            start: ms(span.0),
            end: ms(span.1),
            outcome,
            payload: Payload {
                lock: Some(0),
                token: Some(token),
                value: Some(value),
                revision: Some(revision),
                ..Payload::default()
            },
        }
    }

    fn increment(
        process: usize,
        span: (u64, u64),
        outcome: Outcome,
        token: i64,
        value: u64,
        revision: i64,
    ) -> Op {
        op(
            process,
            OpKind::Increment,
            span,
            outcome,
            token,
            value,
            revision,
        )
    }

    fn violations(ops: &[Op], finals: &[u64]) -> Vec<(&'static str, usize)> {
        crate::nemesis::check::broken(check(ops, finals))
    }

    /// Two holders, one after the other, one unknown write that did apply.
    fn clean() -> Vec<Op> {
        vec![
            op(0, OpKind::Read, (0, 1), Outcome::Ok, 10, 0, 11),
            increment(0, (2, 3), Outcome::Ok, 10, 1, 12),
            op(0, OpKind::Read, (4, 5), Outcome::Ok, 10, 1, 12),
            increment(0, (6, 9), Outcome::Unknown, 10, 2, 0),
            op(1, OpKind::Read, (20, 21), Outcome::Ok, 15, 2, 16),
            increment(1, (22, 23), Outcome::Ok, 15, 3, 17),
        ]
    }

    #[test]
    fn a_clean_history_passes_every_invariant() {
        assert_eq!(violations(&clean(), &[3]), vec![]);
        // The unknown write may also not have applied (then the second holder read 1).
        let mut not_applied = clean();
        not_applied[4].payload.value = Some(1);
        not_applied[5].payload.value = Some(2);
        assert_eq!(violations(&not_applied, &[2]), vec![]);
        let checks = check(&clean(), &[3]);
        assert!(checks
            .iter()
            .all(|c| c.checked > 0 || c.name.contains("lost()")));
    }

    #[test]
    fn a_counter_outside_ok_and_unknown_is_a_violation() {
        assert_eq!(
            violations(&clean(), &[1]),
            vec![("counter = acknowledged increments (+ unknown ones)", 1)]
        );
        assert_eq!(
            violations(&clean(), &[4]),
            vec![("counter = acknowledged increments (+ unknown ones)", 1)]
        );
    }

    #[test]
    fn a_stale_holder_applied_after_a_newer_one_is_a_violation() {
        let mut ops = clean();
        // The first holder's write lands after the second holder's.
        ops.push(increment(0, (24, 25), Outcome::Ok, 10, 4, 18));
        let found = violations(&ops, &[4]);
        assert!(
            found.contains(&("fencing tokens of applied writes never go back", 1)),
            "{found:?}"
        );
    }

    #[test]
    fn a_lost_update_is_a_violation() {
        let mut ops = clean();
        // Both holders wrote 3: one increment vanished.
        ops.push(increment(2, (30, 31), Outcome::Ok, 20, 3, 25));
        let found = violations(&ops, &[3]);
        assert!(
            found.contains(&("applied writes strictly increase the counter", 1)),
            "{found:?}"
        );
    }

    #[test]
    fn a_stale_read_is_a_violation() {
        let mut ops = clean();
        ops.push(op(2, OpKind::Read, (40, 41), Outcome::Ok, 20, 1, 12));
        assert_eq!(
            violations(&ops, &[3]),
            vec![("reads see every increment acknowledged before them", 1)]
        );
    }

    #[test]
    fn an_unreported_loss_is_a_violation() {
        let mut ops = clean();
        ops.push(op(
            1,
            OpKind::LostReported,
            (50, 15_050),
            Outcome::Failed,
            15,
            0,
            0,
        ));
        assert_eq!(
            violations(&ops, &[3]),
            vec![("every lease loss is reported by lost()", 1)]
        );
    }

    #[test]
    fn a_counter_is_decimal_text_and_missing_is_zero() {
        assert_eq!(parse_counter(None), Ok(0));
        assert_eq!(parse_counter(Some(b"17")), Ok(17));
        assert!(parse_counter(Some(b"x")).is_err());
    }
}
