//! Tests of the codec as a whole: enum conversions, size limits read from the header, incomplete
//! input, mixed packet streams, and garbage or mutated packets that must never panic. Each packet
//! type's own tests live in its file.

use super::testutil::*;
use super::*;

#[test]
fn enum_conversions() {
    for v in 0..=255u8 {
        if let Some(q) = QoS::from_u8(v) {
            assert_eq!(u8::from(q), v);
        }
        if let Some(c) = ConnectReturnCode::from_u8(v) {
            assert_eq!(u8::from(c), v);
        }
        if let Some(c) = SubscribeReturnCode::from_u8(v) {
            assert_eq!(u8::from(c), v);
        }
    }
    assert_eq!(QoS::from_u8(3), None);
    assert_eq!(ConnectReturnCode::from_u8(6), None);
    assert_eq!(SubscribeReturnCode::from_u8(3), None);
    assert_eq!(
        SubscribeReturnCode::from_u8(0x80),
        Some(SubscribeReturnCode::Failure)
    );
}

#[test]
fn packet_too_large_is_reported_from_the_header_alone() {
    // PUBLISH announcing 1000 bytes of body; only the fixed header has arrived.
    let mut buf = BytesMut::from(&[0x30, 0xe8, 0x07][..]);
    assert_eq!(
        decode(&mut buf, 1002),
        Err(DecodeError::PacketTooLarge {
            size: 1003,
            max: 1002
        })
    );
    // Exactly at the limit is fine (and incomplete).
    assert_eq!(decode(&mut buf, 1003), Ok(None));
    assert_eq!(&buf[..], &[0x30, 0xe8, 0x07]);
    // Largest expressible remaining length.
    let mut buf = BytesMut::from(&[0x30, 0xff, 0xff, 0xff, 0x7f][..]);
    assert_eq!(
        decode(&mut buf, 1 << 20),
        Err(DecodeError::PacketTooLarge {
            size: 268_435_460,
            max: 1 << 20
        })
    );
    assert_eq!(decode(&mut buf, PROTOCOL_MAX_PACKET_SIZE), Ok(None));
}

#[test]
fn max_packet_size_applies_to_whole_packets() {
    let packet = Packet::PubAck(PubAck { packet_id: 7 });
    let mut buf = encode_packet(&packet);
    assert_eq!(
        decode(&mut buf, 3),
        Err(DecodeError::PacketTooLarge { size: 4, max: 3 })
    );
    let mut buf = encode_packet(&packet);
    assert_eq!(decode(&mut buf, 4), Ok(Some(packet)));
}

#[test]
fn empty_buffer_is_incomplete() {
    let mut buf = BytesMut::new();
    assert_eq!(decode(&mut buf, MAX), Ok(None));
    assert_eq!(decode(&mut buf, 0), Ok(None));
}

#[test]
fn mixed_stream_decodes_in_order() {
    let packets = vec![
        Packet::Connect(Box::new(Connect {
            protocol: ProtocolLevel::V311,
            clean_session: true,
            keep_alive: 60,
            client_id: "c".into(),
            will: None,
            username: None,
            password: None,
        })),
        Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: TopicName::new("a/b").unwrap(),
            packet_id: Some(1),
            payload: Bytes::from_static(b"hello"),
        }),
        Packet::PubAck(PubAck { packet_id: 1 }),
        Packet::Subscribe(Subscribe {
            packet_id: 2,
            filters: vec![SubscribeFilter {
                filter: TopicFilter::new("a/#").unwrap(),
                qos: QoS::ExactlyOnce,
            }],
        }),
        Packet::PingReq,
        Packet::Disconnect,
    ];
    let mut buf = BytesMut::new();
    for p in &packets {
        p.encode(&mut buf).unwrap();
    }
    for p in &packets {
        assert_eq!(decode(&mut buf, MAX).as_ref(), Ok(&Some(p.clone())));
    }
    assert!(buf.is_empty());
}

/// Deterministic xorshift64* generator, so failures reproduce.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn byte(&mut self) -> u8 {
        (self.next() >> 56) as u8
    }
}

/// Decodes everything in `buf`; anything that decodes must re-encode and decode to itself.
/// Returns how many packets decoded.
fn drain(buf: &mut BytesMut, max: usize) -> usize {
    let mut count = 0;
    while let Ok(Some(packet)) = decode(buf, max) {
        let mut again = encode_packet(&packet);
        assert_eq!(decode(&mut again, MAX), Ok(Some(packet)));
        assert!(again.is_empty());
        count += 1;
    }
    count
}

