//! Tests of the MQTT 5 packets made of reason codes: PUBACK, PUBREC, PUBREL, PUBCOMP (short
//! forms), SUBACK, UNSUBACK, DISCONNECT, AUTH; SUBSCRIBE's options and UNSUBSCRIBE; and garbage
//! or mutated MQTT 5 packets, which must never panic.

use bytes::BytesMut;

use super::tests::{assert_round_trip, decode_err, decode_one, encode_packet, user, why};
use super::*;
use crate::protocol::testutil::frame;
use crate::protocol::PROTOCOL_MAX_PACKET_SIZE as MAX;

/// The four publish acknowledgements: name, first byte, kind, constructor.
type MakeAck = fn(Ack) -> Packet;
const ACKS: [(u8, Kind, MakeAck); 4] = [
    (0x40, Kind::PubAck, Packet::PubAck),
    (0x50, Kind::PubRec, Packet::PubRec),
    (0x62, Kind::PubRel, Packet::PubRel),
    (0x70, Kind::PubComp, Packet::PubComp),
];

#[test]
fn publish_acks_short_and_long_forms() {
    for (first, kind, make) in ACKS {
        let ack = |reason, properties| {
            make(Ack {
                packet_id: 0x0102,
                reason,
                properties,
            })
        };
        // 0x00 without properties: the MQTT 3 form, remaining length 2.
        let short = assert_round_trip(&ack(ReasonCode::SUCCESS, Properties::default()));
        assert_eq!(&short[..], &[first, 2, 1, 2]);
        // Remaining length 3 and 4 forms of 0x00 decode too.
        let plain = ack(ReasonCode::SUCCESS, Properties::default());
        assert_eq!(decode_one(&frame(first, &[1, 2, 0])), Ok(plain.clone()));
        assert_eq!(decode_one(&frame(first, &[1, 2, 0, 0])), Ok(plain));
        // Every reason code: allowed ones round trip in the 3-byte form, others are refused.
        for code in (1..=255u8).map(ReasonCode) {
            let bytes = frame(first, &[1, 2, code.0]);
            if code.allowed_in(kind) {
                let packet = ack(code, Properties::default());
                assert_eq!(&assert_round_trip(&packet)[..], &bytes[..]);
            } else {
                let e = decode_err(&bytes);
                assert_eq!(
                    e,
                    DecodeError::InvalidReasonCode {
                        code: code.0,
                        packet: kind.name()
                    }
                );
                assert_eq!(e.reason_code(), ReasonCode::MALFORMED_PACKET);
                let packet = ack(code, Properties::default());
                assert!(packet.encode(&mut BytesMut::new()).is_err());
            }
        }
        // With properties.
        assert_round_trip(&ack(ReasonCode::SUCCESS, why("fine")));
        // Not allowed here, truncated, trailing byte, packet id 0.
        assert!(matches!(
            decode_err(&frame(first, &[1, 2, 0, 2, 0x23, 0])),
            DecodeError::PropertyNotAllowed { id: 0x23, .. }
        ));
        assert!(matches!(
            decode_err(&frame(first, &[1, 2, 0, 3, 0x1f, 0])),
            DecodeError::MalformedPacket(_)
        ));
        assert!(matches!(
            decode_err(&frame(first, &[1, 2, 0, 0, 9])),
            DecodeError::MalformedPacket(_)
        ));
        assert_eq!(
            decode_err(&frame(first, &[0, 0])),
            DecodeError::ZeroPacketId
        );
    }
}

