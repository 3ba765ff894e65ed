//! AUTH, and the MQTT 5 enhanced authentication exchanges it carries [MQTT-4.12], [MQTT-3.15].
//!
//! At CONNECT: a CONNECT whose Authentication Method an offered [`AuthMethod`] has
//! (`plugins/enhanced_auth.rs`; one no method offers got CONNACK 0x8C in `connect.rs`) starts an
//! exchange with its Authentication Data instead of asking the authentication plugins. The method
//! answers each client message:
//! - Continue: AUTH 0x18 Continue authentication with the method's data; the connection waits
//!   ([`ConnectionState::Authenticating`]) for the client's AUTH 0x18, with the same method
//!   [MQTT-4.12.0-2/3/5];
//! - Success: the CONNECT is answered as any other (`connect.rs`), its CONNACK 0x00 carrying the
//!   method and the method's final data [MQTT-4.12.0-6]; the session's user name is the one the
//!   method authenticated (a CONNECT user name that differs is refused, 0x87);
//! - Failure: CONNACK 0x86 Bad User Name or Password or 0x87 Not authorized, and close.
//!
//! While authenticating, the client may send only AUTH or DISCONNECT [MQTT-3.1.2-30]: anything
//! else, a method that changes or a reason code other than 0x18, is CONNACK 0x82 Protocol Error.
//! The exchange must end within `connect_timeout` of the CONNECT (`BrokerCore::handle_tick`).
//!
//! Re-authentication [MQTT-4.12.1]: a client that connected with a method sends AUTH 0x19
//! Re-authenticate with the same method, and the same exchange runs on the live connection (its
//! packets keep flowing meanwhile). Success: AUTH 0x00 Success with the final data; Failure:
//! DISCONNECT 0x87 Not authorized, and close. A client that did not use enhanced
//! authentication may send no AUTH, nor change methods: DISCONNECT 0x82 Protocol Error.

use std::time::Instant;

use bytes::Bytes;

use crate::broker::connection::{CloseReason, Connection, ConnectionState};
use crate::broker::mqtt5::{self, refusal_reason, EnhancedAuth, V5Link};
use crate::broker::{BrokerCore, ConnId, ConnectOutcome};
use crate::plugins::enhanced_auth::Exchange;
use crate::plugins::AuthStep;
use crate::protocol::v5::{self, Properties, ReasonCode};
use crate::protocol::{Connect, ConnectReturnCode};

/// What the CONNACK of a CONNECT authenticated by a method adds, and what its connection keeps.
#[derive(Debug)]
pub(super) struct Authenticated {
    pub method: String,
    /// The method's final data for the client.
    pub data: Option<Bytes>,
}

impl Authenticated {
    /// What the connection keeps for re-authentications.
    pub(super) fn into_link(self) -> Box<EnhancedAuth> {
        Box::new(EnhancedAuth {
            method: self.method,
            exchange: None,
            waiting: None,
        })
    }
}

/// A CONNECT that names an offered method: runs its first step (see the module documentation).
pub(super) fn start(
    broker: &mut BrokerCore,
    conn: ConnId,
    connect: Box<Connect>,
    properties: Box<Properties>,
    now: Instant,
) -> ConnectOutcome {
    let name = properties.authentication_method.clone().unwrap_or_default();
    let Some(method) = broker.settings.plugins.methods().get(&name).cloned() else {
        // `handle_first_bytes` refused it already; the configuration changed in between.
        return broker.refuse(
            conn,
            ConnectReturnCode::NotAuthorized,
            Some(ReasonCode::BAD_AUTHENTICATION_METHOD),
            Some(&connect),
            now,
        );
    };
    let mut exchange = Exchange::start(method.as_ref());
    let step = exchange.step(properties.authentication_data.as_deref());
    let mut connection = Connection::new(usize::MAX, connect.protocol, connect.keep_alive, now);
    connection.state = ConnectionState::Authenticating;
    let mut link = V5Link::new(&properties);
    link.auth = Some(Box::new(EnhancedAuth {
        method: name,
        exchange: Some(exchange),
        waiting: Some((connect, properties)),
    }));
    connection.v5 = Some(Box::new(link));
    broker.install_connection(conn, connection);
    answer_connecting(broker, conn, step, now)
}

