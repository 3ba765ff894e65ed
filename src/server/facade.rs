//! The embeddable broker: [`Broker`] (a configuration and plugins, not yet running), its
//! [`Broker::start`] (bind every listener, one SO_REUSEPORT socket per shard, start the shards and
//! the control shard) and the [`BrokerHandle`] that reports the bound addresses and stops it
//! (what else the host does with it, publish and list, is `embed.rs`). It fires the event plugins'
//! start and shutdown events.
//!
//! The top of the shell: nothing in `server/` imports from here; `server/mod.rs` and `lib.rs`
//! re-export it. It builds the shards' shared settings and starts each shard's root task
//! (`shard_tasks.rs`); it runs nothing itself.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::broker::{MemoryBudget, Settings};
use crate::config::{BrokerConfig, ShardCount};
use crate::logging::Logs;
use crate::protocol::QoS;

use super::host_client::HostClient;
use super::reload::{
    bind_listener, Addresses, ConfigOverrides, ReloadError, ReloadReport, Reloader,
};
use super::settings::{ListenerInfo, ListenerSetup, SharedSettings};
use super::{admin, bridge_hooks, cluster_hooks, control, shard, shard_tasks};

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener's address could not be bound (in use, not local, no permission).
    #[error("cannot bind listener '{name}' to {addr}: {source}")]
    Bind {
        /// The listener's name in the configuration.
        name: String,
        /// Its `bind` address.
        addr: SocketAddr,
        /// What the system said.
        source: std::io::Error,
    },
    /// A TLS listener's certificate or key could not be loaded.
    #[error("listener '{name}': {source}")]
    Tls {
        /// The listener's name in the configuration.
        name: String,
        /// What is wrong with its TLS material.
        source: crate::transport::tls::TlsSetupError,
    },
    /// The process's CPU affinity could not be read.
    #[error("cannot read the CPUs this process may run on: {0}")]
    Cpus(std::io::Error),
    /// The runtime refused to start the shard threads (e.g. locked-memory limit).
    #[error("cannot start shards: {0}")]
    Shards(#[from] shards::ShardError),
    /// The configuration is inconsistent in a way only starting finds out.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The runtime asked for cannot run here (glommio without io_uring). A value of
    /// `AMQTT_RUNTIME` that names no runtime is a [`StartError::Config`], like a bad key.
    #[error("{0}")]
    Runtime(String),
    /// A plugin could not be set up: unknown name, unreadable or malformed password file, invalid
    /// ACL entry (the message names the file, the key and the reason).
    #[error("{0}")]
    Plugins(#[from] crate::plugins::PluginError),
    /// Persistence could not start: the data directory cannot be created, locked, read or
    /// written (the message names the path and the reason).
    #[error("{0}")]
    Persistence(#[from] super::recovery::RecoveryError),
    /// The cluster link's thread could not be started.
    #[error("cannot start the cluster link: {0}")]
    Cluster(std::io::Error),
}

/// A configured, not yet running broker.
pub struct Broker {
    config: BrokerConfig,
    /// Added with [`Broker::with_plugin`]; resolved with the configuration's lists at start.
    plugins: Vec<crate::plugins::Plugin>,
    /// [`Broker::with_config_overrides`].
    overrides: Option<ConfigOverrides>,
    /// [`Broker::with_logs`].
    logs: Option<Logs>,
}

/// A running broker: its addresses, and the way to stop it.
pub struct BrokerHandle {
    runtime: Option<shards::Shards>,
    /// The bridges to other brokers, stopped before the shards.
    bridges: Option<crate::bridge::Bridges>,
    /// The cluster link (`cluster:`), stopped after the shards.
    cluster: Option<crate::cluster::ClusterLink>,
    /// Into every shard's inbox: the host's requests (`embed.rs`).
    pub(super) bus: shards::BusSender<shard::ShardMessage>,
    /// The event plugins, told of shutdown.
    events: crate::plugins::CorePlugins,
    addresses: Addresses,
    /// Reads the configuration again (`reload.rs`); the admin API holds it too.
    reloader: Arc<Mutex<Reloader>>,
    shards: usize,
    metrics_address: Option<SocketAddr>,
    admin_address: Option<SocketAddr>,
    /// Persistence on: the data directory, locked until the shards have stopped.
    _data_dir: Option<shards::durable::DataDir>,
}

impl Broker {
    /// A broker for `config`, started by [`start`](Self::start).
    ///
    /// CPUs: by default ([`BrokerConfig::default`], or a file without `shards` / `pin_shards`)
    /// the broker starts one shard per CPU the process may use and pins each shard's thread to
    /// its own CPU, where it polls and sleeps like any thread but leaves the CPU to nothing else
    /// of the broker. A program that embeds the broker next to its own work should set
    /// [`BrokerConfig::shards`] to what it can spare and [`BrokerConfig::pin_shards`] to `false`
    /// (YAML: `shards: 2`, `pin_shards: false`).
    pub fn new(config: BrokerConfig) -> Result<Self, StartError> {
        Ok(Broker {
            config,
            plugins: Vec::new(),
            overrides: None,
            logs: None,
        })
    }

    /// Changes made to the configuration at start and to every configuration a reload reads
    /// (the binary's command-line options: `-d` turns `log_packets` on).
    pub fn with_config_overrides(
        mut self,
        overrides: impl Fn(&mut BrokerConfig) + Send + 'static,
    ) -> Self {
        self.overrides = Some(Box::new(overrides));
        self
    }

    /// The binary's logger: a reload applies `log_level` to it.
    pub fn with_logs(mut self, logs: Logs) -> Self {
        self.logs = Some(logs);
        self
    }

    /// Adds a plugin (authentication, topic check or events; see [`crate::plugins`]). It is used
    /// where the configuration's `auth.plugins` / `topic-check.plugins` name it, and appended to
    /// its chain otherwise: `Broker::new(config)?.with_plugin(Plugin::auth(MyLdap::new())).start()`.
    pub fn with_plugin(mut self, plugin: crate::plugins::Plugin) -> Self {
        self.plugins.push(plugin);
        self
    }

    /// Binds the listeners and starts the shards.
    pub fn start(self) -> Result<BrokerHandle, StartError> {
        let Broker {
            mut config,
            plugins: added,
            overrides,
            logs,
        } = self;
        if let Some(overrides) = &overrides {
            overrides(&mut config);
        }
        // Read here as the plugins read it: a reload names the users it adds and removes.
        let users = Reloader::password_file(&config).map_err(|e| {
            StartError::Plugins(crate::plugins::PluginError::Config {
                file: config
                    .source
                    .as_ref()
                    .map_or_else(|| "configuration".to_string(), |p| p.display().to_string()),
                key: "auth.password-file".to_string(),
                reason: e.to_string(),
            })
        })?;
        // Before any socket is bound: a bad plugin list or password file fails fast.
        let plugins = crate::plugins::build(&config, &added)?;
        let events = plugins.core.clone();
        events.broker_pre_start();
        // Before any socket is bound too: a bad AMQTT_RUNTIME is a bad configuration, and a runtime
        // the kernel refuses should not leave listener lines behind.
        let executor = crate::config::runtime_from_env(config.runtime)
            .map_err(StartError::Config)?
            .resolve()
            .map_err(|e| StartError::Runtime(e.to_string()))?;
        log::info!("runtime: {executor}");
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
        // Recovery before any listener is bound: nobody connects to a broker still reading its
        // journal, and an unusable data directory leaves no listener lines behind.
        let (data_dir, starts) = if config.persistence.enabled {
            let recovered = super::recovery::recover(&config.persistence, shard_count)?;
            let starts = recovered.shards.into_iter().map(Some).collect();
            (Some(recovered.data_dir), starts)
        } else {
            (None, (0..shard_count).map(|_| None).collect::<Vec<_>>())
        };
        let starts: Vec<Mutex<Option<super::recovery::ShardStart>>> =
            starts.into_iter().map(Mutex::new).collect();

        let mut sockets_per_listener = Vec::new();
        let mut listeners = Vec::new();
        let mut addresses = Vec::new();
        for listener in &config.listeners {
            let (sockets, addr) =
                bind_listener(listener, shard_count).map_err(|source| StartError::Bind {
                    name: listener.name.clone(),
                    addr: listener.bind,
                    source,
                })?;
            let setup = ListenerSetup::new(listener, None).map_err(|source| StartError::Tls {
                name: listener.name.clone(),
                source,
            })?;
            // Only now, with its TLS material loaded: a listener line means it will serve.
            log::info!(
                "Listener '{}' bind to {} ({}, max_connections={}{})",
                listener.name,
                addr,
                transport_label(listener),
                listener.max_connections.map_or(-1, |n| n as i64),
                if listener.proxy_protocol {
                    ", PROXY protocol header required"
                } else {
                    ""
                }
            );
            if config.allow_anonymous && !addr.ip().is_loopback() {
                log::warn!(
                    "Listener '{}' on {addr} accepts clients without credentials from the \
                     network (auth.allow-anonymous is true); to require them set \
                     auth.allow-anonymous: false and auth.password-file (config/README.md)",
                    listener.name
                );
            }
            addresses.push((listener.name.clone(), addr));
            listeners.push(Arc::new(ListenerInfo::new(listener.name.clone(), setup)));
            sockets_per_listener.push(sockets);
        }

        let started = std::time::Instant::now();
        let board = control::wanted(
            config.sys_interval,
            config.metrics.is_some() || config.admin.is_some(),
        )
        .then(|| control::board(shard_count));
        let metrics_listener = match &config.metrics {
            Some(metrics) => Some(std::net::TcpListener::bind(metrics.bind).map_err(|source| {
                StartError::Bind {
                    name: "metrics".to_string(),
                    addr: metrics.bind,
                    source,
                }
            })?),
            None => None,
        };
        let metrics_address = metrics_listener.as_ref().and_then(|l| l.local_addr().ok());
        if let Some(addr) = metrics_address {
            log::info!("Prometheus metrics at http://{addr}/metrics");
        }
        let admin_listener = match &config.admin {
            Some(admin) => {
                let token = admin::read_token(&admin.token_file).map_err(StartError::Config)?;
                let listener =
                    std::net::TcpListener::bind(admin.bind).map_err(|source| StartError::Bind {
                        name: "admin".to_string(),
                        addr: admin.bind,
                        source,
                    })?;
                Some((listener, token))
            }
            None => None,
        };
        let admin_address = admin_listener
            .as_ref()
            .and_then(|(l, _)| l.local_addr().ok());
        if let Some(addr) = admin_address {
            log::info!("admin API at http://{addr}/api/v1/");
        }

        let shared = Arc::new(SharedSettings {
            core: Settings {
                max_inflight: config.max_inflight,
                max_queued_messages: config.max_queued_messages,
                max_queued_bytes: config.max_queued_bytes,
                memory: MemoryBudget::new(config.memory_limit),
                max_qos: QoS::from_u8(config.max_qos).unwrap_or(QoS::ExactlyOnce),
                receive_maximum: config.receive_maximum,
                // 65535 and 0 set no limit, as in Mosquitto.
                max_keepalive: (config.max_keepalive != crate::config::NO_MAX_KEEPALIVE
                    && config.max_keepalive != 0)
                    .then_some(config.max_keepalive),
                allow_anonymous: config.allow_anonymous,
                plugins: plugins.core,
                max_packet_size: config.max_packet_size,
                // aMQTT's PacketLoggerPlugin logs packets at DEBUG: with it listed, a DEBUG
                // level for the packet lines turns them on.
                log_packets: config.log_packets
                    || (config.packet_logger
                        && log::log_enabled!(target: "amqtt::packets", log::Level::Debug)),
                hide_denial_reason: config.hide_denial_reason,
                persistence: config.persistence.enabled,
                session_expiry_interval: config.session_expiry_interval,
                shared_strategy: config.shared_subscription_strategy,
                cluster_link: config.cluster.is_some(),
                retain_version_base: config
                    .cluster
                    .as_ref()
                    .map_or(0, |c| crate::cluster::version_base(&c.node)),
                connect_timeout: config.connect_timeout,
                ..Settings::default()
            },
            connect_timeout: config.connect_timeout,
            connection_log_level: if config.connection_messages {
                log::Level::Info
            } else {
                log::Level::Debug
            },
            shards: shard_count,
            listeners,
            id_seed: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64),
            snapshots: board.clone(),
            authenticator: Arc::new(plugins.authenticator),
            prefetch: plugins.prefetch,
        });
        let memory = shared.core.memory.clone();

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
        // 16 Ki slots a lane (≈ 96 B a slot, all touched when crossbeam builds the ring): 3 MiB per
        // shard instead of 12 MiB with 64 Ki, and still more than a shard drains in one loop turn.
        // With a cluster, its link takes part in the bus after the shards.
        let link_slots = usize::from(config.cluster.is_some());
        let (bus, mut inboxes) =
            shards::bus::<shard::ShardMessage>(shard_count + link_slots, 16_384, 16_384);
        let link_inbox = if link_slots > 0 { inboxes.pop() } else { None };
        let inboxes: Vec<Mutex<Option<shards::Inbox<shard::ShardMessage>>>> =
            inboxes.into_iter().map(|i| Mutex::new(Some(i))).collect();

        let control_bus = bus.clone();
        let host_bus = bus.clone();
        let addresses: Addresses = Arc::new(Mutex::new(addresses));
        let reloader = Arc::new(Mutex::new(Reloader {
            config: config.clone(),
            added,
            overrides,
            logs,
            host: HostClient {
                bus: bus.clone(),
                shards: shard_count,
            },
            listeners: shared.listeners.clone(),
            addresses: addresses.clone(),
            memory: memory.clone(),
            users,
        }));
        let mut runtime = shards::Shards::start(
            shards::ShardConfig {
                shards: shard_count,
                pin,
                io_memory: 256 << 10,
                spin_before_park: Some(config.spin_before_park).filter(|spin| !spin.is_zero()),
                name: "amqtt-shard".into(),
                runtime: executor,
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
                let start = starts
                    .get(id)
                    .and_then(|m| m.lock().ok().and_then(|mut s| s.take()));
                let shared = shared.clone();
                let bus = bus.clone();
                async move {
                    match inbox {
                        Some(inbox) => {
                            shard_tasks::run(ctx, shared, bus, inbox, sockets, start).await
                        }
                        None => log::error!("shard {id}: no inbox (started twice?)"),
                    }
                }
            },
        )?;
        let cluster = match (&config.cluster, link_inbox) {
            (Some(cluster), Some(inbox)) => {
                match cluster_hooks::start(
                    cluster,
                    inbox,
                    host_bus.clone(),
                    shard_count,
                    config.persistence.enabled,
                    config.shared_subscription_strategy,
                ) {
                    Ok(link) => Some(link),
                    Err(error) => {
                        runtime.stop();
                        let _ = runtime.join();
                        return Err(StartError::Cluster(error));
                    }
                }
            }
            _ => None,
        };
        // After the shards (the bridges' local sessions connect to a listener) and before the
        // control shard (which exports their counters).
        let bridges = if config.bridges.is_empty() {
            None
        } else {
            let host = super::host_client::HostClient {
                bus: host_bus.clone(),
                shards: shard_count,
            };
            // The addresses at start: a bridge keeps its local address until a restart.
            let bound = addresses
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .clone();
            let started = crate::bridge::Bridges::start(
                &config.bridges,
                |bridge| bridge_hooks::local_address(&config, &bound, bridge),
                || bridge_hooks::state_sink(host.clone()),
            );
            match started {
                Ok(bridges) => Some(bridges),
                Err(reason) => {
                    runtime.stop();
                    let _ = runtime.join();
                    return Err(StartError::Config(reason));
                }
            }
        };
        if let Some(board) = board {
            let setup = control::ControlSetup {
                board,
                bus: control_bus,
                sys_interval: config.sys_interval,
                metrics: metrics_listener,
                admin: admin_listener.map(|(listener, token)| {
                    let host = HostClient {
                        bus: host_bus.clone(),
                        shards: shard_count,
                    };
                    admin::AdminSetup::new(
                        listener,
                        &token,
                        host,
                        started,
                        addresses.clone(),
                        reloader.clone(),
                    )
                }),
                started,
                memory,
                bridges: bridges
                    .as_ref()
                    .map(|b| b.stats().to_vec())
                    .unwrap_or_default(),
                cluster: cluster.as_ref().map(|c| c.stats()),
            };
            runtime.start_control(move |ctx| control::run(ctx, setup))?;
        }
        log::info!(
            "amqtt {} started with {shard_count} shard(s){}",
            env!("CARGO_PKG_VERSION"),
            if pin { ", pinned" } else { "" }
        );
        events.broker_post_start();
        Ok(BrokerHandle {
            runtime: Some(runtime),
            bridges,
            cluster,
            bus: host_bus,
            events,
            addresses,
            reloader,
            shards: shard_count,
            metrics_address,
            admin_address,
            _data_dir: data_dir,
        })
    }
}

/// The transport a listener serves, for its start-up line: `tcp`, `tcp+tls`, `ws` or `wss`.
fn transport_label(listener: &crate::config::ListenerConfig) -> &'static str {
    match (listener.kind, listener.tls.is_some()) {
        (crate::config::ListenerKind::Tcp, false) => "tcp",
        (crate::config::ListenerKind::Tcp, true) => "tcp+tls",
        (crate::config::ListenerKind::Ws, false) => "ws",
        (crate::config::ListenerKind::Ws, true) => "wss",
    }
}

