//! The bytes of journal and snapshot files: a file header, then one frame per [`Record`].
//!
//! Must not: open or write files, read a clock, or interpret records (the fold in `state.rs` does).
//!
//! # File
//! `magic "AMQTTJNL" (8 bytes) | format version u16 | kind u8 (1 journal, 2 snapshot) | 0 u8`:
//! [`HEADER_LEN`] bytes, written by [`encode_header`], checked by [`check_header`]. A snapshot is
//! the same frames as a journal (the records that rebuild a state), so one reader serves both.
//!
//! # Frame
//! `len u32 | crc32c u32 | type u8 | body`, integers little-endian. `len` counts `type + body`; the
//! CRC-32C (Castagnoli) covers `type + body`. A `len` of 0 is never written: it is how the zeroed,
//! unwritten end of a preallocated segment reads. A `len` over [`MAX_FRAME_LEN`] is corruption (the
//! largest record, a retained message of the largest MQTT payload, stays under it), never an
//! allocation.
//!
//! # Bodies
//! One per record type, described in `body.rs`. The encoding is canonical (one byte string per
//! record), so a decoded frame re-encodes to the same bytes.
//!
//! # Reading
//! [`Reader`] yields the records of a file's bytes in order and stops at the first frame that is
//! cut short, fails its CRC, has an unknown type or a body that does not decode: its [`ReadError`]
//! says where the intact prefix ends (the offset to truncate the file at) and why. Topics and
//! payloads are slices of the file's [`Bytes`]: reading copies no message.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use thiserror::Error;

use super::body::{decode_body, done_body, encode_body, enqueue_body, stored_message_body, Body};
use super::record::{MsgId, Record};
use crate::protocol::{Message, QoS};

pub use super::body::{BodyError, EncodeError, MAX_FRAME_LEN};

/// The first bytes of every journal and snapshot file.
pub const MAGIC: [u8; 8] = *b"AMQTTJNL";
/// The format this build writes and reads.
pub const FORMAT_VERSION: u16 = 1;
/// Bytes of the file header.
pub const HEADER_LEN: usize = 12;
/// Bytes of a frame before its type: `len` and `crc32c`.
pub const FRAME_HEADER_LEN: usize = 8;
/// What a file holds (the header's kind byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// Records appended as a shard makes them.
    Journal = 1,
    /// The records that rebuild a whole state.
    Snapshot = 2,
}

/// Why a file's first bytes are not a header this build reads.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HeaderError {
    #[error("{0} bytes, shorter than the {HEADER_LEN}-byte file header")]
    Short(usize),
    #[error("not an amqtt journal or snapshot (first bytes {0:02x?})")]
    BadMagic([u8; 8]),
    #[error("format version {0}; this build reads version {FORMAT_VERSION}")]
    UnsupportedVersion(u16),
    #[error("unknown file kind {0}")]
    UnknownKind(u8),
    #[error("reserved header byte is {0}, not 0")]
    Reserved(u8),
}

/// Where the intact prefix of a file ends, and why reading stopped there.
#[derive(Debug, PartialEq, Eq, Error)]
#[error("records intact up to byte {offset}: {reason}")]
pub struct ReadError {
    /// Byte offset of the first frame not read (from the start of the bytes given to the
    /// [`Reader`], header included): truncate the file here.
    pub offset: usize,
    pub reason: StopReason,
}

/// Why a frame was not read.
#[derive(Debug, PartialEq, Eq, Error)]
pub enum StopReason {
    #[error("frame header cut short ({available} of 8 bytes)")]
    ShortHeader { available: usize },
    #[error("frame of {len} bytes cut short ({available} bytes present)")]
    ShortFrame { len: usize, available: usize },
    #[error("frame length 0 (the zeroed, unwritten end of a preallocated segment)")]
    Unwritten,
    #[error("frame length {0} is over the limit of {MAX_FRAME_LEN} bytes")]
    TooLong(u32),
    #[error("CRC mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    Crc { stored: u32, computed: u32 },
    #[error("unknown record type {0}")]
    UnknownType(u8),
    #[error("record type {record_type}: {error}")]
    Body { record_type: u8, error: BodyError },
}

/// Appends the file header for a file of `kind`.
pub fn encode_header(kind: FileKind, out: &mut BytesMut) {
    out.put_slice(&MAGIC);
    out.put_u16_le(FORMAT_VERSION);
    out.put_u8(kind as u8);
    out.put_u8(0);
}

/// Checks that `data` starts with a header this build reads; the file's kind. The frames start at
/// [`HEADER_LEN`].
pub fn check_header(data: &[u8]) -> Result<FileKind, HeaderError> {
    let Some(header) = data.get(..HEADER_LEN) else {
        return Err(HeaderError::Short(data.len()));
    };
    let (magic, mut rest) = header.split_at(MAGIC.len());
    if magic != MAGIC {
        let mut first = [0; 8];
        first.copy_from_slice(magic);
        return Err(HeaderError::BadMagic(first));
    }
    let version = rest.get_u16_le();
    if version != FORMAT_VERSION {
        return Err(HeaderError::UnsupportedVersion(version));
    }
    let kind = match rest.get_u8() {
        1 => FileKind::Journal,
        2 => FileKind::Snapshot,
        other => return Err(HeaderError::UnknownKind(other)),
    };
    match rest.get_u8() {
        0 => Ok(kind),
        other => Err(HeaderError::Reserved(other)),
    }
}

