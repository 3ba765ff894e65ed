//! What the runtime and a shard's core exchange: the routed [`Message`], the [`Settings`] from the
//! configuration, the [`BusMessage`]s between shards and their [`Lane`], the [`Action`]s the core
//! leaves for the runtime, the home shard of a client id, and the figures the core reports.
//!
//! Plain data and one hash: the state and the verbs that use them are `mod.rs` and its files.

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;

use super::{
    flow_control, retained, ConnId, DeliveryStamp, FlowGate, MemoryBudget, PublishBatch,
    RetainVersion, ShareGroup, SharedStrategy,
};
use crate::plugins::CorePlugins;
use crate::protocol::{ConnectReturnCode, QoS, TopicFilter, PROTOCOL_MAX_PACKET_SIZE};

/// An application message as it is routed: what a PUBLISH carries, minus the per-hop fields. The
/// protocol's one message type, also what a will is and what plugins see.
pub use crate::protocol::Message;

impl<'a> From<&'a Message> for Cow<'a, Message> {
    fn from(message: &'a Message) -> Self {
        Cow::Borrowed(message)
    }
}

impl From<Message> for Cow<'_, Message> {
    fn from(message: Message) -> Self {
        Cow::Owned(message)
    }
}

/// Broker behaviour that comes from the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub max_inflight: u16,
    pub max_queued_messages: usize,
    /// Payload bytes queued per session; `None` for no byte limit.
    pub max_queued_bytes: Option<usize>,
    /// The broker-wide memory budget, shared by every shard (`memory.rs`).
    pub memory: Arc<MemoryBudget>,
    /// Sessions behind and publishers held, shared by every shard (`flow_control.rs`).
    pub flow: Arc<FlowGate>,
    /// How long a session may stay behind (holding publishers back) before it is marked stalled.
    pub stall_after: std::time::Duration,
    /// How long a deleted retained topic is remembered (`retained.rs`).
    pub retained_tombstone_ttl: std::time::Duration,
    /// Granted QoS is capped at this.
    pub max_qos: QoS,
    /// The Receive Maximum announced to MQTT 5 clients: QoS 1/2 PUBLISHes one may have
    /// unacknowledged toward the broker (`mqtt5.rs`); 65,535 is the protocol's and not announced.
    pub receive_maximum: u16,
    /// Longest keep-alive a client may ask for, in seconds (`None`: no limit): an MQTT 5 client
    /// asking for more, or for none, is told this one (Server Keep Alive); an MQTT 3 one is
    /// refused (`handlers/connect.rs`).
    pub max_keepalive: Option<u16>,
    pub allow_anonymous: bool,
    /// Bytes waiting in one connection's outbox beyond which new QoS 0 messages are dropped
    /// (a subscriber that stops reading must not grow the broker without bound).
    pub outbox_limit: usize,
    /// Topic checks (PUBLISH, SUBSCRIBE) and event hooks; empty by default (no cost).
    pub plugins: CorePlugins,
    /// Largest packet a client may send (fixed header included); a bigger one is a protocol error.
    pub max_packet_size: usize,
    /// Log every packet and every refusal at INFO (`packet_log.rs`); off, one branch per packet.
    pub log_packets: bool,
    /// `hide_denial_reason`: an MQTT 5 SUBACK answers a filter the topic checks refuse with
    /// 0x80 (unspecified error) and no Reason String, as MQTT 3.1.1 does, instead of 0x87 (not
    /// authorized) with one.
    pub hide_denial_reason: bool,
    /// Journal the durable state (`journal.rs`); replies that promise durability wait for it.
    pub persistence: bool,
    /// How long a persistent session outlives its client (`expiry.rs`); `None`: for ever.
    pub session_expiry_interval: Option<std::time::Duration>,
    /// Which member of a share group gets a message (`shared.rs`).
    pub shared_strategy: SharedStrategy,
    /// A cluster link (`src/cluster`) takes part in the bus after the shards, at index `shards`:
    /// it gets this node's interest and retained updates and the publishes other nodes want.
    pub cluster_link: bool,
    /// Makes this node's retained versions unique in the cluster: added to the shard number in
    /// a [`super::RetainVersion`] (0 without a cluster).
    pub retain_version_base: u32,
    /// How long an MQTT 5 enhanced authentication exchange may take from its CONNECT to its end
    /// (`connect_timeout`, as for the CONNECT itself).
    pub connect_timeout: std::time::Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            max_inflight: 20,
            max_queued_messages: 1000,
            max_qos: QoS::ExactlyOnce,
            receive_maximum: u16::MAX,
            max_keepalive: None,
            allow_anonymous: true,
            outbox_limit: 4 << 20,
            max_queued_bytes: None,
            memory: MemoryBudget::unlimited(),
            flow: FlowGate::new(),
            stall_after: flow_control::STALL_AFTER,
            retained_tombstone_ttl: retained::TOMBSTONE_TTL,
            plugins: CorePlugins::default(),
            max_packet_size: PROTOCOL_MAX_PACKET_SIZE,
            log_packets: false,
            hide_denial_reason: false,
            persistence: false,
            session_expiry_interval: None,
            shared_strategy: SharedStrategy::RoundRobin,
            cluster_link: false,
            retain_version_base: 0,
            connect_timeout: std::time::Duration::from_secs(10),
        }
    }
}

