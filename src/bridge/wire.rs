//! The bridge's local session on the wire, at the bridge's `protocol_version`: MQTT 3.1.1, or 5
//! so that a message's MQTT 5 properties (user properties, content type, response topic,
//! correlation data, payload format, message expiry) reach the remote broker and come back from
//! it. The few packets the session writes ([`Outgoing`]) and reads ([`Incoming`]) have one form
//! here for both levels, so `local.rs` runs one flow for both.
//!
//! At level 5 the session is persistent as at 3.1.1 (Clean Start off, Session Expiry Interval
//! "never", capped by this broker's `session_expiry_interval` as any client's), and subscribes
//! with No Local: this broker never hands the bridge back what the bridge published here.
//!
//! What must not live here: sockets, the session's flows (`local.rs`).

use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::client::{reason_name, state::with_reason};
use crate::protocol::v5::{self, Properties, ReasonCode};
use crate::protocol::{
    self, ConnAck, Connect, ConnectReturnCode, DecodeError, EncodeError, Message, Packet,
    ProtocolLevel, PubAck, PubComp, PubRec, PubRel, Publish, QoS, Subscribe, SubscribeFilter,
    SubscribeReturnCode, TopicFilter, PROTOCOL_MAX_PACKET_SIZE,
};

/// The packet id of the one SUBSCRIBE (sent once per connection).
const SUBSCRIBE_ID: u16 = 1;

/// A PUBLISH of the local session: the message (with its MQTT 5 properties at level 5), and this
/// hop's packet id and DUP flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LocalPublish {
    pub message: Message,
    pub packet_id: Option<u16>,
    pub dup: bool,
}

/// Who the session is, for CONNECT. No `Debug`: it holds the password.
#[derive(Clone, Copy)]
pub(crate) struct Login<'a> {
    pub client_id: &'a str,
    pub username: Option<&'a str>,
    pub password: Option<&'a str>,
    pub keep_alive: u16,
}

