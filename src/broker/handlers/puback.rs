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
    if session.on_puback(ack.packet_id).is_err() {
        log::debug!(
            "connection {conn}: PUBACK for unknown packet id {}",
            ack.packet_id
        );
        return;
    }
    broker.acknowledged(key);
    broker.fill_window(key);
}
