//! CONNECT's fields as MQTT 3.1, 3.1.1 and 5 share them [MQTT-3.1]: protocol name and level,
//! the connect flags and their rules, the will's topic and payload, user name and password, and
//! the payload's encoding. Used by `connect.rs` (MQTT 3) and `v5/connect.rs`.
//!
//! Must not read properties (MQTT 5's own) or judge the client id (broker policy).

use bytes::{Bytes, BytesMut};

use super::strings::{prefixed_len, put_prefixed, Reader};
use super::{DecodeError, EncodeError, LastWill, ProtocolLevel, QoS, TopicName};

pub(super) const USERNAME: u8 = 0x80;
pub(super) const PASSWORD: u8 = 0x40;
pub(super) const WILL_RETAIN: u8 = 0x20;
pub(super) const WILL_QOS_SHIFT: u8 = 3;
pub(super) const WILL: u8 = 0x04;
pub(super) const CLEAN_SESSION: u8 = 0x02;
pub(super) const RESERVED: u8 = 0x01;

/// Reads the protocol name and level [MQTT-3.1.2.1/2]: "MQIsdp" 3, "MQTT" 4 or "MQTT" 5.
pub(super) fn read_protocol(r: &mut Reader<'_>) -> Result<ProtocolLevel, DecodeError> {
    let name = r.read_binary()?;
    let level = r.read_u8()?;
    match (name, level) {
        (b"MQTT", 4) => Ok(ProtocolLevel::V311),
        (b"MQIsdp", 3) => Ok(ProtocolLevel::V31),
        (b"MQTT", 5) => Ok(ProtocolLevel::V5),
        (b"MQTT" | b"MQIsdp", _) => Err(DecodeError::UnsupportedProtocolLevel(level)),
        _ => Err(DecodeError::InvalidProtocolName(
            String::from_utf8_lossy(name).into_owned(),
        )),
    }
}

/// Checks the connect flags [MQTT-3.1.2.3]; returns the will QoS (0 without a will). MQTT 5
/// (`v5`) allows a password without a user name.
pub(super) fn check_flags(flags: u8, v5: bool) -> Result<QoS, DecodeError> {
    if flags & RESERVED != 0 {
        return Err(DecodeError::InvalidConnectFlags("reserved bit 0 is set")); // [MQTT-3.1.2-3]
    }
    let will_qos = (flags >> WILL_QOS_SHIFT) & 0b11;
    if flags & WILL == 0 {
        if will_qos != 0 {
            return Err(DecodeError::InvalidConnectFlags(
                "will QoS set without will flag",
            )); // [MQTT-3.1.2-13]
        }
        if flags & WILL_RETAIN != 0 {
            return Err(DecodeError::InvalidConnectFlags(
                "will retain set without will flag",
            )); // [MQTT-3.1.2-15]
        }
    }
    // [MQTT-3.1.2-14]
    let will_qos = QoS::from_u8(will_qos).ok_or(DecodeError::InvalidConnectFlags("will QoS 3"))?;
    if !v5 && flags & PASSWORD != 0 && flags & USERNAME == 0 {
        return Err(DecodeError::InvalidConnectFlags(
            "password flag set without username flag",
        )); // [MQTT-3.1.2-22]
    }
    Ok(will_qos)
}

/// The connect flags byte for these fields.
pub(super) fn flags_of(clean: bool, will: Option<&LastWill>, username: bool, password: bool) -> u8 {
    let mut flags = 0;
    if clean {
        flags |= CLEAN_SESSION;
    }
    if let Some(will) = will {
        flags |= WILL | (will.qos as u8) << WILL_QOS_SHIFT;
        if will.retain {
            flags |= WILL_RETAIN;
        }
    }
    if username {
        flags |= USERNAME;
    }
    if password {
        flags |= PASSWORD;
    }
    flags
}

/// The will topic and payload, with QoS and retain from the connect `flags`.
pub(super) fn read_will(r: &mut Reader<'_>, flags: u8, qos: QoS) -> Result<LastWill, DecodeError> {
    let topic = TopicName::from_bytes(Bytes::copy_from_slice(r.read_binary()?))?;
    let payload = Bytes::copy_from_slice(r.read_binary()?);
    Ok(LastWill {
        topic,
        payload,
        qos,
        retain: flags & WILL_RETAIN != 0,
        properties: None,
    })
}

/// The user name and password the connect `flags` announce, in that order.
pub(super) fn read_credentials(
    r: &mut Reader<'_>,
    flags: u8,
) -> Result<(Option<String>, Option<Bytes>), DecodeError> {
    let username = if flags & USERNAME != 0 {
        Some(r.read_string()?.to_owned())
    } else {
        None
    };
    let password = if flags & PASSWORD != 0 {
        Some(Bytes::copy_from_slice(r.read_binary()?))
    } else {
        None
    };
    Ok((username, password))
}

/// CONNECT's payload for encoding, the same at every level but for MQTT 5's will properties.
pub(super) struct Payload<'a> {
    pub client_id: &'a str,
    pub will: Option<&'a LastWill>,
    pub username: Option<&'a str>,
    pub password: Option<&'a [u8]>,
}

impl Payload<'_> {
    /// Its size, will properties excluded, or an error when a field is too long.
    pub fn len(&self) -> Result<usize, EncodeError> {
        let mut len = prefixed_len(self.client_id.len())?;
        if let Some(will) = self.will {
            len += prefixed_len(will.topic.as_bytes().len())? + prefixed_len(will.payload.len())?;
        }
        if let Some(username) = self.username {
            len += prefixed_len(username.len())?;
        }
        if let Some(password) = self.password {
            len += prefixed_len(password.len())?;
        }
        Ok(len)
    }

    /// Writes it; `will_properties` writes what comes between client id and will topic.
    pub fn write(&self, out: &mut BytesMut, will_properties: impl FnOnce(&mut BytesMut)) {
        put_prefixed(out, self.client_id.as_bytes());
        if let Some(will) = self.will {
            will_properties(out);
            put_prefixed(out, will.topic.as_bytes());
            put_prefixed(out, &will.payload);
        }
        if let Some(username) = self.username {
            put_prefixed(out, username.as_bytes());
        }
        if let Some(password) = self.password {
            put_prefixed(out, password);
        }
    }
}
