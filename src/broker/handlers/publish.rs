//! PUBLISH from a client: route it, then acknowledge by its QoS. Both ways a PUBLISH enters the
//! broker are here: decoded ([`handle`]) and borrowed from the read buffer ([`handle_borrowed`]),
//! and both count it through [`received`]. A rule for client PUBLISHes belongs in this file, and
//! applies to both, or makes `handle_borrowed` decline (the packet is then decoded and takes
//! `handle`).
//!
//! QoS 0: route. QoS 1: route, PUBACK [MQTT-4.3.2-2]. QoS 2: route the first time its packet id is
//! seen, PUBREC every time; a re-sent PUBLISH (DUP) before PUBREL is not routed again, so the message
//! is delivered exactly once [MQTT-4.3.3-2]. A publish that a topic-check plugin denies is
//! acknowledged the same way but neither delivered nor retained (as Mosquitto does), and counted.

use crate::broker::connection::PendingReply;
use crate::broker::mqtt5::{self, Reply};
use crate::broker::{BrokerCore, ConnId, Message};
use crate::persist::Record;
use crate::protocol::v5::{self, ReasonCode};
use crate::protocol::{Packet, PubAck, PubRec, Publish, PublishRef, QoS};

/// A decoded PUBLISH.
pub(super) fn handle(broker: &mut BrokerCore, conn: ConnId, publish: Publish) {
    let (message, packet_id) = message_of(publish);
    handle_message(broker, conn, message, packet_id, None);
}

/// The message of an MQTT 3 PUBLISH (or an MQTT 5 one without properties), and its packet id
/// (0 at QoS 0).
fn message_of(publish: Publish) -> (Message, u16) {
    let message = Message {
        topic: publish.topic,
        payload: publish.payload,
        qos: publish.qos,
        retain: publish.retain,
        properties: None,
    };
    (message, publish.packet_id.unwrap_or(0))
}

/// A decoded MQTT 5 PUBLISH: one at QoS 1/2 above the broker's Receive Maximum of
/// unacknowledged ones closes the connection with 0x93 ([`mqtt5::V5Link::admit`]); its Topic
/// Alias sets or gives its topic ([`mqtt5::V5Link::resolve_topic`]);
/// what it may not carry closes the connection (an alias 0, above the maximum announced or
/// not set yet: 0x94 / 0x82 [MQTT-3.3.2-9]; a Subscription Identifier
/// [MQTT-3.3.4-6]; a QoS above the Maximum QoS announced [MQTT-3.2.2-11]); a payload that is not
/// the UTF-8 its Payload Format Indicator promises is acknowledged with 0x99 and dropped
/// [MQTT-3.3.2-4]; a QoS 1/2 one that reaches no subscriber is acknowledged with 0x10. Its
/// message properties travel with it.
pub(super) fn handle_v5(broker: &mut BrokerCore, conn: ConnId, publish: v5::Publish) {
    let alias = publish.properties.topic_alias;
    let maximum = broker.settings.receive_maximum;
    let topic = match broker
        .connections
        .get_mut(&conn)
        .and_then(|c| c.v5.as_deref_mut())
    {
        Some(link) => link
            .admit(publish.qos, maximum)
            .and_then(|()| link.resolve_topic(publish.topic, alias)),
        None => return,
    };
    let topic = match topic {
        Ok(topic) => topic,
        Err(code) => {
            broker.protocol_error_v5(conn, code);
            return;
        }
    };
    if !publish.properties.subscription_identifiers.is_empty() {
        broker.protocol_error_v5(conn, ReasonCode::PROTOCOL_ERROR);
        return;
    }
    let message = Message {
        topic,
        payload: publish.payload,
        qos: publish.qos,
        retain: publish.retain,
        properties: mqtt5::message_properties(publish.properties),
    };
    route_v5(broker, conn, message, publish.packet_id.unwrap_or(0));
}

