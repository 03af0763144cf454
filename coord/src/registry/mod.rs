//! Service registry and discovery: instances register under `/services/{name}/{id}` on a
//! lease; clients discover them, watch them come and go, and call them through a
//! load-balanced gRPC [`Channel`](tonic::transport::Channel).
//!
//! # What it promises
//!
//! - A [`Registration`] keeps its key as long as the process lives: its lease is renewed in the
//!   background, and if the lease is lost anyway (revoked, or expired during a partition) the
//!   instance registers again with a new lease, logging a warning. Dropping the `Registration`
//!   deregisters in the background; [`Registration::deregister`] does it now and reports errors.
//!   A crashed process's instance disappears when its TTL runs out.
//! - [`Registry::watch`] yields the service's state changes, starting with a
//!   [`ServiceEvent::Registered`] for every instance already there. It goes on across etcd
//!   restarts and compaction, and never reports the same state twice or skips a state change:
//!   after a gap it reports only the differences.
//! - Once a name is watched (by [`Registry::watch`], [`Registry::cache`] or
//!   [`Registry::channel`]), [`Registry::discover`] answers from that watch's cache without a
//!   round trip; otherwise it reads etcd. The cache trails etcd by the watch's delay.
//! - One store watch per watched name, however many watchers, caches and channels share it.
//!
//! # Examples
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> coord::Result<()> {
//! use std::time::Duration;
//! use coord::registry::ServiceInfo;
//!
//! let coord = coord::Coord::in_memory();
//! let registry = coord.registry();
//! let info = ServiceInfo::new("checkout", "checkout-1", "10.0.0.7:50051").with_version("1.4.2");
//! let registration = registry.register(info, Duration::from_secs(10)).await?;
//!
//! let instances = registry.discover("checkout").await?;
//! assert_eq!(instances.len(), 1);
//! assert_eq!(instances[0].address, "10.0.0.7:50051");
//!
//! registration.deregister().await?;
//! assert!(registry.discover("checkout").await?.is_empty());
//! # Ok(())
//! # }
//! ```

pub(crate) mod cache;
mod channel;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tracing::Instrument;

use crate::context::Context;
use crate::error::{Error, Result};
use crate::session::Session;
use crate::store::{KeyRange, RangeOptions};
use crate::sync::lock;

pub use cache::{ServiceCache, ServiceWatcher};
pub use channel::ServiceFilter;

/// The prefix all services live under.
pub const SERVICES_PREFIX: &str = "/services/";

/// The longest wait between two attempts to register again after a lost lease; also at most a
/// quarter of the TTL, so that after an outage the instance is back well before a lease that
/// etcd kept alive across the outage runs out.
const MAX_REREGISTER_BACKOFF: Duration = Duration::from_secs(5);

/// One instance of a service, as stored (JSON) at `/services/{name}/{id}`.
///
/// # Examples
///
/// ```
/// use coord::registry::ServiceInfo;
/// let info = ServiceInfo::new("checkout", "checkout-1", "127.0.0.1:50051")
///     .with_version("2.0.0")
///     .with_metadata("region", "eu-west");
/// assert!(info.validate().is_ok());
/// assert!(ServiceInfo::new("check/out", "1", "127.0.0.1:1").validate().is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ServiceInfo {
    /// Unique within the service; the last segment of the key.
    pub id: String,
    /// The service name; the middle segment of the key.
    pub name: String,
    /// Where to reach the instance: `host:port`.
    pub address: String,
    /// Free-form labels (region, zone, weight…); [`ServiceFilter`] can match on them.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// The instance's software version (empty if not set).
    #[serde(default)]
    pub version: String,
    /// When the instance first registered (RFC 3339 in JSON); `None` until registered.
    #[serde(default, with = "humantime_serde")]
    pub started_at: Option<SystemTime>,
}

impl ServiceInfo {
    /// An instance `id` of service `name` listening on `address` (`host:port`).
    pub fn new(name: impl Into<String>, id: impl Into<String>, address: impl Into<String>) -> Self {
        ServiceInfo {
            id: id.into(),
            name: name.into(),
            address: address.into(),
            metadata: BTreeMap::new(),
            version: String::new(),
            started_at: None,
        }
    }

