//! What MQTT 5 adds to a connection: the limits its client announced in CONNECT ([`V5Link`]),
//! and the translations between the MQTT 3 replies the handlers share and their MQTT 5 forms
//! (acknowledgements with reason codes, CONNACK refusal codes, the reason code of a DISCONNECT
//! the server sends before it closes); the broker's own Receive Maximum (the client's QoS 1/2
//! PUBLISHes not yet acknowledged, [`V5Link::admit`] and [`V5Link::sent`]).
//!
//! Only connections whose CONNECT was at level 5 have a [`V5Link`]; an MQTT 3 connection pays
//! one `None` for it. What each packet means stays in `handlers/<packet>.rs`.

use std::time::Duration;

use crate::protocol::v5::{self, Properties, ReasonCode};
use crate::protocol::{
    Connect, ConnectReturnCode, Message, Packet, QoS, SubscribeReturnCode, TopicName,
};

use super::topic_alias_out::OutgoingAliases;
use super::CloseReason;
use crate::plugins::enhanced_auth::Exchange;

/// An MQTT 5 connection's state beyond MQTT 3's.
#[derive(Debug, Default)]
pub struct V5Link {
    /// The Session Expiry Interval of the CONNECT, in seconds: a DISCONNECT may not set a
    /// non-zero one when this is 0 [MQTT-3.14.2-2].
    pub connect_expiry: u32,
    /// The client's Maximum Packet Size; `None`: the protocol's.
    pub max_packet_size: Option<u32>,
    /// The client's Request Problem Information (default 1): with 0, no Reason String or User
    /// Property in anything but PUBLISH, CONNACK and DISCONNECT [MQTT-3.1.2-29].
    pub problem_information: bool,
    /// The Will Delay Interval of the CONNECT's will, in seconds (0: none or no will).
    pub will_delay: u32,
    /// The client's Topic Aliases, for this connection only [MQTT-3.3.2-7]: the topic name of
    /// alias `a` at `a - 1` (at most [`TOPIC_ALIAS_MAXIMUM`]; an index, not a hash, on every
    /// PUBLISH of a client that uses them).
    topic_aliases: Vec<Option<TopicName>>,
    /// The client's QoS 1/2 PUBLISHes on this connection not acknowledged to the end yet: a QoS 1
    /// one until its PUBACK is written, a QoS 2 one until its PUBCOMP or a PUBREC refusing it
    /// is [MQTT-3.3.4-7] (acknowledgements may wait for the journal, a subscriber or the
    /// cluster). At most the broker's Receive Maximum.
    unacknowledged: u16,
    /// The Topic Aliases the broker sends this client (`topic_alias_out.rs`): as many as the
    /// CONNECT's Topic Alias Maximum allows.
    pub(in crate::broker) aliases_out: OutgoingAliases,
    /// The enhanced authentication method it connected with, and an exchange under way
    /// (`handlers/auth.rs`); `None` when it used none.
    pub(in crate::broker) auth: Option<Box<EnhancedAuth>>,
}

/// A connection's enhanced authentication (`handlers/auth.rs` runs it), kept in its [`V5Link`].
#[derive(Debug)]
pub(in crate::broker) struct EnhancedAuth {
    /// The method it connected with; a re-authentication must use it too.
    pub method: String,
    /// An exchange under way: the CONNECT's, or a re-authentication's.
    pub exchange: Option<Exchange>,
    /// While the CONNECT's exchange runs: the CONNECT and its properties, answered at its end.
    pub waiting: Option<(Box<Connect>, Box<Properties>)>,
}

/// The Topic Alias Maximum the broker announces in CONNACK: a client may use aliases 1 to this
/// [MQTT-3.2.2.3.8].
pub const TOPIC_ALIAS_MAXIMUM: u16 = 10;

