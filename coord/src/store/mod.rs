//! The store seam: everything coord needs from etcd, with etcd's meaning, behind one type.
//!
//! [`Store`] is an enum over two backends: [`etcd`](crate::store) (a real etcd via etcd-client)
//! and `memory` (an in-process MVCC store with the same semantics, for tests and the quickstart).
//! Every module above this one talks only to `Store`; nothing outside `store/` names etcd-client.
//!
//! What `Store` guarantees on both backends:
//! - one global revision that strictly increases with every write that changes something; every
//!   response carries the revision it saw;
//! - transactions are atomic, and a watch delivers all events of one revision in one
//!   [`WatchResponse`];
//! - a lease expires on its own when not kept alive, deleting its keys;
//! - a watch may start at any retained past revision; one that starts at a compacted revision
//!   yields [`Error::Compacted`] and ends;
//! - requests etcd would refuse for size (a request over 1.5 MiB, a transaction over 128
//!   operations) are refused with [`Error::InvalidArgument`] before anything is sent.
//! - a write that failed after it may have reached etcd (its deadline passed, the connection
//!   broke under it) is [`Error::OutcomeUnknown`]: it may have been applied, so check before
//!   retrying. A write that is `Unavailable` was not applied (never sent, or refused by etcd
//!   before it was proposed). A connection that was open when it broke counts as sent. Reads
//!   never return `OutcomeUnknown` (the embedded store never does).
//!
//! `Store` also counts round trips and open watch streams ([`StoreStats`]), so tests and
//! benchmarks can check how much work an operation really does.

pub(crate) mod etcd;
pub mod file;
pub(crate) mod memory;
mod types;

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::task::{Context, Poll};

use futures::{Stream, StreamExt};
use tracing::Instrument;

pub(crate) use etcd::{Credentials, EtcdOptions, TlsMaterial};
pub use types::*;

use crate::connection::{ConnectionState, Link, StateCell, Ticket};
use crate::error::{Error, Result};
use crate::sync::Slots;

/// etcd's default `--max-request-bytes` (1.5 MiB); a larger request is refused by the server.
pub const MAX_REQUEST_BYTES: usize = 1536 * 1024;
/// etcd's default `--max-txn-ops`.
pub const MAX_TXN_OPS: usize = 128;
/// Room left in a request for everything but keys and values (protobuf framing, lease ids).
const REQUEST_OVERHEAD: usize = 512;

/// A stream of watch responses. It ends after an error (a broken connection, a compacted
/// start revision); [`crate::watch`] builds the stream that does not end on top of it.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchResponse>> + Send + 'static>>;

/// Counters of the work a [`Store`] did; shared by all clones of one store.
#[derive(Debug, Default)]
pub struct StoreStats {
    round_trips: AtomicU64,
    open_watches: AtomicI64,
    watches_opened: AtomicU64,
}

impl StoreStats {
    /// Requests sent to the store (unary calls; opening a watch counts as one).
    pub fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::Relaxed)
    }

    /// Store watch streams open right now.
    pub fn open_watches(&self) -> i64 {
        self.open_watches.load(Ordering::Relaxed)
    }

    /// Store watch streams opened since the store was created.
    pub fn watches_opened(&self) -> u64 {
        self.watches_opened.load(Ordering::Relaxed)
    }
}

#[derive(Clone)]
enum Backend {
    Etcd(etcd::EtcdStore),
    Memory(memory::MemoryStore),
}

/// A handle to the store; cheap to clone, all clones share one connection and one set of
/// counters.
#[derive(Clone)]
pub struct Store {
    backend: Backend,
    stats: Arc<StoreStats>,
    /// Set by `close`: every call then fails with [`Error::Closed`] and open watches end.
    closed: Arc<tokio::sync::watch::Sender<bool>>,
    /// The highest revision at which a call of this handle (or a clone) changed the store.
    written: Arc<AtomicI64>,
    /// The connection's health as every handle's calls see it (shared by all handles).
    link: Arc<Link>,
    /// This handle's connection state (see [`crate::connection`]).
    state: Arc<StateCell>,
    /// State that layers above keep per handle (the session layer's lease renewer), which
    /// the store holds without knowing it.
    slots: Arc<Slots>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.backend {
            Backend::Etcd(_) => "etcd",
            Backend::Memory(_) => "memory",
        };
        f.debug_struct("Store").field("backend", &kind).finish()
    }
}

