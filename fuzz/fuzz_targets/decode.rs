//! Fuzz target `decode`: arbitrary bytes through `protocol::decode` (MQTT 3.1/3.1.1) and
//! `protocol::v5::decode` (MQTT 5, AUTH included), as a reader would see them.
//!
//! Input: the first byte picks the maximum packet size (mostly small, so `PacketTooLarge` is
//! reached), the second where the stream is split in two reads; the rest is the stream, read once
//! at each level. Checked at both levels:
//! - no panic, and every call either consumes bytes, or returns `Ok(None)` leaving them untouched;
//! - every decoded packet encodes, and its encoding decodes to the same packet, consuming it all;
//! - reading the stream in two pieces yields the same packets, and the same error, as in one piece
//!   ("need more bytes" is a state, never an error and never a different answer);
//! - every error names a reason code of 0x80 or above (what the broker closes an MQTT 5
//!   connection with);
//! - `peek_publish` (the broker's in-place route) and `v5::peek_publish` take exactly the
//!   PUBLISHes their `decode` takes, with the same fields and length.
#![no_main]

use std::fmt::Debug;

use amqtt::protocol::{
    decode, peek_publish, v5, DecodeError, EncodeError, Packet, PROTOCOL_MAX_PACKET_SIZE,
};
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

/// One protocol level's decoder and encoder.
struct Level<P> {
    decode: fn(&mut BytesMut, usize) -> Result<Option<P>, DecodeError>,
    encode: fn(&P, &mut BytesMut) -> Result<(), EncodeError>,
    /// Extra checks of one `decode` call: the buffer before it and the result.
    check: fn(&[u8], &BytesMut, &Result<Option<P>, DecodeError>, usize),
}

const V3: Level<Packet> = Level {
    decode,
    encode: Packet::encode,
    check: check_peek,
};

const V5: Level<v5::Packet> = Level {
    decode: v5::decode,
    encode: v5::Packet::encode,
    check: check_peek_v5,
};

fuzz_target!(|data: &[u8]| {
    let [size, split, stream @ ..] = data else {
        return;
    };
    let max = match size % 4 {
        0 => usize::from(*size),
        1 => 64,
        2 => 1024,
        _ => PROTOCOL_MAX_PACKET_SIZE,
    };
    let at = usize::from(*split).min(stream.len());
    both_ways(&V3, stream, at, max);
    both_ways(&V5, stream, at, max);
});

/// Reads `stream` whole and split at `at`, and checks both give the same answer.
fn both_ways<P: Clone + PartialEq + Debug>(level: &Level<P>, stream: &[u8], at: usize, max: usize) {
    let whole = read_all(level, &[stream], max);
    let pieces = read_all(level, &[&stream[..at], &stream[at..]], max);
    assert_eq!(whole, pieces, "split at {at} changed the result");
}

/// Decodes `reads` appended one after another to a buffer, as a connection's reader does, until
/// the stream ends or breaks. Returns the packets and the error, if any.
fn read_all<P: Clone + PartialEq + Debug>(
    level: &Level<P>,
    reads: &[&[u8]],
    max: usize,
) -> (Vec<P>, Option<DecodeError>) {
    let mut buf = BytesMut::new();
    let mut packets = Vec::new();
    for read in reads {
        buf.extend_from_slice(read);
        loop {
            let before = buf.clone();
            let decoded = (level.decode)(&mut buf, max);
            (level.check)(&before, &buf, &decoded, max);
            match decoded {
                Ok(Some(packet)) => {
                    assert!(buf.len() < before.len(), "a packet consumed nothing");
                    check_round_trip(level, &packet);
                    packets.push(packet);
                }
                Ok(None) => {
                    assert_eq!(buf, before, "incomplete input was modified");
                    break;
                }
                Err(error) => {
                    assert!(error.reason_code().is_error(), "{error:?}");
                    return (packets, Some(error));
                }
            }
        }
    }
    (packets, None)
}

/// `peek_publish` takes exactly the PUBLISHes `decode` takes.
fn check_peek(
    before: &[u8],
    after: &BytesMut,
    decoded: &Result<Option<Packet>, DecodeError>,
    max: usize,
) {
    let peeked = peek_publish(before, max);
    match (&peeked, decoded) {
        (Some((p, length)), Ok(Some(Packet::Publish(d)))) => {
            assert_eq!(*length, before.len() - after.len(), "peek_publish length");
            assert_eq!((p.dup, p.qos, p.retain), (d.dup, d.qos, d.retain));
            assert_eq!((p.topic, p.packet_id), (d.topic.as_bytes(), d.packet_id));
            assert_eq!(p.payload, &d.payload[..], "peek_publish payload");
        }
        (None, Ok(Some(Packet::Publish(_)))) => panic!("peek_publish refused a PUBLISH"),
        (Some(_), _) => panic!("peek_publish took what decode did not: {decoded:?}"),
        (None, _) => {}
    }
}

/// `v5::peek_publish` takes exactly the PUBLISHes `v5::decode` takes.
fn check_peek_v5(
    before: &[u8],
    after: &BytesMut,
    decoded: &Result<Option<v5::Packet>, DecodeError>,
    max: usize,
) {
    let peeked = v5::peek_publish(before, max);
    match (&peeked, decoded) {
        (Some((p, _, length)), Ok(Some(v5::Packet::Publish(d)))) => {
            assert_eq!(*length, before.len() - after.len(), "peek_publish length");
            assert_eq!((p.dup, p.qos, p.retain), (d.dup, d.qos, d.retain));
            let topic = d.topic.as_ref().map_or(&[][..], |t| t.as_bytes());
            assert_eq!((p.topic, p.packet_id), (topic, d.packet_id));
            assert_eq!(p.payload, &d.payload[..], "peek_publish payload");
        }
        (None, Ok(Some(v5::Packet::Publish(_)))) => panic!("v5::peek_publish refused a PUBLISH"),
        (Some(_), _) => panic!("v5::peek_publish took what decode did not: {decoded:?}"),
        (None, _) => {}
    }
}

fn check_round_trip<P: Clone + PartialEq + Debug>(level: &Level<P>, packet: &P) {
    let mut encoded = BytesMut::new();
    (level.encode)(packet, &mut encoded).expect("a decoded packet encodes");
    let again = (level.decode)(&mut encoded, PROTOCOL_MAX_PACKET_SIZE);
    assert_eq!(
        again.as_ref(),
        Ok(&Some(packet.clone())),
        "round trip changed it"
    );
    assert!(
        encoded.is_empty(),
        "the encoding holds more than one packet"
    );
}
