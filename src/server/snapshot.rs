//! What a data shard tells the control shard about itself, once per second: a [`ShardSnapshot`]
//! (its plain counters and a few gauges) written into its own slot of the [`SnapshotBoard`], plus
//! the shard-local publish-to-deliver [`LatencyHistogram`].
//!
//! Data shards only *write* here, from their existing 250 ms tick loop (every fourth tick): one
//! uncontended lock per shard per second. Nothing here runs on the per-message path, and nothing
//! here knows how the numbers are exported (`$SYS` and Prometheus live in `control.rs`,
//! `sys_topics.rs` and `prometheus.rs`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::broker::Stats;

use super::shard::{RuntimeStats, ShardRuntime};

/// Upper bounds of the latency buckets, in nanoseconds (the Prometheus `le` values, in seconds, are
/// these / 1e9). A last, implicit bucket holds everything slower (`+Inf`).
pub(crate) const LATENCY_BOUNDS_NS: [u64; 19] = [
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// A fixed-bucket histogram of durations: plain counters, `Copy`, cheap to record (one short scan).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LatencyHistogram {
    /// Per bucket (not cumulative); the last one is `+Inf`.
    pub buckets: [u64; LATENCY_BOUNDS_NS.len() + 1],
    pub count: u64,
    pub sum_ns: u64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            buckets: [0; LATENCY_BOUNDS_NS.len() + 1],
            count: 0,
            sum_ns: 0,
        }
    }
}

impl LatencyHistogram {
    pub fn record(&mut self, elapsed: Duration) {
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let index = LATENCY_BOUNDS_NS
            .iter()
            .position(|&bound| ns <= bound)
            .unwrap_or(LATENCY_BOUNDS_NS.len());
        self.buckets[index] += 1;
        self.count += 1;
        self.sum_ns = self.sum_ns.saturating_add(ns);
    }

    /// Adds another histogram's counts (aggregating shards).
    pub fn merge(&mut self, other: &LatencyHistogram) {
        for (mine, theirs) in self.buckets.iter_mut().zip(other.buckets.iter()) {
            *mine += theirs;
        }
        self.count += other.count;
        self.sum_ns = self.sum_ns.saturating_add(other.sum_ns);
    }

    /// Cumulative counts per bound, `+Inf` last (what the Prometheus text format wants).
    pub fn cumulative(&self) -> impl Iterator<Item = u64> + '_ {
        self.buckets.iter().scan(0u64, |total, n| {
            *total += n;
            Some(*total)
        })
    }
}

/// One data shard's numbers at one moment. Counters are monotonic since the shard started; gauges
/// are current values.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ShardSnapshot {
    /// `None` until the shard has written its first snapshot.
    pub taken: Option<Instant>,
    pub core: Stats,
    pub runtime: RuntimeStats,
    /// Open connections whose CONNECT the core has handled (including ones being closed).
    pub connections: u64,
    pub sessions: u64,
    pub sessions_online: u64,
    pub subscriptions: u64,
    /// Every shard holds the full retained store; this excludes the `$SYS` tree.
    pub retained: u64,
    pub inflight: u64,
    pub queued: u64,
    /// Bytes this shard holds of what `memory_limit` counts ([`crate::broker::SessionGauges`]).
    pub memory_bytes: u64,
}

/// One slot per data shard; shard `i` writes slot `i`, the control shard reads them all.
pub(crate) type SnapshotBoard = Arc<[Mutex<ShardSnapshot>]>;

pub(crate) fn new_board(shards: usize) -> SnapshotBoard {
    (0..shards)
        .map(|_| Mutex::new(ShardSnapshot::default()))
        .collect()
}

impl ShardSnapshot {
    /// Reads a shard's current numbers (on that shard's thread). Costs one pass over the sessions
    /// for the gauges that are sums over them: once a second, never per message.
    pub fn take(rt: &ShardRuntime, now: Instant) -> ShardSnapshot {
        let core = rt.core.borrow();
        let gauges = core.session_gauges();
        ShardSnapshot {
            taken: Some(now),
            core: core.stats,
            runtime: *rt.stats.borrow(),
            connections: core.connection_count() as u64,
            sessions: gauges.sessions as u64,
            sessions_online: gauges.online as u64,
            subscriptions: gauges.subscriptions as u64,
            retained: core
                .retained_count()
                .saturating_sub(core.retained_dollar_count()) as u64,
            inflight: gauges.inflight as u64,
            queued: gauges.queued as u64,
            memory_bytes: gauges.memory_bytes as u64,
        }
    }
}

/// Writes shard `rt.id`'s snapshot into its slot (called from the tick loop once a second).
pub(crate) fn publish(rt: &ShardRuntime, board: &SnapshotBoard, now: Instant) {
    let snapshot = ShardSnapshot::take(rt, now);
    if let Some(slot) = board.get(rt.id) {
        match slot.lock() {
            Ok(mut guard) => *guard = snapshot,
            // A panicking reader cannot leave a snapshot half-written (it is `Copy`): keep going.
            Err(poisoned) => *poisoned.into_inner() = snapshot,
        }
    }
}

