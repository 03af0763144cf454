//! A tonic balance channel fed by a service's watch.
//!
//! tonic's `Channel::balance_channel` takes endpoint changes through a bounded mpsc queue that
//! its balancer reads only when a call is made (tonic's caveat: a removal takes effect on the
//! next call). So the service's watch task queues each channel's changes itself, before it
//! publishes the new state to anyone else: once any reader of the `Coord` has seen an instance
//! go, the next call through the channel cannot pick it. Changes are the difference between
//! what the channel has and what the snapshot holds; if the queue is full (no calls for a
//! while), a per-channel catch-up task waits for room and then sends the differences to the
//! latest snapshot, never a backlog of stale changes.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::mpsc::Sender;
use tokio::sync::Notify;
use tonic::transport::channel::Change;
use tonic::transport::{Channel, Endpoint};
use tracing::Instrument;

use super::cache::{Snapshot, Watched};
use super::ServiceInfo;

/// How many endpoint changes may wait for the balancer.
const CHANGE_BUFFER: usize = 64;

/// Which instances a channel balances over: all of them by default, or those whose version
/// and metadata labels match.
///
/// # Examples
///
/// ```
/// use coord::registry::{ServiceFilter, ServiceInfo};
/// let filter = ServiceFilter::default().version("2.0.0").metadata("region", "eu-west");
/// let info = ServiceInfo::new("api", "1", "h:1").with_version("2.0.0").with_metadata("region", "eu-west");
/// assert!(filter.matches(&info));
/// assert!(!filter.matches(&info.clone().with_metadata("region", "us-east")));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceFilter {
    version: Option<String>,
    metadata: BTreeMap<String, String>,
}

impl ServiceFilter {
    /// Only instances of exactly this version.
    #[must_use]
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = Some(version.into());
        self
    }

    /// Only instances whose metadata has `key` set to `value` (all such labels must match).
    #[must_use]
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// True if `info` passes the filter.
    pub fn matches(&self, info: &ServiceInfo) -> bool {
        self.version.as_ref().is_none_or(|v| *v == info.version)
            && self
                .metadata
                .iter()
                .all(|(k, v)| info.metadata.get(k) == Some(v))
    }
}

/// A balanced channel over the instances of `watched` that pass `filter`.
pub(crate) fn balanced(name: &str, watched: Arc<Watched>, filter: ServiceFilter) -> Channel {
    let (channel, changes) = Channel::balance_channel::<String>(CHANGE_BUFFER);
    let feed = Arc::new(Feed {
        filter,
        closed: changes.clone(),
        state: tokio::sync::Mutex::new(FeedState {
            inserted: HashMap::new(),
            changes,
        }),
        catch_up: Notify::new(),
    });
    watched.add_feed(&feed);
    let span = tracing::debug_span!("registry.channel", key = %super::service_prefix(name));
    tokio::spawn(catch_up(feed, watched).instrument(span));
    channel
}

/// The endpoint changes of one channel, fed by the service's watch task.
#[derive(Debug)]
pub(crate) struct Feed {
    filter: ServiceFilter,
    /// A clone of the sender, to learn without the lock that the channel is gone.
    closed: Sender<Change<String, Endpoint>>,
    state: tokio::sync::Mutex<FeedState>,
    catch_up: Notify,
}

#[derive(Debug)]
struct FeedState {
    /// id → address of the endpoints queued for (or applied by) the balancer.
    inserted: HashMap<String, String>,
    changes: Sender<Change<String, Endpoint>>,
}

impl FeedState {
    fn record(&mut self, step: Step) {
        match step {
            Step::Insert { id, address, .. } => {
                tracing::debug!(
                    id = id.as_str(),
                    address = address.as_str(),
                    "endpoint added"
                );
                self.inserted.insert(id, address);
            }
            Step::Remove { id } => {
                tracing::debug!(id = id.as_str(), "endpoint removed");
                self.inserted.remove(&id);
            }
        }
    }
}

impl Feed {
    /// Queues the changes that bring the channel to `snapshot`, without waiting: called by the
    /// watch task before it publishes `snapshot`, so a call made after anyone saw the change
    /// finds it queued. If the queue is full (no calls for a while) or a catch-up is running,
    /// the catch-up task finishes the job. Returns false once the channel is gone.
    pub(crate) fn sync(&self, snapshot: &Snapshot) -> bool {
        if self.closed.is_closed() {
            return false;
        }
        let Ok(mut state) = self.state.try_lock() else {
            self.catch_up.notify_one();
            return true;
        };
        for step in plan(&state.inserted, snapshot, &self.filter) {
            match state.changes.try_send(step.change()) {
                Ok(()) => state.record(step),
                Err(TrySendError::Full(_)) => {
                    self.catch_up.notify_one();
                    return true;
                }
                Err(TrySendError::Closed(_)) => return false,
            }
        }
        true
    }
}

