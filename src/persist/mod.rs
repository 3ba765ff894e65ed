//! Persistence: what a shard writes so that nothing it acknowledged is lost across a restart or a
//! `kill -9` (the durability issue; the design is in the README's "Persistence" section).
//!
//! - `record.rs`: the journal records, the one vocabulary of the journal and of snapshots.
//! - `codec.rs`: their bytes: the file header, frames (`len | crc32c | type | body`), the reader
//!   that stops at the first frame that does not read and says where.
//!
//! Plain Rust over bytes: no file, no clock, no runtime. The broker core (`crate::broker`) emits
//! records and replays them; the server writes and reads the files.

// Fields are named for what they hold; the variants say what they mean.
#![allow(missing_docs)]

pub mod codec;
pub mod record;

#[cfg(test)]
mod tests;

pub use codec::{encode, FileKind, ReadError, Reader};
pub use record::{MsgId, Record};
