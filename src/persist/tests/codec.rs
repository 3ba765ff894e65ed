//! Frames and headers: every record round-trips byte for byte, a cut at any byte keeps exactly the
//! records before it, a flipped bit stops the reader at its frame, a bad body is refused.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};

use super::gen::{file, read, Gen};
use crate::persist::codec::*;
use crate::persist::Record;
use crate::protocol::{Message, QoS, SubOptions, TopicFilter, TopicName};

fn message(topic: &str, payload: &'static [u8], qos: QoS, retain: bool) -> Message {
    Message {
        topic: TopicName::new(topic).expect("valid topic"),
        payload: Bytes::from_static(payload),
        qos,
        retain,
        properties: None,
    }
}

/// One record of each variant, with edge values.
pub(super) fn one_of_each() -> Vec<Record> {
    let c: Arc<str> = Arc::from("client-1");
    let filter = TopicFilter::new("a/+/#").expect("valid filter");
    vec![
        Record::SessionOpen {
            client_id: c.clone(),
        },
        Record::SessionUser {
            client_id: c.clone(),
            username: Some(Arc::from("user-1")),
        },
        Record::SessionUser {
            client_id: c.clone(),
            username: None,
        },
        Record::SessionDrop {
            client_id: Arc::from(""),
        },
        Record::SessionOffline {
            client_id: c.clone(),
            at_unix_ms: u64::MAX,
        },
        Record::Subscribe {
            client_id: c.clone(),
            filter: filter.clone(),
            options: SubOptions::qos(QoS::ExactlyOnce),
        },
        Record::Unsubscribe {
            client_id: c.clone(),
            filter,
        },
        Record::Will {
            client_id: c.clone(),
            will: None,
        },
        Record::Will {
            client_id: c.clone(),
            will: Some(message("will/\u{e9}", b"gone", QoS::AtLeastOnce, true)),
        },
        Record::Message {
            id: 1,
            message: message("t", b"", QoS::AtMostOnce, false),
        },
        Record::Enqueue {
            client_id: c.clone(),
            id: u64::MAX,
            qos: QoS::AtLeastOnce,
        },
        Record::PacketId {
            client_id: c.clone(),
            id: 7,
            packet_id: u16::MAX,
        },
        Record::Released {
            client_id: c.clone(),
            id: 7,
        },
        Record::Done {
            client_id: c.clone(),
            id: 0,
        },
        Record::Qos2Received {
            client_id: c.clone(),
            packet_id: 1,
        },
        Record::Qos2Released {
            client_id: c,
            packet_id: 65000,
        },
        Record::Retain {
            topic: TopicName::new("r").expect("valid topic"),
            message: Some(message("r", b"kept", QoS::ExactlyOnce, true)),
            clock: 3,
            shard: u32::MAX,
        },
        Record::Retain {
            topic: TopicName::new("r").expect("valid topic"),
            message: None,
            clock: u64::MAX,
            shard: 0,
        },
    ]
}

/// Every variant, then `n` records of a journal with payloads of at most 60 bytes (every byte
/// of it is cut or flipped: small keeps that fast).
pub(super) fn small_journal(seed: u64, n: usize) -> Vec<Record> {
    let mut gen = Gen::new(seed);
    gen.max_payload = 60;
    let mut records = one_of_each();
    records.extend(gen.journal(n, 0));
    records
}

/// Encodes `record` alone, frame only.
pub(super) fn frame_of(record: &Record) -> BytesMut {
    let mut out = BytesMut::new();
    encode(record, &mut out).expect("encodable record");
    out
}

/// `record`'s frame alone, as it sits inside a block.
pub(super) fn bare_frame(record: &Record) -> BytesMut {
    let mut out = BytesMut::new();
    encode_frame(record, &mut out).expect("encodable record");
    out
}

/// A block holding `frames` as they are, with a correct CRC.
pub(super) fn raw_block(frames: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.put_u32_le(frames.len() as u32);
    out.put_u32_le(crc32c::crc32c(frames));
    out.extend_from_slice(frames);
    out
}

/// A block of one frame of type `record_type` with `body`, and a correct CRC.
fn raw_frame(record_type: u8, body: &[u8]) -> Vec<u8> {
    let mut frame = Vec::new();
    frame.put_u32_le(body.len() as u32 + 1);
    frame.push(record_type);
    frame.extend_from_slice(body);
    raw_block(&frame)
}

