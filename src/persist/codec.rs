//! The bytes of journal and snapshot files: a file header, then one frame per [`Record`].
//!
//! Must not: open or write files, read a clock, or interpret records (the fold in `state.rs` does).
//!
//! # File
//! `magic "AMQTTJNL" (8 bytes) | format version u16 | kind u8 (1 journal, 2 snapshot) | 0 u8`:
//! [`HEADER_LEN`] bytes, written by [`encode_header`], checked by [`check_header`]. A snapshot is
//! the same frames as a journal (the records that rebuild a state), so one reader serves both.
//!
//! # Blocks and frames
//! After the header, the file is a sequence of blocks: `len u32 | crc32c u32 | frames`, integers
//! little-endian. `len` counts the frames; the CRC-32C (Castagnoli) covers them. A block is what
//! one journal write appends (a shard's records of one loop turn, cut at [`BLOCK_TARGET`] bytes),
//! so one CRC is computed per batch rather than per record: over a whole batch the checksum runs
//! at the instruction's interleaved speed, a few times faster than over many short frames. A write
//! cut short by a crash leaves a block whose CRC fails: reading stops at its start, and the
//! records in it were never acknowledged.
//!
//! A frame inside a block is `len u32 | type u8 | body`, `len` counting `type + body`. A block
//! `len` of 0 is never written: it is how the zeroed, unwritten end of a preallocated segment
//! reads. A `len` over [`MAX_BLOCK_LEN`] (or a frame's over [`MAX_FRAME_LEN`]) is corruption (the
//! largest record, a retained message of the largest MQTT payload, stays under it), never an
//! allocation.
//!
//! Format version 1 (written before blocks) framed each record alone, `len | crc32c | type |
//! body`; files of that version are still read, so an upgrade loses nothing.
//!
//! # Bodies
//! One per record type, described in `body.rs`. The encoding is canonical (one byte string per
//! record), so a decoded frame re-encodes to the same bytes.
//!
//! # Reading
//! [`Reader`] yields the records of a file's bytes in order and stops at the first block that is
//! cut short, fails its CRC, or holds a frame with an unknown type or a body that does not decode
//! (a block is checked whole before any of its records is yielded): its [`ReadError`] says where
//! the intact prefix ends (the offset to truncate the file at) and why. Topics and payloads are
//! slices of the file's [`Bytes`]: reading copies no message.

use std::collections::VecDeque;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use thiserror::Error;

use super::body::{done_body, encode_body, enqueue_body, stored_message_body};
use super::body_read::{decode_body, Body};
use super::record::{MsgId, Record};
use crate::protocol::{Message, QoS};

pub use super::body::{BodyError, EncodeError, MAX_FRAME_LEN};

