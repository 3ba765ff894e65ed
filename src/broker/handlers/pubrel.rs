//! PUBREL: the client releases an incoming QoS 2 message; forget its id and answer PUBCOMP [MQTT-4.3.3-2].
//!
//! The message itself was routed when its PUBLISH first arrived; a PUBREL for an id we do not hold
//! (already released) is still answered, as the client may be repeating it after a reconnect.

use crate::broker::{BrokerCore, ConnId};
use crate::protocol::{Packet, PubComp, PubRel};

pub(super) fn handle(broker: &mut BrokerCore, conn: ConnId, rel: PubRel) {
    let Some(key) = broker.session_of(conn) else {
        return;
    };
    if let Some(session) = broker.sessions.get_mut(key) {
        if !session.incoming_pubrel(rel.packet_id) {
            log::debug!(
                "connection {conn}: PUBREL for unknown packet id {}",
                rel.packet_id
            );
        }
    }
    broker.write(
        conn,
        &Packet::PubComp(PubComp {
            packet_id: rel.packet_id,
        }),
    );
}
