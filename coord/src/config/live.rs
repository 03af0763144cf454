//! `Live<T>`: a config struct that follows the store, read lock-free.
//!
//! # What it promises
//!
//! - **Whole values.** [`Live::load`] always returns a complete, decoded and validated `T`. The
//!   first value is built from one range read at one revision; after that, every event of one
//!   revision is applied together and the struct is swapped once, so a reader never sees half
//!   of a multi-key transaction.
//! - **Last good value.** If a key fails to decode, a required key is deleted, or `validate`
//!   fails, the previous value stays live, [`Live::last_error`] names the key and reason, and a
//!   `tracing` warning is logged. The next good revision heals it and clears the error.
//! - **Untouched keys cost nothing.** Snapshots of the prefix share every unchanged value, and
//!   a revision that changes none of `T`'s keys (another key under the prefix moved) neither
//!   rebuilds nor swaps the struct nor wakes subscribers: checking that costs one lookup per
//!   field, however many keys the prefix holds. The revision still advances.
//! - **Lock-free reads.** `load` is an `arc_swap` load (a few nanoseconds, no lock, never
//!   blocked by the updater); [`Live::reader`] gives a per-thread handle that is cheaper still.
//! - **Shared watches.** All handles on one prefix of one `Coord` share one store watch, which
//!   survives etcd restarts and compaction (see [`crate::watch`]).
//! - **Gray releases.** A handle whose instance a gray release's selector picks (see
//!   [`Selector`](crate::config::Selector)) lays the gray values over its prefix's and builds
//!   one struct from both; the gray release, its promotion and its abort each reach it as one
//!   swap, never showing the values from before a promoted gray release. All handles of a
//!   `Coord` share one watch of the gray releases.
//! - **Status.** While a handle lives, its `Coord` keeps a status key saying which revision
//!   (and gray release) it runs and what it rejected (see [`crate::config::InstanceStatus`]).
//! - **Drop.** Dropping the last clone of a handle stops its updates; the store watch stops when
//!   no handle on its prefix is left.
//! - **Reported.** While a `Coord` has a handle on a prefix, it keeps a status key saying which
//!   revision it runs and what it rejected (see `ConfigCenter::rollout`). Reporting is one
//!   `watch` send per change: a reload never waits for the status write.
//! - **Offline start.** With [`ClientConfig::snapshot_dir`](crate::ClientConfig::snapshot_dir),
//!   the raw values each good value was built from are kept on disk (written in the
//!   background, never torn), and a bind while etcd cannot be reached starts from them,
//!   [stale](Live::staleness) until etcd answers; without a snapshot it fails as it would
//!   without the directory.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use arc_swap::{ArcSwap, ArcSwapOption};
use tokio::sync::watch;

use crate::config::explain::{self, Built, Explanation};
use crate::config::gray::{GRAY_ROOT, GrayDoc, gray_key};
use crate::config::hub::{ChangeLog, Offline, RangeSnapshot, RangeWatch, WatchHub};
use crate::config::raw::RawValue;
use crate::config::schema::{CoordConfig, Source};
use crate::config::shared::ConfigShared;
use crate::config::status::reporter::{self, HandleState, Rejected, StatusSlot};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::instance::Instance;
use crate::keyring::KeyRing;
use crate::sync::lock;