/// Calls the same method on whichever backend this is.
macro_rules! dispatch {
    ($self:ident . $method:ident ( $($arg:expr),* )) => {
        match &$self.backend {
            Backend::Etcd(b) => b.$method($($arg),*).await,
            Backend::Memory(b) => b.$method($($arg),*).await,
        }
    };
}

impl Store {
    /// A new, empty in-memory store.
    pub fn in_memory() -> Self {
        Self::from_backend(Backend::Memory(memory::MemoryStore::new()))
    }

    /// Connects to etcd.
    pub(crate) async fn connect(options: &EtcdOptions) -> Result<Self> {
        let backend = etcd::EtcdStore::connect(options).await?;
        Ok(Self::from_backend(Backend::Etcd(backend)))
    }

    fn from_backend(backend: Backend) -> Self {
        Self::on_link(backend, Arc::default())
    }

    fn on_link(backend: Backend, link: Arc<Link>) -> Self {
        Store {
            backend,
            stats: Arc::new(StoreStats::default()),
            closed: Arc::new(tokio::sync::watch::Sender::new(false)),
            written: Arc::default(),
            state: StateCell::new(&link),
            link,
            slots: Arc::default(),
        }
    }

    /// Another handle on the same backend (connection or embedded store) with its own counters,
    /// its own close flag, its own [`written_revision`](Self::written_revision) and its own
    /// connection state (the outages it sees are the connection's; the leases it loses are
    /// its own).
    pub(crate) fn new_handle(&self) -> Store {
        Self::on_link(self.backend.clone(), Arc::clone(&self.link))
    }

