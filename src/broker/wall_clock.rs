//! The core's clock and the wall clock: what journaled times are (milliseconds since the Unix
//! epoch, so that offline stamps and expiry deadlines keep counting across restarts), from the
//! anchor the runtime gives ([`BrokerCore::set_wall_clock`], `journal.rs`).
//!
//! Must not: read a clock (times are passed in) or journal anything.

use std::time::{Duration, Instant};

use super::{BrokerCore, Message};

impl BrokerCore {
    /// Wall-clock milliseconds now (for offline stamps); 0 with persistence off.
    pub(super) fn unix_ms_now(&self) -> u64 {
        self.journal
            .as_deref()
            .map_or(0, |journal| journal.unix_ms(self.clock))
    }

    /// The wall-clock deadline (ms since the Unix epoch) of `message` reaching this shard now,
    /// from its Message Expiry Interval; `None` without one.
    pub(super) fn unix_deadline(&self, message: &Message) -> Option<u64> {
        let interval = super::copy_props::interval(message)?;
        let ms = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX);
        Some(self.unix_ms_now().saturating_add(ms))
    }

    /// The wall-clock time (ms since the Unix epoch) of `at` on the core's clock.
    pub(super) fn unix_ms_at(&self, at: Instant) -> u64 {
        let unix_now = self.unix_ms_now();
        let now = self.clock.unwrap_or(at);
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        if at >= now {
            unix_now.saturating_add(ms(at - now))
        } else {
            unix_now.saturating_sub(ms(now - at))
        }
    }
}
