//! Watches: one etcd watcher per store watch, its responses split into one revision per item.

use std::collections::VecDeque;
use std::sync::Arc;

use etcd_client::WatchOptions;

use super::convert::from_kv_ref;
use super::errors::{Request, watch_canceled};
use super::{EtcdStore, mux};
use crate::error::{Error, Result};
use crate::store::{Event, EventKind, KeyRange, WatchResponse, WatchStream};

impl EtcdStore {
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
}

/// A store watch over one etcd watch stream (see the module docs for what it promises).
struct WatchState {
    /// Owned here so the etcd watcher lives exactly as long as the coord stream.
    subscription: mux::MuxWatcher,
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
                Some(mux::Item::Response(response)) => self.absorb(*response),
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