/// What one shard tells another.
#[derive(Debug, Clone)]
pub enum BusMessage {
    /// A publish for the receiving shard's subscribers (and its retained copy when `retain`): the
    /// control shard's `$SYS` messages.
    Publish(Message),
    /// Client publishes (not retained) for the receiving shard's subscribers, all those this shard
    /// routed there since its last `poll_actions`, in order. Numbered (with persistence on, when
    /// it holds QoS 1/2 publishes) so that the receiver can confirm it durable (`journal.rs`).
    Publishes(PublishBatch, Option<DeliveryStamp>),
    /// A retained message another node holds, loaded from the cluster's store when this node
    /// starts or comes back: stored (when newer), not delivered (`src/cluster`).
    RetainedLoad {
        message: Message,
        version: RetainVersion,
    },
    /// Shard `from` now has (or no longer has) subscribers for `filter`. With a token, the receiver
    /// answers [`BusMessage::InterestAck`] once the change is in effect.
    Interest {
        from: usize,
        filter: TopicFilter,
        added: bool,
        token: Option<u64>,
    },
    /// Confirms an `Interest` change carrying this token.
    InterestAck { token: u64 },
    /// A retained publish for every other shard: their retained copies and their subscribers.
    /// The version orders concurrent updates of one topic (see `retained.rs`).
    Retained {
        message: Message,
        version: RetainVersion,
        stamp: Option<DeliveryStamp>,
    },
    /// Shard `from` has made durable its records for our numbered deliveries up to `upto`
    /// (persistence on; see `journal.rs`).
    Durable { from: usize, upto: u64 },
    /// Shard `from` now has this many members of a share group, online and offline (absolute
    /// counts: the latest wins); from the cluster link, the other nodes' members together. With a
    /// token, the receiver answers [`BusMessage::SharedAck`].
    ShareMembers {
        from: usize,
        group: Arc<ShareGroup>,
        online: u32,
        offline: u32,
        token: Option<u64>,
    },
    /// Confirms a `ShareMembers` carrying this token.
    SharedAck { token: u64 },
    /// A message for one member of a share group on the receiving shard, chosen by the shard it
    /// entered on (`shared.rs`); `hops` counts how often it was passed on for want of a member.
    /// To the cluster link: for one member on another node. From it (`local_only`): it came from
    /// another node, and only this node's members may get it.
    SharedPublish {
        group: Arc<ShareGroup>,
        message: Message,
        hash: Option<u64>,
        hops: u8,
        stamp: Option<DeliveryStamp>,
        local_only: bool,
    },
    /// A connection on shard `from` asks the cluster link for its client id (before its
    /// CONNACK; the runtime sends it, the core never does). Answered with `SessionClaimed`.
    SessionClaim {
        from: usize,
        token: u64,
        client_id: Arc<str>,
        /// The CONNECT starts a new session (Clean Session / Clean Start): the entry keeps no
        /// profile of the old one.
        clean: bool,
    },
    /// The link's answer to a `SessionClaim` (for the runtime of the shard that asked).
    SessionClaimed { token: u64, claim: Claim },
    /// The cluster gave this client id to another node: its connection here is taken over and
    /// its session leaves this node (`cluster_session.rs`). Answered with `SessionReleased`.
    SessionRelease { token: u64, client_id: Arc<str> },
    /// A released (or copied) session's records (a persistent session; `None`: nothing to hand
    /// over).
    SessionReleased { token: u64, session: Option<Bytes> },
    /// A shard's persistent sessions at start (recovered), for the link to check against the
    /// session directory (another node may have taken them while this one was down).
    SessionsHeld { client_ids: Vec<Arc<str>> },
    /// A persistent session's profile changed (`BrokerCore::session_profile`), or the session
    /// ended or is clean (`None`): the link keeps it in the client id's directory entry.
    SessionProfile {
        client_id: Arc<str>,
        profile: Option<Bytes>,
    },
    /// The link asks for a copy of an offline session's records (it stays here); answered with
    /// `SessionReleased`.
    SessionCopy { token: u64, client_id: Arc<str> },
    /// Messages another node held for a session this node owns now (its records): appended to
    /// the session's queue. Answered with `SessionLateTaken`.
    SessionLate {
        token: u64,
        client_id: Arc<str>,
        records: Bytes,
    },
    /// The messages of `SessionLate` `token` are taken in.
    SessionLateTaken { token: u64 },
}

