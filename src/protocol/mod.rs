//! The MQTT wire format: one codec shared by broker, client and bench.
//!
//! Bytes in, typed [`Packet`]s out, and back. One file per packet type holds its decode, encode and
//! tests, except the five that are only a packet identifier (PUBACK, PUBREC, PUBREL, PUBCOMP,
//! UNSUBACK), which share `ack.rs`. This module knows nothing of sockets, clocks, runtimes or broker
//! state; "need more bytes" is `Ok(None)` from [`decode`], never an error.
//!
//! Validation done here (anything that can be judged from one packet alone): remaining length
//! (≤ 4 bytes, ≤ the caller's maximum packet size), reserved fixed-header flags [MQTT-2.2.2-1/2],
//! UTF-8 strings well-formed without U+0000 [MQTT-1.5.3-1/2], topic names without wildcards
//! [MQTT-3.3.2-2], topic filters well-formed [MQTT-4.7.1-2/3], non-empty SUBSCRIBE/UNSUBSCRIBE
//! [MQTT-3.8.3-3, 3.10.3-2], QoS 3 rejected [MQTT-3.3.1-4], packet identifier 0 rejected,
//! protocol name/level. Broker policy (client-id rules, auth, ACLs) is not done here.
//!
//! MQTT 3.1 and 3.1.1 are [`Packet`] and [`decode`]; MQTT 5 is [`v5::Packet`] and [`v5::decode`]
//! (a connection's level is known from its CONNECT; `decode` refuses a level-5 CONNECT with
//! [`DecodeError::UnsupportedProtocolLevel`]). Shared by both: `strings.rs` (wire primitives),
//! `fixed_header.rs`, `topic.rs`, `connect_fields.rs`, PUBLISH's parser and `error.rs`.

#![forbid(unsafe_code)]

mod ack;
mod connack;
mod connect;
mod connect_fields;
mod error;
pub use error::{DecodeError, EncodeError};
mod disconnect;
mod fixed_header;
mod peek;
mod pingreq;
mod pingresp;
mod share;
pub use peek::{peek_topics, peek_topics_v5, PeekedTopics};
pub use share::{Share, SHARE_PREFIX};
mod publish;
pub use publish::PublishRef;
mod strings;
mod sub_options;
pub use sub_options::SubOptions;
mod suback;
mod subscribe;
mod topic;
mod unsubscribe;
pub mod v5;

pub use v5::{Properties as V5Properties, ReasonCode};

use bytes::{Bytes, BytesMut};

use fixed_header::FixedHeader;

/// Largest packet the protocol can express: 4-byte remaining length (268,435,455) plus header.
pub const PROTOCOL_MAX_PACKET_SIZE: usize = 268_435_455 + 5;

/// Quality of service level [MQTT-4.3].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum QoS {
    /// QoS 0: delivered at most once, never acknowledged.
    AtMostOnce = 0,
    /// QoS 1: delivered at least once (PUBLISH, PUBACK).
    AtLeastOnce = 1,
    /// QoS 2: delivered exactly once (PUBLISH, PUBREC, PUBREL, PUBCOMP).
    ExactlyOnce = 2,
}

/// Protocol level from CONNECT: 3 = MQTT 3.1 ("MQIsdp"), 4 = MQTT 3.1.1 ("MQTT"), 5 reserved for MQTT 5.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolLevel {
    /// MQTT 3.1 (protocol name "MQIsdp").
    V31 = 3,
    /// MQTT 3.1.1 (protocol name "MQTT").
    V311 = 4,
    /// MQTT 5: its packets are [`v5::Packet`]s, read by [`v5::decode`]; [`decode`] refuses its
    /// CONNECT with [`DecodeError::UnsupportedProtocolLevel`].
    V5 = 5,
}

/// A validated topic name (PUBLISH, will): non-empty UTF-8, no U+0000, no `+` or `#`.
/// Backed by `Bytes` so clones on the fan-out path do not allocate.
///
/// Ordering is byte-wise, which for UTF-8 is the same as `str` ordering.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicName(Bytes);

/// A validated topic filter (SUBSCRIBE, UNSUBSCRIBE): non-empty, `#` only last and alone in its level,
/// `+` alone in its level.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicFilter(String);

