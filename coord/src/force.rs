//! Operator actions that take away what a live holder holds: breaking a lock, releasing an
//! instance ID. For a holder that is stuck, not for normal flow (guards release on drop).
//!
//! # What it promises
//!
//! - **Only what was seen.** Each takes the holder an operator saw (from
//!   [`inspect`](crate::inspect)) and acts only if it still holds: a lock whose holder
//!   changed, or an ID taken again since, is [`Error::Conflict`] with nothing done.
//! - **Audited in the same transaction.** The holder's key is deleted in one transaction with
//!   its audit record ([`AuditAction::LockBreak`], [`AuditAction::IdRelease`]); a refusal by
//!   etcd is recorded as refused.
//! - **The holder is told.** Its guard's `lost()` resolves: the key it watches is gone (and a
//!   broken lock's lease is revoked, so its other keys go too).

use tracing::Instrument;

use crate::access::Identity;
use crate::access::audit::{self, AuditAction};
use crate::error::{Error, Result};
use crate::inspect::{IdInfo, LockInfo};
use crate::store::{Compare, KeyValue, Store, Txn, TxnOp};

/// Breaks `lock` as [`inspect::locks`](crate::inspect::locks) found it: deletes its holder's
/// key (if it is still the holder, with the same fencing token) and revokes its lease.
/// Recorded in the audit log as `identity`.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> coord::Result<()> {
/// use std::time::Duration;
///
/// let coord = coord::Coord::in_memory();
/// let guard = coord.locks().acquire("/locks/report", Duration::from_secs(10)).await?;
/// let lock = coord::inspect::locks(coord.store(), "/locks/").await?.remove(0);
/// coord::force::break_lock(coord.store(), coord.config().identity(), &lock).await?;
/// guard.lost().await;
/// # Ok(())
/// # }
/// ```
///
/// # Errors
///
/// [`Error::Conflict`] naming the holder key if it no longer holds with that fencing token;
/// store errors ([`Error::PermissionDenied`] under etcd's RBAC).
///
/// # Cancel safety
///
/// Dropped midway, the key is deleted with its record or not at all; the lease may be left
/// to expire.
pub async fn break_lock(store: &Store, identity: &Identity, lock: &LockInfo) -> Result<()> {
    let holder = &lock.holder;
    let span = tracing::info_span!("force.break_lock", key = %holder.key);
    async {
        let record = identity
            .record(AuditAction::LockBreak, &lock.name)
            .detail(format!(
                "holder {} fencing token {}",
                holder.key, holder.create_revision
            ));
        take(
            store,
            identity,
            &holder.key,
            Compare::create_revision(&holder.key, holder.create_revision),
            (holder.create_revision, |kv: &KeyValue| kv.create_revision),
            record,
        )
        .await?;
        if let Err(e) = store.lease_revoke(holder.lease).await
            && !matches!(e, Error::LeaseNotFound { .. })
        {
            tracing::warn!(lease = holder.lease, error = %e, "the broken lock's lease could not be revoked; it expires on its own");
        }
        Ok(())
    }
    .instrument(span)
    .await
}

/// Releases instance ID `info` of `service` as [`inspect::ids`](crate::inspect::ids) found
/// it: deletes its key if the same lease still holds it. Recorded in the audit log as
/// `identity`.
///
/// # Errors
///
/// [`Error::Conflict`] naming the key if another lease holds it now (or nobody does).
///
/// # Cancel safety
///
/// Dropped midway, the key is deleted with its record or not at all.
pub async fn release_id(
    store: &Store,
    identity: &Identity,
    service: &str,
    info: &IdInfo,
) -> Result<()> {
    let span = tracing::info_span!("force.release_id", key = %info.key);
    let record = identity
        .record(AuditAction::IdRelease, format!("{service}/{}", info.id))
        .detail(format!("lease {:x}", info.lease));
    take(
        store,
        identity,
        &info.key,
        Compare::lease(&info.key, info.lease),
        (info.lease, |kv: &KeyValue| kv.lease),
        record,
    )
    .instrument(span)
    .await
}

/// Deletes `key` while `still` holds, with `record`, in one transaction; a conflict says
/// what was expected and what `seen` finds now (0: no key).
async fn take(
    store: &Store,
    identity: &Identity,
    key: &str,
    still: Compare,
    (expected, seen): (i64, fn(&KeyValue) -> i64),
    record: audit::AuditRecord,
) -> Result<()> {
    let txn = Txn::new()
        .when([still])
        .and_then([TxnOp::delete(key), record.op(identity.writer())?]);
    if audit::send(store, identity.writer(), &record, txn)
        .await?
        .succeeded
    {
        return Ok(());
    }
    let (now, _) = store.get(key).await?;
    let error = Error::Conflict {
        key: key.to_owned(),
        expected,
        current: now.as_ref().map_or(0, seen),
    };
    audit::append(store, identity.writer(), &record.refused(&error)).await;
    Err(error)
}
