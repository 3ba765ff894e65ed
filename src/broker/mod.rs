//! The sans-IO broker of one shard: events in, bytes and bus messages out.
//!
//! A [`BrokerCore`] owns the connections accepted on (or handed to) its shard, the sessions whose client
//! id hashes to it ([`home_shard`]), the subscription trie of those sessions, a copy of the retained
//! store and the table of which filters other shards are interested in. Its verbs, in order of use:
//! - `handle_first_bytes` then `handle_connect`: a new connection's first packet (`handlers/connect.rs`);
//! - `handle_bytes`, `handle_closed`, `handle_protocol_error`: from a served connection
//!   (`handle_bytes` is the one door for its packets: `handlers/mod.rs`);
//! - `handle_bus`: a message from another shard (`bus_inbox.rs`);
//! - `handle_tick`: time passes (keep-alive, session expiry);
//! - `poll_actions` and `take_outbox`: what the runtime must do now.
//! - `list_sessions`, `list_retained`: what the host program asks to see (`listing.rs`).
//!
//! It never reads a clock (time is passed in as `now`), never touches a socket, never spawns, and
//! never reaches into another shard: everything that crosses shards leaves as an [`Action::Bus`].
//! Authentication, which may take milliseconds, is decided before `handle_connect` by the runtime
//! (on the credentials the core hands it) and arrives as an [`AuthVerdict`]; the cheap topic-check
//! and event plugins are called from here, through [`Settings::plugins`].
//! Bytes become packets in `handlers/mod.rs`, and each packet type is handled in its own file in
//! `handlers/` (CONNECT and the first-packet verdict in `handlers/connect.rs`); where a publish goes
//! from there (subscribers on this shard, batches for the others) is in `routing.rs` (matching a
//! topic against the subscriptions in `matching.rs`; the limits a copy meets in
//! `delivery_limits.rs`; what an MQTT 5 copy carries, expiry and subscription identifiers, in
//! `copy_props.rs`); writing
//! packets into a connection's outbox and handing it to the runtime in `outbox.rs`; how the other
//! shards learn this shard's filters, and the SUBACKs that wait for them, in `interest.rs` (the
//! filters themselves are kept in a `topic_trie.rs`); shared subscriptions' groups, which member
//! of each gets a message and the hand-off of a leaving member's messages, in `shared.rs`; when
//! publishers are held back because a
//! subscriber is behind, in `flow_control.rs`; the types the runtime and the core exchange
//! (settings, bus messages, actions) in `interface.rs`.

// Public for the runtime (`server`), the tests and the bench, not an API for embedders (they
// use `Broker`): its items are documented where they need it, not each field and variant.
#![allow(missing_docs)]

mod admin_verbs;
pub mod bus_batch;
mod bus_inbox;
mod cluster_session;
pub mod connection;
pub mod copy_props;
mod credentials_expiry;
mod delivery_limits;
mod expiry;
pub mod flow_control;
mod gauges;
mod handlers;
mod interest;
mod interface;
mod journal;
mod listing;
mod matching;
pub mod memory;
pub mod mqtt5;
mod outbox;
pub mod outbox_pool;
mod packet_log;
mod recovery;
mod reload;
pub mod retained;
mod routing;
mod routing_shards;
pub mod session;
mod session_turns;
mod shared;
pub mod stats;
mod topic_alias_out;
pub mod topic_trie;
mod wall_clock;
mod will_delay;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use slab::Slab;

use crate::protocol::{self, Connect, TopicFilter};

pub use crate::plugins::AuthVerdict;

pub use bus_batch::{BatchedPublish, PublishBatch};
pub use cluster_session::{AdoptError, MAX_PROFILE_BYTES};
pub use handlers::{FirstPacket, Handled, ListenerIdentity, Next, PendingConnect};
pub use interface::{
    home_shard, Action, BusMessage, Claim, ConnectOutcome, Lane, Message, SessionGauges, Settings,
};
pub use journal::{DeliveryStamp, DurableWait};
pub use listing::{ConnPeer, RetainedInfo, SessionInfo, SessionPage};
pub use reload::CoreReload;

pub use crate::protocol::SubOptions;
pub use connection::CloseReason;
use connection::Connection;
use expiry::ExpiryIndex;
use flow_control::BehindSessions;
pub use flow_control::{FlowGate, HeldPublisher};
use journal::Journal;
use matching::LastTopic;
pub use memory::{MemoryBudget, Pressure};
use outbox::PublishesWritten;
use outbox_pool::OutboxPool;
pub use retained::RetainVersion;
use retained::RetainedStore;
use session::{QueueLimits, Session};
use shared::SharedGroups;
pub use shared::{share_of, Chooser, InvalidShare, Pick, ShareGroup, SharedStrategy};
pub use stats::Stats;
use topic_trie::TopicTrie;

