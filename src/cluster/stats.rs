//! The cluster link's counters, shared with the control shard (which exports them as
//! `amqtt_cluster_*` metrics and `$SYS/broker/cluster/...`). Relaxed atomics: the link adds, the
//! control shard reads once a second. Counters only: nothing here decides anything.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// What the link has done so far.
#[derive(Debug, Default)]
pub struct ClusterStats {
    /// This node's name.
    pub node: String,
    connected: AtomicBool,
    nodes: AtomicU64,
    sent_core: AtomicU64,
    sent_stored: AtomicU64,
    received_core: AtomicU64,
    received_stored: AtomicU64,
    dropped: AtomicU64,
    interest_timeouts: AtomicU64,
    local_filters: AtomicU64,
    remote_filters: AtomicU64,
}

/// A counter's value.
fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

fn add(counter: &AtomicU64, n: usize) {
    counter.fetch_add(n as u64, Ordering::Relaxed);
}

impl ClusterStats {
    /// Counters of node `node`, all zero.
    pub fn new(node: &str) -> Self {
        ClusterStats {
            node: node.to_string(),
            ..ClusterStats::default()
        }
    }
    /// Connected to NATS with the cluster's streams set up.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }
    /// Live nodes, this one included (as of the last liveness read).
    pub fn nodes(&self) -> u64 {
        get(&self.nodes)
    }
    /// QoS 0 messages sent to other nodes over core NATS (once per node).
    pub fn sent_core(&self) -> u64 {
        get(&self.sent_core)
    }
    /// QoS 1/2 messages stored in other nodes' mailboxes (once per node).
    pub fn sent_stored(&self) -> u64 {
        get(&self.sent_stored)
    }
    /// QoS 0 messages received from other nodes.
    pub fn received_core(&self) -> u64 {
        get(&self.received_core)
    }
    /// QoS 1/2 messages read from this node's mailbox.
    pub fn received_stored(&self) -> u64 {
        get(&self.received_stored)
    }
    /// QoS 0 messages for or from other nodes dropped (NATS away, or a shard's lane full).
    pub fn dropped(&self) -> u64 {
        get(&self.dropped)
    }
    /// This node's interest changes that some live node did not confirm within `ack_timeout`.
    pub fn interest_timeouts(&self) -> u64 {
        get(&self.interest_timeouts)
    }
    /// Distinct filters of this node's sessions.
    pub fn local_filters(&self) -> u64 {
        get(&self.local_filters)
    }
    /// Distinct filters of the other nodes' sessions.
    pub fn remote_filters(&self) -> u64 {
        get(&self.remote_filters)
    }

    pub(super) fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::Relaxed);
    }
    pub(super) fn set_nodes(&self, nodes: usize) {
        self.nodes.store(nodes as u64, Ordering::Relaxed);
    }
    pub(super) fn set_filters(&self, local: usize, remote: usize) {
        self.local_filters.store(local as u64, Ordering::Relaxed);
        self.remote_filters.store(remote as u64, Ordering::Relaxed);
    }
    pub(super) fn add_sent_core(&self, n: usize) {
        add(&self.sent_core, n);
    }
    pub(super) fn add_sent_stored(&self, n: usize) {
        add(&self.sent_stored, n);
    }
    pub(super) fn add_received_core(&self, n: usize) {
        add(&self.received_core, n);
    }
    pub(super) fn add_received_stored(&self, n: usize) {
        add(&self.received_stored, n);
    }
    pub(super) fn add_dropped(&self, n: usize) {
        add(&self.dropped, n);
    }
    pub(super) fn add_interest_timeout(&self) {
        add(&self.interest_timeouts, 1);
    }
}
