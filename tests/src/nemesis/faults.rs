//! The fault schedule and the nemesis that carries it out.
//!
//! [`Schedule::generate`] turns a seed into a list of faults, one at a time, each held for a
//! while and then healed, with quiet gaps between them. It is a pure function of its
//! arguments (a xoshiro256++ generator seeded with the seed): the same seed replays the same
//! faults at the same offsets, whatever the machine. What the cluster and the clients do in
//! between is not replayed; only the faults are.
//!
//! [`Nemesis`] owns the cluster and every client's proxies and injects and heals the faults;
//! [`Nemesis::heal_all`] undoes anything still on, for the end of a run.

use std::fmt;
use std::time::Duration;

use coord::testing::{EtcdCluster, HarnessError, Proxies};

use super::history::Stalls;
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

/// One fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Client `client` cannot reach member `member` (connections reset, new ones refused).
    Partition {
        /// The client cut off.
        client: usize,
        /// The member it loses.
        member: usize,
    },
    /// Client `client` cannot reach any member.
    PartitionAll {
        /// The client cut off.
        client: usize,
    },
    /// Client `client`'s connections to every member stay open but carry nothing: to the
    /// cluster it looks like a client process that froze (a long GC pause), and what the
    /// client sent meanwhile arrives after the heal, as a frozen process's would.
    BlackholeAll {
        /// The client.
        client: usize,
    },
    /// Client `client`'s connections to member `member` stay open but carry nothing.
    Blackhole {
        /// The client.
        client: usize,
        /// The member that goes silent for it.
        member: usize,
    },
    /// Every chunk between client `client` and member `member` is delayed.
    Latency {
        /// The client.
        client: usize,
        /// The member.
        member: usize,
        /// The delay per chunk and direction.
        delay: Duration,
    },
    /// Member `member` is frozen (SIGSTOP) and thawed at heal.
    Pause {
        /// The member.
        member: usize,
    },
    /// Member `member` is stopped (SIGTERM: it hands leadership over) and restarted at heal.
    Kill {
        /// The member.
        member: usize,
    },
    /// Member `member` dies at once (SIGKILL: no handover, no last flush, as in a power cut)
    /// and is restarted at heal, recovering from its write-ahead log.
    Crash {
        /// The member.
        member: usize,
    },
    /// The history is compacted at the current revision (healing it is a no-op).
    Compact,
}

impl Fault {
    /// Whose watches it may stall; see [`Stalls`].
    pub fn stalls(&self) -> Stalls {
        match *self {
            Fault::PartitionAll { client }
            | Fault::BlackholeAll { client }
            | Fault::Blackhole { client, .. } => Stalls::Client(client),
            Fault::Pause { .. } => Stalls::Everyone,
            Fault::Partition { .. }
            | Fault::Latency { .. }
            | Fault::Kill { .. }
            | Fault::Crash { .. }
            | Fault::Compact => Stalls::Nobody,
        }
    }

    /// The kind, as the report counts it.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Partition { .. } => "partition",
            Fault::PartitionAll { .. } => "partition-all",
            Fault::Blackhole { .. } => "blackhole",
            Fault::BlackholeAll { .. } => "blackhole-all",
            Fault::Latency { .. } => "latency",
            Fault::Pause { .. } => "pause",
            Fault::Kill { .. } => "kill+restart",
            Fault::Crash { .. } => "crash+restart",
            Fault::Compact => "compact",
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Partition { client, member } => write!(f, "partition c{client} from m{member}"),
            Fault::PartitionAll { client } => write!(f, "partition c{client} from every member"),
            Fault::Blackhole { client, member } => write!(f, "blackhole c{client} -> m{member}"),
            Fault::BlackholeAll { client } => write!(f, "blackhole c{client} -> every member"),
            Fault::Latency {
                client,
                member,
                delay,
            } => write!(f, "latency {delay:?} c{client} <-> m{member}"),
            Fault::Pause { member } => write!(f, "pause m{member}"),
            Fault::Kill { member } => write!(f, "kill m{member}"),
            Fault::Crash { member } => write!(f, "crash m{member}"),
            Fault::Compact => write!(f, "compact"),
        }
    }
}