/// An MQTT 5 PUBLISH without properties, decoded as MQTT 3's
/// ([`v5::decode_plain_publish`]): what [`handle_v5`] does for it (no alias to resolve, no
/// identifier to refuse), without the MQTT 5 `Publish` and its inline `Properties`. The
/// Receive Maximum counts it the same ([`mqtt5::V5Link::admit`]).
pub(super) fn handle_v5_plain(broker: &mut BrokerCore, conn: ConnId, publish: Publish) {
    let maximum = broker.settings.receive_maximum;
    let admitted = match broker
        .connections
        .get_mut(&conn)
        .and_then(|c| c.v5.as_deref_mut())
    {
        Some(link) => link.admit(publish.qos, maximum),
        None => return,
    };
    if let Err(code) = admitted {
        broker.protocol_error_v5(conn, code);
        return;
    }
    let (message, packet_id) = message_of(publish);
    route_v5(broker, conn, message, packet_id);
}

/// The end of both MQTT 5 ways in: the QoS checked against the Maximum QoS, the reason code of
/// the acknowledgement chosen, then [`handle_message`].
fn route_v5(broker: &mut BrokerCore, conn: ConnId, message: Message, packet_id: u16) {
    if message.qos > broker.settings.max_qos {
        broker.protocol_error_v5(conn, ReasonCode::QOS_NOT_SUPPORTED);
        return;
    }
    let mut problem = None;
    let reason = if mqtt5::payload_format_invalid(&message) {
        broker.stats.publish_payload_format_invalid += 1;
        problem = broker
            .wants_problem_information(conn)
            .then(|| "the payload is not the UTF-8 its Payload Format Indicator says".to_string());
        ReasonCode::PAYLOAD_FORMAT_INVALID
    } else if message.qos != QoS::AtMostOnce && !broker.anyone_subscribed(&message.topic) {
        ReasonCode::NO_MATCHING_SUBSCRIBERS
    } else {
        ReasonCode::SUCCESS
    };
    let v5 = V5Ack {
        reason,
        reason_string: problem,
    };
    handle_message(broker, conn, message, packet_id, Some(v5));
}

/// The reason code of an MQTT 5 client's acknowledgement, and its Reason String (only for a
/// client that wants problem information, [`BrokerCore::wants_problem_information`]).
struct V5Ack {
    reason: ReasonCode,
    reason_string: Option<String>,
}

/// Routes and acknowledges a client's message. `v5`: an MQTT 5 client's acknowledgement (`None`
/// for MQTT 3); an error code means the message is not routed.
fn handle_message(
    broker: &mut BrokerCore,
    conn: ConnId,
    message: Message,
    packet_id: u16,
    v5: Option<V5Ack>,
) {
    let Some(key) = broker.session_of(conn) else {
        return;
    };
    received(broker, message.qos);
    let refused = v5.as_ref().is_some_and(|v5| v5.reason.is_error());
    let ack = |kind: fn(v5::Ack) -> v5::Packet, v3: Packet| -> Reply {
        match v5 {
            Some(v5) if v5.reason != ReasonCode::SUCCESS => kind(v5::Ack {
                packet_id,
                reason: v5.reason,
                properties: v5::Properties {
                    reason_string: v5.reason_string,
                    ..v5::Properties::default()
                },
            })
            .into(),
            _ => v3.into(),
        }
    };
    match message.qos {
        QoS::AtMostOnce => {
            if !refused {
                broker.publish_from_client(conn, message);
            }
        }
        QoS::AtLeastOnce => {
            let mark = broker.journal_mark();
            if !refused {
                broker.publish_from_client(conn, message);
            }
            let reply = ack(v5::Packet::PubAck, Packet::PubAck(PubAck { packet_id }));
            acknowledge(broker, conn, mark, reply);
        }
        QoS::ExactlyOnce => {
            let mark = broker.journal_mark();
            // A refused QoS 2 message ends with its PUBREC: no PUBREL follows [MQTT-4.3.3].
            let first_time = !refused
                && broker
                    .sessions
                    .get_mut(key)
                    .is_some_and(|session| session.incoming_qos2(packet_id));
            if first_time {
                if let Some(client_id) = broker.persistent_client(key) {
                    broker.journal(|| Record::Qos2Received {
                        client_id,
                        packet_id,
                    });
                }
                broker.publish_from_client(conn, message);
            }
            let ack = ack(v5::Packet::PubRec, Packet::PubRec(PubRec { packet_id }));
            if broker.persistence() {
                let wait = broker.qos2_ack_wait(key, packet_id, mark, first_time);
                broker.reply_in_order(
                    conn,
                    PendingReply {
                        wait,
                        ..PendingReply::plain(ack)
                    },
                );
            } else {
                broker.write_reply(conn, &ack);
            }
        }
    }
}

