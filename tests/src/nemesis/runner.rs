//! One nemesis run, start to finish: a 3-member etcd, clients each connected through their
//! own [`Proxies`](coord::testing::Proxies), the locks workload on every client, the seeded
//! fault schedule; then the final heal, the wait for convergence, the checks and the
//! [`Report`].
//!
//! "Converged" means every client, through its healed proxies, reads every counter with the
//! same value as a client connected straight to the cluster, in one round. The report gives
//! the time from the end of the final heal to the first such round; a run that does not
//! converge within [`CONVERGE_LIMIT`] is a violation.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use coord::testing::{EtcdCluster, HarnessError};
use coord::Coord;
use tokio::sync::watch;
use tokio::time::Instant;

use super::faults::{Nemesis, Schedule};
use super::history::{FaultRecord, History, OpKind};
use super::locks::{self, counter_key, Check, LockWorkload, Process};

/// How long the clients may take to agree after the final heal before it is a violation.
pub const CONVERGE_LIMIT: Duration = Duration::from_secs(60);
/// How many members the cluster has.
pub const MEMBERS: usize = 3;
/// The clients' request timeout: longer than most faults (0.5 to 4 s), so a write held by a
/// blackhole is answered (often: refused by its fence) rather than left unknown.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long closing a client may take at the end.
const CLOSE_WAIT: Duration = Duration::from_secs(10);

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// How long faults are injected; the heal, convergence and checks come after.
    pub duration: Duration,
    /// The seed of the fault schedule (and of the workload's pauses).
    pub seed: u64,
    /// How many clients (`Coord`s, each behind its own proxies).
    pub clients: usize,
    /// The locks workload.
    pub workload: LockWorkload,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            duration: Duration::from_secs(60),
            seed: 42,
            clients: 3,
            workload: LockWorkload::default(),
        }
    }
}

/// What a run did and found.
#[derive(Clone, Debug)]
pub struct Report {
    /// What was run.
    pub options: Options,
    /// Operations per kind: (ok, failed, unknown).
    pub operations: BTreeMap<OpKind, [usize; 3]>,
    /// Faults per kind: (injected, of which failed to inject or heal).
    pub faults: BTreeMap<&'static str, (usize, usize)>,
    /// The first errors of faults that failed to inject or heal (not violations: a member
    /// that would not restart is the harness's trouble, and shows here).
    pub fault_errors: Vec<String>,
    /// Every invariant checked, with its violations.
    pub checks: Vec<Check>,
    /// The time from the end of the final heal until the clients agreed.
    pub converged_after: Option<Duration>,
    /// The counters' final values.
    pub counters: Vec<u64>,
    /// Everything recorded, for a closer look at a violation.
    pub history: History,
}

impl Report {
    /// The number of violations over every invariant; 0 for a good run.
    pub fn violations(&self) -> usize {
        self.checks.iter().map(|c| c.violations.len()).sum()
    }

    /// How many faults were injected.
    pub fn faults_injected(&self) -> usize {
        self.faults.values().map(|&(injected, _)| injected).sum()
    }

    /// How many operations of `kind` succeeded.
    pub fn ok(&self, kind: OpKind) -> usize {
        self.operations.get(&kind).map_or(0, |counts| counts[0])
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &self.options;
        writeln!(
            f,
            "nemesis: seed {}, {:?} of faults, {} clients x {} locks on a {MEMBERS}-member etcd",
            o.seed, o.duration, o.clients, o.workload.locks
        )?;
        writeln!(f)?;
        writeln!(
            f,
            "{:<16} {:>8} {:>8} {:>8}",
            "operation", "ok", "failed", "unknown"
        )?;
        for (kind, [ok, failed, unknown]) in &self.operations {
            writeln!(f, "{:<16} {ok:>8} {failed:>8} {unknown:>8}", kind.name())?;
        }
        writeln!(f)?;
        writeln!(f, "{:<16} {:>8} {:>8}", "fault", "injected", "failed")?;
        for (kind, (injected, failed)) in &self.faults {
            writeln!(f, "{kind:<16} {injected:>8} {failed:>8}")?;
        }
        for error in &self.fault_errors {
            writeln!(f, "  {error}")?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "{:<54} {:>8} {:>10}",
            "invariant", "checked", "violations"
        )?;
        for check in &self.checks {
            writeln!(
                f,
                "{:<54} {:>8} {:>10}",
                check.name,
                check.checked,
                check.violations.len()
            )?;
        }
        writeln!(f)?;
        writeln!(f, "counters at the end: {:?}", self.counters)?;
        match self.converged_after {
            Some(after) => writeln!(
                f,
                "converged {:.2} s after the final heal",
                after.as_secs_f64()
            )?,
            None => writeln!(
                f,
                "did not converge within {CONVERGE_LIMIT:?} of the final heal"
            )?,
        }
        writeln!(f, "violations: {}", self.violations())?;
        for check in self.checks.iter().filter(|c| !c.violations.is_empty()) {
            writeln!(f)?;
            writeln!(f, "violated: {}", check.name)?;
            for violation in check.violations.iter().take(5) {
                writeln!(f, "  {violation}")?;
            }
        }
        Ok(())
    }
}

/// Why a run could not be carried out (not a violation: the run did not get that far).
#[derive(Debug)]
pub enum RunError {
    /// The harness could not start the cluster or a proxy.
    Harness(HarnessError),
    /// A client could not connect, or the final counters could not be read.
    Coord(coord::Error),
    /// A workload task panicked.
    Worker(String),
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::Harness(e) => write!(f, "harness: {e}"),
            RunError::Coord(e) => write!(f, "client: {e}"),
            RunError::Worker(e) => write!(f, "workload task: {e}"),
        }
    }
}

impl std::error::Error for RunError {}

