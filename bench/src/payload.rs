//! The benchmark payload: a fixed 24-byte header, then padding up to `--size`.
//!
//! ```text
//! offset 0   u32 run id       (random per run: messages of other runs are "foreign")
//! offset 4   u32 publisher id (dense, 0..publishers)
//! offset 8   u64 sequence     (0, 1, 2 ... per publisher)
//! offset 16  u64 send time    (CLOCK_MONOTONIC ns; in open loop the *scheduled* send time)
//! offset 24  padding          (bytes 0x2e, '.')
//! ```
//! All integers are big-endian. Decoding never trusts the input: a short or foreign payload is
//! `None`, never a panic.

use bytes::{BufMut, Bytes, BytesMut};

/// Length of the header, and so the smallest `--size`.
pub const HEADER_LEN: usize = 24;

/// What every benchmark message carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub run_id: u32,
    pub publisher: u32,
    pub seq: u64,
    pub sent_ns: u64,
}

impl Header {
    /// Appends the header and padding to `out`: `size.max(HEADER_LEN)` bytes in all.
    pub fn write(&self, size: usize, out: &mut BytesMut) {
        out.reserve(size.max(HEADER_LEN));
        out.put_u32(self.run_id);
        out.put_u32(self.publisher);
        out.put_u64(self.seq);
        out.put_u64(self.sent_ns);
        out.put_bytes(b'.', size.saturating_sub(HEADER_LEN));
    }

    /// Overwrites the first [`HEADER_LEN`] bytes of `payload` with the header, leaving the padding
    /// after it as it is (a publisher keeps one padded payload and stamps it per message). `false`,
    /// and nothing written, if `payload` is shorter than the header.
    pub fn stamp(&self, payload: &mut [u8]) -> bool {
        let Some(h) = payload.get_mut(..HEADER_LEN) else {
            return false;
        };
        h[0..4].copy_from_slice(&self.run_id.to_be_bytes());
        h[4..8].copy_from_slice(&self.publisher.to_be_bytes());
        h[8..16].copy_from_slice(&self.seq.to_be_bytes());
        h[16..24].copy_from_slice(&self.sent_ns.to_be_bytes());
        true
    }

    /// A payload of `size.max(HEADER_LEN)` bytes.
    pub fn to_payload(&self, size: usize) -> Bytes {
        let mut out = BytesMut::with_capacity(size.max(HEADER_LEN));
        self.write(size, &mut out);
        out.freeze()
    }

    /// Reads the header from the front of `payload`; `None` if it is shorter than [`HEADER_LEN`].
    pub fn read(payload: &[u8]) -> Option<Header> {
        let h = payload.get(..HEADER_LEN)?;
        let u32_at = |i: usize| u32::from_be_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        let u64_at = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&h[i..i + 8]);
            u64::from_be_bytes(b)
        };
        Some(Header {
            run_id: u32_at(0),
            publisher: u32_at(4),
            seq: u64_at(8),
            sent_ns: u64_at(16),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_padding() {
        let h = Header {
            run_id: 0xdead_beef,
            publisher: 7,
            seq: u64::MAX - 1,
            sent_ns: 123_456_789_012,
        };
        for size in [0, 1, HEADER_LEN, HEADER_LEN + 1, 64, 4096] {
            let p = h.to_payload(size);
            assert_eq!(p.len(), size.max(HEADER_LEN));
            assert_eq!(Header::read(&p), Some(h));
            assert!(p[HEADER_LEN..].iter().all(|&b| b == b'.'));
        }
    }

    #[test]
    fn stamping_a_padded_payload_equals_writing_it() {
        let h = Header {
            run_id: 9,
            publisher: 8,
            seq: 7,
            sent_ns: 6,
        };
        let mut kept = Header {
            run_id: 1,
            publisher: 2,
            seq: 3,
            sent_ns: 4,
        }
        .to_payload(64)
        .to_vec();
        assert!(h.stamp(&mut kept));
        assert_eq!(kept, h.to_payload(64).to_vec());
        assert!(!h.stamp(&mut [0u8; HEADER_LEN - 1]));
    }

    #[test]
    fn short_payloads_are_rejected() {
        let p = Header {
            run_id: 1,
            publisher: 2,
            seq: 3,
            sent_ns: 4,
        }
        .to_payload(HEADER_LEN);
        for len in 0..HEADER_LEN {
            assert_eq!(Header::read(&p[..len]), None);
        }
    }

    #[test]
    fn layout_is_big_endian() {
        let p = Header {
            run_id: 0x0102_0304,
            publisher: 0x0506_0708,
            seq: 0x090a_0b0c_0d0e_0f10,
            sent_ns: 0x1112_1314_1516_1718,
        }
        .to_payload(HEADER_LEN);
        let expected: Vec<u8> = (1..=24).collect();
        assert_eq!(&p[..], &expected[..]);
    }
}
