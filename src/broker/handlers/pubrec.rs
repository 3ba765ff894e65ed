//! PUBREC: the client received a QoS 2 message; answer PUBREL [MQTT-4.3.3-1].
//!
//! An unknown identifier is answered with PUBREL too, so a client that lost track can finish its flow.

use crate::broker::{BrokerCore, ConnId};
use crate::protocol::{Packet, PubRec, PubRel};

pub(super) fn handle(broker: &mut BrokerCore, conn: ConnId, rec: PubRec) {
    let Some(key) = broker.session_of(conn) else {
        return;
    };
    let Some(session) = broker.sessions.get_mut(key) else {
        return;
    };
    let rel = session.on_pubrec(rec.packet_id).unwrap_or_else(|_| {
        log::debug!(
            "connection {conn}: PUBREC for unknown packet id {}",
            rec.packet_id
        );
        PubRel {
            packet_id: rec.packet_id,
        }
    });
    broker.write(conn, &Packet::PubRel(rel));
}
