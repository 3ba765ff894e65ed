//! DISCONNECT: a clean goodbye. The will is discarded [MQTT-3.14.4-3] and the connection closed.
//!
//! MQTT 5's DISCONNECT also carries a reason code and may change the Session Expiry Interval:
//! 0x04 Disconnect with Will Message publishes the will; a new interval applies from now on
//! (capped by the broker's `session_expiry_interval`), but one set to non-zero when the CONNECT
//! said 0 is a protocol error [MQTT-3.14.2-2]; set to 0, the session ends with the connection.

use std::time::Duration;

use crate::broker::{mqtt5, BrokerCore, CloseReason, ConnId};
use crate::persist::Record;
use crate::protocol::v5::{self, ReasonCode};

pub(super) fn handle(broker: &mut BrokerCore, conn: ConnId) {
    broker.close(conn, CloseReason::ClientDisconnect);
}

pub(super) fn handle_v5(broker: &mut BrokerCore, conn: ConnId, disconnect: v5::Disconnect) {
    let Some(key) = broker.session_of(conn) else {
        return;
    };
    let connect_expiry = broker
        .connections
        .get(&conn)
        .and_then(|c| c.v5.as_ref())
        .map_or(0, |link| link.connect_expiry);
    let mut ends_now = false;
    if let Some(seconds) = disconnect.properties.session_expiry_interval {
        if connect_expiry == 0 && seconds != 0 {
            broker.protocol_error_v5(conn, ReasonCode::PROTOCOL_ERROR);
            return;
        }
        let mut changed = None;
        if let Some(session) = broker.sessions.get_mut(key) {
            if seconds == 0 {
                session.expiry_interval = Some(Duration::ZERO);
                ends_now = !session.clean;
            } else {
                session.expiry_interval =
                    mqtt5::session_expiry(seconds, broker.settings.session_expiry_interval);
                changed = Some(session.expiry_secs());
            }
        }
        // The new interval counts across a restart too (a session ended now is dropped instead).
        if let (Some(interval_secs), Some(client_id)) = (changed, broker.persistent_client(key)) {
            broker.journal(|| Record::SessionExpiry {
                client_id,
                interval_secs,
            });
        }
    }
    let reason = if disconnect.reason == ReasonCode::DISCONNECT_WITH_WILL {
        CloseReason::DisconnectWithWill
    } else {
        CloseReason::ClientDisconnect
    };
    broker.close(conn, reason);
    if ends_now {
        // A persistent session told to end with its connection: gone now (journaled as dropped),
        // not at the next expiry tick.
        broker.remove_session(key);
    }
}
