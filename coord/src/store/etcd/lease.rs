//! Lease calls: grant, renew over a kept keep-alive stream, revoke, read the TTL.

use std::collections::HashMap;
use std::sync::PoisonError;

use etcd_client::{LeaseKeepAliveStream, LeaseKeeper, LeaseTimeToLiveOptions};

use super::convert::{header_revision, lossy};
use super::errors::{map_error, timeout_error, Request};
use super::EtcdStore;
use crate::error::Result;
use crate::store::{LeaseGrant, LeaseTtl};

/// An open keep-alive stream of one lease.
pub(super) struct Keeper {
    sender: LeaseKeeper,
    responses: LeaseKeepAliveStream,
}

impl EtcdStore {
    pub(crate) async fn lease_grant(&self, ttl: i64) -> Result<LeaseGrant> {
        let response = self
            .call(Request::new("lease_grant", ""), || {
                let mut lease = self.client.lease_client();
                async move { lease.grant(ttl, None).await }
            })
            .await?;
        Ok(LeaseGrant {
            id: response.id(),
            ttl: response.ttl(),
            revision: header_revision(response.header()),
        })
    }

    pub(crate) async fn lease_keep_alive(&self, id: i64) -> Result<i64> {
        let request = Request::lease("lease_keep_alive", id);
        let context = self.error_context();
        // Taken out while in use: a renewal that is cancelled or fails drops its stream instead
        // of leaving an unread answer on it for the next renewal to mistake for its own.
        let cached = self.keepers().remove(&id);
        let renew = async {
            let was_cached = cached.is_some();
            let keeper = match cached {
                Some(keeper) => keeper,
                None => self.open_keeper(id).await?,
            };
            match renew_once(keeper).await {
                Ok(done) => Ok(done),
                // A kept stream may have broken since (etcd restarted); try a fresh one once.
                Err(e) if was_cached && !is_lease_not_found(&e) => {
                    renew_once(self.open_keeper(id).await?).await
                }
                Err(e) => Err(e),
            }
        };
        match tokio::time::timeout(self.request_timeout, renew).await {
            Ok(Ok((ttl, keeper))) => {
                self.keepers().insert(id, keeper);
                Ok(ttl)
            }
            Ok(Err(e)) => Err(map_error(e, request, &context)),
            Err(_) => Err(timeout_error(request, self.request_timeout)),
        }
    }

    /// Revokes the lease; returns the store revision after it (its keys' deletion).
    pub(crate) async fn lease_revoke(&self, id: i64) -> Result<i64> {
        // Its keep-alive stream is of no more use.
        self.keepers().remove(&id);
        let response = self
            .call(Request::lease("lease_revoke", id), || {
                let mut lease = self.client.lease_client();
                async move { lease.revoke(id).await }
            })
            .await?;
        Ok(header_revision(response.header()))
    }

    pub(crate) async fn lease_ttl(&self, id: i64) -> Result<LeaseTtl> {
        let response = self
            .call(Request::lease("lease_ttl", id), || {
                let mut lease = self.client.lease_client();
                async move {
                    lease
                        .time_to_live(id, Some(LeaseTimeToLiveOptions::new().with_keys()))
                        .await
                }
            })
            .await?;
        // etcd answers TTL -1 (not an error) for a lease that does not exist.
        Ok(LeaseTtl {
            id,
            ttl: response.ttl(),
            granted_ttl: if response.ttl() < 0 {
                0
            } else {
                response.granted_ttl()
            },
            keys: response.keys().iter().map(|k| lossy(k)).collect(),
        })
    }

    async fn open_keeper(&self, id: i64) -> Result<Keeper, etcd_client::Error> {
        // etcd-client's `keep_alive` already renews once: it sends the first request and
        // fails with "lease not found" if the answer's TTL is 0.
        let (sender, responses) = self
            .send_until_sent(|| {
                let mut lease = self.client.lease_client();
                async move { lease.keep_alive(id).await }
            })
            .await?;
        Ok(Keeper { sender, responses })
    }

    fn keepers(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Keeper>> {
        // The map holds no invariant a panic could break: a poisoned lock is still usable.
        self.keepers.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Sends one keep-alive request on an open stream and reads its answer: the new TTL.
async fn renew_once(mut keeper: Keeper) -> Result<(i64, Keeper), etcd_client::Error> {
    keeper.sender.keep_alive().await?;
    match keeper.responses.message().await? {
        // etcd answers TTL 0 for a lease it does not know (expired or revoked).
        Some(response) if response.ttl() > 0 => Ok((response.ttl(), keeper)),
        Some(_) => Err(etcd_client::Error::LeaseKeepAliveError(
            "lease not found".into(),
        )),
        None => Err(etcd_client::Error::LeaseKeepAliveError(
            "the keep-alive stream closed".into(),
        )),
    }
}

fn is_lease_not_found(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::LeaseKeepAliveError(m) if m.contains("not found"))
        || matches!(e, etcd_client::Error::GRpcStatus(s) if s.message().contains("lease not found"))
}
