//! What a data shard tells the control shard about itself, once per second: a [`ShardSnapshot`]
//! (its plain counters, `runtime_stats.rs`, and a few gauges) written into its own slot of the
//! [`SnapshotBoard`].
//!
//! Data shards only *write* here, from their existing 250 ms tick loop (every fourth tick,
//! `shard_tasks.rs`): one uncontended lock per shard per second. Nothing here runs on the
//! per-message path, nothing here knows the shard's runtime (it is handed the core and the
//! counters), and nothing here knows how the numbers are exported (`$SYS` and Prometheus live in
//! `control.rs`, `sys_topics.rs` and `prometheus.rs`).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::broker::{BrokerCore, Stats};

use super::runtime_stats::{LatencyHistogram, RuntimeStats};

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
    /// Outgoing QoS 1/2 messages awaiting acknowledgement.
    pub inflight: u64,
    /// Incoming QoS 2 messages awaiting PUBREL.
    pub inflight_in: u64,
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
    /// Reads a shard's current numbers (on that shard's thread): its core's and its runtime's.
    /// Costs one pass over the sessions for the gauges that are sums over them: once a second,
    /// never per message.
    pub fn take(core: &BrokerCore, runtime: RuntimeStats, now: Instant) -> ShardSnapshot {
        let gauges = core.session_gauges();
        ShardSnapshot {
            taken: Some(now),
            core: core.stats,
            runtime,
            connections: core.connection_count() as u64,
            sessions: gauges.sessions as u64,
            sessions_online: gauges.online as u64,
            subscriptions: gauges.subscriptions as u64,
            retained: core
                .retained_count()
                .saturating_sub(core.retained_dollar_count()) as u64,
            inflight: gauges.inflight as u64,
            inflight_in: gauges.inflight_in as u64,
            queued: gauges.queued as u64,
            memory_bytes: gauges.memory_bytes as u64,
        }
    }
}

/// Writes shard `shard`'s snapshot into its slot (called from the tick loop once a second).
pub(crate) fn publish(board: &SnapshotBoard, shard: usize, snapshot: ShardSnapshot) {
    if let Some(slot) = board.get(shard) {
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
    /// Sessions discarded by `session_expiry_interval` since the start.
    pub sessions_expired: u64,
    pub subscriptions: u64,
    pub retained: u64,
    pub inflight: u64,
    pub inflight_in: u64,
    pub queued: u64,
    /// Summed from the snapshots: what `amqtt_memory_used_bytes` shows without a `memory_limit`.
    pub memory_bytes: u64,
    pub packets_received: u64,
    pub packets_sent: u64,
    pub publish_received: u64,
    pub publish_sent: u64,
    pub publish_dropped: u64,
    /// Times a QoS 1/2 publisher was held while a subscriber was behind (`broker/flow_control.rs`).
    pub publishers_held: u64,
    /// Times a subscriber behind was marked stalled (`broker/flow_control.rs`).
    pub subscribers_stalled: u64,
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
            t.sessions_expired += s.core.sessions_expired;
            t.subscriptions += s.subscriptions;
            // Every shard has the whole store: the largest copy is the store.
            t.retained = t.retained.max(s.retained);
            t.inflight += s.inflight;
            t.inflight_in += s.inflight_in;
            t.queued += s.queued;
            t.memory_bytes += s.memory_bytes;
            t.packets_received += s.core.packets_received;
            t.packets_sent += s.core.packets_sent;
            t.publish_received += s.core.publish_received;
            t.publish_sent += s.core.publish_sent;
            t.publish_dropped += dropped(s).iter().map(|(_, n)| n).sum::<u64>();
            t.publishers_held += s.core.publishers_held;
            t.subscribers_stalled += s.core.subscribers_stalled;
            t.bytes_received += s.runtime.bytes_received;
            t.bytes_sent += s.core.bytes_sent;
            t.connections_accepted += s.core.connections_accepted;
            t.latency.merge(&s.runtime.latency);
        }
        t
    }
}

/// A shard's undelivered messages by reason (the `reason` label of `amqtt_messages_dropped_total`).
pub(crate) fn dropped(s: &ShardSnapshot) -> [(&'static str, u64); 12] {
    [
        ("queue_full", s.core.publish_dropped_queue_full),
        ("queue_bytes", s.core.publish_dropped_queue_bytes),
        ("memory_limit", s.core.publish_dropped_memory),
        ("offline_qos0", s.core.publish_dropped_offline),
        ("outbox_full", s.core.publish_dropped_outbox_full),
        // Over one subscriber's Maximum Packet Size (MQTT 5).
        ("packet_too_large", s.core.publish_dropped_too_large),
        // One subscriber's copy whose Message Expiry Interval passed while it waited (MQTT 5).
        ("expired", s.core.publish_dropped_expired),
        ("bus_full", s.runtime.bus_dropped_qos0),
        ("sys_topic", s.core.publish_dropped_sys),
        // A topic-check plugin (topic_acl, topic_taboo) denied the publish.
        ("topic_denied", s.core.publish_denied),
        // One subscriber's copy, refused by its receive-acl.
        ("receive_denied", s.core.receive_denied),
        // A share group's message whose group had no member left.
        ("shared_no_member", s.core.shared_dropped),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

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
