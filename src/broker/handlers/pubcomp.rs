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
    let id = session.stored_id(comp.packet_id);
    if session.on_pubcomp(comp.packet_id).is_err() {
        log::debug!(
            "connection {conn}: PUBCOMP for unknown packet id {}",
            comp.packet_id
        );
        return;
    }
    if id != 0 {
        broker.journal_done(key, id);
    }
    broker.acknowledged(key);
    broker.fill_window(key);
}
