//! After the final heal each workload must converge, and the report gives the time from the
//! end of the heal until it did: the counters when every client reads every counter as a
//! client connected straight to the cluster does, in one round; the live config when every
//! client's `Live` shows the value stored in etcd; the registry when every client's
//! `discover` and a direct read list exactly the registrations still held. A workload that
//! does not converge within [`CONVERGE_LIMIT`] is a violation.

use std::collections::BTreeSet;
use std::future::Future;
use std::time::Duration;

use coord::config::Live;
use coord::Coord;
use tokio::time::Instant;

use super::check::Check;
use super::live_config::{self, Split};
use super::locks::{self, counter_key};
use super::report::RunError;
use super::{ids, registry};

/// How long the clients may take to agree after the final heal before it is a violation.
pub const CONVERGE_LIMIT: Duration = Duration::from_secs(60);

/// The convergence check of one workload: a violation if it did not converge.
pub fn converged(
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
pub async fn converge<F, Fut>(healed: Instant, mut agree: F) -> (Option<Duration>, Option<String>)
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
pub async fn counters_agree(
    clients: &[Coord],
    observer: &Coord,
    locks: usize,
) -> Result<(), String> {
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
pub async fn config_agrees(lives: &[Live<Split>], observer: &Coord) -> Result<(), String> {
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
pub async fn registry_agrees(
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

/// Every counter's value, one read each.
pub async fn read_counters_once(coord: &Coord, locks: usize) -> Result<Vec<u64>, String> {
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
pub async fn read_markers(coord: &Coord, max_id: u32) -> Result<Vec<Option<String>>, String> {
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
pub async fn settle<T, F, Fut>(mut read: F) -> Result<T, RunError>
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
