//! What every shard of a running broker shares, read-only: the [`SharedSettings`] built once at
//! start, and each listener's [`ListenerInfo`]: its open-connection count (written atomically)
//! and its [`ListenerSetup`] (limits, TLS), which a configuration reload replaces whole; and
//! [`ShardReload`], what a reload hands each shard (applied by `reload_shard.rs`).
//!
//! Plain data: nothing here runs, spawns or decides.

use std::sync::atomic::AtomicUsize;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use crate::broker::{CoreReload, Settings};
use crate::config::ListenerConfig;
use crate::plugins::{Authenticator, Prefetchers};
use crate::transport::server::ListenerTransport;
use crate::transport::tls::TlsSetupError;

use super::connect_rate::ConnectRate;
use super::snapshot::SnapshotBoard;

/// A listener as the shards see it: its name, its setup and the per-listener connection count.
#[derive(Debug)]
pub(crate) struct ListenerInfo {
    pub name: String,
    /// Replaced by a reload; read once per accepted connection (a lock and a reference count).
    setup: Mutex<Arc<ListenerSetup>>,
    /// Connections currently open through this listener, across all shards.
    pub open: AtomicUsize,
}

/// What a listener's new connections get; a reload builds a new one (certificates read again).
#[derive(Debug)]
pub(crate) struct ListenerSetup {
    pub max_connections: Option<usize>,
    /// `max_connect_rate`: new connections per second, across shards.
    pub connect_rate: Option<Arc<ConnectRate>>,
    /// TLS / WebSocket set-up of this listener's connections.
    pub transport: ListenerTransport,
    /// Mutual TLS: the client certificate's CN is the user name.
    pub use_identity_as_username: bool,
}

impl ListenerSetup {
    /// Loads `listener`'s TLS material (errors name the file); keeps `previous`'s connect-rate
    /// bucket when the rate did not change.
    pub fn new(
        listener: &ListenerConfig,
        previous: Option<&ListenerSetup>,
    ) -> Result<ListenerSetup, TlsSetupError> {
        let connect_rate = listener.max_connect_rate.map(|rate| {
            previous
                .and_then(|p| p.connect_rate.clone())
                .filter(|kept| kept.per_second() == rate.max(1))
                .unwrap_or_else(|| Arc::new(ConnectRate::new(rate, Instant::now())))
        });
        Ok(ListenerSetup {
            max_connections: listener.max_connections,
            connect_rate,
            transport: ListenerTransport::new(listener)?,
            use_identity_as_username: listener
                .tls
                .as_ref()
                .is_some_and(|t| t.use_identity_as_username),
        })
    }
}

impl ListenerInfo {
    pub fn new(name: String, setup: ListenerSetup) -> ListenerInfo {
        ListenerInfo {
            name,
            setup: Mutex::new(Arc::new(setup)),
            open: AtomicUsize::new(0),
        }
    }

    /// The setup a new connection gets.
    pub fn setup(&self) -> Arc<ListenerSetup> {
        // A poisoned lock (a panic while swapping) still holds a whole setup.
        self.setup
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// A reload's new setup, for connections accepted from now on.
    pub fn replace(&self, setup: ListenerSetup) {
        *self
            .setup
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(setup);
    }
}

/// What every shard needs to know, shared read-only.
#[derive(Debug)]
pub(crate) struct SharedSettings {
    pub core: Settings,
    pub connect_timeout: Duration,
    /// Level of the connect / disconnect log lines (`connection_messages`: INFO, else DEBUG).
    pub connection_log_level: log::Level,
    pub shards: usize,
    /// The listeners at start (a reload sends a shard the ones it opens).
    pub listeners: Vec<Arc<ListenerInfo>>,
    pub id_seed: u64,
    /// Where each shard leaves its once-a-second snapshot for the control shard; `None` when
    /// neither `$SYS` nor metrics are on (no control shard then).
    pub snapshots: Option<SnapshotBoard>,
    /// The authentication plugins at start (each shard keeps its own copy, which a reload
    /// replaces: `ShardRuntime::authenticator`).
    pub authenticator: Arc<crate::plugins::Authenticator>,
    /// The topic plugins whose answers are fetched ahead, at start (`ShardRuntime::prefetch`).
    pub prefetch: crate::plugins::Prefetchers,
}

/// What a reload changes on one shard.
pub(crate) struct ShardReload {
    pub core: CoreReload,
    /// New authentication plugins; `None`: keep the running ones.
    pub authenticator: Option<Arc<Authenticator>>,
    /// New prefetching topic plugins (with `authenticator`).
    pub prefetch: Option<Prefetchers>,
    /// Listeners whose sockets this shard closes (removed, or moved to another address).
    pub close: Vec<String>,
    /// This shard's socket of each listener opened.
    pub open: Vec<(std::net::TcpListener, Arc<ListenerInfo>)>,
    /// Answered with the client ids disconnected here (their user removed); set by
    /// `HostClient::reload`, which waits for it.
    pub done: Option<mpsc::Sender<Vec<String>>>,
}
