//! The outputs: the next packet to write, the next event, the next deadline. They only hand out
//! what the inputs (`inputs.rs`) queued or scheduled; they must not change the session itself
//! (phase, packet ids, in-flight messages, subscriptions).

use super::*;

impl<W> ClientState<W> {
    // -- outputs ---------------------------------------------------------------------------------

    /// The next packet to write, oldest first.
    pub fn poll_transmit(&mut self) -> Option<Packet> {
        self.transmit.pop_front()
    }

    /// The next MQTT 5 packet to write, oldest first (MQTT 5 sessions queue only these).
    pub fn poll_transmit_v5(&mut self) -> Option<v5::Packet> {
        self.transmit5.pop_front()
    }

    /// The next event for the driver, oldest first.
    pub fn poll_event(&mut self) -> Option<Event<W>> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must next be called, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::AwaitingConnAck { deadline } => Some(deadline),
            Phase::Connected {
                last_sent,
                ping_sent,
            } if self.keep_alive > 0 => Some(match ping_sent {
                Some(sent) => sent + Duration::from_secs(u64::from(self.keep_alive)),
                None => last_sent + self.ping_interval(),
            }),
            _ => None,
        }
    }
}
