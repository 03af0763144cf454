//! The registry workload and its checker.
//!
//! **Workload.** On each client a registrar registers instances of one service (each with a
//! fresh id, on a lease coord keeps alive and re-registers if it is lost) and deregisters
//! some of them at random, keeping a few registered; and a discoverer keeps the service
//! watched (`Registry::cache`) and calls `discover` every few milliseconds. At the end the
//! registrars hand back the registrations they still hold, for the final check.
//!
//! **Checker.**
//! - `discover` lists only instances that were registered;
//! - a registration that no other lease took over never ends: `lost()` stays pending (each
//!   id is registered once, so no other lease ever writes its key; a lost lease is repaired
//!   by registering again, which `lost()` does not report, as its docs say);
//! - after the final heal, within the bound, every client's `discover` and a direct read list
//!   exactly the registrations still held: every live one, and none deregistered or whose
//!   register failed (the runner measures this, see [`expected`] and [`discovered`]).

use std::collections::BTreeSet;
use std::time::Duration;

use coord::registry::{ServiceCache, ServiceInfo};
use coord::{Coord, Registration};
use futures::FutureExt;
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use tokio::sync::watch;

use super::check::{excerpt, Check};
use super::history::{History, Op, OpKind, Outcome, Payload};

/// The service the instances register as.
pub const SERVICE: &str = "nemesis";

/// The settings of the registry workload.
#[derive(Clone, Debug)]
pub struct RegistryWorkload {
    /// The lease TTL of each registration.
    pub ttl: Duration,
    /// How many registrations a registrar keeps at most.
    pub max_live: usize,
    /// The shortest and longest wait between two changes of a registrar.
    pub change_every: (Duration, Duration),
    /// How often a discoverer calls `discover`.
    pub discover_every: Duration,
    /// A call that has not answered after this long is recorded as unknown and abandoned.
    pub hang: Duration,
}

impl Default for RegistryWorkload {
    fn default() -> Self {
        RegistryWorkload {
            // etcd's minimum: long faults outlast it, and the instance registers again.
            ttl: Duration::from_secs(2),
            max_live: 3,
            change_every: (Duration::from_millis(200), Duration::from_millis(600)),
            discover_every: Duration::from_millis(100),
            hang: Duration::from_secs(30),
        }
    }
}

/// One registrar or discoverer: `coord` is client `client`.
#[derive(Clone, Debug)]
pub struct RegistryProcess {
    /// Its number in the history.
    pub id: usize,
    /// Which client it is on (it names the instances it registers).
    pub client: usize,
    /// Its client.
    pub coord: Coord,
}

impl RegistryWorkload {
    /// The registrar: registers and deregisters until `stop` turns true; returns the
    /// registrations it still holds (dropping them deregisters them).
    pub async fn register(
        &self,
        process: RegistryProcess,
        seed: u64,
        history: History,
        mut stop: watch::Receiver<bool>,
    ) -> Vec<Registration> {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed ^ (process.id as u64 + 1));
        let registry = process.coord.registry();
        let mut live: Vec<Registration> = Vec::new();
        let mut next = 0;
        while !*stop.borrow_and_update() {
            let deregister =
                live.len() >= self.max_live || (!live.is_empty() && rng.random_bool(0.4));
            if deregister {
                let registration = live.swap_remove(rng.random_range(0..live.len()));
                self.deregister(&process, registration, &history).await;
            } else {
                let id = format!("c{}-{next}", process.client);
                next += 1;
                let info = ServiceInfo::new(SERVICE, id.as_str(), "127.0.0.1:9");
                let pending = history.begin(process.id, OpKind::Register, instance(&id));
                match tokio::time::timeout(self.hang, registry.register(info, self.ttl)).await {
                    Ok(Ok(registration)) => {
                        pending.ok(|_| {});
                        live.push(registration);
                    }
                    Ok(Err(e)) => pending.end(Outcome::of_write_error(&e), |p| {
                        p.error = Some(e.to_string());
                    }),
                    Err(_) => pending.end(Outcome::Unknown, |p| {
                        p.error = Some(format!("no answer within {:?}", self.hang));
                    }),
                }
            }
            let (least, most) = self.change_every;
            tokio::time::sleep(rng.random_range(least..=most)).await;
        }
        live
    }

    async fn deregister(
        &self,
        process: &RegistryProcess,
        registration: Registration,
        history: &History,
    ) {
        let id = registration.info().id.clone();
        kept(process.id, &registration, history);
        let pending = history.begin(process.id, OpKind::Deregister, instance(&id));
        // A `SessionLost`: its lease was lost and it had not registered again yet, so there
        // was nothing to remove.
        pending.released(self.hang, registration.deregister()).await;
    }

    /// The discoverer: keeps the service watched and discovers until `stop` turns true.
    /// Returns the watch-fed cache (if it could start one), so that the final check reads
    /// from it too.
    pub async fn discover(
        &self,
        process: RegistryProcess,
        history: History,
        mut stop: watch::Receiver<bool>,
    ) -> Option<ServiceCache> {
        let registry = process.coord.registry();
        let mut cache = None;
        while !*stop.borrow_and_update() {
            if cache.is_none() {
                // Starting the watch reads etcd, which fails while the client is cut off.
                cache = tokio::time::timeout(self.hang, registry.cache(SERVICE))
                    .await
                    .ok()
                    .and_then(Result::ok);
            }
            let pending = history.begin(process.id, OpKind::Discover, Payload::default());
            match tokio::time::timeout(self.hang, registry.discover(SERVICE)).await {
                Ok(Ok(instances)) => {
                    let found = instances.iter().map(|info| info.id.clone()).collect();
                    pending.ok(|p| p.found = Some(found));
                }
                Ok(Err(e)) => pending.failed(e),
                Err(_) => pending.failed(format!("no answer within {:?}", self.hang)),
            }
            tokio::time::sleep(self.discover_every).await;
        }
        cache
    }
}

