//! Share groups' messages between nodes; methods of the link (`mod.rs`).
//!
//! - Leaving: a local shard chose the link for a message of a group (it counts the other
//!   nodes' members as the link's). The link chooses the node by `shared_subscription_strategy`
//!   over the nodes' members (online ones; for QoS 1/2 offline or away ones when none is
//!   online) and gathers the message with that turn's others for the node and group; at the
//!   end of the turn they leave as one payload: QoS 0 on the node's core NATS subject, QoS 1/2
//!   in its mailbox, stored as other cross-node publishes are (the publisher's PUBACK waits for
//!   JetStream with persistence on).
//! - Arriving: the link gives each message to a local shard with a member of the group, chosen
//!   the same way, as a targeted message that only this node's members may get: it never goes
//!   back to the cluster. With no member left here it is dropped and counted.
//!
//! What must not live here: the counting (`../groups.rs`), the bytes (`../wire.rs`), MQTT's
//! rules (the shards choose the member and deliver).

use super::*;
use crate::broker::{BatchedPublish, Message, Pick, ShareGroup};
use crate::protocol::{v5, TopicName};

/// Bytes of publishes gathered for one node and group before they leave, turn or not.
const SHARED_FLUSH_BYTES: usize = 64 << 10;

/// One group's messages for one node, gathered during a turn.
struct Entry {
    node: String,
    group: Arc<ShareGroup>,
    /// The publishers' hash (`hash_client_id`): one per payload.
    hash: Option<u64>,
    /// QoS 1/2 (for the mailbox) rather than QoS 0 (core NATS).
    stored: bool,
    batch: PublishBatch,
    /// The shards' delivery stamps, confirmed once the mailbox has the batch.
    stamps: Vec<(usize, u64)>,
}

/// Share groups' messages for other nodes, gathered during a turn of the link's loop.
#[derive(Default)]
pub(super) struct SharedOut {
    entries: Vec<Entry>,
}