/// Bytes already waiting for a subscriber beyond which, under memory pressure, new QoS 0 messages
/// for it are dropped (see `memory.rs`).
const QOS0_BEHIND: usize = 16 << 10;
/// Bytes of publishes for one other shard beyond which the batch is sent at once instead of at
/// the next `poll_actions`.
const BUS_BATCH_LIMIT: usize = 64 << 10;
/// Room in a connection's outbox that queued QoS 0 messages (retained ones after a SUBACK) may
/// fill in one go; the rest follows each time the runtime takes the outbox.
const RETAINED_CHUNK: usize = 64 << 10;

/// Identifies a connection within one shard (assigned by the runtime).
pub type ConnId = u64;
/// Index of a session in its shard's session table.
pub type SessionKey = usize;

/// Filters announced to the other shards under one token, and how many confirmations are missing.
#[derive(Debug, Default)]
struct Announcement {
    filters: Vec<TopicFilter>,
    remaining: usize,
}

#[derive(Debug, Clone, Copy)]
struct Subscriber {
    session: SessionKey,
    options: SubOptions,
}

/// One shard's broker state machine (see the module docs).
pub struct BrokerCore {
    settings: Settings,
    shard: usize,
    shards: usize,
    /// The cluster link's bus index (`shards`), when there is one (`Settings::cluster_link`).
    link: Option<usize>,
    /// foldhash, not SipHash: looked up several times per delivery (ids are ours, not a client's).
    connections: HashMap<ConnId, Connection, foldhash::fast::FixedState>,
    sessions: Slab<Session>,
    session_by_client_id: HashMap<Arc<str>, SessionKey>,
    /// Offline sessions that expire, by deadline (`expiry.rs`).
    expiring: ExpiryIndex,
    /// Connections allowed until a moment (`credentials_expiry.rs`).
    credential_deadlines: credentials_expiry::CredentialDeadlines,
    subscriptions: TopicTrie<Vec<Subscriber>>,
    /// Per other shard: the filters its sessions subscribe to (value unused: presence).
    remote_interest: Vec<TopicTrie<()>>,
    /// Share groups (`$share/...`): their members here, and how many each other shard has.
    shared: SharedGroups,
    retained: RetainedStore,
    /// The latest time an event brought (bus messages bring none); stamps retained deletions.
    clock: Option<Instant>,
    /// Pending SUBACK tokens → connection.
    pending_tokens: HashMap<u64, ConnId>,
    /// Announcements of this shard's filters that some other shard has not confirmed yet, by token.
    announcements: HashMap<u64, Announcement>,
    /// Per filter: how many of `announcements` carry it. A SUBSCRIBE to a filter listed here must
    /// wait too, although the filter is not new on this shard (see `handlers/subscribe.rs`).
    announcing: HashMap<TopicFilter, usize>,
    next_token: u64,
    generated_ids: u64,
    id_seed: u64,
    actions: Vec<Action>,
    /// What every session's queue is limited to (from `settings`), shared by the sessions.
    queue_limits: Arc<QueueLimits>,
    /// This shard's online sessions whose queue is over the high-water mark (`flow_control.rs`).
    behind: BehindSessions,
    /// The sessions the last routed topic matched (deduplicated, highest QoS each): the trie walk
    /// was ~8 % of the broker's CPU at saturation (`perf`, pairs -n 8 QoS 0). Forgotten whenever
    /// the trie changes.
    last_match: LastTopic<(SessionKey, matching::Found)>,
    /// The other shards with a subscriber for the last routed topic (one trie walk per other
    /// shard otherwise). Forgotten whenever another shard's interest changes.
    last_remote: LastTopic<usize>,
    /// Per shard (this one's stays empty): publishes routed there since the last `poll_actions`.
    outgoing: Vec<PublishBatch>,
    /// The QoS 0 PUBLISH of the message being delivered, encoded once for all its subscribers.
    qos0_packet: BytesMut,
    /// The same for MQTT 5 subscribers (with the message's properties).
    qos0_packet_v5: BytesMut,
    /// The topic name a Topic Alias stands for, copied out of the connection's alias table for a
    /// PUBLISH routed in place (`handlers/publish.rs`); kept to reuse its allocation.
    alias_topic: Vec<u8>,
    /// Spare outbox buffers: idle connections give theirs back, busy ones take them.
    outbox_pool: OutboxPool,
    pub stats: Stats,
    /// Persistence: records owed to the disk and replies waiting for them; `None` when off.
    journal: Option<Box<Journal>>,
    /// Recovered sessions whose will is due (`recovery.rs`).
    recovered_wills: Vec<SessionKey>,
    /// MQTT 5 wills waiting for their Will Delay Interval (`will_delay.rs`).
    delayed_wills: will_delay::DelayedWills,
    /// PUBLISHes `handlers/publish.rs` routed from the read buffer (tests check both ways are taken).
    #[cfg(test)]
    routed_in_place: u64,
}

