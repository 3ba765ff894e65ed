//! What the cluster's nodes say to each other over NATS, as bytes: the subjects, and the
//! encoding of publish batches (for every subscriber, or for one member of a share group),
//! interest deltas and snapshots (filters and share groups' member counts), their
//! acknowledgements, and retained messages. Plain functions over byte slices: no I/O, no NATS
//! client, no clock.
//!
//! Every payload starts with a format byte ([`FORMAT`]; [`FORMAT_SHARED`] for a share group's
//! batch); a node that reads another format logs and skips it (nodes of different versions do
//! not mix silently: a cluster's nodes run one version). Integers are big-endian.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use thiserror::Error;

use crate::broker::{Message, RetainVersion, ShareGroup};
use crate::protocol::{v5, QoS, TopicFilter, TopicName};

/// The format byte of every payload this version writes.
pub const FORMAT: u8 = 1;

/// The format byte of a batch of publishes for one member of a share group
/// ([`encode_shared`]); it travels where plain batches do (a node's QoS 0 subject and mailbox).
pub const FORMAT_SHARED: u8 = 2;

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
        Self::with_format(bytes, FORMAT)
    }
    fn with_format(bytes: &'a [u8], format: u8) -> Result<Self, WireError> {
        match bytes.split_first() {
            Some((&first, rest)) if first == format => Ok(Reader { bytes: rest }),
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
    fn group(&mut self) -> Result<ShareGroup, WireError> {
        let len = usize::from(self.u16()?);
        let name = std::str::from_utf8(self.take(len)?).map_err(|_| WireError::Topic)?;
        let filter = self.filter()?;
        Ok(ShareGroup {
            name: name.into(),
            filter,
        })
    }
    /// The share groups' counts that end a delta or a snapshot (none when a payload ends
    /// before them).
    fn group_counts(&mut self) -> Result<Vec<GroupCount>, WireError> {
        if self.bytes.is_empty() {
            return Ok(Vec::new());
        }
        let n = self.u32()?;
        let mut groups = Vec::with_capacity(n.min(4096) as usize);
        for _ in 0..n {
            groups.push(GroupCount {
                group: self.group()?,
                online: self.u32()?,
                offline: self.u32()?,
            });
        }
        Ok(groups)
    }
    fn rest(self) -> &'a [u8] {
        self.bytes
    }
}

fn put_group(out: &mut BytesMut, group: &ShareGroup) {
    // A share name is part of a topic filter: at most 65 535 bytes.
    let name = group.name.as_bytes();
    let name = &name[..name.len().min(usize::from(u16::MAX))];
    out.put_u16(name.len() as u16);
    out.put_slice(name);
    put_filter(out, &group.filter);
}

fn put_group_counts(out: &mut BytesMut, groups: &[GroupCount]) {
    out.put_u32(groups.len() as u32);
    for count in groups {
        put_group(out, &count.group);
        out.put_u32(count.online);
        out.put_u32(count.offline);
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

/// A batch of publishes (a `PublishBatch`'s bytes) for one member of share group `group` on the
/// node it is sent to, all from publishers of one `hash` (`hash_client_id`; `None` otherwise).
pub fn encode_shared(group: &ShareGroup, hash: Option<u64>, batch: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(16 + group.name.len() + batch.len());
    out.put_u8(FORMAT_SHARED);
    put_group(&mut out, group);
    match hash {
        Some(hash) => {
            out.put_u8(1);
            out.put_u64(hash);
        }
        None => out.put_u8(0),
    }
    out.put_slice(batch);
    out.freeze()
}

/// What a node's QoS 0 subject or mailbox carries.
#[derive(Debug, PartialEq, Eq)]
pub enum Publishes<'a> {
    /// For every subscriber on the node (a `PublishBatch`'s bytes).
    All(&'a [u8]),
    /// For one member of a share group each.
    Shared {
        group: ShareGroup,
        hash: Option<u64>,
        batch: &'a [u8],
    },
}

/// A batch payload of either kind.
pub fn decode_publishes(payload: &[u8]) -> Result<Publishes<'_>, WireError> {
    if payload.first() != Some(&FORMAT_SHARED) {
        return decode_batch(payload).map(Publishes::All);
    }
    let mut r = Reader::with_format(payload, FORMAT_SHARED)?;
    let group = r.group()?;
    let hash = match r.u8()? {
        0 => None,
        _ => Some(r.u64()?),
    };
    Ok(Publishes::Shared {
        group,
        hash,
        batch: r.rest(),
    })
}

/// One change of a node's interest: a filter its shards took up (`true`) or all let go.
pub type Change = (bool, TopicFilter);

/// How many members a node has in a share group, its clients online and offline (absolute
/// counts; both 0: it has none left).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupCount {
    pub group: ShareGroup,
    pub online: u32,
    pub offline: u32,
}

/// A node's interest delta number `seq`, from its run `boot` (numbers restart with a run): its
/// filters' changes and its share groups whose counts changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delta {
    pub boot: u64,
    pub seq: u64,
    pub changes: Vec<Change>,
    pub groups: Vec<GroupCount>,
}