/// A file: the header, then `frames` as they are.
pub(super) fn raw_file(frames: &[&[u8]]) -> Bytes {
    let mut out = BytesMut::new();
    encode_header(FileKind::Journal, &mut out);
    for frame in frames {
        out.put_slice(frame);
    }
    out.freeze()
}

/// A file of `records`, and where each frame ends.
fn file_with_ends(records: &[Record]) -> (Bytes, Vec<usize>) {
    let mut out = BytesMut::new();
    encode_header(FileKind::Journal, &mut out);
    let mut ends = Vec::new();
    for record in records {
        encode(record, &mut out).expect("encodable record");
        ends.push(out.len());
    }
    (out.freeze(), ends)
}

#[test]
fn every_record_type_round_trips_and_reencodes_to_the_same_bytes() {
    let mut records = one_of_each();
    let mut gen = Gen::new(1);
    records.extend((0..3000).map(|_| gen.record()));
    for record in &records {
        let frame = frame_of(record);
        let mut reader = Reader::new(frame.clone().freeze(), 0);
        let decoded = reader.next().expect("one record").expect("it reads");
        assert_eq!(&decoded, record);
        assert_eq!(reader.next(), None, "nothing after the one frame");
        assert_eq!(frame_of(&decoded), frame, "canonical encoding");
    }
    let (read_back, error) = read(file(FileKind::Snapshot, &records));
    assert_eq!(read_back, records);
    assert_eq!(error, None);
}

#[test]
fn a_borrowed_live_message_frames_as_its_stored_record_with_retain_cleared() {
    for retain in [false, true] {
        for qos in [QoS::AtLeastOnce, QoS::ExactlyOnce] {
            let live = message("a/b", b"payload", qos, retain);
            let mut borrowed = BytesMut::new();
            encode_stored_message(42, &live, &mut borrowed).expect("frames");
            let stored = Record::Message {
                id: 42,
                message: Message {
                    retain: false,
                    ..live.clone()
                },
            };
            assert_eq!(borrowed, bare_frame(&stored), "retain {retain}, {qos:?}");
            let decoded = decode_all(raw_block(&borrowed).into()).expect("reads");
            assert_eq!(decoded, vec![stored]);
        }
    }
}

#[test]
fn borrowed_enqueue_and_done_frame_as_their_records() {
    for qos in [QoS::AtLeastOnce, QoS::ExactlyOnce] {
        let mut out = BytesMut::new();
        encode_enqueue("client-é", 7, qos, &mut out).expect("frames");
        let record = Record::Enqueue {
            client_id: Arc::from("client-é"),
            id: 7,
            qos,
        };
        assert_eq!(out, bare_frame(&record));
    }
    let mut out = BytesMut::new();
    encode_done("c", u64::MAX, &mut out).expect("frames");
    let record = Record::Done {
        client_id: Arc::from("c"),
        id: u64::MAX,
    };
    assert_eq!(out, bare_frame(&record));
    let long = "x".repeat(70_000);
    let mut out = BytesMut::new();
    assert!(encode_done(&long, 1, &mut out).is_err());
    assert!(out.is_empty(), "nothing appended on error");
}

#[test]
fn payloads_and_topics_are_slices_of_the_file_not_copies() {
    let data = file(FileKind::Journal, &one_of_each());
    let range = data.as_ptr() as usize..data.as_ptr() as usize + data.len();
    let (records, _) = read(data.clone());
    let Some(Record::Retain {
        topic,
        message: Some(m),
        ..
    }) = records.iter().find(|r| {
        matches!(
            r,
            Record::Retain {
                message: Some(_),
                ..
            }
        )
    })
    else {
        panic!("no retained message: {records:?}");
    };
    for ptr in [
        topic.as_bytes().as_ptr(),
        m.topic.as_bytes().as_ptr(),
        m.payload.as_ptr(),
    ] {
        assert!(range.contains(&(ptr as usize)), "copied out of the file");
    }
}