impl<M: Send + 'static> Link<M> {
    /// A local shard's message for a member of `group` on another node.
    pub(super) fn shared_from_shard(
        &mut self,
        group: Arc<ShareGroup>,
        message: Message,
        hash: Option<u64>,
        hops: u8,
        stamp: Option<DeliveryStamp>,
    ) {
        let stored = message.qos != QoS::AtMostOnce;
        let pick = Pick {
            strategy: self.port.shared_strategy,
            hash,
            stored,
            rng: &self.rng,
        };
        let groups = self.interest.groups();
        if let Some(node) = groups.node_for(&group, pick).map(str::to_string) {
            self.gather(node, group, hash, &message, stamp);
            return;
        }
        // The other nodes' members left since the shard chose: one of this node's, if any.
        match groups.shard_for(&group, pick) {
            Some(shard) => {
                let message = BusMessage::SharedPublish {
                    group,
                    message,
                    hash,
                    hops: hops.saturating_add(1),
                    stamp: None,
                    local_only: true,
                };
                self.send_shard(shard, false, message);
            }
            None => {
                self.stats.add_dropped(1);
                log::debug!(
                    "cluster: no member of $share/{}/{} left for a message to {}",
                    group.name,
                    group.filter,
                    message.topic
                );
            }
        }
        if let Some(stamp) = stamp {
            self.stamp_done(stamp.from, stamp.n);
        }
    }

    /// Adds a message to what leaves for `node` and `group` at the end of the turn.
    fn gather(
        &mut self,
        node: String,
        group: Arc<ShareGroup>,
        hash: Option<u64>,
        message: &Message,
        stamp: Option<DeliveryStamp>,
    ) {
        let stored = message.qos != QoS::AtMostOnce;
        let properties = match message.properties.as_deref() {
            Some(properties) => v5::publish_properties_bytes(properties).unwrap_or_else(|error| {
                log::warn!("cluster: cannot pass PUBLISH properties to another node: {error}");
                Default::default()
            }),
            None => Default::default(),
        };
        let entries = &mut self.shared_out.entries;
        let at = entries.iter().position(|e| {
            e.node == node && e.group == group && e.hash == hash && e.stored == stored
        });
        let at = match at {
            Some(at) => at,
            None => {
                entries.push(Entry {
                    node,
                    group,
                    hash,
                    stored,
                    batch: PublishBatch::default(),
                    stamps: Vec::new(),
                });
                entries.len() - 1
            }
        };
        let entry = &mut entries[at];
        entry.batch.push_with(
            message.qos,
            message.topic.as_bytes(),
            &message.payload,
            &properties,
        );
        entry.stamps.extend(stamp.map(|s| (s.from, s.n)));
        if entry.batch.byte_len() >= SHARED_FLUSH_BYTES {
            let entry = entries.swap_remove(at);
            self.send_entry(entry);
        }
    }

    /// Sends what was gathered for other nodes' members this turn.
    pub(super) fn flush_shared(&mut self) {
        for entry in std::mem::take(&mut self.shared_out.entries) {
            self.send_entry(entry);
        }
    }

    fn send_entry(&mut self, entry: Entry) {
        let count = entry.batch.len();
        let payload = wire::encode_shared(&entry.group, entry.hash, &entry.batch.into_bytes());
        if entry.stored {
            self.store_in_mailbox(&entry.node, payload, count, entry.stamps);
        } else {
            let subject = self.names.qos0(&entry.node);
            self.send_core(subject, payload, count);
        }
    }

    /// A group's batch from another node (`batch` within `payload`): each message to a local
    /// shard with a member. Returns the deliveries a mailbox message waits for (persistence on:
    /// numbered, confirmed durable by the shards).
    pub(super) fn shared_arrived(
        &mut self,
        group: ShareGroup,
        hash: Option<u64>,
        payload: &Bytes,
        batch: &[u8],
    ) -> Vec<(usize, u64)> {
        let group = Arc::new(group);
        let index = self.index();
        let mut waits = Vec::new();
        for publish in PublishBatch::read(batch) {
            let Some(message) = message_of(payload, publish) else {
                log::warn!(
                    "cluster: unreadable publish for $share/{}/{}",
                    group.name,
                    group.filter
                );
                continue;
            };
            let stored = message.qos != QoS::AtMostOnce;
            let pick = Pick {
                strategy: self.port.shared_strategy,
                hash,
                stored,
                rng: &self.rng,
            };
            let Some(shard) = self.interest.groups().shard_for(&group, pick) else {
                self.stats.add_dropped(1);
                continue;
            };
            let stamp = (stored && self.port.persistence).then(|| DeliveryStamp {
                from: index,
                n: self.incoming.next_stamp(shard),
            });
            waits.extend(stamp.map(|s| (shard, s.n)));
            let message = BusMessage::SharedPublish {
                group: group.clone(),
                message,
                hash,
                hops: 0,
                stamp,
                local_only: true,
            };
            if stored {
                self.send_shard(shard, false, message);
            } else if !self.blocked[shard].is_empty()
                || self.try_send_shard(shard, false, message).is_err()
            {
                // QoS 0 waits for no full lane, as other nodes' QoS 0 batches do not.
                self.stats.add_dropped(1);
            }
        }
        waits
    }
}

/// A publish of a batch from another node as a message, its topic and payload slices of the
/// NATS message's bytes.
fn message_of(payload: &Bytes, publish: BatchedPublish<'_>) -> Option<Message> {
    let properties = if publish.properties.is_empty() {
        None
    } else {
        Some(Arc::new(
            v5::decode_publish_properties(publish.properties).ok()?,
        ))
    };
    Some(Message {
        topic: TopicName::from_bytes(payload.slice_ref(publish.topic)).ok()?,
        payload: payload.slice_ref(publish.payload),
        qos: publish.qos,
        retain: false,
        properties,
    })
}
