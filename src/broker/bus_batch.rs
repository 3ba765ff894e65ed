//! Publishes bound for one other shard, packed back to back into one buffer that crosses the bus as
//! a single message ([`BusMessage::Publishes`](super::BusMessage::Publishes)).
//!
//! Sending each publish as its own bus message cost a channel push and pop per message, and the
//! message's reference-counted topic and payload (slices of the publisher's read buffer) were
//! dropped on the other shard's CPU: that buffer's counter bounced between the two CPUs' caches.
//! A batch copies topic and payload once into a buffer the receiving shard then owns, and the
//! receiver routes QoS 0 records straight from it, as a shard routes a PUBLISH from a read buffer.
//!
//! Only plain, non-retained publishes travel this way (retained ones carry a version, see
//! `retained.rs`). A record is `qos: u8`, `topic length: u16 BE`, topic, `payload length: u32 BE`,
//! payload; topics were checked when their PUBLISH was decoded. An MQTT 5 message with properties
//! sets bit 7 of the QoS byte and adds `properties length: u32 BE` and its PUBLISH properties'
//! wire bytes. This file knows nothing of shards, sessions or the bus itself.

use bytes::Bytes;

use crate::protocol::QoS;

/// Publishes for one shard, in the order they were routed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PublishBatch {
    bytes: Vec<u8>,
    count: usize,
    /// Some record is QoS 1 or 2.
    above_qos0: bool,
}

/// One publish read back from a [`PublishBatch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchedPublish<'a> {
    pub qos: QoS,
    pub topic: &'a [u8],
    pub payload: &'a [u8],
    /// MQTT 5 PUBLISH properties' bytes (without their length); empty for none.
    pub properties: &'a [u8],
}

/// Bit 7 of a record's QoS byte: properties follow the payload.
const WITH_PROPERTIES: u8 = 0x80;

impl PublishBatch {
    /// Appends a publish. `topic` is at most 65 535 bytes (an MQTT topic name always is).
    pub fn push(&mut self, qos: QoS, topic: &[u8], payload: &[u8]) {
        self.push_with(qos, topic, payload, &[]);
    }

    /// Appends a publish with MQTT 5 PUBLISH properties' bytes (`properties`, empty for none).
    pub fn push_with(&mut self, qos: QoS, topic: &[u8], payload: &[u8], properties: &[u8]) {
        debug_assert!(topic.len() <= usize::from(u16::MAX));
        self.above_qos0 |= qos != QoS::AtMostOnce;
        self.count += 1;
        self.bytes.reserve(7 + topic.len() + payload.len());
        let flag = if properties.is_empty() {
            0
        } else {
            WITH_PROPERTIES
        };
        self.bytes.push(qos as u8 | flag);
        self.bytes
            .extend_from_slice(&(topic.len() as u16).to_be_bytes());
        self.bytes.extend_from_slice(topic);
        self.bytes
            .extend_from_slice(&(payload.len() as u32).to_be_bytes());
        self.bytes.extend_from_slice(payload);
        if !properties.is_empty() {
            self.bytes
                .extend_from_slice(&(properties.len() as u32).to_be_bytes());
            self.bytes.extend_from_slice(properties);
        }
    }

    /// Number of publishes in the batch.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Size of the packed records in bytes.
    pub fn byte_len(&self) -> usize {
        self.bytes.len()
    }

    /// True when every publish in the batch is QoS 0 (a full bus lane may then drop the batch,
    /// as it drops a single QoS 0 publish).
    pub fn qos0_only(&self) -> bool {
        self.count > 0 && !self.above_qos0
    }

    /// The publishes, in the order they were pushed.
    pub fn iter(&self) -> impl Iterator<Item = BatchedPublish<'_>> {
        Self::read(&self.bytes)
    }

    /// The packed records, for a receiver that keeps slices of them (see [`Self::read`]).
    pub fn into_bytes(self) -> Bytes {
        Bytes::from(self.bytes)
    }

    /// The publishes packed in `bytes` (from [`Self::into_bytes`]), in order.
    pub fn read(bytes: &[u8]) -> impl Iterator<Item = BatchedPublish<'_>> {
        Records { rest: bytes }
    }
}

