//! Many store watches on one gRPC watch stream.
//!
//! etcd's Watch RPC is a bidirectional stream that carries any number of watchers, told apart
//! by `watch_id`. Opening one stream per watch would cost a gRPC stream (and an etcd
//! `serverWatchStream` with its goroutines) for every `Live` handle's prefix; instead every
//! watch of one [`EtcdStore`](super::EtcdStore) is a watcher on one shared stream.
//!
//! What this promises:
//! - **One stream while anything watches.** Watches opened while a stream is up join it; the
//!   stream closes when its last watcher is cancelled, and the next watch opens a new one.
//!   [`WatchMux::streams`] counts the open streams.
//! - **Creates are answered in order.** etcd answers create requests on a stream in the order
//!   they were sent, with no watch ID chosen by the client, so (like Go's clientv3) one create
//!   is in flight at a time and the next `created` answer belongs to it.
//! - **A broken stream breaks every watcher on it**, each with the transport's reason, and
//!   the stream is not reused: [`crate::watch`] resumes each watcher from its own revision on a
//!   fresh stream. A slow watcher does not hold up the others: its responses queue in memory.
//! - **Dropping a [`MuxWatcher`] cancels its watcher** on the server.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use etcd_client::{Client, WatchOptions, WatchRequestSender, WatchResponse, WatchResponseStream};
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

/// What a watcher receives after its `created` answer.
#[derive(Debug)]
pub(super) enum Item {
    /// Boxed: a watcher's channel allocates its slots in blocks, and a thousand idle watchers
    /// should each hold a block of pointers, not of whole responses.
    Response(Box<WatchResponse>),
    /// The shared stream broke; nothing more comes.
    Broken(String),
}

/// Why a create did not get a watcher.
#[derive(Debug)]
pub(super) enum Refused {
    /// The stream was closing because it had gone idle: open a new one.
    Idle,
    /// The stream failed.
    Failed(etcd_client::Error),
}

/// One watcher on a shared stream. Dropping it cancels the watcher.
#[derive(Debug)]
pub(super) struct MuxWatcher {
    /// etcd's `created` answer: may already be `canceled` (compacted start, permission denied).
    pub created: WatchResponse,
    pub responses: mpsc::UnboundedReceiver<Item>,
    cancel: Option<(i64, mpsc::UnboundedSender<Command>)>,
}

impl Drop for MuxWatcher {
    fn drop(&mut self) {
        if let Some((id, commands)) = self.cancel.take() {
            // The stream may be gone already; then there is nothing to cancel.
            let _ = commands.send(Command::Cancel(id));
        }
    }
}

#[derive(Debug)]
pub(super) enum Command {
    Create {
        key: Vec<u8>,
        options: WatchOptions,
        reply: oneshot::Sender<Result<MuxWatcher, Refused>>,
    },
    Cancel(i64),
}

/// The shared watch streams of one etcd connection.
pub(super) struct WatchMux {
    client: Arc<Client>,
    /// The commands of the stream in use, if one is up.
    current: tokio::sync::Mutex<Option<mpsc::UnboundedSender<Command>>>,
    streams: Arc<AtomicI64>,
}

impl WatchMux {
    pub fn new(client: Arc<Client>) -> Self {
        WatchMux {
            client,
            current: tokio::sync::Mutex::new(None),
            streams: Arc::default(),
        }
    }

    /// gRPC watch streams open right now.
    pub fn streams(&self) -> i64 {
        self.streams.load(Ordering::Relaxed)
    }

    /// Adds a watcher on `key` to the shared stream (opening one if none is up) and waits for
    /// etcd's `created` answer.
    pub async fn watch(
        &self,
        key: Vec<u8>,
        options: WatchOptions,
    ) -> Result<MuxWatcher, etcd_client::Error> {
        loop {
            let mut current = self.current.lock().await;
            let reply = match current.as_ref() {
                Some(commands) => {
                    let (reply, answer) = oneshot::channel();
                    let create = Command::Create {
                        key: key.clone(),
                        options: options.clone(),
                        reply,
                    };
                    if commands.send(create).is_err() {
                        // That stream has ended; open a new one.
                        *current = None;
                        continue;
                    }
                    answer
                }
                None => {
                    let (commands, answer) = self.open(key.clone(), options.clone()).await?;
                    *current = Some(commands);
                    answer
                }
            };
            // Not held while waiting for `created`: other watches may queue their creates.
            drop(current);
            match reply.await {
                Ok(Ok(subscription)) => return Ok(subscription),
                Ok(Err(Refused::Failed(e))) => return Err(e),
                // The stream went idle and closed under us, or its task ended: try a new one.
                Ok(Err(Refused::Idle)) | Err(_) => {
                    let mut current = self.current.lock().await;
                    if current
                        .as_ref()
                        .is_some_and(mpsc::UnboundedSender::is_closed)
                    {
                        *current = None;
                    }
                }
            }
        }
    }

    /// Opens a stream whose first create is for `key`, and starts its task.
    async fn open(
        &self,
        key: Vec<u8>,
        options: WatchOptions,
    ) -> Result<
        (
            mpsc::UnboundedSender<Command>,
            oneshot::Receiver<Result<MuxWatcher, Refused>>,
        ),
        etcd_client::Error,
    > {
        let stream = self.client.watch_client().watch(key, Some(options)).await?;
        let (sender, responses) = stream.split();
        let (commands_tx, commands_rx) = mpsc::unbounded_channel();
        let (reply, answer) = oneshot::channel();
        self.streams.fetch_add(1, Ordering::Relaxed);
        let task = Stream {
            sender,
            commands: commands_rx,
            commands_tx: commands_tx.downgrade(),
            in_flight: Some(reply),
            queued: VecDeque::new(),
            watchers: HashMap::new(),
            streams: Arc::clone(&self.streams),
        };
        tokio::spawn(
            task.run(responses)
                .instrument(tracing::debug_span!("store.watch_stream")),
        );
        Ok((commands_tx, answer))
    }
}

