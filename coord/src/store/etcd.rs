//! The etcd backend: [`Store`](super::Store)'s operations on a real etcd, through etcd-client.
//!
//! What this backend promises, beyond etcd's own semantics:
//! - **Connecting fails fast.** `connect` returns within `dial_timeout`: etcd-client connects
//!   lazily, so `connect` sends a real `Status` request (retried until the deadline, so an
//!   etcd that is just starting is waited for) and reports [`Error::Unavailable`] naming the
//!   endpoints and the last transport error (a TLS problem is called one), or
//!   [`Error::Unauthenticated`] for rejected credentials.
//! - **Every unary request has a deadline**: `request_timeout`, past which it is
//!   [`Error::Timeout`] naming the operation and the key. Unary requests recover on their own
//!   after etcd restarts (the channel reconnects); with several endpoints a request that could
//!   not even connect to the endpoint it was routed to is tried again on another one.
//! - **Errors are coord's.** [`map_error`] is the one place where etcd-client's errors become
//!   [`Error`] variants; nothing above this module sees a gRPC status.
//! - **Watches deliver one revision per item.** etcd may batch events of several revisions
//!   into one response; they are split so every [`WatchResponse`] holds exactly one revision,
//!   in order. The stream never reconnects (etcd-client's does not survive a restart): it
//!   yields one error and ends, and [`crate::watch`] resumes it. Dropping the stream cancels
//!   the watch on the server.
//! - **All watches share one gRPC stream** ([`mux`]): a thousand watched prefixes are a
//!   thousand etcd watchers on one stream, not a thousand streams.
//! - **A lease renewal is one round trip.** The keep-alive stream of a lease is kept between
//!   renewals (opening it, at the first renewal, costs one more); a renewal on a broken stream
//!   is retried once on a fresh one.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use etcd_client::{
    Certificate, Client, ConnectOptions, DeleteOptions, GetOptions, Identity, LeaseKeepAliveStream,
    LeaseKeeper, LeaseTimeToLiveOptions, PutOptions, TlsOptions, WatchOptions,
};
use tokio::time::Instant;
use tonic::Code;

mod mux;

use super::*;
use crate::client::{read_pem, ClientConfig};

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
    /// Open keep-alive streams by lease, so a renewal is one message on an open stream.
    keepers: Arc<Mutex<HashMap<i64, Keeper>>>,
    /// The shared watch stream.
    watches: Arc<mux::WatchMux>,
}

/// An open keep-alive stream of one lease.
struct Keeper {
    sender: LeaseKeeper,
    responses: LeaseKeepAliveStream,
}

/// What a request was about: everything [`map_error`] needs to name it.
#[derive(Clone, Copy, Debug)]
struct Request<'a> {
    /// The operation, e.g. `"range"`.
    op: &'static str,
    /// The key or prefix ("" for cluster-wide requests).
    key: &'a str,
    /// The lease of a lease request (0 otherwise).
    lease: i64,
    /// The revision asked for (0 for none).
    revision: i64,
}

impl<'a> Request<'a> {
    fn new(op: &'static str, key: &'a str) -> Self {
        Request {
            op,
            key,
            lease: 0,
            revision: 0,
        }
    }

    fn lease(op: &'static str, lease: i64) -> Self {
        Request {
            lease,
            ..Request::new(op, "")
        }
    }

    fn revision(self, revision: i64) -> Self {
        Request { revision, ..self }
    }

    /// "range /a/b", "lease_grant": the operation as [`Error::Timeout`] names it.
    fn describe(&self) -> String {
        match (self.key.is_empty(), self.lease) {
            (false, _) => format!("{} {}", self.op, self.key),
            (true, 0) => self.op.to_string(),
            (true, lease) => format!("{} {lease:x}", self.op),
        }
    }
}

/// Where errors are reported: the endpoints and the deadline of the failed request.
struct ErrorContext<'a> {
    endpoints: &'a str,
    request_timeout: Duration,
}