impl BrokerCore {
    /// `id_seed` makes generated client ids unique across broker runs.
    pub fn new(settings: Settings, shard: usize, shards: usize, id_seed: u64) -> Self {
        let queue_limits = Arc::new(QueueLimits {
            max_messages: settings.max_queued_messages,
            max_bytes: settings.max_queued_bytes,
            budget: settings.memory.clone(),
        });
        let shared = SharedGroups::new(settings.shared_strategy, id_seed ^ shard as u64);
        let shards = shards.max(1);
        let link = settings.cluster_link.then_some(shards);
        // The bus's participants: the shards, then the cluster link.
        let participants = shards + usize::from(link.is_some());
        let journal = settings
            .persistence
            .then(|| Box::new(Journal::new(participants)));
        BrokerCore {
            journal,
            recovered_wills: Vec::new(),
            delayed_wills: Default::default(),
            settings,
            shard,
            shards,
            link,
            connections: HashMap::default(),
            sessions: Slab::new(),
            session_by_client_id: HashMap::new(),
            expiring: ExpiryIndex::default(),
            credential_deadlines: Default::default(),
            subscriptions: TopicTrie::new(),
            remote_interest: (0..participants).map(|_| TopicTrie::new()).collect(),
            shared,
            retained: RetainedStore::default(),
            clock: None,
            pending_tokens: HashMap::new(),
            announcements: HashMap::new(),
            announcing: HashMap::new(),
            next_token: 1,
            generated_ids: 0,
            id_seed,
            actions: Vec::new(),
            queue_limits,
            behind: BehindSessions::default(),
            last_match: LastTopic::default(),
            last_remote: LastTopic::default(),
            outgoing: (0..participants).map(|_| PublishBatch::default()).collect(),
            qos0_packet: BytesMut::new(),
            qos0_packet_v5: BytesMut::new(),
            alias_topic: Vec::new(),
            outbox_pool: OutboxPool::default(),
            stats: Stats::default(),
            #[cfg(test)]
            routed_in_place: 0,
        }
    }

    pub fn shard(&self) -> usize {
        self.shard
    }

    pub fn shards(&self) -> usize {
        self.shards
    }

    /// The other participants of the bus that learn this shard's interest and retained updates:
    /// the other shards, then the cluster link.
    fn peers(&self) -> impl Iterator<Item = usize> + use<> {
        let me = self.shard;
        (0..self.shards).filter(move |&s| s != me).chain(self.link)
    }

