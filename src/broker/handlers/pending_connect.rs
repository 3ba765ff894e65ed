//! What a connection's first packet became while it waits for its home shard and its
//! authentication verdict: [`FirstPacket`] and [`PendingConnect`], with the accessors the runtime
//! reads (home shard, client id, credentials for the plugins). `connect.rs` makes them and answers
//! them; this file holds the data and its read-only views.
//!
//! Must not: judge a CONNECT, touch sessions or write a CONNACK (all in `connect.rs`).

use crate::plugins::Credentials;
use crate::protocol::v5::{Properties, ReasonCode};
use crate::protocol::{Connect, ConnectReturnCode};

/// What a connection's first bytes hold, so far (see the module documentation).
#[derive(Debug)]
pub enum FirstPacket {
    /// Not a whole packet yet: read more, and call again with everything read so far.
    Incomplete,
    /// Close the connection without an answer (counted; logged).
    Close,
    /// A CONNECT to answer on its home shard.
    Connect(PendingConnect),
}

/// A first packet read, waiting for its authentication verdict and
/// [`handle_connect`](crate::broker::BrokerCore::handle_connect).
#[derive(Debug)]
pub struct PendingConnect {
    pub(super) home: usize,
    /// Bytes it takes at the front of the buffer.
    pub(super) length: usize,
    pub(super) answer: Answer,
    /// The cluster's session directory could not register the client id (`cluster_session.rs`).
    pub(super) unregistered: bool,
}

#[derive(Debug)]
pub(super) enum Answer {
    /// Checked by `handle_connect`.
    Check {
        connect: Box<Connect>,
        /// The user name came from the client certificate, which authenticated the client.
        by_certificate: bool,
        /// An MQTT 5 CONNECT's properties (`connect` holds the rest, its will's properties in
        /// the will message); `None` for MQTT 3.
        v5: Option<Box<Properties>>,
    },
    /// Refused before anything else is looked at: with a CONNACK of this MQTT 3 code, or of this
    /// MQTT 5 reason code to an MQTT 5 client.
    Refuse(ConnectReturnCode, Option<ReasonCode>),
}

impl PendingConnect {
    /// The shard that must answer it: the client id's home ([`crate::broker::home_shard`]), or the
    /// shard that read it for a generated client id and for a refusal.
    pub fn home(&self) -> usize {
        self.home
    }

    /// How many bytes at the front of the buffer it took: drop them before the bytes that follow
    /// go to [`crate::broker::BrokerCore::handle_bytes`].
    pub fn byte_len(&self) -> usize {
        self.length
    }

    /// The client id it asked for (empty when it asked for a generated one, or was not decoded).
    pub fn client_id(&self) -> &str {
        match &self.answer {
            Answer::Check { connect, .. } => &connect.client_id,
            Answer::Refuse(..) => "",
        }
    }

    /// The user name it sent (or the client certificate's common name), if any: for log lines.
    pub fn username(&self) -> Option<&str> {
        match &self.answer {
            Answer::Check { connect, .. } => connect.username.as_deref(),
            Answer::Refuse(..) => None,
        }
    }

    /// The topic of its will, if it has one (a plugin that asks a service about topics fetches
    /// the answer before the core checks the will).
    pub fn will_topic(&self) -> Option<&str> {
        match &self.answer {
            Answer::Check { connect, .. } => connect.will.as_ref().map(|w| w.topic.as_str()),
            Answer::Refuse(..) => None,
        }
    }

    /// It opens an MQTT 5 enhanced authentication exchange (`auth.rs`): not authenticated yet.
    pub fn enhanced_auth(&self) -> bool {
        matches!(&self.answer, Answer::Check { v5: Some(p), .. } if p.authentication_method.is_some())
    }

    /// It asks to start afresh (MQTT 3 Clean Session 1, MQTT 5 Clean Start 1): a session another
    /// node hands over would be discarded.
    pub fn starts_clean(&self) -> bool {
        match &self.answer {
            Answer::Check { connect, .. } => connect.clean_session,
            Answer::Refuse(..) => true,
        }
    }

    /// The cluster's session directory could not register its client id (NATS away): a session
    /// this shard does not hold already must end with the connection, or the CONNECT is refused
    /// with 0x03 Server unavailable (MQTT 5: 0x88).
    pub fn set_unregistered(&mut self) {
        self.unregistered = true;
    }

    /// What the authentication plugins must judge; `None` when they are not asked (the client
    /// certificate authenticated the client, an enhanced authentication method will (`auth.rs`),
    /// or the CONNECT is refused anyway).
    pub fn credentials(&self) -> Option<Credentials> {
        match &self.answer {
            Answer::Check {
                connect,
                by_certificate: false,
                v5,
            } if v5
                .as_ref()
                .is_none_or(|p| p.authentication_method.is_none()) =>
            {
                Some(Credentials::of(connect))
            }
            _ => None,
        }
    }
}
