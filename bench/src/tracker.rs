//! Delivery accounting for one (publisher → subscriber) stream: unique, duplicated, out of order.
//!
//! A subscriber keeps one [`StreamTracker`] per publisher it hears from. Sequence numbers start at
//! 0 and rise by one per message, so the tracker needs only the next expected number and the set of
//! gaps below it (as ranges, so a burst of QoS 0 loss costs one entry, not one per message):
//!
//! * `seq == next`: in order.
//! * `seq > next`: in order but skipping `next..seq`, which becomes a gap (lost so far).
//! * `seq < next` inside a gap: arrived late — counted as out of order, and no longer missing.
//! * `seq < next` elsewhere: already seen — a duplicate.
//!
//! Loss is only known at the end, from the publisher's sent count: `lost = sent - unique`.
//! At most [`MAX_GAPS`] gap ranges are remembered; beyond that the oldest are forgotten, and a
//! message that later fills a forgotten gap counts as out of order rather than as a duplicate
//! (it cannot be told apart, and a false "duplicate" would be the worse lie at QoS 2).

use std::collections::BTreeMap;

/// Most gap ranges remembered per stream.
pub const MAX_GAPS: usize = 65_536;

/// What one received sequence number turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The next expected number.
    InOrder,
    /// Ahead of the next expected number: this many messages are now missing before it.
    Skipped(u64),
    /// Filled a gap: arrived after a higher number.
    Late,
    /// Seen before.
    Duplicate,
}

/// Accounting of one publisher's sequence as seen by one subscriber.
#[derive(Debug, Clone, Default)]
pub struct StreamTracker {
    /// One past the highest sequence number seen (0 before the first message).
    next: u64,
    /// Missing ranges `start -> end` (end exclusive), all below `next`.
    gaps: BTreeMap<u64, u64>,
    /// Numbers below this that are in no gap may be forgotten gaps (see module docs).
    forgotten_below: u64,
    missing: u64,
    unique: u64,
    duplicates: u64,
    out_of_order: u64,
}

