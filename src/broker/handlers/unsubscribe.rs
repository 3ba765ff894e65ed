//! UNSUBSCRIBE: remove the session's filters (unknown ones are fine) and answer UNSUBACK [MQTT-3.10.4-4].

use crate::broker::connection::PendingReply;
use crate::broker::{BrokerCore, ConnId};
use crate::persist::Record;
use crate::protocol::{Packet, UnsubAck, Unsubscribe};

pub(super) fn handle(broker: &mut BrokerCore, conn: ConnId, unsubscribe: Unsubscribe) {
    let Some(key) = broker.session_of(conn) else {
        return;
    };
    let mark = broker.journal_mark();
    for filter in &unsubscribe.filters {
        let removed = broker
            .sessions
            .get_mut(key)
            .and_then(|session| session.subscriptions.remove(filter));
        if removed.is_some() {
            broker.remove_subscriber(key, filter);
            if let Some(client_id) = broker.persistent_client(key) {
                let filter = filter.clone();
                broker.journal(|| Record::Unsubscribe { client_id, filter });
            }
        }
    }
    let reply = PendingReply::plain(Packet::UnsubAck(UnsubAck {
        packet_id: unsubscribe.packet_id,
    }));
    broker.reply_when_durable(conn, mark, reply);
}
