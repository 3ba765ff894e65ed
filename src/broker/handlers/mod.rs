//! The one door for a connection's bytes: [`BrokerCore::handle_bytes`] cuts them into packets and
//! sends each through the one `match` below to its handler; one file per packet type.
//!
//! A QoS 0 PUBLISH is first offered to `publish.rs` borrowed from the read buffer (no decoding into
//! reference-counted `Bytes`); every other packet, and a QoS 0 PUBLISH that needs an owned copy, is
//! decoded and dispatched. Either way the packet is counted, and its connection's keep-alive
//! restarts, here, once; with `log_packets` it is logged here too (`packet_log.rs`), on both paths,
//! so the packet log never changes which path a packet takes. The first packet, CONNECT, has its
//! own entry in `connect.rs` ([`BrokerCore::handle_first_bytes`]): it comes before the connection
//! is known to this shard (`connect_session.rs` and `connect_v5.rs` hold parts of it). While an
//! MQTT 5 enhanced authentication exchange runs before the CONNACK, every packet goes to
//! `auth.rs` instead (no PUBLISH is routed in place then); AUTH on a connected client goes there
//! too (re-authentication).
//!
//! Handlers take the broker, the connection and `now`, change state and write replies into the
//! outbox. They never do I/O or touch another shard except through [`super::Action::Bus`].

mod auth;
pub(super) mod connect;
mod connect_session;
mod connect_v5;
mod disconnect;
mod pending_connect;
mod pingreq;
mod puback;
mod pubcomp;
mod publish;
mod pubrec;
mod pubrel;
mod subscribe;
mod unsubscribe;

use std::time::Instant;

use bytes::{Buf, BytesMut};

use crate::protocol::{
    decode, peek_publish, starts_qos0_publish, v5, Packet, PubAck, PubComp, PubRec, PubRel, QoS,
};

use super::{BrokerCore, CloseReason, ConnId, Pressure};

pub(super) use auth::refuse_authenticating;
pub use connect::ListenerIdentity;
pub use pending_connect::{FirstPacket, PendingConnect};

/// What [`BrokerCore::handle_bytes`] handled, and what the runtime does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handled {
    /// The bytes handled held a PUBLISH (the runtime times the deliveries it caused).
    pub publish: bool,
    pub next: Next,
}

/// What the runtime does after [`BrokerCore::handle_bytes`]: always apply the actions first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Every whole packet was handled; what is left in the buffer is the start of the next one.
    /// Read more and call again.
    ReadMore,
    /// A PUBLISH waits at the front of the buffer while the broker-wide `memory_limit` is nearly
    /// reached, or (QoS 1/2) while a subscriber is behind (`flow_control.rs`): hold this publisher
    /// (read nothing more from it) until memory drains and no subscriber is behind
    /// ([`Action::ResumePublishers`](super::Action::ResumePublishers)), or a bounded wait has
    /// passed, then call again; that PUBLISH is handled then, whatever the state.
    PausePublisher,
    /// The bytes broke the protocol: the connection is closing (counted, will published). Send
    /// what the core wrote and stop reading.
    Stop,
}