/// What the local session writes (no `Debug`: CONNECT holds the password).
pub(crate) enum Outgoing<'a> {
    Connect(Login<'a>),
    /// One SUBSCRIBE with every filter (No Local on each at level 5).
    Subscribe(&'a [(TopicFilter, QoS)]),
    Publish(&'a LocalPublish),
    PubAck(u16),
    PubRec(u16),
    PubRel(u16),
    PubComp(u16),
    PingReq,
    Disconnect,
}

/// What the local session reads, whatever the level.
#[derive(Debug)]
pub(crate) enum Incoming {
    /// CONNACK: accepted, or the refusal in words.
    ConnAck(Result<(), String>),
    Publish(LocalPublish),
    /// PUBACK or PUBCOMP for one of the bridge's publishes; at level 5 a refusal's reason too
    /// (the flow is over either way).
    Done(u16, Option<String>),
    /// PUBREC: answer PUBREL. At level 5 a refusal ends the flow there (`Done` instead).
    PubRec(u16),
    /// PUBREL: answer PUBCOMP.
    PubRel(u16),
    /// SUBACK: whether each filter was refused, in order.
    SubAck(Vec<bool>),
    PingResp,
    /// Something a broker does not send a client of this kind (its name).
    Unexpected(&'static str),
}

/// Appends `packet` at `level` to `out`.
pub(crate) fn encode(
    level: ProtocolLevel,
    packet: &Outgoing<'_>,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    if level == ProtocolLevel::V5 {
        return encode_v5(packet).encode(out);
    }
    let packet = match *packet {
        Outgoing::Connect(login) => Packet::Connect(Box::new(Connect {
            protocol: ProtocolLevel::V311,
            clean_session: false,
            keep_alive: login.keep_alive,
            client_id: login.client_id.to_string(),
            will: None,
            username: login.username.map(str::to_string),
            password: password(login),
        })),
        Outgoing::Subscribe(filters) => Packet::Subscribe(Subscribe {
            packet_id: SUBSCRIBE_ID,
            filters: filters
                .iter()
                .map(|(filter, qos)| SubscribeFilter {
                    filter: filter.clone(),
                    qos: *qos,
                })
                .collect(),
        }),
        Outgoing::Publish(p) => {
            Packet::Publish(Publish::new(p.message.clone(), p.packet_id, p.dup))
        }
        Outgoing::PubAck(packet_id) => Packet::PubAck(PubAck { packet_id }),
        Outgoing::PubRec(packet_id) => Packet::PubRec(PubRec { packet_id }),
        Outgoing::PubRel(packet_id) => Packet::PubRel(PubRel { packet_id }),
        Outgoing::PubComp(packet_id) => Packet::PubComp(PubComp { packet_id }),
        Outgoing::PingReq => Packet::PingReq,
        Outgoing::Disconnect => Packet::Disconnect,
    };
    packet.encode(out)
}

fn password(login: Login<'_>) -> Option<Bytes> {
    login.password.map(|p| Bytes::from(p.as_bytes().to_vec()))
}

fn encode_v5(packet: &Outgoing<'_>) -> v5::Packet {
    let ack = |packet_id| v5::Ack {
        packet_id,
        reason: ReasonCode::SUCCESS,
        properties: Properties::default(),
    };
    match *packet {
        Outgoing::Connect(login) => v5::Packet::Connect(Box::new(v5::Connect {
            clean_start: false,
            keep_alive: login.keep_alive,
            properties: Properties {
                // A persistent session, as MQTT 3.1.1's clean_session false.
                session_expiry_interval: Some(u32::MAX),
                ..Properties::default()
            },
            client_id: login.client_id.to_string(),
            will: None,
            username: login.username.map(str::to_string),
            password: password(login),
        })),
        Outgoing::Subscribe(filters) => v5::Packet::Subscribe(v5::Subscribe {
            packet_id: SUBSCRIBE_ID,
            properties: Properties::default(),
            filters: filters
                .iter()
                .map(|(filter, qos)| v5::Subscription {
                    filter: filter.clone(),
                    qos: *qos,
                    no_local: true,
                    retain_as_published: false,
                    retain_handling: v5::RetainHandling::SendAtSubscribe,
                })
                .collect(),
        }),
        Outgoing::Publish(p) => {
            let mut publish = v5::Publish::new(p.message.clone(), p.packet_id, p.dup);
            if let Some(properties) = &p.message.properties {
                publish.properties = Properties::clone(properties);
            }
            v5::Packet::Publish(publish)
        }
        Outgoing::PubAck(packet_id) => v5::Packet::PubAck(ack(packet_id)),
        Outgoing::PubRec(packet_id) => v5::Packet::PubRec(ack(packet_id)),
        Outgoing::PubRel(packet_id) => v5::Packet::PubRel(ack(packet_id)),
        Outgoing::PubComp(packet_id) => v5::Packet::PubComp(ack(packet_id)),
        Outgoing::PingReq => v5::Packet::PingReq,
        Outgoing::Disconnect => v5::Packet::Disconnect(v5::Disconnect {
            reason: ReasonCode::SUCCESS,
            properties: Properties::default(),
        }),
    }
}

/// The next packet at `level` from the front of `buf`; `None` until a whole one is there.
pub(crate) fn decode(
    level: ProtocolLevel,
    buf: &mut BytesMut,
) -> Result<Option<Incoming>, DecodeError> {
    if level == ProtocolLevel::V5 {
        return Ok(v5::decode(buf, PROTOCOL_MAX_PACKET_SIZE)?.map(incoming_v5));
    }
    let Some(packet) = protocol::decode(buf, PROTOCOL_MAX_PACKET_SIZE)? else {
        return Ok(None);
    };
    Ok(Some(match packet {
        Packet::ConnAck(ConnAck { code, .. }) => Incoming::ConnAck(match code {
            ConnectReturnCode::Accepted => Ok(()),
            refused => Err(crate::client::state::refusal_reason(refused).to_string()),
        }),
        Packet::Publish(publish) => Incoming::Publish(LocalPublish {
            dup: publish.dup,
            packet_id: publish.packet_id,
            message: publish.into_message(),
        }),
        Packet::PubAck(PubAck { packet_id }) | Packet::PubComp(PubComp { packet_id }) => {
            Incoming::Done(packet_id, None)
        }
        Packet::PubRec(PubRec { packet_id }) => Incoming::PubRec(packet_id),
        Packet::PubRel(PubRel { packet_id }) => Incoming::PubRel(packet_id),
        Packet::SubAck(ack) => Incoming::SubAck(
            ack.return_codes
                .iter()
                .map(|code| *code == SubscribeReturnCode::Failure)
                .collect(),
        ),
        Packet::PingResp => Incoming::PingResp,
        other => Incoming::Unexpected(other.name()),
    }))
}

fn incoming_v5(packet: v5::Packet) -> Incoming {
    let refusal = |ack: &v5::Ack| {
        ack.reason
            .is_error()
            .then(|| with_reason(ack.reason, &ack.properties.reason_string))
    };
    match packet {
        v5::Packet::ConnAck(ack) => Incoming::ConnAck(if ack.reason.is_error() {
            Err(with_reason(ack.reason, &ack.properties.reason_string))
        } else {
            Ok(())
        }),
        v5::Packet::Publish(publish) => match publish_v5(publish) {
            Some(publish) => Incoming::Publish(publish),
            None => Incoming::Unexpected("PUBLISH with a topic alias"),
        },
        v5::Packet::PubAck(ack) | v5::Packet::PubComp(ack) => {
            let refused = refusal(&ack);
            Incoming::Done(ack.packet_id, refused)
        }
        v5::Packet::PubRec(ack) => match refusal(&ack) {
            Some(refused) => Incoming::Done(ack.packet_id, Some(refused)),
            None => Incoming::PubRec(ack.packet_id),
        },
        v5::Packet::PubRel(ack) => Incoming::PubRel(ack.packet_id),
        v5::Packet::SubAck(ack) => {
            Incoming::SubAck(ack.reason_codes.iter().map(|c| c.is_error()).collect())
        }
        v5::Packet::PingResp => Incoming::PingResp,
        v5::Packet::Disconnect(d) => {
            log::warn!(
                "bridge: this broker ended the local session: {} (0x{:02x})",
                reason_name(d.reason),
                d.reason.0
            );
            Incoming::Unexpected("DISCONNECT")
        }
        other => Incoming::Unexpected(other.name()),
    }
}

/// The message of an MQTT 5 PUBLISH with its properties, less this hop's (Topic Alias,
/// Subscription Identifiers); `None` without a topic name (the session allows no topic alias).
fn publish_v5(publish: v5::Publish) -> Option<LocalPublish> {
    let mut properties = publish.properties;
    properties.topic_alias = None;
    properties.subscription_identifiers.clear();
    Some(LocalPublish {
        dup: publish.dup,
        packet_id: publish.packet_id,
        message: Message {
            topic: publish.topic?,
            payload: publish.payload,
            qos: publish.qos,
            retain: publish.retain,
            properties: (!properties.is_empty()).then(|| Arc::new(properties)),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::TopicName;

    fn message(properties: Option<Properties>) -> Message {
        Message {
            topic: TopicName::new("a/b").unwrap(),
            payload: Bytes::from_static(b"hello"),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: properties.map(Arc::new),
        }
    }

    fn round_trip(level: ProtocolLevel, publish: &LocalPublish) -> LocalPublish {
        let mut buf = BytesMut::new();
        encode(level, &Outgoing::Publish(publish), &mut buf).unwrap();
        match decode(level, &mut buf).unwrap() {
            Some(Incoming::Publish(p)) => p,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_publish_keeps_its_properties_at_5_and_drops_them_at_3_1_1() {
        let properties = Properties {
            user_properties: vec![("k".into(), "v".into())],
            content_type: Some("text/plain".into()),
            response_topic: Some("reply/here".into()),
            correlation_data: Some(Bytes::from_static(b"\x01\x02")),
            payload_format_utf8: Some(true),
            message_expiry_interval: Some(300),
            ..Properties::default()
        };
        let publish = LocalPublish {
            message: message(Some(properties)),
            packet_id: Some(7),
            dup: true,
        };
        assert_eq!(round_trip(ProtocolLevel::V5, &publish), publish);
        let at_3 = round_trip(ProtocolLevel::V311, &publish);
        assert_eq!(at_3.message, message(None));
        assert_eq!((at_3.packet_id, at_3.dup), (Some(7), true));
    }

    #[test]
    fn this_hops_properties_are_not_the_messages() {
        let mut publish = v5::Publish::new(message(None), Some(1), false);
        publish.properties.subscription_identifiers = vec![3];
        let local = publish_v5(publish).unwrap();
        assert_eq!(local.message.properties, None, "an empty set is None");
    }

    #[test]
    fn subscriptions_ask_no_local_at_5_and_the_session_is_persistent() {
        let filters = [(TopicFilter::new("a/#").unwrap(), QoS::AtLeastOnce)];
        let mut buf = BytesMut::new();
        encode(ProtocolLevel::V5, &Outgoing::Subscribe(&filters), &mut buf).unwrap();
        match v5::decode(&mut buf, PROTOCOL_MAX_PACKET_SIZE).unwrap() {
            Some(v5::Packet::Subscribe(s)) => assert!(s.filters[0].no_local),
            other => panic!("{other:?}"),
        }
        let login = Login {
            client_id: "b",
            username: None,
            password: None,
            keep_alive: 60,
        };
        encode(ProtocolLevel::V5, &Outgoing::Connect(login), &mut buf).unwrap();
        match v5::decode(&mut buf, PROTOCOL_MAX_PACKET_SIZE).unwrap() {
            Some(v5::Packet::Connect(c)) => {
                assert!(!c.clean_start);
                assert_eq!(c.properties.session_expiry_interval, Some(u32::MAX));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn refusals_are_named() {
        let mut buf = BytesMut::new();
        v5::Packet::ConnAck(v5::ConnAck {
            session_present: false,
            reason: ReasonCode::BAD_USER_NAME_OR_PASSWORD,
            properties: Properties::default(),
        })
        .encode(&mut buf)
        .unwrap();
        match decode(ProtocolLevel::V5, &mut buf).unwrap() {
            Some(Incoming::ConnAck(Err(why))) => {
                assert_eq!(why, "bad user name or password (0x86)")
            }
            other => panic!("{other:?}"),
        }
        v5::Packet::PubRec(v5::Ack {
            packet_id: 4,
            reason: ReasonCode::NOT_AUTHORIZED,
            properties: Properties::default(),
        })
        .encode(&mut buf)
        .unwrap();
        match decode(ProtocolLevel::V5, &mut buf).unwrap() {
            Some(Incoming::Done(4, Some(why))) => assert!(why.contains("not authorized"), "{why}"),
            other => panic!("{other:?}"),
        }
    }
}
