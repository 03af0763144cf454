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

pub mod access;
pub mod client_config;
mod clock;
pub mod config;
pub mod connection;
mod context;
pub mod election;
pub mod error;
pub mod force;
pub mod health;
pub mod ids;
pub mod inspect;
pub mod instance;
pub mod keyring;
mod lease_pool;
pub mod lock;
pub mod metrics;
pub(crate) mod queue;
pub mod registry;
pub mod rollout;
pub mod session;
pub(crate) mod shared_watch;
pub mod store;
mod sync;
#[cfg(feature = "testing")]
pub mod testing;
pub mod watch;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use tracing::Instrument;

use context::Context;

pub use client_config::{ClientConfig, SecretKeys, TlsConfig};
pub use config::{
    ConfigCenter, CoordConfig, InstanceHealth, InstanceStatus, Live, Secret, StatusError,
};
pub use connection::ConnectionState;
pub use coord_derive::CoordConfig;
pub use election::{Election, Leader, Leadership};
pub use error::{Error, Result};
pub use health::{FailingWrite, Health, SessionHealth};
pub use ids::{IdAllocator, IdGuard};
pub use instance::Instance;
pub use lock::{LockGuard, Locks};
pub use registry::{Registration, Registry, ServiceEvent, ServiceInfo};
pub use session::Session;

pub use store::Store;

/// What generated code needs and users do not.
#[doc(hidden)]
pub mod __private {
    #[cfg(feature = "schema")]
    pub use crate::config::published::probe::{NoJsonSchema, Probe, ViaJsonSchema};
    // The derive bounds a generic struct's parameters by serde's traits through this path,
    // so the user's crate need not depend on serde under that name.
    pub use serde;
    pub use serde_json;
}

/// The entry point: one store connection shared by every coord module.
///
/// Cheap to clone; clones share the connection. Capabilities (`config()`, `locks()`,
/// `registry()`, `election()`, `ids()`) hold the shared context, not the `Coord`, so they keep
/// working after the `Coord` handle is dropped, until [`close`](Self::close).
#[derive(Clone, Debug)]
pub struct Coord {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    ctx: Arc<Context>,
    /// The config capability's shared state (watch hub, status reporters).
    config_shared: Arc<config::shared::ConfigShared>,
    /// The registry's shared state (discovery, own-key watches).
    registry_shared: Arc<registry::shared::RegistryShared>,
    client_config: Option<ClientConfig>,
    config: config::ConfigCenter,
    /// The followed file in local file mode; set once, right after the `Coord` is built.
    file: std::sync::OnceLock<store::file::LocalFile>,
}

/// How long each request of [`Coord::close`] may take on the embedded store.
const MEMORY_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

impl Coord {
    /// Connects to etcd.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] if the config does not validate, [`Error::Unavailable`] naming
    /// the endpoints if no endpoint answers within `dial_timeout`, [`Error::Unauthenticated`] if
    /// the credentials are rejected.
    ///
    /// With [`ClientConfig::file`] set it dials nothing: it opens local file mode on that file,
    /// as [`from_file`](Self::from_file) does, with the config's instance, and fails as it does.
    ///
    /// With [`ClientConfig::snapshot_dir`] set (offline start) an etcd that does not answer
    /// within `dial_timeout` is not an error: the `Coord` is returned and reconnects when etcd
    /// answers, and [`live`](Self::live) starts handles from their snapshots on disk meanwhile.
    /// Rejected credentials, TLS failures and bad settings still fail. The directory is
    /// created (mode 0700) and checked before etcd is dialed: one that is not a directory,
    /// cannot be written, is owned by another user or is writable by group or others is
    /// [`Error::InvalidArgument`] naming `snapshot_dir`, the directory and the fix (`chmod
    /// 700 DIR`), so a bad directory is found at start, not in the outage it is kept for.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a dropped call leaves no connection and no task behind (a snapshot
    /// directory it created stays).
    pub async fn connect(config: ClientConfig) -> Result<Self> {
        config.validate()?;
        if let Some(path) = config.file.clone() {
            let instance = config.identity();
            return Self::open_file(&path, instance, Some(config)).await;
        }
        let snapshots = match config.snapshot_dir.clone() {
            Some(dir) => {
                let cluster =
                    config::offline::cluster_key(config.cluster_name.as_deref(), &config.endpoints);
                Some(open_snapshot_dir(dir, cluster).await?)
            }
            None => None,
        };
        // Before dialing: a key file others can read is refused at start, not at first use.
        let keys = config
            .secret_keys
            .as_ref()
            .map(SecretKeys::key_ring)
            .transpose()?;
        let store = Store::connect(&config.etcd_options()?).await?;
        let instance = config.identity();
        let coord = Self::on_store(store, instance, Some(config));
        if let Some(keys) = keys {
            coord.set_key_ring(keys);
        }
        coord.accept_plain_secrets(
            coord
                .client_config()
                .is_some_and(|c| c.accept_plain_secrets),
        );
        if let Some(snapshots) = snapshots {
            let ctx = &coord.inner.ctx;
            // Before the `Coord` is returned, so no handle binds without them.
            coord
                .inner
                .config_shared
                .hub
                .keep_snapshots(snapshots.attach(&ctx.store, Arc::clone(&ctx.failing_writes)));
        }
        Ok(coord)
    }

