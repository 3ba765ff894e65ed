//! Flow control toward publishers: no acknowledged QoS 1/2 message is dropped for a subscriber
//! that keeps up, and a subscriber that stalls is still isolated.
//!
//! The policy (also in `config/default.yaml`):
//! - an online session whose queue reaches half of `max_queued_messages` (or of
//!   `max_queued_bytes`) is *behind*: it counts in the [`FlowGate`] shared by every shard, until
//!   its queue is back under a quarter of the limits;
//! - while any session is behind, a client's QoS 1/2 PUBLISH is *held*: it stays unread at the
//!   front of its connection's buffer, not acknowledged, the runtime reads nothing more from that
//!   connection (TCP slows the publisher), and the core is called again once no session is
//!   behind (the runtime is told at once: [`Action::ResumePublishers`]) or after a bounded wait;
//!   the PUBLISH is handled then, whatever the count. QoS 0 PUBLISHes are never held, nor those
//!   of a client whose own session is behind (its acknowledgements may be queued behind them);
//! - publishers are held too while more QoS 1/2 publishes are in transit between shards (routed
//!   to a shard that has not handled them yet) than `max_queued_messages`: a shard cannot run
//!   ahead of the subscribers' shards by more than one queue;
//! - while it is behind (and not stalled), its queue may hold [`BEHIND_SLACK`] times its limits:
//!   what publishers on other shards sent before they saw it behind still fits;
//! - a session behind that acknowledges nothing for `Settings::stall_after` (1 s), or that stays
//!   behind for [`BEHIND_AT_MOST`] times that altogether, is *stalled*: it no longer counts, so a
//!   subscriber that stops reading holds publishers for about a second, and a slow one for ten
//!   seconds at most; its queue keeps its limits and what does not fit is dropped and counted, as
//!   before, until it catches up (a subscriber that keeps acknowledging is not stalled for
//!   draining a long queue slowly: measured, a paho subscriber on a loaded machine took more
//!   than a second to drain what one raw publisher had sent before it was held);
//! - an offline session never counts (its queue keeps its limits, drops counted).
//!
//! The core decides; it never waits. Waiting, waking the held publishers of every shard, and the
//! bound on one hold are the runtime's (`server/read_loop.rs`). No clock: time comes as `now`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Action, BrokerCore, ConnId, SessionKey};

/// How long a session behind may acknowledge nothing before it is marked stalled
/// (`Settings::stall_after`).
pub const STALL_AFTER: Duration = Duration::from_secs(1);

/// How many times `stall_after` a session may stay behind altogether, acknowledging or not.
pub const BEHIND_AT_MOST: u32 = 10;

/// How many times its limits the queue of a session that is behind (not stalled) may hold.
///
/// The hold takes effect on the next PUBLISH each publisher sends, on every shard, once the
/// subscriber's shard has counted it behind; what the other shards had already routed by then
/// arrives anyway. That is bounded: publishers are held too while more QoS 1/2 publishes are in
/// transit between shards than one queue holds. So a queue at its high-water mark (half its
/// limits) takes what is in transit (its limits) within twice its limits. Dropping those would
/// lose acknowledged messages of a subscriber that keeps up (measured before the transit bound:
/// one raw publisher on another shard overshot a queue of 1,000 by ~2,700 messages, one 64 KiB
/// read).
pub const BEHIND_SLACK: usize = 2;

/// Sessions behind and publishers held, on every shard; one for the whole broker (shared through
/// an `Arc`, like the memory budget).
#[derive(Debug, Default)]
pub struct FlowGate {
    /// Online sessions over the high-water mark and not stalled.
    behind: AtomicUsize,
    /// QoS 1/2 publishes routed to another shard that it has not handled yet.
    in_transit: AtomicUsize,
    /// Publishers whose reading the runtime holds now (so a release is announced to the other
    /// shards only when someone waits there).
    held: AtomicUsize,
}

impl FlowGate {
    pub fn new() -> Arc<FlowGate> {
        Arc::new(FlowGate::default())
    }

