//! PUBLISH [MQTT-3.3]: flags (dup, QoS, retain), topic name, packet identifier, payload.
//!
//! Decoding is zero-copy: topic and payload are slices of the received frame. Must not copy the
//! payload, and encoding must write straight into the caller's buffer with a single reservation.

use bytes::{BufMut, Bytes, BytesMut};

use super::fixed_header::{self, PUBLISH, PUBLISH_DUP, PUBLISH_RETAIN};
use super::strings::{prefixed_len, put_prefixed, Reader};
use super::topic::check_name_bytes;
use super::{DecodeError, EncodeError, Publish, QoS, TopicName};

/// Where the fields of a PUBLISH body are, every check of [MQTT-3.3] done.
pub(crate) struct Fields {
    pub qos: QoS,
    /// Empty only in MQTT 5 (a topic alias stands for it).
    pub topic: std::ops::Range<usize>,
    pub packet_id: Option<u16>,
    /// MQTT 5: the properties after their length, not checked yet; empty in MQTT 3.
    pub properties: std::ops::Range<usize>,
    pub payload_start: usize,
}

/// Checks a PUBLISH body and finds its fields. `flags` have been checked by the fixed header
/// parser already. Shared by [`decode`] and [`borrow`], which must accept and refuse the same
/// bodies, and by MQTT 5's decoder (`v5`: an empty topic is allowed, properties follow the
/// packet identifier). Inlined so that the MQTT 3 callers' constant `false` removes the MQTT 5
/// branches.
#[inline(always)]
pub(crate) fn parse(flags: u8, body: &[u8], v5: bool) -> Result<Fields, DecodeError> {
    let qos = QoS::from_u8((flags >> 1) & 0b11).ok_or(DecodeError::InvalidQoS)?;
    let mut r = Reader::new(body);
    let topic_len = usize::from(r.read_u16()?);
    let topic_start = r.position();
    let topic = r.take(topic_len)?;
    if !(v5 && topic.is_empty()) {
        check_name_bytes(topic)?;
    }
    let topic = topic_start..r.position();
    let packet_id = if qos == QoS::AtMostOnce {
        None
    } else {
        Some(r.read_packet_id()?)
    };
    let properties = if v5 {
        let len = r.read_varint()?;
        let start = r.position();
        r.take(len as usize)?;
        start..r.position()
    } else {
        0..0
    };
    Ok(Fields {
        qos,
        topic,
        packet_id,
        properties,
        payload_start: r.position(),
    })
}

/// Decodes a PUBLISH body (the frame after its fixed header). `flags` have been checked by the
/// fixed header parser already.
///
/// The topic is split off the body and the payload is what remains, rather than both being sliced
/// from it: one reference-count increment per PUBLISH instead of two and a decrement (atomic
/// updates of the read buffer's count were ~7 % of the broker's CPU in `pairs -n 8 --qos 1`).
pub(super) fn decode(flags: u8, body: BytesMut) -> Result<Publish, DecodeError> {
    let fields = parse(flags, &body, false)?;
    let (topic, payload) = split(body, &fields);
    Ok(Publish {
        dup: flags & PUBLISH_DUP != 0,
        qos: fields.qos,
        retain: flags & PUBLISH_RETAIN != 0,
        topic: TopicName::from_checked(topic),
        packet_id: fields.packet_id,
        payload,
    })
}

/// The topic and the payload of a parsed PUBLISH body, the topic split off and the payload what
/// remains (see [`decode`]).
#[inline]
pub(crate) fn split(mut body: BytesMut, fields: &Fields) -> (Bytes, Bytes) {
    bytes::Buf::advance(&mut body, fields.topic.start);
    let topic = body.split_to(fields.topic.len()).freeze();
    bytes::Buf::advance(&mut body, fields.payload_start - fields.topic.end);
    (topic, body.freeze())
}