#[test]
fn subscribe_options() {
    let filter = |f: &str, qos, no_local, retain_as_published, retain_handling| Subscription {
        filter: TopicFilter::new(f).unwrap(),
        qos,
        no_local,
        retain_as_published,
        retain_handling,
    };
    let mut filters = Vec::new();
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
        for rh in [
            RetainHandling::SendAtSubscribe,
            RetainHandling::SendIfNew,
            RetainHandling::DoNotSend,
        ] {
            for (nl, rap) in [(false, false), (true, false), (false, true), (true, true)] {
                filters.push(filter("a/+/#", qos, nl, rap, rh));
            }
        }
    }
    assert_round_trip(&Packet::Subscribe(Subscribe {
        packet_id: 7,
        properties: Properties {
            subscription_identifiers: vec![268_435_455],
            ..user(&[("k", "v")])
        },
        filters,
    }));
    let one = Packet::Subscribe(Subscribe {
        packet_id: 1,
        properties: Properties::default(),
        filters: vec![filter(
            "t",
            QoS::AtLeastOnce,
            true,
            true,
            RetainHandling::DoNotSend,
        )],
    });
    let encoded = assert_round_trip(&one);
    assert_eq!(&encoded[..], &[0x82, 7, 0, 1, 0, 0, 1, b't', 0b0010_1101]);
    let with_options = |options: u8| frame(0x82, &[0, 1, 0, 0, 1, b't', options]);
    for reserved in [0x40, 0x80, 0xc0] {
        let e = decode_err(&with_options(reserved));
        assert_eq!(
            e,
            DecodeError::MalformedPacket("reserved bits set in subscription options")
        );
        assert_eq!(e.reason_code(), ReasonCode::MALFORMED_PACKET);
    }
    let e = decode_err(&with_options(0b0011_0000));
    assert_eq!(e, DecodeError::ProtocolError("Retain Handling 3"));
    assert_eq!(e.reason_code(), ReasonCode::PROTOCOL_ERROR);
    assert_eq!(decode_err(&with_options(3)), DecodeError::InvalidQoS);
    // No Local on a shared subscription [MQTT-3.8.3-4].
    let mut body = vec![0, 1, 0, 0, 11];
    body.extend_from_slice(b"$share/g/t");
    body.push(NO_LOCAL_BIT);
    body[4] = 10;
    assert_eq!(
        decode_err(&frame(0x82, &body)),
        DecodeError::ProtocolError("No Local on a shared subscription")
    );
    // No filter; two subscription identifiers.
    assert_eq!(
        decode_err(&frame(0x82, &[0, 1, 0])),
        DecodeError::EmptySubscription
    );
    assert_eq!(
        decode_err(&frame(0x82, &[0, 1, 4, 0x0b, 1, 0x0b, 2, 0, 1, b't', 0])),
        DecodeError::DuplicateProperty(0x0b)
    );
}

const NO_LOCAL_BIT: u8 = 0b100;

#[test]
fn unsubscribe_round_trips() {
    let p = Packet::Unsubscribe(Unsubscribe {
        packet_id: 9,
        properties: user(&[("a", "b")]),
        filters: vec![
            TopicFilter::new("a/#").unwrap(),
            TopicFilter::new("+").unwrap(),
        ],
    });
    assert_round_trip(&p);
    assert_eq!(
        decode_err(&frame(0xa2, &[0, 1, 0])),
        DecodeError::EmptySubscription
    );
    assert!(matches!(
        decode_err(&frame(0xa2, &[0, 1, 2, 0x0b, 1, 0, 1, b't'])),
        DecodeError::PropertyNotAllowed { id: 0x0b, .. }
    ));
}

#[test]
fn suback_and_unsuback_reason_codes() {
    type Make = fn(SubscriptionAck) -> Packet;
    let cases: [(u8, Kind, Make); 2] = [
        (0x90, Kind::SubAck, Packet::SubAck),
        (0xb0, Kind::UnsubAck, Packet::UnsubAck),
    ];
    for (first, kind, make) in cases {
        let allowed: Vec<ReasonCode> = (0..=255u8)
            .map(ReasonCode)
            .filter(|c| c.allowed_in(kind))
            .collect();
        assert_round_trip(&make(SubscriptionAck {
            packet_id: 3,
            properties: why("partly"),
            reason_codes: allowed.clone(),
        }));
        let encoded = assert_round_trip(&make(SubscriptionAck {
            packet_id: 3,
            properties: Properties::default(),
            reason_codes: vec![ReasonCode::SUCCESS],
        }));
        assert_eq!(&encoded[..], &[first, 4, 0, 3, 0, 0]);
        for code in (0..=255u8).filter(|&c| !ReasonCode(c).allowed_in(kind)) {
            assert_eq!(
                decode_err(&frame(first, &[0, 3, 0, 0, code])),
                DecodeError::InvalidReasonCode {
                    code,
                    packet: kind.name()
                }
            );
        }
        assert!(matches!(
            decode_err(&frame(first, &[0, 3, 0])),
            DecodeError::MalformedPacket(_)
        ));
    }
}