/// A live config value. Cheap to clone; clones share the value and its updates.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> coord::Result<()> {
/// use coord::{Coord, CoordConfig};
///
/// #[derive(CoordConfig, Debug, Clone, PartialEq)]
/// #[coord(prefix = "/config/checkout")]
/// struct Checkout {
///     #[coord(default = 30)]
///     timeout_secs: u64,
/// }
///
/// let coord = Coord::in_memory();
/// let live = coord.live::<Checkout>().await?;
/// assert_eq!(live.load().timeout_secs, 30);
///
/// let mut updates = live.subscribe();
/// coord.config().set("/config/checkout/timeout_secs", &45).await?;
/// updates.changed().await.expect("live handle open");
/// assert_eq!(live.load().timeout_secs, 45);
/// # Ok(())
/// # }
/// ```
pub struct Live<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Clone for Live<T> {
    fn clone(&self) -> Self {
        Live {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for Live<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live")
            .field("prefix", &self.shared.prefix)
            .field("revision", &self.shared.revision.load(Ordering::Acquire))
            .field("value", &**self.shared.current.load())
            .finish()
    }
}

struct Shared<T> {
    prefix: String,
    current: Arc<ArcSwap<T>>,
    revision: AtomicI64,
    /// The last rejected change and its revision, while the latest change is rejected.
    last_error: Mutex<Option<Rejected>>,
    tx: watch::Sender<Arc<T>>,
    task: Option<tokio::task::AbortHandle>,
    /// The shared watch of the prefix (`None` for `fixed`). Held here, not by the follow task,
    /// so it goes with the last handle at once: a task is dropped only some time after its
    /// abort, and until then a new bind on the prefix would join this watch and could build
    /// from a snapshot older than writes its caller has already seen acknowledged.
    _range: Option<Arc<RangeWatch>>,
    /// This handle's place in its `Coord`'s status of the prefix (`None` for `fixed`).
    status: Option<StatusSlot>,
    /// The shared watch of the gray releases (`None` for `fixed`).
    _gray: Option<Arc<RangeWatch>>,
    /// The gray release the current value includes, if any.
    gray: Mutex<Option<u64>>,
    /// Since when the watch behind the value has been broken, while it is.
    stale_since: Mutex<Option<std::time::Instant>>,
    /// What the current value was built from, for `explain` (`None` for `fixed`). Set with
    /// each swap: the `Arc`s of the snapshot, no copy per key.
    built: Mutex<Option<Built<T>>>,
}

impl<T> Shared<T> {
    /// Tells the status reporter this handle's revision and last rejection.
    fn report_status(&self, revision: i64, rejected: Option<Rejected>) {
        if let Some(slot) = &self.status {
            let gray = *lock(&self.gray);
            slot.report(HandleState {
                revision,
                rejected,
                gray,
            });
        }
    }
}

impl<T> Drop for Shared<T> {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// A loaded value: derefs to `T`. Hold it briefly; it pins the value it loaded.
pub struct LiveGuard<T>(arc_swap::Guard<Arc<T>>);

impl<T> std::ops::Deref for LiveGuard<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for LiveGuard<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (**self).fmt(f)
    }
}

/// A per-thread reader for hot loops: `load` goes through [`arc_swap::Cache`] and costs about
/// one atomic load when nothing changed. Get one per thread from [`Live::reader`].
pub struct LiveReader<T> {
    cache: arc_swap::Cache<Arc<ArcSwap<T>>, Arc<T>>,
}

impl<T> LiveReader<T> {
    /// The current value.
    pub fn load(&mut self) -> &Arc<T> {
        self.cache.load()
    }
}