impl EtcdStore {
    /// Connects and checks that etcd answers, all within `config.dial_timeout`.
    pub(crate) async fn connect(config: &ClientConfig) -> Result<Self> {
        let endpoints: Arc<str> = config.endpoints.join(",").into();
        let options = connect_options(config)?;
        let context = ErrorContext {
            endpoints: &endpoints,
            request_timeout: config.dial_timeout,
        };
        let deadline = Instant::now() + config.dial_timeout;
        let mut last_error: Option<String> = None;
        // etcd-client connects lazily and a request routed to an endpoint that is down fails at
        // once, so one failed probe says little: an etcd that is starting, or a dead endpoint
        // among live ones, is retried until the deadline.
        loop {
            let attempt = async {
                let client = Client::connect(&config.endpoints, Some(options.clone())).await?;
                client.maintenance_client().status().await?;
                Ok::<_, etcd_client::Error>(client)
            };
            match tokio::time::timeout_at(deadline, attempt).await {
                Ok(Ok(client)) => {
                    let client = Arc::new(client);
                    return Ok(EtcdStore {
                        watches: Arc::new(mux::WatchMux::new(Arc::clone(&client))),
                        client,
                        endpoint_count: config.endpoints.len(),
                        endpoints,
                        request_timeout: config.request_timeout,
                        keepers: Arc::default(),
                    });
                }
                Ok(Err(e)) => match map_error(e, Request::new("connect", ""), &context) {
                    // Retrying cannot fix a refusal.
                    err @ (Error::Unauthenticated { .. }
                    | Error::PermissionDenied { .. }
                    | Error::InvalidArgument { .. }) => return Err(err),
                    // Keep a TLS failure over what follows it: the next try on the same
                    // connection may only see the hang-up ("broken pipe").
                    Error::Unavailable { reason, .. } => {
                        if !last_error.as_deref().is_some_and(is_tls_failure) {
                            last_error = Some(reason);
                        }
                    }
                    other => last_error = Some(other.to_string()),
                },
                Err(_) => break,
            }
            if Instant::now() + CONNECT_RETRY_DELAY >= deadline {
                break;
            }
            tokio::time::sleep(CONNECT_RETRY_DELAY).await;
        }
        let reason = match last_error {
            Some(reason) if !is_tls_failure(&reason) && is_hang_up(&reason) => {
                if config.tls.is_none() {
                    // What a TLS server does to a plain-text HTTP/2 client.
                    format!("{reason} (if etcd serves TLS, use an https:// endpoint and set tls)")
                } else {
                    // What etcd with --client-cert-auth does to a client without a certificate.
                    format!(
                        "{reason} (etcd hung up after the TLS handshake: if it requires a client \
                         certificate, set tls.cert_file and tls.key_file)"
                    )
                }
            }
            Some(reason) => reason,
            None => format!(
                "no answer within the dial timeout of {:?}",
                config.dial_timeout
            ),
        };
        Err(Error::Unavailable {
            endpoints: endpoints.to_string(),
            reason,
        })
    }

    pub(crate) async fn range(
        &self,
        range: &KeyRange,
        options: RangeOptions,
    ) -> Result<GetResponse> {
        let request = Request::new("range", range.as_str()).revision(options.revision);
        let key = range.as_str().to_owned();
        let get_options = get_options(range, options);
        let response = self
            .call(request, || {
                let mut kv = self.client.kv_client();
                let (key, get_options) = (key.clone(), get_options.clone());
                async move { kv.get(key, Some(get_options)).await }
            })
            .await?;
        Ok(from_get(response))
    }

