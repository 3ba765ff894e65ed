//! The fixed header [MQTT-2.2]: packet type and flags (first byte), the remaining-length varint,
//! and the reserved-flag rules [MQTT-2.2.2-1/2]. Also the empty body shared by PINGREQ, PINGRESP
//! and DISCONNECT (the lone packet identifier of the acks is `ack.rs`).
//!
//! Must not consume input, allocate, or know anything about other packet bodies.

use bytes::{BufMut, BytesMut};

use super::{strings, DecodeError, EncodeError};

pub(crate) const CONNECT: u8 = 1;
pub(crate) const CONNACK: u8 = 2;
pub(crate) const PUBLISH: u8 = 3;
pub(crate) const PUBACK: u8 = 4;
pub(crate) const PUBREC: u8 = 5;
pub(crate) const PUBREL: u8 = 6;
pub(crate) const PUBCOMP: u8 = 7;
pub(crate) const SUBSCRIBE: u8 = 8;
pub(crate) const SUBACK: u8 = 9;
pub(crate) const UNSUBSCRIBE: u8 = 10;
pub(crate) const UNSUBACK: u8 = 11;
pub(crate) const PINGREQ: u8 = 12;
pub(crate) const PINGRESP: u8 = 13;
pub(crate) const DISCONNECT: u8 = 14;
/// MQTT 5 only [MQTT-3.15].
pub(crate) const AUTH: u8 = 15;

/// Largest value a 4-byte remaining length can hold.
pub(crate) const MAX_REMAINING_LENGTH: usize = 268_435_455;

/// PUBLISH fixed-header flag bits.
pub(crate) const PUBLISH_DUP: u8 = 0b1000;
pub(crate) const PUBLISH_RETAIN: u8 = 0b0001;

/// A parsed, flag-checked fixed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FixedHeader {
    pub packet_type: u8,
    /// Low nibble of the first byte.
    pub flags: u8,
    /// Bytes taken by the fixed header itself (2..=5).
    pub header_len: usize,
    /// Bytes of variable header + payload that follow.
    pub remaining_len: usize,
}

/// Parses the fixed header of an MQTT 3.1/3.1.1 packet at the start of `buf`; `Ok(None)` when it
/// is not all there yet. The packet type and flags are checked as soon as the first byte is
/// available.
pub(crate) fn parse(buf: &[u8]) -> Result<Option<FixedHeader>, DecodeError> {
    parse_at(buf, false)
}

/// As [`parse`], for MQTT 5 when `v5` (packet type 15 is then AUTH rather than reserved).
#[inline]
pub(crate) fn parse_at(buf: &[u8], v5: bool) -> Result<Option<FixedHeader>, DecodeError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let packet_type = first >> 4;
    let flags = first & 0x0f;
    if packet_type == AUTH && v5 {
        if flags != 0 {
            return Err(DecodeError::InvalidFlags { packet_type, flags });
        }
    } else {
        check_flags(packet_type, flags)?;
    }
    let mut remaining_len = 0usize;
    for i in 0..4 {
        let Some(&byte) = buf.get(1 + i) else {
            return Ok(None);
        };
        remaining_len |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(Some(FixedHeader {
                packet_type,
                flags,
                header_len: 2 + i,
                remaining_len,
            }));
        }
    }
    // The 4th byte has its continuation bit set: a 5th byte would be needed.
    Err(DecodeError::MalformedRemainingLength)
}

fn check_flags(packet_type: u8, flags: u8) -> Result<(), DecodeError> {
    let required = match packet_type {
        0 | 15 => return Err(DecodeError::ReservedPacketType(packet_type)),
        PUBLISH => {
            let qos = (flags >> 1) & 0b11;
            if qos == 3 {
                return Err(DecodeError::InvalidQoS);
            }
            if qos == 0 && flags & PUBLISH_DUP != 0 {
                // [MQTT-3.3.1-2]
                return Err(DecodeError::InvalidFlags { packet_type, flags });
            }
            return Ok(());
        }
        PUBREL | SUBSCRIBE | UNSUBSCRIBE => 0b0010,
        _ => 0,
    };
    if flags == required {
        Ok(())
    } else {
        Err(DecodeError::InvalidFlags { packet_type, flags })
    }
}

/// Bytes needed to encode `remaining_len` as a varint (1..=4; 4 also for out-of-range values).
/// The remaining length is a variable byte integer, the same encoding as MQTT 5's property lengths.
pub(crate) fn remaining_length_len(remaining_len: usize) -> usize {
    strings::varint_len(remaining_len)
}

/// Whole-packet size for a body of `remaining_len` bytes, or an error when it cannot be expressed.
pub(crate) fn packet_len(remaining_len: usize) -> Result<usize, EncodeError> {
    if remaining_len > MAX_REMAINING_LENGTH {
        return Err(EncodeError::PacketTooLarge(remaining_len.saturating_add(5)));
    }
    Ok(1 + remaining_length_len(remaining_len) + remaining_len)
}

/// Reserves room for the whole packet in `out` (once) and writes its fixed header.
/// On error nothing is written.
pub(crate) fn write(
    out: &mut BytesMut,
    first_byte: u8,
    remaining_len: usize,
) -> Result<(), EncodeError> {
    out.reserve(packet_len(remaining_len)?);
    out.put_u8(first_byte);
    strings::put_varint(out, remaining_len);
    Ok(())
}

/// Packets without a body.
pub(crate) fn decode_empty(body: &[u8]) -> Result<(), DecodeError> {
    if body.is_empty() {
        Ok(())
    } else {
        Err(DecodeError::MalformedPacket("expected an empty body"))
    }
}

