//! This broker as one node of a cluster whose nodes meet on NATS: the cluster link, one more
//! participant on the node's bus (after the shards), on a thread of its own. Local shards see it
//! as a shard that holds every filter the other nodes hold, so only publishes some other node
//! wants leave this node; what other nodes send arrives through it as from a shard.
//!
//! - QoS 0 publishes cross on core NATS (`<name>.q0.<node>`), QoS 1/2 through each node's
//!   JetStream mailbox (`<name>.mbox.<node>`, one durable consumer per node); with persistence
//!   on, a publisher's PUBACK waits for JetStream's acknowledgement, and a mailbox message is
//!   acknowledged once the receiving node's shards have it durable.
//! - Interest: each node sends numbered deltas of its filters; a SUBACK waits until every live
//!   node confirmed (or `ack_timeout`); a node that missed one fetches the whole set.
//! - Share groups (`$share/{group}/{filter}`): each node announces its members per group with
//!   its interest; the local shards count the other nodes' members as the link's, and a message
//!   they give the link goes to one member on one other node (`groups.rs`, `link/shared.rs`).
//! - Retained messages: one per topic in the `<name>_retained` stream, loaded at start.
//! - Liveness: each node renews its entry in the `<name>_nodes` bucket; one that expires is gone.
//! - Sessions: a CONNECT claims its client id in the `<name>_sessions` directory (compare-and-set,
//!   the entry's sequence fencing older owners); the node that owned it closes the connection and
//!   hands the session over (`directory.rs`, `link/sessions.rs`). The entry keeps the session's
//!   profile (subscriptions, expiry: `link/profiles.rs`), from which another node makes it when
//!   the owner is dead; that node, back, hands over the messages it held (`link/late.rs`).
//!
//! `wire.rs` holds the bytes, `interest.rs` and `confirm.rs` the bookkeeping (no I/O),
//! `nats.rs` the NATS set-up, `link.rs` the loop. Nothing here knows MQTT's rules: the shards
//! apply them. Absent `cluster:`, none of this runs (no thread, no tokio).

mod confirm;
mod directory;
mod groups;
mod interest;
mod link;
mod nats;
mod stats;
mod wire;

pub use stats::ClusterStats;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::broker::BusMessage;
use crate::config::ClusterConfig;

/// Shard numbers in a retained version: a node's base is a multiple of this, its shards add
/// their index (a node has fewer shards than this).
pub const VERSION_SHARDS: u32 = 1024;

/// The retained-version base of `node`: from its name, so the same on every start, and unlike
/// another node's but by a chance of one in two million (a clash only breaks ties between two
/// updates of one topic made with equal clocks).
pub fn version_base(node: &str) -> u32 {
    // FNV-1a: stable across builds (unlike std's hasher).
    let mut hash: u32 = 0x811c_9dc5;
    for b in node.bytes() {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    (hash % ((u32::MAX / VERSION_SHARDS) - 1) + 1) * VERSION_SHARDS
}

/// The link's place on the bus: its inbox, the senders to the shards, and how to put a
/// [`BusMessage`] into the bus's message type and take it out.
pub struct LinkPort<M> {
    /// The link's inbox: the bus's last.
    pub inbox: shards::Inbox<M>,
    /// Into the shards' inboxes.
    pub bus: shards::BusSender<M>,
    /// A core message as the bus carries it.
    pub wrap: fn(BusMessage) -> M,
    /// The core message in what the bus carried (`None`: not one for the link).
    pub unwrap: fn(M) -> Option<BusMessage>,
    /// The node's shards (the link's own index on the bus).
    pub shards: usize,
    /// The shards journal (`persistence:` on): they confirm deliveries durable.
    pub persistence: bool,
    /// This node's [`version_base`].
    pub version_base: u32,
    /// How a share group's member is chosen (`shared_subscription_strategy`): the link chooses
    /// the node, then the shard, as the shards choose among theirs.
    pub shared_strategy: crate::config::SharedStrategy,
}

/// The running link; [`ClusterLink::stop`] ends it.
pub struct ClusterLink {
    stop: Arc<AtomicBool>,
    stats: Arc<ClusterStats>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ClusterLink {
    /// Starts the link's thread.
    pub fn start<M: Send + 'static>(
        config: ClusterConfig,
        port: LinkPort<M>,
    ) -> std::io::Result<ClusterLink> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let stats = Arc::new(ClusterStats::new(&config.node));
        let counters = stats.clone();
        let thread = std::thread::Builder::new()
            .name("amqtt-cluster".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                match runtime {
                    Ok(runtime) => runtime.block_on(link::run(port, config, flag, counters)),
                    Err(error) => log::error!("cluster: cannot start the link's runtime: {error}"),
                }
            })?;
        Ok(ClusterLink {
            stop,
            stats,
            thread: Some(thread),
        })
    }

    /// The link's counters (for the control shard).
    pub fn stats(&self) -> Arc<ClusterStats> {
        self.stats.clone()
    }

    /// Stops the link (within its 10 ms tick) and waits for its thread.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for ClusterLink {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_bases_are_stable_distinct_and_leave_room_for_shards() {
        let (a, b) = (version_base("node-a"), version_base("node-b"));
        assert_eq!(a, version_base("node-a"));
        assert_ne!(a, b);
        assert!(a >= VERSION_SHARDS && a % VERSION_SHARDS == 0);
        assert!(a.checked_add(VERSION_SHARDS - 1).is_some());
    }
}