/// Writes a PUBACK / PUBREC: at once, or with persistence on once what routing the PUBLISH
/// journaled (here and on the shards it went to) is durable ([MQTT-4.3.2-2]: the publisher may
/// forget the message once acknowledged, so the broker must not lose it after that).
fn acknowledge(broker: &mut BrokerCore, conn: ConnId, mark: usize, ack: Reply) {
    if broker.persistence() {
        broker.reply_when_durable(conn, mark, PendingReply::plain(ack));
    } else {
        broker.write_reply(conn, &ack);
    }
}

/// A QoS 0 PUBLISH routed from the bytes of the connection's read buffer (`publish` borrows them),
/// from an active connection: all of [`handle`] for it when nothing needs a reference-counted copy
/// of the message, which is when it is not retained, not to `$SYS`, no plugin sees it, no share
/// group's filter matches it (`shared.rs` sends the message itself to a member), and every
/// subscriber on this shard takes it at once (online, nothing queued ahead); other shards get it in
/// their batch. Otherwise it returns `false` having done nothing, and the caller decodes the packet
/// for [`handle`].
///
/// What it buys: no reference-counted `Bytes` for the topic and payload (`decode`'s
/// `split_to`/`slice`/drops were ~12 % of the broker's CPU in `pairs -n 8 --qos 0`).
pub(super) fn handle_borrowed(broker: &mut BrokerCore, publish: &PublishRef<'_>) -> bool {
    if publish.qos != QoS::AtMostOnce
        || publish.retain
        || !BrokerCore::client_may_publish_to(publish.topic)
        || broker.plugins_see_publishes()
        || broker.shared.matches(publish.topic)
        || !broker.deliver_qos0_at_once(publish.topic, publish.payload)
    {
        return false;
    }
    received(broker, QoS::AtMostOnce);
    // What `route` does besides, for a message that is not retained.
    broker.route_to_other_shards(QoS::AtMostOnce, publish.topic, publish.payload, None);
    #[cfg(test)]
    {
        broker.routed_in_place += 1;
    }
    true
}

/// [`handle_borrowed`] for an MQTT 5 PUBLISH whose only property is a Topic Alias (`alias`):
/// the alias set (a topic name with it) or read (an empty topic name) as [`handle_v5`] does
/// ([`mqtt5::V5Link::resolve_borrowed`]), then routed in place under the topic name it stands
/// for. `false`, having routed nothing, where `handle_borrowed` declines or the alias is not
/// valid here (the decoded PUBLISH then takes `handle_v5`, which reports it); setting an alias
/// twice to the same topic changes nothing.
///
/// What it buys: a client that uses aliases sends every PUBLISH with a property; decoded, each
/// built and dropped an MQTT 5 `Properties` and took the routing path of an owned message
/// (`pairs -n 8 --qos 0 --protocol 5 --topic-alias`).
pub(super) fn handle_borrowed_aliased(
    broker: &mut BrokerCore,
    conn: ConnId,
    publish: &PublishRef<'_>,
    alias: u16,
) -> bool {
    let mut topic = std::mem::take(&mut broker.alias_topic);
    topic.clear();
    let resolved = broker
        .connections
        .get_mut(&conn)
        .and_then(|c| c.v5.as_deref_mut())
        .and_then(|link| link.resolve_borrowed(publish.topic, alias))
        .map(|name| topic.extend_from_slice(name))
        .is_some();
    let routed = resolved
        && handle_borrowed(
            broker,
            &PublishRef {
                topic: &topic,
                ..*publish
            },
        );
    broker.alias_topic = topic;
    routed
}

/// Counts a PUBLISH received from a client, whichever way it was handled.
fn received(broker: &mut BrokerCore, qos: QoS) {
    broker.stats.publish_received += 1;
    broker.stats.publish_received_by_qos[qos as usize] += 1;
}
