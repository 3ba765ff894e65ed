//! A client connection as the broker core sees it: its session, keep-alive clock, and outbox.
//!
//! Bytes for the client are encoded into `outbox`; the runtime takes them out and writes them to the
//! socket in one go per loop turn, which is how writes get batched. This module does no I/O.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::BytesMut;

use crate::protocol::{ProtocolLevel, QoS, TopicFilter};

use super::mqtt5::{Reply, V5Link};
use super::outbox_pool::OutboxPool;
use super::SessionKey;

/// Lifecycle of a connection once its CONNECT has been handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionState {
    /// CONNECT read, CONNACK not sent: an MQTT 5 enhanced authentication exchange is under way
    /// (`handlers/auth.rs`); only AUTH and DISCONNECT are read. No session yet.
    Authenticating,
    /// CONNACK 0x00 sent; packets are processed.
    Active,
    /// The broker has decided to close it (refused CONNECT, DISCONNECT, error, takeover, keep-alive):
    /// the outbox is flushed, then the socket is closed; further input is ignored.
    Closing,
}

/// Why a connection ended; decides whether the will is published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client sent DISCONNECT: the will is discarded [MQTT-3.14.4-3].
    ClientDisconnect,
    /// An MQTT 5 client sent DISCONNECT with reason code 0x04: the will is published
    /// [MQTT-3.14.2.1].
    DisconnectWithWill,
    /// The socket closed or failed without DISCONNECT.
    ConnectionLost,
    /// A malformed or out-of-order packet [MQTT-4.8.0-1].
    ProtocolError,
    /// No packet within 1.5 × keep-alive [MQTT-3.1.2-24].
    KeepAliveTimeout,
    /// Another connection with the same client id took the session over [MQTT-3.1.4-2].
    TakenOver,
    /// The broker is shutting down.
    ServerShutdown,
    /// The credentials it connected with expired (a token's `exp`): treated as a lost connection.
    CredentialsExpired,
    /// An administrator disconnected it (the admin API): treated as a lost connection.
    Kicked,
    /// A re-authentication failed (DISCONNECT 0x86/0x87 sent, `handlers/auth.rs`): treated as a
    /// lost connection.
    AuthenticationFailed,
}

impl CloseReason {
    /// Whether the will message is published when a connection ends this way [MQTT-3.1.2-8].
    pub fn publishes_will(self) -> bool {
        !matches!(
            self,
            CloseReason::ClientDisconnect | CloseReason::ServerShutdown
        )
    }
}

/// A SUBACK (or a reply queued behind one) waiting for other shards to confirm a new filter, so that
/// a message published anywhere after the client sees its SUBACK is delivered.
#[derive(Debug)]
pub struct PendingReply {
    pub token: Option<u64>,
    /// Shards that have not confirmed yet.
    pub remaining: usize,
    pub reply: Reply,
    /// Filters whose retained messages are sent after the reply.
    pub retained_for: Vec<(TopicFilter, QoS)>,
    /// With persistence on: the journal records (local and on other shards) that must be durable
    /// before the reply is written (`journal.rs`).
    pub wait: Option<super::DurableWait>,
}

/// A reply queue kept allocated when it empties, up to this many entries of capacity (a
/// publisher's window of acknowledgements).
pub const KEPT_REPLY_QUEUE: usize = 64;

impl PendingReply {
    /// A reply that waits for nothing but the replies queued before it.
    pub fn plain(reply: impl Into<Reply>) -> Self {
        PendingReply {
            token: None,
            remaining: 0,
            reply: reply.into(),
            retained_for: Vec::new(),
            wait: None,
        }
    }
}

#[derive(Debug)]
pub struct Connection {
    pub session: SessionKey,
    pub protocol: ProtocolLevel,
    pub state: ConnectionState,
    /// The CONNECT's keep-alive in seconds; 0 is off.
    keep_alive: u16,
    pub last_activity: Instant,
    pub outbox: BytesMut,
    /// A flush action has been emitted and the runtime has not taken the outbox since.
    pub flush_requested: bool,
    /// With persistence on: the outbox holds a QoS 2 PUBLISH whose packet id is journaled in this
    /// batch, and is not given to the runtime before that batch is durable (0: nothing held).
    pub hold_until: u64,
    /// The client's next PUBLISH was held back once, for memory or for a subscriber that is
    /// behind (`Next::PausePublisher`): it is handled when the runtime calls again, whatever the
    /// state then. Meanwhile the connection is not idle (keep-alive does not expire).
    pub publish_paused: bool,
    /// With persistence on: the connection is in the journal's list of reply queues waiting for a
    /// durable batch (so that it is listed once without searching the list).
    pub waits_durable: bool,
    /// Replies held back in order; `None` for a connection that never held one (the usual case: a
    /// queue inline would add 32 bytes to every connection). Once allocated it is kept while
    /// small, even when empty: with persistence on, a publisher's acknowledgements queue here every
    /// loop turn, and allocating it anew each turn cost measurable time per message.
    /// `has_pending_replies` says whether it holds any.
    pub pending_replies: Option<Box<VecDeque<PendingReply>>>,
    /// Set when the broker decides to close it (for the runtime's log line); `None` for a refused
    /// CONNECT and while open.
    pub close_reason: Option<CloseReason>,
    /// An MQTT 5 connection's state (`mqtt5.rs`); `None` for MQTT 3.
    pub v5: Option<Box<V5Link>>,
}

impl Connection {
    /// Whether replies are held back in its queue.
    pub fn has_pending_replies(&self) -> bool {
        self.pending_replies.as_ref().is_some_and(|q| !q.is_empty())
    }

    pub fn new(
        session: SessionKey,
        protocol: ProtocolLevel,
        keep_alive: u16,
        now: Instant,
    ) -> Self {
        Connection {
            session,
            protocol,
            state: ConnectionState::Active,
            keep_alive,
            last_activity: now,
            outbox: BytesMut::new(),
            flush_requested: false,
            hold_until: 0,
            publish_paused: false,
            waits_durable: false,
            pending_replies: None,
            close_reason: None,
            v5: None,
        }
    }

    /// The outbox, to append to. An idle connection keeps no buffer (see `swap_outbox`); its first
    /// write takes one from the shard's `pool`: a spare buffer that an earlier burst grew, or a
    /// new one of [`OUTBOX_START`](super::outbox_pool::OUTBOX_START) bytes, rather than growing
    /// from a few bytes by doubling (several reallocations per burst).
    pub fn outbox_to_fill(&mut self, pool: &mut OutboxPool) -> &mut BytesMut {
        if self.outbox.capacity() == 0 {
            self.outbox = pool.take();
        }
        &mut self.outbox
    }

    pub fn is_active(&self) -> bool {
        self.state == ConnectionState::Active
    }

    pub fn is_authenticating(&self) -> bool {
        self.state == ConnectionState::Authenticating
    }

    /// True once 1.5 × keep-alive has passed since the last packet.
    pub fn keep_alive_expired(&self, now: Instant) -> bool {
        let limit = Duration::from_millis(u64::from(self.keep_alive) * 1500);
        self.keep_alive > 0 && now.saturating_duration_since(self.last_activity) > limit
    }
}
