//! One nemesis run, start to finish: a 3-member etcd, clients each connected through their
//! own [`Proxies`](coord::testing::Proxies), every workload (locks, IDs, live config,
//! registry) on every client, the seeded fault schedule; then the final heal, the wait for
//! convergence, the checks and the [`Report`].
//!
//! After the final heal each workload must converge, and the report gives the time from the
//! end of the heal until it did: the counters when every client reads every counter as a
//! client connected straight to the cluster does, in one round; the live config when every
//! client's `Live` shows the value stored in etcd; the registry when every client's
//! `discover` and a direct read list exactly the registrations still held. A workload that
//! does not converge within [`CONVERGE_LIMIT`] is a violation.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::future::Future;
use std::time::Duration;

use coord::config::Live;
use coord::registry::ServiceCache;
use coord::testing::{EtcdCluster, HarnessError};
use coord::{Coord, Registration};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::check::Check;
use super::faults::{Nemesis, Schedule};
use super::history::{FaultRecord, History, OpKind};
use super::ids::{self, IdProcess, IdWorkload};
use super::live_config::{self, ConfigWorkload, Split};
use super::locks::{self, counter_key, LockWorkload, Process};
use super::registry::{self, RegistryProcess, RegistryWorkload};

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
    /// The IDs workload.
    pub ids: IdWorkload,
    /// The live-config workload.
    pub config: ConfigWorkload,
    /// The registry workload.
    pub registry: RegistryWorkload,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            duration: Duration::from_secs(60),
            seed: 42,
            clients: 3,
            workload: LockWorkload::default(),
            ids: IdWorkload::default(),
            config: ConfigWorkload::default(),
            registry: RegistryWorkload::default(),
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
    /// Per workload, the time from the end of the final heal until it converged (see the
    /// [module docs](self)); `None` if it did not within [`CONVERGE_LIMIT`].
    pub converged_after: BTreeMap<&'static str, Option<Duration>>,
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
            "nemesis: seed {}, {:?} of faults on a {MEMBERS}-member etcd; {} clients, each with \
             {} lock holders, {} ID holders ({} IDs), a config reader, a registrar and a \
             discoverer; one config writer",
            o.seed, o.duration, o.clients, o.workload.locks, o.ids.holders_per_client, o.ids.max_id
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
            "{:<58} {:>8} {:>10}",
            "invariant", "checked", "violations"
        )?;
        for check in &self.checks {
            writeln!(
                f,
                "{:<58} {:>8} {:>10}",
                check.name,
                check.checked,
                check.violations.len()
            )?;
        }
        writeln!(f)?;
        writeln!(f, "counters at the end: {:?}", self.counters)?;
        writeln!(f, "time to converge after the final heal:")?;
        for (workload, after) in &self.converged_after {
            match after {
                Some(after) => writeln!(f, "  {workload:<14} {:>6.2} s", after.as_secs_f64())?,
                None => writeln!(f, "  {workload:<14} not within {CONVERGE_LIMIT:?}")?,
            }
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
    let mut processes = 0..;
    let mut next_process = || processes.next().unwrap_or(usize::MAX);
    // Every `Live` binds before the faults begin, which needs the config's keys in place.
    let writer = next_process();
    options
        .config
        .seed(writer, &observer, options.seed, &history)
        .await?;
    let mut lives = Vec::with_capacity(clients.len());
    for coord in &clients {
        lives.push(coord.live::<Split>().await?);
    }

    let (stop, stopped) = watch::channel(false);
    let mut with_lost_checks: Vec<JoinHandle<Vec<JoinHandle<()>>>> = Vec::new();
    let mut others: Vec<JoinHandle<()>> = Vec::new();
    let mut registrars: Vec<(usize, JoinHandle<Vec<Registration>>)> = Vec::new();
    let mut discoverers: Vec<JoinHandle<Option<ServiceCache>>> = Vec::new();
    for (c, coord) in clients.iter().enumerate() {
        for lock in 0..options.workload.locks {
            let process = Process {
                id: next_process(),
                lock,
                coord: coord.clone(),
            };
            let (workload, history, stopped) =
                (options.workload.clone(), history.clone(), stopped.clone());
            with_lost_checks.push(tokio::spawn(async move {
                workload.run(process, options.seed, history, stopped).await
            }));
        }
        for _ in 0..options.ids.holders_per_client {
            let process = IdProcess {
                id: next_process(),
                coord: coord.clone(),
            };
            let (workload, history, stopped) =
                (options.ids.clone(), history.clone(), stopped.clone());
            with_lost_checks.push(tokio::spawn(async move {
                workload.run(process, options.seed, history, stopped).await
            }));
        }
        let (workload, history_, stopped_) =
            (options.config.clone(), history.clone(), stopped.clone());
        let (reader, live) = (next_process(), lives[c].clone());
        others.push(tokio::spawn(async move {
            workload.read(reader, live, history_, stopped_).await;
        }));
        let registry_process = |id| RegistryProcess {
            id,
            client: c,
            coord: coord.clone(),
        };
        let registrar = registry_process(next_process());
        let (workload, history_, stopped_) =
            (options.registry.clone(), history.clone(), stopped.clone());
        registrars.push((
            registrar.id,
            tokio::spawn(async move {
                workload
                    .register(registrar, options.seed, history_, stopped_)
                    .await
            }),
        ));
        let discoverer = registry_process(next_process());
        let (workload, history_, stopped_) =
            (options.registry.clone(), history.clone(), stopped.clone());
        discoverers.push(tokio::spawn(async move {
            workload.discover(discoverer, history_, stopped_).await
        }));
    }
    let (workload, history_, stopped_, writing_through) = (
        options.config.clone(),
        history.clone(),
        stopped.clone(),
        clients.clone(),
    );
    others.push(tokio::spawn(async move {
        workload
            .write(writer, writing_through, options.seed, history_, stopped_)
            .await;
    }));

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
    let healed = Instant::now();

    // The config writer and the registrars stop changing things before convergence is judged.
    for worker in others {
        joined(worker).await?;
    }
    // The discoverers' watch caches stay, so that `discover` answers from them at the end.
    let mut caches = Vec::new();
    for discoverer in discoverers {
        caches.extend(joined(discoverer).await?);
    }
    let mut held: Vec<(usize, Registration)> = Vec::new();
    for (process, registrar) in registrars {
        held.extend(joined(registrar).await?.into_iter().map(|r| (process, r)));
    }
    let expected = registry::expected(held.iter().map(|(_, r)| r));
    let ((counters_after, _), (config_after, config_last), (registry_after, registry_last)) = tokio::join!(
        converge(healed, || counters_agree(
            &clients,
            &observer,
            options.workload.locks
        )),
        converge(healed, || config_agrees(&lives, &observer)),
        converge(healed, || registry_agrees(&clients, &observer, &expected)),
    );
    for (process, registration) in &held {
        registry::kept(*process, registration, &history);
    }

    let mut lost_checks = Vec::new();
    for worker in with_lost_checks {
        lost_checks.extend(joined(worker).await?);
    }
    for check in lost_checks {
        joined(check).await?;
    }
    let counters = settle(|| read_counters_once(&observer, options.workload.locks)).await?;
    let markers = settle(|| read_markers(&observer, options.ids.max_id)).await?;
    let stored = settle(|| live_config::stored(&observer)).await?;

    let ops = history.ops();
    let mut checks = locks::check(&ops, &counters);
    checks.push(converged(
        "the counters agree within the limit after the heal",
        options.clients,
        counters_after,
        || "the clients did not all read the observer's counters".to_owned(),
    ));
    checks.extend(ids::check(&ops, &markers));
    checks.extend(live_config::check(&ops, &stored));
    checks.push(converged(
        "every Live shows the stored value after the heal",
        options.clients,
        config_after,
        || format!("the Lives still differ from etcd: {config_last:?}"),
    ));
    checks.extend(registry::check(&ops));
    checks.push(converged(
        "discover lists exactly the live instances after the heal",
        options.clients + 1,
        registry_after,
        || format!("expected {expected:?}; {registry_last:?}"),
    ));

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

    drop((held, caches, lives));
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
        converged_after: BTreeMap::from([
            ("counters", counters_after),
            ("live config", config_after),
            ("registry", registry_after),
        ]),
        counters,
        history,
    })
}