impl BrokerCore {
    /// Bytes read from a connection whose CONNECT was accepted, `now`: every whole packet at the
    /// front of `buf` is handled and removed; a partial one stays for the next call.
    pub fn handle_bytes(&mut self, conn: ConnId, buf: &mut BytesMut, now: Instant) -> Handled {
        self.clock = Some(now);
        let max = self.settings.max_packet_size;
        let mut publish = false;
        // The codec is chosen once per call: a connection's level is fixed by its CONNECT.
        let v5 = self.is_v5(conn);
        // No PUBLISH is routed in place before the CONNACK of an enhanced authentication: every
        // packet is decoded and goes to `auth.rs` (for the rest of this call only: it is rare).
        let authenticating = self
            .connections
            .get(&conn)
            .is_some_and(|c| c.is_authenticating());
        loop {
            if buf.is_empty() {
                return Handled {
                    publish,
                    next: Next::ReadMore,
                };
            }
            let paused = self.settings.memory.pressure() >= Pressure::PausePublishers;
            if let Some(hold) = self.hold_for(conn, buf, paused) {
                if !self.resume_publisher(conn, hold) {
                    return Handled {
                        publish,
                        next: Next::PausePublisher,
                    };
                }
            }
            // Only a QoS 0 PUBLISH without RETAIN can be routed in place: the others are not
            // parsed twice. With `log_packets` it is logged here, before it is routed, and not
            // again in `dispatch` if it falls back to being decoded.
            let mut noted = false;
            let mut logged = false;
            if !paused && !authenticating && starts_qos0_publish(buf) {
                let peeked = if v5 {
                    // An MQTT 5 PUBLISH without properties reads as MQTT 3's would; one whose
                    // only property is a Topic Alias does once the alias is resolved.
                    v5::peek_publish(buf, max)
                        .filter(|(p, raw, _)| {
                            (raw.is_empty() && !p.topic.is_empty())
                                || v5::lone_topic_alias(raw).is_some()
                        })
                        .map(|(p, raw, length)| (p, v5::lone_topic_alias(raw), length))
                } else {
                    peek_publish(buf, max).map(|(p, length)| (p, None, length))
                };
                if let Some((borrowed, alias, length)) = peeked {
                    noted = self.note_packet(conn, now);
                    if noted && self.settings.log_packets {
                        self.log_received_publish(conn, &borrowed);
                        logged = true;
                    }
                    let routed = |broker: &mut Self| match alias {
                        Some(alias) => {
                            publish::handle_borrowed_aliased(broker, conn, &borrowed, alias)
                        }
                        None => publish::handle_borrowed(broker, &borrowed),
                    };
                    if !noted || routed(self) {
                        buf.advance(length);
                        publish |= noted;
                        continue;
                    }
                }
            }
            // An MQTT 5 PUBLISH without properties (most are) reads as MQTT 3's: decoded so,
            // it skips the MQTT 5 `Packet` and its inline properties (some 400 bytes moved
            // from the decoder to the handler).
            if v5 && !authenticating {
                if let Some(plain) = v5::decode_plain_publish(buf, max) {
                    publish = true;
                    if noted || self.note_packet(conn, now) {
                        if self.settings.log_packets && !logged {
                            log::info!(target: super::packet_log::TARGET, "Received PUBLISH from connection {conn}");
                        }
                        publish::handle_v5_plain(self, conn, plain);
                    }
                    continue;
                }
                // So does a success acknowledgement in its short form (MQTT 3's bytes).
                if v5::starts_short_ack(buf) {
                    if let Ok(Some(ack)) = decode(buf, max) {
                        if noted || self.note_packet(conn, now) {
                            dispatch(self, conn, ack, logged);
                        }
                        continue;
                    }
                }
            }
            let decoded = if v5 {
                v5::decode(buf, max).map(|p| p.map(Decoded::V5))
            } else {
                decode(buf, max).map(|p| p.map(Decoded::V3))
            };
            match decoded {
                Ok(Some(packet)) => {
                    publish |= matches!(
                        packet,
                        Decoded::V3(Packet::Publish(_)) | Decoded::V5(v5::Packet::Publish(_))
                    );
                    if noted || self.note_packet(conn, now) {
                        match packet {
                            Decoded::V3(packet) => dispatch(self, conn, packet, logged),
                            Decoded::V5(packet) => v5_dispatch(self, conn, packet, logged),
                        }
                    }
                }
                Ok(None) => {
                    return Handled {
                        publish,
                        next: Next::ReadMore,
                    }
                }
                Err(error) => {
                    log::debug!("shard {}: connection {conn}: {error}; closing", self.shard);
                    if !v5 {
                        self.handle_protocol_error(conn);
                        return Handled {
                            publish,
                            next: Next::Stop,
                        };
                    }
                    self.protocol_error_v5(conn, error.reason_code());
                    // The DISCONNECT just written must leave before the socket closes: the
                    // runtime reads on (what comes is ignored) until its writer has sent it and
                    // shut the socket, as after any other close the core decides.
                    buf.clear();
                    return Handled {
                        publish,
                        next: Next::ReadMore,
                    };
                }
            }
        }
    }