    /// Sets the version.
    #[must_use]
    pub fn with_version(mut self, version: impl Into<String>) -> Self {
        self.version = version.into();
        self
    }

    /// Adds (or replaces) one metadata label.
    #[must_use]
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// The key this instance is stored at: `/services/{name}/{id}`.
    pub fn key(&self) -> String {
        instance_key(&self.name, &self.id)
    }

    /// Checks what [`Registry::register`] checks.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] naming the field: an empty `name` or `id`, one containing `/`,
    /// or an `address` that is not `host:port` with a port in 1..=65535.
    pub fn validate(&self) -> Result<()> {
        validate_segment("name", &self.name)?;
        validate_segment("id", &self.id)?;
        validate_address(&self.address)
    }
}

/// A change to a watched service, as [`Registry::watch`] yields it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServiceEvent {
    /// An instance appeared (or was already there when the watch started).
    Registered(ServiceInfo),
    /// An instance's stored info changed (address, metadata, version).
    Updated(ServiceInfo),
    /// An instance is gone (deregistered, unregistered, or its lease ran out); the info is the
    /// last one known.
    Unregistered(ServiceInfo),
}

impl ServiceEvent {
    /// The instance the event is about.
    pub fn info(&self) -> &ServiceInfo {
        match self {
            ServiceEvent::Registered(info)
            | ServiceEvent::Updated(info)
            | ServiceEvent::Unregistered(info) => info,
        }
    }

    /// The instance id.
    pub fn id(&self) -> &str {
        &self.info().id
    }
}

/// The service registry of one [`Coord`](crate::Coord); get it with
/// [`Coord::registry`](crate::Coord::registry). Cheap to clone.
#[derive(Clone, Debug)]
pub struct Registry {
    ctx: Arc<Context>,
}

impl Registry {
    pub(crate) fn new(ctx: Arc<Context>) -> Self {
        Registry { ctx }
    }

    /// Registers `info` under `/services/{name}/{id}` on a new lease of `ttl` and keeps it
    /// registered until the [`Registration`] is deregistered or dropped. `started_at` is set to
    /// now. An instance already stored under the same key is replaced.
    ///
    /// The lease is renewed every third of its TTL. If it is lost anyway (revoked, or expired
    /// because etcd could not be reached in time), a background task registers the same info
    /// again on a new lease, retrying with backoff until it succeeds, and logs a warning.
    /// The registration is listed in [`Coord::health`] as kind `"registration"`, name
    /// `{name}/{id}`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for a bad `info` (see [`ServiceInfo::validate`]) or a TTL under
    /// one second; [`Error::Closed`]; store errors from the lease grant or the put.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe in the sense that a registration may have been written; dropping the
    /// future revokes its lease in the background, so nothing is left behind.
    pub async fn register(&self, mut info: ServiceInfo, ttl: Duration) -> Result<Registration> {
        self.ctx.check_open()?;
        info.validate()?;
        crate::session::ttl_seconds(ttl)?;
        info.started_at = Some(SystemTime::now());
        let key = info.key();
        let value = serde_json::to_vec(&info)
            .map_err(|e| Error::invalid_argument("info", format!("cannot encode: {e}")))?;
        let span = tracing::info_span!("registry.register", key = key.as_str());
        let session = register_once(&self.ctx, &key, &value, ttl)
            .instrument(span.clone())
            .await?;
        let health_name = format!("{}/{}", info.name, info.id);
        self.ctx
            .track_session("registration", health_name.as_str(), &session);
        let shared = Arc::new(Shared {
            session: Mutex::new(session),
        });
        let task = tokio::spawn(
            keep_registered(
                Arc::clone(&self.ctx),
                key.clone(),
                value,
                ttl,
                health_name,
                Arc::clone(&shared),
            )
            .instrument(span),
        )
        .abort_handle();
        Ok(Registration {
            info,
            key,
            shared,
            task,
        })
    }