/// A PUBLISH body as [`PublishRef`] borrowing from `body`: the same checks as [`decode`], no
/// reference-counted slices.
pub(super) fn borrow(flags: u8, body: &[u8]) -> Result<PublishRef<'_>, DecodeError> {
    let fields = parse(flags, body, false)?;
    Ok(PublishRef {
        dup: flags & PUBLISH_DUP != 0,
        qos: fields.qos,
        retain: flags & PUBLISH_RETAIN != 0,
        topic: &body[fields.topic],
        packet_id: fields.packet_id,
        payload: &body[fields.payload_start..],
        properties: None,
    })
}

impl Publish {
    /// The same PUBLISH with its topic and payload borrowed.
    pub fn borrowed(&self) -> PublishRef<'_> {
        PublishRef {
            dup: self.dup,
            qos: self.qos,
            retain: self.retain,
            topic: self.topic.as_bytes(),
            packet_id: self.packet_id,
            payload: &self.payload,
            properties: None,
        }
    }

    /// Exact number of bytes [`Publish::encode`] appends (when it succeeds).
    pub fn encoded_len(&self) -> usize {
        self.borrowed().encoded_len()
    }

    /// Appends this PUBLISH to `out`, reserving space once. On error nothing is written.
    ///
    /// The DUP flag is written only for QoS > 0 [MQTT-3.3.1-2], and the packet identifier only for
    /// QoS > 0 (`packet_id` must then be `Some`; `None` is a caller bug, written as 0).
    pub fn encode(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        self.borrowed().encode(out)
    }
}

/// A PUBLISH to encode whose topic and payload stay where they are: building a [`Publish`] for
/// the broker's deliveries would clone (and later drop) two shared buffers per message, atomic
/// reference-count updates that were ~13 % of the broker's CPU at saturation (`perf record`,
/// `amqtt-bench pairs -n 8`).
#[derive(Debug, Clone, Copy)]
pub struct PublishRef<'a> {
    /// As [`Publish::dup`].
    pub dup: bool,
    /// As [`Publish::qos`].
    pub qos: QoS,
    /// As [`Publish::retain`].
    pub retain: bool,
    /// A topic name's bytes: checked like [`TopicName`]'s when it was decoded or built.
    pub topic: &'a [u8],
    /// As [`Publish::packet_id`].
    pub packet_id: Option<u16>,
    /// As [`Publish::payload`].
    pub payload: &'a [u8],
    /// The message's MQTT 5 properties ([`Message::properties`](super::Message::properties));
    /// [`PublishRef::encode`], MQTT 3, leaves them out.
    pub properties: Option<&'a super::V5Properties>,
}

