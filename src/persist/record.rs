//! The journal records: one shard's durable state changes, in the order the shard made them.
//!
//! A snapshot is the same records, describing the whole state at one point (so one reader and
//! one replay serve both). Every record is idempotent: replaying one twice, or replaying a journal
//! over a snapshot taken while it was being written, gives the same state. Sessions are named by
//! client id (a session's home shard may change between runs when `shards` does); a message is
//! stored once per shard ([`Record::Message`]) and enqueued per session by its [`MsgId`].
//!
//! Only persistent sessions (clean session 0) and retained messages are journaled; clean sessions
//! and QoS 0 cost nothing. This file holds the types only: no encoding, no file, no clock.
//!
//! MQTT 5: a message's properties are part of its [`Message`]; what MQTT 3 has not (a message's
//! expiry deadline, a will's delay, a session's expiry interval) comes in records of its own,
//! written after the record they complete ([`Record::MessageExpiry`] after [`Record::Message`],
//! [`Record::RetainExpiry`] after [`Record::Retain`], [`Record::WillDelay`] after
//! [`Record::Will`]), so an MQTT 3 session writes exactly the records it wrote before. Deadlines
//! are wall-clock milliseconds since the Unix epoch: they keep counting across restarts.

use std::sync::Arc;

use crate::protocol::{Message, QoS, SubOptions, TopicFilter, TopicName};

/// Names a message stored on one shard in one run (numbered from 1 by that shard; a snapshot
/// renumbers them). Unique per shard and generation, never per client.
pub type MsgId = u64;

/// One durable state change (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A persistent session exists: created, or resumed, by a CONNECT with clean session 0. Any
    /// offline stamp of the session ends (the client is online).
    SessionOpen { client_id: Arc<str> },
    /// The session is gone (a clean-session CONNECT took it over, it expired, or it was deleted):
    /// everything of that client id is forgotten.
    SessionDrop { client_id: Arc<str> },
    /// The user name of the CONNECT that opened or resumed the session (`None`: anonymous), so that
    /// a `receive-acl` checks its queued messages for the right user after a restart.
    SessionUser {
        client_id: Arc<str>,
        username: Option<Arc<str>>,
    },
    /// The client went offline at this wall-clock time (milliseconds since the Unix epoch): session
    /// expiry keeps counting across restarts.
    SessionOffline {
        client_id: Arc<str>,
        at_unix_ms: u64,
    },
    /// A subscription made or replaced: its granted QoS, and MQTT 5's options and Subscription
    /// Identifier.
    Subscribe {
        client_id: Arc<str>,
        filter: TopicFilter,
        options: SubOptions,
    },
    /// MQTT 5: the session's Session Expiry Interval, in seconds (`None`: it never expires), as
    /// its CONNECT (or a DISCONNECT) set it. A session without this record (MQTT 3) takes the
    /// broker's `session_expiry_interval` when it is recovered.
    SessionExpiry {
        client_id: Arc<str>,
        interval_secs: Option<u64>,
    },
    /// A subscription removed (UNSUBSCRIBE).
    Unsubscribe {
        client_id: Arc<str>,
        filter: TopicFilter,
    },
    /// The session's will: set by its CONNECT, `None` once published or discarded (DISCONNECT).
    /// Its Will Delay Interval is 0 until a [`Record::WillDelay`] follows.
    Will {
        client_id: Arc<str>,
        will: Option<Message>,
    },
    /// MQTT 5: the Will Delay Interval of the session's will (seconds, not 0), counted from when
    /// its client went offline: a will still waiting at a restart is published when it is due.
    WillDelay {
        client_id: Arc<str>,
        delay_secs: u32,
    },
    /// A message stored on this shard once, for the [`Record::Enqueue`]s that follow it. Its
    /// `retain` flag is as delivered to subscribers (false for a live publish).
    Message { id: MsgId, message: Message },
    /// MQTT 5: message `id` (its [`Record::Message`] came before) expires at this wall-clock time,
    /// from its Message Expiry Interval and when it reached the shard.
    MessageExpiry { id: MsgId, at_unix_ms: u64 },
    /// Message `id` queued for a session, to be delivered at `qos` (1 or 2), after the ones
    /// enqueued for it before.
    Enqueue {
        client_id: Arc<str>,
        id: MsgId,
        qos: QoS,
    },
    /// Message `id` of the session went out (or is about to) under `packet_id`: after a restart it
    /// is sent again with that id and DUP set. Written before a QoS 2 PUBLISH leaves.
    PacketId {
        client_id: Arc<str>,
        id: MsgId,
        packet_id: u16,
    },
    /// The subscriber sent PUBREC for message `id`: only PUBREL / PUBCOMP remain.
    Released { client_id: Arc<str>, id: MsgId },
    /// The session is done with message `id` (PUBACK, PUBCOMP, or dropped from its queue).
    Done { client_id: Arc<str>, id: MsgId },
    /// An incoming QoS 2 PUBLISH with this packet id was routed; a re-sent one is not routed again
    /// until [`Record::Qos2Released`].
    Qos2Received { client_id: Arc<str>, packet_id: u16 },
    /// PUBREL for an incoming QoS 2 packet id: the id is free again.
    Qos2Released { client_id: Arc<str>, packet_id: u16 },
    /// A retained message set (`message` with a non-empty payload) or deleted (`None`) on `topic`,
    /// by the update numbered (`clock`, `shard`): the highest version of a topic wins, across all
    /// shards' journals.
    Retain {
        topic: TopicName,
        message: Option<Message>,
        clock: u64,
        shard: u32,
    },
    /// MQTT 5: the retained message of `topic` set by the update (`clock`, `shard`) expires at
    /// this wall-clock time (nothing when a newer update replaced it).
    RetainExpiry {
        topic: TopicName,
        clock: u64,
        shard: u32,
        at_unix_ms: u64,
    },
}

impl Record {
    /// The client id a record is about (`None` for messages and retained updates).
    pub fn client_id(&self) -> Option<&Arc<str>> {
        match self {
            Record::SessionOpen { client_id }
            | Record::SessionDrop { client_id }
            | Record::SessionUser { client_id, .. }
            | Record::SessionOffline { client_id, .. }
            | Record::Subscribe { client_id, .. }
            | Record::Unsubscribe { client_id, .. }
            | Record::SessionExpiry { client_id, .. }
            | Record::Will { client_id, .. }
            | Record::WillDelay { client_id, .. }
            | Record::Enqueue { client_id, .. }
            | Record::PacketId { client_id, .. }
            | Record::Released { client_id, .. }
            | Record::Done { client_id, .. }
            | Record::Qos2Received { client_id, .. }
            | Record::Qos2Released { client_id, .. } => Some(client_id),
            Record::Message { .. }
            | Record::MessageExpiry { .. }
            | Record::Retain { .. }
            | Record::RetainExpiry { .. } => None,
        }
    }
}
