//! `GET /api/rollout/events?prefix=`: server-sent events from two watches, the prefix's status
//! keys and its config keys.
//!
//! Events: `rollout` (data: every instance's status, as `GET /api/rollout`), sent first and
//! after each change of a status key; `config` (data: the revision) after a change of the
//! prefix's keys, so the page reloads its values and history; `error` (data: a generic
//! message; the details go to the log) when a read fails (the stream goes on). A burst of
//! changes costs one read: changes already waiting are taken together.
//!
//! Only a prefix the console serves has a stream (see [`super::routes::served`]). At most
//! [`StreamLimits::max`](super::StreamLimits) streams are open at once (each holds two
//! watches); one more is a 503. A stream with no event for
//! [`StreamLimits::idle`](super::StreamLimits) ends (the browser's `EventSource` reconnects
//! by itself), so a forgotten tab does not hold its slot forever. The watches and the slot
//! end when the page goes away (the stream is dropped).

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::{FutureExt, Stream, StreamExt};
use serde_json::Value;
use tokio::sync::OwnedSemaphorePermit;
use tracing::Instrument;

use super::error::{public_message, ApiError};
use super::routes::{served, status_json, PrefixQuery};
use super::Console;

/// What changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Topic {
    Rollout,
    Config(i64),
}

type Changes = Pin<Box<dyn Stream<Item = Topic> + Send>>;

struct Feed {
    console: Arc<Console>,
    prefix: String,
    changes: Changes,
    started: bool,
    idle: Duration,
    /// This stream's slot among the open streams, given back when the stream is dropped.
    _slot: OwnedSemaphorePermit,
}

/// The event stream of one page.
pub async fn rollout_events(
    State(console): State<Arc<Console>>,
    Query(query): Query<PrefixQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let prefix = served(&console.coord, &query.prefix).await?.prefix;
    let limits = console.stream_limits;
    // Taken before any watch opens: a refused stream costs etcd nothing.
    let slot = console.streams.clone().try_acquire_owned().map_err(|_| {
        ApiError::Busy(format!(
            "{} event streams are open, as many as this console serves: close a page or try again shortly",
            limits.max
        ))
    })?;
    let span = tracing::debug_span!("console.events", prefix = %prefix);
    let config = console.coord.config();
    let statuses = config
        .watch_prefix::<Value>(&format!("/coord/status{prefix}//"))
        .instrument(span.clone())
        .await?
        .map(|_| Topic::Rollout);
    // A value that does not decode is still a change the page should show.
    let values = config
        .watch_prefix::<Value>(&format!("{prefix}/"))
        .instrument(span)
        .await?
        .map(|event| match event {
            Ok(event) => Topic::Config(event.revision()),
            Err(_) => Topic::Config(0),
        });
    let feed = Feed {
        console,
        prefix,
        changes: Box::pin(futures::stream::select(statuses, values)),
        started: false,
        idle: limits.idle,
        _slot: slot,
    };
    let events = futures::stream::unfold(feed, next_events)
        .flat_map(|events| futures::stream::iter(events.into_iter().map(Ok)));
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

/// The events for the next change (the first time: the current rollout); `None` once the
/// watches end or nothing happened for the idle time.
async fn next_events(mut feed: Feed) -> Option<(Vec<Event>, Feed)> {
    let mut rollout = !feed.started;
    let mut config = None;
    if feed.started {
        let first = tokio::time::timeout(feed.idle, feed.changes.next())
            .await
            .ok()??;
        let mut note = |topic| match topic {
            Topic::Rollout => rollout = true,
            Topic::Config(revision) => config = Some(revision),
        };
        note(first);
        while let Some(Some(topic)) = feed.changes.next().now_or_never() {
            note(topic);
        }
    }
    feed.started = true;
    let mut events = Vec::new();
    if let Some(revision) = config {
        events.push(Event::default().event("config").data(revision.to_string()));
    }
    if rollout {
        let read = feed.console.coord.config().rollout(&feed.prefix).await;
        events.push(match read {
            Ok(statuses) => {
                let doc = Value::Array(statuses.iter().map(status_json).collect());
                Event::default().event("rollout").data(doc.to_string())
            }
            Err(e) => Event::default().event("error").data(public_message(&e)),
        });
    }
    Some((events, feed))
}
