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
use crate::broker::{BrokerCore, ConnId, Message};
use crate::persist::Record;
use crate::protocol::{Packet, PubAck, PubRec, Publish, PublishRef, QoS};

/// A decoded PUBLISH.
pub(super) fn handle(broker: &mut BrokerCore, conn: ConnId, publish: Publish) {
    let Some(key) = broker.session_of(conn) else {
        return;
    };
    received(broker, publish.qos);
    let packet_id = publish.packet_id.unwrap_or(0);
    let message = Message {
        topic: publish.topic,
        payload: publish.payload,
        qos: publish.qos,
        retain: publish.retain,
        properties: None,
    };
    match message.qos {
        QoS::AtMostOnce => {
            broker.publish_from_client(conn, message);
        }
        QoS::AtLeastOnce => {
            let mark = broker.journal_mark();
            broker.publish_from_client(conn, message);
            acknowledge(broker, conn, mark, Packet::PubAck(PubAck { packet_id }));
        }
        QoS::ExactlyOnce => {
            let mark = broker.journal_mark();
            let first_time = broker
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
            let ack = Packet::PubRec(PubRec { packet_id });
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
                broker.write(conn, &ack);
            }
        }
    }
}

/// Writes a PUBACK / PUBREC: at once, or with persistence on once what routing the PUBLISH
/// journaled (here and on the shards it went to) is durable ([MQTT-4.3.2-2]: the publisher may
/// forget the message once acknowledged, so the broker must not lose it after that).
fn acknowledge(broker: &mut BrokerCore, conn: ConnId, mark: usize, ack: Packet) {
    if broker.persistence() {
        broker.reply_when_durable(conn, mark, PendingReply::plain(ack));
    } else {
        broker.write(conn, &ack);
    }
}

/// A QoS 0 PUBLISH routed from the bytes of the connection's read buffer (`publish` borrows them),
/// from an active connection: all of [`handle`] for it when nothing needs a reference-counted copy
/// of the message, which is when it is not retained, not to `$SYS`, no plugin sees it, and every
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
        || !broker.deliver_qos0_at_once(publish.topic, publish.payload)
    {
        return false;
    }
    received(broker, QoS::AtMostOnce);
    // What `route` does besides, for a message that is not retained.
    broker.route_to_other_shards(QoS::AtMostOnce, publish.topic, publish.payload);
    #[cfg(test)]
    {
        broker.routed_in_place += 1;
    }
    true
}

/// Counts a PUBLISH received from a client, whichever way it was handled.
fn received(broker: &mut BrokerCore, qos: QoS) {
    broker.stats.publish_received += 1;
    broker.stats.publish_received_by_qos[qos as usize] += 1;
}
