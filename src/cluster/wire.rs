//! What the cluster's nodes say to each other over NATS, as bytes: the subjects, and the
//! encoding of publish batches, interest deltas and snapshots, their acknowledgements, and
//! retained messages. Plain functions over byte slices: no I/O, no NATS client, no clock.
//!
//! Every payload starts with a format byte ([`FORMAT`]); a node that reads another format logs
//! and skips it (nodes of different versions do not mix silently). Integers are big-endian.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use thiserror::Error;

use crate::broker::{Message, RetainVersion};
use crate::protocol::{v5, QoS, TopicFilter, TopicName};

/// The format byte of every payload this version writes.
pub const FORMAT: u8 = 1;

/// A payload that is not one this node can read.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum WireError {
    #[error("unknown cluster message format {0} (a node of another version?)")]
    Format(u8),
    #[error("truncated cluster message")]
    Truncated,
    #[error("bad topic or filter in a cluster message")]
    Topic,
    #[error("bad MQTT 5 properties in a cluster message")]
    Properties,
}

/// The subjects, streams and buckets of one cluster (`cluster.name`).
#[derive(Debug, Clone)]
pub struct Names {
    pub prefix: String,
}

impl Names {
    pub fn new(cluster: &str) -> Self {
        Names {
            prefix: cluster.to_string(),
        }
    }
    /// QoS 0 publishes for `node` (core NATS).
    pub fn qos0(&self, node: &str) -> String {
        format!("{}.q0.{node}", self.prefix)
    }
    /// QoS 1/2 publishes for `node` (its JetStream mailbox).
    pub fn mailbox(&self, node: &str) -> String {
        format!("{}.mbox.{node}", self.prefix)
    }
    /// The mailbox stream (every node's subject).
    pub fn mailbox_stream(&self) -> String {
        format!("{}_mailbox", self.prefix)
    }
    /// `node`'s interest deltas.
    pub fn interest(&self, node: &str) -> String {
        format!("{}.interest.{node}", self.prefix)
    }
    /// Every node's interest deltas.
    pub fn interest_all(&self) -> String {
        format!("{}.interest.*", self.prefix)
    }
    /// Acknowledgements of `node`'s deltas.
    pub fn interest_ack(&self, node: &str) -> String {
        format!("{}.iack.{node}", self.prefix)
    }
    /// Requests for `node`'s whole interest.
    pub fn sync(&self, node: &str) -> String {
        format!("{}.sync.{node}", self.prefix)
    }
    /// The retained message of `topic` (hex: any MQTT topic is a NATS token then).
    pub fn retained(&self, topic: &[u8]) -> String {
        let mut subject = String::with_capacity(self.prefix.len() + 5 + topic.len() * 2);
        subject.push_str(&self.prefix);
        subject.push_str(".ret.");
        for b in topic {
            subject.push_str(&format!("{b:02x}"));
        }
        subject
    }
    /// Every retained message's subject.
    pub fn retained_all(&self) -> String {
        format!("{}.ret.>", self.prefix)
    }
    /// The retained messages' stream.
    pub fn retained_stream(&self) -> String {
        format!("{}_retained", self.prefix)
    }
    /// The live nodes' stream (one message per node, expiring).
    pub fn nodes_stream(&self) -> String {
        format!("{}_nodes", self.prefix)
    }
    /// `node`'s liveness subject.
    pub fn node(&self, node: &str) -> String {
        format!("{}.node.{node}", self.prefix)
    }
    /// The topic back from a retained message's subject.
    pub fn topic_of_retained(&self, subject: &str) -> Option<Vec<u8>> {
        let hex = subject.strip_prefix(&self.prefix)?.strip_prefix(".ret.")?;
        if hex.len() % 2 != 0 {
            return None;
        }
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
            .collect()
    }
}

