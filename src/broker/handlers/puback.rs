//! PUBACK: the client acknowledged a QoS 1 message; the window has room for the next queued one.

use crate::broker::{BrokerCore, ConnId};
use crate::protocol::PubAck;

pub(super) fn handle(broker: &mut BrokerCore, conn: ConnId, ack: PubAck) {
    let Some(key) = broker.session_of(conn) else {
        return;
    };
    let Some(session) = broker.sessions.get_mut(key) else {
        return;
    };
    let id = session.stored_id(ack.packet_id);
    if session.on_puback(ack.packet_id).is_err() {
        log::debug!(
            "connection {conn}: PUBACK for unknown packet id {}",
            ack.packet_id
        );
        return;
    }
    // Lazy: if this record is lost, the message is only sent again (with DUP) after a restart.
    if id != 0 {
        broker.journal_done(key, id);
    }
    broker.acknowledged(key);
    broker.fill_window(key);
}