    /// Notes that an active connection sent a packet at `now`: counted, and its keep-alive
    /// restarts; once per packet, whichever way it is handled. `false` when the connection is gone
    /// or closing, whose packets are ignored. (An authenticating one's packets are counted; its
    /// time limit runs from its CONNECT.)
    fn note_packet(&mut self, conn: ConnId, now: Instant) -> bool {
        match self.connections.get_mut(&conn) {
            Some(connection) if connection.is_active() => {
                connection.last_activity = now;
                // A PUBLISH held back is being handled (or what held it went away).
                connection.publish_paused = false;
                self.stats.packets_received += 1;
                true
            }
            Some(connection) if connection.is_authenticating() => {
                self.stats.packets_received += 1;
                true
            }
            _ => false,
        }
    }

    /// Why the PUBLISH at the front of `buf`, if there is one, must wait: the memory budget is
    /// nearly spent (`paused`, any QoS), or a subscriber is behind or too much is in transit
    /// between shards (QoS 1/2 only, see `flow_control.rs`).
    fn hold_for(&self, conn: ConnId, buf: &[u8], paused: bool) -> Option<Hold> {
        if !paused && !self.gate_closed() {
            return None;
        }
        let (publish, _) = peek_publish(buf, self.settings.max_packet_size)?;
        if paused {
            Some(Hold::Memory)
        } else if publish.qos != QoS::AtMostOnce && self.holds_publisher(conn) {
            Some(Hold::Subscribers)
        } else {
            None
        }
    }

    /// Whether the PUBLISH at the front of `conn`'s bytes was held back already (then it goes
    /// through now: `note_packet` ends the hold); otherwise notes that it is held back.
    fn resume_publisher(&mut self, conn: ConnId, hold: Hold) -> bool {
        let Some(connection) = self.connections.get_mut(&conn) else {
            // Not served here (or forgotten): its packets are ignored, nothing to hold back.
            return true;
        };
        if connection.publish_paused {
            return true;
        }
        connection.publish_paused = true;
        match hold {
            Hold::Memory => self.settings.memory.note_pause(),
            Hold::Subscribers => self.stats.publishers_held += 1,
        }
        false
    }
}

/// A packet decoded at the connection's level. On the stack for one packet: boxing the larger
/// MQTT 5 variant would cost an allocation per packet.
#[allow(clippy::large_enum_variant)]
enum Decoded {
    V3(Packet),
    V5(v5::Packet),
}

/// Why a publisher's next PUBLISH waits ([`Next::PausePublisher`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hold {
    /// The broker-wide `memory_limit` is nearly reached (`memory.rs`).
    Memory,
    /// A subscriber somewhere is behind (`flow_control.rs`).
    Subscribers,
}

/// The one `match` from a decoded packet to its handler. `logged`: its packet-log line is
/// already written (a QoS 0 PUBLISH peeked in place that had to be decoded after all).
fn dispatch(broker: &mut BrokerCore, conn: ConnId, packet: Packet, logged: bool) {
    if broker.settings.log_packets && !logged {
        broker.log_received(conn, &packet);
    }
    match packet {
        Packet::Publish(publish) => publish::handle(broker, conn, publish),
        Packet::PubAck(ack) => puback::handle(broker, conn, ack),
        Packet::PubRec(rec) => pubrec::handle(broker, conn, rec),
        Packet::PubRel(rel) => pubrel::handle(broker, conn, rel),
        Packet::PubComp(comp) => pubcomp::handle(broker, conn, comp),
        Packet::Subscribe(subscribe) => subscribe::handle(broker, conn, subscribe),
        Packet::Unsubscribe(unsubscribe) => unsubscribe::handle(broker, conn, unsubscribe),
        Packet::PingReq => pingreq::handle(broker, conn),
        Packet::Disconnect => disconnect::handle(broker, conn),
        // A second CONNECT is a protocol violation [MQTT-3.1.0-2]; the rest only flow server → client.
        Packet::Connect(_)
        | Packet::ConnAck(_)
        | Packet::SubAck(_)
        | Packet::UnsubAck(_)
        | Packet::PingResp => {
            log::debug!("connection {conn}: unexpected {packet:?}, closing");
            broker.stats.protocol_errors += 1;
            broker.close(conn, CloseReason::ProtocolError);
        }
    }
}

