//! Persistence: what a shard writes so that nothing it acknowledged is lost across a restart or a
//! `kill -9` (the durability issue; the design is in the README's "Persistence" section).
//!
//! - `record.rs`: the journal records, the one vocabulary of the journal and of snapshots.
//!
//! Plain Rust over bytes: no file, no clock, no runtime. The broker core (`crate::broker`) emits
//! records and replays them; the server writes and reads the files.

// Fields are named for what they hold; the variants say what they mean.
#![allow(missing_docs)]

pub mod record;

pub use record::{MsgId, Record};
