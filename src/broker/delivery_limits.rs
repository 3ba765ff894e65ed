//! The limits a delivery meets on its way to one subscriber: the Maximum Packet Size its MQTT 5
//! client announced (with this copy's own properties: subscription identifiers), and the outbox
//! and memory limits that drop a live QoS 0 message for a subscriber that is behind. Methods of
//! [`BrokerCore`] that `routing.rs` calls; nothing here decides where a message goes or writes it.

use crate::protocol::{v5, PublishRef, QoS};

use super::copy_props::CopyProps;
use super::{BrokerCore, ConnId, Message, Pressure, Settings, Stats, QOS0_BEHIND};

impl BrokerCore {
    /// Logs a PUBLISH that does not encode (nothing is written for it).
    pub(super) fn cannot_encode(topic: &[u8], error: &crate::protocol::EncodeError) {
        let topic = String::from_utf8_lossy(topic);
        log::warn!("cannot encode PUBLISH to {topic}: {error}");
    }

    /// Whether `message` at `qos` is over the Maximum Packet Size of connection `conn`'s MQTT 5
    /// client (an MQTT 3 client, or one without the property: never).
    pub(super) fn too_large_for(
        &self,
        conn: Option<ConnId>,
        message: &Message,
        qos: QoS,
        retain: bool,
        props: &CopyProps<'_>,
    ) -> bool {
        let Some(max) = conn
            .and_then(|conn| self.connections.get(&conn))
            .and_then(|connection| connection.v5.as_ref()?.max_packet_size)
        else {
            return false;
        };
        let publish = PublishRef {
            dup: false,
            qos,
            retain,
            topic: message.topic.as_bytes(),
            packet_id: None,
            payload: &message.payload,
            properties: message.properties.as_deref(),
        };
        v5::encoded_publish_len(&publish, &props.hop(self.clock)) > max as usize
    }

    /// Whether a live QoS 0 message for a subscriber with `waiting` bytes in its outbox is dropped
    /// (and counted): past the outbox limit, or, under memory pressure, behind by more than
    /// [`QOS0_BEHIND`].
    pub(super) fn drops_live_qos0(settings: &Settings, stats: &mut Stats, waiting: usize) -> bool {
        if waiting > settings.outbox_limit {
            stats.publish_dropped_outbox_full += 1;
            return true;
        }
        if waiting > QOS0_BEHIND && settings.memory.pressure() >= Pressure::DropQoS0 {
            stats.publish_dropped_memory += 1;
            return true;
        }
        false
    }
}