/// A fault at an offset from the start of the run, healed after `lasts`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    /// When it is injected, from the start of the run.
    pub at: Duration,
    /// The fault.
    pub fault: Fault,
    /// How long it stays before the heal.
    pub lasts: Duration,
}

/// The faults of a run, in order; see the [module docs](self).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    /// The seed it was generated from.
    pub seed: u64,
    /// The faults, one at a time, in order of `at`.
    pub steps: Vec<Step>,
}

/// Quiet before the first fault, so the workload is running when it comes.
const WARM_UP: Duration = Duration::from_secs(1);

impl Schedule {
    /// The faults for a run of `duration` with `clients` clients on `members` members. Every
    /// fault is healed before `duration` ends. Faults last 0.5 to 4 s (so some outlast a
    /// 2 s lease and some do not), with 0.2 to 1.5 s of quiet between them.
    pub fn generate(seed: u64, duration: Duration, clients: usize, members: usize) -> Schedule {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let mut steps = Vec::new();
        let mut at = WARM_UP;
        loop {
            let client = rng.random_range(0..clients.max(1));
            let member = rng.random_range(0..members.max(1));
            let fault = match rng.random_range(0..9) {
                0 => Fault::Partition { client, member },
                1 => Fault::PartitionAll { client },
                2 => Fault::Blackhole { client, member },
                3 => Fault::BlackholeAll { client },
                4 => Fault::Latency {
                    client,
                    member,
                    delay: Duration::from_millis(rng.random_range(20..=400)),
                },
                5 => Fault::Pause { member },
                6 => Fault::Kill { member },
                7 => Fault::Crash { member },
                _ => Fault::Compact,
            };
            let lasts = match fault {
                Fault::Compact => Duration::ZERO,
                _ => Duration::from_millis(rng.random_range(500..=4_000)),
            };
            if at + lasts >= duration {
                break;
            }
            steps.push(Step { at, fault, lasts });
            at += lasts + Duration::from_millis(rng.random_range(200..=1_500));
        }
        Schedule { seed, steps }
    }
}

impl fmt::Display for Schedule {
    /// One line per fault: when, what, for how long.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for step in &self.steps {
            writeln!(
                f,
                "{:>8.3}s  {:<40} for {:.3}s",
                step.at.as_secs_f64(),
                step.fault.to_string(),
                step.lasts.as_secs_f64()
            )?;
        }
        Ok(())
    }
}

/// Injects and heals faults on a cluster and on each client's proxies.
#[derive(Debug)]
pub struct Nemesis {
    cluster: EtcdCluster,
    proxies: Vec<Proxies>,
}

impl Nemesis {
    /// The nemesis of `cluster`, where client `c` reaches it through `proxies[c]`.
    pub fn new(cluster: EtcdCluster, proxies: Vec<Proxies>) -> Self {
        Nemesis { cluster, proxies }
    }

    /// The cluster (for its direct, unproxied client config).
    pub fn cluster(&self) -> &EtcdCluster {
        &self.cluster
    }

    /// Injects `fault`.
    ///
    /// # Errors
    ///
    /// What the harness says (a member that cannot be signalled, a compaction without quorum).
    pub async fn inject(&mut self, fault: Fault) -> Result<(), HarnessError> {
        match fault {
            Fault::Partition { client, member } => self.proxies[client][member].partition(),
            Fault::PartitionAll { client } => self.proxies[client].partition(),
            Fault::Blackhole { client, member } => self.proxies[client][member].blackhole(),
            Fault::BlackholeAll { client } => self.proxies[client]
                .iter()
                .for_each(coord::testing::FaultProxy::blackhole),
            Fault::Latency {
                client,
                member,
                delay,
            } => self.proxies[client][member].set_latency(delay),
            Fault::Pause { member } => self.cluster.pause(member)?,
            Fault::Kill { member } => self.cluster.kill(member).await?,
            Fault::Crash { member } => self.cluster.crash(member)?,
            Fault::Compact => {
                self.cluster.compact().await?;
            }
        }
        Ok(())
    }

