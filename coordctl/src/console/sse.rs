//! `GET /api/rollout/events?prefix=`: server-sent events from two watches, the prefix's status
//! keys and its config keys.
//!
//! Events: `rollout` (data: every instance's status, as `GET /api/rollout`), sent first and
//! after each change of a status key; `config` (data: the revision) after a change of the
//! prefix's keys, so the page reloads its values and history; `error` (data: a message) when a
//! read fails (the stream goes on). A burst of changes costs one read: changes already waiting
//! are taken together. The watches end when the page goes away (the stream is dropped).

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::{FutureExt, Stream, StreamExt};
use serde_json::Value;
use tracing::Instrument;

use super::error::ApiError;
use super::routes::{status_json, PrefixQuery};
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
}

/// The event stream of one page.
pub async fn rollout_events(
    State(console): State<Arc<Console>>,
    Query(query): Query<PrefixQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let prefix = query.prefix.trim_end_matches('/').to_owned();
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
    };
    let events = futures::stream::unfold(feed, next_events)
        .flat_map(|events| futures::stream::iter(events.into_iter().map(Ok)));
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

/// The events for the next change (the first time: the current rollout); `None` once the
/// watches end.
async fn next_events(mut feed: Feed) -> Option<(Vec<Event>, Feed)> {
    let mut rollout = !feed.started;
    let mut config = None;
    if feed.started {
        let first = feed.changes.next().await?;
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
            Err(e) => Event::default().event("error").data(e.to_string()),
        });
    }
    Some((events, feed))
}