impl<T: Send + Sync + 'static> Live<T> {
    /// A value that never changes, for tests and for code paths without a store.
    ///
    /// ```
    /// let live = coord::Live::fixed(42u32);
    /// assert_eq!(*live.load(), 42);
    /// assert_eq!(live.revision(), 0);
    /// assert!(live.last_error().is_none());
    /// ```
    pub fn fixed(value: T) -> Self {
        let value = Arc::new(value);
        let (tx, _) = watch::channel(Arc::clone(&value));
        Live {
            shared: Arc::new(Shared {
                prefix: String::new(),
                current: Arc::new(ArcSwap::new(value)),
                revision: AtomicI64::new(0),
                last_error: Mutex::new(None),
                tx,
                task: None,
                _range: None,
                status: None,
                _gray: None,
                gray: Mutex::new(None),
                stale_since: Mutex::new(None),
                built: Mutex::new(None),
            }),
        }
    }

    /// The current value, lock-free.
    pub fn load(&self) -> LiveGuard<T> {
        LiveGuard(self.shared.current.load())
    }

    /// The current value as an `Arc` (a little slower than [`load`](Self::load); keep it as
    /// long as you like).
    pub fn load_full(&self) -> Arc<T> {
        self.shared.current.load_full()
    }

    /// The store revision the current value is current at (0 for [`fixed`](Self::fixed)):
    /// the revision it was built from, or a later one whose changes touched none of its keys
    /// (those move the revision without rebuilding or swapping the value). It moves just
    /// before a value is swapped, so after loading a value this is at least that value's
    /// revision. While a change of its keys is rejected (see [`last_error`](Self::last_error))
    /// it stays at the last good value's revision.
    pub fn revision(&self) -> i64 {
        self.shared.revision.load(Ordering::Acquire)
    }

    /// Resolves at the next swap to a new value.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe. A change that happens between two calls is not seen by the second; use
    /// [`subscribe`](Self::subscribe) to see every change.
    pub async fn changed(&self) {
        let mut rx = self.shared.tx.subscribe();
        // A closed channel means the handle's updates stopped: then it never changes again.
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// A receiver of every new value, starting with the current one marked as seen.
    pub fn subscribe(&self) -> watch::Receiver<Arc<T>> {
        self.shared.tx.subscribe()
    }

    /// `None` while the value follows a connected watch; while the watch is broken (etcd
    /// unreachable, the connection reset), how long it has been: the value may be that far
    /// behind. It is `None` again once the prefix has been listed after the reconnect (and
    /// the value rebuilt if anything changed meanwhile). Always `None` for
    /// [`fixed`](Self::fixed).
    ///
    /// A handle started offline from its snapshot on disk (see
    /// [`ClientConfig::snapshot_dir`](crate::ClientConfig::snapshot_dir)) is stale from the
    /// bind: the duration counts from then, though the snapshot may be older still.
    ///
    /// ```
    /// let live = coord::Live::fixed(1u8);
    /// assert_eq!(live.staleness(), None);
    /// ```
    pub fn staleness(&self) -> Option<std::time::Duration> {
        lock(&self.shared.stale_since).map(|since| since.elapsed())
    }

    /// Why the latest revision was not applied, if it was not: the error names the key. `None`
    /// once a good revision has been applied.
    pub fn last_error(&self) -> Option<Arc<Error>> {
        lock(&self.shared.last_error)
            .as_ref()
            .map(|rejected| Arc::clone(&rejected.error))
    }

    /// A per-thread reader whose `load` is cheaper still (see [`LiveReader`]).
    pub fn reader(&self) -> LiveReader<T> {
        LiveReader {
            cache: arc_swap::Cache::new(Arc::clone(&self.shared.current)),
        }
    }

    /// The prefix the value is bound to.
    pub fn prefix(&self) -> &str {
        &self.shared.prefix
    }
}

impl<T: CoordConfig> Live<T> {
    /// Where each value of the current struct came from: every key (nested structs
    /// flattened, a map field one entry per stored entry) with the value the handle serves
    /// as JSON (secrets `"<redacted>"`) and its [`Origin`](crate::config::Origin): the key and
    /// the revision that wrote it, an alias, an environment override, a gray release, or the
    /// default. The operator's first question, "where does this value come from".
    ///
    /// It describes the build the handle serves, from what that build read (see
    /// [`config::explain`](crate::config::explain) for what it promises): nothing is read
    /// from the store. `Display` prints it as an aligned table.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] if a field of the value does not serialize to JSON (a map with
    /// keys that are not strings).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> coord::Result<()> {
    /// use coord::config::Origin;
    /// use coord::{Coord, CoordConfig};
    ///
    /// #[derive(CoordConfig, Debug, Clone)]
    /// #[coord(prefix = "/config/checkout")]
    /// struct Checkout {
    ///     #[coord(default = 30)]
    ///     timeout_secs: u64,
    ///     #[coord(default = 3)]
    ///     retries: u32,
    /// }
    ///
    /// let coord = Coord::in_memory();
    /// let written = coord.config().set("/config/checkout/timeout_secs", &45).await?;
    /// let live = coord.live::<Checkout>().await?;
    ///
    /// let explanation = live.explain()?;
    /// let timeout = explanation.get("/config/checkout/timeout_secs").expect("a field");
    /// assert_eq!(timeout.value, 45);
    /// assert_eq!(timeout.origin, Origin::Key { mod_revision: written });
    /// let retries = explanation.get("/config/checkout/retries").expect("a field");
    /// assert_eq!(retries.origin, Origin::Default);
    ///
    /// // /config/checkout/ at revision 2
    /// // KEY                            VALUE  SOURCE
    /// // /config/checkout/timeout_secs  45     key, mod revision 2
    /// // /config/checkout/retries       3      default
    /// println!("{explanation}");
    /// # assert!(explanation.to_string().contains("/config/checkout/retries       3      default"));
    /// # Ok(())
    /// # }
    /// ```
    pub fn explain(&self) -> Result<Explanation> {
        let built = lock(&self.shared.built).clone();
        match built {
            Some(built) => explain::explain(&self.shared.prefix, &built),
            None => explain::fixed(&*self.load_full()),
        }
    }

