//! MQTT 5.0 [MQTT-5]: its packets, properties and reason codes, on the same wire primitives,
//! fixed header, topic checks and PUBLISH parser as MQTT 3.1.1 (`super`).
//!
//! Its own packet types rather than MQTT 5 fields on the MQTT 3 ones: the two differ in kind
//! (CONNACK's return codes against reason codes, PUBLISH's topic that an alias may replace,
//! DISCONNECT and AUTH with a body), and the MQTT 3 types, the broker's and the client's hot path,
//! stay exactly as they were. A connection's level is known from its CONNECT; the caller then
//! reads it with [`super::decode`] (3.1, 3.1.1) or [`decode`] (5).
//!
//! Files: `properties.rs` (the 27 properties), `reason.rs` (reason codes), one file per packet
//! family: `connect.rs` (CONNECT, CONNACK), `publish.rs`, `ack.rs` (PUBACK, PUBREC, PUBREL,
//! PUBCOMP, DISCONNECT, AUTH: a reason code and properties with short forms), `subscribe.rs`
//! (SUBSCRIBE, UNSUBSCRIBE, SUBACK, UNSUBACK). Judges one packet alone, like `super`: no session
//! state (topic aliases, receive maximum, authentication exchanges).

mod ack;
mod connect;
pub mod properties;
mod publish;
mod reason;
mod subscribe;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_acks;
#[cfg(test)]
mod tests_properties;

use bytes::{Bytes, BytesMut};

pub use properties::Properties;
pub use publish::{
    decode_plain as decode_plain_publish, encode_ref as encode_publish_ref,
    encoded_len_ref as encoded_publish_len, lone_topic_alias, Hop,
};
pub use reason::ReasonCode;

use super::fixed_header;
use super::{DecodeError, EncodeError, Message, QoS, TopicFilter, TopicName};

/// Which packet (or the will) properties and reason codes belong to: the columns of the tables of
/// [MQTT-2.2.2.2] and [MQTT-2.4].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Connect,
    ConnAck,
    Publish,
    /// The will properties in CONNECT's payload.
    Will,
    PubAck,
    PubRec,
    PubRel,
    PubComp,
    Subscribe,
    SubAck,
    Unsubscribe,
    UnsubAck,
    Disconnect,
    Auth,
}

impl Kind {
    pub(crate) fn bit(self) -> u16 {
        1 << self as u16
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Connect => "CONNECT",
            Kind::ConnAck => "CONNACK",
            Kind::Publish => "PUBLISH",
            Kind::Will => "the will properties",
            Kind::PubAck => "PUBACK",
            Kind::PubRec => "PUBREC",
            Kind::PubRel => "PUBREL",
            Kind::PubComp => "PUBCOMP",
            Kind::Subscribe => "SUBSCRIBE",
            Kind::SubAck => "SUBACK",
            Kind::Unsubscribe => "UNSUBSCRIBE",
            Kind::UnsubAck => "UNSUBACK",
            Kind::Disconnect => "DISCONNECT",
            Kind::Auth => "AUTH",
        }
    }
}

/// One MQTT 5 control packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// CONNECT (client → server), boxed: the largest packet, once per connection.
    Connect(Box<Connect>),
    /// CONNACK (server → client).
    ConnAck(ConnAck),
    /// PUBLISH (both ways).
    Publish(Publish),
    /// PUBACK: QoS 1 acknowledgement.
    PubAck(Ack),
    /// PUBREC: QoS 2, first answer.
    PubRec(Ack),
    /// PUBREL: QoS 2, release.
    PubRel(Ack),
    /// PUBCOMP: QoS 2, complete.
    PubComp(Ack),
    /// SUBSCRIBE (client → server).
    Subscribe(Subscribe),
    /// SUBACK (server → client): one reason code per filter.
    SubAck(SubscriptionAck),
    /// UNSUBSCRIBE (client → server).
    Unsubscribe(Unsubscribe),
    /// UNSUBACK (server → client): one reason code per filter.
    UnsubAck(SubscriptionAck),
    /// PINGREQ (client → server).
    PingReq,
    /// PINGRESP (server → client).
    PingResp,
    /// DISCONNECT (both ways in MQTT 5).
    Disconnect(Disconnect),
    /// AUTH: extended authentication exchange (both ways).
    Auth(Auth),
}

