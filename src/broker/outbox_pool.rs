//! One shard's spare outbox buffers. A connection that has written everything and has nothing
//! new gives its buffers back here, and the next connection with something to write takes one, so
//! a turn that writes to many connections allocates nothing and frees nothing.
//!
//! Why: freeing every burst's buffers and allocating them again next turn cost fan-out a third of
//! the broker's CPU once the bursts grew past glibc's trim threshold (`fanout -n 50 --inflight
//! 128`: 50 buffers of ~10 KB a turn freed at the top of the heap, returned to the kernel, faulted
//! in again, then grown by doubling with a copy each time; `perf`: page faults 7 %, `realloc`
//! copies 4 %). The pool is bounded (count, bytes, size of one buffer) so that what it keeps
//! stays small next to the connections themselves, and an idle connection still keeps no buffer.
//!
//! Plain data: no I/O, no knowledge of what the bytes are. The buffer sizes live here; the
//! connection (`broker/connection.rs`) takes its outbox from the pool.

use bytes::BytesMut;

/// What an empty outbox reserves when something is written to it: a few small packets, or one
/// PUBLISH of up to ~1 KB, without reallocating.
pub const OUTBOX_START: usize = 1024;

/// At most this many spare buffers are kept.
const MAX_BUFFERS: usize = 256;
/// At most this much capacity, all spare buffers together.
const MAX_BYTES: usize = 4 << 20;
/// A buffer larger than this (a subscriber that fell far behind) is freed, not kept.
const MAX_BUFFER: usize = 256 << 10;

/// Spare, empty outbox buffers of one shard; see the module documentation.
#[derive(Debug, Default)]
pub struct OutboxPool {
    spare: Vec<BytesMut>,
    /// The capacity of `spare`, summed.
    bytes: usize,
}

impl OutboxPool {
    /// An empty buffer for an outbox: a spare one (the most recently given, its memory the most
    /// likely to be in cache), or a new one of [`OUTBOX_START`] bytes.
    pub fn take(&mut self) -> BytesMut {
        match self.spare.pop() {
            Some(buf) => {
                self.bytes -= buf.capacity();
                buf
            }
            None => BytesMut::with_capacity(OUTBOX_START),
        }
    }

    /// Keeps `buf` (emptied) for a later [`take`](Self::take), or frees it when it is smaller than
    /// a new buffer, larger than `MAX_BUFFER` (256 KiB), or the pool is full.
    pub fn give(&mut self, mut buf: BytesMut) {
        let capacity = buf.capacity();
        if !(OUTBOX_START..=MAX_BUFFER).contains(&capacity)
            || self.spare.len() >= MAX_BUFFERS
            || self.bytes + capacity > MAX_BYTES
        {
            return;
        }
        buf.clear();
        self.bytes += capacity;
        self.spare.push(buf);
    }

    /// How many spare buffers are kept.
    pub fn len(&self) -> usize {
        self.spare.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spare.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_given_buffer_is_taken_again_empty_with_its_capacity() {
        let mut pool = OutboxPool::default();
        let mut buf = BytesMut::with_capacity(16 << 10);
        buf.extend_from_slice(b"written");
        let at = buf.as_ptr();
        pool.give(buf);
        assert_eq!(pool.len(), 1);
        let again = pool.take();
        assert!(again.is_empty());
        assert_eq!(again.as_ptr(), at, "the same memory, not a new allocation");
        assert!(again.capacity() >= 16 << 10);
        assert!(pool.is_empty());
        assert_eq!(pool.bytes, 0);
    }

    #[test]
    fn an_empty_pool_hands_out_a_new_buffer_of_the_start_size() {
        let mut pool = OutboxPool::default();
        let buf = pool.take();
        assert!(buf.is_empty());
        assert!(buf.capacity() >= OUTBOX_START);
    }

    #[test]
    fn buffers_too_small_or_too_large_are_freed() {
        let mut pool = OutboxPool::default();
        pool.give(BytesMut::new());
        pool.give(BytesMut::with_capacity(OUTBOX_START / 2));
        pool.give(BytesMut::with_capacity(MAX_BUFFER + 1));
        assert!(pool.is_empty());
        pool.give(BytesMut::with_capacity(MAX_BUFFER));
        assert_eq!(pool.len(), 1);
    }

    #[test]
    fn the_pool_keeps_at_most_its_count_and_its_bytes() {
        let mut pool = OutboxPool::default();
        for _ in 0..MAX_BUFFERS + 10 {
            pool.give(BytesMut::with_capacity(OUTBOX_START));
        }
        assert_eq!(pool.len(), MAX_BUFFERS);

        let mut pool = OutboxPool::default();
        for _ in 0..100 {
            pool.give(BytesMut::with_capacity(MAX_BUFFER));
        }
        assert_eq!(pool.len(), MAX_BYTES / MAX_BUFFER);
        assert!(pool.bytes <= MAX_BYTES);
    }
}
