//! Tests of MQTT 5 properties alone: every identifier in every packet (allowed: round trip;
//! not allowed: Malformed Packet), duplicates, forbidden values, unknown identifiers, bad
//! variable byte integers, truncation, and the encoding order.

use bytes::{Bytes, BytesMut};

use super::properties::{decode_body, id};
use super::{Kind, Properties, ReasonCode};
use crate::protocol::{DecodeError, EncodeError, QoS};

const KINDS: [Kind; 14] = [
    Kind::Connect,
    Kind::ConnAck,
    Kind::Publish,
    Kind::Will,
    Kind::PubAck,
    Kind::PubRec,
    Kind::PubRel,
    Kind::PubComp,
    Kind::Subscribe,
    Kind::SubAck,
    Kind::Unsubscribe,
    Kind::UnsubAck,
    Kind::Disconnect,
    Kind::Auth,
];

fn string(s: &str) -> Vec<u8> {
    let mut v = (s.len() as u16).to_be_bytes().to_vec();
    v.extend_from_slice(s.as_bytes());
    v
}

/// Each identifier with a valid value's bytes.
fn samples() -> Vec<(u8, Vec<u8>)> {
    vec![
        (id::PAYLOAD_FORMAT_INDICATOR, vec![1]),
        (id::MESSAGE_EXPIRY_INTERVAL, vec![0, 0, 0, 60]),
        (id::CONTENT_TYPE, string("text/plain")),
        (id::RESPONSE_TOPIC, string("reply/to")),
        (id::CORRELATION_DATA, vec![0, 3, 0, 0xff, 7]),
        (id::SUBSCRIPTION_IDENTIFIER, vec![0x81, 0x01]),
        (id::SESSION_EXPIRY_INTERVAL, vec![0xff, 0xff, 0xff, 0xff]),
        (id::ASSIGNED_CLIENT_IDENTIFIER, string("auto-1")),
        (id::SERVER_KEEP_ALIVE, vec![0, 30]),
        (id::AUTHENTICATION_METHOD, string("SCRAM-SHA-1")),
        (id::AUTHENTICATION_DATA, vec![0, 2, 1, 2]),
        (id::REQUEST_PROBLEM_INFORMATION, vec![0]),
        (id::WILL_DELAY_INTERVAL, vec![0, 0, 1, 0]),
        (id::REQUEST_RESPONSE_INFORMATION, vec![1]),
        (id::RESPONSE_INFORMATION, string("info")),
        (id::SERVER_REFERENCE, string("other:1883")),
        (id::REASON_STRING, string("why")),
        (id::RECEIVE_MAXIMUM, vec![0, 10]),
        (id::TOPIC_ALIAS_MAXIMUM, vec![0, 0]),
        (id::TOPIC_ALIAS, vec![0, 3]),
        (id::MAXIMUM_QOS, vec![1]),
        (id::RETAIN_AVAILABLE, vec![0]),
        (id::USER_PROPERTY, [string("k"), string("v")].concat()),
        (id::MAXIMUM_PACKET_SIZE, vec![0, 1, 0, 0]),
        (id::WILDCARD_SUBSCRIPTION_AVAILABLE, vec![1]),
        (id::SUBSCRIPTION_IDENTIFIER_AVAILABLE, vec![0]),
        (id::SHARED_SUBSCRIPTION_AVAILABLE, vec![1]),
    ]
}

/// The table of [MQTT-2.2.2.2] by packet, transcribed a second time (the code has it by
/// identifier), so that a slip in one shows against the other.
fn expected(kind: Kind) -> &'static [u8] {
    match kind {
        Kind::Connect => &[0x11, 0x15, 0x16, 0x17, 0x19, 0x21, 0x22, 0x26, 0x27],
        Kind::ConnAck => &[
            0x11, 0x12, 0x13, 0x15, 0x16, 0x1a, 0x1c, 0x1f, 0x21, 0x22, 0x24, 0x25, 0x26, 0x27,
            0x28, 0x29, 0x2a,
        ],
        Kind::Publish => &[0x01, 0x02, 0x03, 0x08, 0x09, 0x0b, 0x23, 0x26],
        Kind::Will => &[0x01, 0x02, 0x03, 0x08, 0x09, 0x18, 0x26],
        Kind::PubAck
        | Kind::PubRec
        | Kind::PubRel
        | Kind::PubComp
        | Kind::SubAck
        | Kind::UnsubAck => &[0x1f, 0x26],
        Kind::Subscribe => &[0x0b, 0x26],
        Kind::Unsubscribe => &[0x26],
        Kind::Disconnect => &[0x11, 0x1c, 0x1f, 0x26],
        Kind::Auth => &[0x15, 0x16, 0x1f, 0x26],
    }
}