    /// A `Coord` on a new, empty embedded store: etcd's semantics in this process, no server.
    /// Its [`instance`](Self::instance) is the default, `{hostname}-{pid}` without labels.
    pub fn in_memory() -> Self {
        Self::on_store(Store::in_memory(), Instance::default(), None)
    }

    /// A `Coord` on the store behind `store`, as a second process would be on the same etcd:
    /// for tests that need several `Coord`s on one embedded store, or a `Coord` that watches
    /// another one close. It has its own counters and its own [`close`](Self::close); it uses
    /// the embedded defaults (no read cache, no periodic resync).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> coord::Result<()> {
    /// let a = coord::Coord::in_memory();
    /// let b = coord::Coord::from_store(a.store());
    /// a.config().set("/config/shared", &1).await?;
    /// assert_eq!(b.config().get::<i32>("/config/shared").await?, 1);
    /// a.close().await?;
    /// assert_eq!(b.config().get::<i32>("/config/shared").await?, 1); // b is still open
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// Its [`instance`](Self::instance) is the default, as for [`in_memory`](Self::in_memory),
    /// so several of them on one store share a name: give each its own with
    /// [`from_store_as`](Self::from_store_as) when they report status.
    pub fn from_store(store: &Store) -> Self {
        Self::on_store(store.new_handle(), Instance::default(), None)
    }

    /// As [`from_store`](Self::from_store), as the instance `instance`: for tests with several
    /// `Coord`s on one store that tell themselves apart, as processes connected with
    /// different `ClientConfig::instance`s would.
    ///
    /// ```
    /// use coord::{Coord, Instance};
    /// let store = coord::Store::in_memory();
    /// let canary = Coord::from_store_as(&store, Instance::new("api-1").label("track", "canary"))?;
    /// assert_eq!(canary.instance().name, "api-1");
    /// # Ok::<(), coord::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] if the instance does not [`validate`](Instance::validate).
    pub fn from_store_as(store: &Store, instance: Instance) -> Result<Self> {
        instance.validate()?;
        Ok(Self::on_store(store.new_handle(), instance, None))
    }

    /// Local file mode: a `Coord` on a new embedded store seeded from the TOML, YAML or JSON
    /// file at `path` (format by extension), which it watches: every save of the file is
    /// applied to the store as one transaction, so [`Live`] handles hot-reload from the file
    /// with the same code that runs on etcd. Locks, IDs, election and the registry work within
    /// this process. See [`store::file`] for the layout rule and what a save does; a save that
    /// does not load keeps the last good state, logs a warning with the line and column, and
    /// is reported by [`local_file`](Self::local_file)`().last_error()`. The watch stops at
    /// [`close`](Self::close) or when the `Coord` and every handle from it are dropped.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> coord::Result<()> {
    /// # let dir = std::env::temp_dir().join(format!("coord-from-file-doc-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir).unwrap();
    /// let path = dir.join("coord.toml");
    /// std::fs::write(&path, r#"
    /// ["/config/checkout"]
    /// timeout_secs = 45
    /// rate_limit = { per_second = 100, burst = 20 }
    /// "#).unwrap();
    ///
    /// let coord = coord::Coord::from_file(&path).await?;
    /// assert_eq!(coord.config().get::<u64>("/config/checkout/timeout_secs").await?, 45);
    /// assert!(coord.local_file().unwrap().last_error().is_none());
    /// coord.close().await?;
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// Its [`instance`](Self::instance) is the default, as for [`in_memory`](Self::in_memory);
    /// set another through [`ClientConfig::file`] and [`connect`](Self::connect).
    ///
    /// # Errors
    ///
    /// [`Error::File`] if the file cannot be read, does not parse, breaks the layout rule, or
    /// its directory cannot be watched: there is no last good state to start from.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a dropped call leaves no `Coord` behind; the file is only read.
    pub async fn from_file(path: impl AsRef<std::path::Path>) -> Result<Self> {
        Self::open_file(path.as_ref(), Instance::default(), None).await
    }

