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
//! Field encodings: `str` = u16 length + UTF-8 bytes (client ids, topics, filters); `payload` = u32
//! length + bytes; `qos` = u8 0..=2; `pid` = u16 packet identifier, never 0; `message` = `str` topic
//! (a valid topic name) | u8 flags (bits 0-1 QoS, bit 2 retain, the others 0) | `payload`;
//! `option<message>` = u8 0 (none) or 1 followed by `message`.
//!
//! | type | record           | body                                            |
//! |------|------------------|-------------------------------------------------|
//! | 1    | `SessionOpen`    | `str` client id                                 |
//! | 2    | `SessionDrop`    | `str` client id                                 |
//! | 3    | `SessionOffline` | `str` client id, u64 `at_unix_ms`               |
//! | 4    | `Subscribe`      | `str` client id, `str` filter (valid), `qos`    |
//! | 5    | `Unsubscribe`    | `str` client id, `str` filter (valid)           |
//! | 6    | `Will`           | `str` client id, `option<message>`              |
//! | 7    | `Message`        | u64 id, `message`                               |
//! | 8    | `Enqueue`        | `str` client id, u64 id, `qos`                  |
//! | 9    | `PacketId`       | `str` client id, u64 id, `pid`                  |
//! | 10   | `Released`       | `str` client id, u64 id                         |
//! | 11   | `Done`           | `str` client id, u64 id                         |
//! | 12   | `Qos2Received`   | `str` client id, `pid`                          |
//! | 13   | `Qos2Released`   | `str` client id, `pid`                          |
//! | 14   | `Retain`         | `str` topic (valid), `option<message>`, u64 clock, u32 shard |
//!
//! A body must be used up exactly: trailing bytes are corruption. The encoding is canonical (one
//! byte string per record), so a decoded frame re-encodes to the same bytes.
//!
//! # Reading
//! [`Reader`] yields the records of a file's bytes in order and stops at the first frame that is
//! cut short, fails its CRC, has an unknown type or a body that does not decode: its [`ReadError`]
//! says where the intact prefix ends (the offset to truncate the file at) and why. Topics and
//! payloads are slices of the file's [`Bytes`]: reading copies no message.

use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use thiserror::Error;

use super::record::Record;
use crate::protocol::{DecodeError, Message, QoS, TopicFilter, TopicName};

/// The first bytes of every journal and snapshot file.
pub const MAGIC: [u8; 8] = *b"AMQTTJNL";
/// The format this build writes and reads.
pub const FORMAT_VERSION: u16 = 1;
/// Bytes of the file header.
pub const HEADER_LEN: usize = 12;
/// Bytes of a frame before its type: `len` and `crc32c`.
pub const FRAME_HEADER_LEN: usize = 8;
/// The largest `len` a frame may have: 256 MiB (MQTT's largest packet) plus 256 KiB for the
/// record's own fields (a retained message holds its topic twice, as the key and in the message).
pub const MAX_FRAME_LEN: usize = (256 << 20) + (256 << 10);

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