impl StreamTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Accounts for one received sequence number.
    pub fn record(&mut self, seq: u64) -> Outcome {
        if seq == self.next {
            self.next += 1;
            self.unique += 1;
            return Outcome::InOrder;
        }
        if seq > self.next {
            let skipped = seq - self.next;
            self.gaps.insert(self.next, seq);
            self.missing += skipped;
            self.next = seq + 1;
            self.unique += 1;
            if self.gaps.len() > MAX_GAPS {
                if let Some((_, end)) = self.gaps.pop_first() {
                    self.forgotten_below = self.forgotten_below.max(end);
                }
            }
            return Outcome::Skipped(skipped);
        }
        // seq < next: a late arrival or a duplicate.
        let containing = self
            .gaps
            .range(..=seq)
            .next_back()
            .filter(|(_, &end)| seq < end)
            .map(|(&start, &end)| (start, end));
        match containing {
            Some((start, end)) => {
                self.gaps.remove(&start);
                if start < seq {
                    self.gaps.insert(start, seq);
                }
                if seq + 1 < end {
                    self.gaps.insert(seq + 1, end);
                }
                self.missing -= 1;
                self.unique += 1;
                self.out_of_order += 1;
                Outcome::Late
            }
            None if seq < self.forgotten_below => {
                self.unique += 1;
                self.out_of_order += 1;
                Outcome::Late
            }
            None => {
                self.duplicates += 1;
                Outcome::Duplicate
            }
        }
    }

    /// One past the highest number seen: every message below it has arrived or is a known gap.
    pub fn settled(&self) -> u64 {
        self.next
    }

    /// Distinct messages received.
    pub fn unique(&self) -> u64 {
        self.unique
    }

    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    pub fn out_of_order(&self) -> u64 {
        self.out_of_order
    }

    /// Messages skipped over and not (yet) arrived late.
    pub fn missing(&self) -> u64 {
        self.missing
    }

    /// Messages lost if the publisher sent `sent` in all.
    pub fn lost(&self, sent: u64) -> u64 {
        sent.saturating_sub(self.unique)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(seqs: &[u64]) -> StreamTracker {
        let mut t = StreamTracker::new();
        for &s in seqs {
            t.record(s);
        }
        t
    }

    #[test]
    fn in_order_stream() {
        let t = feed(&[0, 1, 2, 3, 4]);
        assert_eq!((t.unique(), t.duplicates(), t.out_of_order()), (5, 0, 0));
        assert_eq!(t.lost(5), 0);
        assert_eq!(t.settled(), 5);
    }

    #[test]
    fn loss_in_the_middle_and_at_the_tail() {
        let mut t = StreamTracker::new();
        assert_eq!(t.record(0), Outcome::InOrder);
        assert_eq!(t.record(3), Outcome::Skipped(2));
        assert_eq!(t.record(4), Outcome::InOrder);
        assert_eq!(t.missing(), 2);
        // The publisher sent 0..=6: 1, 2, 5 and 6 are lost.
        assert_eq!(t.lost(7), 4);
        assert_eq!(t.duplicates(), 0);
        assert_eq!(t.out_of_order(), 0);
    }

    #[test]
    fn duplicates_are_counted_once_each() {
        let mut t = StreamTracker::new();
        for s in [0, 1, 1, 2, 0, 2, 2] {
            t.record(s);
        }
        assert_eq!(t.unique(), 3);
        assert_eq!(t.duplicates(), 4);
        assert_eq!(t.lost(3), 0);
    }

    #[test]
    fn late_arrivals_fill_gaps() {
        let mut t = StreamTracker::new();
        for s in [0, 4, 2, 1, 3] {
            t.record(s);
        }
        assert_eq!(t.unique(), 5);
        assert_eq!(t.out_of_order(), 3);
        assert_eq!(t.missing(), 0);
        assert_eq!(t.duplicates(), 0);
        // A second copy of a late one is a duplicate.
        assert_eq!(t.record(2), Outcome::Duplicate);
        assert_eq!(t.record(5), Outcome::InOrder);
    }

    #[test]
    fn gap_split_in_the_middle() {
        let mut t = StreamTracker::new();
        t.record(10); // gap 0..10
        assert_eq!(t.record(5), Outcome::Late); // gaps 0..5, 6..10
        assert_eq!(t.record(5), Outcome::Duplicate);
        assert_eq!(t.record(0), Outcome::Late);
        assert_eq!(t.record(9), Outcome::Late);
        assert_eq!(t.record(6), Outcome::Late);
        assert_eq!(t.missing(), 10 - 4);
        assert_eq!(t.lost(11), 6);
    }

    #[test]
    fn first_message_not_zero() {
        let mut t = StreamTracker::new();
        assert_eq!(t.record(2), Outcome::Skipped(2));
        assert_eq!(t.lost(3), 2);
    }

    #[test]
    fn gap_memory_is_bounded() {
        let mut t = StreamTracker::new();
        // Every other message lost: one gap per message.
        for i in 0..(MAX_GAPS as u64 + 10) {
            t.record(2 * i + 1);
        }
        assert!(t.gaps.len() <= MAX_GAPS);
        // Seq 0 fell into a forgotten gap: late, not a duplicate.
        assert_eq!(t.record(0), Outcome::Late);
        // Below the forgotten mark, seen and missing cannot be told apart: late, not duplicate.
        assert_eq!(t.record(1), Outcome::Late);
        // Above it the tracker still knows: the last one really was seen.
        let last = 2 * (MAX_GAPS as u64 + 9) + 1;
        assert_eq!(t.record(last), Outcome::Duplicate);
        assert_eq!(t.record(last - 1), Outcome::Late);
    }

    #[test]
    fn matches_a_naive_model() {
        // Deterministic pseudo-random delivery pattern: loss, reordering, duplication.
        let mut x: u64 = 0x1234_5678;
        let mut rand = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let sent = 5_000u64;
        let mut deliveries = Vec::new();
        for s in 0..sent {
            match rand() % 10 {
                0 => {}                         // lost
                1 => deliveries.extend([s, s]), // duplicated
                2 if !deliveries.is_empty() => {
                    let i = (rand() as usize) % deliveries.len();
                    deliveries.insert(i, s); // reordered
                }
                _ => deliveries.push(s),
            }
        }
        let mut t = StreamTracker::new();
        let mut seen = std::collections::HashSet::new();
        let mut dups = 0;
        for &s in &deliveries {
            t.record(s);
            if !seen.insert(s) {
                dups += 1;
            }
        }
        assert_eq!(t.unique(), seen.len() as u64);
        assert_eq!(t.duplicates(), dups);
        assert_eq!(t.lost(sent), sent - seen.len() as u64);
        // Out of order = arrived after a higher number had arrived.
        let mut max_seen: Option<u64> = None;
        let mut ooo = 0;
        let mut seen2 = std::collections::HashSet::new();
        for &s in &deliveries {
            if seen2.insert(s) && max_seen.is_some_and(|m| s < m) {
                ooo += 1;
            }
            max_seen = Some(max_seen.map_or(s, |m| m.max(s)));
        }
        assert_eq!(t.out_of_order(), ooo);
    }
}
