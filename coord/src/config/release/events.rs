//! A typed stream of a prefix's release and proposal events, for notifications (a chat
//! message on each release, a webhook on each proposal).
//!
//! # What it promises
//!
//! - **From now on, in order per kind.** Events written after
//!   [`events`](ConfigCenter::events) returns: releases in the order they were committed,
//!   proposals in the order they were stored, decisions (approvals, rejections) in the order
//!   they were made. Each kind comes from a watch of its own, so across kinds order by the
//!   revision each carries ([`Release::revision`], [`Proposal::revision`]); an approval and
//!   its release share one. A proposal its proposer withdraws (deletes) makes no event.
//! - **Survives outages.** It rides on [`ResilientWatch`]: after a disconnect it resumes from
//!   its revision; if that history was compacted, the records and proposals changed meanwhile
//!   come again as events (at least once, never silently dropped).
//! - **Secrets redacted**, as in history.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures::{Stream, StreamExt};

use super::check_prefix;
use super::model::{Release, is_record_key, releases_of};
use super::proposal::{
    Decision, PROPOSALS_ROOT, Proposal, ProposalState, StoredProposal, decisions_of,
    parse_proposal_key,
};
use super::record::Record;
use crate::clock::now_ms;
use crate::config::center::ConfigCenter;
use crate::config::redact::Redaction;
use crate::error::Result;
use crate::store::{EventKind, KeyRange, KeyValue};
use crate::watch::{ResilientWatch, WatchConfig, WatchEvent};

/// What happened to a prefix's releases or proposals.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum ReleaseEvent {
    /// A release was committed (any kind: release, rollback, gray, promote, abort, an
    /// approved proposal, an external entry recorded).
    Released(Release),
    /// A proposal was stored.
    Proposed(Proposal),
    /// A proposal was approved (its release comes as [`Released`](Self::Released)).
    Approved(Proposal),
    /// A proposal was rejected.
    Rejected(Proposal),
}

/// The stream [`ConfigCenter::events`] returns; ends only when dropped (or on a watch error
/// that cannot be resumed, yielded first).
pub struct ReleaseEvents {
    inner: Pin<Box<dyn Stream<Item = Result<ReleaseEvent>> + Send>>,
}

impl std::fmt::Debug for ReleaseEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReleaseEvents").finish_non_exhaustive()
    }
}

impl Stream for ReleaseEvents {
    type Item = Result<ReleaseEvent>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

impl ConfigCenter {
    /// Release and proposal events of `prefix` from now on (see
    /// [`ReleaseEvent`]).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> coord::Result<()> {
    /// use std::collections::BTreeMap;
    /// use futures::StreamExt;
    /// use coord::config::ReleaseEvent;
    ///
    /// let coord = coord::Coord::in_memory();
    /// let mut events = coord.config().events("/config/app").await?;
    /// coord
    ///     .config()
    ///     .release_raw("/config/app", BTreeMap::from([("limit".to_owned(), 5.into())]))
    ///     .message("launch")
    ///     .commit()
    ///     .await?;
    /// match events.next().await.expect("an event")? {
    ///     ReleaseEvent::Released(release) => assert_eq!(release.message.as_deref(), Some("launch")),
    ///     other => panic!("{other:?}"),
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) for a bad prefix; the
    /// store's, from opening the watches.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a dropped call leaves no watch behind.
    pub async fn events(&self, prefix: &str) -> Result<ReleaseEvents> {
        let prefix = check_prefix(prefix)?;
        let records = ResilientWatch::from_now(
            self.store.clone(),
            KeyRange::prefix(releases_of(&prefix)),
            WatchConfig::default(),
        )
        .await?;
        let proposals = ResilientWatch::from_now(
            self.store.clone(),
            KeyRange::prefix(PROPOSALS_ROOT),
            WatchConfig::default(),
        )
        .await?;
        let decisions = ResilientWatch::from_now(
            self.store.clone(),
            KeyRange::prefix(decisions_of(&prefix)),
            WatchConfig::default(),
        )
        .await?;
        let of = prefix.clone();
        let proposals = proposals.into_stream().map(move |item| {
            item.map(|event| {
                puts(event)
                    .filter_map(|kv| {
                        let (writer, prefix, _) = parse_proposal_key(&kv.key)?;
                        (prefix == of).then(|| {
                            StoredProposal::decode(&kv).map(|stored| {
                                ReleaseEvent::Proposed(stored.public(
                                    (writer, kv.mod_revision),
                                    None,
                                    &Redaction::default(),
                                    now_ms(),
                                ))
                            })
                        })
                    })
                    .collect::<Vec<_>>()
            })
        });
        let decisions = decisions.into_stream().map(|item| {
            item.map(|event| {
                puts(event)
                    .map(|kv| {
                        Decision::decode(&kv).map(|decision| {
                            let public = decision.proposal.public(
                                (&decision.writer, decision.revision),
                                Some(&decision),
                                &Redaction::default(),
                                now_ms(),
                            );
                            match decision.state {
                                ProposalState::Approved { .. } => ReleaseEvent::Approved(public),
                                _ => ReleaseEvent::Rejected(public),
                            }
                        })
                    })
                    .collect::<Vec<_>>()
            })
        });
        let of = prefix.clone();
        let records = records.into_stream().map(move |item| {
            item.map(|event| {
                puts(event)
                    .filter(|kv| is_record_key(&of, &kv.key))
                    .map(|kv| {
                        Record::decode(&kv).map(|record| {
                            ReleaseEvent::Released(record.public(
                                kv.mod_revision,
                                &record.changes,
                                &Redaction::default(),
                            ))
                        })
                    })
                    .collect::<Vec<_>>()
            })
        });
        let proposals = futures::stream::select(proposals, decisions);
        let merged = futures::stream::select(records, proposals).flat_map(|batch| {
            let items: Vec<Result<ReleaseEvent>> = match batch {
                Ok(events) => events,
                Err(e) => vec![Err(e)],
            };
            futures::stream::iter(items)
        });
        Ok(ReleaseEvents {
            inner: Box::pin(merged),
        })
    }
}

/// The keys a watch item put (a relist's differences included).
fn puts(event: WatchEvent) -> impl Iterator<Item = KeyValue> {
    let events = match event {
        WatchEvent::Events { events, .. } | WatchEvent::Resync { events, .. } => events,
        WatchEvent::Init { kvs, .. } => {
            return kvs.into_iter().collect::<Vec<_>>().into_iter();
        }
        WatchEvent::Progress { .. } => Vec::new(),
    };
    events
        .into_iter()
        .filter(|e| e.kind == EventKind::Put)
        .map(|e| e.kv)
        .collect::<Vec<_>>()
        .into_iter()
}
