//! The etcd backend: [`Store`](super::Store)'s operations on a real etcd, through etcd-client.
//!
//! What this backend promises, beyond etcd's own semantics:
//! - **Connecting fails fast.** `connect` returns within `dial_timeout`: etcd-client connects
//!   lazily, so `connect` sends a real `Status` request (retried until the deadline, so an
//!   etcd that is just starting is waited for) and reports [`Error::Unavailable`] naming the
//!   endpoints and the last transport error (a TLS problem is called one), or
//!   [`Error::Unauthenticated`] for rejected credentials.
//! - **Every unary request has a deadline**: `request_timeout`, past which it is
//!   [`Error::Timeout`] naming the operation and the key.
//! - **A write says whether it may have happened.** A write that fails after it may have
//!   reached etcd (its deadline, a connection broken under it, etcd's own timeout) is
//!   [`Error::OutcomeUnknown`] around that error; one that never reached etcd (no connection)
//!   or that etcd refused before proposing it (no leader) keeps its plain error. Reads are
//!   never `OutcomeUnknown`. Unary requests recover on their own
//!   after etcd restarts (the channel reconnects); with several endpoints a request that could
//!   not even connect to the endpoint it was routed to is tried again on another one.
//! - **Errors are coord's.** [`map_error`] is the one place where etcd-client's errors become
//!   [`Error`] variants; nothing above this module sees a gRPC status.
//! - **Watches deliver one revision per item.** etcd may batch events of several revisions
//!   into one response; they are split so every [`WatchResponse`] holds exactly one revision,
//!   in order. The stream never reconnects (etcd-client's does not survive a restart): it
//!   yields one error and ends, and [`crate::watch`] resumes it. Dropping the stream cancels
//!   the watch on the server.
//! - **A range of any size, at one revision.** A prefix is read in pages: [`PAGE_KEYS`] keys
//!   first, then as many as fill about 4 MiB at the sizes seen so far. The first page is read
//!   at the revision asked for (or the latest), every later one at the first page's revision,
//!   continuing after the last key read, so the keys returned are one consistent state
//!   however many writes land meanwhile. A page whose answer is over what the client decodes
//!   ([`MAX_DECODE_BYTES`]) is read again in halves.
//!   An unpaged read of the latest state whose pinned revision is compacted under it starts
//!   over.
//! - **All watches share one gRPC stream** ([`mux`]): a thousand watched prefixes are a
//!   thousand etcd watchers on one stream, not a thousand streams.
//! - **All leases renew over one gRPC stream** ([`keepalive`]), each on its caller's schedule:
//!   a renewal is one message on the open stream (opening it, at the first renewal, costs one
//!   round trip more). A renewal on a stream that breaks fails (the caller retries) and the
//!   next one opens a fresh stream.
//!
//! The backend is split by concern: this file holds the store and its key-value calls;
//! [`options`] holds the connection settings, [`connect`] dials and probes, [`lease`] keeps leases, [`keepalive`] shares one keep-alive stream among them, [`watch`] turns etcd watch responses
//! into coord's, [`mux`] shares one gRPC stream among all watches, [`errors`] maps etcd-client's
//! errors and [`convert`] translates requests and responses.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, PutOptions};

mod auth;
mod connect;
mod convert;
mod errors;
mod keepalive;
mod lease;
mod mux;
mod options;
mod watch;

use super::*;
use convert::{
    delete_options, from_delete, from_get, from_put, from_txn, get_options, header_revision, to_txn,
};
use errors::{ErrorContext, Request, deadline_error, never_connected, request_error};
pub(crate) use options::{Credentials, EtcdOptions, TlsMaterial};