/// One MQTT control packet.
///
/// CONNECT, once per connection and the largest by far, is boxed: a `Packet` is then 72 bytes
/// rather than 160, and every packet is moved several times between the decoder and its handler
/// (those moves were `memcpy` calls, ~3 % of the broker's CPU in `pairs -n 8 --qos 1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// CONNECT (client → server), boxed (see above).
    Connect(Box<Connect>),
    /// CONNACK (server → client).
    ConnAck(ConnAck),
    /// PUBLISH (both ways).
    Publish(Publish),
    /// PUBACK: QoS 1 acknowledgement.
    PubAck(PubAck),
    /// PUBREC: QoS 2, first answer.
    PubRec(PubRec),
    /// PUBREL: QoS 2, release.
    PubRel(PubRel),
    /// PUBCOMP: QoS 2, complete.
    PubComp(PubComp),
    /// SUBSCRIBE (client → server).
    Subscribe(Subscribe),
    /// SUBACK (server → client).
    SubAck(SubAck),
    /// UNSUBSCRIBE (client → server).
    Unsubscribe(Unsubscribe),
    /// UNSUBACK (server → client).
    UnsubAck(UnsubAck),
    /// PINGREQ (client → server).
    PingReq,
    /// PINGRESP (server → client).
    PingResp,
    /// DISCONNECT (client → server).
    Disconnect,
}

impl Packet {
    /// The packet's name as the specification writes it (`PUBLISH`), for messages and logs.
    pub fn name(&self) -> &'static str {
        match self {
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
}

/// `Debug` never prints the password (see `connect.rs`): CONNECTs are logged at trace level.
#[derive(Clone, PartialEq, Eq)]
pub struct Connect {
    /// The protocol level asked for.
    pub protocol: ProtocolLevel,
    /// Start a new session (and end it with the connection) rather than resume one.
    pub clean_session: bool,
    /// Seconds between the client's packets before it may be dropped; 0 is off.
    pub keep_alive: u16,
    /// Empty to ask the server for one (clean sessions only) [MQTT-3.1.3-6].
    pub client_id: String,
    /// Published by the server if the connection ends without DISCONNECT.
    pub will: Option<LastWill>,
    /// The user name, if sent.
    pub username: Option<String>,
    /// The password, if sent (binary data in MQTT 3.1.1).
    pub password: Option<Bytes>,
}

/// An application message [MQTT-1.2]: what a PUBLISH carries, a will is, the broker routes and a
/// plugin sees, without the fields of one hop (packet identifier, DUP). One type from the
/// client's publish call to the subscriber's delivery, so nothing copies it field by field.
///
/// MQTT 5's message properties ride along behind one reference count: `None` for every MQTT 3
/// message and every MQTT 5 one without properties, so those cost nothing more than before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Where it is published.
    pub topic: TopicName,
    /// What it says (opaque bytes).
    pub payload: Bytes,
    /// The QoS it is published at.
    pub qos: QoS,
    /// Whether it is retained.
    pub retain: bool,
    /// MQTT 5 message properties, forwarded unchanged and in order [MQTT-3.3.2.3]: Payload Format
    /// Indicator, Message Expiry Interval, Content Type, Response Topic, Correlation Data, User
    /// Properties (never a Topic Alias or a Subscription Identifier: those belong to one hop).
    /// `None`: no properties (never `Some` of an empty set). Dropped on the way to an MQTT 3 client.
    pub properties: Option<std::sync::Arc<v5::Properties>>,
}

/// The will in a CONNECT [MQTT-3.1.2.5]: the message the broker publishes when the connection
/// ends without DISCONNECT. In MQTT 3.1.1 it is exactly a [`Message`]; MQTT 5's will delay
/// interval will make it a struct that holds one.
pub type LastWill = Message;

/// A CONNACK's answer [MQTT-3.2.2.3].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectReturnCode {
    /// 0x00: connection accepted.
    Accepted = 0,
    /// 0x01: the server does not speak the requested protocol level.
    UnacceptableProtocolVersion = 1,
    /// 0x02: the client id is not allowed.
    IdentifierRejected = 2,
    /// 0x03: the MQTT service is unavailable.
    ServerUnavailable = 3,
    /// 0x04: malformed user name or password.
    BadUserNameOrPassword = 4,
    /// 0x05: the client is not authorized to connect.
    NotAuthorized = 5,
}

