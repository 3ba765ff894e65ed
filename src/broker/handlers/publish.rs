//! PUBLISH from a client: route it, then acknowledge by its QoS.
//!
//! QoS 0: route. QoS 1: route, PUBACK [MQTT-4.3.2-2]. QoS 2: route the first time its packet id is
//! seen, PUBREC every time; a re-sent PUBLISH (DUP) before PUBREL is not routed again, so the message
//! is delivered exactly once [MQTT-4.3.3-2]. A publish that a topic-check plugin denies is
//! acknowledged the same way but neither delivered nor retained (as Mosquitto does), and counted.

use crate::broker::{BrokerCore, ConnId, Message};
use crate::protocol::{Packet, PubAck, PubRec, Publish, QoS};

pub(super) fn handle(broker: &mut BrokerCore, conn: ConnId, publish: Publish) {
    let Some(key) = broker.session_of(conn) else {
        return;
    };
    broker.stats.publish_received += 1;
    let packet_id = publish.packet_id.unwrap_or(0);
    let message = Message {
        topic: publish.topic,
        payload: publish.payload,
        qos: publish.qos,
        retain: publish.retain,
    };
    match message.qos {
        QoS::AtMostOnce => {
            broker.publish_from_client(conn, message);
        }
        QoS::AtLeastOnce => {
            broker.publish_from_client(conn, message);
            broker.write(conn, &Packet::PubAck(PubAck { packet_id }));
        }
        QoS::ExactlyOnce => {
            let first_time = broker
                .sessions
                .get_mut(key)
                .is_some_and(|session| session.incoming_qos2(packet_id));
            if first_time {
                broker.publish_from_client(conn, message);
            }
            broker.write(conn, &Packet::PubRec(PubRec { packet_id }));
        }
    }
}
