//! One nemesis run, start to finish: a 3-member etcd, clients each connected through their
//! own [`Proxies`], every workload (locks, IDs, live config,
//! registry) on every client, the seeded fault schedule, and beside them a probe client
//! whose lock and ID holders the [strike](super::strike) cuts off while they hold; then the
//! final heal, the wait for [convergence](super::converge), the checks and the [`Report`].
//!
//! Every client runs without the periodic resync (`sync_interval` = never): a watch that
//! failed to resume would otherwise be hidden by the next relist, and the staleness check
//! would have nothing to catch.

use std::collections::BTreeMap;
use std::time::Duration;

use coord::registry::ServiceCache;
use coord::testing::{EtcdCluster, Proxies};
use coord::{ClientConfig, Coord, Instance, Registration};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::converge::{
    config_agrees, converge, converged, counters_agree, read_counters_once, read_markers,
    read_text, registry_agrees, settle,
};
use super::election::{self, Candidate, ElectionWorkload};
use super::faults::{Nemesis, Schedule};
use super::history::{FaultRecord, History};
use super::ids::{self, IdProcess, IdWorkload};
use super::live_config::{self, ConfigWorkload, Split};
use super::locks::{self, LockWorkload, Process};
use super::registry::{self, RegistryProcess, RegistryWorkload};
use super::releases::{self, Flags, ReleaseWorkload, Releaser};
use super::report::{Report, RunError};
use super::strike::{Holding, Strike};

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
    /// The election workload.
    pub election: ElectionWorkload,
    /// The releases workload.
    pub releases: ReleaseWorkload,
    /// The strike on the probe client's holders.
    pub strike: Strike,
}

impl Options {
    /// These options with the lock and ID writes unfenced: a broken build, to show that the
    /// checkers catch what fences prevent. Such a run must report violations.
    #[must_use]
    pub fn unfenced(mut self) -> Self {
        self.workload.fenced = false;
        self.ids.fenced = false;
        self.election.fenced = false;
        self
    }
}

