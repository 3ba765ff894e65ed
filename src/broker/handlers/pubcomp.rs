//! PUBCOMP: the client completed a QoS 2 delivery; the window has room for the next queued one.

use crate::broker::{BrokerCore, ConnId};
use crate::protocol::PubComp;

pub(super) fn handle(broker: &mut BrokerCore, conn: ConnId, comp: PubComp) {
    let Some(key) = broker.session_of(conn) else {
        return;
    };
    let Some(session) = broker.sessions.get_mut(key) else {
        return;
    };
    if session.on_pubcomp(comp.packet_id).is_err() {
        log::debug!(
            "connection {conn}: PUBCOMP for unknown packet id {}",
            comp.packet_id
        );
        return;
    }
    broker.acknowledged(key);
    broker.fill_window(key);
}