/// A packet from a connection whose CONNECT's exchange is under way.
pub(super) fn handle_connecting(broker: &mut BrokerCore, conn: ConnId, packet: v5::Packet) {
    let Some(now) = last_time(broker, conn) else {
        return;
    };
    // The CONNECT is answered, or not yet, in the outbox; the runtime learns nothing more.
    let _outcome = match packet {
        v5::Packet::Auth(auth) => {
            let Some(link) = enhanced(broker, conn) else {
                return;
            };
            let same_method =
                auth.properties.authentication_method.as_deref() == Some(&link.method);
            match link.exchange.as_mut() {
                Some(exchange)
                    if same_method && auth.reason == ReasonCode::CONTINUE_AUTHENTICATION =>
                {
                    let step = exchange.step(auth.properties.authentication_data.as_deref());
                    answer_connecting(broker, conn, step, now)
                }
                _ => refuse_connecting(broker, conn, ReasonCode::PROTOCOL_ERROR, now),
            }
        }
        v5::Packet::Disconnect(_) => {
            broker.close(conn, CloseReason::ClientDisconnect);
            return;
        }
        other => {
            log::debug!(
                "connection {conn}: {} while authenticating, closing",
                other.name()
            );
            refuse_connecting(broker, conn, ReasonCode::PROTOCOL_ERROR, now)
        }
    };
}

/// The method's answer during a CONNECT's exchange.
fn answer_connecting(
    broker: &mut BrokerCore,
    conn: ConnId,
    step: AuthStep,
    now: Instant,
) -> ConnectOutcome {
    match step {
        AuthStep::Continue(data) => {
            let method = enhanced(broker, conn).map(|link| link.method.clone());
            broker.write_v5(
                conn,
                &auth_packet(ReasonCode::CONTINUE_AUTHENTICATION, method, Some(data)),
            );
            ConnectOutcome {
                code: ConnectReturnCode::Accepted,
                session_present: false,
                authenticating: true,
            }
        }
        AuthStep::Failure(reason) => refuse_connecting(broker, conn, reason, now),
        AuthStep::Success { user, data } => {
            let Some(link) = enhanced(broker, conn) else {
                return refuse_connecting(broker, conn, ReasonCode::NOT_AUTHORIZED, now);
            };
            let method = link.method.clone();
            let Some((mut connect, properties)) = link.waiting.take() else {
                return refuse_connecting(broker, conn, ReasonCode::PROTOCOL_ERROR, now);
            };
            if let Some(user) = user {
                if connect
                    .username
                    .as_ref()
                    .is_some_and(|named| *named != user)
                {
                    log::debug!(
                        "connection {conn}: CONNECT user name is not the one authenticated"
                    );
                    return refuse_with(broker, conn, ReasonCode::NOT_AUTHORIZED, &connect, now);
                }
                connect.username = Some(user);
            }
            let authenticated = Authenticated {
                method,
                data: data.map(Bytes::from),
            };
            broker.answer_authenticated(conn, *connect, properties, authenticated, now)
        }
    }
}

/// Bytes that do not decode (or a broken transport) while a CONNECT's exchange runs: CONNACK
/// with `reason` (0x81 Malformed Packet, ...), counted, and close.
pub(in crate::broker) fn refuse_authenticating(
    broker: &mut BrokerCore,
    conn: ConnId,
    reason: ReasonCode,
) {
    if let Some(now) = last_time(broker, conn) {
        refuse_connecting(broker, conn, reason, now);
    }
}

/// Refuses a CONNECT whose exchange failed (or broke the protocol) with `reason`.
fn refuse_connecting(
    broker: &mut BrokerCore,
    conn: ConnId,
    reason: ReasonCode,
    now: Instant,
) -> ConnectOutcome {
    let waiting = broker
        .connections
        .get_mut(&conn)
        .and_then(|c| c.v5.as_mut())
        .and_then(|link| link.auth.as_mut())
        .and_then(|auth| auth.waiting.take());
    if reason == ReasonCode::PROTOCOL_ERROR || reason == ReasonCode::MALFORMED_PACKET {
        broker.stats.protocol_errors += 1;
    }
    match waiting {
        Some((connect, _)) => refuse_with(broker, conn, reason, &connect, now),
        None => broker.refuse(conn, code_of(reason), Some(reason), None, now),
    }
}

fn refuse_with(
    broker: &mut BrokerCore,
    conn: ConnId,
    reason: ReasonCode,
    connect: &Connect,
    now: Instant,
) -> ConnectOutcome {
    broker.refuse(conn, code_of(reason), Some(reason), Some(connect), now)
}

/// The MQTT 3 code a refusal is counted under.
fn code_of(reason: ReasonCode) -> ConnectReturnCode {
    if reason == refusal_reason(ConnectReturnCode::BadUserNameOrPassword) {
        ConnectReturnCode::BadUserNameOrPassword
    } else {
        ConnectReturnCode::NotAuthorized
    }
}

