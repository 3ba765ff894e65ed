//! SUBSCRIBE: add or replace the session's subscriptions, answer SUBACK, then send retained messages.
//!
//! Granted QoS is the requested one capped by `max_qos` [MQTT-3.9.3]. A filter new to this shard is
//! announced to the other shards, and the SUBACK waits until they have confirmed: once the client
//! holds its SUBACK, a message published on any shard reaches it. A filter this shard already has,
//! but whose announcement (for another session) is not confirmed everywhere yet, is announced again
//! under this SUBSCRIBE's token: the bus keeps one sender's order, so its confirmation comes after
//! the earlier announcement took effect (found by the simulation, `simulation/reductions.rs`). Retained messages matching each
//! filter follow the SUBACK with RETAIN set [MQTT-3.3.1-6], also for a repeated subscription
//! [MQTT-3.8.4-3]. A filter that a topic-check plugin denies gets 0x80 in the SUBACK and changes
//! nothing (an existing subscription with the same filter stays); the other filters of the same
//! SUBSCRIBE are handled as usual.

use crate::broker::connection::PendingReply;
use crate::broker::{packet_log, BrokerCore, ConnId, SubOptions};
use crate::persist::Record;
use crate::plugins::{ClientInfo, TopicAction};
use crate::protocol::{Packet, SubAck, Subscribe, SubscribeReturnCode};

pub(super) fn handle(broker: &mut BrokerCore, conn: ConnId, subscribe: Subscribe) {
    let Some(key) = broker.session_of(conn) else {
        return;
    };
    let mark = broker.journal_mark();
    let mut return_codes = Vec::with_capacity(subscribe.filters.len());
    let mut retained_for = Vec::with_capacity(subscribe.filters.len());
    let mut new_filters = Vec::new();
    let plugins = broker.settings.plugins.clone();
    let identity = if plugins.checks_topics() || plugins.has_events() {
        broker.client_identity(conn)
    } else {
        None
    };
    let client = identity.as_ref().map(|(client_id, username)| ClientInfo {
        client_id,
        username: username.as_deref(),
    });
    for request in subscribe.filters {
        if plugins.checks_topics() {
            let allowed = client
                .as_ref()
                .is_some_and(|c| plugins.allow(c, TopicAction::Subscribe(&request.filter)));
            if !allowed {
                broker.stats.subscribe_denied += 1;
                if let Some(c) = &client {
                    log::log!(
                        target: packet_log::TARGET,
                        packet_log::refusal_level(broker.settings.log_packets),
                        "Denied SUBSCRIBE from '{}'{} to '{}': topic check",
                        c.client_id,
                        packet_log::User(c.username),
                        request.filter.as_str()
                    );
                }
                return_codes.push(SubscribeReturnCode::Failure);
                continue;
            }
        }
        let granted = request.qos.min(broker.settings.max_qos);
        if let Some(session) = broker.sessions.get_mut(key) {
            session
                .subscriptions
                .insert(request.filter.clone(), SubOptions::qos(granted));
        }
        if let Some(client_id) = broker.persistent_client(key) {
            let filter = request.filter.clone();
            broker.journal(|| Record::Subscribe {
                client_id,
                filter,
                qos: granted,
            });
        }
        let created = broker.add_subscriber(key, &request.filter, SubOptions::qos(granted));
        if created || broker.is_announcing(&request.filter) {
            new_filters.push(request.filter.clone());
        }
        if let Some(client) = &client {
            plugins.subscribed(client, &request.filter, granted);
        }
        return_codes.push(SubscribeReturnCode::Success(granted));
        retained_for.push((request.filter, granted));
    }
    let others = broker.shards - 1;
    let token = (others > 0 && !new_filters.is_empty()).then(|| broker.new_token());
    for filter in &new_filters {
        broker.broadcast_interest(filter, true, token);
    }
    // Every announcement carries the token and each other shard confirms each one.
    let remaining = if token.is_some() {
        others * new_filters.len()
    } else {
        0
    };
    let reply = PendingReply {
        token,
        remaining,
        reply: Packet::SubAck(SubAck {
            packet_id: subscribe.packet_id,
            return_codes,
        }),
        retained_for,
        wait: broker.durable_wait(mark),
    };
    broker.reply_in_order(conn, reply);
}
