//! The client side of one MQTT session as a sans-IO state machine.
//!
//! This module does no I/O and reads no clock: the driver passes every input in (a decoded packet,
//! "the transport is up", "the transport is gone", a user request, `now`) and takes every output out
//! (packets to write, events for the user, the next deadline). The same code therefore runs in the
//! deterministic unit tests at the bottom of this file, which move packets by hand.
//!
//! ```text
//!   user request ─► publish / subscribe / unsubscribe / disconnect ┐
//!   transport    ─► handle_transport_up / handle_packet / handle_transport_down ├─► ClientState
//!   clock        ─► handle_timeout(now)                            ┘       │
//!   poll_transmit() ◄─ packets to write    poll_event() ◄─ completions, messages    poll_timeout()
//! ```
//!
//! Methods come in three groups, in this order below: getters, `handle_*` (inputs) plus the user
//! requests, and `poll_*` (outputs).
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

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::protocol::{
    ConnAck, Connect, ConnectReturnCode, LastWill, Packet, ProtocolLevel, PubAck, PubComp, PubRec,
    PubRel, Publish, QoS, SubAck, Subscribe, SubscribeFilter, SubscribeReturnCode, TopicFilter,
    TopicName, UnsubAck, Unsubscribe,
};

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

/// A message the user asked to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingMessage {
    pub topic: TopicName,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
}

/// A message received from the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub topic: TopicName,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    /// The broker marked it as a possible re-delivery.
    pub dup: bool,
}

/// What the state tells the driver (and, through it, the user).
#[derive(Debug, PartialEq, Eq)]
pub enum Event<W> {
    /// CONNACK accepted the connection.
    Connected { session_present: bool },
    /// A message to deliver to the user.
    Message(Message),
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
    message: OutgoingMessage,
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
    queued: VecDeque<(OutgoingMessage, W)>,
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

    // -- inputs ----------------------------------------------------------------------------------

    /// The transport is up: queue CONNECT and wait for CONNACK.
    pub fn handle_transport_up(&mut self, now: Instant) {
        if matches!(self.phase, Phase::Closed) {
            return;
        }
        self.transmit.clear();
        self.transmit.push_back(Packet::Connect(Box::new(Connect {
            protocol: ProtocolLevel::V311,
            clean_session: self.options.clean_session,
            keep_alive: self.options.keep_alive,
            client_id: self.options.client_id.clone(),
            will: self.options.will.clone(),
            username: self.options.username.clone(),
            password: self.options.password.clone(),
        })));
        self.phase = Phase::AwaitingConnAck {
            deadline: now + self.options.connection_timeout,
        };
    }

    /// The transport is gone. Unwritten packets are dropped; everything unacknowledged is kept and
    /// re-sent after the next CONNACK.
    pub fn handle_transport_down(&mut self) {
        self.transmit.clear();
        if !matches!(self.phase, Phase::Closed) {
            self.phase = Phase::Offline;
        }
    }

    /// One packet from the broker. `Err` means: close this connection (the session survives).
    pub fn handle_packet(&mut self, packet: Packet, now: Instant) -> Result<(), ConnectionError> {
        match self.phase {
            Phase::AwaitingConnAck { .. } => match packet {
                Packet::ConnAck(ack) => self.handle_connack(ack, now),
                other => Err(violation(format!("{} before CONNACK", packet_name(&other)))),
            },
            Phase::Connected {
                ref mut ping_sent, ..
            } => {
                *ping_sent = None;
                match packet {
                    Packet::Publish(publish) => self.handle_publish(publish, now),
                    Packet::PubAck(PubAck { packet_id }) => {
                        self.handle_puback(packet_id, now);
                        Ok(())
                    }
                    Packet::PubRec(PubRec { packet_id }) => {
                        self.handle_pubrec(packet_id, now);
                        Ok(())
                    }
                    Packet::PubRel(PubRel { packet_id }) => {
                        // Answer even an unknown id, so the broker can finish its flow.
                        self.incoming_qos2.remove(&packet_id);
                        self.send(Packet::PubComp(PubComp { packet_id }), now);
                        Ok(())
                    }
                    Packet::PubComp(PubComp { packet_id }) => {
                        self.handle_pubcomp(packet_id, now);
                        Ok(())
                    }
                    Packet::SubAck(ack) => self.handle_suback(ack),
                    Packet::UnsubAck(UnsubAck { packet_id }) => {
                        self.handle_unsuback(packet_id);
                        Ok(())
                    }
                    Packet::PingResp => Ok(()),
                    other => Err(violation(format!(
                        "a server must not send {}",
                        packet_name(&other)
                    ))),
                }
            }
            // Late packets after the transport went down or after DISCONNECT: ignore.
            Phase::Offline | Phase::Closed => Ok(()),
        }
    }