    async fn open_file(
        path: &std::path::Path,
        instance: Instance,
        client_config: Option<ClientConfig>,
    ) -> Result<Self> {
        let keys = client_config
            .as_ref()
            .and_then(|config| config.secret_keys.as_ref())
            .map(SecretKeys::key_ring)
            .transpose()?;
        let (store, file) = store::file::LocalFile::open(path).await?;
        // Before any save can be heard: the first load needs no options.
        if let Some(config) = &client_config {
            file.set_options(config.file_options());
        }
        let coord = Self::on_store(store, instance, client_config);
        if let Some(keys) = keys {
            coord.set_key_ring(keys);
        }
        // The `Coord` was built just now and nobody else has seen it: the cell is empty.
        let _ = coord.inner.file.set(file);
        Ok(coord)
    }

    fn on_store(store: Store, instance: Instance, client_config: Option<ClientConfig>) -> Self {
        // The embedded store answers in microseconds and loses no events: no cache, no resync.
        let (cache_ttl, sync_interval, request_timeout) = client_config
            .as_ref()
            .filter(|c| c.file.is_none())
            .map_or((Duration::ZERO, None, MEMORY_REQUEST_TIMEOUT), |c| {
                (c.cache_ttl, Some(c.sync_interval), c.request_timeout)
            });
        let config_shared = Arc::new(config::shared::ConfigShared::new(&store, sync_interval));
        let registry_shared = Arc::new(registry::shared::RegistryShared::new(&store));
        let user = client_config
            .as_ref()
            .filter(|c| c.file.is_none())
            .and_then(|c| c.username.clone());
        let ctx = Arc::new(Context::new(store, instance, request_timeout).with_user(user));
        Coord {
            inner: Arc::new(Inner {
                config: config::ConfigCenter::new(
                    Arc::clone(&ctx),
                    &config_shared.hub,
                    &config_shared.keys,
                    cache_ttl,
                ),
                ctx,
                config_shared,
                registry_shared,
                client_config,
                file: std::sync::OnceLock::new(),
            }),
        }
    }

    /// Whether this `Coord` is connected and its leases held, as a `watch` receiver that sees
    /// every later change: `Connected`, `Suspended { since }` while the store does not answer,
    /// `Lost` once a lease of this `Coord` is gone, `Reconnected` when the store answers
    /// again. Derived from what its calls, watches and lease renewals already see; see
    /// [`connection`] for what each state means to each module.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let coord = coord::Coord::in_memory();
    /// let state = coord.state();
    /// assert_eq!(*state.borrow(), coord::ConnectionState::Connected);
    /// # }
    /// ```
    pub fn state(&self) -> tokio::sync::watch::Receiver<ConnectionState> {
        self.inner.ctx.store.connection_state()
    }

    /// Who this `Coord` is: its name and labels, fixed for its lifetime (see [`Instance`]).
    pub fn instance(&self) -> &Instance {
        &self.inner.ctx.instance
    }

    /// The store seam under this `Coord`, for operations the typed modules do not cover.
    pub fn store(&self) -> &Store {
        &self.inner.ctx.store
    }

    /// The typed config center.
    pub fn config(&self) -> &config::ConfigCenter {
        &self.inner.config
    }

