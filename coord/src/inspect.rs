//! Read-only views of coordination state, for operators (`coordctl locks ls`, `ids ls`).
//!
//! These functions only read: a range (keys only) and one lease time-to-live per lease
//! found. They take a snapshot at one store revision; the TTLs are read just after it, so a
//! lease that expired in between shows as `ttl_left: None`.
//!
//! # Examples
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> coord::Result<()> {
//! use std::time::Duration;
//!
//! let coord = coord::Coord::in_memory();
//! let guard = coord.locks().acquire("/locks/report", Duration::from_secs(10)).await?;
//! let locks = coord::inspect::locks(coord.store(), "/locks/").await?;
//! assert_eq!(locks[0].name, "/locks/report");
//! assert_eq!(locks[0].fencing_token(), guard.fencing_token());
//! # Ok(())
//! # }
//! ```

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use tracing::Instrument;

use crate::error::{Error, Result};
use crate::store::{KeyRange, KeyValue, RangeOptions, Store};

/// One key in a lock's queue: the holder or a waiter.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueEntry {
    /// The key, `{name}/{lease_id:x}`.
    pub key: String,
    /// The lease the key is on.
    pub lease: i64,
    /// The key's create revision: its place in the queue (for the holder, the fencing token).
    pub create_revision: i64,
    /// What is left of the lease's TTL; `None` if the lease is gone (expired or revoked).
    pub ttl_left: Option<Duration>,
}

/// One lock, as [`locks`] finds it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LockInfo {
    /// The lock name (the queue's keys are under `{name}/`).
    pub name: String,
    /// The key that holds the lock: the lowest create revision.
    pub holder: QueueEntry,
    /// The keys waiting behind it, in the order they will get it.
    pub waiters: Vec<QueueEntry>,
}

impl LockInfo {
    /// The holder's fencing token: its key's create revision.
    pub fn fencing_token(&self) -> i64 {
        self.holder.create_revision
    }
}

/// One taken instance ID, as [`ids`] finds it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct IdInfo {
    /// The ID.
    pub id: u32,
    /// Its key, `/instances/{service}/{id}`.
    pub key: String,
    /// The lease holding it (the allocator's).
    pub lease: i64,
    /// What is left of the lease's TTL; `None` if the lease is gone.
    pub ttl_left: Option<Duration>,
}

/// Every lock under `prefix`, in name order, each with its holder and its waiters in queue
/// order.
///
/// A lock is found by its layout (etcd's, shared with `etcdctl lock` and Go's
/// `concurrency.Mutex`): a key `{name}/{lease_id:x}` on the lease it names. Keys under
/// `prefix` that do not have that shape are not locks and are skipped. An election under
/// `prefix` has the same layout and is listed too (its holder is the leader).
///
/// # Errors
///
/// [`Error::InvalidArgument`] for a prefix with NUL; store errors.
///
/// # Cancel safety
///
/// Cancel safe: it only reads.
pub async fn locks(store: &Store, prefix: &str) -> Result<Vec<LockInfo>> {
    let span = tracing::debug_span!("inspect.locks", key = prefix);
    async {
        let response = store
            .range(
                &KeyRange::prefix(prefix),
                RangeOptions::default().keys_only(),
            )
            .await?;
        let mut queues: BTreeMap<String, Vec<KeyValue>> = BTreeMap::new();
        for kv in response.kvs {
            if let Some((name, _)) = lock_key(&kv) {
                queues.entry(name.to_owned()).or_default().push(kv);
            }
        }
        let ttls = ttls_of(store, queues.values().flatten().map(|kv| kv.lease)).await?;
        let mut locks = Vec::with_capacity(queues.len());
        for (name, mut kvs) in queues {
            kvs.sort_by_key(|kv| kv.create_revision);
            let mut entries = kvs.into_iter().map(|kv| QueueEntry {
                ttl_left: ttls.get(&kv.lease).copied().flatten(),
                key: kv.key,
                lease: kv.lease,
                create_revision: kv.create_revision,
            });
            // Every queue in the map has at least one key.
            if let Some(holder) = entries.next() {
                locks.push(LockInfo {
                    name,
                    holder,
                    waiters: entries.collect(),
                });
            }
        }
        Ok(locks)
    }
    .instrument(span)
    .await
}