impl PublishRef<'_> {
    fn remaining_len(&self) -> usize {
        let packet_id_len = if self.qos == QoS::AtMostOnce { 0 } else { 2 };
        2 + self.topic.len() + packet_id_len + self.payload.len()
    }

    /// Exact number of bytes [`PublishRef::encode`] appends (when it succeeds).
    pub fn encoded_len(&self) -> usize {
        let remaining = self.remaining_len();
        1 + fixed_header::remaining_length_len(remaining) + remaining
    }

    /// As [`Publish::encode`].
    pub fn encode(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        prefixed_len(self.topic.len())?;
        self.write_head(out, self.remaining_len())?;
        out.put_slice(self.payload);
        Ok(())
    }

    /// Writes the fixed header (for a body of `remaining_len` bytes), the topic and the packet
    /// identifier: all but the payload in MQTT 3, all but properties and payload in MQTT 5. The
    /// caller has checked the topic's length. DUP only for QoS > 0 [MQTT-3.3.1-2], the packet
    /// identifier only for QoS > 0 (`None` there is a caller bug, written as 0).
    #[inline(always)]
    pub(crate) fn write_head(
        &self,
        out: &mut BytesMut,
        remaining_len: usize,
    ) -> Result<(), EncodeError> {
        let mut first_byte = PUBLISH << 4 | (self.qos as u8) << 1;
        if self.dup && self.qos != QoS::AtMostOnce {
            first_byte |= PUBLISH_DUP;
        }
        if self.retain {
            first_byte |= PUBLISH_RETAIN;
        }
        fixed_header::write(out, first_byte, remaining_len)?;
        put_prefixed(out, self.topic);
        if self.qos != QoS::AtMostOnce {
            debug_assert!(
                self.packet_id.is_some(),
                "PUBLISH with QoS > 0 needs a packet identifier"
            );
            out.put_u16(self.packet_id.unwrap_or(0));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{decode as decode_packet, Packet};
    use super::*;

    fn publish(qos: QoS, packet_id: Option<u16>) -> Publish {
        Publish {
            dup: false,
            qos,
            retain: false,
            topic: TopicName::new("sensors/kitchen/temperature").unwrap(),
            packet_id,
            payload: Bytes::from_static(b"21.5"),
        }
    }

    fn check(p: Publish) -> BytesMut {
        let encoded = assert_round_trip(&Packet::Publish(p.clone()));
        assert_eq!(encoded.len(), p.encoded_len());
        let mut direct = BytesMut::new();
        p.encode(&mut direct).unwrap();
        assert_eq!(direct, encoded);
        encoded
    }

    #[test]
    fn round_trips_all_flag_combinations() {
        for (qos, packet_id) in [
            (QoS::AtMostOnce, None),
            (QoS::AtLeastOnce, Some(1)),
            (QoS::ExactlyOnce, Some(65_535)),
        ] {
            for retain in [false, true] {
                for dup in [false, true] {
                    if dup && qos == QoS::AtMostOnce {
                        continue;
                    }
                    for payload in [
                        Bytes::new(),
                        Bytes::from_static(b"\0\xff binary"),
                        Bytes::from(vec![7u8; 300]),
                    ] {
                        check(Publish {
                            dup,
                            retain,
                            payload,
                            ..publish(qos, packet_id)
                        });
                    }
                }
            }
        }
    }

    #[test]
    fn spec_layout() {
        let p = Publish {
            dup: true,
            qos: QoS::ExactlyOnce,
            retain: true,
            topic: TopicName::new("a/b").unwrap(),
            packet_id: Some(10),
            payload: Bytes::from_static(b"xy"),
        };
        assert_eq!(
            &check(p)[..],
            &[0x3d, 0x09, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x0a, b'x', b'y']
        );
        let p = Publish {
            topic: TopicName::new("t").unwrap(),
            payload: Bytes::new(),
            ..publish(QoS::AtMostOnce, None)
        };
        assert_eq!(&check(p)[..], &[0x30, 0x03, 0x00, 0x01, b't']);
    }

    #[test]
    fn encoded_len_is_exact_across_remaining_length_sizes() {
        for payload_len in [
            0, 1, 100, 122, 123, 124, 125, 126, 127, 128, 16_000, 16_380, 16_384, 2_097_140,
            2_097_152,
        ] {
            for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
                let p = Publish {
                    payload: Bytes::from(vec![1u8; payload_len]),
                    ..publish(qos, Some(3))
                };
                let mut out = BytesMut::new();
                p.encode(&mut out).unwrap();
                assert_eq!(out.len(), p.encoded_len(), "payload {payload_len}");
            }
        }
        // Large packets: decode only (no prefix sweep).
        let p = Publish {
            payload: Bytes::from(vec![9u8; 20_000]),
            ..publish(QoS::AtLeastOnce, Some(77))
        };
        let mut out = BytesMut::new();
        p.encode(&mut out).unwrap();
        assert_eq!(decode_one(&out), Ok(Packet::Publish(p)));
    }

    #[test]
    fn encode_reserves_once_and_appends() {
        let p = Publish {
            payload: Bytes::from(vec![1u8; 1000]),
            ..publish(QoS::AtLeastOnce, Some(1))
        };
        let mut out = BytesMut::new();
        out.extend_from_slice(b"prefix");
        p.encode(&mut out).unwrap();
        assert_eq!(&out[..6], b"prefix");
        assert_eq!(out.len(), 6 + p.encoded_len());
    }

    #[test]
    fn qos0_never_writes_dup_or_packet_id() {
        let p = Publish {
            dup: true,
            ..publish(QoS::AtMostOnce, Some(5))
        };
        let mut out = BytesMut::new();
        p.encode(&mut out).unwrap();
        assert_eq!(out.len(), p.encoded_len());
        assert_eq!(out[0], 0x30);
        assert_eq!(
            decode_one(&out),
            Ok(Packet::Publish(Publish {
                dup: false,
                packet_id: None,
                ..p
            }))
        );
    }

    #[test]
    fn decode_is_zero_copy() {
        let p = publish(QoS::AtLeastOnce, Some(1));
        let mut buf = encode_packet(&Packet::Publish(p));
        let range = buf.as_ptr() as usize..buf.as_ptr() as usize + buf.len();
        let Ok(Some(Packet::Publish(decoded))) = decode_packet(&mut buf, MAX) else {
            panic!("no PUBLISH")
        };
        assert!(range.contains(&(decoded.payload.as_ptr() as usize)));
        assert!(range.contains(&(decoded.topic.as_bytes().as_ptr() as usize)));
    }

    #[test]
    fn invalid_qos_and_dup() {
        assert_eq!(
            decode_err(&[0x36, 0x05, 0x00, 0x01, b't', 0x00, 0x01]),
            DecodeError::InvalidQoS
        );
        assert_eq!(
            decode_err(&[0x37, 0x03, 0x00, 0x01, b't']),
            DecodeError::InvalidQoS
        );
        assert_eq!(
            decode_err(&[0x38, 0x03, 0x00, 0x01, b't']),
            DecodeError::InvalidFlags {
                packet_type: 3,
                flags: 0b1000
            }
        );
        assert_eq!(
            decode_err(&[0x39, 0x03, 0x00, 0x01, b't']),
            DecodeError::InvalidFlags {
                packet_type: 3,
                flags: 0b1001
            }
        );
    }

    #[test]
    fn invalid_topic_names() {
        for (topic, expected) in [
            (
                &b"a/+"[..],
                DecodeError::InvalidTopicName("contains a wildcard character"),
            ),
            (
                b"#",
                DecodeError::InvalidTopicName("contains a wildcard character"),
            ),
            (
                b"sport/tennis/#",
                DecodeError::InvalidTopicName("contains a wildcard character"),
            ),
            (b"", DecodeError::InvalidTopicName("empty")),
            (b"a\0b", DecodeError::NullCharacter),
            (b"a\xffb", DecodeError::InvalidUtf8),
            (b"\xed\xa0\x80", DecodeError::InvalidUtf8),
        ] {
            let mut body = (topic.len() as u16).to_be_bytes().to_vec();
            body.extend_from_slice(topic);
            body.extend_from_slice(b"payload");
            assert_eq!(decode_err(&frame(0x30, &body)), expected, "{topic:?}");
        }
    }

    #[test]
    fn starts_qos0_publish_is_qos0_without_retain_dup_either_way() {
        use crate::protocol::starts_qos0_publish;
        for (bytes, expected) in [
            (&[0x30u8, 0x00][..], true),
            (&[0x38], true),
            (&[0x31], false),
            (&[0x32], false),
            (&[0x34], false),
            (&[0x40], false),
            (&[], false),
        ] {
            assert_eq!(starts_qos0_publish(bytes), expected, "{bytes:?}");
        }
    }

    /// `peek_publish` must take exactly the PUBLISHes `decode` takes, with the same fields: the
    /// broker routes from one or the other.
    #[test]
    fn peek_publish_takes_exactly_what_decode_takes() {
        let body = |topic: &[u8], packet_id: Option<u16>, payload: &[u8]| {
            let mut b = (topic.len() as u16).to_be_bytes().to_vec();
            b.extend_from_slice(topic);
            b.extend(packet_id.map(u16::to_be_bytes).into_iter().flatten());
            b.extend_from_slice(payload);
            b
        };
        let mut frames = vec![
            frame(0x30, &body(b"a/b", None, b"hello")),
            frame(0x31, &body(b"a/b", None, b"")),
            frame(0x32, &body(b"sensors/1", Some(7), b"21.5")),
            frame(0x3d, &body(b"x", Some(65535), &[0u8; 300])),
            frame(0x30, &body(b"a/+", None, b"p")),
            frame(0x30, &body(b"", None, b"p")),
            frame(0x30, &body(b"a\0b", None, b"p")),
            frame(0x30, &body(b"a\xffb", None, b"p")),
            frame(0x32, &body(b"t", Some(0), b"p")),
            frame(0x36, &body(b"t", Some(1), b"p")),
            frame(0x38, &body(b"t", None, b"p")),
            frame(0x30, &[0x00]),
            frame(0x32, &[0x00, 0x01, b't', 0x00]),
            frame(0x40, &[0x00, 0x01]),
            vec![0x30, 0x80, 0x80, 0x80, 0x80, 0x01],
        ];
        // Every prefix of a good frame: not whole yet.
        let whole = frame(0x32, &body(b"a/b", Some(9), b"payload"));
        frames.extend((0..whole.len()).map(|n| whole[..n].to_vec()));
        frames.push(whole);
        for max in [16, 1 << 20] {
            for bytes in &frames {
                let peeked = crate::protocol::peek_publish(bytes, max);
                let decoded = decode_packet(&mut BytesMut::from(&bytes[..]), max);
                match (peeked, decoded) {
                    (Some((p, length)), Ok(Some(Packet::Publish(d)))) => {
                        assert_eq!(length, bytes.len());
                        assert_eq!((p.dup, p.qos, p.retain), (d.dup, d.qos, d.retain));
                        assert_eq!((p.topic, p.packet_id), (d.topic.as_bytes(), d.packet_id));
                        assert_eq!(p.payload, &d.payload[..]);
                    }
                    (None, Ok(Some(Packet::Publish(_)))) => panic!("refused {bytes:?}"),
                    (Some(_), other) => panic!("took {bytes:?}, decode says {other:?}"),
                    (None, _) => {}
                }
            }
        }
    }

    #[test]
    fn zero_packet_id() {
        assert_eq!(
            decode_err(&[0x32, 0x05, 0x00, 0x01, b't', 0x00, 0x00]),
            DecodeError::ZeroPacketId
        );
        assert_eq!(
            decode_err(&[0x34, 0x06, 0x00, 0x01, b't', 0x00, 0x00, b'x']),
            DecodeError::ZeroPacketId
        );
    }

    #[test]
    fn zero_packet_id_bytes_are_payload_at_qos0() {
        assert_eq!(
            decode_one(&[0x30, 0x05, 0x00, 0x01, b't', 0x00, 0x00]),
            Ok(Packet::Publish(Publish {
                dup: false,
                qos: QoS::AtMostOnce,
                retain: false,
                topic: TopicName::new("t").unwrap(),
                packet_id: None,
                payload: Bytes::from_static(&[0, 0]),
            }))
        );
    }

    #[test]
    fn short_bodies() {
        for bytes in [
            &[0x30, 0x00][..],
            &[0x30, 0x01, 0x00],
            &[0x30, 0x02, 0x00, 0x02],
            &[0x30, 0x03, 0x00, 0x02, b'a'],
            &[0x32, 0x03, 0x00, 0x01, b't'],
            &[0x32, 0x04, 0x00, 0x01, b't', 0x00],
        ] {
            assert!(
                matches!(decode_err(bytes), DecodeError::MalformedPacket(_)),
                "{bytes:?}"
            );
        }
    }

    #[test]
    fn encode_errors_leave_output_untouched() {
        // Too large for the protocol. The zeroed allocation is lazy and encode fails before
        // touching it, so this is cheap.
        let p = Publish {
            payload: Bytes::from(vec![0u8; 268_435_456]),
            ..publish(QoS::AtMostOnce, None)
        };
        let mut out = BytesMut::from(&b"keep"[..]);
        assert!(matches!(
            p.encode(&mut out),
            Err(EncodeError::PacketTooLarge(_))
        ));
        assert_eq!(&out[..], b"keep");
        // Largest payload that fits.
        let topic_len = p.topic.as_bytes().len();
        let p = Publish {
            payload: p.payload.slice(..268_435_455 - 2 - topic_len),
            ..p
        };
        assert_eq!(p.encoded_len(), PROTOCOL_MAX);
    }

    const PROTOCOL_MAX: usize = super::super::PROTOCOL_MAX_PACKET_SIZE;
}
