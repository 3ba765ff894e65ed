//! Field-level wire primitives [MQTT-1.5]: big-endian two- and four-byte integers, packet
//! identifiers, length-prefixed UTF-8 strings (well-formed, no U+0000 [MQTT-1.5.3-1/2]),
//! length-prefixed binary data and (MQTT 5) variable byte integers, plus [`Reader`], the
//! bounds-checked cursor every body decoder uses.
//!
//! Must not know any packet layout, allocate, or panic on short or hostile input.

use bytes::{BufMut, BytesMut};

use super::{DecodeError, EncodeError};

const TRUNCATED: DecodeError = DecodeError::MalformedPacket("body ends inside a field");
const TRAILING: DecodeError = DecodeError::MalformedPacket("trailing bytes after the last field");

/// A cursor over one packet body. Every read either succeeds or returns
/// [`DecodeError::MalformedPacket`]; it never reads past the body.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Offset of the next unread byte from the start of the body.
    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).ok_or(TRUNCATED)?;
        let bytes = self.buf.get(self.pos..end).ok_or(TRUNCATED)?;
        self.pos = end;
        Ok(bytes)
    }

    /// Everything not read yet.
    pub fn rest(&mut self) -> &'a [u8] {
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        self.pos = self.buf.len();
        rest
    }

    pub fn read_u8(&mut self) -> Result<u8, DecodeError> {
        match *self.take(1)? {
            [b] => Ok(b),
            _ => Err(TRUNCATED),
        }
    }

    pub fn read_u16(&mut self) -> Result<u16, DecodeError> {
        match *self.take(2)? {
            [hi, lo] => Ok(u16::from_be_bytes([hi, lo])),
            _ => Err(TRUNCATED),
        }
    }

    pub fn read_u32(&mut self) -> Result<u32, DecodeError> {
        match *self.take(4)? {
            [a, b, c, d] => Ok(u32::from_be_bytes([a, b, c, d])),
            _ => Err(TRUNCATED),
        }
    }

    /// A variable byte integer [MQTT-1.5.5] (MQTT 5 property lengths and subscription
    /// identifiers): at most four bytes, else [`DecodeError::MalformedVariableByteInteger`].
    pub fn read_varint(&mut self) -> Result<u32, DecodeError> {
        let mut value = 0u32;
        for i in 0..4 {
            let byte = self.read_u8()?;
            value |= u32::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(DecodeError::MalformedVariableByteInteger)
    }

    /// A packet identifier, which must not be 0.
    pub fn read_packet_id(&mut self) -> Result<u16, DecodeError> {
        match self.read_u16()? {
            0 => Err(DecodeError::ZeroPacketId),
            id => Ok(id),
        }
    }

    /// Two-byte length, then that many bytes.
    pub fn read_binary(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.read_u16()?;
        self.take(usize::from(len))
    }

    /// Two-byte length, then that many bytes of UTF-8 without U+0000.
    pub fn read_string(&mut self) -> Result<&'a str, DecodeError> {
        check_str(self.read_binary()?)
    }

    /// Succeeds only when the whole body has been read.
    pub fn finish(self) -> Result<(), DecodeError> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(TRAILING)
        }
    }
}

/// `bytes` as a `str` if it is well-formed UTF-8 without U+0000.
pub(crate) fn check_str(bytes: &[u8]) -> Result<&str, DecodeError> {
    let s = std::str::from_utf8(bytes).map_err(|_| DecodeError::InvalidUtf8)?;
    if bytes.contains(&0) {
        return Err(DecodeError::NullCharacter);
    }
    Ok(s)
}

/// Encoded size of a length-prefixed field holding `len` bytes.
pub(crate) fn prefixed_len(len: usize) -> Result<usize, EncodeError> {
    if len > usize::from(u16::MAX) {
        return Err(EncodeError::StringTooLong);
    }
    Ok(2 + len)
}

/// Writes a length-prefixed field. The caller has checked the length with [`prefixed_len`].
pub(crate) fn put_prefixed(out: &mut BytesMut, bytes: &[u8]) {
    debug_assert!(bytes.len() <= usize::from(u16::MAX));
    out.put_u16(bytes.len() as u16);
    out.put_slice(bytes);
}

/// Largest value of a variable byte integer (four bytes).
pub(crate) const MAX_VARINT: u32 = 268_435_455;