/// A client's config: through `proxies`, as instance `instance`, with the run's request
/// timeout and no periodic resync.
fn client_config(proxies: &Proxies, instance: &str) -> ClientConfig {
    proxies
        .client_config()
        .with_instance(Instance::new(instance))
        .with_request_timeout(REQUEST_TIMEOUT)
        .with_sync_interval(Duration::MAX)
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
            election: ElectionWorkload::default(),
            releases: ReleaseWorkload::default(),
            strike: Strike::default(),
        }
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
    for c in 0..options.clients {
        let through = cluster.proxies().await?;
        let instance = releases::instance_name(c);
        clients.push(Coord::connect(client_config(&through, &instance)).await?);
        proxies.push(through);
    }
    // The probe client: the random schedule leaves it alone, the strike does not.
    let (probe_client, probe_proxies) = (options.clients, cluster.proxies().await?);
    let probe = Coord::connect(client_config(&probe_proxies, "probe")).await?;
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
    let releases_seeder = next_process();
    options
        .releases
        .seed(releases_seeder, &observer, &history)
        .await?;
    let mut lives = Vec::with_capacity(clients.len());
    let mut release_lives = Vec::with_capacity(clients.len());
    for coord in &clients {
        lives.push(coord.live::<Split>().await?);
        release_lives.push(coord.live::<Flags>().await?);
    }

    let (stop, stopped) = watch::channel(false);
    let tasks = Tasks {
        seed: options.seed,
        history: history.clone(),
        stopped,
    };
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
                holding: None,
            };
            let workload = options.workload.clone();
            with_lost_checks.push(tasks.spawn(|seed, history, stop| async move {
                workload.run(process, seed, history, stop).await
            }));
        }
        for _ in 0..options.ids.holders_per_client {
            let process = IdProcess {
                id: next_process(),
                coord: coord.clone(),
                holding: None,
            };
            let workload = options.ids.clone();
            with_lost_checks.push(tasks.spawn(|seed, history, stop| async move {
                workload.run(process, seed, history, stop).await
            }));
        }
        let candidate = Candidate {
            id: next_process(),
            coord: coord.clone(),
            holding: None,
        };
        let workload = options.election.clone();
        with_lost_checks.push(tasks.spawn(|seed, history, stop| async move {
            workload.run(candidate, seed, history, stop).await
        }));
        let releaser = Releaser {
            id: next_process(),
            client: c,
            clients: options.clients,
            coord: coord.clone(),
            observer: observer.clone(),
        };
        let workload = options.releases.clone();
        others.push(tasks.spawn(|seed, history, stop| async move {
            workload.release(releaser, seed, history, stop).await;
        }));
        let (workload, reader, live) = (
            options.releases.clone(),
            next_process(),
            release_lives[c].clone(),
        );
        others.push(tasks.spawn(|_, history, stop| async move {
            workload.read(reader, c, live, history, stop).await;
        }));
        let (workload, reader, live) = (options.config.clone(), next_process(), lives[c].clone());
        others.push(tasks.spawn(|_, history, stop| async move {
            workload.read(reader, c, live, history, stop).await;
        }));
        let registry_process = |id| RegistryProcess {
            id,
            client: c,
            coord: coord.clone(),
        };
        let (workload, registrar) = (options.registry.clone(), registry_process(next_process()));
        let id = registrar.id;
        registrars.push((
            id,
            tasks.spawn(|seed, history, stop| async move {
                workload.register(registrar, seed, history, stop).await
            }),
        ));
        let (workload, discoverer) = (options.registry.clone(), registry_process(next_process()));
        discoverers.push(tasks.spawn(|_, history, stop| async move {
            workload.discover(discoverer, history, stop).await
        }));
    }
    let (workload, writing_through) = (options.config.clone(), clients.clone());
    others.push(tasks.spawn(|seed, history, stop| async move {
        workload
            .write(writer, writing_through, seed, history, stop)
            .await;
    }));

    // The probe's holders hold until the strike takes their lease: they contend for lock 0,
    // the IDs and the election with everyone else, and write as often as the others do.
    let holding = Holding::default();
    let probe_lock = Process {
        id: next_process(),
        lock: 0,
        coord: probe.clone(),
        holding: Some(holding.clone()),
    };
    let workload = LockWorkload {
        increments_per_hold: usize::MAX,
        ..options.workload.clone()
    };
    with_lost_checks.push(tasks.spawn(|seed, history, stop| async move {
        workload.run(probe_lock, seed, history, stop).await
    }));
    let probe_id = IdProcess {
        id: next_process(),
        coord: probe.clone(),
        holding: Some(holding.clone()),
    };
    let workload = IdWorkload {
        writes_per_hold: usize::MAX,
        ..options.ids.clone()
    };
    with_lost_checks.push(tasks.spawn(|seed, history, stop| async move {
        workload.run(probe_id, seed, history, stop).await
    }));
    let probe_candidate = Candidate {
        id: next_process(),
        coord: probe.clone(),
        holding: Some(holding.clone()),
    };
    let workload = ElectionWorkload {
        writes_per_term: usize::MAX,
        ..options.election.clone()
    };
    with_lost_checks.push(tasks.spawn(|seed, history, stop| async move {
        workload.run(probe_candidate, seed, history, stop).await
    }));
    let strike = options.strike.clone();
    let striker = tasks.spawn(|_, history, stop| async move {
        // The lock holder, the ID holder and the candidate.
        strike
            .run(probe_client, probe_proxies, holding, 3, history, stop)
            .await;
    });

    let started = Instant::now();
    for step in &schedule.steps {
        tokio::time::sleep_until(started + step.at).await;
        let index = history.fault(FaultRecord {
            kind: step.fault.kind(),
            description: step.fault.to_string(),
            stalls: step.fault.stalls(),
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
    // A strike under way heals itself first.
    joined(striker).await?;
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
    let leader_log = settle(|| read_text(&observer, election::LOG_KEY)).await?;
    let records = settle(|| release_records(&observer)).await?;

    let ops = history.ops();
    let mut checks = locks::check(&ops, &counters);
    checks.push(converged(
        "the counters agree within the limit after the heal",
        options.clients,
        counters_after,
        || "the clients did not all read the observer's counters".to_owned(),
    ));
    checks.extend(ids::check(&ops, &markers));
    checks.extend(election::check(&ops, leader_log.as_deref()));
    checks.extend(releases::check(&ops, &records));
    checks.extend(live_config::check(&ops, &stored));
    checks.push(live_config::staleness(
        &ops,
        &history.faults(),
        options.config.staleness_bound,
    ));
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

    drop((held, caches, lives, release_lives));
    for client in clients.iter().chain([&probe, &observer]) {
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

/// Every record of the releases workload's prefix, oldest first.
async fn release_records(observer: &Coord) -> Result<Vec<releases::Record>, String> {
    let history = observer
        .config()
        .with_release_history(releases::KEEP_RECORDS)
        .history(releases::PREFIX, releases::KEEP_RECORDS)
        .await
        .map_err(|e| e.to_string())?;
    Ok(history.iter().rev().map(releases::Record::from).collect())
}

/// What every workload task starts with: the run's seed, its history and its stop signal.
struct Tasks {
    seed: u64,
    history: History,
    stopped: watch::Receiver<bool>,
}

impl Tasks {
    /// Spawns the task `work` makes of the seed, the history and the stop signal.
    fn spawn<T, F, Fut>(&self, work: F) -> JoinHandle<T>
    where
        F: FnOnce(u64, History, watch::Receiver<bool>) -> Fut,
        Fut: std::future::Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        tokio::spawn(work(self.seed, self.history.clone(), self.stopped.clone()))
    }
}
