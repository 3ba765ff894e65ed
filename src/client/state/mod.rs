//! The client side of one MQTT session as a sans-IO state machine.
//!
//! This module does no I/O and reads no clock: the driver passes every input in (a decoded packet,
//! "the transport is up", "the transport is gone", a user request, `now`) and takes every output out
//! (packets to write, events for the user, the next deadline). The same code therefore runs in the
//! deterministic unit tests (`tests.rs`, `tests_session.rs`), which move packets by hand.
//!
//! ```text
//!   user request ─► publish / subscribe / unsubscribe / disconnect ┐
//!   transport    ─► handle_transport_up / handle_packet / handle_transport_down ├─► ClientState
//!   clock        ─► handle_timeout(now)                            ┘       │
//!   poll_transmit() ◄─ packets to write    poll_event() ◄─ completions, messages    poll_timeout()
//! ```
//!
//! Methods come in three groups, one file each: getters (this file), `handle_*` (inputs) plus the
//! user requests (`inputs.rs`), and `poll_*` (outputs, `outputs.rs`). MQTT 5 (`v5.rs`) is a layer
//! on the same session: its packets are read into the MQTT 3 flows (reason codes into outcomes,
//! topic aliases into topics) and the flows' packets are written as MQTT 5 packets, with the
//! message's properties, the server's limits (Receive Maximum, Maximum Packet Size, Topic Alias
//! Maximum, Server Keep Alive, Maximum QoS, Retain Available) and outgoing topic aliases applied.
//!
//! What the state keeps across connections (the client's half of the MQTT session):
//! - outgoing QoS 1/2 messages in flight, in the order they were first sent, each at its stage
//!   (awaiting PUBACK, PUBREC or PUBCOMP); they are re-sent after every reconnect, PUBLISH with DUP
//!   or PUBREL as the stage says [MQTT-4.4.0-1];
//! - messages waiting for an in-flight slot (`max_inflight`) or for a connection;
//! - incoming QoS 2 packet ids between PUBREC and PUBREL, so a re-sent PUBLISH is not delivered
//!   twice [MQTT-4.3.3-2] (forgotten when a clean session starts);
//! - SUBSCRIBE / UNSUBSCRIBE requests not yet acknowledged (re-sent after a reconnect);
//! - the granted subscriptions, re-subscribed after a reconnect whenever the broker reports no
//!   session (clean session, or a broker that lost it).
//!
//! Each request carries a waiter `W` chosen by the driver (a reply channel in the real client, an
//! integer in the tests). The state hands it back in exactly one [`Event`], or in the list returned
//! by [`ClientState::disconnect`] / [`ClientState::take_waiters`], so no caller is ever forgotten.
//!
//! # Layout
//! `mod.rs` holds the public types, the private session types, [`ClientState`] with its
//! constructor and getters, and small free helpers; `inputs.rs` everything that changes the state:
//! the `handle_*` inputs, the user requests, and the per-packet handlers and bookkeeping behind
//! them (packet ids, sending, moving queued messages in flight); `acks.rs` the handlers of the
//! broker's acknowledgements; `v5_layer.rs` MQTT 5; `outputs.rs` the `poll_*` methods
//! that hand out packets, events and the next deadline; `tests.rs` the hand-driven test harness
//! and the tests of one connection; `tests_session.rs` the tests of what survives a reconnect and
//! of how the session ends; `tests_v5.rs` the MQTT 5 layer.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::protocol::v5::{self, Properties, ReasonCode};
use crate::protocol::{
    ConnAck, Connect, ConnectReturnCode, LastWill, Message, Packet, ProtocolLevel, PubAck, PubComp,
    PubRec, PubRel, Publish, QoS, SubAck, Subscribe, SubscribeFilter, SubscribeReturnCode,
    TopicFilter, TopicName, UnsubAck, Unsubscribe,
};

mod acks;
mod inputs;
mod outputs;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_session;
#[cfg(test)]
mod tests_v5;
mod v5_layer;

pub use v5_layer::reason_name;

/// Everything the CONNECT packet and the timers need; fixed for the life of the state.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    pub client_id: String,
    pub clean_session: bool,
    /// Seconds; 0 turns keep-alive off.
    pub keep_alive: u16,
    /// How long before the keep-alive period ends the PINGREQ goes out.
    pub ping_delay: Duration,
    /// How long to wait for CONNACK after the transport is up.
    pub connection_timeout: Duration,
    pub will: Option<LastWill>,
    pub username: Option<String>,
    pub password: Option<Bytes>,
    /// Outgoing QoS 1/2 messages awaiting acknowledgement at once (at least 1).
    pub max_inflight: usize,
    /// MQTT 3.1, 3.1.1 or 5.
    pub protocol: ProtocolLevel,
    /// What only MQTT 5 sends; ignored at the other levels.
    pub v5: V5Options,
}