#[test]
fn header_round_trips_and_refuses_other_files() {
    for kind in [FileKind::Journal, FileKind::Snapshot] {
        let mut out = BytesMut::new();
        encode_header(kind, &mut out);
        assert_eq!(out.len(), HEADER_LEN);
        assert_eq!(check_header(&out), Ok(kind));
    }
    let mut good = BytesMut::new();
    encode_header(FileKind::Journal, &mut good);
    assert_eq!(check_header(&good[..5]), Err(HeaderError::Short(5)));
    let mut bad = good.clone();
    bad[0] = b'X';
    assert!(matches!(check_header(&bad), Err(HeaderError::BadMagic(m)) if m[0] == b'X'));
    let mut bad = good.clone();
    bad[8] = 3;
    assert_eq!(check_header(&bad), Err(HeaderError::UnsupportedVersion(3)));
    let mut bad = good.clone();
    bad[10] = 3;
    assert_eq!(check_header(&bad), Err(HeaderError::UnknownKind(3)));
    let mut bad = good;
    bad[11] = 1;
    assert_eq!(check_header(&bad), Err(HeaderError::Reserved(1)));
}

#[test]
fn a_cut_at_any_byte_keeps_exactly_the_whole_frames_before_it() {
    let records = small_journal(2, 40);
    let (data, ends) = file_with_ends(&records);
    for cut in HEADER_LEN..=data.len() {
        let whole = ends.iter().filter(|&&end| end <= cut).count();
        let intact_end = if whole == 0 {
            HEADER_LEN
        } else {
            ends[whole - 1]
        };
        let (read_back, error) = read(data.slice(..cut));
        assert_eq!(read_back, records[..whole], "cut at {cut}");
        if intact_end == cut {
            assert_eq!(error, None, "cut at a frame boundary {cut}");
        } else {
            let error = error.expect("a cut inside a frame is reported");
            assert_eq!(error.offset, intact_end, "cut at {cut}");
            assert!(
                matches!(
                    error.reason,
                    StopReason::ShortHeader { .. } | StopReason::ShortFrame { .. }
                ),
                "cut at {cut}: {error}"
            );
        }
    }
}

#[test]
fn a_flipped_bit_stops_the_reader_at_its_frame_and_keeps_the_prefix() {
    let records = small_journal(3, 30);
    let (data, ends) = file_with_ends(&records);
    let mut start = HEADER_LEN;
    for (index, &end) in ends.iter().enumerate() {
        for bit in 0..(end - start) * 8 {
            let mut bad = BytesMut::from(&data[..]);
            bad[start + bit / 8] ^= 1 << (bit % 8);
            let (read_back, error) = read(bad.freeze());
            assert_eq!(read_back, records[..index], "frame {index} bit {bit}");
            let error = error.expect("a flipped bit is reported");
            assert_eq!(error.offset, start, "frame {index} bit {bit}: {error}");
        }
        start = end;
    }
}

