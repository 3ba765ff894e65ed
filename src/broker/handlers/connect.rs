//! CONNECT, all of it: the verdict on a connection's first bytes, the client id's home shard, the
//! TLS identity as user name, the client-id rules, the authentication verdict, session takeover or
//! resumption, and the CONNACK [MQTT-3.2] with its refusal counting.
//!
//! Two steps, because the runtime has two things to do in between that only it can:
//! 1. [`BrokerCore::handle_first_bytes`], on whichever shard accepted the connection, every time
//!    more bytes arrive: [`FirstPacket::Incomplete`] (read more), [`FirstPacket::Close`] (not a
//!    CONNECT, or malformed: closed without an answer, counted as `malformed_before_connect`), or a
//!    [`PendingConnect`] for shard [`home`](PendingConnect::home). An unsupported protocol level
//!    [MQTT-3.1.2-2], and a listener that takes the user name from the client certificate when the
//!    certificate has none, make a pending refusal, answered where it was read. Nothing is consumed:
//!    a connection that moves to its home shard takes its bytes along, and they are read again there.
//! 2. [`BrokerCore::handle_connect`], on the home shard, with the authentication plugins' verdict
//!    on [`PendingConnect::credentials`] (the runtime asks them off the event loop: a password
//!    hash takes milliseconds). Writes the CONNACK into the connection's outbox; a refused
//!    connection is left `Closing`.
//!
//! Refusals (CONNACK code ≠ 0) leave the connection `Closing`: nothing else is processed and no will is
//! ever published for it. Order of the checks: client id (0x02), then an anonymous client when
//! `allow-anonymous` is off (0x05), then the authentication plugins' verdict (0x05 when denied: a
//! wrong password or an unknown user get what Mosquitto answers MQTT 3.1.1 clients; also when it
//! allowed the client until a moment that has passed, e.g. a token's `exp`). Client-id rules: an empty id is given a generated one when clean session is
//! 1 and refused with 0x02 otherwise [MQTT-3.1.3-7/8]; MQTT 3.1 ids must be 1–23 characters. A
//! client certificate whose common name became the user name already authenticated the client
//! (Mosquitto's `use_identity_as_username` skips the password check too); topic checks apply.

use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;

use super::auth::{self, Authenticated};
use super::connect_session::{drop_will_the_topic_checks_deny, journal_session};
use super::connect_v5::{from_v5, granted_keep_alive};
use super::pending_connect::{Answer, FirstPacket, PendingConnect};
use crate::broker::connection::{Connection, ConnectionState};
use crate::broker::mqtt5::{self, refusal_reason, V5Link};
use crate::broker::session::Session;
use crate::broker::{packet_log, AuthVerdict, BrokerCore, CloseReason, ConnId, ConnectOutcome};
use crate::plugins::ClientInfo;
use crate::protocol::v5::{self, Properties, ReasonCode};
use crate::protocol::{
    decode, ConnAck, Connect, ConnectReturnCode, DecodeError, Packet, ProtocolLevel,
};

/// How a listener identifies its clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenerIdentity {
    /// By their CONNECT: user name and password, judged by the authentication plugins.
    Connect,
    /// By their client certificate (mutual TLS, `use-identity-as-username`): its common name, if
    /// it has one, is the user name, and the certificate is the authentication.
    Certificate { common_name: Option<String> },
}

/// CONNECT's first byte: packet type 1, reserved flags 0 [MQTT-2.2.2-1], in every MQTT version.
const CONNECT_FIRST_BYTE: u8 = 0x10;

