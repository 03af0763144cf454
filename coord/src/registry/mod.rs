//! Service registry and discovery: instances register under `/services/{name}/{id}` on a
//! lease; clients discover them, watch them come and go, and call them through a
//! load-balanced gRPC [`Channel`](tonic::transport::Channel).
//!
//! # What it promises
//!
//! - One live registration per instance: [`Registry::register`] refuses a `(name, id)` whose key
//!   another lease holds ([`Error::AlreadyRegistered`](crate::Error::AlreadyRegistered)), atomically.
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

mod channel;
pub(crate) mod discovery;
mod instances;
pub(crate) mod own_keys;
mod registration;
mod service;
pub(crate) mod shared;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tracing::Instrument;

use crate::context::Context;
use crate::error::Result;
use crate::registry::shared::RegistryShared;
use crate::store::{KeyRange, RangeOptions};

pub use channel::{ChannelOptions, ServiceFilter};
pub use discovery::{ServiceCache, ServiceWatcher};
pub use instances::Instances;
pub use registration::Registration;
pub use service::{SERVICES_PREFIX, ServiceEvent, ServiceInfo};
use service::{instance_key, service_prefix, validate_segment};

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
    /// [`Error::AlreadyRegistered`](crate::Error::AlreadyRegistered), or give each process start its own id.
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
    /// [`Error::AlreadyRegistered`](crate::Error::AlreadyRegistered) naming the holder's lease if another lease holds the key;
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) for a bad `info` (see [`ServiceInfo::validate`]) or a TTL under
    /// one second; [`Error::Closed`](crate::Error::Closed); store errors from the lease grant, the write or the watch.
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
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) for a bad name or id; [`Error::Closed`](crate::Error::Closed); store errors.
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
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) for a bad name; [`Error::Closed`](crate::Error::Closed); store errors on the direct
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
            .filter_map(|kv| discovery::decode(name, &prefix, kv))
            .collect())
    }

    /// Watches service `name`: a `Stream` of [`ServiceEvent`]s that starts with `Registered`
    /// for each instance already there, then follows changes. See the [module docs](self) for
    /// what it promises. While it lives, [`discover`](Self::discover) answers from its cache.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) for a bad name; [`Error::Closed`](crate::Error::Closed); store errors if this call
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
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a dropped call leaves no cache behind; the shared watch it may have started
    /// stops when nothing uses it.
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
    ///
    /// # Cancel safety
    ///
    /// As [`channel_with`](Self::channel_with).
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
    /// As [`watch`](Self::watch), and [`Error::InvalidArgument`](crate::Error::InvalidArgument) naming `tls` if the TLS
    /// settings make no TLS client (a certificate or key that does not parse).
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a dropped call leaves no channel behind; the shared watch it may have
    /// started stops when nothing uses it.
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

    async fn watched(&self, name: &str) -> Result<Arc<discovery::Watched>> {
        self.ctx.check_open()?;
        validate_segment("name", name)?;
        let span = tracing::debug_span!("registry.watch", key = service_prefix(name).as_str());
        self.discovery().watch(name).instrument(span).await
    }

    fn discovery(&self) -> &discovery::Discovery {
        &self.shared.discovery
    }
}