/// Why a record cannot be written (nothing is appended then).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EncodeError {
    #[error("{field} of {len} bytes is longer than 65,535 bytes")]
    StringTooLong { field: &'static str, len: usize },
    #[error("record of {len} bytes is over the frame limit of {MAX_FRAME_LEN} bytes")]
    FrameTooLong { len: usize },
    #[error("packet identifier 0")]
    ZeroPacketId,
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

/// Why a frame's body (whose CRC matched) is not a record.
#[derive(Debug, PartialEq, Eq, Error)]
pub enum BodyError {
    #[error("ends inside a field")]
    Truncated,
    #[error("{0} bytes after the last field")]
    Trailing(usize),
    #[error("string is not UTF-8")]
    Utf8,
    #[error("topic: {0}")]
    Topic(DecodeError),
    #[error("topic filter: {0}")]
    Filter(DecodeError),
    #[error("QoS {0}")]
    QoS(u8),
    #[error("message flags {0:#04x}")]
    Flags(u8),
    #[error("option tag {0}, not 0 or 1")]
    OptionTag(u8),
    #[error("packet identifier 0")]
    ZeroPacketId,
}

/// Record type bytes (the table in the module docs).
mod tag {
    pub const SESSION_OPEN: u8 = 1;
    pub const SESSION_DROP: u8 = 2;
    pub const SESSION_OFFLINE: u8 = 3;
    pub const SUBSCRIBE: u8 = 4;
    pub const UNSUBSCRIBE: u8 = 5;
    pub const WILL: u8 = 6;
    pub const MESSAGE: u8 = 7;
    pub const ENQUEUE: u8 = 8;
    pub const PACKET_ID: u8 = 9;
    pub const RELEASED: u8 = 10;
    pub const DONE: u8 = 11;
    pub const QOS2_RECEIVED: u8 = 12;
    pub const QOS2_RELEASED: u8 = 13;
    pub const RETAIN: u8 = 14;
}

/// Message flag bits: QoS in bits 0-1, retain in bit 2.
const RETAIN_FLAG: u8 = 0b100;

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
    let start = out.len();
    out.put_bytes(0, FRAME_HEADER_LEN);
    if let Err(error) = encode_body(record, out) {
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

/// Writes the type byte and the body (the table in the module docs).
fn encode_body(record: &Record, out: &mut BytesMut) -> Result<(), EncodeError> {
    match record {
        Record::SessionOpen { client_id } => {
            out.put_u8(tag::SESSION_OPEN);
            put_client_id(out, client_id)
        }
        Record::SessionDrop { client_id } => {
            out.put_u8(tag::SESSION_DROP);
            put_client_id(out, client_id)
        }
        Record::SessionOffline {
            client_id,
            at_unix_ms,
        } => {
            out.put_u8(tag::SESSION_OFFLINE);
            put_client_id(out, client_id)?;
            out.put_u64_le(*at_unix_ms);
            Ok(())
        }
        Record::Subscribe {
            client_id,
            filter,
            qos,
        } => {
            out.put_u8(tag::SUBSCRIBE);
            put_client_id(out, client_id)?;
            put_str(out, "topic filter", filter.as_str().as_bytes())?;
            out.put_u8(u8::from(*qos));
            Ok(())
        }
        Record::Unsubscribe { client_id, filter } => {
            out.put_u8(tag::UNSUBSCRIBE);
            put_client_id(out, client_id)?;
            put_str(out, "topic filter", filter.as_str().as_bytes())
        }
        Record::Will { client_id, will } => {
            out.put_u8(tag::WILL);
            put_client_id(out, client_id)?;
            put_option_message(out, will.as_ref())
        }
        Record::Message { id, message } => {
            out.put_u8(tag::MESSAGE);
            out.put_u64_le(*id);
            put_message(out, message)
        }
        Record::Enqueue { client_id, id, qos } => {
            out.put_u8(tag::ENQUEUE);
            put_client_id(out, client_id)?;
            out.put_u64_le(*id);
            out.put_u8(u8::from(*qos));
            Ok(())
        }
        Record::PacketId {
            client_id,
            id,
            packet_id,
        } => {
            out.put_u8(tag::PACKET_ID);
            put_client_id(out, client_id)?;
            out.put_u64_le(*id);
            put_packet_id(out, *packet_id)
        }
        Record::Released { client_id, id } => {
            out.put_u8(tag::RELEASED);
            put_client_id(out, client_id)?;
            out.put_u64_le(*id);
            Ok(())
        }
        Record::Done { client_id, id } => {
            out.put_u8(tag::DONE);
            put_client_id(out, client_id)?;
            out.put_u64_le(*id);
            Ok(())
        }
        Record::Qos2Received {
            client_id,
            packet_id,
        } => {
            out.put_u8(tag::QOS2_RECEIVED);
            put_client_id(out, client_id)?;
            put_packet_id(out, *packet_id)
        }
        Record::Qos2Released {
            client_id,
            packet_id,
        } => {
            out.put_u8(tag::QOS2_RELEASED);
            put_client_id(out, client_id)?;
            put_packet_id(out, *packet_id)
        }
        Record::Retain {
            topic,
            message,
            clock,
            shard,
        } => {
            out.put_u8(tag::RETAIN);
            put_str(out, "topic", topic.as_bytes())?;
            put_option_message(out, message.as_ref())?;
            out.put_u64_le(*clock);
            out.put_u32_le(*shard);
            Ok(())
        }
    }
}

fn put_client_id(out: &mut BytesMut, client_id: &str) -> Result<(), EncodeError> {
    put_str(out, "client id", client_id.as_bytes())
}

fn put_str(out: &mut BytesMut, field: &'static str, s: &[u8]) -> Result<(), EncodeError> {
    let len = u16::try_from(s.len()).map_err(|_| EncodeError::StringTooLong {
        field,
        len: s.len(),
    })?;
    out.put_u16_le(len);
    out.put_slice(s);
    Ok(())
}

fn put_packet_id(out: &mut BytesMut, packet_id: u16) -> Result<(), EncodeError> {
    if packet_id == 0 {
        return Err(EncodeError::ZeroPacketId);
    }
    out.put_u16_le(packet_id);
    Ok(())
}

fn put_message(out: &mut BytesMut, message: &Message) -> Result<(), EncodeError> {
    put_str(out, "topic", message.topic.as_bytes())?;
    let retain = if message.retain { RETAIN_FLAG } else { 0 };
    out.put_u8(u8::from(message.qos) | retain);
    let len = message.payload.len();
    if len > MAX_FRAME_LEN {
        return Err(EncodeError::FrameTooLong { len });
    }
    // len ≤ MAX_FRAME_LEN < u32::MAX.
    out.put_u32_le(len as u32);
    out.put_slice(&message.payload);
    Ok(())
}

fn put_option_message(out: &mut BytesMut, message: Option<&Message>) -> Result<(), EncodeError> {
    match message {
        None => {
            out.put_u8(0);
            Ok(())
        }
        Some(message) => {
            out.put_u8(1);
            put_message(out, message)
        }
    }
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
        let body = Body(self.data.slice(start + 1..start + len));
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

/// A body being read: each field is taken off the front; slices share the file's bytes.
struct Body(Bytes);

impl Body {
    fn take(&mut self, n: usize) -> Result<Bytes, BodyError> {
        if self.0.len() < n {
            return Err(BodyError::Truncated);
        }
        Ok(self.0.split_to(n))
    }

    fn u8(&mut self) -> Result<u8, BodyError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, BodyError> {
        Ok(self.take(2)?.get_u16_le())
    }

    fn u32(&mut self) -> Result<u32, BodyError> {
        Ok(self.take(4)?.get_u32_le())
    }

    fn u64(&mut self) -> Result<u64, BodyError> {
        Ok(self.take(8)?.get_u64_le())
    }

    fn str_bytes(&mut self) -> Result<Bytes, BodyError> {
        let len = self.u16()?;
        self.take(usize::from(len))
    }

    fn client_id(&mut self) -> Result<Arc<str>, BodyError> {
        let bytes = self.str_bytes()?;
        let s = std::str::from_utf8(&bytes).map_err(|_| BodyError::Utf8)?;
        Ok(Arc::from(s))
    }

    fn topic(&mut self) -> Result<TopicName, BodyError> {
        TopicName::from_bytes(self.str_bytes()?).map_err(BodyError::Topic)
    }

    fn filter(&mut self) -> Result<TopicFilter, BodyError> {
        let bytes = self.str_bytes()?;
        let s =
            std::str::from_utf8(&bytes).map_err(|_| BodyError::Filter(DecodeError::InvalidUtf8))?;
        TopicFilter::new(s).map_err(BodyError::Filter)
    }

    fn qos(&mut self) -> Result<QoS, BodyError> {
        let v = self.u8()?;
        QoS::from_u8(v).ok_or(BodyError::QoS(v))
    }

    fn packet_id(&mut self) -> Result<u16, BodyError> {
        match self.u16()? {
            0 => Err(BodyError::ZeroPacketId),
            id => Ok(id),
        }
    }

    fn message(&mut self) -> Result<Message, BodyError> {
        let topic = self.topic()?;
        let flags = self.u8()?;
        if flags & !(RETAIN_FLAG | 0b11) != 0 {
            return Err(BodyError::Flags(flags));
        }
        let qos = QoS::from_u8(flags & 0b11).ok_or(BodyError::Flags(flags))?;
        let len = self.u32()?;
        let payload = self.take(len as usize)?;
        Ok(Message {
            topic,
            payload,
            qos,
            retain: flags & RETAIN_FLAG != 0,
        })
    }

    fn option_message(&mut self) -> Result<Option<Message>, BodyError> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.message()?)),
            other => Err(BodyError::OptionTag(other)),
        }
    }

    /// The body must be used up.
    fn end(self, record: Record) -> Result<Option<Record>, BodyError> {
        match self.0.len() {
            0 => Ok(Some(record)),
            n => Err(BodyError::Trailing(n)),
        }
    }
}