/// The MQTT 5 parts of a session: properties of CONNECT, of the will and of the DISCONNECT that
/// `disconnect` sends, and whether to use topic aliases. CONNECT's Topic Alias Maximum and
/// Maximum Packet Size also set what this client accepts.
#[derive(Debug, Clone, Default)]
pub struct V5Options {
    pub connect_properties: Properties,
    pub will_properties: Properties,
    /// Send a Topic Alias instead of a topic name already sent on this connection, up to the
    /// server's Topic Alias Maximum.
    pub topic_aliases: bool,
    /// Ask No Local on every subscription: the server does not send this client back what it
    /// published itself (a bridge's loop prevention).
    pub no_local: bool,
}

/// A message received from the broker, and how it came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub message: Message,
    /// The broker marked it as a possible re-delivery.
    pub dup: bool,
    /// MQTT 5 PUBLISH properties (user properties, message expiry, content type, ...), without
    /// the Topic Alias; `None` at MQTT 3 or when the PUBLISH had none.
    pub properties: Option<Box<Properties>>,
}

/// What the state tells the driver (and, through it, the user).
#[derive(Debug, PartialEq, Eq)]
pub enum Event<W> {
    /// CONNACK accepted the connection.
    Connected { session_present: bool },
    /// A message to deliver to the user.
    Message(Delivery),
    /// A publish finished its QoS flow (QoS 0: written; 1: PUBACK; 2: PUBCOMP).
    Published(W),
    /// A publish did not complete: the server refused it (MQTT 5 reason code), or it breaks a
    /// limit the server announced in CONNACK.
    PublishFailed(W, PublishFailure),
    /// SUBACK for a user's SUBSCRIBE: one return code per filter, in order.
    Subscribed(W, Vec<SubscribeReturnCode>),
    /// UNSUBACK for a user's UNSUBSCRIBE.
    Unsubscribed(W),
    /// SUBACK for the SUBSCRIBE that restored the known subscriptions after a reconnect.
    Restored(Vec<(TopicFilter, SubscribeReturnCode)>),
}

/// Why the current connection must be closed. The session state survives it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionError {
    #[error("connection refused: {}", refusal_reason(*.0))]
    Refused(ConnectReturnCode),
    #[error("no CONNACK within {0:?}")]
    ConnAckTimeout(Duration),
    #[error("no answer to PINGREQ within {0:?}")]
    PingTimeout(Duration),
    #[error("protocol violation by the broker: {0}")]
    Violation(String),
    /// An MQTT 5 CONNACK with a failure reason code.
    #[error("connection refused: {}", with_reason(*code, reason_string))]
    RefusedV5 {
        code: ReasonCode,
        reason_string: Option<String>,
    },
    /// The server sent an MQTT 5 DISCONNECT.
    #[error("the broker disconnected: {}", with_reason(*code, reason_string))]
    ServerDisconnect {
        code: ReasonCode,
        reason_string: Option<String>,
    },
}

/// Why one publish failed while the connection goes on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishFailure {
    /// PUBACK or PUBREC with a failure reason code.
    #[error("the broker refused the message: {}", with_reason(*code, reason_string))]
    Refused {
        code: ReasonCode,
        reason_string: Option<String>,
    },
    /// The server's CONNACK rules it out (Maximum Packet Size, Maximum QoS, Retain Available).
    #[error("the broker does not accept this message: {0}")]
    NotAllowed(String),
}

/// An MQTT 5 reason code in words, its number, and the server's Reason String if it sent one.
pub fn with_reason(code: ReasonCode, reason_string: &Option<String>) -> String {
    match reason_string {
        Some(text) => format!("{} (0x{:02x}): {text}", reason_name(code), code.0),
        None => format!("{} (0x{:02x})", reason_name(code), code.0),
    }
}

/// Why a request was not accepted; the waiter comes back with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `disconnect` was called: the state takes no more work.
    Closed,
    /// All 65,535 packet identifiers are in use.
    NoPacketId,
}

/// The CONNACK return code in words.
pub fn refusal_reason(code: ConnectReturnCode) -> &'static str {
    match code {
        ConnectReturnCode::Accepted => "accepted",
        ConnectReturnCode::UnacceptableProtocolVersion => "unacceptable protocol version",
        ConnectReturnCode::IdentifierRejected => "client identifier rejected",
        ConnectReturnCode::ServerUnavailable => "server unavailable",
        ConnectReturnCode::BadUserNameOrPassword => "bad user name or password",
        ConnectReturnCode::NotAuthorized => "not authorized",
    }
}

/// The wait before reconnect attempt `attempt` (1-based): 1 s, 2 s, 4 s, … capped at `max`.
pub fn reconnect_delay(attempt: u32, max: Duration) -> Duration {
    let exponent = attempt.saturating_sub(1).min(30);
    Duration::from_secs(1u64 << exponent).min(max)
}