    /// Removes instance `id` of service `name`, whoever registered it: for clearing out an
    /// instance that is known dead before its lease runs out. Returns whether it existed.
    ///
    /// The lease is not revoked, so a live [`Registration`] elsewhere does not notice and does
    /// not register again; stop that process (or drop its `Registration`) to take it out for
    /// good.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for a bad name or id; [`Error::Closed`]; store errors.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe in that dropping the future leaves either the key deleted or untouched.
    pub async fn unregister(&self, name: &str, id: &str) -> Result<bool> {
        self.ctx.check_open()?;
        validate_segment("name", name)?;
        validate_segment("id", id)?;
        let key = instance_key(name, id);
        let span = tracing::info_span!("registry.unregister", key = key.as_str());
        let deleted = self
            .ctx
            .store
            .delete(&KeyRange::key(key.as_str()))
            .instrument(span)
            .await?;
        Ok(deleted.deleted > 0)
    }

    /// The live instances of service `name`, ordered by id.
    ///
    /// Served from the watch cache, with no round trip, while the name is watched (by
    /// [`watch`](Self::watch), [`cache`](Self::cache) or [`channel`](Self::channel) on this
    /// `Coord`); the cache may trail etcd by the watch's delay, and while etcd is unreachable it
    /// serves the last known state. Otherwise it reads etcd (one range). Stored values that do
    /// not decode are skipped with a warning.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for a bad name; [`Error::Closed`]; store errors on the direct
    /// read.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn discover(&self, name: &str) -> Result<Vec<ServiceInfo>> {
        self.ctx.check_open()?;
        validate_segment("name", name)?;
        if let Some(watched) = self.discovery().get(name) {
            return Ok(watched.instances());
        }
        let prefix = service_prefix(name);
        let span = tracing::debug_span!("registry.discover", key = prefix.as_str());
        let response = self
            .ctx
            .store
            .range(&KeyRange::prefix(prefix.as_str()), RangeOptions::default())
            .instrument(span)
            .await?;
        Ok(response
            .kvs
            .iter()
            .filter_map(|kv| cache::decode(name, &prefix, kv))
            .collect())
    }

    /// Watches service `name`: a `Stream` of [`ServiceEvent`]s that starts with `Registered`
    /// for each instance already there, then follows changes. See the [module docs](self) for
    /// what it promises. While it lives, [`discover`](Self::discover) answers from its cache.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for a bad name; [`Error::Closed`]; store errors if this call
    /// starts the name's watch and the first read fails. After that, outages are retried in the
    /// background and never end the stream.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future before it returns leaves nothing running (a watch it
    /// started stops with its last handle).
    pub async fn watch(&self, name: &str) -> Result<ServiceWatcher> {
        Ok(ServiceWatcher::new(self.watched(name).await?))
    }

    /// Keeps a watch-fed cache of service `name` for as long as the returned handle lives, so
    /// that [`discover`](Self::discover) needs no round trip.
    ///
    /// # Errors
    ///
    /// As [`watch`](Self::watch).
    pub async fn cache(&self, name: &str) -> Result<ServiceCache> {
        Ok(ServiceCache::new(self.watched(name).await?))
    }

    /// A gRPC channel that balances calls over the live instances of service `name` and
    /// follows them as they come and go. See [`channel_with`](Self::channel_with).
    ///
    /// # Errors
    ///
    /// As [`watch`](Self::watch).
    pub async fn channel(&self, name: &str) -> Result<tonic::transport::Channel> {
        self.channel_with(name, ServiceFilter::default()).await
    }

    /// A gRPC channel over the instances of service `name` that match `filter` (e.g. a version
    /// or a region label), balanced with tonic's power-of-two-choices balancer.
    ///
    /// Endpoints are `http://{address}`, connected lazily. tonic's balancer reads endpoint
    /// changes only when a call is made, so a removal takes effect on the next call; to make
    /// that call the right one, the name's watch queues each change for every channel before
    /// any other reader of this `Coord` ([`discover`](Self::discover), [`watch`](Self::watch))
    /// can see it. So once you have seen an instance go, no later call goes to it. (If more
    /// than 64 changes pile up with no calls, a background task delivers the rest as room
    /// frees up.)
    ///
    /// While no instance matches, calls wait for one: put a timeout on them. An instance that
    /// crashed without deregistering keeps receiving calls (which fail) until its lease runs
    /// out: keep TTLs short.
    ///
    /// The channel keeps the name's watch alive until its last clone is dropped.
    ///
    /// # Errors
    ///
    /// As [`watch`](Self::watch).
    pub async fn channel_with(
        &self,
        name: &str,
        filter: ServiceFilter,
    ) -> Result<tonic::transport::Channel> {
        let watched = self.watched(name).await?;
        Ok(channel::balanced(name, watched, filter))
    }

    async fn watched(&self, name: &str) -> Result<Arc<cache::Watched>> {
        self.ctx.check_open()?;
        validate_segment("name", name)?;
        let span = tracing::debug_span!("registry.watch", key = service_prefix(name).as_str());
        self.discovery().watch(name).instrument(span).await
    }

    fn discovery(&self) -> &cache::Discovery {
        &self.ctx.discovery
    }
}

