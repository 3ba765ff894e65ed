//! The bodies of journal frames: one encoding per [`Record`] variant, written after the frame's
//! type byte (the frame itself, its length and CRC, is `codec.rs`'s).
//!
//! Must not: frame, check CRCs or interpret records. Reading a body back is `body_read.rs`'s.
//!
//! Field encodings: `str` = u16 length + UTF-8 bytes (client ids, topics, filters); `payload` = u32
//! length + bytes; `qos` = u8 0..=2; `pid` = u16 packet identifier, never 0; `message` = `str` topic
//! (a valid topic name) | u8 flags (bits 0-1 QoS, bit 2 retain, bit 3 properties, the others 0) |
//! `payload` | when bit 3 is set, `props`: u32 length + MQTT 5 PUBLISH properties as on the wire
//! without their length (never empty: a message without properties has bit 3 clear, so an MQTT 3
//! message is written as before properties were journaled); `option<message>` = u8 0 (none) or 1
//! followed by `message`; `options` = u8 as in a SUBSCRIBE [MQTT-3.8.3.1] (bits 0-1 QoS, bit 2
//! No Local, bit 3 Retain As Published, bits 4-5 Retain Handling) | u32 Subscription Identifier
//! (0: none).
//!
//! Types 16 to 20 are MQTT 5's (format version 2 files written before them hold none, and read
//! as they did): an MQTT 3 subscription is written as type 4, any other as type 16.
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
//! | 16   | `Subscribe` (v5) | `str` client id, `str` filter (valid), `options`  |
//! | 17   | `SessionExpiry`  | `str` client id, u8 0 (never) or 1 followed by u64 seconds |
//! | 18   | `WillDelay`      | `str` client id, u32 seconds (not 0)            |
//! | 19   | `MessageExpiry`  | u64 id, u64 `at_unix_ms`                        |
//! | 20   | `RetainExpiry`   | `str` topic (valid), u64 clock, u32 shard, u64 `at_unix_ms` |
//!
//! A body must be used up exactly: trailing bytes are corruption. The encoding is canonical (one
//! byte string per record), so a decoded frame re-encodes to the same bytes.

use bytes::{BufMut, BytesMut};
use thiserror::Error;

use super::record::{MsgId, Record};
use crate::protocol::v5;
use crate::protocol::{DecodeError, Message, QoS, SubOptions};

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
    #[error("MQTT 5 properties: {0}")]
    Properties(String),
    #[error("will delay 0 (written as no record)")]
    ZeroWillDelay,
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
    #[error("MQTT 5 properties: {0}")]
    Properties(DecodeError),
    #[error("MQTT 5 properties not in the order and form they are written in")]
    PropertiesNotCanonical,
    #[error("subscription options {0:#04x}")]
    Options(u8),
    #[error("will delay 0")]
    ZeroWillDelay,
}

/// Record type bytes (the table in the module docs).
pub(super) mod tag {
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
    pub const SUBSCRIBE_V5: u8 = 16;
    pub const SESSION_EXPIRY: u8 = 17;
    pub const WILL_DELAY: u8 = 18;
    pub const MESSAGE_EXPIRY: u8 = 19;
    pub const RETAIN_EXPIRY: u8 = 20;
}

/// Message flag bits: QoS in bits 0-1, retain in bit 2, properties follow the payload in bit 3.
pub(super) const RETAIN_FLAG: u8 = 0b100;
pub(super) const PROPERTIES_FLAG: u8 = 0b1000;

/// Subscription option bits [MQTT-3.8.3.1]: QoS in bits 0-1, Retain Handling in bits 4-5.
pub(super) const NO_LOCAL: u8 = 0b100;
pub(super) const RETAIN_AS_PUBLISHED: u8 = 0b1000;
pub(super) const RETAIN_HANDLING_SHIFT: u8 = 4;

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
            options,
        } => {
            let plain = options.is_plain();
            out.put_u8(if plain {
                tag::SUBSCRIBE
            } else {
                tag::SUBSCRIBE_V5
            });
            put_client_id(out, client_id)?;
            put_str(out, "topic filter", filter.as_str().as_bytes())?;
            if plain {
                out.put_u8(u8::from(options.qos));
            } else {
                put_options(out, options);
            }
            Ok(())
        }
        Record::SessionExpiry {
            client_id,
            interval_secs,
        } => {
            out.put_u8(tag::SESSION_EXPIRY);
            put_client_id(out, client_id)?;
            match interval_secs {
                None => out.put_u8(0),
                Some(secs) => {
                    out.put_u8(1);
                    out.put_u64_le(*secs);
                }
            }
            Ok(())
        }
        Record::WillDelay {
            client_id,
            delay_secs,
        } => {
            if *delay_secs == 0 {
                return Err(EncodeError::ZeroWillDelay);
            }
            out.put_u8(tag::WILL_DELAY);
            put_client_id(out, client_id)?;
            out.put_u32_le(*delay_secs);
            Ok(())
        }
        Record::MessageExpiry { id, at_unix_ms } => {
            out.put_u8(tag::MESSAGE_EXPIRY);
            out.put_u64_le(*id);
            out.put_u64_le(*at_unix_ms);
            Ok(())
        }
        Record::RetainExpiry {
            topic,
            clock,
            shard,
            at_unix_ms,
        } => {
            out.put_u8(tag::RETAIN_EXPIRY);
            put_str(out, "topic", topic.as_bytes())?;
            out.put_u64_le(*clock);
            out.put_u32_le(*shard);
            out.put_u64_le(*at_unix_ms);
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
    // `None` and an empty set are both "no properties" (the broker never keeps an empty one).
    let props = message.properties.as_deref().filter(|p| !p.is_empty());
    let with_props = if props.is_some() { PROPERTIES_FLAG } else { 0 };
    out.put_u8(u8::from(message.qos) | retain | with_props);
    let len = message.payload.len();
    // A payload over 4 GiB cannot be framed; one over the frame limit is refused by the caller.
    let len32 = u32::try_from(len).map_err(|_| EncodeError::FrameTooLong { len })?;
    out.put_u32_le(len32);
    out.put_slice(&message.payload);
    if let Some(props) = props {
        let len = props
            .body_len(v5::Kind::Publish)
            .map_err(|e| EncodeError::Properties(e.to_string()))?;
        // Under MQTT's largest variable byte integer: fits.
        out.put_u32_le(len as u32);
        props.encode_body(out);
    }
    Ok(())
}

/// Subscription options as a SUBSCRIBE carries them, then the identifier (0: none).
fn put_options(out: &mut BytesMut, options: &SubOptions) {
    let mut byte = u8::from(options.qos) | (options.retain_handling as u8) << RETAIN_HANDLING_SHIFT;
    if options.no_local {
        byte |= NO_LOCAL;
    }
    if options.retain_as_published {
        byte |= RETAIN_AS_PUBLISHED;
    }
    out.put_u8(byte);
    out.put_u32_le(options.id.map_or(0, |id| id.get()));
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