impl BrokerCore {
    /// The first bytes read from a connection not known to any core yet (see the module
    /// documentation). `buf` is everything read so far; nothing is consumed.
    pub fn handle_first_bytes(&mut self, buf: &[u8], identity: &ListenerIdentity) -> FirstPacket {
        // Known from the first byte, without waiting for the length it seems to announce: a
        // PROXY protocol line (`P`, read as a PUBREC of 82 bytes) sent to a listener without
        // `proxy-protocol` is closed at once, not at `connect_timeout`.
        if buf.first().is_some_and(|&byte| byte != CONNECT_FIRST_BYTE) {
            return self.close_first("first packet is not CONNECT");
        }
        let mut probe = BytesMut::from(buf);
        let max = self.settings.max_packet_size;
        let decoded = match decode(&mut probe, max) {
            Err(DecodeError::UnsupportedProtocolLevel(5)) => {
                probe = BytesMut::from(buf);
                match v5::decode(&mut probe, max) {
                    Ok(Some(v5::Packet::Connect(connect))) => Ok(Some(from_v5(*connect))),
                    Ok(Some(_)) => return self.close_first("first packet is not CONNECT"),
                    Ok(None) => Ok(None),
                    Err(error) => Err(error),
                }
            }
            Ok(Some(Packet::Connect(connect))) => Ok(Some((connect, None))),
            Ok(Some(_)) => return self.close_first("first packet is not CONNECT"),
            Ok(None) => Ok(None),
            Err(error) => Err(error),
        };
        let (answer, length) = match decoded {
            Ok(None) => return FirstPacket::Incomplete,
            Ok(Some((mut connect, v5))) => {
                let length = buf.len() - probe.len();
                let refusal =
                    |code| Answer::Refuse(code, v5.as_ref().map(|_| refusal_reason(code)));
                let methods = self.settings.plugins.methods();
                let answer = match identity {
                    // A method no plugin offers [MQTT-3.1.2.11.9] (none is offered where the
                    // client certificate is the authentication): 0x8C. An offered one is run by
                    // `auth.rs` instead of asking the authentication plugins.
                    _ if v5
                        .as_ref()
                        .and_then(|p| p.authentication_method.as_deref())
                        .is_some_and(|name| {
                            methods.get(name).is_none() || *identity != ListenerIdentity::Connect
                        }) =>
                    {
                        Answer::Refuse(
                            ConnectReturnCode::NotAuthorized,
                            Some(ReasonCode::BAD_AUTHENTICATION_METHOD),
                        )
                    }
                    ListenerIdentity::Connect => Answer::Check {
                        connect,
                        by_certificate: false,
                        v5,
                    },
                    ListenerIdentity::Certificate {
                        common_name: Some(name),
                    } => {
                        connect.username = Some(name.clone());
                        Answer::Check {
                            connect,
                            by_certificate: true,
                            v5,
                        }
                    }
                    ListenerIdentity::Certificate { common_name: None } => {
                        refusal(ConnectReturnCode::NotAuthorized)
                    }
                };
                (answer, length)
            }
            Err(DecodeError::UnsupportedProtocolLevel(_)) => (
                Answer::Refuse(ConnectReturnCode::UnacceptableProtocolVersion, None),
                buf.len(),
            ),
            Err(_) => return self.close_first("malformed CONNECT"),
        };
        let home = match &answer {
            Answer::Check { connect, .. } => self.home_for(connect),
            Answer::Refuse(..) => self.shard,
        };
        FirstPacket::Connect(PendingConnect {
            home,
            length,
            answer,
            unregistered: false,
        })
    }

    /// The transport's framing broke before a whole first packet arrived (a WebSocket text
    /// frame, a TLS record that does not decrypt): counted like a malformed first packet.
    pub fn handle_broken_first_bytes(&mut self) {
        self.close_first("malformed TLS record or WebSocket frame");
    }

    fn close_first(&mut self, why: &str) -> FirstPacket {
        log::debug!("shard {}: closing connection: {why}", self.shard);
        self.stats.malformed_before_connect += 1;
        FirstPacket::Close
    }

