//! The MQTT 5 layer of the client session: CONNECT with its properties, the server's CONNACK
//! (reason code, assigned client id, limits), received PUBLISH with topic aliases resolved and
//! properties kept, acks with reason codes, DISCONNECT from the server; and on the way out each
//! MQTT 3 flow packet in its MQTT 5 form, with outgoing topic aliases and the server's Receive
//! Maximum, Maximum Packet Size, Maximum QoS and Retain Available honoured.
//!
//! The flows themselves (packet ids, in-flight, QoS 2, re-sending, subscriptions) are the MQTT 3
//! ones in `inputs.rs`: this file only translates. No I/O, no clock.

use std::collections::HashMap;

use super::*;
use crate::protocol::v5::properties::wire_len;
use crate::protocol::v5::{Kind, Subscription};

/// What one MQTT 5 connection has agreed; reset when the transport comes up.
#[derive(Debug)]
pub(super) struct Connection5 {
    /// The accepting CONNACK's properties.
    pub(super) connack: Properties,
    receive_maximum: u16,
    maximum_packet_size: Option<u32>,
    topic_alias_maximum: u16,
    maximum_qos: QoS,
    retain_available: bool,
    /// Topic aliases this client has set up, by topic.
    aliases_out: HashMap<TopicName, u16>,
    /// Topic aliases the server has set up.
    aliases_in: HashMap<u16, TopicName>,
    /// The last packet broke the topic alias rules (DISCONNECT says so with 0x94).
    alias_error: bool,
}

impl Default for Connection5 {
    fn default() -> Self {
        Connection5 {
            connack: Properties::default(),
            receive_maximum: u16::MAX,
            maximum_packet_size: None,
            topic_alias_maximum: 0,
            maximum_qos: QoS::ExactlyOnce,
            retain_available: true,
            aliases_out: HashMap::new(),
            aliases_in: HashMap::new(),
            alias_error: false,
        }
    }
}

impl<W> ClientState<W> {
    /// One packet from an MQTT 5 server; as [`handle_packet`](Self::handle_packet). A protocol
    /// violation also queues DISCONNECT with a reason code for the driver to write before closing.
    pub fn handle_packet_v5(
        &mut self,
        packet: v5::Packet,
        now: Instant,
    ) -> Result<(), ConnectionError> {
        let result = self.dispatch_v5(packet, now);
        if let Err(ConnectionError::Violation(_)) = &result {
            let reason = if self.conn5.alias_error {
                ReasonCode::TOPIC_ALIAS_INVALID
            } else {
                ReasonCode::PROTOCOL_ERROR
            };
            self.transmit5
                .push_back(v5::Packet::Disconnect(v5::Disconnect {
                    reason,
                    properties: Properties::default(),
                }));
        }
        result
    }

    fn dispatch_v5(&mut self, packet: v5::Packet, now: Instant) -> Result<(), ConnectionError> {
        self.conn5.alias_error = false;
        match self.phase {
            Phase::AwaitingConnAck { .. } => match packet {
                v5::Packet::ConnAck(ack) => self.handle_connack_v5(ack, now),
                other => Err(violation(format!("{} before CONNACK", other.name()))),
            },
            Phase::Connected {
                ref mut ping_sent, ..
            } => {
                *ping_sent = None;
                match packet {
                    v5::Packet::Publish(publish) => self.handle_publish_v5(publish, now),
                    v5::Packet::PubAck(ack) => {
                        match refused(&ack) {
                            Some(failure) => {
                                self.fail_flow(ack.packet_id, Awaiting::PubAck, failure, now)
                            }
                            None => self.handle_puback(ack.packet_id, now),
                        }
                        Ok(())
                    }
                    v5::Packet::PubRec(ack) => {
                        // A refused PUBREC ends the flow: no PUBREL [MQTT-4.3.3].
                        match refused(&ack) {
                            Some(failure) => {
                                self.fail_flow(ack.packet_id, Awaiting::PubRec, failure, now)
                            }
                            None => self.handle_pubrec(ack.packet_id, now),
                        }
                        Ok(())
                    }
                    v5::Packet::PubRel(ack) => {
                        self.incoming_qos2.remove(&ack.packet_id);
                        self.send(
                            Packet::PubComp(PubComp {
                                packet_id: ack.packet_id,
                            }),
                            now,
                        );
                        Ok(())
                    }
                    v5::Packet::PubComp(ack) => {
                        self.handle_pubcomp(ack.packet_id, now);
                        Ok(())
                    }
                    v5::Packet::SubAck(ack) => {
                        let return_codes = ack
                            .reason_codes
                            .iter()
                            .map(|code| match QoS::from_u8(code.0) {
                                Some(qos) => SubscribeReturnCode::Success(qos),
                                None => {
                                    log::info!(
                                        "subscription refused: {}",
                                        with_reason(*code, &ack.properties.reason_string)
                                    );
                                    SubscribeReturnCode::Failure
                                }
                            })
                            .collect();
                        self.handle_suback(SubAck {
                            packet_id: ack.packet_id,
                            return_codes,
                        })
                    }
                    v5::Packet::UnsubAck(ack) => {
                        self.handle_unsuback(ack.packet_id);
                        Ok(())
                    }
                    v5::Packet::PingResp => Ok(()),
                    v5::Packet::Disconnect(d) => Err(ConnectionError::ServerDisconnect {
                        code: d.reason,
                        reason_string: d.properties.reason_string,
                    }),
                    other => Err(violation(format!(
                        "a server must not send {} here",
                        other.name()
                    ))),
                }
            }
            Phase::Offline | Phase::Closed => Ok(()),
        }
    }