/// Longest topic whose retained message the cluster stores (NATS subjects live in a protocol
/// line of 4 KiB by default; a topic is written in hex).
pub const MAX_RETAINED_TOPIC: usize = 1500;

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Result<Self, WireError> {
        match bytes.split_first() {
            Some((&FORMAT, rest)) => Ok(Reader { bytes: rest }),
            Some((&other, _)) => Err(WireError::Format(other)),
            None => Err(WireError::Truncated),
        }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.bytes.len() < n {
            return Err(WireError::Truncated);
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, WireError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, WireError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, WireError> {
        let mut a = [0; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(a))
    }
    fn filter(&mut self) -> Result<TopicFilter, WireError> {
        let len = usize::from(self.u16()?);
        let text = std::str::from_utf8(self.take(len)?).map_err(|_| WireError::Topic)?;
        TopicFilter::new(text).map_err(|_| WireError::Topic)
    }
    fn rest(self) -> &'a [u8] {
        self.bytes
    }
}

fn put_filter(out: &mut BytesMut, filter: &TopicFilter) {
    let text = filter.as_str().as_bytes();
    // A topic filter is at most 65 535 bytes (its MQTT length field).
    out.put_u16(u16::try_from(text.len()).unwrap_or(u16::MAX));
    out.put_slice(&text[..text.len().min(usize::from(u16::MAX))]);
}

/// A batch of publishes (a `PublishBatch`'s bytes) for one node.
pub fn encode_batch(batch: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(1 + batch.len());
    out.put_u8(FORMAT);
    out.put_slice(batch);
    out.freeze()
}

/// The `PublishBatch` bytes of a batch payload.
pub fn decode_batch(payload: &[u8]) -> Result<&[u8], WireError> {
    Ok(Reader::new(payload)?.rest())
}

/// One change of a node's interest: a filter its shards took up (`true`) or all let go.
pub type Change = (bool, TopicFilter);

/// A node's interest delta number `seq`, from its run `boot` (numbers restart with a run).
pub fn encode_delta(boot: u64, seq: u64, changes: &[Change]) -> Bytes {
    let mut out = BytesMut::new();
    out.put_u8(FORMAT);
    out.put_u64(boot);
    out.put_u64(seq);
    out.put_u32(changes.len() as u32);
    for (added, filter) in changes {
        out.put_u8(u8::from(*added));
        put_filter(&mut out, filter);
    }
    out.freeze()
}

/// (boot, seq, changes).
pub fn decode_delta(payload: &[u8]) -> Result<(u64, u64, Vec<Change>), WireError> {
    let mut r = Reader::new(payload)?;
    let boot = r.u64()?;
    let seq = r.u64()?;
    let n = r.u32()?;
    let mut changes = Vec::with_capacity(n.min(4096) as usize);
    for _ in 0..n {
        let added = r.u8()? != 0;
        changes.push((added, r.filter()?));
    }
    Ok((boot, seq, changes))
}

/// A node's whole interest, as of its run `boot`'s delta `seq`.
pub fn encode_snapshot<'a>(
    boot: u64,
    seq: u64,
    filters: impl ExactSizeIterator<Item = &'a TopicFilter>,
) -> Bytes {
    let mut out = BytesMut::new();
    out.put_u8(FORMAT);
    out.put_u64(boot);
    out.put_u64(seq);
    out.put_u32(filters.len() as u32);
    for filter in filters {
        put_filter(&mut out, filter);
    }
    out.freeze()
}

/// (boot, seq, filters).
pub fn decode_snapshot(payload: &[u8]) -> Result<(u64, u64, Vec<TopicFilter>), WireError> {
    let mut r = Reader::new(payload)?;
    let boot = r.u64()?;
    let seq = r.u64()?;
    let n = r.u32()?;
    let mut filters = Vec::with_capacity(n.min(4096) as usize);
    for _ in 0..n {
        filters.push(r.filter()?);
    }
    Ok((boot, seq, filters))
}

/// `node` has applied the deltas up to `seq` of the node it answers.
pub fn encode_ack(node: &str, seq: u64) -> Bytes {
    let mut out = BytesMut::new();
    out.put_u8(FORMAT);
    out.put_u64(seq);
    out.put_slice(node.as_bytes());
    out.freeze()
}

