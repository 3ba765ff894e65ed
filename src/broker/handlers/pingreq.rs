//! PINGREQ: answer PINGRESP [MQTT-3.12.4-1]. Activity was already recorded by the caller.

use crate::broker::{BrokerCore, ConnId};
use crate::protocol::Packet;

pub(super) fn handle(broker: &mut BrokerCore, conn: ConnId) {
    broker.write(conn, &Packet::PingResp);
}