    pub(crate) async fn put(&self, key: &str, value: Vec<u8>, lease: i64) -> Result<PutResponse> {
        let request = Request {
            lease,
            ..Request::new("put", key)
        };
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
        let request = Request::new("delete", range.as_str());
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
        let request = Request::new("txn", txn.first_key());
        let etcd_txn = to_txn(&txn);
        let response = self
            .call(request, || {
                let mut kv = self.client.kv_client();
                let etcd_txn = etcd_txn.clone();
                async move { kv.txn(etcd_txn).await }
            })
            .await?;
        Ok(from_txn(response))
    }

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

    pub(crate) async fn lease_revoke(&self, id: i64) -> Result<()> {
        // Its keep-alive stream is of no more use.
        self.keepers().remove(&id);
        self.call(Request::lease("lease_revoke", id), || {
            let mut lease = self.client.lease_client();
            async move { lease.revoke(id).await }
        })
        .await?;
        Ok(())
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

    pub(crate) async fn watch(&self, range: &KeyRange, start_revision: i64) -> Result<WatchStream> {
        let key = range.as_str().to_owned();
        let request = Request::new("watch", &key).revision(start_revision);
        let mut options = WatchOptions::new().with_progress_notify();
        if matches!(range, KeyRange::Prefix(_)) {
            options = options.with_prefix();
        }
        if start_revision > 0 {
            options = options.with_start_revision(start_revision);
        }
        // Waiting for etcd's `created` answer means the watch is registered when this returns:
        // a write made after `watch` returns is seen even when watching "from now on".
        let subscription = self
            .call(request, || {
                self.watches
                    .watch(key.clone().into_bytes(), options.clone())
            })
            .await?;
        let created = subscription.created.clone();
        if created.canceled() && created.compact_revision() <= 0 {
            // Refused outright (permission denied, …): an error of the call, not the stream.
            return Err(watch_canceled(&key, created.cancel_reason()));
        }
        let mut state = WatchState {
            subscription,
            key: key.clone(),
            endpoints: Arc::clone(&self.endpoints),
            start_revision,
            next_revision: start_revision,
            pending: VecDeque::new(),
            done: false,
        };
        state.absorb(created);
        Ok(Box::pin(futures::stream::unfold(state, WatchState::next)))
    }

    /// gRPC watch streams open right now.
    pub(crate) fn watch_streams(&self) -> i64 {
        self.watches.streams()
    }

    pub(crate) async fn compact(&self, revision: i64) -> Result<()> {
        let request = Request::new("compact", "").revision(revision);
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
        Ok(Status {
            revision: header_revision(response.header()),
            version: response.version().to_owned(),
            leader: response.leader(),
            member_id: response.header().map_or(0, |h| h.member_id()),
            db_size: response.db_size(),
        })
    }

    /// Runs one unary request under `request_timeout`, mapping its error.
    async fn call<T, F, Fut>(&self, request: Request<'_>, send: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        match tokio::time::timeout(self.request_timeout, self.send_until_sent(send)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(map_error(e, request, &self.error_context())),
            Err(_) => Err(timeout_error(request, self.request_timeout)),
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

    fn error_context(&self) -> ErrorContext<'_> {
        ErrorContext {
            endpoints: &self.endpoints,
            request_timeout: self.request_timeout,
        }
    }
}

/// How long `connect` waits between probes of an etcd that did not answer.
const CONNECT_RETRY_DELAY: Duration = Duration::from_millis(100);

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

/// etcd-client options from a [`ClientConfig`]. Unreadable PEM files are
/// [`Error::InvalidArgument`] naming the field.
fn connect_options(config: &ClientConfig) -> Result<ConnectOptions> {
    let mut options = ConnectOptions::new()
        .with_connect_timeout(config.dial_timeout)
        .with_timeout(config.request_timeout)
        .with_keep_alive(config.keep_alive_time, config.keep_alive_timeout)
        .with_keep_alive_while_idle(true)
        // A member cut off from the quorum refuses requests and cancels watches at once
        // ("no leader") instead of serving stale reads or stalling until the deadline, so a
        // client with several endpoints moves on (what Go's clientv3 asks for on watches).
        .with_require_leader(true);
    if let (Some(user), Some(password)) = (&config.username, &config.password) {
        // etcd's auth tokens expire (and do not survive a restart with simple tokens): log in
        // again when the server says the token is invalid.
        options = options
            .with_user(user.clone(), password.clone())
            .with_auto_token_refresh(true);
    }
    if let Some(tls) = &config.tls {
        let mut tls_options = TlsOptions::new();
        if let Some(ca) = &tls.ca_file {
            tls_options =
                tls_options.ca_certificate(Certificate::from_pem(read_pem("tls.ca_file", ca)?));
        }
        if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
            tls_options = tls_options.identity(Identity::from_pem(
                read_pem("tls.cert_file", cert)?,
                read_pem("tls.key_file", key)?,
            ));
        }
        if let Some(domain) = &tls.domain_name {
            tls_options = tls_options.domain_name(domain.clone());
        }
        options = options.with_tls(tls_options);
    }
    Ok(options)
}