    fn handle_connack_v5(&mut self, ack: v5::ConnAck, now: Instant) -> Result<(), ConnectionError> {
        if ack.reason.is_error() {
            return Err(ConnectionError::RefusedV5 {
                code: ack.reason,
                reason_string: ack.properties.reason_string,
            });
        }
        let p = &ack.properties;
        self.conn5.receive_maximum = p.receive_maximum.unwrap_or(u16::MAX);
        self.conn5.maximum_packet_size = p.maximum_packet_size;
        self.conn5.topic_alias_maximum = p.topic_alias_maximum.unwrap_or(0);
        self.conn5.maximum_qos = p.maximum_qos.unwrap_or(QoS::ExactlyOnce);
        self.conn5.retain_available = p.retain_available.unwrap_or(true);
        if let Some(keep_alive) = p.server_keep_alive {
            self.keep_alive = keep_alive;
        }
        if let Some(id) = &p.assigned_client_identifier {
            // Resuming the session later needs the id the server chose.
            self.options.client_id = id.clone();
        }
        if !ack.session_present {
            // The server has no half of any QoS 2 exchange; neither do we.
            self.incoming_qos2.clear();
        }
        self.conn5.connack = ack.properties;
        self.accept_connection(ack.session_present, now);
        Ok(())
    }

    fn handle_publish_v5(
        &mut self,
        mut publish: v5::Publish,
        now: Instant,
    ) -> Result<(), ConnectionError> {
        let topic = match (publish.topic.take(), publish.properties.topic_alias.take()) {
            (Some(topic), None) => topic,
            (topic, Some(alias)) => {
                let maximum = self.options.v5.connect_properties.topic_alias_maximum;
                if alias > maximum.unwrap_or(0) {
                    self.conn5.alias_error = true;
                    return Err(violation(format!(
                        "topic alias {alias} above this client's maximum {}",
                        maximum.unwrap_or(0)
                    )));
                }
                match topic {
                    Some(topic) => {
                        self.conn5.aliases_in.insert(alias, topic.clone());
                        topic
                    }
                    None => match self.conn5.aliases_in.get(&alias) {
                        Some(topic) => topic.clone(),
                        None => {
                            self.conn5.alias_error = true;
                            return Err(violation(format!("unknown topic alias {alias}")));
                        }
                    },
                }
            }
            // The codec refuses a PUBLISH with neither.
            (None, None) => return Err(violation("PUBLISH without a topic".into())),
        };
        let properties = (!publish.properties.is_empty()).then(|| Box::new(publish.properties));
        let delivery = Delivery {
            message: Message {
                topic,
                payload: publish.payload,
                qos: publish.qos,
                retain: publish.retain,
                // The client hands its properties over in `Delivery::properties`.
                properties: None,
            },
            dup: publish.dup,
            properties,
        };
        self.deliver(delivery, publish.packet_id, now)
    }