    /// Binds `T` to `prefix` on a shared range watch of `config`'s hub, reporting its status
    /// through `config`'s status reporters.
    pub(crate) async fn bind(
        ctx: &Arc<Context>,
        config: &ConfigShared,
        prefix: &str,
    ) -> Result<Self> {
        let prefix = prefix.trim_end_matches('/').to_string();
        let range = crate::store::KeyRange::prefix(format!("{prefix}/"));
        let (range_watch, rx, main) = config
            .hub
            .watch(&range, true, Offline::Disk(&prefix))
            .await?;
        // One watch of every prefix's gray release, shared by all handles of the `Coord`.
        let gray_range = crate::store::KeyRange::prefix(format!("{GRAY_ROOT}/"));
        // Not `current`: that would read the gray range at every bind after any write of
        // this `Coord` (the gray watch rarely moves, so it always looks behind); a gray
        // release made a moment ago reaches the handle through the watch instead.
        // Offline, no gray release is known: the prefix's snapshot holds the values this
        // instance ran, gray ones included.
        let (gray_watch, gray_rx, gray) =
            config.hub.watch(&gray_range, false, Offline::Empty).await?;
        let me = Arc::clone(&ctx.instance);
        let gray_view = GrayView::new(&prefix, &gray);
        let (snapshot, gray_seq) = overlay(&prefix, &main, &gray, gray_view.doc.as_deref(), &me);
        let inputs = Inputs::of::<T>(&prefix, &snapshot);
        let fields: Arc<[crate::config::schema::FieldInfo]> = T::fields().into();
        let secrets = Secrets {
            keys: config.keys.load_full(),
            fields: &fields,
            accept_plain: config.accept_plain.load(Ordering::Acquire),
        };
        let value = Arc::new(build::<T>(&prefix, &snapshot, &secrets)?);
        let built = Built {
            value: Arc::clone(&value),
            snapshot: snapshot.clone(),
            env: inputs.env_set(),
            gray: gray_seq.and(gray_view.doc.clone()),
        };
        if snapshot.connected {
            persist(&config.hub, &prefix, &snapshot, false);
        }
        let stale = !snapshot.connected;
        let (tx, _) = watch::channel(Arc::clone(&value));
        let status = reporter::slot(
            ctx,
            &config.status,
            &prefix,
            HandleState {
                revision: snapshot.revision,
                rejected: None,
                gray: gray_seq,
            },
        );
        let shared = Arc::new_cyclic(|weak: &Weak<Shared<T>>| {
            let views = Views {
                prefix: prefix.clone(),
                main: rx,
                gray_view,
                gray: gray_rx,
                me,
                overlaid: gray_seq.is_some(),
                hub: Arc::clone(&config.hub),
                main_read: None,
                keys: Arc::clone(&config.keys),
                accept_plain: Arc::clone(&config.accept_plain),
                fields,
            };
            let task = tokio::spawn(follow(views, weak.clone(), inputs, stale));
            Shared {
                prefix,
                current: Arc::new(ArcSwap::new(value)),
                revision: AtomicI64::new(snapshot.revision),
                last_error: Mutex::new(None),
                tx,
                task: Some(task.abort_handle()),
                _range: Some(range_watch),
                status,
                _gray: Some(gray_watch),
                gray: Mutex::new(gray_seq),
                stale_since: Mutex::new((!snapshot.connected).then(std::time::Instant::now)),
                built: Mutex::new(Some(built)),
            }
        });
        Ok(Live { shared })
    }
}

