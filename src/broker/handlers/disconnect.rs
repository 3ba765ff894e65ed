//! DISCONNECT: a clean goodbye. The will is discarded [MQTT-3.14.4-3] and the connection closed.

use crate::broker::{BrokerCore, CloseReason, ConnId};

pub(super) fn handle(broker: &mut BrokerCore, conn: ConnId) {
    broker.close(conn, CloseReason::ClientDisconnect);
}
