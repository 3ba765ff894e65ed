//! MQTT 5 CONNECT [MQTT-3.1] and CONNACK [MQTT-3.2]: MQTT 3's fields (protocol name and flags
//! checks, will, credentials: `super::super::connect_fields`) plus CONNECT properties, will
//! properties, CONNACK reason codes and CONNACK properties.
//!
//! Judges only the packet: client-id rules, authentication and the server's limits are the
//! broker's. `Debug` of [`Connect`] shows the password's length only.

use std::fmt;

use bytes::{BufMut, BytesMut};

use super::super::connect::Redacted;
use super::super::connect_fields::{
    check_flags, flags_of, read_credentials, read_protocol, read_will, Payload, CLEAN_SESSION, WILL,
};
use super::super::fixed_header::{self, CONNACK, CONNECT};
use super::super::strings::{put_prefixed, Reader};
use super::super::{DecodeError, EncodeError, ProtocolLevel};
use super::{check_reason, properties, read_reason, ConnAck, Connect, Kind, Will};

impl fmt::Debug for Connect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let password = self.password.as_ref().map(|p| Redacted(p.len()));
        f.debug_struct("Connect")
            .field("clean_start", &self.clean_start)
            .field("keep_alive", &self.keep_alive)
            .field("properties", &self.properties)
            .field("client_id", &self.client_id)
            .field("will", &self.will)
            .field("username", &self.username)
            .field("password", &password)
            .finish()
    }
}

pub(super) fn decode(body: &[u8]) -> Result<Connect, DecodeError> {
    let mut r = Reader::new(body);
    match read_protocol(&mut r)? {
        ProtocolLevel::V5 => {}
        level => return Err(DecodeError::UnsupportedProtocolLevel(level as u8)),
    }
    let flags = r.read_u8()?;
    let will_qos = check_flags(flags, true)?;
    let keep_alive = r.read_u16()?;
    let properties = properties::decode(&mut r, Kind::Connect)?;
    if properties.authentication_data.is_some() && properties.authentication_method.is_none() {
        // "It is a Protocol Error to include Authentication Data if there is no Authentication
        // Method" (3.1.2.11.10).
        return Err(DecodeError::ProtocolError(
            "Authentication Data without an Authentication Method",
        ));
    }
    let client_id = r.read_string()?.to_owned();
    let will = if flags & WILL != 0 {
        let properties = properties::decode(&mut r, Kind::Will)?;
        let message = read_will(&mut r, flags, will_qos)?;
        Some(Will {
            message,
            properties,
        })
    } else {
        None
    };
    let (username, password) = read_credentials(&mut r, flags)?;
    r.finish()?;
    Ok(Connect {
        clean_start: flags & CLEAN_SESSION != 0,
        keep_alive,
        properties,
        client_id,
        will,
        username,
        password,
    })
}

pub(super) fn encode(p: &Connect, out: &mut BytesMut) -> Result<(), EncodeError> {
    let message = p.will.as_ref().map(|w| &w.message);
    let flags = flags_of(
        p.clean_start,
        message,
        p.username.is_some(),
        p.password.is_some(),
    );
    let payload = Payload {
        client_id: &p.client_id,
        will: message,
        username: p.username.as_deref(),
        password: p.password.as_deref(),
    };
    let props = p.properties.body_len(Kind::Connect)?;
    let will_props = match &p.will {
        Some(will) => Some(will.properties.body_len(Kind::Will)?),
        None => None,
    };
    let len = 2
        + 4
        + 1
        + 1
        + 2
        + properties::wire_len(props)
        + will_props.map_or(0, properties::wire_len)
        + payload.len()?;
    fixed_header::write(out, CONNECT << 4, len)?;
    put_prefixed(out, b"MQTT");
    out.put_u8(ProtocolLevel::V5 as u8);
    out.put_u8(flags);
    out.put_u16(p.keep_alive);
    p.properties.encode(props, out);
    payload.write(out, |out| {
        if let (Some(will), Some(len)) = (&p.will, will_props) {
            will.properties.encode(len, out);
        }
    });
    Ok(())
}

pub(super) fn decode_connack(body: &[u8]) -> Result<ConnAck, DecodeError> {
    let mut r = Reader::new(body);
    let ack_flags = r.read_u8()?;
    if ack_flags & !1 != 0 {
        return Err(DecodeError::MalformedPacket(
            "reserved CONNACK acknowledge flags set",
        )); // [MQTT-3.2.2-1]
    }
    let reason = read_reason(&mut r, Kind::ConnAck)?;
    let session_present = ack_flags == 1;
    if session_present && reason.is_error() {
        return Err(DecodeError::ProtocolError(
            "session present with an error reason code",
        )); // [MQTT-3.2.2-6]
    }
    let properties = properties::decode(&mut r, Kind::ConnAck)?;
    r.finish()?;
    Ok(ConnAck {
        session_present,
        reason,
        properties,
    })
}

pub(super) fn encode_connack(p: &ConnAck, out: &mut BytesMut) -> Result<(), EncodeError> {
    check_reason(p.reason, Kind::ConnAck)?;
    if p.session_present && p.reason.is_error() {
        return Err(EncodeError::InvalidValue(
            "session present with an error reason code",
        ));
    }
    let props = p.properties.body_len(Kind::ConnAck)?;
    fixed_header::write(out, CONNACK << 4, 2 + properties::wire_len(props))?;
    out.put_u8(u8::from(p.session_present));
    out.put_u8(p.reason.0);
    p.properties.encode(props, out);
    Ok(())
}
