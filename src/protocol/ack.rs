//! The five packets whose body is a lone packet identifier: PUBACK [MQTT-3.4], PUBREC [MQTT-3.5],
//! PUBREL [MQTT-3.6], PUBCOMP [MQTT-3.7] and UNSUBACK [MQTT-3.11].
//!
//! One file rather than one per packet (the rule elsewhere in `protocol`): the five differ only in
//! their first byte, so their codec is one pair of generic functions and their tests one table. Kept
//! apart they were five copies of the same 70 lines, where a fix could land in one copy only; here
//! the one real difference, PUBREL's fixed-header flags 0b0010 [MQTT-3.6.1-1], stands in the
//! table of first bytes below (the flags are checked on decode by `fixed_header::parse`, with the
//! other packets' reserved flags). The types themselves are declared with the other packet types
//! in `mod.rs`.
//!
//! Decoding and encoding are generic over [`PacketIdOnly`] and monomorphised: no dynamic dispatch
//! on these packets, which QoS 1/2 traffic sends one to two of per message.
//!
//! Must not track in-flight state or subscriptions; that is the session's and the broker's job.

use bytes::{BufMut, BytesMut};

use super::fixed_header::{PUBACK, PUBCOMP, PUBREC, PUBREL, UNSUBACK};
use super::{DecodeError, PubAck, PubComp, PubRec, PubRel, UnsubAck};

/// A packet that is its packet identifier and nothing else.
pub(super) trait PacketIdOnly {
    /// Packet type and fixed-header flags.
    const FIRST_BYTE: u8;
    fn from_packet_id(packet_id: u16) -> Self;
    fn packet_id(&self) -> u16;
}

macro_rules! packet_id_only {
    ($($packet:ident = $first_byte:expr;)*) => {$(
        impl PacketIdOnly for $packet {
            const FIRST_BYTE: u8 = $first_byte;
            fn from_packet_id(packet_id: u16) -> Self {
                $packet { packet_id }
            }
            fn packet_id(&self) -> u16 {
                self.packet_id
            }
        }
    )*};
}

packet_id_only! {
    PubAck = PUBACK << 4;
    PubRec = PUBREC << 4;
    PubRel = PUBREL << 4 | 0b0010;
    PubComp = PUBCOMP << 4;
    UnsubAck = UNSUBACK << 4;
}

/// Decodes the body (after the fixed header, whose flags are already checked): exactly one
/// non-zero packet identifier.
pub(super) fn decode<P: PacketIdOnly>(body: &[u8]) -> Result<P, DecodeError> {
    match *body {
        [hi, lo] => match u16::from_be_bytes([hi, lo]) {
            0 => Err(DecodeError::ZeroPacketId),
            id => Ok(P::from_packet_id(id)),
        },
        _ => Err(DecodeError::MalformedPacket(
            "expected a body of exactly a 2-byte packet identifier",
        )),
    }
}

/// Writes the whole packet: first byte, remaining length 2, packet identifier.
pub(super) fn encode<P: PacketIdOnly>(p: &P, out: &mut BytesMut) {
    out.reserve(4);
    out.put_u8(P::FIRST_BYTE);
    out.put_u8(2);
    out.put_u16(p.packet_id());
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::Packet;
    use super::*;

    /// Makes one packet of a kind from its packet identifier.
    type Make = fn(u16) -> Packet;

    /// Each packet: its first byte on the wire, written out (not taken from the trait, so that the
    /// table checks the constants), and how to make one.
    const PACKETS: [(&str, u8, Make); 5] = [
        ("PUBACK", 0x40, |packet_id| {
            Packet::PubAck(PubAck { packet_id })
        }),
        ("PUBREC", 0x50, |packet_id| {
            Packet::PubRec(PubRec { packet_id })
        }),
        ("PUBREL", 0x62, |packet_id| {
            Packet::PubRel(PubRel { packet_id })
        }),
        ("PUBCOMP", 0x70, |packet_id| {
            Packet::PubComp(PubComp { packet_id })
        }),
        ("UNSUBACK", 0xb0, |packet_id| {
            Packet::UnsubAck(UnsubAck { packet_id })
        }),
    ];

    #[test]
    fn round_trips() {
        for (name, first, make) in PACKETS {
            for packet_id in [1, 0x1234, 65_535] {
                let encoded = assert_round_trip(&make(packet_id));
                let [hi, lo] = u16::to_be_bytes(packet_id);
                assert_eq!(&encoded[..], &[first, 0x02, hi, lo], "{name}");
            }
        }
    }

    #[test]
    fn zero_packet_id() {
        for (name, first, _) in PACKETS {
            assert_eq!(
                decode_err(&[first, 0x02, 0x00, 0x00]),
                DecodeError::ZeroPacketId,
                "{name}"
            );
        }
    }

    #[test]
    fn wrong_length() {
        for (name, first, _) in PACKETS {
            for bytes in [
                &[first, 0x00][..],
                &[first, 0x01, 0x01],
                &[first, 0x03, 0x00, 0x01, 0x00],
            ] {
                assert!(
                    matches!(decode_err(bytes), DecodeError::MalformedPacket(_)),
                    "{name} {bytes:?}"
                );
            }
        }
    }

    #[test]
    fn reserved_flags() {
        for (name, first, _) in PACKETS {
            let packet_type = first >> 4;
            for flags in (0..16u8).filter(|&flags| flags != first & 0x0f) {
                assert_eq!(
                    decode_err(&[packet_type << 4 | flags, 0x02, 0x00, 0x01]),
                    DecodeError::InvalidFlags { packet_type, flags },
                    "{name}"
                );
            }
        }
    }
}