/// Every taken instance ID of `service`, in ID order, with the lease holding it.
///
/// # Errors
///
/// [`Error::InvalidArgument`] for an empty service name or one with `/` or NUL; store errors.
///
/// # Cancel safety
///
/// Cancel safe: it only reads.
pub async fn ids(store: &Store, service: &str) -> Result<Vec<IdInfo>> {
    if service.is_empty() || service.contains('/') || service.contains('\0') {
        return Err(Error::invalid_argument(
            "service",
            format!(
                "`{}` must be non-empty, without `/` or NUL",
                service.escape_debug()
            ),
        ));
    }
    let prefix = format!("/instances/{service}/");
    let span = tracing::debug_span!("inspect.ids", key = %prefix);
    async {
        let response = store
            .range(
                &KeyRange::prefix(prefix.as_str()),
                RangeOptions::default().keys_only(),
            )
            .await?;
        let ttls = ttls_of(store, response.kvs.iter().map(|kv| kv.lease)).await?;
        let mut ids: Vec<IdInfo> = response
            .kvs
            .into_iter()
            .filter_map(|kv| {
                let id = kv.key.strip_prefix(prefix.as_str())?.parse::<u32>().ok()?;
                Some(IdInfo {
                    id,
                    ttl_left: ttls.get(&kv.lease).copied().flatten(),
                    key: kv.key,
                    lease: kv.lease,
                })
            })
            .collect();
        ids.sort_by_key(|info| info.id);
        Ok(ids)
    }
    .instrument(span)
    .await
}

/// `Some((name, lease_hex))` if `kv` is a lock queue key: `{name}/{lease:x}` on that lease.
fn lock_key(kv: &KeyValue) -> Option<(&str, &str)> {
    let (name, last) = kv.key.rsplit_once('/')?;
    (kv.lease != 0 && !name.is_empty() && last == format!("{:x}", kv.lease)).then_some((name, last))
}

/// The TTL left of each distinct lease (lease 0, no lease, is skipped); `None` for a lease
/// that is gone.
async fn ttls_of(
    store: &Store,
    leases: impl Iterator<Item = i64>,
) -> Result<HashMap<i64, Option<Duration>>> {
    let mut ttls = HashMap::new();
    for lease in leases {
        if lease == 0 || ttls.contains_key(&lease) {
            continue;
        }
        let left = match store.lease_ttl(lease).await {
            Ok(ttl) if ttl.ttl >= 0 => Some(Duration::from_secs(ttl.ttl.unsigned_abs())),
            Ok(_) | Err(Error::LeaseNotFound { .. }) => None,
            Err(e) => return Err(e),
        };
        ttls.insert(lease, left);
    }
    Ok(ttls)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::Coord;
    use crate::store::{KeyRange, RangeOptions};

    const TTL: Duration = Duration::from_secs(30);

    #[tokio::test]
    async fn locks_lists_holder_then_waiters_in_queue_order_and_skips_other_keys() {
        let coord = Coord::in_memory();
        coord.config().set("/l/not-a-lock", &1).await.unwrap();
        let holder = coord.locks().acquire("/l/a", TTL).await.unwrap();
        let locks = coord.locks();
        let waiter = tokio::spawn(async move { locks.acquire("/l/a", TTL).await });
        loop {
            let queue = coord
                .store()
                .range(
                    &KeyRange::prefix("/l/a/"),
                    RangeOptions::default().keys_only(),
                )
                .await
                .unwrap();
            if queue.kvs.len() == 2 {
                break;
            }
            tokio::task::yield_now().await;
        }
        let found = super::locks(coord.store(), "/l/").await.unwrap();
        assert_eq!(found.len(), 1, "one lock, the plain key skipped: {found:?}");
        let lock = &found[0];
        assert_eq!(lock.name, "/l/a");
        assert_eq!(lock.holder.key, holder.key());
        assert_eq!(lock.fencing_token(), holder.fencing_token());
        assert!(lock.holder.ttl_left.is_some_and(|left| left <= TTL));
        assert_eq!(lock.waiters.len(), 1);
        assert!(lock.waiters[0].create_revision > lock.holder.create_revision);
        holder.unlock().await.unwrap();
        waiter.await.unwrap().unwrap().unlock().await.unwrap();
    }

    #[tokio::test]
    async fn ids_lists_taken_ids_in_order_with_their_lease() {
        let coord = Coord::in_memory();
        let allocator = coord.ids("svc", 4).await.unwrap();
        let a = allocator.acquire().await.unwrap();
        let b = allocator.acquire().await.unwrap();
        let found = super::ids(coord.store(), "svc").await.unwrap();
        let mut expected = vec![a.id(), b.id()];
        expected.sort_unstable();
        assert_eq!(found.iter().map(|i| i.id).collect::<Vec<_>>(), expected);
        assert!(found.iter().all(|i| i.lease == allocator.lease_id()));
        assert!(found.iter().all(|i| i.ttl_left.is_some()));
        assert!(super::ids(coord.store(), "a/b").await.is_err());
    }
}
