//! The counts the runtime reads from a shard's core for `$SYS` and Prometheus: connections,
//! sessions, subscriptions, retained, in-flight and queued messages, and the per-session gauges in
//! one pass. Read-only: nothing here changes the core or is called per message.

use super::{BrokerCore, SessionGauges};

impl BrokerCore {
    pub fn connection_count(&self) -> usize {
        self.connections.len()
    }

    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    pub fn online_session_count(&self) -> usize {
        self.sessions.iter().filter(|(_, s)| s.is_online()).count()
    }

    pub fn subscription_count(&self) -> usize {
        self.sessions
            .iter()
            .map(|(_, s)| s.subscriptions.len())
            .sum()
    }

    pub fn retained_count(&self) -> usize {
        self.retained.len()
    }

    pub fn inflight_count(&self) -> usize {
        self.sessions.iter().map(|(_, s)| s.inflight_len()).sum()
    }

    /// Messages waiting in session queues behind the in-flight windows (online and offline).
    pub fn queued_count(&self) -> usize {
        self.sessions.iter().map(|(_, s)| s.queued_len()).sum()
    }

    /// Of [`Self::queued_count`], the retained messages queued after a SUBACK (outside the limits).
    pub fn queued_retained_count(&self) -> usize {
        self.sessions.iter().map(|(_, s)| s.queued_retained()).sum()
    }

    /// The per-session gauges in one pass over the sessions, and one over the connections for
    /// their outboxes (for the once-a-second snapshot).
    pub fn session_gauges(&self) -> SessionGauges {
        let mut g = SessionGauges {
            sessions: self.sessions.len(),
            ..SessionGauges::default()
        };
        for (_, s) in &self.sessions {
            g.online += usize::from(s.is_online());
            g.subscriptions += s.subscriptions.len();
            g.inflight += s.inflight_len();
            g.inflight_in += s.incoming_qos2_len();
            g.queued += s.queued_len();
            g.memory_bytes += s.queued_bytes();
        }
        g.memory_bytes += self
            .connections
            .values()
            .map(|c| c.outbox.len())
            .sum::<usize>();
        if self.shard == 0 {
            g.memory_bytes += self.retained.payload_bytes();
        }
        g
    }

    /// Retained messages whose topic starts with `$` (the broker's own `$SYS` tree).
    pub fn retained_dollar_count(&self) -> usize {
        self.retained.dollar_len()
    }
}
