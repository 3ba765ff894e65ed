//! PUBREL: the client releases an incoming QoS 2 message; forget its id and answer PUBCOMP [MQTT-4.3.3-2].
//!
//! The message itself was routed when its PUBLISH first arrived; a PUBREL for an id we do not hold
//! (already released) is still answered, as the client may be repeating it after a reconnect.

use crate::broker::connection::PendingReply;
use crate::broker::{BrokerCore, ConnId};
use crate::persist::Record;
use crate::protocol::{Packet, PubComp, PubRel};

pub(super) fn handle(broker: &mut BrokerCore, conn: ConnId, rel: PubRel) {
    let Some(key) = broker.session_of(conn) else {
        return;
    };
    let mark = broker.journal_mark();
    let packet_id = rel.packet_id;
    if let Some(session) = broker.sessions.get_mut(key) {
        if session.incoming_pubrel(packet_id) {
            if let Some(client_id) = broker.persistent_client(key) {
                broker.journal(|| Record::Qos2Released {
                    client_id,
                    packet_id,
                });
            }
        } else {
            log::debug!("connection {conn}: PUBREL for unknown packet id {packet_id}");
        }
    }
    let comp = Packet::PubComp(PubComp { packet_id });
    if broker.persistence() {
        broker.reply_when_durable(conn, mark, PendingReply::plain(comp));
    } else {
        broker.write(conn, &comp);
    }
}
