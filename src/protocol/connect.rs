//! CONNECT [MQTT-3.1]: protocol name and level, connect flags, keep alive, and the payload
//! (client id, will topic and message, username, password).
//!
//! Judges only the packet itself: client-id rules, authentication and whether MQTT 3.1 is allowed
//! at all are broker policy and must not be decided here.
//!
//! `Debug` of [`Connect`] shows the password's length only: packets are logged at trace level.

use std::fmt;

use bytes::{BufMut, BytesMut};

use super::connect_fields::{
    check_flags, flags_of, read_credentials, read_protocol, read_will, Payload, CLEAN_SESSION, WILL,
};
use super::fixed_header::{self, CONNECT};
use super::strings::{put_prefixed, Reader};
use super::{Connect, DecodeError, EncodeError, ProtocolLevel};

/// Every field but the password, which shows only its length: a `{packet:?}` in a log must not
/// leak a credential.
impl fmt::Debug for Connect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let password = self.password.as_ref().map(|p| Redacted(p.len()));
        f.debug_struct("Connect")
            .field("protocol", &self.protocol)
            .field("clean_session", &self.clean_session)
            .field("keep_alive", &self.keep_alive)
            .field("client_id", &self.client_id)
            .field("will", &self.will)
            .field("username", &self.username)
            .field("password", &password)
            .finish()
    }
}

/// A secret of this many bytes, in `Debug` output.
pub(super) struct Redacted(pub usize);

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<redacted {} bytes>", self.0)
    }
}

pub(super) fn decode(body: &[u8]) -> Result<Connect, DecodeError> {
    let mut r = Reader::new(body);
    let protocol = match read_protocol(&mut r)? {
        // MQTT 5's body is read by `v5::decode` [MQTT-3.1.2-2].
        ProtocolLevel::V5 => return Err(DecodeError::UnsupportedProtocolLevel(5)),
        level => level,
    };
    let flags = r.read_u8()?;
    let will_qos = check_flags(flags, false)?;
    let keep_alive = r.read_u16()?;

    let client_id = r.read_string()?.to_owned();
    let will = if flags & WILL != 0 {
        Some(read_will(&mut r, flags, will_qos)?)
    } else {
        None
    };
    let (username, password) = read_credentials(&mut r, flags)?;
    r.finish()?;

    Ok(Connect {
        protocol,
        clean_session: flags & CLEAN_SESSION != 0,
        keep_alive,
        client_id,
        will,
        username,
        password,
    })
}