    /// Acts on the deadline from [`poll_timeout`](Self::poll_timeout): sends PINGREQ when the
    /// connection has been idle, or reports a missing CONNACK / PINGRESP.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), ConnectionError> {
        match self.phase {
            Phase::AwaitingConnAck { deadline } if now >= deadline => Err(
                ConnectionError::ConnAckTimeout(self.options.connection_timeout),
            ),
            Phase::Connected {
                last_sent,
                ping_sent,
            } if self.options.keep_alive > 0 => {
                let keep_alive = Duration::from_secs(u64::from(self.options.keep_alive));
                match ping_sent {
                    Some(sent) if now >= sent + keep_alive => {
                        Err(ConnectionError::PingTimeout(keep_alive))
                    }
                    Some(_) => Ok(()),
                    None if now >= last_sent + self.ping_interval() => {
                        self.send(Packet::PingReq, now);
                        if let Phase::Connected { ping_sent, .. } = &mut self.phase {
                            *ping_sent = Some(now);
                        }
                        Ok(())
                    }
                    None => Ok(()),
                }
            }
            _ => Ok(()),
        }
    }

    /// Publishes `message`. The waiter comes back in [`Event::Published`] when the QoS flow is
    /// complete; until then the message survives reconnects.
    pub fn publish(
        &mut self,
        message: OutgoingMessage,
        waiter: W,
        now: Instant,
    ) -> Result<(), (W, Refusal)> {
        if matches!(self.phase, Phase::Closed) {
            return Err((waiter, Refusal::Closed));
        }
        self.queued.push_back((message, waiter));
        self.pump(now);
        Ok(())
    }

    /// Subscribes to `filters` (non-empty). The waiter comes back in [`Event::Subscribed`].
    pub fn subscribe(
        &mut self,
        filters: Vec<SubscribeFilter>,
        waiter: W,
        now: Instant,
    ) -> Result<(), (W, Refusal)> {
        if matches!(self.phase, Phase::Closed) {
            return Err((waiter, Refusal::Closed));
        }
        let Some(packet_id) = self.allocate_packet_id() else {
            return Err((waiter, Refusal::NoPacketId));
        };
        if self.is_connected() {
            self.send(
                Packet::Subscribe(Subscribe {
                    packet_id,
                    filters: filters.clone(),
                }),
                now,
            );
        }
        self.subscribes.push(PendingSubscribe {
            packet_id,
            filters,
            waiter: Some(waiter),
        });
        Ok(())
    }

    /// Unsubscribes from `filters` (non-empty). The waiter comes back in [`Event::Unsubscribed`].
    pub fn unsubscribe(
        &mut self,
        filters: Vec<TopicFilter>,
        waiter: W,
        now: Instant,
    ) -> Result<(), (W, Refusal)> {
        if matches!(self.phase, Phase::Closed) {
            return Err((waiter, Refusal::Closed));
        }
        let Some(packet_id) = self.allocate_packet_id() else {
            return Err((waiter, Refusal::NoPacketId));
        };
        if self.is_connected() {
            self.send(
                Packet::Unsubscribe(Unsubscribe {
                    packet_id,
                    filters: filters.clone(),
                }),
                now,
            );
        }
        self.unsubscribes.push(PendingUnsubscribe {
            packet_id,
            filters,
            waiter,
        });
        Ok(())
    }

    /// Ends the session from the client's side: queues DISCONNECT (when connected) after whatever
    /// is already queued, accepts nothing more, and returns every waiter still pending so the
    /// driver can fail them.
    pub fn disconnect(&mut self, now: Instant) -> Vec<W> {
        if self.is_connected() {
            self.send(Packet::Disconnect, now);
        } else {
            self.transmit.clear();
        }
        self.phase = Phase::Closed;
        self.take_waiters()
    }

    /// Removes and returns every pending waiter (the driver gave up on the session).
    pub fn take_waiters(&mut self) -> Vec<W> {
        let mut waiters = Vec::new();
        waiters.extend(self.inflight.drain(..).map(|m| m.waiter));
        waiters.extend(self.queued.drain(..).map(|(_, w)| w));
        waiters.extend(self.subscribes.drain(..).filter_map(|s| s.waiter));
        waiters.extend(self.unsubscribes.drain(..).map(|u| u.waiter));
        self.ids_in_use.clear();
        waiters
    }

    // -- outputs ---------------------------------------------------------------------------------

    /// The next packet to write, oldest first.
    pub fn poll_transmit(&mut self) -> Option<Packet> {
        self.transmit.pop_front()
    }

    /// The next event for the driver, oldest first.
    pub fn poll_event(&mut self) -> Option<Event<W>> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must next be called, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::AwaitingConnAck { deadline } => Some(deadline),
            Phase::Connected {
                last_sent,
                ping_sent,
            } if self.options.keep_alive > 0 => Some(match ping_sent {
                Some(sent) => sent + Duration::from_secs(u64::from(self.options.keep_alive)),
                None => last_sent + self.ping_interval(),
            }),
            _ => None,
        }
    }

    // -- internals -------------------------------------------------------------------------------

    /// PINGREQ goes out after this much silence from our side: `ping_delay` before the end of the
    /// keep-alive period (the whole period when `ping_delay` does not fit in it).
    fn ping_interval(&self) -> Duration {
        let keep_alive = Duration::from_secs(u64::from(self.options.keep_alive));
        if self.options.ping_delay < keep_alive {
            keep_alive - self.options.ping_delay
        } else {
            keep_alive
        }
    }

    fn send(&mut self, packet: Packet, now: Instant) {
        if let Phase::Connected { last_sent, .. } = &mut self.phase {
            *last_sent = now;
        }
        self.transmit.push_back(packet);
    }

    /// A free packet identifier: the next one after the last handed out, skipping those in use.
    fn allocate_packet_id(&mut self) -> Option<u16> {
        if self.ids_in_use.len() >= usize::from(u16::MAX) {
            return None;
        }
        loop {
            let id = self.next_packet_id;
            self.next_packet_id = id.checked_add(1).unwrap_or(1);
            if self.ids_in_use.insert(id) {
                return Some(id);
            }
        }
    }

    fn release_packet_id(&mut self, id: u16) {
        self.ids_in_use.remove(&id);
    }

    /// Moves queued messages onto the wire while connected: QoS 0 straight out, QoS 1/2 while an
    /// in-flight slot and a packet id are free. Order is kept.
    fn pump(&mut self, now: Instant) {
        if !self.is_connected() {
            return;
        }
        while let Some((message, _)) = self.queued.front() {
            if message.qos == QoS::AtMostOnce {
                let Some((message, waiter)) = self.queued.pop_front() else {
                    break;
                };
                self.send(Packet::Publish(publish_packet(&message, None, false)), now);
                self.events.push_back(Event::Published(waiter));
                continue;
            }
            if self.inflight.len() >= self.options.max_inflight {
                break;
            }
            let Some(packet_id) = self.allocate_packet_id() else {
                break;
            };
            let Some((message, waiter)) = self.queued.pop_front() else {
                break;
            };
            self.send(
                Packet::Publish(publish_packet(&message, Some(packet_id), false)),
                now,
            );
            let stage = if message.qos == QoS::AtLeastOnce {
                Awaiting::PubAck
            } else {
                Awaiting::PubRec
            };
            self.inflight.push_back(Inflight {
                packet_id,
                message,
                stage,
                sent: true,
                waiter,
            });
        }
    }

    fn handle_connack(&mut self, ack: ConnAck, now: Instant) -> Result<(), ConnectionError> {
        if ack.code != ConnectReturnCode::Accepted {
            return Err(ConnectionError::Refused(ack.code));
        }
        self.phase = Phase::Connected {
            last_sent: now,
            ping_sent: None,
        };
        self.events.push_back(Event::Connected {
            session_present: ack.session_present,
        });
        if self.options.clean_session {
            // The broker forgot its half of any QoS 2 exchange; so do we.
            self.incoming_qos2.clear();
        }
        // Without a session on the broker, the subscriptions we hold must be made again.
        if !ack.session_present && !self.subscriptions.is_empty() {
            let filters: Vec<SubscribeFilter> = self
                .subscriptions
                .iter()
                .map(|(filter, qos)| SubscribeFilter {
                    filter: filter.clone(),
                    qos: *qos,
                })
                .collect();
            if let Some(packet_id) = self.allocate_packet_id() {
                self.subscribes.push(PendingSubscribe {
                    packet_id,
                    filters,
                    waiter: None,
                });
            }
        }
        // Requests not acknowledged on the previous connection (or made while offline).
        let subscribes: Vec<Packet> = self
            .subscribes
            .iter()
            .map(|s| {
                Packet::Subscribe(Subscribe {
                    packet_id: s.packet_id,
                    filters: s.filters.clone(),
                })
            })
            .collect();
        let unsubscribes: Vec<Packet> = self
            .unsubscribes
            .iter()
            .map(|u| {
                Packet::Unsubscribe(Unsubscribe {
                    packet_id: u.packet_id,
                    filters: u.filters.clone(),
                })
            })
            .collect();
        for packet in subscribes.into_iter().chain(unsubscribes) {
            self.send(packet, now);
        }
        // Unacknowledged messages, oldest first [MQTT-4.4.0-1].
        let resends: Vec<Packet> = self
            .inflight
            .iter_mut()
            .map(|m| match m.stage {
                Awaiting::PubAck | Awaiting::PubRec => {
                    let dup = m.sent;
                    m.sent = true;
                    Packet::Publish(publish_packet(&m.message, Some(m.packet_id), dup))
                }
                Awaiting::PubComp => Packet::PubRel(PubRel {
                    packet_id: m.packet_id,
                }),
            })
            .collect();
        for packet in resends {
            self.send(packet, now);
        }
        self.pump(now);
        Ok(())
    }

    fn handle_publish(&mut self, publish: Publish, now: Instant) -> Result<(), ConnectionError> {
        let message = Message {
            topic: publish.topic,
            payload: publish.payload,
            qos: publish.qos,
            retain: publish.retain,
            dup: publish.dup,
        };
        match (publish.qos, publish.packet_id) {
            (QoS::AtMostOnce, _) => self.events.push_back(Event::Message(message)),
            (QoS::AtLeastOnce, Some(packet_id)) => {
                self.events.push_back(Event::Message(message));
                self.send(Packet::PubAck(PubAck { packet_id }), now);
            }
            (QoS::ExactlyOnce, Some(packet_id)) => {
                if self.incoming_qos2.insert(packet_id) {
                    self.events.push_back(Event::Message(message));
                }
                self.send(Packet::PubRec(PubRec { packet_id }), now);
            }
            // The codec guarantees a packet id for QoS > 0.
            (_, None) => return Err(violation("PUBLISH with QoS > 0 and no packet id".into())),
        }
        Ok(())
    }

    fn inflight_position(&self, packet_id: u16, stage: Awaiting) -> Option<usize> {
        self.inflight
            .iter()
            .position(|m| m.packet_id == packet_id && m.stage == stage)
    }

    fn complete_inflight(&mut self, at: usize, now: Instant) {
        if let Some(done) = self.inflight.remove(at) {
            self.release_packet_id(done.packet_id);
            self.events.push_back(Event::Published(done.waiter));
            self.pump(now);
        }
    }

    fn handle_puback(&mut self, packet_id: u16, now: Instant) {
        match self.inflight_position(packet_id, Awaiting::PubAck) {
            Some(at) => self.complete_inflight(at, now),
            None => log::debug!("ignoring PUBACK for unknown packet id {packet_id}"),
        }
    }

    fn handle_pubrec(&mut self, packet_id: u16, now: Instant) {
        let known = match self.inflight_position(packet_id, Awaiting::PubRec) {
            Some(at) => {
                self.inflight[at].stage = Awaiting::PubComp;
                true
            }
            // A repeated PUBREC: answer again.
            None => self
                .inflight_position(packet_id, Awaiting::PubComp)
                .is_some(),
        };
        if known {
            self.send(Packet::PubRel(PubRel { packet_id }), now);
        } else {
            log::debug!("ignoring PUBREC for unknown packet id {packet_id}");
        }
    }

    fn handle_pubcomp(&mut self, packet_id: u16, now: Instant) {
        match self.inflight_position(packet_id, Awaiting::PubComp) {
            Some(at) => self.complete_inflight(at, now),
            None => log::debug!("ignoring PUBCOMP for unknown packet id {packet_id}"),
        }
    }

    fn handle_suback(&mut self, ack: SubAck) -> Result<(), ConnectionError> {
        let Some(at) = self
            .subscribes
            .iter()
            .position(|s| s.packet_id == ack.packet_id)
        else {
            log::debug!("ignoring SUBACK for unknown packet id {}", ack.packet_id);
            return Ok(());
        };
        if self.subscribes[at].filters.len() != ack.return_codes.len() {
            return Err(violation(format!(
                "SUBACK has {} return codes for {} topic filters",
                ack.return_codes.len(),
                self.subscribes[at].filters.len()
            )));
        }
        let pending = self.subscribes.remove(at);
        self.release_packet_id(pending.packet_id);
        for (requested, code) in pending.filters.iter().zip(&ack.return_codes) {
            let known = self
                .subscriptions
                .iter()
                .position(|(f, _)| *f == requested.filter);
            match (code, known) {
                (SubscribeReturnCode::Success(qos), Some(i)) => self.subscriptions[i].1 = *qos,
                (SubscribeReturnCode::Success(qos), None) => {
                    self.subscriptions.push((requested.filter.clone(), *qos))
                }
                // A refused restore means the subscription is gone; a refused new one changes nothing.
                (SubscribeReturnCode::Failure, Some(i)) if pending.waiter.is_none() => {
                    self.subscriptions.remove(i);
                }
                (SubscribeReturnCode::Failure, _) => {}
            }
        }
        match pending.waiter {
            Some(waiter) => self
                .events
                .push_back(Event::Subscribed(waiter, ack.return_codes)),
            None => self.events.push_back(Event::Restored(
                pending
                    .filters
                    .into_iter()
                    .map(|f| f.filter)
                    .zip(ack.return_codes)
                    .collect(),
            )),
        }
        Ok(())
    }

    fn handle_unsuback(&mut self, packet_id: u16) {
        let Some(at) = self
            .unsubscribes
            .iter()
            .position(|u| u.packet_id == packet_id)
        else {
            log::debug!("ignoring UNSUBACK for unknown packet id {packet_id}");
            return;
        };
        let pending = self.unsubscribes.remove(at);
        self.release_packet_id(packet_id);
        self.subscriptions
            .retain(|(filter, _)| !pending.filters.contains(filter));
        self.events.push_back(Event::Unsubscribed(pending.waiter));
    }
}