/// The outcome of a task, or why it has none.
async fn joined<T>(task: JoinHandle<T>) -> Result<T, RunError> {
    task.await.map_err(|e| RunError::Worker(e.to_string()))
}

/// The convergence check of one workload: a violation if it did not converge.
fn converged(
    name: &'static str,
    checked: usize,
    after: Option<Duration>,
    why_not: impl FnOnce() -> String,
) -> Check {
    let mut check = Check::new(name);
    check.checked = checked;
    if after.is_none() {
        check
            .violations
            .push(format!("not within {CONVERGE_LIMIT:?}: {}", why_not()));
    }
    check
}

/// Asks `agree` every 100 ms until it says `Ok`; returns the time since `healed` then (`None`
/// past [`CONVERGE_LIMIT`]) and the last disagreement.
async fn converge<F, Fut>(healed: Instant, mut agree: F) -> (Option<Duration>, Option<String>)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let mut last = None;
    while healed.elapsed() < CONVERGE_LIMIT {
        match agree().await {
            Ok(()) => return (Some(healed.elapsed()), None),
            Err(why) => last = Some(why),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (None, last)
}

/// Whether every client reads every counter as the observer does, in one round.
async fn counters_agree(clients: &[Coord], observer: &Coord, locks: usize) -> Result<(), String> {
    let expected = read_counters_once(observer, locks).await?;
    for (c, client) in clients.iter().enumerate() {
        let read = read_counters_once(client, locks).await?;
        if read != expected {
            return Err(format!("c{c} reads {read:?}, etcd holds {expected:?}"));
        }
    }
    Ok(())
}

/// Whether every client's `Live` shows the config value stored in etcd.
async fn config_agrees(lives: &[Live<Split>], observer: &Coord) -> Result<(), String> {
    let stored = live_config::stored(observer).await?;
    for (c, live) in lives.iter().enumerate() {
        let shown = live.load_full();
        if *shown != stored {
            return Err(format!("c{c} shows {shown:?}, etcd holds {stored:?}"));
        }
    }
    Ok(())
}

/// Whether every client's `discover` and a direct read (the observer watches nothing, so it
/// reads etcd) list exactly `expected`.
async fn registry_agrees(
    clients: &[Coord],
    observer: &Coord,
    expected: &BTreeSet<String>,
) -> Result<(), String> {
    for (name, coord) in clients
        .iter()
        .enumerate()
        .map(|(c, coord)| (format!("c{c}"), coord))
        .chain([("etcd".to_owned(), observer)])
    {
        let found = registry::discovered(coord)
            .await
            .map_err(|e| format!("{name}: {e}"))?;
        if found != *expected {
            return Err(format!("{name} discovers {found:?}"));
        }
    }
    Ok(())
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

/// Every ID's marker (`None` if never written).
async fn read_markers(coord: &Coord, max_id: u32) -> Result<Vec<Option<String>>, String> {
    let mut markers = Vec::new();
    for id in 0..max_id {
        let (kv, _) = coord
            .store()
            .get(&ids::marker_key(id))
            .await
            .map_err(|e| e.to_string())?;
        markers.push(kv.map(|kv| String::from_utf8_lossy(&kv.value).into_owned()));
    }
    Ok(markers)
}

/// What `read` reads from the cluster at the end, retried while it settles.
async fn settle<T, F, Fut>(mut read: F) -> Result<T, RunError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + CONVERGE_LIMIT;
    loop {
        match read().await {
            Ok(value) => return Ok(value),
            Err(e) if Instant::now() >= deadline => {
                return Err(RunError::Coord(coord::Error::Backend {
                    key: "/nemesis/".into(),
                    reason: format!("cannot read the final state: {e}"),
                }))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}