/// The etcd-client backed store. Cheap to clone: clones share the connection.
#[derive(Clone)]
pub(crate) struct EtcdStore {
    /// Boxed by the `Arc`: etcd-client's `Client` is kilobytes, `Store` is passed around.
    client: Arc<Client>,
    /// The configured endpoints, comma separated, for [`Error::Unavailable`].
    endpoints: Arc<str>,
    /// How many endpoints there are: with more than one, a request refused at connect is
    /// tried on another.
    endpoint_count: usize,
    request_timeout: Duration,
    /// The shared keep-alive stream: every lease renews over it.
    keep_alives: Arc<keepalive::KeepAliveMux>,
    /// The shared watch stream.
    watches: Arc<mux::WatchMux>,
    /// The cluster ID of the last status answer (the connect probe's, then `status`'s); 0
    /// until one came (an offline start). Shared by clones.
    cluster_id: Arc<std::sync::atomic::AtomicU64>,
}

/// The keys the first page of a range asks for. A page of small values stays far below the
/// decode limit; one of large values is halved until it fits.
pub(crate) const PAGE_KEYS: i64 = 1_000;
/// What a later page aims to hold: its key count follows the sizes seen so far. etcd counts
/// the rest of the range for every page (its work per page grows with what is left), so few
/// large pages read a big prefix much faster than many small ones.
const PAGE_BYTES: usize = 4 * 1024 * 1024;
/// The most keys a later page asks for.
const MAX_PAGE_KEYS: i64 = 50_000;
/// The largest answer the client decodes (tonic's default is 4 MiB): a page holds at least
/// one key, and one value may be etcd's largest request (1.5 MiB) and more with its metadata.
pub(crate) const MAX_DECODE_BYTES: usize = 16 * 1024 * 1024;

/// The keys the next page asks for, from the average size of the keys read so far.
fn next_page(read: &[KeyValue]) -> i64 {
    let bytes: usize = read
        .iter()
        .map(|kv| kv.key.len() + kv.value.len() + 32)
        .sum();
    let per_key = (bytes / read.len().max(1)).max(1);
    i64::try_from(PAGE_BYTES / per_key)
        .unwrap_or(MAX_PAGE_KEYS)
        .clamp(1, MAX_PAGE_KEYS)
}

impl EtcdStore {
    pub(crate) async fn range(
        &self,
        range: &KeyRange,
        options: RangeOptions,
    ) -> Result<GetResponse> {
        // One key, a count, or a page the caller sized: one request.
        if matches!(range, KeyRange::Key(_)) || options.limit > 0 || options.count_only {
            return self.range_once(range, options).await;
        }
        loop {
            match self.range_paged(range, options).await {
                // The pinned revision was compacted between two pages of a read of "the
                // latest": read it again from the start, at a newer revision.
                Err(Error::Compacted { .. }) if options.revision == 0 => continue,
                other => return other,
            }
        }
    }

    /// Every key of the prefix `range`, page by page at the first page's revision.
    async fn range_paged(&self, range: &KeyRange, options: RangeOptions) -> Result<GetResponse> {
        let end = prefix_end(range.as_str());
        // etcd has no empty key: "every key" starts at the smallest one.
        let mut from = match range.as_str() {
            "" => "\0".to_owned(),
            prefix => prefix.to_owned(),
        };
        let mut pinned = options;
        let mut page = PAGE_KEYS;
        let mut all: Option<GetResponse> = None;
        loop {
            let asked = RangeOptions {
                limit: page,
                ..pinned
            };
            let (response, more) = match self.range_page(&from, &end, range, asked).await {
                Ok(answer) => answer,
                // An answer over the decode limit (large values): ask for fewer keys.
                Err(Error::Backend { reason, .. }) if reason.contains("too large") && page > 1 => {
                    page = (page / 2).max(1);
                    continue;
                }
                Err(e) => return Err(e),
            };
            let Some(last) = response.kvs.last().map(|kv| kv.key.clone()) else {
                return Ok(all.unwrap_or(response));
            };
            match &mut all {
                None => {
                    pinned.revision = response.revision;
                    all = Some(response);
                }
                Some(all) => all.kvs.extend(response.kvs),
            }
            if !more {
                return Ok(all.unwrap_or_default());
            }
            // The next key after `last` in byte order.
            from = format!("{last}\0");
            page = next_page(all.as_ref().map_or(&[][..], |all| &all.kvs[..]));
        }
    }