/// The one place where etcd-client's errors become coord's.
fn map_error(err: etcd_client::Error, request: Request<'_>, context: &ErrorContext<'_>) -> Error {
    use etcd_client::Error as E;
    let unavailable = |reason: String| Error::Unavailable {
        endpoints: context.endpoints.to_owned(),
        reason,
    };
    let backend = |reason: String| Error::Backend {
        key: request.key.to_owned(),
        reason,
    };
    match err {
        E::GRpcStatus(status) => {
            let message = status.message();
            // etcd's own errors come by message ("etcdserver: …"); the code alone is ambiguous
            // (a wrong password is InvalidArgument, a compacted revision OutOfRange).
            if message.contains("authentication failed")
                || message.contains("invalid auth token")
                || message.contains("user name is empty")
                // Credentials given to an etcd without auth: a configuration mistake to report,
                // not a reason to send requests unauthenticated.
                || message.contains("authentication is not enabled")
                || status.code() == Code::Unauthenticated
            {
                return Error::Unauthenticated {
                    reason: message.to_owned(),
                };
            }
            if message.contains("permission denied") || status.code() == Code::PermissionDenied {
                return Error::PermissionDenied {
                    key: request.key.to_owned(),
                    reason: message.to_owned(),
                };
            }
            if message.contains("requested lease not found") {
                return Error::LeaseNotFound {
                    lease: request.lease,
                };
            }
            if message.contains("required revision has been compacted") {
                return Error::Compacted {
                    key: request.key.to_owned(),
                    requested: request.revision,
                    // A unary answer does not say which revision etcd compacted to.
                    compact_revision: 0,
                };
            }
            if message.contains("required revision is a future revision") {
                return Error::invalid_argument(
                    "revision",
                    format!("{}: {message}", request.revision),
                );
            }
            // tonic's own per-request timeout (`ConnectOptions::with_timeout`) comes back as
            // Cancelled with TimeoutExpired under it.
            let timed_out = sources(std::error::Error::source(&status))
                .any(|e| e.is::<tonic::TimeoutExpired>());
            match status.code() {
                Code::DeadlineExceeded => timeout_error(request, context.request_timeout),
                Code::Cancelled if timed_out => timeout_error(request, context.request_timeout),
                // Unavailable: connect failures, "no leader", etcd's own "request timed out";
                // Cancelled: the connection broke under the request.
                Code::Unavailable | Code::Cancelled => unavailable(status_reason(&status)),
                // A status made on this side from a broken connection (an h2 error) carries
                // its cause; one from etcd does not.
                Code::Unknown | Code::Internal if std::error::Error::source(&status).is_some() => {
                    unavailable(status_reason(&status))
                }
                _ => backend(message.to_owned()),
            }
        }
        E::TransportError(e) => unavailable(transport_reason(&e)),
        E::IoError(e) => unavailable(transport_reason(&e)),
        E::WatchError(m) => unavailable(format!("watch stream: {m}")),
        E::LeaseKeepAliveError(m) if m.contains("not found") => Error::LeaseNotFound {
            lease: request.lease,
        },
        E::LeaseKeepAliveError(m) => unavailable(format!("lease keep-alive stream: {m}")),
        E::InvalidUri(e) => Error::invalid_argument("endpoints", e.to_string()),
        E::InvalidArgs(m) if request.op == "connect" => Error::invalid_argument("endpoints", m),
        E::InvalidArgs(m) => Error::invalid_argument(request.key, m),
        E::InvalidMetadataValue(e) => Error::Unauthenticated {
            reason: format!("etcd sent an unusable auth token: {e}"),
        },
        other => backend(other.to_string()),
    }
}

