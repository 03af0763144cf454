//! Service registry and discovery: instances register under `/services/{name}/{id}` on a
//! lease; clients discover them, watch them come and go, and call them through a
//! load-balanced gRPC [`Channel`](tonic::transport::Channel).
//!
//! # What it promises
//!
//! - One live registration per instance: [`Registry::register`] refuses a `(name, id)` whose key
//!   another lease holds ([`Error::AlreadyRegistered`]), atomically.
//! - A [`Registration`] keeps its key as long as the process lives: its lease is renewed in the
//!   background; if the lease is lost anyway (revoked, or expired during a partition) the
//!   instance registers again with a new lease, and if the key is deleted while the lease lives
//!   it is put back; each repair logs a warning. If another lease writes the key, the
//!   registration does not fight: it ends and [`Registration::lost`] says so. Dropping the
//!   `Registration` deregisters in the background; [`Registration::deregister`] does it now
//!   and reports errors. A crashed process's instance disappears when its TTL runs out.
//! - [`Registry::watch`] yields the service's state changes, starting with a
//!   [`ServiceEvent::Registered`] for every instance already there. It goes on across etcd
//!   restarts and compaction, and never reports the same state twice or skips a state change:
//!   after a gap it reports only the differences.
//! - Once a name is watched (by [`Registry::watch`], [`Registry::cache`] or
//!   [`Registry::channel`]), [`Registry::discover`] answers from that watch's cache without a
//!   round trip; otherwise it reads etcd. The cache trails etcd by the watch's delay; while
//!   the watch is broken, [`ServiceCache::staleness`] says for how long it may have been
//!   behind.
//! - One store watch per watched name, however many watchers, caches and channels share it.
//! - A channel speaks plain text unless told otherwise: [`Registry::channel`] dials
//!   `http://{address}`; [`Registry::channel_with`] with [`ChannelOptions::tls`] dials
//!   `https://{address}` and checks each instance's certificate against the CA given.
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
mod instances;
pub(crate) mod own_keys;
mod registration;
pub(crate) mod shared;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tracing::Instrument;

use crate::context::Context;
use crate::error::{Error, Result};
use crate::registry::shared::RegistryShared;
use crate::store::{KeyRange, RangeOptions};
use crate::sync::lock;

pub use cache::{ServiceCache, ServiceWatcher};
pub use channel::{ChannelOptions, ServiceFilter};
pub use instances::Instances;
pub use registration::Registration;

/// The prefix all services live under.
pub const SERVICES_PREFIX: &str = "/services/";

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
    /// Free-form labels (region, zone, weight…); [`ServiceFilter`] can match on them. A JSON
    /// `null` (what Go writes for a nil map) reads as empty.
    #[serde(default, deserialize_with = "null_as_default")]
    pub metadata: BTreeMap<String, String>,
    /// The instance's software version (empty if not set).
    #[serde(default)]
    pub version: String,
    /// When the instance first registered (RFC 3339 in JSON); `None` until registered.
    ///
    /// Written as `started_at`, in UTC. Read from `started_at` or `startedAt` (the original
    /// Go design's name), in RFC 3339 with any UTC offset and fraction, as Go's `time.Time`
    /// writes it; Go's zero time reads as `None`.
    #[serde(default, alias = "startedAt", with = "started_at")]
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

