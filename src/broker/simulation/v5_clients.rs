//! MQTT 5 clients in the simulation: which clients speak MQTT 5 ([`V5Plan`], drawn from a
//! generator of the seed's own, so that the main one makes the draws it made before), the
//! Message Expiry Interval some of their messages carry, and the wire: the model keeps its
//! packets in their MQTT 3 form, and this file turns an MQTT 5 client's into MQTT 5 bytes on the
//! way in and the broker's MQTT 5 bytes back into MQTT 3 packets (plus what the model checks of
//! MQTT 5: the Message Expiry Interval of each PUBLISH, `msg_expiry.rs`) on the way out.
//!
//! An MQTT 5 client behaves as an MQTT 3 one with the same session: Clean Start with no Session
//! Expiry Interval for a clean session, no Clean Start with 0xFFFFFFFF (the broker's
//! `session_expiry_interval` caps it) for a persistent one; it sends no QoS above the
//! CONNACK's Maximum QoS, normal DISCONNECTs and SUBSCRIBE options that change nothing (Retain
//! Handling 0, no No Local, no Retain As Published). The broker's DISCONNECT before it closes
//! is read and dropped. Must not: decide what a client does (`clients.rs`) or check what it
//! reads (`reads.rs`).

use bytes::BytesMut;

use super::*;
use crate::protocol::v5::{self, Properties, ReasonCode};
use crate::protocol::{ConnAck, Message, SubAck, UnsubAck};

/// Which clients speak MQTT 5 and what their messages carry.
pub(super) struct V5Plan {
    rng: Rng,
    /// Percentage of the clients that speak MQTT 5 (0 on about two seeds in five: those run as
    /// before MQTT 5 was simulated).
    pub(super) percent: u64,
}

impl V5Plan {
    pub(super) fn new(seed: u64) -> V5Plan {
        let mut rng = Rng::new(seed ^ 0x0505_e1f1_c0de_0005);
        let percent = if rng.chance(40) {
            0
        } else {
            10 + rng.below(81) as u64
        };
        V5Plan { rng, percent }
    }

    /// Whether the next client speaks MQTT 5.
    pub(super) fn next_client(&mut self) -> bool {
        self.rng.chance(self.percent)
    }

    /// The Message Expiry Interval of an MQTT 5 client's new message: on half of them, 1 to 20
    /// seconds (ticks move the clock 0.2 to 8.2 s, so queued messages do expire).
    fn expiry(&mut self) -> Option<u32> {
        self.rng.chance(50).then(|| 1 + self.rng.below(20) as u32)
    }
}

/// A packet an MQTT 5 connection read, as the model sees it.
pub(super) struct Read {
    pub(super) packet: Packet,
    /// A PUBLISH's Message Expiry Interval (always `None` on an MQTT 3 connection).
    pub(super) expiry: Option<u32>,
}

impl Sim {
    /// The QoS and Message Expiry Interval of a new message of client `c` drawn at `qos`: an
    /// MQTT 5 client keeps within the CONNACK's Maximum QoS and sometimes sets an expiry.
    pub(super) fn v5_message(&mut self, c: usize, qos: QoS) -> (QoS, Option<u32>) {
        if !self.clients[c].v5 {
            return (qos, None);
        }
        (qos.min(self.cfg.settings.max_qos), self.v5.expiry())
    }