/// Appends `record` as one frame. On error nothing is appended.
pub fn encode(record: &Record, out: &mut BytesMut) -> Result<(), EncodeError> {
    frame(out, |out| encode_body(record, out))
}

/// Appends the frame of `Record::Message { id, message }` with the message's retain flag cleared
/// (as a live publish is stored), without cloning the message. The same bytes as [`encode`].
pub fn encode_stored_message(
    id: MsgId,
    message: &Message,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    frame(out, |out| stored_message_body(id, message, false, out))
}

/// Appends the frame of `Record::Enqueue` from borrowed fields: the same bytes as [`encode`].
pub fn encode_enqueue(
    client_id: &str,
    id: MsgId,
    qos: QoS,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    frame(out, |out| enqueue_body(client_id, id, qos, out))
}

/// Appends the frame of `Record::Done` from borrowed fields: the same bytes as [`encode`].
pub fn encode_done(client_id: &str, id: MsgId, out: &mut BytesMut) -> Result<(), EncodeError> {
    frame(out, |out| done_body(client_id, id, out))
}

/// Frames the body `body` writes: length and CRC in front. On error nothing is appended.
fn frame(
    out: &mut BytesMut,
    body: impl FnOnce(&mut BytesMut) -> Result<(), EncodeError>,
) -> Result<(), EncodeError> {
    let start = out.len();
    out.put_bytes(0, FRAME_HEADER_LEN);
    if let Err(error) = body(out) {
        out.truncate(start);
        return Err(error);
    }
    let len = out.len() - start - FRAME_HEADER_LEN;
    if len > MAX_FRAME_LEN {
        out.truncate(start);
        return Err(EncodeError::FrameTooLong { len });
    }
    let crc = crc32c::crc32c(&out[start + FRAME_HEADER_LEN..]);
    // Both fit: len ≤ MAX_FRAME_LEN < u32::MAX.
    out[start..start + 4].copy_from_slice(&(len as u32).to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// Every record of `frames` (frames without a file header, as the broker core hands a batch over),
/// or where and why they stop reading.
pub fn decode_all(frames: Bytes) -> Result<Vec<Record>, ReadError> {
    Reader::new(frames, 0).collect()
}

/// The records of a file's bytes, in order, up to the first frame that does not read (see the
/// module docs). Yields `Ok(record)`s, then at most one `Err` saying where and why it stopped, then
/// nothing; a clean end (every byte read) yields no error.
#[derive(Debug, Clone)]
pub struct Reader {
    data: Bytes,
    offset: usize,
    stopped: bool,
}

impl Reader {
    /// Reads frames from `offset` of `data` (after the header: [`HEADER_LEN`]), without checking a
    /// header. Offsets in errors count from the start of `data`.
    pub fn new(data: Bytes, offset: usize) -> Reader {
        Reader {
            data,
            offset,
            stopped: false,
        }
    }

    /// Checks the header of `data` and reads the frames after it.
    pub fn open(data: Bytes) -> Result<(FileKind, Reader), HeaderError> {
        let kind = check_header(&data)?;
        Ok((kind, Reader::new(data, HEADER_LEN)))
    }

    /// The end of the records read so far: after an error, where the intact prefix ends.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// The next frame's record and its length, or why it does not read.
    fn read_frame(&self) -> Result<(Record, usize), StopReason> {
        let rest = self.data.get(self.offset..).unwrap_or_default();
        let Some(mut header) = rest.get(..FRAME_HEADER_LEN) else {
            return Err(StopReason::ShortHeader {
                available: rest.len(),
            });
        };
        let len32 = header.get_u32_le();
        let stored = header.get_u32_le();
        let len = len32 as usize;
        if len == 0 {
            return Err(StopReason::Unwritten);
        }
        if len > MAX_FRAME_LEN {
            return Err(StopReason::TooLong(len32));
        }
        let available = rest.len() - FRAME_HEADER_LEN;
        if available < len {
            return Err(StopReason::ShortFrame { len, available });
        }
        let start = self.offset + FRAME_HEADER_LEN;
        let computed = crc32c::crc32c(&self.data[start..start + len]);
        if computed != stored {
            return Err(StopReason::Crc { stored, computed });
        }
        let record_type = self.data[start];
        let body = Body::new(&self.data, start + 1, start + len);
        match decode_body(record_type, body) {
            Ok(Some(record)) => Ok((record, FRAME_HEADER_LEN + len)),
            Ok(None) => Err(StopReason::UnknownType(record_type)),
            Err(error) => Err(StopReason::Body { record_type, error }),
        }
    }
}

impl Iterator for Reader {
    type Item = Result<Record, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.stopped || self.offset >= self.data.len() {
            return None;
        }
        match self.read_frame() {
            Ok((record, frame_len)) => {
                self.offset += frame_len;
                Some(Ok(record))
            }
            Err(reason) => {
                self.stopped = true;
                Some(Err(ReadError {
                    offset: self.offset,
                    reason,
                }))
            }
        }
    }
}
