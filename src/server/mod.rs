//! The thin shell that runs the sans-IO broker on the sharded runtime: the embeddable [`Broker`].
//!
//! `Broker::new(config)?.start()?` binds every listener (one SO_REUSEPORT socket per shard), starts
//! one shard per CPU and returns a [`BrokerHandle`] that reports the bound addresses and stops it.
//! This is the only module that knows both MQTT (`crate::broker`, `crate::protocol`) and the runtime
//! (`shards`); it holds no protocol rules of its own.
//!
//! - `shard.rs`: one shard's runtime state, the bus loop, the keep-alive tick, applying actions;
//! - `connection.rs`: one connection's read → decode → handle → write driver, and the hand-off;
//! - `listener.rs`: the accept loop.

mod connection;
mod listener;
mod shard;

use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::broker::Settings;
use crate::config::{BrokerConfig, ShardCount};
use crate::protocol::QoS;

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot bind listener '{name}' to {addr}: {source}")]
    Bind {
        name: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot read the CPUs this process may run on: {0}")]
    Cpus(std::io::Error),
    #[error("cannot start shards: {0}")]
    Shards(#[from] shards::ShardError),
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// A listener as the shards see it: its name, limits and the per-listener connection count.
#[derive(Debug)]
pub(crate) struct ListenerInfo {
    pub name: String,
    pub max_connections: Option<usize>,
    /// Connections currently open through this listener, across all shards.
    pub open: AtomicUsize,
}

/// What every shard needs to know, shared read-only.
#[derive(Debug)]
pub(crate) struct SharedSettings {
    pub core: Settings,
    pub max_packet_size: usize,
    pub connect_timeout: Duration,
    pub shards: usize,
    pub listeners: Vec<Arc<ListenerInfo>>,
    pub id_seed: u64,
}

/// A configured, not yet running broker.
pub struct Broker {
    config: BrokerConfig,
}

/// A running broker: its addresses, and the way to stop it.
pub struct BrokerHandle {
    runtime: Option<shards::Shards>,
    addresses: Vec<(String, SocketAddr)>,
    shards: usize,
}

impl Broker {
    pub fn new(config: BrokerConfig) -> Result<Self, StartError> {
        Ok(Broker { config })
    }

    /// Binds the listeners and starts the shards.
    pub fn start(self) -> Result<BrokerHandle, StartError> {
        let config = self.config;
        let cpus = shards::available_cpus().map_err(StartError::Cpus)?;
        let shard_count = match config.shards {
            ShardCount::Auto => cpus.len().max(1),
            ShardCount::Fixed(n) => n,
        };
        let pin = config.pin_shards && shard_count <= cpus.len();
        if config.pin_shards && shard_count > cpus.len() {
            return Err(StartError::Config(format!(
                "shards: {shard_count} is more than the {} CPUs this process may use; set `pin_shards: false` to run unpinned",
                cpus.len()
            )));
        }

        let mut sockets_per_listener = Vec::new();
        let mut listeners = Vec::new();
        let mut addresses = Vec::new();
        for listener in &config.listeners {
            let sockets = shards::reuseport_listeners(listener.bind, shard_count, 4096).map_err(
                |source| StartError::Bind {
                    name: listener.name.clone(),
                    addr: listener.bind,
                    source,
                },
            )?;
            let addr = sockets
                .first()
                .and_then(|s| s.local_addr().ok())
                .unwrap_or(listener.bind);
            log::info!(
                "Listener '{}' bind to {} (max_connections={})",
                listener.name,
                addr,
                listener.max_connections.map_or(-1, |n| n as i64)
            );
            addresses.push((listener.name.clone(), addr));
            listeners.push(Arc::new(ListenerInfo {
                name: listener.name.clone(),
                max_connections: listener.max_connections,
                open: AtomicUsize::new(0),
            }));
            sockets_per_listener.push(sockets);
        }

        let shared = Arc::new(SharedSettings {
            core: Settings {
                max_inflight: config.max_inflight,
                max_queued_messages: config.max_queued_messages,
                max_qos: QoS::from_u8(config.max_qos).unwrap_or(QoS::ExactlyOnce),
                allow_anonymous: config.allow_anonymous,
                ..Settings::default()
            },
            max_packet_size: config.max_packet_size,
            connect_timeout: config.connect_timeout,
            shards: shard_count,
            listeners,
            id_seed: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64),
        });

        // Socket i of every listener goes to shard i.
        let mut per_shard: Vec<Vec<std::net::TcpListener>> =
            (0..shard_count).map(|_| Vec::new()).collect();
        for sockets in sockets_per_listener {
            for (i, socket) in sockets.into_iter().enumerate() {
                per_shard[i].push(socket);
            }
        }
        let per_shard: Vec<Mutex<Option<Vec<std::net::TcpListener>>>> =
            per_shard.into_iter().map(|s| Mutex::new(Some(s))).collect();
        let (bus, inboxes) = shards::bus::<shard::ShardMessage>(shard_count, 65_536, 65_536);
        let inboxes: Vec<Mutex<Option<shards::Inbox<shard::ShardMessage>>>> =
            inboxes.into_iter().map(|i| Mutex::new(Some(i))).collect();

        let runtime = shards::Shards::start(
            shards::ShardConfig {
                shards: shard_count,
                pin,
                io_memory: 256 << 10,
                spin_before_park: None,
                name: "amqtt-shard".into(),
            },
            move |ctx: shards::ShardContext| {
                let id = ctx.id;
                let sockets = per_shard
                    .get(id)
                    .and_then(|m| m.lock().ok().and_then(|mut s| s.take()))
                    .unwrap_or_default();
                let inbox = inboxes
                    .get(id)
                    .and_then(|m| m.lock().ok().and_then(|mut s| s.take()));
                let shared = shared.clone();
                let bus = bus.clone();
                async move {
                    match inbox {
                        Some(inbox) => shard::run(ctx, shared, bus, inbox, sockets).await,
                        None => log::error!("shard {id}: no inbox (started twice?)"),
                    }
                }
            },
        )?;
        log::info!(
            "amqtt {} started with {shard_count} shard(s){}",
            env!("CARGO_PKG_VERSION"),
            if pin { ", pinned" } else { "" }
        );
        Ok(BrokerHandle {
            runtime: Some(runtime),
            addresses,
            shards: shard_count,
        })
    }
}

impl BrokerHandle {
    /// The bound address of each listener, by name (the real port when the config said 0).
    pub fn addresses(&self) -> &[(String, SocketAddr)] {
        &self.addresses
    }

    /// The bound address of the listener with this name.
    pub fn address(&self, name: &str) -> Option<SocketAddr> {
        self.addresses
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| *a)
    }

    pub fn shards(&self) -> usize {
        self.shards
    }

    /// Stops accepting, closes every connection (without publishing wills) and waits for the shards.
    pub fn stop(mut self) -> Result<(), shards::ShardError> {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> Result<(), shards::ShardError> {
        match self.runtime.take() {
            Some(runtime) => {
                runtime.stop();
                runtime.join()
            }
            None => Ok(()),
        }
    }
}

impl Drop for BrokerHandle {
    fn drop(&mut self) {
        if let Err(error) = self.stop_and_join() {
            log::error!("broker stopped with an error: {error}");
        }
    }
}
