//! MQTT 5 properties [MQTT-2.2.2]: the 27 identifiers, their data types, which packet may carry
//! which (the table of [MQTT-2.2.2.2]), which may repeat, and the values the specification
//! forbids. One [`Properties`] type serves every packet; `decode` is told the packet (`Kind`)
//! and refuses what it may not carry.
//!
//! Errors follow the specification's split: an unknown identifier, one not allowed in the packet,
//! a value of the wrong type or a length past the end is a Malformed Packet; a second copy of a
//! single-valued property or a forbidden value is a Protocol Error (see
//! [`DecodeError::reason_code`]).
//!
//! Must not interpret the values (expiry, aliases, flow control): that is the broker's and the
//! client's job.

use bytes::{BufMut, Bytes, BytesMut};

use super::super::strings::{
    prefixed_len, put_prefixed, put_varint, varint_len, Reader, MAX_VARINT,
};
use super::super::topic::check_name_bytes;
use super::super::{DecodeError, EncodeError, QoS};
use super::Kind;

/// Every property of MQTT 5. Single-valued properties are `Option`s; User Property keeps its
/// pairs in order and may repeat everywhere it is allowed; Subscription Identifier may repeat in
/// PUBLISH only. Encoded in ascending identifier order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Properties {
    /// 0x01 Payload Format Indicator: `false` unspecified bytes, `true` UTF-8 (PUBLISH, will).
    pub payload_format_utf8: Option<bool>,
    /// 0x02 Message Expiry Interval, seconds (PUBLISH, will).
    pub message_expiry_interval: Option<u32>,
    /// 0x03 Content Type (PUBLISH, will).
    pub content_type: Option<String>,
    /// 0x08 Response Topic, a topic name (PUBLISH, will).
    pub response_topic: Option<String>,
    /// 0x09 Correlation Data (PUBLISH, will).
    pub correlation_data: Option<Bytes>,
    /// 0x0B Subscription Identifier, 1..=268,435,455 (PUBLISH: any number; SUBSCRIBE: one).
    pub subscription_identifiers: Vec<u32>,
    /// 0x11 Session Expiry Interval, seconds (CONNECT, CONNACK, DISCONNECT).
    pub session_expiry_interval: Option<u32>,
    /// 0x12 Assigned Client Identifier (CONNACK).
    pub assigned_client_identifier: Option<String>,
    /// 0x13 Server Keep Alive, seconds (CONNACK).
    pub server_keep_alive: Option<u16>,
    /// 0x15 Authentication Method (CONNECT, CONNACK, AUTH).
    pub authentication_method: Option<String>,
    /// 0x16 Authentication Data (CONNECT, CONNACK, AUTH).
    pub authentication_data: Option<Bytes>,
    /// 0x17 Request Problem Information (CONNECT).
    pub request_problem_information: Option<bool>,
    /// 0x18 Will Delay Interval, seconds (will).
    pub will_delay_interval: Option<u32>,
    /// 0x19 Request Response Information (CONNECT).
    pub request_response_information: Option<bool>,
    /// 0x1A Response Information (CONNACK).
    pub response_information: Option<String>,
    /// 0x1C Server Reference (CONNACK, DISCONNECT).
    pub server_reference: Option<String>,
    /// 0x1F Reason String (every packet with a reason code).
    pub reason_string: Option<String>,
    /// 0x21 Receive Maximum, not 0 (CONNECT, CONNACK).
    pub receive_maximum: Option<u16>,
    /// 0x22 Topic Alias Maximum (CONNECT, CONNACK).
    pub topic_alias_maximum: Option<u16>,
    /// 0x23 Topic Alias, not 0 (PUBLISH).
    pub topic_alias: Option<u16>,
    /// 0x24 Maximum QoS, 0 or 1 (CONNACK).
    pub maximum_qos: Option<QoS>,
    /// 0x25 Retain Available (CONNACK).
    pub retain_available: Option<bool>,
    /// 0x26 User Property: name and value pairs, in order (every packet but PINGREQ/PINGRESP).
    pub user_properties: Vec<(String, String)>,
    /// 0x27 Maximum Packet Size, not 0 (CONNECT, CONNACK).
    pub maximum_packet_size: Option<u32>,
    /// 0x28 Wildcard Subscription Available (CONNACK).
    pub wildcard_subscription_available: Option<bool>,
    /// 0x29 Subscription Identifier Available (CONNACK).
    pub subscription_identifier_available: Option<bool>,
    /// 0x2A Shared Subscription Available (CONNACK).
    pub shared_subscription_available: Option<bool>,
}

