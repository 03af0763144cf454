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
        markers.push(read_text(coord, &ids::marker_key(id)).await?);
    }
    Ok(markers)
}

/// The text at `key` (`None` if it does not exist).
pub async fn read_text(coord: &Coord, key: &str) -> Result<Option<String>, String> {
    let (kv, _) = coord.store().get(key).await.map_err(|e| e.to_string())?;
    Ok(kv.map(|kv| String::from_utf8_lossy(&kv.value).into_owned()))
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

#[cfg(test)]
mod tests {
    use coord::store::Store;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn converge_reports_when_the_clients_first_agree() {
        let healed = Instant::now();
        let mut asked = 0;
        let (after, last) = converge(healed, || {
            asked += 1;
            let answer = if asked < 4 {
                Err(format!("round {asked}"))
            } else {
                Ok(())
            };
            async move { answer }
        })
        .await;
        // Three disagreements 100 ms apart, then agreement.
        assert_eq!(after, Some(Duration::from_millis(300)));
        assert_eq!(last, None);
    }

    #[tokio::test(start_paused = true)]
    async fn converge_gives_up_at_the_limit_with_the_last_disagreement() {
        let (after, last) =
            converge(Instant::now(), || async { Err("c1 behind".to_owned()) }).await;
        assert_eq!(after, None);
        assert_eq!(last.as_deref(), Some("c1 behind"));
    }

    #[test]
    fn a_workload_that_did_not_converge_is_a_violation() {
        let check = converged("agree", 3, None, || "c1 behind".to_owned());
        assert_eq!(check.checked, 3);
        assert_eq!(check.violations.len(), 1);
        assert!(check.violations[0].contains("c1 behind"), "{check:?}");
        let check = converged("agree", 3, Some(Duration::from_secs(1)), || unreachable!());
        assert!(check.violations.is_empty());
    }

    #[tokio::test]
    async fn counters_and_config_agree_only_when_every_client_sees_what_etcd_holds() {
        // Two clients of one store agree; a client of another store does not.
        let store = Store::in_memory();
        let (a, b) = (Coord::from_store(&store), Coord::from_store(&store));
        let elsewhere = Coord::in_memory();
        a.store()
            .put(&counter_key(0), b"7".to_vec(), 0)
            .await
            .unwrap();
        assert_eq!(
            counters_agree(std::slice::from_ref(&b), &a, 1).await,
            Ok(())
        );
        let disagreement = counters_agree(&[b.clone(), elsewhere.clone()], &a, 1)
            .await
            .unwrap_err();
        assert!(disagreement.contains("c1 reads [0]"), "{disagreement}");

        let first = Split {
            seq: 1,
            a: 50,
            b: 25,
            c: 25,
        };
        a.config().publish(&first).await.unwrap();
        let live = b.live::<Split>().await.unwrap();
        assert_eq!(config_agrees(std::slice::from_ref(&live), &a).await, Ok(()));
        // Changed behind the Live's back (a second store it does not watch): not agreed.
        let other_live = {
            elsewhere.config().publish(&first).await.unwrap();
            elsewhere.live::<Split>().await.unwrap()
        };
        a.config()
            .publish(&Split {
                seq: 2,
                a: 10,
                b: 10,
                c: 80,
            })
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while config_agrees(std::slice::from_ref(&live), &a)
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "the watching Live catches up");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let stale = config_agrees(&[live, other_live], &a).await.unwrap_err();
        assert!(stale.starts_with("c1 shows"), "{stale}");
    }
}
