//! Fuzz target `journal`: arbitrary bytes through the journal reader (`persist::Reader`) and the
//! replay fold (`persist::DurableState`), as recovery meets a damaged or hostile file.
//!
//! Input: the first byte chooses how the rest is read. Even: the rest is the frames as they are (no
//! file header: the fuzzer need not guess the magic), damaged lengths and CRCs included. Odd: the
//! rest is chunks, each a length byte and that many bytes of `type + body`, framed here with their
//! true length and CRC-32C, so that the fuzzer reaches the bodies and the fold instead of stopping
//! at CRCs it cannot guess. Checked, besides "no panic" (and no allocation from a frame's length):
//! - the reader yields records, then at most one error, then nothing; the error's offset is where
//!   the last whole frame ended, and each record re-encodes to exactly the bytes it was read from
//!   (the encoding is canonical);
//! - applying each record twice gives the state applying it once gives (idempotence);
//! - the state's snapshot encodes, reads back without error and rebuilds an equal state;
//! - merging the state with itself, finishing, splitting in three and merging the parts gives the
//!   merged state back.
#![no_main]

use amqtt::persist::{encode, DurableState, Reader, Record};
use bytes::{BufMut, Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Some((&mode, rest)) = input.split_first() else {
        return;
    };
    let data = if mode % 2 == 0 {
        Bytes::copy_from_slice(rest)
    } else {
        frame_chunks(rest)
    };
    let records = read_canonical(&data);

    let mut once = DurableState::default();
    let mut twice = DurableState::default();
    for record in &records {
        once.apply(record);
        twice.apply(record);
        twice.apply(record);
    }
    assert!(once == twice, "a record applied twice changed the state");

    let mut snapshot = BytesMut::new();
    once.encode_snapshot(&mut snapshot)
        .expect("a state read from frames encodes");
    let (_, reader) = Reader::open(snapshot.freeze()).expect("a snapshot's header reads");
    let mut rebuilt = DurableState::default();
    for item in reader {
        rebuilt.apply(&item.expect("a snapshot reads back whole"));
    }
    assert!(rebuilt == once, "the snapshot rebuilt another state");

    let mut merged = DurableState::merge(vec![once.clone(), once]);
    merged.finish();
    let home = |client_id: &str| client_id.len() % 3;
    let parts = merged.clone().split(3, home);
    assert!(
        DurableState::merge(parts) == merged,
        "split then merge changed the state"
    );
});

/// Frames each chunk of `rest` (a length byte, then that many bytes of `type + body`, cut short at
/// the end of the input) with its true length and CRC.
fn frame_chunks(mut rest: &[u8]) -> Bytes {
    let mut out = BytesMut::new();
    while let Some((&len, tail)) = rest.split_first() {
        let (chunk, after) = tail.split_at(usize::from(len).min(tail.len()));
        out.put_u32_le(chunk.len() as u32);
        out.put_u32_le(crc32c::crc32c(chunk));
        out.put_slice(chunk);
        rest = after;
    }
    out.freeze()
}

/// The records of `data`, checking the reader's contract on the way.
fn read_canonical(data: &Bytes) -> Vec<Record> {
    let mut reader = Reader::new(data.clone(), 0);
    let mut records = Vec::new();
    let mut frame_start = 0;
    while let Some(item) = reader.next() {
        match item {
            Ok(record) => {
                let mut again = BytesMut::new();
                encode(&record, &mut again).expect("a record read encodes");
                assert_eq!(
                    &again[..],
                    &data[frame_start..reader.offset()],
                    "re-encoding changed the frame"
                );
                frame_start = reader.offset();
                records.push(record);
            }
            Err(error) => {
                assert_eq!(error.offset, frame_start, "the error's offset: {error}");
                assert!(error.offset < data.len());
                assert!(reader.next().is_none(), "a record after the error");
                break;
            }
        }
    }
    records
}