/// The first bytes of every journal and snapshot file.
pub const MAGIC: [u8; 8] = *b"AMQTTJNL";
/// The format this build writes (it reads [`FORMAT_V1`] too).
pub const FORMAT_VERSION: u16 = 2;
/// The format written before blocks: one CRC per record.
pub const FORMAT_V1: u16 = 1;
/// Bytes of the file header.
pub const HEADER_LEN: usize = 12;
/// Bytes of a block before its frames: `len` and `crc32c`.
pub const BLOCK_HEADER_LEN: usize = 8;
/// Bytes of a frame before its type: `len`.
pub const FRAME_HEADER_LEN: usize = 4;
/// Bytes of a format-1 frame before its type: `len` and `crc32c`.
const V1_FRAME_HEADER_LEN: usize = 8;
/// A writer closes a block once it holds this many bytes (the next record opens another).
pub const BLOCK_TARGET: usize = 1 << 20;
/// The largest `len` a block may have: a full block plus the largest frame.
pub const MAX_BLOCK_LEN: usize = BLOCK_TARGET + FRAME_HEADER_LEN + MAX_FRAME_LEN;
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
    #[error("format version {0}; this build reads versions {FORMAT_V1} and {FORMAT_VERSION}")]
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
    #[error("block header cut short ({available} of {BLOCK_HEADER_LEN} bytes)")]
    ShortHeader { available: usize },
    #[error("block of {len} bytes cut short ({available} bytes present)")]
    ShortFrame { len: usize, available: usize },
    #[error("block length 0 (the zeroed, unwritten end of a preallocated segment)")]
    Unwritten,
    #[error("block length {0} is over the limit of {MAX_BLOCK_LEN} bytes")]
    TooLong(u32),
    #[error("frame inside a block: {0}")]
    BadFrame(&'static str),
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
    if version != FORMAT_VERSION && version != FORMAT_V1 {
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

/// Appends `record` as a block of its own (a self-contained, checked unit: what a snapshot or a
/// test writes record by record). On error nothing is appended.
pub fn encode(record: &Record, out: &mut BytesMut) -> Result<(), EncodeError> {
    let block = begin_block(out);
    let result = encode_frame(record, out);
    end_block(out, block);
    result
}

/// Opens a block at the end of `out`; returns where it starts, for [`end_block`].
pub fn begin_block(out: &mut BytesMut) -> usize {
    let start = out.len();
    out.put_bytes(0, BLOCK_HEADER_LEN);
    start
}

/// Closes the block opened at `start`: writes its length and CRC. A block with no frame is
/// removed (a zero length would read as the unwritten end of a file).
pub fn end_block(out: &mut BytesMut, start: usize) {
    let len = out.len() - start - BLOCK_HEADER_LEN;
    if len == 0 {
        out.truncate(start);
        return;
    }
    let crc = crc32c::crc32c(&out[start + BLOCK_HEADER_LEN..]);
    // A writer closes blocks at BLOCK_TARGET, and a frame is at most MAX_FRAME_LEN: len fits.
    out[start..start + 4].copy_from_slice(&(len as u32).to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Appends `record` as one frame of the open block. On error nothing is appended.
pub fn encode_frame(record: &Record, out: &mut BytesMut) -> Result<(), EncodeError> {
    frame(out, |out| encode_body(record, out))
}

/// Appends the frame of `Record::Message { id, message }` with the message's retain flag cleared
/// (as a live publish is stored), without cloning the message. The same bytes as [`encode_frame`].
pub fn encode_stored_message(
    id: MsgId,
    message: &Message,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    frame(out, |out| stored_message_body(id, message, false, out))
}

/// Appends the frame of `Record::Enqueue` from borrowed fields: the same bytes as
/// [`encode_frame`].
pub fn encode_enqueue(
    client_id: &str,
    id: MsgId,
    qos: QoS,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    frame(out, |out| enqueue_body(client_id, id, qos, out))
}

/// Appends the frame of `Record::Done` from borrowed fields: the same bytes as [`encode_frame`].
pub fn encode_done(client_id: &str, id: MsgId, out: &mut BytesMut) -> Result<(), EncodeError> {
    frame(out, |out| done_body(client_id, id, out))
}

/// Frames the body `body` writes: its length in front. On error nothing is appended.
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
    // len ≤ MAX_FRAME_LEN < u32::MAX.
    out[start..start + 4].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(())
}

/// Every record of `blocks` (blocks without a file header, as the broker core hands a batch
/// over), or where and why they stop reading.
pub fn decode_all(blocks: Bytes) -> Result<Vec<Record>, ReadError> {
    Reader::new(blocks, 0).collect()
}

/// The records of a file's bytes, in order, up to the first block that does not read (see the
/// module docs). Yields `Ok(record)`s, then at most one `Err` saying where and why it stopped, then
/// nothing; a clean end (every byte read) yields no error.
#[derive(Debug, Clone)]
pub struct Reader {
    data: Bytes,
    /// Where the next block (or format-1 frame) starts.
    offset: usize,
    version: u16,
    /// The records of the block read last, not yet yielded.
    pending: VecDeque<Record>,
    stopped: bool,
}

impl Reader {
    /// Reads blocks from `offset` of `data` (after the header: [`HEADER_LEN`]), without checking a
    /// header (the format is this build's). Offsets in errors count from the start of `data`.
    pub fn new(data: Bytes, offset: usize) -> Reader {
        Reader::of_version(data, offset, FORMAT_VERSION)
    }

    fn of_version(data: Bytes, offset: usize, version: u16) -> Reader {
        Reader {
            data,
            offset,
            version,
            pending: VecDeque::new(),
            stopped: false,
        }
    }

    /// Checks the header of `data` and reads the blocks after it.
    pub fn open(data: Bytes) -> Result<(FileKind, Reader), HeaderError> {
        let kind = check_header(&data)?;
        let version = u16::from_le_bytes([data[MAGIC.len()], data[MAGIC.len() + 1]]);
        Ok((kind, Reader::of_version(data, HEADER_LEN, version)))
    }

    /// The end of the records read so far: after an error, where the intact prefix ends.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// The `len | crc32c` unit at `offset`: where its checked bytes start and end.
    fn checked_unit(&self, max_len: usize) -> Result<(usize, usize), StopReason> {
        let rest = self.data.get(self.offset..).unwrap_or_default();
        let Some(mut header) = rest.get(..BLOCK_HEADER_LEN) else {
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
        if len > max_len {
            return Err(StopReason::TooLong(len32));
        }
        let available = rest.len() - BLOCK_HEADER_LEN;
        if available < len {
            return Err(StopReason::ShortFrame { len, available });
        }
        let start = self.offset + BLOCK_HEADER_LEN;
        let computed = crc32c::crc32c(&self.data[start..start + len]);
        if computed != stored {
            return Err(StopReason::Crc { stored, computed });
        }
        Ok((start, start + len))
    }

    /// Reads the block at `offset` whole into `pending`; its length.
    fn read_block(&mut self) -> Result<usize, StopReason> {
        let (start, end) = self.checked_unit(MAX_BLOCK_LEN)?;
        let mut at = start;
        let mut records = VecDeque::new();
        while at < end {
            let body_start = at + FRAME_HEADER_LEN;
            // Within the block, not merely within the file: blocks may follow.
            let Some(mut header) = self.data.get(at..body_start).filter(|_| body_start <= end)
            else {
                return Err(StopReason::BadFrame("header crosses the block's end"));
            };
            let len = header.get_u32_le() as usize;
            if len == 0 {
                return Err(StopReason::BadFrame("length 0"));
            }
            if len > MAX_FRAME_LEN || len > end - body_start {
                return Err(StopReason::BadFrame("length crosses the block's end"));
            }
            records.push_back(decode_frame(&self.data, body_start, body_start + len)?);
            at = body_start + len;
        }
        self.pending = records;
        Ok(end - self.offset)
    }

    /// Reads the format-1 frame at `offset` into `pending`; its length.
    fn read_v1_frame(&mut self) -> Result<usize, StopReason> {
        let (start, end) = self.checked_unit(MAX_FRAME_LEN)?;
        self.pending
            .push_back(decode_frame(&self.data, start, end)?);
        Ok(V1_FRAME_HEADER_LEN + end - start)
    }
}

/// The record of the frame whose type byte is at `start` and which ends at `end`.
fn decode_frame(data: &Bytes, start: usize, end: usize) -> Result<Record, StopReason> {
    let record_type = data[start];
    let body = Body::new(data, start + 1, end);
    match decode_body(record_type, body) {
        Ok(Some(record)) => Ok(record),
        Ok(None) => Err(StopReason::UnknownType(record_type)),
        Err(error) => Err(StopReason::Body { record_type, error }),
    }
}

impl Iterator for Reader {
    type Item = Result<Record, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(record) = self.pending.pop_front() {
            return Some(Ok(record));
        }
        if self.stopped || self.offset >= self.data.len() {
            return None;
        }
        let read = if self.version == FORMAT_V1 {
            self.read_v1_frame()
        } else {
            self.read_block()
        };
        match read {
            Ok(len) => {
                self.offset += len;
                self.pending.pop_front().map(Ok)
            }
            Err(reason) => {
                self.stopped = true;
                self.pending.clear();
                Some(Err(ReadError {
                    offset: self.offset,
                    reason,
                }))
            }
        }
    }
}