/// What a `T` was last built from: the snapshot's shared `Arc` for each single-value key and
/// each of its aliases, in `T::fields()` order, and the revision seen last. A snapshot whose
/// values for these keys are the same `Arc`s, and whose change log shows nothing under a map
/// field since that revision, builds the same struct, whatever else changed under the prefix.
struct Inputs {
    keys: Vec<String>,
    values: Vec<Option<RawValue>>,
    /// `{prefix}/{key}/` of each map field: any key under it is an entry.
    maps: Vec<String>,
    /// The revision of the snapshot these inputs were taken from.
    seen: i64,
    /// The environment variables of `T`'s overrides (usually none).
    env: Vec<String>,
}

impl Inputs {
    fn of<T: CoordConfig>(prefix: &str, snapshot: &RangeSnapshot) -> Self {
        let mut keys = Vec::new();
        let mut maps = Vec::new();
        let fields = T::fields();
        let env = explain::env_vars(&fields);
        for field in fields {
            if field.kind.is_map() {
                maps.push(format!("{prefix}/{}/", field.key));
            } else {
                keys.push(format!("{prefix}/{}", field.key));
                // A field read from an alias changes when the alias does (or when the key
                // appears and takes over).
                keys.extend(
                    field
                        .aliases
                        .iter()
                        .map(|alias| format!("{prefix}/{alias}")),
                );
            }
        }
        let values = keys
            .iter()
            .map(|key| snapshot.values.get(key).cloned())
            .collect();
        Inputs {
            keys,
            values,
            maps,
            seen: snapshot.revision,
            env,
        }
    }

    /// The overrides set now, as a build made now applies them (no allocation without any).
    fn env_set(&self) -> Vec<String> {
        self.env
            .iter()
            .filter(|var| std::env::var_os(var).is_some())
            .cloned()
            .collect()
    }

    /// Takes `snapshot`'s inputs; true if any of them may differ from the ones held:
    /// O(fields × log n), plus the keys changed since the last snapshot if `T` has maps.
    fn update(&mut self, snapshot: &RangeSnapshot) -> bool {
        let mut changed = false;
        for (key, held) in self.keys.iter().zip(&mut self.values) {
            let now = snapshot.values.get(key);
            let same = match (&*held, now) {
                (Some(held), Some(now)) => held.ptr_eq(now),
                (None, None) => true,
                _ => false,
            };
            if !same {
                *held = now.cloned();
                changed = true;
            }
        }
        if !self.maps.is_empty() && !changed {
            changed = match snapshot.changes.since(self.seen) {
                Some(keys) => keys
                    .iter()
                    .any(|key| self.maps.iter().any(|map| key.starts_with(map.as_str()))),
                // Too far behind to tell: assume an entry moved.
                None => true,
            };
        }
        self.seen = snapshot.revision;
        changed
    }
}

/// What a handle follows: its prefix's snapshots and its gray release key's, and who it is
/// (whether a gray release is for it).
struct Views {
    prefix: String,
    main: watch::Receiver<RangeSnapshot>,
    gray: watch::Receiver<RangeSnapshot>,
    me: Arc<Instance>,
    /// True if the value last built had a gray release laid over it.
    overlaid: bool,
    /// To read the prefix when its gray key moves ahead of its watch.
    hub: Arc<WatchHub>,
    /// This prefix's gray release as last seen.
    gray_view: GrayView,
    /// A read of the prefix newer than its watch's snapshot, used until the watch passes it.
    main_read: Option<RangeSnapshot>,
    /// The `Coord`'s key ring, read at every build (a rotation swaps it).
    keys: Arc<ArcSwapOption<KeyRing>>,
    /// Whether plain secrets are accepted (a migration); read at every build.
    accept_plain: Arc<AtomicBool>,
    /// `T`'s fields, to tell its secrets.
    fields: Arc<[crate::config::schema::FieldInfo]>,
}

