//! MQTT 5 reason codes [MQTT-2.4]: the one-byte result in CONNACK, PUBACK, PUBREC, PUBREL,
//! PUBCOMP, SUBACK, UNSUBACK, DISCONNECT and AUTH, and which packet may carry which code.
//!
//! Must not decide which code to send (that is the broker's and the client's job), only whether a
//! code may appear in a packet at all.

use super::Kind;

/// A reason code. A newtype rather than an enum: the same byte means different things in
/// different packets (0x00 is Success, Normal disconnection and Granted QoS 0), and a decoded
/// value is checked against its packet with `allowed_in`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReasonCode(pub u8);

impl ReasonCode {
    /// 0x00: Success; Normal disconnection (DISCONNECT); Granted QoS 0 (SUBACK).
    pub const SUCCESS: ReasonCode = ReasonCode(0x00);
    /// 0x01: Granted QoS 1 (SUBACK).
    pub const GRANTED_QOS_1: ReasonCode = ReasonCode(0x01);
    /// 0x02: Granted QoS 2 (SUBACK).
    pub const GRANTED_QOS_2: ReasonCode = ReasonCode(0x02);
    /// 0x04: Disconnect with Will Message (DISCONNECT).
    pub const DISCONNECT_WITH_WILL: ReasonCode = ReasonCode(0x04);
    /// 0x10: No matching subscribers (PUBACK, PUBREC).
    pub const NO_MATCHING_SUBSCRIBERS: ReasonCode = ReasonCode(0x10);
    /// 0x11: No subscription existed (UNSUBACK).
    pub const NO_SUBSCRIPTION_EXISTED: ReasonCode = ReasonCode(0x11);
    /// 0x18: Continue authentication (AUTH).
    pub const CONTINUE_AUTHENTICATION: ReasonCode = ReasonCode(0x18);
    /// 0x19: Re-authenticate (AUTH).
    pub const RE_AUTHENTICATE: ReasonCode = ReasonCode(0x19);
    /// 0x80: Unspecified error.
    pub const UNSPECIFIED_ERROR: ReasonCode = ReasonCode(0x80);
    /// 0x81: Malformed Packet.
    pub const MALFORMED_PACKET: ReasonCode = ReasonCode(0x81);
    /// 0x82: Protocol Error.
    pub const PROTOCOL_ERROR: ReasonCode = ReasonCode(0x82);
    /// 0x83: Implementation specific error.
    pub const IMPLEMENTATION_SPECIFIC_ERROR: ReasonCode = ReasonCode(0x83);
    /// 0x84: Unsupported Protocol Version (CONNACK).
    pub const UNSUPPORTED_PROTOCOL_VERSION: ReasonCode = ReasonCode(0x84);
    /// 0x85: Client Identifier not valid (CONNACK).
    pub const CLIENT_IDENTIFIER_NOT_VALID: ReasonCode = ReasonCode(0x85);
    /// 0x86: Bad User Name or Password (CONNACK).
    pub const BAD_USER_NAME_OR_PASSWORD: ReasonCode = ReasonCode(0x86);
    /// 0x87: Not authorized.
    pub const NOT_AUTHORIZED: ReasonCode = ReasonCode(0x87);
    /// 0x88: Server unavailable (CONNACK).
    pub const SERVER_UNAVAILABLE: ReasonCode = ReasonCode(0x88);
    /// 0x89: Server busy.
    pub const SERVER_BUSY: ReasonCode = ReasonCode(0x89);
    /// 0x8A: Banned (CONNACK).
    pub const BANNED: ReasonCode = ReasonCode(0x8a);
    /// 0x8B: Server shutting down (DISCONNECT).
    pub const SERVER_SHUTTING_DOWN: ReasonCode = ReasonCode(0x8b);
    /// 0x8C: Bad authentication method.
    pub const BAD_AUTHENTICATION_METHOD: ReasonCode = ReasonCode(0x8c);
    /// 0x8D: Keep Alive timeout (DISCONNECT).
    pub const KEEP_ALIVE_TIMEOUT: ReasonCode = ReasonCode(0x8d);
    /// 0x8E: Session taken over (DISCONNECT).
    pub const SESSION_TAKEN_OVER: ReasonCode = ReasonCode(0x8e);
    /// 0x8F: Topic Filter invalid.
    pub const TOPIC_FILTER_INVALID: ReasonCode = ReasonCode(0x8f);
    /// 0x90: Topic Name invalid.
    pub const TOPIC_NAME_INVALID: ReasonCode = ReasonCode(0x90);
    /// 0x91: Packet Identifier in use.
    pub const PACKET_IDENTIFIER_IN_USE: ReasonCode = ReasonCode(0x91);
    /// 0x92: Packet Identifier not found (PUBREL, PUBCOMP).
    pub const PACKET_IDENTIFIER_NOT_FOUND: ReasonCode = ReasonCode(0x92);
    /// 0x93: Receive Maximum exceeded (DISCONNECT).
    pub const RECEIVE_MAXIMUM_EXCEEDED: ReasonCode = ReasonCode(0x93);
    /// 0x94: Topic Alias invalid (DISCONNECT).
    pub const TOPIC_ALIAS_INVALID: ReasonCode = ReasonCode(0x94);
    /// 0x95: Packet too large.
    pub const PACKET_TOO_LARGE: ReasonCode = ReasonCode(0x95);
    /// 0x96: Message rate too high (DISCONNECT).
    pub const MESSAGE_RATE_TOO_HIGH: ReasonCode = ReasonCode(0x96);
    /// 0x97: Quota exceeded.
    pub const QUOTA_EXCEEDED: ReasonCode = ReasonCode(0x97);
    /// 0x98: Administrative action (DISCONNECT).
    pub const ADMINISTRATIVE_ACTION: ReasonCode = ReasonCode(0x98);
    /// 0x99: Payload format invalid.
    pub const PAYLOAD_FORMAT_INVALID: ReasonCode = ReasonCode(0x99);
    /// 0x9A: Retain not supported.
    pub const RETAIN_NOT_SUPPORTED: ReasonCode = ReasonCode(0x9a);
    /// 0x9B: QoS not supported.
    pub const QOS_NOT_SUPPORTED: ReasonCode = ReasonCode(0x9b);
    /// 0x9C: Use another server.
    pub const USE_ANOTHER_SERVER: ReasonCode = ReasonCode(0x9c);
    /// 0x9D: Server moved.
    pub const SERVER_MOVED: ReasonCode = ReasonCode(0x9d);
    /// 0x9E: Shared Subscriptions not supported.
    pub const SHARED_SUBSCRIPTIONS_NOT_SUPPORTED: ReasonCode = ReasonCode(0x9e);
    /// 0x9F: Connection rate exceeded.
    pub const CONNECTION_RATE_EXCEEDED: ReasonCode = ReasonCode(0x9f);
    /// 0xA0: Maximum connect time (DISCONNECT).
    pub const MAXIMUM_CONNECT_TIME: ReasonCode = ReasonCode(0xa0);
    /// 0xA1: Subscription Identifiers not supported.
    pub const SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED: ReasonCode = ReasonCode(0xa1);
    /// 0xA2: Wildcard Subscriptions not supported.
    pub const WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED: ReasonCode = ReasonCode(0xa2);