/// A registered instance, kept registered until deregistered or dropped.
///
/// Dropping it stops the renewals and revokes the lease in the background, so the instance
/// disappears at once (if a tokio runtime is still running; otherwise after its TTL).
#[derive(Debug)]
pub struct Registration {
    info: ServiceInfo,
    key: String,
    shared: Arc<Shared>,
    task: tokio::task::AbortHandle,
}

/// What a `Registration` shares with its background task: the session currently holding the
/// key (replaced when it registers again).
#[derive(Debug)]
struct Shared {
    session: Mutex<Session>,
}

impl Shared {
    fn session(&self) -> Session {
        lock(&self.session).clone()
    }
}

impl Registration {
    /// The registered info, with `started_at` set.
    pub fn info(&self) -> &ServiceInfo {
        &self.info
    }

    /// The key: `/services/{name}/{id}`.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The lease currently holding the key (it changes when the instance registers again).
    pub fn lease_id(&self) -> i64 {
        self.shared.session().lease_id()
    }

    /// The TTL the store granted.
    pub fn ttl(&self) -> Duration {
        self.shared.session().ttl()
    }

    /// False while the current lease is known to be lost (until it is registered again).
    pub fn is_alive(&self) -> bool {
        self.shared.session().is_alive()
    }

    /// Stops keeping the instance registered and removes it now (revokes its lease).
    ///
    /// # Errors
    ///
    /// Store errors from the revoke; the lease then expires after its TTL.
    ///
    /// # Cancel safety
    ///
    /// If the future is dropped before the revoke is answered, renewals have stopped and the
    /// instance goes when its TTL runs out at the latest.
    pub async fn deregister(self) -> Result<()> {
        self.task.abort();
        let session = self.shared.session();
        let span = tracing::info_span!("registry.deregister", key = self.key.as_str());
        session.close().instrument(span).await
    }

    /// Stops renewing without removing anything, as a crashed process would: the instance
    /// disappears when its lease's TTL runs out. For tests of crash recovery.
    pub fn abandon(self) {
        self.task.abort();
        self.shared.session().abandon();
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        // The task holds a clone of `shared`; once it is aborted the last clone of the session
        // goes and `Session`'s drop revokes the lease in the background.
        self.task.abort();
    }
}

/// Grants a lease and writes the instance on it. On failure the lease is revoked (by the
/// session's drop).
async fn register_once(ctx: &Context, key: &str, value: &[u8], ttl: Duration) -> Result<Session> {
    let session = ctx.session(ttl).await?;
    ctx.store
        .put(key, value.to_vec(), session.lease_id())
        .await?;
    Ok(session)
}