pub(super) fn encode(p: &Connect, out: &mut BytesMut) -> Result<(), EncodeError> {
    let (name, level): (&[u8], u8) = match p.protocol {
        ProtocolLevel::V31 => (b"MQIsdp", 3),
        ProtocolLevel::V311 => (b"MQTT", 4),
        // Not a real MQTT 5 CONNECT (no properties); only useful to test rejection.
        ProtocolLevel::V5 => (b"MQTT", 5),
    };
    let flags = flags_of(
        p.clean_session,
        p.will.as_ref(),
        p.username.is_some(),
        p.password.is_some(),
    );
    let payload = Payload {
        client_id: &p.client_id,
        will: p.will.as_ref(),
        username: p.username.as_deref(),
        password: p.password.as_deref(),
    };
    let len = 2 + name.len() + 1 + 1 + 2 + payload.len()?;
    fixed_header::write(out, CONNECT << 4, len)?;
    put_prefixed(out, name);
    out.put_u8(level);
    out.put_u8(flags);
    out.put_u16(p.keep_alive);
    payload.write(out, |_| {});
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{LastWill, Packet, QoS, TopicName};
    use super::*;
    use bytes::Bytes;

    fn connect(protocol: ProtocolLevel) -> Connect {
        Connect {
            protocol,
            clean_session: true,
            keep_alive: 60,
            client_id: "client-1".into(),
            will: None,
            username: None,
            password: None,
        }
    }

    fn will(qos: QoS, retain: bool) -> LastWill {
        LastWill {
            topic: TopicName::new("clients/1/status").unwrap(),
            payload: Bytes::from_static(b"offline"),
            qos,
            retain,
            properties: None,
        }
    }

    /// A CONNECT frame from raw parts; each of `fields` is written length-prefixed.
    #[test]
    fn debug_output_never_shows_the_password() {
        let mut c = connect(ProtocolLevel::V311);
        c.username = Some("alice".into());
        c.password = Some(Bytes::from_static(b"hunter2"));
        let shown = format!("{:?}", Packet::Connect(Box::new(c.clone())));
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            shown.contains("password: Some(<redacted 7 bytes>)"),
            "{shown}"
        );
        assert!(shown.contains("username: Some(\"alice\")"), "{shown}");
        c.password = None;
        assert!(format!("{c:?}").contains("password: None"));
    }

    fn raw(name: &[u8], level: u8, flags: u8, fields: &[&[u8]]) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&(name.len() as u16).to_be_bytes());
        body.extend_from_slice(name);
        body.extend_from_slice(&[level, flags, 0, 60]);
        for f in fields {
            body.extend_from_slice(&(f.len() as u16).to_be_bytes());
            body.extend_from_slice(f);
        }
        frame(0x10, &body)
    }

    fn err(bytes: &[u8]) -> DecodeError {
        decode_err(bytes)
    }

    #[test]
    fn spec_layout_v311() {
        let encoded = assert_round_trip(&Packet::Connect(Box::new(connect(ProtocolLevel::V311))));
        assert_eq!(&encoded[..], &raw(b"MQTT", 4, 0x02, &[b"client-1"])[..]);
    }

    #[test]
    fn spec_layout_v31() {
        let encoded = assert_round_trip(&Packet::Connect(Box::new(connect(ProtocolLevel::V31))));
        assert_eq!(&encoded[..], &raw(b"MQIsdp", 3, 0x02, &[b"client-1"])[..]);
    }

    #[test]
    fn round_trips_all_variants() {
        for protocol in [ProtocolLevel::V31, ProtocolLevel::V311] {
            for clean_session in [false, true] {
                for will in [
                    None,
                    Some(will(QoS::AtMostOnce, false)),
                    Some(will(QoS::AtLeastOnce, true)),
                    Some(will(QoS::ExactlyOnce, false)),
                    Some(LastWill {
                        payload: Bytes::new(),
                        ..will(QoS::ExactlyOnce, true)
                    }),
                ] {
                    for (username, password) in [
                        (None, None),
                        (Some("user"), None),
                        (Some(""), Some(&b""[..])),
                        (Some("üser"), Some(&b"\x00\xffbinary"[..])),
                    ] {
                        for keep_alive in [0, 65_535] {
                            let p = Connect {
                                protocol,
                                clean_session,
                                keep_alive,
                                client_id: String::new(),
                                will: will.clone(),
                                username: username.map(str::to_owned),
                                password: password.map(Bytes::copy_from_slice),
                            };
                            assert_round_trip(&Packet::Connect(Box::new(p)));
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn flags_layout() {
        let p = Connect {
            will: Some(will(QoS::ExactlyOnce, true)),
            username: Some("u".into()),
            password: Some(Bytes::from_static(b"p")),
            clean_session: false,
            ..connect(ProtocolLevel::V311)
        };
        let encoded = assert_round_trip(&Packet::Connect(Box::new(p)));
        // fixed header (2) + "MQTT" (6) + level
        assert_eq!(encoded[9], 0b1111_0100);
    }

    #[test]
    fn mqtt5_is_unsupported() {
        let encoded = encode_packet(&Packet::Connect(Box::new(connect(ProtocolLevel::V5))));
        assert_eq!(&encoded[..], &raw(b"MQTT", 5, 0x02, &[b"client-1"])[..]);
        assert_eq!(err(&encoded), DecodeError::UnsupportedProtocolLevel(5));
        // A real MQTT 5 CONNECT (properties after keep alive) is rejected before its body is
        // parsed.
        let mut body = raw(b"MQTT", 5, 0x02, &[]);
        body.extend_from_slice(&[0x05, 0x11, 0, 0, 0, 10, 0, 0]);
        body[1] = (body.len() - 2) as u8;
        assert_eq!(err(&body), DecodeError::UnsupportedProtocolLevel(5));
    }

    #[test]
    fn protocol_name_and_level() {
        assert_eq!(
            err(&raw(b"MQTT", 3, 0x02, &[b"c"])),
            DecodeError::UnsupportedProtocolLevel(3)
        );
        assert_eq!(
            err(&raw(b"MQTT", 6, 0x02, &[b"c"])),
            DecodeError::UnsupportedProtocolLevel(6)
        );
        assert_eq!(
            err(&raw(b"MQTT", 0, 0x02, &[b"c"])),
            DecodeError::UnsupportedProtocolLevel(0)
        );
        assert_eq!(
            err(&raw(b"MQIsdp", 4, 0x02, &[b"c"])),
            DecodeError::UnsupportedProtocolLevel(4)
        );
        assert_eq!(
            err(&raw(b"MQIsdp", 5, 0x02, &[b"c"])),
            DecodeError::UnsupportedProtocolLevel(5)
        );
        assert_eq!(
            err(&raw(b"MQTX", 4, 0x02, &[b"c"])),
            DecodeError::InvalidProtocolName("MQTX".into())
        );
        assert_eq!(
            err(&raw(b"mqtt", 4, 0x02, &[b"c"])),
            DecodeError::InvalidProtocolName("mqtt".into())
        );
        assert_eq!(
            err(&raw(b"", 4, 0x02, &[b"c"])),
            DecodeError::InvalidProtocolName(String::new())
        );
        assert_eq!(
            err(&raw(b"\xffQTT", 4, 0x02, &[b"c"])),
            DecodeError::InvalidProtocolName("\u{fffd}QTT".into())
        );
    }

    #[test]
    fn reserved_flag_bit() {
        assert_eq!(
            err(&raw(b"MQTT", 4, 0x03, &[b"c"])),
            DecodeError::InvalidConnectFlags("reserved bit 0 is set")
        );
    }

    #[test]
    fn will_flags_without_will() {
        for qos_bits in [0x08, 0x10, 0x18] {
            assert_eq!(
                err(&raw(b"MQTT", 4, 0x02 | qos_bits, &[b"c"])),
                DecodeError::InvalidConnectFlags("will QoS set without will flag")
            );
        }
        assert_eq!(
            err(&raw(b"MQTT", 4, 0x22, &[b"c"])),
            DecodeError::InvalidConnectFlags("will retain set without will flag")
        );
    }

    #[test]
    fn will_qos_3() {
        assert_eq!(
            err(&raw(b"MQTT", 4, 0x1e, &[b"c", b"t", b"m"])),
            DecodeError::InvalidConnectFlags("will QoS 3")
        );
    }

    #[test]
    fn password_without_username() {
        assert_eq!(
            err(&raw(b"MQTT", 4, 0x42, &[b"c", b"pw"])),
            DecodeError::InvalidConnectFlags("password flag set without username flag")
        );
        assert_eq!(
            err(&raw(b"MQIsdp", 3, 0x42, &[b"c", b"pw"])),
            DecodeError::InvalidConnectFlags("password flag set without username flag")
        );
    }

    #[test]
    fn invalid_will_topic() {
        assert_eq!(
            err(&raw(b"MQTT", 4, 0x06, &[b"c", b"a/+", b"m"])),
            DecodeError::InvalidTopicName("contains a wildcard character")
        );
        assert_eq!(
            err(&raw(b"MQTT", 4, 0x06, &[b"c", b"a/#", b"m"])),
            DecodeError::InvalidTopicName("contains a wildcard character")
        );
        assert_eq!(
            err(&raw(b"MQTT", 4, 0x06, &[b"c", b"", b"m"])),
            DecodeError::InvalidTopicName("empty")
        );
        assert_eq!(
            err(&raw(b"MQTT", 4, 0x06, &[b"c", b"a\0", b"m"])),
            DecodeError::NullCharacter
        );
        assert_eq!(
            err(&raw(b"MQTT", 4, 0x06, &[b"c", b"a\xff", b"m"])),
            DecodeError::InvalidUtf8
        );
    }

    #[test]
    fn invalid_strings() {
        assert_eq!(
            err(&raw(b"MQTT", 4, 0x02, &[b"c\xc3"])),
            DecodeError::InvalidUtf8
        );
        assert_eq!(
            err(&raw(b"MQTT", 4, 0x02, &[b"c\0"])),
            DecodeError::NullCharacter
        );
        assert_eq!(
            err(&raw(b"MQTT", 4, 0x82, &[b"c", b"\xff"])),
            DecodeError::InvalidUtf8
        );
        assert_eq!(
            err(&raw(b"MQTT", 4, 0x82, &[b"c", b"u\0"])),
            DecodeError::NullCharacter
        );
        // Password is binary: anything goes.
        let p = decode_one(&raw(b"MQTT", 4, 0xc2, &[b"c", b"u", b"\0\xff"])).unwrap();
        let Packet::Connect(p) = p else {
            panic!("not a CONNECT")
        };
        assert_eq!(p.password, Some(Bytes::from_static(b"\0\xff")));
    }

    #[test]
    fn trailing_bytes() {
        assert!(matches!(
            err(&raw(b"MQTT", 4, 0x02, &[b"c", b"extra"])),
            DecodeError::MalformedPacket(_)
        ));
        let mut bytes = raw(b"MQTT", 4, 0x02, &[b"c"]);
        bytes.push(0);
        bytes[1] += 1;
        assert!(matches!(err(&bytes), DecodeError::MalformedPacket(_)));
    }

    #[test]
    fn missing_fields() {
        // Flags announce a will / username / password that is not there.
        for (flags, fields) in [
            (0x06, &[&b"c"[..]][..]),
            (0x06, &[&b"c"[..], &b"t"[..]][..]),
            (0x82, &[&b"c"[..]][..]),
            (0xc2, &[&b"c"[..], &b"u"[..]][..]),
            (0x02, &[][..]),
        ] {
            assert!(
                matches!(
                    err(&raw(b"MQTT", 4, flags, fields)),
                    DecodeError::MalformedPacket(_)
                ),
                "{flags:#x}"
            );
        }
    }

    #[test]
    fn every_short_body_is_malformed() {
        let full = encode_packet(&Packet::Connect(Box::new(Connect {
            will: Some(will(QoS::AtLeastOnce, false)),
            username: Some("u".into()),
            password: Some(Bytes::from_static(b"p")),
            ..connect(ProtocolLevel::V311)
        })));
        for len in 0..full.len() - 2 {
            let bytes = frame(0x10, &full[2..2 + len]);
            let e = err(&bytes);
            assert!(
                matches!(e, DecodeError::MalformedPacket(_)),
                "body of {len} bytes: {e:?}"
            );
        }
    }

    #[test]
    fn fixed_header_flags_must_be_zero() {
        let mut bytes = raw(b"MQTT", 4, 0x02, &[b"c"]);
        bytes[0] = 0x12;
        assert_eq!(
            err(&bytes),
            DecodeError::InvalidFlags {
                packet_type: 1,
                flags: 2
            }
        );
    }

    #[test]
    fn encode_errors_leave_output_untouched() {
        let long = "x".repeat(65_536);
        let cases = [
            Connect {
                client_id: long.clone(),
                ..connect(ProtocolLevel::V311)
            },
            Connect {
                username: Some(long.clone()),
                ..connect(ProtocolLevel::V311)
            },
            Connect {
                password: Some(Bytes::from(long.clone().into_bytes())),
                ..connect(ProtocolLevel::V311)
            },
            Connect {
                will: Some(LastWill {
                    payload: Bytes::from(long.into_bytes()),
                    ..will(QoS::AtMostOnce, false)
                }),
                ..connect(ProtocolLevel::V31)
            },
        ];
        for p in cases {
            let mut out = BytesMut::from(&b"keep"[..]);
            assert_eq!(
                Packet::Connect(Box::new(p)).encode(&mut out),
                Err(EncodeError::StringTooLong)
            );
            assert_eq!(&out[..], b"keep");
        }
        // 65,535 bytes is fine.
        let p = Packet::Connect(Box::new(Connect {
            client_id: "x".repeat(65_535),
            ..connect(ProtocolLevel::V311)
        }));
        assert_eq!(decode_one(&encode_packet(&p)), Ok(p));
    }
}