#[test]
fn disconnect_forms() {
    let disconnect = |reason, properties| Packet::Disconnect(Disconnect { reason, properties });
    let normal = assert_round_trip(&disconnect(ReasonCode::SUCCESS, Properties::default()));
    assert_eq!(&normal[..], &[0xe0, 0]);
    let taken = assert_round_trip(&disconnect(
        ReasonCode::SESSION_TAKEN_OVER,
        Properties::default(),
    ));
    // A reason code is followed by a property length (rumqttc 0.24 needs it), and the short
    // form is still read.
    assert_eq!(&taken[..], &[0xe0, 2, 0x8e, 0]);
    assert_eq!(
        decode_one(&[0xe0, 1, 0x8e]),
        Ok(disconnect(
            ReasonCode::SESSION_TAKEN_OVER,
            Properties::default()
        ))
    );
    assert_eq!(
        decode_one(&[0xe0, 2, 0, 0]),
        Ok(disconnect(ReasonCode::SUCCESS, Properties::default()))
    );
    assert_round_trip(&disconnect(
        ReasonCode::USE_ANOTHER_SERVER,
        Properties {
            server_reference: Some("other".into()),
            session_expiry_interval: Some(0),
            ..why("moved")
        },
    ));
    assert_eq!(
        decode_err(&[0xe0, 1, 0x18]),
        DecodeError::InvalidReasonCode {
            code: 0x18,
            packet: "DISCONNECT"
        }
    );
    assert!(matches!(
        decode_err(&[0xe0, 3, 0, 1, 0x1f]),
        DecodeError::MalformedPacket(_)
    ));
    assert!(matches!(
        decode_err(&[0xe0, 4, 0, 2, 0x15, 0]),
        DecodeError::PropertyNotAllowed {
            id: 0x15,
            packet: "DISCONNECT"
        }
    ));
}

#[test]
fn auth_forms() {
    let auth = |reason, properties| Packet::Auth(Auth { reason, properties });
    assert_eq!(
        &assert_round_trip(&auth(ReasonCode::SUCCESS, Properties::default()))[..],
        &[0xf0, 0]
    );
    // A reason code other than 0x00 always comes with a property length.
    let cont = assert_round_trip(&auth(
        ReasonCode::CONTINUE_AUTHENTICATION,
        Properties::default(),
    ));
    assert_eq!(&cont[..], &[0xf0, 2, 0x18, 0]);
    assert!(matches!(
        decode_err(&[0xf0, 1, 0x18]),
        DecodeError::MalformedPacket(_)
    ));
    assert_round_trip(&auth(
        ReasonCode::RE_AUTHENTICATE,
        Properties {
            authentication_method: Some("SCRAM-SHA-1".into()),
            authentication_data: Some(bytes::Bytes::from_static(b"\x01\x02")),
            ..why("again")
        },
    ));
    for code in (0..=255u8).filter(|&c| !ReasonCode(c).allowed_in(Kind::Auth)) {
        assert!(matches!(
            decode_err(&[0xf0, 2, code, 0]),
            DecodeError::InvalidReasonCode { .. }
        ));
    }
    // Fixed-header flags must be 0; MQTT 3 has no AUTH.
    assert_eq!(
        decode_err(&[0xf1, 0]),
        DecodeError::InvalidFlags {
            packet_type: 15,
            flags: 1
        }
    );
    assert_eq!(
        crate::protocol::decode(&mut BytesMut::from(&[0xf0u8, 0][..]), MAX),
        Err(DecodeError::ReservedPacketType(15))
    );
    assert_eq!(decode_err(&[0x00, 0]), DecodeError::ReservedPacketType(0));
}

#[test]
fn pings_are_as_in_mqtt_3() {
    assert_eq!(&assert_round_trip(&Packet::PingReq)[..], &[0xc0, 0]);
    assert_eq!(&assert_round_trip(&Packet::PingResp)[..], &[0xd0, 0]);
    assert!(matches!(
        decode_err(&[0xc0, 1, 0]),
        DecodeError::MalformedPacket(_)
    ));
}

