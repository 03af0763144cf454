//! coord: typed, hot-reloading configuration and distributed coordination on etcd.
//!
//! A [`Coord`] is one connection to etcd (or to the embedded in-memory store) shared by every
//! module: the config center, live config, the service registry, locks, election and
//! instance IDs.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> coord::Result<()> {
//! let coord = coord::Coord::in_memory();
//! let health = coord.health().await?;
//! assert!(health.reachable);
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

pub mod client;
pub mod config;
pub mod election;
pub mod error;
pub mod health;
pub mod ids;
mod lease_pool;
pub mod lock;
pub(crate) mod queue;
pub mod registry;
pub mod session;
pub mod store;
mod sync;
#[cfg(feature = "testing")]
pub mod testing;
pub mod watch;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

pub use client::{ClientConfig, TlsConfig};
pub use config::{ConfigCenter, CoordConfig, Live, Secret};
pub use coord_derive::CoordConfig;
pub use election::{Election, Leader, Leadership};
pub use error::{Error, Result};
pub use health::{Health, SessionHealth};
pub use ids::{IdAllocator, IdGuard};
pub use lock::{LockGuard, Locks};
pub use registry::{Registration, Registry, ServiceEvent, ServiceInfo};
pub use session::Session;

pub use store::Store;

/// The entry point: one store connection shared by every coord module.
///
/// Cheap to clone; clones share the connection.
#[derive(Clone, Debug)]
pub struct Coord {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    client_config: Option<ClientConfig>,
    config: config::ConfigCenter,
    hub: Arc<config::hub::WatchHub>,
    discovery: registry::cache::Discovery,
    sessions: health::SessionTracker,
    /// Released lock sessions kept for the next lock; see `lease_pool`.
    leases: lease_pool::LeasePool,
    closed: AtomicBool,
}

impl Coord {
    /// Connects to etcd.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] if the config does not validate, [`Error::Unavailable`] naming
    /// the endpoints if no endpoint answers within `dial_timeout`, [`Error::Unauthenticated`] if
    /// the credentials are rejected.
    pub async fn connect(config: ClientConfig) -> Result<Self> {
        config.validate()?;
        let store = Store::connect(&config.etcd_options()?).await?;
        Ok(Self::from_store(store, Some(config)))
    }

    /// A `Coord` on a new, empty embedded store: etcd's semantics in this process, no server.
    pub fn in_memory() -> Self {
        Self::from_store(Store::in_memory(), None)
    }

    fn from_store(store: Store, client_config: Option<ClientConfig>) -> Self {
        // The embedded store answers in microseconds and loses no events: no cache, no resync.
        let (cache_ttl, sync_interval) = client_config
            .as_ref()
            .map_or((std::time::Duration::ZERO, None), |c| {
                (c.cache_ttl, Some(c.sync_interval))
            });
        let hub = Arc::new(config::hub::WatchHub::new(store.clone(), sync_interval));
        Coord {
            inner: Arc::new(Inner {
                config: config::ConfigCenter::new(store.clone(), Arc::clone(&hub), cache_ttl),
                hub,
                discovery: registry::cache::Discovery::new(store.clone()),
                store,
                client_config,
                sessions: health::SessionTracker::default(),
                leases: lease_pool::LeasePool::default(),
                closed: AtomicBool::new(false),
            }),
        }
    }

    /// The store seam under this `Coord`, for operations the typed modules do not cover.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The typed config center.
    pub fn config(&self) -> &config::ConfigCenter {
        &self.inner.config
    }

    /// Binds `T` to its `#[coord(prefix)]` and follows it: see [`Live`].
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] naming the key if a required key is missing or `validate` fails,
    /// [`Error::Decode`] naming the key if a value does not decode, store errors if the first
    /// read fails. After binding, bad values no longer fail: they keep the last good value.
    pub async fn live<T: config::HasPrefix>(&self) -> Result<config::Live<T>> {
        let prefix = T::PREFIX.ok_or_else(|| {
            Error::invalid_argument(
                std::any::type_name::<T>(),
                "has no #[coord(prefix = ...)]; bind it with live_at",
            )
        })?;
        self.live_at(prefix).await
    }

    /// Binds `T` to the keys under `prefix`; see [`live`](Self::live).
    pub async fn live_at<T: config::CoordConfig>(&self, prefix: &str) -> Result<config::Live<T>> {
        self.check_open()?;
        config::Live::bind(&self.inner.hub, prefix).await
    }

    /// How many key ranges this `Coord` is watching for `Live` handles right now.
    pub fn watched_ranges(&self) -> usize {
        self.inner.hub.watched_ranges()
    }

    /// The client configuration (`None` for the in-memory store).
    pub fn client_config(&self) -> Option<&ClientConfig> {
        self.inner.client_config.as_ref()
    }

    /// Asks the store for its status and reports every lease-holding handle (registrations,
    /// locks, IDs) of this `Coord`. An unreachable store is reported in the answer, not as an
    /// error, so a health endpoint can always answer.
    pub async fn health(&self) -> Result<Health> {
        self.check_open()?;
        let started = Instant::now();
        Ok(match self.inner.store.status().await {
            Ok(status) => Health {
                reachable: true,
                revision: status.revision,
                version: status.version,
                latency: started.elapsed(),
                error: None,
                sessions: self.inner.sessions.report(),
            },
            Err(e) => Health {
                reachable: false,
                revision: 0,
                version: String::new(),
                latency: started.elapsed(),
                error: Some(e.to_string()),
                sessions: self.inner.sessions.report(),
            },
        })
    }

    /// Marks this `Coord` (and its clones) closed; later calls through it fail with
    /// [`Error::Closed`], and the leases of released locks kept for reuse are revoked. The
    /// connection closes when the last clone is dropped.
    pub async fn close(&self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        self.inner.leases.clear();
    }

    /// Lists `session` in [`health`](Self::health) under `kind`/`name` while it lives.
    pub(crate) fn track_session(
        &self,
        kind: &'static str,
        name: impl Into<String>,
        session: &Session,
    ) {
        self.inner.sessions.track(kind, name, session);
    }

    /// Lists `session` in [`health`](Self::health) under `kind`/`name` while `owner` lives.
    pub(crate) fn track_session_owned(
        &self,
        kind: &'static str,
        name: impl Into<String>,
        session: &Session,
        owner: &Arc<()>,
    ) {
        self.inner.sessions.track_owned(kind, name, session, owner);
    }

    /// Stops listing `session` in [`health`](Self::health) (it is parked, not holding).
    pub(crate) fn untrack_session(&self, session: &Session) {
        self.inner.sessions.untrack(session);
    }

    pub(crate) fn check_open(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::SeqCst) {
            return Err(Error::Closed);
        }
        Ok(())
    }
}
