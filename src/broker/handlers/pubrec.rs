//! PUBREC: the client received a QoS 2 message; answer PUBREL [MQTT-4.3.3-1].
//!
//! An unknown identifier is answered with PUBREL too, so a client that lost track can finish its flow.
//! An MQTT 5 PUBREC with an error reason code ends the flow instead: the client refused the
//! message, and no PUBREL is sent [MQTT-4.3.3].

use crate::broker::{BrokerCore, ConnId};
use crate::persist::Record;
use crate::protocol::{Packet, PubRec, PubRel};

pub(super) fn handle(broker: &mut BrokerCore, conn: ConnId, rec: PubRec) {
    let Some(key) = broker.session_of(conn) else {
        return;
    };
    let Some(session) = broker.sessions.get_mut(key) else {
        return;
    };
    let id = session.stored_id(rec.packet_id);
    let rel = session.on_pubrec(rec.packet_id).unwrap_or_else(|_| {
        log::debug!(
            "connection {conn}: PUBREC for unknown packet id {}",
            rec.packet_id
        );
        PubRel {
            packet_id: rec.packet_id,
        }
    });
    // The PUBREL waits until this record is durable: a client that read it forgets the id, so
    // a PUBLISH sent again after a restart (the record lost) would reach its application twice.
    let mut hold = false;
    if id != 0 {
        if let Some(client_id) = broker.persistent_client(key) {
            broker.journal(|| Record::Released { client_id, id });
            hold = true;
        }
    }
    broker.write(conn, &Packet::PubRel(rel));
    if hold {
        broker.hold_outbox(conn);
    }
}

/// An MQTT 5 PUBREC with an error reason code: the message is done, as after a PUBCOMP.
pub(super) fn handle_refused(broker: &mut BrokerCore, conn: ConnId, packet_id: u16) {
    let Some(key) = broker.session_of(conn) else {
        return;
    };
    let Some(session) = broker.sessions.get_mut(key) else {
        return;
    };
    let id = session.stored_id(packet_id);
    if session.on_pubrec_refused(packet_id).is_err() {
        log::debug!("connection {conn}: refusing PUBREC for unknown packet id {packet_id}");
        return;
    }
    if id != 0 {
        broker.journal_done(key, id);
    }
    broker.acknowledged(key);
    broker.fill_window(key);
}
