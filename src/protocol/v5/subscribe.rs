//! MQTT 5 SUBSCRIBE [MQTT-3.8] (properties, then filters with subscription options: QoS, No
//! Local, Retain As Published, Retain Handling), UNSUBSCRIBE [MQTT-3.10], and their answers SUBACK
//! [MQTT-3.9] and UNSUBACK [MQTT-3.11] (properties, then one reason code per filter).
//!
//! Must not decide what is granted or removed: that is the broker's job.

use bytes::{BufMut, BytesMut};

use super::super::fixed_header::{self, SUBSCRIBE, UNSUBSCRIBE};
use super::super::strings::{prefixed_len, put_prefixed, Reader};
use super::super::{DecodeError, EncodeError, QoS, TopicFilter};
use super::{
    check_reason, properties, read_reason, Kind, Properties, RetainHandling, Subscribe,
    Subscription, SubscriptionAck, Unsubscribe,
};

const NO_LOCAL: u8 = 0b0000_0100;
const RETAIN_AS_PUBLISHED: u8 = 0b0000_1000;
const RETAIN_HANDLING_SHIFT: u8 = 4;
const RESERVED: u8 = 0b1100_0000;

pub(super) fn decode(body: &[u8]) -> Result<Subscribe, DecodeError> {
    let mut r = Reader::new(body);
    let packet_id = r.read_packet_id()?;
    let properties = properties::decode(&mut r, Kind::Subscribe)?;
    let mut filters = Vec::new();
    while !r.is_empty() {
        let filter = TopicFilter::new(r.read_string()?)?;
        filters.push(read_options(filter, r.read_u8()?)?);
    }
    if filters.is_empty() {
        return Err(DecodeError::EmptySubscription); // [MQTT-3.8.3-2]
    }
    Ok(Subscribe {
        packet_id,
        properties,
        filters,
    })
}

/// The subscription options byte [MQTT-3.8.3.1].
fn read_options(filter: TopicFilter, options: u8) -> Result<Subscription, DecodeError> {
    if options & RESERVED != 0 {
        return Err(DecodeError::MalformedPacket(
            "reserved bits set in subscription options",
        )); // [MQTT-3.8.3-5]
    }
    let qos = QoS::from_u8(options & 0b11).ok_or(DecodeError::InvalidQoS)?;
    let retain_handling = match options >> RETAIN_HANDLING_SHIFT & 0b11 {
        0 => RetainHandling::SendAtSubscribe,
        1 => RetainHandling::SendIfNew,
        2 => RetainHandling::DoNotSend,
        _ => return Err(DecodeError::ProtocolError("Retain Handling 3")),
    };
    let no_local = options & NO_LOCAL != 0;
    if no_local && filter.as_str().starts_with("$share/") {
        return Err(DecodeError::ProtocolError(
            "No Local on a shared subscription",
        )); // [MQTT-3.8.3-4]
    }
    Ok(Subscription {
        filter,
        qos,
        no_local,
        retain_as_published: options & RETAIN_AS_PUBLISHED != 0,
        retain_handling,
    })
}

impl Subscription {
    /// The subscription options byte.
    fn options(&self) -> u8 {
        let mut options = self.qos as u8 | (self.retain_handling as u8) << RETAIN_HANDLING_SHIFT;
        if self.no_local {
            options |= NO_LOCAL;
        }
        if self.retain_as_published {
            options |= RETAIN_AS_PUBLISHED;
        }
        options
    }
}

pub(super) fn encode(p: &Subscribe, out: &mut BytesMut) -> Result<(), EncodeError> {
    let filters = p
        .filters
        .iter()
        .map(|f| (f.filter.as_str(), Some(f.options())));
    encode_filters(
        SUBSCRIBE,
        p.packet_id,
        &p.properties,
        Kind::Subscribe,
        filters,
        out,
    )
}

pub(super) fn decode_unsubscribe(body: &[u8]) -> Result<Unsubscribe, DecodeError> {
    let mut r = Reader::new(body);
    let packet_id = r.read_packet_id()?;
    let properties = properties::decode(&mut r, Kind::Unsubscribe)?;
    let mut filters = Vec::new();
    while !r.is_empty() {
        filters.push(TopicFilter::new(r.read_string()?)?);
    }
    if filters.is_empty() {
        return Err(DecodeError::EmptySubscription); // [MQTT-3.10.3-2]
    }
    Ok(Unsubscribe {
        packet_id,
        properties,
        filters,
    })
}

pub(super) fn encode_unsubscribe(p: &Unsubscribe, out: &mut BytesMut) -> Result<(), EncodeError> {
    let filters = p.filters.iter().map(|f| (f.as_str(), None));
    encode_filters(
        UNSUBSCRIBE,
        p.packet_id,
        &p.properties,
        Kind::Unsubscribe,
        filters,
        out,
    )
}

/// SUBSCRIBE or UNSUBSCRIBE: packet identifier, properties, then each filter and (SUBSCRIBE)
/// its options byte.
fn encode_filters<'a>(
    packet_type: u8,
    packet_id: u16,
    properties: &Properties,
    kind: Kind,
    filters: impl Iterator<Item = (&'a str, Option<u8>)> + Clone,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    let props = properties.body_len(kind)?;
    let mut len = 2 + properties::wire_len(props);
    for (filter, options) in filters.clone() {
        len += prefixed_len(filter.len())? + usize::from(options.is_some());
    }
    fixed_header::write(out, packet_type << 4 | 0b0010, len)?;
    out.put_u16(packet_id);
    properties.encode(props, out);
    for (filter, options) in filters {
        put_prefixed(out, filter.as_bytes());
        if let Some(options) = options {
            out.put_u8(options);
        }
    }
    Ok(())
}

/// Decodes a SUBACK or UNSUBACK body (`kind` says which).
pub(super) fn decode_ack(body: &[u8], kind: Kind) -> Result<SubscriptionAck, DecodeError> {
    let mut r = Reader::new(body);
    let packet_id = r.read_packet_id()?;
    let properties = properties::decode(&mut r, kind)?;
    let mut reason_codes = Vec::new();
    while !r.is_empty() {
        reason_codes.push(read_reason(&mut r, kind)?);
    }
    if reason_codes.is_empty() {
        return Err(DecodeError::MalformedPacket("no reason codes"));
    }
    Ok(SubscriptionAck {
        packet_id,
        properties,
        reason_codes,
    })
}

/// Encodes a SUBACK or UNSUBACK (`kind` and `first_byte` say which).
pub(super) fn encode_ack(
    p: &SubscriptionAck,
    kind: Kind,
    first_byte: u8,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    for &code in &p.reason_codes {
        check_reason(code, kind)?;
    }
    let props = p.properties.body_len(kind)?;
    let len = 2 + properties::wire_len(props) + p.reason_codes.len();
    fixed_header::write(out, first_byte, len)?;
    out.put_u16(p.packet_id);
    p.properties.encode(props, out);
    for code in &p.reason_codes {
        out.put_u8(code.0);
    }
    Ok(())
}