/// Reads a JSON `null` as the type's default.
fn null_as_default<'de, D, T>(deserializer: D) -> std::result::Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// `started_at` in JSON: see [`ServiceInfo::started_at`].
mod started_at {
    use std::time::{Duration, SystemTime};

    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    pub fn serialize<S: Serializer>(
        value: &Option<SystemTime>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        humantime_serde::serialize(value, serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<SystemTime>, D::Error> {
        match Option::<String>::deserialize(deserializer)? {
            None => Ok(None),
            Some(text) => parse(&text).map_err(D::Error::custom),
        }
    }

    /// RFC 3339 with `Z`, no zone (read as UTC), or a `±hh:mm` offset.
    pub(super) fn parse(text: &str) -> Result<Option<SystemTime>, String> {
        // Go's zero `time.Time`: the writer never set it.
        if text.starts_with("0001-01-01T00:00:00") {
            return Ok(None);
        }
        let invalid = |reason: &dyn std::fmt::Display| {
            format!(
                "`{}` is not an RFC 3339 time: {reason}",
                text.escape_debug()
            )
        };
        let (local, offset) = split_offset(text);
        let local = humantime::parse_rfc3339_weak(local).map_err(|e| invalid(&e))?;
        // local = utc + offset
        let utc = if offset >= 0 {
            local.checked_sub(Duration::from_secs(offset.unsigned_abs()))
        } else {
            local.checked_add(Duration::from_secs(offset.unsigned_abs()))
        };
        utc.map(Some).ok_or_else(|| invalid(&"out of range"))
    }

    /// Splits a trailing `±hh:mm` offset off, in seconds east of UTC (0 if there is none).
    fn split_offset(text: &str) -> (&str, i64) {
        let bytes = text.as_bytes();
        let Some(at) = bytes.len().checked_sub(6) else {
            return (text, 0);
        };
        let tail = &bytes[at..];
        let sign = match tail[0] {
            b'+' => 1,
            b'-' => -1,
            _ => return (text, 0),
        };
        let digits = |range: std::ops::Range<usize>| -> Option<i64> {
            let part = &tail[range];
            part.iter()
                .all(u8::is_ascii_digit)
                .then(|| part.iter().fold(0, |n, d| n * 10 + i64::from(d - b'0')))
        };
        match (digits(1..3), tail[3], digits(4..6)) {
            // `at` is a char boundary: the byte there is an ASCII sign.
            (Some(hours), b':', Some(minutes)) => {
                (&text[..at], sign * (hours * 3600 + minutes * 60))
            }
            _ => (text, 0),
        }
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
    shared: Arc<RegistryShared>,
}

impl Registry {
    pub(crate) fn new(ctx: Arc<Context>, shared: Arc<RegistryShared>) -> Self {
        Registry { ctx, shared }
    }

    /// Registers `info` under `/services/{name}/{id}` on a new lease of `ttl` and keeps it
    /// registered until the [`Registration`] is deregistered, dropped, or replaced. `started_at`
    /// is set to now.
    ///
    /// The key is written only if no other lease holds it (one conditional transaction): a
    /// second live registration of the same instance, here or in another process, is refused
    /// rather than silently taking the key over. That includes a process restarted with the
    /// same id before its previous lease ran out (it crashed, so nothing revoked that lease):
    /// `register` then fails until the old lease expires, at most one TTL later. Retry on
    /// [`Error::AlreadyRegistered`], or give each process start its own id.
    ///
    /// The lease is renewed every third of its TTL. If it is lost anyway (revoked, or expired
    /// because etcd could not be reached in time), a background task registers the same info
    /// again on a new lease, retrying with backoff until it succeeds, and logs a warning. If the
    /// key is deleted while the lease lives, the task puts it back on the same lease. If
    /// another lease writes the key, the registration ends: see [`Registration::lost`].
    /// The registration is listed in [`Coord::health`](crate::Coord::health) as kind
    /// `"registration"`, name `{name}/{id}`.
    ///
    /// # Errors
    ///
    /// [`Error::AlreadyRegistered`] naming the holder's lease if another lease holds the key;
    /// [`Error::InvalidArgument`] for a bad `info` (see [`ServiceInfo::validate`]) or a TTL under
    /// one second; [`Error::Closed`]; store errors from the lease grant, the write or the watch.
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
        let result = registration::register(&self.ctx, &self.shared.own_keys, info, ttl).await;
        self.ctx.unless_closed(result)
    }

    /// Deletes the key of instance `id` of service `name`, whoever registered it. Returns
    /// whether it existed.
    ///
    /// This is for clearing out an instance known to be dead before its lease runs out. It
    /// does not stop a live one: a live [`Registration`] sees its key deleted while its lease
    /// lives and puts it back on the same lease (with a warning), as Consul's agent
    /// anti-entropy registers a service removed from the catalog again. Watchers see the
    /// instance go and come back. To take a live instance out, stop it, or deregister or drop
    /// its `Registration`.
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

    /// The live instances of service `name`, ordered by id, as a shared read-only view
    /// ([`Instances`]: `len`, `iter`, `instances[i]`, `to_vec`).
    ///
    /// Served from the watch cache, with no round trip, while the name is watched (by
    /// [`watch`](Self::watch), [`cache`](Self::cache) or [`channel`](Self::channel) on this
    /// `Coord`); the cache may trail etcd by the watch's delay, and while etcd is unreachable it
    /// serves the last known state. From the cache it copies no instance: calls between two
    /// changes return the same shared view, and after a change the unchanged instances are
    /// still shared. Otherwise it reads etcd (one range). Stored values that do not decode are
    /// skipped with a warning.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for a bad name; [`Error::Closed`]; store errors on the direct
    /// read.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn discover(&self, name: &str) -> Result<Instances> {
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
    /// follows them as they come and go, in **plain text**: each instance is dialed at
    /// `http://{address}`, unencrypted and unauthenticated. For TLS, use
    /// [`channel_with`](Self::channel_with) and [`ChannelOptions::tls`].
    ///
    /// # Errors
    ///
    /// As [`watch`](Self::watch).
    pub async fn channel(&self, name: &str) -> Result<tonic::transport::Channel> {
        self.channel_with(name, ChannelOptions::default()).await
    }

    /// A gRPC channel over the instances of service `name` that pass the options' filter
    /// (e.g. a version or a region label), balanced with tonic's power-of-two-choices
    /// balancer, over TLS if the options say so. A [`ServiceFilter`] alone converts into
    /// options (plain text).
    ///
    /// Endpoints are `https://{address}` with [`ChannelOptions::tls`] (the certificate
    /// checked against the given CA for the address's host, or the given domain name), else
    /// `http://{address}`; connected lazily, so a handshake failure is the error of a call,
    /// not of this method. tonic's balancer reads endpoint
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
    /// ```no_run
    /// # async fn f(coord: coord::Coord) -> Result<(), Box<dyn std::error::Error>> {
    /// use coord::registry::{ChannelOptions, ServiceFilter};
    /// use tonic::transport::{Certificate, ClientTlsConfig};
    ///
    /// let ca = Certificate::from_pem(std::fs::read("/etc/services/ca.pem")?);
    /// let channel = coord
    ///     .registry()
    ///     .channel_with(
    ///         "checkout",
    ///         ChannelOptions::default()
    ///             .filter(ServiceFilter::default().version("2.0.0"))
    ///             .tls(ClientTlsConfig::new().ca_certificate(ca)),
    ///     )
    ///     .await?;
    /// # drop(channel);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`watch`](Self::watch), and [`Error::InvalidArgument`] naming `tls` if the TLS
    /// settings make no TLS client (a certificate or key that does not parse).
    pub async fn channel_with(
        &self,
        name: &str,
        options: impl Into<ChannelOptions>,
    ) -> Result<tonic::transport::Channel> {
        let options = options.into();
        options.check()?;
        let watched = self.watched(name).await?;
        Ok(channel::balanced(name, watched, options))
    }

    async fn watched(&self, name: &str) -> Result<Arc<cache::Watched>> {
        self.ctx.check_open()?;
        validate_segment("name", name)?;
        let span = tracing::debug_span!("registry.watch", key = service_prefix(name).as_str());
        self.discovery().watch(name).instrument(span).await
    }

    fn discovery(&self) -> &cache::Discovery {
        &self.shared.discovery
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

    /// What a service built on the original Go design stores: `startedAt`, a `time.Time` in
    /// local time with nanoseconds, and a nil metadata map.
    #[test]
    fn reads_an_instance_written_by_the_original_go_design() {
        let json = r#"{
            "id": "checkout-7",
            "name": "checkout",
            "address": "10.0.0.7:50051",
            "metadata": null,
            "version": "1.4.2",
            "startedAt": "2023-11-15T06:13:20.123456789+08:00"
        }"#;
        let info: ServiceInfo = serde_json::from_str(json).unwrap();
        let expected = SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
        assert_eq!(info.started_at, Some(expected));
        assert!(info.metadata.is_empty());
        assert_eq!(info.version, "1.4.2");
        assert_eq!(info.key(), "/services/checkout/checkout-7");

        let utc = r#"{"id":"1","name":"api","address":"h:1","metadata":{"zone":"a"},
            "startedAt":"2023-11-14T22:13:20Z"}"#;
        let info: ServiceInfo = serde_json::from_str(utc).unwrap();
        assert_eq!(
            info.started_at,
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        );
        assert_eq!(info.metadata["zone"], "a");

        // Go's zero time.Time: never set.
        let zero = r#"{"id":"1","name":"api","address":"h:1","startedAt":"0001-01-01T00:00:00Z"}"#;
        assert_eq!(
            serde_json::from_str::<ServiceInfo>(zero)
                .unwrap()
                .started_at,
            None
        );
    }

    #[test]
    fn started_at_offsets() {
        let at = |s: &str| started_at::parse(s).unwrap().unwrap();
        let base = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(at("2023-11-14T22:13:20Z"), base);
        assert_eq!(at("2023-11-14T22:13:20+00:00"), base);
        assert_eq!(at("2023-11-14T17:43:20-04:30"), base);
        assert_eq!(at("2023-11-15T07:13:20+09:00"), base);
        assert!(started_at::parse("yesterday").is_err());
        assert!(started_at::parse("2023-11-14T22:13:20+9:00").is_err());
    }
}
