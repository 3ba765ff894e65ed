//! CONNACK [MQTT-3.2]: acknowledge flags (session present) and return code.
//!
//! Must not decide which return code to send; that is the broker's job.

use bytes::{BufMut, BytesMut};

use super::fixed_header::CONNACK;
use super::strings::Reader;
use super::{ConnAck, ConnectReturnCode, DecodeError};

pub(super) fn decode(body: &[u8]) -> Result<ConnAck, DecodeError> {
    let mut r = Reader::new(body);
    let ack_flags = r.read_u8()?;
    if ack_flags & !1 != 0 {
        return Err(DecodeError::MalformedPacket(
            "reserved CONNACK acknowledge flags set",
        ));
    }
    let code = ConnectReturnCode::from_u8(r.read_u8()?)
        .ok_or(DecodeError::MalformedPacket("unknown CONNACK return code"))?;
    r.finish()?;
    Ok(ConnAck {
        session_present: ack_flags == 1,
        code,
    })
}

pub(super) fn encode(p: &ConnAck, out: &mut BytesMut) {
    out.reserve(4);
    out.put_u8(CONNACK << 4);
    out.put_u8(2);
    out.put_u8(u8::from(p.session_present));
    out.put_u8(p.code as u8);
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::Packet;
    use super::*;

    const CODES: [ConnectReturnCode; 6] = [
        ConnectReturnCode::Accepted,
        ConnectReturnCode::UnacceptableProtocolVersion,
        ConnectReturnCode::IdentifierRejected,
        ConnectReturnCode::ServerUnavailable,
        ConnectReturnCode::BadUserNameOrPassword,
        ConnectReturnCode::NotAuthorized,
    ];

    #[test]
    fn round_trips() {
        for code in CODES {
            for session_present in [false, true] {
                let encoded = assert_round_trip(&Packet::ConnAck(ConnAck {
                    session_present,
                    code,
                }));
                assert_eq!(
                    &encoded[..],
                    &[0x20, 0x02, u8::from(session_present), code as u8]
                );
            }
        }
    }

    #[test]
    fn reserved_ack_flags() {
        for flags in 2..=255u8 {
            assert_eq!(
                decode_err(&[0x20, 0x02, flags, 0x00]),
                DecodeError::MalformedPacket("reserved CONNACK acknowledge flags set")
            );
        }
    }

    #[test]
    fn unknown_return_code() {
        for code in 6..=255u8 {
            assert_eq!(
                decode_err(&[0x20, 0x02, 0x00, code]),
                DecodeError::MalformedPacket("unknown CONNACK return code")
            );
        }
    }

    #[test]
    fn wrong_length() {
        assert!(matches!(
            decode_err(&[0x20, 0x00]),
            DecodeError::MalformedPacket(_)
        ));
        assert!(matches!(
            decode_err(&[0x20, 0x01, 0x00]),
            DecodeError::MalformedPacket(_)
        ));
        assert!(matches!(
            decode_err(&[0x20, 0x03, 0x00, 0x00, 0x00]),
            DecodeError::MalformedPacket(_)
        ));
    }

    #[test]
    fn fixed_header_flags_must_be_zero() {
        assert_eq!(
            decode_err(&[0x21, 0x02, 0x00, 0x00]),
            DecodeError::InvalidFlags {
                packet_type: 2,
                flags: 1
            }
        );
    }
}
