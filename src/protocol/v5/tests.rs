//! Tests of the MQTT 5 packets: every packet round trips (with and without properties, short
//! forms included), every malformed variant is refused with the error that names its reason code
//! (reason code not allowed, reserved bits, Retain Handling 3, empty topic without alias, ...),
//! and garbage never panics.

use bytes::{Bytes, BytesMut};

use super::*;
use crate::protocol::testutil::frame;
use crate::protocol::{
    decode as decode_v3, Packet as PacketV3, PublishRef, PROTOCOL_MAX_PACKET_SIZE,
};

const MAX: usize = PROTOCOL_MAX_PACKET_SIZE;

pub(super) fn encode_packet(packet: &Packet) -> BytesMut {
    let mut out = BytesMut::new();
    packet.encode(&mut out).expect("encodable");
    out
}

pub(super) fn decode_one(bytes: &[u8]) -> Result<Packet, DecodeError> {
    let mut buf = BytesMut::from(bytes);
    let packet = decode(&mut buf, MAX)?.expect("a whole packet");
    assert!(buf.is_empty(), "{} bytes left over", buf.len());
    Ok(packet)
}

pub(super) fn decode_err(bytes: &[u8]) -> DecodeError {
    match decode(&mut BytesMut::from(bytes), MAX) {
        Err(e) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

/// As `testutil::assert_round_trip`, through the MQTT 5 codec.
pub(super) fn assert_round_trip(packet: &Packet) -> BytesMut {
    let encoded = encode_packet(packet);
    for len in 0..encoded.len() {
        let mut buf = BytesMut::from(&encoded[..len]);
        assert_eq!(decode(&mut buf, MAX), Ok(None), "prefix of {len} bytes");
        assert_eq!(&buf[..], &encoded[..len]);
    }
    assert_eq!(decode_one(&encoded).as_ref(), Ok(packet));
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&encoded);
    buf.extend_from_slice(&encoded);
    assert_eq!(decode(&mut buf, MAX).as_ref(), Ok(&Some(packet.clone())));
    assert_eq!(decode(&mut buf, MAX).as_ref(), Ok(&Some(packet.clone())));
    assert!(buf.is_empty());
    encoded
}

pub(super) fn user(pairs: &[(&str, &str)]) -> Properties {
    Properties {
        user_properties: pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Properties::default()
    }
}

pub(super) fn why(s: &str) -> Properties {
    Properties {
        reason_string: Some(s.into()),
        ..user(&[("k", "v")])
    }
}

fn topic(s: &str) -> TopicName {
    TopicName::new(s).unwrap()
}

fn connect() -> Connect {
    Connect {
        clean_start: true,
        keep_alive: 60,
        properties: Properties::default(),
        client_id: "c5".into(),
        will: None,
        username: None,
        password: None,
    }
}

#[test]
fn connect_round_trips() {
    let full = Connect {
        clean_start: false,
        keep_alive: 0,
        properties: Properties {
            session_expiry_interval: Some(3600),
            receive_maximum: Some(20),
            maximum_packet_size: Some(1 << 20),
            topic_alias_maximum: Some(10),
            request_response_information: Some(true),
            request_problem_information: Some(false),
            authentication_method: Some("SCRAM-SHA-256".into()),
            authentication_data: Some(Bytes::from_static(b"\x00client-first")),
            ..user(&[("a", "1"), ("a", "2")])
        },
        client_id: String::new(),
        will: Some(Will {
            message: Message {
                topic: topic("clients/c5/state"),
                payload: Bytes::from_static(b"gone"),
                qos: QoS::ExactlyOnce,
                retain: true,
                properties: None,
            },
            properties: Properties {
                will_delay_interval: Some(30),
                payload_format_utf8: Some(true),
                message_expiry_interval: Some(600),
                content_type: Some("text/plain".into()),
                response_topic: Some("replies/c5".into()),
                correlation_data: Some(Bytes::from_static(b"\x01\x02")),
                ..user(&[("w", "x")])
            },
        }),
        username: Some("alice".into()),
        password: Some(Bytes::from_static(b"secret")),
    };
    assert_round_trip(&Packet::Connect(Box::new(full.clone())));
    // MQTT 5 allows a password without a user name.
    let pw_only = Connect {
        username: None,
        ..full
    };
    assert_round_trip(&Packet::Connect(Box::new(pw_only.clone())));
    let shown = format!("{pw_only:?}");
    assert!(
        !shown.contains("secret") && shown.contains("<redacted 6 bytes>"),
        "{shown}"
    );
    // The minimal CONNECT, byte for byte.
    let encoded = assert_round_trip(&Packet::Connect(Box::new(connect())));
    assert_eq!(
        &encoded[..],
        &[0x10, 15, 0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 60, 0, 0, 2, b'c', b'5']
    );
}

#[test]
fn connect_levels_are_kept_apart() {
    let v5 = encode_packet(&Packet::Connect(Box::new(connect())));
    // The MQTT 3 decoder refuses a real MQTT 5 CONNECT as before (the broker answers 0x01).
    assert_eq!(
        decode_v3(&mut BytesMut::from(&v5[..]), MAX),
        Err(DecodeError::UnsupportedProtocolLevel(5))
    );
    // And the MQTT 5 decoder refuses an MQTT 3.1.1 one.
    let mut v3 = BytesMut::new();
    PacketV3::Connect(Box::new(crate::protocol::Connect {
        protocol: crate::protocol::ProtocolLevel::V311,
        clean_session: true,
        keep_alive: 1,
        client_id: "c".into(),
        will: None,
        username: None,
        password: None,
    }))
    .encode(&mut v3)
    .unwrap();
    let e = decode_err(&v3);
    assert_eq!(e, DecodeError::UnsupportedProtocolLevel(4));
    assert_eq!(e.reason_code(), ReasonCode::UNSUPPORTED_PROTOCOL_VERSION);
}

#[test]
fn connect_malformed_variants() {
    let good = encode_packet(&Packet::Connect(Box::new(connect())));
    // Property length 0 at offset 12; replace it with a CONNACK-only property.
    let with_props = |props: &[u8]| {
        let mut body = good[2..12].to_vec();
        body.push(props.len() as u8);
        body.extend_from_slice(props);
        body.extend_from_slice(&good[13..]);
        frame(0x10, &body)
    };
    assert_eq!(
        decode_one(&with_props(&[])),
        Ok(Packet::Connect(Box::new(connect())))
    );
    assert_eq!(
        decode_err(&with_props(&[0x24, 1])),
        DecodeError::PropertyNotAllowed {
            id: 0x24,
            packet: "CONNECT"
        }
    );
    assert_eq!(
        decode_err(&with_props(&[0x21, 0, 1, 0x21, 0, 2])),
        DecodeError::DuplicateProperty(0x21)
    );
    // Authentication Data needs an Authentication Method (3.1.2.11.10).
    assert_eq!(
        decode_err(&with_props(&[0x16, 0, 1, b'd'])),
        DecodeError::ProtocolError("Authentication Data without an Authentication Method")
    );
    assert!(decode_one(&with_props(&[0x15, 0, 1, b'm', 0x16, 0, 1, b'd'])).is_ok());
    // Property length past the end of the packet.
    let mut bytes = with_props(&[0x21, 0, 1]);
    bytes[12] = 9;
    assert!(matches!(
        decode_err(&bytes),
        DecodeError::MalformedPacket(_)
    ));
    // Will properties are checked as will properties: Session Expiry belongs to CONNECT.
    let mut body = vec![
        0, 4, b'M', b'Q', b'T', b'T', 5, 0x06, 0, 60, 0, 0, 2, b'c', b'5',
    ];
    body.extend_from_slice(&[5, 0x11, 0, 0, 0, 1, 0, 1, b't', 0, 0]);
    assert_eq!(
        decode_err(&frame(0x10, &body)),
        DecodeError::PropertyNotAllowed {
            id: 0x11,
            packet: "the will properties"
        }
    );
    // Will Delay Interval is fine there.
    body[16] = 0x18;
    assert!(decode_one(&frame(0x10, &body)).is_ok());
    // Reserved connect flag.
    let mut bytes = encode_packet(&Packet::Connect(Box::new(connect())));
    bytes[9] |= 1;
    assert_eq!(
        decode_err(&bytes),
        DecodeError::InvalidConnectFlags("reserved bit 0 is set")
    );
}

#[test]
fn connack_round_trips_and_checks() {
    for code in (0..=255u8).map(ReasonCode) {
        let ack = Packet::ConnAck(ConnAck {
            session_present: false,
            reason: code,
            properties: Properties::default(),
        });
        let bytes = frame(0x20, &[0, code.0, 0]);
        if code.allowed_in(Kind::ConnAck) {
            assert_eq!(&assert_round_trip(&ack)[..], &bytes[..]);
        } else {
            assert_eq!(
                decode_err(&bytes),
                DecodeError::InvalidReasonCode {
                    code: code.0,
                    packet: "CONNACK"
                }
            );
            assert!(ack.encode(&mut BytesMut::new()).is_err());
        }
    }
    assert_round_trip(&Packet::ConnAck(ConnAck {
        session_present: true,
        reason: ReasonCode::SUCCESS,
        properties: Properties {
            assigned_client_identifier: Some("auto-7".into()),
            server_keep_alive: Some(30),
            maximum_qos: Some(QoS::AtLeastOnce),
            retain_available: Some(false),
            wildcard_subscription_available: Some(true),
            subscription_identifier_available: Some(false),
            shared_subscription_available: Some(false),
            topic_alias_maximum: Some(0),
            response_information: Some("resp/".into()),
            server_reference: Some("b:1883".into()),
            ..why("welcome")
        },
    }));
    let e = decode_err(&frame(0x20, &[1, 0x87, 0]));
    assert_eq!(e.reason_code(), ReasonCode::PROTOCOL_ERROR);
    assert!(matches!(
        decode_err(&frame(0x20, &[2, 0, 0])),
        DecodeError::MalformedPacket(_)
    ));
    // The property length is not optional in CONNACK.
    assert!(matches!(
        decode_err(&frame(0x20, &[0, 0])),
        DecodeError::MalformedPacket(_)
    ));
}

#[test]
fn publish_round_trips() {
    for (qos, packet_id) in [
        (QoS::AtMostOnce, None),
        (QoS::AtLeastOnce, Some(1)),
        (QoS::ExactlyOnce, Some(65_535)),
    ] {
        for properties in [
            Properties::default(),
            Properties {
                payload_format_utf8: Some(true),
                message_expiry_interval: Some(10),
                topic_alias: Some(2),
                response_topic: Some("r/1".into()),
                correlation_data: Some(Bytes::from_static(b"id")),
                subscription_identifiers: vec![1, 2_000_000],
                content_type: Some("json".into()),
                ..user(&[("z", ""), ("a", "b")])
            },
        ] {
            let p = Publish {
                dup: packet_id.is_some(),
                qos,
                retain: true,
                topic: Some(topic("a/b")),
                packet_id,
                properties,
                payload: Bytes::from_static(b"hello"),
            };
            assert_round_trip(&Packet::Publish(p));
        }
    }
    let minimal = Publish::new(
        Message {
            topic: topic("t"),
            payload: Bytes::from_static(b"x"),
            qos: QoS::AtMostOnce,
            retain: false,
            properties: None,
        },
        None,
        false,
    );
    let encoded = assert_round_trip(&Packet::Publish(minimal));
    assert_eq!(&encoded[..], &[0x30, 5, 0, 1, b't', 0, b'x']);
}

#[test]
fn publish_topic_alias_and_empty_topic() {
    let aliased = Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: None,
        packet_id: Some(4),
        properties: Properties {
            topic_alias: Some(1),
            ..Properties::default()
        },
        payload: Bytes::new(),
    };
    let encoded = assert_round_trip(&Packet::Publish(aliased.clone()));
    assert_eq!(&encoded[..], &[0x32, 8, 0, 0, 0, 4, 3, 0x23, 0, 1]);
    let e = decode_err(&frame(0x32, &[0, 0, 0, 4, 0]));
    assert_eq!(
        e,
        DecodeError::ProtocolError("empty topic name without a topic alias")
    );
    assert_eq!(e.reason_code(), ReasonCode::PROTOCOL_ERROR);
    let no_alias = Publish {
        properties: Properties::default(),
        ..aliased
    };
    assert!(Packet::Publish(no_alias)
        .encode(&mut BytesMut::new())
        .is_err());
    // The MQTT 3 rules still hold for the topic itself.
    assert_eq!(
        decode_err(&frame(0x30, &[0, 3, b'a', b'/', b'#', 0])),
        DecodeError::InvalidTopicName("contains a wildcard character")
    );
    // A property a PUBLISH may not carry.
    assert_eq!(
        decode_err(&frame(0x30, &[0, 1, b't', 5, 0x11, 0, 0, 0, 1])),
        DecodeError::PropertyNotAllowed {
            id: 0x11,
            packet: "PUBLISH"
        }
    );
}