fn timeout_error(request: Request<'_>, after: Duration) -> Error {
    Error::Timeout {
        operation: request.describe(),
        after,
    }
}

/// True if the request failed before a connection to etcd existed, so it never reached etcd.
fn never_connected(err: &etcd_client::Error) -> bool {
    let etcd_client::Error::GRpcStatus(status) = err else {
        return false;
    };
    status.code() == Code::Unavailable
        && sources(std::error::Error::source(status)).any(|e| {
            e.is::<tonic::ConnectError>()
                || e.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
        })
}

/// The text of a status made from a transport failure: its message and the causes under it.
fn status_reason(status: &tonic::Status) -> String {
    let message = status.message();
    let causes = chain_text(std::error::Error::source(status));
    let text = if causes.is_empty() || message.contains(&causes) {
        message.to_owned()
    } else if causes.contains(message) {
        causes
    } else {
        format!("{message}: {causes}")
    };
    explain(text)
}

/// The text of a transport error with all its causes: tonic's own text is often just
/// "transport error", the cause (connection refused, an unknown certificate issuer) is below.
fn transport_reason(err: &(dyn std::error::Error + 'static)) -> String {
    explain(chain_text(Some(err)))
}

/// Says that a transport failure is a TLS problem when it is one: the text at the top of the
/// chain ("transport error") would not.
fn explain(text: String) -> String {
    let lower = text.to_lowercase();
    if lower.contains("certificate") || lower.contains("tls") || lower.contains("handshake") {
        format!(
            "TLS handshake failed (check tls.ca_file, the client certificate and the server \
             name): {text}"
        )
    } else {
        text
    }
}

/// True for a reason [`explain`] called a TLS failure.
fn is_tls_failure(reason: &str) -> bool {
    reason.starts_with("TLS handshake failed")
}

/// True for the ways a connection ends when the server drops it right after it opened: a TLS
/// server spoken to in plain text, or one that wants a client certificate it did not get.
fn is_hang_up(reason: &str) -> bool {
    let lower = reason.to_lowercase();
    [
        "broken pipe",
        "connection reset",
        "connection closed",
        "frame with invalid size",
        "protocol error",
    ]
    .iter()
    .any(|sign| lower.contains(sign))
}

/// An error and its sources, each once: wrappers often repeat the text of their cause.
fn chain_text(err: Option<&(dyn std::error::Error + 'static)>) -> String {
    let mut parts: Vec<String> = Vec::new();
    for e in sources(err) {
        let text = e.to_string();
        if text.is_empty() || parts.iter().any(|p| p.contains(&text)) {
            continue;
        }
        parts.push(text);
    }
    parts.join(": ")
}

fn sources<'a>(
    err: Option<&'a (dyn std::error::Error + 'static)>,
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(err, |e| e.source())
}

/// Why a watch stream failed, in words.
fn stream_error_reason(e: etcd_client::Error) -> String {
    match e {
        etcd_client::Error::GRpcStatus(status) => status_reason(&status),
        other => transport_reason(&other),
    }
}

fn watch_canceled(key: &str, reason: &str) -> Error {
    if reason.contains("permission denied") {
        Error::PermissionDenied {
            key: key.to_owned(),
            reason: reason.to_owned(),
        }
    } else {
        Error::Backend {
            key: key.to_owned(),
            reason: format!("etcd canceled the watch: {reason}"),
        }
    }
}