    /// Sessions behind now, over every shard.
    pub fn behind(&self) -> usize {
        self.behind.load(Ordering::Relaxed)
    }

    /// QoS 1/2 publishes between shards now.
    pub fn in_transit(&self) -> usize {
        self.in_transit.load(Ordering::Relaxed)
    }

    /// Publishers held now, over every shard.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// The runtime starts holding a publisher; ended when the returned guard is dropped.
    pub fn hold(self: &Arc<FlowGate>) -> HeldPublisher {
        self.held.fetch_add(1, Ordering::Relaxed);
        HeldPublisher(self.clone())
    }

    /// `n` QoS 1/2 publishes sent to another shard have been handled there; returns how many were
    /// in transit before.
    fn arrived(&self, n: usize) -> usize {
        self.in_transit
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                Some(t.saturating_sub(n))
            })
            .unwrap_or(0)
    }

    fn enter(&self) {
        self.behind.fetch_add(1, Ordering::Relaxed);
    }

    /// One session fewer behind; `true` when it was the last one.
    fn leave(&self) -> bool {
        let before = self
            .behind
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_sub(1))
            });
        before.unwrap_or(0) <= 1
    }
}

/// A publisher held by the runtime (see [`FlowGate::hold`]).
#[derive(Debug)]
pub struct HeldPublisher(Arc<FlowGate>);

