//! Fuzz target `decode`: arbitrary bytes through `protocol::decode`, as a reader would see them.
//!
//! Input: the first byte picks the maximum packet size (mostly small, so `PacketTooLarge` is
//! reached), the second where the stream is split in two reads; the rest is the stream. Checked:
//! - no panic, and every call either consumes bytes, or returns `Ok(None)` leaving them untouched;
//! - every decoded packet encodes, and its encoding decodes to the same packet, consuming it all;
//! - reading the stream in two pieces yields the same packets, and the same error, as in one piece
//!   ("need more bytes" is a state, never an error and never a different answer);
//! - `peek_publish` (the broker's in-place route) takes exactly the PUBLISHes `decode` takes, with
//!   the same fields and length.
#![no_main]

use amqtt::protocol::{decode, peek_publish, DecodeError, Packet, PROTOCOL_MAX_PACKET_SIZE};
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

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
    let whole = read_all(&[stream], max);
    let at = usize::from(*split).min(stream.len());
    let pieces = read_all(&[&stream[..at], &stream[at..]], max);
    assert_eq!(whole, pieces, "split at {at} changed the result");
});

/// Decodes `reads` appended one after another to a buffer, as a connection's reader does, until
/// the stream ends or breaks. Returns the packets and the error, if any.
fn read_all(reads: &[&[u8]], max: usize) -> (Vec<Packet>, Option<DecodeError>) {
    let mut buf = BytesMut::new();
    let mut packets = Vec::new();
    for read in reads {
        buf.extend_from_slice(read);
        loop {
            let before = buf.clone();
            let peeked = peek_publish(&before, max);
            let decoded = decode(&mut buf, max);
            match (&peeked, &decoded) {
                (Some((p, length)), Ok(Some(Packet::Publish(d)))) => {
                    assert_eq!(*length, before.len() - buf.len(), "peek_publish length");
                    assert_eq!((p.dup, p.qos, p.retain), (d.dup, d.qos, d.retain));
                    assert_eq!((p.topic, p.packet_id), (d.topic.as_bytes(), d.packet_id));
                    assert_eq!(p.payload, &d.payload[..], "peek_publish payload");
                }
                (None, Ok(Some(Packet::Publish(_)))) => panic!("peek_publish refused a PUBLISH"),
                (Some(_), _) => panic!("peek_publish took what decode did not: {decoded:?}"),
                (None, _) => {}
            }
            match decoded {
                Ok(Some(packet)) => {
                    assert!(buf.len() < before.len(), "a packet consumed nothing");
                    check_round_trip(&packet);
                    packets.push(packet);
                }
                Ok(None) => {
                    assert_eq!(buf, before, "incomplete input was modified");
                    break;
                }
                Err(error) => return (packets, Some(error)),
            }
        }
    }
    (packets, None)
}

fn check_round_trip(packet: &Packet) {
    let mut encoded = BytesMut::new();
    packet
        .encode(&mut encoded)
        .expect("a decoded packet encodes");
    let again = decode(&mut encoded, PROTOCOL_MAX_PACKET_SIZE);
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