/// Copies every slot (on the control shard).
pub(crate) fn read_all(board: &SnapshotBoard) -> Vec<ShardSnapshot> {
    board
        .iter()
        .map(|slot| match slot.lock() {
            Ok(guard) => *guard,
            Err(poisoned) => *poisoned.into_inner(),
        })
        .collect()
}

/// Everything the exporters need, summed over the data shards.
#[derive(Debug, Clone, Default)]
pub(crate) struct Totals {
    pub connections: u64,
    pub sessions: u64,
    pub sessions_online: u64,
    pub subscriptions: u64,
    pub retained: u64,
    pub inflight: u64,
    pub queued: u64,
    /// Summed from the snapshots: what `amqtt_memory_used_bytes` shows without a `memory_limit`.
    pub memory_bytes: u64,
    pub packets_received: u64,
    pub packets_sent: u64,
    pub publish_received: u64,
    pub publish_sent: u64,
    pub publish_dropped: u64,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub connections_accepted: u64,
    pub latency: LatencyHistogram,
}

impl Totals {
    pub fn of(shards: &[ShardSnapshot]) -> Totals {
        let mut t = Totals::default();
        for s in shards {
            t.connections += s.connections;
            t.sessions += s.sessions;
            t.sessions_online += s.sessions_online;
            t.subscriptions += s.subscriptions;
            // Every shard has the whole store: the largest copy is the store.
            t.retained = t.retained.max(s.retained);
            t.inflight += s.inflight;
            t.queued += s.queued;
            t.memory_bytes += s.memory_bytes;
            t.packets_received += s.core.packets_received;
            t.packets_sent += s.core.packets_sent;
            t.publish_received += s.core.publish_received;
            t.publish_sent += s.core.publish_sent;
            t.publish_dropped += dropped(s).iter().map(|(_, n)| n).sum::<u64>();
            t.bytes_received += s.runtime.bytes_received;
            t.bytes_sent += s.core.bytes_sent;
            t.connections_accepted += s.core.connections_accepted;
            t.latency.merge(&s.runtime.latency);
        }
        t
    }
}

/// A shard's undelivered messages by reason (the `reason` label of `amqtt_messages_dropped_total`).
pub(crate) fn dropped(s: &ShardSnapshot) -> [(&'static str, u64); 8] {
    [
        ("queue_full", s.core.publish_dropped_queue_full),
        ("queue_bytes", s.core.publish_dropped_queue_bytes),
        ("memory_limit", s.core.publish_dropped_memory),
        ("offline_qos0", s.core.publish_dropped_offline),
        ("outbox_full", s.core.publish_dropped_outbox_full),
        ("bus_full", s.runtime.bus_dropped_qos0),
        ("sys_topic", s.core.publish_dropped_sys),
        // A topic-check plugin (topic_acl, topic_taboo) denied the publish.
        ("topic_denied", s.core.publish_denied),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_upper_bounds_and_cumulate() {
        let mut h = LatencyHistogram::default();
        h.record(Duration::from_micros(10)); // exactly the first bound
        h.record(Duration::from_micros(11));
        h.record(Duration::from_millis(3));
        h.record(Duration::from_secs(60)); // +Inf
        assert_eq!(h.count, 4);
        assert_eq!(h.buckets[0], 1);
        assert_eq!(h.buckets[1], 1);
        assert_eq!(h.buckets[LATENCY_BOUNDS_NS.len()], 1);
        let cumulative: Vec<u64> = h.cumulative().collect();
        assert_eq!(cumulative.len(), LATENCY_BOUNDS_NS.len() + 1);
        assert_eq!(cumulative.last(), Some(&4));
        assert!(cumulative.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(h.sum_ns, 10_000 + 11_000 + 3_000_000 + 60_000_000_000);

        let mut total = LatencyHistogram::default();
        total.merge(&h);
        total.merge(&h);
        assert_eq!(total.count, 8);
        assert_eq!(total.buckets[1], 2);
    }

    #[test]
    fn totals_sum_shards_and_take_the_retained_store_once() {
        let mut a = ShardSnapshot {
            connections: 2,
            retained: 5,
            ..Default::default()
        };
        a.core.publish_received = 10;
        a.core.publish_dropped_queue_full = 1;
        a.runtime.bus_dropped_qos0 = 2;
        let mut b = ShardSnapshot {
            connections: 3,
            retained: 5,
            ..Default::default()
        };
        b.core.publish_received = 1;
        b.runtime.bytes_received = 100;
        let t = Totals::of(&[a, b]);
        assert_eq!(t.connections, 5);
        assert_eq!(t.retained, 5);
        assert_eq!(t.publish_received, 11);
        assert_eq!(t.publish_dropped, 3);
        assert_eq!(t.bytes_received, 100);
    }
}
