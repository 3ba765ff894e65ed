//! MQTT 5 PUBLISH [MQTT-3.3]: MQTT 3's fields and checks (the parser is shared with
//! `super::super::publish`), PUBLISH properties after the packet identifier, and an empty topic
//! name when a Topic Alias stands for it [MQTT-3.3.2-8].
//!
//! Topic and payload are slices of the received frame, as in MQTT 3. Must not resolve topic
//! aliases: they are per-connection state.

use bytes::{BufMut, BytesMut};

use super::super::fixed_header::{PUBLISH_DUP, PUBLISH_RETAIN};
use super::super::publish::{parse, split};
use super::super::strings::prefixed_len;
use super::super::{DecodeError, EncodeError, PublishRef, QoS, TopicName};
use super::{properties, Kind, Publish};

pub(super) fn decode(flags: u8, body: BytesMut) -> Result<Publish, DecodeError> {
    let fields = parse(flags, &body, true)?;
    let properties = properties::decode_body(&body[fields.properties.clone()], Kind::Publish)?;
    if fields.topic.is_empty() && properties.topic_alias.is_none() {
        return Err(DecodeError::ProtocolError(
            "empty topic name without a topic alias",
        )); // [MQTT-3.3.2-8]
    }
    let (topic, payload) = split(body, &fields);
    Ok(Publish {
        dup: flags & PUBLISH_DUP != 0,
        qos: fields.qos,
        retain: flags & PUBLISH_RETAIN != 0,
        topic: (!topic.is_empty()).then(|| TopicName::from_checked(topic)),
        packet_id: fields.packet_id,
        properties,
        payload,
    })
}

/// As MQTT 3's (whose header writer it uses), with the properties before the payload.
pub(super) fn encode(p: &Publish, out: &mut BytesMut) -> Result<(), EncodeError> {
    if p.topic.is_none() && p.properties.topic_alias.is_none() {
        return Err(EncodeError::InvalidValue(
            "PUBLISH without a topic name or a topic alias",
        ));
    }
    let topic = p.topic.as_ref().map_or(&[][..], TopicName::as_bytes);
    let props = p.properties.body_len(Kind::Publish)?;
    let packet_id_len = if p.qos == QoS::AtMostOnce { 0 } else { 2 };
    let len =
        prefixed_len(topic.len())? + packet_id_len + properties::wire_len(props) + p.payload.len();
    let head = PublishRef {
        dup: p.dup,
        qos: p.qos,
        retain: p.retain,
        topic,
        packet_id: p.packet_id,
        payload: &p.payload,
    };
    head.write_head(out, len)?;
    p.properties.encode(props, out);
    out.put_slice(&p.payload);
    Ok(())
}

impl Publish {
    /// The PUBLISH that carries `message` on one hop, without properties.
    pub fn new(message: super::Message, packet_id: Option<u16>, dup: bool) -> Publish {
        Publish {
            dup,
            qos: message.qos,
            retain: message.retain,
            topic: Some(message.topic),
            packet_id,
            properties: super::Properties::default(),
            payload: message.payload,
        }
    }
}
