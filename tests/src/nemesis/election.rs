//! The election workload and its checker.
//!
//! **Workload.** On each client a candidate campaigns in one election; once it leads, it
//! writes the election's log key a few times, each write a transaction fenced by its
//! leadership ([`Leadership::fence`]: etcd applies it only while the leader key still exists
//! with its create revision), then resigns and campaigns again. Every entry is unique
//! (`{term}:{n}`, the term being the leader key's create revision), so the final value names
//! the write that put it there. A leader gives up after a write whose outcome is unknown, and
//! a refused write (which proves the leadership lost) is followed by a check that `lost()`
//! reports it.
//!
//! **Checker.** As for the IDs (see [`tenures`]): in the order etcd applied them, the
//! acknowledged log writes come in runs, one per term, with terms that only go up, each after
//! its leader's election, so two leaders' writes never interleave, whatever was partitioned,
//! paused or crashed meanwhile; the log's final value is the last applied write or an unknown
//! one of a term at least as new; every lost leadership a refused write proved was reported
//! by `lost()`.

use std::time::Duration;

use coord::election::Leadership;
use coord::store::{Txn, TxnOp};
use coord::Coord;
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::check::{last_write_stored, losses_reported, tenures, Check};
use super::history::{Fenced, History, Op, OpKind, Outcome, Payload};
use super::strike::Holding;

/// The election the candidates stand in.
pub const ELECTION: &str = "/nemesis/election";

/// The key every leader writes its entries to.
pub const LOG_KEY: &str = "/nemesis/leader-log";

/// Why a leader's fenced write failed when its fence refused it.
pub const REFUSED: &str = "fence refused: the leader key is gone";

/// The settings of the election workload.
#[derive(Clone, Debug)]
pub struct ElectionWorkload {
    /// The lease TTL of each campaign.
    pub ttl: Duration,
    /// How many log writes a leader makes before it resigns.
    pub writes_per_term: usize,
    /// The longest pause before each write.
    pub max_pause: Duration,
    /// How long a campaign may wait before it is given up (and cancelled).
    pub campaign_wait: Duration,
    /// How long `lost()` may take to report a loss a refused write proved.
    pub lost_bound: Duration,
    /// A call that has not answered after this long is recorded as unknown and abandoned.
    pub hang: Duration,
    /// Whether log writes are fenced by the leadership. Off only to show the checker catches
    /// what fences prevent: the runner's unfenced switch.
    pub fenced: bool,
}

impl Default for ElectionWorkload {
    fn default() -> Self {
        ElectionWorkload {
            ttl: Duration::from_secs(2),
            writes_per_term: 3,
            max_pause: Duration::from_millis(300),
            campaign_wait: Duration::from_secs(5),
            lost_bound: Duration::from_secs(15),
            hang: Duration::from_secs(30),
            fenced: true,
        }
    }
}

/// One candidate.
#[derive(Clone, Debug)]
pub struct Candidate {
    /// Its number in the history.
    pub id: usize,
    /// Its client.
    pub coord: Coord,
    /// Where it counts itself while it leads, if a strike waits for it.
    pub holding: Option<Holding>,
}

impl ElectionWorkload {
    /// Runs `candidate` until `stop` turns true, then resigns if it leads. Returns the
    /// `leader-lost-reported` checks still waiting; the caller awaits them before checking.
    pub async fn run(
        &self,
        candidate: Candidate,
        seed: u64,
        history: History,
        mut stop: watch::Receiver<bool>,
    ) -> Vec<JoinHandle<()>> {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed ^ (candidate.id as u64 + 1));
        let mut lost_checks = Vec::new();
        while !*stop.borrow_and_update() {
            let Some(leadership) = self.campaign(&candidate, &history).await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let holding = candidate.holding.as_ref().map(Holding::enter);
            let term = self
                .lead(&candidate, &leadership, &history, &mut rng, &stop)
                .await;
            drop(holding);
            match term {
                Term::Refused => {
                    let pending = history.begin(
                        candidate.id,
                        OpKind::LeaderLostReported,
                        term_payload(&leadership),
                    );
                    lost_checks
                        .push(pending.reported_lost(self.lost_bound, async move {
                            leadership.lost().await
                        }));
                }
                Term::Done => {
                    let pending =
                        history.begin(candidate.id, OpKind::Resign, term_payload(&leadership));
                    pending.released(self.hang, leadership.resign()).await;
                }
            }
        }
        lost_checks
    }

    async fn campaign(&self, candidate: &Candidate, history: &History) -> Option<Leadership> {
        let pending = history.begin(candidate.id, OpKind::Campaign, Payload::default());
        let election = candidate.coord.election(ELECTION).ttl(self.ttl);
        let value = format!("p{}", candidate.id);
        match tokio::time::timeout(self.campaign_wait, election.campaign(value)).await {
            Ok(Ok(leadership)) => {
                let term = leadership.revision();
                pending.ok(|p| p.token = Some(term));
                Some(leadership)
            }
            Ok(Err(e)) => {
                pending.end(Outcome::of_write_error(&e), |p| {
                    p.error = Some(e.to_string());
                });
                None
            }
            // Dropping the campaign withdraws the candidate's key.
            Err(_) => {
                pending.failed(format!("not elected within {:?}", self.campaign_wait));
                None
            }
        }
    }

    async fn lead(
        &self,
        candidate: &Candidate,
        leadership: &Leadership,
        history: &History,
        rng: &mut Xoshiro256PlusPlus,
        stop: &watch::Receiver<bool>,
    ) -> Term {
        for n in 0..self.writes_per_term {
            if *stop.borrow() {
                break;
            }
            tokio::time::sleep(rng.random_range(Duration::ZERO..=self.max_pause)).await;
            let text = format!("{}:{n}", leadership.revision());
            let write = history.begin(
                candidate.id,
                OpKind::LeaderWrite,
                Payload {
                    text: Some(text.clone()),
                    ..term_payload(leadership)
                },
            );
            let txn = Txn::new().and_then([TxnOp::put(LOG_KEY, text)]);
            let txn = if self.fenced {
                txn.when([leadership.fence()])
            } else {
                txn
            };
            match write
                .fenced_txn(self.hang, REFUSED, candidate.coord.store().txn(txn))
                .await
            {
                Fenced::Applied => {}
                Fenced::Refused => return Term::Refused,
                Fenced::Stopped => break,
            }
        }
        Term::Done
    }
}

