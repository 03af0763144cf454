//! A tonic balance channel fed by a service's watch.
//!
//! tonic's `Channel::balance_channel` takes endpoint changes through a bounded mpsc queue that
//! its balancer reads only when a call is made. So a feeding task per channel follows the
//! service's snapshot and sends the difference between what the channel has and what the
//! snapshot holds: if the queue is full (no calls for a while) it waits, and afterwards sends
//! the differences to the latest snapshot, never a backlog of stale changes.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tokio::sync::mpsc::Sender;
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
pub(crate) fn balanced(watched: Arc<Watched>, filter: ServiceFilter) -> Channel {
    let (channel, changes) = Channel::balance_channel::<String>(CHANGE_BUFFER);
    let span = tracing::debug_span!("registry.channel");
    tokio::spawn(feed(watched, filter, changes).instrument(span));
    channel
}

/// Sends the channel the differences to every new snapshot until the channel is dropped.
async fn feed(
    watched: Arc<Watched>,
    filter: ServiceFilter,
    changes: Sender<Change<String, Endpoint>>,
) {
    let mut snapshots = watched.snapshot();
    // id → address of the endpoints the channel has.
    let mut inserted: HashMap<String, String> = HashMap::new();
    loop {
        let snapshot: Arc<Snapshot> = Arc::clone(&snapshots.borrow_and_update());
        for step in plan(&inserted, &snapshot, &filter) {
            let change = match &step {
                Step::Insert { id, endpoint, .. } => {
                    Change::Insert(id.clone(), (**endpoint).clone())
                }
                Step::Remove { id } => Change::Remove(id.clone()),
            };
            if changes.send(change).await.is_err() {
                return; // The channel is gone.
            }
            match step {
                Step::Insert { id, address, .. } => {
                    tracing::debug!(
                        id = id.as_str(),
                        address = address.as_str(),
                        "endpoint added"
                    );
                    inserted.insert(id, address);
                }
                Step::Remove { id } => {
                    tracing::debug!(id = id.as_str(), "endpoint removed");
                    inserted.remove(&id);
                }
            }
        }
        tokio::select! {
            changed = snapshots.changed() => {
                if changed.is_err() {
                    return; // The watch is gone (cannot happen while `watched` is held).
                }
            }
            () = changes.closed() => return,
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