/// What the cluster answered a client id's claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This node owns the client id now; with the session another node handed over (its
    /// records, `BrokerCore::adopt_session`).
    Owned(Option<Bytes>),
    /// The session directory cannot be reached: no new persistent session may start here.
    Unavailable,
}

impl BusMessage {
    /// How many QoS 0 publishes it carries when it carries nothing else: such a message is
    /// dropped (and counted) rather than retried when its lane is full; 0 for any other.
    pub fn droppable_publishes(&self) -> u64 {
        match self {
            BusMessage::Publish(m) | BusMessage::SharedPublish { message: m, .. }
                if m.qos == QoS::AtMostOnce =>
            {
                1
            }
            BusMessage::Publishes(batch, _) if batch.qos0_only() => batch.len() as u64,
            _ => 0,
        }
    }

    /// Which lane of the bus carries it: publishes on data, everything else on control.
    pub fn lane(&self) -> Lane {
        match self {
            BusMessage::Publish(_)
            | BusMessage::Publishes(..)
            | BusMessage::Retained { .. }
            | BusMessage::SharedPublish { .. } => Lane::Data,
            _ => Lane::Control,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    Data,
    Control,
}

/// Work for the runtime, in the order it was produced.
#[derive(Debug)]
pub enum Action {
    /// The connection's outbox has bytes (or it is closing): take them with [`BrokerCore::take_outbox`](super::BrokerCore::take_outbox).
    Flush(ConnId),
    /// Send to another shard.
    Bus { to: usize, message: BusMessage },
    /// No session is behind any more (`flow_control.rs`): publishers held on any shard may go on.
    ResumePublishers,
}

/// The shard a client id's session lives on: FNV-1a, stable across runs and builds.
pub fn home_shard(client_id: &str, shards: usize) -> usize {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in client_id.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % shards.max(1) as u64) as usize
}

/// Sums over one shard's sessions, from [`BrokerCore::session_gauges`](super::BrokerCore::session_gauges).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionGauges {
    pub sessions: usize,
    /// Sessions with a connected client.
    pub online: usize,
    pub subscriptions: usize,
    /// Outgoing QoS 1/2 messages awaiting their acknowledgement.
    pub inflight: usize,
    /// Incoming QoS 2 messages awaiting the client's PUBREL.
    pub inflight_in: usize,
    pub queued: usize,
    /// What `memory_limit` counts, held by this shard: payload bytes in session queues, bytes in
    /// outboxes, and (shard 0 only: every shard shares the payloads) the retained store's payloads.
    /// Summed here once a second, so that a broker without a limit, which counts nothing per
    /// message (`memory.rs`), still reports it.
    pub memory_bytes: usize,
}

/// How CONNECT was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectOutcome {
    pub code: ConnectReturnCode,
    pub session_present: bool,
    /// Not answered yet: an MQTT 5 enhanced authentication exchange is under way (AUTH 0x18
    /// Continue authentication written). Serve the connection: its AUTH packets go to
    /// `handle_bytes`, which writes the CONNACK when the exchange ends (`handlers/auth.rs`).
    pub authenticating: bool,
}

impl ConnectOutcome {
    /// The client is in (CONNACK 0x00).
    pub fn is_accepted(&self) -> bool {
        self.code == ConnectReturnCode::Accepted && !self.authenticating
    }
}
