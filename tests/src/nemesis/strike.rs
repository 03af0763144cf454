//! The strike: a fault aimed at a holder, so that every run proves its fences refuse.
//!
//! The random schedule cuts clients off at random moments, which need not find anyone
//! holding a lock or an ID with a write on its way: a run could pass without one fenced write
//! refused and without one `lost()` reported, and so without showing the fences do anything.
//! The strike makes that happen on purpose, every [`Strike::every`]:
//!
//! 1. it waits until every holder on the probe client (a client of its own, which the random
//!    schedule leaves alone) holds what it contends for and keeps writing under it;
//! 2. it silences every connection of that client ([`FaultProxy::blackhole`]) for
//!    [`Strike::lasts`], longer than the holders' lease TTL and shorter than a request's
//!    timeout: the keep-alives stop, etcd lets the lease expire and another holder takes
//!    over, while the next fenced write of each struck holder waits in the proxy;
//! 3. it heals: the held writes reach etcd after the lease is gone, and their fences must
//!    refuse them; the holders must then see `lost()` resolve.
//!
//! Without fences (the runner's unfenced switch) those late writes apply over the next
//! holder's, which the lock and ID checkers must report.
//!
//! [`FaultProxy::blackhole`]: coord::testing::FaultProxy::blackhole

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use coord::testing::{FaultProxy, Proxies};
use tokio::sync::watch;
use tokio::time::Instant;

use super::history::{FaultRecord, History, Stalls};

/// How many of the probe client's holders hold now. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Holding(Arc<AtomicUsize>);

impl Holding {
    /// Counts one holder in until the returned guard is dropped.
    pub fn enter(&self) -> HoldingGuard {
        self.0.fetch_add(1, Ordering::SeqCst);
        HoldingGuard(self.clone())
    }

    /// How many hold now.
    pub fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// One holder counted in [`Holding`]; dropping it counts the holder out.
#[derive(Debug)]
pub struct HoldingGuard(Holding);

impl Drop for HoldingGuard {
    fn drop(&mut self) {
        (self.0).0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// When and how long to strike.
#[derive(Clone, Debug)]
pub struct Strike {
    /// The time between the end of one strike and the next.
    pub every: Duration,
    /// How long the probe client stays silent: over the holders' lease TTL, under a
    /// request's timeout (so a held write is answered after the heal, not abandoned).
    pub lasts: Duration,
    /// How long a strike waits for every holder to hold before it gives this turn up.
    pub wait_for_holders: Duration,
}

impl Default for Strike {
    fn default() -> Self {
        Strike {
            every: Duration::from_secs(10),
            lasts: Duration::from_secs(4),
            wait_for_holders: Duration::from_secs(10),
        }
    }
}

/// The description a strike is recorded under, and its kind in the report.
pub const KIND: &str = "strike";

impl Strike {
    /// Strikes client `client` (reached through `proxies`) whenever all `holders` of
    /// `holding` hold, until `stop` turns true; records each strike as a fault.
    pub async fn run(
        &self,
        client: usize,
        proxies: Proxies,
        holding: Holding,
        holders: usize,
        history: History,
        mut stop: watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(self.every) => {}
                _ = stop.wait_for(|stopped| *stopped) => return,
            }
            let deadline = Instant::now() + self.wait_for_holders;
            while holding.count() < holders && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if holding.count() < holders || *stop.borrow() {
                continue;
            }
            let index = history.fault(FaultRecord {
                kind: KIND,
                description: format!(
                    "strike c{client} while its {holders} holders hold: blackhole every member"
                ),
                stalls: Stalls::Client(client),
                injected: history.now(),
                healed: None,
                error: None,
            });
            proxies.iter().for_each(FaultProxy::blackhole);
            tokio::time::sleep(self.lasts).await;
            proxies.heal();
            history.healed(index, None);
        }
    }
}