#[test]
fn publish_decode_is_zero_copy() {
    let p = Publish::new(
        Message {
            topic: topic("a/b"),
            payload: Bytes::from_static(b"payload"),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: None,
        },
        Some(1),
        false,
    );
    let mut buf = encode_packet(&Packet::Publish(p));
    let range = buf.as_ptr() as usize..buf.as_ptr() as usize + buf.len();
    let Ok(Some(Packet::Publish(decoded))) = decode(&mut buf, MAX) else {
        panic!("no PUBLISH")
    };
    assert!(range.contains(&(decoded.payload.as_ptr() as usize)));
    assert!(range.contains(&(decoded.topic.unwrap().as_bytes().as_ptr() as usize)));
}

/// `peek_publish` takes exactly the PUBLISHes `decode` takes, with the same fields.
#[test]
fn peek_publish_takes_exactly_what_decode_takes() {
    let plain = encode_packet(&Packet::Publish(Publish::new(
        Message {
            topic: topic("a/b"),
            payload: Bytes::from_static(b"hello"),
            qos: QoS::AtMostOnce,
            retain: true,
            properties: None,
        },
        None,
        false,
    )));
    let mut frames = vec![
        plain.to_vec(),
        frame(0x32, &[0, 0, 0, 4, 3, 0x23, 0, 1, b'p']),
        frame(0x32, &[0, 0, 0, 4, 0, b'p']),
        frame(0x30, &[0, 1, b't', 2, 0x11, 0]),
        frame(0x30, &[0, 1, b't', 4, 0x1f, 0, 1, b'x']),
        frame(0x30, &[0, 1, b't', 4, 0x26, 0, 1, b'x']),
        frame(0x30, &[0, 1, b't', 7, 0x26, 0, 1, b'k', 0, 1, b'v', b'p']),
        frame(0x40, &[0, 1]),
        // A lone Topic Alias: with the topic, for it, 0 (refused both ways), after another property.
        frame(0x30, &[0, 1, b't', 3, 0x23, 0, 5, b'p']),
        frame(0x30, &[0, 0, 3, 0x23, 0, 2, b'p']),
        frame(0x30, &[0, 1, b't', 3, 0x23, 0, 0, b'p']),
        frame(0x30, &[0, 0, 3, 0x23, 0, 0]),
        frame(0x30, &[0, 0, 5, 0x01, 1, 0x23, 0, 2, b'p']),
        frame(0x30, &[0, 0, 6, 0x23, 0, 2, 0x23, 0, 3]),
    ];
    frames.extend((0..plain.len()).map(|n| plain[..n].to_vec()));
    for bytes in &frames {
        let peeked = peek_publish(bytes, MAX);
        let decoded = decode(&mut BytesMut::from(&bytes[..]), MAX);
        match (peeked, decoded) {
            (Some((p, raw, length)), Ok(Some(Packet::Publish(d)))) => {
                assert_eq!(length, bytes.len());
                assert_eq!((p.dup, p.qos, p.retain), (d.dup, d.qos, d.retain));
                let topic = d.topic.as_ref().map_or(&[][..], TopicName::as_bytes);
                assert_eq!(
                    (p.topic, p.packet_id, p.payload),
                    (topic, d.packet_id, &d.payload[..])
                );
                assert_eq!(
                    properties::decode_body(raw, Kind::Publish).as_ref(),
                    Ok(&d.properties)
                );
            }
            (None, Ok(None) | Err(_) | Ok(Some(Packet::PubAck(_)))) => {}
            (peeked, decoded) => panic!("{bytes:?}: peeked {peeked:?}, decoded {decoded:?}"),
        }
    }
}