/// Bytes a variable byte integer takes for `value` (1..=4; 4 also for out-of-range values, which
/// the encoders refuse before writing).
pub(crate) fn varint_len(value: usize) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Writes `value` as a variable byte integer; the caller has checked it is at most [`MAX_VARINT`].
pub(crate) fn put_varint(out: &mut BytesMut, value: usize) {
    debug_assert!(value <= MAX_VARINT as usize);
    let mut rest = value;
    loop {
        let byte = (rest & 0x7f) as u8;
        rest >>= 7;
        if rest == 0 {
            out.put_u8(byte);
            return;
        }
        out.put_u8(byte | 0x80);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fields_in_order() {
        let body = [
            0x00, 0x03, b'a', b'/', b'b', 0x12, 0x34, 0x07, 0x00, 0x00, 0xff,
        ];
        let mut r = Reader::new(&body);
        assert_eq!(r.read_string(), Ok("a/b"));
        assert_eq!(r.position(), 5);
        assert_eq!(r.read_packet_id(), Ok(0x1234));
        assert_eq!(r.read_u8(), Ok(7));
        assert_eq!(r.read_binary(), Ok(&[][..]));
        assert!(!r.is_empty());
        assert_eq!(r.rest(), &[0xff]);
        assert!(r.is_empty());
        assert_eq!(r.rest(), &[] as &[u8]);
        assert_eq!(r.finish(), Ok(()));
    }

    #[test]
    fn short_input_is_malformed() {
        assert_eq!(Reader::new(&[]).read_u8(), Err(TRUNCATED));
        assert_eq!(Reader::new(&[1]).read_u16(), Err(TRUNCATED));
        assert_eq!(
            Reader::new(&[0, 3, b'a', b'b']).read_string(),
            Err(TRUNCATED)
        );
        assert_eq!(Reader::new(&[0xff, 0xff]).read_binary(), Err(TRUNCATED));
        assert_eq!(Reader::new(&[1, 2]).take(usize::MAX), Err(TRUNCATED));
        // A failed read consumes nothing.
        let mut r = Reader::new(&[0, 5, b'x']);
        assert_eq!(r.read_binary(), Err(TRUNCATED));
        assert_eq!(r.position(), 2);
    }

    #[test]
    fn trailing_bytes_are_malformed() {
        let mut r = Reader::new(&[0, 1, 2]);
        r.read_u16().unwrap();
        assert_eq!(r.finish(), Err(TRAILING));
    }

    #[test]
    fn zero_packet_id() {
        assert_eq!(
            Reader::new(&[0, 0]).read_packet_id(),
            Err(DecodeError::ZeroPacketId)
        );
    }

    #[test]
    fn string_validation() {
        assert_eq!(check_str("hé/世界".as_bytes()), Ok("hé/世界"));
        assert_eq!(check_str(b""), Ok(""));
        assert_eq!(check_str(&[0xff]), Err(DecodeError::InvalidUtf8));
        // Overlong encoding of U+0000 and an encoded surrogate are not UTF-8 [MQTT-1.5.3-1].
        assert_eq!(check_str(&[0xc0, 0x80]), Err(DecodeError::InvalidUtf8));
        assert_eq!(
            check_str(&[0xed, 0xa0, 0x80]),
            Err(DecodeError::InvalidUtf8)
        );
        assert_eq!(check_str(b"a\0b"), Err(DecodeError::NullCharacter));
        assert_eq!(
            Reader::new(&[0, 2, b'a', 0]).read_string(),
            Err(DecodeError::NullCharacter)
        );
        assert_eq!(
            Reader::new(&[0, 1, 0x80]).read_string(),
            Err(DecodeError::InvalidUtf8)
        );
    }

    #[test]
    fn variable_byte_integers() {
        for value in [
            0, 1, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152, MAX_VARINT,
        ] {
            let mut out = BytesMut::new();
            put_varint(&mut out, value as usize);
            assert_eq!(out.len(), varint_len(value as usize), "{value}");
            let mut r = Reader::new(&out);
            assert_eq!(r.read_varint(), Ok(value));
            assert!(r.is_empty());
            // Every strict prefix ends inside the field.
            for n in 0..out.len() {
                assert_eq!(Reader::new(&out[..n]).read_varint(), Err(TRUNCATED));
            }
        }
        assert_eq!(
            Reader::new(&[0x80, 0x80, 0x80, 0x80, 0x01]).read_varint(),
            Err(DecodeError::MalformedVariableByteInteger)
        );
        assert_eq!(Reader::new(&[0, 0, 1, 2]).read_u32(), Ok(258));
        assert_eq!(Reader::new(&[0, 0, 1]).read_u32(), Err(TRUNCATED));
    }

    #[test]
    fn encode_prefixed() {
        let mut out = BytesMut::new();
        put_prefixed(&mut out, b"MQTT");
        assert_eq!(&out[..], b"\x00\x04MQTT");
        assert_eq!(prefixed_len(0), Ok(2));
        assert_eq!(prefixed_len(65_535), Ok(65_537));
        assert_eq!(prefixed_len(65_536), Err(EncodeError::StringTooLong));
    }
}