/// Waits for room in the queue and sends what [`Feed::sync`] could not, until the channel is
/// dropped. Holds `watched`, so the service stays watched while the channel lives.
async fn catch_up(feed: Arc<Feed>, watched: Arc<Watched>) {
    loop {
        tokio::select! {
            () = feed.catch_up.notified() => {}
            () = feed.closed.closed() => return,
        }
        let mut state = feed.state.lock().await;
        // Until the channel has the latest snapshot: it may move on while we wait for room.
        loop {
            let snapshot = watched.snapshot().borrow().clone();
            let steps = plan(&state.inserted, &snapshot, &feed.filter);
            if steps.is_empty() {
                break;
            }
            for step in steps {
                if state.changes.send(step.change()).await.is_err() {
                    return; // The channel is gone.
                }
                state.record(step);
            }
        }
    }
}

/// One change to send to the balancer.
#[derive(Debug)]
enum Step {
    Insert {
        id: String,
        address: String,
        endpoint: Box<Endpoint>,
    },
    Remove {
        id: String,
    },
}

impl Step {
    fn change(&self) -> Change<String, Endpoint> {
        match self {
            Step::Insert { id, endpoint, .. } => Change::Insert(id.clone(), (**endpoint).clone()),
            Step::Remove { id } => Change::Remove(id.clone()),
        }
    }
}

/// The changes that bring a channel holding `inserted` to the matching instances of
/// `snapshot`: removals first, so a call between two changes never picks a gone instance.
fn plan(
    inserted: &HashMap<String, String>,
    snapshot: &Snapshot,
    filter: &ServiceFilter,
) -> Vec<Step> {
    let wanted: BTreeMap<&String, &ServiceInfo> = snapshot
        .instances
        .iter()
        .filter(|(_, info)| filter.matches(info))
        .collect();
    let mut removals: Vec<&String> = inserted
        .iter()
        .filter(|(id, address)| wanted.get(id).is_none_or(|info| info.address != **address))
        .map(|(id, _)| id)
        .collect();
    removals.sort();
    let mut plan: Vec<Step> = removals
        .into_iter()
        .map(|id| Step::Remove { id: id.clone() })
        .collect();
    for (id, info) in wanted {
        if inserted.get(id) == Some(&info.address) {
            continue;
        }
        match Endpoint::from_shared(format!("http://{}", info.address)) {
            Ok(endpoint) => plan.push(Step::Insert {
                id: id.clone(),
                address: info.address.clone(),
                endpoint: Box::new(endpoint),
            }),
            Err(e) => tracing::warn!(
                id = id.as_str(),
                address = info.address.as_str(),
                error = %e,
                "instance address is not a valid URI authority; not balanced over"
            ),
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(infos: &[ServiceInfo]) -> Snapshot {
        Snapshot {
            revision: 1,
            instances: infos.iter().map(|i| (i.id.clone(), i.clone())).collect(),
        }
    }

    fn describe(plan: &[Step]) -> Vec<String> {
        plan.iter()
            .map(|step| match step {
                Step::Insert { id, endpoint, .. } => format!("+{id}={}", endpoint.uri()),
                Step::Remove { id } => format!("-{id}"),
            })
            .collect()
    }

    #[test]
    fn plan_removes_first_and_follows_address_and_filter() {
        let a = ServiceInfo::new("api", "a", "10.0.0.1:1").with_version("1");
        let b = ServiceInfo::new("api", "b", "10.0.0.2:1").with_version("2");
        let filter = ServiceFilter::default().version("1");
        let empty = HashMap::new();
        assert_eq!(
            describe(&plan(&empty, &snapshot(&[a.clone(), b.clone()]), &filter)),
            vec!["+a=http://10.0.0.1:1/"]
        );
        let mut has: HashMap<String, String> = HashMap::new();
        has.insert("a".into(), "10.0.0.1:1".into());
        assert!(plan(&has, &snapshot(std::slice::from_ref(&a)), &filter).is_empty());
        let moved = ServiceInfo::new("api", "a", "10.0.0.9:1").with_version("1");
        assert_eq!(
            describe(&plan(&has, &snapshot(&[moved]), &filter)),
            vec!["-a", "+a=http://10.0.0.9:1/"]
        );
        let upgraded = a.with_version("2");
        assert_eq!(
            describe(&plan(&has, &snapshot(&[upgraded]), &filter)),
            vec!["-a"]
        );
    }
}