impl V5Link {
    /// The link of a CONNECT with `properties` (their `will_delay_interval`: the will's, which
    /// `handlers/connect_v5.rs` moves there).
    pub fn new(properties: &Properties) -> Self {
        V5Link {
            connect_expiry: properties.session_expiry_interval.unwrap_or(0),
            max_packet_size: properties.maximum_packet_size,
            problem_information: properties.request_problem_information.unwrap_or(true),
            will_delay: properties.will_delay_interval.unwrap_or(0),
            topic_aliases: Vec::new(),
            unacknowledged: 0,
            aliases_out: OutgoingAliases::new(properties.topic_alias_maximum.unwrap_or(0)),
            auth: None,
        }
    }

    /// Counts a client's PUBLISH at `qos` against the broker's Receive Maximum `maximum`: a QoS
    /// 1/2 one above it is refused with 0x93 (its DISCONNECT's reason code) [MQTT-3.3.4-8].
    pub fn admit(&mut self, qos: QoS, maximum: u16) -> Result<(), ReasonCode> {
        if qos == QoS::AtMostOnce {
            return Ok(());
        }
        if self.unacknowledged >= maximum {
            return Err(ReasonCode::RECEIVE_MAXIMUM_EXCEEDED);
        }
        self.unacknowledged += 1;
        Ok(())
    }

    /// Notes a packet written to the client: a PUBACK, a PUBCOMP, or a PUBREC with an error
    /// code ends one PUBLISH's count. One for a PUBLISH of an earlier connection (a PUBREL sent
    /// again after a reconnect) may find none to end, as the client's send quota does [MQTT-4.9].
    pub fn sent(&mut self, packet: &v5::Packet) {
        let ends = match packet {
            v5::Packet::PubAck(_) | v5::Packet::PubComp(_) => true,
            v5::Packet::PubRec(rec) => rec.reason.is_error(),
            _ => false,
        };
        if ends {
            self.unacknowledged = self.unacknowledged.saturating_sub(1);
        }
    }

    /// [`sent`](Self::sent) for an acknowledgement written in its MQTT 3 bytes (a success, the
    /// same bytes in MQTT 5: [`same_in_v5`]).
    pub fn sent_plain(&mut self, packet: &Packet) {
        if matches!(packet, Packet::PubAck(_) | Packet::PubComp(_)) {
            self.unacknowledged = self.unacknowledged.saturating_sub(1);
        }
    }

    /// The client's QoS 1/2 PUBLISHes not acknowledged to the end yet ([`admit`](Self::admit)).
    pub fn unacknowledged(&self) -> u16 {
        self.unacknowledged
    }

    /// The topic name of a client's PUBLISH with `topic` (`None`: the empty name) and `alias`:
    /// a topic with an alias (re)sets the alias; an empty topic takes its alias's
    /// [MQTT-3.3.2-12]. Errors: the reason code of the DISCONNECT, 0x94 for an alias above
    /// [`TOPIC_ALIAS_MAXIMUM`] [MQTT-3.3.2-9], 0x82 for an empty topic whose alias has no topic
    /// yet. An alias of 0 is refused by the codec first (a protocol error, 0x82: the property
    /// cannot take that value [MQTT-3.3.2-8]); it is refused here too for callers that skip it.
    pub fn resolve_topic(
        &mut self,
        topic: Option<TopicName>,
        alias: Option<u16>,
    ) -> Result<TopicName, ReasonCode> {
        let Some(alias) = alias else {
            return topic.ok_or(ReasonCode::PROTOCOL_ERROR);
        };
        let slot = self.alias_slot(alias)?;
        match topic {
            Some(topic) => {
                *slot = Some(topic.clone());
                Ok(topic)
            }
            None => slot.clone().ok_or(ReasonCode::PROTOCOL_ERROR),
        }
    }

    /// [`resolve_topic`](Self::resolve_topic) for a PUBLISH borrowed from the read buffer: a
    /// non-empty `topic` (re)sets `alias` (copied only when it changes), an empty one takes the
    /// alias's topic. `None` where `resolve_topic` would refuse (the decoded PUBLISH then
    /// reports it).
    pub fn resolve_borrowed<'a>(&'a mut self, topic: &'a [u8], alias: u16) -> Option<&'a [u8]> {
        let slot = self.alias_slot(alias).ok()?;
        if topic.is_empty() {
            return slot.as_ref().map(TopicName::as_bytes);
        }
        if slot.as_ref().map(TopicName::as_bytes) != Some(topic) {
            let name = TopicName::from_checked(bytes::Bytes::copy_from_slice(topic));
            *slot = Some(name);
        }
        Some(topic)
    }