/// CONNACK: the answer to CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnAck {
    /// The server resumed a session it held for this client id.
    pub session_present: bool,
    /// Accepted, or why not.
    pub code: ConnectReturnCode,
}

/// PUBLISH: an application message, either way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// A re-delivery of an earlier attempt (QoS 1 and 2).
    pub dup: bool,
    /// The QoS of this delivery.
    pub qos: QoS,
    /// To the server: keep it as the topic's retained message. From the server: it is one.
    pub retain: bool,
    /// Where it is published.
    pub topic: TopicName,
    /// `Some` exactly when `qos` > 0.
    pub packet_id: Option<u16>,
    /// The application's bytes.
    pub payload: Bytes,
}

/// PUBACK [MQTT-3.4]: acknowledges a QoS 1 PUBLISH. Codec and tests: `ack.rs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PubAck {
    /// The PUBLISH's packet identifier.
    pub packet_id: u16,
}
/// PUBREC [MQTT-3.5]: first answer to a QoS 2 PUBLISH. Codec and tests: `ack.rs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PubRec {
    /// The PUBLISH's packet identifier.
    pub packet_id: u16,
}
/// PUBREL [MQTT-3.6]: releases a QoS 2 PUBLISH (fixed-header flags 0b0010). Codec and tests: `ack.rs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PubRel {
    /// The PUBLISH's packet identifier.
    pub packet_id: u16,
}
/// PUBCOMP [MQTT-3.7]: completes a QoS 2 flow. Codec and tests: `ack.rs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PubComp {
    /// The PUBLISH's packet identifier.
    pub packet_id: u16,
}

/// SUBSCRIBE: one or more filters, each with the QoS asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// Echoed by the SUBACK.
    pub packet_id: u16,
    /// In order; never empty once decoded.
    pub filters: Vec<SubscribeFilter>,
}

/// One filter of a SUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeFilter {
    /// What to subscribe to.
    pub filter: TopicFilter,
    /// The highest QoS wanted for its messages.
    pub qos: QoS,
}

/// The answer for one filter of a SUBSCRIBE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscribeReturnCode {
    /// Subscribed, with the QoS granted (may be lower than asked).
    Success(QoS),
    /// 0x80: refused.
    Failure,
}

/// SUBACK: the answer to a SUBSCRIBE, one code per filter in the same order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    /// The SUBSCRIBE's packet identifier.
    pub packet_id: u16,
    /// One per filter of the SUBSCRIBE.
    pub return_codes: Vec<SubscribeReturnCode>,
}

/// UNSUBSCRIBE: filters to remove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    /// Echoed by the UNSUBACK.
    pub packet_id: u16,
    /// Exactly as subscribed; never empty once decoded.
    pub filters: Vec<TopicFilter>,
}

/// UNSUBACK [MQTT-3.11]: acknowledges an UNSUBSCRIBE. Codec and tests: `ack.rs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnsubAck {
    /// The UNSUBSCRIBE's packet identifier.
    pub packet_id: u16,
}

impl Publish {
    /// The PUBLISH that carries `message` on one hop.
    pub fn new(message: Message, packet_id: Option<u16>, dup: bool) -> Publish {
        Publish {
            dup,
            qos: message.qos,
            retain: message.retain,
            topic: message.topic,
            packet_id,
            payload: message.payload,
        }
    }

    /// The application message, without this hop's packet identifier and DUP.
    pub fn into_message(self) -> Message {
        Message {
            topic: self.topic,
            payload: self.payload,
            qos: self.qos,
            retain: self.retain,
            properties: None,
        }
    }
}

impl QoS {
    /// The QoS for a wire value 0, 1 or 2; `None` for anything else.
    pub fn from_u8(v: u8) -> Option<QoS> {
        match v {
            0 => Some(QoS::AtMostOnce),
            1 => Some(QoS::AtLeastOnce),
            2 => Some(QoS::ExactlyOnce),
            _ => None,
        }
    }
}