/// Waits for the lease to be lost, then registers again on a new one; forever.
async fn keep_registered(
    ctx: Arc<Context>,
    key: String,
    value: Vec<u8>,
    ttl: Duration,
    health_name: String,
    shared: Arc<Shared>,
) {
    loop {
        let lost = tokio::select! {
            lost = async { shared.session().lost().await } => lost,
            // Coord::close revokes the lease itself: nothing to re-make.
            () = ctx.closed() => return,
        };
        if ctx.is_closed() {
            return;
        }
        tracing::warn!(error = %lost, "registration lost its lease; registering again");
        let max_backoff = (ttl / 4).clamp(Duration::from_millis(100), MAX_REREGISTER_BACKOFF);
        let mut backoff = Duration::from_millis(100);
        loop {
            match register_once(&ctx, &key, &value, ttl).await {
                Ok(session) => {
                    tracing::warn!(
                        lease = format_args!("{:x}", session.lease_id()),
                        "registered again with a new lease"
                    );
                    ctx.track_session("registration", health_name.as_str(), &session);
                    // The old session is dropped after the key moved to the new lease, so its
                    // revoke (if the old lease still exists) cannot delete the key.
                    let old = std::mem::replace(&mut *lock(&shared.session), session);
                    drop(old);
                    break;
                }
                Err(Error::Closed) => return,
                Err(e) => {
                    tracing::warn!(error = %e, ?backoff, "registering again failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(max_backoff);
                }
            }
        }
    }
}

fn service_prefix(name: &str) -> String {
    format!("{SERVICES_PREFIX}{name}/")
}

fn instance_key(name: &str, id: &str) -> String {
    format!("{SERVICES_PREFIX}{name}/{id}")
}

/// A name or id is one key segment: not empty, no `/`.
fn validate_segment(field: &str, value: &str) -> Result<()> {
    if value.is_empty() {
        return Err(Error::invalid_argument(field, "must not be empty"));
    }
    if value.contains('/') {
        return Err(Error::invalid_argument(
            field,
            format!("`{value}` must not contain `/` (it is one segment of the key)"),
        ));
    }
    if value.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(Error::invalid_argument(
            field,
            format!(
                "`{}` must not contain whitespace or control characters",
                value.escape_debug()
            ),
        ));
    }
    Ok(())
}

/// `host:port`, where host is a name, an IPv4 address or a bracketed IPv6 address.
fn validate_address(address: &str) -> Result<()> {
    let bad = |reason: &str| {
        Err(Error::invalid_argument(
            "address",
            format!("`{}` is not host:port: {reason}", address.escape_debug()),
        ))
    };
    if address.contains("://") {
        return bad("give host:port without a scheme");
    }
    let Some((host, port)) = address.rsplit_once(':') else {
        return bad("no port");
    };
    if host.is_empty() {
        return bad("empty host");
    }
    if host
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '/')
    {
        return bad("the host contains whitespace or `/`");
    }
    let bracketed = host.starts_with('[') && host.ends_with(']');
    if host.contains(':') && !bracketed {
        return bad("an IPv6 host must be in brackets");
    }
    match port.parse::<u16>() {
        Ok(0) => bad("port 0"),
        Ok(_) => Ok(()),
        Err(_) => bad("the port is not a number in 1..=65535"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(result: Result<()>) -> String {
        match result {
            Err(Error::InvalidArgument { field, .. }) => field,
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn addresses() {
        for ok in [
            "127.0.0.1:50051",
            "localhost:1",
            "svc.ns.cluster.local:65535",
            "[::1]:8080",
        ] {
            assert!(validate_address(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "127.0.0.1",
            ":80",
            "host:",
            "host:0",
            "host:65536",
            "host:http",
            "::1:80",
            "http://host:80",
            "a b:80",
        ] {
            assert_eq!(field(validate_address(bad)), "address", "{bad}");
        }
    }

    #[test]
    fn names_and_ids() {
        let ok = ServiceInfo::new("api", "api-1", "h:1");
        assert!(ok.validate().is_ok());
        assert_eq!(field(ServiceInfo::new("", "1", "h:1").validate()), "name");
        assert_eq!(
            field(ServiceInfo::new("a/b", "1", "h:1").validate()),
            "name"
        );
        assert_eq!(field(ServiceInfo::new("a", "", "h:1").validate()), "id");
        assert_eq!(field(ServiceInfo::new("a", "x/y", "h:1").validate()), "id");
    }

    #[test]
    fn json_round_trip_with_rfc3339_started_at() {
        let mut info = ServiceInfo::new("api", "1", "h:1").with_metadata("region", "eu");
        info.started_at = Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        let json = serde_json::to_string(&info).unwrap();
        assert!(
            json.contains("\"started_at\":\"2023-11-14T22:13:20Z\""),
            "{json}"
        );
        let back: ServiceInfo = serde_json::from_str(&json).unwrap();
        assert_eq!(back, info);
        // Fields other writers may leave out.
        let minimal: ServiceInfo =
            serde_json::from_str(r#"{"id":"1","name":"api","address":"h:1"}"#).unwrap();
        assert_eq!(minimal, ServiceInfo::new("api", "1", "h:1"));
    }
}