/// CONNECT [MQTT-3.1] at level 5. `Debug` shows the password's length only.
#[derive(Clone, PartialEq, Eq)]
pub struct Connect {
    /// Clean Start: begin a new session rather than resume one.
    pub clean_start: bool,
    /// Seconds between the client's packets before it may be dropped; 0 is off.
    pub keep_alive: u16,
    /// CONNECT properties (session expiry, receive maximum, authentication method, ...).
    pub properties: Properties,
    /// May be empty: the server then assigns one.
    pub client_id: String,
    /// Published by the server if the connection ends without a normal DISCONNECT.
    pub will: Option<Will>,
    /// The user name, if sent.
    pub username: Option<String>,
    /// The password, if sent (MQTT 5 allows one without a user name).
    pub password: Option<Bytes>,
}

/// The will of an MQTT 5 CONNECT: the message and its will properties (delay, expiry, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    /// Topic, payload, QoS and retain, as in MQTT 3.
    pub message: Message,
    /// Will properties [MQTT-3.1.3.2].
    pub properties: Properties,
}

/// CONNACK [MQTT-3.2] at level 5.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnAck {
    /// The server resumed a session (only with reason code 0x00 [MQTT-3.2.2-6]).
    pub session_present: bool,
    /// 0x00 Success, or why the connection is refused.
    pub reason: ReasonCode,
    /// CONNACK properties (the server's limits, assigned client id, ...).
    pub properties: Properties,
}

/// PUBLISH [MQTT-3.3] at level 5.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// A re-delivery of an earlier attempt (QoS 1 and 2).
    pub dup: bool,
    /// The QoS of this delivery.
    pub qos: QoS,
    /// Retain flag.
    pub retain: bool,
    /// `None` for the empty topic name, allowed only with a Topic Alias property [MQTT-3.3.2-8].
    pub topic: Option<TopicName>,
    /// `Some` exactly when `qos` > 0.
    pub packet_id: Option<u16>,
    /// PUBLISH properties.
    pub properties: Properties,
    /// The application's bytes.
    pub payload: Bytes,
}

/// PUBACK, PUBREC, PUBREL or PUBCOMP [MQTT-3.4 to 3.7] at level 5.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// The PUBLISH's packet identifier.
    pub packet_id: u16,
    /// The outcome; 0x00 is sent in the short form (no reason code byte) when there are no
    /// properties.
    pub reason: ReasonCode,
    /// Reason String and User Properties.
    pub properties: Properties,
}

/// SUBSCRIBE [MQTT-3.8] at level 5.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// Echoed by the SUBACK.
    pub packet_id: u16,
    /// Subscription Identifier and User Properties.
    pub properties: Properties,
    /// In order; never empty once decoded.
    pub filters: Vec<Subscription>,
}

/// One filter of an MQTT 5 SUBSCRIBE with its subscription options [MQTT-3.8.3.1].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// What to subscribe to.
    pub filter: TopicFilter,
    /// The highest QoS wanted.
    pub qos: QoS,
    /// Do not send this client the messages it publishes itself.
    pub no_local: bool,
    /// Keep the RETAIN flag of forwarded messages as published.
    pub retain_as_published: bool,
    /// Whether retained messages are sent when the subscription is made.
    pub retain_handling: RetainHandling,
}

/// Retain Handling subscription option [MQTT-3.8.3.1] (value 3 is a Protocol Error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetainHandling {
    /// 0: send retained messages at subscribe.
    SendAtSubscribe = 0,
    /// 1: send them only if the subscription did not exist.
    SendIfNew = 1,
    /// 2: do not send them.
    DoNotSend = 2,
}

/// UNSUBSCRIBE [MQTT-3.10] at level 5.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    /// Echoed by the UNSUBACK.
    pub packet_id: u16,
    /// User Properties.
    pub properties: Properties,
    /// Never empty once decoded.
    pub filters: Vec<TopicFilter>,
}

/// SUBACK [MQTT-3.9] or UNSUBACK [MQTT-3.11] at level 5: one reason code per filter, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionAck {
    /// The SUBSCRIBE's or UNSUBSCRIBE's packet identifier.
    pub packet_id: u16,
    /// Reason String and User Properties.
    pub properties: Properties,
    /// One per filter; never empty once decoded.
    pub reason_codes: Vec<ReasonCode>,
}

/// DISCONNECT [MQTT-3.14] at level 5 (sent by either side).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disconnect {
    /// 0x00 Normal disconnection (an empty body on the wire), or why.
    pub reason: ReasonCode,
    /// Session Expiry Interval, Reason String, Server Reference, User Properties.
    pub properties: Properties,
}

/// AUTH [MQTT-3.15]: one step of an extended authentication exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    /// 0x00 Success, 0x18 Continue authentication or 0x19 Re-authenticate.
    pub reason: ReasonCode,
    /// Authentication Method and Data, Reason String, User Properties.
    pub properties: Properties,
}