    /// This shard's number in the retained versions it makes (unique in the cluster).
    fn retain_version_shard(&self) -> usize {
        self.settings.retain_version_base as usize + self.shard
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    // ---- getters (the counts the runtime publishes are in `gauges.rs`) ------------------------

    /// The client id of a connection whose CONNECT was accepted (for logs).
    pub fn client_id_of(&self, conn: ConnId) -> Option<Arc<str>> {
        let connection = self.connections.get(&conn)?;
        self.sessions
            .get(connection.session)
            .map(|s| s.client_id.clone())
    }

    /// Why the broker decided to close a connection, if it did (for logs); `None` while it is open
    /// or when it was forgotten.
    pub fn close_reason(&self, conn: ConnId) -> Option<CloseReason> {
        self.connections.get(&conn).and_then(|c| c.close_reason)
    }

    /// The shard that must own a client's session: generated ids stay where they were made.
    fn home_for(&self, connect: &Connect) -> usize {
        if connect.client_id.is_empty() {
            self.shard
        } else {
            home_shard(&connect.client_id, self.shards)
        }
    }

    // ---- handle_* --------------------------------------------------------------------------------

    /// Whether a client may publish to `topic`: not into the broker's own `$SYS` tree (such a
    /// PUBLISH is acknowledged but not delivered).
    fn client_may_publish_to(topic: &[u8]) -> bool {
        !topic.starts_with(b"$SYS")
    }

    /// Whether plugins see client PUBLISHes (topic checks or event hooks).
    fn plugins_see_publishes(&self) -> bool {
        let plugins = &self.settings.plugins;
        plugins.checks_topics() || plugins.has_events()
    }

    /// The peer broke the protocol (bytes that do not decode: `handle_bytes` calls this; or its
    /// transport's framing, which the runtime reports): the connection is closed and its will
    /// published [MQTT-4.8.0-1].
    pub fn handle_protocol_error(&mut self, conn: ConnId) {
        self.protocol_error_v5(conn, protocol::ReasonCode::MALFORMED_PACKET);
    }

    /// A protocol error, counted; an MQTT 5 client is told `code` (0x81 Malformed Packet, 0x82
    /// Protocol Error, ...) in a DISCONNECT first [MQTT-4.13.1].
    fn protocol_error_v5(&mut self, conn: ConnId, code: protocol::ReasonCode) {
        let Some(connection) = self.connections.get(&conn) else {
            return;
        };
        if connection.is_authenticating() {
            // Before its CONNACK: refused with `code` in one (`handlers/auth.rs`).
            return handlers::refuse_authenticating(self, conn, code);
        }
        if !connection.is_active() {
            // Closing already: counted and answered then.
            return;
        }
        self.stats.protocol_errors += 1;
        if connection.v5.is_some() {
            self.write_v5(conn, &mqtt5::disconnect(code));
        }
        self.close(conn, CloseReason::ProtocolError);
    }

    /// The transport ended (EOF, error, or after a `Closing` flush). Forgets the connection.
    pub fn handle_closed(&mut self, conn: ConnId) {
        self.close(conn, CloseReason::ConnectionLost);
        self.credential_deadlines.forget(conn);
        if let Some(connection) = self.connections.remove(&conn) {
            self.settings.memory.sub(connection.outbox.len());
            self.outbox_pool.give(connection.outbox);
        }
    }

    /// Time passes: close connections whose keep-alive expired (not those whose PUBLISH the broker
    /// itself holds back: they are not idle) or whose credentials did (`credentials_expiry.rs`);
    /// discard sessions whose client stayed away longer
    /// than their expiry interval (`expiry.rs`); sessions behind for too long are marked stalled
    /// (`flow_control.rs`); sessions whose messages have all been settled give their flow state
    /// back (`Session::release_empty_flow`).
    pub fn handle_tick(&mut self, now: Instant) {
        self.clock = Some(now);
        self.expire_sessions(now);
        self.publish_due_wills(now);
        self.close_expired_credentials(now);
        self.stall_slow_subscribers(now);
        for (_, session) in self.sessions.iter_mut() {
            session.release_empty_flow();
        }
        let ttl = self.settings.retained_tombstone_ttl;
        self.retained.drop_old_tombstones(now, ttl);
        self.drop_expired_retained(now);
        let expired: Vec<ConnId> = self
            .connections
            .iter()
            .filter(|(_, c)| c.is_active() && !c.publish_paused && c.keep_alive_expired(now))
            .map(|(id, _)| *id)
            .collect();
        for conn in expired {
            self.stats.keep_alive_timeouts += 1;
            self.close(conn, CloseReason::KeepAliveTimeout);
        }
        // An enhanced authentication exchange must end within `connect_timeout` of its CONNECT
        // (its `last_activity`, which AUTH packets do not move).
        let limit = self.settings.connect_timeout;
        let stuck: Vec<ConnId> = self
            .connections
            .iter()
            .filter(|(_, c)| {
                c.is_authenticating() && now.saturating_duration_since(c.last_activity) > limit
            })
            .map(|(id, _)| *id)
            .collect();
        for conn in stuck {
            log::debug!("connection {conn}: enhanced authentication not done within {limit:?}");
            self.stats.keep_alive_timeouts += 1;
            self.close(conn, CloseReason::KeepAliveTimeout);
        }
    }

    /// Closes every connection without publishing wills (broker shutdown).
    pub fn shutdown(&mut self) {
        let all: Vec<ConnId> = self.connections.keys().copied().collect();
        for conn in all {
            self.close(conn, CloseReason::ServerShutdown);
        }
    }

    // ---- poll_* ----------------------------------------------------------------------------------

    /// Moves the pending actions into `out` (cleared first), the batches of publishes for other
    /// shards last.
    pub fn poll_actions(&mut self, out: &mut Vec<Action>) {
        self.send_durable_confirmations();
        self.announce_shared(None);
        for to in 0..self.outgoing.len() {
            self.send_batch(to);
        }
        out.clear();
        std::mem::swap(&mut self.actions, out);
    }

    /// The queue limits of a new session.
    fn queue_limits(&self) -> Arc<QueueLimits> {
        self.queue_limits.clone()
    }

    // ---- internals shared by the handlers ----------------------------------------------------------

    /// Queues a bus message for shard `to`, after the publishes batched for it so far (so that a
    /// shard's messages to another keep their order).
    fn send_bus(&mut self, to: usize, message: BusMessage) {
        self.send_batch(to);
        self.stats.bus_sent += 1;
        self.actions.push(Action::Bus { to, message });
    }

    /// Session of an active connection.
    fn session_of(&self, conn: ConnId) -> Option<SessionKey> {
        self.connections
            .get(&conn)
            .filter(|c| c.is_active())
            .map(|c| c.session)
    }
}

#[cfg(test)]
mod simulation;
#[cfg(test)]
mod tests;