impl From<HarnessError> for RunError {
    fn from(e: HarnessError) -> Self {
        RunError::Harness(e)
    }
}

impl From<coord::Error> for RunError {
    fn from(e: coord::Error) -> Self {
        RunError::Coord(e)
    }
}

/// Runs the nemesis as `options` say; see the [module docs](self).
///
/// # Errors
///
/// [`RunError`] if the run could not be carried out. Violations are not errors: they are in
/// the report.
pub async fn run(options: Options) -> Result<Report, RunError> {
    let cluster = EtcdCluster::start(MEMBERS).await?;
    let mut proxies = Vec::with_capacity(options.clients);
    let mut clients = Vec::with_capacity(options.clients);
    for _ in 0..options.clients {
        let through = cluster.proxies().await?;
        let config = through
            .client_config()
            .with_request_timeout(REQUEST_TIMEOUT);
        clients.push(Coord::connect(config).await?);
        proxies.push(through);
    }
    let observer = Coord::connect(cluster.client_config()).await?;
    let schedule = Schedule::generate(options.seed, options.duration, options.clients, MEMBERS);
    let mut nemesis = Nemesis::new(cluster, proxies);

    let history = History::new();
    let (stop, stopped) = watch::channel(false);
    let mut workers = Vec::new();
    for (c, coord) in clients.iter().enumerate() {
        for lock in 0..options.workload.locks {
            let process = Process {
                id: c * options.workload.locks + lock,
                lock,
                coord: coord.clone(),
            };
            let (workload, history, stopped) =
                (options.workload.clone(), history.clone(), stopped.clone());
            workers.push(tokio::spawn(async move {
                workload.run(process, options.seed, history, stopped).await
            }));
        }
    }

    let started = Instant::now();
    for step in &schedule.steps {
        tokio::time::sleep_until(started + step.at).await;
        let index = history.fault(FaultRecord {
            kind: step.fault.kind(),
            description: step.fault.to_string(),
            injected: history.now(),
            healed: None,
            error: None,
        });
        if let Err(e) = nemesis.inject(step.fault).await {
            history.healed(index, Some(format!("inject: {e}")));
            continue;
        }
        tokio::time::sleep(step.lasts).await;
        let healed = nemesis.heal(step.fault).await;
        history.healed(index, healed.err().map(|e| format!("heal: {e}")));
    }
    tokio::time::sleep_until(started + options.duration).await;

    let _ = stop.send(true);
    let mut fault_errors = Vec::new();
    if let Err(e) = nemesis.heal_all().await {
        fault_errors.push(format!("final heal: {e}"));
    }
    let converged_after = converge(&clients, &observer, options.workload.locks).await;

    let mut lost_checks = Vec::new();
    for worker in workers {
        lost_checks.extend(worker.await.map_err(|e| RunError::Worker(e.to_string()))?);
    }
    for check in lost_checks {
        check.await.map_err(|e| RunError::Worker(e.to_string()))?;
    }
    let counters = read_counters(&observer, options.workload.locks).await?;

    let ops = history.ops();
    let mut checks = locks::check(&ops, &counters);
    let mut converged = Check {
        name: "clients agree within the limit after the final heal",
        checked: options.clients,
        violations: Vec::new(),
    };
    if converged_after.is_none() {
        converged.violations.push(format!(
            "the clients did not all read the observer's counters within {CONVERGE_LIMIT:?}"
        ));
    }
    checks.push(converged);

    let mut faults: BTreeMap<&'static str, (usize, usize)> = BTreeMap::new();
    for record in history.faults() {
        let entry = faults.entry(record.kind).or_default();
        entry.0 += 1;
        if let Some(error) = &record.error {
            entry.1 += 1;
            if fault_errors.len() < 5 {
                fault_errors.push(format!("{}: {error}", record.description));
            }
        }
    }

    for client in clients.iter().chain([&observer]) {
        let _ = tokio::time::timeout(CLOSE_WAIT, client.close()).await;
    }
    drop(nemesis);
    Ok(Report {
        options,
        operations: history.outcome_counts(),
        faults,
        fault_errors,
        checks,
        converged_after,
        counters,
        history,
    })
}

/// The time until every client reads every counter as the observer does, in one round;
/// `None` past [`CONVERGE_LIMIT`].
async fn converge(clients: &[Coord], observer: &Coord, locks: usize) -> Option<Duration> {
    let healed = Instant::now();
    while healed.elapsed() < CONVERGE_LIMIT {
        if let Ok(expected) = read_counters_once(observer, locks).await {
            let mut agree = true;
            for client in clients {
                if read_counters_once(client, locks).await.ok().as_ref() != Some(&expected) {
                    agree = false;
                    break;
                }
            }
            if agree {
                return Some(healed.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

async fn read_counters_once(coord: &Coord, locks: usize) -> Result<Vec<u64>, String> {
    let mut values = Vec::with_capacity(locks);
    for lock in 0..locks {
        let (kv, _) = coord
            .store()
            .get(&counter_key(lock))
            .await
            .map_err(|e| e.to_string())?;
        values.push(locks::parse_counter(
            kv.as_ref().map(|kv| kv.value.as_slice()),
        )?);
    }
    Ok(values)
}

/// The counters, read straight from the cluster; retried while it settles.
async fn read_counters(observer: &Coord, locks: usize) -> Result<Vec<u64>, RunError> {
    let deadline = Instant::now() + CONVERGE_LIMIT;
    loop {
        match read_counters_once(observer, locks).await {
            Ok(values) => return Ok(values),
            Err(e) if Instant::now() >= deadline => {
                return Err(RunError::Coord(coord::Error::Backend {
                    key: counter_key(0),
                    reason: format!("cannot read the final counters: {e}"),
                }))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}