/// The property identifiers [MQTT-2.2.2.2].
pub mod id {
    #![allow(missing_docs)]
    pub const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
    pub const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
    pub const CONTENT_TYPE: u8 = 0x03;
    pub const RESPONSE_TOPIC: u8 = 0x08;
    pub const CORRELATION_DATA: u8 = 0x09;
    pub const SUBSCRIPTION_IDENTIFIER: u8 = 0x0b;
    pub const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
    pub const ASSIGNED_CLIENT_IDENTIFIER: u8 = 0x12;
    pub const SERVER_KEEP_ALIVE: u8 = 0x13;
    pub const AUTHENTICATION_METHOD: u8 = 0x15;
    pub const AUTHENTICATION_DATA: u8 = 0x16;
    pub const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
    pub const WILL_DELAY_INTERVAL: u8 = 0x18;
    pub const REQUEST_RESPONSE_INFORMATION: u8 = 0x19;
    pub const RESPONSE_INFORMATION: u8 = 0x1a;
    pub const SERVER_REFERENCE: u8 = 0x1c;
    pub const REASON_STRING: u8 = 0x1f;
    pub const RECEIVE_MAXIMUM: u8 = 0x21;
    pub const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
    pub const TOPIC_ALIAS: u8 = 0x23;
    pub const MAXIMUM_QOS: u8 = 0x24;
    pub const RETAIN_AVAILABLE: u8 = 0x25;
    pub const USER_PROPERTY: u8 = 0x26;
    pub const MAXIMUM_PACKET_SIZE: u8 = 0x27;
    pub const WILDCARD_SUBSCRIPTION_AVAILABLE: u8 = 0x28;
    pub const SUBSCRIPTION_IDENTIFIER_AVAILABLE: u8 = 0x29;
    pub const SHARED_SUBSCRIPTION_AVAILABLE: u8 = 0x2a;
}

/// The packets that may carry property `id` (a bit per [`Kind`]); `None` for an identifier the
/// specification does not define. The table of [MQTT-2.2.2.2].
pub(crate) fn allowed_in(id: u32) -> Option<u16> {
    use Kind::*;
    let kinds: &[Kind] = match u8::try_from(id).ok()? {
        id::PAYLOAD_FORMAT_INDICATOR
        | id::MESSAGE_EXPIRY_INTERVAL
        | id::CONTENT_TYPE
        | id::RESPONSE_TOPIC
        | id::CORRELATION_DATA => &[Publish, Will],
        id::SUBSCRIPTION_IDENTIFIER => &[Publish, Subscribe],
        id::SESSION_EXPIRY_INTERVAL => &[Connect, ConnAck, Disconnect],
        id::ASSIGNED_CLIENT_IDENTIFIER
        | id::SERVER_KEEP_ALIVE
        | id::RESPONSE_INFORMATION
        | id::MAXIMUM_QOS
        | id::RETAIN_AVAILABLE
        | id::WILDCARD_SUBSCRIPTION_AVAILABLE
        | id::SUBSCRIPTION_IDENTIFIER_AVAILABLE
        | id::SHARED_SUBSCRIPTION_AVAILABLE => &[ConnAck],
        id::AUTHENTICATION_METHOD | id::AUTHENTICATION_DATA => &[Connect, ConnAck, Auth],
        id::REQUEST_PROBLEM_INFORMATION | id::REQUEST_RESPONSE_INFORMATION => &[Connect],
        id::WILL_DELAY_INTERVAL => &[Will],
        id::SERVER_REFERENCE => &[ConnAck, Disconnect],
        id::REASON_STRING => &[
            ConnAck, PubAck, PubRec, PubRel, PubComp, SubAck, UnsubAck, Disconnect, Auth,
        ],
        id::RECEIVE_MAXIMUM | id::TOPIC_ALIAS_MAXIMUM | id::MAXIMUM_PACKET_SIZE => {
            &[Connect, ConnAck]
        }
        id::TOPIC_ALIAS => &[Publish],
        id::USER_PROPERTY => &[
            Connect,
            ConnAck,
            Publish,
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
        ],
        _ => return None,
    };
    Some(kinds.iter().fold(0, |mask, &kind| mask | kind.bit()))
}