    /// One page: keys from `from` (inclusive) to `end` (exclusive), and whether more follow.
    async fn range_page(
        &self,
        from: &str,
        end: &[u8],
        range: &KeyRange,
        options: RangeOptions,
    ) -> Result<(GetResponse, bool)> {
        let get_options = get_options(&KeyRange::key(from), options).with_range(end.to_vec());
        let response = self.get(range, from, options, get_options).await?;
        let more = response.more();
        let mut answer = from_get(response);
        // `count` is of the keys left from `from`; the first page's is the prefix's.
        answer.count = answer.count.max(answer.kvs.len() as i64);
        Ok((answer, more))
    }

    /// One request of `range` as given.
    async fn range_once(&self, range: &KeyRange, options: RangeOptions) -> Result<GetResponse> {
        let get_options = get_options(range, options);
        let response = self
            .get(range, range.as_str(), options, get_options)
            .await?;
        Ok(from_get(response))
    }

    /// One Range RPC from `key` with `get_options`, on behalf of a read of `range`.
    async fn get(
        &self,
        range: &KeyRange,
        key: &str,
        options: RangeOptions,
        get_options: etcd_client::GetOptions,
    ) -> Result<etcd_client::GetResponse> {
        let request = Request::new("range", range.as_str()).revision(options.revision);
        self.call(request, || {
            let mut kv = self.kv();
            let (key, get_options) = (key.to_owned(), get_options.clone());
            async move { kv.get(key, Some(get_options)).await }
        })
        .await
    }

    /// A KV client that decodes answers up to [`MAX_DECODE_BYTES`].
    fn kv(&self) -> etcd_client::KvClient {
        self.client
            .kv_client()
            .max_decoding_message_size(MAX_DECODE_BYTES)
    }

    pub(crate) async fn put(&self, key: &str, value: Vec<u8>, lease: i64) -> Result<PutResponse> {
        let request = Request {
            lease,
            ..Request::new("put", key)
        }
        .write();
        let response = self
            .call(request, || {
                let mut kv = self.client.kv_client();
                let (key, value) = (key.to_owned(), value.clone());
                let options = PutOptions::new().with_lease(lease).with_prev_key();
                async move { kv.put(key, value, Some(options)).await }
            })
            .await?;
        Ok(from_put(response))
    }

    pub(crate) async fn delete(&self, range: &KeyRange) -> Result<DeleteResponse> {
        let request = Request::new("delete", range.as_str()).write();
        let response = self
            .call(request, || {
                let mut kv = self.client.kv_client();
                let key = range.as_str().to_owned();
                let options = delete_options(range);
                async move { kv.delete(key, Some(options)).await }
            })
            .await?;
        Ok(from_delete(response))
    }