    /// This handle's one `T`, made with `T::default()` on first use and shared by its clones
    /// (not by [`new_handle`](Self::new_handle)s): how a layer above keeps state per store
    /// handle (the session layer's lease renewer) without the store naming it.
    pub(crate) fn slot<T: Default + Send + Sync + 'static>(&self) -> Arc<T> {
        self.slots.get::<T>()
    }

    /// This handle's connection state (see [`crate::connection`]).
    pub(crate) fn connection_state(&self) -> tokio::sync::watch::Receiver<ConnectionState> {
        self.state.subscribe()
    }

    /// A lease of this handle is gone: its state becomes `Lost`.
    pub(crate) fn lease_lost(&self) {
        self.state.lease_lost(&self.link);
        probe_if_needed(&self.backend, &self.link);
    }

    /// Tells the link what the answer to a call that began at `ticket` says about the
    /// connection.
    fn observe<T>(&self, ticket: Ticket, result: &Result<T>) {
        observe(&self.backend, &self.link, ticket, result.as_ref().err());
    }

    /// Refuses every later call with [`Error::Closed`] and ends every open watch stream of
    /// this store and its clones. The connection itself closes when the last clone is dropped.
    pub(crate) fn close(&self) {
        self.closed.send_replace(true);
    }

    /// True after [`close`](Self::close).
    pub(crate) fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    fn check_open(&self) -> Result<()> {
        if self.is_closed() {
            return Err(Error::Closed);
        }
        Ok(())
    }

    /// True for the embedded in-memory backend.
    pub fn is_memory(&self) -> bool {
        matches!(self.backend, Backend::Memory(_))
    }

    /// The ID of the cluster behind this store, as its last status answer said (see
    /// [`Status::cluster_id`]): on etcd, from the connect probe or a later
    /// [`status`](Self::status); `None` after an offline start until etcd answered one.
    pub(crate) fn cluster_id(&self) -> Option<u64> {
        match &self.backend {
            Backend::Etcd(b) => b.cluster_id(),
            Backend::Memory(b) => Some(b.cluster_id()),
        }
    }

    /// The counters of this store.
    pub fn stats(&self) -> &StoreStats {
        &self.stats
    }

    /// gRPC watch streams open to etcd right now: every watch of this store shares one stream,
    /// so this is 0 or 1 however many watches are open (always 0 for the embedded store).
    pub fn watch_streams(&self) -> i64 {
        match &self.backend {
            Backend::Etcd(b) => b.watch_streams(),
            Backend::Memory(_) => 0,
        }
    }

    /// gRPC lease keep-alive streams open to etcd right now: every lease of this store renews
    /// over one stream, so this is 0 or 1 however many sessions are kept alive (always 0 for
    /// the embedded store).
    pub fn keep_alive_streams(&self) -> i64 {
        match &self.backend {
            Backend::Etcd(b) => b.keep_alive_streams(),
            Backend::Memory(_) => 0,
        }
    }

    fn count(&self) {
        self.stats.round_trips.fetch_add(1, Ordering::Relaxed);
    }

    /// Runs one request, recording it (and its error, if any) in the metrics.
    async fn measured<T>(
        &self,
        op: &'static str,
        request: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        let started = std::time::Instant::now();
        let ticket = self.link.ticket();
        let result = request.await;
        crate::metrics::store_request(op, started.elapsed(), result.as_ref().err());
        self.observe(ticket, &result);
        result
    }

    /// The highest revision at which a `put`, `delete`, `txn` or `lease_revoke` of this handle
    /// (or a clone of it) changed the store, 0 if none has. A read cache at or past it has seen
    /// every one of those writes (the read-your-writes bound of `ConfigCenter`'s cache).
    pub(crate) fn written_revision(&self) -> i64 {
        self.written.load(Ordering::Acquire)
    }

    fn wrote(&self, revision: i64) {
        self.written.fetch_max(revision, Ordering::AcqRel);
    }

    /// Reads one key; `None` if it does not exist.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it only reads, so a dropped call leaves nothing behind.
    pub async fn get(&self, key: &str) -> Result<(Option<KeyValue>, i64)> {
        let resp = self
            .range(&KeyRange::key(key), RangeOptions::default())
            .await?;
        Ok((resp.kvs.into_iter().next(), resp.revision))
    }

    /// Reads a key or a prefix, at the latest or a past revision.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it only reads, so a dropped call leaves nothing behind.
    pub async fn range(&self, range: &KeyRange, options: RangeOptions) -> Result<GetResponse> {
        check_key("key", range.as_str(), matches!(range, KeyRange::Prefix(_)))?;
        self.check_open()?;
        self.count();
        let span = tracing::debug_span!(
            "store.range",
            key = range.as_str(),
            revision = options.revision
        );
        self.measured(
            "range",
            async { dispatch!(self.range(range, options)) }.instrument(span),
        )
        .await
    }

    /// Writes a key, attached to `lease` (0 = no lease).
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe: once the request is sent, a dropped call may or may not have written
    /// the key (read it to know). It never leaves half a write.
    pub async fn put(&self, key: &str, value: Vec<u8>, lease: i64) -> Result<PutResponse> {
        check_key("key", key, false)?;
        check_request_size(key, key.len() + value.len())?;
        self.check_open()?;
        self.count();
        let span = tracing::debug_span!("store.put", key, lease);
        let response = self
            .measured(
                "put",
                async { dispatch!(self.put(key, value, lease)) }.instrument(span),
            )
            .await?;
        self.wrote(response.revision);
        Ok(response)
    }

    /// Deletes a key or every key under a prefix.
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe: once the request is sent, a dropped call may or may not have deleted;
    /// a prefix is deleted whole (in one revision) or not at all.
    pub async fn delete(&self, range: &KeyRange) -> Result<DeleteResponse> {
        check_key("key", range.as_str(), matches!(range, KeyRange::Prefix(_)))?;
        self.check_open()?;
        self.count();
        let span = tracing::debug_span!("store.delete", key = range.as_str());
        let response = self
            .measured(
                "delete",
                async { dispatch!(self.delete(range)) }.instrument(span),
            )
            .await?;
        // Deleting nothing changes nothing (and leaves the revision where it was).
        if response.deleted > 0 {
            self.wrote(response.revision);
        }
        Ok(response)
    }

    /// Runs a transaction atomically.
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe: once the request is sent, a dropped call may or may not have applied
    /// the transaction, and which branch ran is lost. It is applied whole or not at all, so a
    /// transaction guarded by compares (create-only, a version) can be checked by reading or
    /// safely sent again.
    pub async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        check_txn(&txn)?;
        self.check_open()?;
        self.count();
        let span = tracing::debug_span!("store.txn", key = txn.first_key());
        let response = self
            .measured("txn", async { dispatch!(self.txn(txn)) }.instrument(span))
            .await?;
        let changed = response.responses.iter().any(|r| match r {
            TxnOpResponse::Put(_) => true,
            TxnOpResponse::Delete(d) => d.deleted > 0,
            TxnOpResponse::Get(_) => false,
        });
        if changed {
            self.wrote(response.revision);
        }
        Ok(response)
    }

    /// Grants a lease of `ttl` seconds; the answer holds the TTL actually granted.
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe: once the request is sent, a dropped call may have granted a lease
    /// whose ID nobody learns. Nothing is attached to it and nobody renews it, so it expires
    /// after its TTL.
    pub async fn lease_grant(&self, ttl: i64) -> Result<LeaseGrant> {
        if ttl < 1 {
            return Err(Error::invalid_argument(
                "ttl",
                format!("a lease TTL must be at least 1 second, got {ttl}"),
            ));
        }
        self.check_open()?;
        self.count();
        let span = tracing::debug_span!("store.lease_grant", ttl);
        self.measured(
            "lease_grant",
            async { dispatch!(self.lease_grant(ttl)) }.instrument(span),
        )
        .await
    }

    /// Renews a lease once; returns the new TTL in seconds, or [`Error::LeaseNotFound`].
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a dropped renewal may or may not have renewed the lease, which then keeps
    /// at least the time it had left, and renewing again is always allowed. On etcd the
    /// lease's kept keep-alive stream is dropped with it (an answer left unread on it must not
    /// be taken for the next renewal's), so the next renewal opens a new one: one more round
    /// trip.
    pub async fn lease_keep_alive(&self, id: i64) -> Result<i64> {
        self.check_open()?;
        self.count();
        let span = tracing::debug_span!("store.lease_keep_alive", lease = id);
        self.measured(
            "lease_keep_alive",
            async { dispatch!(self.lease_keep_alive(id)) }.instrument(span),
        )
        .await
    }

    /// Revokes a lease, deleting its keys at once.
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe: once the request is sent, a dropped call may or may not have revoked
    /// the lease (and deleted its keys). Revoking again is harmless: a lease already gone is
    /// [`Error::LeaseNotFound`].
    pub async fn lease_revoke(&self, id: i64) -> Result<()> {
        self.check_open()?;
        self.release_lease(id).await
    }

    /// [`lease_revoke`](Self::lease_revoke) even after [`close`](Self::close): revoking only
    /// releases, and a session dropped around `Coord::close` must still be able to give its
    /// lease back rather than leave its keys for the TTL.
    pub(crate) async fn release_lease(&self, id: i64) -> Result<()> {
        self.count();
        let span = tracing::debug_span!("store.lease_revoke", lease = id);
        let revision = self
            .measured(
                "lease_revoke",
                async { dispatch!(self.lease_revoke(id)) }.instrument(span),
            )
            .await?;
        // Revoking deletes the lease's keys: a write of this handle like any other.
        self.wrote(revision);
        Ok(())
    }

    /// A lease's remaining TTL (`ttl == -1` if it no longer exists).
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it only reads, so a dropped call leaves nothing behind.
    pub async fn lease_ttl(&self, id: i64) -> Result<LeaseTtl> {
        self.check_open()?;
        self.count();
        let span = tracing::debug_span!("store.lease_ttl", lease = id);
        self.measured(
            "lease_ttl",
            async { dispatch!(self.lease_ttl(id)) }.instrument(span),
        )
        .await
    }

    /// Watches a key or prefix from `start_revision` (0 = from now on).
    ///
    /// The stream yields batches of events that share a revision, in revision order. It ends
    /// after yielding an error; a start revision that is compacted yields [`Error::Compacted`].
    /// Dropping the stream cancels the watch.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a dropped call leaves no watcher behind. On etcd, a watch whose create
    /// request was already sent on the shared stream is cancelled as soon as etcd answers it,
    /// and the shared stream closes when nothing else watches on it.
    pub async fn watch(&self, range: &KeyRange, start_revision: i64) -> Result<WatchStream> {
        check_key("key", range.as_str(), matches!(range, KeyRange::Prefix(_)))?;
        self.check_open()?;
        self.count();
        let span = tracing::debug_span!("store.watch", key = range.as_str(), start_revision);
        let opened = self.link.ticket();
        let inner = self
            .measured(
                "watch",
                async { dispatch!(self.watch(range, start_revision)) }.instrument(span),
            )
            .await?;
        self.stats.open_watches.fetch_add(1, Ordering::Relaxed);
        self.stats.watches_opened.fetch_add(1, Ordering::Relaxed);
        let mut closed = self.closed.subscribe();
        let closed = async move {
            // A dropped sender cannot happen while this store lives; either way, end.
            let _ = closed.wait_for(|closed| *closed).await;
        };
        Ok(Box::pin(CountedStream {
            inner: Box::pin(inner.take_until(closed)),
            stats: Arc::clone(&self.stats),
            backend: self.backend.clone(),
            link: Arc::clone(&self.link),
            opened,
        }))
    }

    /// Compacts the history up to `revision`: older revisions can no longer be read or watched.
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe: once the request is sent, a dropped call may or may not have
    /// compacted. Compacting again to the same revision is [`Error::Compacted`] if it was.
    pub async fn compact(&self, revision: i64) -> Result<()> {
        self.check_open()?;
        self.count();
        let span = tracing::debug_span!("store.compact", revision);
        self.measured(
            "compact",
            async { dispatch!(self.compact(revision)) }.instrument(span),
        )
        .await
    }

    /// etcd's users and roles, whole (etcd's auth API; the connection must hold `root`).
    /// The embedded store has no users: it answers [`Error::InvalidArgument`].
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it only reads.
    pub async fn auth_state(&self) -> Result<AuthState> {
        self.check_open()?;
        self.count();
        let span = tracing::debug_span!("store.auth_state");
        match &self.backend {
            Backend::Etcd(b) => {
                self.measured("auth_state", b.auth_state())
                    .instrument(span)
                    .await
            }
            Backend::Memory(_) => Err(no_auth()),
        }
    }

    /// Makes one change to etcd's users and roles (the connection must hold `root`). The
    /// embedded store has no users: it answers [`Error::InvalidArgument`].
    ///
    /// # Cancel safety
    ///
    /// A dropped call may or may not have made its change; read [`auth_state`](Self::auth_state)
    /// again.
    pub async fn auth_change(&self, change: &AuthChange) -> Result<()> {
        self.check_open()?;
        self.count();
        let span = tracing::info_span!("store.auth_change", change = %change);
        match &self.backend {
            Backend::Etcd(b) => {
                self.measured("auth_change", b.auth_change(change))
                    .instrument(span)
                    .await
            }
            Backend::Memory(_) => Err(no_auth()),
        }
    }

    /// The store's revision, version and leader.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it only reads, so a dropped call leaves nothing behind.
    pub async fn status(&self) -> Result<Status> {
        self.check_open()?;
        self.count();
        let span = tracing::debug_span!("store.status");
        self.measured(
            "status",
            async { dispatch!(self.status()) }.instrument(span),
        )
        .await
    }
}

