//! Fuzz target `journal`: arbitrary bytes through the journal reader (`persist::Reader`) and the
//! replay fold (`persist::DurableState`), as recovery meets a damaged or hostile file.
//!
//! Input: the first byte chooses how the rest is read. Even: the rest is the frames as they are (no
//! file header: the fuzzer need not guess the magic), damaged lengths and CRCs included. Odd: the
//! rest is chunks, each a length byte and that many bytes of `type + body`, framed here with their
//! true length in blocks with their true length and CRC-32C, so that the fuzzer reaches the bodies
//! and the fold instead of stopping at CRCs it cannot guess. Checked, besides "no panic" (and no
//! allocation from a length):
//! - the reader yields records, then at most one error, then nothing; the error's offset is where
//!   the last whole block ended, and each block's records re-encode to exactly the bytes they were
//!   read from (the encoding is canonical);
//! - applying each record twice gives the state applying it once gives (idempotence);
//! - the state's snapshot encodes, reads back without error and rebuilds an equal state;
//! - merging the state with itself, finishing, splitting in three and merging the parts gives the
//!   merged state back.
#![no_main]

use amqtt::persist::codec::{begin_block, encode_frame, end_block};
use amqtt::persist::{DurableState, Reader, Record};
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
/// the end of the input) with its true length, in blocks with their true length and CRC; a
/// length byte with its high bit set closes the block after its chunk.
fn frame_chunks(mut rest: &[u8]) -> Bytes {
    let mut out = BytesMut::new();
    let mut block = None;
    while let Some((&len, tail)) = rest.split_first() {
        let start = *block.get_or_insert_with(|| begin_block(&mut out));
        let (chunk, after) = tail.split_at(usize::from(len & 0x7f).min(tail.len()));
        out.put_u32_le(chunk.len() as u32);
        out.put_slice(chunk);
        if len & 0x80 != 0 {
            end_block(&mut out, start);
            block = None;
        }
        rest = after;
    }
    if let Some(start) = block {
        end_block(&mut out, start);
    }
    out.freeze()
}

/// The records of `data`, checking the reader's contract on the way: records, then at most one
/// error at the end of the last whole block, then nothing; each block's records re-encode to
/// exactly its bytes (the encoding is canonical).
fn read_canonical(data: &Bytes) -> Vec<Record> {
    let mut reader = Reader::new(data.clone(), 0);
    let mut records = Vec::new();
    let mut block_start = 0;
    let mut block: Vec<Record> = Vec::new();
    let mut block_end = 0;
    loop {
        let item = reader.next();
        if reader.offset() != block_end || item.is_none() || matches!(item, Some(Err(_))) {
            if !block.is_empty() {
                check_block(data, block_start, block_end, &block);
                records.append(&mut block);
            }
            block_start = block_end;
            block_end = reader.offset();
        }
        match item {
            None => break,
            Some(Ok(record)) => block.push(record),
            Some(Err(error)) => {
                assert_eq!(error.offset, block_start, "the error's offset: {error}");
                assert!(error.offset < data.len());
                assert!(reader.next().is_none(), "a record after the error");
                break;
            }
        }
    }
    records
}

/// `records` encoded as one block are exactly `data[start..end]`.
fn check_block(data: &Bytes, start: usize, end: usize, records: &[Record]) {
    let mut again = BytesMut::new();
    let block = begin_block(&mut again);
    for record in records {
        encode_frame(record, &mut again).expect("a record read encodes");
    }
    end_block(&mut again, block);
    assert_eq!(&again[..], &data[start..end], "re-encoding changed the block");
}