impl From<QoS> for u8 {
    fn from(qos: QoS) -> u8 {
        qos as u8
    }
}

impl ConnectReturnCode {
    /// The return code for a wire value 0..=5; `None` for anything else.
    pub fn from_u8(v: u8) -> Option<ConnectReturnCode> {
        match v {
            0 => Some(ConnectReturnCode::Accepted),
            1 => Some(ConnectReturnCode::UnacceptableProtocolVersion),
            2 => Some(ConnectReturnCode::IdentifierRejected),
            3 => Some(ConnectReturnCode::ServerUnavailable),
            4 => Some(ConnectReturnCode::BadUserNameOrPassword),
            5 => Some(ConnectReturnCode::NotAuthorized),
            _ => None,
        }
    }
}

impl From<ConnectReturnCode> for u8 {
    fn from(code: ConnectReturnCode) -> u8 {
        code as u8
    }
}

impl SubscribeReturnCode {
    /// The return code for a wire value 0x00, 0x01, 0x02 or 0x80; `None` for anything else.
    pub fn from_u8(v: u8) -> Option<SubscribeReturnCode> {
        match v {
            0x80 => Some(SubscribeReturnCode::Failure),
            v => QoS::from_u8(v).map(SubscribeReturnCode::Success),
        }
    }
}

impl From<SubscribeReturnCode> for u8 {
    fn from(code: SubscribeReturnCode) -> u8 {
        match code {
            SubscribeReturnCode::Success(qos) => qos as u8,
            SubscribeReturnCode::Failure => 0x80,
        }
    }
}

/// Decodes one packet from the front of `buf`.
///
/// * `Ok(None)`: not a whole packet yet; `buf` is untouched.
/// * `Ok(Some(packet))`: exactly that packet's bytes were removed from `buf`. PUBLISH topic and
///   payload share `buf`'s allocation (no copy).
/// * `Err(_)`: the stream is broken; the caller should close the connection.
///   [`DecodeError::PacketTooLarge`] (header + remaining length > `max_packet_size`) is reported
///   as soon as the fixed header is readable, without waiting for the body. How much of `buf` was
///   consumed is unspecified.
pub fn decode(buf: &mut BytesMut, max_packet_size: usize) -> Result<Option<Packet>, DecodeError> {
    let Some((
        FixedHeader {
            packet_type,
            flags,
            header_len,
            ..
        },
        total,
    )) = whole_frame(buf, max_packet_size, false)?
    else {
        return Ok(None);
    };
    if packet_type == fixed_header::PUBLISH {
        let mut body = buf.split_to(total);
        bytes::Buf::advance(&mut body, header_len);
        return publish::decode(flags, body).map(|p| Some(Packet::Publish(p)));
    }
    // `header_len <= total <= buf.len()`, checked above.
    let body = &buf[header_len..total];
    let packet = match packet_type {
        fixed_header::CONNECT => connect::decode(body).map(|c| Packet::Connect(Box::new(c))),
        fixed_header::CONNACK => connack::decode(body).map(Packet::ConnAck),
        fixed_header::PUBACK => ack::decode(body).map(Packet::PubAck),
        fixed_header::PUBREC => ack::decode(body).map(Packet::PubRec),
        fixed_header::PUBREL => ack::decode(body).map(Packet::PubRel),
        fixed_header::PUBCOMP => ack::decode(body).map(Packet::PubComp),
        fixed_header::SUBSCRIBE => subscribe::decode(body).map(Packet::Subscribe),
        fixed_header::SUBACK => suback::decode(body).map(Packet::SubAck),
        fixed_header::UNSUBSCRIBE => unsubscribe::decode(body).map(Packet::Unsubscribe),
        fixed_header::UNSUBACK => ack::decode(body).map(Packet::UnsubAck),
        fixed_header::PINGREQ => pingreq::decode(body).map(|()| Packet::PingReq),
        fixed_header::PINGRESP => pingresp::decode(body).map(|()| Packet::PingResp),
        fixed_header::DISCONNECT => disconnect::decode(body).map(|()| Packet::Disconnect),
        // `fixed_header::parse` already rejected 0 and 15, and PUBLISH is handled above.
        other => Err(DecodeError::ReservedPacketType(other)),
    };
    bytes::Buf::advance(buf, total);
    packet.map(Some)
}

