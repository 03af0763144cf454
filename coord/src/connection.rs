//! Connection state: whether what a `Coord` holds and sees is current, derived from what its
//! store calls, watches and leases already tell (no polling).
//!
//! # What it promises
//!
//! [`Coord::state`](crate::Coord::state) is a `tokio::sync::watch::Receiver` of
//! [`ConnectionState`]:
//!
//! - **`Connected`** from the start, while nothing has failed.
//! - **`Suspended { since }`** as soon as the store is seen to be unreachable: a request fails
//!   to reach it, or the shared watch or keep-alive stream breaks. A request that is merely
//!   slow (one [`Error::Timeout`](crate::Error::Timeout)) does not suspend: a partition is
//!   noticed by the broken stream (HTTP/2 keep-alive), not by one late answer. Leases may
//!   still be alive: their keep-alive retries until each lease's own deadline.
//! - **`Lost`** when a lease of this `Coord` is gone: it was not renewed before its TTL ran
//!   out, or the store no longer knows it (revoked by an operator, expired during a pause).
//!   Every lock, ID, leadership and registration on that lease is gone: each holder also
//!   learns it from its own `lost()`.
//! - **`Reconnected`** at the first answer of the store after `Suspended` or `Lost`; it stays
//!   until the next suspension.
//!
//! Transitions happen in that order (`Suspended` → `Lost` → `Reconnected`, or `Suspended` →
//! `Reconnected`), each at most once per outage; a receiver that looks rarely sees the latest
//! state and may skip one between (as any `watch` receiver does), so a holder that must know
//! of every loss waits on its guard's `lost()`.
//!
//! What each state means for each module, after Curator's advice ("SUSPENDED: assume you may
//! have lost the lock"):
//!
//! | module | `Suspended` | `Lost` | `Reconnected` |
//! |---|---|---|---|
//! | `Live<T>` | value kept, may be behind (`staleness()`) | unaffected | relisted, current again |
//! | locks, leadership | assume you may have lost it: stop acting on it until it is confirmed, or fence with the token | gone (`lost()` fired) | take it again if you still need it |
//! | instance IDs | the ID may be taken over if the outage passes the TTL | gone: stop using the ID | allocate again |
//! | registry | your registration may expire; the discovery cache may be behind | registration re-made by the registry once it can | re-registered, cache relisted |
//! | config center | calls fail with `Unavailable` (the read cache is not used while its watch is broken, so no read answers stale) | unaffected | normal |

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use tokio::sync::watch;

use crate::sync::lock;

/// Whether a `Coord` is connected and its leases held; see the [module docs](self).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectionState {
    /// Connected; nothing has failed since the `Coord` was made.
    Connected,
    /// The store stopped answering at `since`: values may be behind, leases may expire.
    Suspended {
        /// When the store was first seen unreachable.
        since: Instant,
    },
    /// A lease of this `Coord` is gone, and with it the locks, IDs, leadership and
    /// registrations on it.
    Lost,
    /// The store answers again after a suspension or a loss.
    Reconnected,
}

impl ConnectionState {
    /// True for `Connected` and `Reconnected`: the store answers and no lease is known lost.
    pub fn is_connected(&self) -> bool {
        matches!(
            self,
            ConnectionState::Connected | ConnectionState::Reconnected
        )
    }

    /// The state's name, as in the `coord_connection_state_changes_total` metric.
    pub fn name(&self) -> &'static str {
        match self {
            ConnectionState::Connected => "connected",
            ConnectionState::Suspended { .. } => "suspended",
            ConnectionState::Lost => "lost",
            ConnectionState::Reconnected => "reconnected",
        }
    }
}

/// One connection's health as its calls see it, shared by every `Store` handle on it: the
/// hot path is one relaxed load per answer; only a change takes the lock and tells each
/// handle's [`StateCell`].
///
/// An answer only counts for what happened before its call began: a reply that was already on
/// its way when an outage was noticed (a watch event buffered in another watcher's channel, a
/// unary call that left before the break) does not prove the store is back, and a failure of a
/// call made before the store came back does not prove it is gone again. Each call takes a
/// [`ticket`](Self::ticket) (the link's epoch, bumped at every change) when it starts, and the
/// link weighs its answer by it, so one outage is one `Suspended` and one `Reconnected`.
#[derive(Debug, Default)]
pub(crate) struct Link {
    /// True from a failure until the next answer.
    down: AtomicBool,
    /// True from a lease loss until the next answer (the link may look fine meanwhile).
    awaited: AtomicBool,
    /// True while a probe asks the store whether it answers (see `Store`'s probe).
    probing: AtomicBool,
    /// Bumped at every change: down, up, or a lease lost.
    epoch: AtomicU64,
    /// The epoch at which the link last came up (0: it has been up from the start).
    up_at: AtomicU64,
    cells: Mutex<Vec<Weak<StateCell>>>,
}

