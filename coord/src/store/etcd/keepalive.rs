//! Every lease of one store renewed over one gRPC keep-alive stream.
//!
//! etcd's LeaseKeepAlive RPC is a bidirectional stream on which each request names its lease
//! and each answer names the lease it renewed, so one stream serves any number of leases (Go's
//! clientv3 lessor keeps one per client). One stream per lease would cost a gRPC stream (and
//! an etcd stream with its goroutines) for every session; instead every renewal of one
//! [`EtcdStore`](super::EtcdStore) is a message on one shared stream.
//!
//! What this promises:
//! - **One stream while anything renews.** The first renewal opens it; later renewals join it,
//!   each lease on its caller's schedule. It stays open until it breaks or the store is
//!   dropped. [`KeepAliveMux::streams`] counts the open streams.
//! - **Each renewal gets its own answer.** Answers are routed by lease ID; renewals of one
//!   lease in flight together are answered in the order they were sent, as etcd answers them.
//! - **A broken stream fails every renewal waiting on it** with the transport's reason, and is
//!   not reused: the next renewal opens a new stream. A stream on which a renewal has waited
//!   longer than the request timeout counts as broken, so a connection that went silent
//!   without closing does not hold every lease's renewals up.
//! - **Dropping a renewal is safe**: its answer, when it comes, is dropped; other renewals of
//!   the same lease still get their own.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use etcd_client::{LeaseKeepAliveResponse, LeaseKeepAliveStream, LeaseKeeper};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::Instrument;

/// Why a renewal did not renew.
#[derive(Debug)]
pub(super) enum RenewError {
    /// etcd answered TTL 0: the lease is expired or revoked.
    NotFound,
    /// The stream could not be opened.
    Open(etcd_client::Error),
    /// The stream broke before the answer came; the reason says how.
    Broken(String),
}

type Reply = oneshot::Sender<Result<i64, RenewError>>;

/// One renewal asked of the stream task.
struct Renewal {
    lease: i64,
    reply: Reply,
}

/// The shared keep-alive stream of one etcd connection.
pub(super) struct KeepAliveMux {
    /// The renewals of the stream in use, if one is up.
    current: tokio::sync::Mutex<Option<mpsc::UnboundedSender<Renewal>>>,
    streams: Arc<AtomicI64>,
    /// How long a renewal may wait for its answer before the stream counts as broken.
    answer_timeout: Duration,
}

impl KeepAliveMux {
    pub fn new(answer_timeout: Duration) -> Self {
        KeepAliveMux {
            current: tokio::sync::Mutex::new(None),
            streams: Arc::default(),
            answer_timeout,
        }
    }

    /// gRPC keep-alive streams open right now.
    pub fn streams(&self) -> i64 {
        self.streams.load(Ordering::Relaxed)
    }

    /// Renews `lease` once on the shared stream, opening one with `open` if none is up, and
    /// returns the TTL etcd granted.
    ///
    /// `open` opens a stream by renewing `lease` on it (etcd-client's way); that answer is
    /// not handed out, so opening costs one round trip more than a renewal on an open stream.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a dropped renewal's answer is discarded when it comes.
    pub async fn renew<F, Fut>(&self, lease: i64, open: F) -> Result<i64, RenewError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(LeaseKeeper, LeaseKeepAliveStream), etcd_client::Error>>,
    {
        let (reply, answer) = oneshot::channel();
        {
            let mut current = self.current.lock().await;
            let renewals = match current.as_ref().filter(|r| !r.is_closed()) {
                Some(renewals) => renewals.clone(),
                None => {
                    let (keeper, responses) = open().await.map_err(opening_error)?;
                    let renewals = self.start(keeper, responses);
                    *current = Some(renewals.clone());
                    renewals
                }
            };
            if renewals.send(Renewal { lease, reply }).is_err() {
                // The stream ended just now. The renewal, dropped with the error, fails as
                // broken (the caller retries); the next one opens a new stream.
                *current = None;
            }
        }
        answer
            .await
            .unwrap_or_else(|_| Err(RenewError::Broken("the keep-alive stream closed".into())))
    }

    /// Starts the task that owns a freshly opened stream.
    fn start(
        &self,
        keeper: LeaseKeeper,
        responses: LeaseKeepAliveStream,
    ) -> mpsc::UnboundedSender<Renewal> {
        let (renewals_tx, renewals) = mpsc::unbounded_channel();
        self.streams.fetch_add(1, Ordering::Relaxed);
        let stream = Stream {
            renewals,
            waiting: HashMap::new(),
            streams: Arc::clone(&self.streams),
            answer_timeout: self.answer_timeout,
        };
        tokio::spawn(
            stream
                .run(keeper, responses)
                .instrument(tracing::debug_span!("store.keep_alive_stream")),
        );
        renewals_tx
    }
}