/// AUTH from a connected client: a re-authentication (see the module documentation).
pub(super) fn handle(broker: &mut BrokerCore, conn: ConnId, auth: v5::Auth) {
    let Some(link) = enhanced(broker, conn) else {
        // It did not connect with a method: no AUTH may come [MQTT-4.12.0-1].
        log::debug!("connection {conn}: AUTH without enhanced authentication, closing");
        broker.protocol_error_v5(conn, ReasonCode::PROTOCOL_ERROR);
        return;
    };
    let same_method = auth.properties.authentication_method.as_deref() == Some(&link.method);
    let under_way = link.exchange.is_some();
    let method = link.method.clone();
    let data = auth.properties.authentication_data.as_deref();
    let step = if same_method && !under_way && auth.reason == ReasonCode::RE_AUTHENTICATE {
        let Some(offered) = broker.settings.plugins.methods().get(&method).cloned() else {
            // No longer offered (the configuration was reloaded without it).
            return fail_reauthentication(broker, conn, ReasonCode::NOT_AUTHORIZED);
        };
        let mut exchange = Exchange::start(offered.as_ref());
        let step = exchange.step(data);
        if let Some(link) = enhanced(broker, conn) {
            link.exchange = Some(exchange);
        }
        step
    } else if same_method && under_way && auth.reason == ReasonCode::CONTINUE_AUTHENTICATION {
        match enhanced(broker, conn).and_then(|link| link.exchange.as_mut()) {
            Some(exchange) => exchange.step(data),
            None => return,
        }
    } else {
        log::debug!(
            "connection {conn}: AUTH {:?} out of turn or with another method, closing",
            auth.reason
        );
        broker.protocol_error_v5(conn, ReasonCode::PROTOCOL_ERROR);
        return;
    };
    match step {
        AuthStep::Continue(data) => broker.write_v5(
            conn,
            &auth_packet(
                ReasonCode::CONTINUE_AUTHENTICATION,
                Some(method),
                Some(data),
            ),
        ),
        AuthStep::Success { user, data } => {
            if let Some(link) = enhanced(broker, conn) {
                link.exchange = None;
            }
            let session_user = broker.client_identity(conn).and_then(|(_, user)| user);
            if user.is_some_and(|user| session_user.as_deref() != Some(user.as_str())) {
                // Another identity than the session's: its topic rights would not match.
                return fail_reauthentication(broker, conn, ReasonCode::NOT_AUTHORIZED);
            }
            broker.write_v5(conn, &auth_packet(ReasonCode::SUCCESS, Some(method), data));
        }
        AuthStep::Failure(reason) => fail_reauthentication(broker, conn, reason),
    }
}

/// Closes a connection whose re-authentication failed with `reason`: DISCONNECT 0x87 Not
/// authorized (0x86 is not a DISCONNECT reason code [MQTT-3.14.2.1]; a method's other codes are
/// sent as they are).
fn fail_reauthentication(broker: &mut BrokerCore, conn: ConnId, reason: ReasonCode) {
    log::debug!("connection {conn}: re-authentication failed ({reason:?}), closing");
    let reason = if reason == ReasonCode::BAD_USER_NAME_OR_PASSWORD {
        ReasonCode::NOT_AUTHORIZED
    } else {
        reason
    };
    broker.write_v5(conn, &mqtt5::disconnect(reason));
    broker.close(conn, CloseReason::AuthenticationFailed);
}

/// The time of the call being handled (the core has no clock of its own); `None` when `conn` is
/// gone.
fn last_time(broker: &BrokerCore, conn: ConnId) -> Option<Instant> {
    let connection = broker.connections.get(&conn)?;
    Some(broker.clock.unwrap_or(connection.last_activity))
}

/// The connection's enhanced authentication, if it uses one.
fn enhanced(broker: &mut BrokerCore, conn: ConnId) -> Option<&mut EnhancedAuth> {
    broker
        .connections
        .get_mut(&conn)?
        .v5
        .as_mut()?
        .auth
        .as_deref_mut()
}

fn auth_packet(reason: ReasonCode, method: Option<String>, data: Option<Vec<u8>>) -> v5::Packet {
    v5::Packet::Auth(v5::Auth {
        reason,
        properties: Properties {
            authentication_method: method,
            authentication_data: data.map(Bytes::from),
            ..Properties::default()
        },
    })
}
