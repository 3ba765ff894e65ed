//! UNSUBSCRIBE: remove the session's filters (unknown ones are fine) and answer UNSUBACK [MQTT-3.10.4-4];
//! event plugins hear of each filter removed. An MQTT 5 UNSUBACK says per filter whether it was
//! removed (0x00) or there was no such subscription (0x11) [MQTT-3.11.3].

use crate::broker::connection::PendingReply;
use crate::broker::{BrokerCore, ConnId, SessionKey};
use crate::persist::Record;
use crate::plugins::ClientInfo;
use crate::protocol::v5::{self, ReasonCode};
use crate::protocol::{Packet, TopicFilter, UnsubAck, Unsubscribe};

pub(super) fn handle(broker: &mut BrokerCore, conn: ConnId, unsubscribe: Unsubscribe) {
    let Some(key) = broker.session_of(conn) else {
        return;
    };
    let mark = broker.journal_mark();
    remove_filters(broker, conn, key, &unsubscribe.filters);
    let reply = PendingReply::plain(Packet::UnsubAck(UnsubAck {
        packet_id: unsubscribe.packet_id,
    }));
    broker.reply_when_durable(conn, mark, reply);
}

pub(super) fn handle_v5(broker: &mut BrokerCore, conn: ConnId, unsubscribe: v5::Unsubscribe) {
    let Some(key) = broker.session_of(conn) else {
        return;
    };
    let mark = broker.journal_mark();
    let removed = remove_filters(broker, conn, key, &unsubscribe.filters);
    let reply = PendingReply::plain(v5::Packet::UnsubAck(v5::SubscriptionAck {
        packet_id: unsubscribe.packet_id,
        properties: v5::Properties::default(),
        reason_codes: removed
            .into_iter()
            .map(|removed| {
                if removed {
                    ReasonCode::SUCCESS
                } else {
                    ReasonCode::NO_SUBSCRIPTION_EXISTED
                }
            })
            .collect(),
    }));
    broker.reply_when_durable(conn, mark, reply);
}

/// Removes the session's subscriptions to `filters`; says for each whether there was one.
fn remove_filters(
    broker: &mut BrokerCore,
    conn: ConnId,
    key: SessionKey,
    filters: &[TopicFilter],
) -> Vec<bool> {
    let plugins = broker.settings.plugins.clone();
    let identity = if plugins.has_events() {
        broker.client_identity(conn)
    } else {
        None
    };
    let mut removed_each = Vec::with_capacity(filters.len());
    for filter in filters {
        let removed = broker
            .sessions
            .get_mut(key)
            .and_then(|session| session.subscriptions.remove(filter));
        removed_each.push(removed.is_some());
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
    // A cluster node keeps a persistent session's subscriptions in its directory entry.
    broker.session_profile_changed(key);
    removed_each
}