/// When a call began, as the link counts time (see [`Link::ticket`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Ticket(u64);

impl Link {
    /// Taken when a call starts, and handed back with its answer.
    pub fn ticket(&self) -> Ticket {
        Ticket(self.epoch.load(Ordering::Acquire))
    }

    /// The store answered a call that began at `ticket`.
    pub fn answered(&self, ticket: Ticket) {
        if self.needs_answer() {
            self.change(false, ticket);
        }
    }

    /// The store could not be reached by a call that began at `ticket`.
    pub fn unreachable(&self, ticket: Ticket) {
        if !self.down.load(Ordering::Relaxed) {
            self.change(true, ticket);
        }
    }

    /// True while an answer is awaited: the store was unreachable, or a lease was lost.
    pub fn needs_answer(&self) -> bool {
        self.down.load(Ordering::Relaxed) || self.awaited.load(Ordering::Relaxed)
    }

    /// True while some handle on this connection is left to tell.
    pub fn has_cells(&self) -> bool {
        lock(&self.cells).iter().any(|cell| cell.strong_count() > 0)
    }

    /// True if the caller should start the probe: an answer is awaited and no probe runs.
    pub fn start_probe(&self) -> bool {
        self.needs_answer() && !self.probing.swap(true, Ordering::AcqRel)
    }

    /// The probe stops; true if it must go on after all (an answer became awaited again
    /// while it was stopping, and no other probe took over).
    pub fn stop_probe(&self) -> bool {
        self.probing.store(false, Ordering::Release);
        self.start_probe()
    }

    /// Registers a handle's cell to be told of every change.
    pub fn attach(&self, cell: &Arc<StateCell>) {
        let mut cells = lock(&self.cells);
        cells.retain(|cell| cell.strong_count() > 0);
        cells.push(Arc::downgrade(cell));
    }

    /// Makes the next answer to a call made from now on tell every cell the store answers:
    /// how a cell that lost a lease while the link looked fine learns it is reconnected.
    fn await_answer(&self) {
        let _cells = lock(&self.cells);
        self.awaited.store(true, Ordering::Relaxed);
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    fn change(&self, down: bool, ticket: Ticket) {
        // Under the lock, so two callers changing it at once tell every cell in one order,
        // and the epoch cannot move between the ticket's check and the change.
        let cells = lock(&self.cells);
        let epoch = self.epoch.load(Ordering::Acquire);
        let changed = if down {
            // A call made before the link last came up failed: that is the old outage.
            ticket.0 >= self.up_at.load(Ordering::Relaxed)
                && !self.down.swap(true, Ordering::Relaxed)
        } else {
            // A call made before the outage (or the loss) was noticed answered: old news.
            ticket.0 == epoch && {
                let was_down = self.down.swap(false, Ordering::Relaxed);
                let awaited = self.awaited.swap(false, Ordering::Relaxed);
                was_down || awaited
            }
        };
        if changed {
            self.epoch.store(epoch + 1, Ordering::Release);
            if !down {
                self.up_at.store(epoch + 1, Ordering::Relaxed);
            }
            for cell in cells.iter().filter_map(Weak::upgrade) {
                cell.link_changed(down);
            }
        }
    }
}

/// The state of one `Store` handle (so of one `Coord`): the link's state, and the losses of
/// its own leases.
#[derive(Debug)]
pub(crate) struct StateCell {
    tx: watch::Sender<ConnectionState>,
}

impl StateCell {
    /// A cell on `link`, `Connected`.
    pub fn new(link: &Arc<Link>) -> Arc<Self> {
        let cell = Arc::new(StateCell {
            tx: watch::Sender::new(ConnectionState::Connected),
        });
        link.attach(&cell);
        cell
    }

    /// A receiver of every later state, starting at the current one.
    pub fn subscribe(&self) -> watch::Receiver<ConnectionState> {
        self.tx.subscribe()
    }

    /// The state now.
    #[cfg(test)]
    pub fn current(&self) -> ConnectionState {
        *self.tx.borrow()
    }

    /// A lease of this handle is gone.
    pub fn lease_lost(&self, link: &Link) {
        let changed = self.tx.send_if_modified(|state| {
            let was = std::mem::replace(state, ConnectionState::Lost);
            // Counted before the receivers are woken: whoever sees the state sees its metric.
            let changed = was != ConnectionState::Lost;
            if changed {
                transition(ConnectionState::Lost);
            }
            changed
        });
        if changed {
            link.await_answer();
        }
    }

