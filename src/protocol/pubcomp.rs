//! PUBCOMP [MQTT-3.7]: completion of a QoS 2 exchange; the body is a lone packet identifier
//! (shared helpers in `fixed_header`).
//!
//! Must not track in-flight state; that is the session's job.

use bytes::BytesMut;

use super::fixed_header::{self, PUBCOMP};
use super::{DecodeError, PubComp};

const FIRST_BYTE: u8 = PUBCOMP << 4;

pub(super) fn decode(body: &[u8]) -> Result<PubComp, DecodeError> {
    fixed_header::decode_packet_id_only(body).map(|packet_id| PubComp { packet_id })
}

pub(super) fn encode(p: &PubComp, out: &mut BytesMut) {
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
            let encoded = assert_round_trip(&Packet::PubComp(PubComp { packet_id }));
            let [hi, lo] = u16::to_be_bytes(packet_id);
            assert_eq!(&encoded[..], &[0x70, 0x02, hi, lo]);
        }
    }

    #[test]
    fn zero_packet_id() {
        assert_eq!(
            decode_err(&[0x70, 0x02, 0x00, 0x00]),
            DecodeError::ZeroPacketId
        );
    }

    #[test]
    fn wrong_length() {
        for bytes in [
            &[0x70, 0x00][..],
            &[0x70, 0x01, 0x01],
            &[0x70, 0x03, 0x00, 0x01, 0x00],
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
                    decode_err(&[7 << 4 | flags, 0x02, 0x00, 0x01]),
                    DecodeError::InvalidFlags {
                        packet_type: 7,
                        flags
                    }
                );
            }
        }
    }
}