impl Views {
    /// The next view of the prefix, once either watch moved; `None` once they stopped.
    ///
    /// The two watches deliver on their own, so a promotion (the prefix's keys and the gray
    /// key change in one revision) may show its gray half first. Laying no gray release over
    /// a prefix snapshot older than that revision would show the values from before the gray
    /// release for a moment, so when the gray release this handle runs moves ahead of the
    /// prefix's watch, the prefix is read once at the newer revision.
    async fn next(&mut self) -> Option<(RangeSnapshot, Option<u64>)> {
        tokio::select! {
            changed = self.main.changed() => changed.ok()?,
            changed = self.gray.changed() => changed.ok()?,
        }
        let mut main = self.main.borrow_and_update().clone();
        let gray = self.gray.borrow_and_update().clone();
        let doc_moved = self.gray_view.see(&self.prefix, &gray);
        if let Some(read) = self.main_read.take()
            && read.revision >= main.revision
        {
            main = read.clone();
            self.main_read = Some(read);
        }
        // Only a handle running a gray release can see it end before the values that replace
        // it (a promotion); a gray release that starts or ends for others changes nothing here.
        if self.overlaid && doc_moved && gray.revision > main.revision {
            let range = crate::store::KeyRange::prefix(format!("{}/", self.prefix));
            match Box::pin(self.hub.read(&range, main.connected)).await {
                Ok(read) => {
                    main = read.clone();
                    self.main_read = Some(read);
                }
                // The watch brings the change anyway, a moment later.
                Err(e) => {
                    tracing::debug!(prefix = %self.prefix, error = %e, "read after a gray change failed")
                }
            }
        }
        let doc = self.gray_view.doc.as_deref();
        Some(overlay(&self.prefix, &main, &gray, doc, &self.me))
    }
}

/// A prefix's gray release as last seen: its key, its raw value, and that value decoded
/// once per change (every wake of a handle looks at it; few change it).
struct GrayView {
    key: String,
    raw: Option<RawValue>,
    /// Shared with what each value built over it keeps (for `explain`).
    doc: Option<Arc<GrayDoc>>,
}

impl GrayView {
    fn new(prefix: &str, gray: &RangeSnapshot) -> Self {
        let mut view = GrayView {
            key: gray_key(prefix),
            raw: None,
            doc: None,
        };
        view.see(prefix, gray);
        view
    }

    /// Takes the prefix's gray key from `gray`; true if it moved since the last look.
    fn see(&mut self, prefix: &str, gray: &RangeSnapshot) -> bool {
        let raw = gray.values.get(&self.key);
        let moved = match (raw, &self.raw) {
            (Some(now), Some(before)) => !now.ptr_eq(before),
            (None, None) => false,
            _ => true,
        };
        if moved {
            self.raw = raw.cloned();
            self.doc = raw.and_then(|raw| {
                serde_json::from_slice::<GrayDoc>(raw)
                    .map(Arc::new)
                    .map_err(
                        |e| tracing::warn!(prefix, error = %e, "unreadable gray release ignored"),
                    )
                    .ok()
            });
        }
        moved
    }
}

/// The prefix as `me` sees it: `main`, with the gray release laid over it if there is one
/// and it is for `me` (then the change log starts afresh, so the value is built from
/// scratch). The revision is the later of the two watches', so an instance outside a gray
/// release is still seen to be current at it.
fn overlay(
    prefix: &str,
    main: &RangeSnapshot,
    gray: &RangeSnapshot,
    doc: Option<&GrayDoc>,
    me: &Instance,
) -> (RangeSnapshot, Option<u64>) {
    let revision = main.revision.max(gray.revision);
    let connected = main.connected && gray.connected;
    let Some(doc) = doc.filter(|doc| doc.selector.matches(&me.name, &me.labels, doc.seq)) else {
        let snapshot = RangeSnapshot {
            revision,
            connected,
            ..main.clone()
        };
        return (snapshot, None);
    };
    // A gray value was written with the gray release: `explain` names that write.
    let written = gray
        .values
        .get(&gray_key(prefix))
        .map_or(0, RawValue::mod_revision);
    let mut values = main.values.clone();
    for (key, text) in &doc.values {
        values.insert(
            format!("{prefix}/{key}"),
            RawValue::new(text.as_bytes(), written),
        );
    }
    for key in &doc.removes {
        values.remove(&format!("{prefix}/{key}"));
    }
    let snapshot = RangeSnapshot {
        revision,
        values,
        changes: ChangeLog::starting_at(revision),
        connected,
    };
    (snapshot, Some(doc.seq))
}