    fn link_changed(&self, down: bool) {
        self.tx.send_if_modified(|state| {
            let next = match (*state, down) {
                (ConnectionState::Connected | ConnectionState::Reconnected, true) => {
                    ConnectionState::Suspended {
                        since: Instant::now(),
                    }
                }
                (ConnectionState::Suspended { .. } | ConnectionState::Lost, false) => {
                    ConnectionState::Reconnected
                }
                _ => return false,
            };
            *state = next;
            // Counted before the receivers are woken: whoever sees the state sees its metric.
            transition(next);
            true
        });
    }
}

fn transition(to: ConnectionState) {
    match to {
        ConnectionState::Suspended { .. } => {
            tracing::warn!("connection suspended: the store does not answer");
        }
        ConnectionState::Lost => tracing::warn!("a lease of this coord is lost"),
        ConnectionState::Reconnected => tracing::info!("reconnected: the store answers again"),
        ConnectionState::Connected => {}
    }
    crate::metrics::connection_state(to.name());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(rx: &mut watch::Receiver<ConnectionState>) -> Option<&'static str> {
        rx.has_changed()
            .unwrap_or(false)
            .then(|| rx.borrow_and_update().name())
    }

    #[test]
    fn an_outage_suspends_once_and_an_answer_reconnects() {
        let link = Arc::new(Link::default());
        let cell = StateCell::new(&link);
        let mut rx = cell.subscribe();
        link.answered(link.ticket());
        assert_eq!(
            seen(&mut rx),
            None,
            "answers while connected change nothing"
        );
        link.unreachable(link.ticket());
        link.unreachable(link.ticket());
        assert_eq!(seen(&mut rx), Some("suspended"));
        assert_eq!(seen(&mut rx), None, "a second failure is the same outage");
        link.answered(link.ticket());
        assert_eq!(seen(&mut rx), Some("reconnected"));
        link.answered(link.ticket());
        assert_eq!(seen(&mut rx), None);
        assert!(cell.current().is_connected());
    }

    #[test]
    fn a_lost_lease_is_lost_until_the_store_answers_even_if_it_never_failed() {
        let link = Arc::new(Link::default());
        let cell = StateCell::new(&link);
        let other = StateCell::new(&link);
        let mut rx = cell.subscribe();
        let mut other_rx = other.subscribe();
        // A pause longer than the TTL: no call failed, the lease is gone all the same.
        cell.lease_lost(&link);
        assert_eq!(seen(&mut rx), Some("lost"));
        // Another handle on the same connection lost nothing.
        assert_eq!(seen(&mut other_rx), None);
        link.answered(link.ticket());
        assert_eq!(seen(&mut rx), Some("reconnected"));
        assert_eq!(
            seen(&mut other_rx),
            None,
            "an answer changes nothing for the other"
        );
        cell.lease_lost(&link);
        assert_eq!(seen(&mut rx), Some("lost"));
        link.unreachable(link.ticket());
        assert_eq!(seen(&mut rx), None, "lost stays lost through the outage");
        assert_eq!(
            seen(&mut other_rx),
            Some("suspended"),
            "the other sees the outage"
        );
        link.answered(link.ticket());
        assert_eq!(seen(&mut rx), Some("reconnected"));
        assert_eq!(seen(&mut other_rx), Some("reconnected"));
    }

    #[test]
    fn an_outage_then_a_loss_arrive_in_order() {
        let link = Arc::new(Link::default());
        let cell = StateCell::new(&link);
        let mut rx = cell.subscribe();
        link.unreachable(link.ticket());
        assert_eq!(seen(&mut rx), Some("suspended"));
        cell.lease_lost(&link);
        assert_eq!(seen(&mut rx), Some("lost"));
        link.answered(link.ticket());
        assert_eq!(seen(&mut rx), Some("reconnected"));
    }

    #[test]
    fn answers_to_calls_made_before_a_change_do_not_flap_the_state() {
        let link = Arc::new(Link::default());
        let cell = StateCell::new(&link);
        let mut rx = cell.subscribe();
        // Two watchers' streams opened while connected; the outage reaches one first.
        let before_outage = link.ticket();
        link.unreachable(before_outage);
        assert_eq!(seen(&mut rx), Some("suspended"));
        // The other still had an event buffered from before: the store is not back.
        link.answered(before_outage);
        assert_eq!(seen(&mut rx), None, "an old answer does not reconnect");
        // A call made during the outage is answered: it is back.
        let during = link.ticket();
        link.answered(during);
        assert_eq!(seen(&mut rx), Some("reconnected"));
        // The outage's late failures (calls made before the store came back) are old news.
        link.unreachable(during);
        link.unreachable(before_outage);
        assert_eq!(seen(&mut rx), None, "an old failure does not suspend");
        link.unreachable(link.ticket());
        assert_eq!(seen(&mut rx), Some("suspended"), "a new one does");
    }

    #[test]
    fn after_a_loss_only_a_later_call_reconnects() {
        let link = Arc::new(Link::default());
        let cell = StateCell::new(&link);
        let mut rx = cell.subscribe();
        let before_loss = link.ticket();
        cell.lease_lost(&link);
        assert_eq!(seen(&mut rx), Some("lost"));
        link.answered(before_loss);
        assert_eq!(seen(&mut rx), None);
        link.answered(link.ticket());
        assert_eq!(seen(&mut rx), Some("reconnected"));
    }
}