fn no_auth() -> Error {
    Error::invalid_argument(
        "auth",
        "the embedded store has no users or roles: etcd's RBAC needs an etcd server",
    )
}

/// Tells `link` what the answer (`Ok` if `error` is `None`) to a call that began at `ticket`
/// says about the connection, and starts the probe if the store now counts as unreachable.
fn observe(backend: &Backend, link: &Arc<Link>, ticket: Ticket, error: Option<&Error>) {
    // A write of unknown outcome says about the connection what the error that ended it does.
    match error.map(Error::cause) {
        Some(Error::Unavailable { .. }) => {
            link.unreachable(ticket);
            probe_if_needed(backend, link);
        }
        // A slow call alone suspends nothing, and a closed store says nothing about etcd.
        Some(Error::Timeout { .. } | Error::Closed) => {}
        // Any other answer, even a refusal, came from the store.
        _ => link.answered(ticket),
    }
}

/// The first wait of the probe, doubled after each unanswered try up to [`PROBE_MAX`].
const PROBE_FIRST: std::time::Duration = std::time::Duration::from_millis(250);
const PROBE_MAX: std::time::Duration = std::time::Duration::from_secs(2);

fn probe_if_needed(backend: &Backend, link: &Arc<Link>) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current()
        && link.start_probe()
    {
        runtime.spawn(probe(backend.clone(), Arc::clone(link)));
    }
}

