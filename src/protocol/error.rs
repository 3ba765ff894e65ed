//! The codec's errors: [`DecodeError`] (every way a packet can be refused, and the MQTT 5 reason
//! code each one closes the connection with) and [`EncodeError`].
//!
//! Must not know packet layouts beyond naming what went wrong.

use super::ReasonCode;

/// Every way decoding can fail. `Incomplete` does not exist here: [`super::decode`] returns `Ok(None)`.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// The remaining-length varint is longer than 4 bytes.
    #[error("remaining length uses more than 4 bytes")]
    MalformedRemainingLength,
    #[error("packet of {size} bytes exceeds the maximum of {max}")]
    /// The packet is bigger than the caller's maximum.
    PacketTooLarge {
        /// The packet's size, fixed header included.
        size: usize,
        /// The maximum it was checked against.
        max: usize,
    },
    /// Packet type 0 or 15.
    #[error("reserved packet type {0}")]
    ReservedPacketType(u8),
    #[error("invalid fixed header flags {flags:#06b} for packet type {packet_type}")]
    /// The fixed header's low four bits are not what the packet type requires.
    InvalidFlags {
        /// The packet type (high four bits).
        packet_type: u8,
        /// The flags received.
        flags: u8,
    },
    /// A QoS of 3.
    #[error("invalid QoS 3")]
    InvalidQoS,
    /// A string that is not UTF-8.
    #[error("malformed UTF-8 string")]
    InvalidUtf8,
    /// A string containing U+0000 [MQTT-1.5.3-2].
    #[error("string contains U+0000")]
    NullCharacter,
    /// A topic name that breaks the rules of [`TopicName`](super::TopicName).
    #[error("invalid topic name: {0}")]
    InvalidTopicName(&'static str),
    /// A topic filter that breaks the rules of [`TopicFilter`](super::TopicFilter).
    #[error("invalid topic filter: {0}")]
    InvalidTopicFilter(&'static str),
    /// Packet identifier 0, which MQTT forbids [MQTT-2.3.1-1].
    #[error("packet identifier 0")]
    ZeroPacketId,
    /// A SUBSCRIBE or UNSUBSCRIBE with no filter [MQTT-3.8.3-3].
    #[error("SUBSCRIBE or UNSUBSCRIBE without any topic filter")]
    EmptySubscription,
    /// A CONNECT whose protocol name is neither "MQTT" nor "MQIsdp".
    #[error("unsupported protocol name {0:?}")]
    InvalidProtocolName(String),
    /// The caller should answer CONNACK 0x01 and close [MQTT-3.1.2-2].
    #[error("unsupported protocol level {0}")]
    UnsupportedProtocolLevel(u8),
    /// CONNECT flags that contradict each other or set the reserved bit.
    #[error("invalid CONNECT flags: {0}")]
    InvalidConnectFlags(&'static str),
    /// The remaining length does not match what the packet holds.
    #[error("packet body length does not match its contents: {0}")]
    MalformedPacket(&'static str),
    /// MQTT 5: a variable byte integer (property length, subscription identifier) of more than
    /// four bytes [MQTT-1.5.5].
    #[error("variable byte integer uses more than 4 bytes")]
    MalformedVariableByteInteger,
    /// MQTT 5: a property identifier the specification does not define.
    #[error("unknown property identifier {0:#04x}")]
    UnknownProperty(u32),
    /// MQTT 5: a property the packet may not carry [MQTT-2.2.2.2].
    #[error("property {id:#04x} is not allowed in {packet}")]
    PropertyNotAllowed {
        /// The property identifier.
        id: u8,
        /// Where it was found (`PUBLISH`, `will properties`, ...).
        packet: &'static str,
    },
    /// MQTT 5: a property that may appear once appears again.
    #[error("property {0:#04x} appears more than once")]
    DuplicateProperty(u8),
    /// MQTT 5: a property whose value the specification forbids (a Receive Maximum of 0, ...).
    #[error("invalid value for property {id:#04x}: {why}")]
    InvalidPropertyValue {
        /// The property identifier.
        id: u8,
        /// What is wrong with it.
        why: &'static str,
    },
    /// MQTT 5: a reason code the packet may not carry [MQTT-2.4].
    #[error("reason code {code:#04x} is not allowed in {packet}")]
    InvalidReasonCode {
        /// The reason code received.
        code: u8,
        /// The packet it was found in.
        packet: &'static str,
    },
    /// MQTT 5: a packet that parses but breaks a rule of the protocol (Retain Handling 3, ...).
    #[error("protocol error: {0}")]
    ProtocolError(&'static str),
}

impl DecodeError {
    /// The MQTT 5 reason code to close the connection with (DISCONNECT, or CONNACK for a
    /// CONNECT): 0x81 Malformed Packet when the bytes cannot be parsed, 0x82 Protocol Error when
    /// they parse but break a rule [MQTT-1.2, 4.13], 0x95 for a packet over the maximum size and
    /// 0x84 for a protocol name or level the server does not speak.
    pub fn reason_code(&self) -> ReasonCode {
        match self {
            DecodeError::PacketTooLarge { .. } => ReasonCode::PACKET_TOO_LARGE,
            DecodeError::InvalidProtocolName(_) | DecodeError::UnsupportedProtocolLevel(_) => {
                ReasonCode::UNSUPPORTED_PROTOCOL_VERSION
            }
            DecodeError::InvalidTopicName(_)
            | DecodeError::InvalidTopicFilter(_)
            | DecodeError::ZeroPacketId
            | DecodeError::EmptySubscription
            | DecodeError::DuplicateProperty(_)
            | DecodeError::InvalidPropertyValue { .. }
            | DecodeError::ProtocolError(_) => ReasonCode::PROTOCOL_ERROR,
            DecodeError::MalformedRemainingLength
            | DecodeError::ReservedPacketType(_)
            | DecodeError::InvalidFlags { .. }
            | DecodeError::InvalidQoS
            | DecodeError::InvalidUtf8
            | DecodeError::NullCharacter
            | DecodeError::InvalidConnectFlags(_)
            | DecodeError::MalformedPacket(_)
            | DecodeError::MalformedVariableByteInteger
            | DecodeError::UnknownProperty(_)
            | DecodeError::PropertyNotAllowed { .. }
            | DecodeError::InvalidReasonCode { .. } => ReasonCode::MALFORMED_PACKET,
        }
    }
}

/// Errors from encoding (values that cannot be represented on the wire).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EncodeError {
    /// The packet would exceed MQTT's maximum remaining length.
    #[error("packet too large to encode ({0} bytes)")]
    PacketTooLarge(usize),
    /// A string (topic, client id, user name...) longer than a 16-bit length allows.
    #[error("string longer than 65,535 bytes")]
    StringTooLong,
    /// MQTT 5: a value the packet cannot carry (a reason code not allowed for it, a subscription
    /// identifier of 0 or above 268,435,455, properties longer than a variable byte integer).
    #[error("cannot encode: {0}")]
    InvalidValue(&'static str),
}