    pub(crate) async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        let writes = txn
            .success
            .iter()
            .chain(&txn.failure)
            .any(|op| !matches!(op, TxnOp::Get(..)));
        let request = Request::new("txn", txn.first_key());
        let request = if writes { request.write() } else { request };
        let etcd_txn = to_txn(&txn);
        let response = self
            .call(request, || {
                // A transaction's reads (a release's view of its prefix) answer like a range.
                let mut kv = self.kv();
                let etcd_txn = etcd_txn.clone();
                async move { kv.txn(etcd_txn).await }
            })
            .await?;
        Ok(from_txn(response))
    }

    /// gRPC watch streams open right now.
    pub(crate) fn watch_streams(&self) -> i64 {
        self.watches.streams()
    }

    pub(crate) async fn compact(&self, revision: i64) -> Result<()> {
        let request = Request::new("compact", "").revision(revision).write();
        self.call(request, || {
            let mut kv = self.client.kv_client();
            async move { kv.compact(revision, None).await }
        })
        .await?;
        Ok(())
    }

    pub(crate) async fn status(&self) -> Result<Status> {
        let response = self
            .call(Request::new("status", ""), || {
                let mut maintenance = self.client.maintenance_client();
                async move { maintenance.status().await }
            })
            .await?;
        let cluster_id = response.header().map_or(0, |h| h.cluster_id());
        self.learned_cluster(cluster_id);
        Ok(Status {
            revision: header_revision(response.header()),
            version: response.version().to_owned(),
            leader: response.leader(),
            member_id: response.header().map_or(0, |h| h.member_id()),
            db_size: response.db_size(),
            cluster_id,
        })
    }

    /// The ID of the cluster the last status answer came from; `None` before any did.
    pub(crate) fn cluster_id(&self) -> Option<u64> {
        let id = self.cluster_id.load(std::sync::atomic::Ordering::Acquire);
        (id != 0).then_some(id)
    }

    fn learned_cluster(&self, id: u64) {
        if id != 0 {
            let before = self
                .cluster_id
                .swap(id, std::sync::atomic::Ordering::AcqRel);
            if before != 0 && before != id {
                // The same endpoints now reach another cluster (rebuilt, or a DNS name moved).
                tracing::warn!(
                    endpoints = %self.endpoints,
                    before = format_args!("{before:x}"),
                    now = format_args!("{id:x}"),
                    "the etcd endpoints now answer for another cluster"
                );
            }
        }
    }

    /// Runs one unary request under `request_timeout`, mapping its error; a write that fails
    /// after it may have reached etcd is [`Error::OutcomeUnknown`].
    async fn call<T, F, Fut>(&self, request: Request<'_>, send: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        match tokio::time::timeout(self.request_timeout, self.send_until_sent(send)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(request_error(e, request, &self.error_context())),
            // Whether it was sent is not known here: a write may yet be applied.
            Err(_) => Err(deadline_error(request, self.request_timeout)),
        }
    }

    /// Sends a request, again while it fails without having reached etcd.
    ///
    /// tonic's balancer may route a request to a member that is down; the request then fails
    /// to connect, so it never reached etcd and repeating it is safe even for a write. With
    /// several endpoints it is sent again (`send` builds it afresh) until the balancer picks a
    /// live member or the tries run out; with one endpoint there is nowhere else to go.
    async fn send_until_sent<T, F, Fut>(&self, mut send: F) -> Result<T, etcd_client::Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let tries = if self.endpoint_count > 1 {
            self.endpoint_count * 3
        } else {
            1
        };
        let mut tried = 0;
        loop {
            tried += 1;
            match send().await {
                Err(e) if tried < tries && never_connected(&e) => {
                    tokio::time::sleep(Duration::from_millis(10 * tried as u64)).await;
                }
                result => return result,
            }
        }
    }

    fn error_context(&self) -> ErrorContext<'_> {
        ErrorContext {
            endpoints: &self.endpoints,
            request_timeout: self.request_timeout,
        }
    }
}

/// The end of the range of keys that start with `prefix` (exclusive), as etcd's clients
/// compute it: the prefix with its last byte below 0xff raised by one and what follows
/// dropped; `\0` (every key) for an empty prefix or one of 0xff bytes only.
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(&last) = end.last() {
        if last < 0xff {
            if let Some(byte) = end.last_mut() {
                *byte += 1;
            }
            return end;
        }
        end.pop();
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_ends_where_etcd_clients_end_it() {
        assert_eq!(prefix_end("/config/"), b"/config0");
        assert_eq!(prefix_end("a"), b"b");
        assert_eq!(prefix_end(""), b"\0");
        assert_eq!(prefix_end("a\u{7f}"), b"a\x80");
    }

    #[test]
    fn pages_follow_the_sizes_read_so_far() {
        let kv = |value: usize| KeyValue {
            key: "/big/tenants/t000001".into(),
            value: vec![b'x'; value],
            ..KeyValue::default()
        };
        // 100-byte values: pages of about 4 MiB hold tens of thousands of keys.
        let small = next_page(&vec![kv(100); 1_000]);
        assert!((20_000..=30_000).contains(&small), "{small}");
        // 1 MiB values: a handful per page, never none.
        assert_eq!(next_page(&[kv(1 << 20)]), 3);
        assert_eq!(next_page(&[kv(64 << 20)]), 1);
        // Keys only: capped.
        assert_eq!(next_page(&vec![kv(0); 10]), MAX_PAGE_KEYS);
    }
}