    /// Says how this instance is doing on `prefix`, written with its rollout status (see
    /// [`ConfigCenter::rollout`](config::ConfigCenter::rollout)) until said again: the health
    /// gate of rollout plans reads it. Returns false, writing nothing, while this `Coord` has
    /// no [`Live`] handle on the prefix (there is no status to carry it).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> coord::Result<()> {
    /// use coord::InstanceHealth;
    ///
    /// #[derive(coord::CoordConfig, Debug, Clone)]
    /// #[coord(prefix = "/config/checkout")]
    /// struct Checkout { #[coord(default = 30)] timeout_secs: u64 }
    ///
    /// let coord = coord::Coord::in_memory();
    /// assert!(!coord.report_health("/config/checkout", InstanceHealth::Healthy));
    /// let live = coord.live::<Checkout>().await?;
    /// assert!(coord.report_health(
    ///     "/config/checkout",
    ///     InstanceHealth::Degraded { reason: "p99 over budget".into() },
    /// ));
    /// # drop(live);
    /// # Ok(())
    /// # }
    /// ```
    pub fn report_health(&self, prefix: &str, health: InstanceHealth) -> bool {
        self.inner.config_shared.status.set_health(prefix, health)
    }

    /// Rollout plans: staged gray releases that drive themselves (see [`rollout`]).
    pub fn rollouts(&self) -> rollout::Rollouts {
        rollout::Rollouts::new(Arc::clone(&self.inner.ctx), self.inner.config.clone())
    }

    /// Managing who may change what: the access policy, its etcd RBAC, decisions (see
    /// [`access`]).
    pub fn access(&self) -> access::Access {
        access::Access::new(
            self.inner.ctx.store.clone(),
            self.inner.config.identity().clone(),
        )
    }

    /// Hands this `Coord` the key ring its secrets are sealed and opened with (see
    /// [`keyring`]), replacing any it had: typed writes made after it seal with its newest
    /// key, and each `Live` opens values with it from its next change on. A rotation hands
    /// every process the ring with the new key first, then re-seals. `Coord::connect` sets
    /// the ring of [`ClientConfig::secret_keys`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> coord::Result<()> {
    /// use coord::keyring::{KeyRing, key_id_of};
    ///
    /// #[derive(coord::CoordConfig, Debug, Clone)]
    /// #[coord(prefix = "/config/db")]
    /// struct Db {
    ///     #[coord(secret)]
    ///     password: coord::Secret<String>,
    /// }
    ///
    /// let coord = coord::Coord::in_memory();
    /// coord.set_key_ring(KeyRing::parse("k1 AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=")?);
    /// coord.config().publish(&Db { password: coord::Secret::new("hunter2".into()) }).await?;
    /// let (stored, _) = coord.store().get("/config/db/password").await?;
    /// assert_eq!(key_id_of(&stored.unwrap().value).as_deref(), Some("k1"));
    /// assert_eq!(coord.live::<Db>().await?.load().password.expose(), "hunter2");
    /// # Ok(())
    /// # }
    /// ```
    pub fn set_key_ring(&self, keys: keyring::KeyRing) {
        self.inner.config_shared.keys.store(Some(Arc::new(keys)));
    }

    /// While `accept` is true, a secret stored plain is read as it is by a `Coord` with a key
    /// ring, as during a migration to sealed secrets (see [`keyring`]); otherwise, with a
    /// ring, a plain value where a secret belongs is [`Error::Secret`], so whoever can write
    /// etcd cannot set a secret. Off by default; `Coord::connect` sets it from
    /// [`ClientConfig::accept_plain_secrets`]. Takes effect at each `Live`'s next build.
    pub fn accept_plain_secrets(&self, accept: bool) {
        self.inner
            .config_shared
            .accept_plain
            .store(accept, std::sync::atomic::Ordering::Release);
    }

    /// Distributed locks on this connection; see [`Locks`].
    pub fn locks(&self) -> Locks {
        Locks::new(Arc::clone(&self.inner.ctx))
    }

    /// The election `name`; see [`Election`]. Nothing is sent until a method is called, and
    /// a bad name is reported by those methods as [`Error::InvalidArgument`].
    pub fn election(&self, name: &str) -> Election {
        Election::new(Arc::clone(&self.inner.ctx), name)
    }

    /// The service registry: register instances, discover and watch them, and call them
    /// through a balanced gRPC channel. See [`registry`].
    pub fn registry(&self) -> Registry {
        Registry::new(
            Arc::clone(&self.inner.ctx),
            Arc::clone(&self.inner.registry_shared),
        )
    }

    /// An allocator of the IDs `0..max_id` of `service`, on a lease of
    /// [`DEFAULT_ID_TTL`](ids::DEFAULT_ID_TTL) granted now; see [`IdAllocator`].
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for an empty service name, one with NUL or `/`, or
    /// `max_id == 0`; [`Error::Closed`]; store errors from the lease grant.
    ///
    /// # Cancel safety
    ///
    /// As [`ids_with_ttl`](Self::ids_with_ttl).
    pub async fn ids(&self, service: &str, max_id: u32) -> Result<IdAllocator> {
        self.ids_with_ttl(service, max_id, ids::DEFAULT_ID_TTL)
            .await
    }

