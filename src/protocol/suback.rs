//! SUBACK [MQTT-3.9]: packet identifier, then one return code per requested filter
//! (0x00, 0x01, 0x02 granted QoS; 0x80 failure).
//!
//! Must not decide what is granted; the broker fills in the return codes.

use bytes::{BufMut, BytesMut};

use super::fixed_header::{self, SUBACK};
use super::strings::Reader;
use super::{DecodeError, EncodeError, SubAck, SubscribeReturnCode};

pub(super) fn decode(body: &[u8]) -> Result<SubAck, DecodeError> {
    let mut r = Reader::new(body);
    let packet_id = r.read_packet_id()?;
    let codes = r.rest();
    if codes.is_empty() {
        return Err(DecodeError::MalformedPacket("SUBACK without return codes"));
    }
    let return_codes = codes
        .iter()
        .map(|&c| {
            SubscribeReturnCode::from_u8(c)
                .ok_or(DecodeError::MalformedPacket("unknown SUBACK return code"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(SubAck {
        packet_id,
        return_codes,
    })
}

pub(super) fn encode(p: &SubAck, out: &mut BytesMut) -> Result<(), EncodeError> {
    fixed_header::write(out, SUBACK << 4, 2 + p.return_codes.len())?;
    out.put_u16(p.packet_id);
    for &code in &p.return_codes {
        out.put_u8(u8::from(code));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{Packet, QoS};
    use super::*;

    #[test]
    fn round_trips() {
        let all = vec![
            SubscribeReturnCode::Success(QoS::AtMostOnce),
            SubscribeReturnCode::Success(QoS::AtLeastOnce),
            SubscribeReturnCode::Success(QoS::ExactlyOnce),
            SubscribeReturnCode::Failure,
        ];
        for &code in &all {
            assert_round_trip(&Packet::SubAck(SubAck {
                packet_id: 1,
                return_codes: vec![code],
            }));
        }
        let encoded = assert_round_trip(&Packet::SubAck(SubAck {
            packet_id: 0x0102,
            return_codes: all,
        }));
        assert_eq!(
            &encoded[..],
            &[0x90, 0x06, 0x01, 0x02, 0x00, 0x01, 0x02, 0x80]
        );
        // Many filters: remaining length needs two bytes.
        let many = vec![SubscribeReturnCode::Failure; 200];
        assert_round_trip(&Packet::SubAck(SubAck {
            packet_id: 9,
            return_codes: many,
        }));
    }

    #[test]
    fn invalid_return_codes() {
        for code in (3..=255u8).filter(|&c| c != 0x80) {
            assert_eq!(
                decode_err(&[0x90, 0x04, 0x00, 0x01, 0x00, code]),
                DecodeError::MalformedPacket("unknown SUBACK return code")
            );
        }
    }

    #[test]
    fn zero_packet_id() {
        assert_eq!(
            decode_err(&[0x90, 0x03, 0x00, 0x00, 0x00]),
            DecodeError::ZeroPacketId
        );
    }

    #[test]
    fn short_bodies() {
        assert!(matches!(
            decode_err(&[0x90, 0x00]),
            DecodeError::MalformedPacket(_)
        ));
        assert!(matches!(
            decode_err(&[0x90, 0x01, 0x00]),
            DecodeError::MalformedPacket(_)
        ));
        assert_eq!(
            decode_err(&[0x90, 0x02, 0x00, 0x01]),
            DecodeError::MalformedPacket("SUBACK without return codes")
        );
    }

    #[test]
    fn reserved_flags() {
        for flags in 1..16u8 {
            assert_eq!(
                decode_err(&[0x90 | flags, 0x03, 0x00, 0x01, 0x00]),
                DecodeError::InvalidFlags {
                    packet_type: 9,
                    flags
                }
            );
        }
    }
}