/// The task that owns one gRPC keep-alive stream.
struct Stream {
    renewals: mpsc::UnboundedReceiver<Renewal>,
    /// Renewals sent and not yet answered, by lease, oldest first, with when they were sent.
    waiting: HashMap<i64, VecDeque<(Instant, Reply)>>,
    streams: Arc<AtomicI64>,
    answer_timeout: Duration,
}

impl Stream {
    async fn run(mut self, keeper: LeaseKeeper, mut responses: LeaseKeepAliveStream) {
        // Requests go out from their own future, so that a full request buffer never stops
        // the task from reading answers (etcd stops reading requests while its answers are
        // unread).
        let (to_send, ids) = mpsc::unbounded_channel();
        let writer = write(keeper, ids);
        tokio::pin!(writer);
        // At least a millisecond: a zero period would panic.
        let period = (self.answer_timeout / 2).max(Duration::from_millis(1));
        let mut check = tokio::time::interval(period);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let reason = loop {
            tokio::select! {
                renewal = self.renewals.recv() => match renewal {
                    Some(Renewal { lease, reply }) => {
                        self.waiting
                            .entry(lease)
                            .or_default()
                            .push_back((Instant::now(), reply));
                        if to_send.send(lease).is_err() {
                            break String::from("the keep-alive request stream ended");
                        }
                    }
                    // Every sender is gone: the store was dropped.
                    None => break String::from("the store was dropped"),
                },
                message = responses.message() => match message {
                    Ok(Some(response)) => self.route(&response),
                    Ok(None) => break String::from("etcd closed the keep-alive stream"),
                    Err(e) => break super::errors::stream_error_reason(e),
                },
                reason = &mut writer => break reason,
                _ = check.tick() => {
                    if self.overdue() {
                        break format!(
                            "etcd did not answer a renewal within {:?}",
                            self.answer_timeout
                        );
                    }
                }
            }
        };
        self.finish(reason);
    }

    /// Hands an answer to the oldest renewal of its lease.
    fn route(&mut self, response: &LeaseKeepAliveResponse) {
        let lease = response.id();
        let Some(queue) = self.waiting.get_mut(&lease) else {
            tracing::debug!(
                lease = format_args!("{lease:x}"),
                "a keep-alive answer nobody waits for"
            );
            return;
        };
        if let Some((_, reply)) = queue.pop_front() {
            // etcd answers TTL 0 for a lease it does not know (expired or revoked).
            let result = if response.ttl() > 0 {
                Ok(response.ttl())
            } else {
                Err(RenewError::NotFound)
            };
            // The renewal may have been dropped; then nobody needs the answer.
            let _ = reply.send(result);
        }
        if queue.is_empty() {
            self.waiting.remove(&lease);
        }
    }

    /// True if some renewal has waited for its answer longer than the request timeout.
    fn overdue(&self) -> bool {
        let now = Instant::now();
        self.waiting.values().any(|queue| {
            queue
                .front()
                .is_some_and(|(sent, _)| now.duration_since(*sent) > self.answer_timeout)
        })
    }

    /// Ends the stream: every renewal waiting on it learns why.
    fn finish(mut self, reason: String) {
        self.streams.fetch_sub(1, Ordering::Relaxed);
        self.renewals.close();
        tracing::debug!(%reason, "keep-alive stream ended");
        for (_, queue) in self.waiting.drain() {
            for (_, reply) in queue {
                let _ = reply.send(Err(RenewError::Broken(reason.clone())));
            }
        }
        // Renewals sent after the stream decided to end.
        while let Ok(Renewal { reply, .. }) = self.renewals.try_recv() {
            let _ = reply.send(Err(RenewError::Broken(reason.clone())));
        }
    }
}

/// What a failed open means: etcd-client opens a stream by renewing one lease on it, and reports
/// a TTL 0 answer (the lease is gone) as this error.
fn opening_error(e: etcd_client::Error) -> RenewError {
    match e {
        etcd_client::Error::LeaseKeepAliveError(m) if m.contains("not found") => {
            RenewError::NotFound
        }
        other => RenewError::Open(other),
    }
}

/// Sends a keep-alive request for each lease that comes in; returns why it stopped.
async fn write(mut keeper: LeaseKeeper, mut leases: mpsc::UnboundedReceiver<i64>) -> String {
    while let Some(lease) = leases.recv().await {
        // etcd-client's keeper sends the ID it holds; the `pub-response-field` feature makes
        // that field writable, which turns one keeper into a sender for every lease.
        keeper.id = lease;
        if let Err(e) = keeper.keep_alive().await {
            return format!("sending a keep-alive: {e}");
        }
    }
    String::from("the keep-alive request stream ended")
}