fn publish_packet(message: &OutgoingMessage, packet_id: Option<u16>, dup: bool) -> Publish {
    Publish {
        dup,
        qos: message.qos,
        retain: message.retain,
        topic: message.topic.clone(),
        packet_id,
        payload: message.payload.clone(),
    }
}

fn violation(reason: String) -> ConnectionError {
    ConnectionError::Violation(reason)
}

fn packet_name(packet: &Packet) -> &'static str {
    match packet {
        Packet::Connect(_) => "CONNECT",
        Packet::ConnAck(_) => "CONNACK",
        Packet::Publish(_) => "PUBLISH",
        Packet::PubAck(_) => "PUBACK",
        Packet::PubRec(_) => "PUBREC",
        Packet::PubRel(_) => "PUBREL",
        Packet::PubComp(_) => "PUBCOMP",
        Packet::Subscribe(_) => "SUBSCRIBE",
        Packet::SubAck(_) => "SUBACK",
        Packet::Unsubscribe(_) => "UNSUBSCRIBE",
        Packet::UnsubAck(_) => "UNSUBACK",
        Packet::PingReq => "PINGREQ",
        Packet::PingResp => "PINGRESP",
        Packet::Disconnect => "DISCONNECT",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // -- helpers: a client driven by hand, with a simulated clock ----------------------------------

    struct Harness {
        state: ClientState<u32>,
        now: Instant,
    }

    fn options(clean_session: bool) -> SessionOptions {
        SessionOptions {
            client_id: "c1".into(),
            clean_session,
            keep_alive: 10,
            ping_delay: Duration::from_secs(1),
            connection_timeout: Duration::from_secs(5),
            will: None,
            username: None,
            password: None,
            max_inflight: 100,
        }
    }

    fn topic(s: &str) -> TopicName {
        TopicName::new(s).unwrap()
    }

    fn filter(s: &str) -> TopicFilter {
        TopicFilter::new(s).unwrap()
    }

    fn message(t: &str, payload: &'static [u8], qos: QoS) -> OutgoingMessage {
        OutgoingMessage {
            topic: topic(t),
            payload: Bytes::from_static(payload),
            qos,
            retain: false,
        }
    }

    fn broker_publish(t: &str, qos: QoS, packet_id: Option<u16>, dup: bool) -> Packet {
        Packet::Publish(Publish {
            dup,
            qos,
            retain: false,
            topic: topic(t),
            packet_id,
            payload: Bytes::from_static(b"m"),
        })
    }

    impl Harness {
        fn new(options: SessionOptions) -> Self {
            Harness {
                state: ClientState::new(options),
                now: Instant::now(),
            }
        }

        /// Transport up, CONNECT out, CONNACK in.
        fn connected(clean_session: bool) -> Self {
            let mut h = Harness::new(options(clean_session));
            h.connect(false);
            h
        }

        fn connect(&mut self, session_present: bool) {
            self.state.handle_transport_up(self.now);
            assert!(matches!(self.sent().as_slice(), [Packet::Connect(_)]));
            self.recv(Packet::ConnAck(ConnAck {
                session_present,
                code: ConnectReturnCode::Accepted,
            }))
            .unwrap();
            assert_eq!(
                self.state.poll_event(),
                Some(Event::Connected { session_present })
            );
        }

        fn advance(&mut self, by: Duration) {
            self.now += by;
        }

        fn recv(&mut self, packet: Packet) -> Result<(), ConnectionError> {
            self.state.handle_packet(packet, self.now)
        }

        fn sent(&mut self) -> Vec<Packet> {
            std::iter::from_fn(|| self.state.poll_transmit()).collect()
        }

        fn events(&mut self) -> Vec<Event<u32>> {
            std::iter::from_fn(|| self.state.poll_event()).collect()
        }

        fn publish(&mut self, m: OutgoingMessage, waiter: u32) {
            self.state.publish(m, waiter, self.now).unwrap();
        }
    }

    fn publish_ids(packets: &[Packet]) -> Vec<(Option<u16>, bool)> {
        packets
            .iter()
            .filter_map(|p| match p {
                Packet::Publish(p) => Some((p.packet_id, p.dup)),
                _ => None,
            })
            .collect()
    }

    // -- connecting ------------------------------------------------------------------------------

    #[test]
    fn connect_packet_carries_the_session_options() {
        let mut opts = options(false);
        opts.username = Some("u".into());
        opts.password = Some(Bytes::from_static(b"p"));
        opts.will = Some(LastWill {
            topic: topic("will/t"),
            payload: Bytes::from_static(b"bye"),
            qos: QoS::AtLeastOnce,
            retain: true,
        });
        let mut h = Harness::new(opts.clone());
        h.state.handle_transport_up(h.now);
        match h.sent().as_slice() {
            [Packet::Connect(c)] => {
                assert_eq!(c.protocol, ProtocolLevel::V311);
                assert_eq!(c.client_id, "c1");
                assert!(!c.clean_session);
                assert_eq!(c.keep_alive, 10);
                assert_eq!(c.will, opts.will);
                assert_eq!(c.username.as_deref(), Some("u"));
                assert_eq!(c.password.as_deref(), Some(&b"p"[..]));
            }
            other => panic!("expected CONNECT, got {other:?}"),
        }
        assert!(!h.state.is_connected());
    }

    #[test]
    fn requests_before_connack_wait_for_it() {
        let mut h = Harness::new(options(true));
        h.state.handle_transport_up(h.now);
        h.sent();
        h.publish(message("a", b"x", QoS::AtLeastOnce), 1);
        h.state
            .subscribe(
                vec![SubscribeFilter {
                    filter: filter("s/#"),
                    qos: QoS::AtMostOnce,
                }],
                2,
                h.now,
            )
            .unwrap();
        assert!(
            h.sent().is_empty(),
            "nothing may follow CONNECT before CONNACK"
        );
        h.recv(Packet::ConnAck(ConnAck {
            session_present: false,
            code: ConnectReturnCode::Accepted,
        }))
        .unwrap();
        let sent = h.sent();
        assert!(matches!(sent[0], Packet::Subscribe(_)));
        assert_eq!(publish_ids(&sent), vec![(Some(2), false)]);
    }

    #[test]
    fn refused_connack_names_the_reason() {
        let mut h = Harness::new(options(true));
        h.state.handle_transport_up(h.now);
        let err = h
            .recv(Packet::ConnAck(ConnAck {
                session_present: false,
                code: ConnectReturnCode::NotAuthorized,
            }))
            .unwrap_err();
        assert_eq!(
            err,
            ConnectionError::Refused(ConnectReturnCode::NotAuthorized)
        );
        assert_eq!(err.to_string(), "connection refused: not authorized");
        assert_eq!(
            refusal_reason(ConnectReturnCode::BadUserNameOrPassword),
            "bad user name or password"
        );
    }

    #[test]
    fn missing_connack_times_out() {
        let mut h = Harness::new(options(true));
        h.state.handle_transport_up(h.now);
        assert_eq!(h.state.poll_timeout(), Some(h.now + Duration::from_secs(5)));
        h.advance(Duration::from_secs(4));
        assert_eq!(h.state.handle_timeout(h.now), Ok(()));
        h.advance(Duration::from_secs(1));
        assert_eq!(
            h.state.handle_timeout(h.now),
            Err(ConnectionError::ConnAckTimeout(Duration::from_secs(5)))
        );
    }

    #[test]
    fn packets_other_than_connack_first_are_violations() {
        let mut h = Harness::new(options(true));
        h.state.handle_transport_up(h.now);
        assert!(matches!(
            h.recv(Packet::PingResp),
            Err(ConnectionError::Violation(_))
        ));
        let mut h = Harness::connected(true);
        for bad in [Packet::PingReq, Packet::Disconnect] {
            assert!(matches!(h.recv(bad), Err(ConnectionError::Violation(_))));
        }
        let second = Packet::ConnAck(ConnAck {
            session_present: false,
            code: ConnectReturnCode::Accepted,
        });
        assert!(matches!(h.recv(second), Err(ConnectionError::Violation(_))));
    }

    // -- publishing ------------------------------------------------------------------------------

    #[test]
    fn qos0_publish_completes_when_written() {
        let mut h = Harness::connected(true);
        h.publish(message("a/b", b"hi", QoS::AtMostOnce), 7);
        match h.sent().as_slice() {
            [Packet::Publish(p)] => {
                assert_eq!(p.packet_id, None);
                assert_eq!(p.topic.as_str(), "a/b");
                assert_eq!(&p.payload[..], b"hi");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(h.events(), vec![Event::Published(7)]);
        assert_eq!(h.state.inflight_len(), 0);
    }

    #[test]
    fn qos1_publish_completes_on_puback() {
        let mut h = Harness::connected(true);
        h.publish(message("a", b"x", QoS::AtLeastOnce), 1);
        assert_eq!(publish_ids(&h.sent()), vec![(Some(1), false)]);
        assert!(h.events().is_empty());
        // An ack for someone else changes nothing.
        h.recv(Packet::PubAck(PubAck { packet_id: 9 })).unwrap();
        assert!(h.events().is_empty());
        h.recv(Packet::PubAck(PubAck { packet_id: 1 })).unwrap();
        assert_eq!(h.events(), vec![Event::Published(1)]);
        assert_eq!(h.state.inflight_len(), 0);
    }

    #[test]
    fn qos2_publish_goes_through_pubrec_pubrel_pubcomp() {
        let mut h = Harness::connected(true);
        h.publish(message("a", b"x", QoS::ExactlyOnce), 1);
        assert_eq!(publish_ids(&h.sent()), vec![(Some(1), false)]);
        // PUBACK is not the right answer for QoS 2.
        h.recv(Packet::PubAck(PubAck { packet_id: 1 })).unwrap();
        assert!(h.events().is_empty());
        h.recv(Packet::PubRec(PubRec { packet_id: 1 })).unwrap();
        assert_eq!(h.sent(), vec![Packet::PubRel(PubRel { packet_id: 1 })]);
        // A repeated PUBREC is answered again.
        h.recv(Packet::PubRec(PubRec { packet_id: 1 })).unwrap();
        assert_eq!(h.sent(), vec![Packet::PubRel(PubRel { packet_id: 1 })]);
        assert!(h.events().is_empty());
        h.recv(Packet::PubComp(PubComp { packet_id: 1 })).unwrap();
        assert_eq!(h.events(), vec![Event::Published(1)]);
    }

    #[test]
    fn many_publishes_in_flight_complete_in_any_order() {
        let mut h = Harness::connected(true);
        for w in 0..5 {
            h.publish(message("a", b"x", QoS::AtLeastOnce), w);
        }
        let ids: Vec<_> = publish_ids(&h.sent())
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(ids, vec![Some(1), Some(2), Some(3), Some(4), Some(5)]);
        for id in [3, 1, 5, 2, 4] {
            h.recv(Packet::PubAck(PubAck { packet_id: id })).unwrap();
        }
        assert_eq!(h.events(), Vec::from([2, 0, 4, 1, 3].map(Event::Published)));
    }

    #[test]
    fn publishes_beyond_max_inflight_wait_their_turn() {
        let mut opts = options(true);
        opts.max_inflight = 2;
        let mut h = Harness::new(opts);
        h.connect(false);
        for w in 0..4 {
            h.publish(message("a", b"x", QoS::AtLeastOnce), w);
        }
        // A QoS 0 behind them keeps its place in line.
        h.publish(message("a", b"0", QoS::AtMostOnce), 9);
        assert_eq!(publish_ids(&h.sent()).len(), 2);
        assert_eq!((h.state.inflight_len(), h.state.queued_len()), (2, 3));
        h.recv(Packet::PubAck(PubAck { packet_id: 1 })).unwrap();
        assert_eq!(publish_ids(&h.sent()), vec![(Some(3), false)]);
        h.recv(Packet::PubAck(PubAck { packet_id: 2 })).unwrap();
        assert_eq!(
            publish_ids(&h.sent()),
            vec![(Some(4), false), (None, false)]
        );
        assert_eq!(
            h.events(),
            vec![
                Event::Published(0),
                Event::Published(1),
                Event::Published(9)
            ]
        );
    }

    #[test]
    fn packet_ids_skip_those_in_use_and_wrap_past_65535() {
        let mut h = Harness::connected(true);
        h.state.next_packet_id = 65_535;
        h.publish(message("a", b"x", QoS::AtLeastOnce), 0); // gets 65535
        h.publish(message("a", b"x", QoS::AtLeastOnce), 1); // wraps to 1
        h.publish(message("a", b"x", QoS::AtLeastOnce), 2); // 2
        h.recv(Packet::PubAck(PubAck { packet_id: 1 })).unwrap();
        h.state.next_packet_id = 65_535; // in use: skipped, then 1 is free again
        h.publish(message("a", b"x", QoS::AtLeastOnce), 3);
        let ids: Vec<_> = publish_ids(&h.sent())
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(ids, vec![Some(65_535), Some(1), Some(2), Some(1)]);
    }

    // -- receiving -------------------------------------------------------------------------------

    #[test]
    fn incoming_qos0_and_qos1_are_delivered_and_qos1_acknowledged() {
        let mut h = Harness::connected(true);
        h.recv(broker_publish("t", QoS::AtMostOnce, None, false))
            .unwrap();
        h.recv(broker_publish("t", QoS::AtLeastOnce, Some(4), false))
            .unwrap();
        assert_eq!(h.sent(), vec![Packet::PubAck(PubAck { packet_id: 4 })]);
        let events = h.events();
        assert_eq!(events.len(), 2);
        assert!(matches!(&events[1], Event::Message(m) if m.qos == QoS::AtLeastOnce));
    }

    #[test]
    fn incoming_qos2_is_delivered_once_even_when_resent() {
        let mut h = Harness::connected(false);
        h.recv(broker_publish("t", QoS::ExactlyOnce, Some(7), false))
            .unwrap();
        assert_eq!(h.sent(), vec![Packet::PubRec(PubRec { packet_id: 7 })]);
        assert!(matches!(h.events().as_slice(), [Event::Message(_)]));
        // Connection lost before PUBREL; the broker re-sends with DUP after the reconnect.
        h.state.handle_transport_down();
        h.connect(true);
        h.recv(broker_publish("t", QoS::ExactlyOnce, Some(7), true))
            .unwrap();
        assert_eq!(h.sent(), vec![Packet::PubRec(PubRec { packet_id: 7 })]);
        h.recv(Packet::PubRel(PubRel { packet_id: 7 })).unwrap();
        assert_eq!(h.sent(), vec![Packet::PubComp(PubComp { packet_id: 7 })]);
        assert!(
            h.events().is_empty(),
            "the re-sent PUBLISH is not delivered again"
        );
        // After PUBREL the id may carry a new message.
        h.recv(broker_publish("t", QoS::ExactlyOnce, Some(7), false))
            .unwrap();
        assert_eq!(h.events().len(), 1);
    }

    // -- subscriptions ---------------------------------------------------------------------------

    fn sub(h: &mut Harness, filters: &[(&str, QoS)], waiter: u32) -> u16 {
        let filters = filters
            .iter()
            .map(|(f, q)| SubscribeFilter {
                filter: filter(f),
                qos: *q,
            })
            .collect();
        h.state.subscribe(filters, waiter, h.now).unwrap();
        match h.sent().as_slice() {
            [Packet::Subscribe(s)] => s.packet_id,
            other => panic!("expected SUBSCRIBE, got {other:?}"),
        }
    }

    #[test]
    fn subscribe_returns_the_granted_codes_and_records_subscriptions() {
        let mut h = Harness::connected(true);
        let id = sub(
            &mut h,
            &[("a/#", QoS::ExactlyOnce), ("b", QoS::AtMostOnce)],
            3,
        );
        let codes = vec![
            SubscribeReturnCode::Success(QoS::AtLeastOnce),
            SubscribeReturnCode::Failure,
        ];
        h.recv(Packet::SubAck(SubAck {
            packet_id: id,
            return_codes: codes.clone(),
        }))
        .unwrap();
        assert_eq!(h.events(), vec![Event::Subscribed(3, codes)]);
        assert_eq!(
            h.state.subscriptions(),
            &[(filter("a/#"), QoS::AtLeastOnce)]
        );
    }

    #[test]
    fn suback_with_the_wrong_number_of_codes_is_a_violation() {
        let mut h = Harness::connected(true);
        let id = sub(&mut h, &[("a", QoS::AtMostOnce)], 1);
        let err = h
            .recv(Packet::SubAck(SubAck {
                packet_id: id,
                return_codes: vec![],
            }))
            .unwrap_err();
        assert!(matches!(err, ConnectionError::Violation(_)));
    }

    #[test]
    fn unsubscribe_completes_on_unsuback_and_forgets_the_filter() {
        let mut h = Harness::connected(true);
        let id = sub(&mut h, &[("a", QoS::AtMostOnce), ("b", QoS::AtMostOnce)], 1);
        h.recv(Packet::SubAck(SubAck {
            packet_id: id,
            return_codes: vec![SubscribeReturnCode::Success(QoS::AtMostOnce); 2],
        }))
        .unwrap();
        h.events();
        h.state.unsubscribe(vec![filter("a")], 2, h.now).unwrap();
        let id = match h.sent().as_slice() {
            [Packet::Unsubscribe(u)] => u.packet_id,
            other => panic!("{other:?}"),
        };
        h.recv(Packet::UnsubAck(UnsubAck { packet_id: id }))
            .unwrap();
        assert_eq!(h.events(), vec![Event::Unsubscribed(2)]);
        assert_eq!(h.state.subscriptions(), &[(filter("b"), QoS::AtMostOnce)]);
    }

    // -- keep-alive ------------------------------------------------------------------------------

    #[test]
    fn pingreq_goes_out_ping_delay_before_the_keep_alive_ends() {
        let mut h = Harness::connected(true);
        let start = h.now;
        assert_eq!(h.state.poll_timeout(), Some(start + Duration::from_secs(9)));
        // Sending something pushes the ping back.
        h.advance(Duration::from_secs(5));
        h.publish(message("a", b"x", QoS::AtMostOnce), 0);
        h.sent();
        assert_eq!(
            h.state.poll_timeout(),
            Some(start + Duration::from_secs(14))
        );
        h.advance(Duration::from_secs(9));
        h.state.handle_timeout(h.now).unwrap();
        assert_eq!(h.sent(), vec![Packet::PingReq]);
        // Now waiting for PINGRESP, for at most keep_alive.
        assert_eq!(
            h.state.poll_timeout(),
            Some(h.now + Duration::from_secs(10))
        );
        h.recv(Packet::PingResp).unwrap();
        assert_eq!(h.state.poll_timeout(), Some(h.now + Duration::from_secs(9)));
    }

    #[test]
    fn unanswered_pingreq_closes_the_connection() {
        let mut h = Harness::connected(true);
        h.advance(Duration::from_secs(9));
        h.state.handle_timeout(h.now).unwrap();
        assert_eq!(h.sent(), vec![Packet::PingReq]);
        h.advance(Duration::from_secs(9));
        assert_eq!(h.state.handle_timeout(h.now), Ok(()));
        h.advance(Duration::from_secs(1));
        assert_eq!(
            h.state.handle_timeout(h.now),
            Err(ConnectionError::PingTimeout(Duration::from_secs(10)))
        );
    }

    #[test]
    fn keep_alive_zero_never_pings() {
        let mut opts = options(true);
        opts.keep_alive = 0;
        let mut h = Harness::new(opts);
        h.connect(false);
        assert_eq!(h.state.poll_timeout(), None);
        h.advance(Duration::from_secs(3600));
        h.state.handle_timeout(h.now).unwrap();
        assert!(h.sent().is_empty());
    }

    // -- reconnecting ----------------------------------------------------------------------------

    #[test]
    fn unacknowledged_messages_are_resent_with_dup_after_reconnect() {
        let mut h = Harness::connected(false);
        h.publish(message("a", b"1", QoS::AtLeastOnce), 1);
        h.publish(message("a", b"2", QoS::ExactlyOnce), 2);
        h.publish(message("a", b"3", QoS::ExactlyOnce), 3);
        h.sent();
        h.recv(Packet::PubRec(PubRec { packet_id: 3 })).unwrap();
        h.sent();
        h.state.handle_transport_down();
        // Published while offline: queued, sent after the resends, without DUP.
        h.publish(message("a", b"4", QoS::AtLeastOnce), 4);
        h.publish(message("a", b"5", QoS::AtMostOnce), 5);
        assert!(h.events().is_empty());
        h.connect(true);
        let sent = h.sent();
        assert_eq!(
            sent,
            vec![
                Packet::Publish(Publish {
                    dup: true,
                    qos: QoS::AtLeastOnce,
                    retain: false,
                    topic: topic("a"),
                    packet_id: Some(1),
                    payload: Bytes::from_static(b"1"),
                }),
                Packet::Publish(Publish {
                    dup: true,
                    qos: QoS::ExactlyOnce,
                    retain: false,
                    topic: topic("a"),
                    packet_id: Some(2),
                    payload: Bytes::from_static(b"2"),
                }),
                Packet::PubRel(PubRel { packet_id: 3 }),
                Packet::Publish(Publish {
                    dup: false,
                    qos: QoS::AtLeastOnce,
                    retain: false,
                    topic: topic("a"),
                    packet_id: Some(4),
                    payload: Bytes::from_static(b"4"),
                }),
                Packet::Publish(Publish {
                    dup: false,
                    qos: QoS::AtMostOnce,
                    retain: false,
                    topic: topic("a"),
                    packet_id: None,
                    payload: Bytes::from_static(b"5"),
                }),
            ]
        );
        assert_eq!(h.events(), vec![Event::Published(5)]);
        h.recv(Packet::PubAck(PubAck { packet_id: 1 })).unwrap();
        h.recv(Packet::PubRec(PubRec { packet_id: 2 })).unwrap();
        h.recv(Packet::PubComp(PubComp { packet_id: 3 })).unwrap();
        assert_eq!(h.events(), vec![Event::Published(1), Event::Published(3)]);
    }

    #[test]
    fn subscriptions_are_restored_when_the_broker_has_no_session() {
        let mut h = Harness::connected(true);
        let id = sub(
            &mut h,
            &[("a/+", QoS::AtLeastOnce), ("b", QoS::AtMostOnce)],
            1,
        );
        h.recv(Packet::SubAck(SubAck {
            packet_id: id,
            return_codes: vec![
                SubscribeReturnCode::Success(QoS::AtLeastOnce),
                SubscribeReturnCode::Success(QoS::AtMostOnce),
            ],
        }))
        .unwrap();
        h.events();
        h.state.handle_transport_down();
        h.connect(false);
        let (id, filters) = match h.sent().as_slice() {
            [Packet::Subscribe(s)] => (s.packet_id, s.filters.clone()),
            other => panic!("expected one SUBSCRIBE, got {other:?}"),
        };
        assert_eq!(
            filters,
            vec![
                SubscribeFilter {
                    filter: filter("a/+"),
                    qos: QoS::AtLeastOnce
                },
                SubscribeFilter {
                    filter: filter("b"),
                    qos: QoS::AtMostOnce
                },
            ]
        );
        h.recv(Packet::SubAck(SubAck {
            packet_id: id,
            return_codes: vec![
                SubscribeReturnCode::Success(QoS::AtLeastOnce),
                SubscribeReturnCode::Failure,
            ],
        }))
        .unwrap();
        assert_eq!(
            h.events(),
            vec![Event::Restored(vec![
                (
                    filter("a/+"),
                    SubscribeReturnCode::Success(QoS::AtLeastOnce)
                ),
                (filter("b"), SubscribeReturnCode::Failure),
            ])]
        );
        assert_eq!(
            h.state.subscriptions(),
            &[(filter("a/+"), QoS::AtLeastOnce)]
        );
    }

    #[test]
    fn a_resumed_session_keeps_its_subscriptions_without_resubscribing() {
        let mut h = Harness::connected(false);
        let id = sub(&mut h, &[("a", QoS::AtLeastOnce)], 1);
        h.recv(Packet::SubAck(SubAck {
            packet_id: id,
            return_codes: vec![SubscribeReturnCode::Success(QoS::AtLeastOnce)],
        }))
        .unwrap();
        h.events();
        h.state.handle_transport_down();
        h.connect(true);
        assert!(h.sent().is_empty());
    }

    #[test]
    fn unanswered_subscribe_and_unsubscribe_are_resent_after_reconnect() {
        let mut h = Harness::connected(false);
        let id = sub(&mut h, &[("a", QoS::AtLeastOnce)], 1);
        h.state.unsubscribe(vec![filter("z")], 2, h.now).unwrap();
        h.sent();
        h.state.handle_transport_down();
        h.connect(true);
        let sent = h.sent();
        assert!(matches!(&sent[0], Packet::Subscribe(s) if s.packet_id == id));
        assert!(matches!(&sent[1], Packet::Unsubscribe(_)));
        h.recv(Packet::SubAck(SubAck {
            packet_id: id,
            return_codes: vec![SubscribeReturnCode::Success(QoS::AtLeastOnce)],
        }))
        .unwrap();
        assert_eq!(
            h.events(),
            vec![Event::Subscribed(
                1,
                vec![SubscribeReturnCode::Success(QoS::AtLeastOnce)]
            )]
        );
    }

    #[test]
    fn packets_after_the_transport_went_down_are_ignored() {
        let mut h = Harness::connected(true);
        h.publish(message("a", b"x", QoS::AtLeastOnce), 1);
        h.sent();
        h.state.handle_transport_down();
        h.recv(Packet::PubAck(PubAck { packet_id: 1 })).unwrap();
        assert!(h.events().is_empty());
        assert_eq!(h.state.poll_timeout(), None);
    }

    #[test]
    fn reconnect_delay_doubles_up_to_the_cap() {
        let max = Duration::from_secs(10);
        let delays: Vec<u64> = (1..=6).map(|a| reconnect_delay(a, max).as_secs()).collect();
        assert_eq!(delays, vec![1, 2, 4, 8, 10, 10]);
        assert_eq!(reconnect_delay(1000, max), max);
        assert_eq!(
            reconnect_delay(1, Duration::from_millis(200)),
            Duration::from_millis(200)
        );
    }

    // -- ending ----------------------------------------------------------------------------------

    #[test]
    fn disconnect_returns_every_waiter_and_sends_disconnect_last() {
        let mut h = Harness::connected(true);
        h.publish(message("a", b"x", QoS::AtLeastOnce), 1);
        h.publish(message("a", b"y", QoS::AtLeastOnce), 2);
        h.sent();
        sub(&mut h, &[("s", QoS::AtMostOnce)], 3);
        h.state.unsubscribe(vec![filter("u")], 4, h.now).unwrap();
        let mut waiters = h.state.disconnect(h.now);
        waiters.sort_unstable();
        assert_eq!(waiters, vec![1, 2, 3, 4]);
        let sent = h.sent();
        assert_eq!(sent.last(), Some(&Packet::Disconnect));
        assert_eq!(
            h.state
                .publish(message("a", b"z", QoS::AtMostOnce), 5, h.now),
            Err((5, Refusal::Closed))
        );
        assert!(!h.state.is_connected());
    }

    #[test]
    fn disconnect_while_offline_sends_nothing() {
        let mut h = Harness::new(options(true));
        h.publish(message("a", b"x", QoS::AtMostOnce), 1);
        assert_eq!(h.state.disconnect(h.now), vec![1]);
        assert!(h.sent().is_empty());
        h.state.handle_transport_up(h.now);
        assert!(h.sent().is_empty(), "a closed state never connects again");
    }
}
