//! The bodies of journal frames: one encoding per [`Record`] variant, written after the frame's
//! type byte (the frame itself, its length and CRC, is `codec.rs`'s).
//!
//! Must not: frame, check CRCs or interpret records.
//!
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
//! | 15   | `SessionUser`    | `str` client id, u8 0 (anonymous) or 1 followed by `str` user name |
//!
//! A body must be used up exactly: trailing bytes are corruption. The encoding is canonical (one
//! byte string per record), so a decoded frame re-encodes to the same bytes.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use thiserror::Error;

use super::record::{MsgId, Record};
use crate::protocol::{DecodeError, Message, QoS, TopicFilter, TopicName};

/// The largest `len` a frame may have: 256 MiB (MQTT's largest packet) plus 256 KiB for the
/// record's own fields (a retained message holds its topic twice, as the key and in the message).
pub const MAX_FRAME_LEN: usize = (256 << 20) + (256 << 10);

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
    pub const SESSION_USER: u8 = 15;
}

/// Message flag bits: QoS in bits 0-1, retain in bit 2.
const RETAIN_FLAG: u8 = 0b100;

/// Writes the type byte and the body (the table in the module docs).
pub(super) fn encode_body(record: &Record, out: &mut BytesMut) -> Result<(), EncodeError> {
    match record {
        Record::SessionOpen { client_id } => {
            out.put_u8(tag::SESSION_OPEN);
            put_client_id(out, client_id)
        }
        Record::SessionDrop { client_id } => {
            out.put_u8(tag::SESSION_DROP);
            put_client_id(out, client_id)
        }
        Record::SessionUser {
            client_id,
            username,
        } => {
            out.put_u8(tag::SESSION_USER);
            put_client_id(out, client_id)?;
            match username {
                None => {
                    out.put_u8(0);
                    Ok(())
                }
                Some(name) => {
                    out.put_u8(1);
                    put_str(out, "user name", name.as_bytes())
                }
            }
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
        Record::Message { id, message } => stored_message_body(*id, message, message.retain, out),
        Record::Enqueue { client_id, id, qos } => enqueue_body(client_id, *id, *qos, out),
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
        Record::Done { client_id, id } => done_body(client_id, *id, out),
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

/// The body of a [`Record::Message`] for a borrowed message, its retain flag replaced by `retain`
/// (the broker journals a live publish without cloning it).
pub(super) fn stored_message_body(
    id: MsgId,
    message: &Message,
    retain: bool,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    out.put_u8(tag::MESSAGE);
    out.put_u64_le(id);
    put_message_as(out, message, retain)
}

/// The body of a [`Record::Enqueue`] from borrowed fields (one per message a session keeps).
pub(super) fn enqueue_body(
    client_id: &str,
    id: MsgId,
    qos: QoS,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    out.put_u8(tag::ENQUEUE);
    put_client_id(out, client_id)?;
    out.put_u64_le(id);
    out.put_u8(u8::from(qos));
    Ok(())
}

/// The body of a [`Record::Done`] from borrowed fields (one per message a session is done with).
pub(super) fn done_body(client_id: &str, id: MsgId, out: &mut BytesMut) -> Result<(), EncodeError> {
    out.put_u8(tag::DONE);
    put_client_id(out, client_id)?;
    out.put_u64_le(id);
    Ok(())
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
    put_message_as(out, message, message.retain)
}

fn put_message_as(out: &mut BytesMut, message: &Message, retain: bool) -> Result<(), EncodeError> {
    put_str(out, "topic", message.topic.as_bytes())?;
    let retain = if retain { RETAIN_FLAG } else { 0 };
    out.put_u8(u8::from(message.qos) | retain);
    let len = message.payload.len();
    // A payload over 4 GiB cannot be framed; one over the frame limit is refused by the caller.
    let len32 = u32::try_from(len).map_err(|_| EncodeError::FrameTooLong { len })?;
    out.put_u32_le(len32);
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

/// A body being read: fields are taken off the front of `data[at..end]`; topics and payloads
/// are slices of the file's bytes, the other fields are read in place (a `Bytes` per field cost
/// two atomic operations each: a fifth of a million-message replay).
pub(super) struct Body<'a> {
    data: &'a Bytes,
    at: usize,
    end: usize,
}

impl<'a> Body<'a> {
    /// The body in `data[start..end]`.
    pub(super) fn new(data: &'a Bytes, start: usize, end: usize) -> Body<'a> {
        Body {
            data,
            at: start,
            end,
        }
    }

    /// The range of the next `n` bytes, taken.
    fn take(&mut self, n: usize) -> Result<std::ops::Range<usize>, BodyError> {
        if self.end - self.at < n {
            return Err(BodyError::Truncated);
        }
        self.at += n;
        Ok(self.at - n..self.at)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], BodyError> {
        let range = self.take(N)?;
        let mut out = [0; N];
        out.copy_from_slice(&self.data[range]);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, BodyError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, BodyError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, BodyError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, BodyError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// A `str` field's bytes, in place.
    fn str_slice(&mut self) -> Result<&'a [u8], BodyError> {
        let len = self.u16()?;
        let range = self.take(usize::from(len))?;
        let data: &'a Bytes = self.data;
        Ok(&data[range])
    }

    /// A `str` field's bytes, shared with the file.
    fn str_bytes(&mut self) -> Result<Bytes, BodyError> {
        let len = self.u16()?;
        Ok(self.data.slice(self.take(usize::from(len))?))
    }

    fn client_id(&mut self) -> Result<Arc<str>, BodyError> {
        let bytes = self.str_slice()?;
        let s = std::str::from_utf8(bytes).map_err(|_| BodyError::Utf8)?;
        Ok(Arc::from(s))
    }

    fn topic(&mut self) -> Result<TopicName, BodyError> {
        TopicName::from_bytes(self.str_bytes()?).map_err(BodyError::Topic)
    }

    fn filter(&mut self) -> Result<TopicFilter, BodyError> {
        let bytes = self.str_slice()?;
        let s =
            std::str::from_utf8(bytes).map_err(|_| BodyError::Filter(DecodeError::InvalidUtf8))?;
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
        let payload = self.data.slice(self.take(len as usize)?);
        Ok(Message {
            topic,
            payload,
            qos,
            retain: flags & RETAIN_FLAG != 0,
            properties: None,
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
        match self.end - self.at {
            0 => Ok(Some(record)),
            n => Err(BodyError::Trailing(n)),
        }
    }
}

/// The record of type `record_type` in `b`; `None` for an unknown type.
pub(super) fn decode_body(record_type: u8, mut b: Body<'_>) -> Result<Option<Record>, BodyError> {
    let record = match record_type {
        tag::SESSION_OPEN => Record::SessionOpen {
            client_id: b.client_id()?,
        },
        tag::SESSION_DROP => Record::SessionDrop {
            client_id: b.client_id()?,
        },
        tag::SESSION_USER => Record::SessionUser {
            client_id: b.client_id()?,
            username: match b.u8()? {
                0 => None,
                1 => Some(b.client_id()?),
                other => return Err(BodyError::OptionTag(other)),
            },
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
