//! What a session holds that its client has not acknowledged receiving: the messages a shared
//! subscription's group takes back when the session ends (`broker/shared.rs`). The live delivery
//! rules stay in `session.rs`.

use crate::protocol::QoS;

use super::{InflightState, Message, Session};

impl Session {
    /// The QoS 1/2 messages the client has not acknowledged receiving, oldest first: in flight
    /// awaiting PUBACK or PUBREC, then queued (retained copies sent after a SUBACK excluded: no
    /// group shares them). A message awaiting PUBCOMP was received (PUBREC) and is not listed.
    /// The session keeps them (it is about to be dropped).
    pub fn unacknowledged(&self) -> Vec<Message> {
        let flow = self.flow();
        let inflight = flow
            .inflight
            .iter()
            .filter(|m| m.state != InflightState::AwaitPubComp)
            .map(|m| &m.out);
        let queued = flow.queue.iter();
        inflight
            .chain(queued)
            .filter(|out| !out.retain && out.qos != QoS::AtMostOnce)
            .map(|out| out.message.clone())
            .collect()
    }
}