/// Keeps `snapshot`'s values as `prefix`'s last good ones on disk, with a snapshot directory.
/// `rebase`: take its revision even if older than the one saved (see [`SnapshotDir::save`]).
///
/// [`SnapshotDir::save`]: crate::config::offline::SnapshotDir::save
fn persist(hub: &WatchHub, prefix: &str, snapshot: &RangeSnapshot, rebase: bool) {
    if let Some(dir) = hub.snapshots() {
        dir.save(prefix, snapshot.revision, &snapshot.values, rebase);
    }
}

/// Applies every new view of the prefix to the handle while the handle lives. `stale`: the
/// value was bound from a disconnected snapshot (an offline start from disk, or a shared
/// watch that was broken at the time).
async fn follow<T: CoordConfig>(
    mut views: Views,
    handle: Weak<Shared<T>>,
    mut inputs: Inputs,
    stale: bool,
) {
    // The revision of the snapshot the current value was built from: what a rebuild is told
    // the changes since.
    let mut built = inputs.seen;
    // Until the first connected view after a stale bind: that view is taken whatever its
    // revision, since a snapshot on disk may come from an etcd whose history has since
    // restarted (a new cluster) and whose revisions are all lower.
    let mut rebase = stale;
    loop {
        let Some((snapshot, gray)) = views.next().await else {
            return;
        };
        let Some(shared) = handle.upgrade() else {
            return;
        };
        let reconnected = {
            let mut stale_since = lock(&shared.stale_since);
            match (snapshot.connected, *stale_since) {
                (false, None) => {
                    *stale_since = Some(std::time::Instant::now());
                    false
                }
                // Cleared only once this view is applied (below): whoever sees the handle
                // current again must see the value it is current with.
                (true, Some(_)) => true,
                _ => false,
            }
        };
        'apply: {
            let rebased = rebase && snapshot.connected;
            rebase &= !rebased;
            // A gray release on or off changes values no change log records, and the change log
            // of a rebased view knows nothing of the revision built from: build afresh.
            let fresh = views.overlaid || gray.is_some() || rebased;
            views.overlaid = gray.is_some();
            *lock(&shared.gray) = gray;
            // An equal revision may still bring the other watch's half of it.
            if snapshot.revision < shared.revision.load(Ordering::Acquire) && !rebased {
                break 'apply;
            }
            // Inputs are taken whether or not the build below works: a revision that changes
            // none of them would fail (or succeed) the same way, so it is not tried again.
            if !inputs.update(&snapshot) {
                // None of T's keys moved (another key under the prefix did): the struct would be
                // the same, so it is neither rebuilt nor swapped and nobody is woken. The value is
                // current at this revision, unless the last change of its keys was rejected.
                if lock(&shared.last_error).is_none() {
                    shared.revision.store(snapshot.revision, Ordering::Release);
                    shared.report_status(snapshot.revision, None);
                    // Back from an outage with the same value: what is on disk may predate
                    // changes to other keys, or a value applied while disconnected.
                    if reconnected {
                        persist(&views.hub, &shared.prefix, &snapshot, rebased);
                        // After an offline start the same bytes now carry the store's mod
                        // revisions, which the snapshot on disk did not know.
                        if let Some(built) = lock(&shared.built).as_mut() {
                            built.snapshot = snapshot.clone();
                        }
                    }
                }
                break 'apply;
            }
            let secrets = Secrets {
                keys: views.keys.load_full(),
                fields: &views.fields,
                accept_plain: views.accept_plain.load(Ordering::Acquire),
            };
            let result = if inputs.maps.is_empty() || fresh {
                // Without map fields there is nothing to carry over: decoding every field is
                // as cheap as finding out what changed.
                build::<T>(&shared.prefix, &snapshot, &secrets)
            } else {
                rebuild::<T>(
                    &shared.prefix,
                    &snapshot,
                    &shared.current.load_full(),
                    built,
                    &secrets,
                )
            };
            match result {
                Ok(value) => {
                    crate::metrics::config_reload(&shared.prefix, true);
                    let value = Arc::new(value);
                    built = snapshot.revision;
                    // Cleared before the swap, so whoever sees the healed value sees no error.
                    if lock(&shared.last_error).take().is_some() {
                        tracing::info!(prefix = %shared.prefix, revision = snapshot.revision, "config healed");
                    }
                    // What the value was built from goes first: whoever loads the new value
                    // (or is woken for it) can then explain it.
                    *lock(&shared.built) = Some(Built {
                        value: Arc::clone(&value),
                        snapshot: snapshot.clone(),
                        env: inputs.env_set(),
                        gray: gray.and(views.gray_view.doc.clone()),
                    });
                    // Revision next: whoever loads the new value then reads a revision at
                    // least as new as it.
                    shared.revision.store(snapshot.revision, Ordering::Release);
                    shared.current.store(Arc::clone(&value));
                    shared.tx.send_replace(value);
                    shared.report_status(snapshot.revision, None);
                    // Only a connected view: a disconnected one (a gray change while the prefix's
                    // watch is broken) mixes revisions; the reconnect saves what it ends with.
                    if snapshot.connected {
                        persist(&views.hub, &shared.prefix, &snapshot, rebased);
                    }
                }
                Err(error) => {
                    crate::metrics::config_reload(&shared.prefix, false);
                    tracing::warn!(
                        prefix = %shared.prefix,
                        revision = snapshot.revision,
                        %error,
                        "config change rejected; keeping the last good value"
                    );
                    let rejected = Rejected {
                        error: Arc::new(error),
                        revision: snapshot.revision,
                    };
                    *lock(&shared.last_error) = Some(rejected.clone());
                    shared.report_status(shared.revision.load(Ordering::Acquire), Some(rejected));
                }
            }
        }
        if reconnected {
            *lock(&shared.stale_since) = None;
        }
    }
}