#[test]
fn a_lone_topic_alias_is_read_from_the_properties_bytes() {
    assert_eq!(super::lone_topic_alias(&[0x23, 1, 2]), Some(0x0102));
    assert_eq!(super::lone_topic_alias(&[0x23, 0, 0]), Some(0));
    assert_eq!(super::lone_topic_alias(&[]), None);
    assert_eq!(super::lone_topic_alias(&[0x23, 0]), None);
    assert_eq!(super::lone_topic_alias(&[0x23, 0, 1, 0x01, 1]), None);
    assert_eq!(super::lone_topic_alias(&[0x02, 0, 0]), None);
}

#[test]
fn a_hop_writes_what_is_left_of_the_expiry_and_its_subscription_ids() {
    let properties = Properties {
        message_expiry_interval: Some(60),
        content_type: Some("json".into()),
        ..Properties::default()
    };
    let publish = PublishRef {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: b"a/b",
        packet_id: Some(7),
        payload: b"x",
        properties: Some(&properties),
    };
    let hop = Hop {
        subscription_ids: &[3, 200],
        message_expiry_interval: Some(42),
        ..Hop::default()
    };
    let mut out = BytesMut::new();
    encode_publish_ref(&publish, &hop, &mut out).expect("encodes");
    let Ok(Some(Packet::Publish(p))) = decode(&mut out, PROTOCOL_MAX_PACKET_SIZE) else {
        panic!("a PUBLISH");
    };
    assert_eq!(p.properties.message_expiry_interval, Some(42));
    assert_eq!(p.properties.subscription_identifiers, vec![3, 200]);
    assert_eq!(p.properties.content_type.as_deref(), Some("json"));
    // A message without an expiry gets none from the hop.
    let publish = PublishRef {
        properties: None,
        ..publish
    };
    let mut out = BytesMut::new();
    encode_publish_ref(&publish, &hop, &mut out).expect("encodes");
    let Ok(Some(Packet::Publish(p))) = decode(&mut out, PROTOCOL_MAX_PACKET_SIZE) else {
        panic!("a PUBLISH");
    };
    assert_eq!(p.properties.message_expiry_interval, None);
    assert_eq!(p.properties.subscription_identifiers, vec![3, 200]);
}