    /// Ends the flow of packet id `packet_id` at `stage` with `failure`, if it is ours.
    fn fail_flow(
        &mut self,
        packet_id: u16,
        stage: Awaiting,
        failure: PublishFailure,
        now: Instant,
    ) {
        match self.inflight_position(packet_id, stage) {
            Some(at) => self.fail_inflight(at, failure, now),
            None => log::debug!("ignoring a refusal for unknown packet id {packet_id}"),
        }
    }

    // -- the way out -------------------------------------------------------------------------

    /// CONNECT at level 5.
    pub(super) fn connect_v5(&self) -> v5::Packet {
        let o = &self.options;
        v5::Packet::Connect(Box::new(v5::Connect {
            clean_start: o.clean_session,
            keep_alive: o.keep_alive,
            properties: o.v5.connect_properties.clone(),
            client_id: o.client_id.clone(),
            will: o.will.clone().map(|message| v5::Will {
                message,
                properties: o.v5.will_properties.clone(),
            }),
            username: o.username.clone(),
            password: o.password.clone(),
        }))
    }

    /// The MQTT 5 form of an MQTT 3 flow packet (acks with reason Success, SUBSCRIBE with the
    /// default options, No Local if [`V5Options::no_local`]); `None` for the packets only a
    /// server sends. PUBLISH goes through
    /// [`publish_v5`](Self::publish_v5) instead.
    pub(super) fn to_v5(&self, packet: Packet) -> Option<v5::Packet> {
        let ack = |packet_id| v5::Ack {
            packet_id,
            reason: ReasonCode::SUCCESS,
            properties: Properties::default(),
        };
        Some(match packet {
            Packet::Connect(_) => self.connect_v5(),
            Packet::Publish(p) => {
                v5::Packet::Publish(v5::Publish::new(p.into_message(), None, false))
            }
            Packet::PubAck(PubAck { packet_id }) => v5::Packet::PubAck(ack(packet_id)),
            Packet::PubRec(PubRec { packet_id }) => v5::Packet::PubRec(ack(packet_id)),
            Packet::PubRel(PubRel { packet_id }) => v5::Packet::PubRel(ack(packet_id)),
            Packet::PubComp(PubComp { packet_id }) => v5::Packet::PubComp(ack(packet_id)),
            Packet::Subscribe(s) => v5::Packet::Subscribe(v5::Subscribe {
                packet_id: s.packet_id,
                properties: Properties::default(),
                filters: s
                    .filters
                    .into_iter()
                    .map(|f| Subscription {
                        filter: f.filter,
                        qos: f.qos,
                        no_local: self.options.v5.no_local,
                        retain_as_published: false,
                        retain_handling: v5::RetainHandling::SendAtSubscribe,
                    })
                    .collect(),
            }),
            Packet::Unsubscribe(u) => v5::Packet::Unsubscribe(v5::Unsubscribe {
                packet_id: u.packet_id,
                properties: Properties::default(),
                filters: u.filters,
            }),
            Packet::PingReq => v5::Packet::PingReq,
            Packet::Disconnect => v5::Packet::Disconnect(v5::Disconnect {
                reason: ReasonCode::SUCCESS,
                properties: Properties::default(),
            }),
            Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
                return None
            }
        })
    }

    /// PUBLISH at level 5: the message's properties, and a topic alias when they are on and the
    /// server allows one (the first PUBLISH on a topic sets it up, the next ones send the alias
    /// alone).
    pub(super) fn publish_v5(
        &mut self,
        message: Message,
        properties: Option<&Properties>,
        packet_id: Option<u16>,
        dup: bool,
    ) -> v5::Publish {
        let mut publish = v5::Publish::new(message, packet_id, dup);
        if let Some(properties) = properties {
            publish.properties = properties.clone();
        }
        if !self.options.v5.topic_aliases || self.conn5.topic_alias_maximum == 0 {
            return publish;
        }
        let Some(topic) = publish.topic.take() else {
            return publish;
        };
        let known = self.conn5.aliases_out.len();
        match self.conn5.aliases_out.get(&topic) {
            Some(&alias) => publish.properties.topic_alias = Some(alias),
            None if known < usize::from(self.conn5.topic_alias_maximum) => {
                // Aliases 1..=maximum, handed out in order; `known` < maximum fits in u16.
                let alias = u16::try_from(known + 1).unwrap_or(u16::MAX);
                self.conn5.aliases_out.insert(topic.clone(), alias);
                publish.properties.topic_alias = Some(alias);
                publish.topic = Some(topic);
            }
            None => publish.topic = Some(topic),
        }
        publish
    }

    /// How many QoS 1/2 messages may be in flight: ours, capped by the server's Receive Maximum.
    pub(super) fn inflight_limit(&self) -> usize {
        self.options
            .max_inflight
            .min(usize::from(self.conn5.receive_maximum))
    }

    /// Why the server's CONNACK rules out publishing `next`, if it does.
    pub(super) fn publish_not_allowed(&self, next: &Outgoing) -> Option<String> {
        if !self.is_v5() {
            return None;
        }
        let m = &next.message;
        if m.qos > self.conn5.maximum_qos {
            return Some(format!(
                "QoS {} is above the broker's Maximum QoS {}",
                m.qos as u8, self.conn5.maximum_qos as u8
            ));
        }
        if m.retain && !self.conn5.retain_available {
            return Some("the broker does not support retained messages".into());
        }
        let limit = self.conn5.maximum_packet_size?;
        let properties = match next
            .properties
            .as_deref()
            .map(|p| p.body_len(Kind::Publish))
        {
            None => 0,
            Some(Ok(len)) => len,
            Some(Err(e)) => return Some(format!("bad PUBLISH properties: {e}")),
        };
        let id_len = if m.qos == QoS::AtMostOnce { 0 } else { 2 };
        let remaining =
            2 + m.topic.as_bytes().len() + id_len + wire_len(properties) + m.payload.len();
        let size = 1 + varint_len(remaining) + remaining;
        (size > limit as usize).then(|| {
            format!("the PUBLISH is {size} bytes, above the broker's Maximum Packet Size {limit}")
        })
    }
}

