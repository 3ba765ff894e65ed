//! UNSUBSCRIBE [MQTT-3.10]: packet identifier, then one or more topic filters.
//!
//! Must not touch subscriptions or check that the filters were ever subscribed; that is the
//! broker's job.

use bytes::{BufMut, BytesMut};

use super::fixed_header::{self, UNSUBSCRIBE};
use super::strings::{prefixed_len, put_prefixed, Reader};
use super::{DecodeError, EncodeError, TopicFilter, Unsubscribe};

const FIRST_BYTE: u8 = UNSUBSCRIBE << 4 | 0b0010;

pub(super) fn decode(body: &[u8]) -> Result<Unsubscribe, DecodeError> {
    let mut r = Reader::new(body);
    let packet_id = r.read_packet_id()?;
    let mut filters = Vec::new();
    while !r.is_empty() {
        filters.push(TopicFilter::new(r.read_string()?)?);
    }
    if filters.is_empty() {
        return Err(DecodeError::EmptySubscription); // [MQTT-3.10.3-2]
    }
    Ok(Unsubscribe { packet_id, filters })
}

pub(super) fn encode(p: &Unsubscribe, out: &mut BytesMut) -> Result<(), EncodeError> {
    let mut len = 2;
    for f in &p.filters {
        len += prefixed_len(f.as_str().len())?;
    }
    fixed_header::write(out, FIRST_BYTE, len)?;
    out.put_u16(p.packet_id);
    for f in &p.filters {
        put_prefixed(out, f.as_str().as_bytes());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::Packet;
    use super::*;

    fn raw(packet_id: u16, filters: &[&[u8]]) -> Vec<u8> {
        let mut body = packet_id.to_be_bytes().to_vec();
        for f in filters {
            body.extend_from_slice(&(f.len() as u16).to_be_bytes());
            body.extend_from_slice(f);
        }
        frame(0xa2, &body)
    }

    fn filters(list: &[&str]) -> Vec<TopicFilter> {
        list.iter().map(|s| TopicFilter::new(s).unwrap()).collect()
    }

    #[test]
    fn round_trips() {
        assert_round_trip(&Packet::Unsubscribe(Unsubscribe {
            packet_id: 1,
            filters: filters(&["a/b"]),
        }));
        let encoded = assert_round_trip(&Packet::Unsubscribe(Unsubscribe {
            packet_id: 65_535,
            filters: filters(&["#", "+/+", "sport/tennis/#", "$SYS/+", "/"]),
        }));
        assert_eq!(
            &encoded[..],
            &raw(65_535, &[b"#", b"+/+", b"sport/tennis/#", b"$SYS/+", b"/"])[..]
        );
    }

    #[test]
    fn empty_unsubscription() {
        assert_eq!(decode_err(&raw(1, &[])), DecodeError::EmptySubscription);
    }

    #[test]
    fn zero_packet_id() {
        assert_eq!(decode_err(&raw(0, &[b"a"])), DecodeError::ZeroPacketId);
    }

    #[test]
    fn invalid_filters() {
        assert_eq!(
            decode_err(&raw(1, &[b"a", b""])),
            DecodeError::InvalidTopicFilter("empty")
        );
        assert_eq!(
            decode_err(&raw(1, &[b"#/a"])),
            DecodeError::InvalidTopicFilter("'#' must be alone in the last level")
        );
        assert_eq!(
            decode_err(&raw(1, &[b"a/b+"])),
            DecodeError::InvalidTopicFilter("'+' must be alone in its level")
        );
        assert_eq!(decode_err(&raw(1, &[b"\0"])), DecodeError::NullCharacter);
        assert_eq!(decode_err(&raw(1, &[b"\xff"])), DecodeError::InvalidUtf8);
    }

    #[test]
    fn short_bodies() {
        for bytes in [
            &[0xa2, 0x00][..],
            &[0xa2, 0x01, 0x00],
            &[0xa2, 0x03, 0x00, 0x01, 0x00],
            &[0xa2, 0x05, 0x00, 0x01, 0x00, 0x02, b'a'],
        ] {
            assert!(
                matches!(decode_err(bytes), DecodeError::MalformedPacket(_)),
                "{bytes:?}"
            );
        }
    }

    #[test]
    fn reserved_flags() {
        for flags in 0..16u8 {
            if flags != 0b0010 {
                let mut bytes = raw(1, &[b"a"]);
                bytes[0] = 0xa0 | flags;
                assert_eq!(
                    decode_err(&bytes),
                    DecodeError::InvalidFlags {
                        packet_type: 10,
                        flags
                    }
                );
            }
        }
    }
}
