//! MQTT 5 on the engine's wire (`--protocol 5`): the packets whose MQTT 5 form differs from the
//! MQTT 3.1.1 one (CONNECT, SUBSCRIBE, PUBLISH going out; CONNACK, SUBACK, acks with reason codes,
//! DISCONNECT coming in), through `amqtt::protocol::v5`. What the broker sends is turned into the
//! MQTT 3 packet the engine's handlers already know, so the flows are not written twice.
//!
//! PUBACK, PUBREC, PUBREL, PUBCOMP with reason Success and no properties, PINGREQ and a normal
//! DISCONNECT are the same bytes in both versions: the engine writes them as it always has.

use amqtt::protocol::v5::{self, Properties, ReasonCode};
use amqtt::protocol::{
    ConnAck, ConnectReturnCode, Packet, PubAck, PubComp, PubRec, PubRel, PublishRef, QoS, SubAck,
    SubscribeReturnCode, TopicFilter,
};
use bytes::BytesMut;

use super::client::{Client, Ctx};
use super::{ClientPlan, Plan};

/// A publisher's topic alias on the current connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Alias {
    /// Not used (`--topic-alias` off, or the broker's Topic Alias Maximum is 0).
    Off,
    /// Allowed: the next PUBLISH sends the topic and sets alias 1.
    Unset,
    /// Alias 1 stands for the topic: PUBLISH sends it alone.
    Set,
}

/// CONNECT at level 5. A persistent session (clean session 0) asks for a session that never
/// expires, as MQTT 3.1.1 keeps one.
pub(super) fn connect(plan: &Plan, cp: &ClientPlan) -> v5::Packet {
    let properties = Properties {
        session_expiry_interval: (!cp.clean_session).then_some(u32::MAX),
        ..Properties::default()
    };
    v5::Packet::Connect(Box::new(v5::Connect {
        clean_start: cp.clean_session,
        keep_alive: plan.keep_alive,
        properties,
        client_id: cp.client_id.clone(),
        will: None,
        username: plan.credentials.as_ref().map(|c| c.username.clone()),
        password: plan.credentials.as_ref().and_then(|c| c.password.clone()),
    }))
}

/// SUBSCRIBE at level 5, with the default subscription options.
pub(super) fn subscribe(filters: &[TopicFilter], qos: QoS) -> v5::Packet {
    v5::Packet::Subscribe(v5::Subscribe {
        packet_id: 1,
        properties: Properties::default(),
        filters: filters
            .iter()
            .map(|f| v5::Subscription {
                filter: f.clone(),
                qos,
                no_local: false,
                retain_as_published: false,
                retain_handling: v5::RetainHandling::SendAtSubscribe,
            })
            .collect(),
    })
}

/// Appends `publish` at level 5, topic alias applied: the first PUBLISH of a connection sets
/// alias 1 with the topic, the next ones send the alias and an empty topic.
///
/// Encoded from the borrowed `publish` as MQTT 3's is ([`v5::encode_publish_ref`]): building an
/// MQTT 5 [`v5::Publish`] (a payload copy, a topic clone, some 400 bytes of inline
/// properties) was ~15 % of the generator's CPU in `pairs -n 8 --qos 0 --protocol 5`, where the
/// generator is what limits the rate, so the broker got smaller batches than at 3.1.1.
pub(super) fn encode_publish(
    publish: &PublishRef<'_>,
    alias: &mut Alias,
    out: &mut BytesMut,
) -> bool {
    let hop = v5::Hop {
        topic_alias: (*alias != Alias::Off).then_some(1),
        alias_only: *alias == Alias::Set,
        ..v5::Hop::default()
    };
    let ok = v5::encode_publish_ref(publish, &hop, out).is_ok();
    if ok && *alias == Alias::Unset {
        *alias = Alias::Set;
    }
    ok
}