#[test]
fn garbage_never_panics() {
    // Plausible first bytes (every type with its valid flags, plus PUBLISH variants) and a
    // small alphabet of interesting body bytes, so bodies are reached and sometimes valid.
    const FIRST: [u8; 18] = [
        0x10, 0x20, 0x30, 0x31, 0x32, 0x3b, 0x34, 0x3d, 0x40, 0x50, 0x62, 0x70, 0x82, 0x90, 0xa2,
        0xb0, 0xc0, 0xe0,
    ];
    const BODY: [u8; 12] = [0, 0, 0, 1, 2, 3, 4, b'/', b'+', b'#', b'a', 0x80];
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut decoded = 0;
    for _ in 0..200_000 {
        let len = rng.below(40);
        let mut bytes = Vec::with_capacity(len);
        for i in 0..len {
            let b = match (i, rng.below(4)) {
                (0, 0) => rng.byte(),
                (0, _) => FIRST[rng.below(FIRST.len())],
                (1, 0) => rng.byte(),
                (1, _) => rng.below(len) as u8,
                (_, 0) => rng.byte(),
                _ => BODY[rng.below(BODY.len())],
            };
            bytes.push(b);
        }
        let max = if rng.below(8) == 0 {
            rng.below(64)
        } else {
            MAX
        };
        decoded += drain(&mut BytesMut::from(&bytes[..]), max);
    }
    // Make sure the generator reaches the body decoders, not just the header checks.
    assert!(decoded > 1_000, "only {decoded} packets decoded");
}

#[test]
fn mutated_valid_packets_never_panic() {
    let seeds: Vec<BytesMut> = vec![
        encode_packet(&Packet::Connect(Box::new(Connect {
            protocol: ProtocolLevel::V311,
            clean_session: false,
            keep_alive: 30,
            client_id: "client".into(),
            will: Some(LastWill {
                topic: TopicName::new("will/t").unwrap(),
                payload: Bytes::from_static(b"bye"),
                qos: QoS::AtLeastOnce,
                retain: true,
                properties: None,
            }),
            username: Some("user".into()),
            password: Some(Bytes::from_static(b"pw")),
        }))),
        encode_packet(&Packet::ConnAck(ConnAck {
            session_present: true,
            code: ConnectReturnCode::Accepted,
        })),
        encode_packet(&Packet::Publish(Publish {
            dup: true,
            qos: QoS::ExactlyOnce,
            retain: true,
            topic: TopicName::new("a/b/c").unwrap(),
            packet_id: Some(9),
            payload: Bytes::from_static(b"payload"),
        })),
        encode_packet(&Packet::Subscribe(Subscribe {
            packet_id: 3,
            filters: vec![
                SubscribeFilter {
                    filter: TopicFilter::new("a/+/c").unwrap(),
                    qos: QoS::AtMostOnce,
                },
                SubscribeFilter {
                    filter: TopicFilter::new("#").unwrap(),
                    qos: QoS::ExactlyOnce,
                },
            ],
        })),
        encode_packet(&Packet::SubAck(SubAck {
            packet_id: 3,
            return_codes: vec![
                SubscribeReturnCode::Success(QoS::AtLeastOnce),
                SubscribeReturnCode::Failure,
            ],
        })),
        encode_packet(&Packet::Unsubscribe(Unsubscribe {
            packet_id: 4,
            filters: vec![TopicFilter::new("x/#").unwrap()],
        })),
        encode_packet(&Packet::PubRel(PubRel { packet_id: 5 })),
    ];
    let mut rng = XorShift(42);
    let mut decoded = 0;
    for _ in 0..100_000 {
        let seed = &seeds[rng.below(seeds.len())];
        let mut bytes = seed.to_vec();
        for _ in 0..=rng.below(3) {
            match rng.below(4) {
                0 => {
                    let i = rng.below(bytes.len());
                    bytes[i] ^= 1 << rng.below(8);
                }
                1 => {
                    let i = rng.below(bytes.len());
                    bytes[i] = rng.byte();
                }
                2 => bytes.truncate(rng.below(bytes.len() + 1).max(1)),
                _ => {
                    let i = rng.below(bytes.len() + 1);
                    bytes.insert(i, rng.byte());
                }
            }
        }
        decoded += drain(&mut BytesMut::from(&bytes[..]), MAX);
    }
    assert!(decoded > 1_000, "only {decoded} packets decoded");
}