/// A store watch over one etcd watch stream (see the module docs for what it promises).
struct WatchState {
    /// Owned here so the etcd watcher lives exactly as long as the coord stream.
    subscription: mux::Subscription,
    key: String,
    endpoints: Arc<str>,
    start_revision: i64,
    /// The first revision not yet delivered, for the error of a watch compacted under it.
    next_revision: i64,
    /// Answers split from one etcd response, not yet yielded.
    pending: VecDeque<Result<WatchResponse>>,
    /// The stream yielded (or queued) its final error.
    done: bool,
}

impl WatchState {
    async fn next(mut self) -> Option<(Result<WatchResponse>, Self)> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                return Some((item, self));
            }
            if self.done {
                return None;
            }
            match self.subscription.responses.recv().await {
                Some(mux::Item::Response(response)) => self.absorb(response),
                Some(mux::Item::Broken(reason)) => self.end(reason),
                None => self.end(String::from("the watch stream closed")),
            }
        }
    }

    /// Queues what one etcd response means: nothing, a progress mark, one answer per revision,
    /// or the final error.
    fn absorb(&mut self, mut response: etcd_client::WatchResponse) {
        if response.canceled() {
            let error = if response.compact_revision() > 0 {
                Error::Compacted {
                    key: self.key.clone(),
                    requested: if self.next_revision > 0 {
                        self.next_revision
                    } else {
                        self.start_revision
                    },
                    compact_revision: response.compact_revision(),
                }
            } else {
                watch_canceled(&self.key, response.cancel_reason())
            };
            self.pending.push_back(Err(error));
            self.done = true;
            return;
        }
        if response.created() {
            return;
        }
        if response.events().is_empty() {
            let revision = response.take_header().map_or(0, |h| h.revision());
            self.pending.push_back(Ok(WatchResponse {
                revision,
                events: Vec::new(),
            }));
            return;
        }
        for event in response.events() {
            let Some(kv) = event.kv() else { continue };
            let event = Event {
                kind: match event.event_type() {
                    etcd_client::EventType::Put => EventKind::Put,
                    etcd_client::EventType::Delete => EventKind::Delete,
                },
                kv: from_kv_ref(kv),
            };
            let revision = event.kv.mod_revision;
            match self.pending.back_mut() {
                Some(Ok(batch)) if batch.revision == revision && !batch.events.is_empty() => {
                    batch.events.push(event)
                }
                _ => self.pending.push_back(Ok(WatchResponse {
                    revision,
                    events: vec![event],
                })),
            }
            self.next_revision = revision + 1;
        }
    }

    /// Queues the error that ends the stream: the connection is gone.
    fn end(&mut self, reason: String) {
        self.pending.push_back(Err(Error::Unavailable {
            endpoints: self.endpoints.to_string(),
            reason: format!("watch on `{}` broke: {reason}", self.key),
        }));
        self.done = true;
    }
}

fn get_options(range: &KeyRange, options: RangeOptions) -> GetOptions {
    let mut get = GetOptions::new();
    // etcd-client turns an empty prefix into etcd's "every key" range ("\0" to "\0").
    if matches!(range, KeyRange::Prefix(_)) {
        get = get.with_prefix();
    }
    if options.revision > 0 {
        get = get.with_revision(options.revision);
    }
    if options.keys_only {
        get = get.with_keys_only();
    }
    if options.limit > 0 {
        get = get.with_limit(options.limit);
    }
    get
}

fn delete_options(range: &KeyRange) -> DeleteOptions {
    let options = DeleteOptions::new().with_prev_key();
    match range {
        KeyRange::Prefix(_) => options.with_prefix(),
        KeyRange::Key(_) => options,
    }
}

