//! Blocks (journal format 2): a cut or a flipped bit inside a block drops that whole block, a frame
//! that crosses its block's end is corruption, empty blocks are not written, and files of format 1
//! (one CRC per record) still read.

use bytes::{BufMut, Bytes, BytesMut};

use super::codec::{bare_frame, frame_of, one_of_each, raw_block, raw_file, small_journal};
use super::gen::read;
use crate::persist::codec::*;
use crate::persist::Record;

/// A journal file whose records are written in blocks of `per_block`; where each block ends.
fn file_in_blocks(records: &[Record], per_block: usize) -> (Bytes, Vec<usize>) {
    let mut out = BytesMut::new();
    encode_header(FileKind::Journal, &mut out);
    let mut ends = Vec::new();
    for chunk in records.chunks(per_block) {
        let block = begin_block(&mut out);
        for record in chunk {
            encode_frame(record, &mut out).expect("encodable record");
        }
        end_block(&mut out, block);
        ends.push(out.len());
    }
    (out.freeze(), ends)
}

#[test]
fn a_cut_inside_a_block_keeps_the_whole_blocks_before_it_and_none_of_its_records() {
    let records = small_journal(3, 60);
    let per_block = 7;
    let (data, ends) = file_in_blocks(&records, per_block);
    let (all, error) = read(data.clone());
    assert_eq!((all, error), (records.clone(), None));
    for cut in HEADER_LEN..data.len() {
        let whole = ends.iter().filter(|&&end| end <= cut).count();
        let (read_back, error) = read(data.slice(..cut));
        assert_eq!(
            read_back,
            records[..(whole * per_block).min(records.len())],
            "cut {cut}"
        );
        let kept = if whole == 0 {
            HEADER_LEN
        } else {
            ends[whole - 1]
        };
        assert_eq!(
            error.map(|e| e.offset),
            (cut > kept).then_some(kept),
            "cut {cut}"
        );
    }
}

#[test]
fn a_flipped_bit_drops_its_whole_block_and_what_follows() {
    let records = small_journal(4, 30);
    let (data, ends) = file_in_blocks(&records, 10);
    // A byte inside the second block.
    let mut bad = BytesMut::from(&data[..]);
    bad[ends[0] + 20] ^= 0x10;
    let (read_back, error) = read(bad.freeze());
    assert_eq!(read_back, records[..10]);
    let error = error.expect("stops at the second block");
    assert_eq!(error.offset, ends[0]);
    assert!(matches!(error.reason, StopReason::Crc { .. }), "{error}");
}

#[test]
fn a_frame_crossing_its_blocks_end_is_corruption_even_with_a_good_crc() {
    let good = frame_of(&one_of_each()[0]);
    let mut frame = Vec::new();
    frame.put_u32_le(100);
    frame.extend_from_slice(&[1, 0, 1, b'c']);
    let (records, error) = read(raw_file(&[&good, &raw_block(&frame), &good]));
    assert_eq!(records.len(), 1);
    assert_eq!(
        error,
        Some(ReadError {
            offset: HEADER_LEN + good.len(),
            reason: StopReason::BadFrame("length crosses the block's end"),
        })
    );
}

#[test]
fn an_empty_block_is_not_written() {
    let mut out = BytesMut::from(&b"kept"[..]);
    let block = begin_block(&mut out);
    end_block(&mut out, block);
    assert_eq!(&out[..], b"kept");
}

#[test]
fn files_of_format_1_still_read() {
    // Format 1: the header with version 1, then one `len | crc32c | type | body` per record.
    let records = one_of_each();
    let mut data = BytesMut::new();
    encode_header(FileKind::Journal, &mut data);
    data[8..10].copy_from_slice(&1u16.to_le_bytes());
    let mut ends = Vec::new();
    for record in &records {
        let frame = bare_frame(record);
        let covered = &frame[FRAME_HEADER_LEN..];
        data.put_u32_le(covered.len() as u32);
        data.put_u32_le(crc32c::crc32c(covered));
        data.put_slice(covered);
        ends.push(data.len());
    }
    let data = data.freeze();
    let (kind, reader) = Reader::open(data.clone()).expect("a format-1 header reads");
    assert_eq!(kind, FileKind::Journal);
    let read_back: Vec<Record> = reader.map(|r| r.expect("reads")).collect();
    assert_eq!(read_back, records);
    let cut = ends[2] + 3;
    let (_, reader) = Reader::open(data.slice(..cut)).expect("header");
    let results: Vec<_> = reader.collect();
    assert_eq!(results.len(), 4, "three records, then where it stopped");
    assert!(matches!(&results[3], Err(e) if e.offset == ends[2]));
}

#[test]
fn a_frame_header_crossing_its_blocks_end_is_corruption_even_with_blocks_after_it() {
    // Found by the `journal` fuzz target: the header's bytes exist in the file (the next block
    // follows), but not in this block.
    let good = frame_of(&one_of_each()[0]);
    let inner = bare_frame(&one_of_each()[0]);
    let mut frames = inner.to_vec();
    frames.extend_from_slice(&[9, 0]);
    let (records, error) = read(raw_file(&[&good, &raw_block(&frames), &good]));
    assert_eq!(records.len(), 1);
    assert_eq!(
        error,
        Some(ReadError {
            offset: HEADER_LEN + good.len(),
            reason: StopReason::BadFrame("header crosses the block's end"),
        })
    );
}