    /// Whether a packet of `kind` may carry this code: the table of [MQTT-2.4].
    pub(crate) fn allowed_in(self, kind: Kind) -> bool {
        allowed_codes(kind).contains(&self.0)
    }

    /// Whether the code reports a failure (0x80 and above) [MQTT-2.4].
    pub fn is_error(self) -> bool {
        self.0 >= 0x80
    }
}

/// The codes each packet may carry, transcribed from the table of [MQTT-2.4] (and each packet's
/// own list in chapter 3). Packets without a reason code allow none.
fn allowed_codes(kind: Kind) -> &'static [u8] {
    match kind {
        Kind::ConnAck => &[
            0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8a, 0x8c, 0x90,
            0x95, 0x97, 0x99, 0x9a, 0x9b, 0x9c, 0x9d, 0x9f,
        ],
        Kind::PubAck | Kind::PubRec => &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99],
        Kind::PubRel | Kind::PubComp => &[0x00, 0x92],
        Kind::SubAck => &[
            0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8f, 0x91, 0x97, 0x9e, 0xa1, 0xa2,
        ],
        Kind::UnsubAck => &[0x00, 0x11, 0x80, 0x83, 0x87, 0x8f, 0x91],
        Kind::Disconnect => &[
            0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8b, 0x8c, 0x8d, 0x8e, 0x8f, 0x90,
            0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9a, 0x9b, 0x9c, 0x9d, 0x9e, 0x9f, 0xa0,
            0xa1, 0xa2,
        ],
        Kind::Auth => &[0x00, 0x18, 0x19],
        Kind::Connect | Kind::Publish | Kind::Will | Kind::Subscribe | Kind::Unsubscribe => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Spot checks of the table against the specification's text, one per column.
    #[test]
    fn table_spot_checks() {
        let cases = [
            (ReasonCode::SUCCESS, Kind::Auth, true),
            (ReasonCode::RE_AUTHENTICATE, Kind::Auth, true),
            (ReasonCode::UNSPECIFIED_ERROR, Kind::Auth, false),
            (ReasonCode::BANNED, Kind::ConnAck, true),
            (ReasonCode::BANNED, Kind::Disconnect, false),
            (ReasonCode::SERVER_SHUTTING_DOWN, Kind::Disconnect, true),
            (ReasonCode::SERVER_SHUTTING_DOWN, Kind::ConnAck, false),
            (ReasonCode::NO_MATCHING_SUBSCRIBERS, Kind::PubRec, true),
            (ReasonCode::NO_MATCHING_SUBSCRIBERS, Kind::PubComp, false),
            (ReasonCode::PACKET_IDENTIFIER_NOT_FOUND, Kind::PubRel, true),
            (ReasonCode::PACKET_IDENTIFIER_NOT_FOUND, Kind::PubAck, false),
            (ReasonCode::GRANTED_QOS_2, Kind::SubAck, true),
            (ReasonCode::GRANTED_QOS_2, Kind::UnsubAck, false),
            (ReasonCode::NO_SUBSCRIPTION_EXISTED, Kind::UnsubAck, true),
            (ReasonCode::DISCONNECT_WITH_WILL, Kind::Disconnect, true),
            (
                ReasonCode::WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED,
                Kind::SubAck,
                true,
            ),
            (ReasonCode(0x03), Kind::SubAck, false),
            (ReasonCode(0xff), Kind::Disconnect, false),
            (ReasonCode::SUCCESS, Kind::Publish, false),
        ];
        for (code, kind, allowed) in cases {
            assert_eq!(code.allowed_in(kind), allowed, "{code:?} in {kind:?}");
        }
    }

    /// Every code the specification defines is allowed somewhere; no other byte is.
    #[test]
    fn defined_codes() {
        let kinds = [
            Kind::ConnAck,
            Kind::PubAck,
            Kind::PubRec,
            Kind::PubRel,
            Kind::PubComp,
            Kind::SubAck,
            Kind::UnsubAck,
            Kind::Disconnect,
            Kind::Auth,
        ];
        let defined = (0..=255u8)
            .filter(|&c| kinds.iter().any(|&k| ReasonCode(c).allowed_in(k)))
            .count();
        assert_eq!(defined, 43);
        assert!(ReasonCode::MALFORMED_PACKET.is_error());
        assert!(!ReasonCode::NO_SUBSCRIPTION_EXISTED.is_error());
    }
}