/// Builds `T` again from `snapshot`, starting from `previous` (built at revision `built`) if
/// the snapshot still knows what changed since: then a map field re-reads only the changed
/// entries. Otherwise from scratch.
fn rebuild<T: CoordConfig>(
    prefix: &str,
    snapshot: &RangeSnapshot,
    previous: &T,
    built: i64,
    secrets: &Secrets<'_>,
) -> Result<T> {
    match snapshot.changes.since(built) {
        Some(changes) => {
            let source = Source::shared(prefix, &snapshot.values)
                .with_changes(&changes)
                .with_keys(secrets.keys.as_deref())
                .with_secrets(secrets.fields, secrets.accept_plain);
            previous.rebuild(&source)
        }
        None => build::<T>(prefix, snapshot, secrets),
    }
}

/// How a build treats secrets: the key ring to open them with, the struct's fields to tell
/// them, and whether plain ones are accepted.
struct Secrets<'a> {
    keys: Option<Arc<KeyRing>>,
    fields: &'a [crate::config::schema::FieldInfo],
    accept_plain: bool,
}

/// Builds `T` from a snapshot of its prefix, opening sealed values as `secrets` says.
fn build<T: CoordConfig>(
    prefix: &str,
    snapshot: &RangeSnapshot,
    secrets: &Secrets<'_>,
) -> Result<T> {
    let source = Source::shared(prefix, &snapshot.values)
        .with_keys(secrets.keys.as_deref())
        .with_secrets(secrets.fields, secrets.accept_plain);
    let value = T::from_source(&source)?;
    if tracing::enabled!(tracing::Level::DEBUG) {
        let fields = T::fields();
        let unknown = source.unknown_keys(&fields);
        if !unknown.is_empty() {
            tracing::debug!(
                prefix,
                ?unknown,
                "keys under the prefix that no field reads; ignored"
            );
        }
    }
    Ok(value)
}
