//! Unit tests of `persist`: no files, no sockets, no clock.
//!
//! - `gen.rs`: a seeded generator of records and of coherent journals (the shared helpers);
//! - `codec.rs`: frames and headers: round trips, every cut, flipped bits, bad bodies;
//! - `blocks.rs`: journal format 2's blocks, and format-1 files read back;
//! - `fold.rs`: the fold: idempotence, snapshots, fuzzy snapshots, retained versions, split/merge;
//! - `v5.rs`: MQTT 5 state (properties, options, expiries, will delays) round trips and folds,
//!   and files written before it was journaled read as they did;
//! - `speed.rs`: how fast a million queued messages decode and fold (`#[ignore]`d).

mod blocks;
mod codec;
mod fold;
mod gen;
mod speed;
mod v5;
