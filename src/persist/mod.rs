//! Persistence: what a shard writes so that nothing it acknowledged is lost across a restart or a
//! `kill -9` (the durability issue; the design is in the README's "Persistence" section).
//!
//! - `record.rs`: the journal records, the one vocabulary of the journal and of snapshots.
//! - `codec.rs`: their bytes: the file header, frames (`len | crc32c | type | body`), the reader
//!   that stops at the first frame that does not read and says where; `body.rs`: each record
//!   type's body, `body_read.rs` reading it back.
//! - `state.rs`: the fold: [`DurableState`] built by applying records, idempotently; the session,
//!   queue and retained types a broker core is restored from; the recovery steps in order.
//! - `snapshot.rs`: the records that rebuild a state (a snapshot file is header + frames too).
//! - `reshard.rs`: merge the shards' states, split by home shard, renumber message ids.
//!
//! Plain Rust over bytes: no file, no clock, no runtime. The broker core (`crate::broker`) emits
//! records and replays them; the server writes and reads the files.

// Fields are named for what they hold; the variants say what they mean.
#![allow(missing_docs)]

mod body;
mod body_read;
pub mod codec;
pub mod record;
mod reshard;
mod snapshot;
pub mod state;

#[cfg(test)]
mod tests;

pub use codec::{encode, encode_header, EncodeError, FileKind, ReadError, Reader};
pub use record::{MsgId, Record};
pub use snapshot::SnapshotRecords;
pub use state::{
    DurableState, FastMap, Queue, QueueIter, QueuedMessage, ReplayReport, RetainVersion, Retained,
    Session,
};