/// The record of type `record_type` in `b`; `None` for an unknown type.
fn decode_body(record_type: u8, mut b: Body) -> Result<Option<Record>, BodyError> {
    let record = match record_type {
        tag::SESSION_OPEN => Record::SessionOpen {
            client_id: b.client_id()?,
        },
        tag::SESSION_DROP => Record::SessionDrop {
            client_id: b.client_id()?,
        },
        tag::SESSION_OFFLINE => Record::SessionOffline {
            client_id: b.client_id()?,
            at_unix_ms: b.u64()?,
        },
        tag::SUBSCRIBE => Record::Subscribe {
            client_id: b.client_id()?,
            filter: b.filter()?,
            qos: b.qos()?,
        },
        tag::UNSUBSCRIBE => Record::Unsubscribe {
            client_id: b.client_id()?,
            filter: b.filter()?,
        },
        tag::WILL => Record::Will {
            client_id: b.client_id()?,
            will: b.option_message()?,
        },
        tag::MESSAGE => Record::Message {
            id: b.u64()?,
            message: b.message()?,
        },
        tag::ENQUEUE => Record::Enqueue {
            client_id: b.client_id()?,
            id: b.u64()?,
            qos: b.qos()?,
        },
        tag::PACKET_ID => Record::PacketId {
            client_id: b.client_id()?,
            id: b.u64()?,
            packet_id: b.packet_id()?,
        },
        tag::RELEASED => Record::Released {
            client_id: b.client_id()?,
            id: b.u64()?,
        },
        tag::DONE => Record::Done {
            client_id: b.client_id()?,
            id: b.u64()?,
        },
        tag::QOS2_RECEIVED => Record::Qos2Received {
            client_id: b.client_id()?,
            packet_id: b.packet_id()?,
        },
        tag::QOS2_RELEASED => Record::Qos2Released {
            client_id: b.client_id()?,
            packet_id: b.packet_id()?,
        },
        tag::RETAIN => Record::Retain {
            topic: b.topic()?,
            message: b.option_message()?,
            clock: b.u64()?,
            shard: b.u32()?,
        },
        _ => return Ok(None),
    };
    b.end(record)
}