    /// As [`ids`](Self::ids), with the lease TTL `ttl`.
    ///
    /// # Errors
    ///
    /// As [`ids`](Self::ids), and [`Error::InvalidArgument`] for a TTL under one second or
    /// over etcd's limit (9,000,000,000 s).
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a lease granted before the call was dropped is dropped with it, which
    /// revokes it (or it expires); no ID is held.
    pub async fn ids_with_ttl(
        &self,
        service: &str,
        max_id: u32,
        ttl: Duration,
    ) -> Result<IdAllocator> {
        IdAllocator::new(Arc::clone(&self.inner.ctx), service, max_id, ttl).await
    }

    /// Binds `T` to its `#[coord(prefix)]` and follows it: see [`Live`]. While this `Coord`
    /// holds a handle on the prefix, it reports which revision it runs in the prefix's
    /// rollout status ([`ConfigCenter::rollout`]), under its [`instance`](Self::instance) name.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] naming the key if a required key is missing or `validate` fails,
    /// [`Error::Decode`] naming the key if a value does not decode, store errors if the first
    /// read fails. After binding, bad values no longer fail: they keep the last good value.
    /// With [`ClientConfig::snapshot_dir`], a first read that fails because etcd cannot be
    /// reached binds from the prefix's snapshot on disk instead, stale (see
    /// [`Live::staleness`]); without a usable snapshot it is [`Error::Unavailable`] (or
    /// [`Error::Timeout`]), saying that no snapshot was found.
    ///
    /// # Cancel safety
    ///
    /// As [`live_at`](Self::live_at).
    pub async fn live<T: config::HasPrefix>(&self) -> Result<config::Live<T>> {
        let prefix = config::prefix_of::<T>("live_at")?;
        self.live_at(prefix).await
    }

    /// Binds `T` to the keys under `prefix`; see [`live`](Self::live).
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a dropped bind leaves no handle; the shared watch it may have started stops
    /// when no handle uses it.
    pub async fn live_at<T: config::CoordConfig>(&self, prefix: &str) -> Result<config::Live<T>> {
        self.inner.ctx.check_open()?;
        config::Live::bind(&self.inner.ctx, &self.inner.config_shared, prefix).await
    }

    /// How many key ranges this `Coord` is watching for `Live` handles right now.
    pub fn watched_ranges(&self) -> usize {
        self.inner.config_shared.hub.watched_ranges()
    }

    /// The client configuration (`None` for the in-memory store).
    pub fn client_config(&self) -> Option<&ClientConfig> {
        self.inner.client_config.as_ref()
    }

    /// In local file mode ([`from_file`](Self::from_file), or a [`ClientConfig::file`]), the
    /// followed file: its path and its last error. `None` otherwise.
    pub fn local_file(&self) -> Option<&store::file::LocalFile> {
        self.inner.file.get()
    }

    /// Asks the store for its status and reports every lease-holding handle (registrations,
    /// locks, IDs) of this `Coord`, and the writes it makes by itself that are failing (a
    /// rollout status key the store refuses, a snapshot file that cannot be saved; see
    /// [`Health::failing_writes`]). An unreachable store is reported in the answer, not as an
    /// error, so a health endpoint can always answer.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] after [`close`](Self::close).
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it only reads, so a dropped call leaves nothing behind.
    pub async fn health(&self) -> Result<Health> {
        let ctx = &self.inner.ctx;
        ctx.check_open()?;
        let started = Instant::now();
        Ok(match ctx.store.status().await {
            Ok(status) => Health {
                reachable: true,
                revision: status.revision,
                version: status.version,
                latency: started.elapsed(),
                error: None,
                sessions: ctx.sessions.report(),
                failing_writes: ctx.failing_writes.report(),
            },
            Err(e) => Health {
                reachable: false,
                revision: 0,
                version: String::new(),
                latency: started.elapsed(),
                error: Some(e.to_string()),
                sessions: ctx.sessions.report(),
                failing_writes: ctx.failing_writes.report(),
            },
        })
    }