fn to_txn(txn: &Txn) -> etcd_client::Txn {
    let compares: Vec<etcd_client::Compare> = txn.compares.iter().map(to_compare).collect();
    let success: Vec<etcd_client::TxnOp> = txn.success.iter().map(to_txn_op).collect();
    let failure: Vec<etcd_client::TxnOp> = txn.failure.iter().map(to_txn_op).collect();
    etcd_client::Txn::new()
        .when(compares)
        .and_then(success)
        .or_else(failure)
}

fn to_compare(compare: &Compare) -> etcd_client::Compare {
    use etcd_client::{Compare as C, CompareOp as Op};
    let op = match compare.op {
        CompareOp::Equal => Op::Equal,
        CompareOp::NotEqual => Op::NotEqual,
        CompareOp::Greater => Op::Greater,
        CompareOp::Less => Op::Less,
    };
    let key = compare.key.clone();
    match &compare.target {
        CompareTarget::Value(value) => C::value(key, op, value.clone()),
        CompareTarget::Version(n) => C::version(key, op, *n),
        CompareTarget::CreateRevision(n) => C::create_revision(key, op, *n),
        CompareTarget::ModRevision(n) => C::mod_revision(key, op, *n),
        CompareTarget::Lease(n) => C::lease(key, op, *n),
    }
}

fn to_txn_op(op: &TxnOp) -> etcd_client::TxnOp {
    use etcd_client::TxnOp as Op;
    match op {
        // No previous values in a transaction: see `TxnOpResponse`.
        TxnOp::Put { key, value, lease } => Op::put(
            key.clone(),
            value.clone(),
            Some(PutOptions::new().with_lease(*lease)),
        ),
        TxnOp::Delete(range) => {
            let options = match range {
                KeyRange::Prefix(_) => DeleteOptions::new().with_prefix(),
                KeyRange::Key(_) => DeleteOptions::new(),
            };
            Op::delete(range.as_str(), Some(options))
        }
        TxnOp::Get(range, options) => Op::get(range.as_str(), Some(get_options(range, *options))),
    }
}

fn from_txn(response: etcd_client::TxnResponse) -> TxnResponse {
    use etcd_client::TxnOpResponse as R;
    let responses = response
        .op_responses()
        .into_iter()
        .filter_map(|op| match op {
            R::Put(put) => Some(TxnOpResponse::Put(from_put(put))),
            R::Delete(delete) => Some(TxnOpResponse::Delete(from_delete(delete))),
            R::Get(get) => Some(TxnOpResponse::Get(from_get(get))),
            // coord sends no nested transactions.
            R::Txn(_) => None,
        })
        .collect();
    TxnResponse {
        succeeded: response.succeeded(),
        revision: header_revision(response.header()),
        responses,
    }
}

fn from_get(mut response: etcd_client::GetResponse) -> GetResponse {
    GetResponse {
        revision: header_revision(response.header()),
        count: response.count(),
        kvs: response.take_kvs().into_iter().map(from_kv).collect(),
    }
}

fn from_put(mut response: etcd_client::PutResponse) -> PutResponse {
    PutResponse {
        revision: header_revision(response.header()),
        prev_kv: response.take_prev_key().map(from_kv),
    }
}

fn from_delete(mut response: etcd_client::DeleteResponse) -> DeleteResponse {
    DeleteResponse {
        revision: header_revision(response.header()),
        deleted: response.deleted(),
        prev_kvs: response.take_prev_kvs().into_iter().map(from_kv).collect(),
    }
}

fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> i64 {
    header.map_or(0, |h| h.revision())
}

fn from_kv(kv: etcd_client::KeyValue) -> KeyValue {
    let (create_revision, mod_revision, version, lease) = (
        kv.create_revision(),
        kv.mod_revision(),
        kv.version(),
        kv.lease(),
    );
    let (key, value) = kv.into_key_value();
    KeyValue {
        key: match String::from_utf8(key) {
            Ok(key) => key,
            Err(e) => lossy(e.as_bytes()),
        },
        value,
        create_revision,
        mod_revision,
        version,
        lease,
    }
}

