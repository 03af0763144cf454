//! A tonic balance channel fed by a service's watch.
//!
//! tonic's `Channel::balance_channel` takes endpoint changes through a bounded mpsc queue that
//! its balancer reads only when a call is made (tonic's caveat: a removal takes effect on the
//! next call). So the service's watch task queues each channel's changes itself, before it
//! publishes the new state to anyone else: once any reader of the `Coord` has seen an instance
//! go, the next call through the channel cannot pick it. Changes are the difference between
//! what the channel has and what the snapshot holds, found from the instances that differ
//! between the last snapshot the channel took in whole and the new one (snapshots share
//! structure, so that costs O(k log n) for k changed instances, not O(n)); if the queue is full
//! (no calls for a while), a per-channel catch-up task waits for room and then sends the
//! differences to the latest snapshot, found by a full comparison, never a backlog of stale
//! changes.
//!
//! Each instance is one endpoint, `http://{address}`, or `https://{address}` with the
//! [`ChannelOptions::tls`] settings: the scheme is chosen by the caller, per channel, never
//! guessed from the address.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tokio::sync::Notify;
use tokio::sync::mpsc::Sender;
use tokio::sync::mpsc::error::TrySendError;
use tonic::transport::channel::Change;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tracing::Instrument;

use imbl::ordmap::DiffItem;

use super::ServiceInfo;
use super::discovery::{Follower, InstanceMap, ServiceSnapshot, Watched};

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

/// How [`Registry::channel_with`](super::Registry::channel_with) reaches a service: which
/// instances ([`filter`](Self::filter)) and whether over TLS ([`tls`](Self::tls)).
///
/// The default balances over every instance in **plain text** (`http://{address}`): no
/// encryption, no check of whom the calls reach. Set [`tls`](Self::tls) for calls that leave
/// a network you trust.
///
/// A [`ServiceFilter`] converts into options with only that filter, so
/// `channel_with(name, filter)` reads as before.
///
/// # Examples
///
/// ```
/// use coord::registry::{ChannelOptions, ServiceFilter};
/// use tonic::transport::{Certificate, ClientTlsConfig};
///
/// # let ca_pem = "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n";
/// let options = ChannelOptions::default()
///     .filter(ServiceFilter::default().version("2.0.0"))
///     .tls(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem)));
/// assert!(options.is_tls());
/// assert!(!ChannelOptions::from(ServiceFilter::default()).is_tls());
/// ```
#[derive(Clone, Default)]
pub struct ChannelOptions {
    filter: ServiceFilter,
    tls: Option<ClientTlsConfig>,
}

impl ChannelOptions {
    /// Only the instances that pass `filter` (the default: all of them).
    #[must_use]
    pub fn filter(mut self, filter: ServiceFilter) -> Self {
        self.filter = filter;
        self
    }

    /// Calls go over TLS with these settings: each instance is dialed at
    /// `https://{address}` and its certificate is checked against the CA certificates of
    /// `tls` (tonic's `ClientTlsConfig::ca_certificate`: give the CA that signed the services'
    /// certificates; no system roots are loaded) for the address's host, or for
    /// `ClientTlsConfig::domain_name` if set (one name for every instance, as when they share
    /// a certificate). A client identity (`ClientTlsConfig::identity`) is presented to
    /// services that ask for one (mutual TLS).
    #[must_use]
    pub fn tls(mut self, tls: ClientTlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// True if calls go over TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Checks that the TLS settings make a TLS client at all (their certificates and key
    /// parse), so a bad setting is an error of `channel_with`, not a warning per instance
    /// later.
    pub(crate) fn check(&self) -> crate::error::Result<()> {
        let Some(tls) = &self.tls else {
            return Ok(());
        };
        Endpoint::from_static("https://localhost")
            .tls_config(tls.clone())
            .map(drop)
            .map_err(|e| crate::error::Error::invalid_argument("tls", error_chain(&e)))
    }

    /// The endpoint of the instance at `address`: `https://` with the TLS settings,
    /// `http://` without.
    fn endpoint(&self, address: &str) -> Result<Endpoint, tonic::transport::Error> {
        match &self.tls {
            Some(tls) => {
                Endpoint::from_shared(format!("https://{address}"))?.tls_config(tls.clone())
            }
            None => Endpoint::from_shared(format!("http://{address}")),
        }
    }
}

impl From<ServiceFilter> for ChannelOptions {
    fn from(filter: ServiceFilter) -> Self {
        ChannelOptions::default().filter(filter)
    }
}

/// By hand: tonic's `ClientTlsConfig` prints its client identity's private key.
impl std::fmt::Debug for ChannelOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelOptions")
            .field("filter", &self.filter)
            .field(
                "tls",
                &self.tls.as_ref().map(|_| "<ClientTlsConfig, not shown>"),
            )
            .finish()
    }
}

/// An error and its sources on one line: tonic's transport errors say little at the top.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    std::iter::successors(Some(error), |e| e.source())
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ")
}

