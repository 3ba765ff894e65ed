//! UNSUBSCRIBE: remove the session's filters (unknown ones are fine) and answer UNSUBACK [MQTT-3.10.4-4];
//! event plugins hear of each filter removed.

use crate::broker::connection::PendingReply;
use crate::broker::{BrokerCore, ConnId};
use crate::persist::Record;
use crate::plugins::ClientInfo;
use crate::protocol::{Packet, UnsubAck, Unsubscribe};

pub(super) fn handle(broker: &mut BrokerCore, conn: ConnId, unsubscribe: Unsubscribe) {
    let Some(key) = broker.session_of(conn) else {
        return;
    };
    let mark = broker.journal_mark();
    let plugins = broker.settings.plugins.clone();
    let identity = if plugins.has_events() {
        broker.client_identity(conn)
    } else {
        None
    };
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
            if let Some((client_id, username)) = &identity {
                let client = ClientInfo {
                    client_id,
                    username: username.as_deref(),
                };
                plugins.unsubscribed(&client, filter);
            }
        }
    }
    let reply = PendingReply::plain(Packet::UnsubAck(UnsubAck {
        packet_id: unsubscribe.packet_id,
    }));
    broker.reply_when_durable(conn, mark, reply);
}