/// Deterministic xorshift64*, so failures reproduce.
fn next(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

#[test]
fn mutated_v5_packets_never_panic_and_what_decodes_round_trips() {
    let seeds: Vec<Vec<u8>> = vec![
        encode_packet(&Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: true,
            topic: Some(TopicName::new("a/b").unwrap()),
            packet_id: Some(5),
            properties: Properties {
                topic_alias: Some(1),
                subscription_identifiers: vec![3],
                ..user(&[("k", "v")])
            },
            payload: bytes::Bytes::from_static(b"p"),
        }))
        .to_vec(),
        encode_packet(&Packet::PubRec(Ack {
            packet_id: 2,
            reason: ReasonCode::QUOTA_EXCEEDED,
            properties: why("full"),
        }))
        .to_vec(),
        encode_packet(&Packet::Disconnect(Disconnect {
            reason: ReasonCode::SERVER_MOVED,
            properties: Properties {
                server_reference: Some("s".into()),
                ..Properties::default()
            },
        }))
        .to_vec(),
        encode_packet(&Packet::Auth(Auth {
            reason: ReasonCode::CONTINUE_AUTHENTICATION,
            properties: Properties {
                authentication_method: Some("m".into()),
                ..Properties::default()
            },
        }))
        .to_vec(),
        encode_packet(&Packet::Connect(Box::new(Connect {
            clean_start: true,
            keep_alive: 5,
            properties: Properties {
                receive_maximum: Some(5),
                ..Properties::default()
            },
            client_id: "c".into(),
            will: None,
            username: Some("u".into()),
            password: None,
        })))
        .to_vec(),
        frame(0x82, &[0, 1, 2, 0x0b, 1, 0, 1, b't', 0x15]),
        frame(0x90, &[0, 1, 0, 0x01, 0x80]),
        frame(0x20, &[0, 0, 4, 0x24, 1, 0x25, 0]),
    ];
    let mut state = 0x5eed_u64;
    let mut decoded = 0;
    for _ in 0..100_000 {
        let seed = &seeds[(next(&mut state) % seeds.len() as u64) as usize];
        let mut bytes = seed.to_vec();
        for _ in 0..=(next(&mut state) % 3) {
            let i = (next(&mut state) % bytes.len() as u64) as usize;
            match next(&mut state) % 3 {
                0 => bytes[i] ^= 1 << (next(&mut state) % 8),
                1 => bytes[i] = next(&mut state) as u8,
                _ => bytes.insert(i, next(&mut state) as u8),
            }
        }
        let mut buf = BytesMut::from(&bytes[..]);
        while let Ok(Some(packet)) = decode(&mut buf, MAX) {
            let mut again = encode_packet(&packet);
            assert_eq!(decode(&mut again, MAX), Ok(Some(packet)));
            assert!(again.is_empty());
            decoded += 1;
        }
    }
    assert!(decoded > 1_000, "only {decoded} packets decoded");
}

#[test]
fn short_success_acks_are_recognised_and_read_as_mqtt3() {
    let ack = |reason: ReasonCode| Ack {
        packet_id: 9,
        reason,
        properties: Properties::default(),
    };
    for make in [
        Packet::PubAck,
        Packet::PubRec,
        Packet::PubRel,
        Packet::PubComp,
    ] {
        let mut buf = BytesMut::new();
        make(ack(ReasonCode::SUCCESS))
            .encode(&mut buf)
            .expect("ack");
        assert!(starts_short_ack(&buf), "{buf:?}");
        assert!(!starts_short_ack(&buf[..3]), "a partial one waits");
        let v3 = crate::protocol::decode(&mut buf, 1 << 20).expect("MQTT 3 reads it");
        assert!(v3.is_some() && buf.is_empty());
        let mut long = BytesMut::new();
        make(Ack {
            properties: Properties {
                reason_string: Some("why".into()),
                ..Properties::default()
            },
            ..ack(ReasonCode::SUCCESS)
        })
        .encode(&mut long)
        .expect("ack");
        assert!(!starts_short_ack(&long), "with properties");
    }
    let mut pingreq = BytesMut::new();
    Packet::PingReq.encode(&mut pingreq).expect("pingreq");
    assert!(!starts_short_ack(&pingreq));
}