fn term_payload(leadership: &Leadership) -> Payload {
    Payload {
        token: Some(leadership.revision()),
        ..Payload::default()
    }
}

/// How a term ended.
enum Term {
    /// Every write was made, or one failed without proving the leadership lost.
    Done,
    /// A fenced write was refused: the leadership is lost.
    Refused,
}

/// Checks the election workload's invariants (see the [module docs](self)) over `ops`, given
/// the log key's final value (`None` if never written).
pub fn check(ops: &[Op], last: Option<&str>) -> Vec<Check> {
    let mut terms = Check::new("two leaders' writes never interleave");
    let mut stored = Check::new("the leader log holds the last applied write");

    let writes = |outcome| {
        ops.iter()
            .filter(move |op| op.kind == OpKind::LeaderWrite && op.outcome == outcome)
    };
    let mut applied: Vec<&Op> = writes(Outcome::Ok).collect();
    tenures(&mut terms, "the leader log", &mut applied);
    last_write_stored(
        &mut stored,
        "the leader log",
        last,
        applied.last().copied(),
        writes(Outcome::Unknown),
        |op, stored| op.payload.text.as_deref() == Some(stored),
    );
    let losses = losses_reported(
        ops,
        OpKind::LeaderLostReported,
        "every lost leadership is reported by lost()",
        "leadership",
    );
    vec![terms, stored, losses]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(process: usize, outcome: Outcome, term: i64, n: u32, revision: i64) -> Op {
        Op {
            process,
            kind: OpKind::LeaderWrite,
            start: Duration::from_millis(revision as u64),
            end: Duration::from_millis(revision as u64 + 1),
            outcome,
            payload: Payload {
                token: Some(term),
                text: Some(format!("{term}:{n}")),
                revision: Some(revision),
                ..Payload::default()
            },
        }
    }

    fn violations(ops: &[Op], last: Option<&str>) -> Vec<(&'static str, usize)> {
        crate::nemesis::check::broken(check(ops, last))
    }

    /// Term 10 writes twice (a third unknown), then term 20 writes once.
    fn clean() -> Vec<Op> {
        vec![
            write(0, Outcome::Ok, 10, 0, 11),
            write(0, Outcome::Ok, 10, 1, 12),
            write(0, Outcome::Unknown, 10, 2, 0),
            write(1, Outcome::Ok, 20, 0, 21),
        ]
    }

    #[test]
    fn a_clean_history_passes() {
        assert_eq!(violations(&clean(), Some("20:0")), vec![]);
    }

    #[test]
    fn an_old_leaders_write_between_a_new_leaders_is_a_violation() {
        let mut ops = clean();
        // Term 10's leader kept writing after term 20 began: its fence let it through.
        ops.push(write(0, Outcome::Ok, 10, 3, 22));
        assert_eq!(
            violations(&ops, Some("10:3")),
            vec![("two leaders' writes never interleave", 1)]
        );
    }

    #[test]
    fn a_stale_leaders_late_write_stored_last_is_a_violation() {
        assert_eq!(
            violations(&clean(), Some("10:2")),
            vec![("the leader log holds the last applied write", 1)]
        );
        assert_eq!(
            violations(&clean(), None),
            vec![("the leader log holds the last applied write", 1)]
        );
    }

    #[test]
    fn an_unreported_lost_leadership_is_a_violation() {
        let mut ops = clean();
        let mut lost = write(1, Outcome::Failed, 20, 0, 0);
        lost.kind = OpKind::LeaderLostReported;
        ops.push(lost);
        assert_eq!(
            violations(&ops, Some("20:0")),
            vec![("every lost leadership is reported by lost()", 1)]
        );
    }
}