/// `first_byte`, remaining length 0.
pub(crate) fn encode_empty(out: &mut BytesMut, first_byte: u8) {
    out.reserve(2);
    out.put_u8(first_byte);
    out.put_u8(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(bytes: &[u8]) -> Result<Option<FixedHeader>, DecodeError> {
        parse(bytes)
    }

    #[test]
    fn remaining_length_boundaries_round_trip() {
        for (len, encoded_len) in [
            (0, 1),
            (1, 1),
            (127, 1),
            (128, 2),
            (16_383, 2),
            (16_384, 3),
            (2_097_151, 3),
            (2_097_152, 4),
            (MAX_REMAINING_LENGTH, 4),
        ] {
            let mut out = BytesMut::new();
            write(&mut out, 0x30, len).unwrap();
            assert_eq!(out.len(), 1 + encoded_len, "length {len}");
            assert_eq!(remaining_length_len(len), encoded_len);
            assert_eq!(packet_len(len), Ok(1 + encoded_len + len));
            assert!(
                out.capacity() >= 1 + encoded_len + len,
                "reserved the whole packet"
            );
            assert_eq!(
                header(&out),
                Ok(Some(FixedHeader {
                    packet_type: 3,
                    flags: 0,
                    header_len: 1 + encoded_len,
                    remaining_len: len
                }))
            );
            for prefix in 0..out.len() {
                assert_eq!(header(&out[..prefix]), Ok(None));
            }
        }
    }

    #[test]
    fn spec_examples() {
        assert_eq!(header(&[0xc0, 0x00]).unwrap().unwrap().remaining_len, 0);
        assert_eq!(
            header(&[0x30, 0xc1, 0x02]).unwrap().unwrap().remaining_len,
            321
        );
        assert_eq!(
            header(&[0x30, 0x80, 0x80, 0x80, 0x01])
                .unwrap()
                .unwrap()
                .remaining_len,
            2_097_152
        );
        // Non-minimal encodings are not forbidden by 3.1.1.
        assert_eq!(
            header(&[0x30, 0x80, 0x00]).unwrap().unwrap(),
            FixedHeader {
                packet_type: 3,
                flags: 0,
                header_len: 3,
                remaining_len: 0
            }
        );
    }

    #[test]
    fn fifth_remaining_length_byte_is_malformed() {
        assert_eq!(
            header(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01]),
            Err(DecodeError::MalformedRemainingLength)
        );
        assert_eq!(
            header(&[0x30, 0x80, 0x80, 0x80, 0x80, 0x00]),
            Err(DecodeError::MalformedRemainingLength)
        );
        // Only four bytes present, but the fourth already says "more follows".
        assert_eq!(
            header(&[0x30, 0xff, 0xff, 0xff, 0xff]),
            Err(DecodeError::MalformedRemainingLength)
        );
        // Three continuation bytes are still just incomplete.
        assert_eq!(header(&[0x30, 0xff, 0xff, 0xff]), Ok(None));
    }

    #[test]
    fn reserved_packet_types() {
        for flags in 0..16 {
            assert_eq!(header(&[flags]), Err(DecodeError::ReservedPacketType(0)));
            assert_eq!(
                header(&[0xf0 | flags, 0]),
                Err(DecodeError::ReservedPacketType(15))
            );
        }
    }

    #[test]
    fn reserved_flags() {
        for packet_type in 1..15u8 {
            if packet_type == PUBLISH {
                continue;
            }
            let required = if matches!(packet_type, PUBREL | SUBSCRIBE | UNSUBSCRIBE) {
                2
            } else {
                0
            };
            for flags in 0..16u8 {
                let result = header(&[packet_type << 4 | flags, 0]);
                if flags == required {
                    assert!(
                        matches!(result, Ok(Some(_))),
                        "type {packet_type} flags {flags}"
                    );
                } else {
                    assert_eq!(
                        result,
                        Err(DecodeError::InvalidFlags { packet_type, flags })
                    );
                }
            }
        }
    }

    #[test]
    fn flags_are_checked_before_the_remaining_length_arrives() {
        assert_eq!(header(&[0x82]), Ok(None));
        assert_eq!(
            header(&[0x80]),
            Err(DecodeError::InvalidFlags {
                packet_type: SUBSCRIBE,
                flags: 0
            })
        );
    }

    #[test]
    fn publish_flags() {
        for flags in 0..16u8 {
            let result = header(&[0x30 | flags, 0]);
            let qos = (flags >> 1) & 3;
            if qos == 3 {
                assert_eq!(result, Err(DecodeError::InvalidQoS), "flags {flags:#06b}");
            } else if qos == 0 && flags & PUBLISH_DUP != 0 {
                assert_eq!(
                    result,
                    Err(DecodeError::InvalidFlags {
                        packet_type: PUBLISH,
                        flags
                    })
                );
            } else {
                assert!(matches!(result, Ok(Some(_))), "flags {flags:#06b}");
            }
        }
    }

    #[test]
    fn encode_rejects_unrepresentable_lengths() {
        let mut out = BytesMut::new();
        assert_eq!(
            write(&mut out, 0x30, MAX_REMAINING_LENGTH + 1),
            Err(EncodeError::PacketTooLarge(MAX_REMAINING_LENGTH + 6))
        );
        assert!(out.is_empty());
        assert_eq!(
            packet_len(usize::MAX),
            Err(EncodeError::PacketTooLarge(usize::MAX))
        );
    }

    #[test]
    fn empty_bodies() {
        assert_eq!(decode_empty(&[]), Ok(()));
        assert!(matches!(
            decode_empty(&[0]),
            Err(DecodeError::MalformedPacket(_))
        ));
        let mut out = BytesMut::new();
        encode_empty(&mut out, 0xc0);
        assert_eq!(&out[..], &[0xc0, 0x00]);
    }
}
