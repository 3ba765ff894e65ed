//! What every shard of a running broker shares, read-only: the [`SharedSettings`] built once at
//! start, and each listener's [`ListenerInfo`] (its limits and its open-connection count, the one
//! field written at run time, atomically).
//!
//! Plain data: nothing here runs, spawns or decides.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use crate::broker::Settings;
use crate::transport::server::ListenerTransport;

use super::connect_rate::ConnectRate;
use super::snapshot::SnapshotBoard;

/// A listener as the shards see it: its name, limits and the per-listener connection count.
#[derive(Debug)]
pub(crate) struct ListenerInfo {
    pub name: String,
    pub max_connections: Option<usize>,
    /// `max_connect_rate`: new connections per second, across shards.
    pub connect_rate: Option<ConnectRate>,
    /// TLS / WebSocket set-up of this listener's connections.
    pub transport: ListenerTransport,
    /// Mutual TLS: the client certificate's CN is the user name.
    pub use_identity_as_username: bool,
    /// Connections currently open through this listener, across all shards.
    pub open: AtomicUsize,
}

/// What every shard needs to know, shared read-only.
#[derive(Debug)]
pub(crate) struct SharedSettings {
    pub core: Settings,
    pub connect_timeout: Duration,
    /// Level of the connect / disconnect log lines (`connection_messages`: INFO, else DEBUG).
    pub connection_log_level: log::Level,
    pub shards: usize,
    pub listeners: Vec<Arc<ListenerInfo>>,
    pub id_seed: u64,
    /// Where each shard leaves its once-a-second snapshot for the control shard; `None` when
    /// neither `$SYS` nor metrics are on (no control shard then).
    pub snapshots: Option<SnapshotBoard>,
    /// The authentication plugins, asked before the core sees a CONNECT (`authenticate.rs`).
    pub authenticator: Arc<crate::plugins::Authenticator>,
    /// The topic plugins whose answers are fetched before the core sees a packet (`read_loop.rs`).
    pub prefetch: crate::plugins::Prefetchers,
}
