//! Routing between shards: which other shards take a publish (their interest, cached for the
//! last topic), the batch of publishes for each (`bus_batch.rs`, MQTT 5 properties included),
//! sending it, and delivering a batch another shard sent.
//!
//! Methods of [`BrokerCore`] called by `routing.rs` and the bus; nothing here reads a clock,
//! touches a socket or decodes packets.

use std::sync::Arc;

use bytes::Bytes;

use crate::protocol::{v5, QoS, TopicName};

use super::{Action, BatchedPublish, BrokerCore, BusMessage, Message, BUS_BATCH_LIMIT};

impl BrokerCore {
    /// Packs a message that is not retained for every other shard with a matching subscription.
    pub(super) fn route_to_other_shards(
        &mut self,
        qos: QoS,
        topic: &[u8],
        payload: &[u8],
        properties: Option<&v5::Properties>,
    ) {
        let remote = self.take_remote_shards(topic);
        if remote.is_empty() {
            self.last_remote.put_back(remote);
            return;
        }
        let properties = match properties.map(v5::publish_properties_bytes) {
            Some(Ok(bytes)) => Some(bytes),
            Some(Err(error)) => {
                // Decoded from a PUBLISH, so they encode; kept out of the batch if not.
                log::warn!("cannot pass PUBLISH properties to other shards: {error}");
                None
            }
            None => None,
        };
        let properties = properties.as_deref().unwrap_or_default();
        for &to in &remote {
            self.batch_publish(to, qos, topic, payload, properties);
        }
        self.last_remote.put_back(remote);
    }

    /// The other shards with a subscription matching `topic`. The caller gives the vector back to
    /// `last_remote` ([`LastTopic`]).
    pub(super) fn take_remote_shards(&mut self, topic: &[u8]) -> Vec<usize> {
        let (me, interest) = (self.shard, &self.remote_interest);
        self.last_remote.take(topic, |remote| {
            remote.extend(
                (0..interest.len()).filter(|&to| to != me && interest[to].matches_any(topic)),
            );
        })
    }

    /// A publish from another shard's batch (`bytes` holds the batch, `publish` borrows from it).
    /// QoS 0 goes straight from the batch to subscribers that take it at once; otherwise the
    /// message is made from slices of the batch, as a decoded PUBLISH is made from slices of its
    /// read buffer.
    pub(super) fn deliver_batched(&mut self, bytes: &Bytes, publish: BatchedPublish<'_>) {
        if publish.qos == QoS::AtMostOnce
            && publish.properties.is_empty()
            && self.deliver_qos0_at_once(publish.topic, publish.payload)
        {
            return;
        }
        let properties = if publish.properties.is_empty() {
            None
        } else {
            match v5::decode_publish_properties(publish.properties) {
                Ok(properties) => Some(Arc::new(properties)),
                Err(error) => {
                    // Written by the sending shard from decoded properties.
                    debug_assert!(false, "batched properties do not decode: {error}");
                    None
                }
            }
        };
        let Ok(topic) = TopicName::from_bytes(bytes.slice_ref(publish.topic)) else {
            // Checked when its PUBLISH was decoded on the sending shard.
            debug_assert!(false, "a batched topic is not a topic name");
            return;
        };
        let message = Message {
            topic,
            payload: bytes.slice_ref(publish.payload),
            qos: publish.qos,
            retain: false,
            properties,
        };
        self.deliver_local(message, None);
    }

    /// Adds a publish to the batch for shard `to`, sent at the next `poll_actions` (or now, when
    /// the batch has grown past [`BUS_BATCH_LIMIT`]).
    fn batch_publish(
        &mut self,
        to: usize,
        qos: QoS,
        topic: &[u8],
        payload: &[u8],
        properties: &[u8],
    ) {
        if qos != QoS::AtMostOnce {
            if let Some(journal) = self.journal.as_deref_mut() {
                let n = journal.pending_stamp(to);
                journal.route_waits.push((to, n));
            }
        }
        let Some(batch) = self.outgoing.get_mut(to) else {
            return;
        };
        batch.push_with(qos, topic, payload, properties);
        let full = batch.byte_len() >= BUS_BATCH_LIMIT;
        if qos != QoS::AtMostOnce {
            self.sent_across();
        }
        if full {
            self.send_batch(to);
        }
    }

    /// Sends the publishes batched for shard `to`, if any.
    pub(super) fn send_batch(&mut self, to: usize) {
        let Some(batch) = self.outgoing.get_mut(to) else {
            return;
        };
        if batch.is_empty() {
            return;
        }
        // Counted per publish, as when each crossed on its own: the figure is traffic between
        // shards, not how it was packed.
        self.stats.bus_sent += batch.len() as u64;
        let numbered = !batch.qos0_only();
        let batch = std::mem::take(batch);
        let me = self.shard;
        let stamp = match self.journal.as_deref_mut() {
            Some(journal) if numbered => journal.stamp_for(to, me),
            _ => None,
        };
        let message = BusMessage::Publishes(batch, stamp);
        self.actions.push(Action::Bus { to, message });
    }
}