fn encode(p: &Properties, kind: Kind) -> Result<Vec<u8>, EncodeError> {
    let len = p.body_len(kind)?;
    let mut out = BytesMut::new();
    p.encode(len, &mut out);
    Ok(out.to_vec())
}

#[test]
fn there_are_27_properties() {
    assert_eq!(samples().len(), 27);
    for n in 0..=255u32 {
        let known = samples().iter().any(|(id, _)| u32::from(*id) == n);
        assert_eq!(super::properties::allowed_in(n).is_some(), known, "{n:#x}");
    }
}

#[test]
fn every_property_in_every_packet() {
    for (id, value) in samples() {
        let mut bytes = vec![id];
        bytes.extend_from_slice(&value);
        for kind in KINDS {
            let result = decode_body(&bytes, kind);
            if expected(kind).contains(&id) {
                let p = result.unwrap_or_else(|e| panic!("{id:#x} in {kind:?}: {e}"));
                assert!(!p.is_empty());
                // Round trip: length prefix, then exactly the bytes read.
                let encoded = encode(&p, kind).expect("encodes");
                let mut with_len = vec![bytes.len() as u8];
                with_len.extend_from_slice(&bytes);
                assert_eq!(encoded, with_len, "{id:#x} in {kind:?}");
            } else {
                assert_eq!(
                    result,
                    Err(DecodeError::PropertyNotAllowed {
                        id,
                        packet: kind.name()
                    }),
                    "{id:#x} in {kind:?}"
                );
                assert_eq!(
                    result.unwrap_err().reason_code(),
                    ReasonCode::MALFORMED_PACKET
                );
                // And the encoder refuses to write it there.
                let allowed_kind = KINDS.into_iter().find(|k| expected(*k).contains(&id));
                let p = decode_body(&bytes, allowed_kind.expect("allowed somewhere")).unwrap();
                assert!(matches!(
                    encode(&p, kind),
                    Err(EncodeError::InvalidValue(_))
                ));
            }
        }
    }
}

#[test]
fn single_valued_properties_may_not_repeat() {
    for (id, value) in samples() {
        let mut bytes = vec![id];
        bytes.extend_from_slice(&value);
        bytes.push(id);
        bytes.extend_from_slice(&value);
        for kind in KINDS.into_iter().filter(|k| expected(*k).contains(&id)) {
            let result = decode_body(&bytes, kind);
            let repeats = id == id::USER_PROPERTY
                || (id == id::SUBSCRIPTION_IDENTIFIER && kind == Kind::Publish);
            if repeats {
                let p = result.expect("may repeat");
                assert_eq!(encode(&p, kind).unwrap()[1..], bytes[..], "{id:#x}");
            } else {
                assert_eq!(result, Err(DecodeError::DuplicateProperty(id)), "{kind:?}");
                assert_eq!(
                    result.unwrap_err().reason_code(),
                    ReasonCode::PROTOCOL_ERROR
                );
            }
        }
    }
}

#[test]
fn forbidden_values_are_protocol_errors() {
    let cases: Vec<(u8, Vec<u8>, Kind)> = vec![
        (id::PAYLOAD_FORMAT_INDICATOR, vec![2], Kind::Publish),
        (id::SUBSCRIPTION_IDENTIFIER, vec![0], Kind::Publish),
        (
            id::SUBSCRIPTION_IDENTIFIER,
            vec![0x80, 0x00],
            Kind::Subscribe,
        ),
        (id::REQUEST_PROBLEM_INFORMATION, vec![2], Kind::Connect),
        (id::REQUEST_RESPONSE_INFORMATION, vec![0xff], Kind::Connect),
        (id::RECEIVE_MAXIMUM, vec![0, 0], Kind::ConnAck),
        (id::TOPIC_ALIAS, vec![0, 0], Kind::Publish),
        (id::MAXIMUM_QOS, vec![2], Kind::ConnAck),
        (id::RETAIN_AVAILABLE, vec![2], Kind::ConnAck),
        (id::MAXIMUM_PACKET_SIZE, vec![0, 0, 0, 0], Kind::Connect),
        (id::WILDCARD_SUBSCRIPTION_AVAILABLE, vec![3], Kind::ConnAck),
        (
            id::SUBSCRIPTION_IDENTIFIER_AVAILABLE,
            vec![2],
            Kind::ConnAck,
        ),
        (id::SHARED_SUBSCRIPTION_AVAILABLE, vec![2], Kind::ConnAck),
        (id::RESPONSE_TOPIC, string("a/+"), Kind::Will),
        (id::RESPONSE_TOPIC, string(""), Kind::Publish),
    ];
    for (id, value, kind) in cases {
        let mut bytes = vec![id];
        bytes.extend_from_slice(&value);
        let e = decode_body(&bytes, kind).expect_err("forbidden value");
        assert!(
            matches!(e, DecodeError::InvalidPropertyValue { id: i, .. } if i == id),
            "{id:#x}: {e:?}"
        );
        assert_eq!(e.reason_code(), ReasonCode::PROTOCOL_ERROR);
    }
}