struct Records<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Records<'a> {
    type Item = BatchedPublish<'a>;

    fn next(&mut self) -> Option<BatchedPublish<'a>> {
        let (&first, rest) = self.rest.split_first()?;
        let qos = QoS::from_u8(first & !WITH_PROPERTIES)?;
        let (topic_len, rest) = rest.split_first_chunk::<2>()?;
        let (topic, rest) = rest.split_at_checked(usize::from(u16::from_be_bytes(*topic_len)))?;
        let (payload_len, rest) = rest.split_first_chunk::<4>()?;
        let payload_len = usize::try_from(u32::from_be_bytes(*payload_len)).ok()?;
        let (payload, mut rest) = rest.split_at_checked(payload_len)?;
        let mut properties: &[u8] = &[];
        if first & WITH_PROPERTIES != 0 {
            let (len, after) = rest.split_first_chunk::<4>()?;
            let len = usize::try_from(u32::from_be_bytes(*len)).ok()?;
            (properties, rest) = after.split_at_checked(len)?;
        }
        self.rest = rest;
        Some(BatchedPublish {
            qos,
            topic,
            payload,
            properties,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_come_back_in_order_with_their_fields() {
        let mut batch = PublishBatch::default();
        assert!(batch.is_empty() && !batch.qos0_only());
        batch.push(QoS::AtMostOnce, b"a/b", b"one");
        assert!(batch.qos0_only());
        batch.push(QoS::ExactlyOnce, b"c", b"");
        batch.push(QoS::AtLeastOnce, "é/ü".as_bytes(), &[0u8; 70_000]);
        assert_eq!(batch.len(), 3);
        assert!(!batch.qos0_only());
        let all: Vec<BatchedPublish<'_>> = batch.iter().collect();
        assert_eq!(
            all[0],
            BatchedPublish {
                qos: QoS::AtMostOnce,
                topic: b"a/b",
                payload: b"one",
                properties: b"",
            }
        );
        assert_eq!(
            all[1],
            BatchedPublish {
                qos: QoS::ExactlyOnce,
                topic: b"c",
                payload: b"",
                properties: b"",
            }
        );
        assert_eq!(all[2].qos, QoS::AtLeastOnce);
        assert_eq!(all[2].topic, "é/ü".as_bytes());
        assert_eq!(all[2].payload.len(), 70_000);
        assert_eq!(all.len(), 3);
        assert_eq!(batch.byte_len(), (7 + 3 + 3) + (7 + 1) + (7 + 5 + 70_000));
    }

    #[test]
    fn properties_ride_behind_their_payload() {
        let mut batch = PublishBatch::default();
        batch.push_with(QoS::AtLeastOnce, b"t", b"x", b"\x03\x00\x01a");
        batch.push(QoS::AtMostOnce, b"u", b"y");
        let all: Vec<BatchedPublish<'_>> = batch.iter().collect();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].qos, QoS::AtLeastOnce);
        assert_eq!(all[0].payload, b"x");
        assert_eq!(all[0].properties, b"\x03\x00\x01a");
        assert_eq!(all[1].properties, b"");
        assert_eq!(all[1].topic, b"u");
    }

    #[test]
    fn qos0_only_follows_every_record() {
        let mut batch = PublishBatch::default();
        batch.push(QoS::AtLeastOnce, b"t", b"x");
        batch.push(QoS::AtMostOnce, b"t", b"x");
        assert!(!batch.qos0_only(), "one QoS 1 record is enough");
        let mut batch = PublishBatch::default();
        batch.push(QoS::AtMostOnce, b"t", b"x");
        batch.push(QoS::AtMostOnce, b"u", b"y");
        assert!(batch.qos0_only());
    }

    #[test]
    fn a_cut_record_ends_the_iteration_without_panicking() {
        let mut batch = PublishBatch::default();
        batch.push(QoS::AtMostOnce, b"topic", b"payload");
        batch.push(QoS::AtMostOnce, b"topic", b"payload");
        let whole = batch.bytes.clone();
        for cut in 0..whole.len() {
            batch.bytes = whole[..cut].to_vec();
            let seen = batch.iter().count();
            assert!(seen <= 1, "cut at {cut}: {seen} records");
        }
    }
}
