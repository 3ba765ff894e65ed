//! The broker-wide memory budget (`memory_limit`): payload bytes held in session queues, in the
//! retained store and in connections' outboxes, summed over every shard.
//!
//! One [`MemoryBudget`] is shared by all shards: an atomic counter, touched only when a limit is
//! set (with two shards writing it for every message, its cache line moves between cores: tens
//! of nanoseconds a message that a broker without `memory_limit` does not pay; such a broker's
//! `amqtt_memory_used_bytes` comes from the shards' once-a-second sums instead,
//! [`crate::broker::SessionGauges::memory_bytes`]). Its [`Pressure`] tells the core and the
//! runtime what to do:
//! - below 3/4 of the limit, nothing;
//! - from 3/4 (`DropQoS0`), QoS 0 messages for subscribers that are behind are dropped (counted);
//! - from 7/8 (`PausePublishers`), the runtime stops reading a connection when it brings a PUBLISH,
//!   until the level is back under 7/8 or 50 ms have passed (TCP back-pressure slows publishers;
//!   acknowledgements and subscribers' traffic still flow, so queues drain; the cap keeps
//!   publishers moving when the memory is held by offline sessions that will not drain);
//! - at the limit (`Full`), QoS 1/2 messages that would be queued are dropped (counted): the last
//!   eighth absorbs what was already read, and the budget is never exceeded by queued messages.
//!
//! Retained updates are always applied (every shard must keep the same store) and count towards
//! the budget; they are slowed by the same pause. This module holds no MQTT logic and does no I/O.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// How close the broker is to its `memory_limit` (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Pressure {
    Normal,
    DropQoS0,
    PausePublishers,
    Full,
}

/// Payload bytes in use against an optional limit, shared by every shard.
#[derive(Debug, Default)]
pub struct MemoryBudget {
    /// Whether bytes are counted: fixed at start (a budget made without a limit has counted
    /// nothing, so a limit cannot be set on it later).
    counting: bool,
    /// The limit while `counting`; a reload may change it ([`MemoryBudget::set_limit`]).
    limit: AtomicUsize,
    used: AtomicUsize,
    /// Times a connection's reading was paused because of the budget.
    pauses: AtomicU64,
}

impl MemoryBudget {
    /// A budget that only counts.
    pub fn unlimited() -> Arc<MemoryBudget> {
        Arc::new(MemoryBudget::default())
    }

    pub fn new(limit: Option<usize>) -> Arc<MemoryBudget> {
        Arc::new(MemoryBudget {
            counting: limit.is_some(),
            limit: AtomicUsize::new(limit.unwrap_or(0)),
            ..MemoryBudget::default()
        })
    }

    pub fn limit(&self) -> Option<usize> {
        self.counting.then(|| self.limit.load(Ordering::Relaxed))
    }

    /// A new limit (a configuration reload): the pressure follows at once. `false`, and nothing
    /// changed, for a budget made without a limit (it never counted).
    pub fn set_limit(&self, limit: usize) -> bool {
        if self.counting {
            self.limit.store(limit, Ordering::Relaxed);
        }
        self.counting
    }

    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    pub fn add(&self, bytes: usize) {
        if bytes > 0 && self.counting {
            self.used.fetch_add(bytes, Ordering::Relaxed);
        }
    }

    pub fn sub(&self, bytes: usize) {
        if bytes > 0 && self.counting {
            // Never below zero, whatever the order of adds and subs across shards.
            let _ = self
                .used
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                    Some(u.saturating_sub(bytes))
                });
        }
    }

    pub fn pressure(&self) -> Pressure {
        let Some(limit) = self.limit() else {
            return Pressure::Normal;
        };
        let used = self.used();
        if used >= limit {
            Pressure::Full
        } else if used >= limit - limit / 8 {
            Pressure::PausePublishers
        } else if used >= limit - limit / 4 {
            Pressure::DropQoS0
        } else {
            Pressure::Normal
        }
    }

    /// Whether `bytes` more fit under the limit.
    pub fn fits(&self, bytes: usize) -> bool {
        self.limit()
            .is_none_or(|limit| self.used().saturating_add(bytes) <= limit)
    }

    /// Counts one pause of a publisher's reading.
    pub fn note_pause(&self) {
        self.pauses.fetch_add(1, Ordering::Relaxed);
    }

    pub fn pauses(&self) -> u64 {
        self.pauses.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pressure_rises_with_use() {
        let b = MemoryBudget::new(Some(800));
        assert_eq!(b.pressure(), Pressure::Normal);
        b.add(600);
        assert_eq!(b.pressure(), Pressure::DropQoS0);
        b.add(100);
        assert_eq!(b.pressure(), Pressure::PausePublishers);
        assert!(b.fits(100));
        assert!(!b.fits(101));
        b.add(100);
        assert_eq!(b.pressure(), Pressure::Full);
        b.sub(10_000);
        assert_eq!(b.used(), 0);
        let free = MemoryBudget::unlimited();
        free.add(1 << 40);
        assert_eq!(free.pressure(), Pressure::Normal);
        assert_eq!(free.used(), 0, "nothing is counted without a limit");
        assert!(
            !free.set_limit(10),
            "a budget that never counted takes no limit"
        );
        assert_eq!(free.limit(), None);
        // A reload lowers the limit: the pressure follows at once.
        b.add(500);
        assert_eq!(b.pressure(), Pressure::Normal);
        assert!(b.set_limit(500));
        assert_eq!(b.pressure(), Pressure::Full);
    }
}