impl Drop for HeldPublisher {
    fn drop(&mut self) {
        self.0.held.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A session of this shard that is behind: since when, and when it last acknowledged something
/// (`None` until the core sees a clock), and whether it stalled (then it no longer counts in the
/// gate).
#[derive(Debug, Clone, Copy)]
pub(super) struct Behind {
    since: Option<Instant>,
    acked: Option<Instant>,
    stalled: bool,
}

/// This shard's sessions that are behind or stalled.
pub(super) type BehindSessions = HashMap<SessionKey, Behind, foldhash::fast::FixedState>;

impl BrokerCore {
    /// A message was queued for session `key`: it is behind from the high-water mark on.
    pub(super) fn queue_grew(&mut self, key: SessionKey) {
        let Some(session) = self.sessions.get(key) else {
            return;
        };
        let limits = &self.queue_limits;
        let messages = session.queued_len() - session.queued_retained();
        let over = messages * 2 >= limits.max_messages
            || limits
                .max_bytes
                .is_some_and(|max| session.queued_bytes() * 2 >= max);
        if !over || !session.is_online() || self.behind.contains_key(&key) {
            return;
        }
        self.behind.insert(
            key,
            Behind {
                since: self.clock,
                acked: self.clock,
                stalled: false,
            },
        );
        self.settings.flow.enter();
    }

    /// How many times its limits session `key`'s queue may hold now: [`BEHIND_SLACK`] while it
    /// is behind and not stalled, 1 otherwise.
    pub(super) fn queue_factor(behind: &BehindSessions, key: SessionKey) -> usize {
        if behind.is_empty() {
            return 1;
        }
        match behind.get(&key) {
            Some(b) if !b.stalled => BEHIND_SLACK,
            _ => 1,
        }
    }

    /// Session `key` acknowledged a message (PUBACK, PUBCOMP): if it is behind, it is not
    /// stalled yet.
    pub(super) fn acknowledged(&mut self, key: SessionKey) {
        if let Some(behind) = self.behind.get_mut(&key) {
            behind.acked = self.clock;
        }
    }

    /// Session `key`'s queue shrank: under the low-water mark, it has caught up.
    pub(super) fn queue_shrank(&mut self, key: SessionKey) {
        if self.behind.is_empty() || !self.behind.contains_key(&key) {
            return;
        }
        let Some(session) = self.sessions.get(key) else {
            return self.caught_up(key);
        };
        let limits = &self.queue_limits;
        let messages = session.queued_len() - session.queued_retained();
        let under = messages * 4 <= limits.max_messages
            && limits
                .max_bytes
                .is_none_or(|max| session.queued_bytes() * 4 <= max);
        if under {
            self.caught_up(key);
        }
    }

    /// Session `key` caught up, went offline or went away: it no longer counts.
    pub(super) fn caught_up(&mut self, key: SessionKey) {
        if let Some(behind) = self.behind.remove(&key) {
            if !behind.stalled {
                self.left_gate();
            }
        }
    }

    /// Marks as stalled the sessions behind that acknowledged nothing for `stall_after`, or that
    /// have been behind for [`BEHIND_AT_MOST`] times that (from `handle_tick`).
    pub(super) fn stall_slow_subscribers(&mut self, now: Instant) {
        let stall_after = self.settings.stall_after;
        let mut stalled = 0;
        for (key, behind) in self.behind.iter_mut() {
            let since = *behind.since.get_or_insert(now);
            let acked = *behind.acked.get_or_insert(now);
            let quiet = now.saturating_duration_since(acked) >= stall_after;
            let too_long = now.saturating_duration_since(since) >= stall_after * BEHIND_AT_MOST;
            if behind.stalled || !(quiet || too_long) {
                continue;
            }
            behind.stalled = true;
            stalled += 1;
            if let Some(session) = self.sessions.get(*key) {
                log::debug!(
                    "shard {}: {} is behind and acknowledged nothing for {stall_after:?} (or \
                     was behind for {BEHIND_AT_MOST} times that): stalled, no longer holds \
                     publishers (its queue drops what does not fit)",
                    self.shard,
                    session.client_id
                );
            }
        }
        self.stats.subscribers_stalled += stalled;
        for _ in 0..stalled {
            self.left_gate();
        }
    }

    /// One session of this shard left the gate: if it was the last one anywhere, held publishers
    /// may go on.
    fn left_gate(&mut self) {
        if self.settings.flow.leave() {
            self.actions.push(Action::ResumePublishers);
        }
    }

    /// A QoS 1/2 publish joins a batch for another shard.
    pub(super) fn sent_across(&self) {
        self.settings
            .flow
            .in_transit
            .fetch_add(1, Ordering::Relaxed);
    }

    /// `n` QoS 1/2 publishes from another shard's batch were handled here: when that brings the
    /// publishes in transit back to the limit, held publishers may go on.
    pub(super) fn arrived_across(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        let limit = self.transit_limit();
        let before = self.settings.flow.arrived(n);
        if before > limit && before - n.min(before) <= limit {
            self.actions.push(Action::ResumePublishers);
        }
    }

    /// QoS 1/2 publishes in transit between shards beyond which publishers are held: as many as
    /// one queue holds, so that what is in transit fits a subscriber's queue (with its slack).
    fn transit_limit(&self) -> usize {
        self.queue_limits.max_messages
    }

    /// Whether the gate may hold a QoS 1/2 PUBLISH now (cheap: two shared counters).
    pub(super) fn gate_closed(&self) -> bool {
        let flow = &self.settings.flow;
        flow.behind() > 0 || flow.in_transit() > self.transit_limit()
    }

    /// Whether a QoS 1/2 PUBLISH from `conn` is held now: more QoS 1/2 publishes are in transit
    /// between shards than [`transit_limit`](Self::transit_limit), or some session is behind and
    /// it is not this client's own.
    pub fn holds_publisher(&self, conn: ConnId) -> bool {
        let flow = &self.settings.flow;
        if flow.in_transit() > self.transit_limit() {
            return true;
        }
        if flow.behind() == 0 {
            return false;
        }
        let own = self.connections.get(&conn).map(|c| c.session);
        own.is_none_or(|key| self.behind.get(&key).is_none_or(|b| b.stalled))
    }

    /// Sessions of this shard behind now (stalled ones not counted).
    pub fn behind_count(&self) -> usize {
        self.behind.values().filter(|b| !b.stalled).count()
    }

    /// Sessions of this shard stalled now.
    pub fn stalled_count(&self) -> usize {
        self.behind.values().filter(|b| b.stalled).count()
    }
}