/// A failure reason code of PUBACK or PUBREC as a [`PublishFailure`].
fn refused(ack: &v5::Ack) -> Option<PublishFailure> {
    ack.reason.is_error().then(|| PublishFailure::Refused {
        code: ack.reason,
        reason_string: ack.properties.reason_string.clone(),
    })
}

/// Bytes of a variable byte integer [MQTT-1.5.5].
fn varint_len(value: usize) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// An MQTT 5 reason code's name, as the specification's table writes it [MQTT-2.4].
pub fn reason_name(code: ReasonCode) -> &'static str {
    match code.0 {
        0x00 => "success",
        0x01 => "granted QoS 1",
        0x02 => "granted QoS 2",
        0x04 => "disconnect with will message",
        0x10 => "no matching subscribers",
        0x11 => "no subscription existed",
        0x18 => "continue authentication",
        0x19 => "re-authenticate",
        0x80 => "unspecified error",
        0x81 => "malformed packet",
        0x82 => "protocol error",
        0x83 => "implementation specific error",
        0x84 => "unsupported protocol version",
        0x85 => "client identifier not valid",
        0x86 => "bad user name or password",
        0x87 => "not authorized",
        0x88 => "server unavailable",
        0x89 => "server busy",
        0x8a => "banned",
        0x8b => "server shutting down",
        0x8c => "bad authentication method",
        0x8d => "keep alive timeout",
        0x8e => "session taken over",
        0x8f => "topic filter invalid",
        0x90 => "topic name invalid",
        0x91 => "packet identifier in use",
        0x92 => "packet identifier not found",
        0x93 => "receive maximum exceeded",
        0x94 => "topic alias invalid",
        0x95 => "packet too large",
        0x96 => "message rate too high",
        0x97 => "quota exceeded",
        0x98 => "administrative action",
        0x99 => "payload format invalid",
        0x9a => "retain not supported",
        0x9b => "QoS not supported",
        0x9c => "use another server",
        0x9d => "server moved",
        0x9e => "shared subscriptions not supported",
        0x9f => "connection rate exceeded",
        0xa0 => "maximum connect time",
        0xa1 => "subscription identifiers not supported",
        0xa2 => "wildcard subscriptions not supported",
        _ => "unknown reason code",
    }
}