impl Packet {
    /// The packet's name as the specification writes it (`AUTH`), for messages and logs.
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
            Packet::Disconnect(_) => "DISCONNECT",
            Packet::Auth(_) => "AUTH",
        }
    }

    /// Appends this packet's MQTT 5 wire form to `out`. On error nothing is written.
    pub fn encode(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        use fixed_header::*;
        match self {
            Packet::Connect(p) => connect::encode(p, out),
            Packet::ConnAck(p) => connect::encode_connack(p, out),
            Packet::Publish(p) => publish::encode(p, out),
            Packet::PubAck(p) => ack::encode(p, Kind::PubAck, PUBACK << 4, out),
            Packet::PubRec(p) => ack::encode(p, Kind::PubRec, PUBREC << 4, out),
            Packet::PubRel(p) => ack::encode(p, Kind::PubRel, PUBREL << 4 | 0b0010, out),
            Packet::PubComp(p) => ack::encode(p, Kind::PubComp, PUBCOMP << 4, out),
            Packet::Subscribe(p) => subscribe::encode(p, out),
            Packet::SubAck(p) => subscribe::encode_ack(p, Kind::SubAck, SUBACK << 4, out),
            Packet::Unsubscribe(p) => subscribe::encode_unsubscribe(p, out),
            Packet::UnsubAck(p) => subscribe::encode_ack(p, Kind::UnsubAck, UNSUBACK << 4, out),
            Packet::PingReq => {
                encode_empty(out, PINGREQ << 4);
                Ok(())
            }
            Packet::PingResp => {
                encode_empty(out, PINGRESP << 4);
                Ok(())
            }
            Packet::Disconnect(p) => ack::encode_reason(
                p.reason,
                &p.properties,
                Kind::Disconnect,
                DISCONNECT << 4,
                out,
            ),
            Packet::Auth(p) => {
                ack::encode_reason(p.reason, &p.properties, Kind::Auth, AUTH << 4, out)
            }
        }
    }
}

/// Decodes one MQTT 5 packet from the front of `buf`, with the contract of [`super::decode`]
/// (`Ok(None)` until a whole packet is there; PUBLISH topic and payload share `buf`'s
/// allocation). A CONNECT must be at level 5; one at level 3 or 4 is
/// [`DecodeError::UnsupportedProtocolLevel`] (read it with [`super::decode`]).
/// [`DecodeError::reason_code`] says which reason code to close the connection with.
pub fn decode(buf: &mut BytesMut, max_packet_size: usize) -> Result<Option<Packet>, DecodeError> {
    let Some((
        FixedHeader {
            packet_type,
            flags,
            header_len,
            ..
        },
        total,
    )) = super::whole_frame(buf, max_packet_size, true)?
    else {
        return Ok(None);
    };
    if packet_type == fixed_header::PUBLISH {
        let mut body = buf.split_to(total);
        bytes::Buf::advance(&mut body, header_len);
        return publish::decode(flags, body).map(|p| Some(Packet::Publish(p)));
    }
    let body = &buf[header_len..total];
    use fixed_header::*;
    let packet = match packet_type {
        CONNECT => connect::decode(body).map(|c| Packet::Connect(Box::new(c))),
        CONNACK => connect::decode_connack(body).map(Packet::ConnAck),
        PUBACK => ack::decode(body, Kind::PubAck).map(Packet::PubAck),
        PUBREC => ack::decode(body, Kind::PubRec).map(Packet::PubRec),
        PUBREL => ack::decode(body, Kind::PubRel).map(Packet::PubRel),
        PUBCOMP => ack::decode(body, Kind::PubComp).map(Packet::PubComp),
        SUBSCRIBE => subscribe::decode(body).map(Packet::Subscribe),
        SUBACK => subscribe::decode_ack(body, Kind::SubAck).map(Packet::SubAck),
        UNSUBSCRIBE => subscribe::decode_unsubscribe(body).map(Packet::Unsubscribe),
        UNSUBACK => subscribe::decode_ack(body, Kind::UnsubAck).map(Packet::UnsubAck),
        PINGREQ => decode_empty(body).map(|()| Packet::PingReq),
        PINGRESP => decode_empty(body).map(|()| Packet::PingResp),
        DISCONNECT => ack::decode_reason(body, Kind::Disconnect)
            .map(|(reason, properties)| Packet::Disconnect(Disconnect { reason, properties })),
        AUTH => ack::decode_reason(body, Kind::Auth)
            .map(|(reason, properties)| Packet::Auth(Auth { reason, properties })),
        // `fixed_header::parse_at` already rejected 0, and PUBLISH is handled above.
        other => Err(DecodeError::ReservedPacketType(other)),
    };
    bytes::Buf::advance(buf, total);
    packet.map(Some)
}