/// One property's value, borrowed, as the encoder walks them.
enum Value<'a> {
    Byte(u8),
    Two(u16),
    Four(u32),
    Varint(u32),
    Str(&'a str),
    Binary(&'a [u8]),
    Pair(&'a str, &'a str),
}

impl Properties {
    /// Whether no property is set (a property length of 0 on the wire).
    ///
    /// Field by field, without building a default to compare with: on every PUBLISH and
    /// acknowledgement of an MQTT 5 client, `== Properties::default()` (a memcmp of the whole
    /// struct and a drop) was 10 % of the broker's CPU in `pairs --qos 1 --protocol 5`. The
    /// destructuring breaks the build when a field is added and not checked here.
    pub fn is_empty(&self) -> bool {
        let Properties {
            payload_format_utf8,
            message_expiry_interval,
            content_type,
            response_topic,
            correlation_data,
            subscription_identifiers,
            session_expiry_interval,
            assigned_client_identifier,
            server_keep_alive,
            authentication_method,
            authentication_data,
            request_problem_information,
            will_delay_interval,
            request_response_information,
            response_information,
            server_reference,
            reason_string,
            receive_maximum,
            topic_alias_maximum,
            topic_alias,
            maximum_qos,
            retain_available,
            user_properties,
            maximum_packet_size,
            wildcard_subscription_available,
            subscription_identifier_available,
            shared_subscription_available,
        } = self;
        payload_format_utf8.is_none()
            && message_expiry_interval.is_none()
            && content_type.is_none()
            && response_topic.is_none()
            && correlation_data.is_none()
            && subscription_identifiers.is_empty()
            && session_expiry_interval.is_none()
            && assigned_client_identifier.is_none()
            && server_keep_alive.is_none()
            && authentication_method.is_none()
            && authentication_data.is_none()
            && request_problem_information.is_none()
            && will_delay_interval.is_none()
            && request_response_information.is_none()
            && response_information.is_none()
            && server_reference.is_none()
            && reason_string.is_none()
            && receive_maximum.is_none()
            && topic_alias_maximum.is_none()
            && topic_alias.is_none()
            && maximum_qos.is_none()
            && retain_available.is_none()
            && user_properties.is_empty()
            && maximum_packet_size.is_none()
            && wildcard_subscription_available.is_none()
            && subscription_identifier_available.is_none()
            && shared_subscription_available.is_none()
    }

    /// Calls `f` with every property set, in ascending identifier order (repeated ones in their
    /// order): the one place that lists the fields for encoding.
    fn for_each<'a>(&'a self, mut f: impl FnMut(u8, Value<'a>)) {
        let byte = |b: Option<bool>| b.map(|b| Value::Byte(u8::from(b)));
        let text = |s: &'a Option<String>| s.as_deref().map(Value::Str);
        let binary = |b: &'a Option<Bytes>| b.as_deref().map(Value::Binary);
        let single = [
            (id::PAYLOAD_FORMAT_INDICATOR, byte(self.payload_format_utf8)),
            (
                id::MESSAGE_EXPIRY_INTERVAL,
                self.message_expiry_interval.map(Value::Four),
            ),
            (id::CONTENT_TYPE, text(&self.content_type)),
            (id::RESPONSE_TOPIC, text(&self.response_topic)),
            (id::CORRELATION_DATA, binary(&self.correlation_data)),
        ];
        for (id, value) in single {
            if let Some(value) = value {
                f(id, value);
            }
        }
        for &sid in &self.subscription_identifiers {
            f(id::SUBSCRIPTION_IDENTIFIER, Value::Varint(sid));
        }
        let single = [
            (
                id::SESSION_EXPIRY_INTERVAL,
                self.session_expiry_interval.map(Value::Four),
            ),
            (
                id::ASSIGNED_CLIENT_IDENTIFIER,
                text(&self.assigned_client_identifier),
            ),
            (
                id::SERVER_KEEP_ALIVE,
                self.server_keep_alive.map(Value::Two),
            ),
            (id::AUTHENTICATION_METHOD, text(&self.authentication_method)),
            (id::AUTHENTICATION_DATA, binary(&self.authentication_data)),
            (
                id::REQUEST_PROBLEM_INFORMATION,
                byte(self.request_problem_information),
            ),
            (
                id::WILL_DELAY_INTERVAL,
                self.will_delay_interval.map(Value::Four),
            ),
            (
                id::REQUEST_RESPONSE_INFORMATION,
                byte(self.request_response_information),
            ),
            (id::RESPONSE_INFORMATION, text(&self.response_information)),
            (id::SERVER_REFERENCE, text(&self.server_reference)),
            (id::REASON_STRING, text(&self.reason_string)),
            (id::RECEIVE_MAXIMUM, self.receive_maximum.map(Value::Two)),
            (
                id::TOPIC_ALIAS_MAXIMUM,
                self.topic_alias_maximum.map(Value::Two),
            ),
            (id::TOPIC_ALIAS, self.topic_alias.map(Value::Two)),
            (
                id::MAXIMUM_QOS,
                self.maximum_qos.map(|q| Value::Byte(q as u8)),
            ),
            (id::RETAIN_AVAILABLE, byte(self.retain_available)),
        ];
        for (id, value) in single {
            if let Some(value) = value {
                f(id, value);
            }
        }
        for (name, value) in &self.user_properties {
            f(id::USER_PROPERTY, Value::Pair(name, value));
        }
        let single = [
            (
                id::MAXIMUM_PACKET_SIZE,
                self.maximum_packet_size.map(Value::Four),
            ),
            (
                id::WILDCARD_SUBSCRIPTION_AVAILABLE,
                byte(self.wildcard_subscription_available),
            ),
            (
                id::SUBSCRIPTION_IDENTIFIER_AVAILABLE,
                byte(self.subscription_identifier_available),
            ),
            (
                id::SHARED_SUBSCRIPTION_AVAILABLE,
                byte(self.shared_subscription_available),
            ),
        ];
        for (id, value) in single {
            if let Some(value) = value {
                f(id, value);
            }
        }
    }

    /// Bytes the properties take after their length, checked for `kind`: every property allowed
    /// there, strings within 65,535 bytes, subscription identifiers in range, a total a variable
    /// byte integer can express.
    pub(crate) fn body_len(&self, kind: Kind) -> Result<usize, EncodeError> {
        let mut len = 0usize;
        let mut error = None;
        self.for_each(|id, value| {
            if allowed_in(u32::from(id)).is_none_or(|mask| mask & kind.bit() == 0) {
                error = Some(EncodeError::InvalidValue(
                    "a property not allowed in this packet",
                ));
            }
            let size = match value {
                Value::Byte(_) => Ok(1),
                Value::Two(_) => Ok(2),
                Value::Four(_) => Ok(4),
                Value::Varint(0) => Err(EncodeError::InvalidValue("subscription identifier 0")),
                Value::Varint(v) if v > MAX_VARINT => Err(EncodeError::InvalidValue(
                    "subscription identifier above 268,435,455",
                )),
                Value::Varint(v) => Ok(varint_len(v as usize)),
                Value::Str(s) => prefixed_len(s.len()),
                Value::Binary(b) => prefixed_len(b.len()),
                Value::Pair(n, v) => {
                    prefixed_len(n.len()).and_then(|n| Ok(n + prefixed_len(v.len())?))
                }
            };
            match size {
                Ok(size) => len += 1 + size,
                Err(e) => error = Some(e),
            }
        });
        if let Some(e) = error {
            return Err(e);
        }
        if len > MAX_VARINT as usize {
            return Err(EncodeError::PacketTooLarge(len));
        }
        Ok(len)
    }

    /// Writes the property length (`body_len`, from [`Properties::body_len`]) and the properties.
    pub(crate) fn encode(&self, body_len: usize, out: &mut BytesMut) {
        put_varint(out, body_len);
        self.encode_body(out);
    }

    /// Writes the properties without their length.
    pub(crate) fn encode_body(&self, out: &mut BytesMut) {
        self.encode_body_expiry(None, out);
    }

    /// [`encode_body`](Self::encode_body) with `expiry` (when given) written as the Message
    /// Expiry Interval in place of the set one (same length: a server forwarding what is left of
    /// it [MQTT-3.3.2-6]); an unset one stays unset.
    pub(crate) fn encode_body_expiry(&self, expiry: Option<u32>, out: &mut BytesMut) {
        self.for_each(|id, value| {
            let value = match (id, expiry) {
                (id::MESSAGE_EXPIRY_INTERVAL, Some(left)) => Value::Four(left),
                _ => value,
            };
            out.put_u8(id);
            match value {
                Value::Byte(b) => out.put_u8(b),
                Value::Two(v) => out.put_u16(v),
                Value::Four(v) => out.put_u32(v),
                Value::Varint(v) => put_varint(out, v as usize),
                Value::Str(s) => put_prefixed(out, s.as_bytes()),
                Value::Binary(b) => put_prefixed(out, b),
                Value::Pair(n, v) => {
                    put_prefixed(out, n.as_bytes());
                    put_prefixed(out, v.as_bytes());
                }
            }
        });
    }
}

/// Bytes `body_len` bytes of properties take with their length in front.
pub(crate) fn wire_len(body_len: usize) -> usize {
    varint_len(body_len) + body_len
}

/// Reads a property length and that many bytes of properties for a packet of `kind`.
pub(crate) fn decode(r: &mut Reader<'_>, kind: Kind) -> Result<Properties, DecodeError> {
    let len = r.read_varint()?;
    decode_body(r.take(len as usize)?, kind)
}

/// Decodes `body`, properties without their length, for a packet of `kind`.
pub(crate) fn decode_body(body: &[u8], kind: Kind) -> Result<Properties, DecodeError> {
    let mut r = Reader::new(body);
    let mut p = Properties::default();
    while !r.is_empty() {
        let id = r.read_varint()?;
        let mask = allowed_in(id).ok_or(DecodeError::UnknownProperty(id))?;
        // `allowed_in` knows only one-byte identifiers.
        let id = id as u8;
        if mask & kind.bit() == 0 {
            return Err(DecodeError::PropertyNotAllowed {
                id,
                packet: kind.name(),
            });
        }
        read_one(&mut r, id, kind, &mut p)?;
    }
    Ok(p)
}

/// Reads the value of property `id` (allowed in `kind`) into `p`.
fn read_one(r: &mut Reader<'_>, id: u8, kind: Kind, p: &mut Properties) -> Result<(), DecodeError> {
    let invalid = |why| DecodeError::InvalidPropertyValue { id, why };
    let flag = |r: &mut Reader<'_>| match r.read_u8()? {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(invalid("not 0 or 1")),
    };
    let non_zero_u16 = |r: &mut Reader<'_>| match r.read_u16()? {
        0 => Err(invalid("0")),
        v => Ok(v),
    };
    let text = |r: &mut Reader<'_>| r.read_string().map(str::to_owned);
    let binary = |r: &mut Reader<'_>| r.read_binary().map(Bytes::copy_from_slice);
    match id {
        id::PAYLOAD_FORMAT_INDICATOR => set(&mut p.payload_format_utf8, flag(r)?, id),
        id::MESSAGE_EXPIRY_INTERVAL => set(&mut p.message_expiry_interval, r.read_u32()?, id),
        id::CONTENT_TYPE => set(&mut p.content_type, text(r)?, id),
        id::RESPONSE_TOPIC => {
            let topic = r.read_binary()?;
            // UTF-8 first (malformed), then the topic-name rules (a protocol error).
            let topic = super::super::strings::check_str(topic)?;
            check_name_bytes(topic.as_bytes()).map_err(|_| invalid("not a topic name"))?;
            set(&mut p.response_topic, topic.to_owned(), id)
        }
        id::CORRELATION_DATA => set(&mut p.correlation_data, binary(r)?, id),
        id::SUBSCRIPTION_IDENTIFIER => {
            let sid = r.read_varint()?;
            if sid == 0 {
                return Err(invalid("0"));
            }
            if kind != Kind::Publish && !p.subscription_identifiers.is_empty() {
                return Err(DecodeError::DuplicateProperty(id));
            }
            p.subscription_identifiers.push(sid);
            Ok(())
        }
        id::SESSION_EXPIRY_INTERVAL => set(&mut p.session_expiry_interval, r.read_u32()?, id),
        id::ASSIGNED_CLIENT_IDENTIFIER => set(&mut p.assigned_client_identifier, text(r)?, id),
        id::SERVER_KEEP_ALIVE => set(&mut p.server_keep_alive, r.read_u16()?, id),
        id::AUTHENTICATION_METHOD => set(&mut p.authentication_method, text(r)?, id),
        id::AUTHENTICATION_DATA => set(&mut p.authentication_data, binary(r)?, id),
        id::REQUEST_PROBLEM_INFORMATION => set(&mut p.request_problem_information, flag(r)?, id),
        id::WILL_DELAY_INTERVAL => set(&mut p.will_delay_interval, r.read_u32()?, id),
        id::REQUEST_RESPONSE_INFORMATION => set(&mut p.request_response_information, flag(r)?, id),
        id::RESPONSE_INFORMATION => set(&mut p.response_information, text(r)?, id),
        id::SERVER_REFERENCE => set(&mut p.server_reference, text(r)?, id),
        id::REASON_STRING => set(&mut p.reason_string, text(r)?, id),
        id::RECEIVE_MAXIMUM => set(&mut p.receive_maximum, non_zero_u16(r)?, id),
        id::TOPIC_ALIAS_MAXIMUM => set(&mut p.topic_alias_maximum, r.read_u16()?, id),
        id::TOPIC_ALIAS => set(&mut p.topic_alias, non_zero_u16(r)?, id),
        id::MAXIMUM_QOS => {
            let qos = match r.read_u8()? {
                0 => QoS::AtMostOnce,
                1 => QoS::AtLeastOnce,
                _ => return Err(invalid("not 0 or 1")),
            };
            set(&mut p.maximum_qos, qos, id)
        }
        id::RETAIN_AVAILABLE => set(&mut p.retain_available, flag(r)?, id),
        id::USER_PROPERTY => {
            let name = text(r)?;
            p.user_properties.push((name, text(r)?));
            Ok(())
        }
        id::MAXIMUM_PACKET_SIZE => match r.read_u32()? {
            0 => Err(invalid("0")),
            v => set(&mut p.maximum_packet_size, v, id),
        },
        id::WILDCARD_SUBSCRIPTION_AVAILABLE => {
            set(&mut p.wildcard_subscription_available, flag(r)?, id)
        }
        id::SUBSCRIPTION_IDENTIFIER_AVAILABLE => {
            set(&mut p.subscription_identifier_available, flag(r)?, id)
        }
        id::SHARED_SUBSCRIPTION_AVAILABLE => {
            set(&mut p.shared_subscription_available, flag(r)?, id)
        }
        // `allowed_in` knows exactly the identifiers above.
        other => Err(DecodeError::UnknownProperty(u32::from(other))),
    }
}

/// Stores a single-valued property, refusing a second copy [MQTT-2.2.2.2].
fn set<T>(slot: &mut Option<T>, value: T, id: u8) -> Result<(), DecodeError> {
    if slot.is_some() {
        return Err(DecodeError::DuplicateProperty(id));
    }
    *slot = Some(value);
    Ok(())
}