fn from_kv_ref(kv: &etcd_client::KeyValue) -> KeyValue {
    KeyValue {
        key: lossy(kv.key()),
        value: kv.value().to_vec(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        version: kv.version(),
        lease: kv.lease(),
    }
}

/// coord writes UTF-8 keys only; a foreign key that is not UTF-8 is shown lossily.
fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context() -> ErrorContext<'static> {
        ErrorContext {
            endpoints: "http://127.0.0.1:2379",
            request_timeout: Duration::from_secs(2),
        }
    }

    fn status(code: Code, message: &str) -> etcd_client::Error {
        etcd_client::Error::GRpcStatus(tonic::Status::new(code, message))
    }

    #[test]
    fn etcd_errors_map_to_coord_errors_naming_the_key() {
        let get = Request::new("range", "/a/b").revision(7);
        let cases = [
            (
                status(Code::PermissionDenied, "etcdserver: permission denied"),
                "PermissionDenied",
            ),
            (
                status(
                    Code::InvalidArgument,
                    "etcdserver: authentication failed, invalid user ID or password",
                ),
                "Unauthenticated",
            ),
            (
                status(Code::Unauthenticated, "etcdserver: invalid auth token"),
                "Unauthenticated",
            ),
            (
                status(
                    Code::OutOfRange,
                    "etcdserver: mvcc: required revision has been compacted",
                ),
                "Compacted",
            ),
            (
                status(
                    Code::OutOfRange,
                    "etcdserver: mvcc: required revision is a future revision",
                ),
                "InvalidArgument",
            ),
            (
                status(Code::Unavailable, "etcdserver: no leader"),
                "Unavailable",
            ),
            (status(Code::DeadlineExceeded, "deadline"), "Timeout"),
            (
                status(
                    Code::InvalidArgument,
                    "etcdserver: duplicate key given in txn request",
                ),
                "Backend",
            ),
        ];
        for (err, variant) in cases {
            let mapped = map_error(err, get, &context());
            let debug = format!("{mapped:?}");
            assert!(debug.starts_with(variant), "{debug}");
            match mapped {
                Error::PermissionDenied { key, .. } | Error::Backend { key, .. } => {
                    assert_eq!(key, "/a/b")
                }
                Error::Compacted { key, requested, .. } => {
                    assert_eq!((key.as_str(), requested), ("/a/b", 7))
                }
                Error::Timeout { operation, .. } => assert_eq!(operation, "range /a/b"),
                _ => {}
            }
        }
    }

    #[test]
    fn missing_lease_is_lease_not_found() {
        let revoke = Request::lease("lease_revoke", 0x2a);
        let err = map_error(
            status(Code::NotFound, "etcdserver: requested lease not found"),
            revoke,
            &context(),
        );
        assert!(
            matches!(err, Error::LeaseNotFound { lease: 0x2a }),
            "{err:?}"
        );
        let err = map_error(
            etcd_client::Error::LeaseKeepAliveError("lease not found".into()),
            revoke,
            &context(),
        );
        assert!(
            matches!(err, Error::LeaseNotFound { lease: 0x2a }),
            "{err:?}"
        );
    }

    #[test]
    fn certificate_failures_say_tls() {
        let text = explain("invalid peer certificate: UnknownIssuer".into());
        assert!(text.starts_with("TLS handshake failed"), "{text}");
        assert_eq!(explain("connection refused".into()), "connection refused");
    }

    #[test]
    fn empty_prefix_ranges_over_every_key() {
        let request: etcd_client::TxnOp =
            to_txn_op(&TxnOp::Get(KeyRange::prefix(""), RangeOptions::default()));
        let debug = format!("{request:?}");
        assert!(debug.contains("key: [0], range_end: [0]"), "{debug}");
    }
}