/// Records whether `registration` is still going: no other lease wrote its key, so its
/// `lost()` must not have resolved.
pub fn kept(process: usize, registration: &Registration, history: &History) {
    let pending = history.begin(
        process,
        OpKind::RegistrationKept,
        instance(&registration.info().id),
    );
    match registration.lost().now_or_never() {
        None => pending.ok(|_| {}),
        Some(lost) => pending.failed(format!("lost() resolved: {lost}")),
    }
}

fn instance(id: &str) -> Payload {
    Payload {
        text: Some(id.to_owned()),
        ..Payload::default()
    }
}

/// The ids that must be discoverable at the end: those of `held`.
pub fn expected<'a>(held: impl IntoIterator<Item = &'a Registration>) -> BTreeSet<String> {
    held.into_iter().map(|r| r.info().id.clone()).collect()
}

/// The ids `coord` discovers now.
///
/// # Errors
///
/// What `discover` returns.
pub async fn discovered(coord: &Coord) -> coord::Result<BTreeSet<String>> {
    let instances = coord.registry().discover(SERVICE).await?;
    Ok(instances.iter().map(|info| info.id.clone()).collect())
}

/// Checks the registry workload's in-run invariants (see the [module docs](self)) over
/// `ops`; the final one is the runner's.
pub fn check(ops: &[Op]) -> Vec<Check> {
    let mut known = Check::new("discover lists only registered instances");
    let mut kept = Check::new("a registration no one took over never ends");

    let registers: Vec<&Op> = ops
        .iter()
        .filter(|op| op.kind == OpKind::Register)
        .collect();
    for discover in ops
        .iter()
        .filter(|op| op.kind == OpKind::Discover && op.outcome == Outcome::Ok)
    {
        for id in discover.payload.found.iter().flatten() {
            let register = registers
                .iter()
                .find(|r| r.payload.text.as_ref() == Some(id) && r.start <= discover.end);
            known.case(register.is_some(), || {
                format!(
                    "discover found {id:?}, which was never registered:\n{}",
                    excerpt([discover])
                )
            });
        }
    }
    for op in ops.iter().filter(|op| op.kind == OpKind::RegistrationKept) {
        kept.case(op.outcome == Outcome::Ok, || {
            format!(
                "a registration ended although no other lease wrote its key:\n{}",
                excerpt(
                    ops.iter()
                        .filter(|o| o.payload.text == op.payload.text && o.kind != OpKind::Discover)
                )
            )
        });
    }
    vec![known, kept]
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

    fn found(ids: &[&str]) -> Payload {
        Payload {
            found: Some(ids.iter().map(|id| (*id).to_owned()).collect()),
            ..Payload::default()
        }
    }

    fn violations(ops: &[Op]) -> Vec<(&'static str, usize)> {
        crate::nemesis::check::broken(check(ops))
    }

    fn clean() -> Vec<Op> {
        vec![
            op(OpKind::Register, 0, Outcome::Ok, instance("c0-0")),
            op(OpKind::Discover, 2, Outcome::Ok, found(&["c0-0"])),
            op(OpKind::RegistrationKept, 3, Outcome::Ok, instance("c0-0")),
        ]
    }

    #[test]
    fn a_clean_history_passes_every_invariant() {
        assert_eq!(violations(&clean()), vec![]);
        assert!(check(&clean()).iter().all(|c| c.checked > 0));
    }

    #[test]
    fn a_phantom_instance_is_a_violation() {
        let mut ops = clean();
        ops.push(op(
            OpKind::Discover,
            4,
            Outcome::Ok,
            found(&["c0-0", "c9-9"]),
        ));
        assert_eq!(
            violations(&ops),
            vec![("discover lists only registered instances", 1)]
        );
    }

    #[test]
    fn a_registration_that_ended_is_a_violation() {
        let mut ops = clean();
        ops.push(op(
            OpKind::RegistrationKept,
            5,
            Outcome::Failed,
            instance("c0-0"),
        ));
        assert_eq!(
            violations(&ops),
            vec![("a registration no one took over never ends", 1)]
        );
    }
}