    /// Answers a first packet on its home shard, with the authentication plugins' verdict on its
    /// [`credentials`](PendingConnect::credentials) (ignored when there are none). Writes CONNACK;
    /// a refused connection is left `Closing`.
    pub fn handle_connect(
        &mut self,
        conn: ConnId,
        pending: PendingConnect,
        auth: AuthVerdict,
        now: Instant,
    ) -> ConnectOutcome {
        self.clock = Some(now);
        match pending.answer {
            Answer::Refuse(code, v5) => self.refuse(conn, code, v5, None, now),
            Answer::Check {
                connect,
                by_certificate,
                v5,
            } => {
                self.stats.packets_received += 1;
                if self.settings.log_packets {
                    self.log_connect(&connect);
                }
                match v5 {
                    Some(properties)
                        if !by_certificate && properties.authentication_method.is_some() =>
                    {
                        auth::start(self, conn, connect, properties, now)
                    }
                    v5 if pending.unregistered && self.new_persistent(&connect, v5.as_deref()) => {
                        let reason = v5.map(|_| ReasonCode::SERVER_UNAVAILABLE);
                        let code = ConnectReturnCode::ServerUnavailable;
                        self.refuse(conn, code, reason, Some(&connect), now)
                    }
                    v5 => {
                        let auth = if by_certificate {
                            AuthVerdict::Allowed
                        } else {
                            auth
                        };
                        check(self, conn, *connect, v5, auth, None, now)
                    }
                }
            }
        }
    }

    /// `connect` would make a session that outlives its connection, and this shard holds none
    /// for its client id.
    fn new_persistent(&self, connect: &Connect, v5: Option<&Properties>) -> bool {
        let lasting = match v5 {
            Some(properties) => properties.session_expiry_interval.unwrap_or(0) > 0,
            None => !connect.clean_session,
        };
        lasting && !self.session_by_client_id.contains_key(&*connect.client_id)
    }

    /// Refuses a CONNECT with `code`, or to an MQTT 5 client with reason code `v5` (`connect`:
    /// `None` when it was refused before decoding).
    pub(super) fn refuse(
        &mut self,
        conn: ConnId,
        code: ConnectReturnCode,
        v5: Option<ReasonCode>,
        connect: Option<&Connect>,
        now: Instant,
    ) -> ConnectOutcome {
        self.stats.count_refusal(code);
        if let Some(connect) = connect {
            log::log!(
                target: packet_log::TARGET,
                packet_log::refusal_level(self.settings.log_packets),
                "Denied CONNECT from '{}'{}: CONNACK {} ({code:?})",
                connect.client_id,
                packet_log::User(connect.username.as_deref()),
                code as u8
            );
        }
        let protocol = connect.map_or(ProtocolLevel::V311, |c| c.protocol);
        let mut connection = Connection::new(usize::MAX, protocol, 0, now);
        connection.state = ConnectionState::Closing;
        self.install_connection(conn, connection);
        match v5 {
            Some(reason) => self.write_v5(
                conn,
                &v5::Packet::ConnAck(v5::ConnAck {
                    session_present: false,
                    reason,
                    properties: Properties::default(),
                }),
            ),
            None => self.write(
                conn,
                &Packet::ConnAck(ConnAck {
                    session_present: false,
                    code,
                }),
            ),
        }
        ConnectOutcome {
            code,
            session_present: false,
            authenticating: false,
        }
    }

    /// Answers a CONNECT whose enhanced authentication exchange succeeded (`auth.rs`): as any
    /// CONNECT the plugins allowed, its CONNACK carrying the method and its final data.
    pub(super) fn answer_authenticated(
        &mut self,
        conn: ConnId,
        connect: Connect,
        properties: Box<Properties>,
        authenticated: Authenticated,
        now: Instant,
    ) -> ConnectOutcome {
        let allowed = AuthVerdict::Allowed;
        check(
            self,
            conn,
            connect,
            Some(properties),
            allowed,
            Some(authenticated),
            now,
        )
    }

    /// Serves `conn` as `connection` from now on. What an enhanced authentication exchange wrote
    /// before (its AUTH packets), if the runtime has not taken it yet, is sent first.
    pub(super) fn install_connection(&mut self, conn: ConnId, connection: Connection) {
        if let Some(mut before) = self.connections.insert(conn, connection) {
            if !before.outbox.is_empty() {
                if let Some(now) = self.connections.get_mut(&conn) {
                    before.outbox.extend_from_slice(&now.outbox);
                    std::mem::swap(&mut before.outbox, &mut now.outbox);
                }
            }
            self.outbox_pool.give(before.outbox);
        }
    }