/// The MQTT 5 PUBLISH at the front of `buf`, borrowed, with its properties' bytes (after their
/// length) and the packet's size; `None` when the front of `buf` is not a whole PUBLISH that
/// [`decode`] would accept. As [`super::peek_publish`] for MQTT 3: no reference-counted slices,
/// and no allocation when the PUBLISH has no string or binary property (checking one copies it
/// once). An empty `topic` means a Topic Alias stands for it ([`lone_topic_alias`] reads one that
/// is the only property).
pub fn peek_publish(
    buf: &[u8],
    max_packet_size: usize,
) -> Option<(super::PublishRef<'_>, &[u8], usize)> {
    let (header, total) = super::whole_frame(buf, max_packet_size, true).ok()??;
    if header.packet_type != fixed_header::PUBLISH {
        return None;
    }
    let body = buf.get(header.header_len..total)?;
    let fields = super::publish::parse(header.flags, body, true).ok()?;
    let raw = &body[fields.properties.clone()];
    // Most PUBLISHes have no property, or (a client using aliases) only a Topic Alias: nothing
    // else to check, no `Properties` built and dropped.
    if let Some(alias) = lone_topic_alias(raw) {
        if alias == 0 {
            return None; // [MQTT-3.3.2-8]: `decode` refuses it
        }
    } else if !raw.is_empty() {
        let properties = properties::decode_body(raw, Kind::Publish).ok()?;
        if fields.topic.is_empty() && properties.topic_alias.is_none() {
            return None;
        }
    } else if fields.topic.is_empty() {
        return None;
    }
    let publish = super::PublishRef {
        dup: header.flags & fixed_header::PUBLISH_DUP != 0,
        qos: fields.qos,
        retain: header.flags & fixed_header::PUBLISH_RETAIN != 0,
        topic: &body[fields.topic],
        packet_id: fields.packet_id,
        payload: &body[fields.payload_start..],
        properties: None,
    };
    Some((publish, raw, total))
}

/// Whether `buf` starts with a whole PUBACK, PUBREC, PUBREL or PUBCOMP in its short form
/// (remaining length 2: reason code 0x00 Success, no properties [MQTT-3.4.2.1]): the same bytes,
/// and the same meaning, as in MQTT 3, which MQTT 3's decoder reads without building an MQTT 5
/// [`Packet`].
pub fn starts_short_ack(buf: &[u8]) -> bool {
    matches!(
        buf,
        [first, 2, _, _, ..] if matches!(
            first >> 4,
            fixed_header::PUBACK | fixed_header::PUBREC | fixed_header::PUBREL | fixed_header::PUBCOMP
        )
    )
}

/// PUBLISH properties as their wire bytes without the length in front (how a message's
/// properties travel between a broker's shards).
pub fn publish_properties_bytes(properties: &Properties) -> Result<BytesMut, EncodeError> {
    let len = properties.body_len(Kind::Publish)?;
    let mut out = BytesMut::with_capacity(len);
    properties.encode_body(&mut out);
    Ok(out)
}

/// Reads what [`publish_properties_bytes`] wrote, as PUBLISH properties.
pub fn decode_publish_properties(body: &[u8]) -> Result<Properties, DecodeError> {
    properties::decode_body(body, Kind::Publish)
}

/// The topic filters of an MQTT 5 SUBSCRIBE's body (what `protocol::peek_topics_v5` looks at).
pub(crate) fn subscribe_filters(body: &[u8]) -> Result<Vec<TopicFilter>, DecodeError> {
    subscribe::decode(body).map(|s| s.filters.into_iter().map(|f| f.filter).collect())
}

/// Reads a reason code for `kind`, refusing one the packet may not carry [MQTT-2.4].
pub(crate) fn read_reason(
    r: &mut super::strings::Reader<'_>,
    kind: Kind,
) -> Result<ReasonCode, DecodeError> {
    let code = ReasonCode(r.read_u8()?);
    if code.allowed_in(kind) {
        Ok(code)
    } else {
        Err(DecodeError::InvalidReasonCode {
            code: code.0,
            packet: kind.name(),
        })
    }
}

/// Refuses to encode a reason code `kind` may not carry.
pub(crate) fn check_reason(code: ReasonCode, kind: Kind) -> Result<(), EncodeError> {
    if code.allowed_in(kind) {
        Ok(())
    } else {
        Err(EncodeError::InvalidValue(
            "a reason code not allowed in this packet",
        ))
    }
}