    /// The table entry of `alias`; 0x94 for an alias that is 0 or above
    /// [`TOPIC_ALIAS_MAXIMUM`] [MQTT-3.3.2-9].
    fn alias_slot(&mut self, alias: u16) -> Result<&mut Option<TopicName>, ReasonCode> {
        if alias == 0 || alias > TOPIC_ALIAS_MAXIMUM {
            return Err(ReasonCode::TOPIC_ALIAS_INVALID);
        }
        let index = usize::from(alias - 1);
        if self.topic_aliases.len() <= index {
            self.topic_aliases.resize(index + 1, None);
        }
        self.topic_aliases
            .get_mut(index)
            .ok_or(ReasonCode::TOPIC_ALIAS_INVALID)
    }
}

impl super::BrokerCore {
    /// Whether `conn`'s client takes a Reason String or User Property on packets other than
    /// PUBLISH, CONNACK and DISCONNECT: an MQTT 5 client that did not send Request Problem
    /// Information 0 [MQTT-3.1.2-29]. Every such Reason String the broker writes asks here.
    pub(super) fn wants_problem_information(&self, conn: super::ConnId) -> bool {
        self.connections
            .get(&conn)
            .and_then(|c| c.v5.as_deref())
            .is_some_and(|link| link.problem_information)
    }
}

/// A reply a handler queues: MQTT 3, translated on the way out to an MQTT 5 client where that
/// says everything ([`to_v5`]), or already MQTT 5 (reason codes only MQTT 5 has).
#[derive(Debug)]
pub enum Reply {
    V3(Packet),
    V5(Box<v5::Packet>),
}

impl From<Packet> for Reply {
    fn from(packet: Packet) -> Self {
        Reply::V3(packet)
    }
}

impl From<v5::Packet> for Reply {
    fn from(packet: v5::Packet) -> Self {
        Reply::V5(Box::new(packet))
    }
}

/// The MQTT 5 form of an MQTT 3 packet the server sends, with success reason codes; `None` for a
/// packet the server does not send this way (CONNACK and UNSUBACK have MQTT 5 builders of their
/// own: their MQTT 3 forms lack what MQTT 5 says).
pub fn to_v5(packet: &Packet) -> Option<v5::Packet> {
    let ack = |packet_id| v5::Ack {
        packet_id,
        reason: ReasonCode::SUCCESS,
        properties: Properties::default(),
    };
    Some(match packet {
        Packet::PubAck(a) => v5::Packet::PubAck(ack(a.packet_id)),
        Packet::PubRec(a) => v5::Packet::PubRec(ack(a.packet_id)),
        Packet::PubRel(a) => v5::Packet::PubRel(ack(a.packet_id)),
        Packet::PubComp(a) => v5::Packet::PubComp(ack(a.packet_id)),
        Packet::SubAck(a) => v5::Packet::SubAck(v5::SubscriptionAck {
            packet_id: a.packet_id,
            properties: Properties::default(),
            reason_codes: a
                .return_codes
                .iter()
                .map(|code| match code {
                    SubscribeReturnCode::Success(qos) => ReasonCode(*qos as u8),
                    // The one refusal the broker makes is a topic check's.
                    SubscribeReturnCode::Failure => ReasonCode::NOT_AUTHORIZED,
                })
                .collect(),
        }),
        Packet::PingResp => v5::Packet::PingResp,
        _ => return None,
    })
}

/// Whether `packet`, sent by the server, is the same bytes in MQTT 5 as in MQTT 3: a PUBACK,
/// PUBREC, PUBREL or PUBCOMP with reason code 0x00 and no properties may end after its packet
/// identifier (remaining length 2) [MQTT-3.4.2.1], and PINGRESP has no variable header. Written
/// as they are, they skip [`to_v5`] and the MQTT 5 encoder (on every QoS 1/2 message).
pub fn same_in_v5(packet: &Packet) -> bool {
    matches!(
        packet,
        Packet::PubAck(_)
            | Packet::PubRec(_)
            | Packet::PubRel(_)
            | Packet::PubComp(_)
            | Packet::PingResp
    )
}

