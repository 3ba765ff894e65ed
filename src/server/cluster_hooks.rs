//! Starts the cluster link (`crate::cluster`) on this broker's bus: its inbox is the one after
//! the shards', and it speaks `ShardMessage::Core`. Glue only: what the link does lives in
//! `src/cluster`.

use crate::broker::BusMessage;
use crate::cluster::{ClusterLink, LinkPort};
use crate::config::ClusterConfig;

use super::shard::ShardMessage;

fn wrap(message: BusMessage) -> ShardMessage {
    ShardMessage::Core(message, None)
}

fn unwrap(message: ShardMessage) -> Option<BusMessage> {
    match message {
        ShardMessage::Core(message, _) => Some(message),
        _ => None,
    }
}

/// Starts the link with the last inbox of the bus (`shards` shards before it).
pub(super) fn start(
    config: &ClusterConfig,
    inbox: shards::Inbox<ShardMessage>,
    bus: shards::BusSender<ShardMessage>,
    shards: usize,
    persistence: bool,
    shared_strategy: crate::config::SharedStrategy,
) -> std::io::Result<ClusterLink> {
    log::info!(
        "cluster: node {} of cluster '{}', NATS at {}",
        config.node,
        config.name,
        config.nats.join(", ")
    );
    ClusterLink::start(
        config.clone(),
        LinkPort {
            inbox,
            bus,
            wrap,
            unwrap,
            shards,
            persistence,
            version_base: crate::cluster::version_base(&config.node),
            shared_strategy,
        },
    )
}
