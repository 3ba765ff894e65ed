//! One `match` from inbound packet to its handler; one file per packet type.
//!
//! Handlers take the broker, the connection and `now`, change state and write replies into the
//! outbox. They never do I/O or touch another shard except through [`super::Action::Bus`].

pub(super) mod connect;
mod disconnect;
mod pingreq;
mod puback;
mod pubcomp;
mod publish;
mod pubrec;
mod pubrel;
mod subscribe;
mod unsubscribe;

use std::time::Instant;

use crate::protocol::Packet;

use super::{BrokerCore, CloseReason, ConnId};

pub(super) fn dispatch(broker: &mut BrokerCore, conn: ConnId, packet: Packet, now: Instant) {
    broker.stats.packets_received += 1;
    match packet {
        Packet::Publish(publish) => publish::handle(broker, conn, publish),
        Packet::PubAck(ack) => puback::handle(broker, conn, ack),
        Packet::PubRec(rec) => pubrec::handle(broker, conn, rec),
        Packet::PubRel(rel) => pubrel::handle(broker, conn, rel),
        Packet::PubComp(comp) => pubcomp::handle(broker, conn, comp),
        Packet::Subscribe(subscribe) => subscribe::handle(broker, conn, subscribe),
        Packet::Unsubscribe(unsubscribe) => unsubscribe::handle(broker, conn, unsubscribe),
        Packet::PingReq => pingreq::handle(broker, conn),
        Packet::Disconnect => disconnect::handle(broker, conn),
        // A second CONNECT is a protocol violation [MQTT-3.1.0-2]; the rest only flow server → client.
        Packet::Connect(_)
        | Packet::ConnAck(_)
        | Packet::SubAck(_)
        | Packet::UnsubAck(_)
        | Packet::PingResp => {
            log::debug!("connection {conn}: unexpected {packet:?}, closing");
            broker.stats.protocol_errors += 1;
            broker.close(conn, CloseReason::ProtocolError);
        }
    }
    let _ = now;
}