/// A balanced channel over the instances of `watched` that pass the options' filter, over
/// TLS if they say so.
pub(crate) fn balanced(name: &str, watched: Arc<Watched>, options: ChannelOptions) -> Channel {
    let (channel, changes) = Channel::balance_channel::<String>(CHANGE_BUFFER);
    let feed = Arc::new(Feed {
        options,
        closed: changes.clone(),
        state: tokio::sync::Mutex::new(FeedState {
            inserted: HashMap::new(),
            synced: None,
            changes,
        }),
        catch_up: Notify::new(),
    });
    watched.add_feed(Arc::clone(&feed) as Arc<dyn Follower>);
    let span =
        tracing::debug_span!("registry.channel", key = %super::service::service_prefix(name));
    tokio::spawn(catch_up(feed, watched).instrument(span));
    channel
}

/// The endpoint changes of one channel, fed by the service's watch task.
#[derive(Debug)]
pub(crate) struct Feed {
    options: ChannelOptions,
    /// A clone of the sender, to learn without the lock that the channel is gone.
    closed: Sender<Change<String, Endpoint>>,
    state: tokio::sync::Mutex<FeedState>,
    catch_up: Notify,
}

#[derive(Debug)]
struct FeedState {
    /// id → address of the endpoints queued for (or applied by) the balancer.
    inserted: HashMap<String, String>,
    /// The instances `inserted` is known to match (every step to them queued), so the next
    /// snapshot needs only its differences from them; `None` when unknown (nothing synced yet,
    /// or a sync stopped half-way), which calls for a full comparison.
    synced: Option<InstanceMap>,
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

impl Follower for Feed {
    /// Queues the changes that bring the channel to `snapshot`, without waiting: called by the
    /// watch task before it publishes `snapshot`, so a call made after anyone saw the change
    /// finds it queued. If the queue is full (no calls for a while) or a catch-up is running,
    /// the catch-up task finishes the job. Returns false once the channel is gone.
    fn sync(&self, snapshot: &ServiceSnapshot) -> bool {
        if self.closed.is_closed() {
            return false;
        }
        let Ok(mut state) = self.state.try_lock() else {
            self.catch_up.notify_one();
            return true;
        };
        let steps = match state.synced.take() {
            Some(synced) => {
                plan_changes(&state.inserted, &synced, &snapshot.instances, &self.options)
            }
            None => plan(&state.inserted, snapshot, &self.options),
        };
        for step in steps {
            match state.changes.try_send(step.change()) {
                Ok(()) => state.record(step),
                // `synced` stays unknown: the catch-up compares in full.
                Err(TrySendError::Full(_)) => {
                    self.catch_up.notify_one();
                    return true;
                }
                Err(TrySendError::Closed(_)) => return false,
            }
        }
        state.synced = Some(snapshot.instances.clone());
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
            let steps = plan(&state.inserted, &snapshot, &feed.options);
            if steps.is_empty() {
                state.synced = Some(snapshot.instances.clone());
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
/// `snapshot`, comparing every instance: O(n).
fn plan(
    inserted: &HashMap<String, String>,
    snapshot: &ServiceSnapshot,
    options: &ChannelOptions,
) -> Vec<Step> {
    let present = snapshot
        .instances
        .iter()
        .map(|(id, info)| (id, Some(&**info)));
    let absent = inserted
        .keys()
        .filter(|id| !snapshot.instances.contains_key(*id))
        .map(|id| (id, None));
    steps(inserted, present.chain(absent), options)
}

/// As [`plan`], for a channel holding `inserted`, which matches `synced`, given that the
/// instances are now `next`: only the instances that differ are looked at, and maps that
/// share structure are compared in O(k log n) for k differences.
fn plan_changes(
    inserted: &HashMap<String, String>,
    synced: &InstanceMap,
    next: &InstanceMap,
    options: &ChannelOptions,
) -> Vec<Step> {
    let changed = synced.diff(next).map(|item| match item {
        DiffItem::Add(id, info)
        | DiffItem::Update {
            new: (id, info), ..
        } => (id, Some(&**info)),
        DiffItem::Remove(id, _) => (id, None),
    });
    steps(inserted, changed, options)
}

/// The steps that bring the channel's endpoint for each id of `targets` to its instance
/// (`None`: gone), given the channel holds `inserted`: removals first, in id order, so a call
/// between two changes never picks a gone instance; then insertions in `targets` order.
fn steps<'a>(
    inserted: &HashMap<String, String>,
    targets: impl Iterator<Item = (&'a String, Option<&'a ServiceInfo>)>,
    options: &ChannelOptions,
) -> Vec<Step> {
    let mut removals = Vec::new();
    let mut insertions = Vec::new();
    for (id, info) in targets {
        let wanted = info.filter(|info| options.filter.matches(info));
        let has = inserted.get(id);
        if let Some(address) = has
            && wanted.is_none_or(|info| info.address != *address)
        {
            removals.push(id);
        }
        if let Some(info) = wanted
            && has != Some(&info.address)
        {
            insertions.push((id, info));
        }
    }
    removals.sort();
    let mut plan: Vec<Step> = removals
        .into_iter()
        .map(|id| Step::Remove { id: id.clone() })
        .collect();
    for (id, info) in insertions {
        match options.endpoint(&info.address) {
            Ok(endpoint) => plan.push(Step::Insert {
                id: id.clone(),
                address: info.address.clone(),
                endpoint: Box::new(endpoint),
            }),
            Err(e) => tracing::warn!(
                id = id.as_str(),
                address = info.address.as_str(),
                tls = options.is_tls(),
                error = %error_chain(&e),
                "no endpoint for the instance's address (not a URI authority, or no TLS name \
                 for it); not balanced over"
            ),
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(infos: &[ServiceInfo]) -> ServiceSnapshot {
        ServiceSnapshot::new(
            1,
            infos
                .iter()
                .map(|i| (i.id.clone(), Arc::new(i.clone())))
                .collect(),
        )
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
    fn plan_changes_matches_the_full_plan_looking_only_at_changed_instances() {
        let filter = ChannelOptions::from(ServiceFilter::default().version("1"));
        let infos: Vec<ServiceInfo> = (0..100)
            .map(|i| {
                ServiceInfo::new("api", format!("i{i:03}"), format!("10.0.0.{i}:1"))
                    .with_version("1")
            })
            .collect();
        let synced = snapshot(&infos);
        let inserted: HashMap<String, String> = infos
            .iter()
            .map(|i| (i.id.clone(), i.address.clone()))
            .collect();
        let mut next = synced.instances.clone();
        next.insert("i007".into(), Arc::new(infos[7].clone().with_version("2")));
        next.insert(
            "i042".into(),
            Arc::new(ServiceInfo::new("api", "i042", "10.0.1.42:1").with_version("1")),
        );
        next.remove("i099");
        next.insert(
            "i100".into(),
            Arc::new(ServiceInfo::new("api", "i100", "10.0.0.100:1").with_version("1")),
        );
        let changed = plan_changes(&inserted, &synced.instances, &next, &filter);
        let full = plan(&inserted, &ServiceSnapshot::new(2, next.clone()), &filter);
        let expected = vec![
            "-i007",
            "-i042",
            "-i099",
            "+i042=http://10.0.1.42:1/",
            "+i100=http://10.0.0.100:1/",
        ];
        assert_eq!(describe(&changed), expected);
        assert_eq!(describe(&full), expected);
        // An instance that did not change between the snapshots is not looked at, however the
        // channel stands on it (the full plan would re-insert it).
        let mut drifted = inserted.clone();
        drifted.remove("i001");
        assert_eq!(
            describe(&plan_changes(&drifted, &synced.instances, &next, &filter)),
            expected
        );
    }

    #[test]
    fn endpoints_are_https_with_tls_and_http_without() {
        let info = ServiceInfo::new("api", "a", "10.0.0.1:50051");
        let plain = ChannelOptions::default();
        let tls = ChannelOptions::default().tls(ClientTlsConfig::new());
        let empty = HashMap::new();
        let snapshot = snapshot(std::slice::from_ref(&info));
        assert_eq!(
            describe(&plan(&empty, &snapshot, &plain)),
            vec!["+a=http://10.0.0.1:50051/"]
        );
        assert_eq!(
            describe(&plan(&empty, &snapshot, &tls)),
            vec!["+a=https://10.0.0.1:50051/"]
        );
        // A filter converted into options stays plain text.
        let filtered = ChannelOptions::from(ServiceFilter::default());
        assert_eq!(
            filtered.endpoint("h:1").unwrap().uri().scheme_str(),
            Some("http")
        );
    }

    #[test]
    fn tls_settings_that_make_no_client_are_refused_and_keys_are_not_shown() {
        let key = "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n";
        let cert = "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n";
        let options = ChannelOptions::default()
            .tls(ClientTlsConfig::new().identity(tonic::transport::Identity::from_pem(cert, key)));
        match options.check() {
            Err(crate::error::Error::InvalidArgument { field, .. }) => assert_eq!(field, "tls"),
            other => panic!("expected InvalidArgument on tls, got {other:?}"),
        }
        let shown = format!("{options:?}");
        // tonic's own Debug prints the key's bytes (`key: [45, 45, …]`).
        assert!(
            !shown.contains("key") && !shown.contains("45, 45"),
            "{shown}"
        );
        assert!(shown.contains("not shown"), "{shown}");
        assert!(ChannelOptions::default().check().is_ok());
        assert!(
            ChannelOptions::default()
                .tls(ClientTlsConfig::new())
                .check()
                .is_ok()
        );
    }

    #[test]
    fn plan_removes_first_and_follows_address_and_filter() {
        let a = ServiceInfo::new("api", "a", "10.0.0.1:1").with_version("1");
        let b = ServiceInfo::new("api", "b", "10.0.0.2:1").with_version("2");
        let filter = ChannelOptions::from(ServiceFilter::default().version("1"));
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