pub fn decode_ack(payload: &[u8]) -> Result<(String, u64), WireError> {
    let mut r = Reader::new(payload)?;
    let seq = r.u64()?;
    let node = String::from_utf8(r.rest().to_vec()).map_err(|_| WireError::Topic)?;
    Ok((node, seq))
}

/// A retained message and its version (an empty payload deletes the topic's message).
pub fn encode_retained(message: &Message, version: RetainVersion) -> Bytes {
    let properties = message
        .properties
        .as_deref()
        .and_then(|p| v5::publish_properties_bytes(p).ok())
        .unwrap_or_default();
    let mut out = BytesMut::with_capacity(18 + properties.len() + message.payload.len());
    out.put_u8(FORMAT);
    out.put_u64(version.clock);
    out.put_u32(version.shard);
    out.put_u8(message.qos as u8);
    out.put_u32(properties.len() as u32);
    out.put_slice(&properties);
    out.put_slice(&message.payload);
    out.freeze()
}

pub fn decode_retained(
    topic: &[u8],
    payload: &Bytes,
) -> Result<(Message, RetainVersion), WireError> {
    let mut r = Reader::new(payload)?;
    let version = RetainVersion {
        clock: r.u64()?,
        shard: r.u32()?,
    };
    let qos = QoS::from_u8(r.u8()?).ok_or(WireError::Truncated)?;
    let len = r.u32()? as usize;
    let properties = r.take(len)?;
    let properties = if properties.is_empty() {
        None
    } else {
        Some(Arc::new(
            v5::decode_publish_properties(properties).map_err(|_| WireError::Properties)?,
        ))
    };
    let body = r.rest();
    let topic =
        TopicName::from_bytes(Bytes::copy_from_slice(topic)).map_err(|_| WireError::Topic)?;
    Ok((
        Message {
            topic,
            payload: payload.slice_ref(body),
            qos,
            retain: true,
            properties,
        },
        version,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(s: &str) -> TopicFilter {
        TopicFilter::new(s).unwrap()
    }

    #[test]
    fn deltas_snapshots_and_acks_read_back() {
        let changes = vec![(true, f("a/+/c")), (false, f("#"))];
        assert_eq!(
            decode_delta(&encode_delta(7, 3, &changes)),
            Ok((7, 3, changes))
        );
        let filters = [f("x"), f("y/#")];
        assert_eq!(
            decode_snapshot(&encode_snapshot(7, 9, filters.iter())),
            Ok((7, 9, filters.to_vec()))
        );
        assert_eq!(
            decode_ack(&encode_ack("node-b", 4)),
            Ok(("node-b".into(), 4))
        );
    }

    #[test]
    fn a_retained_message_reads_back_with_its_version_and_properties() {
        let properties = v5::Properties {
            content_type: Some("text/plain".into()),
            ..Default::default()
        };
        let message = Message {
            topic: TopicName::new("a b/.*>").unwrap(),
            payload: Bytes::from_static(b"p"),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: Some(Arc::new(properties)),
        };
        let version = RetainVersion {
            clock: 5,
            shard: 2049,
        };
        let names = Names::new("amqtt");
        let subject = names.retained(message.topic.as_bytes());
        assert!(!subject["amqtt.ret.".len()..].contains(['.', ' ', '*', '>']));
        let topic = names.topic_of_retained(&subject).unwrap();
        let (back, v) = decode_retained(&topic, &encode_retained(&message, version)).unwrap();
        assert_eq!(back.topic, message.topic);
        assert_eq!(
            (back.payload, back.qos, v),
            (message.payload, message.qos, version)
        );
        assert_eq!(back.properties, message.properties);
    }

    #[test]
    fn damaged_or_foreign_payloads_are_refused() {
        assert_eq!(decode_batch(&[]), Err(WireError::Truncated));
        assert_eq!(decode_batch(&[9, 1, 2]), Err(WireError::Format(9)));
        let delta = encode_delta(1, 1, &[(true, f("a"))]);
        assert_eq!(
            decode_delta(&delta[..delta.len() - 1]),
            Err(WireError::Truncated)
        );
    }
}