/// A node's whole interest, as of its run `boot`'s delta `seq`: its filters and its share
/// groups' counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub boot: u64,
    pub seq: u64,
    pub filters: Vec<TopicFilter>,
    pub groups: Vec<GroupCount>,
}

pub fn encode_delta(delta: &Delta) -> Bytes {
    let mut out = BytesMut::new();
    out.put_u8(FORMAT);
    out.put_u64(delta.boot);
    out.put_u64(delta.seq);
    out.put_u32(delta.changes.len() as u32);
    for (added, filter) in &delta.changes {
        out.put_u8(u8::from(*added));
        put_filter(&mut out, filter);
    }
    put_group_counts(&mut out, &delta.groups);
    out.freeze()
}

pub fn decode_delta(payload: &[u8]) -> Result<Delta, WireError> {
    let mut r = Reader::new(payload)?;
    let boot = r.u64()?;
    let seq = r.u64()?;
    let n = r.u32()?;
    let mut changes = Vec::with_capacity(n.min(4096) as usize);
    for _ in 0..n {
        let added = r.u8()? != 0;
        changes.push((added, r.filter()?));
    }
    let groups = r.group_counts()?;
    Ok(Delta {
        boot,
        seq,
        changes,
        groups,
    })
}

pub fn encode_snapshot(snapshot: &Snapshot) -> Bytes {
    let mut out = BytesMut::new();
    out.put_u8(FORMAT);
    out.put_u64(snapshot.boot);
    out.put_u64(snapshot.seq);
    out.put_u32(snapshot.filters.len() as u32);
    for filter in &snapshot.filters {
        put_filter(&mut out, filter);
    }
    put_group_counts(&mut out, &snapshot.groups);
    out.freeze()
}

pub fn decode_snapshot(payload: &[u8]) -> Result<Snapshot, WireError> {
    let mut r = Reader::new(payload)?;
    let boot = r.u64()?;
    let seq = r.u64()?;
    let n = r.u32()?;
    let mut filters = Vec::with_capacity(n.min(4096) as usize);
    for _ in 0..n {
        filters.push(r.filter()?);
    }
    let groups = r.group_counts()?;
    Ok(Snapshot {
        boot,
        seq,
        filters,
        groups,
    })
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

    fn g(name: &str, filter: &str) -> ShareGroup {
        ShareGroup {
            name: name.into(),
            filter: f(filter),
        }
    }

    #[test]
    fn deltas_snapshots_and_acks_read_back() {
        let delta = Delta {
            boot: 7,
            seq: 3,
            changes: vec![(true, f("a/+/c")), (false, f("#"))],
            groups: vec![GroupCount {
                group: g("workers", "jobs/+"),
                online: 2,
                offline: 1,
            }],
        };
        assert_eq!(decode_delta(&encode_delta(&delta)), Ok(delta));
        let snapshot = Snapshot {
            boot: 7,
            seq: 9,
            filters: vec![f("x"), f("y/#")],
            groups: vec![GroupCount {
                group: g("g", "#"),
                online: 0,
                offline: 3,
            }],
        };
        assert_eq!(decode_snapshot(&encode_snapshot(&snapshot)), Ok(snapshot));
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
    fn a_payload_without_share_groups_reads_as_having_none() {
        // What a delta looked like before share groups crossed nodes: filters only.
        let delta = Delta {
            boot: 1,
            seq: 2,
            changes: vec![(true, f("a"))],
            groups: Vec::new(),
        };
        let bytes = encode_delta(&delta);
        let without = &bytes[..bytes.len() - 4];
        assert_eq!(decode_delta(without), Ok(delta));
    }

    #[test]
    fn a_share_groups_batch_keeps_its_group_and_hash() {
        let group = g("workers", "jobs/#");
        for hash in [None, Some(u64::MAX - 3)] {
            let payload = encode_shared(&group, hash, b"records");
            let expected = Publishes::Shared {
                group: group.clone(),
                hash,
                batch: b"records",
            };
            assert_eq!(decode_publishes(&payload), Ok(expected));
        }
        let plain = encode_batch(b"records");
        assert_eq!(decode_publishes(&plain), Ok(Publishes::All(b"records")));
        let shared = encode_shared(&group, None, b"");
        assert_eq!(
            decode_batch(&shared),
            Err(WireError::Format(FORMAT_SHARED)),
            "a node without share groups across nodes skips it"
        );
    }

    #[test]
    fn damaged_or_foreign_payloads_are_refused() {
        assert_eq!(decode_batch(&[]), Err(WireError::Truncated));
        assert_eq!(decode_batch(&[9, 1, 2]), Err(WireError::Format(9)));
        let delta = encode_delta(&Delta {
            boot: 1,
            seq: 1,
            changes: vec![(true, f("a"))],
            groups: vec![GroupCount {
                group: g("g", "a"),
                online: 1,
                offline: 0,
            }],
        });
        assert_eq!(
            decode_delta(&delta[..delta.len() - 1]),
            Err(WireError::Truncated)
        );
    }
}
