//! Plain per-shard counters, incremented on the message path with no atomics or locks.
//!
//! The runtime snapshots them (they are `Copy`) and sends the snapshot to the control shard; nothing
//! here knows how they are exported.

/// Monotonic counters of one shard's broker core.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub connections_accepted: u64,
    pub connections_refused: u64,
    pub sessions_taken_over: u64,
    /// Persistent sessions discarded because their client stayed away longer than
    /// `session_expiry_interval`.
    pub sessions_expired: u64,
    pub protocol_errors: u64,
    /// Connections closed because their first packet was not a CONNECT, or was malformed (or its
    /// transport's framing broke before it): counted apart from `protocol_errors`.
    pub malformed_before_connect: u64,
    pub keep_alive_timeouts: u64,
    /// Connections closed because their credentials expired (a token's `exp`).
    pub credentials_expired: u64,
    pub packets_received: u64,
    pub publish_received: u64,
    pub publish_sent: u64,
    pub bytes_sent: u64,
    /// Not delivered: a subscriber's session queue was full.
    pub publish_dropped_queue_full: u64,
    /// Not delivered: QoS 0 for an offline session.
    pub publish_dropped_offline: u64,
    /// Not delivered: QoS 0 for a subscriber whose outbox is over the limit (it stopped reading).
    pub publish_dropped_outbox_full: u64,
    /// Not delivered: a subscriber's session queue would exceed `max_queued_bytes`.
    pub publish_dropped_queue_bytes: u64,
    /// Not delivered: the broker-wide `memory_limit` (see `memory.rs`).
    pub publish_dropped_memory: u64,
    /// Not delivered to one subscriber: its PUBLISH would exceed the Maximum Packet Size its
    /// MQTT 5 client announced [MQTT-3.1.2-25].
    pub publish_dropped_too_large: u64,
    /// Not delivered to one subscriber: its copy's Message Expiry Interval passed while it waited
    /// (queued, or retained) [MQTT-3.3.2-5].
    pub publish_dropped_expired: u64,
    /// Not delivered: a client published to `$SYS/...`.
    pub publish_dropped_sys: u64,
    /// Not delivered: an MQTT 5 PUBLISH whose Payload Format Indicator says UTF-8 and whose
    /// payload is not (acknowledged with 0x99).
    pub publish_payload_format_invalid: u64,
    /// Not delivered nor retained: a topic-check plugin (e.g. `topic_acl`) denied the publish
    /// (wills included).
    pub publish_denied: u64,
    /// SUBSCRIBE filters answered 0x80 because a topic-check plugin denied them.
    pub subscribe_denied: u64,
    /// Not delivered to one subscriber: a plugin that checks receiving (`receive-acl`) denied it
    /// (one count per subscriber skipped; retained messages after a SUBACK included).
    pub receive_denied: u64,
    pub wills_published: u64,
    /// Messages given to one member of a share group (`$share/...`), on the member's shard.
    pub shared_deliveries: u64,
    /// Messages for a share group sent to another member: their member's session ended before
    /// the client acknowledged them, or the member chosen had left when they arrived.
    pub shared_redistributed: u64,
    /// Messages for a share group that found no member (the last one left meanwhile).
    pub shared_dropped: u64,
    /// Times a client's QoS 1/2 PUBLISH was held back because a subscriber was behind
    /// (`flow_control.rs`).
    pub publishers_held: u64,
    /// Times a subscriber behind acknowledged nothing for too long (or stayed behind too long)
    /// and was marked stalled (it holds no publisher back; what does not fit its queue is dropped
    /// and counted).
    pub subscribers_stalled: u64,
    /// Messages sent to / received from other shards; each publish of a batch counts as one.
    pub bus_sent: u64,
    pub bus_received: u64,
    /// Packets written to outboxes (PUBLISH included), CONNACK included.
    pub packets_sent: u64,
    /// PUBLISH packets received, by QoS (index 0, 1, 2).
    pub publish_received_by_qos: [u64; 3],
    /// PUBLISH packets written to outboxes, by QoS (index 0, 1, 2).
    pub publish_sent_by_qos: [u64; 3],
    /// Refused CONNECTs by CONNACK return code (index = code; 0 unused). `connections_refused` is
    /// their sum.
    pub refused_by_code: [u64; 6],
}

impl Stats {
    /// Counts a CONNECT answered with a non-zero return code.
    pub fn count_refusal(&mut self, code: crate::protocol::ConnectReturnCode) {
        self.connections_refused += 1;
        if let Some(slot) = self.refused_by_code.get_mut(code as usize) {
            *slot += 1;
        }
    }
}
