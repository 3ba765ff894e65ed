//! UNSUBACK [MQTT-3.11]: acknowledgement of an UNSUBSCRIBE; the body is a lone packet identifier
//! (shared helpers in `fixed_header`).
//!
//! Must not touch subscriptions; that is the broker's job.

use bytes::BytesMut;

use super::fixed_header::{self, UNSUBACK};
use super::{DecodeError, UnsubAck};

const FIRST_BYTE: u8 = UNSUBACK << 4;

pub(super) fn decode(body: &[u8]) -> Result<UnsubAck, DecodeError> {
    fixed_header::decode_packet_id_only(body).map(|packet_id| UnsubAck { packet_id })
}

pub(super) fn encode(p: &UnsubAck, out: &mut BytesMut) {
    fixed_header::encode_packet_id_only(out, FIRST_BYTE, p.packet_id);
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::Packet;
    use super::*;

    #[test]
    fn round_trips() {
        for packet_id in [1, 0x1234, 65_535] {
            let encoded = assert_round_trip(&Packet::UnsubAck(UnsubAck { packet_id }));
            let [hi, lo] = u16::to_be_bytes(packet_id);
            assert_eq!(&encoded[..], &[0xb0, 0x02, hi, lo]);
        }
    }

    #[test]
    fn zero_packet_id() {
        assert_eq!(
            decode_err(&[0xb0, 0x02, 0x00, 0x00]),
            DecodeError::ZeroPacketId
        );
    }

    #[test]
    fn wrong_length() {
        for bytes in [
            &[0xb0, 0x00][..],
            &[0xb0, 0x01, 0x01],
            &[0xb0, 0x03, 0x00, 0x01, 0x00],
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
            if flags != 0b0000 {
                assert_eq!(
                    decode_err(&[11 << 4 | flags, 0x02, 0x00, 0x01]),
                    DecodeError::InvalidFlags {
                        packet_type: 11,
                        flags
                    }
                );
            }
        }
    }
}