#[test]
fn malformed_properties() {
    let cases: Vec<(Vec<u8>, DecodeError)> = vec![
        (vec![0x00, 1], DecodeError::UnknownProperty(0)),
        (vec![0x04, 1], DecodeError::UnknownProperty(4)),
        (vec![0x2b, 1], DecodeError::UnknownProperty(0x2b)),
        (vec![0x7f, 1], DecodeError::UnknownProperty(0x7f)),
        // A two-byte identifier: well formed, but no property has it.
        (vec![0x81, 0x01, 1], DecodeError::UnknownProperty(129)),
        (
            vec![0x0b, 0x80, 0x80, 0x80, 0x80, 0x01],
            DecodeError::MalformedVariableByteInteger,
        ),
        (
            vec![0x80, 0x80, 0x80, 0x80, 0x01],
            DecodeError::MalformedVariableByteInteger,
        ),
        (vec![0x1f, 0, 2, b'a', 0xff], DecodeError::InvalidUtf8),
        (vec![0x1f, 0, 1, 0], DecodeError::NullCharacter),
        (vec![0x26, 0, 1, b'k', 0, 1, 0xc3], DecodeError::InvalidUtf8),
        (vec![0x08, 0, 1, 0xff], DecodeError::InvalidUtf8),
    ];
    for (bytes, expected) in cases {
        let kind = if bytes[0] == id::REASON_STRING {
            Kind::PubAck
        } else {
            Kind::Publish
        };
        assert_eq!(
            decode_body(&bytes, kind),
            Err(expected.clone()),
            "{bytes:?}"
        );
        assert_eq!(expected.reason_code(), ReasonCode::MALFORMED_PACKET);
    }
    // Every truncation of every sample ends inside a field.
    for (id, value) in samples() {
        let mut bytes = vec![id];
        bytes.extend_from_slice(&value);
        let kind = KINDS
            .into_iter()
            .find(|k| expected(*k).contains(&id))
            .unwrap();
        for n in 1..bytes.len() {
            let e = decode_body(&bytes[..n], kind).expect_err("truncated");
            assert!(
                matches!(e, DecodeError::MalformedPacket(_)),
                "{id:#x} cut at {n}: {e:?}"
            );
        }
    }
}

#[test]
fn encoding_order_is_by_identifier_and_user_properties_keep_theirs() {
    let p = Properties {
        shared_subscription_available: Some(true),
        user_properties: vec![("b".into(), "1".into()), ("a".into(), "2".into())],
        reason_string: Some("r".into()),
        session_expiry_interval: Some(5),
        maximum_qos: Some(QoS::AtMostOnce),
        authentication_data: Some(Bytes::from_static(b"\x00")),
        ..Properties::default()
    };
    let bytes = encode(&p, Kind::ConnAck).unwrap();
    let body: &[u8] = &[
        0x11, 0, 0, 0, 5, // session expiry
        0x16, 0, 1, 0, // authentication data
        0x1f, 0, 1, b'r', // reason string
        0x24, 0, // maximum QoS
        0x26, 0, 1, b'b', 0, 1, b'1', // user properties, in their order
        0x26, 0, 1, b'a', 0, 1, b'2', //
        0x2a, 1, // shared subscription available
    ];
    assert_eq!(bytes[0] as usize, body.len());
    assert_eq!(&bytes[1..], body);
    assert_eq!(decode_body(&bytes[1..], Kind::ConnAck), Ok(p));
}

#[test]
fn encoder_refuses_what_decoder_would() {
    for sids in [vec![0], vec![268_435_456]] {
        let p = Properties {
            subscription_identifiers: sids,
            ..Properties::default()
        };
        assert!(matches!(
            encode(&p, Kind::Publish),
            Err(EncodeError::InvalidValue(_))
        ));
    }
    let p = Properties {
        reason_string: Some("x".repeat(65_536)),
        ..Properties::default()
    };
    assert_eq!(encode(&p, Kind::PubAck), Err(EncodeError::StringTooLong));
    let p = Properties {
        subscription_identifiers: vec![1, 268_435_455],
        ..Properties::default()
    };
    let bytes = encode(&p, Kind::Publish).unwrap();
    assert_eq!(bytes, [7, 0x0b, 1, 0x0b, 0xff, 0xff, 0xff, 0x7f]);
    assert!(Properties::default().is_empty());
    assert_eq!(encode(&Properties::default(), Kind::Auth).unwrap(), [0]);
}