/// The fixed header at the front of `buf` and the packet's total size, once the whole packet is
/// in `buf` (`Ok(None)` before). A packet over `max_packet_size` is an error as soon as its
/// header is readable. Shared by [`decode`] and [`v5::decode`].
#[inline(always)]
fn whole_frame(
    buf: &[u8],
    max_packet_size: usize,
    v5: bool,
) -> Result<Option<(FixedHeader, usize)>, DecodeError> {
    let Some(header) = fixed_header::parse_at(buf, v5)? else {
        return Ok(None);
    };
    let total = header.header_len + header.remaining_len;
    if total > max_packet_size {
        return Err(DecodeError::PacketTooLarge {
            size: total,
            max: max_packet_size,
        });
    }
    if buf.len() < total {
        return Ok(None);
    }
    Ok(Some((header, total)))
}

/// Whether `buf` starts with the first byte of a PUBLISH at QoS 0 without RETAIN (DUP either way):
/// the only PUBLISHes the broker can route in place, checked before [`peek_publish`] parses one.
pub fn starts_qos0_publish(buf: &[u8]) -> bool {
    let first = fixed_header::PUBLISH << 4;
    buf.first()
        .is_some_and(|&b| b & !fixed_header::PUBLISH_DUP == first)
}

/// The PUBLISH at the front of `buf`, borrowed, and how many bytes it takes; `None` when the
/// front of `buf` is not a whole, well-formed PUBLISH of at most `max_packet_size` bytes (another
/// packet, or too few bytes, or an error that [`decode`] reports).
///
/// It lets the broker route a message straight from a connection's read buffer: [`decode`]
/// splits topic and payload off as reference-counted `Bytes`, whose atomic updates were ~12 % of
/// the broker's CPU at saturation. It accepts exactly the PUBLISHes `decode` accepts.
pub fn peek_publish(buf: &[u8], max_packet_size: usize) -> Option<(PublishRef<'_>, usize)> {
    let header = fixed_header::parse(buf).ok()??;
    let total = header.header_len + header.remaining_len;
    if header.packet_type != fixed_header::PUBLISH || total > max_packet_size {
        return None;
    }
    let body = buf.get(header.header_len..total)?;
    let publish = publish::borrow(header.flags, body).ok()?;
    Some((publish, total))
}

impl Packet {
    /// Appends this packet's wire form to `out`. On error nothing is written.
    ///
    /// CONNECT with [`ProtocolLevel::V5`] is written as "MQTT" level 5 with a 3.1.1-shaped body;
    /// it exists only to exercise a server's rejection path, it is not an MQTT 5 CONNECT.
    pub fn encode(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        match self {
            Packet::Connect(p) => connect::encode(p, out),
            Packet::ConnAck(p) => {
                connack::encode(p, out);
                Ok(())
            }
            Packet::Publish(p) => p.encode(out),
            Packet::PubAck(p) => {
                ack::encode(p, out);
                Ok(())
            }
            Packet::PubRec(p) => {
                ack::encode(p, out);
                Ok(())
            }
            Packet::PubRel(p) => {
                ack::encode(p, out);
                Ok(())
            }
            Packet::PubComp(p) => {
                ack::encode(p, out);
                Ok(())
            }
            Packet::Subscribe(p) => subscribe::encode(p, out),
            Packet::SubAck(p) => suback::encode(p, out),
            Packet::Unsubscribe(p) => unsubscribe::encode(p, out),
            Packet::UnsubAck(p) => {
                ack::encode(p, out);
                Ok(())
            }
            Packet::PingReq => {
                pingreq::encode(out);
                Ok(())
            }
            Packet::PingResp => {
                pingresp::encode(out);
                Ok(())
            }
            Packet::Disconnect => {
                disconnect::encode(out);
                Ok(())
            }
        }
    }
}

/// Helpers shared by the per-packet test modules.
#[cfg(test)]
mod testutil;

#[cfg(test)]
mod tests;