/// The one `match` for an MQTT 5 connection's packets: each goes to its packet's file, as in
/// [`dispatch`].
fn v5_dispatch(broker: &mut BrokerCore, conn: ConnId, packet: v5::Packet, logged: bool) {
    if broker.settings.log_packets && !logged {
        log::info!(target: super::packet_log::TARGET, "Received {} from connection {conn}", packet.name());
    }
    if broker
        .connections
        .get(&conn)
        .is_some_and(|c| c.is_authenticating())
    {
        return auth::handle_connecting(broker, conn, packet);
    }
    match packet {
        v5::Packet::Publish(publish) => publish::handle_v5(broker, conn, publish),
        v5::Packet::PubAck(ack) => puback::handle(
            broker,
            conn,
            PubAck {
                packet_id: ack.packet_id,
            },
        ),
        v5::Packet::PubRec(rec) => {
            if rec.reason.is_error() {
                pubrec::handle_refused(broker, conn, rec.packet_id);
            } else {
                pubrec::handle(
                    broker,
                    conn,
                    PubRec {
                        packet_id: rec.packet_id,
                    },
                );
            }
        }
        v5::Packet::PubRel(rel) => pubrel::handle(
            broker,
            conn,
            PubRel {
                packet_id: rel.packet_id,
            },
        ),
        v5::Packet::PubComp(comp) => pubcomp::handle(
            broker,
            conn,
            PubComp {
                packet_id: comp.packet_id,
            },
        ),
        v5::Packet::Subscribe(subscribe) => subscribe::handle_v5(broker, conn, subscribe),
        v5::Packet::Unsubscribe(unsubscribe) => unsubscribe::handle_v5(broker, conn, unsubscribe),
        v5::Packet::PingReq => pingreq::handle(broker, conn),
        v5::Packet::Disconnect(disconnect) => disconnect::handle_v5(broker, conn, disconnect),
        v5::Packet::Auth(auth) => auth::handle(broker, conn, auth),
        // A second CONNECT is a protocol error [MQTT-3.1.0-2]; the rest only flow server → client.
        v5::Packet::Connect(_)
        | v5::Packet::ConnAck(_)
        | v5::Packet::SubAck(_)
        | v5::Packet::UnsubAck(_)
        | v5::Packet::PingResp => {
            log::debug!("connection {conn}: unexpected {}, closing", packet.name());
            broker.protocol_error_v5(conn, v5::ReasonCode::PROTOCOL_ERROR);
        }
    }
}

/// Test helpers: packets go in as the runtime hands them over, as bytes.
#[cfg(test)]
impl BrokerCore {
    /// `packet`'s wire bytes through [`handle_bytes`](Self::handle_bytes), which must take them all.
    /// A PUBLISH held back (`Next::PausePublisher`) is handed over again at once, as the runtime
    /// does once its wait is over (tests of the hold itself call `handle_bytes`).
    pub(crate) fn handle_encoded(
        &mut self,
        conn: ConnId,
        packet: &Packet,
        now: Instant,
    ) -> Handled {
        let mut buf = BytesMut::new();
        packet.encode(&mut buf).expect("a test packet encodes");
        let mut handled = self.handle_bytes(conn, &mut buf, now);
        if handled.next == Next::PausePublisher {
            handled = self.handle_bytes(conn, &mut buf, now);
        }
        assert!(
            buf.is_empty() || handled.next != Next::ReadMore,
            "{packet:?} was left in the buffer"
        );
        handled
    }

    /// `connect`'s wire bytes through [`handle_first_bytes`](Self::handle_first_bytes) and
    /// [`handle_connect`](Self::handle_connect), on the shard they belong to (this one).
    pub(crate) fn connect_encoded(
        &mut self,
        conn: ConnId,
        connect: &crate::protocol::Connect,
        auth: super::AuthVerdict,
        now: Instant,
    ) -> super::ConnectOutcome {
        let mut buf = BytesMut::new();
        Packet::Connect(Box::new(connect.clone()))
            .encode(&mut buf)
            .expect("a test CONNECT encodes");
        let FirstPacket::Connect(pending) =
            self.handle_first_bytes(&buf, &ListenerIdentity::Connect)
        else {
            panic!("{connect:?} is not a first packet to answer");
        };
        assert_eq!(pending.home(), self.shard, "{connect:?} belongs elsewhere");
        assert_eq!(pending.byte_len(), buf.len());
        self.handle_connect(conn, pending, auth, now)
    }
}
