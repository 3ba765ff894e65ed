//! The MQTT 5 packets that are a reason code and properties, with short forms on the wire:
//! PUBACK, PUBREC, PUBREL, PUBCOMP [MQTT-3.4 to 3.7] (after a packet identifier; remaining length
//! 2 means 0x00 and no properties, 3 means no properties), DISCONNECT [MQTT-3.14] (remaining
//! length 0 means 0x00 Normal disconnection, 1 means no properties) and AUTH [MQTT-3.15]
//! (remaining length 0 means 0x00 Success; otherwise both reason code and property length).
//!
//! Encoding picks the shortest form (but writes a DISCONNECT's property length after a reason
//! code, see `encode_reason`); decoding accepts every form the specification allows.
//! Must not track in-flight messages or authentication state.

use bytes::{BufMut, BytesMut};

use super::super::fixed_header;
use super::super::strings::Reader;
use super::super::{DecodeError, EncodeError};
use super::{check_reason, properties, read_reason, Ack, Kind, Properties, ReasonCode};

/// Decodes a PUBACK, PUBREC, PUBREL or PUBCOMP body (`kind` says which).
pub(super) fn decode(body: &[u8], kind: Kind) -> Result<Ack, DecodeError> {
    let mut r = Reader::new(body);
    let packet_id = r.read_packet_id()?;
    let (reason, properties) = read_tail(r, kind, false)?;
    Ok(Ack {
        packet_id,
        reason,
        properties,
    })
}

/// Encodes a PUBACK, PUBREC, PUBREL or PUBCOMP in its shortest form.
pub(super) fn encode(
    p: &Ack,
    kind: Kind,
    first_byte: u8,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    let tail = Tail::of(p.reason, &p.properties, kind, false)?;
    fixed_header::write(out, first_byte, 2 + tail.len())?;
    out.put_u16(p.packet_id);
    tail.write(p.reason, &p.properties, out);
    Ok(())
}

/// Decodes a DISCONNECT or AUTH body: its reason code and properties.
pub(super) fn decode_reason(
    body: &[u8],
    kind: Kind,
) -> Result<(ReasonCode, Properties), DecodeError> {
    read_tail(Reader::new(body), kind, kind == Kind::Auth)
}

/// Encodes a DISCONNECT or AUTH in its shortest form, except that a reason code is always
/// followed by a property length: the specification lets a DISCONNECT end after its reason
/// code, but clients in use (rumqttc 0.24) then wait for a property length that never comes and
/// miss why they were disconnected.
pub(super) fn encode_reason(
    reason: ReasonCode,
    properties: &Properties,
    kind: Kind,
    first_byte: u8,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    let tail = Tail::of(reason, properties, kind, true)?;
    fixed_header::write(out, first_byte, tail.len())?;
    tail.write(reason, properties, out);
    Ok(())
}

/// Reads the optional reason code and optional properties that end these packets.
/// `properties_with_reason`: a reason code must be followed by a property length (AUTH).
fn read_tail(
    mut r: Reader<'_>,
    kind: Kind,
    properties_with_reason: bool,
) -> Result<(ReasonCode, Properties), DecodeError> {
    if r.is_empty() {
        return Ok((ReasonCode::SUCCESS, Properties::default()));
    }
    let reason = read_reason(&mut r, kind)?;
    let properties = if r.is_empty() && !properties_with_reason {
        Properties::default()
    } else {
        properties::decode(&mut r, kind)?
    };
    r.finish()?;
    Ok((reason, properties))
}

/// Which of the optional fields an encoding writes.
enum Tail {
    /// Neither: the reason code is 0x00 and there are no properties.
    None,
    /// The reason code alone.
    Reason,
    /// Reason code, then properties of this many bytes (after their length).
    Properties(usize),
}

impl Tail {
    fn of(
        reason: ReasonCode,
        properties: &Properties,
        kind: Kind,
        properties_with_reason: bool,
    ) -> Result<Tail, EncodeError> {
        check_reason(reason, kind)?;
        if properties.is_empty() {
            if reason == ReasonCode::SUCCESS {
                return Ok(Tail::None);
            }
            if !properties_with_reason {
                return Ok(Tail::Reason);
            }
        }
        Ok(Tail::Properties(properties.body_len(kind)?))
    }

    fn len(&self) -> usize {
        match self {
            Tail::None => 0,
            Tail::Reason => 1,
            Tail::Properties(body) => 1 + properties::wire_len(*body),
        }
    }

    fn write(&self, reason: ReasonCode, properties: &Properties, out: &mut BytesMut) {
        match self {
            Tail::None => {}
            Tail::Reason => out.put_u8(reason.0),
            Tail::Properties(body) => {
                out.put_u8(reason.0);
                properties.encode(*body, out);
            }
        }
    }
}