    /// Client `c`'s CONNECT on connection `conn`, handled by its home shard.
    pub(super) fn connect_core(
        &mut self,
        c: usize,
        conn: ConnId,
        clean: bool,
        keep_alive: u16,
        will: Option<usize>,
    ) -> ConnectOutcome {
        let home = self.clients[c].home;
        if !self.clients[c].v5 {
            let connect = Connect {
                protocol: ProtocolLevel::V311,
                clean_session: clean,
                keep_alive,
                client_id: self.clients[c].id.clone(),
                will: will.map(|m| LastWill {
                    topic: self.topic_names[self.msgs[m].topic].clone(),
                    payload: payload_of(m),
                    qos: self.msgs[m].qos,
                    retain: self.msgs[m].retain,
                    properties: None,
                }),
                username: None,
                password: None,
            };
            return self.cores[home].connect_encoded(
                conn,
                &connect,
                AuthVerdict::Allowed,
                self.now,
            );
        }
        let connect = v5::Connect {
            clean_start: clean,
            keep_alive,
            properties: Properties {
                session_expiry_interval: (!clean).then_some(u32::MAX),
                ..Properties::default()
            },
            client_id: self.clients[c].id.clone(),
            will: will.map(|m| v5::Will {
                message: Message {
                    topic: self.topic_names[self.msgs[m].topic].clone(),
                    payload: payload_of(m),
                    qos: self.msgs[m].qos,
                    retain: self.msgs[m].retain,
                    properties: None,
                },
                properties: Properties {
                    message_expiry_interval: self.msgs[m].expiry,
                    ..Properties::default()
                },
            }),
            username: None,
            password: None,
        };
        let mut wire = BytesMut::new();
        if let Err(e) = v5::Packet::Connect(Box::new(connect)).encode(&mut wire) {
            fail!(self, "an MQTT 5 CONNECT does not encode: {e}");
        }
        let FirstPacket::Connect(pending) =
            self.cores[home].handle_first_bytes(&wire, &ListenerIdentity::Connect)
        else {
            fail!(self, "an MQTT 5 CONNECT was not taken as one");
        };
        self.cores[home].handle_connect(conn, pending, AuthVerdict::Allowed, self.now)
    }

    /// Hands `packet` of client `c` to its home shard as the bytes its connection carries.
    pub(super) fn hand_over(&mut self, c: usize, conn: ConnId, packet: &Packet) {
        let shard = self.clients[c].home;
        if !self.clients[c].v5 {
            self.cores[shard].handle_encoded(conn, packet, self.now);
            return;
        }
        let v5_packet = self.to_v5(packet);
        let mut buf = BytesMut::new();
        if let Err(e) = v5_packet.encode(&mut buf) {
            fail!(self, "{v5_packet:?} does not encode: {e}");
        }
        let mut handled = self.cores[shard].handle_bytes(conn, &mut buf, self.now);
        if handled.next == Next::PausePublisher {
            // No client waits in the model (see `collect_actions`).
            handled = self.cores[shard].handle_bytes(conn, &mut buf, self.now);
        }
        if !buf.is_empty() && handled.next == Next::ReadMore {
            fail!(self, "{v5_packet:?} was left in the buffer");
        }
    }

    /// The MQTT 5 form of a packet a client sends (a PUBLISH with its message's expiry).
    fn to_v5(&self, packet: &Packet) -> v5::Packet {
        let ack = |packet_id| v5::Ack {
            packet_id,
            reason: ReasonCode::SUCCESS,
            properties: Properties::default(),
        };
        match packet {
            Packet::Publish(p) => v5::Packet::Publish(v5::Publish {
                dup: p.dup,
                qos: p.qos,
                retain: p.retain,
                topic: Some(p.topic.clone()),
                packet_id: p.packet_id,
                properties: Properties {
                    message_expiry_interval: msg_of(&p.payload)
                        .and_then(|m| self.msgs.get(m))
                        .and_then(|info| info.expiry),
                    ..Properties::default()
                },
                payload: p.payload.clone(),
            }),
            Packet::PubAck(a) => v5::Packet::PubAck(ack(a.packet_id)),
            Packet::PubRec(a) => v5::Packet::PubRec(ack(a.packet_id)),
            Packet::PubRel(a) => v5::Packet::PubRel(ack(a.packet_id)),
            Packet::PubComp(a) => v5::Packet::PubComp(ack(a.packet_id)),
            Packet::Subscribe(s) => v5::Packet::Subscribe(v5::Subscribe {
                packet_id: s.packet_id,
                properties: Properties::default(),
                filters: s
                    .filters
                    .iter()
                    .map(|f| v5::Subscription {
                        filter: f.filter.clone(),
                        qos: f.qos,
                        no_local: false,
                        retain_as_published: false,
                        retain_handling: v5::RetainHandling::SendAtSubscribe,
                    })
                    .collect(),
            }),
            Packet::Unsubscribe(u) => v5::Packet::Unsubscribe(v5::Unsubscribe {
                packet_id: u.packet_id,
                properties: Properties::default(),
                filters: u.filters.clone(),
            }),
            Packet::PingReq => v5::Packet::PingReq,
            Packet::PingResp => v5::Packet::PingResp,
            Packet::Disconnect => v5::Packet::Disconnect(v5::Disconnect {
                reason: ReasonCode::SUCCESS,
                properties: Properties::default(),
            }),
            other => fail!(self, "a simulated client does not send {other:?}"),
        }
    }