/// The CONNACK reason code for an MQTT 3 refusal code [MQTT-3.2.2.2].
pub fn refusal_reason(code: ConnectReturnCode) -> ReasonCode {
    match code {
        ConnectReturnCode::Accepted => ReasonCode::SUCCESS,
        ConnectReturnCode::UnacceptableProtocolVersion => ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
        ConnectReturnCode::IdentifierRejected => ReasonCode::CLIENT_IDENTIFIER_NOT_VALID,
        ConnectReturnCode::ServerUnavailable => ReasonCode::SERVER_UNAVAILABLE,
        ConnectReturnCode::BadUserNameOrPassword => ReasonCode::BAD_USER_NAME_OR_PASSWORD,
        ConnectReturnCode::NotAuthorized => ReasonCode::NOT_AUTHORIZED,
    }
}

/// The reason code of the DISCONNECT the server sends an MQTT 5 client before closing for
/// `reason`; `None` when it sends none (the client left, or the caller wrote one already: a
/// protocol error's code depends on the error).
pub fn disconnect_reason(reason: CloseReason) -> Option<ReasonCode> {
    match reason {
        CloseReason::TakenOver => Some(ReasonCode::SESSION_TAKEN_OVER),
        CloseReason::KeepAliveTimeout => Some(ReasonCode::KEEP_ALIVE_TIMEOUT),
        CloseReason::ServerShutdown => Some(ReasonCode::SERVER_SHUTTING_DOWN),
        CloseReason::Kicked => Some(ReasonCode::ADMINISTRATIVE_ACTION),
        CloseReason::CredentialsExpired => Some(ReasonCode::NOT_AUTHORIZED),
        CloseReason::ClientDisconnect
        | CloseReason::AuthenticationFailed
        | CloseReason::DisconnectWithWill
        | CloseReason::ConnectionLost
        | CloseReason::ProtocolError => None,
    }
}

/// A DISCONNECT from the server with `reason` and nothing else.
pub fn disconnect(reason: ReasonCode) -> v5::Packet {
    v5::Packet::Disconnect(v5::Disconnect {
        reason,
        properties: Properties::default(),
    })
}

/// The message properties of a PUBLISH or will that are forwarded: all but Topic Alias and
/// Subscription Identifier (one hop's); `None` when none is set.
pub fn message_properties(mut properties: Properties) -> Option<std::sync::Arc<Properties>> {
    properties.topic_alias = None;
    properties.subscription_identifiers.clear();
    // Will-only: the delay is the broker's to wait, not the subscribers' to read.
    properties.will_delay_interval = None;
    (!properties.is_empty()).then(|| std::sync::Arc::new(properties))
}

/// Whether a message that says its payload is UTF-8 (Payload Format Indicator 1) is not
/// [MQTT-3.3.2-4]: such a PUBLISH is refused with 0x99.
pub fn payload_format_invalid(message: &Message) -> bool {
    message
        .properties
        .as_deref()
        .is_some_and(|p| p.payload_format_utf8 == Some(true))
        && std::str::from_utf8(&message.payload).is_err()
}

/// A Session Expiry Interval in seconds as the broker keeps it, capped by the broker's maximum
/// `cap` (`None`: no cap): `None` is for ever (0xFFFFFFFF [MQTT-3.1.2.11.2] without a cap).
pub fn session_expiry(seconds: u32, cap: Option<Duration>) -> Option<Duration> {
    let asked = (seconds != u32::MAX).then(|| Duration::from_secs(u64::from(seconds)));
    match (asked, cap) {
        (Some(asked), Some(cap)) => Some(asked.min(cap)),
        (asked, None) => asked,
        (None, cap) => cap,
    }
}

