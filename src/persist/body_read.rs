//! Reading the bodies of journal frames back into [`Record`]s: the layouts and tags are
//! `body.rs`'s (its module docs hold the table).
//!
//! Must not: frame, check CRCs, interpret records, or write anything.

use std::sync::Arc;

use bytes::Bytes;

use super::body::{
    tag, BodyError, NO_LOCAL, PROPERTIES_FLAG, RETAIN_AS_PUBLISHED, RETAIN_FLAG,
    RETAIN_HANDLING_SHIFT,
};
use super::record::Record;
use crate::protocol::v5::{self, properties, RetainHandling};
use crate::protocol::{DecodeError, Message, QoS, SubOptions, TopicFilter, TopicName};

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
        if flags & !(PROPERTIES_FLAG | RETAIN_FLAG | 0b11) != 0 {
            return Err(BodyError::Flags(flags));
        }
        let qos = QoS::from_u8(flags & 0b11).ok_or(BodyError::Flags(flags))?;
        let len = self.u32()?;
        let payload = self.data.slice(self.take(len as usize)?);
        let properties = if flags & PROPERTIES_FLAG != 0 {
            let len = self.u32()?;
            let range = self.take(len as usize)?;
            let written = &self.data[range];
            let props = properties::decode_body(written, v5::Kind::Publish)
                .map_err(BodyError::Properties)?;
            if props.is_empty() {
                // Written with the flag clear: this encoding is not canonical.
                return Err(BodyError::Flags(flags));
            }
            // The wire format takes properties in any order, and identifiers or variable byte
            // integers in more bytes than needed; the journal holds them only as they are
            // written, so that a record has one encoding (the journal fuzz target checks this).
            let mut again = bytes::BytesMut::with_capacity(written.len());
            props.encode_body(&mut again);
            if again[..] != *written {
                return Err(BodyError::PropertiesNotCanonical);
            }
            Some(Arc::new(props))
        } else {
            None
        };
        Ok(Message {
            topic,
            payload,
            qos,
            retain: flags & RETAIN_FLAG != 0,
            properties,
        })
    }

    fn options(&mut self) -> Result<SubOptions, BodyError> {
        let byte = self.u8()?;
        let retain_handling = match byte >> RETAIN_HANDLING_SHIFT {
            0 => RetainHandling::SendAtSubscribe,
            1 => RetainHandling::SendIfNew,
            2 => RetainHandling::DoNotSend,
            _ => return Err(BodyError::Options(byte)),
        };
        let qos = QoS::from_u8(byte & 0b11).ok_or(BodyError::Options(byte))?;
        Ok(SubOptions {
            qos,
            no_local: byte & NO_LOCAL != 0,
            retain_as_published: byte & RETAIN_AS_PUBLISHED != 0,
            retain_handling,
            id: std::num::NonZeroU32::new(self.u32()?),
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
            options: SubOptions::qos(b.qos()?),
        },
        tag::SUBSCRIBE_V5 => {
            let client_id = b.client_id()?;
            let filter = b.filter()?;
            let options = b.options()?;
            if options.is_plain() {
                // Written as `SUBSCRIBE` (tag 4): this encoding is not canonical.
                return Err(BodyError::Options(u8::from(options.qos)));
            }
            Record::Subscribe {
                client_id,
                filter,
                options,
            }
        }
        tag::SESSION_EXPIRY => Record::SessionExpiry {
            client_id: b.client_id()?,
            interval_secs: match b.u8()? {
                0 => None,
                1 => Some(b.u64()?),
                other => return Err(BodyError::OptionTag(other)),
            },
        },
        tag::WILL_DELAY => Record::WillDelay {
            client_id: b.client_id()?,
            delay_secs: match b.u32()? {
                0 => return Err(BodyError::ZeroWillDelay),
                secs => secs,
            },
        },
        tag::MESSAGE_EXPIRY => Record::MessageExpiry {
            id: b.u64()?,
            at_unix_ms: b.u64()?,
        },
        tag::RETAIN_EXPIRY => Record::RetainExpiry {
            topic: b.topic()?,
            clock: b.u64()?,
            shard: b.u32()?,
            at_unix_ms: b.u64()?,
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
