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
//! - a session that stays behind for `Settings::stall_after` is *stalled*: it no longer counts,
//!   so one subscriber that stops reading holds publishers for that long at most; its queue keeps
//!   its limits and what does not fit is dropped and counted, as before, until it catches up;
//! - an offline session never counts (its queue keeps its limits, drops counted).
//!
//! The core decides; it never waits. Waiting, waking the held publishers of every shard, and the
//! bound on one hold are the runtime's (`server/read_loop.rs`). No clock: time comes as `now`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Action, BrokerCore, ConnId, SessionKey};

/// How long a session may stay behind before it is marked stalled (`Settings::stall_after`).
pub const STALL_AFTER: Duration = Duration::from_secs(1);

/// Sessions behind and publishers held, on every shard; one for the whole broker (shared through
/// an `Arc`, like the memory budget).
#[derive(Debug, Default)]
pub struct FlowGate {
    /// Online sessions over the high-water mark and not stalled.
    behind: AtomicUsize,
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

    /// Publishers held now, over every shard.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// The runtime starts holding a publisher; ended when the returned guard is dropped.
    pub fn hold(self: &Arc<FlowGate>) -> HeldPublisher {
        self.held.fetch_add(1, Ordering::Relaxed);
        HeldPublisher(self.clone())
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

/// A session of this shard that is behind, since when (`None` until the core sees a clock), and
/// whether it stalled (then it no longer counts in the gate).
#[derive(Debug, Clone, Copy)]
pub(super) struct Behind {
    since: Option<Instant>,
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
                stalled: false,
            },
        );
        self.settings.flow.enter();
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

    /// Marks the sessions behind for `stall_after` or longer as stalled (from `handle_tick`).
    pub(super) fn stall_slow_subscribers(&mut self, now: Instant) {
        let stall_after = self.settings.stall_after;
        let mut stalled = 0;
        for (key, behind) in self.behind.iter_mut() {
            let since = *behind.since.get_or_insert(now);
            if behind.stalled || now.saturating_duration_since(since) < stall_after {
                continue;
            }
            behind.stalled = true;
            stalled += 1;
            if let Some(session) = self.sessions.get(*key) {
                log::debug!(
                    "shard {}: {} has been behind for {stall_after:?}: stalled, no longer holds \
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

    /// Whether a QoS 1/2 PUBLISH from `conn` is held now: some session is behind, and it is not
    /// this client's own.
    pub fn holds_publisher(&self, conn: ConnId) -> bool {
        if self.settings.flow.behind() == 0 {
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
