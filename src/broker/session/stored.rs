//! A session's journaled messages, as persistence sees them: what a snapshot writes
//! ([`Session::stored`]) and what recovery puts back ([`Session::restore_stored`]). The live
//! delivery rules stay in `session.rs`; nothing here encodes bytes or touches a socket.

use std::time::Instant;

use crate::persist::MsgId;
use crate::protocol::QoS;

use super::{CopyProps, Inflight, InflightState, Message, Outgoing, Session};

/// A journaled message a session holds (for a snapshot of the shard).
#[derive(Debug)]
pub struct StoredEntry<'a> {
    pub message: &'a Message,
    pub qos: QoS,
    pub id: MsgId,
    /// A retained copy sent after a SUBACK (it goes out with RETAIN 1).
    pub retain: bool,
    /// Set once it went out (QoS 2 only: a QoS 1 message is simply sent again).
    pub packet_id: Option<u16>,
    /// PUBREC received: only PUBREL / PUBCOMP remain.
    pub released: bool,
    /// When this copy expires (MQTT 5's Message Expiry Interval), on the core's clock.
    pub expires_at: Option<Instant>,
}

impl Session {
    /// The journaled messages the session holds, oldest first (in flight, then queued).
    pub fn stored(&self) -> impl Iterator<Item = StoredEntry<'_>> {
        self.held().filter(|entry| entry.id != 0)
    }

    /// Every message the session holds, journaled or not (id 0), oldest first (in flight, then
    /// queued): what moves with it to another node (`cluster_session.rs`).
    pub fn held(&self) -> impl Iterator<Item = StoredEntry<'_>> {
        let flow = self.flow();
        let inflight = flow.inflight.iter().map(|m| StoredEntry {
            message: &m.out.message,
            qos: m.out.qos,
            id: m.out.id,
            retain: m.out.retain,
            packet_id: (m.out.qos == QoS::ExactlyOnce).then_some(m.packet_id),
            released: m.state == InflightState::AwaitPubComp,
            expires_at: m.out.props().expires_at,
        });
        let queued = flow.queue.iter().map(|out| StoredEntry {
            message: &out.message,
            qos: out.qos,
            id: out.id,
            retain: out.retain,
            packet_id: None,
            released: false,
            expires_at: out.props().expires_at,
        });
        inflight.chain(queued)
    }

    /// Incoming QoS 2 packet ids awaiting PUBREL.
    pub fn incoming_qos2_ids(&self) -> impl Iterator<Item = u16> + '_ {
        self.flow().incoming_qos2.iter().copied()
    }

    /// Puts back a journaled message (recovery): in flight under `packet_id` when it has one (sent
    /// again with DUP when the client is back), else at the end of the queue, counted against the
    /// memory budget but not refused by the limits (it was accepted before the restart). `props`:
    /// what the copy carries (MQTT 5: its expiry, the identifiers of the subscriptions it matches).
    pub fn restore_stored(
        &mut self,
        message: Message,
        qos: QoS,
        id: MsgId,
        packet_id: Option<u16>,
        released: bool,
        props: CopyProps<'_>,
    ) {
        // The stored retain flag is the delivery's: set for a retained copy sent after a SUBACK,
        // which goes out again as it was (RETAIN 1), outside the queue limits like before.
        let out = Outgoing {
            retain: message.retain,
            message,
            qos,
            id,
            props: props.kept(),
        };
        match packet_id {
            Some(packet_id) if qos != QoS::AtMostOnce => {
                let state = if released {
                    InflightState::AwaitPubComp
                } else if qos == QoS::AtLeastOnce {
                    InflightState::AwaitPubAck
                } else {
                    InflightState::AwaitPubRec
                };
                self.next_packet_id = packet_id.checked_add(1).unwrap_or(1);
                self.flow_mut().inflight.push_back(Inflight {
                    packet_id,
                    out,
                    state,
                });
            }
            _ if out.retain => {
                let flow = self.flow_mut();
                flow.queued_retained += 1;
                flow.queued_qos0 += usize::from(qos == QoS::AtMostOnce);
                flow.queue.push_back(out);
            }
            _ => {
                let bytes = out.message.payload.len();
                self.limits.budget.add(bytes);
                let flow = self.flow_mut();
                flow.queued_bytes += bytes;
                flow.queued_qos0 += usize::from(qos == QoS::AtMostOnce);
                flow.queue.push_back(out);
            }
        }
    }
}
