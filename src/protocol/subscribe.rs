//! SUBSCRIBE [MQTT-3.8]: packet identifier, then one or more (topic filter, requested QoS) pairs.
//!
//! Must not decide whether a subscription is granted (ACLs, QoS downgrades); that is broker policy.

use bytes::{BufMut, BytesMut};

use super::fixed_header::{self, SUBSCRIBE};
use super::strings::{prefixed_len, put_prefixed, Reader};
use super::{DecodeError, EncodeError, QoS, Subscribe, SubscribeFilter, TopicFilter};

const FIRST_BYTE: u8 = SUBSCRIBE << 4 | 0b0010;

pub(super) fn decode(body: &[u8]) -> Result<Subscribe, DecodeError> {
    let mut r = Reader::new(body);
    let packet_id = r.read_packet_id()?;
    let mut filters = Vec::new();
    while !r.is_empty() {
        let filter = TopicFilter::new(r.read_string()?)?;
        let requested = r.read_u8()?;
        if requested & 0b1111_1100 != 0 {
            return Err(DecodeError::MalformedPacket(
                "reserved bits set in requested QoS",
            )); // [MQTT-3-8.3-4]
        }
        let qos = QoS::from_u8(requested).ok_or(DecodeError::InvalidQoS)?;
        filters.push(SubscribeFilter { filter, qos });
    }
    if filters.is_empty() {
        return Err(DecodeError::EmptySubscription); // [MQTT-3.8.3-3]
    }
    Ok(Subscribe { packet_id, filters })
}

pub(super) fn encode(p: &Subscribe, out: &mut BytesMut) -> Result<(), EncodeError> {
    let mut len = 2;
    for f in &p.filters {
        len += prefixed_len(f.filter.as_str().len())? + 1;
    }
    fixed_header::write(out, FIRST_BYTE, len)?;
    out.put_u16(p.packet_id);
    for f in &p.filters {
        put_prefixed(out, f.filter.as_str().as_bytes());
        out.put_u8(f.qos as u8);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::Packet;
    use super::*;

    fn filter(s: &str, qos: QoS) -> SubscribeFilter {
        SubscribeFilter {
            filter: TopicFilter::new(s).unwrap(),
            qos,
        }
    }

    /// A SUBSCRIBE frame from packet id and raw (filter, QoS byte) pairs.
    fn raw(packet_id: u16, entries: &[(&[u8], u8)]) -> Vec<u8> {
        let mut body = packet_id.to_be_bytes().to_vec();
        for (f, q) in entries {
            body.extend_from_slice(&(f.len() as u16).to_be_bytes());
            body.extend_from_slice(f);
            body.push(*q);
        }
        frame(0x82, &body)
    }

    #[test]
    fn round_trips() {
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
            assert_round_trip(&Packet::Subscribe(Subscribe {
                packet_id: 1,
                filters: vec![filter("a/b", qos)],
            }));
        }
        assert_round_trip(&Packet::Subscribe(Subscribe {
            packet_id: 65_535,
            filters: vec![
                filter("#", QoS::ExactlyOnce),
                filter("+", QoS::AtMostOnce),
                filter("sport/+/player1", QoS::AtLeastOnce),
                filter("sport/tennis/#", QoS::ExactlyOnce),
                filter("$SYS/#", QoS::AtMostOnce),
                filter("/", QoS::AtMostOnce),
            ],
        }));
    }

    #[test]
    fn spec_layout() {
        let p = Subscribe {
            packet_id: 10,
            filters: vec![
                filter("a/b", QoS::AtLeastOnce),
                filter("c/d", QoS::ExactlyOnce),
            ],
        };
        let encoded = assert_round_trip(&Packet::Subscribe(p));
        assert_eq!(&encoded[..], &raw(10, &[(b"a/b", 1), (b"c/d", 2)])[..]);
        assert_eq!(encoded[0], 0x82);
    }

    #[test]
    fn empty_subscription() {
        assert_eq!(decode_err(&raw(1, &[])), DecodeError::EmptySubscription);
    }

    #[test]
    fn zero_packet_id() {
        assert_eq!(decode_err(&raw(0, &[(b"a", 0)])), DecodeError::ZeroPacketId);
    }

    #[test]
    fn requested_qos() {
        assert_eq!(decode_err(&raw(1, &[(b"a", 3)])), DecodeError::InvalidQoS);
        assert_eq!(
            decode_err(&raw(1, &[(b"a", 0), (b"b", 3)])),
            DecodeError::InvalidQoS
        );
        for reserved in [0x04, 0x08, 0x80, 0xfc, 0x41] {
            assert_eq!(
                decode_err(&raw(1, &[(b"a", reserved)])),
                DecodeError::MalformedPacket("reserved bits set in requested QoS")
            );
        }
    }

    #[test]
    fn invalid_filters() {
        assert_eq!(
            decode_err(&raw(1, &[(b"", 0)])),
            DecodeError::InvalidTopicFilter("empty")
        );
        assert_eq!(
            decode_err(&raw(1, &[(b"a", 0), (b"sport/tennis#", 0)])),
            DecodeError::InvalidTopicFilter("'#' must be alone in the last level")
        );
        assert_eq!(
            decode_err(&raw(1, &[(b"a/#/b", 0)])),
            DecodeError::InvalidTopicFilter("'#' must be alone in the last level")
        );
        assert_eq!(
            decode_err(&raw(1, &[(b"sport+", 0)])),
            DecodeError::InvalidTopicFilter("'+' must be alone in its level")
        );
        assert_eq!(
            decode_err(&raw(1, &[(b"a\0", 0)])),
            DecodeError::NullCharacter
        );
        assert_eq!(
            decode_err(&raw(1, &[(b"\xc3\x28", 0)])),
            DecodeError::InvalidUtf8
        );
    }

    #[test]
    fn short_bodies() {
        let full = raw(7, &[(b"abc", 1)]);
        // Every truncation of the body (with a matching remaining length) is malformed.
        for len in 0..full.len() - 2 {
            let bytes = frame(0x82, &full[2..2 + len]);
            let e = decode_err(&bytes);
            // Truncating right after the packet id leaves a valid but empty list.
            if len == 2 {
                assert_eq!(e, DecodeError::EmptySubscription);
            } else {
                assert!(
                    matches!(e, DecodeError::MalformedPacket(_)),
                    "body of {len} bytes: {e:?}"
                );
            }
        }
        // Trailing garbage after the last pair is an incomplete pair.
        let mut body = full[2..].to_vec();
        body.push(0);
        assert!(matches!(
            decode_err(&frame(0x82, &body)),
            DecodeError::MalformedPacket(_)
        ));
    }

    #[test]
    fn reserved_flags() {
        for flags in 0..16u8 {
            if flags != 0b0010 {
                let mut bytes = raw(1, &[(b"a", 0)]);
                bytes[0] = 0x80 | flags;
                assert_eq!(
                    decode_err(&bytes),
                    DecodeError::InvalidFlags {
                        packet_type: 8,
                        flags
                    }
                );
            }
        }
    }
}