/// Where the current connection is.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// No transport. Requests are kept for the next connection.
    Offline,
    /// CONNECT written; nothing else is sent before CONNACK.
    AwaitingConnAck { deadline: Instant },
    /// CONNACK accepted.
    Connected {
        last_sent: Instant,
        /// Set while a PINGREQ is unanswered (cleared by any packet from the broker).
        ping_sent: Option<Instant>,
    },
    /// `disconnect` was called; nothing more is accepted.
    Closed,
}

/// How far an outgoing QoS 1/2 message has got: the packet it awaits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(clippy::enum_variant_names)] // the variants are MQTT's packet names
enum Awaiting {
    PubAck,
    PubRec,
    PubComp,
}

/// A message to publish with its MQTT 5 properties.
#[derive(Debug)]
struct Outgoing {
    message: Message,
    properties: Option<Box<Properties>>,
}

#[derive(Debug)]
struct Inflight<W> {
    packet_id: u16,
    message: Message,
    properties: Option<Box<Properties>>,
    stage: Awaiting,
    /// The PUBLISH has been written at least once, so a re-send carries DUP [MQTT-3.3.1-1].
    sent: bool,
    waiter: W,
}

#[derive(Debug)]
struct PendingSubscribe<W> {
    packet_id: u16,
    filters: Vec<SubscribeFilter>,
    /// `None` for the internal SUBSCRIBE that restores subscriptions after a reconnect.
    waiter: Option<W>,
}

#[derive(Debug)]
struct PendingUnsubscribe<W> {
    packet_id: u16,
    filters: Vec<TopicFilter>,
    waiter: W,
}

/// The client's session: see the module documentation.
#[derive(Debug)]
pub struct ClientState<W> {
    options: SessionOptions,
    phase: Phase,
    next_packet_id: u16,
    ids_in_use: HashSet<u16>,
    inflight: VecDeque<Inflight<W>>,
    queued: VecDeque<(Outgoing, W)>,
    incoming_qos2: HashSet<u16>,
    /// Keep-alive in force: ours, or the server's Server Keep Alive (MQTT 5).
    keep_alive: u16,
    /// MQTT 5 state of the current connection (server limits, topic aliases).
    conn5: v5_layer::Connection5,
    subscribes: Vec<PendingSubscribe<W>>,
    unsubscribes: Vec<PendingUnsubscribe<W>>,
    /// Granted subscriptions, by filter, in the order they were first granted.
    subscriptions: Vec<(TopicFilter, QoS)>,
    transmit: VecDeque<Packet>,
    /// MQTT 5 sessions write these instead of `transmit`.
    transmit5: VecDeque<v5::Packet>,
    events: VecDeque<Event<W>>,
}

impl<W> ClientState<W> {
    pub fn new(mut options: SessionOptions) -> Self {
        options.max_inflight = options.max_inflight.clamp(1, 65_000);
        ClientState {
            keep_alive: options.keep_alive,
            conn5: v5_layer::Connection5::default(),
            options,
            phase: Phase::Offline,
            next_packet_id: 1,
            ids_in_use: HashSet::new(),
            inflight: VecDeque::new(),
            queued: VecDeque::new(),
            incoming_qos2: HashSet::new(),
            subscribes: Vec::new(),
            unsubscribes: Vec::new(),
            subscriptions: Vec::new(),
            transmit: VecDeque::new(),
            transmit5: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    // -- getters ---------------------------------------------------------------------------------

    pub fn options(&self) -> &SessionOptions {
        &self.options
    }

    /// CONNACK accepted and the connection not lost since.
    pub fn is_connected(&self) -> bool {
        matches!(self.phase, Phase::Connected { .. })
    }

    /// Outgoing QoS 1/2 messages awaiting acknowledgement.
    pub fn inflight_len(&self) -> usize {
        self.inflight.len()
    }

    /// Messages waiting for an in-flight slot or a connection.
    pub fn queued_len(&self) -> usize {
        self.queued.len()
    }

    /// Speaks MQTT 5.
    pub fn is_v5(&self) -> bool {
        self.options.protocol == ProtocolLevel::V5
    }

    /// The properties of the last MQTT 5 CONNACK that accepted a connection.
    pub fn connack_properties(&self) -> &Properties {
        &self.conn5.connack
    }

    /// The keep-alive in force, in seconds: the server's Server Keep Alive when it sent one.
    pub fn keep_alive(&self) -> u16 {
        self.keep_alive
    }

    /// Subscriptions granted by the broker (and not unsubscribed), with their granted QoS.
    pub fn subscriptions(&self) -> &[(TopicFilter, QoS)] {
        &self.subscriptions
    }
}

fn violation(reason: String) -> ConnectionError {
    ConnectionError::Violation(reason)
}