/// The MQTT 3 packet the engine's handlers take for an MQTT 5 one from the broker; `None` for an
/// acknowledgement with a failure reason code (counted as a protocol error: the message it
/// acknowledges shows up as lost). A CONNACK also sets the publisher's topic alias state and
/// the broker's Receive Maximum, which caps its QoS 1/2 window (Mosquitto refuses a QoS 2
/// message past it with 0x97 Quota exceeded).
pub(super) fn to_v3(c: &mut Client, ctx: &mut Ctx, packet: v5::Packet) -> Option<Packet> {
    let refused = |ctx: &mut Ctx, reason: ReasonCode| {
        if reason.is_error() {
            ctx.c.errors.protocol += 1;
        }
        reason.is_error()
    };
    Some(match packet {
        v5::Packet::ConnAck(ack) => {
            let aliases =
                ctx.plan.topic_alias && ack.properties.topic_alias_maximum.unwrap_or(0) > 0;
            if let Some(p) = c.publisher.as_mut() {
                p.alias = if aliases { Alias::Unset } else { Alias::Off };
                p.receive_maximum = ack.properties.receive_maximum.map_or(u32::MAX, u32::from);
            }
            Packet::ConnAck(ConnAck {
                session_present: ack.session_present,
                code: connack_code(ack.reason),
            })
        }
        v5::Packet::SubAck(ack) => Packet::SubAck(SubAck {
            packet_id: ack.packet_id,
            return_codes: ack
                .reason_codes
                .iter()
                .map(|code| match QoS::from_u8(code.0) {
                    Some(qos) => SubscribeReturnCode::Success(qos),
                    None => SubscribeReturnCode::Failure,
                })
                .collect(),
        }),
        v5::Packet::PubAck(ack) if !refused(ctx, ack.reason) => Packet::PubAck(PubAck {
            packet_id: ack.packet_id,
        }),
        v5::Packet::PubRec(ack) if !refused(ctx, ack.reason) => Packet::PubRec(PubRec {
            packet_id: ack.packet_id,
        }),
        v5::Packet::PubAck(_) | v5::Packet::PubRec(_) => return None,
        v5::Packet::PubRel(ack) => Packet::PubRel(PubRel {
            packet_id: ack.packet_id,
        }),
        v5::Packet::PubComp(ack) => Packet::PubComp(PubComp {
            packet_id: ack.packet_id,
        }),
        v5::Packet::PingResp => Packet::PingResp,
        // DISCONNECT, AUTH, or a packet only a client sends: the handlers' catch-all counts a
        // protocol error and closes, as for MQTT 3's DISCONNECT from a broker.
        _ => Packet::Disconnect,
    })
}

/// A CONNACK reason code as the MQTT 3.1.1 return code of the same meaning (any other failure:
/// server unavailable), for the engine's refusal count.
fn connack_code(reason: ReasonCode) -> ConnectReturnCode {
    match reason {
        ReasonCode::SUCCESS => ConnectReturnCode::Accepted,
        ReasonCode::UNSUPPORTED_PROTOCOL_VERSION => ConnectReturnCode::UnacceptableProtocolVersion,
        ReasonCode::CLIENT_IDENTIFIER_NOT_VALID => ConnectReturnCode::IdentifierRejected,
        ReasonCode::BAD_USER_NAME_OR_PASSWORD => ConnectReturnCode::BadUserNameOrPassword,
        ReasonCode::NOT_AUTHORIZED => ConnectReturnCode::NotAuthorized,
        _ => ConnectReturnCode::ServerUnavailable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amqtt::protocol::TopicName;

    /// The first PUBLISH sets alias 1 with the topic, the next sends the alias alone; both decode
    /// as MQTT 5 with the payload intact.
    #[test]
    fn the_alias_replaces_the_topic_after_the_first_publish() {
        let topic = TopicName::new("bench/t").unwrap();
        let publish = PublishRef {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: topic.as_bytes(),
            packet_id: Some(7),
            payload: b"payload",
            properties: None,
        };
        let mut alias = Alias::Unset;
        let mut out = BytesMut::new();
        assert!(encode_publish(&publish, &mut alias, &mut out));
        assert!(encode_publish(&publish, &mut alias, &mut out));
        assert_eq!(alias, Alias::Set);
        let mut seen = Vec::new();
        while let Some(v5::Packet::Publish(p)) = v5::decode(&mut out, 1 << 20).unwrap() {
            assert_eq!((p.packet_id, &p.payload[..]), (Some(7), &b"payload"[..]));
            seen.push((
                p.topic.map(|t| t.as_str().to_string()),
                p.properties.topic_alias,
            ));
        }
        assert_eq!(
            seen,
            vec![(Some("bench/t".to_string()), Some(1)), (None, Some(1))]
        );
        let mut off = Alias::Off;
        assert!(encode_publish(&publish, &mut off, &mut out));
        let Some(v5::Packet::Publish(p)) = v5::decode(&mut out, 1 << 20).unwrap() else {
            panic!("a PUBLISH")
        };
        assert_eq!((p.topic.is_some(), p.properties.topic_alias), (true, None));
    }
}
