//! Unit tests of the journal's batching (`journal.rs`).

use super::*;
use crate::protocol::{QoS, TopicName};

#[test]
fn a_batch_over_the_block_target_is_cut_into_blocks_that_all_read() {
    let mut journal = Journal::new(1);
    let payload = Bytes::from(vec![7u8; 300 << 10]);
    let records: Vec<Record> = (0..8)
        .map(|id| Record::Message {
            id,
            message: Message {
                topic: TopicName::new(&format!("t/{id}")).expect("a valid topic"),
                payload: payload.clone(),
                qos: QoS::AtLeastOnce,
                retain: false,
                properties: None,
            },
        })
        .collect();
    for record in &records {
        journal.append(|out| codec::encode_frame(record, out));
    }
    journal.close_block();
    let bytes = journal.bytes.split().freeze();
    let mut reader = codec::Reader::new(bytes.clone(), 0);
    let mut block_ends = Vec::new();
    let mut read_back = Vec::new();
    while let Some(item) = reader.next() {
        read_back.push(item.expect("every block reads"));
        block_ends.push(reader.offset());
    }
    block_ends.dedup();
    assert_eq!(read_back, records);
    // 300 KiB records: the fourth one takes a block past 1 MiB and closes it.
    assert_eq!(block_ends.len(), 2, "{block_ends:?}");
    assert_eq!(block_ends.last(), Some(&bytes.len()));
}
