//! PINGREQ [MQTT-3.12]: keep-alive probe from the client; no body.
//!
//! Must not answer it; the connection loop sends PINGRESP.

use bytes::BytesMut;

use super::fixed_header::{self, PINGREQ};
use super::DecodeError;

pub(super) fn decode(body: &[u8]) -> Result<(), DecodeError> {
    fixed_header::decode_empty(body)
}

pub(super) fn encode(out: &mut BytesMut) {
    fixed_header::encode_empty(out, PINGREQ << 4);
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::Packet;
    use super::*;

    #[test]
    fn round_trips() {
        let encoded = assert_round_trip(&Packet::PingReq);
        assert_eq!(&encoded[..], &[0xc0, 0x00]);
    }

    #[test]
    fn non_empty_body() {
        assert_eq!(
            decode_err(&[0xc0, 0x01, 0x00]),
            DecodeError::MalformedPacket("expected an empty body")
        );
        assert_eq!(
            decode_err(&[0xc0, 0x02, 0x00, 0x00]),
            DecodeError::MalformedPacket("expected an empty body")
        );
    }

    #[test]
    fn reserved_flags() {
        for flags in 1..16u8 {
            assert_eq!(
                decode_err(&[12 << 4 | flags, 0x00]),
                DecodeError::InvalidFlags {
                    packet_type: 12,
                    flags
                }
            );
        }
    }
}