#[test]
fn bodies_that_do_not_decode_are_refused_with_their_reason() {
    let good = frame_of(&Record::SessionOpen {
        client_id: Arc::from("a"),
    });
    let cid = [1, 0, b'a'];
    let topic_msg = |flags: u8| -> Vec<u8> {
        let mut b = 1u64.to_le_bytes().to_vec();
        b.extend_from_slice(&[1, 0, b't', flags, 0, 0, 0, 0]);
        b
    };
    let with = |prefix: &[u8], rest: &[u8]| -> Vec<u8> { [prefix, rest].concat() };
    let cases: Vec<(Vec<u8>, StopReason)> = vec![
        (raw_frame(0, &cid), StopReason::UnknownType(0)),
        (raw_frame(21, &cid), StopReason::UnknownType(21)),
        (raw_frame(1, &[5, 0, b'a']), body(1, BodyError::Truncated)),
        (
            raw_frame(1, &[1, 0, b'a', 0]),
            body(1, BodyError::Trailing(1)),
        ),
        (raw_frame(1, &[1, 0, 0xff]), body(1, BodyError::Utf8)),
        (
            raw_frame(4, &with(&cid, &[1, 0, b't', 3])),
            body(4, BodyError::QoS(3)),
        ),
        (
            raw_frame(5, &with(&cid, &[2, 0, b'a', b'#'])),
            body(
                5,
                BodyError::Filter(crate::protocol::DecodeError::InvalidTopicFilter(
                    "'#' must be alone in the last level",
                )),
            ),
        ),
        (
            raw_frame(7, &topic_msg(0b1_0000)),
            body(7, BodyError::Flags(0b1_0000)),
        ),
        (
            // Properties flagged, but an empty set: not how a message without them is written.
            raw_frame(7, &with(&topic_msg(0b1000), &[0, 0, 0, 0])),
            body(7, BodyError::Flags(0b1000)),
        ),
        (
            // Content Type (3) before Payload Format Indicator (1): written the other way round.
            raw_frame(
                7,
                &with(&topic_msg(0b1000), &[6, 0, 0, 0, 3, 0, 1, b'x', 1, 1]),
            ),
            body(7, BodyError::PropertiesNotCanonical),
        ),
        (
            // The identifier 1 in two bytes (0x81 0x00): a variable byte integer not minimal.
            raw_frame(7, &with(&topic_msg(0b1000), &[3, 0, 0, 0, 0x81, 0, 1])),
            body(7, BodyError::PropertiesNotCanonical),
        ),
        (
            raw_frame(16, &with(&cid, &[1, 0, b't', 0x30, 0, 0, 0, 0])),
            body(16, BodyError::Options(0x30)),
        ),
        (
            raw_frame(18, &with(&cid, &[0, 0, 0, 0])),
            body(18, BodyError::ZeroWillDelay),
        ),
        (
            raw_frame(7, &topic_msg(0b11)),
            body(7, BodyError::Flags(0b11)),
        ),
        (
            raw_frame(6, &with(&cid, &[2])),
            body(6, BodyError::OptionTag(2)),
        ),
        (
            raw_frame(12, &with(&cid, &[0, 0])),
            body(12, BodyError::ZeroPacketId),
        ),
        (
            raw_frame(14, &[1, 0, b'+', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            body(
                14,
                BodyError::Topic(crate::protocol::DecodeError::InvalidTopicName(
                    "contains a wildcard character",
                )),
            ),
        ),
    ];
    for (frame, reason) in cases {
        let (records, error) = read(raw_file(&[&good, &frame, &good]));
        assert_eq!(records.len(), 1, "{reason}");
        let message = reason.to_string();
        assert_eq!(
            error,
            Some(ReadError {
                offset: HEADER_LEN + good.len(),
                reason
            }),
            "{message}"
        );
    }
}

fn body(record_type: u8, error: BodyError) -> StopReason {
    StopReason::Body { record_type, error }
}

#[test]
fn the_zeroed_end_of_a_preallocated_segment_reads_as_unwritten() {
    let records = one_of_each();
    let mut data = BytesMut::from(&file(FileKind::Journal, &records)[..]);
    let end = data.len();
    data.put_bytes(0, 4096);
    let (read_back, error) = read(data.freeze());
    assert_eq!(read_back, records);
    assert_eq!(
        error,
        Some(ReadError {
            offset: end,
            reason: StopReason::Unwritten
        })
    );
}

#[test]
fn a_length_over_the_limit_is_corruption_not_an_allocation() {
    let mut block = Vec::new();
    block.put_u32_le(MAX_BLOCK_LEN as u32 + 1);
    block.put_u32_le(0);
    block.push(1);
    let (records, error) = read(raw_file(&[&block]));
    assert!(records.is_empty());
    assert_eq!(
        error,
        Some(ReadError {
            offset: HEADER_LEN,
            reason: StopReason::TooLong(MAX_BLOCK_LEN as u32 + 1)
        })
    );
}

#[test]
fn records_that_cannot_be_framed_are_refused_and_nothing_is_appended() {
    let mut out = BytesMut::from(&b"kept"[..]);
    let long: Arc<str> = Arc::from("x".repeat(70_000));
    assert_eq!(
        encode(&Record::SessionOpen { client_id: long }, &mut out),
        Err(EncodeError::StringTooLong {
            field: "client id",
            len: 70_000
        })
    );
    assert_eq!(
        encode(
            &Record::Qos2Received {
                client_id: Arc::from("a"),
                packet_id: 0
            },
            &mut out
        ),
        Err(EncodeError::ZeroPacketId)
    );
    assert_eq!(&out[..], b"kept");
}