    /// Undoes `fault`.
    ///
    /// # Errors
    ///
    /// What the harness says (a member that does not come back, say).
    pub async fn heal(&mut self, fault: Fault) -> Result<(), HarnessError> {
        match fault {
            Fault::Partition { client, member }
            | Fault::Blackhole { client, member }
            | Fault::Latency { client, member, .. } => self.proxies[client][member].heal(),
            Fault::PartitionAll { client } | Fault::BlackholeAll { client } => {
                self.proxies[client].heal();
            }
            Fault::Pause { member } => self.cluster.resume(member)?,
            Fault::Kill { member } | Fault::Crash { member } => {
                self.cluster.restart(member).await?;
            }
            Fault::Compact => {}
        }
        Ok(())
    }

    /// Undoes every fault that may still be on: heals every proxy, thaws paused members and
    /// restarts stopped ones.
    ///
    /// # Errors
    ///
    /// The first harness error; it still tries every member.
    pub async fn heal_all(&mut self) -> Result<(), HarnessError> {
        self.proxies.iter().for_each(Proxies::heal);
        let mut first_error = None;
        for member in 0..self.cluster.len() {
            let result = if self.cluster.is_paused(member) {
                self.cluster.resume(member)
            } else if !self.cluster.is_running(member) {
                self.cluster.restart(member).await
            } else {
                Ok(())
            };
            if let Err(e) = result {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn the_same_seed_replays_the_same_schedule() {
        let first = Schedule::generate(42, MINUTE, 3, 3);
        let again = Schedule::generate(42, MINUTE, 3, 3);
        assert_eq!(first, again);
        assert!(first.steps.len() > 10, "{} faults", first.steps.len());
    }

    #[test]
    fn another_seed_gives_another_schedule() {
        assert_ne!(
            Schedule::generate(42, MINUTE, 3, 3).steps,
            Schedule::generate(43, MINUTE, 3, 3).steps
        );
    }

    #[test]
    fn faults_come_one_at_a_time_and_end_within_the_run() {
        let schedule = Schedule::generate(7, MINUTE, 3, 3);
        for pair in schedule.steps.windows(2) {
            assert!(pair[0].at + pair[0].lasts < pair[1].at, "{pair:?} overlap");
        }
        let last = schedule.steps.last().unwrap();
        assert!(last.at + last.lasts < MINUTE);
    }

    #[test]
    fn a_long_run_uses_every_kind_of_fault() {
        let schedule = Schedule::generate(1, 5 * MINUTE, 3, 3);
        let kinds: std::collections::BTreeSet<_> =
            schedule.steps.iter().map(|s| s.fault.kind()).collect();
        assert_eq!(kinds.len(), 9, "{kinds:?}");
    }

    #[test]
    fn the_schedule_of_seed_42_starts_as_it_always_has() {
        // Pins the generator: a change to it (or to the PRNG) shows up here, not as a
        // silently different replay of an old seed.
        let steps = Schedule::generate(42, MINUTE, 3, 3).steps;
        assert_eq!(
            steps[..3],
            [
                Step {
                    at: WARM_UP,
                    fault: Fault::Compact,
                    lasts: Duration::ZERO,
                },
                Step {
                    at: Duration::from_millis(2_112),
                    fault: Fault::PartitionAll { client: 2 },
                    lasts: Duration::from_millis(2_618),
                },
                Step {
                    at: Duration::from_millis(5_200),
                    // A kill before crashes joined the schedule (a ninth kind).
                    fault: Fault::Crash { member: 1 },
                    lasts: Duration::from_millis(2_880),
                },
            ]
        );
    }
}