    /// A client id for a CONNECT that asked for one, homed on this shard (the session is made
    /// here): an MQTT 5 client learns it (Assigned Client Identifier) and may connect with it
    /// again, and that CONNECT goes to the id's home shard, which must be the one holding it.
    pub(in crate::broker) fn generate_client_id(&mut self) -> String {
        loop {
            self.generated_ids += 1;
            let id = format!(
                "auto-{:x}-{}-{}",
                self.id_seed, self.shard, self.generated_ids
            );
            if crate::broker::home_shard(&id, self.shards) == self.shard {
                return id;
            }
        }
    }
}

/// A decoded CONNECT on its home shard: client id, anonymity, verdict, then takeover, session and
/// CONNACK. `authenticated`: the enhanced authentication method that authenticated it (`auth.rs`).
fn check(
    broker: &mut BrokerCore,
    conn: ConnId,
    connect: Connect,
    v5: Option<Box<Properties>>,
    auth: AuthVerdict,
    authenticated: Option<Authenticated>,
    now: Instant,
) -> ConnectOutcome {
    let protocol = connect.protocol;
    let refuse = |broker: &mut BrokerCore, code, connect: &Connect| {
        let reason = v5.as_ref().map(|_| refusal_reason(code));
        broker.refuse(conn, code, reason, Some(connect), now)
    };
    if protocol == ProtocolLevel::V31
        && (connect.client_id.is_empty() || connect.client_id.chars().count() > 23)
    {
        return refuse(broker, ConnectReturnCode::IdentifierRejected, &connect);
    }
    // MQTT 5 assigns an id whatever Clean Start says [MQTT-3.1.3-6].
    if connect.client_id.is_empty() && !connect.clean_session && v5.is_none() {
        return refuse(broker, ConnectReturnCode::IdentifierRejected, &connect);
    }
    if !broker.settings.allow_anonymous && connect.username.is_none() {
        return refuse(broker, ConnectReturnCode::NotAuthorized, &connect);
    }
    let max_keepalive = broker.settings.max_keepalive;
    let Some(keep_alive) = granted_keep_alive(connect.keep_alive, max_keepalive, v5.is_some())
    else {
        return refuse(broker, ConnectReturnCode::IdentifierRejected, &connect);
    };
    // Allowed until a moment (`credentials_expiry.rs`), or without end.
    let until = match auth {
        AuthVerdict::Allowed => None,
        AuthVerdict::AllowedUntil(until) if until > now => Some(until),
        // Denied, or allowed until a moment that passed while the verdict was made. MQTT 5 has
        // a code of its own for it: 0x86 Bad User Name or Password.
        AuthVerdict::Denied | AuthVerdict::AllowedUntil(_) => {
            let code = if v5.is_some() {
                ConnectReturnCode::BadUserNameOrPassword
            } else {
                ConnectReturnCode::NotAuthorized
            };
            return refuse(broker, code, &connect);
        }
    };
    let assigned = connect.client_id.is_empty();
    let client_id: Arc<str> = if assigned {
        broker.generate_client_id().into()
    } else {
        connect.client_id.into()
    };
    // MQTT 3: a clean session ends with its connection. MQTT 5: a session whose Session Expiry
    // Interval is 0 (or absent) does [MQTT-3.1.2-23]; a longer one is kept, within the broker's
    // `session_expiry_interval`.
    let (ends_with_connection, expiry_interval) = match v5.as_deref() {
        Some(properties) => {
            let asked = properties.session_expiry_interval.unwrap_or(0);
            (
                asked == 0,
                mqtt5::session_expiry(asked, broker.settings.session_expiry_interval),
            )
        }
        None => (
            connect.clean_session,
            broker.settings.session_expiry_interval,
        ),
    };

    // Session takeover: the same client id connected again closes the old connection [MQTT-3.1.4-2].
    if let Some(&old_key) = broker.session_by_client_id.get(&client_id) {
        if let Some(old_conn) = broker.sessions.get(old_key).and_then(|s| s.conn) {
            log::info!("client '{client_id}' connected again: closing its previous connection");
            broker.stats.sessions_taken_over += 1;
            broker.close(old_conn, CloseReason::TakenOver);
        }
    }
    // A new connection to the session: its delayed will is not published [MQTT-3.1.3-9].
    // A session past its expiry is gone, even before the tick that would discard it (a restart
    // restores it with the deadline it had).
    broker.expire_if_due(&client_id, now);
    if let Some(&old_key) = broker.session_by_client_id.get(&client_id) {
        broker.cancel_delayed_will(old_key);
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
        Some(key) => {
            // Resumed before it expired: its offline time ends here.
            broker.set_offline_since(key, None);
            key
        }
        None => {
            let session = Session::new(
                client_id.clone(),
                ends_with_connection,
                broker.settings.max_inflight,
                broker.queue_limits(),
            );
            let key = broker.sessions.insert(session);
            broker.session_by_client_id.insert(client_id.clone(), key);
            key
        }
    };
    let mut was_persistent = false;
    if let Some(session) = broker.sessions.get_mut(key) {
        was_persistent = session_present && !session.clean;
        session.conn = Some(conn);
        session.clean = ends_with_connection;
        session.username = connect.username.map(Arc::from);
        session.user_known = true;
        session.will = connect.will.map(Box::new);
        session.expiry_interval = expiry_interval;
        session.v5 = v5.is_some();
        session.set_window(
            broker.settings.max_inflight,
            v5.as_deref().and_then(|p| p.receive_maximum),
        );
    }
    drop_will_the_topic_checks_deny(broker, key);
    let will_delay = v5.as_deref().and_then(|p| p.will_delay_interval);
    journal_session(broker, key, was_persistent, will_delay.unwrap_or(0));
    let mut connection = Connection::new(key, protocol, keep_alive, now);
    connection.v5 = v5.as_deref().map(|p| Box::new(V5Link::new(p)));
    let auth_reply = authenticated.map(|authenticated| {
        let reply = (authenticated.method.clone(), authenticated.data.clone());
        if let Some(link) = connection.v5.as_mut() {
            link.auth = Some(authenticated.into_link());
        }
        reply
    });
    let username = broker.sessions.get(key).and_then(|s| s.username.clone());
    broker.install_connection(conn, connection);
    if let Some(until) = until {
        broker.credential_deadlines.file(conn, until);
    }
    broker.stats.connections_accepted += 1;
    match v5.as_deref() {
        Some(properties) => {
            let mut connack = broker.connack_v5(
                session_present,
                properties,
                assigned.then_some(&*client_id),
                (!ends_with_connection).then_some(expiry_interval),
                (keep_alive != connect.keep_alive).then_some(keep_alive),
            );
            if let (v5::Packet::ConnAck(ack), Some((method, data))) = (&mut connack, auth_reply) {
                ack.properties.authentication_method = Some(method);
                ack.properties.authentication_data = data;
            }
            broker.write_v5(conn, &connack);
        }
        None => broker.write(
            conn,
            &Packet::ConnAck(ConnAck {
                session_present,
                code: ConnectReturnCode::Accepted,
            }),
        ),
    }
    if broker.session_drop_pending(&client_id) {
        // The CONNACK (and whatever follows it) leaves once a `SessionDrop` of this client id,
        // from this CONNECT or an earlier one (whose CONNACK a takeover cut off), is durable:
        // otherwise a crash would bring back a session the client was told is gone.
        broker.hold_outbox_until_durable(conn);
    }
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
        keep_alive
    );
    ConnectOutcome {
        code: ConnectReturnCode::Accepted,
        session_present,
        authenticating: false,
    }
}
