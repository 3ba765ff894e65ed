//! Helpers shared by the per-packet test modules: round trips through `encode` and `decode`.

use super::*;

/// Largest packet size, for tests that do not care about the limit.
pub const MAX: usize = PROTOCOL_MAX_PACKET_SIZE;

pub fn encode_packet(packet: &Packet) -> BytesMut {
    let mut out = BytesMut::new();
    packet.encode(&mut out).expect("encodable");
    out
}

/// A raw packet: `first_byte`, the minimal remaining length for `body`, then `body`.
pub fn frame(first_byte: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first_byte];
    let mut len = body.len();
    loop {
        let byte = (len % 128) as u8;
        len /= 128;
        out.push(if len > 0 { byte | 0x80 } else { byte });
        if len == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

/// Decodes `bytes` (which must hold exactly one whole packet) with the protocol maximum.
pub fn decode_one(bytes: &[u8]) -> Result<Packet, DecodeError> {
    let mut buf = BytesMut::from(bytes);
    let packet = decode(&mut buf, MAX)?.expect("a whole packet");
    assert!(buf.is_empty(), "{} bytes left over", buf.len());
    Ok(packet)
}

/// The error from decoding `bytes`, which must be a whole (malformed) packet.
pub fn decode_err(bytes: &[u8]) -> DecodeError {
    let mut buf = BytesMut::from(bytes);
    match decode(&mut buf, MAX) {
        Err(e) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

/// Encodes `packet` and checks: every strict prefix decodes to `Ok(None)` without touching the
/// buffer; the whole decodes back to `packet` consuming everything; two copies back to back
/// (and the packet followed by a PINGREQ) decode one at a time. Returns the encoding.
pub fn assert_round_trip(packet: &Packet) -> BytesMut {
    let encoded = encode_packet(packet);
    for len in 0..encoded.len() {
        let mut buf = BytesMut::from(&encoded[..len]);
        assert_eq!(decode(&mut buf, MAX), Ok(None), "prefix of {len} bytes");
        assert_eq!(
            &buf[..],
            &encoded[..len],
            "prefix of {len} bytes was modified"
        );
    }
    assert_eq!(decode_one(&encoded).as_ref(), Ok(packet));

    let mut buf = BytesMut::new();
    buf.extend_from_slice(&encoded);
    buf.extend_from_slice(&encoded);
    buf.extend_from_slice(&[0xc0, 0x00]);
    assert_eq!(decode(&mut buf, MAX).as_ref(), Ok(&Some(packet.clone())));
    assert_eq!(buf.len(), encoded.len() + 2);
    assert_eq!(decode(&mut buf, MAX).as_ref(), Ok(&Some(packet.clone())));
    assert_eq!(&buf[..], &[0xc0, 0x00]);
    assert_eq!(decode(&mut buf, MAX), Ok(Some(Packet::PingReq)));
    assert!(buf.is_empty());
    assert_eq!(decode(&mut buf, MAX), Ok(None));
    encoded
}