    /// The packets connection `conn` (MQTT 5 with `mqtt5`) read from `bytes`, each with the offset
    /// its bytes end at; the broker's DISCONNECT (before a close the model has noted) is dropped.
    pub(super) fn decode_outbox(
        &self,
        conn: ConnId,
        mqtt5: bool,
        bytes: &mut BytesMut,
    ) -> Vec<(Read, usize)> {
        let total = bytes.len();
        let mut read = Vec::new();
        loop {
            let packet = if mqtt5 {
                match v5::decode(bytes, PROTOCOL_MAX) {
                    Ok(Some(p)) => match self.read_v5(conn, p) {
                        Some(packet) => packet,
                        None => continue,
                    },
                    Ok(None) => break,
                    Err(e) => fail!(self, "broker wrote undecodable MQTT 5 bytes to {conn}: {e}"),
                }
            } else {
                match decode(bytes, PROTOCOL_MAX) {
                    Ok(Some(packet)) => Read {
                        packet,
                        expiry: None,
                    },
                    Ok(None) => break,
                    Err(e) => fail!(self, "broker wrote undecodable bytes to {conn}: {e}"),
                }
            };
            read.push((packet, total - bytes.len()));
        }
        if !bytes.is_empty() {
            fail!(self, "broker wrote a partial packet to {conn}");
        }
        read
    }

    /// What connection `conn` reads of the broker's MQTT 5 `packet`, in its MQTT 3 form; `None`
    /// for the DISCONNECT before a close.
    fn read_v5(&self, conn: ConnId, packet: v5::Packet) -> Option<Read> {
        let mut expiry = None;
        let packet = match packet {
            v5::Packet::Disconnect(d) => {
                if self.conns.get(&conn).is_some_and(|m| m.active) {
                    fail!(self, "DISCONNECT {:?} on open connection {conn}", d.reason);
                }
                return None;
            }
            v5::Packet::ConnAck(ack) => Packet::ConnAck(ConnAck {
                session_present: ack.session_present,
                code: if ack.reason == ReasonCode::SUCCESS {
                    ConnectReturnCode::Accepted
                } else {
                    ConnectReturnCode::ServerUnavailable
                },
            }),
            v5::Packet::Publish(p) => {
                let Some(topic) = p.topic else {
                    fail!(
                        self,
                        "a PUBLISH to {conn} with a Topic Alias nobody asked for"
                    );
                };
                expiry = p.properties.message_expiry_interval;
                Packet::Publish(Publish {
                    dup: p.dup,
                    qos: p.qos,
                    retain: p.retain,
                    topic,
                    packet_id: p.packet_id,
                    payload: p.payload,
                })
            }
            v5::Packet::PubAck(a) => Packet::PubAck(PubAck {
                packet_id: a.packet_id,
            }),
            v5::Packet::PubRec(a) if !a.reason.is_error() => Packet::PubRec(PubRec {
                packet_id: a.packet_id,
            }),
            v5::Packet::PubRel(a) => Packet::PubRel(PubRel {
                packet_id: a.packet_id,
            }),
            v5::Packet::PubComp(a) => Packet::PubComp(PubComp {
                packet_id: a.packet_id,
            }),
            v5::Packet::SubAck(a) => Packet::SubAck(SubAck {
                packet_id: a.packet_id,
                return_codes: a
                    .reason_codes
                    .iter()
                    .map(|code| match code.0 {
                        0 => SubscribeReturnCode::Success(QoS::AtMostOnce),
                        1 => SubscribeReturnCode::Success(QoS::AtLeastOnce),
                        2 => SubscribeReturnCode::Success(QoS::ExactlyOnce),
                        _ => SubscribeReturnCode::Failure,
                    })
                    .collect(),
            }),
            v5::Packet::UnsubAck(a) => Packet::UnsubAck(UnsubAck {
                packet_id: a.packet_id,
            }),
            v5::Packet::PingResp => Packet::PingResp,
            other => fail!(self, "broker sent {other:?} to MQTT 5 connection {conn}"),
        };
        Some(Read { packet, expiry })
    }
}
