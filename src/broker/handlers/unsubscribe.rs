//! UNSUBSCRIBE: remove the session's filters (unknown ones are fine) and answer UNSUBACK [MQTT-3.10.4-4].

use crate::broker::connection::PendingReply;
use crate::broker::{BrokerCore, ConnId};
use crate::protocol::{Packet, UnsubAck, Unsubscribe};

pub(super) fn handle(broker: &mut BrokerCore, conn: ConnId, unsubscribe: Unsubscribe) {
    let Some(key) = broker.session_of(conn) else {
        return;
    };
    for filter in &unsubscribe.filters {
        let removed = broker
            .sessions
            .get_mut(key)
            .and_then(|session| session.subscriptions.remove(filter));
        if removed.is_some() {
            broker.remove_subscriber(key, filter);
        }
    }
    let reply = PendingReply {
        token: None,
        remaining: 0,
        reply: Packet::UnsubAck(UnsubAck {
            packet_id: unsubscribe.packet_id,
        }),
        retained_for: Vec::new(),
    };
    broker.reply_in_order(conn, reply);
}
