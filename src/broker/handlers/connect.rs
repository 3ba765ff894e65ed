//! CONNECT on the client's home shard: validate, authenticate, take over or resume the session,
//! answer CONNACK [MQTT-3.2].
//!
//! Refusals (CONNACK code ≠ 0) leave the connection `Closing`: nothing else is processed and no will is
//! ever published for it. Order of the checks: client id (0x02), then an anonymous client when
//! `allow-anonymous` is off (0x05), then the authentication plugins' verdict (0x05 when denied: a
//! wrong password or an unknown user get what Mosquitto answers MQTT 3.1.1 clients). Client-id rules: an empty id is given a generated one when clean session is
//! 1 and refused with 0x02 otherwise [MQTT-3.1.3-7/8]; MQTT 3.1 ids must be 1–23 characters.

use std::sync::Arc;
use std::time::Instant;

use crate::broker::connection::Connection;
use crate::broker::session::Session;
use crate::broker::{AuthVerdict, BrokerCore, CloseReason, ConnId, ConnectOutcome};
use crate::plugins::ClientInfo;
use crate::protocol::{ConnAck, Connect, ConnectReturnCode, Packet, ProtocolLevel};

pub(in crate::broker) fn handle(
    broker: &mut BrokerCore,
    conn: ConnId,
    connect: Connect,
    auth: AuthVerdict,
    now: Instant,
) -> ConnectOutcome {
    let protocol = connect.protocol;
    if protocol == ProtocolLevel::V31
        && (connect.client_id.is_empty() || connect.client_id.chars().count() > 23)
    {
        return broker.refuse(conn, ConnectReturnCode::IdentifierRejected, protocol, now);
    }
    if connect.client_id.is_empty() && !connect.clean_session {
        return broker.refuse(conn, ConnectReturnCode::IdentifierRejected, protocol, now);
    }
    if !broker.settings.allow_anonymous && connect.username.is_none() {
        return broker.refuse(conn, ConnectReturnCode::NotAuthorized, protocol, now);
    }
    if auth == AuthVerdict::Denied {
        return broker.refuse(conn, ConnectReturnCode::NotAuthorized, protocol, now);
    }
    let client_id: Arc<str> = if connect.client_id.is_empty() {
        broker.generate_client_id().into()
    } else {
        connect.client_id.into()
    };

    // Session takeover: the same client id connected again closes the old connection [MQTT-3.1.4-2].
    if let Some(&old_key) = broker.session_by_client_id.get(&client_id) {
        if let Some(old_conn) = broker.sessions.get(old_key).and_then(|s| s.conn) {
            log::info!("client '{client_id}' connected again: closing its previous connection");
            broker.stats.sessions_taken_over += 1;
            broker.close(old_conn, CloseReason::TakenOver);
        }
    }
    // A clean session discards any previous one [MQTT-3.1.2-6].
    if connect.clean_session {
        if let Some(&old_key) = broker.session_by_client_id.get(&client_id) {
            broker.remove_session(old_key);
        }
    }
    let existing = broker.session_by_client_id.get(&client_id).copied();
    let session_present = existing.is_some();
    let key = match existing {
        Some(key) => key,
        None => {
            let session = Session::new(
                client_id.clone(),
                connect.clean_session,
                broker.settings.max_inflight,
                broker.queue_limits(),
            );
            let key = broker.sessions.insert(session);
            broker.session_by_client_id.insert(client_id.clone(), key);
            key
        }
    };
    if let Some(session) = broker.sessions.get_mut(key) {
        session.conn = Some(conn);
        session.clean = connect.clean_session;
        session.will = connect.will.map(Box::new);
    }
    let mut connection = Connection::new(key, protocol, connect.keep_alive, now);
    connection.username = connect.username.map(Arc::from);
    let username = connection.username.clone();
    broker.connections.insert(conn, connection);
    broker.stats.connections_accepted += 1;
    broker.write(
        conn,
        &Packet::ConnAck(ConnAck {
            session_present,
            code: ConnectReturnCode::Accepted,
        }),
    );
    if session_present {
        broker.resume_session(key, conn);
    }
    if broker.settings.plugins.has_events() {
        broker.settings.plugins.client_connected(&ClientInfo {
            client_id: &client_id,
            username: username.as_deref(),
        });
    }
    log::debug!(
        "client '{client_id}' connected on shard {} (clean session {}, keep-alive {}s)",
        broker.shard,
        connect.clean_session,
        connect.keep_alive
    );
    ConnectOutcome {
        code: ConnectReturnCode::Accepted,
        session_present,
    }
}