/// `expiry` in the seconds of a Session Expiry Interval property (`None`: 0xFFFFFFFF).
pub fn expiry_seconds(expiry: Option<Duration>) -> u32 {
    expiry.map_or(u32::MAX, |d| {
        u32::try_from(d.as_secs()).unwrap_or(u32::MAX - 1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_expiry_is_capped_by_the_broker() {
        let hour = Some(Duration::from_secs(3600));
        assert_eq!(session_expiry(60, hour), Some(Duration::from_secs(60)));
        assert_eq!(session_expiry(7200, hour), hour);
        assert_eq!(session_expiry(u32::MAX, hour), hour);
        assert_eq!(session_expiry(u32::MAX, None), None);
        assert_eq!(session_expiry(10, None), Some(Duration::from_secs(10)));
        assert_eq!(expiry_seconds(None), u32::MAX);
        assert_eq!(expiry_seconds(hour), 3600);
    }

    #[test]
    fn packets_same_in_v5_encode_to_the_same_bytes() {
        use crate::protocol::{PubAck, PubComp, PubRec, PubRel, SubAck};
        let packets = [
            Packet::PubAck(PubAck { packet_id: 7 }),
            Packet::PubRec(PubRec { packet_id: 8 }),
            Packet::PubRel(PubRel { packet_id: 9 }),
            Packet::PubComp(PubComp { packet_id: 10 }),
            Packet::PingResp,
        ];
        for packet in &packets {
            assert!(same_in_v5(packet), "{packet:?}");
            let mut v3 = bytes::BytesMut::new();
            packet.encode(&mut v3).expect("v3");
            let mut v5 = bytes::BytesMut::new();
            to_v5(packet).expect("v5 form").encode(&mut v5).expect("v5");
            assert_eq!(v3, v5, "{packet:?}");
        }
        let suback = Packet::SubAck(SubAck {
            packet_id: 1,
            return_codes: vec![SubscribeReturnCode::Success(
                crate::protocol::QoS::AtMostOnce,
            )],
        });
        assert!(!same_in_v5(&suback));
    }

    #[test]
    fn forwarded_properties_leave_one_hops_behind() {
        let props = Properties {
            topic_alias: Some(3),
            subscription_identifiers: vec![7],
            ..Properties::default()
        };
        assert_eq!(message_properties(props), None);
        let props = Properties {
            topic_alias: Some(3),
            content_type: Some("text/plain".into()),
            user_properties: vec![("a".into(), "1".into()), ("a".into(), "2".into())],
            ..Properties::default()
        };
        let kept = message_properties(props).expect("content type and user properties");
        assert_eq!(kept.topic_alias, None);
        assert_eq!(kept.user_properties.len(), 2);
    }

    #[test]
    fn topic_aliases_set_resolve_and_refuse() {
        let topic = |s| Some(TopicName::new(s).expect("topic"));
        let mut link = V5Link::new(&Properties::default());
        assert_eq!(
            link.resolve_topic(None, Some(1)),
            Err(ReasonCode::PROTOCOL_ERROR)
        );
        assert_eq!(
            link.resolve_topic(topic("a"), Some(1)),
            Ok(TopicName::new("a").expect("topic"))
        );
        assert_eq!(
            link.resolve_topic(None, Some(1)),
            topic("a").ok_or(ReasonCode::SUCCESS)
        );
        assert_eq!(
            link.resolve_topic(topic("b"), Some(1))
                .map(|t| t.to_string()),
            Ok("b".into())
        );
        assert_eq!(
            link.resolve_topic(None, Some(1)).map(|t| t.to_string()),
            Ok("b".into())
        );
        assert_eq!(
            link.resolve_topic(topic("c"), None).map(|t| t.to_string()),
            Ok("c".into())
        );
        assert_eq!(
            link.resolve_topic(None, None),
            Err(ReasonCode::PROTOCOL_ERROR)
        );
        for bad in [0, TOPIC_ALIAS_MAXIMUM + 1] {
            assert_eq!(
                link.resolve_topic(topic("a"), Some(bad)),
                Err(ReasonCode::TOPIC_ALIAS_INVALID)
            );
        }
        assert_eq!(
            link.resolve_topic(topic("m"), Some(TOPIC_ALIAS_MAXIMUM))
                .map(|t| t.to_string()),
            Ok("m".into())
        );
    }
}