impl BrokerHandle {
    /// The bound address of each listener, by name (the real port when the config said 0), as
    /// the last reload left them.
    pub fn addresses(&self) -> Vec<(String, SocketAddr)> {
        self.addresses
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// The bound address of the listener with this name.
    pub fn address(&self, name: &str) -> Option<SocketAddr> {
        self.addresses()
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| a)
    }

    /// Reads the configuration file the broker was started with again and applies what a
    /// running broker can change (plugins and the password file, ACLs, TLS certificates, queue
    /// and memory limits, `max_qos`, listeners, `log_level`); what only a restart changes is
    /// reported and left as it was. A file that does not validate changes nothing. Blocks until
    /// every shard has applied its part. What SIGHUP and `POST /api/v1/reload` do.
    pub fn reload(&self) -> Result<ReloadReport, ReloadError> {
        self.reloader
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .reload()
    }

    /// Applies `config` as [`reload`](Self::reload) applies the file: for a program that builds
    /// its configuration itself.
    pub fn reload_with(&self, config: BrokerConfig) -> Result<ReloadReport, ReloadError> {
        self.reloader
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .apply(config)
    }

    /// How many data shards (threads) the broker runs.
    pub fn shards(&self) -> usize {
        self.shards
    }

    /// The bound address of the Prometheus endpoint (`http://ADDR/metrics`), if `metrics` is set.
    pub fn metrics_address(&self) -> Option<SocketAddr> {
        self.metrics_address
    }

    /// The bound address of the admin API (`http://ADDR/api/v1/`), if `admin` is set.
    pub fn admin_address(&self) -> Option<SocketAddr> {
        self.admin_address
    }

    /// Stops accepting, closes every connection (without publishing wills) and waits for the shards.
    pub fn stop(mut self) -> Result<(), shards::ShardError> {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> Result<(), shards::ShardError> {
        match self.runtime.take() {
            Some(runtime) => {
                self.events.broker_pre_shutdown();
                if let Some(bridges) = self.bridges.take() {
                    bridges.stop();
                }
                runtime.stop();
                let stopped = runtime.join();
                if let Some(mut cluster) = self.cluster.take() {
                    cluster.stop();
                }
                self.events.broker_post_shutdown();
                stopped
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
