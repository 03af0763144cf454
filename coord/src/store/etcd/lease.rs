//! Lease calls: grant, renew over the store's shared keep-alive stream ([`super::keepalive`]),
//! revoke, read the TTL.

use etcd_client::LeaseTimeToLiveOptions;

use super::EtcdStore;
use super::convert::{header_revision, lossy};
use super::errors::{Request, map_error, timeout_error};
use super::keepalive::RenewError;
use crate::error::{Error, Result};
use crate::store::{LeaseGrant, LeaseTtl};

impl EtcdStore {
    pub(crate) async fn lease_grant(&self, ttl: i64) -> Result<LeaseGrant> {
        let response = self
            .call(Request::new("lease_grant", "").write(), || {
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

    /// Renews the lease once over the store's shared keep-alive stream; returns the new TTL.
    pub(crate) async fn lease_keep_alive(&self, id: i64) -> Result<i64> {
        let request = Request::lease("lease_keep_alive", id);
        let renew = self.keep_alives.renew(id, || {
            // etcd-client's `keep_alive` opens the stream by renewing `id` once on it.
            self.send_until_sent(|| {
                let mut lease = self.client.lease_client();
                async move { lease.keep_alive(id).await }
            })
        });
        match tokio::time::timeout(self.request_timeout, renew).await {
            Ok(Ok(ttl)) => Ok(ttl),
            Ok(Err(RenewError::NotFound)) => Err(Error::LeaseNotFound { lease: id }),
            Ok(Err(RenewError::Open(e))) => Err(map_error(e, request, &self.error_context())),
            Ok(Err(RenewError::Broken(reason))) => Err(Error::Unavailable {
                endpoints: self.endpoints.to_string(),
                reason: format!("lease keep-alive stream: {reason}"),
            }),
            Err(_) => Err(timeout_error(request, self.request_timeout)),
        }
    }

    /// gRPC keep-alive streams open right now.
    pub(crate) fn keep_alive_streams(&self) -> i64 {
        self.keep_alives.streams()
    }

    /// Revokes the lease; returns the store revision after it (its keys' deletion).
    pub(crate) async fn lease_revoke(&self, id: i64) -> Result<i64> {
        let response = self
            .call(Request::lease("lease_revoke", id).write(), || {
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
}