type Reply = oneshot::Sender<Result<MuxWatcher, Refused>>;

/// The task that owns one gRPC watch stream.
struct Stream {
    sender: WatchRequestSender,
    commands: mpsc::UnboundedReceiver<Command>,
    /// Handed to each subscription so it can cancel itself; weak so that the task's own copy
    /// does not keep its command channel open.
    commands_tx: mpsc::WeakUnboundedSender<Command>,
    /// The create sent and not yet answered.
    in_flight: Option<Reply>,
    /// Creates waiting for the one in flight.
    queued: VecDeque<(Vec<u8>, WatchOptions, Reply)>,
    watchers: HashMap<i64, mpsc::UnboundedSender<Item>>,
    streams: Arc<AtomicI64>,
}

impl Stream {
    async fn run(mut self, mut responses: WatchResponseStream) {
        let reason = loop {
            if self.is_idle() {
                break None;
            }
            tokio::select! {
                command = self.commands.recv() => match command {
                    Some(Command::Create { key, options, reply }) => {
                        if let Err(e) = self.create(key, options, reply).await {
                            break Some(e);
                        }
                    }
                    Some(Command::Cancel(id)) => {
                        if self.watchers.remove(&id).is_some() {
                            // A failed send means the stream is broken; the read side will say so.
                            let _ = self.sender.cancel(id).await;
                        }
                    }
                    // Every sender is gone: the store was dropped.
                    None => break None,
                },
                message = responses.message() => match message {
                    Ok(Some(response)) => {
                        if let Err(e) = self.route(response).await {
                            break Some(e);
                        }
                    }
                    Ok(None) => break Some(String::from("etcd closed the watch stream")),
                    Err(e) => break Some(super::errors::stream_error_reason(e)),
                },
            }
        };
        self.finish(reason);
    }

    /// Nothing watches and nothing waits: the stream can close.
    fn is_idle(&self) -> bool {
        self.watchers.is_empty() && self.in_flight.is_none() && self.queued.is_empty()
    }

    async fn create(
        &mut self,
        key: Vec<u8>,
        options: WatchOptions,
        reply: Reply,
    ) -> Result<(), String> {
        if self.in_flight.is_some() {
            self.queued.push_back((key, options, reply));
            return Ok(());
        }
        match self.sender.watch(key, Some(options)).await {
            Ok(()) => {
                self.in_flight = Some(reply);
                Ok(())
            }
            Err(e) => {
                let reason = e.to_string();
                let _ = reply.send(Err(Refused::Failed(e)));
                Err(reason)
            }
        }
    }

    /// Hands a response to its watcher, or completes the create in flight.
    async fn route(&mut self, response: WatchResponse) -> Result<(), String> {
        if response.created() {
            let Some(reply) = self.in_flight.take() else {
                tracing::warn!(
                    watch_id = response.watch_id(),
                    "etcd created a watch nobody asked for"
                );
                return Ok(());
            };
            let id = response.watch_id();
            let canceled = response.canceled();
            let (tx, rx) = mpsc::unbounded_channel();
            let subscription = MuxWatcher {
                created: response,
                responses: rx,
                cancel: self.commands_tx.upgrade().map(|commands| (id, commands)),
            };
            if !canceled {
                self.watchers.insert(id, tx);
            }
            if let Err(Ok(unwanted)) = reply.send(Ok(subscription)) {
                // The caller gave up waiting; dropping it cancels the watcher.
                drop(unwanted);
            }
            if let Some((key, options, reply)) = self.queued.pop_front() {
                self.create(key, options, reply).await?;
            }
            return Ok(());
        }
        let id = response.watch_id();
        let canceled = response.canceled();
        let Some(watcher) = self.watchers.get(&id) else {
            // Cancelled by us, answers still on the wire; or a stream-wide progress answer.
            return Ok(());
        };
        if watcher.send(Item::Response(Box::new(response))).is_err() || canceled {
            self.watchers.remove(&id);
            if !canceled {
                let _ = self.sender.cancel(id).await;
            }
        }
        Ok(())
    }

    /// Ends the stream: every watcher and every waiting create learns why.
    fn finish(mut self, reason: Option<String>) {
        self.streams.fetch_sub(1, Ordering::Relaxed);
        self.commands.close();
        let refusal = |reason: &Option<String>| match reason {
            Some(reason) => Refused::Failed(etcd_client::Error::WatchError(reason.clone())),
            None => Refused::Idle,
        };
        if let Some(reply) = self.in_flight.take() {
            let _ = reply.send(Err(refusal(&reason)));
        }
        for (_, _, reply) in self.queued.drain(..) {
            let _ = reply.send(Err(refusal(&reason)));
        }
        // Creates sent after the stream decided to end.
        while let Ok(command) = self.commands.try_recv() {
            if let Command::Create { reply, .. } = command {
                let _ = reply.send(Err(refusal(&reason)));
            }
        }
        let reason = reason.unwrap_or_else(|| String::from("the watch stream closed"));
        for (_, watcher) in self.watchers.drain() {
            let _ = watcher.send(Item::Broken(reason.clone()));
        }
    }
}