/// While an answer is awaited, asks the store for its status now and then, so a `Coord` that
/// calls nothing itself (no watch, no lease left) still learns when the store is back. Only
/// while suspended or lost: a connected store is never polled. Ends once the store answers
/// or no handle on the connection is left.
async fn probe(backend: Backend, link: Arc<Link>) {
    let mut wait = PROBE_FIRST;
    loop {
        tokio::time::sleep(wait).await;
        if !link.needs_answer() || !link.has_cells() {
            if link.stop_probe() {
                wait = PROBE_FIRST;
                continue;
            }
            return;
        }
        let ticket = link.ticket();
        let answer = match &backend {
            Backend::Etcd(b) => b.status().await.err(),
            Backend::Memory(_) => None,
        };
        match answer {
            Some(Error::Unavailable { .. } | Error::Timeout { .. }) => {}
            _ => link.answered(ticket),
        }
        wait = (wait * 2).min(PROBE_MAX);
    }
}

/// Decrements the open-watch counter when the watch stream is dropped, and tells the link
/// what the stream says about the connection. Its items answer the call that opened it: a
/// stream ends with the outage that breaks it, so whatever it yields comes from the store as
/// it was when the stream was opened.
struct CountedStream {
    inner: WatchStream,
    stats: Arc<StoreStats>,
    backend: Backend,
    link: Arc<Link>,
    opened: Ticket,
}

