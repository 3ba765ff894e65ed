//! What a shard tells the host program about its state: its sessions ([`SessionInfo`], a page at
//! a time so that a shard with many sessions is never held up for long) and the retained topics
//! of its copy of the store ([`RetainedInfo`]). Owned plain structs, copied out of the core.
//!
//! Read-only: nothing here changes the core, and nothing here knows how the request arrived
//! (`server/embed.rs` asks every shard and gathers the pages; `tests/listing.rs` tests it).

use std::net::SocketAddr;

use crate::protocol::{ProtocolLevel, QoS, TopicName};

use super::{BrokerCore, ConnId};

/// One session, as [`crate::BrokerHandle::sessions`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// Its client id (the broker's generated one for a client that sent none).
    pub client_id: String,
    /// The user name of its client's CONNECT (`None`: anonymous, or recovered from the journal
    /// before its client came back).
    pub username: Option<String>,
    /// Whether a client is connected to it now.
    pub connected: bool,
    /// Whether its client connected with `clean_session` (such a session ends with its connection).
    pub clean_session: bool,
    /// Its subscriptions with their granted QoS, in filter order.
    pub subscriptions: Vec<(String, QoS)>,
    /// Messages waiting to be sent to it (retained copies after a SUBACK included).
    pub queued: usize,
    /// Messages sent to it at QoS 1/2 and not yet acknowledged.
    pub inflight: usize,
    /// The shard that owns it.
    pub shard: usize,
    /// Its connected client's protocol level (`None`: not connected).
    pub protocol: Option<ProtocolLevel>,
    /// Its connected client's address (a PROXY header's, behind a proxy), when the runtime knows it.
    pub address: Option<SocketAddr>,
    /// The listener its client connected to, when connected.
    pub listener: Option<String>,
}

/// Where a connection came from, as the runtime knows it (the core does not): what
/// [`BrokerCore::list_sessions_with`] asks for each connected session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnPeer {
    pub address: Option<SocketAddr>,
    pub listener: String,
}

/// One retained topic, as [`crate::BrokerHandle::retained_topics`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetainedInfo {
    /// The topic name (`as_str()` for the text).
    pub topic: TopicName,
    /// The QoS it was published with (a subscriber gets the lower of it and its own).
    pub qos: QoS,
    /// Payload bytes.
    pub size: usize,
}

impl RetainedInfo {
    /// Puts a listing in topic order.
    pub fn sort(listing: &mut [RetainedInfo]) {
        listing.sort_by(|a, b| a.topic.as_str().cmp(b.topic.as_str()));
    }
}

/// One page of a shard's sessions, from [`BrokerCore::list_sessions`].
#[derive(Debug, Default)]
pub struct SessionPage {
    pub sessions: Vec<SessionInfo>,
    /// Where the next page starts; `None` when this one reached the end of the table.
    pub next: Option<usize>,
}

impl BrokerCore {
    /// The sessions in up to `slots` slots of the session table from slot `from` on: a page's
    /// cost is bounded by `slots`, whatever the number of sessions. Pages taken one after the
    /// other are not one snapshot: a session made or removed in between may be missed.
    pub fn list_sessions(&self, from: usize, slots: usize) -> SessionPage {
        self.list_sessions_with(from, slots, |_| None)
    }

    /// [`list_sessions`](Self::list_sessions), each connected session's address and listener
    /// given by `peer` (the runtime's record of the connection).
    pub fn list_sessions_with(
        &self,
        from: usize,
        slots: usize,
        peer: impl Fn(ConnId) -> Option<ConnPeer>,
    ) -> SessionPage {
        let end = from.saturating_add(slots.max(1));
        let last = self.sessions.capacity();
        let sessions = (from..end.min(last))
            .filter_map(|key| self.sessions.get(key))
            .map(|session| {
                let connection = session.conn.and_then(|conn| self.connections.get(&conn));
                let peer = session.conn.and_then(&peer);
                SessionInfo {
                    client_id: session.client_id.to_string(),
                    username: session.username.as_deref().map(str::to_string),
                    connected: session.conn.is_some(),
                    clean_session: session.clean,
                    subscriptions: session
                        .subscriptions
                        .iter()
                        .map(|(filter, options)| (filter.as_str().to_string(), options.qos))
                        .collect(),
                    queued: session.queued_len(),
                    inflight: session.inflight_len(),
                    shard: self.shard,
                    protocol: connection.map(|connection| connection.protocol),
                    address: peer.as_ref().and_then(|peer| peer.address),
                    listener: peer.map(|peer| peer.listener),
                }
            })
            .collect();
        SessionPage {
            sessions,
            next: (end < last).then_some(end),
        }
    }

    /// Every retained topic of this shard's copy of the store (every shard holds them all), in
    /// no order: one pass, the topic shared (a reference count), not copied; sorting is the
    /// caller's job, off the shard ([`RetainedInfo::sort`]).
    pub fn list_retained(&self) -> Vec<RetainedInfo> {
        self.retained
            .entries()
            .filter_map(|(topic, message, _)| {
                message.map(|message| RetainedInfo {
                    topic: topic.clone(),
                    qos: message.qos,
                    size: message.payload.len(),
                })
            })
            .collect()
    }
}
