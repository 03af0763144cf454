//! The etcd backend, on etcd-client. (Being written.)

use super::*;

#[derive(Clone)]
pub(crate) struct EtcdStore {}

#[allow(unused_variables)]
impl EtcdStore {
    pub(crate) async fn connect(config: &crate::client::ClientConfig) -> Result<Self> {
        Err(Error::Closed)
    }
    pub(crate) async fn range(
        &self,
        range: &KeyRange,
        options: RangeOptions,
    ) -> Result<GetResponse> {
        Err(Error::Closed)
    }
    pub(crate) async fn put(&self, key: &str, value: Vec<u8>, lease: i64) -> Result<PutResponse> {
        Err(Error::Closed)
    }
    pub(crate) async fn delete(&self, range: &KeyRange) -> Result<DeleteResponse> {
        Err(Error::Closed)
    }
    pub(crate) async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        Err(Error::Closed)
    }
    pub(crate) async fn lease_grant(&self, ttl: i64) -> Result<LeaseGrant> {
        Err(Error::Closed)
    }
    pub(crate) async fn lease_keep_alive(&self, id: i64) -> Result<i64> {
        Err(Error::Closed)
    }
    pub(crate) async fn lease_revoke(&self, id: i64) -> Result<()> {
        Err(Error::Closed)
    }
    pub(crate) async fn lease_ttl(&self, id: i64) -> Result<LeaseTtl> {
        Err(Error::Closed)
    }
    pub(crate) async fn watch(&self, range: &KeyRange, start_revision: i64) -> Result<WatchStream> {
        Err(Error::Closed)
    }
    pub(crate) async fn compact(&self, revision: i64) -> Result<()> {
        Err(Error::Closed)
    }
    pub(crate) async fn status(&self) -> Result<Status> {
        Err(Error::Closed)
    }
}