impl Stream for CountedStream {
    type Item = Result<WatchResponse>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let item = self.inner.as_mut().poll_next(cx);
        match &item {
            Poll::Ready(Some(Ok(_))) => self.link.answered(self.opened),
            // The shared stream broke: etcd is gone or the connection is.
            Poll::Ready(Some(Err(error @ Error::Unavailable { .. }))) => {
                observe(&self.backend, &self.link, self.opened, Some(error));
            }
            _ => {}
        }
        item
    }
}

impl Drop for CountedStream {
    fn drop(&mut self) {
        self.stats.open_watches.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A key must be non-empty (a prefix may be empty: it means every key) and free of NUL.
pub(crate) fn check_key(field: &str, key: &str, is_prefix: bool) -> Result<()> {
    if key.is_empty() && !is_prefix {
        return Err(Error::invalid_argument(field, "must not be empty"));
    }
    if key.contains('\0') {
        return Err(Error::invalid_argument(
            field,
            format!("`{}` contains a NUL character", key.escape_debug()),
        ));
    }
    check_request_size(key, key.len())
}

fn check_request_size(key: &str, bytes: usize) -> Result<()> {
    if bytes + REQUEST_OVERHEAD > MAX_REQUEST_BYTES {
        return Err(Error::invalid_argument(
            key,
            format!(
                "request of {bytes} bytes exceeds etcd's limit of {MAX_REQUEST_BYTES} bytes (1.5 MiB)"
            ),
        ));
    }
    Ok(())
}

fn check_txn(txn: &Txn) -> Result<()> {
    let ops = txn
        .compares
        .len()
        .max(txn.success.len().max(txn.failure.len()));
    if ops > MAX_TXN_OPS {
        return Err(Error::invalid_argument(
            txn.first_key(),
            format!("a transaction holds at most {MAX_TXN_OPS} operations, this one has {ops}"),
        ));
    }
    let mut bytes = 0;
    for c in &txn.compares {
        check_key("compare key", &c.key, false)?;
        bytes += c.key.len();
        if let CompareTarget::Value(v) = &c.target {
            bytes += v.len();
        }
    }
    for op in txn.success.iter().chain(&txn.failure) {
        match op {
            TxnOp::Put { key, value, .. } => {
                check_key("key", key, false)?;
                bytes += key.len() + value.len();
            }
            TxnOp::Delete(range) | TxnOp::Get(range, _) => {
                check_key("key", range.as_str(), matches!(range, KeyRange::Prefix(_)))?;
                bytes += range.as_str().len();
            }
        }
    }
    check_request_size(txn.first_key(), bytes)
}
