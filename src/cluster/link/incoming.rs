//! What arrives from the other nodes: QoS 0 batches, mailbox messages (acknowledged to
//! JetStream once the shards have them durable) and retained messages, each split among the
//! local shards that want them (a share group's batch goes to its members: `shared.rs`).
//! Methods of the link (`mod.rs`).
//!
//! QoS 0 batches that arrived together (every one the NATS connection has read so far) are split
//! into one bus message per shard ([`Qos0In`]): a shard woken once for all of them, not once a
//! NATS message.

use super::*;

/// Most QoS 0 NATS messages taken in one turn of the loop (the shards and the other feeds wait
/// meanwhile).
const QOS0_PER_TURN: usize = 256;

/// QoS 0 publishes from other nodes, per local shard, gathered until they are handed over.
pub(super) struct Qos0In {
    per_shard: Vec<PublishBatch>,
    /// The shards that want the topic `last_topic` (valid within one NATS message: interest
    /// changes between them). A publisher's records come in runs of one topic.
    last_topic: Option<Vec<u8>>,
    last_shards: Vec<usize>,
}

impl Qos0In {
    pub(super) fn new(shards: usize) -> Self {
        Qos0In {
            per_shard: (0..shards).map(|_| PublishBatch::default()).collect(),
            last_topic: None,
            last_shards: Vec::new(),
        }
    }
}

impl<M: Send + 'static> Link<M> {
    /// At the end of a turn: takes the QoS 0 batches that are ready on `feed` too, and hands
    /// what was gathered to the shards, one bus message per shard.
    pub(super) fn qos0_hand_over(&mut self, feed: Option<&mut async_nats::Subscriber>) {
        if let Some(feed) = feed {
            for _ in 0..QOS0_PER_TURN {
                match feed.next().now_or_never() {
                    Some(Some(message)) => self.qos0_arrived(&message.payload),
                    _ => break,
                }
            }
        }
        for shard in 0..self.qos0_in.per_shard.len() {
            let batch = std::mem::take(&mut self.qos0_in.per_shard[shard]);
            if batch.is_empty() {
                continue;
            }
            let count = batch.len();
            let message = BusMessage::Publishes(batch, None);
            if !self.blocked[shard].is_empty()
                || self.try_send_shard(shard, false, message).is_err()
            {
                self.stats.add_dropped(count);
            }
        }
    }

    /// One QoS 0 batch from NATS, split into the shards' batches (handed over at the end of the
    /// turn).
    pub(super) fn qos0_arrived(&mut self, payload: &Bytes) {
        let batch = match wire::decode_publishes(payload) {
            Ok(wire::Publishes::All(batch)) => batch,
            Ok(wire::Publishes::Shared { group, hash, batch }) => {
                self.stats
                    .add_received_core(PublishBatch::read(batch).count());
                self.shared_arrived(group, hash, payload, batch);
                return;
            }
            Err(error) => {
                log::warn!("cluster: unreadable QoS 0 batch: {error}");
                return;
            }
        };
        let mut count = 0;
        let into = &mut self.qos0_in;
        into.last_topic = None;
        for publish in PublishBatch::read(batch) {
            count += 1;
            if into.last_topic.as_deref() != Some(publish.topic) {
                into.last_shards.clear();
                into.last_shards
                    .extend(self.interest.shards_for(publish.topic));
                let mut topic = into.last_topic.take().unwrap_or_default();
                topic.clear();
                topic.extend_from_slice(publish.topic);
                into.last_topic = Some(topic);
            }
            for &shard in &into.last_shards {
                into.per_shard[shard].push_with(
                    publish.qos,
                    publish.topic,
                    publish.payload,
                    publish.properties,
                );
            }
        }
        self.stats.add_received_core(count);
    }

    pub(super) fn split_for_shards(&self, batch: &[u8]) -> Vec<(usize, PublishBatch)> {
        let mut per_shard: Vec<PublishBatch> = (0..self.port.shards)
            .map(|_| PublishBatch::default())
            .collect();
        for publish in PublishBatch::read(batch) {
            for shard in self.interest.shards_for(publish.topic) {
                per_shard[shard].push_with(
                    publish.qos,
                    publish.topic,
                    publish.payload,
                    publish.properties,
                );
            }
        }
        per_shard
            .into_iter()
            .enumerate()
            .filter(|(_, b)| !b.is_empty())
            .collect()
    }

    pub(super) async fn mailbox_arrived(&mut self, message: jetstream::Message) {
        if let Some(backlog) = self.recovered.backlog.as_mut() {
            *backlog = backlog.saturating_sub(1);
        }
        let payload = message.payload.clone();
        let mut waits = Vec::new();
        let batches = match wire::decode_publishes(&payload) {
            Ok(wire::Publishes::All(batch)) => {
                self.stats
                    .add_received_stored(PublishBatch::read(batch).count());
                self.split_for_shards(batch)
            }
            Ok(wire::Publishes::Shared { group, hash, batch }) => {
                self.stats
                    .add_received_stored(PublishBatch::read(batch).count());
                waits = self.shared_arrived(group, hash, &payload, batch);
                Vec::new()
            }
            Err(error) => {
                log::warn!("cluster: unreadable mailbox batch: {error}");
                Vec::new()
            }
        };
        let index = self.index();
        for (shard, batch) in batches {
            let stamp = self.port.persistence.then(|| DeliveryStamp {
                from: index,
                n: self.incoming.next_stamp(shard),
            });
            if let Some(stamp) = stamp {
                waits.push((shard, stamp.n));
            }
            self.send_shard(shard, false, BusMessage::Publishes(batch, stamp));
        }
        // Without persistence the shards confirm nothing: handed over is as far as it goes.
        let ready = self.incoming.push(message, waits);
        self.ack_incoming(ready);
    }

    pub(super) fn ack_incoming(&mut self, ready: Vec<jetstream::Message>) {
        for message in ready {
            tokio::spawn(async move {
                if let Err(error) = message.ack().await {
                    log::warn!("cluster: mailbox acknowledgement: {error}");
                }
            });
        }
    }

    pub(super) fn retained_arrived(&mut self, message: jetstream::Message) {
        let pending = message.info().map(|i| i.pending).unwrap_or(0);
        let Some(topic) = self.names.topic_of_retained(message.subject.as_str()) else {
            return;
        };
        let decoded = wire::decode_retained(&topic, &message.payload);
        let (retained, version) = match decoded {
            Ok(decoded) => decoded,
            Err(error) => {
                log::warn!("cluster: retained message: {error}");
                return;
            }
        };
        let own = version.shard / VERSION_SHARDS == self.port.version_base / VERSION_SHARDS;
        let live = self.retained_loaded && !own;
        let message = if live {
            BusMessage::Retained {
                message: retained,
                version,
                stamp: None,
            }
        } else {
            BusMessage::RetainedLoad {
                message: retained,
                version,
            }
        };
        self.send_all_shards(false, &message);
        if pending == 0 && !self.retained_loaded {
            self.retained_loaded = true;
            log::info!("cluster: retained messages loaded");
        }
    }
}
