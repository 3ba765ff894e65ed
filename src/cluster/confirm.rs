//! Durability bookkeeping of the cluster link, both ways, in the bus's own terms (numbered
//! deliveries, `DeliveryStamp`, confirmed by `Durable { upto }` watermarks):
//! - [`Confirmations`]: the link's confirmations to each shard of the deliveries that shard
//!   numbered to it (a batch is confirmed once JetStream stored it), released in order.
//! - [`Incoming`]: messages from this node's mailbox handed to the shards, each acknowledged to
//!   JetStream only when every shard it went to confirmed it durable.
//!
//! Plain data: no NATS, no bus.

use std::collections::{BTreeSet, VecDeque};

/// Watermarks of the deliveries each shard numbered to the link.
pub struct Confirmations {
    /// Per shard: confirmed up to here, and what is done beyond a gap.
    shards: Vec<(u64, BTreeSet<u64>)>,
}

impl Confirmations {
    pub fn new(shards: usize) -> Self {
        Confirmations {
            shards: (0..shards).map(|_| (0, BTreeSet::new())).collect(),
        }
    }

    /// Delivery `n` from `shard` needs nothing more; returns the new watermark to confirm when
    /// it moved (deliveries are confirmed in order: `upto` covers all below).
    pub fn done(&mut self, shard: usize, n: u64) -> Option<u64> {
        let (upto, beyond) = self.shards.get_mut(shard)?;
        if n <= *upto {
            return None;
        }
        beyond.insert(n);
        let before = *upto;
        while beyond.remove(&(*upto + 1)) {
            *upto += 1;
        }
        (*upto > before).then_some(*upto)
    }
}

/// Mailbox messages waiting for the shards' confirmations, in arrival order.
pub struct Incoming<T> {
    /// The last number given to each shard, and each shard's confirmed watermark.
    sent: Vec<u64>,
    durable: Vec<u64>,
    waiting: VecDeque<(T, Vec<(usize, u64)>)>,
}

impl<T> Incoming<T> {
    pub fn new(shards: usize) -> Self {
        Incoming {
            sent: vec![0; shards],
            durable: vec![0; shards],
            waiting: VecDeque::new(),
        }
    }

    /// The number of the next delivery to `shard`.
    pub fn next_stamp(&mut self, shard: usize) -> u64 {
        self.sent[shard] += 1;
        self.sent[shard]
    }

    /// A message handed to the shards with these (shard, number) deliveries; returns the
    /// messages now ready to acknowledge (in order: one waiting holds up those behind it, so
    /// that JetStream's redelivery after a crash starts at the first unconfirmed one).
    pub fn push(&mut self, message: T, waits: Vec<(usize, u64)>) -> Vec<T> {
        self.waiting.push_back((message, waits));
        self.ready()
    }

    /// `shard` confirmed its deliveries up to `upto`.
    pub fn durable(&mut self, shard: usize, upto: u64) -> Vec<T> {
        if let Some(d) = self.durable.get_mut(shard) {
            *d = (*d).max(upto);
        }
        self.ready()
    }

    /// Nothing waits for the shards.
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    fn ready(&mut self) -> Vec<T> {
        let mut out = Vec::new();
        while let Some((_, waits)) = self.waiting.front() {
            if !waits.iter().all(|&(s, n)| self.durable[s] >= n) {
                break;
            }
            if let Some((message, _)) = self.waiting.pop_front() {
                out.push(message);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confirmations_move_only_over_contiguous_deliveries() {
        let mut c = Confirmations::new(2);
        assert_eq!(c.done(0, 2), None, "1 is not done");
        assert_eq!(c.done(1, 1), Some(1), "shards are separate");
        assert_eq!(c.done(0, 1), Some(2));
        assert_eq!(c.done(0, 1), None, "old");
        assert_eq!(c.done(0, 3), Some(3));
    }

    #[test]
    fn a_mailbox_message_is_acknowledged_once_every_shard_has_it_durable() {
        let mut i = Incoming::new(2);
        let (a0, a1) = (i.next_stamp(0), i.next_stamp(1));
        assert!(i.push("a", vec![(0, a0), (1, a1)]).is_empty());
        let b0 = i.next_stamp(0);
        assert!(i.push("b", vec![(0, b0)]).is_empty());
        assert!(
            i.durable(0, b0).is_empty(),
            "a waits for shard 1, b behind it"
        );
        assert_eq!(i.durable(1, a1), ["a", "b"]);
        assert_eq!(i.push("c", vec![]), ["c"], "nothing to wait for");
    }
}
