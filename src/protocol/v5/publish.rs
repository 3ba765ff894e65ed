//! MQTT 5 PUBLISH [MQTT-3.3]: MQTT 3's fields and checks (the parser is shared with
//! `super::super::publish`), PUBLISH properties after the packet identifier, and an empty topic
//! name when a Topic Alias stands for it [MQTT-3.3.2-8].
//!
//! Topic and payload are slices of the received frame, as in MQTT 3. Must not resolve topic
//! aliases: they are per-connection state.

use bytes::{BufMut, BytesMut};

use super::super::fixed_header::{PUBLISH_DUP, PUBLISH_RETAIN};
use super::super::publish::{parse, split};
use super::super::strings::{prefixed_len, put_varint, varint_len, MAX_VARINT};
use super::super::{DecodeError, EncodeError, PublishRef, QoS, TopicName};
use super::{properties, Kind, Publish};
use properties::id;

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

/// The MQTT 5 PUBLISH at the front of `buf` as MQTT 3's [`Publish`](super::super::Publish),
/// split off `buf`, when it is whole, has a topic name and no property (then it says exactly
/// what the MQTT 3 PUBLISH says); otherwise `None` and `buf` is untouched ([`decode`] then
/// reads it, and reports what is wrong with it).
///
/// What it buys: MQTT 5's [`Publish`] carries a [`Properties`](super::Properties) of some 400
/// bytes inline, moved three times between the decoder and the handler (memmove was 9 % of the
/// broker's CPU in `pairs --qos 1 --protocol 5`).
pub fn decode_plain(buf: &mut BytesMut, max_packet_size: usize) -> Option<super::super::Publish> {
    let (header, total) = super::super::whole_frame(buf, max_packet_size, true).ok()??;
    if header.packet_type != super::super::fixed_header::PUBLISH {
        return None;
    }
    let fields = parse(header.flags, &buf[header.header_len..total], true).ok()?;
    if fields.topic.is_empty() || !fields.properties.is_empty() {
        return None;
    }
    let mut body = buf.split_to(total);
    bytes::Buf::advance(&mut body, header.header_len);
    let (topic, payload) = split(body, &fields);
    Some(super::super::Publish {
        dup: header.flags & PUBLISH_DUP != 0,
        qos: fields.qos,
        retain: header.flags & PUBLISH_RETAIN != 0,
        topic: TopicName::from_checked(topic),
        packet_id: fields.packet_id,
        payload,
    })
}

/// The Topic Alias of PUBLISH properties `raw` (their bytes after the property length) when it
/// is their only property, which is how a client that uses aliases sends most PUBLISHes; `None`
/// for any other properties (or none). The value is not checked (0 is not allowed).
pub fn lone_topic_alias(raw: &[u8]) -> Option<u16> {
    match *raw {
        [id::TOPIC_ALIAS, high, low] => Some(u16::from_be_bytes([high, low])),
        _ => None,
    }
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
        properties: None,
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

/// The PUBLISH properties of one hop, written after the message's own: what a server adds for one
/// subscriber (its subscription identifiers, a topic alias).
#[derive(Debug, Default, Clone, Copy)]
pub struct Hop<'a> {
    /// Topic Alias for this connection; with `alias_only`, the topic name is sent empty.
    pub topic_alias: Option<u16>,
    /// The alias is already known to the receiver: send the empty topic name [MQTT-3.3.2-8].
    pub alias_only: bool,
    /// The identifiers of the subscriptions the message matched [MQTT-3.3.4-3].
    pub subscription_ids: &'a [u32],
    /// What is left of the message's Message Expiry Interval after waiting in the server,
    /// written in place of the message's own [MQTT-3.3.2-6]; nothing when the message has none.
    pub message_expiry_interval: Option<u32>,
}

impl Hop<'_> {
    fn body_len(&self) -> Result<usize, EncodeError> {
        let mut len = self.topic_alias.map_or(0, |_| 3);
        for &sid in self.subscription_ids {
            if sid == 0 || sid > MAX_VARINT {
                return Err(EncodeError::InvalidValue(
                    "subscription identifier out of range",
                ));
            }
            len += 1 + varint_len(sid as usize);
        }
        Ok(len)
    }

    fn encode_body(&self, out: &mut BytesMut) {
        for &sid in self.subscription_ids {
            out.put_u8(id::SUBSCRIPTION_IDENTIFIER);
            put_varint(out, sid as usize);
        }
        if let Some(alias) = self.topic_alias {
            out.put_u8(id::TOPIC_ALIAS);
            out.put_u16(alias);
        }
    }
}

/// Appends `publish` as an MQTT 5 PUBLISH: its message properties
/// ([`PublishRef::properties`]), then `hop`'s. Nothing is copied out of `publish`; on error
/// nothing is written. What a server writes to an MQTT 5 subscriber.
pub fn encode_ref(
    publish: &PublishRef<'_>,
    hop: &Hop<'_>,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    let message_props = match publish.properties {
        Some(p) => p.body_len(Kind::Publish)?,
        None => 0,
    };
    let props = message_props + hop.body_len()?;
    let topic = if hop.alias_only && hop.topic_alias.is_some() {
        &[][..]
    } else {
        publish.topic
    };
    let packet_id_len = if publish.qos == QoS::AtMostOnce { 0 } else { 2 };
    let len = prefixed_len(topic.len())?
        + packet_id_len
        + properties::wire_len(props)
        + publish.payload.len();
    let head = PublishRef { topic, ..*publish };
    head.write_head(out, len)?;
    put_varint(out, props);
    if let Some(p) = publish.properties {
        p.encode_body_expiry(hop.message_expiry_interval, out);
    }
    hop.encode_body(out);
    out.put_slice(publish.payload);
    Ok(())
}

/// Exact number of bytes [`encode_ref`] appends (when it succeeds).
pub fn encoded_len_ref(publish: &PublishRef<'_>, hop: &Hop<'_>) -> usize {
    let props = publish
        .properties
        .map_or(0, |p| p.body_len(Kind::Publish).unwrap_or(0))
        + hop.body_len().unwrap_or(0);
    let packet_id_len = if publish.qos == QoS::AtMostOnce { 0 } else { 2 };
    let topic_len = if hop.alias_only && hop.topic_alias.is_some() {
        0
    } else {
        publish.topic.len()
    };
    let remaining =
        2 + topic_len + packet_id_len + properties::wire_len(props) + publish.payload.len();
    1 + super::super::fixed_header::remaining_length_len(remaining) + remaining
}
