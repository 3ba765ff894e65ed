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
//! user requests (`inputs.rs`), and `poll_*` (outputs, `outputs.rs`).
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
//! them (packet ids, sending, moving queued messages in flight); `outputs.rs` the `poll_*` methods
//! that hand out packets, events and the next deadline; `tests.rs` the hand-driven test harness
//! and the tests of one connection; `tests_session.rs` the tests of what survives a reconnect and
//! of how the session ends.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::protocol::{
    ConnAck, Connect, ConnectReturnCode, LastWill, Message, Packet, ProtocolLevel, PubAck, PubComp,
    PubRec, PubRel, Publish, QoS, SubAck, Subscribe, SubscribeFilter, SubscribeReturnCode,
    TopicFilter, UnsubAck, Unsubscribe,
};

mod inputs;
mod outputs;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_session;

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
}

/// A message received from the broker, and how it came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub message: Message,
    /// The broker marked it as a possible re-delivery.
    pub dup: bool,
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

#[derive(Debug)]
struct Inflight<W> {
    packet_id: u16,
    message: Message,
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
    queued: VecDeque<(Message, W)>,
    incoming_qos2: HashSet<u16>,
    subscribes: Vec<PendingSubscribe<W>>,
    unsubscribes: Vec<PendingUnsubscribe<W>>,
    /// Granted subscriptions, by filter, in the order they were first granted.
    subscriptions: Vec<(TopicFilter, QoS)>,
    transmit: VecDeque<Packet>,
    events: VecDeque<Event<W>>,
}

impl<W> ClientState<W> {
    pub fn new(mut options: SessionOptions) -> Self {
        options.max_inflight = options.max_inflight.clamp(1, 65_000);
        ClientState {
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

    /// Subscriptions granted by the broker (and not unsubscribed), with their granted QoS.
    pub fn subscriptions(&self) -> &[(TopicFilter, QoS)] {
        &self.subscriptions
    }
}

fn violation(reason: String) -> ConnectionError {
    ConnectionError::Violation(reason)
}