    /// Shuts this `Coord` down gracefully: the call to make before a process exits.
    ///
    /// It releases everything this `Coord` (and every clone of it) holds, in parallel, each
    /// request bounded by `ClientConfig::request_timeout`: registrations are deregistered,
    /// locks unlocked, instance IDs released and leadership resigned, by revoking every lease
    /// this `Coord` granted (parked lock leases and the rollout status lease included), so
    /// their keys are gone at once
    /// rather than after their TTLs. It stops every watch: each [`Live`] keeps its last value
    /// and stops following the store; config watchers and `observe` streams end. From then on
    /// every call through this `Coord` or its handles, the config center and [`store`](Self::store)
    /// included, fails with [`Error::Closed`]; guards report their lease lost.
    ///
    /// Idempotent: a second call (or a call on a clone) waits for the first to finish, then
    /// returns `Ok(())`.
    ///
    /// # Errors
    ///
    /// [`Error::CloseIncomplete`] naming each lease it could not revoke (the store did not
    /// answer in time): those keys go when their TTL runs out. The `Coord` is closed anyway.
    ///
    /// # Cancel safety
    ///
    /// Once past a concurrent `close` it may be waiting for, the `Coord` is closed whether or
    /// not the future completes; a lease whose revoke was dropped midway is revoked in the
    /// background by its handle's drop, or expires.
    pub async fn close(&self) -> Result<()> {
        let ctx = &self.inner.ctx;
        // A second call waits for the first, then finds the context closed.
        let _closing = ctx.closing.lock().await;
        // Hold every session before anyone can see the close, so that close, not a handle's
        // drop, revokes each and can report a failure (a waiting acquire that wakes up with
        // `Closed` drops its session at once).
        let mut sessions = ctx.take_sessions();
        if !ctx.mark_closed() {
            return Ok(());
        }
        // From here every call refuses: the store first, so no request goes out after the
        // mark, whatever happens to this future. Revokes still go through (they only release).
        ctx.store.close();
        self.inner.config_shared.status.close();
        // Made between the first take and the mark (after it, `Context::session` refuses).
        sessions.extend(ctx.take_sessions());
        let span = tracing::info_span!("coord.close");
        async {
            // Stop following the store: Live handles keep their last value.
            self.inner.config_shared.hub.close();
            self.inner.registry_shared.discovery.close();
            let names: std::collections::HashMap<i64, String> = ctx
                .sessions
                .report()
                .into_iter()
                .map(|s| (s.lease, format!("{} `{}`", s.kind, s.name)))
                .collect();
            sessions.extend(ctx.leases.drain());
            sessions.sort_by_key(Session::lease_id);
            sessions.dedup_by_key(|s| s.lease_id());
            let timeout = ctx.request_timeout;
            let results = join_all(sessions.iter().map(|session| async move {
                let result = match tokio::time::timeout(timeout, session.close()).await {
                    Ok(result) => result,
                    Err(_) => Err(Error::Timeout {
                        operation: format!("revoking lease {:x}", session.lease_id()),
                        after: timeout,
                    }),
                };
                (session.lease_id(), result)
            }))
            .await;
            let unreleased: Vec<String> = results
                .into_iter()
                .filter_map(|(lease, result)| {
                    let error = result.err()?;
                    let what = names
                        .get(&lease)
                        .cloned()
                        .unwrap_or_else(|| "lease".to_owned());
                    Some(format!("{what} (lease {lease:x}): {error}"))
                })
                .collect();
            if unreleased.is_empty() {
                tracing::debug!(leases = sessions.len(), "closed");
                Ok(())
            } else {
                tracing::warn!(
                    ?unreleased,
                    "closed, but some leases were not revoked; they will expire"
                );
                Err(Error::CloseIncomplete { unreleased })
            }
        }
        .instrument(span)
        .await
    }
}

/// Opens and checks the snapshot directory of offline start on the blocking pool (a few
/// file-system calls, which may be slow on a network mount).
async fn open_snapshot_dir(
    dir: std::path::PathBuf,
    cluster: String,
) -> Result<config::offline::SnapshotDir> {
    let shown = dir.display().to_string();
    tokio::task::spawn_blocking(move || config::offline::SnapshotDir::open(dir, cluster))
        .await
        .map_err(|e| {
            Error::invalid_argument(
                "snapshot_dir",
                format!("the check of the snapshot directory `{shown}` did not complete: {e}"),
            )
        })?
}
